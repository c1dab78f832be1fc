"""Widget apps for the neuron-cache and pipeline notebooks (03, 04), and the short measured
decodes the pipeline app runs on the real offload engine. Each app owns its controls, one
``go.FigureWidget`` and an ``Output`` for errors, as in :mod:`pi2lab.viz.apps`.
"""

from __future__ import annotations

import dataclasses
import tempfile
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path

import ipywidgets as widgets
import jax
import numpy as np
import plotly.graph_objects as go

from pi2lab.convert import convert_pretrained
from pi2lab.engine.offload import ENGINES, OffloadConfig, OffloadEngine
from pi2lab.engine.sampling import SamplingKnobs
from pi2lab.model.pretrained import resolve
from pi2lab.pipeline.scheduler import PipelineConfig
from pi2lab.storage.layout import FlashLayout, open_layout
from pi2lab.viz.apps import (
    ShowsErrors,
    controls_row,
    figure_widget,
    panel,
    replace_figure,
    share_slider,
)
from pi2lab.viz.cache_replay import (
    POLICIES,
    REPLAYED,
    belady_replay,
    layer_unit_masks,
    policy_factory,
    policy_label,
    replay,
)
from pi2lab.viz.offload_figures import cache_by_layer, timeline_gantt

# -- cache app --------------------------------------------------------------------------------


