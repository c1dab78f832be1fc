"""The device the simulator runs the engine's pipeline on: read servers on a virtual clock and
the cost of compute (every figure simulated).

:class:`VirtualFfn` is a :class:`~pi2lab.pipeline.scheduler.Backend`: the engine's ordering
rules (:func:`~pi2lab.pipeline.scheduler.run_ffn`) decide what is read and computed when, and
this module only says how long each step takes on a :class:`~pi2lab.plan.hardware.HardwareProfile`:

- reads: ``servers`` FIFO servers; a submit is coalesced by the I/O engine's own rule
  (:func:`~pi2lab.storage.io.coalesce`), each read keeps one server busy for its 4 KiB-aligned
  span at the profile's rate for that block size, and reads complete in (end, submit) order;
- compute: a whole unit costs ``unit`` seconds, a gate-first gate row ``gate``, its up and down
  rows the rest, an unbundled row a third, a row-column unit's up row and down column two
  thirds; each piece read adds ``per_read`` of host time;
- gate-first: a gate fires with probability ``fire_rate``, drawn from a seeded generator.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import heapq

import numpy as np

from pi2lab.pipeline.timeline import Event
from pi2lab.storage.io import ALIGN, coalesce

ROW_COLUMN = 6
"""Read phase of a ``row-column`` unit's up row and down column, bundled in their own region
after the gate matrix's (:func:`pi2lab.plan.simulator.layout_spans`; a simulated layout beside
the scheduler's phases 0-5 of :data:`~pi2lab.pipeline.scheduler.Unit`, whose ordering computes
any phase but the gate-first gate as it lands)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Costs:
    """Per-FFN constants of the device model (seconds, bytes).

    Attributes:
      unit: Compute one whole unit.
      gate: Compute one gate row (gate-first).
      spans: :func:`~pi2lab.pipeline.scheduler.phase_spans` of the FFN's file.
      servers: I/O threads (FIFO read servers).
      coalesce: Merge adjacent requests of one submit.
      read_rate: ``io_bytes -> seconds`` one server is busy.
      per_read: Host time on the compute thread per piece read (a whole unit, or one of its
        rows).
    """

    unit: float
    gate: float
    spans: tuple
    servers: int
    coalesce: bool
    read_rate: object
    per_read: float = 0.0

    @functools.cached_property
    def phase_costs(self) -> tuple[float, ...]:
        """:meth:`compute` of every phase, by phase."""
        return tuple(self.compute(p) for p in range(ROW_COLUMN + 1))

    def compute(self, phase: int) -> float:
        """Seconds to compute what arrived in ``phase`` (phases as
        :data:`~pi2lab.pipeline.scheduler.Unit`)."""
        if phase == 0:
            return self.unit
        if phase == 1:
            return self.gate
        if phase == 2:
            return self.unit - self.gate
        return 2 * self.unit / 3 if phase == ROW_COLUMN else self.unit / 3


