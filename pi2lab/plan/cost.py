r"""Cost model of one offloaded decode token, with overlap written as max() terms.

Per layer :math:`l` with :math:`n_l` units needed per token (hot block plus predicted
clusters), a cache of :math:`c_l` units with hit rate :math:`h_l(c_l)` (a curve measured by
replaying request traces through the policy), unit size :math:`b` bytes and profile rates
(dense :math:`B_d`, sparse :math:`B_s` bytes/s; random reads :math:`R(b, k)` bytes/s with
:math:`k` I/O threads):

.. math::

   m_l &= n_l\,(1 - h_l(c_l))  &&\text{misses} \\
   C_l &= n_l\,b / B_s          &&\text{FFN compute} \\
   I_l &= m_l\,b / R(b, k)      &&\text{reads (gate-first: } m_l[\tfrac{b}{3}/R(\tfrac{b}{3})
                                   + f\,\tfrac{2b}{3}/R(\tfrac{2b}{3})]) \\
   F_l &= \begin{cases}
        I_l + C_l & \text{no overlap} \\
        \max(C_l - m_l b/B_s,\; I_l) + m_l b / B_s & \text{matrix-level (barrier per FFN)} \\
        \max(C_l,\; I_l) + \beta b / B_s & \text{cluster-level (}\beta\text{ units per batch)}
        \end{cases} \\
   T &= \sum_l \bigl(A_l / B_d + o + F_l\bigr) + H / B_d

with :math:`A_l` the layer's resident weight bytes (attention, norms, predictor), :math:`H`
the LM head's, :math:`o` a per-layer host overhead (dispatch, synchronisation) and
:math:`r` a host cost per read on the compute thread's path (submission, completion
bookkeeping, interpreter-lock contention with the reader threads; it joins :math:`C_l` as
:math:`m_l r`). Both are fitted once per machine and model, as FlexGen fits its device
constants: :math:`o` from an all-resident run (:func:`calibrate`), :math:`r` from one
offloaded run (:func:`calibrate_reads`). Reads of a layer cannot start before its predictor has run,
so nothing overlaps across layers. ``dense-stream`` reads the non-resident share of every
FFN in order at the sequential rate and computes all units: :math:`F_l = (U - c_l)\,b/S +
U\,b/B_d`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pi2lab.pipeline.scheduler import PipelineConfig
from pi2lab.plan.hardware import HardwareProfile


@dataclasses.dataclass(frozen=True, kw_only=True)
class LayerStats:
    """What the cost model needs of one FFN.

    Attributes:
      units: U, units in the FFN.
      unit_bytes: b, bytes per unit read (the layout's stride).
      needed: n, mean units needed per decode token.
      fires: Share of needed units whose gate fires (gate-first loading).
      resident_bytes: A, weight bytes of the layer read every token from memory.
      capacities: Cache capacities (units) the hit curves were measured at, ascending.
      hit_rates: Policy label -> hit rate at each capacity.
    """

    units: int
    unit_bytes: int
    needed: float
    fires: float = 1.0
    resident_bytes: int
    capacities: tuple[int, ...]
    hit_rates: dict

    def hit(self, policy: str, capacity: float) -> float:
        """Hit rate at ``capacity`` units (the concave envelope of the measured points,
        interpolated linearly: the planner's LP needs it concave)."""
        caps, hits = envelope(self.capacities, self.hit_rates[policy])
        return float(np.interp(capacity, caps, hits))


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelStats:
    """Per-layer statistics and fixed sizes of one model on one layout.

    Attributes:
      name: What they describe.
      layers: One entry per FFN.
      head_bytes: LM head (and final norm) bytes read per token.
      fixed_bytes: Resident tensors and KV cache (never evicted).
      staging_bytes: The engine's staging rows.
      overhead_s: o, host overhead per layer (see :func:`calibrate`; 0 until fitted).
      read_overhead_s: r, host cost per read (see :func:`calibrate_reads`; 0 until fitted).
    """

    name: str
    layers: tuple[LayerStats, ...]
    head_bytes: int
    fixed_bytes: int
    staging_bytes: int
    overhead_s: float = 0.0
    read_overhead_s: float = 0.0

    @property
    def ffn_bytes(self) -> int:
        """Cache bytes that hold every unit of every FFN (``sum_l U_l * b_l``)."""
        return sum(layer.units * layer.unit_bytes for layer in self.layers)

    @property
    def policies(self) -> list[str]:
        return sorted(self.layers[0].hit_rates)


def envelope(xs, ys) -> tuple[np.ndarray, np.ndarray]:
    """Upper concave envelope of points ``(xs, ys)`` (xs ascending)."""
    hull: list[tuple[float, float]] = []
    for p in zip(np.asarray(xs, float), np.asarray(ys, float), strict=True):
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (x2 - x1) * (p[1] - y1) - (y2 - y1) * (p[0] - x1) >= 0:  # not a right turn
                hull.pop()
            else:
                break
        hull.append(p)
    return np.array([h[0] for h in hull]), np.array([h[1] for h in hull])


@dataclasses.dataclass(frozen=True, kw_only=True)
class PlanChoice:
    """The discrete part of a plan: what the planner enumerates around its solver.

    Attributes:
      engine: ``powerinfer2`` / ``llmflash`` / ``dense-stream``.
      policy: Hit-curve label of the cache policy (a key of ``LayerStats.hit_rates``).
      pipeline: Overlap mode, I/O threads, gate-first.
    """

    engine: str = "powerinfer2"
    policy: str = "segmented-0.5"
    pipeline: PipelineConfig = dataclasses.field(default_factory=PipelineConfig)


def layer_seconds(
    layer: LayerStats,
    capacity: float,
    choice: PlanChoice,
    profile: HardwareProfile,
    read_overhead_s: float = 0.0,
) -> dict:
    """Seconds of one layer's FFN by term (``compute``, ``io``, ``ffn``) at ``capacity``."""
    b, pipe = layer.unit_bytes, choice.pipeline
    sparse = profile.sparse_gbs * 1e9
    if choice.engine == "dense-stream":
        io = (layer.units - capacity) * b / (profile.sequential_mbs * 1e6)
        compute = layer.units * b / (profile.dense_gbs * 1e9)
        return {"compute": compute, "io": io, "ffn": io + compute}
    n = layer.needed
    m = n * (1.0 - layer.hit(choice.policy, capacity))
    reads = m * (1 + layer.fires) if pipe.gate_first else m
    compute = n * b / sparse + reads * read_overhead_s

    def read(nbytes: float) -> float:
        span = int(layer.units * b)  # the FFN's file: the range its reads spread over
        return nbytes / (profile.read_mbs(int(nbytes), pipe.io_threads, span=span) * 1e6)

    io = m * (read(b / 3) + layer.fires * read(2 * b / 3)) if pipe.gate_first else m * read(b)
    miss_compute = m * b / sparse
    if pipe.mode == "none":
        ffn = io + compute
    elif pipe.mode == "matrix":
        ffn = max(compute - miss_compute, io) + miss_compute
    else:
        ffn = max(compute, io) + min(pipe.batch, m) * b / sparse  # the last batch's tail
    return {"compute": compute, "io": io, "ffn": ffn}


def token_seconds(
    stats: ModelStats, capacities, choice: PlanChoice, profile: HardwareProfile
) -> dict:
    """Predicted seconds per decode token and its terms, for per-FFN ``capacities``."""
    dense = profile.dense_gbs * 1e9
    terms = {"attention": 0.0, "overhead": 0.0, "compute": 0.0, "io": 0.0, "ffn": 0.0}
    for layer, c in zip(stats.layers, capacities, strict=True):
        terms["attention"] += layer.resident_bytes / dense
        terms["overhead"] += stats.overhead_s
        for k, v in layer_seconds(layer, c, choice, profile, stats.read_overhead_s).items():
            terms[k] += v
    terms["head"] = stats.head_bytes / dense
    terms["total"] = terms["attention"] + terms["overhead"] + terms["ffn"] + terms["head"]
    return terms


def calibrate(
    stats: ModelStats, profile: HardwareProfile, measured_s: float, choice: PlanChoice
) -> ModelStats:
    """Fits the per-layer host overhead ``o`` so that an all-resident plan predicts
    ``measured_s`` seconds per token (one measurement per machine and model)."""
    full = [layer.units for layer in stats.layers]
    bare = token_seconds(dataclasses.replace(stats, overhead_s=0.0), full, choice, profile)
    overhead = max(measured_s - bare["total"], 0.0) / len(stats.layers)
    return dataclasses.replace(stats, overhead_s=overhead)


def calibrate_reads(
    stats: ModelStats, profile: HardwareProfile, measured_s: float, choice: PlanChoice, capacities
) -> ModelStats:
    """Fits the host cost per read ``r`` so that the plan (``choice``, ``capacities``) predicts
    ``measured_s`` seconds per token (bisection; 0 when the model already predicts slower)."""
    lo, hi = 0.0, 0.01
    for _ in range(50):
        mid = (lo + hi) / 2
        trial = dataclasses.replace(stats, read_overhead_s=mid)
        if token_seconds(trial, capacities, choice, profile)["total"] < measured_s:
            lo = mid
        else:
            hi = mid
    return dataclasses.replace(stats, read_overhead_s=lo)
