"""pi2lab.viz.planner on tiny hand-made inputs: figures, budget helpers and the app's wiring
(a hand-made profile, a one-layer simulated shape and a fake measurement; no engine, no
timing)."""

from __future__ import annotations

import itertools

import numpy as np
import plotly.graph_objects as go
import pytest

from pi2lab.plan.cost import LayerStats, ModelStats
from pi2lab.plan.hardware import HardwareProfile
from pi2lab.plan.shapes import ModelShape
from pi2lab.viz import planner as vp
from tests.conftest import round_profile, tiny_config


def profile(name="hand") -> HardwareProfile:
    """Round numbers, not a measurement."""
    return round_profile({(4096, 1): 500.0, (1 << 20, 1): 2000.0}, name=name)


def layer(units, needed, curve=(0.0, 0.5, 0.8, 0.95, 1.0)) -> LayerStats:
    caps = tuple(int(units * k / (len(curve) - 1)) for k in range(len(curve)))
    return LayerStats(
        units=units,
        unit_bytes=8192,
        needed=needed,
        resident_bytes=300_000,
        capacities=caps,
        hit_rates={"lru": curve, "segmented-0.5": curve},
    )


def stats() -> ModelStats:
    return ModelStats(
        name="hand",
        layers=(layer(40, 12.0), layer(24, 9.0), layer(56, 20.0)),
        head_bytes=700_000,
        fixed_bytes=1_000_000,
        staging_bytes=64 * 8192,
    )


def tiny_shape() -> ModelShape:
    cfg = tiny_config(
        vocab_size=100,
        hidden_size=128,
        intermediate_size=96,
        num_heads=4,
        head_dim=32,
        num_layers=2,
    )
    return ModelShape(name="tiny", config=cfg, active_fraction=(0.05, 0.1))


TERMS = dict(attention=0.002, head=0.001, overhead=0.0005, compute=0.003, io=0.004, ffn=0.005)


def test_plan_ms_adds_up_to_the_total_and_keeps_hidden_io_out():
    ms = vp.plan_ms(TERMS)
    assert list(ms) == list(vp.TERM_COLORS)
    total = TERMS["attention"] + TERMS["head"] + TERMS["overhead"] + TERMS["ffn"]
    assert sum(ms.values()) == pytest.approx(total * 1e3)
    assert ms["I/O not hidden"] == pytest.approx(2.0)  # 4 ms of reads, 2 hidden under compute


def test_sim_ms_maps_the_wait_to_io():
    ms = vp.sim_ms({"attention": 0.001, "compute": 0.002, "wait": 0.003, "head": 0.0005})
    assert ms == pytest.approx(
        {
            "attention": 1.0,
            "LM head": 0.5,
            "host overhead": 0.0,
            "FFN compute": 2.0,
            "I/O not hidden": 3.0,
        }
    )


def test_plan_figure_stacks_cached_and_flash_units_and_terms():
    stacks = {"predicted": vp.plan_ms(TERMS)}
    fig = vp.plan_figure([3, 0, 7], [5, 4, 7], stacks, measured={"measured": 9.0}, title="t")
    assert isinstance(fig, go.Figure)
    names = [t.name for t in fig.data]
    assert names == ["cached units", "units left on flash", *vp.TERM_COLORS, "measured (total)"]
    np.testing.assert_allclose(fig.data[0].y, [3, 0, 7])
    np.testing.assert_allclose(fig.data[0].y + fig.data[1].y, [5, 4, 7])
    assert fig.layout.barmode == "stack"
    assert fig.data[2].xaxis == "x2" and list(fig.data[2].x) == ["predicted"]
    assert list(fig.data[-1].x) == ["measured"] and fig.data[-1].y == (9.0,)
    assert fig.layout.title.text == "t"


def test_plan_figure_without_measurement_has_no_measured_column():
    fig = vp.plan_figure([1, 2], [2, 2], {"simulated": {"attention": 1.0, "FFN compute": 2.0}})
    assert [t.name for t in fig.data] == [
        "cached units",
        "units left on flash",
        "attention",
        "FFN compute",
    ]


