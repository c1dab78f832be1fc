"""The decode simulator: hand-checkable times, determinism, monotone sanity, typed errors.

Every figure here is simulated on a virtual clock; no test asserts on wall-clock time.
"""

from __future__ import annotations

import dataclasses
import itertools
import json

import numpy as np
import pytest

from pi2lab.config import ModelConfig
from pi2lab.errors import BudgetError, ConfigError
from pi2lab.pipeline.scheduler import PipelineConfig
from pi2lab.plan.hardware import HardwareProfile
from pi2lab.plan.shapes import ModelShape, get_shape
from pi2lab.plan.simulator import simulate_decode
from pi2lab.plan.traces import SyntheticTrace
from pi2lab.policies import LRU, Window
from tests.conftest import round_profile, tiny_config, tiny_shape
from tests.plan.conftest import flash_model, moe_shape


def phone(scale_storage: float = 1.0) -> HardwareProfile:
    """A phone-like profile in round numbers (not a measurement)."""
    return round_profile(
        {(4096, 1): 1000.0 * scale_storage, (1 << 19, 1): 4000.0 * scale_storage},
        name="test-phone",
        cpu_threads=8,
        ram_bytes=16_000_000_000,
        memory_gbs=40.0,
        dense_gbs=30.0,
        sparse_gbs=20.0,
        sequential_mbs=4000.0 * scale_storage,
    )


def phone_flash() -> HardwareProfile:
    """A phone-like profile with a flash model (one read server; round numbers)."""
    return round_profile(
        {(4096, 1): 1024.0},
        name="flash-phone",
        cpu_threads=4,
        dense_gbs=30.0,
        sparse_gbs=20.0,
        flash=flash_model(),
    )


def mini(layers: int = 3, **fields) -> ModelShape:
    """A small dReLU shape, every axis its own size."""
    cfg = tiny_config(
        vocab_size=1000,
        hidden_size=512,
        intermediate_size=1536,
        num_heads=8,
        head_dim=64,
        num_layers=layers,
    )
    frac = (0.1, 0.15, 0.08, 0.12)[:layers]
    return ModelShape(name="mini", config=cfg, active_fraction=frac, **fields)


def test_tiny_case_time_is_attention_plus_reads_plus_compute():
    shape, prof = tiny_shape(), phone()
    masks = np.zeros((4, shape.units), bool)
    masks[:, [0, 2, 5]] = True  # three units, none adjacent: three 4 KiB reads
    r = simulate_decode(
        shape,
        prof,
        engine="powerinfer2",
        ffn_fraction=0.0,
        trace=[masks],
        tokens=4,
        pipeline=PipelineConfig(mode="none"),
        warmup=0,
    )
    front = (
        shape.attention_bytes() + shape.predictor_bytes()
    ) / 30e9  # resident weights at dense_gbs
    head = shape.head_bytes() / 30e9
    read = 4096 / 1000e6
    unit = (shape.bundle_bytes + shape.scale_bytes_per_neuron) / 20e9
    expected = front + 3 * read + 3 * unit + head
    np.testing.assert_allclose(r.token_seconds, expected, rtol=1e-12)
    assert r.tokens_per_s == pytest.approx(1 / expected)
    assert r.hit_rate == 0.0
    np.testing.assert_array_equal(r.bytes_read, 3 * 4096)
    np.testing.assert_array_equal(r.reads, 3)
    assert r.io_share == pytest.approx(3 * read / expected)
    # the timeline: attention, reads back to back on io0, one wait, one compute, the head
    tl = r.timeline
    reads = sorted((e for e in tl.events if e.stage == "read"), key=lambda e: e.start)
    assert [e.thread for e in reads] == ["io0"] * 3
    assert reads[0].start == pytest.approx(front)
    assert reads[-1].end == pytest.approx(front + 3 * read)
    assert tl.total("wait") == pytest.approx(3 * read)
    assert tl.total("compute") == pytest.approx(3 * unit)
    assert tl.bounds()[1] == pytest.approx(expected)
    assert tl.io_share() == pytest.approx(r.io_share)


