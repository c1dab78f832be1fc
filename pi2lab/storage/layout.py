"""Flash layout: a model split into a resident part and per-layer FFN bundle files.

This module defines the format and reads it with NumPy and safetensors alone (no JAX, no
engine); :mod:`pi2lab.convert` writes it.

A converted model is a directory::

  flash.json            header: format version, config, dtype, cluster size, strides, files,
                        byte sizes and a CRC-32 per bundle file, the sparse plan
  resident.safetensors  everything that stays in memory: embeddings, attention, norms, router,
                        LM head, predictors, quantization scales, a CRC-32 per unit
  tokenizer.json        when the model has one
  ffn/layer_003.bin     FFN bundles of layer 3 (``layer_003_e1.bin``: expert 1 of an MoE layer)

A *bundle* is one neuron's gate row, up row and down column, contiguous (they co-activate, so
one read fetches all three). A *unit* is ``C`` consecutive neurons (hot-first order, so unit 0
is the most often needed) and is what one read fetches: units are laid out back to back at a
stride rounded up to 4 KiB, so every unit starts on an ``O_DIRECT``-readable boundary::

  unit u of layer l:  offset u * stride in layer l's file
                      [C, 3, D] elements: neuron (gate row, up row, down column), padding to stride

Quantized dtypes store each row in the block format of :mod:`pi2lab.quant.format` (``int8``:
llama.cpp's Q8_0; ``int4``: its Q4_0 nibble order), the one the native kernels compute with;
the float16 scales, one per 32 elements (``scales.<i>`` ``[F, 3, D/32]``), are resident
(PowerInfer-2 keeps them in memory too).
"""

from __future__ import annotations

import dataclasses
import json
import os
import zlib
from pathlib import Path
from typing import Literal

import numpy as np
import safetensors

from pi2lab.config import ModelConfig
from pi2lab.errors import StorageError
from pi2lab.kernels.sparse_plan import SparsePlan
from pi2lab.quant import format as qf
from pi2lab.storage.io import ALIGN

FORMAT = "pi2lab-flash-2"
HEADER = "flash.json"
RESIDENT = "resident.safetensors"
FFN_KEYS = ("gate", "up", "down")
StorageDtype = Literal["f32", "f16", "int8", "int4"]
BITS = {"f32": 32, "f16": 16, "int8": 8, "int4": 4}