class CacheExplorer(ShowsErrors):
    """Budget, policy, segmentation and hot-fraction controls over a trace replay, and the
    cluster size when built with :meth:`from_trace`.

    ``masks`` are per-layer ``[T, U]`` unit masks of a recorded trace; every change replays
    them through the real policy code (:func:`pi2lab.cache.simulate`) and redraws hit rate and
    units read per layer, with Belady's optimum at the same budget as markers.

    Attributes:
      masks: The unit masks of the current cluster size.
    """

    def __init__(
        self,
        masks: Sequence[np.ndarray],
        *,
        warmup: int = 0,
        budget: float = 0.25,
        masks_for: Callable[[int], Sequence[np.ndarray]] | None = None,
        sizes: Sequence[int] = (),
        cluster_size: int | None = None,
    ):
        self.masks, self.warmup = list(masks), warmup
        self._masks_for = masks_for
        self._masks = {cluster_size: self.masks}
        self._bound: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self.budget = share_slider(budget, "budget", 0.05, 0.95)
        self.policy = widgets.Dropdown(
            options=[(policy_label(n), n) for n in POLICIES],
            value="segmented",
            description="policy",
        )
        self.segmented = widgets.Checkbox(value=True, description="segmentation (off: LRU)")
        self.hot_fraction = share_slider(0.5, "hot fraction", step=0.1)
        self.cluster = widgets.Dropdown(
            options=list(sizes) or [cluster_size],
            value=cluster_size,
            description="cluster size",
            disabled=masks_for is None,
        )
        rate, reads, b_rate, b_reads = self._data()
        self.figure = figure_widget(
            cache_by_layer(rate, reads, bound_hit_rate=b_rate, bound_reads=b_reads)
        )
        self.errors = widgets.Output()
        for w in (self.budget, self.policy, self.segmented, self.hot_fraction, self.cluster):
            w.observe(self._update, names="value")
        self._sync_controls()

    @classmethod
    def from_trace(
        cls,
        trace,
        plan,
        tokens: int,
        *,
        sizes: Sequence[int],
        cluster_size: int,
        warmup: int = 0,
        budget: float = 0.25,
    ) -> CacheExplorer:
        """An explorer over the first ``tokens`` tokens of an activation trace, with a cluster
        size control over ``sizes`` (masks built on first use, by
        :func:`~pi2lab.viz.cache_replay.layer_unit_masks`)."""

        def masks_for(c: int):
            return layer_unit_masks(trace, plan, c, tokens)

        return cls(
            masks_for(cluster_size),
            warmup=warmup,
            budget=budget,
            masks_for=masks_for,
            sizes=sizes,
            cluster_size=cluster_size,
        )

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """Hit rate ``[L]`` and units read per token ``[L]`` for the current controls."""
        factory = policy_factory(
            self.policy.value,
            hot_fraction=self.hot_fraction.value,
            segmented=self.segmented.value,
        )
        return replay(self.masks, factory, self.budget.value, self.warmup)

    def bound(self) -> tuple[np.ndarray, np.ndarray]:
        """Belady's hit rate and reads ``[L]`` at the current budget and cluster size (cached)."""
        b = round(self.budget.value, 4)
        key = (self.cluster.value, b)
        if key not in self._bound:
            self._bound[key] = belady_replay(self.masks, b, self.warmup)
        return self._bound[key]

    def label(self) -> str:
        if self.policy.value == "segmented":
            if not self.segmented.value:
                return "LRU (segmentation off)"
            return policy_label(f"segmented-{self.hot_fraction.value:g}")
        return policy_label(self.policy.value)

    def _data(self):
        (rate, reads), (b_rate, b_reads) = self.result(), self.bound()
        name = self.label()
        return {name: rate}, {name: reads}, b_rate, b_reads

    def _title(self) -> str:
        c = "" if self.cluster.value is None else f", {self.cluster.value}-neuron units"
        return f"{self.label()} at a {self.budget.value:.0%} budget{c}<br>" + (
            f"<span style='font-size:12px'>{REPLAYED}</span>"
        )

    def _sync_controls(self) -> None:
        seg = self.policy.value == "segmented"
        self.segmented.disabled = not seg
        self.hot_fraction.disabled = not (seg and self.segmented.value)
        self.figure.layout.title = self._title()

    def _update(self, change=None) -> None:
        with self.showing_errors(), self.figure.batch_update():
            if self._masks_for is not None and self.cluster.value not in self._masks:
                self._masks[self.cluster.value] = list(self._masks_for(self.cluster.value))
            self.masks = self._masks[self.cluster.value]
            rate, reads, b_rate, b_reads = self._data()
            bars, bounds = self.figure.data[0::2], self.figure.data[1::2]
            for bar, vals in zip(bars, (rate, reads), strict=True):
                bar.name, bar.y = next(iter(vals)), next(iter(vals.values()))
            for marker, vals in zip(bounds, (b_rate, b_reads), strict=True):
                marker.y = vals
            self._sync_controls()

    def widget(self) -> widgets.Widget:
        controls = controls_row(
            [
                widgets.VBox([self.budget, self.policy]),
                widgets.VBox([self.segmented, self.hot_fraction]),
            ]
            + ([widgets.VBox([self.cluster])] if self._masks_for is not None else [])
        )
        return panel([controls, self.figure, self.errors])


@dataclasses.dataclass(frozen=True, kw_only=True)
class DecodeRun:
    """A short measured decode on the offload engine.

    Attributes:
      rows: Timeline rows of the last token.
      steps: :class:`~pi2lab.engine.offload.StepStats` of every decode token.
      direct: Whether reads bypassed the page cache (O_DIRECT).
    """

    rows: list[dict]
    steps: list
    direct: bool

    @property
    def tokens_per_s(self) -> float:
        """1 / median token time, skipping the first token (it compiles) when there are more."""
        secs = [s.seconds for s in self.steps[1:] or self.steps]
        return 1.0 / float(np.median(secs))

    @property
    def io_share(self) -> float:
        """Median share of a token's wall time the compute thread waited on reads."""
        return float(np.median([s.io_share for s in self.steps[1:] or self.steps]))


