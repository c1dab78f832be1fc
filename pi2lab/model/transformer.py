"""The decoder forward pass (pure; jitted by the engine entry points)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from pi2lab.config import ModelConfig
from pi2lab.model import layers
from pi2lab.model.kv_cache import KVCache
from pi2lab.quant.ops import is_quantized, qdot, qdot_many, take_rows

FfnFn = Callable[[int, jax.Array, jax.Array, dict], tuple[jax.Array, jax.Array]]


def dense_ffn(cfg: ModelConfig) -> FfnFn:
    """The dense FFN (all neurons, all experts) as a forward ``ffn`` hook."""
    layer_fn = layers.moe_ffn if cfg.is_moe else layers.ffn
    return lambda i, resid, h, p: layer_fn(h, p, cfg)


def heads_in(h: jax.Array, ws: list, heads: list[int]) -> list[jax.Array]:
    """``h [B, T, D]`` -> ``[B, T, N, K]`` through query/key/value projections: internal
    ``w [D, N, K]``, or quantized ``[N*K, D]`` (one output per row; all in one call)."""
    if all(is_quantized(w) for w in ws):
        ys = qdot_many(h, ws)
        return [
            y.reshape(*h.shape[:-1], n, -1).astype(h.dtype) for y, n in zip(ys, heads, strict=True)
        ]
    return [jnp.einsum("btd,dnk->btnk", h, w) for w in ws]


def heads_out(att: jax.Array, w) -> jax.Array:
    """``att [B, T, H, K]`` -> ``[B, T, D]`` through the output projection: internal
    ``w [H, K, D]``, or quantized ``[D, H*K]``."""
    if is_quantized(w):
        return qdot(att.reshape(*att.shape[:-2], -1), w).astype(att.dtype)
    return jnp.einsum("bthk,hkd->btd", att, w)


def lm_head(x: jax.Array, w) -> jax.Array:
    """Logits ``[B, T, V]`` float32 of the final hidden states ``x [B, T, D]``."""
    if is_quantized(w):
        return qdot(x, w)
    return jnp.einsum("btd,vd->btv", x, w).astype(jnp.float32)


def attention_block(
    p: dict,
    cfg: ModelConfig,
    x: jax.Array,
    q_pos: jax.Array,
    kv_pos: jax.Array,
    inv_freq,
    kv: tuple[jax.Array, jax.Array] | None = None,
    start: jax.Array | int = 0,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One layer's attention with its residual: ``x [B, T, D]`` -> ``x``, keys and values.

    With ``kv`` (a layer's cache ``[B, S, G, K]`` twice) the new keys/values are written at
    ``start`` and the returned ones are the whole updated cache; without, just the new ones.
    """
    h = layers.rms_norm(x, p["attn_norm"], cfg.rms_norm_eps)
    g = cfg.num_kv_heads
    q, k, v = heads_in(h, [p["q"], p["k"], p["v"]], [cfg.num_heads, g, g])
    q = layers.apply_rope(q, q_pos, inv_freq)
    k = layers.apply_rope(k, q_pos, inv_freq)
    if kv is not None:
        k = jax.lax.dynamic_update_slice_in_dim(kv[0], k.astype(kv[0].dtype), start, axis=1)
        v = jax.lax.dynamic_update_slice_in_dim(kv[1], v.astype(kv[1].dtype), start, axis=1)
    att = layers.attention(q, k, v, q_pos, kv_pos, cfg.sliding_window)
    return x + heads_out(att, p["o"]), k, v


def forward(
    params: dict,
    cfg: ModelConfig,
    tokens: jax.Array,
    start: jax.Array | int = 0,
    cache: KVCache | None = None,
    ffn: FfnFn | None = None,
) -> tuple[jax.Array, KVCache | None, list[jax.Array]]:
    """Runs the decoder over ``tokens [B, T]`` placed at positions ``start .. start+T-1``.

    With a ``cache``, the new keys/values are written at those positions and attention reads
    every cache slot (later slots are masked); without one, the tokens attend among themselves
    (training, and the plain dense forward).

    ``ffn(layer, resid, h, layer_params) -> (out, act)`` replaces the dense FFN; it receives the
    residual stream before the FFN norm (a predictor's input) and the normed input ``h``.

    Returns:
      logits ``[B, T, V]`` (float32), the updated cache (or None), and the FFN activations of
      each layer (``[B, T, F]``, or ``[B, T, E, F]`` for MoE) for sparsity measurement.
    """
    t = tokens.shape[1]
    q_pos = start + jnp.arange(t)
    kv_pos = q_pos if cache is None else jnp.arange(cache.capacity)
    inv_freq = layers.rope_inv_freq(cfg)
    ffn = ffn or dense_ffn(cfg)
    x = take_rows(params["embed"], tokens).astype(params["final_norm"].dtype)  # [B, T, D]
    new_k, new_v, acts = [], [], []
    for i, p in enumerate(params["layers"]):
        kv = None if cache is None else (cache.k[i], cache.v[i])
        x, k, v = attention_block(p, cfg, x, q_pos, kv_pos, inv_freq, kv, start)
        new_k.append(k)
        new_v.append(v)
        h = layers.rms_norm(x, p["ffn_norm"], cfg.rms_norm_eps)
        out, act = ffn(i, x, h, p)
        x = x + out
        acts.append(act)
    x = layers.rms_norm(x, params["final_norm"], cfg.rms_norm_eps)
    head = params["embed"] if cfg.tie_word_embeddings else params["lm_head"]
    logits = lm_head(x, head)
    new_cache = None if cache is None else KVCache(k=tuple(new_k), v=tuple(new_v))
    return logits, new_cache, acts
