"""What a researcher sees in the notebooks' figures: legends clear of the axis titles, titles
and axis labels set, tick labels written out in full, no fixed width, and text tables that
say ``n/a`` rather than ``-x`` (hand-made inputs, no engine)."""

from __future__ import annotations

import re

import numpy as np
import plotly.graph_objects as go
import pytest

from pi2lab.errors import ConfigError
from pi2lab.plan import tables
from pi2lab.viz import figures, offload_figures, plan, planner
from pi2lab.viz.apps import ClusterExplorer, ThresholdExplorer, figure_widget
from tests.viz.test_cluster_explorer import sweep
from tests.viz.test_offload_figures import _row


def rows() -> list[dict]:
    return [
        _row("attention", "compute", 0.0, 1.0),
        _row("read", "io0", 1.0, 2.0, units=2, nbytes=8192),
        _row("compute", "compute", 1.2, 1.7, units=5),
    ]


def fidelity_rows() -> list[dict]:
    return [
        dict(
            threshold=t,
            perplexity_increase=p,
            greedy_agreement=a,
            cold_clusters_computed=c,
        )
        for t, p, a, c in ((-1.0, 0.001, 0.99, 0.4), (0.0, 0.004, 0.97, 0.2), (1.0, 0.02, 0.9, 0.1))
    ]


def tick_labels(axis) -> dict[float, str]:
    return {round(v, 9): t for v, t in zip(axis["tickvals"], axis["ticktext"], strict=True)}


def every_figure() -> dict[str, go.Figure]:
    freq = np.array([[0.5, 0.1, 0.01, 0.0001], [0.9, 0.2, 0.002, 0.0]])
    return {
        "sparsity": figures.sparsity_by_layer(np.array([0.8, 0.9, 0.95])),
        "rank": figures.frequency_rank(freq),
        "coverage": figures.coverage(freq),
        "threshold": figures.threshold_curves(np.array([-1.0, 0.0]), {"recall": [0.9, 0.8]}),
        "fidelity": figures.fidelity_curves(fidelity_rows()),
        "clusters": figures.cluster_tradeoff([sweep(0), sweep(1)]),
        "cache": offload_figures.cache_by_layer({"LRU": [0.5, 0.6]}, {"LRU": [3.0, 2.0]}),
        "budget": offload_figures.hit_rate_vs_budget([0.1, 0.5], {"LRU": [0.2, 0.5]}, layer=1),
        "gantt": offload_figures.timeline_gantt(rows(), title="t", subtitle="configuration"),
        "plan": planner.plan_figure([1, 2], [4, 4], {"predicted": {"attention": 1.0}}),
        "speed": planner.speed_vs_budget([0.0, 1.0], [1.0, 2.0]),
        "ablation": plan.ablation_bars(ablation()),
    }


def ablation() -> dict:
    return {
        "device": "oneplus12",
        "rows": [
            {"rung": "baseline", "simulated_tokens_per_s": 1.69, "paper_tokens_per_s": 0.4},
            {"rung": "+ pipeline", "simulated_tokens_per_s": 14.4, "paper_tokens_per_s": 9.6},
        ],
    }


@pytest.mark.parametrize("name", list(every_figure()))
def test_legend_right_of_the_plot_and_no_fixed_width(name):
    fig = every_figure()[name]
    legend = fig.layout.legend
    # a horizontal legend below the plot lands on the x-axis title; right of the plot it can't
    assert legend.orientation != "h" and legend.x >= 1 and legend.xanchor == "left", name
    assert fig.layout.width is None and fig.layout.autosize is True, name
    assert fig.layout.title.text, name


def test_sparsity_mean_is_a_legend_entry_not_a_label_on_the_last_bar():
    fig = figures.sparsity_by_layer(np.array([0.8, 0.9, 0.95]))
    assert not fig.layout.annotations
    mean = fig.data[1]
    assert mean.name == "mean 88.3%" and mean.showlegend is not False
    np.testing.assert_allclose(mean.y, [0.8833333, 0.8833333], rtol=1e-6)


def test_rank_plot_labels_fractions_as_percentages():
    freq = np.array([[0.5, 0.1, 0.01, 0.0001]])
    fig = figures.frequency_rank(freq)
    y = fig.layout.yaxis
    assert y.type == "log" and y.title.text
    assert all(t.endswith("%") for t in y.ticktext) and "0.01%" in y.ticktext
    assert "10%" in y.ticktext and not any("μ" in t for t in y.ticktext)
    # the rank axis, 1-4, gets 1-2-5 ticks written out
    assert tick_labels(fig.layout.xaxis) == {1: "1", 2: "2", 5: "5", 10: "10"}


