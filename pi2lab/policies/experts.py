"""Expert-aware neuron cache for MoE models: each layer's cache shared among its experts by
popularity, each expert's share run by its own policy (segmented by default).

An MoE layer has one bundle file and one cache per expert. Routing is skewed (a few experts
take most tokens), so an even split leaves popular experts missing while rarely routed ones
hold units that are seldom read. :class:`ExpertAware` keeps the layer's total (the budget
rule, :meth:`pi2lab.budget.MemoryBudget.cache_units`, gives every FFN the same count) and
shares it by routing frequency (:func:`pi2lab.budget.split_units`); within each expert the
``inner`` policy decides what stays, so with ``segmented`` a popular expert gets a larger hot
segment (its hot clusters pre-filled) and a larger neuron-granular cold segment.
"""

from __future__ import annotations

import dataclasses
from typing import final

import numpy as np

from pi2lab.budget import split_units
from pi2lab.errors import ConfigError
from pi2lab.policies.registry import parse_policy


@final
@dataclasses.dataclass(frozen=True, kw_only=True)
class ExpertAware:
    """An MoE model's caches sized by expert popularity (see the module docstring).

    Attributes:
      popularity: ``[L][E]`` how often each layer's experts are routed to (counts or
        frequencies: each layer's row is used up to scale), e.g. from a profile's routed
        experts (:meth:`from_routed`) or an engine's counts
        (:attr:`pi2lab.engine.offload.OffloadEngine.expert_counts`).
      inner: Each expert's cache policy by registry name (:mod:`pi2lab.policies.registry`).
    """

    popularity: tuple[tuple[float, ...], ...]
    inner: str = "segmented"

    def __post_init__(self):
        rows = tuple(tuple(float(v) for v in row) for row in self.popularity)
        widths = {len(r) for r in rows}
        flat = np.array([v for r in rows for v in r])
        if not rows or len(widths) != 1 or 0 in widths:
            raise ConfigError(
                f"ExpertAware: popularity rows of lengths {[len(r) for r in rows]}: expected "
                "one row per layer, each with one weight per expert"
            )
        if not np.all(np.isfinite(flat)) or np.any(flat < 0):
            raise ConfigError("ExpertAware: popularity must be finite and >= 0")
        parse_policy(self.inner)
        object.__setattr__(self, "popularity", rows)

    @classmethod
    def from_routed(cls, routed: np.ndarray, inner: str = "segmented") -> ExpertAware:
        """From routed experts ``[L, N, E]`` bool (a profile's
        :attr:`~pi2lab.predict.profile.ActivationTrace.routed`) or counts ``[L, E]``."""
        routed = np.asarray(routed)
        counts = routed.sum(1) if routed.ndim == 3 else routed
        return cls(popularity=tuple(map(tuple, counts.astype(np.float64))), inner=inner)

    @property
    def shape(self) -> tuple[int, int]:
        """``(layers, experts)``."""
        return len(self.popularity), len(self.popularity[0])

    def capacities(self, per_ffn: int, units: int) -> list[int]:
        """Cache units of every FFN, layer-major (the flash layout's file order): each layer's
        ``per_ffn * E`` units shared among its ``E`` experts by popularity, at most ``units``
        each."""
        experts = self.shape[1]
        return [c for row in self.popularity for c in split_units(per_ffn * experts, row, units)]

    def __repr__(self) -> str:
        layers, experts = self.shape
        return f"ExpertAware({layers} layers x {experts} experts, inner={self.inner!r})"


__all__ = ["ExpertAware"]
