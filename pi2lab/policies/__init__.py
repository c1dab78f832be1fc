"""Neuron-cache replacement policies: one small frozen class each (see :mod:`.base`)."""

from pi2lab.policies.base import Access, Policy, PolicyState, resident
from pi2lab.policies.belady import Belady, BeladyState
from pi2lab.policies.experts import ExpertAware
from pi2lab.policies.recency import LFU, LRU, RecencyState, Window
from pi2lab.policies.segmented import Segmented, SegmentedState
from pi2lab.policies.static import StaticHot

__all__ = [
    "LFU",
    "LRU",
    "Access",
    "Belady",
    "BeladyState",
    "ExpertAware",
    "Policy",
    "PolicyState",
    "RecencyState",
    "Segmented",
    "SegmentedState",
    "StaticHot",
    "Window",
    "resident",
]
