"""The llama.cpp mmap baseline: an LRU page cache of read-around windows, faults on the compute
threads, each case computed by hand (round numbers, not a measurement)."""

from __future__ import annotations

import numpy as np
import pytest

from pi2lab.config import ModelConfig
from pi2lab.errors import BudgetError, ConfigError
from pi2lab.plan.mmap_baseline import PageCache, file_blocks, simulate_mmap
from pi2lab.plan.shapes import ModelShape
from pi2lab.plan.simulator import simulate_decode
from pi2lab.plan.traces import SyntheticTrace
from tests.conftest import round_profile, tiny_shape
from tests.plan.conftest import flash_model, moe_shape

PAGE = 4096


def flat(mbs: float = 400.0, threads: int = 2):
    """Every read at ``mbs`` MB/s from ``threads`` compute threads; compute at 10 GB/s."""
    return round_profile({(4096, threads): mbs}, cpu_threads=threads, dense_gbs=10.0)


def test_page_cache_is_an_lru_by_bytes():
    c = PageCache(3)
    assert [c.touch(w, 1) for w in (1, 2, 3, 1)] == [False, False, False, True]
    assert c.touch(4, 1) is False  # evicts 2, the least recently used
    assert [c.touch(w, 1) for w in (1, 3, 4, 2)] == [True, True, True, False]
    assert c.used == 3
    big = PageCache(3)
    assert big.touch(9, 4) is False and big.used == 0  # larger than the cache: not kept
    # a cyclic pass over four windows through three slots misses every time
    cyc = PageCache(3)
    assert not any(cyc.touch(w, 1) for _ in range(5) for w in range(4))
    with pytest.raises(ConfigError, match="capacity -1"):
        PageCache(-1)


