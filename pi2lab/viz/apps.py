"""Widget apps: each owns its controls, one ``go.FigureWidget`` and an ``Output`` for errors."""

from __future__ import annotations

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go


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
