"""The ablation lab (notebook 07): a grid chosen with widgets, run as a sweep on a local Dask
cluster (:func:`pi2lab.lab.sweep.run_sweep`), its tidy table streaming in, and views of it
(:mod:`pi2lab.viz.ablation_figures`): a heatmap over two knobs, parallel coordinates, speed
against memory with the Pareto front, and a chosen configuration's Gantt timeline.

The views show one source at a time (measured on this machine or simulated at phone scale),
each title saying which, so the two are never mixed unlabelled.
"""

from __future__ import annotations

import tempfile
import weakref
from pathlib import Path

import ipywidgets as widgets
import pandas as pd
import plotly.graph_objects as go

from pi2lab.bench import offload
from pi2lab.engine.offload import ENGINES
from pi2lab.errors import ConfigError
from pi2lab.lab.grid import KNOBS, SETTINGS, SOURCE, Grid
from pi2lab.lab.sweep import local_cluster, run_sweep
from pi2lab.plan.phones import BUILTIN_PROFILES
from pi2lab.plan.shapes import SHAPES
from pi2lab.plan.simulator import SIM_ENGINES
from pi2lab.policies.registry import POLICY_KINDS
from pi2lab.storage.layout import BITS
from pi2lab.viz import ablation_figures as af
from pi2lab.viz.apps import ShowsErrors, figure_widget, panel, replace_figure
from pi2lab.viz.figures import style

OWN = "default"  # a multi-select's value for the engine's (or model's) own setting
CHOICES = {  # target -> knob -> options of its multi-select
    "sim": {"model": tuple(SHAPES), "engine": SIM_ENGINES},
    "engine": {"model": offload.MODELS, "engine": ENGINES},
}
PRESETS = {  # target -> what the controls show when it is chosen
    "sim": {"model": ("turbosparse-mistral-7b",), "engine": ("powerinfer2", "llmflash")},
    "engine": {"model": ("bundled",), "engine": ("powerinfer2",)},
}
TEXT_KNOBS = {  # knob -> default text (empty: the knob's own default)
    "budget": "0.3,0.5,0.7",
    "hot_fraction": "",
    "io_threads": "1",
    "depth": "",
    "prefetch": "",  # the engine's cross-layer prefetch (not simulated)
    "cluster_size": "",
}
HIDDEN = ("timeline", "commit", "config_hash", "tokens", "layers", "repetitions", "error")


def _message(text: str) -> go.Figure:
    """An empty figure whose title says why there is nothing to draw (no axes)."""
    fig = style(go.Figure(), height=260, title=text)
    return fig.update_xaxes(visible=False).update_yaxes(visible=False)


