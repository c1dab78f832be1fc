"""Loading and saving Hugging Face-format checkpoints, and the :class:`Model` they become.

A checkpoint directory holds ``config.json``, ``model.safetensors`` (or shards listed in
``model.safetensors.index.json``) and optionally ``tokenizer.json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import safetensors
import safetensors.numpy
import tokenizers
from tqdm.auto import tqdm

from pi2lab.config import ModelConfig
from pi2lab.errors import CheckpointError, ConfigError
from pi2lab.fileio import atomic_dir
from pi2lab.model.params import assemble, leaf, merge_ffn, tensor_specs

BUILTIN = "pydoc-drelu"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


def data_dir() -> Path:
    """The project's ``data/`` directory (``PI2LAB_DATA`` overrides)."""
    return Path(os.environ.get("PI2LAB_DATA", Path(__file__).resolve().parents[2] / "data"))


def resolve(path_or_name: str | os.PathLike) -> Path:
    """``"builtin"`` (or a bundled model's name) -> its directory; any other value is a path.

    Raises:
      CheckpointError: when that directory does not exist.
    """
    name = str(path_or_name)
    if name == "builtin":
        name = BUILTIN
    bundled = data_dir() / "models" / name
    path = Path(path_or_name)
    if os.sep not in name and not path.exists() and bundled.is_dir():
        path = bundled
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint directory (or bundled model name)")
    return path


@dataclasses.dataclass(frozen=True, eq=False)
class Model:
    """A loaded model: config, parameters (a pytree of jax arrays) and tokenizer.

    Weights, not a runtime: :func:`pi2lab.generate` and :func:`pi2lab.dense_logits` take a model
    (the engines sit above the model and hold it, not the other way round).

    Attributes:
      config: The model's shapes and behaviour.
      params: Parameter tree, layout in :mod:`pi2lab.model.params`.
      tokenizer: A ``tokenizers.Tokenizer`` or None when the checkpoint has none.
      path: Where it was loaded from, if anywhere.
    """

    config: ModelConfig
    params: dict
    tokenizer: tokenizers.Tokenizer | None = None
    path: Path | None = None

    @property
    def dtype(self):
        return self.params["embed"].dtype

    def encode(self, text: str) -> np.ndarray:
        """Token ids of ``text`` (BOS prepended when the config names one) as int32."""
        if self.tokenizer is None:
            raise CheckpointError(f"{self.path}: no tokenizer.json; pass token ids instead")
        ids = self.tokenizer.encode(text).ids
        if self.config.bos_token_id is not None and (not ids or ids[0] != self.config.bos_token_id):
            ids = [self.config.bos_token_id, *ids]
        return np.asarray(ids, np.int32)

    def decode(self, ids) -> str:
        if self.tokenizer is None:
            return " ".join(str(i) for i in ids)
        return self.tokenizer.decode([int(i) for i in ids])

    def astype(self, dtype) -> Model:
        params = jax.tree.map(lambda a: a.astype(dtype), self.params)
        return dataclasses.replace(self, params=params)


def load_config(path: Path) -> ModelConfig:
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise CheckpointError(
            f"{cfg_file}: config.json is missing; expected a Hugging Face checkpoint directory"
        )
    try:
        hf = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{cfg_file}: not valid JSON ({e})") from e
    return ModelConfig.from_hf(hf, source=str(cfg_file))


def weight_files(path: Path) -> dict[str, Path]:
    """Tensor name -> file that holds it (single file or sharded index)."""
    index = path / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise CheckpointError(f"{index}: expected JSON with a 'weight_map' ({e})") from e
        for shard in sorted(set(weight_map.values())):
            if not (path / shard).is_file():
                raise CheckpointError(
                    f"{index}: names shard {shard!r}, which is absent from {path}"
                )
        return {name: path / shard for name, shard in weight_map.items()}
    single = path / SINGLE_FILE
    if not single.is_file():
        raise CheckpointError(f"{path}: neither {SINGLE_FILE} nor {INDEX_FILE} found")
    return dict.fromkeys(open_safetensors(single).keys(), single)


