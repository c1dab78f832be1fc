"""PowerInfer-2 segmented neuron cache: cluster-level LRU for hot units, unit-level for cold."""

from __future__ import annotations

import dataclasses
import math
from typing import final

import numpy as np

from pi2lab.errors import ConfigError
from pi2lab.policies.base import EMPTY, Access, Policy, make_room_and_admit, recency_keys
from pi2lab.policies.recency import RecencyState


@dataclasses.dataclass(kw_only=True, eq=False)
class SegmentedState(RecencyState):
    """State of :class:`Segmented`.

    Attributes:
      hot_units: Units ``[0, hot_units)`` form the hot region.
      hot_capacity: Units the hot segment may hold (whole groups only).
      cold_capacity: Units the cold segment may hold, ``capacity - hot_capacity``.
      group_last: ``[G]`` int64, last token any unit of each hot group was requested (-1: never).
      group_sizes: ``[G]`` int64, units per hot group (the last may be partial).
    """

    hot_units: int
    hot_capacity: int
    cold_capacity: int
    group_last: np.ndarray
    group_sizes: np.ndarray


@final
@dataclasses.dataclass(frozen=True, kw_only=True)
class Segmented(Policy):
    """PowerInfer-2 (Xue et al. 2024, arXiv 2406.06282) segmented neuron cache.

    The hot region, units ``[0, hot_units)``, is managed in hot clusters: groups of ``group``
    consecutive ids (the last may be partial), LRU over whole groups, in a segment of
    ``floor(hot_fraction * capacity)`` units pre-filled at :meth:`init` with the first groups
    (the offline profile's hottest). A request touching a non-resident hot group admits the
    whole group, so ``admit`` holds read-ahead ids that were not requested; a group that
    cannot fit even after evicting every non-requested hot group bypasses its requested ids.
    Groups are admitted lowest id first. Units ``>= hot_units`` form the cold region: a
    unit-granular :class:`LRU` with the remaining capacity. The two segments never lend each
    other room (the paper sizes them from the batch size, not from demand), so hot room a
    whole group cannot use stays empty.

    Attributes:
      hot_units: Size of the hot region in units, ``0..U``.
      hot_fraction: Share of ``capacity`` given to the hot segment, in ``[0, 1]``.
      group: Units per hot cluster, >= 1.
    """

    hot_units: int
    hot_fraction: float = 0.5
    group: int = 8

    def __post_init__(self):
        if self.hot_units < 0:
            raise ConfigError(f"Segmented: hot_units={self.hot_units}: expected 0..universe (>= 0)")
        if not 0.0 <= self.hot_fraction <= 1.0:  # also rejects NaN
            raise ConfigError(
                f"Segmented: hot_fraction={self.hot_fraction}: expected a share in [0, 1]"
            )
        if self.group < 1:
            raise ConfigError(f"Segmented: group={self.group}: expected >= 1 units per group")

    def _init(self, universe: int, capacity: int) -> SegmentedState:
        if self.hot_units > universe:
            raise ConfigError(
                f"Segmented: hot_units={self.hot_units}: expected 0..{universe} "
                f"(the layer's universe)"
            )
        hot_capacity = math.floor(self.hot_fraction * capacity)
        starts = np.arange(0, self.hot_units, self.group, dtype=np.int64)  # [G]
        sizes = np.minimum(starts + self.group, self.hot_units) - starts
        # pre-fill: the longest prefix of groups that fits
        filled = int(np.searchsorted(np.cumsum(sizes), hot_capacity, side="right"))
        resident = np.zeros(universe, bool)
        resident[: int(sizes[:filled].sum())] = True
        return SegmentedState(
            universe=universe,
            capacity=capacity,
            resident=resident,
            last_used=np.full(universe, -1, np.int64),
            count=np.zeros(universe, np.int64),
            hot_units=self.hot_units,
            hot_capacity=hot_capacity,
            cold_capacity=capacity - hot_capacity,
            group_last=np.full(starts.size, -1, np.int64),
            group_sizes=sizes,
        )

    def _units(self, groups: np.ndarray, hot_units: int) -> np.ndarray:
        """Sorted unit ids of the sorted ``groups [K]``, clipped to the hot region."""
        if not groups.size:
            return EMPTY
        units = (groups[:, None] * self.group + np.arange(self.group)).ravel()
        return units[units < hot_units]  # only the last group may be partial

    def access(self, state: SegmentedState, ids: np.ndarray, t: int) -> Access:
        h = state.hot_units
        split = int(np.searchsorted(ids, h))
        hot = self._hot_access(state, ids[:split], t)
        # the cold segment is a plain LRU over views of the arrays past the hot region
        cold_res, cold_last = state.resident[h:], state.last_used[h:]
        cold = make_room_and_admit(
            cold_res, ids[split:] - h, state.cold_capacity, lambda c: recency_keys(cold_last, c)
        )
        state.last_used[ids[split:]] = t
        return Access(*(np.concatenate([a, b + h]) for a, b in zip(hot, cold, strict=True)))

    def _hot_access(self, state: SegmentedState, ids: np.ndarray, t: int) -> Access:
        if not ids.size:
            return Access(EMPTY, EMPTY, EMPTY, EMPTY)
        g, h = self.group, state.hot_units
        hit = state.resident[ids]
        hits, misses = ids[hit], ids[~hit]
        req_groups = _unique_sorted(ids // g)
        miss_groups = _unique_sorted(misses // g)
        admit_groups = evict_groups = EMPTY
        if miss_groups.size:
            need = np.cumsum(state.group_sizes[miss_groups])  # [K] room for each prefix
            group_res = state.resident[:h:g]  # a group is resident iff its first unit is
            free = state.hot_capacity - int(state.group_sizes[group_res].sum())
            if need[-1] <= free:
                admit_groups = miss_groups
            else:
                cand_mask = group_res.copy()
                cand_mask[req_groups] = False
                cand = np.flatnonzero(cand_mask)
                order = cand[np.argsort(recency_keys(state.group_last, cand))]  # LRU first
                freed = np.cumsum(state.group_sizes[order])  # [M] room after evicting a prefix
                room = free + (int(freed[-1]) if freed.size else 0)
                m = int(np.searchsorted(need, room, side="right"))
                admit_groups, used = miss_groups[:m], int(need[m - 1]) if m else 0
                # only the last hot group can be smaller than the rest, so it alone may
                # still fit where the first full group that did not fit stopped the prefix
                last = miss_groups[-1]
                if m < miss_groups.size and used + state.group_sizes[last] <= room:
                    admit_groups = np.append(admit_groups, last)
                    used += int(state.group_sizes[last])
                short = used - free
                if short > 0:
                    evict_groups = np.sort(order[: int(np.searchsorted(freed, short)) + 1])
        admit, evict = self._units(admit_groups, h), self._units(evict_groups, h)
        state.resident[evict] = False
        state.resident[admit] = True
        state.group_last[req_groups] = t
        admitted = np.zeros(state.group_sizes.size, bool)  # [G]
        admitted[admit_groups] = True
        bypass = misses[~admitted[misses // g]]
        return Access(hits, admit, evict, bypass)


def _unique_sorted(x: np.ndarray) -> np.ndarray:
    """Distinct values of the sorted ``x`` (np.unique would sort again)."""
    if x.size < 2:
        return x
    return x[np.concatenate([[True], x[1:] != x[:-1]])]
