"""The quantized weight format, in NumPy (no JAX): what the native kernels
(``pi2lab/kernels/native/quant.cc``), the JAX fallbacks and the flash layout all read.

A matrix ``[..., N, K]`` is quantized row by row along ``K`` in blocks of :data:`BLOCK` (32)
weights, each with one float16 scale, ``scales [..., N, K/32]``:

* ``int8``: ``q`` int8 ``[..., N, K]``, weight = ``q * scale``, ``scale = max|w| / 127``, so
  ``q`` is in ``[-127, 127]`` (llama.cpp's Q8_0).
* ``int4``: ``q`` uint8 ``[..., N, K/2]``, weight = ``(n - 8) * scale`` with ``n`` in
  ``[0, 15]``; ``scale`` is the block's largest-magnitude weight divided by -8, so that weight is
  exactly ``-8 * scale`` (llama.cpp's Q4_0). In each block's 16 bytes, byte ``j`` holds weight
  ``j`` in its low nibble and weight ``j + 16`` in its high nibble.

Weights are rounded to nearest with the float16 scale they are stored with. The dot-product
kernels quantize activations the same way as int8 blocks (:func:`quantize_activations`), as
llama.cpp does; the axpy kernels keep them in float32.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from pi2lab.errors import ConfigError

BLOCK = 32
QuantKind = Literal["int8", "int4"]
KINDS: tuple[QuantKind, ...] = ("int8", "int4")
BITS = {"int8": 8, "int4": 4}


def check_kind(kind: str) -> QuantKind:
    """``kind`` itself if it names a quantization, else a :class:`ConfigError`."""
    if kind not in KINDS:
        raise ConfigError(f"weights={kind!r}: unknown quantization; expected one of {KINDS}")
    return kind


def check_tiles(shape: tuple[int, ...], name: str) -> None:
    """A :class:`ConfigError` naming ``name`` unless its rows tile into blocks of 32."""
    if len(shape) < 1 or shape[-1] % BLOCK:
        raise ConfigError(
            f"{name}: shape {list(shape)} does not tile into blocks of {BLOCK} along its last "
            f"axis; expected a multiple of {BLOCK}"
        )


def row_bytes(k: int, kind: QuantKind) -> int:
    """Bytes of one quantized row of ``k`` weights (without its scales)."""
    return k * BITS[kind] // 8


def quantize(
    w: np.ndarray, kind: QuantKind, name: str = "weights"
) -> tuple[np.ndarray, np.ndarray]:
    """``w [..., K]`` float -> ``(q, scales)`` in the block format of ``kind``."""
    check_kind(kind)
    check_tiles(w.shape, name)
    blocks = np.asarray(w, np.float32).reshape(*w.shape[:-1], w.shape[-1] // BLOCK, BLOCK)
    if kind == "int8":
        scale = np.abs(blocks).max(-1) / 127
    else:
        at = np.abs(blocks).argmax(-1)[..., None]
        scale = np.take_along_axis(blocks, at, -1)[..., 0] / -8
    scales = scale.astype(np.float16)
    s = scales.astype(np.float32)[..., None]
    inv = np.divide(1.0, s, out=np.zeros_like(s), where=s != 0)
    if kind == "int8":
        q = np.clip(np.rint(blocks * inv), -127, 127).astype(np.int8)
        return q.reshape(w.shape), scales
    n = (np.clip(np.rint(blocks * inv), -8, 7) + 8).astype(np.uint8)  # [..., NB, 32]
    packed = n[..., :16] | (n[..., 16:] << 4)
    return packed.reshape(*w.shape[:-1], w.shape[-1] // 2), scales


def unpack_int4(q: np.ndarray) -> np.ndarray:
    """Packed int4 rows ``[..., K/2]`` uint8 -> signed weights ``[..., K]`` int8 (unscaled)."""
    b = q.reshape(*q.shape[:-1], q.shape[-1] // (BLOCK // 2), BLOCK // 2)
    lo = (b & 0x0F).astype(np.int8) - 8
    hi = (b >> 4).astype(np.int8) - 8
    return np.concatenate([lo, hi], axis=-1).reshape(*q.shape[:-1], 2 * q.shape[-1])


def dequantize(q: np.ndarray, scales: np.ndarray, kind: QuantKind) -> np.ndarray:
    """Inverse of :func:`quantize`: float32 ``[..., K]``."""
    ints = unpack_int4(q) if kind == "int4" else q
    k = scales.shape[-1] * BLOCK
    if ints.shape[-1] != k:
        raise ConfigError(
            f"quantized rows of {ints.shape[-1]} weights with scales for {k}; expected one "
            f"scale per {BLOCK} weights"
        )
    w = ints.astype(np.float32).reshape(*ints.shape[:-1], k // BLOCK, BLOCK)
    return (w * scales.astype(np.float32)[..., None]).reshape(ints.shape)


def quantize_activations(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Activations ``x [..., K]`` as the dot-product kernels quantize them: int8 per block of
    32 with a float32 scale ``max|x| / 127`` (not rounded to float16), ``(q, scales)``."""
    blocks = np.asarray(x, np.float32).reshape(*x.shape[:-1], x.shape[-1] // BLOCK, BLOCK)
    d = (np.abs(blocks).max(-1) / np.float32(127)).astype(np.float32)
    inv = np.divide(np.float32(1), d, out=np.zeros_like(d), where=d > 0)[..., None]
    q = np.rint(blocks * inv).astype(np.int8)
    return q.reshape(x.shape), d