def test_log_ticks_write_every_label_in_full():
    labels = tick_labels(figures.log_ticks([0.4, 14.4]))
    assert labels[0.5] == "0.5" and labels[20] == "20"
    assert labels[0.1] == "0.1" and labels[100] == "100"
    wide = figures.log_ticks([1, 5000])
    assert wide["ticktext"] == ["1", "10", "100", "1,000", "10,000"]  # decades only
    assert figures.log_ticks([None, 0.0, 2e-4], percent=True)["ticktext"][0] == "0.01%"
    with pytest.raises(ConfigError, match="no positive value"):
        figures.log_ticks([0.0, None])


def test_ablation_and_sweep_log_axes_have_full_labels():
    fig = plan.ablation_bars(ablation())
    labels = tick_labels(fig.layout.yaxis)
    assert fig.layout.yaxis.type == "log"
    assert labels[0.5] == "0.5" and labels[20] == "20"


def test_threshold_figure_has_title_and_y_label():
    fig = figures.threshold_curves(np.array([-1.0, 0.0, 1.0]), {"recall": [0.9, 0.8, 0.6]})
    assert fig.layout.title.text and fig.layout.yaxis.title.text
    assert fig.layout.xaxis.title.text == "predictor threshold (logit)"


def test_fidelity_puts_perplexity_on_its_own_axis():
    fig = figures.fidelity_curves(fidelity_rows())
    by_name = {t.name: t for t in fig.data}
    ppl, agree = by_name["perplexity increase"], by_name["greedy agreement"]
    assert (
        ppl.yaxis == "y" and agree.yaxis == "y2" and by_name["cold clusters computed"].yaxis == "y2"
    )
    assert list(ppl.y) == [0.001, 0.004, 0.02]
    # perplexity autoscales (a few percent), the shares run 0-100%
    assert fig.layout.yaxis.range is None and fig.layout.yaxis.tickformat == ".2%"
    assert tuple(fig.layout.yaxis2.range) == (0, 1.05)
    assert fig.layout.yaxis.title.text and fig.layout.yaxis2.title.text


def test_plan_figure_labels_at_most_16_layers():
    fig = planner.plan_figure([1] * 32, [4] * 32, {"simulated": {"attention": 1.0}})
    assert fig.layout.xaxis.dtick == 2
    assert planner.plan_figure([1] * 6, [4] * 6, {}).layout.xaxis.dtick == 1
    assert [planner.layer_dtick(n) for n in (16, 17, 32, 33, 80)] == [1, 2, 2, 4, 8]


def test_gantt_title_puts_the_configuration_on_a_second_line():
    sub = "50% of the FFN cached, segmented; cluster overlap, depth 32, 2 I/O thread(s)"
    fig = offload_figures.timeline_gantt(rows(), title="Measured: last of 4 tokens", subtitle=sub)
    lines = fig.layout.title.text.split("<br>")
    assert lines[0] == "Measured: last of 4 tokens" and sub in lines[1]
    assert fig.layout.margin.t >= 90  # room for two lines


def test_explorer_figures_are_full_width_widgets():
    app = ThresholdExplorer(np.array([-1.0, 0.0]), {"recall": np.array([[0.9, 0.8], [0.7, 0.6]])})
    for fig in (app.figure, ClusterExplorer([sweep(0), sweep(1)]).figure):
        assert fig.layout.width is None and fig.layout.autosize is True
        assert fig._config.get("responsive") is True
    assert app.widget().layout.width == "100%"
    assert app.figure.layout.yaxis.title.text and app.figure.layout.title.text
    wrapped = figure_widget(go.Figure(layout=dict(width=700)))
    assert wrapped.layout.width is None


def test_speedups_without_a_paper_figure_print_na():
    table = {
        "device": "oneplus-ace2",
        "ffn_on_flash": 0.5,
        "tokens": 8,
        "has_paper": False,
        "rows": [],
        "speedups": [
            {
                "model_label": "Llama-7B (ReLU)",
                "simulated_over_llama_cpp": 3.25,
                "paper_over_llama_cpp": None,
                "simulated_over_llmflash": 1.25,
                "paper_over_llmflash": None,
            }
        ],
    }
    text = tables.format_decode_table(table)
    line = text.splitlines()[-1]
    assert "-x" not in text and not re.search(r"\s-\s", line)
    assert re.search(r"3\.2x /\s+n/a\s+n/a\s+1\.2x /\s+n/a\s+n/a\s*$", line), line
