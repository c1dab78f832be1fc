"""The planner: the fastest execution plan within a memory budget, by mixed-integer programming.

For each discrete choice (overlap mode, I/O threads, gate-first, cache policy) the per-layer
cache capacities are solved as a MILP with HiGHS (``scipy.optimize.milp``)::

  minimise   sum_l tau_l
  subject to tau_l >= C_l + tail_l                          (compute-bound)
             tau_l >= alpha_lk + beta_lk * c_l   for every k (I/O-bound: the misses' read time,
                                                 a convex piecewise-linear function of c_l)
             sum_l c_l * b <= budget - fixed - staging       (memory)
             c_l integer in [0, U_l]
             sum_l tau_l + rest <= 1 / min_speed             (optional)

(the max() terms of :mod:`pi2lab.plan.cost` as epigraph constraints), and the best choice
wins. The result is an :class:`ExecutionPlan` the offload engine runs directly
(:meth:`ExecutionPlan.offload_config`).
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from pi2lab.budget import MemoryBudget
from pi2lab.engine.offload import OffloadConfig
from pi2lab.errors import BudgetError, ConfigError
from pi2lab.pipeline.scheduler import PipelineConfig
from pi2lab.plan.cost import ModelStats, PlanChoice, envelope, layer_seconds, token_seconds
from pi2lab.plan.hardware import HardwareProfile


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExecutionPlan:
    """A plan and what the cost model predicts for it.

    Attributes:
      choice: Engine, cache policy and pipeline settings.
      layer_units: Cache capacity of each FFN, in units.
      memory_bytes: The budget the plan was made for (the engine holds at most this: fixed +
        staging + the cache of ``layer_units``).
      predicted_tokens_per_s: The cost model's decode speed.
      terms: Predicted seconds per token by term.
    """

    choice: PlanChoice
    layer_units: tuple[int, ...]
    memory_bytes: int
    predicted_tokens_per_s: float
    terms: dict

    def offload_config(self, **overrides) -> OffloadConfig:
        """The :class:`OffloadConfig` that runs this plan."""
        return OffloadConfig(
            engine=self.choice.engine,
            memory_budget=MemoryBudget.bytes(self.memory_bytes),
            layer_units=self.layer_units,
            policy=self.choice.policy,
            pipeline=self.choice.pipeline,
            **overrides,
        )

    def to_json(self) -> dict:
        return {
            "engine": self.choice.engine,
            "policy": self.choice.policy,
            "pipeline": dataclasses.asdict(self.choice.pipeline),
            "layer_units": list(self.layer_units),
            "memory_bytes": self.memory_bytes,
            "predicted_tokens_per_s": round(self.predicted_tokens_per_s, 3),
            "predicted_ms": {k: round(v * 1e3, 2) for k, v in self.terms.items()},
        }


def choices(
    stats: ModelStats, *, cpu_threads: int | None = None, gate_first: bool = False
) -> list[PlanChoice]:
    """The discrete plans to try: every policy curve x overlap mode x I/O threads (1 up to
    ``cpu_threads``: reader threads mostly wait on the device) x gate-first (when allowed)."""
    threads = range(1, max(cpu_threads or 2, 1) + 1)
    out = []
    for policy, mode, k, gf in itertools.product(
        stats.policies,
        ("cluster", "matrix", "none"),
        threads,
        (False, True) if gate_first else (False,),
    ):
        pipe = PipelineConfig(mode=mode, io_threads=k, gate_first=gf)
        out.append(PlanChoice(engine="powerinfer2", policy=policy, pipeline=pipe))
    return out


def _solve(stats: ModelStats, choice: PlanChoice, profile, cache_bytes: int, max_seconds):
    """MILP for the capacities of one choice; returns capacities or None if infeasible."""
    layers = stats.layers
    n = len(layers)
    rows, lo, hi = [], [], []
    rest = token_seconds(stats, [0] * n, choice, profile)
    rest = rest["total"] - rest["ffn"]
    for i, layer in enumerate(layers):
        caps = np.array(layer.capacities, float)
        caps, _ = envelope(caps, [layer.hit(choice.policy, c) for c in caps])
        secs = [layer_seconds(layer, c, choice, profile, stats.read_overhead_s) for c in caps]
        # tau_l >= each segment of the FFN time as c_l grows (convex and decreasing: the hit
        # curve is concave, and max() of convex terms stays convex)
        ffn = np.array([s["ffn"] for s in secs])
        for k in range(len(caps) - 1):
            slope = (ffn[k + 1] - ffn[k]) / max(caps[k + 1] - caps[k], 1e-9)
            row = np.zeros(2 * n)
            row[n + i], row[i] = 1, -slope
            rows.append(row), lo.append(ffn[k] - slope * caps[k]), hi.append(np.inf)
    row = np.zeros(2 * n)
    row[:n] = [layer.unit_bytes for layer in layers]
    rows.append(row), lo.append(-np.inf), hi.append(cache_bytes)
    if max_seconds is not None:
        row = np.zeros(2 * n)
        row[n:] = 1
        rows.append(row), lo.append(-np.inf), hi.append(max_seconds - rest)
    cost = np.concatenate([np.zeros(n), np.ones(n)])
    integrality = np.concatenate([np.ones(n), np.zeros(n)])
    bounds = Bounds(
        np.zeros(2 * n), np.concatenate([[layer.units for layer in layers], np.full(n, np.inf)])
    )
    res = milp(
        cost,
        constraints=LinearConstraint(np.array(rows), lo, hi),
        integrality=integrality,
        bounds=bounds,
    )
    if not res.success:
        return None
    return [int(c) for c in np.rint(res.x[:n])]


def plan(
    stats: ModelStats,
    profile: HardwareProfile,
    budget: MemoryBudget | int,
    *,
    cpu_threads: int | None = None,
    min_tokens_per_s: float | None = None,
    gate_first: bool = False,
) -> ExecutionPlan:
    """The fastest plan within ``budget`` (a :class:`~pi2lab.budget.MemoryBudget`: bytes, or a
    share of the FFN bytes on top of the resident minimum; an int is bytes, a float a share)
    and the CPU-thread limit.

    Raises:
      ConfigError: ``cpu_threads`` below 1, or ``min_tokens_per_s`` not above 0.
      BudgetError: the budget is below the resident minimum (fixed + staging), or no plan
        reaches ``min_tokens_per_s`` within it (the message names the binding constraint).
    """
    if cpu_threads is not None and cpu_threads < 1:
        raise ConfigError(f"cpu_threads={cpu_threads}: expected at least 1")
    if min_tokens_per_s is not None and not min_tokens_per_s > 0:
        raise ConfigError(f"min_tokens_per_s={min_tokens_per_s}: expected a speed > 0")
    budget = MemoryBudget.bytes(budget) if isinstance(budget, int) else MemoryBudget.of(budget)
    minimum = stats.fixed_bytes + stats.staging_bytes
    memory_bytes = budget.total(minimum, stats.ffn_bytes)
    budget.check(
        minimum,
        {"resident tensors and KV cache": stats.fixed_bytes, "staging": stats.staging_bytes},
    )
    cache_bytes = memory_bytes - minimum
    max_s = None if min_tokens_per_s is None else 1.0 / min_tokens_per_s
    best = None
    cpu = cpu_threads or profile.cpu_threads
    for choice in choices(stats, cpu_threads=cpu, gate_first=gate_first):
        caps = _solve(stats, choice, profile, cache_bytes, max_s)
        if caps is None:
            continue
        terms = token_seconds(stats, caps, choice, profile)
        if best is None or terms["total"] < best.terms["total"]:
            best = ExecutionPlan(
                choice=choice,
                layer_units=tuple(caps),
                memory_bytes=int(memory_bytes),
                predicted_tokens_per_s=1.0 / terms["total"],
                terms=terms,
            )
    if best is None:
        fastest = plan(stats, profile, memory_bytes, cpu_threads=cpu_threads, gate_first=gate_first)
        raise BudgetError(
            f"no plan reaches {min_tokens_per_s} tokens/s within {memory_bytes} bytes: the memory "
            f"budget binds (the fastest plan within it predicts "
            f"{fastest.predicted_tokens_per_s:.2f} tokens/s); raise the budget or lower the "
            "minimum speed"
        )
    return best
