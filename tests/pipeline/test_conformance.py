"""The engine and the simulator run one scheduler: on the same masks and configuration they
issue the same reads and find the same hits.

The engine side is the real thing (a flash layout on disk, the I/O engine's threads, NumPy
compute); the simulator side is :class:`~pi2lab.plan.virtual.VirtualFfn` on a virtual clock.
Where the grouping of reads depends on when reads complete (cluster mode topping up a limited
depth with coalescing on), the same units and bytes are read; everywhere else the read
sequence is identical. Gate-first loading is left out: there the engine decides from the
weights whether a gate fires, the simulator draws it.
"""

import jax
import numpy as np
import pytest

import pi2lab as pl
from pi2lab.cache import NeuronCache
from pi2lab.convert import convert
from pi2lab.engine.offload import OffloadConfig
from pi2lab.pipeline.scheduler import (
    Buffers,
    FfnStore,
    PipelineConfig,
    Scheduler,
    phase_spans,
    run_ffn,
)
from pi2lab.pipeline.timeline import Timeline
from pi2lab.plan.virtual import Costs, VirtualFfn
from pi2lab.storage.io import IOEngine
from pi2lab.storage.layout import BITS, open_layout
from tests.conftest import tiny_config

TOKENS = 12


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    cfg = tiny_config(intermediate_size=256, num_layers=1)
    params = jax.tree.map(np.asarray, pl.init_params(cfg, jax.random.key(3)))
    out = tmp_path_factory.mktemp("conformance") / "flash"
    return open_layout(convert(cfg, params, out, cluster_size=1))


def masks(units: int, seed: int) -> list[np.ndarray]:
    """Per token, sorted unit ids: a recurring core plus fresh units, so caches hit and miss
    and misses fall in runs (reads coalesce) and apart."""
    rng = np.random.default_rng(seed)
    core = rng.choice(units, units // 8, replace=False)
    out = []
    for _ in range(TOKENS):
        start = int(rng.integers(0, units - 24))
        fresh = np.concatenate([np.arange(start, start + 24), rng.choice(units, 20)])
        keep = core[rng.random(core.size) < 0.8]
        out.append(np.unique(np.concatenate([keep, fresh])).astype(np.int64))
    return out


def engine_run(layout, offload: OffloadConfig, capacity: int, need: list, rows: int):
    pipe = offload.pipeline_config()
    cache = NeuronCache(offload.policy_for(layout.units, capacity), layout.units, capacity)
    x = np.random.default_rng(0).standard_normal(layout.config.hidden_size).astype(np.float32)
    with IOEngine([layout.file_path(0)], coalesce=pipe.coalesce) as io:
        sched = Scheduler(layout, io, pipe, Timeline())
        store = FfnStore(layout, 0, cache, None, Buffers(layout.stride, rows))
        reads, hits = [], []
        for t, units in enumerate(need):
            sched.log = []
            hits.append(int((cache.slot_of[units] >= 0).sum()))
            sched.run(store, 0, x, units, t)
            reads.append(sched.log)
    return reads, hits


def simulator_run(layout, offload: OffloadConfig, capacity: int, need: list, rows: int):
    pipe = offload.pipeline_config()
    cache = NeuronCache(offload.policy_for(layout.units, capacity), layout.units, capacity)
    gate_bytes = layout.config.hidden_size * BITS[layout.dtype] // 8
    costs = Costs(
        unit=1e-6,
        gate=3e-7,
        spans=phase_spans(layout.stride, gate_bytes, layout.unit_bytes, layout.units),
        servers=pipe.io_threads,
        coalesce=pipe.coalesce,
        read_rate=lambda nbytes: 2e-5 + nbytes / 1e9,
    )
    ffn = VirtualFfn(costs, 0.8, np.random.default_rng(0))
    reads, hits = [], []
    for t, units in enumerate(need):
        ffn.log = []
        ffn.start(0, None)
        hits.append(run_ffn(ffn, cache, units, t, pipe, staging_rows=rows).hits.size)
        reads.append(ffn.log)
    return reads, hits


CASES = {
    "powerinfer2": OffloadConfig(engine="powerinfer2"),
    "powerinfer2, depth 8": OffloadConfig(pipeline=PipelineConfig(mode="cluster", depth=8)),
    "powerinfer2, depth 8, no coalescing": OffloadConfig(
        pipeline=PipelineConfig(mode="cluster", depth=8, coalesce=False)
    ),
    "llmflash": OffloadConfig(engine="llmflash"),
    "no overlap": OffloadConfig(pipeline=PipelineConfig(mode="none")),
    "dense-stream policy, matrix": OffloadConfig(
        engine="dense-stream", pipeline=PipelineConfig(mode="matrix")
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize(("capacity", "rows"), [(0, 16), (40, 4), (120, 64)])
def test_engine_and_simulator_issue_the_same_reads(layout, case, capacity, rows):
    offload = CASES[case]
    need = masks(layout.units, seed=capacity)
    real, real_hits = engine_run(layout, offload, capacity, need, rows)
    sim, sim_hits = simulator_run(layout, offload, capacity, need, rows)
    assert real_hits == sim_hits
    assert sum(map(len, real)) > TOKENS  # reads happened, some merged or not
    pipe = offload.pipeline_config()
    if pipe.mode == "cluster" and pipe.coalesce:
        # the grouping of a top-up depends on completion times: same units, same bytes
        for r, s in zip(real, sim, strict=True):
            assert sum(n for *_, n in r) == sum(n for *_, n in s)
            assert sum(b for _, _, b, _ in r) == sum(b for _, _, b, _ in s)
    else:
        assert real == sim  # (file, offset, bytes, units) of every read, in issue order
