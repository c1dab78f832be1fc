"""The neuron-cluster pipeline: one FFN's units computed while the missing ones are read.

Per decode token and FFN, the engine names the units it needs (hot block plus the clusters the
predictor marks active). The neuron cache splits them into hits (resident, in a cache slot),
admitted misses (read straight into the slot the policy frees) and bypassed misses (read into a
staging row, used once). Then, by overlap mode:

- ``none``: read every miss, wait, then compute everything (no overlap).
- ``matrix``: compute the hits while the misses are read; wait for all of them (a barrier per
  FFN matrix set, as LLM in a Flash loads a layer's rows before using them); compute them.
- ``cluster``: compute the hits while the misses are read, then each arriving read's units as
  soon as it lands, keeping ``depth`` units in flight (PowerInfer-2: no barrier between
  clusters). With ``gate_first`` (units of one neuron, ReLU-family FFNs) a miss is read in two
  phases: its gate row, then up and down only for neurons whose gate fires.

Cross-layer prefetch (``prefetch`` layers ahead, :class:`Prefetcher`): when an FFN is done, the
units a later layer is predicted to need and does not hold are read into a pool of rows while
the next layers' attention and FFNs run; when that layer's turn comes, a miss found in the pool
is copied from it (once its read lands) instead of being read.

All arithmetic is float32 NumPy on the host (BLAS matrix-vector products release the GIL, so
the I/O threads' reads proceed meanwhile). Units are computed in the neuron order the model
was profiled in; only the set, not the order of the sums, matches in-memory sparse decode.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import itertools
import queue
from typing import Literal, NamedTuple, Protocol

import numpy as np

from pi2lab.cache.neuron_cache import NeuronCache
from pi2lab.config import Activation
from pi2lab.errors import ConfigError
from pi2lab.ffi import bundle_ffn, native_built
from pi2lab.pipeline.timeline import Timeline
from pi2lab.storage.io import IOEngine, ReadRequest, aligned_empty
from pi2lab.storage.layout import BITS, FlashLayout

OverlapMode = Literal["none", "matrix", "cluster"]
RUN = 16  # slot runs at least this long are computed in place rather than gathered
CHUNK = 256  # resident units computed between two looks at the read queue


def _split(chunks, size: int):
    """``(rows, units)`` pieces of at most ``size`` units (rows: a slice or an index array)."""
    for rows, units in chunks:
        for a in range(0, units.size, size):
            if isinstance(rows, slice):
                yield (
                    slice(rows.start + a, min(rows.start + a + size, rows.stop)),
                    units[a : a + size],
                )
            else:
                yield rows[a : a + size], units[a : a + size]


@dataclasses.dataclass(frozen=True, kw_only=True)
class PipelineConfig:
    """How reads and compute interleave.

    Attributes:
      mode: ``none``, ``matrix`` (LLM in a Flash) or ``cluster`` (PowerInfer-2).
      depth: Units in flight at once (cluster mode); also the staging rows for bypassed units.
      batch: Cluster mode: arrived units computed together (fewer, larger products).
      io_threads: Reader threads (PowerInfer-2 argues for one).
      gate_first: Read gate rows first and up/down only where the gate fires.
      coalesce: Merge reads of adjacent units.
      prefetch: Cross-layer prefetch depth: when layer ``l``'s FFN is done, layer
        ``l + prefetch``'s predicted units are read ahead (0: off). Decode of dense-FFN
        models only (an MoE layer's experts are not known before its router runs).
      prefetch_units: At most this many units read ahead per layer (the pool holds
        ``prefetch * prefetch_units`` rows).
    """

    mode: OverlapMode = "cluster"
    depth: int = 64
    batch: int = 16
    io_threads: int = 1
    gate_first: bool = False
    coalesce: bool = True
    prefetch: int = 0
    prefetch_units: int = 256

    def __post_init__(self):
        if self.mode not in ("none", "matrix", "cluster"):
            raise ConfigError(f"overlap mode {self.mode!r}: expected none, matrix or cluster")
        if self.prefetch < 0 or self.prefetch_units < 1:
            raise ConfigError(
                f"prefetch {self.prefetch}, prefetch_units {self.prefetch_units}: expected a "
                "depth >= 0 (0 = off) and at least one unit per layer"
            )
        if min(self.depth, self.io_threads, self.batch) < 1:
            raise ConfigError(
                f"pipeline depth {self.depth}, io_threads {self.io_threads}, batch "
                f"{self.batch}: expected each >= 1"
            )


def activation(g: np.ndarray, u: np.ndarray, kind: Activation, threshold: float) -> np.ndarray:
    """NumPy twin of :func:`pi2lab.model.layers.ffn_activation`."""
    if kind == "silu":
        return g / (1.0 + np.exp(-g)) * u
    if kind == "relu":
        return np.maximum(g, 0) * u
    if kind == "drelu":
        return np.maximum(g, 0) * np.maximum(u, 0)
    if kind == "fatrelu":
        return np.where(g > threshold, g, 0) * u
    raise ConfigError(f"unknown FFN activation {kind!r}")


def gate_fires(g: np.ndarray, kind: Activation, threshold: float) -> np.ndarray:
    """Where a neuron's gate output leaves its activation possibly non-zero."""
    if kind == "silu":
        return np.ones(g.shape, bool)
    return g > (threshold if kind == "fatrelu" else 0)


def runs(slots: np.ndarray) -> tuple[list[tuple[int, int]], np.ndarray]:
    """Sorted slots -> runs ``(start, stop)`` of at least RUN consecutive slots, and the rest."""
    if slots.size == 0:
        return [], slots
    bounds = [0, *(np.flatnonzero(np.diff(slots) != 1) + 1).tolist(), slots.size]
    long, rest = [], []
    for a, b in itertools.pairwise(bounds):
        if b - a >= RUN:
            long.append((int(slots[a]), int(slots[b - 1]) + 1))
        else:
            rest.append(slots[a:b])
    return long, np.concatenate(rest) if rest else slots[:0]


class FfnStore:
    """One FFN's resident weights: cache slots ``[S, stride]`` and staging rows, as raw bytes
    in the flash layout (a read lands in a slot without a copy)."""

    def __init__(self, layout: FlashLayout, index: int, cache: NeuronCache, scales, staging):
        self.layout, self.index, self.cache, self.scales = layout, index, cache, scales
        self.slots = staging.allocate(cache.capacity)
        self.staging = staging
        # gate-first loading applies from this unit on: past the plan's hot block and a
        # segmented policy's hot region (whose clusters are read whole)
        self.gate_first_from = getattr(cache.state, "hot_units", 0)

    def compute(self, x: np.ndarray, src: np.ndarray, rows, units: np.ndarray, kind, thr):
        """FFN contribution ``[..., D]`` of ``units`` whose bytes are ``src[rows]``
        (``rows``: an index array, gathered, or a slice, read in place)."""
        if self.scales is not None and x.ndim == 1 and native_built():
            # quantized units computed where they lie by the native kernels
            at = np.arange(len(src))[rows] if isinstance(rows, slice) else rows
            bits = BITS[self.layout.dtype]
            c = self.layout.cluster_size
            return bundle_ffn(x, src, at, units, self.scales, c, bits, kind, thr)
        raw = src[rows]
        if self.scales is None and self.layout.dtype == "f32" and x.ndim == 1:
            # bundles [n, 3, D] as [3n, D] rows: one contiguous matrix-vector product gives
            # gate and up (and a wasted down dot), far faster than two strided products;
            # down is then read only for the neurons whose activation is non-zero
            b = self.layout.unit_view(raw).reshape(-1, 3, x.shape[-1])
            y = (b.reshape(-1, x.shape[-1]) @ x).reshape(-1, 3)
            h = activation(y[:, 0], y[:, 1], kind, thr)
            nz = np.flatnonzero(h)
            if nz.size > 0.6 * h.size:
                return h @ b[:, 2]
            return h[nz] @ b[nz, 2]
        gate, up, down = self.layout.decode_units(raw, self.scales, units)
        h = activation(x @ gate.T, x @ up.T, kind, thr)
        return h @ down


STREAM_BYTES = 4 << 20
"""Staging for streamed (dense) FFN parts, at least."""


def staging_rows(config: PipelineConfig, stride: int) -> int:
    """Staging rows the engine holds: ``depth`` (bypassed units in flight) or
    :data:`STREAM_BYTES` worth of rows, whichever is more."""
    return max(config.depth, -(-STREAM_BYTES // stride))


def prefetch_rows(config: PipelineConfig) -> int:
    """Rows of the cross-layer prefetch pool (one block of ``prefetch_units`` per layer ahead)."""
    return config.prefetch * config.prefetch_units


class Buffers:
    """The engine's aligned byte arrays, counted for the memory budget: ``rows`` are the
    staging rows (streamed and bypassed units); :meth:`allocate` makes cache slots."""

    def __init__(self, stride: int, rows: int):
        self.stride = stride
        self.nbytes = 0
        self.rows = self.allocate(rows)

    def allocate(self, units: int) -> np.ndarray:
        self.nbytes += units * self.stride
        return aligned_empty(max(units, 1) * self.stride).reshape(max(units, 1), self.stride)


Unit = tuple[int, int, int]
"""A read's unit ``(unit, slot, phase)``: slot ``s >= 0`` a cache slot, ``-1`` a staging row
still to be assigned, ``-2 - r`` staging row ``r``; phase 0 the whole unit, 1 its gate row, 2 its
up and down rows (gate-first), 3-5 its gate, up and down rows from matrix-major regions (an
unbundled layout; simulated only)."""


def phase_spans(stride: int, gate_bytes: int, unit_bytes: int, units: int):
    """Where each phase's bytes of unit ``u`` lie in an FFN's file: ``u * step[p] + base[p]``,
    ``size[p]`` bytes (int64 arrays indexed by phase)."""
    row = unit_bytes // 3
    step = np.array([stride] * 3 + [row] * 3, np.int64)
    base = np.array([0, 0, gate_bytes, 0, units * row, 2 * units * row], np.int64)
    size = np.array([stride, gate_bytes, unit_bytes - gate_bytes, row, row, row], np.int64)
    return step, base, size


def resident_chunks(slots: np.ndarray, units: np.ndarray) -> list:
    """``(rows, units)`` pieces in which resident ``units`` (in cache ``slots``) are computed:
    long runs of consecutive slots in place (``rows`` a slice), the rest gathered (an index
    array), each at most CHUNK units."""
    order = np.argsort(slots)
    slots, units = slots[order], units[order]
    long, rest = runs(slots)
    chunks = [
        (slice(a, b), units[i : i + b - a])
        for a, b in long
        for i in [int(np.searchsorted(slots, a))]
    ]
    if rest.size:
        chunks.append((rest, units[np.isin(slots, rest)]))
    return list(_split(chunks, CHUNK))


class Backend(Protocol):
    """What the pipeline's ordering runs on: the engine's reads and NumPy compute
    (:class:`FlashBackend`), or the simulator's virtual read servers and compute costs
    (:class:`pi2lab.plan.virtual.VirtualFfn`)."""

    pending: int
    """Reads submitted and not yet taken."""

    def submit(self, batch: list[Unit]) -> None:
        """Issues reads for ``batch`` (coalesced as the I/O engine does), first unit first."""

    def take(self, at_least: int) -> list[Unit]:
        """The units of completed reads; waits (a ``wait`` span) until ``at_least`` are in or
        no read is pending."""

    def resident(self, rows, units: np.ndarray) -> None:
        """Computes one chunk of resident ``units`` (cache rows ``rows``)."""

    def arrived(self, gates: list[Unit], ready: list[Unit], count: int) -> np.ndarray:
        """One ``compute`` span for ``count`` arrived units: decides whether each gate-first
        gate row in ``gates`` fires (returned), computes the ``ready`` units."""


def run_ffn(
    backend: Backend,
    cache: NeuronCache,
    units: np.ndarray,
    t: int,
    config: PipelineConfig,
    *,
    staging_rows: int,
    gate_first_from: int = 0,
    pieces: tuple[int, ...] = (0,),
):
    """Runs one FFN's token: the cache access for ``units``, then reads and compute in the
    order ``config`` sets (see the module docstring). Returns the cache's access.

    The ordering rules, in one place for the engine and the simulator: misses are read
    requested-first (admitted, then bypassed into staging rows, which must be free), then the
    policy's read-ahead; ``depth`` units in flight in cluster mode, everything at once otherwise;
    hits computed in chunks, cluster mode topping up reads between chunks; arrived units
    computed ``batch`` at a time (cluster), after a barrier (matrix), or before the hits
    (none); a gate-first unit's up and down rows are read next, ahead of the queue, only when
    its gate fires, and a silent one leaves the cache.

    Args:
      pieces: The phases a miss is read in (``(0,)`` bundles; ``(3, 4, 5)`` unbundled rows).
    """
    acc = cache.access(units, t)
    wanted = np.isin(acc.admit, units)  # the rest is read-ahead: loaded, not computed
    split = gate_first_from if config.gate_first else None
    todo = collections.deque(
        (u, s, ph)
        for u, s in [
            *zip(acc.admit[wanted].tolist(), acc.admit_slots[wanted].tolist(), strict=True),
            *((u, -1) for u in acc.bypass.tolist()),
        ]
        for ph in ((1,) if split is not None and u >= split else pieces)
    )
    todo.extend(
        (u, s, ph)
        for u, s in zip(acc.admit[~wanted].tolist(), acc.admit_slots[~wanted].tolist(), strict=True)
        for ph in pieces
    )
    requested = set(units.tolist())
    free_rows = list(range(staging_rows))
    mode = config.mode
    limit = config.depth if mode == "cluster" else len(todo)
    inflight = 0  # units submitted, not yet consumed

    def submit():
        nonlocal inflight
        batch = []
        while todo and inflight + len(batch) < limit:
            u, s, phase = todo[0]
            if s == -1:
                if not free_rows:
                    break
                s = -2 - free_rows.pop()
            todo.popleft()
            batch.append((u, s, phase))
        if batch:
            backend.submit(batch)
        inflight += len(batch)

    def consume(arrived: list[Unit]):
        nonlocal inflight
        inflight -= len(arrived)
        gates = [a for a in arrived if a[2] == 1]
        ready = [a for a in arrived if a[2] != 1 and (a[1] < -1 or a[0] in requested)]
        finished = [s for _, s, phase in arrived if phase != 1]  # done with staging rows
        fires = backend.arrived(gates, ready, len(arrived))
        if gates:
            todo.extendleft((u, s, 2) for (u, s, _), f in zip(gates, fires, strict=True) if f)
            silent = [(u, s) for (u, s, _), f in zip(gates, fires, strict=True) if not f]
            cache.discard(np.array([u for u, s in silent if s >= 0], np.int64))
            finished += [s for _, s in silent]
        free_rows.extend(-2 - s for s in finished if s < -1)

    def step(at_least: int):
        consume(backend.take(at_least))
        submit()

    def resident(between):
        for rows, us in resident_chunks(acc.hit_slots, acc.hits):
            backend.resident(rows, us)
            if between is not None:
                between()

    submit()
    if mode != "none":  # cluster: arrived reads are computed between chunks of hits
        resident((lambda: step(0)) if mode == "cluster" else None)
    while backend.pending:
        step(min(config.batch, inflight) if mode == "cluster" else inflight)
    if mode == "none":
        resident(None)
    return acc


class FlashBackend:
    """The engine's backend for one FFN and token: reads from the flash layout through the
    :class:`~pi2lab.storage.io.IOEngine` into cache slots and staging rows, NumPy compute of
    input ``x`` into :attr:`out`; ``log`` (a list) receives ``(file, offset, nbytes, units)`` per
    read issued."""

    def __init__(self, scheduler: Scheduler, store: FfnStore, layer: int, x, log=None, ahead=None):
        self.s, self.store, self.layer, self.x, self.log = scheduler, store, layer, x, log
        self.ahead = ahead or {}  # unit -> (pool row, Read): read ahead by the Prefetcher
        self.out = np.zeros(store.layout.config.hidden_size, np.float32)
        self.pending = 0
        self.done = queue.SimpleQueue()  # reads land here as they complete (I/O threads put)

    def _copy_when_landed(self, row, read, dest, a: int, b: int, tag) -> None:
        """A unit read ahead: copies its bytes ``[a, b)`` from the pool row into ``dest`` once
        the read lands (on the I/O thread that finishes it, or here if it has)."""

        def land(future):
            if future.exception() is None:
                dest[a:b] = row[a:b]
            self.done.put(Landed(future, (tag,)))

        self.pending += 1
        read.future.add_done_callback(land)

    def submit(self, batch):
        store, step, base, size = self.store, *self.s.spans
        requests = []
        for u, s, phase in batch:
            dest = store.slots[s] if s >= 0 else store.staging.rows[-2 - s]
            a = int(base[phase])
            b = a + int(size[phase])
            tag = (self.layer, u, s, phase)
            if u in self.ahead and phase < 3:  # bundle phases of a unit in the pool
                self._copy_when_landed(*self.ahead[u], dest, a, b, tag)
                continue
            off = u * int(step[phase]) + a
            requests.append(ReadRequest(store.index, off, b - a, dest[a:b], tag))
        for r in self.s.io.submit(requests):
            r.future.add_done_callback(lambda _, r=r: self.done.put(r))
            self.pending += 1
            if self.log is not None:
                self.log.append((r.file, r.offset, r.nbytes, len(r.requests)))

    def take(self, at_least):
        got = []
        while self.pending:
            try:
                r = self.done.get_nowait()
            except queue.Empty:
                if len(got) >= at_least:
                    break
                with self.s.timeline.span("wait", self.layer):
                    r = self.done.get()
            r.future.result()  # a failed read raises its StorageError here
            self.pending -= 1
            got.extend(tag[1:] for tag in r.tags)
        return got

    def resident(self, rows, units):
        with self.s.timeline.span("compute", self.layer, units.size):
            self.out += self.store.compute(self.x, self.store.slots, rows, units, *self.s.act)

    def arrived(self, gates, ready, count):
        store = self.store
        with self.s.timeline.span("compute", self.layer, count):
            fires = self.s.gate_fires(store, self.x, gates) if gates else None
            cached = [(u, s) for u, s, _ in ready if s >= 0]
            staged = [(u, -2 - s) for u, s, _ in ready if s < -1]
            for src, pairs in ((store.slots, cached), (store.staging.rows, staged)):
                if pairs:
                    pairs = np.array(pairs)
                    self.out += store.compute(self.x, src, pairs[:, 1], pairs[:, 0], *self.s.act)
        return fires


class Landed(NamedTuple):
    """A unit taken from the prefetch pool, queued as a read of its own would be."""

    future: concurrent.futures.Future
    tags: tuple


class Prefetcher:
    """Cross-layer prefetch (``config.prefetch`` layers ahead): :meth:`issue` reads the units a
    later layer is predicted to need and does not hold into a block of pool rows; :meth:`take`
    hands that layer its block (unit -> pool row and read) for :class:`FlashBackend`, which
    copies a miss from the pool instead of reading it. Blocks are reused once their reads are
    done; :meth:`reset` waits for every read in flight (a token's end, or an error mid-token)."""

    def __init__(self, layout: FlashLayout, io: IOEngine, config: PipelineConfig, buffers):
        self.layout, self.io, self.limit = layout, io, config.prefetch_units
        rows = buffers.allocate(prefetch_rows(config))
        self.blocks = [rows[b * self.limit : (b + 1) * self.limit] for b in range(config.prefetch)]
        self.free = list(range(config.prefetch))
        self.issued: dict[int, tuple[int, dict]] = {}  # layer -> (block, {unit: (row, Read)})
        self.log: list | None = None  # (file, offset, nbytes, units) per read, as Scheduler.log

    def issue(self, layer: int, store: FfnStore, units: np.ndarray) -> int:
        """Reads ahead the ``units`` of ``layer`` (FFN ``store``) that are not resident, at most
        ``prefetch_units`` of them, first first; returns how many."""
        if layer in self.issued or not self.free:
            return 0
        units = units[store.cache.slot_of[units] < 0][: self.limit]
        if units.size == 0:
            return 0
        block = self.free.pop()
        rows, stride = self.blocks[block], self.layout.stride
        requests = [
            ReadRequest(store.index, int(u) * stride, stride, rows[k], (layer, int(u)))
            for k, u in enumerate(units.tolist())
        ]
        ahead = {}
        for r in self.io.submit(requests):
            if self.log is not None:
                self.log.append((r.file, r.offset, r.nbytes, len(r.requests)))
            for req in r.requests:
                ahead[req.tag[1]] = (req.dest, r)
        self.issued[layer] = (block, ahead)
        return units.size

    def take(self, layer: int) -> dict:
        """The units read ahead for ``layer`` (unit -> (pool row, Read)); empty if none."""
        return self.issued.get(layer, (None, {}))[1]

    def release(self, layer: int) -> None:
        """Frees ``layer``'s block once its reads are done (a read still in flight would
        otherwise land in the block's next use)."""
        if layer in self.issued:
            block, ahead = self.issued.pop(layer)
            concurrent.futures.wait([r.future for _, r in ahead.values()])
            self.free.append(block)

    def reset(self) -> None:
        for layer in list(self.issued):
            self.release(layer)


class Scheduler:
    """Runs one FFN for one token under a :class:`PipelineConfig` on the engine's
    :class:`FlashBackend` (see the module docstring)."""

    def __init__(
        self,
        layout: FlashLayout,
        io: IOEngine,
        config: PipelineConfig,
        timeline: Timeline,
    ):
        self.layout, self.io, self.config, self.timeline = layout, io, config, timeline
        cfg = layout.config
        self.act = (cfg.ffn_activation, cfg.activation_threshold)
        check_gate_first(config, layout.cluster_size, cfg.ffn_activation)
        gate_bytes = cfg.hidden_size * BITS[layout.dtype] // 8
        self.spans = phase_spans(layout.stride, gate_bytes, layout.unit_bytes, layout.units)
        self.log: list | None = None  # a list: every read issued goes here (see FlashBackend)

    def compute_resident(self, store, layer, x, units, slots):
        """The FFN contribution of resident ``units`` (in ``slots``) for ``x [..., D]``."""
        out = 0.0
        for rows, us in resident_chunks(slots, units):
            with self.timeline.span("compute", layer, us.size):
                out = out + store.compute(x, store.slots, rows, us, *self.act)
        return out

    def gate_fires(self, store, x, gates: list[Unit]) -> np.ndarray:
        """Whether each gate-first unit of ``gates`` (gate row read) has a firing gate."""
        units = np.array([u for u, _, _ in gates])
        slots = np.array([s for _, s, _ in gates])
        fires = np.empty(len(gates), bool)
        for src, pick, rows in (
            (store.slots, slots >= 0, slots),
            (store.staging.rows, slots < 0, -2 - slots),
        ):
            if pick.any():
                gate, _, _ = self.layout.decode_units(src[rows[pick]], store.scales, units[pick])
                fires[pick] = gate_fires(gate @ x, *self.act)
        return fires

    def run(
        self,
        store: FfnStore,
        layer: int,
        x: np.ndarray,
        units: np.ndarray,
        t: int,
        ahead: dict | None = None,
    ):
        """The FFN output ``[D]`` for input ``x [D]``, computing exactly ``units``; ``ahead``:
        the units read ahead for this layer (:meth:`Prefetcher.take`)."""
        backend = FlashBackend(self, store, layer, x, self.log, ahead)
        run_ffn(
            backend,
            store.cache,
            units,
            t,
            self.config,
            staging_rows=len(store.staging.rows),
            gate_first_from=store.gate_first_from,
        )
        return backend.out


def check_gate_first(config: PipelineConfig, cluster_size: int, kind: Activation) -> None:
    """Gate-first loading needs one neuron per unit and a ReLU-family FFN."""
    if config.gate_first and (cluster_size != 1 or kind == "silu"):
        raise ConfigError(
            f"gate-first loading needs one neuron per unit and a ReLU-family FFN; this model "
            f"has cluster size {cluster_size}, activation {kind!r}"
        )