def test_speed_vs_budget_line_and_measured_markers():
    fig = vp.speed_vs_budget(
        [0.0, 0.5, 1.0], [10.0, 20.0, 40.0], measured={0.5: 15.0}, total_mib=[3.0, 4.5, 6.0]
    )
    assert [t.mode for t in fig.data] == ["lines+markers", "markers"]
    np.testing.assert_allclose(fig.data[0].y, [10, 20, 40])
    np.testing.assert_allclose(fig.data[0].customdata, [3.0, 4.5, 6.0])
    assert "measured" in fig.data[1].name and fig.data[1].x == (0.5,)
    assert "predicted" in fig.data[0].name


def test_budgets_and_plans_respect_the_budget_and_grow_with_it():
    s, prof = stats(), profile()
    assert s.ffn_bytes == (40 + 24 + 56) * 8192
    assert vp.resident_minimum(s) == 1_000_000 + 64 * 8192
    assert vp.budget_bytes(s, 0.5) == vp.resident_minimum(s) + 60 * 8192
    shares = np.linspace(0, 1, 5)
    plans = vp.budget_sweep(s, prof, shares)
    budgets = [vp.budget_bytes(s, f) for f in shares]
    assert all(vp.plan_bytes(s, p) <= b for p, b in zip(plans, budgets, strict=True))
    assert plans[0].layer_units == (0, 0, 0) and plans[-1].layer_units == (40, 24, 56)
    speeds = [p.predicted_tokens_per_s for p in plans]
    assert all(b >= a * (1 - 1e-9) for a, b in itertools.pairwise(speeds))


def test_plan_table_lists_every_layer():
    s = stats()
    text = vp.plan_table(vp.plan_at(s, profile(), 1.0), s)
    assert text.count("<tr>") == 1 + 3
    assert "<td>56</td><td>100%</td><td>100%</td>" in text


def test_shape_budget_of_the_whole_ffn_caches_every_unit():
    shape = tiny_shape()
    full = vp.simulate_at(shape, profile("phone"), 1.0, tokens=4)
    assert full.cache_units == shape.units
    assert full.memory_bytes == vp.shape_budget(shape, 1.0)
    assert vp.simulate_at(shape, profile("phone"), 0.0, tokens=4).cache_units == 0


def explorer(measure=None):
    return vp.PlannerExplorer(
        stats(),
        profile(),
        measure=measure,
        phones={"phone": profile("phone")},
        shapes={"tiny": tiny_shape()},
        shape="tiny",
        sim_tokens=4,
        share=0.25,
    )


def test_explorer_replans_when_the_budget_moves():
    app = explorer()
    before = app.result.layer_units
    assert app.measure_button.disabled  # nothing to measure with
    app.share.value = 0.75
    assert app.result.layer_units != before
    assert tuple(app.figure.data[0].y) == app.result.layer_units
    assert "predicted" in app.summary.value and "<table>" in app.table.value
    assert app.figure.layout.title.text.startswith("Predicted")


def test_explorer_measure_adds_the_measured_column():
    calls = []
    app = explorer(measure=lambda p: calls.append(p) or 20.0)
    assert not app.measure_button.disabled
    app.measure_button.click()
    assert calls == [app.result] and app.measured == {0.25: 20.0}
    assert app.figure.data[-1].name == "measured (total)"
    assert app.figure.data[-1].y == (50.0,)  # 1000 / 20 tokens/s
    assert "measured</b>: 20.0 tokens/s" in app.summary.value
    app.share.value = 0.5  # another budget: its own (absent) measurement
    assert app.figure.data[-1].name != "measured (total)"


def test_explorer_phone_profile_simulates_the_shapes():
    app = explorer(measure=lambda p: 1.0)
    app.profile.value = "phone"
    assert list(app.model.options) == ["tiny"] and app.model.value == "tiny"
    assert app.simulated and app.measure_button.disabled
    assert app.figure.layout.title.text.startswith("Simulated")
    assert len(app.figure.data[0].x) == 2  # the shape's layers
    assert app.predicted_tokens_per_s() == app.result.tokens_per_s
    assert app.table.value == ""
    with pytest.raises(RuntimeError):
        app.measure()
    app.profile.value = vp.THIS_MACHINE
    assert list(app.model.options) == ["hand"] and not app.simulated
