"""NeuronCache slot map, trace replay and unit masks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pi2lab.cache import CacheStats, NeuronCache, simulate, simulate_layers, unit_masks
from pi2lab.errors import ConfigError
from pi2lab.policies import LFU, LRU, Belady, Segmented, StaticHot, Window, resident
from tests.conftest import policies, traces


@settings(max_examples=60, deadline=None)
@given(data=st.data(), case=traces())
def test_slot_map_stays_consistent(data, case):
    trace, universe, capacity = case
    policy = data.draw(policies(trace, universe))
    cache = NeuronCache(policy, universe, capacity)
    cache.check()
    for t, ids in enumerate(trace):
        before = cache.slot_of.copy()
        a = cache.access(ids, t)
        cache.check()
        # hits are computed from the slot they already live in
        assert np.array_equal(a.hit_slots, before[a.hits])
        assert np.array_equal(a.hit_slots, cache.slot_of[a.hits])
        assert np.array_equal(a.admit_slots, cache.slot_of[a.admit])
        assert np.unique(a.admit_slots).size == a.admit_slots.size
        assert np.all((a.admit_slots >= 0) & (a.admit_slots < capacity))
        # an admitted unit never lands on a slot that still holds a kept unit
        kept = np.setdiff1d(np.flatnonzero(before >= 0), a.evict)
        assert not np.isin(a.admit_slots, before[kept]).any()
        assert (cache.slot_of[a.bypass] == -1).all() and (cache.slot_of[a.evict] == -1).all()


def test_evicted_slots_are_reused():
    cache = NeuronCache(LRU(), universe=10, capacity=3)
    a = cache.access(np.array([4, 5, 6]), 0)
    assert a.admit_slots.tolist() == [0, 1, 2]
    cache.access(np.array([4, 6]), 1)
    a = cache.access(np.array([4, 6, 9]), 2)
    assert a.evict.tolist() == [5] and a.admit_slots.tolist() == [1]
    assert a.hit_slots.tolist() == [0, 2]


def test_prefilled_units_take_the_first_slots():
    cache = NeuronCache(StaticHot(), universe=10, capacity=4)
    assert cache.slot_of[:4].tolist() == [0, 1, 2, 3] and (cache.slot_of[4:] == -1).all()
    a = cache.access(np.array([1, 3, 7]), 0)
    assert a.hit_slots.tolist() == [1, 3] and a.bypass.tolist() == [7]


def test_check_catches_a_corrupted_slot_map():
    cache = NeuronCache(LRU(), universe=6, capacity=3)
    cache.access(np.array([0, 1]), 0)
    cache.slot_of[1] = cache.slot_of[0]
    with pytest.raises(AssertionError, match="share a slot"):
        cache.check()


# ---------------------------------------------------------------- simulate


def test_simulate_counts_a_hand_trace():
    masks = np.zeros((3, 6), bool)  # T=3, U=6
    masks[0, [0, 1, 4]] = True
    masks[1, [0, 5]] = True
    masks[2, [0, 1, 2, 3]] = True
    stats = simulate(StaticHot(), masks, capacity=2)
    assert stats.requested.tolist() == [3, 2, 4]
    assert stats.hits.tolist() == [2, 1, 2]
    assert stats.bypassed.tolist() == [1, 1, 2] and stats.admitted.tolist() == [0, 0, 0]
    assert stats.prefilled == 2
    assert stats.hit_rate == pytest.approx(5 / 9)
    skipped = simulate(StaticHot(), masks, capacity=2, warmup=1)
    assert skipped.hit_rate == pytest.approx(3 / 6)
    assert skipped.units_read_per_token == pytest.approx(1.5)


def test_simulate_counts_read_ahead():
    masks = np.zeros((2, 12), bool)
    masks[0, 1] = True
    masks[1, [1, 2]] = True
    stats = simulate(Segmented(hot_units=8, hot_fraction=1.0, group=4), masks, capacity=4)
    # hot segment 4 units, pre-filled with group [0, 4): nothing read
    assert stats.prefilled == 4 and stats.reads.tolist() == [0, 0]
    stats = simulate(Segmented(hot_units=8, hot_fraction=0.5, group=4), masks, capacity=4)
    # hot segment 2 units: group [0, 4) never fits, so requests bypass
    assert stats.prefilled == 0 and stats.bypassed.tolist() == [1, 2]
    masks[1, 9] = True
    stats = simulate(Segmented(hot_units=12, hot_fraction=1.0, group=4), masks, capacity=8)
    # groups [0, 4) and [4, 8) pre-filled; unit 9 evicts [4, 8) to read all of [8, 12)
    assert stats.read_ahead.tolist() == [0, 3] and stats.evicted.tolist() == [0, 4]
    assert stats.units_read_per_token == pytest.approx(2.0)


@settings(max_examples=30, deadline=None)
@given(case=traces())
def test_simulate_agrees_with_the_policy_and_belady_wins(case):
    trace, universe, capacity = case
    masks = np.zeros((len(trace), universe), bool)
    for t, ids in enumerate(trace):
        masks[t, ids] = True
    opt = simulate(Belady.from_masks(masks), masks, capacity)
    for policy in [LRU(), LFU(), Window(k=3)]:
        stats = simulate(policy, masks, capacity)
        assert np.array_equal(stats.hits + stats.misses, stats.requested)
        assert stats.hits.sum() <= opt.hits.sum()


def test_simulate_layers_takes_both_layouts_and_per_layer_policies():
    rng = np.random.default_rng(3)
    masks = rng.random((7, 2, 9)) < 0.4  # [T, L, U]
    stats = simulate_layers(LRU(), masks, capacity=3)
    assert len(stats) == 2 and all(isinstance(s, CacheStats) for s in stats)
    assert stats[1].hits.tolist() == simulate(LRU(), masks[:, 1], 3).hits.tolist()
    layers = [masks[:, 0], masks[:, 1, :5]]  # per-layer universes may differ
    opt = simulate_layers(lambda i: Belady.from_masks(layers[i]), layers, capacity=[2, 4])
    assert [s.capacity for s in opt] == [2, 4]
    with pytest.raises(ConfigError, match="one per layer"):
        simulate_layers(LRU(), layers, capacity=[1, 2, 3])


def test_simulate_rejects_bad_input():
    with pytest.raises(ConfigError, match="warmup=5"):
        simulate(LRU(), np.zeros((4, 3), bool), 2, warmup=5)
    with pytest.raises(ConfigError, match=r"expected \[T, U\]"):
        simulate(LRU(), np.zeros(4, bool), 2)
    with pytest.raises(ConfigError, match="capacity=-2"):
        simulate(LRU(), np.zeros((4, 3), bool), -2)
    with pytest.raises(ConfigError, match="capacity=-1"):
        NeuronCache(Window(), 4, -1)


# ---------------------------------------------------------------- unit masks


def test_unit_masks_merges_clusters_and_forces_the_hot_block():
    neurons = np.zeros((2, 12), bool)  # T=2, F=12
    neurons[0, 5] = True
    neurons[1, 11] = True
    assert unit_masks(neurons, 3).tolist() == [[0, 1, 0, 0], [0, 0, 0, 1]]
    assert unit_masks(neurons, 3, hot=4).tolist() == [[1, 1, 0, 0], [1, 1, 0, 1]]
    assert unit_masks(neurons, 1).tolist() == neurons.tolist()
    stacked = unit_masks(np.stack([neurons, neurons], axis=1), 4)  # [T, L, F]
    assert stacked.shape == (2, 2, 3)


@pytest.mark.parametrize(
    ("cluster_size", "hot", "field"),
    [(5, 0, "cluster_size"), (0, 0, "cluster_size"), (3, 13, "hot")],
)
def test_unit_masks_rejects_bad_sizes(cluster_size, hot, field):
    with pytest.raises(ConfigError, match=f"{field}="):
        unit_masks(np.zeros((2, 12), bool), cluster_size, hot=hot)


def test_resident_helper_matches_the_slot_map():
    cache = NeuronCache(Segmented(hot_units=8, group=4), universe=16, capacity=8)
    cache.access(np.array([1, 9, 12]), 0)
    assert resident(cache.state).tolist() == np.flatnonzero(cache.slot_of >= 0).tolist()
