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

All arithmetic is float32 NumPy on the host (BLAS matrix-vector products release the GIL, so
the I/O threads' reads proceed meanwhile). Units are computed in the neuron order the model
was profiled in; only the set, not the order of the sums, matches in-memory sparse decode.
"""

from __future__ import annotations

import collections
import dataclasses
import queue
from typing import Literal

import numpy as np

from pi2lab.cache.neuron_cache import NeuronCache
from pi2lab.config import Activation
from pi2lab.errors import ConfigError
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
    """

    mode: OverlapMode = "cluster"
    depth: int = 64
    batch: int = 16
    io_threads: int = 1
    gate_first: bool = False
    coalesce: bool = True

    def __post_init__(self):
        if self.mode not in ("none", "matrix", "cluster"):
            raise ConfigError(f"overlap mode {self.mode!r}: expected none, matrix or cluster")
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
    breaks = np.flatnonzero(np.diff(slots) != 1) + 1
    long, rest = [], []
    for part in np.split(slots, breaks):
        if part.size >= RUN:
            long.append((int(part[0]), int(part[-1]) + 1))
        else:
            rest.append(part)
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


class Scheduler:
    """Runs one FFN for one token under a :class:`PipelineConfig` (see the module docstring)."""

    def __init__(
        self,
        layout: FlashLayout,
        io: IOEngine,
        config: PipelineConfig,
        timeline: Timeline,
    ):
        self.layout, self.io, self.config, self.timeline = layout, io, config, timeline
        cfg = layout.config
        self.kind, self.thr = cfg.ffn_activation, cfg.activation_threshold
        if config.gate_first and (layout.cluster_size != 1 or cfg.ffn_activation == "silu"):
            raise ConfigError(
                f"gate-first loading needs one neuron per unit and a ReLU-family FFN; this "
                f"layout has cluster size {layout.cluster_size}, activation "
                f"{cfg.ffn_activation!r}"
            )
        self.gate_bytes = cfg.hidden_size * BITS[layout.dtype] // 8

    def compute_resident(self, store, layer, x, units, slots, between=None):
        """Computes resident ``units`` (in ``slots``): long runs of consecutive slots in
        place, the rest gathered, in chunks; ``between()`` runs after each chunk (the
        cluster pipeline tops up reads there, so the I/O thread never idles on a long
        stretch of hits)."""
        out = 0.0
        order = np.argsort(slots)
        slots, units = slots[order], units[order]
        long, rest = runs(slots)
        chunks = [
            (slice(a, b), units[i : i + b - a])
            for a, b in long
            for i in [int(np.searchsorted(slots, a))]
        ]
        if rest.size:
            pick = np.isin(slots, rest)
            chunks.append((rest, units[pick]))
        for rows, us in _split(chunks, CHUNK):
            with self.timeline.span("compute", layer, us.size):
                out = out + store.compute(x, store.slots, rows, us, self.kind, self.thr)
            if between is not None:
                between()
        return out

    def _gate_fires(self, store, x, gates) -> np.ndarray:
        """Whether each ``(unit, slot)`` of ``gates`` (gate row read) has a firing gate."""
        units = np.array([u for u, _ in gates])
        slots = np.array([s for _, s in gates])
        fires = np.empty(len(gates), bool)
        for src, pick, rows in (
            (store.slots, slots >= 0, slots),
            (store.staging.rows, slots < 0, -2 - slots),
        ):
            if pick.any():
                gate, _, _ = self.layout.decode_units(src[rows[pick]], store.scales, units[pick])
                fires[pick] = gate_fires(gate @ x, self.kind, self.thr)
        return fires

    def run(self, store: FfnStore, layer: int, x: np.ndarray, units: np.ndarray, t: int):
        """The FFN output ``[D]`` for input ``x [D]``, computing exactly ``units``."""
        acc = store.cache.access(units, t)
        mode = self.config.mode
        wanted = np.isin(acc.admit, units)  # the rest is read-ahead: loaded, not computed
        gate_first, split = self.config.gate_first, store.gate_first_from
        # (unit, slot, phase): phase 0 = whole unit, 1 = gate row, 2 = up and down; slot -1 =
        # a staging row to be assigned, -2 - r = staging row r
        todo = collections.deque(
            (u, s, 1 if gate_first and u >= split else 0)
            for u, s in [
                *zip(acc.admit[wanted].tolist(), acc.admit_slots[wanted].tolist(), strict=True),
                *((u, -1) for u in acc.bypass.tolist()),
            ]
        )
        todo.extend(
            (u, s, 0)
            for u, s in zip(
                acc.admit[~wanted].tolist(), acc.admit_slots[~wanted].tolist(), strict=True
            )
        )
        requested = set(units.tolist())
        free_rows = list(range(len(store.staging.rows)))
        limit = self.config.depth if mode == "cluster" else len(todo)
        stride, gb, ub = self.layout.stride, self.gate_bytes, self.layout.unit_bytes
        parts = {0: (0, stride), 1: (0, gb), 2: (gb, ub)}
        done_q = queue.SimpleQueue()  # reads land here as they complete (I/O threads put)
        reads_out, inflight = 0, 0  # reads and units submitted, not yet consumed
        out = np.zeros(self.layout.config.hidden_size, np.float32)

        def submit():
            nonlocal inflight, reads_out
            batch = []
            while todo and inflight + len(batch) < limit:
                u, s, phase = todo[0]
                if s == -1:
                    if not free_rows:
                        break
                    s = -2 - free_rows.pop()
                todo.popleft()
                dest = store.slots[s] if s >= 0 else store.staging.rows[-2 - s]
                a, b = parts[phase]
                tag = (layer, u, s, phase)
                batch.append(ReadRequest(store.index, u * stride + a, b - a, dest[a:b], tag))
            for r in self.io.submit(batch) if batch else []:
                r.future.add_done_callback(lambda _, r=r: done_q.put(r))
                reads_out += 1
            inflight += len(batch)

        def take(at_least: int) -> list:
            """Completed reads; blocks (a ``wait`` span) until ``at_least`` units are in."""
            nonlocal reads_out
            got, units_in = [], 0
            while reads_out:
                try:
                    r = done_q.get_nowait()
                except queue.Empty:
                    if units_in >= at_least:
                        break
                    with self.timeline.span("wait", layer):
                        r = done_q.get()
                got.append(r)
                reads_out -= 1
                units_in += len(r.requests)
            for r in got:
                r.future.result()  # a failed read raises its StorageError here
            return got

        def compute(pairs, src):
            nonlocal out
            if pairs:
                pairs = np.array(pairs)
                out += store.compute(x, src, pairs[:, 1], pairs[:, 0], self.kind, self.thr)

        def consume(reads):
            nonlocal inflight
            tags = [req.tag for r in reads for req in r.requests]
            inflight -= len(tags)
            full = [(u, s) for _, u, s, phase in tags if phase != 1]
            gates = [(u, s) for _, u, s, phase in tags if phase == 1]
            finished = list(full)  # units done with their staging rows
            with self.timeline.span("compute", layer, len(tags)):
                if gates:
                    fires = self._gate_fires(store, x, gates)
                    silent = [g for g, f in zip(gates, fires, strict=True) if not f]
                    todo.extendleft((u, s, 2) for (u, s), f in zip(gates, fires, strict=True) if f)
                    store.cache.discard(np.array([u for u, s in silent if s >= 0], np.int64))
                    finished += silent
                compute([(u, s) for u, s in full if s >= 0 and u in requested], store.slots)
                compute([(u, -2 - s) for u, s in full if s < -1], store.staging.rows)
            free_rows.extend(-2 - s for _, s in finished if s < -1)

        def step(at_least: int):
            consume(take(at_least))
            submit()

        submit()
        if mode != "none":  # cluster: arrived reads are computed between chunks of hits
            between = (lambda: step(0)) if mode == "cluster" else None
            out += self.compute_resident(store, layer, x, acc.hits, acc.hit_slots, between)
        while reads_out:
            step(min(self.config.batch, inflight) if mode == "cluster" else inflight)
        if mode == "none":
            out += self.compute_resident(store, layer, x, acc.hits, acc.hit_slots)
        return out
