"""Figure builders and apps of pi2lab.viz.offload_figures / offload_apps on tiny hand-made
inputs (no engine, no timing)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from pi2lab.viz import offload_apps, offload_figures


def test_cache_by_layer_bars_and_bound_markers():
    rates = {"LRU": np.array([0.5, 0.25, 0.75])}
    reads = {"LRU": np.array([10.0, 20.0, 5.0])}
    fig = offload_figures.cache_by_layer(
        rates, reads, bound_hit_rate=np.array([0.6, 0.5, 0.8]), bound_reads=np.array([8, 9, 4])
    )
    assert isinstance(fig, go.Figure)
    assert [type(t).__name__ for t in fig.data] == ["Bar", "Scatter", "Bar", "Scatter"]
    np.testing.assert_allclose(fig.data[0].y, [0.5, 0.25, 0.75])
    np.testing.assert_allclose(fig.data[3].y, [8, 9, 4])
    assert fig.data[1].mode == "markers"
    assert "recorded trace" in fig.layout.title.text
    # one legend entry per policy, not one per panel
    assert [t.showlegend for t in fig.data] == [True, True, False, False]


def test_cache_by_layer_without_bound_and_two_policies():
    rates = {"LRU": [0.1, 0.2], "LFU": [0.3, 0.4]}
    fig = offload_figures.cache_by_layer(rates, {"LRU": [1, 2], "LFU": [3, 4]})
    assert len(fig.data) == 4
    assert all(isinstance(t, go.Bar) for t in fig.data)
    assert [t.name for t in fig.data] == ["LRU", "LFU", "LRU", "LFU"]


def test_hit_rate_vs_budget_draws_bound_dashed():
    budgets = np.array([0.1, 0.3, 0.5, 0.7])
    curves = {"LRU": [0.2, 0.4, 0.6, 0.8], "Belady": [0.3, 0.5, 0.7, 0.9]}
    fig = offload_figures.hit_rate_vs_budget(budgets, curves, layer=2)
    assert [t.name for t in fig.data] == ["LRU", "Belady (offline optimum)"]
    assert fig.data[1].line.dash == "dash"
    np.testing.assert_allclose(fig.data[0].x, budgets)
    assert fig.layout.title.text.startswith("Layer 2")


def _row(stage, thread, start, end, layer=0, units=0, nbytes=0):
    return dict(
        stage=stage,
        thread=thread,
        start_ms=start,
        end_ms=end,
        layer=layer,
        units=units,
        nbytes=nbytes,
    )


def test_timeline_gantt_one_trace_per_stage_on_thread_rows():
    rows = [
        _row("attention", "compute", 0.0, 1.0),
        _row("read", "io1", 1.0, 2.5, units=3, nbytes=3 * 4096),
        _row("read", "io0", 1.1, 2.0, units=2, nbytes=2 * 4096),
        _row("compute", "compute", 1.2, 1.7, units=5),
        _row("wait", "compute", 1.7, 2.5),
        _row("compute", "compute", 2.5, 3.0, layer=1, units=5),
        _row("head", "compute", 3.0, 3.2, layer=-1),
    ]
    fig = offload_figures.timeline_gantt(rows, title="t")
    assert isinstance(fig, go.Figure)
    assert [t.name for t in fig.data] == ["attention", "compute", "wait", "read", "head"]
    read = fig.data[3]
    assert read.orientation == "h"
    assert list(read.y) == ["io1", "io0"]
    np.testing.assert_allclose(read.base, [1.0, 1.1])
    np.testing.assert_allclose(read.x, [1.5, 0.9])
    np.testing.assert_allclose(np.asarray(read.customdata, float)[:, 1], [3, 2])
    # compute on top, then the I/O threads in order
    assert list(fig.layout.yaxis.categoryarray) == ["io1", "io0", "compute"]
    assert fig.layout.barmode == "overlay"


def test_timeline_gantt_unknown_stage_kept():
    fig = offload_figures.timeline_gantt([_row("prefill", "compute", 0.0, 4.0)])
    assert [t.name for t in fig.data] == ["prefill"]


def test_valid_cluster_sizes_follow_the_plan():
    from pi2lab.kernels.sparse_plan import ClusterPlan, SparsePlan

    plan = SparsePlan(
        layers=(
            ClusterPlan(hot=24, cluster_size=16, capacity=3),
            ClusterPlan(hot=8, cluster_size=16, capacity=4),
        )
    )
    assert offload_apps.valid_cluster_sizes(plan) == [1, 2, 4, 8]


def test_cache_explorer_redraws_on_controls():
    rng = np.random.default_rng(0)
    masks = [rng.random((40, u)) < 0.3 for u in (12, 20, 16)]
    app = offload_apps.CacheExplorer(masks, warmup=4, budget=0.25)
    assert len(app.figure.data) == 4
    assert len(app.figure.data[0].y) == 3
    before = np.array(app.figure.data[0].y)
    app.budget.value = 0.75
    after = np.array(app.figure.data[0].y)
    assert not np.array_equal(before, after)
    # Belady stays at or above the policy on every layer
    assert np.all(np.array(app.figure.data[1].y) >= after - 1e-12)
    app.policy.value = "static-hot"
    assert app.figure.data[0].name == "StaticHot"
    assert app.hot_fraction.disabled and app.segmented.disabled
    app.policy.value = "segmented"
    app.segmented.value = False
    assert app.figure.data[0].name.startswith("LRU")
    assert not app.errors.outputs


class _Trace:
    """The part of an activation trace the replay reads: ``active(layer) -> [T, F]``."""

    def __init__(self, masks):
        self.masks = masks

    def active(self, layer):
        return self.masks[layer]


def test_cache_explorer_cluster_size_rebuilds_the_units():
    from pi2lab.kernels.sparse_plan import ClusterPlan, SparsePlan

    rng = np.random.default_rng(1)
    trace = _Trace([rng.random((30, 32)) < 0.2 for _ in range(2)])
    plan = SparsePlan(layers=(ClusterPlan(hot=8, cluster_size=8, capacity=3),) * 2)
    app = offload_apps.CacheExplorer.from_trace(
        trace, plan, 30, sizes=[1, 4, 8], cluster_size=4, warmup=2
    )
    assert app.masks[0].shape == (30, 8) and "4-neuron units" in app.figure.layout.title.text
    before = np.array(app.figure.data[2].y)
    app.cluster.value = 1
    assert app.error is None and app.masks[0].shape == (30, 32)
    assert "1-neuron units" in app.figure.layout.title.text
    assert not np.array_equal(before, app.figure.data[2].y)  # reads counted in smaller units
    # Belady's bound is per cluster size: still at or above the policy
    assert np.all(np.array(app.figure.data[1].y) >= np.array(app.figure.data[0].y) - 1e-12)
    app.cluster.value = 4
    np.testing.assert_allclose(app.figure.data[2].y, before)
