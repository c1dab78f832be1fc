"""Neuron-cache replacement policies: invariants on random traces, behaviour on hand traces."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pi2lab.errors import ConfigError
from pi2lab.policies import (
    LFU,
    LRU,
    Belady,
    Policy,
    Segmented,
    StaticHot,
    Window,
    resident,
)
from tests.conftest import policies, traces


def assert_step(before: np.ndarray, ids: np.ndarray, a, after: np.ndarray, capacity: int):
    """Every :class:`Access` invariant for one call; ``before``/``after`` sorted resident ids."""
    for name, arr in a._asdict().items():
        assert arr.ndim == 1 and np.all(np.diff(arr) > 0), f"{name} not sorted unique: {arr}"
    hits, admit, evict, bypass = a
    assert np.isin(hits, before).all() and np.isin(hits, ids).all()
    assert not np.isin(admit, before).any(), "admitted a unit already resident"
    assert np.isin(evict, before).all(), "evicted a unit that was not resident"
    assert not np.isin(evict, hits).any() and not np.isin(evict, admit).any()
    assert not np.isin(bypass, before).any() and not np.isin(bypass, admit).any()
    served = np.sort(np.concatenate([hits, admit[np.isin(admit, ids)], bypass]))
    assert np.array_equal(served, ids), "hits, admitted and bypassed do not partition ids"
    assert np.array_equal(after, np.union1d(np.setdiff1d(before, evict), admit))
    assert after.size <= capacity


# ---------------------------------------------------------------- invariants


@settings(max_examples=60, deadline=None)
@given(data=st.data(), case=traces())
def test_every_policy_keeps_the_access_invariants(data, case):
    trace, universe, capacity = case
    policy = data.draw(policies(trace, universe))
    state = policy.init(universe, capacity)
    before = resident(state)
    assert before.size <= capacity
    for t, ids in enumerate(trace):
        a = policy.access(state, ids, t)
        after = resident(state)
        assert_step(before, ids, a, after, capacity)
        if not isinstance(policy, Segmented):  # only hot groups read ahead
            assert np.isin(a.admit, ids).all()
        before = after


# ---------------------------------------------------------------- hand traces


def run(policy: Policy, trace, universe: int, capacity: int):
    state = policy.init(universe, capacity)
    out = [policy.access(state, np.asarray(ids, np.int64), t) for t, ids in enumerate(trace)]
    return state, out


def test_lru_evicts_the_least_recent():
    _, out = run(LRU(), [[0, 1, 2], [0], [1], [5]], universe=8, capacity=3)
    assert out[3].evict.tolist() == [2] and out[3].admit.tolist() == [5]


def test_lru_bypasses_what_no_eviction_can_fit_admitting_low_ids_first():
    state, out = run(LRU(), [[0, 1, 2, 3], [0, 4, 5]], universe=8, capacity=2)
    assert out[0].admit.tolist() == [0, 1] and out[0].bypass.tolist() == [2, 3]
    # 0 is requested again, so only 1 may go: room for one of the two misses
    assert out[1].hits.tolist() == [0] and out[1].evict.tolist() == [1]
    assert out[1].admit.tolist() == [4] and out[1].bypass.tolist() == [5]
    assert resident(state).tolist() == [0, 4]


def test_lfu_keeps_the_frequent_where_lru_would_not():
    trace = [[0], [0], [1], [2]]  # 0: twice but longer ago than 1
    _, lfu = run(LFU(), trace, universe=4, capacity=2)
    _, lru = run(LRU(), trace, universe=4, capacity=2)
    assert lfu[3].evict.tolist() == [1]
    assert lru[3].evict.tolist() == [0]


def test_window_drops_units_unused_for_k_tokens_even_with_room():
    state, out = run(Window(k=2), [[0, 1], [1], [2], []], universe=6, capacity=6)
    assert out[1].evict.size == 0  # 0 was used 1 token ago
    assert out[2].evict.tolist() == [0]  # 0 last used at t=0 <= 2 - k
    assert out[3].evict.tolist() == [1]
    assert resident(state).tolist() == [2]


def test_window_evicts_lru_when_the_window_overflows():
    _, out = run(Window(k=5), [[0], [1], [2]], universe=4, capacity=2)
    assert out[2].evict.tolist() == [0] and out[2].admit.tolist() == [2]


def test_static_hot_is_prefilled_and_never_changes():
    rng = np.random.default_rng(1)
    trace = [np.flatnonzero(rng.random(10) < 0.5) for _ in range(20)]
    state, out = run(StaticHot(), trace, universe=10, capacity=4)
    assert resident(state).tolist() == [0, 1, 2, 3]
    for ids, a in zip(trace, out, strict=True):
        assert a.admit.size == 0 and a.evict.size == 0
        assert a.hits.tolist() == ids[ids < 4].tolist()
        assert a.bypass.tolist() == ids[ids >= 4].tolist()


def test_static_hot_capacity_beyond_universe_holds_everything():
    state = StaticHot().init(5, 9)
    assert resident(state).tolist() == [0, 1, 2, 3, 4]


def hot_cold(state, hot_units: int) -> tuple[int, int]:
    r = resident(state)
    return int((r < hot_units).sum()), int((r >= hot_units).sum())


def test_segmented_admits_whole_hot_groups_and_keeps_segment_capacities():
    # hot region 0..19 in groups [0, 8), [8, 16), [16, 20); hot segment 16 units, cold 4
    policy = Segmented(hot_units=20, hot_fraction=0.8, group=8)
    state = policy.init(40, 20)
    assert resident(state).tolist() == list(range(16))  # pre-filled with the first groups
    a = policy.access(state, np.array([3, 17, 25]), 0)
    assert a.hits.tolist() == [3]
    # group 2 needs 4 units: evict the LRU non-requested group (tie: the colder, group 1)
    assert a.admit.tolist() == [16, 17, 18, 19, 25]
    assert a.evict.tolist() == list(range(8, 16))
    assert hot_cold(state, 20) == (12, 1)
    a = policy.access(state, np.arange(21, 27), 1)
    assert a.hits.tolist() == [25]
    assert a.admit.tolist() == [21, 22, 23] and a.bypass.tolist() == [24, 26]
    assert hot_cold(state, 20) == (12, 4)
    # a hot request never spills into cold room, nor cold into hot
    a = policy.access(state, np.array([9, 30]), 2)
    assert a.admit.tolist() == [*range(8, 16), 30]
    # groups 0 and 2 were both last used at t=0, cold 21..25 at t=1: ties evict the colder
    assert a.evict.tolist() == [*range(16, 20), 25]
    assert hot_cold(state, 20) == (16, 4)


def test_segmented_bypasses_a_group_that_cannot_fit():
    policy = Segmented(hot_units=16, hot_fraction=0.5, group=8)
    state = policy.init(20, 10)  # hot segment of 5 units: no group of 8 fits
    assert resident(state).size == 0
    a = policy.access(state, np.array([3, 4, 17]), 0)
    assert a.bypass.tolist() == [3, 4] and a.admit.tolist() == [17]


def test_segmented_partial_last_group_fits_where_a_full_one_would_not():
    policy = Segmented(hot_units=12, hot_fraction=0.5, group=8)
    state = policy.init(12, 10)  # hot segment 5: only the 4-unit group [8, 12) fits
    a = policy.access(state, np.array([2, 9]), 0)
    assert a.admit.tolist() == [8, 9, 10, 11] and a.bypass.tolist() == [2]


# ---------------------------------------------------------------- Belady


def optimal_hits(trace, capacity: int) -> int:
    """Brute force over every resident set a policy may reach (hits stay, anything else may go)."""
    best = {frozenset(): 0}
    for ids in trace:
        ids = set(ids.tolist())
        nxt: dict[frozenset, int] = {}
        for res, score in best.items():
            hits = res & ids
            pool = sorted((res | ids) - hits)
            for k in range(capacity - len(hits) + 1):
                for keep in itertools.combinations(pool, k):
                    key = frozenset(hits | set(keep))
                    nxt[key] = max(nxt.get(key, -1), score + len(hits))
        best = nxt
    return max(best.values())


def hits_of(policy: Policy, trace, universe: int, capacity: int) -> int:
    _, out = run(policy, trace, universe, capacity)
    return sum(a.hits.size for a in out)


def test_belady_on_a_hand_trace():
    trace = [np.array([u]) for u in [0, 1, 2, 0, 1, 3, 0]]
    # OPT keeps 0 and 1, bypassing 2 and 3 (used never again); LRU thrashes
    assert hits_of(Belady(future=trace), trace, 4, 2) == 3 == optimal_hits(trace, 2)
    assert hits_of(LRU(), trace, 4, 2) == 0


@settings(max_examples=40, deadline=None)
@given(case=traces(max_units=5, max_tokens=7))
def test_belady_matches_brute_force(case):
    trace, universe, capacity = case
    assert hits_of(Belady(future=trace), trace, universe, capacity) == optimal_hits(trace, capacity)


@settings(max_examples=60, deadline=None)
@given(case=traces(), hot=st.floats(0, 1), group=st.integers(1, 6))
def test_belady_beats_every_policy(case, hot, group):
    trace, universe, capacity = case
    _, opt = run(Belady(future=trace), trace, universe, capacity)
    opt_hits = sum(a.hits.size for a in opt)
    opt_reads = sum(a.admit.size + a.bypass.size for a in opt)
    others = [LRU(), LFU(), Window(k=1), Window(k=4), StaticHot()]
    others.append(Segmented(hot_units=int(hot * universe), hot_fraction=hot, group=group))
    for policy in others:
        _, out = run(policy, trace, universe, capacity)
        if not isinstance(policy, StaticHot | Segmented):  # demand policies starting empty
            assert opt_hits >= sum(a.hits.size for a in out), policy
        # pre-filling or reading ahead cannot beat OPT on units read, counting the pre-fill
        prefill = resident(policy.init(universe, capacity)).size
        reads = prefill + sum(a.admit.size + a.bypass.size for a in out)
        assert opt_reads <= reads, policy


def test_belady_from_masks():
    masks = np.array([[1, 0, 1], [0, 1, 1]], bool)
    policy = Belady.from_masks(masks)
    assert [f.tolist() for f in policy.future] == [[0, 2], [1, 2]]
    assert "2 tokens" in repr(policy)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "policy",
    [LRU(), LFU(), Window(), StaticHot(), Segmented(hot_units=2), Belady(future=[])],
    ids=repr,
)
def test_negative_capacity_is_rejected(policy):
    with pytest.raises(ConfigError, match="capacity=-1"):
        policy.init(4, -1)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (dict(hot_units=4, hot_fraction=-0.1), "hot_fraction"),
        (dict(hot_units=4, hot_fraction=1.5), "hot_fraction"),
        (dict(hot_units=4, hot_fraction=float("nan")), "hot_fraction"),
        (dict(hot_units=4, group=0), "group"),
        (dict(hot_units=-1), "hot_units"),
    ],
)
def test_segmented_rejects_bad_parameters(kwargs, field):
    with pytest.raises(ConfigError, match=f"{field}=.*expected"):
        Segmented(**kwargs)


def test_segmented_rejects_a_hot_region_beyond_the_universe():
    with pytest.raises(ConfigError, match=r"hot_units=9: expected 0\.\.8"):
        Segmented(hot_units=9).init(8, 4)


def test_window_rejects_empty_window():
    with pytest.raises(ConfigError, match="k=0"):
        Window(k=0)


def test_belady_rejects_accesses_off_its_trace():
    trace = [np.array([0, 2]), np.array([1])]
    policy = Belady(future=trace)
    state = policy.init(3, 2)
    with pytest.raises(ConfigError, match="differ from future"):
        policy.access(state, np.array([0, 1]), 0)
    policy.access(state, trace[0], 0)
    policy.access(state, trace[1], 1)
    with pytest.raises(ConfigError, match=r"t=2 is beyond the recorded trace"):
        policy.access(state, np.array([0]), 2)


def test_belady_rejects_bad_traces():
    with pytest.raises(ConfigError, match=r"future\[1\]"):
        Belady(future=[np.array([0]), np.array([2, 1])])
    with pytest.raises(ConfigError, match=r"future\[0\] holds ids 0\.\.5"):
        Belady(future=[np.array([0, 5])]).init(4, 2)
