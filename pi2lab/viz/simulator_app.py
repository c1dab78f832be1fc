"""A widget app over the decode simulator for the reproduction notebook (06): a phone
profile, a phone-scale model shape and the engine's knobs in, the simulated last token's
Gantt timeline out (:attr:`pi2lab.plan.sim_result.SimResult.timeline`). Every figure is
SIMULATED and says so."""

from __future__ import annotations

import typing
from collections.abc import Mapping

import ipywidgets as widgets
import plotly.graph_objects as go

from pi2lab.pipeline.scheduler import PipelineConfig
from pi2lab.plan.hardware import HardwareProfile
from pi2lab.plan.phones import BUILTIN_PROFILES, builtin
from pi2lab.plan.shapes import SHAPES, ModelShape
from pi2lab.plan.simulator import SimEngine, simulate_decode
from pi2lab.viz.apps import (
    ShowsErrors,
    controls_row,
    figure_widget,
    panel,
    replace_figure,
    share_slider,
)
from pi2lab.viz.offload_figures import timeline_gantt
from pi2lab.viz.planner import shape_budget

ENGINE_MODE = {"powerinfer2": "cluster", "llmflash": "matrix"}
DEFAULT = "default"  # the overlap control's value for the engine's own mode


class SimulatorExplorer(ShowsErrors):
    """Device, model shape, engine, memory budget, overlap mode and I/O threads over
    :func:`~pi2lab.plan.simulator.simulate_decode`: each change simulates ``tokens`` tokens
    on a synthetic trace of the shape and redraws the last token's timeline on the virtual
    clock. The budget is a share of the FFN's cache slots on top of the resident minimum
    (:func:`~pi2lab.viz.planner.shape_budget`), the same bytes for every engine.
    ``llama.cpp-mmap`` has no overlap and one reader, so those controls are disabled for it.

    Attributes:
      result: The latest :class:`~pi2lab.plan.sim_result.SimResult` (the last that succeeded).
    """

    def __init__(
        self,
        *,
        phones: Mapping[str, HardwareProfile] | None = None,
        shapes: Mapping[str, ModelShape] | None = None,
        device: str = "oneplus12",
        shape: str = "turbosparse-mistral-7b",
        tokens: int = 8,
        share: float = 0.5,
    ):
        if phones is None:
            phones = {name: builtin(name) for name in BUILTIN_PROFILES}
        self.phones, self.shapes = dict(phones), dict(SHAPES if shapes is None else shapes)
        self.tokens = tokens
        self.device = widgets.Dropdown(
            options=list(self.phones),
            value=device if device in self.phones else next(iter(self.phones)),
            description="device",
        )
        self.model = widgets.Dropdown(
            options=list(self.shapes),
            value=shape if shape in self.shapes else next(iter(self.shapes)),
            description="model",
        )
        self.engine = widgets.Dropdown(
            options=list(typing.get_args(SimEngine)), value="powerinfer2", description="engine"
        )
        self.share = share_slider(share, "FFN share")
        self.mode = widgets.ToggleButtons(
            options=[("engine's", DEFAULT)] + [(m, m) for m in ("none", "matrix", "cluster")],
            value=DEFAULT,
        )
        self.io_threads = widgets.IntSlider(
            value=1, min=1, max=4, description="I/O threads", continuous_update=False
        )
        self.summary = widgets.HTML()
        self.errors = widgets.Output()
        self.result = self._simulate()
        self.figure = figure_widget(self._figure())
        self._summarise()
        for w in self.controls:
            w.observe(self._update, names="value")
        self._sync_controls()

    @property
    def controls(self) -> tuple[widgets.Widget, ...]:
        return (self.device, self.model, self.engine, self.share, self.mode, self.io_threads)

    def pipeline(self) -> PipelineConfig | None:
        """The pipeline the controls describe (None: the engine's default)."""
        if self.engine.value not in ENGINE_MODE:
            return None
        if self.mode.value == DEFAULT and self.io_threads.value == 1:
            return None
        mode = ENGINE_MODE[self.engine.value] if self.mode.value == DEFAULT else self.mode.value
        return PipelineConfig(mode=mode, io_threads=self.io_threads.value)

    def _simulate(self):
        shape = self.shapes[self.model.value]
        return simulate_decode(
            shape,
            self.phones[self.device.value],
            engine=self.engine.value,
            memory_bytes=shape_budget(shape, self.share.value),
            tokens=self.tokens,
            pipeline=self.pipeline(),
        )

    def _figure(self) -> go.Figure:
        r, pipe = self.result, self.pipeline()
        overlap = "no overlap, one reader"
        if self.engine.value in ENGINE_MODE:
            mode = pipe.mode if pipe else ENGINE_MODE[self.engine.value]
            overlap = f"{mode} overlap, {pipe.io_threads if pipe else 1} I/O thread(s)"
        return timeline_gantt(
            r.timeline.rows(),
            title=f"SIMULATED: {r.shape} on {r.profile}, {self.engine.value}, "
            f"{r.tokens_per_s:.1f} tokens/s",
            subtitle=f"last of {self.tokens} tokens; budget: resident minimum + "
            f"{self.share.value:.0%} of the FFN; {overlap}; virtual clock, synthetic trace",
            simulated=True,
        )

    def _summarise(self) -> None:
        r = self.result
        self.summary.value = (
            f"<b>simulated</b> ({self.tokens} tokens, synthetic trace of the shape): "
            f"{r.tokens_per_s:.1f} tokens/s, hit rate {r.hit_rate:.0%}, "
            f"memory {r.memory_bytes / 2**30:,.2f} GiB"
        )

    def _sync_controls(self) -> None:
        mmap = self.engine.value not in ENGINE_MODE
        self.mode.disabled = self.io_threads.disabled = mmap

    def _update(self, change=None) -> None:
        self._sync_controls()
        with self.showing_errors():
            self.result = self._simulate()
            replace_figure(self.figure, self._figure())
            self._summarise()

    def widget(self) -> widgets.Widget:
        return panel(
            [
                controls_row([self.device, self.model, self.engine]),
                controls_row([self.share, self.io_threads]),
                self.mode,
                self.summary,
                self.figure,
                self.errors,
            ]
        )
