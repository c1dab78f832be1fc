"""Widget apps: each owns its controls, one ``go.FigureWidget`` and an ``Output`` for errors.

The helpers here are shared by every app (:mod:`pi2lab.viz.offload_apps`,
:mod:`pi2lab.viz.planner`): :func:`figure_widget` (a figure as wide as the output area),
:func:`panel` (the app's box, full width), :func:`controls_row` (a row of controls that wraps
rather than running past the output area), :func:`replace_figure` and :class:`ShowsErrors`
(a failing callback says so in the widget instead of leaving the last figure up silently).
"""

from __future__ import annotations

import contextlib
import html

import ipywidgets as widgets
import jax.numpy as jnp
import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pi2lab.kernels.predictor import scores
from pi2lab.viz.figures import PLACEMENTS, activation_raster, style

ERROR_COLOR = "#c0392b"


def figure_widget(fig: go.Figure) -> go.FigureWidget:
    """A ``FigureWidget`` that takes the output area's width: no fixed width, autosize on, and
    plotly's responsive mode (redraws when the window resizes)."""
    widget = go.FigureWidget(fig)
    widget.layout.width = None
    widget.layout.autosize = True
    widget._config = {**widget._config, "responsive": True}
    return widget


def share_slider(
    value: float, description: str, lo: float = 0.0, hi: float = 1.0, step: float = 0.05
) -> widgets.FloatSlider:
    """A slider over a share, read out as a percentage, that redraws when released."""
    return widgets.FloatSlider(
        value=value,
        min=lo,
        max=hi,
        step=step,
        description=description,
        readout_format=".0%",
        continuous_update=False,
    )


def panel(children) -> widgets.VBox:
    """An app's box of controls, figure and outputs, as wide as the output area."""
    return widgets.VBox(list(children), layout=widgets.Layout(width="100%"))


def controls_row(children) -> widgets.HBox:
    """A row of an app's controls that wraps onto a second line where the output area is
    narrower than the row (a small window, the file browser open), instead of cutting off
    the controls at its end."""
    return widgets.HBox(list(children), layout=widgets.Layout(flex_flow="row wrap"))


def replace_figure(widget: go.FigureWidget, new: go.Figure) -> None:
    """Redraws ``widget`` as ``new`` (traces and layout), keeping it full width."""
    with widget.batch_update():
        widget.data = []
        widget.add_traces(list(new.data))
        widget.layout = new.layout
        widget.layout.width = None
        widget.layout.autosize = True


class ShowsErrors:
    """For apps with ``figure`` (a ``FigureWidget``) and ``errors`` (an ``Output``): run each
    callback in :meth:`showing_errors`, so that an exception is written into ``errors`` and
    the figure's title says the figure was not redrawn, rather than the exception going to
    the kernel's log while the figure keeps showing the previous result.

    Attributes:
      error: The last callback's exception, None after one that succeeded.
    """

    error: Exception | None = None

    @contextlib.contextmanager
    def showing_errors(self):
        self.errors.outputs = ()
        try:
            yield
        except Exception as e:  # a widget callback has nowhere else to report
            self.error = e
            message = f"{type(e).__name__}: {e}"
            self.errors.append_stderr(message + "\n")
            short = html.escape(message if len(message) <= 110 else message[:107] + "...")
            self.figure.layout.title = dict(
                text=f"<span style='color:{ERROR_COLOR}'>Not redrawn: {short}</span><br>"
                "<span style='font-size:12px'>the figure below is the previous result; "
                "see the error under it</span>",
                x=0.01,
                xanchor="left",
            )
        else:
            self.error = None


class ThresholdExplorer(ShowsErrors):
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
        fig = go.Figure(
            [
                go.Bar(name=name, x=np.arange(layers), y=vals[self.slider.value])
                for name, vals in self.metrics.items()
            ]
        )
        self.figure = figure_widget(
            style(
                fig,
                height=360,
                title=self._title(),
                barmode="group",
                xaxis=dict(title="layer", dtick=1),
                yaxis=dict(title="share", range=[0, 1.05], tickformat=".0%"),
            )
        )
        self.errors = widgets.Output()
        self.slider.observe(self._update, names="value")

    def _title(self) -> str:
        return f"Predictors at threshold {self.thresholds[self.slider.value]:+.2f}"

    def _update(self, change) -> None:
        with self.showing_errors(), self.figure.batch_update():
            for bar, vals in zip(self.figure.data, self.metrics.values(), strict=True):
                bar.y = vals[change["new"]]
            self.figure.layout.title = self._title()

    def widget(self) -> widgets.Widget:
        return panel([self.slider, self.figure, self.errors])


