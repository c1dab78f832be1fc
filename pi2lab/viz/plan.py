"""Figures for the paper-reproduction notebook (06): :mod:`pi2lab.plan.reproduce` dicts in,
``go.Figure`` out. Every figure is of SIMULATED figures beside the paper's, and says so."""

from __future__ import annotations

import plotly.graph_objects as go

from pi2lab.plan.paper import ENGINES
from pi2lab.viz.figures import log_ticks, style

SIM_COLOR, PAPER_COLOR = "#4c78a8", "#f58518"
ENGINE_COLORS = {"powerinfer2": "#4c78a8", "llmflash": "#54a24b", "llama.cpp-mmap": "#e45756"}


def decode_table_figure(table: dict, digits: int = 2) -> go.Figure:
    """The decode table of :func:`~pi2lab.plan.reproduce.decode_table` as a plotly table."""
    rows = table["rows"]
    cols = {
        "model": [r["model_label"] for r in rows],
        "engine": [r["engine_label"] for r in rows],
        "simulated tok/s": [f"{r['simulated_tokens_per_s']:.{digits}f}" for r in rows],
        "paper tok/s": [
            "-" if r["paper_tokens_per_s"] is None else f"{r['paper_tokens_per_s']:g}" for r in rows
        ],
        "sim / paper": ["-" if r["ratio"] is None else f"{r['ratio']:.2f}" for r in rows],
    }
    fig = go.Figure(
        go.Table(
            header={"values": list(cols), "align": "left"},
            cells={"values": list(cols.values()), "align": "left"},
        )
    )
    fig.update_layout(
        title=f"Decode on {table['device']}, {table['ffn_on_flash']:.0%} of FFN on flash "
        "(SIMULATED vs paper)",
        height=80 + 26 * len(rows),
        margin={"t": 50, "b": 10},
    )
    return fig


def ablation_bars(table: dict) -> go.Figure:
    """Grouped bars: simulated and paper tokens/s per ablation rung (log scale)."""
    rungs = [r["rung"] for r in table["rows"]]
    fig = go.Figure(
        [
            go.Bar(
                x=rungs,
                y=[r["simulated_tokens_per_s"] for r in table["rows"]],
                name="simulated",
                marker_color=SIM_COLOR,
                text=[f"{r['simulated_tokens_per_s']:.2f}" for r in table["rows"]],
                textposition="outside",
            ),
            go.Bar(
                x=rungs,
                y=[r["paper_tokens_per_s"] for r in table["rows"]],
                name="paper",
                marker_color=PAPER_COLOR,
                text=[f"{r['paper_tokens_per_s']:.2f}" for r in table["rows"]],
                textposition="outside",
            ),
        ]
    )
    values = [r[k] for r in table["rows"] for k in ("simulated_tokens_per_s", "paper_tokens_per_s")]
    return style(
        fig,
        height=380,
        title=f"Ablation, Bamboo-7B on {table['device']} (SIMULATED vs paper)",
        barmode="group",
        yaxis=dict(
            title="decode tokens/s (log)",
            type="log",
            **log_ticks(values),
        ),
    )


def memory_sweep_lines(sweep: dict) -> go.Figure:
    """Simulated tokens/s against the budget, one line per engine; the paper's points as
    markers (same colour as their engine)."""
    fig = go.Figure()
    for engine, label in ENGINES.items():
        pts = [p for p in sweep["points"] if p["engine"] == engine]
        fig.add_trace(
            go.Scatter(
                x=[p["memory_gb"] for p in pts],
                y=[p["simulated_tokens_per_s"] for p in pts],
                mode="lines+markers",
                name=f"{label} (simulated)",
                line_color=ENGINE_COLORS[engine],
            )
        )
    for p in sweep["paper_points"]:
        fig.add_trace(
            go.Scatter(
                x=[p["memory_gb"]],
                y=[p["paper_tokens_per_s"]],
                mode="markers",
                name=f"paper: {p['label']}",
                marker={"symbol": "star", "size": 13, "color": ENGINE_COLORS[p["engine"]]},
            )
        )
    values = [p["simulated_tokens_per_s"] for p in sweep["points"]]
    values += [p["paper_tokens_per_s"] for p in sweep["paper_points"]]
    return style(
        fig,
        height=420,
        title=f"{sweep['model']} on {sweep['device']}: tokens/s vs memory<br>"
        "<span style='font-size:12px'>SIMULATED lines; stars: the paper's points</span>",
        xaxis_title="memory budget (GB)",
        yaxis=dict(
            title="decode tokens/s (log)",
            type="log",
            **log_ticks(values),
        ),
    )


__all__ = ["ablation_bars", "decode_table_figure", "memory_sweep_lines"]
