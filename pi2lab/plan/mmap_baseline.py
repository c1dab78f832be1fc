"""The llama.cpp baseline past RAM size, simulated: dense decode from a memory-mapped model
whose FFN bytes beyond the budget are re-read every token (every figure simulated)."""

from __future__ import annotations

import numpy as np

from pi2lab.budget import MemoryBudget
from pi2lab.pipeline.timeline import Event, Timeline
from pi2lab.plan.sim_result import make_result


def simulate_mmap(
    shape, profile, memory_bytes, ffn_fraction, tokens, kv_capacity, warmup, overhead_s
):
    """llama.cpp with mmap past RAM size: dense, the FFN bytes beyond the budget re-read in
    order every token at ``sequential_mbs``, no overlap (the same every token)."""
    cfg = shape.config
    per_neuron = shape.bundle_bytes + shape.scale_bytes_per_neuron  # GGUF: scales inline
    units, unit_bytes = shape.units, shape.cluster_size * per_neuron
    fixed = shape.resident_bytes(kv_capacity, predictors=False) - shape.scale_bytes_total()
    budget = (
        MemoryBudget.share(ffn_fraction)
        if memory_bytes is None
        else MemoryBudget.bytes(memory_bytes)
    )
    resident_units = budget.cache_units(
        minimum=fixed,
        unit_bytes=unit_bytes,
        units=units,
        ffns=shape.num_ffns,
        parts={f"{shape.name}'s non-FFN weights and KV cache": fixed},
    )
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
    return make_result(
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


__all__ = ["simulate_mmap"]
