"""Dense single-token decode step (jitted; knobs and positions traced, so it compiles once)."""

from __future__ import annotations

import functools

import jax

from pi2lab.config import ModelConfig
from pi2lab.engine.sampling import SamplingKnobs, sample
from pi2lab.engine.traces import traced
from pi2lab.model.kv_cache import KVCache
from pi2lab.model.transformer import forward


@functools.partial(jax.jit, static_argnames=("cfg",), donate_argnames=("cache",))
def decode_step(
    params: dict,
    cfg: ModelConfig,
    cache: KVCache,
    token: jax.Array,
    pos: jax.Array,
    key: jax.Array,
    knobs: SamplingKnobs,
) -> tuple[jax.Array, jax.Array, KVCache]:
    """Feeds ``token`` (int32 scalar) at position ``pos``; samples the next one.

    Returns the next token id, the logits ``[V]`` it was drawn from, and the updated cache.
    """
    traced("decode_step")
    logits, cache, _ = forward(params, cfg, token.reshape(1, 1), pos, cache)
    logits = logits[0, 0]
    return sample(logits, jax.random.fold_in(key, pos), knobs), logits, cache


@jax.jit
def sample_first(
    logits: jax.Array, last_pos: jax.Array, key: jax.Array, knobs: SamplingKnobs
) -> jax.Array:
    """Samples the first new token from the prefill's logits at ``last_pos`` (the prompt's
    last position), keyed like the decode steps: the token after position p uses key p."""
    traced("sample_first")
    return sample(logits, jax.random.fold_in(key, last_pos), knobs)