def test_adjacent_units_coalesce_into_one_larger_read():
    shape, prof = tiny_shape(), phone()
    masks = np.zeros((2, shape.units), bool)
    masks[:, [0, 1, 2, 5]] = True
    kw = dict(
        engine="powerinfer2",
        ffn_fraction=0.0,
        trace=[masks],
        tokens=2,
        warmup=0,
        pipeline=PipelineConfig(mode="none"),
    )
    merged = simulate_decode(shape, prof, **kw)
    np.testing.assert_array_equal(merged.reads, 2)  # units 0-2 in one read, unit 5 alone
    rate = prof.read_mbs(3 * 4096) * 1e6
    front = (shape.attention_bytes() + shape.predictor_bytes()) / 30e9
    unit = (shape.bundle_bytes + shape.scale_bytes_per_neuron) / 20e9
    expected = front + 3 * 4096 / rate + 4096 / 1000e6 + 4 * unit + shape.head_bytes() / 30e9
    assert merged.token_seconds[0] == pytest.approx(expected, rel=1e-12)
    assert sum(e.stage == "read" for e in merged.timeline.events) == 2
    kw["pipeline"] = PipelineConfig(mode="none", coalesce=False)
    apart = simulate_decode(shape, prof, **kw)
    assert sum(e.stage == "read" for e in apart.timeline.events) == 4
    assert apart.token_seconds[0] > merged.token_seconds[0]


def test_same_seed_same_result():
    a = simulate_decode(mini(), phone(), ffn_fraction=0.4, tokens=24, seed=5)
    b = simulate_decode(mini(), phone(), ffn_fraction=0.4, tokens=24, seed=5)
    np.testing.assert_array_equal(a.token_seconds, b.token_seconds)
    np.testing.assert_array_equal(a.bytes_read, b.bytes_read)
    assert a.timeline.events == b.timeline.events
    c = simulate_decode(mini(), phone(), ffn_fraction=0.4, tokens=24, seed=6)
    assert not np.array_equal(a.bytes_read, c.bytes_read)


def test_more_memory_is_no_slower_for_powerinfer2():
    rates = [
        simulate_decode(mini(), phone(), ffn_fraction=f, tokens=32).tokens_per_s
        for f in (0.0, 0.2, 0.5, 0.8, 1.0)
    ]
    assert all(b >= a for a, b in itertools.pairwise(rates)), rates
    assert rates[-1] > rates[0]


@pytest.mark.parametrize("engine", ["powerinfer2", "llmflash", "llama.cpp-mmap"])
def test_faster_storage_is_faster(engine):
    slow = simulate_decode(mini(), phone(), engine=engine, ffn_fraction=0.5, tokens=24)
    fast = simulate_decode(mini(), phone(2.0), engine=engine, ffn_fraction=0.5, tokens=24)
    assert fast.tokens_per_s > slow.tokens_per_s
    np.testing.assert_array_equal(fast.bytes_read, slow.bytes_read)  # same work, faster reads


@pytest.mark.parametrize(
    "engine, pipeline",
    [
        ("powerinfer2", None),
        ("powerinfer2", PipelineConfig(gate_first=True)),
        ("powerinfer2", PipelineConfig(io_threads=2, depth=8, batch=4)),
        ("llmflash", None),
        ("llmflash", PipelineConfig(mode="none")),
        ("llama.cpp-mmap", None),
    ],
)
def test_io_share_in_unit_interval_and_timeline_consistent(engine, pipeline):
    r = simulate_decode(
        mini(), phone(), engine=engine, ffn_fraction=0.3, tokens=16, pipeline=pipeline
    )
    assert 0.0 <= r.io_share <= 1.0
    assert 0.0 <= r.hit_rate <= 1.0
    tl = r.timeline
    assert tl.bounds()[1] == pytest.approx(r.token_seconds[-1], rel=1e-9)
    for thread in {e.thread for e in tl.events}:
        evs = sorted((e for e in tl.events if e.thread == thread), key=lambda e: e.start)
        assert all(b.start >= a.end - 1e-15 for a, b in itertools.pairwise(evs)), thread
    out = r.to_json()
    assert out["simulated"] is True
    json.dumps(out)


def test_overlap_modes_order():
    kw = dict(ffn_fraction=0.3, tokens=24, policy=LRU())
    none = simulate_decode(mini(), phone(), pipeline=PipelineConfig(mode="none"), **kw)
    matrix = simulate_decode(mini(), phone(), pipeline=PipelineConfig(mode="matrix"), **kw)
    np.testing.assert_array_equal(none.bytes_read, matrix.bytes_read)
    assert np.all(matrix.token_seconds <= none.token_seconds + 1e-15)
    assert matrix.io_share <= none.io_share


