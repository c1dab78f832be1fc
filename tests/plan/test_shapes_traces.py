"""Model shapes for simulation, and the unit-need traces the simulator replays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pi2lab.config import ModelConfig
from pi2lab.errors import ConfigError
from pi2lab.plan.shapes import SHAPES, ModelShape, get_shape
from pi2lab.plan.traces import SyntheticTrace, fit_synthetic, recorded_masks, trace_stats
from pi2lab.predict.profile import ActivationTrace

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


def test_int4_bundle_bytes_match_the_paper_read_size():
    s = get_shape("turbosparse-mistral-7b")
    assert s.bundle_bytes == 3 * 4096 // 2  # 6 KiB payload
    assert s.stride == 8192  # read as 8 KiB, PowerInfer-2's padded neuron read
    assert s.scale_bytes_per_neuron == 3 * 4096 // 64 * 2
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
