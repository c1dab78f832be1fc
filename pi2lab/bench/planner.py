"""``pi2lab bench planner``: the cost model, the simulator and the planner against the real
offload engine here.

Per model (the bundled one with its predictors; the synthetic 7B-shaped one with replayed Zipf
masks, see :mod:`pi2lab.bench.offload`): record the engine's requests with everything
resident (which also times the all-resident token, the one measurement the per-layer host
overhead is fitted to), build hit-rate curves, then for a grid of hand-made plans (FFN budget
x overlap mode x I/O threads, capacities split evenly) compare the cost model's prediction and
the simulator's figure (driven by the same request trace, with the same fitted overhead) with
the measured tokens/s; finally the planner's plan at the middle budget is measured beside the
grid's best.
"""

from __future__ import annotations

import dataclasses
import itertools
import typing

import jax
import jax.numpy as jnp
import numpy as np

from pi2lab.bench.common import machine
from pi2lab.bench.grid import Knob, choice, count, expand, share
from pi2lab.bench.offload import replay_masks, synthetic_model, units_from_clusters
from pi2lab.convert import convert_pretrained
from pi2lab.engine.offload import OffloadConfig, OffloadEngine
from pi2lab.engine.sampling import SamplingKnobs
from pi2lab.fileio import bench_dir
from pi2lab.pipeline.scheduler import OverlapMode, PipelineConfig
from pi2lab.plan.cost import PlanChoice, calibrate, calibrate_reads, token_seconds
from pi2lab.plan.measure import measure as measure_hw
from pi2lab.plan.phones import resolve_profile
from pi2lab.plan.planner import ExecutionPlan, plan
from pi2lab.plan.shapes import ModelShape
from pi2lab.plan.simulator import simulate_decode
from pi2lab.plan.stats import default_prompts, layout_stats, record_requests
from pi2lab.policies import StaticHot
from pi2lab.storage.layout import open_layout

GRID_BUDGETS = (0.3, 0.5, 0.7)
GRID_PIPES = (
    PipelineConfig(mode="cluster", io_threads=1),
    PipelineConfig(mode="cluster", io_threads=2),
    PipelineConfig(mode="matrix", io_threads=1),
)
FIT = (0.5, GRID_PIPES[0])  # the hand-made plan the read overhead is fitted on
KNOBS = (  # replace the grid's axes (budgets x overlap mode x I/O threads)
    Knob(name="budget", read=share(), default=GRID_BUDGETS, help="neuron cache, share of FFN"),
    Knob(
        name="mode",
        read=choice(*typing.get_args(OverlapMode)),
        default=("cluster",),
        help="overlap of reads and compute",
    ),
    Knob(name="io_threads", read=count(), default=(1,), help="reader threads"),
)


def measure(layout, config: OffloadConfig, tokens: int, *, prompts=None, masks=None) -> float:
    """Median seconds per decode token of ``config`` (after one warm-up prompt or block):
    greedy after each prompt, or with replayed cold-cluster masks ``[T, L, NC]``."""
    knobs, key = SamplingKnobs.make(), jax.random.key(0)
    seconds = []
    replay = None if masks is None else [{"clusters": jnp.asarray(m)} for m in masks[0]]
    with OffloadEngine(
        layout, dataclasses.replace(config, kv_capacity=512), predictors=replay
    ) as eng:
        for j, prompt in enumerate(prompts or [np.arange(1, 5, dtype=np.int32)] * 2):
            tok, pos = eng.prefill(prompt, key, knobs), len(prompt)
            for t in range(tokens):
                if masks is not None:
                    eng.predictors = [
                        {"clusters": jnp.asarray(m)} for m in masks[(j * tokens + t) % len(masks)]
                    ]
                tok, _ = eng.step(tok, pos, key, knobs)
                pos += 1
                if j:  # the first prompt warms the caches
                    seconds.append(eng.last.seconds)
    return float(np.median(seconds))


