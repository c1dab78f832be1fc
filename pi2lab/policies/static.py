"""PowerInfer-1 static hot set."""

from __future__ import annotations

import dataclasses
from typing import final

import numpy as np

from pi2lab.policies.base import EMPTY, Access, Policy, PolicyState


@final
@dataclasses.dataclass(frozen=True, kw_only=True)
class StaticHot(Policy):
    """PowerInfer-1 (Song et al. 2023): the hottest units are placed once and never move.

    The resident set is units ``[0, capacity)`` (the offline profile's most frequent, since
    ids are hot-first), pre-filled at :meth:`init`; every other request bypasses.
    """

    def _init(self, universe: int, capacity: int) -> PolicyState:
        resident = np.zeros(universe, bool)
        resident[: min(capacity, universe)] = True
        return PolicyState(universe=universe, capacity=capacity, resident=resident)

    def access(self, state: PolicyState, ids: np.ndarray, t: int) -> Access:
        # ids are sorted and the resident set is a prefix, so one split serves
        split = int(np.searchsorted(ids, min(state.capacity, state.universe)))
        return Access(ids[:split], EMPTY, EMPTY, ids[split:])
