"""Slot-mapped neuron cache and trace replay.

Shapes: T tokens, L layers, F neurons per layer, C neurons per unit (cluster), U = F / C
units per layer, N ids requested in one call, S = capacity slots.

The engine holds one weight array of ``S`` slots per layer; :class:`NeuronCache` tells it,
each token, which slot every hit lives in and which slot every admitted unit is read into
(evicted units' slots are reused). A :class:`~pi2lab.policies.Policy` decides what stays.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from pi2lab.errors import ConfigError
from pi2lab.policies import Policy, PolicyState, resident


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class CacheAccess:
    """One token's answer for one layer; id arrays sorted, slot arrays aligned with them.

    Attributes:
      hits: ``[H]`` requested units already resident.
      hit_slots: ``[H]`` the slot each hit lives in.
      admit: ``[A]`` units to read into the cache (may include unrequested read-ahead).
      admit_slots: ``[A]`` the slot each admitted unit goes to.
      evict: ``[E]`` units dropped this token (their slots may now hold admitted units).
      bypass: ``[B]`` requested misses to read into a staging buffer and drop after use.
    """

    hits: np.ndarray
    hit_slots: np.ndarray
    admit: np.ndarray
    admit_slots: np.ndarray
    evict: np.ndarray
    bypass: np.ndarray


class NeuronCache:
    """A policy's state plus the map from resident units to the engine's ``capacity`` slots.

    Units the policy pre-fills at init (static or segmented hot sets) get slots ``0..R-1``.
    ``access`` is check-free; :meth:`check` verifies every invariant (for tests).

    Attributes:
      policy: The replacement policy.
      universe: U, units in the layer.
      capacity: S, slots in the engine's weight array.
      state: The policy's mutable state.
      slot_of: ``[U]`` int64, the slot of each resident unit, -1 when not resident.
    """

    def __init__(self, policy: Policy, universe: int, capacity: int):
        self.policy = policy
        self.universe = int(universe)
        self.capacity = int(capacity)
        self.state: PolicyState = policy.init(self.universe, self.capacity)
        self.slot_of = np.full(self.universe, -1, np.int64)
        filled = resident(self.state)
        self.slot_of[filled] = np.arange(filled.size)
        # a stack whose top (the end) is the lowest free slot, so slots fill in order
        self._free = np.arange(self.capacity - 1, -1, -1, dtype=np.int64)
        self._n_free = self.capacity - filled.size

    def access(self, ids: np.ndarray, t: int) -> CacheAccess:
        """Serve ``ids [N]`` (sorted unique unit ids in ``[0, U)``) at token ``t``."""
        a = self.policy.access(self.state, ids, t)
        # free the evicted slots first: admitted units reuse them
        freed = self.slot_of[a.evict]
        self.slot_of[a.evict] = -1
        n = self._n_free
        self._free[n : n + freed.size] = freed
        n += freed.size
        slots = self._free[n - a.admit.size : n][::-1].copy()
        self._n_free = n - a.admit.size
        self.slot_of[a.admit] = slots
        return CacheAccess(
            hits=a.hits,
            hit_slots=self.slot_of[a.hits],
            admit=a.admit,
            admit_slots=slots,
            evict=a.evict,
            bypass=a.bypass,
        )

    def discard(self, ids: np.ndarray) -> None:
        """Drops resident units ``ids`` (e.g. half-read by gate-first loading) and frees their
        slots. Only for unit-granular regions: a segmented policy's hot groups stay whole."""
        ids = ids[self.slot_of[ids] >= 0]
        if not ids.size:
            return
        hot = getattr(self.state, "hot_units", 0)
        if np.any(ids < hot):
            raise ValueError(f"units {ids[ids < hot]} are in the hot region; keep groups whole")
        self.state.resident[ids] = False
        n = self._n_free
        self._free[n : n + ids.size] = self.slot_of[ids]
        self._n_free = n + ids.size
        self.slot_of[ids] = -1

    def check(self) -> None:
        """Raise ``AssertionError`` unless the policy state and slot map agree."""
        res = resident(self.state)
        slots = self.slot_of[res]
        free = self._free[: self._n_free]
        problems = []
        if res.size > self.capacity:
            problems.append(f"{res.size} units resident, capacity {self.capacity}")
        if np.any(self.slot_of[~self.state.resident] != -1):
            problems.append("a non-resident unit has a slot")
        if np.any((slots < 0) | (slots >= self.capacity)):
            problems.append("a resident unit has no slot or one out of range")
        if np.unique(slots).size != slots.size:
            problems.append("two resident units share a slot")
        if not np.array_equal(np.sort(np.concatenate([slots, free])), np.arange(self.capacity)):
            problems.append("used and free slots do not partition 0..capacity-1")
        if problems:
            raise AssertionError(f"NeuronCache({self.policy!r}): " + "; ".join(problems))


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class CacheStats:
    """Per-token counts from replaying one layer's trace; arrays are ``[T]`` int64.

    Attributes:
      requested: Units requested.
      hits: Requested units found resident.
      admitted: Requested misses read into the cache.
      bypassed: Requested misses read into the staging buffer.
      read_ahead: Unrequested units read into the cache (segmented hot groups).
      evicted: Units dropped.
      prefilled: Units resident before the first token (read once, at load).
      capacity: Most units resident.
      warmup: Leading tokens the summary properties skip.
    """

    requested: np.ndarray
    hits: np.ndarray
    admitted: np.ndarray
    bypassed: np.ndarray
    read_ahead: np.ndarray
    evicted: np.ndarray
    prefilled: int
    capacity: int
    warmup: int = 0

    @property
    def misses(self) -> np.ndarray:
        """``[T]`` requested units not resident (admitted + bypassed)."""
        return self.admitted + self.bypassed

    @property
    def reads(self) -> np.ndarray:
        """``[T]`` units read from flash per token (misses + read-ahead)."""
        return self.misses + self.read_ahead

    @property
    def hit_rate(self) -> float:
        """Hits / requested over the tokens after ``warmup`` (NaN when nothing was requested)."""
        req = int(self.requested[self.warmup :].sum())
        return int(self.hits[self.warmup :].sum()) / req if req else float("nan")

    @property
    def units_read_per_token(self) -> float:
        """Mean units read from flash per token after ``warmup`` (NaN with no tokens)."""
        reads = self.reads[self.warmup :]
        return float(reads.mean()) if reads.size else float("nan")


