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
