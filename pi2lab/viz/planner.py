"""Figures and a widget app for the planner notebook (05).

The helpers run the library: :func:`pi2lab.plan.planner.plan` for a budget given as a share of
the FFN bytes (on top of the resident minimum), :func:`pi2lab.plan.simulator.simulate_decode`
for phone-scale shapes, and a measurement of a plan on the real offload engine. Figure
builders take plain numbers and return ``go.Figure``; :class:`PlannerExplorer` owns its
controls, one ``go.FigureWidget`` and an ``Output`` for errors, as in :mod:`pi2lab.viz.apps`.

Every figure says what it is: *predicted* (the cost model), *simulated* (the virtual-clock
simulator, phone profiles) or *measured* (the engine, this machine).

Shapes: L layers (FFNs), B budgets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pi2lab.bench.planner import measure
from pi2lab.budget import MemoryBudget
from pi2lab.engine.offload import OffloadConfig
from pi2lab.plan.cost import ModelStats
from pi2lab.plan.hardware import HardwareProfile
from pi2lab.plan.phones import BUILTIN_PROFILES, builtin
from pi2lab.plan.planner import ExecutionPlan, plan
from pi2lab.plan.shapes import SHAPES, ModelShape
from pi2lab.plan.simulator import shape_minimum, simulate_decode
from pi2lab.viz.apps import (
    ShowsErrors,
    controls_row,
    figure_widget,
    panel,
    replace_figure,
    share_slider,
)
from pi2lab.viz.figures import style

THIS_MACHINE = "this-machine"
TERM_COLORS = {
    "attention": "#4c78a8",
    "LM head": "#b279a2",
    "host overhead": "#9d755d",
    "FFN compute": "#54a24b",
    "I/O not hidden": "#e45756",
}
MEASURED_COLOR = "#222222"
_MiB = 1 << 20

# -- budgets and plans ------------------------------------------------------------------------


def resident_minimum(stats: ModelStats) -> int:
    """Bytes every plan holds before its cache: resident tensors, KV cache, staging rows."""
    return stats.fixed_bytes + stats.staging_bytes


def budget_bytes(stats: ModelStats, share: float) -> int:
    """Total memory budget: the resident minimum plus ``share`` of the FFN bytes."""
    return MemoryBudget.share(share).total(resident_minimum(stats), stats.ffn_bytes)


def plan_bytes(stats: ModelStats, chosen: ExecutionPlan) -> int:
    """Bytes the plan actually holds: ``sum_l c_l * b_l`` plus the resident minimum."""
    pairs = zip(chosen.layer_units, stats.layers, strict=True)
    cache = sum(c * layer.unit_bytes for c, layer in pairs)
    return resident_minimum(stats) + cache


def plan_at(stats: ModelStats, profile: HardwareProfile, share: float, **kw) -> ExecutionPlan:
    """The planner's plan at a budget of ``share`` of the FFN bytes (plus the minimum)."""
    return plan(stats, profile, MemoryBudget.share(share), **kw)


def budget_sweep(stats: ModelStats, profile: HardwareProfile, shares, **kw) -> list:
    """:func:`plan_at` at every share ``[B]``."""
    return [plan_at(stats, profile, float(s), **kw) for s in shares]


def shape_budget(shape: ModelShape, share: float, *, kv_capacity: int = 1024) -> int:
    """Total budget for a phone-scale shape as :func:`pi2lab.plan.simulator.simulate_decode`
    counts it (``powerinfer2``'s pipeline): resident bytes and KV, staging rows, then
    ``share`` of every FFN's cache slots (4 KiB-padded strides, so 1.0 caches every unit)."""
    pipeline = OffloadConfig(engine="powerinfer2").pipeline_config()
    fixed, rows = shape_minimum(shape, pipeline, kv_capacity)
    slots = shape.num_ffns * shape.units * shape.stride
    return MemoryBudget.share(share).total(fixed + rows * shape.stride, slots)


def simulate_at(shape: ModelShape, profile: HardwareProfile, share: float, tokens: int = 16):
    """Simulated ``powerinfer2`` decode of ``shape`` on ``profile`` at :func:`shape_budget`."""
    return simulate_decode(
        shape,
        profile,
        engine="powerinfer2",
        memory_bytes=shape_budget(shape, share),
        tokens=tokens,
    )


def engine_measure(layout, tokens: int, prompts) -> Callable[[ExecutionPlan], float]:
    """A callable that runs a plan on the real offload engine and returns measured tokens/s
    (:func:`pi2lab.bench.planner.measure`: median after a warm-up prompt)."""

    def run(chosen: ExecutionPlan) -> float:
        return 1.0 / measure(layout, chosen.offload_config(), tokens, prompts=list(prompts))

    return run


