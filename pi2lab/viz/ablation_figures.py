"""Figures of a sweep's table (notebook 07): builders that take the tidy table of
:mod:`pi2lab.lab.sweep` (one source at a time: measured or simulated, said in every title)
and return ``go.Figure``.

A *configuration* is a table's rows of one ``config_hash``; :func:`configurations` averages
its repetitions.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from pi2lab.errors import ConfigError
from pi2lab.lab.runs import FIGURES
from pi2lab.viz.figures import style
from pi2lab.viz.offload_figures import timeline_gantt

SOURCES = ("simulated", "measured")
TITLE = {"simulated": "SIMULATED", "measured": "Measured here"}
VALUES = {  # figure column -> axis title
    "tokens_per_s": "tokens/s",
    "io_share": "I/O share of the critical path",
    "memory_mb": "memory (MB)",
    "hit_rate": "cache hit rate",
    "mb_read_per_token": "MB read per token",
}
NOT_KNOBS = {"source", "config_hash", "commit", "repetition", "error", "timeline", *FIGURES}


def knob_columns(table: pd.DataFrame) -> list[str]:
    """The table's knob and setting columns (what a configuration is made of)."""
    return [c for c in table.columns if c not in NOT_KNOBS and not c.startswith("version_")]


def varied(table: pd.DataFrame) -> list[str]:
    """Knob columns that take more than one value in ``table``."""
    return [c for c in knob_columns(table) if table[c].astype(str).nunique() > 1]


def one_source(table: pd.DataFrame, source: str) -> pd.DataFrame:
    """The rows of ``source`` (measured | simulated) that did not fail."""
    if source not in SOURCES:
        raise ConfigError(f"source {source!r}: expected one of {', '.join(SOURCES)}")
    return table[(table["source"] == source) & table["error"].isna()]