def test_gate_first_reads_only_gates_when_nothing_fires():
    kw = dict(ffn_fraction=0.0, tokens=8, policy=LRU(), warmup=0)
    silent = simulate_decode(
        mini(), phone(), pipeline=PipelineConfig(gate_first=True), gate_fire_rate=0.0, **kw
    )
    np.testing.assert_array_equal(silent.bytes_read, silent.requested * 4096)
    whole = simulate_decode(mini(), phone(), pipeline=PipelineConfig(coalesce=False), **kw)
    np.testing.assert_array_equal(whole.bytes_read, whole.requested * mini().stride)
    silu = ModelShape.from_config(ModelConfig.llama2_7b(num_layers=1, ffn_activation="silu"))
    with pytest.raises(ConfigError, match="gate-first"):
        simulate_decode(
            silu, phone(), ffn_fraction=0.5, tokens=2, pipeline=PipelineConfig(gate_first=True)
        )


def test_llama_cpp_mmap_slower_than_powerinfer2_on_a_7b_shape():
    shape = get_shape("turbosparse-mistral-7b")
    pi2 = simulate_decode(shape, phone(), engine="powerinfer2", ffn_fraction=0.5, tokens=12)
    mmap = simulate_decode(shape, phone(), engine="llama.cpp-mmap", ffn_fraction=0.5, tokens=12)
    assert mmap.tokens_per_s < pi2.tokens_per_s
    # a cyclic dense pass through an LRU page cache smaller than the file: every byte re-read
    per_ffn = shape.units * (shape.bundle_bytes + shape.scale_bytes_per_neuron)
    nonffn = 32 * shape.attention_bytes() + shape.head_bytes()
    assert mmap.bytes_per_token == 32 * per_ffn + nonffn


def test_moe_runs_routed_experts_only():
    shape = moe_shape()
    trace = SyntheticTrace(density=0.2, units=640, layers=2, tokens=10, experts=4, top_k=2)
    r = simulate_decode(shape, phone(), ffn_fraction=0.5, trace=trace, tokens=10)
    per_token = sum(trace.layer(i).sum((1, 2)) for i in range(2))
    np.testing.assert_array_equal(r.requested, per_token)
    assert r.tokens_per_s > 0


def test_budget_below_resident_minimum_raises_with_the_minimum():
    shape = mini()
    rows = (4 << 20) // shape.stride  # staging rows for 4 MiB, as the offload engine
    minimum = shape.resident_bytes(256) + rows * shape.stride
    with pytest.raises(BudgetError, match=str(minimum)):
        simulate_decode(shape, phone(), memory_bytes=minimum - 1, kv_capacity=256, tokens=2)
    r = simulate_decode(shape, phone(), memory_bytes=minimum, kv_capacity=256, tokens=2)
    assert r.cache_units == 0 and r.memory_bytes == minimum
    big = simulate_decode(
        shape, phone(), memory_bytes=minimum + 3 * 100 * shape.stride, kv_capacity=256, tokens=2
    )
    assert big.cache_units == 100
    with pytest.raises(BudgetError, match="minimum"):
        simulate_decode(shape, phone(), engine="llama.cpp-mmap", memory_bytes=1000, tokens=2)


def test_bad_arguments_raise_typed_errors():
    with pytest.raises(ConfigError, match="llama-7b"):
        simulate_decode("gpt-5", phone(), ffn_fraction=0.5)
    with pytest.raises(ConfigError, match="engine"):
        simulate_decode(mini(), phone(), engine="vllm", ffn_fraction=0.5)
    with pytest.raises(ConfigError, match="exactly one"):
        simulate_decode(mini(), phone(), ffn_fraction=0.5, memory_bytes=10**10)
    with pytest.raises(ConfigError, match="trace layer 0"):
        simulate_decode(
            mini(), phone(), ffn_fraction=0.5, tokens=4, trace=[np.zeros((4, 7), bool)] * 3
        )
    with pytest.raises(ConfigError, match="layers"):
        simulate_decode(
            mini(), phone(), ffn_fraction=0.5, tokens=4, trace=[np.zeros((4, 1536), bool)]
        )