# -- terms ------------------------------------------------------------------------------------


def plan_ms(terms: Mapping[str, float]) -> dict[str, float]:
    """A plan's predicted ms per token on the critical path by term (they add up to the
    total): attention, LM head, host overhead, FFN compute, and the I/O time the overlap
    does not hide (the FFN time beyond its compute)."""
    return {
        "attention": terms["attention"] * 1e3,
        "LM head": terms["head"] * 1e3,
        "host overhead": terms["overhead"] * 1e3,
        "FFN compute": terms["compute"] * 1e3,
        "I/O not hidden": max(terms["ffn"] - terms["compute"], 0.0) * 1e3,
    }


def sim_ms(stage_seconds: Mapping[str, float]) -> dict[str, float]:
    """A simulation's mean ms per token by stage, in :func:`plan_ms`'s terms (the compute
    thread's wait on reads is the I/O not hidden)."""
    return {
        "attention": stage_seconds["attention"] * 1e3,
        "LM head": stage_seconds["head"] * 1e3,
        "host overhead": 0.0,
        "FFN compute": stage_seconds["compute"] * 1e3,
        "I/O not hidden": stage_seconds["wait"] * 1e3,
    }


# -- figures ----------------------------------------------------------------------------------


def plan_figure(
    units: Sequence[int],
    capacity: Sequence[int],
    stacks: Mapping[str, Mapping[str, float]],
    *,
    measured: Mapping[str, float] | None = None,
    title: str = "Plan",
) -> go.Figure:
    """Two panels: cache units per layer ``[L]`` stacked under the units left on flash (up to
    ``capacity`` ``[L]``, the FFN's units), and ms per token by term, one stacked column per
    entry of ``stacks`` (``{column: {term: ms}}``); ``measured`` (``{column: ms}``) adds black
    total-only columns."""
    units, capacity = np.asarray(units, float), np.asarray(capacity, float)
    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.6, 0.4],
        subplot_titles=("cache units per layer", "ms per decode token"),
    )
    layers = np.arange(units.size)
    share = np.divide(units, np.maximum(capacity, 1))
    for name, y, color in (
        ("cached units", units, "#f58518"),
        ("units left on flash", capacity - units, "#dddddd"),
    ):
        fig.add_trace(
            go.Bar(
                x=layers,
                y=y,
                name=name,
                marker_color=color,
                customdata=share,
                hovertemplate=f"layer %{{x}}: %{{y:.0f}} {name} (cached %{{customdata:.0%}})"
                "<extra></extra>",
            ),
            row=1,
            col=1,
        )
    columns = list(stacks)
    terms = list(dict.fromkeys(t for s in stacks.values() for t in s))
    for term in terms:
        fig.add_trace(
            go.Bar(
                x=columns,
                y=[stacks[c].get(term, 0.0) for c in columns],
                name=term,
                marker_color=TERM_COLORS.get(term, "#bab0ac"),
                hovertemplate=f"{term}: %{{y:.2f}} ms<extra>%{{x}}</extra>",
            ),
            row=1,
            col=2,
        )
    if measured:
        fig.add_trace(
            go.Bar(
                x=list(measured),
                y=list(measured.values()),
                name="measured (total)",
                marker_color=MEASURED_COLOR,
                hovertemplate="%{y:.2f} ms<extra>%{x}</extra>",
            ),
            row=1,
            col=2,
        )
    # one label per layer up to 16 layers, then every 2nd, 4th, ... (32 labels overlap)
    fig.update_xaxes(title_text="layer", dtick=layer_dtick(units.size), row=1, col=1)
    fig.update_yaxes(title_text="units", row=1, col=1)
    fig.update_yaxes(title_text="ms", row=1, col=2)
    return style(fig, height=400, title=title, barmode="stack")


def layer_dtick(layers: int, most: int = 16) -> int:
    """Tick step on a layer axis so that at most ``most`` layers are labelled: 1, 2, 4, ..."""
    step = 1
    while layers > most * step:
        step *= 2
    return step


