"""Trace replay for the neuron-cache notebook (03): recorded activation traces turned into
per-layer unit masks and replayed through the real policies (:func:`pi2lab.cache.simulate`),
nothing timed.

Shapes: T tokens, L layers, U units per layer, B budgets.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pi2lab.cache import simulate, unit_masks
from pi2lab.policies import Belady
from pi2lab.policies.registry import make_policy, parse_policy, policy_label

POLICIES = ("lru", "lfu", "window", "static-hot", "segmented")
REPLAYED = "replayed on the recorded trace"


def layer_unit_masks(trace, plan, cluster_size: int, tokens: int, *, hot_block: bool = True):
    """Per-layer unit masks ``[T, U]`` of the first ``tokens`` tokens of an activation trace.

    A unit (``cluster_size`` neurons) is needed when any of its neurons fired. With
    ``hot_block`` the plan's hot block counts as needed every token, as the sparse decode
    computes it densely.
    """
    return [
        unit_masks(trace.active(i)[:tokens], cluster_size, hot=lp.hot if hot_block else 0)
        for i, lp in enumerate(plan.layers)
    ]


def policy_factory(name: str, *, hot_fraction: float = 0.5, segmented: bool = True):
    """``(universe, capacity) -> Policy`` for a registry name (:mod:`pi2lab.policies.registry`),
    built as the engine builds it; ``segmented=False`` turns ``segmented`` into plain LRU."""
    if parse_policy(name)[0] == "segmented" and not segmented:
        name = "lru"
    return lambda universe, capacity: make_policy(
        name, units=universe, capacity=capacity, hot_fraction=hot_fraction
    )


def capacity_of(budget: float, universe: int) -> int:
    """Cache slots for a budget given as a share of the layer's units."""
    return round(budget * universe)


def replay(masks: Sequence[np.ndarray], policy, budget: float, warmup: int = 0):
    """Hit rate ``[L]`` and units read per token ``[L]`` of ``policy`` (a name, or
    ``(universe, capacity) -> Policy``) replayed on per-layer masks ``[T, U]``."""
    factory = policy if callable(policy) else policy_factory(policy)
    rates, reads = [], []
    for m in masks:
        cap = capacity_of(budget, m.shape[1])
        s = simulate(factory(m.shape[1], cap), m, cap, warmup)
        rates.append(s.hit_rate)
        reads.append(s.units_read_per_token)
    return np.array(rates), np.array(reads)


def belady_replay(masks: Sequence[np.ndarray], budget: float, warmup: int = 0):
    """:func:`replay` of Belady's offline optimum (built per layer from its own trace)."""
    stats = [
        simulate(Belady.from_masks(m), m, capacity_of(budget, m.shape[1]), warmup) for m in masks
    ]
    return np.array([s.hit_rate for s in stats]), np.array([s.units_read_per_token for s in stats])


def budget_sweep(masks: np.ndarray, budgets, policies=POLICIES, warmup: int = 0, **kw):
    """Hit rate per policy against the budget on one layer ``masks [T, U]``:
    ``{label: [B]}`` (:func:`~pi2lab.policies.registry.policy_label`), Belady's included under
    ``"Belady"``."""
    out = {}
    for name in [*policies, "Belady"]:
        curve = []
        for b in budgets:
            cap = capacity_of(b, masks.shape[1])
            pol = (
                Belady.from_masks(masks)
                if name == "Belady"
                else policy_factory(name, **kw)(masks.shape[1], cap)
            )
            curve.append(simulate(pol, masks, cap, warmup).hit_rate)
        out[name if name == "Belady" else policy_label(name)] = np.array(curve)
    return out
