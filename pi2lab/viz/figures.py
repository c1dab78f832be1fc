"""Figure builders: arrays in, ``plotly.graph_objects.Figure`` out (no widgets here)."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pi2lab.errors import ConfigError

# A vertical legend right of the plot area never covers an axis title, a horizontal one
# below the plot does (plotly puts it where the x-axis title is).
LEGEND = dict(orientation="v", x=1.02, xanchor="left", y=1.0, yanchor="top")


def style(fig: go.Figure, *, height: int, **layout) -> go.Figure:
    """The project's look: white template, width from the output area (no fixed width), the
    legend right of the plot; ``layout`` as for ``fig.update_layout``."""
    fig.update_layout(
        template="plotly_white", autosize=True, height=height, legend=LEGEND, **layout
    )
    return fig


def number_label(v: float) -> str:
    """``0.5`` -> ``"0.5"``, ``20`` -> ``"20"``, ``2000`` -> ``"2,000"`` (as many decimals as
    the value needs, for tick labels on a log axis)."""
    return f"{v:,.{max(0, -math.floor(math.log10(v) + 1e-9))}f}"


def percent_label(v: float) -> str:
    """A fraction as a percentage with the decimals it needs: ``1e-4`` -> ``"0.01%"``."""
    return number_label(100 * v) + "%"


def log_ticks(values, *, percent: bool = False) -> dict:
    """``tickvals`` / ``ticktext`` for a log axis over the positive ``values`` (None and
    values <= 0 are skipped): 1-2-5 in every decade over up to three decades, decades only
    beyond, each label written out in full (plotly's own labels shorten 0.5 and 20 to "5" and
    "2", and 1e-4 to "100μ"); ``percent`` labels fractions as percentages.

    Raises:
      ConfigError: no positive value.
    """
    v = [float(x) for x in np.ravel(np.asarray(values, dtype=object)) if x is not None and x > 0]
    if not v:
        raise ConfigError(f"log_ticks: no positive value to place on a log axis in {values!r}")
    lo, hi = min(v), max(v)
    d0, d1 = math.floor(math.log10(lo) + 1e-9), math.ceil(math.log10(hi) - 1e-9)
    d1 = max(d1, d0 + 1)
    steps = (1, 2, 5) if d1 - d0 <= 3 else (1,)
    ticks = [m * 10.0**d for d in range(d0, d1 + 1) for m in steps if m * 10.0**d <= 10.0**d1]
    fmt = percent_label if percent else number_label
    return dict(tickvals=ticks, ticktext=[fmt(t) for t in ticks])


def sparsity_by_layer(sparsity: np.ndarray, *, title: str = "FFN activation sparsity") -> go.Figure:
    """Bar chart of per-layer sparsity ``[L]`` (fraction of neurons inactive per token)."""
    sparsity = np.asarray(sparsity, float)
    fig = go.Figure(
        go.Bar(
            x=np.arange(sparsity.size),
            y=sparsity,
            text=[f"{s:.1%}" for s in sparsity],
            textposition="outside",
            name="sparsity",
        )
    )
    # the mean is a legend entry, not a label on the line: a label sits where the last bar's is
    fig.add_trace(
        go.Scatter(
            x=[-0.5, sparsity.size - 0.5],
            y=[float(sparsity.mean())] * 2,
            mode="lines",
            line=dict(dash="dot", color="#444444"),
            name=f"mean {sparsity.mean():.1%}",
            hoverinfo="name",
        )
    )
    return style(
        fig,
        height=360,
        title=title,
        xaxis=dict(title="layer", dtick=1),
        yaxis=dict(title="inactive neurons per token", range=[0, 1.08], tickformat=".0%"),
    )


def frequency_rank(frequency: np.ndarray) -> go.Figure:
    """Neuron firing frequency against its rank, one line per layer, log-log.
    ``frequency [L, F]`` (experts flattened into neurons for MoE)."""
    fig = go.Figure()
    firing = [np.sort(freq.reshape(-1))[::-1] for freq in np.asarray(frequency)]
    firing = [f[f > 0] for f in firing]
    for i, f in enumerate(firing):
        fig.add_trace(go.Scatter(x=np.arange(1, f.size + 1), y=f, mode="lines", name=f"layer {i}"))
    ranks = max((f.size for f in firing), default=1)
    return style(
        fig,
        height=380,
        title="Neuron firing frequency by rank",
        xaxis=dict(title="neuron rank (hottest first)", type="log", **log_ticks([1, ranks])),
        yaxis=dict(
            title="share of tokens it fires on",
            type="log",
            **log_ticks(np.concatenate(firing), percent=True),
        ),
    )


def coverage(frequency: np.ndarray) -> go.Figure:
    """Share of all activations made by the top x% of neurons, one line per layer."""
    fig = go.Figure()
    for i, freq in enumerate(np.asarray(frequency)):
        f = np.sort(freq.reshape(-1))[::-1]
        share = np.cumsum(f) / max(f.sum(), 1e-12)
        fig.add_trace(
            go.Scatter(
                x=np.arange(1, f.size + 1) / f.size, y=share, mode="lines", name=f"layer {i}"
            )
        )
    return style(
        fig,
        height=380,
        title="Activations covered by the hottest neurons",
        xaxis=dict(title="share of neurons (hottest first)", tickformat=".0%"),
        yaxis=dict(title="share of activations", tickformat=".0%"),
    )


def coactivation_heatmap(matrix: np.ndarray, neurons: np.ndarray, *, title: str) -> go.Figure:
    """``P(column fires | row fires)`` for a neuron subset."""
    labels = [str(n) for n in neurons]
    fig = go.Figure(
        go.Heatmap(
            z=matrix,
            x=labels,
            y=labels,
            zmin=0,
            zmax=1,
            colorscale="Viridis",
            colorbar_title="P(j | i)",
        )
    )
    return style(
        fig,
        height=460,
        title=title,
        xaxis_title="neuron j",
        yaxis=dict(title="neuron i", autorange="reversed"),
    )


def threshold_curves(
    thresholds: np.ndarray,
    curves: dict[str, np.ndarray],
    *,
    title: str = "Predictors against the threshold (mean over layers)",
    yaxis_title: str = "share, mean over layers",
) -> go.Figure:
    """Metric curves (shares in [0, 1], e.g. recall, precision, predicted-active fraction,
    each ``[n_thresholds]``) against the predictor threshold."""
    fig = go.Figure()
    for name, values in curves.items():
        fig.add_trace(
            go.Scatter(x=thresholds, y=np.asarray(values), mode="lines+markers", name=name)
        )
    return style(
        fig,
        height=360,
        title=title,
        xaxis_title="predictor threshold (logit)",
        yaxis=dict(title=yaxis_title, tickformat=".0%", range=[0, 1.05]),
    )


def fidelity_curves(rows: list[dict]) -> go.Figure:
    """Sparse decode against dense over the threshold, from
    :func:`pi2lab.predict.fidelity.fidelity` rows: the perplexity increase on its own axis
    (left panel, a few percent at most), greedy agreement and the share of cold clusters
    computed on a 0-100% axis (right panel)."""
    x = [r["threshold"] for r in rows]
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("perplexity over dense", "agreement and work"),
        horizontal_spacing=0.14,
    )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=[r["perplexity_increase"] for r in rows],
            mode="lines+markers",
            name="perplexity increase",
        ),
        row=1,
        col=1,
    )
    for key, name in (
        ("greedy_agreement", "greedy agreement"),
        ("cold_clusters_computed", "cold clusters computed"),
    ):
        fig.add_trace(
            go.Scatter(x=x, y=[r[key] for r in rows], mode="lines+markers", name=name),
            row=1,
            col=2,
        )
    fig.update_xaxes(title_text="predictor threshold (logit)")
    fig.update_yaxes(title_text="perplexity increase", tickformat=".2%", row=1, col=1)
    fig.update_yaxes(title_text="share", tickformat=".0%", range=[0, 1.05], row=1, col=2)
    return style(fig, height=380, title="Sparse decode against dense (teacher-forced)")


PLACEMENTS = {"frequency": "frequency_order", "coactivation": "coactivation_order"}


def cluster_tradeoff(sweeps: list[list[dict]]) -> go.Figure:
    """Cluster size against the share of cold clusters active per token and the share of
    computed cold neurons that fire, mean over layers, for both placements. ``sweeps``: one
    :func:`pi2lab.bench.sparse.cluster_sweep` result per layer (same sizes)."""
    sizes = [r["cluster_size"] for r in sweeps[0]]
    fig = go.Figure()
    for placement, key in PLACEMENTS.items():
        for metric, name, dash in (
            ("clusters_active_share", "clusters active", "solid"),
            ("firing_share_of_computed", "computed neurons that fire", "dot"),
        ):
            y = np.mean([[r[key][metric] for r in layer] for layer in sweeps], axis=0)
            fig.add_trace(
                go.Scatter(
                    x=sizes,
                    y=y,
                    mode="lines+markers",
                    name=f"{name} ({placement.replace('coact', 'co-act')} order)",
                    line_dash=dash,
                )
            )
    return style(
        fig,
        height=380,
        title="Bigger clusters: fewer, larger reads,<br>more neurons computed for nothing",
        xaxis=dict(title="cluster size (neurons)", type="log", tickvals=sizes),
        yaxis=dict(title="share (mean over layers)", tickformat=".0%", range=[0, 1.05]),
    )


# cell values of the raster: 0 neither, 1 predicted only, 2 missed, 3 fired and predicted
RASTER_CLASSES = (
    ("not predicted, did not fire", "#ffffff"),
    ("predicted, did not fire (computed for nothing)", "#f5b041"),
    ("fired, not predicted (missed)", "#c0392b"),
    ("fired and predicted", "#2e86c1"),
)


def activation_raster(
    fired: np.ndarray, predicted: np.ndarray, *, title: str = "Predicted against fired"
) -> go.Figure:
    """Tokens x neurons raster of one layer: ``fired`` and ``predicted`` ``[T, F]`` (bool),
    each cell coloured by :data:`RASTER_CLASSES` (a legend entry per class).

    Raises:
      ConfigError: the two masks differ in shape or are not 2-D.
    """
    fired, predicted = np.asarray(fired, bool), np.asarray(predicted, bool)
    if fired.ndim != 2 or fired.shape != predicted.shape:
        raise ConfigError(
            f"activation_raster: fired {fired.shape} and predicted {predicted.shape}: "
            "expected two [tokens, neurons] masks of one shape"
        )
    z = predicted.astype(np.int8) + 2 * fired.astype(np.int8)  # [T, F]
    n = len(RASTER_CLASSES)
    scale = [
        [edge, color]
        for k, (_, color) in enumerate(RASTER_CLASSES)
        for edge in (k / n, (k + 1) / n)
    ]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            zmin=-0.5,
            zmax=n - 0.5,
            colorscale=scale,
            showscale=False,
            customdata=np.array([c for c, _ in RASTER_CLASSES], dtype=object)[z],
            hovertemplate="token %{y}, neuron %{x}: %{customdata}<extra></extra>",
        )
    )
    for label, color in RASTER_CLASSES[1:]:  # legend swatches (white needs none)
        share = float(np.mean(z == [c for c, _ in RASTER_CLASSES].index(label)))
        fig.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                mode="markers",
                marker=dict(symbol="square", size=12, color=color),
                name=f"{label}: {share:.1%}",
            )
        )
    return style(
        fig,
        height=420,
        title=title,
        xaxis=dict(title="neuron (hot-first order)"),
        yaxis=dict(title="token", autorange="reversed"),
    )
