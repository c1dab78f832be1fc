"""Decode state: a fixed-capacity key/value cache."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from pi2lab.config import ModelConfig


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KVCache:
    """Keys and values of every layer, ``[B, S, G, K]`` each, S = capacity (static).

    Slots past the current position hold stale values; attention masks them by position.

    Attributes:
      k: One key array per layer.
      v: One value array per layer.
    """

    k: tuple[jax.Array, ...]
    v: tuple[jax.Array, ...]

    @classmethod
    def zeros(cls, cfg: ModelConfig, capacity: int, batch: int = 1, dtype=jnp.float32) -> KVCache:
        shape = (batch, capacity, cfg.num_kv_heads, cfg.head_dim)
        layers = tuple(jnp.zeros(shape, dtype) for _ in range(cfg.num_layers))
        return cls(k=layers, v=tuple(jnp.zeros(shape, dtype) for _ in range(cfg.num_layers)))

    @property
    def capacity(self) -> int:
        return self.k[0].shape[1]
