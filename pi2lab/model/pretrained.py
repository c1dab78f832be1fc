"""Loading and saving Hugging Face-format checkpoints, and the :class:`Model` they become.

A checkpoint directory holds ``config.json``, ``model.safetensors`` (or shards listed in
``model.safetensors.index.json``) and optionally ``tokenizer.json``.

A quantized model (``weights="int8"`` or ``"int4"``) is saved with each matrix as two tensors,
``<name>.q`` and ``<name>.scales``: the rows of the Hugging Face tensor ``<name>``, in the
block format of :mod:`pi2lab.quant.format`. A down projection stored one neuron per row (the
sparse layout, experts; see :func:`~pi2lab.model.params.quantize_params`) is saved as the rows
of its transpose, ``<name>.T.q`` and ``<name>.T.scales``. Norms and the router stay float.
Such a checkpoint loads back without requantizing.
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
from pi2lab.model.params import (
    TensorSpec,
    assemble,
    leaf,
    merge_ffn,
    quantize_params,
    quantized_kind,
    tensor_specs,
)
from pi2lab.quant import format as qf
from pi2lab.quant.ops import QArray, is_quantized

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
        """The compute dtype (of the activations; quantized weights compute in float32)."""
        return self.params["final_norm"].dtype

    @property
    def weights(self) -> str:
        """``"int8"``/``"int4"`` for quantized weights, else the float dtype's name."""
        return quantized_kind(self.params) or jnp.dtype(self.dtype).name

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
        """The model computing in ``dtype``; quantized weights stay as they are."""
        params = jax.tree.map(
            lambda a: a if is_quantized(a) else a.astype(dtype), self.params, is_leaf=is_quantized
        )
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


# The Hugging Face shape of a quantized matrix, by the last part of its internal path.
def _quantized_rows(cfg: ModelConfig, name: str) -> tuple[int, int] | None:
    d, f, v = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    h, g = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    rows = {"embed": (v, d), "lm_head": (v, d), "q": (h, d), "k": (g, d), "v": (g, d)}
    rows |= {"o": (d, h), "gate": (f, d), "up": (f, d), "down": (d, f)}
    return rows.get(name)


def _matrix_name(spec: TensorSpec) -> str:
    return spec.path[2] if spec.path[0] == "layers" else spec.path[0]


class _Reader:
    """Tensors of a checkpoint by name, opened once per file, with errors that name them."""

    def __init__(self, path: Path):
        self.path, self.where, self.handles = path, weight_files(path), {}

    def has(self, name: str) -> bool:
        return name in self.where

    def open(self, file: Path):
        if file not in self.handles:
            self.handles[file] = open_safetensors(file)
        return self.handles[file]

    def dtype(self, name: str) -> str:
        return self.open(self.where[name]).get_slice(name).get_dtype()

    def read(self, name: str, shape: tuple[int, ...], what: str = "") -> np.ndarray:
        file = self.where.get(name)
        if file is None:
            raise CheckpointError(
                f"{self.path}: tensor {name!r} is missing; expected {what}shape {list(shape)}"
            )
        fh = self.open(file)
        try:
            meta = fh.get_slice(name)
            got, dt = tuple(meta.get_shape()), meta.get_dtype()
        except Exception as e:
            raise CheckpointError(f"{file}: tensor {name!r} is missing ({e})") from e
        if got != shape:
            raise CheckpointError(
                f"{file}: tensor {name!r} has shape {list(got)}, expected {what}"
                f"{list(shape)} from config.json"
            )
        try:
            return _read_bf16(file, name) if dt == "BF16" else fh.get_tensor(name)
        except Exception as e:
            raise CheckpointError(
                f"{file}: tensor {name!r} could not be read; the file may be truncated ({e})"
            ) from e