def windows(nbytes: int) -> list[int]:
    return [PAGE] * (nbytes // PAGE) + ([nbytes % PAGE] if nbytes % PAGE else [])


def test_a_file_larger_than_the_cache_is_re_read_every_token():
    """One layer: attention, FFN, head in order; a cache of the non-FFN bytes only. Each token
    touches every window in file order, so the LRU evicts each before its next use: every
    byte is read every token, at 400 MB/s, with no overlap."""
    shape, prof = tiny_shape(), flat()
    blocks = file_blocks(shape)
    sizes = [b for *_, b in blocks]
    per_ffn = shape.config.intermediate_size * (shape.bundle_bytes + shape.scale_bytes_per_neuron)
    assert [s for s, *_ in blocks] == ["attention", "compute", "head"]
    assert sizes == [shape.attention_bytes(), per_ffn, shape.head_bytes()]
    r = simulate_mmap(shape, prof, None, 0.0, 3, 16, 0, 0.0, read_around=PAGE)
    file_bytes = sum(sizes)
    reads = sum(len(windows(b)) for b in sizes)
    expected = file_bytes / 400e6 + file_bytes / 10e9
    np.testing.assert_array_equal(r.bytes_read, file_bytes)
    np.testing.assert_array_equal(r.requested, reads)
    np.testing.assert_array_equal(r.hits, 0)
    np.testing.assert_allclose(r.token_seconds, expected, rtol=1e-12)
    assert r.stage_seconds["wait"] == pytest.approx(file_bytes / 400e6)
    # the timeline: each block's faults, then its compute, on one thread
    stages = [e.stage for e in r.timeline.events if e.thread == "compute"]
    assert stages == ["wait", "attention", "wait", "compute", "wait", "head"]


def test_a_file_that_fits_is_read_once():
    shape, prof = tiny_shape(), flat()
    file_bytes = sum(b for *_, b in file_blocks(shape))
    r = simulate_mmap(shape, prof, None, 1.0, 3, 16, 1, 0.0, read_around=PAGE)
    np.testing.assert_array_equal(r.bytes_read, [file_bytes, 0, 0])
    compute = file_bytes / 10e9
    np.testing.assert_allclose(r.token_seconds, [file_bytes / 400e6 + compute, compute, compute])
    assert r.tokens_per_s == pytest.approx(1 / compute)
    assert r.memory_bytes == file_bytes + shape.kv_cache_bytes(16)


def test_a_partial_cache_keeps_what_the_cyclic_pass_leaves():
    """A budget one byte short of the file: the cyclic pass evicts every window before its
    next use, so every byte is re-read every token; the whole file: read once."""
    cfg = ModelConfig.llama2_7b(
        hidden_size=128,
        intermediate_size=64,
        num_layers=1,
        num_heads=4,
        num_kv_heads=4,
        vocab_size=64,
    )
    shape = ModelShape(name="w", config=cfg, active_fraction=(0.1,), dtype="int8")
    sizes = [b for *_, b in file_blocks(shape)]
    file_bytes = sum(sizes)
    kv = shape.kv_cache_bytes(8)
    r = simulate_mmap(shape, flat(), file_bytes + kv - 1, None, 2, 8, 0, 0.0, read_around=PAGE)
    np.testing.assert_array_equal(r.bytes_read, file_bytes)
    r = simulate_mmap(shape, flat(), file_bytes + kv, None, 2, 8, 0, 0.0, read_around=PAGE)
    np.testing.assert_array_equal(r.bytes_read, [file_bytes, 0])


def test_faults_come_from_every_compute_thread():
    """The fault rate is the profile's for cpu_threads issuing threads: 4 threads at 200 MB/s
    take twice as long as 2 threads at 400 MB/s."""
    shape = tiny_shape()
    base = simulate_mmap(shape, flat(400.0, 2), None, 0.0, 1, 16, 0, 0.0, read_around=PAGE)
    slow = simulate_mmap(shape, flat(200.0, 4), None, 0.0, 1, 16, 0, 0.0, read_around=PAGE)
    assert slow.stage_seconds["wait"] == pytest.approx(2 * base.stage_seconds["wait"])


def test_faults_are_blocking_reads_on_a_flash_model():
    """On a phone's flash model a fault is a blocking read from one of the 2 compute threads:
    a 7 us command (the blocking rate, not the queued 3 us) plus 1 us per 4 KiB, doubled by the
    several-issuer loss of one command queue (flash model of tests/plan/test_flash.py)."""
    shape = tiny_shape()
    prof = round_profile({(4096, 1): 1024.0}, cpu_threads=2, dense_gbs=10.0, flash=flash_model())
    r = simulate_mmap(shape, prof, None, 0.0, 1, 16, 0, 0.0, read_around=PAGE)
    sizes = [n for *_, b in file_blocks(shape) for n in windows(b)]
    expected = sum(2 * (7e-6 + n / 4096e6) for n in sizes)
    assert r.stage_seconds["wait"] == pytest.approx(expected, rel=1e-9)


def test_moe_touches_only_routed_experts():
    shape = moe_shape()
    trace = SyntheticTrace(density=0.2, units=640, layers=2, tokens=3, experts=4, top_k=2)
    r = simulate_decode(
        shape, flat(), engine="llama.cpp-mmap", ffn_fraction=0.0, trace=trace, tokens=3
    )
    per_ffn = 640 * (shape.bundle_bytes + shape.scale_bytes_per_neuron)
    routed = sum(trace.layer(i).any(-1).sum(1) for i in range(2))  # [T] experts run
    nonffn = 2 * shape.attention_bytes() + shape.head_bytes()
    np.testing.assert_array_equal(r.bytes_read, nonffn + routed * per_ffn)


def test_bad_mmap_arguments_named():
    shape = tiny_shape()
    with pytest.raises(ConfigError, match="read_around=1000"):
        simulate_mmap(shape, flat(), None, 0.5, 1, 16, 0, 0.0, read_around=1000)
    with pytest.raises(BudgetError, match="non-FFN"):
        simulate_mmap(shape, flat(), 100, None, 1, 16, 0, 0.0)
