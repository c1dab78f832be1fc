"""Discrete-event simulation of offloaded decode on a device described by a hardware profile.

Every figure this module returns is **simulated**: computed on a virtual clock from a
:class:`~pi2lab.plan.hardware.HardwareProfile`'s rates and a
:class:`~pi2lab.plan.shapes.ModelShape`, not measured. It answers "how fast would this engine
decode this model on that phone" where no phone (or no 7B checkpoint) is at hand.

What is the engine's own logic (reused, not re-modelled):

- the neuron cache: one :class:`~pi2lab.cache.NeuronCache` per FFN (per expert for MoE) with the
  policy :meth:`OffloadConfig.policy_for <pi2lab.engine.offload.OffloadConfig.policy_for>` builds
  (Segmented for ``powerinfer2``, Window(5) for ``llmflash``), the same capacity rule (the budget
  left after resident bytes and staging rows, split evenly over the FFNs, in 4 KiB-padded
  slots), and the same units per layer (the plan's hot block plus every unit of an active cold
  cluster);
- the scheduler's ordering (:mod:`pi2lab.pipeline.scheduler`): misses queued requested-first,
  then bypassed, then read-ahead; ``depth`` units in flight in cluster mode; hits computed in
  chunks of up to 256 (long slot runs apart), reads topped up between chunks; arrived units
  computed ``batch`` at a time; the matrix barrier; mode ``none`` reads everything first;
  gate-first splits a miss into a gate read and an up/down read; bypassed units need a free
  staging row; the I/O engine's coalescing of adjacent requests of one submit (up to 1 MiB;
  off with ``PipelineConfig(coalesce=False)``) and its first-request order;
- ``bundled=False`` (the ablation baseline, no neuron bundling): a miss is three reads, its
  gate row, up row and down column, each from its own matrix-major region of the FFN's file
  (down stored transposed, as PowerInfer does), so the rows of adjacent units are adjacent on
  flash; each row is computed as it lands, a third of the unit's compute.

What replaces the device (the model):

- attention + predictor, per layer: (attention weights + predictors run) bytes / ``dense_gbs``
  (the profile's rate for resident weights, the rate its in-memory decode speed was fitted
  with, and the cost model's); the LM head likewise, once per token;
- FFN compute: bytes of the bundles computed (payload + their resident scales) / ``sparse_gbs``;
  a gate-first gate row costs a third of that, its up/down the rest;
- reads: ``io_threads`` FIFO servers; a read of ``b`` bytes (its 4 KiB-aligned span, as O_DIRECT
  reads it) keeps one server busy ``b * k / read_mbs(b, k)`` seconds for ``k`` I/O threads (the
  profile's rates are aggregate over ``k`` issuing threads), so a coalesced read of adjacent
  units runs at the larger block's rate;
- gate-first: a gate fires with probability ``gate_fire_rate`` (default 0.8: the paper's gate,
  up and down co-activate ~80% of the time), drawn from a seeded generator; a silent gate
  drops the unit from the cache as the scheduler does;
- ``llama.cpp-mmap``: no predictor, dense FFN; the FFN bytes beyond the budget are re-read
  every token at ``sequential_mbs`` with no overlap, then computed; the resident part is
  computed at ``dense_gbs`` (GGUF blocks carry their scales, so they count as FFN bytes here).

Left out: KV-cache reads in attention and their growth with context; thread contention between
compute and I/O; predictor misses (the trace *is* what the predictor asked for); the paper's
NPU/CPU split and multiple compute threads (one compute thread); page-cache behaviour beyond
"the budget's share stays"; prefill; storage queueing beyond FIFO servers; the time to submit a
read or run the cache (zero on the virtual clock). MoE experts of a layer run one after
another, routed experts read from the trace (an expert is routed when any of its units is
needed).

Per-token order: layers run in sequence and every read of a layer completes before the next
layer starts (the scheduler waits for its read-ahead too), so each FFN's time depends only on its
own cache; the simulation runs layer by layer over all tokens and sums.
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
from collections.abc import Sequence
from typing import Literal

import numpy as np

from pi2lab.cache import NeuronCache
from pi2lab.config import ModelConfig
from pi2lab.engine.offload import STREAM_BYTES, OffloadConfig
from pi2lab.errors import BudgetError, ConfigError
from pi2lab.kernels.sparse_plan import SparsePlan
from pi2lab.pipeline.scheduler import CHUNK, RUN, PipelineConfig
from pi2lab.pipeline.timeline import Event, Timeline
from pi2lab.plan.hardware import HardwareProfile
from pi2lab.plan.shapes import ModelShape, get_shape
from pi2lab.plan.traces import SyntheticTrace
from pi2lab.policies import Policy
from pi2lab.storage.layout import ALIGN

SimEngine = Literal["powerinfer2", "llmflash", "llama.cpp-mmap"]
SIM_ENGINES: tuple[str, ...] = ("powerinfer2", "llmflash", "llama.cpp-mmap")
MAX_COALESCE = 1 << 20  # the I/O engine's default max_coalesce_bytes
IOV_MAX = 1024


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class SimResult:
    """Simulated decode of ``T`` tokens (every figure simulated, none measured).

    Attributes:
      engine: Simulated engine.
      shape: Model shape name.
      profile: Hardware profile name.
      tokens_per_s: Simulated tokens/s: 1 / median token seconds after ``warmup``.
      token_seconds: ``[T]`` simulated seconds per token.
      bytes_read: ``[T]`` bytes read from flash per token (aligned spans).
      hits: ``[T]`` requested units found in the cache (llama.cpp-mmap: resident units).
      requested: ``[T]`` units computed.
      wait_seconds: ``[T]`` time the compute thread waited on reads.
      stage_seconds: Mean simulated seconds per token after warm-up by stage (attention,
        compute, wait, head).
      cache_units: Cache slots per FFN (llama.cpp-mmap: resident units per FFN).
      memory_bytes: Resident bytes + staging + cache (the budget used).
      warmup: Leading tokens left out of the summaries.
      timeline: The last token's events on the virtual clock (seconds from its start).
    """

    engine: str
    shape: str
    profile: str
    tokens_per_s: float
    token_seconds: np.ndarray
    bytes_read: np.ndarray
    hits: np.ndarray
    requested: np.ndarray
    wait_seconds: np.ndarray
    stage_seconds: dict
    cache_units: int
    memory_bytes: int
    warmup: int
    timeline: Timeline

    @property
    def hit_rate(self) -> float:
        """Simulated hits / requested units after warm-up."""
        req = int(self.requested[self.warmup :].sum())
        return int(self.hits[self.warmup :].sum()) / req if req else float("nan")

    @property
    def bytes_per_token(self) -> float:
        """Simulated mean bytes read per token after warm-up."""
        return float(self.bytes_read[self.warmup :].mean())

    @property
    def io_share(self) -> float:
        """Simulated share of token time the compute thread waited on reads, after warm-up
        (as :meth:`Timeline.io_share <pi2lab.pipeline.timeline.Timeline.io_share>`)."""
        w = slice(self.warmup, None)
        return float(self.wait_seconds[w].sum() / max(self.token_seconds[w].sum(), 1e-30))

    def to_json(self) -> dict:
        return {
            "simulated": True,
            "engine": self.engine,
            "shape": self.shape,
            "profile": self.profile,
            "tokens_per_s": self.tokens_per_s,
            "hit_rate": self.hit_rate,
            "bytes_per_token": self.bytes_per_token,
            "io_share": self.io_share,
            "stage_seconds": dict(self.stage_seconds),
            "cache_units": self.cache_units,
            "memory_bytes": self.memory_bytes,
            "warmup": self.warmup,
            "token_seconds": self.token_seconds.tolist(),
            "bytes_read": self.bytes_read.tolist(),
            "timeline": self.timeline.rows(0.0),
        }


# -- one FFN on the virtual clock --------------------------------------------------------------
@dataclasses.dataclass(frozen=True, kw_only=True)
class _Costs:
    """Per-FFN constants of the device model (seconds, bytes)."""

    unit: float  # compute one whole unit
    gate: float  # compute one gate row (gate-first)
    stride: int
    gate_bytes: int
    unit_bytes: int
    servers: int
    coalesce: bool
    read_rate: object  # io_bytes -> seconds one server is busy
    per_read: float = 0.0  # host time on the compute thread per unit read
    units: int = 0  # U: the matrix-major regions of unbundled reads (phases 3-5)


class _Reads:
    """``servers`` FIFO read servers; completions in (end, submit order) order."""

    def __init__(self, costs: _Costs, record: list | None, layer: int):
        self.costs, self.record, self.layer = costs, record, layer
        self.free_at = [0.0] * costs.servers
        self.heap: list = []
        self.seq = 0
        self.nbytes = 0

    def submit(self, now: float, batch: list) -> None:
        """``batch`` of ``(u, s, phase)`` submitted at ``now``: coalesced like
        :meth:`IOEngine.submit <pi2lab.storage.io.IOEngine.submit>` (sorted by offset, a request
        starting where the previous ends joins its read, up to 1 MiB), served in first-request
        order."""
        c = self.costs
        arr = np.array(batch, np.int64).reshape(-1, 3)  # [N, 3] (u, s, phase)
        # phases: 0 bundle, 1 gate row, 2 up/down (gate-first), 3-5 gate/up/down rows unbundled
        row = c.unit_bytes // 3
        step = np.array([c.stride] * 3 + [row] * 3)
        base = np.array([0, 0, c.gate_bytes, 0, c.units * row, 2 * c.units * row])
        size = np.array([c.stride, c.gate_bytes, c.unit_bytes - c.gate_bytes, row, row, row])
        off = arr[:, 0] * step[arr[:, 2]] + base[arr[:, 2]]  # [N]
        length = size[arr[:, 2]]
        order = np.argsort(off, kind="stable")
        off, length = off[order], length[order]
        new = np.ones(order.size, bool)
        if c.coalesce:
            new[1:] = off[1:] != off[:-1] + length[:-1]
        starts = np.flatnonzero(new)
        bounds = np.append(starts, order.size)
        if np.any(np.diff(bounds) > 1):  # cut chains past MAX_COALESCE bytes or IOV_MAX pieces
            starts = []
            for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
                size, n = 0, 0
                for j in range(a, b):
                    if j == a or size + length[j] > MAX_COALESCE or n >= IOV_MAX:
                        starts.append(j)
                        size, n = 0, 0
                    size += int(length[j])
                    n += 1
            starts = np.array(starts)
            bounds = np.append(starts, order.size)
        first = np.minimum.reduceat(order, starts)  # first request of each read
        g = np.argsort(first, kind="stable")
        last = bounds[1:] - 1
        lo = off[starts] - off[starts] % ALIGN
        hi = -(-(off[last] + length[last]) // ALIGN) * ALIGN
        io_bytes = (hi - lo)[g]
        dur = np.array([c.read_rate(int(b)) for b in io_bytes.tolist()])
        members = order.tolist()
        bl = bounds.tolist()
        rows = arr.tolist()
        self.nbytes += int(io_bytes.sum())
        if c.servers == 1:
            begin = max(now, self.free_at[0])
            ends = begin + np.cumsum(dur)
            self.free_at[0] = float(ends[-1])
            starts_at = [begin, *ends[:-1].tolist()]  # back to back, no rounding gaps
            when = [(a, e, 0) for a, e in zip(starts_at, ends.tolist(), strict=True)]
        else:
            when = []
            for d in dur.tolist():
                k = min(range(c.servers), key=self.free_at.__getitem__)
                start = max(now, self.free_at[k])
                self.free_at[k] = start + d
                when.append((start, start + d, k))
        for j, (start, done, k) in zip(g.tolist(), when, strict=True):
            tags = [rows[i] for i in members[bl[j] : bl[j + 1]]]
            heapq.heappush(self.heap, (done, self.seq, tags))
            self.seq += 1
            if self.record is not None:
                self.record.append(
                    Event(
                        stage="read",
                        layer=self.layer,
                        start=start,
                        end=done,
                        thread=f"io{k}",
                        units=len(tags),
                        nbytes=int(hi[j] - lo[j]),
                    )
                )


def _chunks(slots: np.ndarray) -> list[int]:
    """Unit counts of the chunks :meth:`Scheduler.compute_resident` computes for hits in
    ``slots``: runs of at least RUN consecutive slots apart, then the rest, each cut at CHUNK
    (the lengths :func:`pi2lab.pipeline.scheduler.runs` gives, without splitting arrays)."""
    if slots.size == 0:
        return []
    slots = np.sort(slots)
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(slots) != 1) + 1, [slots.size]])
    lengths = np.diff(bounds)
    long = lengths[lengths >= RUN].tolist()
    rest = int(lengths[lengths < RUN].sum())
    sizes = long + ([rest] if rest else [])
    return [min(CHUNK, n - a) for n in sizes for a in range(0, n, CHUNK)]


class _FfnSim:
    """One FFN's cache and scheduler on the virtual clock (see the module docstring)."""

    def __init__(
        self,
        cache,
        pipeline: PipelineConfig,
        costs: _Costs,
        stage_rows: int,
        gate_first_from: int,
        fire_rate: float,
        rng,
        bundled: bool = True,
    ):
        self.cache, self.p, self.c = cache, pipeline, costs
        self.stage_rows, self.split = stage_rows, gate_first_from
        self.fire_rate, self.rng = fire_rate, rng
        self.pieces = (0,) if bundled else (3, 4, 5)

    def run(self, need: np.ndarray, t: int, layer: int, record: list | None):
        """Runs one token's FFN from time 0; returns (seconds, wait, compute, bytes, hits)."""
        p, c = self.p, self.c
        acc = self.cache.access(need, t)
        wanted = np.isin(acc.admit, need)
        ahead = set(acc.admit[~wanted].tolist())
        gf = p.gate_first
        todo = collections.deque(
            (u, s, ph)
            for u, s in [
                *zip(acc.admit[wanted].tolist(), acc.admit_slots[wanted].tolist(), strict=True),
                *((u, -1) for u in acc.bypass.tolist()),
            ]
            for ph in ((1,) if gf and u >= self.split else self.pieces)
        )
        todo.extend(
            (u, s, ph)
            for u, s in zip(
                acc.admit[~wanted].tolist(), acc.admit_slots[~wanted].tolist(), strict=True
            )
            for ph in self.pieces
        )
        mode = p.mode
        limit = p.depth if mode == "cluster" else len(todo)
        free_rows = list(range(self.stage_rows))
        reads = _Reads(c, record, layer)
        st = {"now": 0.0, "wait": 0.0, "compute": 0.0, "inflight": 0}

        def span(stage, dur, units):
            start = st["now"]
            st["now"] = start + dur
            if stage == "compute":
                st["compute"] += dur
            else:
                st["wait"] += dur
            if record is not None:
                record.append(
                    Event(
                        stage=stage,
                        layer=layer,
                        start=start,
                        end=st["now"],
                        thread="compute",
                        units=units,
                    )
                )

        def submit():
            batch = []
            while todo and st["inflight"] + len(batch) < limit:
                u, s, phase = todo[0]
                if s == -1:
                    if not free_rows:
                        break
                    s = -2 - free_rows.pop()
                todo.popleft()
                batch.append((u, s, phase))
            if batch:
                reads.submit(st["now"], batch)
            st["inflight"] += len(batch)

        def take(at_least):
            got, units_in = [], 0
            heap = reads.heap
            while heap:
                if heap[0][0] > st["now"]:
                    if units_in >= at_least:
                        break
                    span("wait", heap[0][0] - st["now"], 0)
                tags = heapq.heappop(heap)[2]
                got.extend(tags)
                units_in += len(tags)
            return got

        def consume(tags):
            st["inflight"] -= len(tags)
            dur, finished = 0.0, []
            for u, s, phase in tags:
                if phase == 1:
                    dur += c.gate
                    if self.rng.random() < self.fire_rate:
                        todo.appendleft((u, s, 2))
                    else:
                        if s >= 0:
                            self.cache.discard(np.array([u], np.int64))
                        finished.append(s)
                    continue
                finished.append(s)
                if s < -1 or u not in ahead:  # read-ahead arrives but is not computed
                    dur += {0: c.unit, 2: c.unit - c.gate}.get(phase, c.unit / 3)
            span("compute", dur + len(tags) * c.per_read, len(tags))
            free_rows.extend(-2 - s for s in finished if s < -1)

        def step(at_least):
            consume(take(at_least))
            submit()

        def resident(between):
            for n in _chunks(acc.hit_slots):
                span("compute", n * c.unit, n)
                if between is not None:
                    between()

        submit()
        if mode != "none":
            resident((lambda: step(0)) if mode == "cluster" else None)
        while reads.heap:
            step(min(p.batch, st["inflight"]) if mode == "cluster" else st["inflight"])
        if mode == "none":
            resident(None)
        return st["now"], st["wait"], st["compute"], reads.nbytes, acc.hits.size