def decode_run(flash_dir, config, prompt_ids, steps: int, seed: int = 0) -> DecodeRun:
    """Prefills ``prompt_ids`` and decodes ``steps`` greedy tokens on an
    :class:`~pi2lab.engine.offload.OffloadEngine`."""
    with OffloadEngine(flash_dir, config) as eng:
        knobs, key = SamplingKnobs.make(), jax.random.key(seed)
        tok, pos, stats = eng.prefill(prompt_ids, key, knobs), len(prompt_ids), []
        for _ in range(steps):
            tok, _ = eng.step(tok, pos, key, knobs)
            pos += 1
            stats.append(eng.last)
        return DecodeRun(rows=eng.timeline.rows(), steps=stats, direct=eng.io.direct)


class FlashLayouts:
    """The bundled model's flash layout per cluster size, converted on first use into
    ``root/c4/<model name>`` (4 neurons per unit), so that an opened layout's folder is named
    after its model.

    With no ``root`` the layouts go into a temporary folder that this object owns: it is
    removed when the object is garbage-collected (or the interpreter exits), so an app that
    holds the object, or a layout from :meth:`open`, can read the layouts for as long as it
    lives; nothing needs a cleanup call.

    Attributes:
      root: The folder the layouts are converted into.
      model: What :func:`~pi2lab.convert.convert_pretrained` converts (``"builtin"``, a name
        or a path).
      name: The model's name (its folder's name), the layouts' folder name.
    """

    def __init__(self, root=None, model: str = "builtin"):
        self._tmp = None if root is not None else tempfile.TemporaryDirectory(prefix="pi2lab-")
        self.root = Path(root if root is not None else self._tmp.name)
        self.model, self.name = model, resolve(model).name
        self._paths: dict[int, Path] = {}

    def __call__(self, cluster_size: int) -> Path:
        """The layout folder for ``cluster_size`` neurons per unit (converted if new)."""
        if cluster_size not in self._paths:
            out = self.root / f"c{cluster_size}" / self.name
            self._paths[cluster_size] = convert_pretrained(
                self.model, out, cluster_size=cluster_size
            )
        return self._paths[cluster_size]

    def open(self, cluster_size: int) -> FlashLayout:
        """The opened layout for ``cluster_size``; while it is referenced, so is this object,
        so a temporary folder outlives every layout opened from it."""
        layout = open_layout(self(cluster_size))
        weakref.finalize(layout, _release, self)
        return layout


def _release(owner) -> None:
    """Finalizer of a layout from :meth:`FlashLayouts.open`: holds ``owner`` until then."""


def valid_cluster_sizes(plan, candidates=(1, 2, 4, 8, 16, 32, 64)) -> list[int]:
    """Unit sizes the engine accepts for ``plan``: every hot block and cluster a multiple."""
    return [
        c
        for c in candidates
        if all(lp.hot % c == 0 and lp.cluster_size % c == 0 for lp in plan.layers)
    ]


# -- pipeline app -----------------------------------------------------------------------------


ENGINE_DEFAULT = "default"  # the policy control's value for the engine's own policy


