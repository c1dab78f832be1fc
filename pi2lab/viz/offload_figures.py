"""Figures for the neuron-cache and pipeline notebooks (03, 04): builders that take arrays or
timeline rows and return ``go.Figure``.

Shapes: L layers, B budgets.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pi2lab.viz.cache_replay import REPLAYED
from pi2lab.viz.figures import style

STAGE_COLORS = {
    "attention": "#4c78a8",
    "compute": "#54a24b",
    "wait": "#e45756",
    "read": "#f58518",
    "head": "#b279a2",
}

# -- cache figures ----------------------------------------------------------------------------


def cache_by_layer(
    hit_rate: dict[str, np.ndarray],
    reads: dict[str, np.ndarray],
    *,
    bound_hit_rate: np.ndarray | None = None,
    bound_reads: np.ndarray | None = None,
    title: str = f"Neuron cache per layer ({REPLAYED})",
) -> go.Figure:
    """Two panels over layers: hit rate and units read from flash per token. Each policy in
    ``hit_rate`` / ``reads`` (``{name: [L]}``) is a bar set; the bound (Belady) is markers."""
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("hit rate", "units read from flash per token")
    )
    for col, values, bound in ((1, hit_rate, bound_hit_rate), (2, reads, bound_reads)):
        for k, (name, v) in enumerate(values.items()):
            v = np.asarray(v, float)
            fig.add_trace(
                go.Bar(
                    x=np.arange(v.size),
                    y=v,
                    name=name,
                    legendgroup=name,
                    showlegend=col == 1,
                    marker_color=_color(k),
                ),
                row=1,
                col=col,
            )
        if bound is not None:
            b = np.asarray(bound, float)
            fig.add_trace(
                go.Scatter(
                    x=np.arange(b.size),
                    y=b,
                    mode="markers",
                    name="Belady (offline optimum)",
                    legendgroup="Belady",
                    showlegend=col == 1,
                    marker=dict(symbol="diamond", size=11, color="black"),
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(title_text="layer", dtick=1)
    fig.update_yaxes(title_text="hit rate", range=[0, 1.05], tickformat=".0%", row=1, col=1)
    fig.update_yaxes(title_text="units per token", row=1, col=2)
    return style(fig, height=380, title=title, barmode="group")


def hit_rate_vs_budget(
    budgets: np.ndarray, curves: dict[str, np.ndarray], *, layer: int, bound: str = "Belady"
) -> go.Figure:
    """Hit rate against the cache budget (share of the layer's units), one line per policy;
    the curve named ``bound`` is drawn dashed black."""
    fig = go.Figure()
    for k, (name, y) in enumerate(curves.items()):
        is_bound = name == bound
        fig.add_trace(
            go.Scatter(
                x=np.asarray(budgets, float),
                y=np.asarray(y, float),
                mode="lines+markers",
                name=f"{name} (offline optimum)" if is_bound else name,
                line=dict(color="black", dash="dash") if is_bound else dict(color=_color(k)),
            )
        )
    return style(
        fig,
        height=380,
        title=f"Layer {layer}: hit rate against the cache budget ({REPLAYED})",
        xaxis=dict(title="cache budget (share of the layer's units)", tickformat=".0%"),
        yaxis=dict(title="hit rate", tickformat=".0%", range=[0, 1.05]),
    )


def _color(k: int) -> str:
    palette = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#9d755d")
    return palette[k % len(palette)]


# -- decode timeline --------------------------------------------------------------------------


def timeline_gantt(
    rows: Sequence[dict],
    *,
    title: str = "One decode token",
    subtitle: str = "",
    simulated: bool = False,
) -> go.Figure:
    """Gantt chart of one token's events (:meth:`pi2lab.pipeline.timeline.Timeline.rows`):
    y is the thread (``compute``, ``io0``, ...), one bar per event coloured by stage, hover
    with layer, units and bytes. ``subtitle`` (the configuration, say) goes on a second,
    smaller title line, so that a long description is not cut off. ``simulated``: the events
    are on the simulator's virtual clock (the x axis says so), not measured."""
    threads = sorted({r["thread"] for r in rows}, key=lambda t: (t != "compute", t))
    fig = go.Figure()
    stages = [s for s in STAGE_COLORS if any(r["stage"] == s for r in rows)]
    stages += sorted({r["stage"] for r in rows} - set(stages))
    for stage in stages:
        ev = [r for r in rows if r["stage"] == stage]
        fig.add_trace(
            go.Bar(
                name=stage,
                orientation="h",
                y=[r["thread"] for r in ev],
                base=[r["start_ms"] for r in ev],
                x=[r["end_ms"] - r["start_ms"] for r in ev],
                marker_color=STAGE_COLORS.get(stage, "#bab0ac"),
                customdata=[[r["layer"], r["units"], r["nbytes"] / 1024] for r in ev],
                hovertemplate=(
                    f"{stage}<br>layer %{{customdata[0]}}<br>units %{{customdata[1]}}"
                    "<br>%{customdata[2]:.0f} KiB<br>%{base:.2f} ms + %{x:.2f} ms<extra></extra>"
                ),
            )
        )
    text = title + (f"<br><span style='font-size:12px'>{subtitle}</span>" if subtitle else "")
    return style(
        fig,
        height=220 + 40 * len(threads),
        title=dict(text=text, x=0.01, xanchor="left"),
        margin=dict(t=90 if subtitle else 60),
        barmode="overlay",
        xaxis_title="ms since the token started "
        + ("(SIMULATED, virtual clock)" if simulated else "(measured)"),
        yaxis=dict(categoryorder="array", categoryarray=threads[::-1], title="thread"),
    )
