"""The phone flash read model: range dependence, per-core rates, one command queue, each against
a case computed by hand (round numbers, not a measurement)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pi2lab.errors import ConfigError
from pi2lab.pipeline.scheduler import PipelineConfig
from pi2lab.plan.hardware import HardwareProfile
from pi2lab.plan.phones import builtin
from pi2lab.plan.simulator import simulate_decode
from tests.conftest import round_profile, tiny_shape
from tests.plan.conftest import flash_model as flash

MIB = 1 << 20
US = 1e-6


def test_transfer_rate_fitted_from_the_large_read():
    assert flash().link_mbs == pytest.approx(4096.0)
    assert flash().read_seconds(13 * 4096) == pytest.approx(16 * US)


def test_small_reads_slow_down_with_the_address_range():
    f = flash()
    assert f.random_4k_mbs(64 * MIB) == 1024.0  # below the first range: its rate
    assert f.random_4k_mbs(128 * MIB) == 1024.0
    assert f.random_4k_mbs(256 * MIB) == pytest.approx(896.0)  # log-linear between
    assert f.random_4k_mbs(512 * MIB) == pytest.approx(768.0)
    assert f.random_4k_mbs(1024 * MIB) == pytest.approx(640.0)  # on at -128 per doubling
    assert f.random_4k_mbs(2048 * MIB) == pytest.approx(512.0)
    assert f.random_4k_mbs(8192 * MIB) == pytest.approx(400.0)  # 256 -> the floor
    # a command within 1 GiB: 4096 / 640 MB/s = 6.4 us, less 1 us of transfer; an 8 KiB read
    # adds 2 us of transfer: 7.4 us
    assert f.read_seconds(8192, 1024 * MIB) == pytest.approx(7.4 * US)
    assert f.read_mbs(8192, 1024 * MIB) == pytest.approx(8192 / 7.4)
    # large reads barely feel the range: 13 x 4 KiB within 512 MiB, a command of
    # 4096 / 768 - 1 = 13/3 us, plus 13 us of transfer: 52/3 us (16 us within 128 MiB)
    assert f.read_seconds(13 * 4096, 512 * MIB) == pytest.approx(52 / 3 * US)


def test_slower_issuing_cores_add_to_each_read():
    f = flash()
    assert f.read_seconds(4096, core="big") == pytest.approx(4 * US)
    assert f.read_seconds(4096, core="mid") == pytest.approx(5 * US)
    assert f.read_seconds(4096, core="little") == pytest.approx(8 * US)
    assert f.read_mbs(4096, core="little") == pytest.approx(512.0)
    # the core's cost adds to the range's: little core, 8 KiB within 1 GiB: 7.4 + 4 us
    assert f.read_seconds(8192, 1024 * MIB, core="little") == pytest.approx(11.4 * US)
    slow = flash(io_core="little")
    assert slow.read_seconds(4096) == pytest.approx(8 * US)


def test_one_command_queue_several_issuers_lose_rate():
    f = flash()
    assert f.read_seconds(4096, issuers=2) == pytest.approx(8 * US)
    assert f.read_seconds(4096, issuers=6) == pytest.approx(8 * US)  # one queue: no gain
    assert f.read_mbs(13 * 4096, issuers=3) == pytest.approx(3328.0 / 2)


def test_blocking_reads_pay_a_longer_command():
    f = flash()
    # within 128 MiB: a 7 us command (not 3) plus the transfer
    assert f.read_seconds(4096, blocking=True) == pytest.approx(8 * US)
    assert f.read_seconds(8192, blocking=True) == pytest.approx(9 * US)
    assert f.read_seconds(13 * 4096, blocking=True) == pytest.approx(20 * US)
    # the range's command (5.4 us within 1 GiB) stays below it; the floor's (9.24 us) does not
    assert f.read_seconds(4096, 1024 * MIB, blocking=True) == pytest.approx(8 * US)
    assert f.read_seconds(4096, 1 << 40, blocking=True) == pytest.approx(4096 / 400e6)
    # several blocking issuers on one queue: x 2; a slower core adds its extra
    assert f.read_seconds(8192, issuers=2, blocking=True) == pytest.approx(18 * US)
    assert f.read_seconds(4096, core="little", blocking=True) == pytest.approx(12 * US)
    assert f.read_mbs(4096, issuers=2, blocking=True) == pytest.approx(256.0)
    # no blocking rate: blocking reads cost what queued ones do
    plain = flash(blocking_4k_mbs=None)
    assert plain.read_seconds(4096, blocking=True) == pytest.approx(4 * US)


def test_simulator_blocking_issue_reads_from_every_compute_thread():
    """issue="blocking": the profile's 2 compute threads each wait for their read; one command
    queue serves the three 4 KiB reads one after another at the several-issuer blocking cost
    (2 x 8 us), so they end at 16, 32, 48 us."""
    shape = tiny_shape()
    prof = round_profile(
        {(4096, 1): 1024.0},
        name="flash-test",
        cpu_threads=2,
        dense_gbs=30.0,
        sparse_gbs=20.0,
        flash=flash(),
    )
    masks = np.zeros((2, shape.units), bool)
    masks[:, [0, 2, 5]] = True
    kw = dict(ffn_fraction=0.0, trace=[masks], tokens=2, warmup=0)
    r = simulate_decode(shape, prof, pipeline=PipelineConfig(mode="none"), issue="blocking", **kw)
    front = (shape.attention_bytes() + shape.predictor_bytes()) / 30e9
    reads = sorted((e for e in r.timeline.events if e.stage == "read"), key=lambda e: e.end)
    np.testing.assert_allclose([e.end - front for e in reads], [16 * US, 32 * US, 48 * US])
    unit = (shape.bundle_bytes + shape.scale_bytes_per_neuron) / 20e9
    expected = front + 48 * US + 3 * unit + shape.head_bytes() / 30e9
    np.testing.assert_allclose(r.token_seconds, expected, rtol=1e-9)
    with pytest.raises(ConfigError, match="issue='async'"):
        simulate_decode(shape, prof, issue="async", **kw)


def test_simulator_serves_every_read_from_one_queue():
    """Three 4 KiB reads of one token with two I/O threads: one command queue serves them one
    after another, each at the several-issuer cost (8 us), so the reads end at 8, 16, 24 us."""
    shape = tiny_shape()
    prof = round_profile(
        {(4096, 1): 1024.0},
        name="flash-test",
        dense_gbs=30.0,
        sparse_gbs=20.0,
        flash=flash(),
    )
    masks = np.zeros((2, shape.units), bool)
    masks[:, [0, 2, 5]] = True  # not adjacent: three reads
    r = simulate_decode(
        shape,
        prof,
        ffn_fraction=0.0,
        trace=[masks],
        tokens=2,
        warmup=0,
        pipeline=PipelineConfig(mode="none", io_threads=2),
    )
    front = (shape.attention_bytes() + shape.predictor_bytes()) / 30e9
    reads = sorted((e for e in r.timeline.events if e.stage == "read"), key=lambda e: e.end)
    assert {e.thread for e in reads} == {"io0"}
    ends = [e.end - front for e in reads]
    np.testing.assert_allclose(ends, [8 * US, 16 * US, 24 * US], rtol=1e-9)
    unit = (shape.bundle_bytes + shape.scale_bytes_per_neuron) / 20e9
    expected = front + 24 * US + 3 * unit + shape.head_bytes() / 30e9
    np.testing.assert_allclose(r.token_seconds, expected, rtol=1e-9)


def test_oneplus12_model_holds_the_papers_figures():
    f = builtin("oneplus12").flash
    assert f.read_mbs(4096, 128 * MIB) == pytest.approx(1076.0)
    assert f.read_mbs(4096, 512 * MIB) == pytest.approx(850.0)
    assert f.read_mbs(4096, 4096 * MIB) < 850.0  # a whole model file reads slower still
    assert f.read_mbs(4096, 1 << 40) == pytest.approx(100_000 * 4096 / 1e6)  # ~100K IOPS
    assert f.read_mbs(524288) == pytest.approx(3500.0)
    got = [f.read_mbs(4096, core=c) for c in ("big", "mid", "little")]
    assert got == pytest.approx([1076.0, 1008.0, 762.0])
    assert f.read_mbs(4096, issuers=2) == pytest.approx(1076.0 * 0.6)
    # blocking reads: ~100K random IOPS at 4 KiB; from 6 compute threads, less 40%
    assert f.read_mbs(4096, blocking=True) == pytest.approx(100_000 * 4096 / 1e6)
    assert f.read_mbs(4096, issuers=6, blocking=True) == pytest.approx(409.6 * 0.6)


def test_flash_model_survives_json(tmp_path):
    prof = round_profile({(4096, 1): 1024.0}, flash=flash())
    assert HardwareProfile.load(prof.save(tmp_path / "p.json")) == prof


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(random_4k=()), "ascending"),
        (dict(random_4k=((512 * MIB, 700.0), (128 * MIB, 1000.0))), "ascending"),
        (dict(floor_4k_mbs=900.0), "floor"),
        (dict(io_core="prime"), "io_core 'prime'"),
        (dict(large_mbs=500.0), "no link rate fits"),
        (dict(multi_issue_loss=1.0), "multi_issue_loss"),
        (dict(blocking_4k_mbs=2000.0), "blocking_4k_mbs"),
        (dict(blocking_4k_mbs=0.0), "blocking_4k_mbs"),
    ],
)
def test_bad_flash_model_named(change, match):
    with pytest.raises(ConfigError, match=match):
        flash(**change)


def test_bad_read_named():
    with pytest.raises(ConfigError, match="core 'prime'"):
        flash().read_seconds(4096, core="prime")
    with pytest.raises(ConfigError, match="issuers=0"):
        flash().read_seconds(4096, issuers=0)
    assert dataclasses.replace(flash(), io_core="mid").read_seconds(4096) == pytest.approx(5 * US)