def speed_vs_budget(
    shares: Sequence[float],
    predicted: Sequence[float],
    *,
    measured: Mapping[float, float] | None = None,
    total_mib: Sequence[float] | None = None,
    title: str = "Decode speed against the memory budget",
) -> go.Figure:
    """Predicted tokens/s of the planner's plan against the budget (share of the FFN bytes
    on top of the resident minimum), with measured points ``{share: tokens/s}`` as markers;
    ``total_mib`` ``[B]`` adds the whole budget to the hover."""
    shares = np.asarray(shares, float)
    hover = "%{x:.0%} of the FFN bytes: %{y:.1f} tokens/s"
    fig = go.Figure(
        go.Scatter(
            x=shares,
            y=np.asarray(predicted, float),
            mode="lines+markers",
            name="predicted (cost model, planner's plan)",
            line=dict(color="#4c78a8"),
            customdata=None if total_mib is None else np.asarray(total_mib, float),
            hovertemplate=hover
            + ("" if total_mib is None else "<br>budget %{customdata:.1f} MiB")
            + "<extra></extra>",
        )
    )
    if measured:
        fig.add_trace(
            go.Scatter(
                x=list(measured),
                y=list(measured.values()),
                mode="markers",
                name="measured (engine, this machine)",
                marker=dict(symbol="diamond", size=11, color=MEASURED_COLOR),
            )
        )
    return style(
        fig,
        height=380,
        title=title,
        xaxis=dict(
            title="budget: resident minimum + this share of the FFN bytes", tickformat=".0%"
        ),
        yaxis=dict(title="tokens/s", rangemode="tozero"),
    )


def plan_table(chosen: ExecutionPlan, stats: ModelStats) -> str:
    """HTML: the plan's discrete choices, then per layer its cache units, share and the
    hit rate the cost model reads off the policy's curve there."""
    c = chosen.choice
    pipe = c.pipeline
    head = (
        f"engine <b>{c.engine}</b>, policy <b>{c.policy}</b>, overlap <b>{pipe.mode}</b>, "
        f"<b>{pipe.io_threads}</b> I/O thread(s)" + (", gate-first" if pipe.gate_first else "")
    )
    cells = "".join(
        f"<tr><td>{i}</td><td>{u}</td><td>{u / layer.units:.0%}</td>"
        f"<td>{layer.hit(c.policy, u):.0%}</td></tr>"
        for i, (u, layer) in enumerate(zip(chosen.layer_units, stats.layers, strict=True))
    )
    return (
        f"<div>{head}</div><table><tr><th>layer</th><th>cache units</th><th>of U</th>"
        f"<th>hit rate (curve)</th></tr>{cells}</table>"
    )


# -- app --------------------------------------------------------------------------------------