def simulate(policy: Policy, masks: np.ndarray, capacity: int, warmup: int = 0) -> CacheStats:
    """Replay one layer's trace ``masks [T, U]`` (bool: unit needed at token t) through ``policy``.

    ``warmup`` tokens are replayed but skipped by :attr:`CacheStats.hit_rate` and
    :attr:`CacheStats.units_read_per_token`.
    """
    masks = np.asarray(masks, bool)
    if masks.ndim != 2:
        raise ConfigError(f"simulate: masks shape {masks.shape}: expected [T, U] bool")
    steps, universe = masks.shape
    if not 0 <= warmup <= steps:
        raise ConfigError(f"simulate: warmup={warmup}: expected 0..{steps} (the trace length)")
    state = policy.init(universe, capacity)
    prefilled = int(np.count_nonzero(state.resident))
    counts = np.zeros((6, steps), np.int64)  # requested, hits, admitted, bypassed, ahead, evicted
    for t in range(steps):
        ids = np.flatnonzero(masks[t])
        a = policy.access(state, ids, t)
        admitted = ids.size - a.hits.size - a.bypass.size
        counts[:, t] = (
            ids.size,
            a.hits.size,
            admitted,
            a.bypass.size,
            a.admit.size - admitted,
            a.evict.size,
        )
    return CacheStats(
        requested=counts[0],
        hits=counts[1],
        admitted=counts[2],
        bypassed=counts[3],
        read_ahead=counts[4],
        evicted=counts[5],
        prefilled=prefilled,
        capacity=int(capacity),
        warmup=int(warmup),
    )


def simulate_layers(
    policy_factory: Policy | Callable[[int], Policy],
    masks: np.ndarray | Sequence[np.ndarray],
    capacity: int | Sequence[int],
    warmup: int = 0,
) -> list[CacheStats]:
    """Replay every layer: ``masks [T, L, U]`` or a list of per-layer ``[T, U_l]``.

    Args:
      policy_factory: One policy for all layers, or ``layer -> Policy`` (e.g. a Belady per
        layer, which needs that layer's trace).
      capacity: Units per layer, one for all or one per layer.
    """
    if isinstance(masks, np.ndarray):
        if masks.ndim != 3:
            raise ConfigError(f"simulate_layers: masks shape {masks.shape}: expected [T, L, U]")
        layers = [masks[:, i] for i in range(masks.shape[1])]
    else:
        layers = list(masks)
    caps = [capacity] * len(layers) if np.ndim(capacity) == 0 else list(capacity)
    if len(caps) != len(layers):
        raise ConfigError(
            f"simulate_layers: capacity has {len(caps)} entries: expected one per layer "
            f"({len(layers)})"
        )
    pick = (lambda _: policy_factory) if isinstance(policy_factory, Policy) else policy_factory
    pairs = enumerate(zip(layers, caps, strict=True))
    return [simulate(pick(i), m, int(c), warmup) for i, (m, c) in pairs]


def unit_masks(neuron_masks: np.ndarray, cluster_size: int, hot: int = 0) -> np.ndarray:
    """Neuron masks ``[..., F]`` bool -> unit masks ``[..., F / C]`` (a unit is needed if any
    of its ``C = cluster_size`` neurons fires).

    The first ``hot`` neurons count as firing every token, matching the sparse decode, which
    computes the hot block densely (:mod:`pi2lab.kernels.sparse_ffn`).
    """
    neuron_masks = np.asarray(neuron_masks, bool)
    f = neuron_masks.shape[-1]
    if cluster_size < 1 or f % cluster_size:
        raise ConfigError(
            f"unit_masks: cluster_size={cluster_size} does not tile {f} neurons: expected "
            f"a divisor of {f} (>= 1)"
        )
    if not 0 <= hot <= f:
        raise ConfigError(f"unit_masks: hot={hot}: expected 0..{f} neurons")
    if hot:
        neuron_masks = neuron_masks.copy()
        neuron_masks[..., :hot] = True
    return neuron_masks.reshape(*neuron_masks.shape[:-1], f // cluster_size, cluster_size).any(-1)
