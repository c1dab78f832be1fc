"""Figure builders: arrays in, ``plotly.graph_objects.Figure`` out (no widgets here)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go


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
    fig.add_hline(
        y=float(sparsity.mean()), line_dash="dot", annotation_text=f"mean {sparsity.mean():.1%}"
    )
    fig.update_layout(
        title=title,
        xaxis_title="layer",
        yaxis_title="inactive neurons per token",
        yaxis_range=[0, 1.08],
        yaxis_tickformat=".0%",
        template="plotly_white",
        height=360,
    )
    return fig


def frequency_rank(frequency: np.ndarray) -> go.Figure:
    """Neuron firing frequency against its rank, one line per layer, log-log.
    ``frequency [L, F]`` (experts flattened into neurons for MoE)."""
    fig = go.Figure()
    for i, freq in enumerate(np.asarray(frequency)):
        f = np.sort(freq.reshape(-1))[::-1]
        f = f[f > 0]
        fig.add_trace(go.Scatter(x=np.arange(1, f.size + 1), y=f, mode="lines", name=f"layer {i}"))
    fig.update_layout(
        title="Neuron firing frequency by rank",
        xaxis_type="log",
        yaxis_type="log",
        xaxis_title="neuron rank (hottest first)",
        yaxis_title="fraction of tokens it fires on",
        template="plotly_white",
        height=380,
    )
    return fig


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
    fig.update_layout(
        title="Activations covered by the hottest neurons",
        xaxis_title="share of neurons (hottest first)",
        yaxis_title="share of activations",
        xaxis_tickformat=".0%",
        yaxis_tickformat=".0%",
        template="plotly_white",
        height=380,
    )
    return fig


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
    fig.update_layout(
        title=title,
        xaxis_title="neuron j",
        yaxis_title="neuron i",
        yaxis_autorange="reversed",
        template="plotly_white",
        height=460,
    )
    return fig


def threshold_curves(thresholds: np.ndarray, curves: dict[str, np.ndarray]) -> go.Figure:
    """Mean-over-layers metric curves against the predictor threshold."""
    fig = go.Figure()
    for name, values in curves.items():
        fig.add_trace(
            go.Scatter(x=thresholds, y=np.asarray(values), mode="lines+markers", name=name)
        )
    fig.update_layout(
        xaxis_title="predictor threshold (logit)",
        template="plotly_white",
        yaxis_tickformat=".0%",
        height=360,
    )
    return fig


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
    fig.update_layout(
        title="Bigger clusters: fewer, larger reads, more neurons computed for nothing",
        xaxis=dict(title="cluster size (neurons)", type="log", tickvals=sizes),
        yaxis=dict(title="share (mean over layers)", tickformat=".0%", range=[0, 1.05]),
        template="plotly_white",
        height=380,
        legend=dict(orientation="h", y=-0.25),
    )
    return fig