def round_up(n: int, to: int = ALIGN) -> int:
    return -(-n // to) * to


def bundle_bytes(hidden: int, dtype: StorageDtype) -> int:
    """Bytes of one neuron's bundle (gate row, up row, down column) stored as ``dtype``."""
    return 3 * hidden * BITS[dtype] // 8


def default_cluster_size(neurons: int, hidden: int, dtype: StorageDtype) -> int:
    """The smallest unit size (a power of two up to 64 dividing ``neurons``) whose bytes are a
    multiple of 4 KiB; failing that, the one that wastes the least padding."""
    sizes = [c for c in (1, 2, 4, 8, 16, 32, 64) if neurons % c == 0]
    waste = [
        round_up(c * bundle_bytes(hidden, dtype)) / (c * bundle_bytes(hidden, dtype)) for c in sizes
    ]
    return sizes[int(np.argmin(waste))]


def quantize(w: np.ndarray, dtype: StorageDtype) -> tuple[np.ndarray, np.ndarray | None]:
    """``w [..., D]`` float -> stored array and scales (None for float dtypes); quantized
    dtypes in the block format of :mod:`pi2lab.quant.format`."""
    if dtype == "f32":
        return w.astype(np.float32), None
    if dtype == "f16":
        return w.astype(np.float16), None
    return qf.quantize(w, dtype, "FFN bundles")


def dequantize(q: np.ndarray, scales: np.ndarray | None, dtype: StorageDtype) -> np.ndarray:
    """Inverse of :func:`quantize`: float32 ``[..., D]``."""
    if scales is None:
        return q.astype(np.float32, copy=False)  # f32 bundles: a view, no copy
    return qf.dequantize(q, scales, dtype)


@dataclasses.dataclass(frozen=True, kw_only=True)
class BundleFile:
    """One FFN's bundle file.

    Attributes:
      layer: Layer index.
      expert: Expert index for MoE layers, else None.
      file: Path relative to the layout directory.
      nbytes: File size in bytes (units x stride).
      crc32: CRC-32 of the whole file.
    """

    layer: int
    expert: int | None
    file: str
    nbytes: int
    crc32: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class FlashLayout:
    """An opened flash layout (header read and sizes checked; bundles not read).

    Attributes:
      path: The layout directory.
      config: The model's config.
      dtype: Storage dtype of the FFN bundles.
      group_size: Elements per quantization scale (32 for quantized dtypes, else 0).
      cluster_size: Neurons per unit, C.
      stride: Bytes from one unit to the next (a multiple of 4 KiB).
      files: One bundle file per layer (per layer and expert for MoE), layer-major.
      plan: The sparse plan the model was profiled with, if any.
    """

    path: Path
    config: ModelConfig
    dtype: StorageDtype
    group_size: int
    cluster_size: int
    stride: int
    files: tuple[BundleFile, ...]
    plan: SparsePlan | None

    @property
    def units(self) -> int:
        """Units per FFN (per expert for MoE)."""
        return self.config.intermediate_size // self.cluster_size

    @property
    def unit_bytes(self) -> int:
        """Payload bytes of one unit (the stride less padding)."""
        return self.cluster_size * bundle_bytes(self.config.hidden_size, self.dtype)

    @property
    def ffn_bytes(self) -> int:
        """Bytes of every bundle file together (what offloading takes out of memory)."""
        return sum(f.nbytes for f in self.files)

    def summary(self) -> dict:
        """Format figures and sizes in bytes; ``ok`` since it opened (or verified)."""
        return {
            "path": str(self.path),
            "dtype": self.dtype,
            "cluster_size": self.cluster_size,
            "unit_bytes": self.unit_bytes,
            "stride": self.stride,
            "bundle_files": len(self.files),
            "ffn_bytes": self.ffn_bytes,
            "resident_bytes": (self.path / RESIDENT).stat().st_size,
            "has_plan": self.plan is not None,
            "ok": True,
        }

    def file_index(self, layer: int, expert: int | None = None) -> int:
        e = self.config.num_experts if self.config.is_moe else 1
        return layer * e + (expert or 0)

    def file_path(self, index: int) -> Path:
        return self.path / self.files[index].file

    def resident(self) -> dict[str, np.ndarray]:
        """Every resident tensor by name (internal layout, numpy)."""
        file = self.path / RESIDENT
        try:
            with safetensors.safe_open(str(file), framework="numpy") as fh:
                return {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
        except Exception as e:
            raise StorageError(f"{file}: not a readable safetensors file ({e})") from e

    def unit_view(self, raw: np.ndarray) -> np.ndarray:
        """Raw unit bytes ``[n, stride]`` uint8 -> stored elements ``[n, C, 3, D']``."""
        c, d = self.cluster_size, self.config.hidden_size
        store = {"f32": np.float32, "f16": np.float16, "int8": np.int8, "int4": np.uint8}
        payload = raw[:, : self.unit_bytes]
        width = d // 2 if self.dtype == "int4" else d
        return payload.view(store[self.dtype]).reshape(len(raw), c, 3, width)

    def decode_units(self, raw: np.ndarray, scales: np.ndarray | None, units: np.ndarray):
        """Float32 gate, up, down rows ``[n*C, D]`` of ``units`` from their raw bytes
        ``[n, stride]``; ``scales`` is the FFN's resident ``[F, 3, G]`` array (or None)."""
        q = self.unit_view(raw)
        q = q.reshape(-1, 3, q.shape[-1])
        s = None
        if scales is not None:
            neurons = (units[:, None] * self.cluster_size + np.arange(self.cluster_size)).ravel()
            s = scales[neurons]
        w = dequantize(q, s, self.dtype)
        return w[:, 0], w[:, 1], w[:, 2]

    def read_ffn(self, index: int, resident: dict | None = None) -> np.ndarray:
        """A whole FFN dequantized, ``[F, 3, D]`` float32 (buffered read; tests, dense paths)."""
        raw = np.fromfile(self.file_path(index), np.uint8).reshape(self.units, self.stride)
        scales = (resident or self.resident()).get(f"scales.{index}")
        g, u, d = self.decode_units(raw, scales, np.arange(self.units))
        return np.stack([g, u, d], axis=1)

    def full_params(self) -> dict:
        """The whole parameter tree with dequantized FFN weights (the in-memory reference)."""
        tensors = self.resident()
        params = resident_params(self, tensors)
        cfg = self.config
        for i, layer in enumerate(params["layers"]):
            ffns = [
                self.read_ffn(self.file_index(i, e), tensors)
                for e in (range(cfg.num_experts) if cfg.is_moe else [None])
            ]
            w = np.stack(ffns) if cfg.is_moe else ffns[0]  # [(E,) F, 3, D]
            for j, k in enumerate(FFN_KEYS):
                layer[k] = np.ascontiguousarray(w[..., j, :])
        return params


def resident_params(layout: FlashLayout, tensors: dict[str, np.ndarray]) -> dict:
    """The parameter tree without FFN weights, from :meth:`FlashLayout.resident`."""
    params = {k: v for k, v in tensors.items() if "." not in k}
    params["layers"] = [
        {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"layers.{i}.")}
        for i in range(layout.config.num_layers)
    ]
    return params


def predictor_layers(layout: FlashLayout, tensors: dict[str, np.ndarray]) -> list[dict] | None:
    """The predictors stored with the layout (per layer ``fc1, b1, fc2, b2``), or None."""
    if "predictors.0.fc1" not in tensors:
        return None
    return [
        {k: tensors[f"predictors.{i}.{k}"] for k in ("fc1", "b1", "fc2", "b2")}
        for i in range(layout.config.num_layers)
    ]


def open_layout(path: str | os.PathLike) -> FlashLayout:
    """Reads ``flash.json`` and checks that every bundle file is there with its size.

    Raises:
      StorageError: no header, a header of another format version, a missing or truncated
        bundle file.
    """
    path = Path(path)
    head = path / HEADER
    if not head.is_file():
        raise StorageError(f"{path}: no {HEADER}; convert a model with `pi2lab convert`")
    try:
        header = json.loads(head.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StorageError(f"{head}: not valid JSON ({e})") from e
    if header.get("format") != FORMAT:
        raise StorageError(
            f"{head}: format {header.get('format')!r}; expected {FORMAT!r} (convert again)"
        )
    try:
        cfg = ModelConfig.from_hf(header["config"])
        files = tuple(BundleFile(**bf) for bf in header["files"])
        layout = FlashLayout(
            path=path,
            config=cfg,
            dtype=header["dtype"],
            group_size=header["group_size"],
            cluster_size=header["cluster_size"],
            stride=header["stride"],
            files=files,
            plan=None if header["plan"] is None else SparsePlan.from_json(header["plan"]),
        )
    except (KeyError, TypeError) as e:
        raise StorageError(f"{head}: malformed header ({e!r})") from e
    if layout.group_size != (qf.BLOCK if layout.dtype in qf.KINDS else 0):
        raise StorageError(
            f"{head}: {layout.dtype} bundles with group_size {layout.group_size}; expected "
            f"{qf.BLOCK if layout.dtype in qf.KINDS else 0}"
        )
    expected = cfg.num_layers * (cfg.num_experts if cfg.is_moe else 1)
    if len(files) != expected:
        raise StorageError(f"{head}: {len(files)} bundle files listed; expected {expected}")
    for bf in files:
        want = layout.units * layout.stride
        file = path / bf.file
        if not file.is_file():
            raise StorageError(f"{file}: bundle file of layer {bf.layer} is missing")
        size = file.stat().st_size
        if size != bf.nbytes or size != want:
            raise StorageError(
                f"{file}: {size} bytes; expected {want} (layer {bf.layer}: "
                f"{layout.units} units x {layout.stride} bytes) - truncated?"
            )
    return layout


def check_units(layout: FlashLayout, index: int, units: np.ndarray, raw: np.ndarray, crcs) -> None:
    """Raises StorageError naming layer, unit and offset of the first unit whose bytes
    ``raw [n, stride]`` do not match its CRC-32."""
    for u, row in zip(units, raw, strict=True):
        if zlib.crc32(row) != int(crcs[u]):
            bf = layout.files[index]
            where = f"layer {bf.layer}" + ("" if bf.expert is None else f" expert {bf.expert}")
            raise StorageError(
                f"{layout.file_path(index)}: checksum mismatch in {where}, unit {int(u)} at "
                f"byte offset {int(u) * layout.stride} ({layout.stride} bytes)"
            )


def verify(path: str | os.PathLike) -> FlashLayout:
    """Checks header, sizes, every file's CRC-32 and every unit's; returns the layout.

    Raises:
      StorageError: naming the file, layer, unit and byte offset of the first problem.
    """
    layout = open_layout(path)
    tensors = layout.resident()
    for index, bf in enumerate(layout.files):
        raw = np.fromfile(layout.file_path(index), np.uint8).reshape(layout.units, layout.stride)
        if zlib.crc32(raw) != bf.crc32:
            check_units(layout, index, np.arange(layout.units), raw, tensors[f"crc32.{index}"])
            raise StorageError(f"{layout.file_path(index)}: file checksum mismatch")
    cfg = layout.config
    for i in range(cfg.num_layers):
        for k in ("attn_norm", "q", "k", "v", "o", "ffn_norm"):
            if f"layers.{i}.{k}" not in tensors:
                raise StorageError(f"{layout.path / RESIDENT}: tensor 'layers.{i}.{k}' is missing")
    return layout
