"""Neuron-cache replacement policies: the shared interface.

A *unit* is one flash read unit of one FFN layer: a cluster of ``C`` consecutive neurons
(``C`` may be 1). Units of a layer are numbered ``0..U-1`` in hot-first order (the offline
profile sorted neurons by firing frequency), so a low id means "needed often".

Every decode token the engine asks the cache for the units it needs in one layer, a sorted
unique id array ``ids [N]``. The policy answers with an :class:`Access`:

- ``hits``: requested units already resident;
- ``admit``: units read into a cache slot this token. Usually requested misses, but a policy
  that reads ahead (the hot clusters of :class:`~pi2lab.policies.Segmented`) also admits units
  that were *not* requested; ``admit`` minus ``ids`` is the read-ahead;
- ``evict``: previously resident units dropped to make room (never a hit, never admitted);
- ``bypass``: requested misses read into a staging buffer, computed and dropped, because no
  room could be made for them.

Invariants after each call: ``hits``, ``admit ∩ ids`` and ``bypass`` partition ``ids``;
resident becomes ``(before - evict) ∪ admit`` and never holds more than ``capacity`` units.
All four arrays are sorted int id arrays.

Policies are small frozen dataclasses holding only their knobs; the per-layer mutable state
(numpy arrays over the ``U`` units) is a :class:`PolicyState` the caller owns, so one policy
object serves every layer. The hot path is vectorised numpy over those arrays: ``U`` reaches
~15k per layer and ~1.5k ids are requested per call.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import NamedTuple

import numpy as np

from pi2lab.errors import ConfigError

EMPTY = np.zeros(0, np.int64)
EMPTY.flags.writeable = False


class Access(NamedTuple):
    """What one :meth:`Policy.access` call decided; every field a sorted int id array.

    Attributes:
      hits: Requested units that were resident.
      admit: Units read into the cache; may include unrequested read-ahead units.
      evict: Previously resident units dropped; disjoint from ``hits`` and ``admit``.
      bypass: Requested misses read into a staging buffer and not cached.
    """

    hits: np.ndarray
    admit: np.ndarray
    evict: np.ndarray
    bypass: np.ndarray


@dataclasses.dataclass(kw_only=True, eq=False)
class PolicyState:
    """Mutable per-layer state of a policy; created by :meth:`Policy.init`, owned by the caller.

    Attributes:
      universe: U, the number of units in the layer.
      capacity: Most units resident at once.
      resident: ``[U]`` bool, the units now in the cache.
    """

    universe: int
    capacity: int
    resident: np.ndarray


@dataclasses.dataclass(frozen=True, kw_only=True)
class Policy(abc.ABC):
    """Abstract base of the neuron-cache replacement policies.

    Subclasses implement :meth:`_init` and :meth:`access`; :meth:`init` checks the sizes first.
    """

    def init(self, universe: int, capacity: int) -> PolicyState:
        """Fresh state for a layer of ``universe`` units holding at most ``capacity`` of them."""
        if universe < 0:
            raise ConfigError(f"{self._name}: universe={universe}: expected >= 0 units")
        if capacity < 0:
            raise ConfigError(
                f"{self._name}: capacity={capacity}: expected 0..{universe} units (>= 0)"
            )
        return self._init(int(universe), int(capacity))

    @abc.abstractmethod
    def _init(self, universe: int, capacity: int) -> PolicyState:
        """Fresh state; sizes already checked."""

    @abc.abstractmethod
    def access(self, state: PolicyState, ids: np.ndarray, t: int) -> Access:
        """Serve the request ``ids [N]`` (sorted unique ints in ``[0, U)``) at token ``t``.

        ``t`` must not decrease between calls on one state. Mutates ``state``; does not check
        ``ids`` (hot path): :class:`~pi2lab.cache.NeuronCache.check` verifies the outcome.
        """

    @property
    def _name(self) -> str:
        return type(self).__name__


def resident(state: PolicyState) -> np.ndarray:
    """Sorted ids ``[R]`` of the units resident in ``state``."""
    return np.flatnonzero(state.resident)


def lowest(cand: np.ndarray, keys: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` entries of ``cand [M]`` with the smallest ``keys [M]`` (unordered)."""
    if n <= 0:
        return EMPTY
    if n >= cand.size:
        return cand
    # argpartition is O(M); a full sort of ~7k candidates per call would dominate the access
    return cand[np.argpartition(keys, n - 1)[:n]]


def make_room_and_admit(
    resident: np.ndarray, ids: np.ndarray, capacity: int, victim_keys
) -> Access:
    """Demand-paging step shared by the recency/frequency policies.

    Admits every miss, evicting non-requested residents with the smallest
    ``victim_keys(cand)`` first; misses that still do not fit bypass, the lowest (most
    frequently needed) ids being admitted first. Mutates ``resident [U]`` (may be a view of a
    segment, with ``ids`` local to it).
    """
    hit = resident[ids]
    hits, misses = ids[hit], ids[~hit]
    free = max(capacity - int(np.count_nonzero(resident)), 0)
    evict = EMPTY
    if misses.size > free:
        cand_mask = resident.copy()
        cand_mask[ids] = False
        cand = np.flatnonzero(cand_mask)
        evict = np.sort(lowest(cand, victim_keys(cand), misses.size - free))
        free += evict.size
        resident[evict] = False
    admit, bypass = misses[:free], misses[free:]
    resident[admit] = True
    return Access(hits, admit, evict, bypass)


def recency_keys(last_used: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Eviction keys ``[M]``: least recently used first, ties the highest (coldest) id first."""
    span = last_used.size
    return (last_used[cand] + 1) * span + (span - 1 - cand)