class PlannerExplorer(ShowsErrors):
    """Budget, device profile and model controls over the planner (this machine) or the
    simulator (phone profiles).

    For ``this-machine`` each change re-plans the recorded model (``stats``) under the budget
    and shows the plan, its predicted speed and its predicted ms by term; *measure* runs the
    plan on the real engine (``measure``: plan -> tokens/s) and adds the measured figure. For a
    phone profile (``phones``, default the built-in ones) the model is a shape of ``shapes``
    (default the built-in ones) and the figures are *simulated*
    (:func:`simulate_at`: phone-scale stats come from shapes, not recorded traces).

    Attributes:
      profiles: Device name -> profile, this machine's first.
      result: The latest :class:`ExecutionPlan` or :class:`~pi2lab.plan.simulator.SimResult`.
      measured: Measured tokens/s by budget share, this machine.
    """

    def __init__(
        self,
        stats: ModelStats,
        profile: HardwareProfile,
        *,
        measure: Callable[[ExecutionPlan], float] | None = None,
        phones: Mapping[str, HardwareProfile] | None = None,
        shapes: Mapping[str, ModelShape] | None = None,
        shape: str = "turbosparse-mistral-7b",
        sim_tokens: int = 16,
        share: float = 0.5,
    ):
        self.stats, self.this_machine, self._measure = stats, profile, measure
        self.shapes = dict(SHAPES if shapes is None else shapes)
        self.default_shape = shape if shape in self.shapes else next(iter(self.shapes))
        self.sim_tokens = sim_tokens
        self.measured: dict[float, float] = {}
        if phones is None:
            phones = {name: builtin(name) for name in BUILTIN_PROFILES}
        self.profiles = {THIS_MACHINE: profile, **phones}
        self._syncing = False
        self.share = share_slider(share, "FFN share")
        self.profile = widgets.Dropdown(
            options=[("this machine (measured profile)", THIS_MACHINE)]
            + [(f"{name} (simulated)", name) for name in phones],
            value=THIS_MACHINE,
            description="device",
        )
        self.model = widgets.Dropdown(options=[stats.name], value=stats.name, description="model")
        self.measure_button = widgets.Button(description="measure", icon="play")
        self.summary = widgets.HTML()
        self.table = widgets.HTML()
        self.errors = widgets.Output()
        self.result = self._compute()
        self.figure = figure_widget(self._figure())
        self._summarise()
        for w in (self.share, self.profile, self.model):
            w.observe(self._update, names="value")
        self.measure_button.on_click(self._on_measure)
        self._sync_controls()

    @property
    def simulated(self) -> bool:
        return self.profile.value != THIS_MACHINE

    def device(self) -> HardwareProfile:
        return self.profiles[self.profile.value]

    def budget(self) -> int:
        """The total budget in bytes the controls describe."""
        if self.simulated:
            return shape_budget(self.shapes[self.model.value], self.share.value)
        return budget_bytes(self.stats, self.share.value)

    def predicted_tokens_per_s(self) -> float:
        """The current figure: predicted (this machine) or simulated (phones) tokens/s."""
        if self.simulated:
            return self.result.tokens_per_s
        return self.result.predicted_tokens_per_s

    def _compute(self):
        if self.simulated:
            shape = self.shapes[self.model.value]
            return simulate_at(shape, self.device(), self.share.value, self.sim_tokens)
        return plan_at(self.stats, self.this_machine, self.share.value)

    def _figure(self) -> go.Figure:
        r, key = self.result, round(self.share.value, 4)
        if self.simulated:
            shape = self.shapes[self.model.value]
            n = shape.config.num_layers
            units, capacity = [r.cache_units] * n, [shape.units] * n
            stacks = {"simulated": sim_ms(r.stage_seconds)}
            title = (
                f"Simulated: {shape.name} on {self.profile.value}, "
                f"{r.tokens_per_s:.1f} tokens/s (cache per FFN)"
            )
            return plan_figure(units, capacity, stacks, title=title)
        capacity = [layer.units for layer in self.stats.layers]
        measured = {"measured": 1e3 / self.measured[key]} if key in self.measured else None
        title = f"Predicted: {r.predicted_tokens_per_s:.1f} tokens/s on this machine"
        if measured:
            title += f", measured {self.measured[key]:.1f} tokens/s"
        stacks = {"predicted": plan_ms(r.terms)}
        return plan_figure(r.layer_units, capacity, stacks, measured=measured, title=title)

    def _summarise(self) -> None:
        budget = f"budget {self.budget() / _MiB:,.1f} MiB"
        if self.simulated:
            r = self.result
            self.summary.value = (
                f"<b>simulated</b> ({self.sim_tokens} tokens, synthetic trace of the shape): "
                f"{r.tokens_per_s:.1f} tokens/s, hit rate {r.hit_rate:.0%}, {budget} "
                f"(used {r.memory_bytes / _MiB:,.1f} MiB)"
            )
            self.table.value = ""
            return
        key = round(self.share.value, 4)
        text = f"<b>predicted</b>: {self.result.predicted_tokens_per_s:.1f} tokens/s"
        if key in self.measured:
            text += f", <b>measured</b>: {self.measured[key]:.1f} tokens/s"
        used = plan_bytes(self.stats, self.result) / _MiB
        self.summary.value = f"{text}; {budget} (plan holds {used:,.1f} MiB)"
        self.table.value = plan_table(self.result, self.stats)

    def _sync_controls(self) -> None:
        self.measure_button.disabled = self.simulated or self._measure is None

    def _redraw(self) -> None:
        replace_figure(self.figure, self._figure())
        self._summarise()

    def _update(self, change=None) -> None:
        if self._syncing:
            return
        with self.showing_errors():
            if change is not None and change["owner"] is self.profile:
                self._syncing = True
                try:
                    names = list(self.shapes) if self.simulated else [self.stats.name]
                    value = self.default_shape if self.simulated else self.stats.name
                    self.model.options, self.model.value = names, value
                finally:
                    self._syncing = False
            self._sync_controls()
            self.result = self._compute()
            self._redraw()

    def measure(self) -> float:
        """Runs the current plan on the engine (this machine); returns measured tokens/s."""
        if self.simulated or self._measure is None:
            raise RuntimeError("measure: only plans for this machine run on the engine")
        tps = float(self._measure(self.result))
        self.measured[round(self.share.value, 4)] = tps
        self._redraw()
        return tps

    def _on_measure(self, button=None) -> None:
        with self.showing_errors():
            self.measure_button.disabled = True
            try:
                self.measure()
            finally:
                self._sync_controls()

    def widget(self) -> widgets.Widget:
        controls = controls_row([self.profile, self.model, self.share, self.measure_button])
        return panel([controls, self.summary, self.figure, self.table, self.errors])
