"""The llama.cpp baseline past RAM size, simulated (every figure simulated).

llama.cpp maps the model file (``mmap``) and decodes densely: every token touches every weight of
every layer (for MoE, every weight of the routed experts) in file order, then the LM head. What
is not in the page cache is read by page faults, on the compute threads that touch it. The model:

- the file: per layer its attention weights, then each expert's FFN (GGUF: quantization scales
  inline), then the LM head, cut into read-around windows of ``read_around`` bytes (128 KiB:
  Linux's default ``read_ahead_kb``; a major fault reads the window around the faulting 4 KiB
  page, and the window's other pages then hit);
- the page cache: one LRU over those windows holding ``capacity`` bytes (the budget less the KV
  cache); a window touched when not cached is one fault, it is read and it evicts the least
  recently used windows. A dense pass over a file larger than the cache evicts every window
  before its next use, so every token re-reads the whole file the decode touches (the paper:
  past RAM size the page cache re-reads the whole model every token);
- a fault stalls its compute thread: fault reads are not overlapped with compute; they come from
  the ``cpu_threads`` compute threads at once, each thread waiting for its own fault (a blocking
  read: no I/O thread keeps the device's queue full), so on a phone's one command queue each is
  served at the several-issuer blocking rate
  (:meth:`~pi2lab.plan.hardware.HardwareProfile.read_mbs` with ``threads=cpu_threads``,
  ``blocking=True``, over the address range of the tensor being read);
- compute: every touched byte at ``dense_gbs``; attention adds ``overhead_s`` per layer.

Left out: the kernel's two-list LRU and refault detection (one LRU), asynchronous read-ahead
(a scan by several threads at different rows of one matrix shares one read-ahead state), the
embedding row, KV-cache reads.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from pi2lab.budget import MemoryBudget
from pi2lab.errors import ConfigError
from pi2lab.pipeline.timeline import Event, Timeline
from pi2lab.plan.sim_result import make_result

READ_AROUND = 128 * 1024
"""Bytes a major fault reads around the faulting page (Linux ``read_ahead_kb`` default 128)."""


class PageCache:
    """An LRU of file windows by bytes: :meth:`touch` says whether a window was cached.

    Attributes:
      capacity: Bytes the cache holds.
      used: Bytes cached now.
    """

    def __init__(self, capacity: int):
        if capacity < 0:
            raise ConfigError(f"page cache capacity {capacity}: expected >= 0 bytes")
        self.capacity, self.used = int(capacity), 0
        self._lru: OrderedDict[int, int] = OrderedDict()

    def touch(self, window: int, nbytes: int) -> bool:
        """Uses ``window`` (``nbytes`` long): True on a hit; on a miss it is read in, evicting
        the least recently used windows (a window larger than the cache is not kept)."""
        if window in self._lru:
            self._lru.move_to_end(window)
            return True
        if nbytes > self.capacity:
            return False
        while self.used + nbytes > self.capacity:
            self.used -= self._lru.popitem(last=False)[1]
        self._lru[window] = nbytes
        self.used += nbytes
        return False


def file_blocks(shape) -> list[tuple[str, int, int, int]]:
    """The model file as llama.cpp touches it: ``(stage, layer, expert, bytes)`` per block, in
    order (attention of a layer, its experts' FFNs, ..., the LM head); expert -1 for non-FFN."""
    cfg = shape.config
    per_ffn = cfg.intermediate_size * (shape.bundle_bytes + shape.scale_bytes_per_neuron)
    blocks = []
    for i in range(cfg.num_layers):
        blocks.append(("attention", i, -1, shape.attention_bytes()))
        blocks += [("compute", i, e, per_ffn) for e in range(max(cfg.num_experts, 1))]
    blocks.append(("head", -1, -1, shape.head_bytes()))
    return blocks


def _windows(nbytes: int, size: int) -> list[int]:
    full, tail = divmod(nbytes, size)
    return [size] * full + ([tail] if tail else [])


def simulate_mmap(
    shape,
    profile,
    memory_bytes,
    ffn_fraction,
    tokens,
    kv_capacity,
    warmup,
    overhead_s,
    routed=None,
    read_around: int = READ_AROUND,
):
    """llama.cpp decoding ``tokens`` tokens from a memory-mapped file (see the module docstring).

    Args:
      shape, profile: The model and the device.
      memory_bytes: Total budget: the page cache gets what the KV cache leaves; or
      ffn_fraction: The page cache holds the non-FFN weights and this share of the FFN bytes.
      tokens, warmup, kv_capacity, overhead_s: As :func:`~pi2lab.plan.simulator.simulate_decode`.
      routed: MoE: ``routed(layer) -> [T, E]`` bool, the experts each token runs.
      read_around: Bytes one fault reads.

    Raises:
      ConfigError: ``read_around`` not a positive multiple of 4 KiB; MoE without ``routed``.
      BudgetError: ``memory_bytes`` below the non-FFN weights and the KV cache.
    """
    cfg = shape.config
    if read_around < 4096 or read_around % 4096:
        raise ConfigError(f"read_around={read_around}: expected a positive multiple of 4096")
    if cfg.is_moe and routed is None:
        raise ConfigError("simulate_mmap: an MoE shape needs routed(layer) -> [T, E]")
    kv = shape.kv_cache_bytes(kv_capacity)
    blocks = file_blocks(shape)
    nonffn = sum(b for s, _, _, b in blocks if s != "compute")
    ffn = sum(b for s, _, _, b in blocks if s == "compute")
    budget = (
        MemoryBudget.share(ffn_fraction)
        if memory_bytes is None
        else MemoryBudget.bytes(memory_bytes)
    )
    budget.check(nonffn + kv, {f"{shape.name}'s non-FFN weights": nonffn, "KV cache": kv})
    capacity = budget.total(nonffn + kv, ffn) - kv
    cache = PageCache(capacity)
    threads = profile.cpu_threads
    dense = profile.dense_gbs * 1e9
    head = shape.head_bytes() / dense

    fault_s: dict[tuple[int, int], float] = {}

    def fault(nbytes: int, span: int) -> float:
        if (nbytes, span) not in fault_s:
            mbs = profile.read_mbs(nbytes, threads, span=span, blocking=True)
            fault_s[nbytes, span] = nbytes / (mbs * 1e6)
        return fault_s[nbytes, span]

    routes = [routed(i) for i in range(cfg.num_layers)] if cfg.is_moe else None
    ids = {}  # block index -> first window id
    first = 0
    for k, (_, _, _, b) in enumerate(blocks):
        ids[k] = first
        first += len(_windows(b, read_around))

    secs, wait, comp, att = (np.zeros(tokens) for _ in range(4))
    nbytes, hits, req, nreads = (np.zeros(tokens, np.int64) for _ in range(4))
    events: list[Event] = []
    for t in range(tokens):
        now, record = 0.0, t == tokens - 1
        for k, (stage, layer, expert, b) in enumerate(blocks):
            if expert >= 0 and routes is not None and not routes[layer][t, expert]:
                continue
            sizes = _windows(b, read_around)
            missed = [n for w, n in enumerate(sizes) if not cache.touch(ids[k] + w, n)]
            io = sum(fault(n, b) for n in missed)
            work = b / dense + (overhead_s if stage == "attention" else 0.0)
            req[t] += len(sizes)
            hits[t] += len(sizes) - len(missed)
            nbytes[t] += sum(missed)
            nreads[t] += len(missed)
            wait[t] += io
            if stage == "attention":
                att[t] += work
            elif stage == "compute":
                comp[t] += work
            if record:
                if io > 0:
                    events += [
                        Event(
                            stage="read",
                            layer=layer,
                            start=now,
                            end=now + io,
                            thread="io0",
                            units=len(missed),
                            nbytes=sum(missed),
                        ),
                        Event(stage="wait", layer=layer, start=now, end=now + io, thread="compute"),
                    ]
                events.append(
                    Event(
                        stage=stage,
                        layer=layer,
                        start=now + io,
                        end=now + io + work,
                        thread="compute",
                    )
                )
            now += io + work
        secs[t] = now
    unit_bytes = ffn // (shape.num_ffns * shape.units)
    cache_units = max(0, min(shape.units, (capacity - nonffn) // unit_bytes // shape.num_ffns))
    timeline = Timeline()
    timeline.events.extend(events)
    return make_result(
        "llama.cpp-mmap",
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
        cache_units,
        min(capacity, nonffn + ffn) + kv,
        warmup,
        timeline,
        nreads,
    )


__all__ = ["READ_AROUND", "PageCache", "file_blocks", "simulate_mmap"]
