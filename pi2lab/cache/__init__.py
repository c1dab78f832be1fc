"""Neuron cache: slot map over a replacement policy, trace replay and unit masks."""

from pi2lab.cache.neuron_cache import (
    CacheAccess,
    CacheStats,
    NeuronCache,
    simulate,
    simulate_layers,
    unit_masks,
)

__all__ = [
    "CacheAccess",
    "CacheStats",
    "NeuronCache",
    "simulate",
    "simulate_layers",
    "unit_masks",
]