class PipelineExplorer(ShowsErrors):
    """Engine, cache and pipeline controls over a measured decode: each change runs a few
    tokens on the offload engine and redraws the last token's Gantt timeline, with tokens/s
    and the I/O share of the critical path (both measured here, medians over the tokens
    after the first).

    The controls: cluster size, engine, memory budget (share of the FFN bytes cached), cache
    policy and hot fraction (segmented policy), I/O threads, pipeline depth, overlap mode,
    gate-first loading. The app holds ``layouts``, so a temporary layout folder lives as long
    as the app does.

    Attributes:
      run: The latest :class:`DecodeRun` (the last that succeeded).
    """

    def __init__(self, layouts: FlashLayouts, prompt_ids, *, steps: int, sizes: Sequence[int]):
        self.layouts, self.prompt_ids, self.steps = layouts, list(prompt_ids), steps
        self.cluster = widgets.Dropdown(options=list(sizes), value=4, description="cluster size")
        self.depth = widgets.SelectionSlider(
            options=[1, 2, 4, 8, 16, 32, 64], value=32, description="depth", continuous_update=False
        )
        self.io_threads = widgets.IntSlider(
            value=1, min=1, max=4, description="I/O threads", continuous_update=False
        )
        self.mode = widgets.ToggleButtons(options=["none", "matrix", "cluster"], value="cluster")
        self.gate_first = widgets.Checkbox(value=False, description="gate-first (C=1)")
        self.engine = widgets.Dropdown(
            options=list(ENGINES), value="powerinfer2", description="engine"
        )
        self.budget = share_slider(0.5, "FFN cached", 0.1)
        self.policy = widgets.Dropdown(
            options=[("engine's default", ENGINE_DEFAULT)]
            + [(policy_label(n), n) for n in POLICIES],
            value=ENGINE_DEFAULT,
            description="policy",
        )
        self.hot_fraction = share_slider(0.5, "hot fraction", step=0.1)
        self.summary = widgets.HTML()
        self.errors = widgets.Output()
        self.run = self._decode()
        self.figure = figure_widget(self._gantt())
        self._summarise()
        for w in self.controls:
            w.observe(self._update, names="value")

    @property
    def controls(self) -> tuple[widgets.Widget, ...]:
        return (
            self.cluster,
            self.depth,
            self.io_threads,
            self.mode,
            self.gate_first,
            self.engine,
            self.budget,
            self.policy,
            self.hot_fraction,
        )

    def config(self):
        """The :class:`~pi2lab.engine.offload.OffloadConfig` the controls describe."""
        pipe = PipelineConfig(
            mode=self.mode.value,
            depth=self.depth.value,
            io_threads=self.io_threads.value,
            gate_first=self.gate_first.value,
        )
        policy = None if self.policy.value == ENGINE_DEFAULT else self.policy.value
        return OffloadConfig(
            engine=self.engine.value,
            memory_budget=self.budget.value,
            pipeline=pipe,
            policy=policy,
            hot_fraction=self.hot_fraction.value,
        )

    def _decode(self) -> DecodeRun:
        flash = self.layouts(self.cluster.value)
        return decode_run(flash, self.config(), self.prompt_ids, self.steps)

    def _title(self) -> str:
        return f"Measured: last of {self.steps} tokens, {self.engine.value}, C={self.cluster.value}"

    def _subtitle(self) -> str:
        reads = "O_DIRECT" if self.run.direct else "page cache"
        policy = self.policy.value if self.policy.value != ENGINE_DEFAULT else "engine's policy"
        if policy == "segmented":
            policy += f" (hot {self.hot_fraction.value:.0%})"
        return (
            f"{self.budget.value:.0%} of the FFN cached, {policy}; {self.mode.value} overlap, "
            f"depth {self.depth.value}, {self.io_threads.value} I/O thread(s)"
            + (", gate-first" if self.gate_first.value else "")
            + f"; reads via {reads}"
        )

    def _gantt(self) -> go.Figure:
        return timeline_gantt(self.run.rows, title=self._title(), subtitle=self._subtitle())

    def _summarise(self) -> None:
        self.summary.value = (
            f"<b>measured</b>: {self.run.tokens_per_s:.1f} tokens/s, I/O share of the critical "
            f"path {self.run.io_share:.0%} (medians over tokens 2..{self.steps})"
        )

    def _update(self, change=None) -> None:
        self.hot_fraction.disabled = self.policy.value != "segmented"
        with self.showing_errors():
            self.run = self._decode()
            replace_figure(self.figure, self._gantt())
            self._summarise()

    def widget(self) -> widgets.Widget:
        self.hot_fraction.disabled = self.policy.value != "segmented"
        return panel(
            [
                controls_row([self.cluster, self.engine, self.io_threads]),
                controls_row([self.budget, self.policy, self.hot_fraction]),
                controls_row([self.depth, self.mode, self.gate_first]),
                self.summary,
                self.figure,
                self.errors,
            ]
        )