class VirtualFfn:
    """One FFN on the virtual clock; :meth:`start` begins a token at time 0.

    After a token: :attr:`now` its seconds, :attr:`wait` and :attr:`busy` the seconds the
    compute thread waited and computed, :attr:`nbytes` the bytes read (aligned spans),
    :attr:`reads` the reads issued;
    ``record`` (a list) receives the token's events and ``log`` every read issued as
    ``(file, offset, nbytes, units)``.
    """

    def __init__(self, costs: Costs, fire_rate: float, rng, file: int = 0):
        self.c, self.fire_rate, self.rng, self.file = costs, fire_rate, rng, file
        self.log: list | None = None
        self.start(0, None)

    def start(self, layer: int, record: list | None) -> None:
        self.layer, self.record = layer, record
        self.now = self.wait = self.busy = 0.0
        self.nbytes = self.reads = 0
        self.free_at = [0.0] * self.c.servers
        self.heap: list = []
        self.seq = 0
        # one server, nothing recorded: reads complete in submission order (FIFO), so a
        # submit's reads are kept as one block of end times instead of heap entries
        self.fast = self.c.servers == 1 and record is None and self.log is None
        self.blocks: collections.deque = collections.deque()
        self.queued = 0

    @property
    def pending(self) -> int:
        return len(self.heap) + self.queued

    def _span(self, stage: str, dur: float, units: int) -> None:
        start = self.now
        self.now += dur
        if stage == "compute":
            self.busy += dur
        else:
            self.wait += dur
        if self.record is not None:
            self.record.append(
                Event(
                    stage=stage,
                    layer=self.layer,
                    start=start,
                    end=self.now,
                    thread="compute",
                    units=units,
                )
            )

    def submit(self, batch) -> None:
        c = self.c
        step, base, size = c.spans
        arr = np.array(batch, np.int64).reshape(-1, 3)  # [N, 3] (unit, slot, phase)
        off = arr[:, 0] * step[arr[:, 2]] + base[arr[:, 2]]
        length = size[arr[:, 2]]
        if self.fast:
            self._submit_fifo(batch, arr, off, length)
            return
        groups = coalesce(np.zeros(len(arr), np.int64), off, length, merge=c.coalesce)
        off, length, rows = off.tolist(), length.tolist(), [tuple(r) for r in arr.tolist()]
        for idx in groups:
            idx = idx.tolist()
            lo = off[idx[0]] // ALIGN * ALIGN
            hi = -(-(off[idx[-1]] + length[idx[-1]]) // ALIGN) * ALIGN
            dur = c.read_rate(hi - lo)
            k = min(range(c.servers), key=self.free_at.__getitem__) if c.servers > 1 else 0
            begin = max(self.now, self.free_at[k])
            self.free_at[k] = done = begin + dur
            self.nbytes += hi - lo
            self.reads += 1
            units = [rows[i] for i in idx]
            heapq.heappush(self.heap, (done, self.seq, units))
            self.seq += 1
            if self.log is not None:
                self.log.append((self.file, off[idx[0]], sum(length[i] for i in idx), len(idx)))
            if self.record is not None:
                self.record.append(
                    Event(
                        stage="read",
                        layer=self.layer,
                        start=begin,
                        end=done,
                        thread=f"io{k}",
                        units=len(units),
                        nbytes=hi - lo,
                    )
                )

    def _submit_fifo(self, batch, arr, off, length) -> None:
        """:meth:`submit` on one server with nothing recorded: the same reads and times,
        computed for the whole batch at once."""
        c = self.c
        if c.coalesce:
            groups = coalesce(np.zeros(len(arr), np.int64), off, length)
            first = np.array([g[0] for g in groups])
            last = np.array([g[-1] for g in groups])
            units = [tuple(batch[i]) for g in groups for i in g.tolist()]
            cum = np.cumsum([len(g) for g in groups])
        else:  # each request its own read, in input order
            first = last = np.arange(len(arr))
            units = [tuple(u) for u in batch]
            cum = first + 1
        lo = off[first] // ALIGN * ALIGN
        hi = -(-(off[last] + length[last]) // ALIGN) * ALIGN
        nbytes = hi - lo
        if len(nbytes) > 16:
            sizes, which = np.unique(nbytes, return_inverse=True)
            dur = np.array([c.read_rate(int(b)) for b in sizes])[which]
        else:
            dur = np.array([c.read_rate(b) for b in nbytes.tolist()])
        # FIFO on one server: each read starts when the previous one ends (summed in order,
        # as one read at a time would)
        begin = max(self.now, self.free_at[0])
        ends = np.cumsum(np.concatenate([[begin], dur]))[1:]
        self.free_at[0] = float(ends[-1])
        self.nbytes += int(nbytes.sum())
        self.reads += len(ends)
        self.queued += len(ends)
        self.blocks.append([ends, units, cum, 0])

    def _take_fifo(self, at_least: int) -> list:
        """:meth:`take` on one server: the reads done by now, then, while fewer than
        ``at_least`` units are in, one wait up to the read that brings enough (reads end in
        submission order, so the waits for the reads between add up to that one)."""
        got = []
        while self.blocks:
            block = self.blocks[0]
            ends, units, cum, i = block
            before = int(cum[i - 1]) if i else 0  # units of the reads taken from this block
            j = i + 1
            if ends[i] > self.now:
                if len(got) >= at_least:
                    break
                want = before + at_least - len(got)
                m = min(int(np.searchsorted(cum, want)), len(ends) - 1)
                self._span("wait", float(ends[m]) - self.now, 0)
                j = m + 1
            # and every other read done by now
            j = max(int(np.searchsorted(ends, self.now, side="right")), j)
            got.extend(units[before : int(cum[j - 1])])
            self.queued -= j - i
            if j == len(ends):
                self.blocks.popleft()
            else:
                block[3] = j
        return got

    def take(self, at_least: int) -> list:
        if self.fast:
            return self._take_fifo(at_least)
        got = []
        while self.heap:
            if self.heap[0][0] > self.now:
                if len(got) >= at_least:
                    break
                self._span("wait", self.heap[0][0] - self.now, 0)
            got.extend(heapq.heappop(self.heap)[2])
        return got

    def resident(self, rows, units: np.ndarray) -> None:
        self._span("compute", units.size * self.c.unit, units.size)

    def arrived(self, gates, ready, count: int) -> np.ndarray:
        c = self.c
        fires = self.rng.random(len(gates)) < self.fire_rate
        cost = c.phase_costs
        dur = len(gates) * c.gate + sum(cost[phase] for _, _, phase in ready)
        self._span("compute", dur + count * c.per_read, count)
        return fires
