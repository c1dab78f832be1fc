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
- the scheduler itself: :func:`~pi2lab.pipeline.scheduler.run_ffn`, the engine's ordering
  rules (misses requested-first, then bypassed, then read-ahead; ``depth`` units in flight;
  hits in chunks with reads topped up between them; the matrix barrier; gate-first; staging
  rows), runs on :class:`~pi2lab.plan.virtual.VirtualFfn`, whose reads are coalesced by the
  I/O engine's own :func:`~pi2lab.storage.io.coalesce` (a conformance test checks that both
  issue the same reads);
- ``bundling`` (the flash layout): ``neuron``, one bundle per unit (gate row, up row, down
  column: PowerInfer-2's neuron bundling), one read; ``none`` (the ablation baseline), a miss is
  three reads, its gate row, up row and down column, each from its own matrix-major region of
  the FFN's file (down stored transposed, as PowerInfer does), so the rows of adjacent units are
  adjacent on flash, each row computed as it lands (a third of the unit's compute);
  ``row-column`` (LLM in a Flash's row-column bundling, made for a two-matrix FFN), two reads:
  the gate row from the gate matrix's region, then the up row and down column bundled (phase
  :data:`ROW_COLUMN`, a simulated layout), each computed as it lands (a third, two thirds);

What replaces the device (the model):

- attention + predictor, per layer: (attention weights + predictors run) bytes / ``dense_gbs``
  (the profile's rate for resident weights, the rate its in-memory decode speed was fitted
  with, and the cost model's); the LM head likewise, once per token;
- FFN compute: bytes of the bundles computed (payload + their resident scales) / ``sparse_gbs``;
  a gate-first gate row costs a third of that, its up/down the rest;
- reads: ``io_threads`` FIFO servers; a read of ``b`` bytes (its 4 KiB-aligned span, as O_DIRECT
  reads it) keeps one server busy ``b * k / read_mbs(b, k)`` seconds for ``k`` I/O threads (the
  profile's rates are aggregate over ``k`` issuing threads), so a coalesced read of adjacent
  units runs at the larger block's rate. A profile with a flash model (the phones) has one
  command queue: one server, each read taking ``b / read_mbs(b, k, span)`` with ``span`` the
  address range of the FFN's file (one layer's, or one expert's, FFN: the reads of a layer
  stay within it, as the paper's 128 MB benchmark range does);
- who issues the reads (``issue``): ``queued``, the pipeline's ``io_threads`` I/O threads keep
  the device's queue full (PowerInfer-2's one I/O thread); ``blocking``, the ``cpu_threads``
  compute threads (or a reader pool as large) each issue a read and wait for it, as llama.cpp's
  page faults and LLM in a Flash's parallel reads do: ``k = cpu_threads`` issuers, and on a
  flash model each read at the blocking rate
  (:attr:`~pi2lab.plan.hardware.FlashModel.blocking_4k_mbs`);
- gate-first: a gate fires with probability ``gate_fire_rate`` (default 0.8: the paper's gate,
  up and down co-activate ~80% of the time), drawn from a seeded generator; a silent gate
  drops the unit from the cache as the scheduler does;
- ``llama.cpp-mmap``: no predictor, dense FFN, from a memory-mapped file through an LRU page
  cache: page faults read 128 KiB read-around windows on the compute threads, no overlap
  (:mod:`pi2lab.plan.mmap_baseline`; GGUF blocks carry their scales, so they count as FFN
  bytes there). MoE: the trace says which experts each token runs.

Left out: KV-cache reads in attention and their growth with context; thread contention between
compute and I/O; predictor misses (the trace *is* what the predictor asked for); the paper's
NPU/CPU split and multiple compute threads (one compute thread whose rate is the phone's
aggregate); prefill; storage queueing beyond FIFO servers; the time to submit a read or run the
cache (zero on the virtual clock). MoE experts of a layer run one after
another, routed experts read from the trace (an expert is routed when any of its units is
needed); an expert's cache ages with the tokens that expert runs (a window of k tokens is its
own last k, as the trace's reuse is over its own tokens).

Per-token order: layers run in sequence and every read of a layer completes before the next
layer starts (the scheduler waits for its read-ahead too), so each FFN's time depends only on its
own cache; the simulation runs layer by layer over all tokens and sums.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from pi2lab.budget import MemoryBudget
from pi2lab.cache import NeuronCache
from pi2lab.config import ModelConfig
from pi2lab.engine.offload import OffloadConfig
from pi2lab.errors import ConfigError
from pi2lab.kernels.sparse_plan import SparsePlan
from pi2lab.pipeline.scheduler import (
    PipelineConfig,
    check_gate_first,
    phase_spans,
    run_ffn,
    staging_rows,
)
from pi2lab.pipeline.timeline import Event
from pi2lab.plan.hardware import HardwareProfile
from pi2lab.plan.mmap_baseline import simulate_mmap
from pi2lab.plan.shapes import ModelShape, get_shape
from pi2lab.plan.sim_result import SimResult, layer_timeline, make_result, shifted
from pi2lab.plan.traces import SyntheticTrace
from pi2lab.plan.virtual import ROW_COLUMN, Costs, VirtualFfn
from pi2lab.policies import Policy

SimEngine = Literal["powerinfer2", "llmflash", "llama.cpp-mmap"]
SIM_ENGINES: tuple[str, ...] = ("powerinfer2", "llmflash", "llama.cpp-mmap")
ReadIssue = Literal["queued", "blocking"]
READ_ISSUES: tuple[str, ...] = ("queued", "blocking")
Bundling = Literal["neuron", "row-column", "none"]
BUNDLINGS: tuple[str, ...] = ("neuron", "row-column", "none")


def layout_spans(bundling: str, stride: int, gate_bytes: int, unit_bytes: int, units: int):
    """:func:`~pi2lab.pipeline.scheduler.phase_spans` with :data:`ROW_COLUMN` appended, the
    phases one miss is read in for ``bundling``, and the address range (bytes) of the FFN's
    file that its reads spread over."""
    step, base, size = phase_spans(stride, gate_bytes, unit_bytes, units)
    row = unit_bytes // 3
    step, base, size = (
        np.append(step, 2 * row),
        np.append(base, units * row),
        np.append(size, 2 * row),
    )
    pieces = {"neuron": (0,), "none": (3, 4, 5), "row-column": (3, ROW_COLUMN)}[bundling]
    span = units * stride if bundling == "neuron" else 3 * units * row
    return (step, base, size), pieces, span


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


def shape_minimum(shape: ModelShape, pipeline: PipelineConfig, kv_capacity: int):
    """What the offload engine holds for ``shape`` before its cache: ``(fixed bytes, staging
    rows)`` (resident weights, predictors, scales and an f16 KV cache; staging rows of one
    stride each)."""
    return shape.resident_bytes(kv_capacity), staging_rows(pipeline, shape.stride)


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
    bundling: Bundling = "neuron",
    issue: ReadIssue = "queued",
    copies: int = 0,
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
      bundling: The flash layout a miss is read from: ``neuron`` bundles (one read),
        ``row-column`` (gate row, then up row and down column: two reads) or ``none`` (three
        row reads); see the module docstring. Gate-first loading needs ``neuron``.
      issue: ``queued`` (the pipeline's I/O threads keep reads queued) or ``blocking`` (the
        profile's ``cpu_threads`` threads each wait for their read; see the module docstring).
      copies: Memory copies of a unit's bytes (its stride) per unit read, on the compute thread
        at the profile's ``memory_gbs`` (LLM in a Flash moves rows within preallocated
        matrices: 2).

    Raises:
      ConfigError: unknown engine or shape, both or neither budget, a trace of the wrong shape.
      BudgetError: ``memory_bytes`` below the resident minimum (the message gives it).
    """
    shape = _as_shape(shape_or_config)
    cfg = shape.config
    if engine not in SIM_ENGINES:
        raise ConfigError(f"engine {engine!r}: expected one of {', '.join(SIM_ENGINES)}")
    if issue not in READ_ISSUES:
        raise ConfigError(f"issue={issue!r}: expected one of {', '.join(READ_ISSUES)}")
    if bundling not in BUNDLINGS:
        raise ConfigError(f"bundling={bundling!r}: expected one of {', '.join(BUNDLINGS)}")
    if copies < 0:
        raise ConfigError(f"copies={copies}: expected >= 0")
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
    if engine == "llama.cpp-mmap":
        # dense: the trace only says which experts each token runs
        routed = (lambda i: _layer_masks(trace, i, shape, tokens).any(-1)) if cfg.is_moe else None
        args = (shape, profile, memory_bytes, ffn_fraction, tokens, kv_capacity, warmup)
        return simulate_mmap(*args, overhead_s, routed)
    offload = OffloadConfig(
        engine=engine,
        memory_budget=0.0,
        pipeline=pipeline,
        policy=policy,
        hot_fraction=hot_fraction,
        hot_region=hot_region,
    )
    pipe = offload.pipeline_config()
    if pipe.gate_first and bundling != "neuron":
        raise ConfigError(
            f"simulate_decode: gate-first loading reads neuron bundles: needs "
            f"bundling='neuron', got {bundling!r}"
        )
    check_gate_first(pipe, shape.cluster_size, cfg.ffn_activation)

    # memory, as OffloadEngine: resident + KV, staging rows, then cache slots per FFN
    stride, units = shape.stride, shape.units
    fixed, stage_rows = shape_minimum(shape, pipe, kv_capacity)
    budget = (
        MemoryBudget.share(ffn_fraction)
        if memory_bytes is None
        else MemoryBudget.bytes(memory_bytes)
    )
    per_ffn = budget.cache_units(
        minimum=fixed + stage_rows * stride,
        unit_bytes=stride,
        units=units,
        ffns=shape.num_ffns,
        parts={
            f"{shape.name}'s resident weights, predictors, scales and KV cache": fixed,
            "staging": stage_rows * stride,
        },
    )
    used = fixed + stage_rows * stride + per_ffn * stride * shape.num_ffns

    blocking = issue == "blocking"
    k = profile.cpu_threads if blocking else pipe.io_threads
    # a phone's flash has one command queue: one server whatever the issuing threads, each read
    # over the address range of its FFN's file (the reads of a layer stay within it)
    spans, pieces, span = layout_spans(bundling, stride, shape.gate_bytes, shape.unit_bytes, units)
    servers = 1 if profile.flash is not None else k
    rates: dict[int, float] = {}

    def read_rate(nbytes: int) -> float:
        if nbytes not in rates:
            mbs = profile.read_mbs(nbytes, k, span=span, blocking=blocking)
            rates[nbytes] = nbytes * servers / (mbs * 1e6)
        return rates[nbytes]

    per_neuron = shape.bundle_bytes + shape.scale_bytes_per_neuron
    sparse = profile.sparse_gbs * 1e9
    # host time per piece read: the fitted per-read cost, and a unit's copies shared by its pieces
    copy = copies * stride / (profile.memory_gbs * 1e9) / len(pieces)
    costs = Costs(
        unit=shape.cluster_size * per_neuron / sparse,
        gate=shape.cluster_size * per_neuron / 3 / sparse,
        spans=spans,
        servers=servers,
        coalesce=pipe.coalesce,
        read_rate=read_rate,
        per_read=read_overhead_s + copy,
    )
    mem = profile.dense_gbs * 1e9  # resident weights: the profile's fitted compute rate
    moe = cfg.is_moe
    experts = cfg.num_experts if moe else 1
    attention = shape.attention_bytes() / mem + overhead_s
    predictor = shape.predictor_bytes() / mem
    head = shape.head_bytes() / mem

    secs, wait, comp, att = (np.zeros(tokens) for _ in range(4))
    nbytes, hits, req, nreads = (np.zeros(tokens, np.int64) for _ in range(4))
    layer_secs = np.zeros(cfg.num_layers)  # the last token's, for its timeline
    events: list[list[Event]] = []
    last = tokens - 1
    for i in range(cfg.num_layers):
        masks = _apply_plan(_layer_masks(trace, i, shape, tokens), plan, shape, i)
        masks = masks if moe else masks[:, None]  # [T, E, U]
        routed = masks.any(-1)  # [T, E]
        caches, ffns = [], []
        hot_units = plan.layers[i].hot // shape.cluster_size if plan is not None else 0
        for e in range(experts):
            caches.append(NeuronCache(offload.policy_for(units, per_ffn), units, per_ffn))
            rng = np.random.default_rng([seed, i, e])
            ffns.append(VirtualFfn(costs, gate_fire_rate, rng))
        split = max(getattr(caches[0].state, "hot_units", 0), hot_units)
        # an expert's cache ages with the tokens that expert runs (its own token sequence, as
        # the trace's reuse is): a window of k tokens is the expert's last k (dense: every token)
        ran = np.cumsum(routed, axis=0) - 1  # [T, E]
        layer_events: list[Event] = []
        for t in range(tokens):
            front = attention + predictor * (int(routed[t].sum()) if moe else 1)
            record = [] if t == last else None
            clock = front
            for e in np.flatnonzero(routed[t]):
                need = np.flatnonzero(masks[t, e])
                sub = [] if record is not None else None
                ffn = ffns[e]
                ffn.start(i, sub)
                acc = run_ffn(
                    ffn,
                    caches[e],
                    need,
                    int(ran[t, e]),
                    pipe,
                    staging_rows=stage_rows,
                    gate_first_from=split,
                    pieces=pieces,
                )
                if sub is not None:
                    record.extend(shifted(sub, clock))
                clock += ffn.now
                wait[t] += ffn.wait
                comp[t] += ffn.busy
                nbytes[t] += ffn.nbytes
                nreads[t] += ffn.reads
                hits[t] += acc.hits.size
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
    timeline = layer_timeline(events, layer_secs, head)
    return make_result(
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
        nreads,
    )


__all__ = [
    "BUNDLINGS",
    "READ_ISSUES",
    "ROW_COLUMN",
    "SIM_ENGINES",
    "Bundling",
    "ReadIssue",
    "SimResult",
    "layout_spans",
    "shape_minimum",
    "simulate_decode",
]