def open_safetensors(file: Path):
    try:
        return safetensors.safe_open(str(file), framework="numpy")
    except Exception as e:  # the Rust binding raises its own SafetensorError and OSErrors
        raise CheckpointError(f"{file}: not a readable safetensors file ({e})") from e


def _read_bf16(file: Path, name: str) -> np.ndarray:
    """numpy has no bfloat16, so safetensors' numpy reader refuses it: read it via the header."""
    with open(file, "rb") as fh:
        (header_len,) = struct.unpack("<Q", fh.read(8))
        info = json.loads(fh.read(header_len))[name]
        begin, end = info["data_offsets"]
        fh.seek(8 + header_len + begin)
        raw = fh.read(end - begin)
    return np.frombuffer(raw, ml_dtypes.bfloat16).reshape(info["shape"]).astype(np.float32)


def load_pretrained(path_or_name: str | os.PathLike = "builtin", *, dtype=jnp.float32) -> Model:
    """Loads a checkpoint directory (or ``"builtin"``) into a :class:`Model`.

    Weights stored as bf16/fp16/f32 are converted to ``dtype`` (the compute dtype).

    Raises:
      CheckpointError: missing/truncated/non-safetensors files, absent shards, missing tensors,
        tensors whose shape disagrees with the config.
      ConfigError: a config.json that is missing fields or names an unknown architecture.
    """
    path = resolve(path_or_name)
    cfg = load_config(path)
    where = weight_files(path)
    handles: dict[Path, object] = {}
    leaves = {}
    specs = tensor_specs(cfg)
    for spec in tqdm(
        specs, desc=f"loading {path.name}", unit="tensor", leave=False, disable=len(specs) < 200
    ):
        file = where.get(spec.hf_name)
        if file is None:
            raise CheckpointError(
                f"{path}: tensor {spec.hf_name!r} is missing; expected shape {list(spec.hf_shape)}"
            )
        if file not in handles:
            handles[file] = open_safetensors(file)
        fh = handles[file]
        try:
            meta = fh.get_slice(spec.hf_name)
            shape, dt = tuple(meta.get_shape()), meta.get_dtype()
        except Exception as e:
            raise CheckpointError(f"{file}: tensor {spec.hf_name!r} is missing ({e})") from e
        if shape != spec.hf_shape:
            raise CheckpointError(
                f"{file}: tensor {spec.hf_name!r} has shape {list(shape)}, "
                f"expected {list(spec.hf_shape)} from config.json"
            )
        try:
            arr = _read_bf16(file, spec.hf_name) if dt == "BF16" else fh.get_tensor(spec.hf_name)
        except Exception as e:
            raise CheckpointError(
                f"{file}: tensor {spec.hf_name!r} could not be read; the file "
                f"may be truncated ({e})"
            ) from e
        leaves[spec.path] = spec.to_internal(np.asarray(arr, np.float32))
    tok_file = path / "tokenizer.json"
    tokenizer = tokenizers.Tokenizer.from_file(str(tok_file)) if tok_file.is_file() else None
    return Model(config=cfg, params=assemble(cfg, leaves, dtype), tokenizer=tokenizer, path=path)


def save_pretrained(
    model: Model,
    path: str | os.PathLike,
    *,
    dtype=np.float32,
    extra_files: dict[str, str] | None = None,
) -> Path:
    """Writes ``config.json``, ``model.safetensors`` and ``tokenizer.json`` to ``path``.

    Files are written to a temporary directory beside ``path`` and moved into place at the
    end, so an interrupted save leaves no half-written checkpoint.
    """
    path = Path(path)
    params = merge_ffn(model.params)  # the sparse layout is saved as whole matrices
    # an existing directory keeps its other files (predictors, logs); ours are replaced
    with atomic_dir(path, merge=True) as tmp:
        tensors = {
            spec.hf_name: spec.to_hf(np.asarray(leaf(params, spec.path), np.float32)).astype(dtype)
            for spec in tensor_specs(model.config)
        }
        safetensors.numpy.save_file(tensors, str(tmp / SINGLE_FILE), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(model.config.to_hf(), indent=2) + "\n")
        if model.tokenizer is not None:
            model.tokenizer.save(str(tmp / "tokenizer.json"))
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
    return path
