"""pi2lab's native CPU kernels, registered with XLA through the FFI when they were built.

The package's build compiles ``pi2lab/kernels/native/*.cc`` into ``pi2lab._native`` with the
system compiler (``setup.py``): the float32 cluster-sparse FFN and the quantized products
(int8/int4 dot, axpy and cluster-sparse FFN). Where it was not built (no compiler), or on another
backend than the CPU, the kernels' pure-JAX formulations compute the same results; ``pi2lab
info --kernels`` says which runs and why.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

ACTIVATIONS = {"silu": 0, "relu": 1, "drelu": 2, "fatrelu": 3}
"""The native kernels' code for each FFN activation."""


@functools.cache
def _load() -> tuple[object | None, str]:
    try:
        from pi2lab import _native
    except ImportError as e:
        return None, f"not built ({e}); reinstall with a C++ compiler: pip install -e ."
    for name, capsule in _native.handlers().items():
        jax.ffi.register_ffi_target(name, capsule, platform="cpu")
    return _native, "built"


def native_available() -> bool:
    """Whether the native kernels were built and registered (for the CPU backend)."""
    return _load()[0] is not None


def bundle_ffn(
    x: np.ndarray,
    src: np.ndarray,
    rows: np.ndarray,
    units: np.ndarray,
    scales: np.ndarray,
    cluster_size: int,
    bits: int,
    kind: str,
    threshold: float,
) -> np.ndarray:
    """One FFN's output ``[D]`` for ``x [D]`` from quantized flash-layout units read in place
    (no dequantized copy): unit ``i`` is row ``rows[i]`` of ``src [S, stride]`` uint8 and
    unit ``units[i]`` of the FFN, whose resident scales are ``scales [F, 3, D/32]`` float16.
    Runs on the host, outside JAX, with the GIL released; needs the native kernels
    (:func:`native_built`)."""
    out = np.empty(x.shape[-1], np.float32)
    _load()[0].ffn_bundles(
        out,
        np.ascontiguousarray(x, np.float32),
        src,
        src.shape[1],
        np.ascontiguousarray(rows, np.int64),
        np.ascontiguousarray(units, np.int64),
        scales,
        cluster_size,
        bits,
        ACTIVATIONS[kind],
        threshold,
    )
    return out


def native_built() -> bool:
    """Whether the native kernels were built (whatever JAX's backend)."""
    return _load()[0] is not None


def use_isa(name: str) -> bool:
    """Runs the quantized kernels on instruction set ``name`` (``avx512vnni``, ``avx2`` or
    ``portable``) if the kernels are built and this CPU has it; returns whether it does. For
    tests and comparisons: the best one is picked by default (``PI2LAB_NATIVE_ISA`` chooses
    another at start-up)."""
    native = _load()[0]
    return native is not None and native.set_isa(name)


def kernel_status() -> dict:
    """Which kernel path runs here and why: ``{"path", "reason", ...}``; with the native
    kernels, ``isa`` (float32 sparse FFN), ``quant_isa`` (quantized products) and
    ``threads``."""
    native, why = _load()
    if native is None:
        return {"path": "jax", "reason": why}
    backend = jax.default_backend()
    if backend != "cpu":
        return {"path": "jax", "reason": f"native kernels are CPU-only; backend is {backend}"}
    return {"path": "native", "reason": "built and registered", **native.describe()}
