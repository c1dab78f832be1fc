"""Widget apps: each owns its controls, one ``go.FigureWidget`` and an ``Output`` for errors."""

from __future__ import annotations

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pi2lab.viz.figures import PLACEMENTS


class ThresholdExplorer:
    """A threshold slider over precomputed per-layer predictor metrics.

    ``metrics[name]`` is ``[n_thresholds, L]`` (recall, precision, predicted active fraction);
    moving the slider redraws the per-layer bars at that threshold. Nothing recompiles: the
    metrics were computed with a traced threshold.
    """

    def __init__(self, thresholds: np.ndarray, metrics: dict[str, np.ndarray]):
        self.thresholds = np.asarray(thresholds, float)
        self.metrics = {k: np.asarray(v, float) for k, v in metrics.items()}
        layers = next(iter(self.metrics.values())).shape[1]
        self.slider = widgets.SelectionSlider(
            options=[(f"{t:+.2f}", i) for i, t in enumerate(self.thresholds)],
            value=int(np.argmin(np.abs(self.thresholds))),
            description="threshold",
            continuous_update=False,
        )
        self.figure = go.FigureWidget(
            data=[
                go.Bar(name=name, x=np.arange(layers), y=vals[self.slider.value])
                for name, vals in self.metrics.items()
            ],
            layout=go.Layout(
                barmode="group",
                xaxis_title="layer",
                yaxis_range=[0, 1.05],
                yaxis_tickformat=".0%",
                template="plotly_white",
                height=360,
                title=self._title(),
            ),
        )
        self.errors = widgets.Output()
        self.slider.observe(self._update, names="value")

    def _title(self) -> str:
        return f"Predictors at threshold {self.thresholds[self.slider.value]:+.2f}"

    def _update(self, change) -> None:
        with self.errors, self.figure.batch_update():
            for bar, vals in zip(self.figure.data, self.metrics.values(), strict=True):
                bar.y = vals[change["new"]]
            self.figure.layout.title = self._title()

    def widget(self) -> widgets.Widget:
        return widgets.VBox([self.slider, self.figure, self.errors])


class ClusterExplorer:
    """Cluster size and cold-neuron placement over a precomputed sweep.

    ``sweeps`` holds one :func:`pi2lab.bench.sparse.cluster_sweep` result per layer (the same
    sizes in each). The left panel shows, per layer, the share of cold clusters active per
    token and the share of computed cold neurons that fire (the rest are computed for
    nothing); the right panel the measured FFN time per layer (native kernel where built, and
    the pure-JAX loop). Changing a control redraws from the sweep; nothing is recomputed.
    """

    def __init__(self, sweeps: list[list[dict]]):
        self.sweeps = sweeps
        sizes = [r["cluster_size"] for r in sweeps[0]]
        self.size = widgets.SelectionSlider(
            options=[(str(c), i) for i, c in enumerate(sizes)],
            value=min(range(len(sizes)), key=lambda i: abs(sizes[i] - 16)),
            description="cluster size",
            continuous_update=False,
        )
        self.placement = widgets.ToggleButtons(
            options=list(PLACEMENTS), value="coactivation", description="placement"
        )
        self.timings = [k for k in ("ffn_native_ms", "ffn_loop_ms") if k in sweeps[0][0]]
        fig = make_subplots(
            rows=1,
            cols=2,
            subplot_titles=("per token (held-out masks)", "FFN time per layer (measured)"),
        )
        layers = np.arange(len(sweeps))
        for name in ("clusters active", "computed neurons that fire"):
            fig.add_trace(go.Bar(name=name, x=layers), row=1, col=1)
        for key in self.timings:
            fig.add_trace(go.Bar(name=key[4:-3] + " ms", x=layers), row=1, col=2)
        fig.update_layout(
            barmode="group", template="plotly_white", height=400, legend=dict(orientation="h")
        )
        fig.update_yaxes(tickformat=".0%", range=[0, 1.05], title_text="share", row=1, col=1)
        fig.update_yaxes(title_text="ms", row=1, col=2)
        fig.update_xaxes(title_text="layer")
        self.figure = go.FigureWidget(fig)
        self.errors = widgets.Output()
        self._redraw()
        self.size.observe(lambda _: self._redraw(), names="value")
        self.placement.observe(lambda _: self._redraw(), names="value")

    def _redraw(self) -> None:
        rows = [layer[self.size.value] for layer in self.sweeps]
        stats = [r[PLACEMENTS[self.placement.value]] for r in rows]
        with self.errors, self.figure.batch_update():
            self.figure.data[0].y = [s["clusters_active_share"] for s in stats]
            self.figure.data[1].y = [s["firing_share_of_computed"] for s in stats]
            for bar, key in zip(self.figure.data[2:], self.timings, strict=True):
                bar.y = [r[key] for r in rows]
            self.figure.layout.title = (
                f"{rows[0]['cluster_size']}-neuron clusters, {self.placement.value} order "
                "(time measured with co-activation order)"
            )

    def widget(self) -> widgets.Widget:
        return widgets.VBox([widgets.HBox([self.size, self.placement]), self.figure, self.errors])
