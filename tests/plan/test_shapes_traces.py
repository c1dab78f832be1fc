"""Model shapes for simulation, and the unit-need traces the simulator replays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pi2lab.config import ModelConfig
from pi2lab.errors import ConfigError
from pi2lab.plan.shapes import SHAPES, ModelShape, get_shape
from pi2lab.plan.traces import (
    CoactivationTrace,
    SyntheticTrace,
    fit_synthetic,
    recorded_masks,
    trace_stats,
)
from pi2lab.predict.profile import ActivationTrace
from pi2lab.predict.synthetic import CoactivationModel

TRACE = Path(__file__).parents[2] / "data" / "traces" / "pydoc-drelu.npz"
NAMES = ("llama-7b", "llama-13b", "turbosparse-mistral-7b", "bamboo-7b", "turbosparse-mixtral-47b")


def test_builtin_names_and_unknown_name_lists_them():
    assert set(SHAPES) == set(NAMES)
    with pytest.raises(ConfigError) as e:
        get_shape("gpt-5")
    for name in NAMES:
        assert name in str(e.value)


def test_every_sparsity_figure_has_a_source_and_assumptions_say_so():
    for name, shape in SHAPES.items():
        assert shape.sources["active_fraction"], name
        assert len(shape.active_fraction) == shape.config.num_layers
    for name in ("llama-7b", "llama-13b", "bamboo-7b"):
        assert "assumed" in SHAPES[name].sources["active_fraction"]
    assert SHAPES["turbosparse-mistral-7b"].active_fraction[0] == pytest.approx(0.10)
    moe = SHAPES["turbosparse-mixtral-47b"]
    assert moe.active_fraction[0] == pytest.approx(0.15)
    assert moe.num_ffns == 32 * 8
    # the paper's Mixtral-47B budget: 2.7 GB of FFN scales, 2.6 GB of predictors, ~1 GB non-FFN
    assert moe.scale_bytes_total() == 32 * 8 * 14336 * 3 * 4096 // 32 * 2  # 2.82 GB
    assert 2.6e9 < moe.scale_bytes_total() < 2.9e9
    assert 2.3e9 < moe.num_ffns * moe.predictor_bytes() < 2.7e9


def test_int4_bundle_bytes_match_the_paper_read_size():
    s = get_shape("turbosparse-mistral-7b")
    assert s.bundle_bytes == 3 * 4096 // 2  # 6 KiB payload
    assert s.stride == 8192  # read as 8 KiB, PowerInfer-2's padded neuron read
    assert s.scale_bytes_per_neuron == 3 * 4096 // 32 * 2
    assert s.gate_bytes == 2048
    assert s.ffn_bytes() == 32 * 14336 * 6144
    assert s.config.vocab_size == 32064
    # resident = non-FFN + predictors + scales + KV
    kv = s.kv_cache_bytes(100)
    total = s.nonffn_bytes() + 32 * s.predictor_bytes() + s.scale_bytes_total() + kv
    assert s.resident_bytes(100) == total
    assert s.resident_bytes(100, predictors=False) == total - 32 * s.predictor_bytes()


def test_shape_checks_its_fields():
    cfg = ModelConfig.llama2_7b(num_layers=2)
    with pytest.raises(ConfigError, match="one per layer"):
        ModelShape(name="x", config=cfg, active_fraction=(0.1,))
    with pytest.raises(ConfigError, match="cluster_size"):
        ModelShape(name="x", config=cfg, active_fraction=(0.1, 0.1), cluster_size=3)
    custom = ModelShape.from_config(cfg)
    assert custom.active_fraction == (0.1, 0.1)
    assert "assumed" in custom.sources["active_fraction"]


@pytest.mark.parametrize("reuse", [0.0, 0.5])
def test_synthetic_trace_matches_density_and_reuse(reuse):
    trace = SyntheticTrace(density=0.1, skew=1.0, reuse=reuse, units=1024, layers=1, tokens=600)
    m = trace.layer(0)
    assert m.shape == (600, 1024) and m.dtype == bool
    density, est = trace_stats(m)
    assert density == pytest.approx(0.1, abs=0.01)
    assert est == pytest.approx(reuse, abs=0.05)
    # hot-first: the low ids fire more often
    freq = m.mean(0)
    assert freq[:32].mean() > 5 * freq[-512:].mean()


def test_synthetic_trace_is_deterministic_per_seed_and_layer():
    a = SyntheticTrace(density=(0.1, 0.2), units=96, layers=2, tokens=20, seed=3)
    b = SyntheticTrace(density=(0.1, 0.2), units=96, layers=2, tokens=20, seed=3)
    np.testing.assert_array_equal(a.layer(1), b.layer(1))
    assert not np.array_equal(a.layer(0), a.layer(1))
    c = SyntheticTrace(density=(0.1, 0.2), units=96, layers=2, tokens=20, seed=4)
    assert not np.array_equal(a.layer(0), c.layer(0))
    with pytest.raises(ConfigError):
        SyntheticTrace(density=(0.1, 0.2, 0.3), units=96, layers=2)
    with pytest.raises(ConfigError):
        SyntheticTrace(density=0.1, reuse=1.0, units=96, layers=2)


def test_synthetic_moe_trace_routes_top_k_experts():
    t = SyntheticTrace(density=0.3, units=64, layers=1, tokens=40, experts=4, top_k=2)
    m = t.layer(0)
    assert m.shape == (40, 4, 64)
    np.testing.assert_array_equal(m.any(-1).sum(1), np.full(40, 2))


def test_recorded_masks_group_neurons_into_units():
    trace = ActivationTrace.load(TRACE)
    masks = recorded_masks(trace, cluster_size=4)
    assert len(masks) == trace.num_layers
    assert masks[1].shape == (trace.num_tokens, trace.neurons // 4)
    ones = recorded_masks(trace)[1]
    assert ones.mean() == pytest.approx(1 - trace.sparsity()[1])
    assert masks[1].mean() >= ones.mean()  # a unit is needed if any neuron fires


def test_fit_synthetic_recovers_parameters_roughly():
    truth = SyntheticTrace(
        density=0.1, skew=1.0, reuse=0.5, units=1024, layers=1, tokens=400, seed=7
    ).layer(0)
    fit = fit_synthetic(truth, seed=11)
    assert abs(fit.skew - 1.0) <= 0.25
    assert abs(fit.reuse - 0.5) <= 0.2
    assert 0 <= fit.error < 0.05
    assert fit.target.shape == fit.fitted.shape == (len(fit.fractions),)
    assert len(fit.grid) == 7 * 5
    assert fit.error == min(g[2] for g in fit.grid)


@pytest.mark.parametrize("skew", [0.0, 1.0, 1.8, 2.3, 3.0])
def test_synthetic_frequencies_keep_the_density_at_any_skew(skew):
    """A steep skew saturates the hottest units at probability 1; the rest still make up the
    mean (the scale's search bracket grows until it does)."""
    for density in (0.01, 0.15, 0.6):
        trace = SyntheticTrace(density=density, skew=skew, units=14336, layers=1)
        freq = trace.frequency(0)
        assert freq.mean() == pytest.approx(density, rel=1e-9)
        assert freq.max() <= 1.0 and np.all(np.diff(freq) <= 0)


def test_coactivation_placement_keeps_the_hot_set_and_groups_the_rest():
    model = CoactivationModel(neurons=96, density=0.2, group_size=8, coherence=0.7, seed=4)
    perm = model.placement(hot=10)
    assert sorted(perm.tolist()) == list(range(96))
    np.testing.assert_array_equal(perm[:10], np.arange(10))
    # past the hot set, each latent group's members are adjacent, most often firing first
    group, _, pi, _ = model._structure()
    cold = group[perm[10:]]
    changes = np.flatnonzero(np.diff(cold)) + 1
    runs = np.split(cold, changes)
    assert len(runs) == len(set(cold.tolist()))  # one run per group
    rates = [pi[r[0]] for r in runs]
    assert rates == sorted(rates, reverse=True)
    with pytest.raises(ConfigError, match="hot=97"):
        model.placement(hot=97)


def test_coactivation_trace_orders_the_same_firings():
    kw = dict(density=0.1, units=512, layers=2, tokens=6, group_size=8, coherence=0.7, seed=2)
    freq = CoactivationTrace(**kw)
    coact = CoactivationTrace(**kw, order="coactivation", hot=20)
    for i in range(2):
        perm = coact.model(i).placement(20)
        np.testing.assert_array_equal(coact.layer(i), freq.layer(i)[:, perm])
    # grouped, a token's firings form fewer runs of adjacent units (fewer merged reads)
    runs = [np.diff(t.layer(0).astype(np.int8), axis=1).clip(0).sum() for t in (freq, coact)]
    assert runs[1] < runs[0]
    with pytest.raises(ConfigError, match="order='random'"):
        CoactivationTrace(**kw, order="random")
    with pytest.raises(ConfigError, match="hot=600"):
        CoactivationTrace(**kw, hot=600)
