"""Quantized matrices in JAX and the products decode computes with them.

A :class:`QArray` holds a matrix ``[..., N, K]`` in the block format of
:mod:`pi2lab.quant.format` (rows quantized along ``K``). Two products read it:

* :func:`qdot`, ``x [..., K] -> [..., N]`` (every projection whose weights are stored one
  output per row: attention, gate, up, LM head);
* :func:`qaxpy`, ``x [..., N] -> [..., K]`` (the FFN's down projection, stored one neuron per
  row so that a sparse FFN reads whole rows; rows whose ``x`` is zero are skipped).

On the CPU with the native kernels built (:mod:`pi2lab.ffi`), each is one XLA FFI call that
reads the quantized blocks in place. Elsewhere a pure-JAX formulation computes the same thing
(:func:`qdot` quantizes the activations per block exactly as the kernel does) by dequantizing
the weights, at XLA's speed.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from pi2lab.errors import ConfigError
from pi2lab.ffi import native_available
from pi2lab.quant import format as qf


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class QArray:
    """A quantized matrix: ``q`` (int8 ``[..., N, K]`` or packed int4 uint8 ``[..., N, K/2]``)
    and ``scales`` (float16 ``[..., N, K/32]``), rows quantized along ``K``. A pytree: tree
    maps over its row axes (slicing, reshaping, permuting rows) apply to both arrays alike.

    ``transposed``: the stored rows are those of the transpose of the matrix it stands for
    (``shape`` is that matrix's, ``[..., K, N]``). A dense FFN's down projection is stored so
    (one output per row, read by :func:`qdot`), a sparse one is not (one neuron per row, read
    by :func:`qaxpy`); :func:`untransposed` turns the one into the other."""

    q: jax.Array
    scales: jax.Array
    kind: qf.QuantKind = dataclasses.field(metadata={"static": True})
    transposed: bool = dataclasses.field(default=False, metadata={"static": True})

    @property
    def stored_shape(self) -> tuple[int, ...]:
        """``[..., N, K]``: the rows as stored."""
        return (*self.scales.shape[:-1], self.scales.shape[-1] * qf.BLOCK)

    @property
    def shape(self) -> tuple[int, ...]:
        s = self.stored_shape
        return (*s[:-2], s[-1], s[-2]) if self.transposed else s

    @property
    def ndim(self) -> int:
        return self.scales.ndim

    @property
    def nbytes(self) -> int:
        return int(self.q.size * self.q.dtype.itemsize + self.scales.size * 2)

    def rows(self, fn) -> QArray:
        """``fn`` applied to both arrays' leading (stored row) axes, e.g. a slice or a gather."""
        return dataclasses.replace(self, q=fn(self.q), scales=fn(self.scales))

    def reshape_rows(self, *rows: int) -> QArray:
        """The same stored rows viewed as ``[*rows, K]`` (a reshape of the leading axes)."""
        return self.rows(lambda a: a.reshape(*rows, a.shape[-1]))

    def __repr__(self) -> str:
        t = ", transposed" if self.transposed else ""
        return f"QArray({self.kind}, shape={list(self.shape)}{t})"


def is_quantized(w) -> bool:
    return isinstance(w, QArray)


def quantize(w, kind: qf.QuantKind, name: str = "weights", transposed: bool = False) -> QArray:
    """A float matrix ``[..., N, K]`` (``K`` a multiple of 32) as a :class:`QArray`; with
    ``transposed``, stored as the rows of its transpose (``N`` a multiple of 32)."""
    a = np.asarray(w, np.float32)
    if transposed:
        a = np.ascontiguousarray(np.swapaxes(a, -1, -2))
    q, scales = qf.quantize(a, qf.check_kind(kind), name)
    return QArray(jnp.asarray(q), jnp.asarray(scales), kind, transposed)


def untransposed(w: QArray) -> QArray:
    """``w`` stored one row per row of the matrix it stands for: itself, or (transposed)
    dequantized and quantized again the other way (a second rounding)."""
    if not w.transposed:
        return w
    return quantize(np.asarray(dequantize(w)), w.kind)


def dequantize(w: QArray) -> jax.Array:
    """The float32 matrix a :class:`QArray` stands for (jnp), ``w.shape``."""
    q = w.q
    if w.kind == "int4":
        b = q.reshape(*q.shape[:-1], q.shape[-1] * 2 // qf.BLOCK, qf.BLOCK // 2)
        lo = (b & 0x0F).astype(jnp.int8) - 8
        hi = (b >> 4).astype(jnp.int8) - 8
        q = jnp.concatenate([lo, hi], axis=-1)
    else:
        q = q.reshape(*q.shape[:-1], q.shape[-1] // qf.BLOCK, qf.BLOCK)
    out = (q.astype(jnp.float32) * w.scales.astype(jnp.float32)[..., None]).reshape(w.stored_shape)
    return jnp.swapaxes(out, -1, -2) if w.transposed else out


def take_rows(w, idx: jax.Array) -> jax.Array:
    """Rows ``idx`` of ``w`` as float32 (an embedding lookup); plain arrays are indexed."""
    if not is_quantized(w):
        return w[idx]
    return dequantize(w.rows(lambda a: a[idx]))


def quantize_activations(x: jax.Array) -> jax.Array:
    """``x [..., K]`` rounded the way the dot-product kernels quantize activations (int8 per
    block of 32, scale ``max|x| / 127``), returned dequantized (float32)."""
    blocks = x.astype(jnp.float32).reshape(*x.shape[:-1], x.shape[-1] // qf.BLOCK, qf.BLOCK)
    d = jnp.max(jnp.abs(blocks), axis=-1, keepdims=True) / jnp.float32(127)
    inv = jnp.where(d > 0, 1.0 / jnp.where(d > 0, d, 1.0), 0.0)
    return (jnp.round(blocks * inv) * d).reshape(x.shape)


def _flat(w: QArray) -> QArray:
    return w.reshape_rows(-1)


def _native_or(native, fallback):
    """``native()`` on the CPU where the kernels are built; ``fallback()`` otherwise."""
    if not native_available():
        return fallback()
    return jax.lax.platform_dependent(cpu=native, default=fallback)


def qdot(x: jax.Array, w: QArray) -> jax.Array:
    """``x [..., K]`` times each stored row of ``w [N, K]`` -> ``[..., N]`` float32 (``w``'s
    leading axes are flattened into ``N``), activations quantized per block as llama.cpp
    does."""
    return qdot_many(x, [w])[0]


def qdot_many(x: jax.Array, ws: list[QArray]) -> list[jax.Array]:
    """:func:`qdot` of one ``x`` with up to 8 matrices of one kind (attention's q, k and v;
    an FFN's gate and up) in one native call: ``x`` is quantized once and the rows of all of
    them are split over the cores together."""
    k = ws[0].stored_shape[-1]
    for w in ws:
        if x.shape[-1] != w.stored_shape[-1]:
            raise ConfigError(
                f"qdot: x has {x.shape[-1]} features, the weights' rows {w.stored_shape[-1]}"
            )
        if w.kind != ws[0].kind:
            raise ConfigError(f"qdot: matrices of kinds {ws[0].kind} and {w.kind} in one call")
    flats = [_flat(w) for w in ws]
    ns = [f.scales.shape[0] for f in flats]
    x2 = x.reshape(-1, k).astype(jnp.float32)

    def native():
        shapes = [jax.ShapeDtypeStruct((x2.shape[0], n), jnp.float32) for n in ns]
        call = jax.ffi.ffi_call("pi2lab_qdot", shapes)
        args = [a for f in flats for a in (f.q, f.scales)]
        return tuple(call(x2, *args, bits=np.int32(qf.BITS[ws[0].kind])))

    def fallback():
        xq = quantize_activations(x2)
        rows = [dequantize(dataclasses.replace(f, transposed=False)) for f in flats]
        return tuple(jnp.einsum("tk,nk->tn", xq, r) for r in rows)

    outs = _native_or(native, fallback)
    return [y.reshape(*x.shape[:-1], n) for y, n in zip(outs, ns, strict=True)]


def qaxpy(x: jax.Array, w: QArray) -> jax.Array:
    """``x [..., N]`` weighting the stored rows of ``w [N, K]`` -> ``[..., K]`` float32
    (``w``'s leading axes flattened into ``N``), activations in float32; rows whose ``x`` is
    zero are not read."""
    flat = _flat(w)
    n, k = flat.scales.shape[0], w.stored_shape[-1]
    if x.shape[-1] != n:
        raise ConfigError(f"qaxpy: x has {x.shape[-1]} entries, the weights {n} rows")
    x2 = x.reshape(-1, n).astype(jnp.float32)

    def native():
        call = jax.ffi.ffi_call("pi2lab_qaxpy", jax.ShapeDtypeStruct((x2.shape[0], k), jnp.float32))
        return call(x2, flat.q, flat.scales, bits=np.int32(qf.BITS[flat.kind]))

    def fallback():
        return x2 @ dequantize(dataclasses.replace(flat, transposed=False))

    return _native_or(native, fallback).reshape(*x.shape[:-1], k)
