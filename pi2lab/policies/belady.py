"""Belady's offline optimum on a recorded trace."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import final

import numpy as np

from pi2lab.errors import ConfigError
from pi2lab.policies.base import EMPTY, Access, Policy, PolicyState, lowest, make_room_and_admit

NEVER = np.iinfo(np.int64).max // 4  # rank of the next use of a unit never requested again


@dataclasses.dataclass(kw_only=True, eq=False)
class BeladyState(PolicyState):
    """State of :class:`Belady`.

    Attributes:
      next_use: ``[U]`` int64, the rank of each unit's next request (``NEVER``: none). Ranks
        order requests by token, then by how soon the unit is needed again after it.
      next_after: Per token ``t`` an int64 array ``[N_t]``: for each id of ``future[t]``, the
        rank of its next request after ``t``. Flat per-token arrays instead of a ``[T, U]``
        matrix, whose size (640 MB at T=10k, U=16k) would not fit beside the model.
    """

    next_use: np.ndarray
    next_after: list[np.ndarray]


@final
@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class Belady(Policy):
    """Belady's MIN (Belady 1966), the offline optimum, with bypass, on a recorded trace.

    Keeps, among the resident units and this token's misses, the ``capacity`` whose next use
    is soonest (hits always stay): a miss is admitted while a free slot or a resident with a
    farther next use exists, and bypasses otherwise. Because a hit may not be evicted in its
    own token, two units next used at the same token are ordered by their uses after that,
    recursively (plain MIN breaks such ties arbitrarily and can lose hits); on a full tie a
    resident is kept over a miss, saving a read. No demand policy gets more hits (checked
    against brute force in the tests); one that reads ahead or pre-fills cannot read fewer
    units in total either.

    Attributes:
      future: ``future[t]`` is the sorted unique id array requested at token ``t``.
    """

    future: Sequence[np.ndarray] = dataclasses.field(repr=False)

    def __post_init__(self):
        future = tuple(np.asarray(f, np.int64) for f in self.future)
        for t, ids in enumerate(future):
            if ids.ndim != 1 or (ids.size > 1 and not np.all(ids[1:] > ids[:-1])):
                raise ConfigError(
                    f"Belady: future[{t}] (shape {ids.shape}): expected a 1-D sorted array "
                    f"of unique unit ids"
                )
        object.__setattr__(self, "future", future)

    @classmethod
    def from_masks(cls, masks: np.ndarray) -> Belady:
        """Belady on the trace ``masks [T, U]`` (bool: unit needed at token t)."""
        return cls(future=[np.flatnonzero(m) for m in np.asarray(masks, bool)])

    def __repr__(self) -> str:
        return f"Belady(<{len(self.future)} tokens>)"

    def _init(self, universe: int, capacity: int) -> BeladyState:
        for t, ids in enumerate(self.future):
            if ids.size and not 0 <= ids[0] <= ids[-1] < universe:
                raise ConfigError(
                    f"Belady: future[{t}] holds ids {ids[0]}..{ids[-1]}: expected 0..{universe - 1}"
                )
        # Rank every request (unit u at token t) by its future: first t, then the rank of
        # u's next request, recursively. Plain MIN compares next-use times only, but hits
        # must stay through their token here, so of two units next used at the same token
        # only one may be kept then: the one needed again sooner after it should win.
        # Ranks of token t depend only on later tokens, so one backward pass suffices.
        offset = np.cumsum([0] + [f.size for f in self.future])  # [T + 1]
        seen = np.full(universe, NEVER, np.int64)  # [U] rank of the next request, >= t
        next_after = [EMPTY] * len(self.future)
        for t in range(len(self.future) - 1, -1, -1):
            ids = self.future[t]
            succ = seen[ids]  # [N] distinct, except several NEVER (equal futures)
            order = np.sort(succ)
            next_after[t] = succ
            seen[ids] = offset[t] + np.searchsorted(order, succ)
        return BeladyState(
            universe=universe,
            capacity=capacity,
            resident=np.zeros(universe, bool),
            next_use=seen,
            next_after=next_after,
        )

    def access(self, state: BeladyState, ids: np.ndarray, t: int) -> Access:
        if not 0 <= t < len(self.future):
            raise ConfigError(
                f"Belady: t={t} is beyond the recorded trace: expected 0..{len(self.future) - 1}"
            )
        if not np.array_equal(ids, self.future[t]):
            raise ConfigError(
                f"Belady: ids at t={t} ({len(ids)} units) differ from future[{t}] "
                f"({len(self.future[t])} units): replay the trace Belady was built on"
            )
        nxt = state.next_after[t]  # [N]
        hit = state.resident[ids]
        misses = ids[~hit]
        free = state.capacity - int(np.count_nonzero(state.resident))
        if misses.size <= free:
            out = make_room_and_admit(state.resident, ids, state.capacity, None)
        else:
            cand_mask = state.resident.copy()
            cand_mask[ids] = False
            cand = np.flatnonzero(cand_mask)  # [M] evictable residents
            # pool = residents then misses; soonest next use first, and on ties keep a
            # resident (no read) over a miss
            keys = np.concatenate([state.next_use[cand] * 2, nxt[~hit] * 2 + 1])  # [M + K]
            room = state.capacity - int(np.count_nonzero(hit))
            kept = np.zeros(keys.size, bool)
            kept[lowest(np.arange(keys.size), keys, room)] = True
            evict = cand[~kept[: cand.size]]
            admit, bypass = misses[kept[cand.size :]], misses[~kept[cand.size :]]
            state.resident[evict] = False
            state.resident[admit] = True
            out = Access(ids[hit], admit, evict, bypass)
        state.next_use[ids] = nxt
        return out
