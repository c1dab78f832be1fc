"""Dense prefill: the whole prompt in one pass, padded to a length bucket, filling the KV cache."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from pi2lab.config import ModelConfig
from pi2lab.engine.traces import traced
from pi2lab.errors import PromptError
from pi2lab.model.kv_cache import KVCache
from pi2lab.model.transformer import forward

MIN_BUCKET = 16


def bucket(n: int, minimum: int = MIN_BUCKET) -> int:
    """The padded length for ``n`` tokens: the next power of two, at least ``minimum``."""
    return max(minimum, 1 << max(n - 1, 0).bit_length())


def pad(tokens: np.ndarray, length: int) -> jax.Array:
    """``tokens [T]`` -> ``[1, length]`` int32, zero-padded at the end."""
    out = np.zeros((1, length), np.int32)
    out[0, : len(tokens)] = tokens
    return jnp.asarray(out)


@functools.partial(jax.jit, static_argnames=("cfg",), donate_argnames=("cache",))
def prefill(
    params: dict, cfg: ModelConfig, tokens: jax.Array, length: jax.Array, cache: KVCache
) -> tuple[jax.Array, KVCache]:
    """Runs ``tokens [1, T_pad]`` (``length`` real ones) from position 0 into ``cache``.

    Returns the logits ``[V]`` of the last real token and the filled cache. Padding slots get
    keys too, but decode overwrites them before any query can see them.
    """
    traced("prefill")
    logits, cache, _ = forward(params, cfg, tokens, 0, cache)
    return logits[0, length - 1], cache


@functools.partial(jax.jit, static_argnames=("cfg",))
def _dense_forward(params: dict, cfg: ModelConfig, tokens: jax.Array):
    traced("dense_forward")
    logits, _, acts = forward(params, cfg, tokens)
    return logits[0], acts


def check_tokens(tokens, cfg: ModelConfig) -> np.ndarray:
    tokens = np.asarray(tokens, np.int32).reshape(-1)
    if tokens.size == 0:
        raise PromptError("the prompt is empty: expected at least one token")
    if tokens.size > cfg.max_position_embeddings:
        raise PromptError(
            f"the prompt has {tokens.size} tokens; the model's context is "
            f"{cfg.max_position_embeddings} (max_position_embeddings)"
        )
    if tokens.min() < 0 or tokens.max() >= cfg.vocab_size:
        raise PromptError(
            f"token ids must lie in [0, {cfg.vocab_size}); got [{tokens.min()}, {tokens.max()}]"
        )
    return tokens


def dense_logits(model, tokens) -> jax.Array:
    """Dense forward of a whole sequence: ``tokens [T]`` -> logits ``[T, V]`` (float32)."""
    tokens = check_tokens(tokens, model.config)
    padded = bucket(tokens.size)
    logits, _ = _dense_forward(model.params, model.config, pad(tokens, padded))
    return logits[: tokens.size]


def ffn_activations(model, tokens) -> list[jax.Array]:
    """Per-layer FFN activations of a sequence: ``[T, F]`` each (``[T, E, F]`` for MoE)."""
    tokens = check_tokens(tokens, model.config)
    _, acts = _dense_forward(model.params, model.config, pad(tokens, bucket(tokens.size)))
    return [a[0, : tokens.size] for a in acts]
