"""NumPy references of the quantized kernels' arithmetic, written from the format's definition
(pi2lab.quant.format) without the kernels' tricks: per-block integer dot products of the
weights with int8-quantized activations, scaled by both scales; axpy with dequantized rows."""

from __future__ import annotations

import numpy as np

from pi2lab.quant import format as qf


def signed(q: np.ndarray, kind: str) -> np.ndarray:
    """The stored integers as signed weights ``[..., K]`` (int64)."""
    ints = qf.unpack_int4(q) if kind == "int4" else q
    return ints.astype(np.int64)


def qdot(x: np.ndarray, q: np.ndarray, scales: np.ndarray, kind: str) -> np.ndarray:
    """``x [T, K]``, weights ``[N, K]`` -> ``[T, N]``."""
    xq, xs = qf.quantize_activations(x)
    t, n, nb = x.shape[0], q.shape[0], scales.shape[-1]
    xi = xq.reshape(t, nb, qf.BLOCK).astype(np.int64)
    wi = signed(q, kind).reshape(n, nb, qf.BLOCK)
    exact = np.einsum("tbj,nbj->tnb", xi, wi)  # integers, exact
    return (exact * scales.astype(np.float64)[None] * xs.astype(np.float64)[:, None]).sum(-1)


def qaxpy(x: np.ndarray, q: np.ndarray, scales: np.ndarray, kind: str) -> np.ndarray:
    """``x [T, N]``, weights ``[N, K]`` -> ``[T, K]``."""
    return x.astype(np.float64) @ qf.dequantize(q, scales, kind).astype(np.float64)


def activation(g, u, kind, threshold):
    return {
        "silu": lambda: g / (1 + np.exp(-g)) * u,
        "relu": lambda: np.maximum(g, 0) * u,
        "drelu": lambda: np.maximum(g, 0) * np.maximum(u, 0),
        "fatrelu": lambda: np.where(g > threshold, g, 0) * u,
    }[kind]()


def sparse_ffn(x, weights: dict, rows: np.ndarray, kind: str, threshold: float, act: str):
    """The FFN of neurons ``rows`` only: ``weights[k] = (q, scales)`` of whole ``[F, D]``
    gate/up/down; gate and up as :func:`qdot`, down as :func:`qaxpy`."""
    if rows.size == 0:
        return np.zeros(x.shape[-1])
    pick = {k: (q[rows], s[rows]) for k, (q, s) in weights.items()}
    g = qdot(x[None], *pick["gate"], kind)[0]
    u = qdot(x[None], *pick["up"], kind)[0]
    return qaxpy(activation(g, u, act, threshold)[None], *pick["down"], kind)[0]