class ClusterExplorer(ShowsErrors):
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
        style(fig, height=400, barmode="group")
        fig.update_yaxes(tickformat=".0%", range=[0, 1.05], title_text="share", row=1, col=1)
        fig.update_yaxes(title_text="ms", row=1, col=2)
        fig.update_xaxes(title_text="layer", dtick=1)
        self.figure = figure_widget(fig)
        self.errors = widgets.Output()
        self._redraw()
        self.size.observe(lambda _: self._redraw(), names="value")
        self.placement.observe(lambda _: self._redraw(), names="value")

    def _redraw(self) -> None:
        rows = [layer[self.size.value] for layer in self.sweeps]
        stats = [r[PLACEMENTS[self.placement.value]] for r in rows]
        with self.showing_errors(), self.figure.batch_update():
            self.figure.data[0].y = [s["clusters_active_share"] for s in stats]
            self.figure.data[1].y = [s["firing_share_of_computed"] for s in stats]
            for bar, key in zip(self.figure.data[2:], self.timings, strict=True):
                bar.y = [r[key] for r in rows]
            self.figure.layout.title = (
                f"{rows[0]['cluster_size']}-neuron clusters, {self.placement.value} order<br>"
                "<span style='font-size:12px'>time measured with co-activation order</span>"
            )

    def widget(self) -> widgets.Widget:
        return panel([controls_row([self.size, self.placement]), self.figure, self.errors])


class RasterExplorer(ShowsErrors):
    """Layer and threshold controls over a tokens x neurons raster of which neurons fired and
    which the predictor picked (:func:`pi2lab.viz.figures.activation_raster`).

    ``predictors`` are the per-layer predictor weights (``Predictors.layers``), ``inputs`` and
    ``masks`` what :func:`pi2lab.predict.predictor.collect` returns (``[N, D]`` residuals and
    ``[N, F]`` fired masks per layer); the raster shows their first ``tokens`` rows. Scores are
    computed once per layer; moving the threshold only re-compares them.
    """

    def __init__(self, predictors, inputs, masks, thresholds, *, tokens: int = 64):
        self.predictors, self.tokens = list(predictors), tokens
        self.inputs = [np.asarray(x)[:tokens] for x in inputs]
        self.masks = [np.asarray(m, bool)[:tokens] for m in masks]
        self._scores: dict[int, np.ndarray] = {}
        self.thresholds = np.asarray(thresholds, float)
        self.layer = widgets.IntSlider(
            value=0, min=0, max=len(self.masks) - 1, description="layer", continuous_update=False
        )
        self.threshold = widgets.SelectionSlider(
            options=[(f"{t:+.2f}", i) for i, t in enumerate(self.thresholds)],
            value=int(np.argmin(np.abs(self.thresholds))),
            description="threshold",
            continuous_update=False,
        )
        self.errors = widgets.Output()
        self.figure = figure_widget(self._figure())
        self.layer.observe(self._update, names="value")
        self.threshold.observe(self._update, names="value")

    def scores(self, layer: int) -> np.ndarray:
        """Predictor logits ``[tokens, F]`` of ``layer`` (cached)."""
        if layer not in self._scores:
            pred = self.predictors[layer]
            self._scores[layer] = np.asarray(scores(pred, jnp.asarray(self.inputs[layer])))
        return self._scores[layer]

    def predicted(self) -> np.ndarray:
        """``[tokens, F]``: the neurons predicted to fire at the current controls."""
        return self.scores(self.layer.value) > self.thresholds[self.threshold.value]

    def _figure(self) -> go.Figure:
        fired, guess = self.masks[self.layer.value], self.predicted()
        recall = (fired & guess).sum() / max(fired.sum(), 1)
        title = (
            f"Layer {self.layer.value} at threshold {self.thresholds[self.threshold.value]:+.2f}"
            f": recall {recall:.0%}, {guess.mean():.0%} of neurons predicted, "
            f"{fired.mean():.0%} fired"
        )
        return activation_raster(fired, guess, title=title)

    def _update(self, change=None) -> None:
        with self.showing_errors():
            replace_figure(self.figure, self._figure())

    def widget(self) -> widgets.Widget:
        return panel([controls_row([self.layer, self.threshold]), self.figure, self.errors])