def _read_quantized(reader: _Reader, name: str, rows: tuple[int, int], kind) -> QArray:
    """``name``'s rows (``rows``: the Hugging Face shape), or for a down projection saved one
    neuron per row, those of its transpose."""
    is_down = name.endswith(("down_proj.weight", "w2.weight"))
    neurons = is_down and reader.has(f"{name}.T.q")
    if neurons:
        name, rows = f"{name}.T", rows[::-1]
    n, k = rows
    q = reader.read(f"{name}.q", (n, qf.row_bytes(k, kind)), f"{kind} ")
    scales = reader.read(f"{name}.scales", (n, k // qf.BLOCK), "float16 scales of ")
    want = np.int8 if kind == "int8" else np.uint8
    if q.dtype != want or scales.dtype != np.float16:
        raise CheckpointError(
            f"{reader.path}: tensor {name!r} is stored as {q.dtype} with {scales.dtype} scales; "
            f"expected {np.dtype(want).name} with float16 scales ({kind})"
        )
    return QArray(q, scales, kind, transposed=is_down and not neurons)


def load_pretrained(
    path_or_name: str | os.PathLike = "builtin", *, dtype=jnp.float32, weights: str | None = None
) -> Model:
    """Loads a checkpoint directory (or ``"builtin"``) into a :class:`Model`.

    Weights stored as bf16/fp16/f32 are converted to ``dtype`` (the compute dtype).
    ``weights="int8"`` or ``"int4"`` quantizes them at load
    (:func:`~pi2lab.model.params.quantize_params`); a quantized checkpoint (written by
    :func:`save_pretrained`) loads as it was saved, and ``weights`` must then name its
    quantization or be None.

    Raises:
      CheckpointError: missing/truncated/non-safetensors files, absent shards, missing tensors,
        tensors whose shape disagrees with the config, quantized tensors without their scales
        or with mis-shaped ones.
      ConfigError: a config.json that is missing fields or names an unknown architecture; an
        unknown ``weights``, or one that a quantized checkpoint cannot give.
    """
    if weights is not None:
        qf.check_kind(weights)
    path = resolve(path_or_name)
    cfg = load_config(path)
    reader = _Reader(path)
    specs = tensor_specs(cfg)
    stored = _stored_kind(reader, specs[0])
    if stored is not None and weights not in (None, stored):
        raise ConfigError(f"weights={weights!r}: {path} holds {stored} weights; expected {stored}")
    leaves = {}
    for spec in tqdm(
        specs, desc=f"loading {path.name}", unit="tensor", leave=False, disable=len(specs) < 200
    ):
        rows = _quantized_rows(cfg, _matrix_name(spec))
        if stored is not None and rows is not None:
            leaves[spec.path] = _read_quantized(reader, spec.hf_name, rows, stored)
        else:
            arr = reader.read(spec.hf_name, spec.hf_shape)
            leaves[spec.path] = spec.to_internal(np.asarray(arr, np.float32))
    tok_file = path / "tokenizer.json"
    tokenizer = tokenizers.Tokenizer.from_file(str(tok_file)) if tok_file.is_file() else None
    params = assemble(cfg, leaves, dtype)
    if weights is not None and stored is None:
        params = quantize_params(params, weights)
    return Model(config=cfg, params=params, tokenizer=tokenizer, path=path)


def _stored_kind(reader: _Reader, first: TensorSpec) -> str | None:
    """The quantization a checkpoint was saved with (that of its embedding), or None."""
    name = f"{first.hf_name}.q"
    if reader.has(first.hf_name) or not reader.has(name):
        return None
    kind = {"I8": "int8", "U8": "int4"}.get(reader.dtype(name))
    if kind is None:
        raise CheckpointError(
            f"{reader.path}: tensor {name!r} is {reader.dtype(name)}; expected I8 (int8) or "
            "U8 (packed int4)"
        )
    return kind


def save_pretrained(
    model: Model,
    path: str | os.PathLike,
    *,
    dtype=np.float32,
    extra_files: dict[str, str] | None = None,
) -> Path:
    """Writes ``config.json``, ``model.safetensors`` and ``tokenizer.json`` to ``path``
    (quantized models as described in the module's docstring; ``dtype`` is then that of the
    float tensors).

        Files are written to a temporary directory beside ``path`` and moved into place at the
        end, so an interrupted save leaves no half-written checkpoint.
    """
    path = Path(path)
    params = merge_ffn(model.params)  # the sparse layout is saved as whole matrices
    # an existing directory keeps its other files (predictors, logs); ours are replaced
    with atomic_dir(path, merge=True) as tmp:
        tensors = {}
        for spec in tensor_specs(model.config):
            w = leaf(params, spec.path)
            if is_quantized(w):  # q and scales of its rows (see the module's docstring)
                name = (
                    spec.hf_name
                    if w.transposed or spec.path[2:3] != ("down",)
                    else (f"{spec.hf_name}.T")
                )
                tensors[f"{name}.q"] = np.asarray(w.q)
                tensors[f"{name}.scales"] = np.asarray(w.scales)
            else:
                tensors[spec.hf_name] = spec.to_hf(np.asarray(w, np.float32)).astype(dtype)
        safetensors.numpy.save_file(tensors, str(tmp / SINGLE_FILE), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(model.config.to_hf(), indent=2) + "\n")
        if model.tokenizer is not None:
            model.tokenizer.save(str(tmp / "tokenizer.json"))
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
    return path