class AblationLab(ShowsErrors):
    """Grid controls, a run button, the table and four views.

    The grid: the target (``sim``: the simulator at phone scale; ``engine``: the offload
    engine measured here), multi-selects for device, model, engine, policy, overlap mode and
    precision, comma-separated lists for budget, hot fraction, I/O threads, depth, prefetch
    (the engine's; the simulator has none) and cluster size, and the repetitions and tokens
    per run. :meth:`run` (the button) submits the grid to
    a local cluster this app starts on first use and keeps (one per target: measured runs one
    per ``threads_per_run`` cores, simulated ones on every core), and redraws the table and
    the views as each configuration's rows arrive (``scheduler``: a running scheduler's
    address instead). The app owns a temporary folder holding the table for as long as it
    lives; running a grid again skips what the table holds.

    Attributes:
      table: The sweep's table (every run so far; empty before the first).
      path: Where the table is written (parquet, in the app's temporary folder).
    """

    def __init__(
        self,
        *,
        target: str = "sim",
        scheduler: str | None = None,
        workers: int | None = None,
        threads_per_run: int = 2,
    ):
        self.workers, self.threads_per_run, self._scheduler = workers, threads_per_run, scheduler
        self._tmp = tempfile.TemporaryDirectory(prefix="pi2lab-lab-")
        self.path = Path(self._tmp.name) / "ablations.parquet"
        self._clusters: dict = {}
        weakref.finalize(self, _close, self._clusters)
        self.table = pd.DataFrame()
        self._heat_pick: tuple = ()  # the heatmap's knobs as last chosen by hand
        self._grid_knobs: list[str] = []  # the knobs the last grid run varied
        self._syncing = False  # True while the app itself sets the view controls
        self.target = widgets.ToggleButtons(
            options=[("simulator (phone scale)", "sim"), ("engine (measured here)", "engine")],
            value=target,
        )
        self.device = widgets.SelectMultiple(
            options=list(BUILTIN_PROFILES), value=["oneplus12"], description="device", rows=2
        )
        self.model = widgets.SelectMultiple(description="model", rows=4)
        self.engine = widgets.SelectMultiple(description="engine", rows=3)
        self.policy = widgets.SelectMultiple(
            options=[OWN, *POLICY_KINDS], value=[OWN], description="policy", rows=4
        )
        self.mode = widgets.SelectMultiple(
            options=[OWN, "none", "matrix", "cluster"], value=[OWN], description="overlap", rows=4
        )
        self.precision = widgets.SelectMultiple(
            options=[OWN, *BITS], value=[OWN], description="precision", rows=4
        )
        self.texts = {
            k: widgets.Text(value=v, description=k.replace("_", " "), placeholder="default")
            for k, v in TEXT_KNOBS.items()
        }
        self.repetitions = widgets.BoundedIntText(value=2, min=1, max=20, description="reps")
        self.tokens = widgets.BoundedIntText(value=16, min=1, max=512, description="tokens")
        self.button = widgets.Button(description="Run", button_style="primary", icon="play")
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="0 / 0")
        self.rows_view = widgets.HTML()
        self.source = widgets.ToggleButtons(options=list(af.SOURCES), value=SOURCE[target])
        self.heat_x = widgets.Dropdown(description="heatmap x")
        self.heat_y = widgets.Dropdown(description="heatmap y")
        self.point = widgets.Dropdown(description="timeline of", layout={"width": "70%"})
        self.errors = widgets.Output()
        self.figure = figure_widget(_message("Run a grid: speed against memory appears here"))
        self.heat = figure_widget(_message("Run a grid that varies two knobs for a heatmap"))
        self.coords = figure_widget(_message("Parallel coordinates appear here"))
        self.timeline = figure_widget(_message("Choose a configuration for its timeline"))
        self._preset(target)
        self.target.observe(self._on_target, names="value")
        self.button.on_click(lambda _: self.run())
        self.source.observe(self._on_view, names="value")
        for w in (self.heat_x, self.heat_y):
            w.observe(self._on_heat, names="value")
        self.point.observe(self._on_point, names="value")

    # -- the grid ---------------------------------------------------------------------------
    def _preset(self, target: str) -> None:
        for knob, options in CHOICES[target].items():
            w = getattr(self, knob)
            w.options = list(options)
            w.value = list(PRESETS[target][knob])
        self.device.disabled = target != "sim"
        names = {k.name for k in KNOBS[target]}
        for knob, w in self.texts.items():
            w.disabled = knob not in names
        self.tokens.value = SETTINGS["tokens"][1][target]

    def _on_target(self, change) -> None:
        self._preset(change["new"])

    def grid(self) -> Grid:
        """The :class:`~pi2lab.lab.grid.Grid` the controls describe.

        Raises:
          ConfigError: a multi-select with nothing chosen, or a value a knob refuses.
        """
        target = self.target.value
        selects = {"model": self.model, "engine": self.engine, "policy": self.policy}
        selects |= {"mode": self.mode, "precision": self.precision}
        if target == "sim":
            selects["device"] = self.device
        knobs = {}
        for knob, w in selects.items():
            if not w.value:
                raise ConfigError(f"{knob}: choose at least one value")
            if OWN not in w.value:
                knobs[knob] = list(w.value)
            elif len(w.value) > 1:
                raise ConfigError(f"{knob}: {OWN!r} and other values chosen: choose either")
        knobs |= {k: w.value for k, w in self.texts.items() if w.value.strip() and not w.disabled}
        data = {
            "target": target,
            "repetitions": self.repetitions.value,
            "tokens": self.tokens.value,
            "knobs": knobs,
        }
        return Grid.from_dict(data, "the lab's controls")

    def scheduler(self, target: str) -> str:
        """The scheduler given, or this app's local cluster for ``target`` (started on first
        use)."""
        if self._scheduler is not None:
            return self._scheduler
        if target not in self._clusters:
            self._clusters[target] = local_cluster(target, self.workers, self.threads_per_run)
        return self._clusters[target].scheduler_address

    def run(self) -> pd.DataFrame:
        """Runs the controls' grid (what the table holds already is skipped); returns the
        table. A bad grid is reported in the widget (and :attr:`error`)."""
        with self.showing_errors():
            grid = self.grid()
            self._grid_knobs = [k for k, v in grid.knobs.items() if len(v) > 1]
            n = len(grid.configurations())
            self.progress.max, self.progress.value = n, 0
            self.progress.description = f"0 / {n}"
            self.source.value = SOURCE[grid.target]
            self.button.disabled = True
            try:
                self.table = run_sweep(
                    grid,
                    self.path,
                    scheduler=self.scheduler(grid.target),
                    progress=False,
                    on_rows=self._arrived,
                )
            finally:
                self.button.disabled = False
            self.progress.value = n
            self.progress.description = f"{n} / {n}"
            self._redraw()
        return self.table

    def _arrived(self, table: pd.DataFrame, rows: list[dict]) -> None:
        self.table = table
        self.progress.value += 1
        self.progress.description = f"{self.progress.value} / {self.progress.max}"
        self._redraw()

    # -- the views ---------------------------------------------------------------------------
    def rows(self) -> pd.DataFrame:
        """The current source's rows that did not fail."""
        return af.one_source(self.table, self.source.value) if len(self.table) else self.table

    def _redraw(self) -> None:
        shown = [c for c in self.table.columns if c not in HIDDEN and c[:8] != "version_"]
        failed = self.table[self.table["error"].notna()] if len(self.table) else self.table
        self.rows_view.value = self.table[shown].to_html(
            index=False, float_format=lambda x: f"{x:.4g}"
        ) + "".join(f"<p>failed: {e}</p>" for e in dict.fromkeys(failed.get("error", [])))
        rows = self.rows()
        knobs = af.varied(rows) if len(rows) else []
        # the knobs chosen by hand, else those the grid varied (not those a partial table
        # happens to vary while rows arrive), else any that vary
        pick = [
            k for k in dict.fromkeys([*self._heat_pick, *self._grid_knobs, *knobs]) if k in knobs
        ]
        configs = af.configurations(rows) if len(rows) else pd.DataFrame()
        options = [(r["label"], r["config_hash"]) for _, r in configs.iterrows()]
        chosen = self.point.value
        self._syncing = True
        try:
            self.heat_x.options, self.heat_y.options = knobs, knobs
            if len(pick) >= 2:
                self.heat_x.value, self.heat_y.value = pick[:2]
            self.point.options = options
            if options:
                self.point.value = chosen if chosen in dict(options).values() else options[0][1]
        finally:
            self._syncing = False
        self._draw_views()

    def _draw_views(self) -> None:
        rows = self.rows()
        source = self.source.value
        if not len(rows):
            replace_figure(self.figure, _message(f"No {source} rows yet"))
            return
        replace_figure(self.figure, af.speed_memory(rows))
        replace_figure(self.coords, af.parallel(rows))
        self._draw_heat()
        self._draw_point()

    def _draw_heat(self) -> None:
        rows, x, y = self.rows(), self.heat_x.value, self.heat_y.value
        if len(rows) and x and y and x != y:
            replace_figure(self.heat, af.heatmap(rows, x, y))
        else:
            replace_figure(self.heat, _message("Vary two knobs (and choose them) for a heatmap"))

    def _draw_point(self) -> None:
        if self.point.value is not None and len(self.rows()):
            replace_figure(self.timeline, af.gantt(self.rows(), self.point.value))

    def _on_view(self, change) -> None:
        with self.showing_errors():
            self._redraw()

    def _on_heat(self, change) -> None:
        if self._syncing:
            return
        self._heat_pick = (self.heat_x.value, self.heat_y.value)
        with self.showing_errors():
            self._draw_heat()

    def _on_point(self, change) -> None:
        if self._syncing:
            return
        with self.showing_errors():
            self._draw_point()

    def widget(self) -> widgets.Widget:
        texts = list(self.texts.values())
        return panel(
            [
                self.target,
                widgets.HBox([self.device, self.model, self.engine]),
                widgets.HBox([self.policy, self.mode, self.precision]),
                widgets.HBox(texts[:3]),
                widgets.HBox(texts[3:]),
                widgets.HBox([self.repetitions, self.tokens]),
                widgets.HBox([self.button, self.progress]),
                self.errors,
                widgets.Accordion([self.rows_view], titles=("table",)),
                self.source,
                self.figure,
                widgets.HBox([self.heat_x, self.heat_y]),
                self.heat,
                self.coords,
                self.point,
                self.timeline,
            ]
        )


def _close(clusters: dict) -> None:
    """Finalizer: closes the app's local clusters."""
    for cluster in clusters.values():
        cluster.close()


__all__ = ["AblationLab"]
