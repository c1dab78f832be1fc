"""An English corpus available offline: the docstrings of Python's standard library and the
``pydoc_data`` topic pages (the text of ``help()``), split into train and held-out documents."""

from __future__ import annotations

import ast
import hashlib
import pydoc_data.topics
import sysconfig
import zlib
from pathlib import Path

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


def split(docs: dict[str, str]) -> tuple[list[str], list[str]]:
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