# -- entry point -----------------------------------------------------------------------------
def _as_shape(shape_or_config) -> ModelShape:
    if isinstance(shape_or_config, ModelShape):
        return shape_or_config
    if isinstance(shape_or_config, str):
        return get_shape(shape_or_config)
    if isinstance(shape_or_config, ModelConfig):
        return ModelShape.from_config(shape_or_config)
    raise ConfigError(
        f"simulate_decode: expected a ModelShape, a shape name or a ModelConfig, got "
        f"{type(shape_or_config).__name__}"
    )


def _layer_masks(trace, i: int, shape: ModelShape, tokens: int) -> np.ndarray:
    m = np.asarray(trace.layer(i) if hasattr(trace, "layer") else trace[i], bool)
    cfg = shape.config
    want = (shape.units,) if not cfg.is_moe else (cfg.num_experts, shape.units)
    if m.shape[1:] != want or m.shape[0] < tokens:
        raise ConfigError(
            f"simulate_decode: trace layer {i} has shape {list(m.shape)}: expected "
            f"[>= {tokens}, {', '.join(map(str, want))}] (tokens, "
            f"{'experts, ' if cfg.is_moe else ''}units)"
        )
    return m[:tokens]


def _apply_plan(masks: np.ndarray, plan, shape: ModelShape, layer: int) -> np.ndarray:
    """Unit masks -> the units the engine computes: the hot block, and every unit of a cold
    cluster with any unit needed (:meth:`OffloadEngine._units`)."""
    if plan is None:
        return masks
    lp, c = plan.layers[layer], shape.cluster_size
    hot, per = lp.hot // c, lp.cluster_size // c
    out = masks.copy()
    out[..., :hot] = True
    cold = out[..., hot:]
    grouped = cold.reshape(*cold.shape[:-1], -1, per).any(-1)
    out[..., hot:] = np.repeat(grouped, per, axis=-1)
    # a token routed to no expert keeps nothing (MoE): the hot block only when routed
    if masks.ndim == 3:
        out &= masks.any(-1, keepdims=True)
    return out


