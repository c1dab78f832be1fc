"""What a simulated decode returns (every figure simulated, none measured)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from pi2lab.pipeline.timeline import Event, Timeline


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
      reads: ``[T]`` reads issued to flash per token (after coalescing; llama.cpp-mmap: faults).
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
    reads: np.ndarray
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
    def reads_per_token(self) -> float:
        """Simulated mean reads issued per token after warm-up."""
        return float(self.reads[self.warmup :].mean())

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
            "reads_per_token": self.reads_per_token,
            "io_share": self.io_share,
            "stage_seconds": dict(self.stage_seconds),
            "cache_units": self.cache_units,
            "memory_bytes": self.memory_bytes,
            "warmup": self.warmup,
            "token_seconds": self.token_seconds.tolist(),
            "bytes_read": self.bytes_read.tolist(),
            "reads": self.reads.tolist(),
            "timeline": self.timeline.rows(0.0),
        }


def shifted(events: Sequence[Event], by: float) -> list[Event]:
    return [dataclasses.replace(e, start=e.start + by, end=e.end + by) for e in events]


def layer_timeline(events: list[list[Event]], layer_secs: np.ndarray, head: float) -> Timeline:
    timeline = Timeline()
    starts = np.concatenate([[0.0], np.cumsum(layer_secs)])
    for i, evs in enumerate(events):
        timeline.events.extend(shifted(evs, float(starts[i])))
    end = float(starts[-1])
    timeline.events.append(
        Event(stage="head", layer=-1, start=end, end=end + head, thread="compute")
    )
    return timeline


def make_result(
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
    reads=None,
) -> SimResult:
    w = slice(warmup, None)
    return SimResult(
        engine=engine,
        shape=shape.name,
        profile=profile.name,
        tokens_per_s=float(1.0 / np.median(secs[w])),
        token_seconds=secs,
        bytes_read=nbytes,
        reads=np.zeros_like(nbytes) if reads is None else reads,
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


__all__ = ["SimResult", "layer_timeline", "make_result", "shifted"]
