"""An English corpus available offline: the docstrings of Python's standard library and the
``pydoc_data`` topic pages (the text of ``help()``), split into train and held-out documents."""

from __future__ import annotations

import ast
import hashlib
import pydoc_data.topics
import sysconfig
import zlib
from pathlib import Path

import numpy as np

from pi2lab.errors import CheckpointError, ConfigError

SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "__pycache__", "lib2to3"}
HELD_OUT_EVERY = 20  # one document in 20 (by a hash of its name) is held out


def _docstrings(tree: ast.AST) -> list[str]:
    nodes = [
        tree,
        *(
            n
            for n in ast.walk(tree)
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        ),
    ]
    docs = (ast.get_docstring(n, clean=True) for n in nodes)
    return [d.strip() for d in docs if d and len(d.split()) >= 4]


def stdlib_documents() -> dict[str, str]:
    """``{name: text}``: one document per stdlib module (its docstrings) and per pydoc topic."""
    root = Path(sysconfig.get_paths()["stdlib"])
    docs = {}
    for file in sorted(root.rglob("*.py")):
        rel = file.relative_to(root)
        if SKIP_DIRS & set(rel.parts[:-1]):
            continue
        try:
            tree = ast.parse(file.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        text = "\n\n".join(_docstrings(tree))
        if text:
            docs[f"stdlib/{rel.as_posix()}"] = text
    for topic, text in sorted(pydoc_data.topics.topics.items()):
        docs[f"pydoc/{topic}"] = text.strip()
    return docs


def split_documents(docs: dict[str, str]) -> tuple[list[str], list[str]]:
    """Deterministic train / held-out split by a CRC of each document's name."""
    train, held_out = [], []
    for name, text in sorted(docs.items()):
        (held_out if zlib.crc32(name.encode()) % HELD_OUT_EVERY == 0 else train).append(text)
    return train, held_out


def fingerprint(texts: list[str]) -> str:
    """Short hash of a document list, recorded in the model card for reproducibility."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode())
    return h.hexdigest()[:16]


def corpus_tokens(model, split: str = "train", limit: int | None = None) -> np.ndarray:
    """The corpus's ``split`` ("train" or "held_out") encoded with ``model``'s tokenizer, one
    int32 stream with the model's EOS (if any) between documents, cut at ``limit`` tokens.

    Raises:
      ConfigError: an unknown split, or a limit below 1.
      CheckpointError: the model has no tokenizer.
    """
    if split not in ("train", "held_out"):
        raise ConfigError(f"split={split!r}: expected 'train' or 'held_out'")
    if limit is not None and limit < 1:
        raise ConfigError(f"token limit={limit}: expected at least 1")
    if model.tokenizer is None:
        raise CheckpointError(f"{model.path}: no tokenizer.json; the corpus cannot be encoded")
    docs = split_documents(stdlib_documents())[0 if split == "train" else 1]
    eos = list(model.config.eos_token_id[:1])
    out: list[int] = []
    for enc in model.tokenizer.encode_batch(docs):
        out += enc.ids + eos
        if limit is not None and len(out) >= limit:
            break
    return np.asarray(out[:limit], np.int32)


def corpus_sequences(model, split: str, count: int, length: int) -> list[np.ndarray]:
    """``count`` consecutive sequences of ``length`` tokens ``[length]`` from the start of the
    corpus's ``split``, encoded as :func:`corpus_tokens` does.

    Raises:
      ConfigError: ``count`` below 1, ``length`` below 2 (a sequence scores its tokens after
        the first), or the split holding fewer than ``count * length`` tokens.
    """
    if count < 1:
        raise ConfigError(f"sequences={count}: expected at least 1")
    if length < 2:
        raise ConfigError(f"sequence length={length}: expected at least 2 tokens")
    tokens = corpus_tokens(model, split, count * length)
    if tokens.size < count * length:
        raise ConfigError(
            f"{count} sequences of {length} tokens need {count * length} tokens; the {split} "
            f"split has {tokens.size}"
        )
    return [tokens[i * length : (i + 1) * length] for i in range(count)]
