"""Pure layer functions of a Llama-family decoder. Shape letters: see :mod:`pi2lab.config`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from pi2lab.config import Activation, ModelConfig
from pi2lab.quant.ops import QArray, is_quantized, qaxpy, qdot, qdot_many

_MASKED = -1e30


def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
    """RMSNorm over the last axis, computed in float32 as Hugging Face does."""
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return (weight * y.astype(x.dtype)).astype(x.dtype)


def rope_inv_freq(cfg: ModelConfig) -> np.ndarray:
    """Inverse RoPE frequencies ``[K/2]``, with Llama-3 or linear scaling applied."""
    k = cfg.head_dim
    inv = 1.0 / (cfg.rope_theta ** (np.arange(0, k, 2, dtype=np.float64) / k))
    sc = cfg.rope_scaling
    if sc is None:
        return inv.astype(np.float32)
    if sc.rope_type == "linear":
        return (inv / sc.factor).astype(np.float32)
    wavelen = 2 * np.pi / inv
    low_wavelen = sc.original_max_position_embeddings / sc.low_freq_factor
    high_wavelen = sc.original_max_position_embeddings / sc.high_freq_factor
    smooth = (sc.original_max_position_embeddings / wavelen - sc.low_freq_factor) / (
        sc.high_freq_factor - sc.low_freq_factor
    )
    mid = (1 - smooth) * inv / sc.factor + smooth * inv
    out = np.where(wavelen > low_wavelen, inv / sc.factor, inv)
    is_mid = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return np.where(is_mid, mid, out).astype(np.float32)


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: np.ndarray) -> jax.Array:
    """Rotates ``x [B, T, N, K]`` by ``positions [T]`` (half-split layout, as Hugging Face)."""
    angles = positions.astype(jnp.float32)[:, None] * inv_freq[None, :]  # [T, K/2]
    cos = jnp.concatenate([jnp.cos(angles)] * 2, axis=-1)[None, :, None, :]  # [1, T, 1, K]
    sin = jnp.concatenate([jnp.sin(angles)] * 2, axis=-1)[None, :, None, :]
    x32 = x.astype(jnp.float32)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
    return (x32 * cos + rotated * sin).astype(x.dtype)


def attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    q_pos: jax.Array,
    kv_pos: jax.Array,
    sliding_window: int | None,
) -> jax.Array:
    """Causal grouped-query attention.

    Args:
      q: ``[B, T, H, K]`` queries at positions ``q_pos [T]``.
      k, v: ``[B, S, G, K]`` keys and values at positions ``kv_pos [S]``; slots whose position
        is after a query's are masked, so unused cache slots need no clearing.
      sliding_window: a query sees keys with ``q_pos - kv_pos < sliding_window``.
    Returns:
      ``[B, T, H, K]``.
    """
    b, t, h, kd = q.shape
    g = k.shape[2]
    q = q.reshape(b, t, g, h // g, kd)  # [B, T, G, R, K]
    scores = jnp.einsum("btgrk,bsgk->bgrts", q, k).astype(jnp.float32) / np.sqrt(kd)
    visible = kv_pos[None, :] <= q_pos[:, None]  # [T, S]
    if sliding_window is not None:
        visible &= q_pos[:, None] - kv_pos[None, :] < sliding_window
    scores = jnp.where(visible, scores, _MASKED)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    return jnp.einsum("bgrts,bsgk->btgrk", probs, v).reshape(b, t, h, kd)


def ffn_activation(
    gate: jax.Array, up: jax.Array, kind: Activation, threshold: float = 0.0
) -> jax.Array:
    """Neuron activations from gate and up projections (same shape in and out)."""
    if kind == "silu":
        return jax.nn.silu(gate) * up
    if kind == "relu":
        return jax.nn.relu(gate) * up
    if kind == "drelu":
        return jax.nn.relu(gate) * jax.nn.relu(up)
    if kind == "fatrelu":
        return jnp.where(gate > threshold, gate, 0.0).astype(gate.dtype) * up
    raise ValueError(f"unknown FFN activation {kind!r}")


def rows_in(x: jax.Array, w: jax.Array | QArray) -> jax.Array:
    """``x [..., D] . w[..., F, D]^T -> [..., (E,) F]``: one output per row of ``w`` (gate, up,
    a head); quantized ``w`` through the quantized kernels."""
    if is_quantized(w):
        return qdot(x, w).reshape(*x.shape[:-1], *w.shape[:-1]).astype(x.dtype)
    return jnp.einsum("...d,fd->...f" if w.ndim == 2 else "...d,efd->...ef", x, w)


def rows_in_all(x: jax.Array, ws: list) -> list[jax.Array]:
    """:func:`rows_in` for several matrices read with the same ``x``: one native call when
    all are quantized alike (gate and up; attention's q, k and v)."""
    if len(ws) > 1 and all(is_quantized(w) and w.kind == ws[0].kind for w in ws):
        ys = qdot_many(x, ws)
        return [
            y.reshape(*x.shape[:-1], *w.shape[:-1]).astype(x.dtype)
            for y, w in zip(ys, ws, strict=True)
        ]
    return [rows_in(x, w) for w in ws]


def rows_out(a: jax.Array, w: jax.Array | QArray) -> jax.Array:
    """``a [..., (E,) F] . w[(E,) F, D] -> [..., D]``: the rows of ``w`` weighted by ``a`` (the
    down projection, one neuron per row; quantized and transposed, one output per row)."""
    if is_quantized(w) and w.transposed:
        return qdot(a, w).astype(a.dtype)
    if is_quantized(w):
        lead = a.shape[: a.ndim - (w.ndim - 1)]
        return qaxpy(a.reshape(*lead, -1), w).astype(a.dtype)
    return jnp.einsum("...f,fd->...d" if w.ndim == 2 else "...ef,efd->...d", a, w)


def ffn_blocks(p: dict) -> list[tuple[jax.Array, jax.Array, jax.Array]]:
    """A layer's FFN weights as ``(gate, up, down)`` blocks of neurons, each ``[..., F_i, D]``:
    the whole matrices, or (sparse layout) the hot block then the cold clusters flattened (a
    reshape, not a copy). Blocks with no neurons are left out. Quantized weights
    (:class:`~pi2lab.quant.ops.QArray`) alike."""
    if "gate" in p:
        return [(p["gate"], p["up"], p["down"])]

    def flat(w):  # [..., NC, C, D] -> [..., F, D]
        return jax.tree.map(lambda a: a.reshape(*a.shape[:-3], -1, a.shape[-1]), w)

    blocks = [
        (p["hot_gate"], p["hot_up"], p["hot_down"]),
        (flat(p["cold_gate"]), flat(p["cold_up"]), flat(p["cold_down"])),
    ]
    return [b for b in blocks if b[0].shape[-2]]


def ffn(x: jax.Array, p: dict, cfg: ModelConfig) -> tuple[jax.Array, jax.Array]:
    """Dense FFN. ``x [B, T, D]``; weights neuron-major ``gate, up, down: [F, D]`` (or the
    sparse layout, see :func:`ffn_blocks`).

    Returns the output ``[B, T, D]`` and the neuron activations ``[B, T, F]``.
    """
    out, acts = 0.0, []
    for gate_w, up_w, down_w in ffn_blocks(p):
        gate, up = rows_in_all(x, [gate_w, up_w])
        act = ffn_activation(gate, up, cfg.ffn_activation, cfg.activation_threshold)
        out = out + rows_out(act, down_w)
        acts.append(act)
    return out, jnp.concatenate(acts, axis=-1)


def moe_routing(x: jax.Array, router: jax.Array, top_k: int) -> jax.Array:
    """Mixtral routing: top-k experts by router logit, softmax over the chosen k.

    ``x [B, T, D]``, ``router [E, D]`` -> dense weights ``[B, T, E]`` (zero off the top-k).
    """
    logits = jnp.einsum("btd,ed->bte", x, router).astype(jnp.float32)
    top_vals, top_idx = jax.lax.top_k(logits, top_k)  # [B, T, k]
    weights = jax.nn.softmax(top_vals, axis=-1)
    one_hot = jax.nn.one_hot(top_idx, router.shape[0], dtype=jnp.float32)  # [B, T, k, E]
    return jnp.einsum("btk,btke->bte", weights, one_hot)


def moe_ffn(x: jax.Array, p: dict, cfg: ModelConfig) -> tuple[jax.Array, jax.Array]:
    """Mixture-of-experts FFN computed densely over all experts, weighted by the router.

    Weights ``gate, up, down: [E, F, D]`` (or the sparse layout), ``router [E, D]``. Returns
    the output ``[B, T, D]`` and activations ``[B, T, E, F]`` zeroed for experts the token
    was not routed to.
    """
    weights = moe_routing(x, p["router"], cfg.num_experts_per_tok).astype(x.dtype)  # [B, T, E]
    out, acts = 0.0, []
    for gate_w, up_w, down_w in ffn_blocks(p):
        gate, up = rows_in_all(x, [gate_w, up_w])
        act = ffn_activation(gate, up, cfg.ffn_activation, cfg.activation_threshold)
        act = act * (weights > 0)[..., None]
        out = out + rows_out(act * weights[..., None], down_w)
        acts.append(act)
    return out, jnp.concatenate(acts, axis=-1)
