"""What every bench shares: the machine's description and the dense decode rate."""

from __future__ import annotations

import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from pi2lab.config import ModelConfig
from pi2lab.engine.decode import decode_step
from pi2lab.engine.prefill import bucket, pad, prefill
from pi2lab.engine.sampling import SamplingKnobs
from pi2lab.model.kv_cache import KVCache


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.machine(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": len(jax.devices()),
    }


def dense_step(params: dict, cfg: ModelConfig):
    """A greedy dense decode step as ``step(i, cache, token, pos) -> (token, cache)``."""
    key, knobs = jax.random.key(0), SamplingKnobs.make()

    def step(i, cache, token, pos):
        token, _, cache = decode_step(params, cfg, cache, token, pos, key, knobs)
        return token, cache

    return step


def decode_rate(step, params: dict, cfg: ModelConfig, steps: int, prompt_len: int = 16) -> float:
    """Tokens/s of ``steps`` calls of ``step(i, cache, token, pos)`` after a dense prefill."""
    cache = KVCache.zeros(
        cfg, bucket(prompt_len + steps + 1, 128), dtype=params["final_norm"].dtype
    )
    prompt = np.arange(1, prompt_len + 1, dtype=np.int32) % cfg.vocab_size
    logits, cache = prefill(
        params, cfg, pad(prompt, bucket(prompt_len)), jnp.int32(prompt_len), cache
    )
    token = jnp.argmax(logits).astype(jnp.int32)
    token.block_until_ready()
    t0 = time.perf_counter()
    for i in range(steps):
        token, cache = step(i, cache, token, np.int32(prompt_len + i))  # np: no dispatch
    token.block_until_ready()
    return steps / (time.perf_counter() - t0)