def configurations(table: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration of a one-source ``table``: its knobs, the mean of each figure
    over its repetitions, ``repetitions``, and ``label`` (the knobs that vary, as text)."""
    if table["source"].nunique() > 1:
        raise ConfigError("configurations: the table mixes measured and simulated rows")
    knobs = knob_columns(table)
    per = table.groupby("config_hash", sort=False)
    out = per[knobs].first().join(per[list(FIGURES)].mean())
    out["repetitions"] = per.size()
    names = varied(table)
    out["label"] = [
        " ".join(f"{k}={r[k]}" for k in names) or "the configuration" for _, r in out.iterrows()
    ]
    return out.reset_index()


def pareto_front(memory: np.ndarray, speed: np.ndarray) -> np.ndarray:
    """Which points ``[N]`` no other point beats: none with at most their memory and at
    least their speed, better in one."""
    memory, speed = np.asarray(memory, float), np.asarray(speed, float)
    le = memory[None, :] <= memory[:, None]  # [i, j]: j needs no more memory than i
    ge = speed[None, :] >= speed[:, None]
    strict = (memory[None, :] < memory[:, None]) | (speed[None, :] > speed[:, None])
    return ~(le & ge & strict).any(axis=1)


def heatmap(table: pd.DataFrame, x: str, y: str, value: str = "tokens_per_s") -> go.Figure:
    """Mean ``value`` over two knobs of a one-source table (averaged over every other knob
    and the repetitions), each cell written out."""
    if x == y:
        raise ConfigError(f"heatmap: x and y are both {x!r}: choose two knobs")
    source = table["source"].iloc[0]
    grid = table.groupby([y, x], sort=True)[value].mean().unstack(x)
    others = [k for k in varied(table) if k not in (x, y)]
    z = grid.astype(object).where(grid.notna(), None)  # a combination not (yet) run: blank
    fig = go.Figure(
        go.Heatmap(
            z=z.to_numpy(),
            x=[str(v) for v in grid.columns],
            y=[str(v) for v in grid.index],
            colorscale="Viridis",
            texttemplate="%{z:.3g}",
            colorbar=dict(title=VALUES[value]),
            hovertemplate=f"{x}=%{{x}}<br>{y}=%{{y}}<br>{VALUES[value]} %{{z:.4g}}<extra></extra>",
        )
    )
    mean = f"mean over {', '.join(others)} and repetitions" if others else "mean of repetitions"
    return style(
        fig,
        height=420,
        title=f"{TITLE[source]}: {VALUES[value]} by {x} and {y}<br>"
        f"<span style='font-size:12px'>{mean}</span>",
        xaxis=dict(title=x, type="category"),
        yaxis=dict(title=y, type="category"),
    )


def parallel(table: pd.DataFrame, value: str = "tokens_per_s") -> go.Figure:
    """Parallel coordinates of a one-source table's configurations: an axis per varied knob
    (categories in order of appearance), then ``value``, lines coloured by ``value``."""
    configs = configurations(table)
    dims = []
    for k in varied(table):
        cats = list(dict.fromkeys(configs[k].astype(str)))
        codes = [cats.index(v) for v in configs[k].astype(str)]
        dims.append(dict(label=k, values=codes, tickvals=list(range(len(cats))), ticktext=cats))
    dims.append(dict(label=VALUES[value], values=configs[value]))
    fig = go.Figure(
        go.Parcoords(
            line=dict(color=configs[value], colorscale="Viridis", showscale=True),
            dimensions=dims,
        )
    )
    source = table["source"].iloc[0]
    return style(
        fig,
        height=420,
        title=f"{TITLE[source]}: every configuration ({VALUES[value]}, mean of repetitions)",
        margin=dict(l=80, r=80, t=110),  # the axes' names sit above the plot
    )


def speed_memory(table: pd.DataFrame) -> go.Figure:
    """Tokens/s against memory per configuration of a one-source table (mean of repetitions),
    coloured by I/O share; the Pareto front (no configuration faster for less memory) joined
    and ringed."""
    configs = configurations(table)
    source = table["source"].iloc[0]
    front = pareto_front(configs["memory_mb"], configs["tokens_per_s"])
    fig = go.Figure(
        go.Scatter(
            x=configs["memory_mb"],
            y=configs["tokens_per_s"],
            mode="markers",
            name=f"configurations ({source})",
            text=configs["label"],
            marker=dict(
                size=11,
                color=configs["io_share"],
                colorscale="Reds",
                cmin=0,
                cmax=1,
                # below the legend, not under it
                colorbar=dict(title="I/O share", tickformat=".0%", len=0.6, y=0, yanchor="bottom"),
            ),
            hovertemplate="%{text}<br>%{y:.3g} tokens/s, %{x:,.0f} MB<br>"
            "I/O share %{marker.color:.0%}<extra></extra>",
        )
    )
    best = configs[front].sort_values("memory_mb")
    fig.add_trace(
        go.Scatter(
            x=best["memory_mb"],
            y=best["tokens_per_s"],
            mode="lines+markers",
            name="Pareto front",
            text=best["label"],
            line=dict(color="black", dash="dot"),
            marker=dict(size=17, symbol="circle-open", color="black"),
            hovertemplate="Pareto: %{text}<extra></extra>",
        )
    )
    return style(
        fig,
        height=420,
        title=f"{TITLE[source]}: speed against memory (colour: I/O share)",
        xaxis_title="memory (MB)",
        yaxis_title="tokens/s",
    )


def gantt(table: pd.DataFrame, config_hash: str, repetition: int = 0) -> go.Figure:
    """The last decode token of one configuration's repetition as a Gantt chart: the
    engine's measured timeline, or the simulator's on its virtual clock."""
    rows = table[(table["config_hash"] == config_hash) & (table["repetition"] == repetition)]
    if rows.empty or not isinstance(rows["timeline"].iloc[0], str):
        raise ConfigError(f"gantt: no timeline for configuration {config_hash}, rep {repetition}")
    row = rows.iloc[0]
    simulated = row["source"] == "simulated"
    label = configurations(table[table["source"] == row["source"]])
    text = label.set_index("config_hash").loc[config_hash, "label"]
    return timeline_gantt(
        json.loads(row["timeline"]),
        title=f"{TITLE[row['source']]}: {row['tokens_per_s']:.3g} tokens/s, last token",
        subtitle=f"{text} (repetition {repetition})",
        simulated=simulated,
    )


__all__ = [
    "SOURCES",
    "configurations",
    "gantt",
    "heatmap",
    "one_source",
    "parallel",
    "pareto_front",
    "speed_memory",
    "varied",
]