def simulate_decode(
    shape_or_config: ModelShape | str | ModelConfig,
    profile: HardwareProfile,
    *,
    engine: SimEngine = "powerinfer2",
    memory_bytes: int | None = None,
    ffn_fraction: float | None = None,
    trace=None,
    tokens: int = 64,
    pipeline: PipelineConfig | None = None,
    policy: Policy | None = None,
    hot_fraction: float = 0.5,
    hot_region: float = 1.0,
    plan: SparsePlan | None = None,
    kv_capacity: int = 1024,
    gate_fire_rate: float = 0.8,
    warmup: int | None = None,
    seed: int = 0,
    overhead_s: float = 0.0,
    read_overhead_s: float = 0.0,
    bundled: bool = True,
) -> SimResult:
    """Simulates ``tokens`` decode tokens of a model on a device (all figures simulated).

    Args:
      shape_or_config: A :class:`ModelShape`, a built-in shape name, or a ModelConfig (10%
        density assumed).
      profile: The device's rates.
      engine: ``powerinfer2`` (segmented cache, cluster pipeline), ``llmflash`` (Window(5),
        matrix overlap) or ``llama.cpp-mmap`` (dense, the rest re-read each token).
      memory_bytes: Total budget (resident bytes + KV + staging + cache); or
      ffn_fraction: The cache as a share of each FFN's units, on top of the rest.
      trace: Per-layer unit masks: a list of ``[T, U]`` (``[T, E, U]``) bool arrays or an object
        with ``layer(i)`` (:mod:`pi2lab.plan.traces`); default a :class:`SyntheticTrace` of the
        shape's density, skew and reuse.
      pipeline: Overlap settings; default the engine's (cluster / matrix).
      policy, hot_fraction, hot_region: As :class:`~pi2lab.engine.offload.OffloadConfig`.
      plan: Hot block and cold-cluster sizes per layer (default: no hot block, one unit per
        cluster).
      kv_capacity: KV-cache positions counted in the budget (f16).
      gate_fire_rate: Gate-first: probability a predicted unit's gate fires.
      warmup: Leading tokens left out of the summaries (default ``tokens // 4``).
      seed: Seeds the default trace and the gate-first draws.
      overhead_s: Host time per layer beside attention (dispatch, synchronisation, cache
        bookkeeping; :func:`pi2lab.plan.cost.calibrate` fits it for this machine's Python
        engine; 0 models a native runtime).
      read_overhead_s: Host time on the compute thread per unit read (as
        :func:`pi2lab.plan.cost.calibrate_reads` fits it).
      bundled: False reads a miss as three separate row reads from matrix-major regions
        (no neuron bundling; see the module docstring); not with gate-first loading.

    Raises:
      ConfigError: unknown engine or shape, both or neither budget, a trace of the wrong shape.
      BudgetError: ``memory_bytes`` below the resident minimum (the message gives it).
    """
    shape = _as_shape(shape_or_config)
    cfg = shape.config
    if engine not in SIM_ENGINES:
        raise ConfigError(f"engine {engine!r}: expected one of {', '.join(SIM_ENGINES)}")
    if (memory_bytes is None) == (ffn_fraction is None):
        raise ConfigError("simulate_decode: give exactly one of memory_bytes and ffn_fraction")
    if ffn_fraction is not None and not 0 <= ffn_fraction <= 1:
        raise ConfigError(f"ffn_fraction={ffn_fraction}: expected a share in [0, 1]")
    if tokens < 1:
        raise ConfigError(f"tokens={tokens}: expected >= 1")
    warmup = tokens // 4 if warmup is None else warmup
    if not 0 <= warmup < tokens:
        raise ConfigError(f"warmup={warmup}: expected 0..{tokens - 1}")
    if plan is not None:
        plan.check(cfg)
    args = (shape, profile, memory_bytes, ffn_fraction, tokens, kv_capacity, warmup, overhead_s)
    if engine == "llama.cpp-mmap":
        return _simulate_mmap(*args)
    offload = OffloadConfig(
        engine=engine,
        memory_budget=0.0,
        pipeline=pipeline,
        policy=policy,
        hot_fraction=hot_fraction,
        hot_region=hot_region,
    )
    pipe = offload.pipeline_config()
    if pipe.gate_first and not bundled:
        raise ConfigError("simulate_decode: gate-first loading reads bundles: needs bundled=True")
    if pipe.gate_first and (shape.cluster_size != 1 or cfg.ffn_activation == "silu"):
        raise ConfigError(
            f"gate-first loading needs one neuron per unit and a ReLU-family FFN; shape "
            f"{shape.name!r} has cluster size {shape.cluster_size}, activation "
            f"{cfg.ffn_activation!r}"
        )
    if trace is None:
        trace = SyntheticTrace(
            density=shape.active_fraction,
            skew=shape.skew,
            reuse=shape.reuse,
            units=shape.units,
            layers=cfg.num_layers,
            tokens=tokens,
            seed=seed,
            experts=cfg.num_experts,
            top_k=cfg.num_experts_per_tok,
        )
    n_layers = trace.num_layers if hasattr(trace, "num_layers") else len(trace)
    if n_layers != cfg.num_layers:
        raise ConfigError(
            f"simulate_decode: trace has {n_layers} layers; shape {shape.name!r} has "
            f"{cfg.num_layers}"
        )

    # memory, as OffloadEngine: resident + KV, staging rows, then cache slots per FFN
    stride, units = shape.stride, shape.units
    stage_rows = max(pipe.depth, -(-STREAM_BYTES // stride))
    fixed = shape.resident_bytes(kv_capacity)
    if ffn_fraction is not None:
        per_ffn = int(ffn_fraction * units)
    else:
        spare = memory_bytes - fixed - stage_rows * stride
        if spare < 0:
            raise BudgetError(
                f"memory budget {memory_bytes} bytes is below the minimum "
                f"{fixed + stage_rows * stride} bytes for {shape.name} (resident weights, "
                f"predictors, scales and KV cache {fixed}, staging {stage_rows * stride})"
            )
        per_ffn = min(units, spare // stride // shape.num_ffns)
    used = fixed + stage_rows * stride + per_ffn * stride * shape.num_ffns

    k = pipe.io_threads
    rates: dict[int, float] = {}

    def read_rate(nbytes: int) -> float:
        if nbytes not in rates:
            rates[nbytes] = nbytes * k / (profile.read_mbs(nbytes, k) * 1e6)
        return rates[nbytes]

    per_neuron = shape.bundle_bytes + shape.scale_bytes_per_neuron
    sparse = profile.sparse_gbs * 1e9
    costs = _Costs(
        unit=shape.cluster_size * per_neuron / sparse,
        gate=shape.cluster_size * per_neuron / 3 / sparse,
        stride=stride,
        gate_bytes=shape.gate_bytes,
        unit_bytes=shape.unit_bytes,
        servers=k,
        coalesce=pipe.coalesce,
        read_rate=read_rate,
        per_read=read_overhead_s,
        units=units,
    )
    mem = profile.dense_gbs * 1e9  # resident weights: the profile's fitted compute rate
    moe = cfg.is_moe
    experts = cfg.num_experts if moe else 1
    attention = shape.attention_bytes() / mem + overhead_s
    predictor = shape.predictor_bytes() / mem
    head = shape.head_bytes() / mem

    secs, wait, comp, att = (np.zeros(tokens) for _ in range(4))
    nbytes, hits, req = (np.zeros(tokens, np.int64) for _ in range(3))
    layer_secs = np.zeros(cfg.num_layers)  # the last token's, for its timeline
    events: list[list[Event]] = []
    last = tokens - 1
    for i in range(cfg.num_layers):
        masks = _apply_plan(_layer_masks(trace, i, shape, tokens), plan, shape, i)
        masks = masks if moe else masks[:, None]  # [T, E, U]
        routed = masks.any(-1)  # [T, E]
        sims = []
        for e in range(experts):
            cache = NeuronCache(offload.policy_for(units, per_ffn), units, per_ffn)
            hot_units = plan.layers[i].hot // shape.cluster_size if plan is not None else 0
            split = max(getattr(cache.state, "hot_units", 0), hot_units)
            rng = np.random.default_rng([seed, i, e])
            sims.append(
                _FfnSim(cache, pipe, costs, stage_rows, split, gate_fire_rate, rng, bundled)
            )
        layer_events: list[Event] = []
        for t in range(tokens):
            front = attention + predictor * (int(routed[t].sum()) if moe else 1)
            record = [] if t == last else None
            clock = front
            for e in np.flatnonzero(routed[t]):
                need = np.flatnonzero(masks[t, e])
                sub = [] if record is not None else None
                dur, w, cp, nb, h = sims[e].run(need, t, i, sub)
                if sub is not None:
                    record.extend(_shifted(sub, clock))
                clock += dur
                wait[t] += w
                comp[t] += cp
                nbytes[t] += nb
                hits[t] += h
                req[t] += need.size
            att[t] += front
            secs[t] += clock
            if record is not None:
                layer_events = [
                    Event(stage="attention", layer=i, start=0.0, end=front, thread="compute"),
                    *record,
                ]
                layer_secs[i] = clock
        events.append(layer_events)
    secs += head
    timeline = _timeline(events, layer_secs, head)
    return _result(
        engine,
        shape,
        profile,
        secs,
        nbytes,
        hits,
        req,
        wait,
        comp,
        att,
        head,
        per_ffn,
        used,
        warmup,
        timeline,
    )


def _shifted(events: Sequence[Event], by: float) -> list[Event]:
    return [dataclasses.replace(e, start=e.start + by, end=e.end + by) for e in events]


def _timeline(events: list[list[Event]], layer_secs: np.ndarray, head: float) -> Timeline:
    timeline = Timeline()
    starts = np.concatenate([[0.0], np.cumsum(layer_secs)])
    for i, evs in enumerate(events):
        timeline.events.extend(_shifted(evs, float(starts[i])))
    end = float(starts[-1])
    timeline.events.append(
        Event(stage="head", layer=-1, start=end, end=end + head, thread="compute")
    )
    return timeline


def _result(
    engine,
    shape,
    profile,
    secs,
    nbytes,
    hits,
    req,
    wait,
    comp,
    att,
    head,
    per_ffn,
    used,
    warmup,
    timeline,
) -> SimResult:
    w = slice(warmup, None)
    return SimResult(
        engine=engine,
        shape=shape.name,
        profile=profile.name,
        tokens_per_s=float(1.0 / np.median(secs[w])),
        token_seconds=secs,
        bytes_read=nbytes,
        hits=hits,
        requested=req,
        wait_seconds=wait,
        stage_seconds={
            "attention": float(att[w].mean()),
            "compute": float(comp[w].mean()),
            "wait": float(wait[w].mean()),
            "head": float(head),
        },
        cache_units=int(per_ffn),
        memory_bytes=int(used),
        warmup=warmup,
        timeline=timeline,
    )


def _simulate_mmap(
    shape, profile, memory_bytes, ffn_fraction, tokens, kv_capacity, warmup, overhead_s
):
    """llama.cpp with mmap past RAM size: dense, the FFN bytes beyond the budget re-read in
    order every token at ``sequential_mbs``, no overlap (the same every token)."""
    cfg = shape.config
    per_neuron = shape.bundle_bytes + shape.scale_bytes_per_neuron  # GGUF: scales inline
    units, unit_bytes = shape.units, shape.cluster_size * per_neuron
    fixed = shape.resident_bytes(kv_capacity, predictors=False) - shape.scale_bytes_total()
    if ffn_fraction is not None:
        resident_units = int(ffn_fraction * units)
    else:
        spare = memory_bytes - fixed
        if spare < 0:
            raise BudgetError(
                f"memory budget {memory_bytes} bytes is below the minimum {fixed} bytes for "
                f"{shape.name} (non-FFN weights and KV cache)"
            )
        resident_units = min(units, spare // unit_bytes // shape.num_ffns)
    used = fixed + resident_units * unit_bytes * shape.num_ffns
    mem = dense = profile.dense_gbs * 1e9
    seq = profile.sequential_mbs * 1e6
    attention, head = shape.attention_bytes() / mem + overhead_s, shape.head_bytes() / mem
    experts = cfg.num_experts_per_tok if cfg.is_moe else 1
    in_mem = resident_units * unit_bytes
    streamed = (units - resident_units) * unit_bytes
    timeline, now = Timeline(), 0.0
    for i in range(cfg.num_layers):
        spans = [("attention", attention, 0)]
        for _ in range(experts):
            spans += [
                ("compute", in_mem / dense, resident_units),
                ("wait", streamed / seq, 0),
                ("compute", streamed / dense, units - resident_units),
            ]
        for stage, dur, n in spans:
            if stage == "wait" and dur > 0:
                timeline.events.append(
                    Event(
                        stage="read",
                        layer=i,
                        start=now,
                        end=now + dur,
                        thread="io0",
                        units=n,
                        nbytes=streamed,
                    )
                )
            timeline.events.append(
                Event(stage=stage, layer=i, start=now, end=now + dur, thread="compute", units=n)
            )
            now += dur
    timeline.events.append(
        Event(stage="head", layer=-1, start=now, end=now + head, thread="compute")
    )
    per_layer_wait = experts * streamed / seq
    full = np.ones(tokens)
    L = cfg.num_layers
    return _result(
        "llama.cpp-mmap",
        shape,
        profile,
        full * (now + head),
        (full * L * experts * streamed).astype(np.int64),
        (full * L * experts * resident_units).astype(np.int64),
        (full * L * experts * units).astype(np.int64),
        full * L * per_layer_wait,
        full * L * experts * (in_mem + streamed) / dense,
        full * L * attention,
        head,
        resident_units,
        used,
        warmup,
        timeline,
    )


__all__ = ["SIM_ENGINES", "SimResult", "simulate_decode"]