def test_default_profile_fields_unchanged_by_simulation():
    prof = phone()
    before = dataclasses.asdict(prof)
    simulate_decode(mini(layers=1), prof, ffn_fraction=0.5, tokens=4)
    assert dataclasses.asdict(prof) == before


def test_row_column_bundles_read_gate_row_then_up_and_down():
    """Row-column bundling: a miss is two 4 KiB reads (the 64-byte gate row, then the 128-byte
    up row and down column), each computed as it lands: a third of the unit, then two thirds."""
    shape, prof = tiny_shape(), phone()
    masks = np.zeros((2, shape.units), bool)
    masks[:, [0, 2, 5]] = True
    r = simulate_decode(
        shape,
        prof,
        ffn_fraction=0.0,
        trace=[masks],
        tokens=2,
        warmup=0,
        bundling="row-column",
        pipeline=PipelineConfig(mode="none", coalesce=False),
    )
    front = (shape.attention_bytes() + shape.predictor_bytes()) / 30e9
    unit = (shape.bundle_bytes + shape.scale_bytes_per_neuron) / 20e9
    expected = front + 6 * 4096 / 1000e6 + 3 * unit + shape.head_bytes() / 30e9
    np.testing.assert_allclose(r.token_seconds, expected, rtol=1e-12)
    np.testing.assert_array_equal(r.bytes_read, 6 * 4096)
    np.testing.assert_array_equal(r.reads, 6)
    reads = [e for e in r.timeline.events if e.stage == "read"]
    assert len(reads) == 6 and all(e.nbytes == 4096 for e in reads)


def test_copies_charge_each_miss_on_the_compute_thread():
    """copies=2: each unit read is copied twice at memory_gbs (40 GB/s), whatever the pieces it
    is read in."""
    shape, prof = tiny_shape(), phone()
    masks = np.zeros((2, shape.units), bool)
    masks[:, [0, 2, 5]] = True
    kw = dict(
        ffn_fraction=0.0,
        trace=[masks],
        tokens=2,
        warmup=0,
        pipeline=PipelineConfig(mode="none", coalesce=False),
    )
    for bundling in ("neuron", "row-column"):
        plain = simulate_decode(shape, prof, bundling=bundling, **kw)
        copied = simulate_decode(shape, prof, bundling=bundling, copies=2, **kw)
        np.testing.assert_allclose(
            copied.token_seconds - plain.token_seconds, 3 * 2 * 4096 / 40e9, rtol=1e-9
        )
    with pytest.raises(ConfigError, match="copies=-1"):
        simulate_decode(shape, prof, copies=-1, **kw)


def test_an_experts_cache_ages_with_the_tokens_it_runs():
    """A window of 2 tokens per expert: expert 0 runs at tokens 0 and 3 with the same units, so
    at token 3 its previous token is its own last one and every unit hits (a window counted in
    the model's tokens would have dropped them); expert 1 runs every token."""
    shape = moe_shape()
    masks = np.zeros((4, 4, shape.units), bool)
    masks[[0, 3], 0, 1:4] = True
    masks[:, 1, 4] = True
    r = simulate_decode(
        shape,
        phone(),
        engine="llmflash",
        ffn_fraction=0.5,
        trace=[masks, masks],
        tokens=4,
        warmup=0,
        policy=Window(k=2),
    )
    np.testing.assert_array_equal(r.requested, [8, 2, 2, 8])
    np.testing.assert_array_equal(r.hits, [0, 2, 2, 8])


def test_one_server_fast_path_matches_the_event_path():
    """Untraced tokens on one read server take the batched FIFO path; traced ones (the last
    token) the per-read path. Both give the same times: the last token, recorded, equals the
    same token computed unrecorded in a longer run."""
    shape = mini()
    kw = dict(ffn_fraction=0.3, seed=3)
    for pipeline, issue in (
        (PipelineConfig(mode="none", coalesce=False), "blocking"),
        (PipelineConfig(gate_first=True), "queued"),
        (None, "queued"),
    ):
        short = simulate_decode(
            shape, phone_flash(), tokens=6, pipeline=pipeline, issue=issue, **kw
        )
        long = simulate_decode(shape, phone_flash(), tokens=7, pipeline=pipeline, issue=issue, **kw)
        assert short.token_seconds[5] == pytest.approx(long.token_seconds[5], rel=1e-12)
        assert short.bytes_read[5] == long.bytes_read[5]
        assert short.reads[5] == long.reads[5]