def _hand_plan(stats, layout, profile, budget: float, pipe: PipelineConfig) -> ExecutionPlan:
    """The segmented cache at ``budget`` split evenly over the layers, with ``pipe``."""
    units = int(budget * layout.units)
    caps = tuple([units] * len(stats.layers))
    plan_choice = PlanChoice(policy="segmented-0.5", pipeline=pipe)
    terms = token_seconds(stats, caps, plan_choice, profile)
    return ExecutionPlan(
        choice=plan_choice,
        layer_units=caps,
        memory_bytes=stats.fixed_bytes + stats.staging_bytes + sum(caps) * layout.stride,
        predicted_tokens_per_s=1.0 / terms["total"],
        terms=terms,
    )


def grid_pipes(grid: dict) -> tuple[tuple[float, ...], tuple[PipelineConfig, ...]]:
    """Budgets and pipelines of a ``grid`` of :data:`KNOBS` (every mode x I/O threads; the
    knobs it leaves out at their defaults)."""
    points = expand(grid, KNOBS)
    pipes = dict.fromkeys(
        PipelineConfig(mode=p["mode"], io_threads=p["io_threads"]) for p in points
    )
    return tuple(dict.fromkeys(p["budget"] for p in points)), tuple(pipes)


def validate(
    layout,
    profile,
    tokens: int,
    *,
    prompts=None,
    masks=None,
    unit_masks=None,
    budgets=GRID_BUDGETS,
    pipes=GRID_PIPES,
) -> dict:
    """Predicted against measured tokens/s for the hand-made plans ``budgets x pipes`` and the
    planner's plan (host costs fitted on the all-resident run and on :data:`FIT`)."""
    if unit_masks is None:
        unit_masks, resident_s = record_requests(layout, prompts, tokens)
    else:
        resident = OffloadConfig(memory_budget=1.0, policy=StaticHot())
        resident_s = measure(layout, resident, tokens, prompts=prompts, masks=masks)
    stats = layout_stats(layout, unit_masks)
    stats = calibrate(stats, profile, resident_s, PlanChoice())
    fit = _hand_plan(stats, layout, profile, *FIT)
    fit_s = measure(layout, fit.offload_config(), tokens, prompts=prompts, masks=masks)
    stats = calibrate_reads(stats, profile, fit_s, fit.choice, fit.layer_units)
    shape = ModelShape.from_config(
        layout.config,
        name=layout.path.name,
        dtype=layout.dtype,
        cluster_size=layout.cluster_size,
        predictor_rank=0 if masks is not None else 256,
    )

    def simulated_s(fraction, pipeline, overhead=0.0, per_read=0.0, policy=None):
        sim = simulate_decode(
            shape,
            profile,
            ffn_fraction=fraction,
            trace=unit_masks,
            tokens=len(unit_masks[0]),
            pipeline=pipeline,
            policy=policy,
            overhead_s=overhead,
            read_overhead_s=per_read,
        )
        return 1.0 / sim.tokens_per_s

    # the simulator fits the same two constants on the same two runs, on its own clock
    sim_overhead = _bisect(
        lambda o: simulated_s(1.0, fit.choice.pipeline, o, policy=StaticHot()), resident_s
    )
    sim_read = _bisect(
        lambda r: simulated_s(0.5, fit.choice.pipeline, sim_overhead, r), fit_s, hi=0.01
    )
    rows = []
    for budget, pipe in itertools.product(budgets, pipes):  # both constants fitted
        p = _hand_plan(stats, layout, profile, budget, pipe)
        measured = 1.0 / measure(layout, p.offload_config(), tokens, prompts=prompts, masks=masks)
        sim = 1.0 / simulated_s(budget, pipe, sim_overhead, sim_read)
        row = _row(_plan_name(budget, pipe), p, measured)
        row |= {"budget": budget, "mode": pipe.mode, "io_threads": pipe.io_threads}
        row["simulated_tokens_per_s"] = round(sim, 3)
        row["simulated_error"] = round(sim / measured - 1.0, 3)
        rows.append(row)
    budget = stats.fixed_bytes + stats.staging_bytes + int(0.5 * layout.ffn_bytes)
    chosen = plan(stats, profile, budget)
    measured = 1.0 / measure(layout, chosen.offload_config(), tokens, prompts=prompts, masks=masks)
    planned = _row("planner @ 50%", chosen, measured)
    fit_name = _plan_name(*FIT)
    errors = [abs(r["error"]) for r in rows if r["plan"] != fit_name]  # not the fit
    best50 = max(
        [r["measured_tokens_per_s"] for r in rows if r["budget"] == 0.5], default=1.0 / fit_s
    )
    return {
        "resident_tokens_per_s": round(1.0 / resident_s, 3),
        "overhead_ms_per_layer": round(stats.overhead_s * 1e3, 3),
        "read_overhead_ms": round(stats.read_overhead_s * 1e3, 4),
        "fitted_on": ["all resident", fit_name],
        "simulator_overhead_ms_per_layer": round(sim_overhead * 1e3, 3),
        "simulator_read_overhead_ms": round(sim_read * 1e3, 4),
        "plans": rows,
        "median_abs_error": _median(errors),
        "simulated_median_abs_error": _median(
            [abs(r["simulated_error"]) for r in rows if r["plan"] != fit_name]
        ),
        "planner": planned | {"plan_json": chosen.to_json()},
        "planner_vs_best_grid_at_50%": round(planned["measured_tokens_per_s"] / best50, 3),
    }


