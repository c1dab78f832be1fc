"""Event timeline of a decode token: who did what, when, on which thread.

Compute events come from the decode thread (thread ``"compute"``), read events from the I/O
engine's log (``"io0"``, ``"io1"``, ...), and ``wait`` events mark the decode thread blocked on
reads. The *I/O share of the critical path* is the time the decode thread spent waiting for
reads over the token's wall time: the I/O that overlap did not hide (PowerInfer-2 reports 13.7%
for itself and 76.7% for LLM in a Flash on Bamboo-7B).
"""

from __future__ import annotations

import dataclasses
import time


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Event:
    """One span of work.

    Attributes:
      stage: ``attention`` (with the predictor), ``compute`` (FFN units), ``wait`` (blocked on
        reads), ``read`` (one read), ``head`` (final norm, LM head, sampling), ``prefill``.
      layer: Layer index (-1 for none).
      start, end: ``time.perf_counter`` seconds.
      thread: ``compute`` or ``io<k>``.
      units: Units computed or read.
      nbytes: Bytes read (reads only).
    """

    stage: str
    layer: int
    start: float
    end: float
    thread: str
    units: int = 0
    nbytes: int = 0


class Timeline:
    """Events of one or more tokens, with a helper to time a compute span."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def span(self, stage: str, layer: int, units: int = 0):
        return _Span(self, stage, layer, units)

    def add_reads(self, records) -> None:
        """Adds the I/O engine's read records (tags ``(layer, unit)``) as ``read`` events."""
        for r in records:
            layer = r.tags[0][0] if r.tags else -1
            self.events.append(
                Event(
                    stage="read",
                    layer=layer,
                    start=r.start,
                    end=r.end,
                    thread=f"io{r.thread}",
                    units=len(r.tags),
                    nbytes=r.io_bytes,
                )
            )

    def bounds(self) -> tuple[float, float]:
        return min(e.start for e in self.events), max(e.end for e in self.events)

    def total(self, stage: str) -> float:
        return sum(e.end - e.start for e in self.events if e.stage == stage)

    def io_share(self) -> float:
        """Waiting-for-reads time over wall time (compute thread's view)."""
        start, end = self.bounds()
        return self.total("wait") / max(end - start, 1e-12)

    def rows(self, origin: float | None = None) -> list[dict]:
        """Events as dicts with times in ms from ``origin`` (default: the first event)."""
        origin = self.bounds()[0] if origin is None else origin
        return [
            {
                **dataclasses.asdict(e),
                "start_ms": (e.start - origin) * 1e3,
                "end_ms": (e.end - origin) * 1e3,
            }
            for e in sorted(self.events, key=lambda e: e.start)
        ]


class _Span:
    def __init__(self, timeline: Timeline, stage: str, layer: int, units: int):
        self.timeline, self.stage, self.layer, self.units = timeline, stage, layer, units

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.timeline.events.append(
            Event(
                stage=self.stage,
                layer=self.layer,
                start=self.start,
                end=time.perf_counter(),
                thread="compute",
                units=self.units,
            )
        )
