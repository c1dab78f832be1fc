"""Demand-paging policies keyed on the past: LRU, LFU and the LLM-in-a-Flash window."""

from __future__ import annotations

import dataclasses
from typing import final

import numpy as np

from pi2lab.errors import ConfigError
from pi2lab.policies.base import (
    Access,
    Policy,
    PolicyState,
    make_room_and_admit,
    recency_keys,
)


@dataclasses.dataclass(kw_only=True, eq=False)
class RecencyState(PolicyState):
    """State of :class:`LRU`, :class:`LFU` and :class:`Window`.

    Attributes:
      last_used: ``[U]`` int64, the last token each unit was requested at (-1: never).
      count: ``[U]`` int64, how many tokens requested each unit, resident or not.
    """

    last_used: np.ndarray
    count: np.ndarray


def _recency_state(universe: int, capacity: int) -> RecencyState:
    return RecencyState(
        universe=universe,
        capacity=capacity,
        resident=np.zeros(universe, bool),
        last_used=np.full(universe, -1, np.int64),
        count=np.zeros(universe, np.int64),
    )


@final
@dataclasses.dataclass(frozen=True, kw_only=True)
class LRU(Policy):
    """Least recently used: admit every miss, evict the non-requested unit used longest ago.

    Ties (e.g. never used) evict the highest id, the one the offline profile ranks coldest.
    Misses that find no room even after evicting every non-requested unit bypass.
    """

    def _init(self, universe: int, capacity: int) -> RecencyState:
        return _recency_state(universe, capacity)

    def access(self, state: RecencyState, ids: np.ndarray, t: int) -> Access:
        out = make_room_and_admit(
            state.resident, ids, state.capacity, lambda c: recency_keys(state.last_used, c)
        )
        state.last_used[ids] = t
        return out


@final
@dataclasses.dataclass(frozen=True, kw_only=True)
class LFU(Policy):
    """Least frequently used: like :class:`LRU` but evicts the lowest request count first.

    Counts cover the whole history (they survive eviction), so they estimate a unit's firing
    frequency rather than its luck while resident; ties evict the least recently used.
    """

    def _init(self, universe: int, capacity: int) -> RecencyState:
        return _recency_state(universe, capacity)

    def access(self, state: RecencyState, ids: np.ndarray, t: int) -> Access:
        def keys(cand: np.ndarray) -> np.ndarray:
            # one int64 sort key: count in the high bits, recency below (tokens < 2**31)
            return (state.count[cand] << 31) | (state.last_used[cand] + 1)

        out = make_room_and_admit(state.resident, ids, state.capacity, keys)
        state.last_used[ids] = t
        state.count[ids] += 1
        return out


@final
@dataclasses.dataclass(frozen=True, kw_only=True)
class Window(Policy):
    """LLM in a Flash (Alizadeh et al. 2023, arXiv 2312.11514) sliding window.

    Keeps the units requested in the last ``k`` tokens (``t-k+1..t``): at each access, units
    not requested since token ``t-k`` are evicted even when room is not needed (the paper
    deletes them to keep the working set tight). If the window still overflows ``capacity``,
    the least recently used go, and misses that find no room bypass, as in :class:`LRU`.

    Attributes:
      k: Window length in tokens, >= 1 (the paper uses 5 for OPT-6.7B).
    """

    k: int = 5

    def __post_init__(self):
        if self.k < 1:
            raise ConfigError(f"Window: k={self.k}: expected a window of >= 1 tokens")

    def _init(self, universe: int, capacity: int) -> RecencyState:
        return _recency_state(universe, capacity)

    def access(self, state: RecencyState, ids: np.ndarray, t: int) -> Access:
        expired = state.resident & (state.last_used <= t - self.k)
        expired[ids] = False  # requested now: a hit, not stale
        stale = np.flatnonzero(expired)
        state.resident[stale] = False
        out = make_room_and_admit(
            state.resident, ids, state.capacity, lambda c: recency_keys(state.last_used, c)
        )
        state.last_used[ids] = t
        if stale.size:
            out = out._replace(evict=np.union1d(stale, out.evict))
        return out