def _plan_name(budget: float, pipe: PipelineConfig) -> str:
    return f"{budget:.0%} {pipe.mode} io{pipe.io_threads}"


def _median(values: list[float]) -> float | None:
    """The rounded median; None for a grid whose only plan is the fitted one."""
    return round(float(np.median(values)), 3) if values else None


def _bisect(seconds_of, target_s: float, hi: float = 0.05) -> float:
    """The parameter in [0, hi] for which the increasing ``seconds_of`` hits ``target_s``
    (0 when it is already slower)."""
    lo = 0.0
    if seconds_of(0.0) >= target_s:
        return 0.0
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if seconds_of(mid) < target_s else (lo, mid)
    return lo


def _row(name: str, p: ExecutionPlan, measured: float) -> dict:
    return {
        "plan": name,
        "predicted_tokens_per_s": round(p.predicted_tokens_per_s, 3),
        "measured_tokens_per_s": round(measured, 3),
        "error": round(p.predicted_tokens_per_s / measured - 1.0, 3),
    }


def bench_planner(
    quick: bool = False,
    steps: int | None = None,
    layers: int | None = None,
    profile=None,
    grid: dict | None = None,
) -> dict:
    """The bundled model (and, unless ``quick`` without ``layers``, the synthetic 7B-shaped
    one); ``grid`` (:data:`KNOBS` -> values) replaces the hand-made plans' budgets, overlap
    modes and I/O threads (each row carries its three as columns)."""
    tokens = steps or (6 if quick else 16)
    hw = resolve_profile(profile) if profile else measure_hw(quick=quick)
    result = {"bench": "planner", "machine": machine(), "profile": hw.to_json()}
    axes = {}
    if grid is not None:
        result["grid"] = {k: list(v) for k, v in grid.items()}
        axes = dict(zip(("budgets", "pipes"), grid_pipes(grid), strict=True))
    bench_dir().mkdir(parents=True, exist_ok=True)
    layout = open_layout(convert_pretrained("builtin", bench_dir() / "pydoc-drelu-flash"))
    result["bundled"] = validate(layout, hw, tokens, prompts=default_prompts(layout), **axes)
    if not quick or layers:
        n = layers or 4
        syn, frequency, splan = synthetic_model(n)
        masks = replay_masks(np.random.default_rng(3), frequency, splan, 4 * tokens)
        unit_masks = [units_from_clusters(splan, masks[:, i], 1) for i in range(n)]
        result["synthetic_7b"] = validate(
            syn, hw, tokens, masks=masks, unit_masks=unit_masks, **axes
        )
    return result
