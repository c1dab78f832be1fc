"""The read engine: bytes, coalescing, O_DIRECT and its fallback, errors, thread lifetime."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest

from pi2lab.errors import StorageError
from pi2lab.storage import io as sio
from pi2lab.storage.io import (
    ALIGN,
    IOEngine,
    ReadRequest,
    aligned_empty,
    iter_completed,
    measure_bandwidth,
)

REPO = Path(__file__).resolve().parents[2]
FILE_BYTES = 75 * ALIGN + 123  # an unaligned size, so reads that end at EOF are covered


def _supports_direct(directory: Path) -> bool:
    probe = directory / ".odirect-probe"
    probe.write_bytes(b"\0" * ALIGN)
    try:
        fd = os.open(probe, os.O_RDONLY | os.O_DIRECT)
        try:
            os.preadv(fd, [aligned_empty(ALIGN)], 0)
        finally:
            os.close(fd)
        return True
    except (OSError, AttributeError):
        return False
    finally:
        probe.unlink()


@pytest.fixture
def direct_dir(tmp_path):
    """A directory on a file system that honours O_DIRECT: ``tmp_path`` when it does (ext4,
    overlay), else a temporary directory inside the repository's file system; skips if neither."""
    if _supports_direct(tmp_path):
        yield tmp_path
        return
    fallback = Path(tempfile.mkdtemp(prefix=".pytest-odirect-", dir=REPO))
    try:
        if not _supports_direct(fallback):
            pytest.skip("no O_DIRECT-capable file system for the test files")
        yield fallback
    finally:
        shutil.rmtree(fallback, ignore_errors=True)


def write_file(path: Path, nbytes: int = FILE_BYTES, seed: int = 0) -> bytes:
    data = np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8).tobytes()
    path.write_bytes(data)
    return data


def mixed_requests(rng, nbytes: int):
    """Aligned, unaligned, adjacent (both kinds), gapped and EOF-touching requests, with the
    expected byte ranges; aligned ones land in slices of one aligned buffer."""
    slab = aligned_empty(16 * ALIGN)
    spans = [
        (0, ALIGN),  # aligned pair, adjacent
        (ALIGN, 2 * ALIGN),
        (8 * ALIGN, ALIGN),  # aligned, alone
        (20 * ALIGN + 7, 100),  # unaligned pair, adjacent
        (20 * ALIGN + 107, 5000),
        (30 * ALIGN - 10, 20),  # straddles a block boundary
        (nbytes - 123, 123),  # ends at EOF, unaligned
        (nbytes - 123 - ALIGN, ALIGN),  # aligned offset, adjacent to the EOF one
    ]
    for _ in range(6):
        off = int(rng.integers(0, nbytes - 1))
        spans.append((off, int(rng.integers(1, min(9000, nbytes - off) + 1))))
    requests, slot = [], 0
    for i, (off, length) in enumerate(spans):
        if off % ALIGN == 0 and length % ALIGN == 0 and slot + length <= len(slab):
            dest = slab[slot : slot + length]
            slot += length
        else:
            dest = np.zeros(length, np.uint8)
        requests.append(ReadRequest(file=0, offset=off, length=length, dest=dest, tag=(0, i)))
    return requests


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("direct", [True, False])
def test_reads_match_file_bytes(direct_dir, rng, direct, threads):
    data = write_file(direct_dir / "layer.bin")
    requests = mixed_requests(rng, len(data))
    with IOEngine([direct_dir / "layer.bin"], threads=threads, direct=direct) as engine:
        assert engine.direct is direct and engine.fallback_reason is None
        records = engine.read(requests)
    for r in requests:
        assert r.dest.tobytes() == data[r.offset : r.offset + r.length], r.tag
    assert all(rec.direct is direct for rec in records)
    assert sum(rec.nbytes for rec in records) == sum(r.length for r in requests)
    assert all(rec.io_bytes >= rec.nbytes for rec in records)
    # Unaligned requests go through the bounce buffer (a wider aligned read) only under O_DIRECT.
    assert any(rec.io_bytes > rec.nbytes for rec in records) is direct


def test_scatter_read_into_separate_aligned_slots(direct_dir):
    """Adjacent file ranges land in slots that are not adjacent in memory (reverse order)."""
    data = write_file(direct_dir / "layer.bin")
    slab = aligned_empty(4 * ALIGN)
    requests = [
        ReadRequest(
            file=0,
            offset=(10 + k) * ALIGN,
            length=ALIGN,
            dest=slab[(3 - k) * ALIGN :][:ALIGN],
            tag=(k,),
        )
        for k in range(4)
    ]
    with IOEngine([direct_dir / "layer.bin"]) as engine:
        (rec,) = engine.read(requests)
    assert rec.nbytes == rec.io_bytes == 4 * ALIGN and rec.tags == ((0,), (1,), (2,), (3,))
    for k in range(4):
        assert slab[(3 - k) * ALIGN :][:ALIGN].tobytes() == data[(10 + k) * ALIGN :][:ALIGN]


def test_adjacent_requests_coalesce_and_others_do_not(direct_dir):
    for name in ("a.bin", "b.bin"):
        write_file(direct_dir / name)
    buf = aligned_empty(16 * ALIGN)

    def req(file, block, tag, nblocks=1):
        dest = buf[tag * ALIGN :][: nblocks * ALIGN]
        return ReadRequest(
            file=file, offset=block * ALIGN, length=nblocks * ALIGN, dest=dest, tag=(file, tag)
        )

    requests = [
        req(0, 3, 0),  # 3, 4, 5 adjacent, given out of order: one read
        req(0, 5, 1),
        req(0, 4, 2),
        req(0, 7, 3),  # gap after 5: its own read
        req(1, 8, 4),  # file 1 block 8 follows file 0 block 7, but another file
        req(1, 20, 5, nblocks=2),  # 20-21 and 22: adjacent but over max_coalesce_bytes
        req(1, 22, 7),
    ]
    with IOEngine(
        [direct_dir / "a.bin", direct_dir / "b.bin"], threads=2, max_coalesce_bytes=2 * ALIGN + 1
    ) as engine:
        reads = engine.submit(requests)
        records = [r.future.result() for r in reads]
        assert sorted(engine.log, key=lambda r: r.start) == sorted(records, key=lambda r: r.start)
    assert [(r.file, r.offset, r.nbytes) for r in reads] == [
        (0, 3 * ALIGN, 2 * ALIGN),  # 3+4 fill the 2-block limit; 5 starts a new read
        (0, 5 * ALIGN, ALIGN),
        (0, 7 * ALIGN, ALIGN),
        (1, 8 * ALIGN, ALIGN),
        (1, 20 * ALIGN, 2 * ALIGN),
        (1, 22 * ALIGN, ALIGN),
    ]
    assert records[0].tags == ((0, 0), (0, 2)) and reads[0].tags == records[0].tags
    assert all(0 <= rec.thread < 2 and rec.start <= rec.end for rec in records)

    with IOEngine([direct_dir / "a.bin"], max_coalesce_bytes=1 << 20) as engine:
        (read,) = engine.submit(requests[:3])
        assert read.future.result().tags == ((0, 0), (0, 2), (0, 1))
        assert [r.tag for r in read.requests] == [(0, 0), (0, 2), (0, 1)]
    with IOEngine([direct_dir / "a.bin"], coalesce=False) as engine:
        assert len(engine.read(requests[:3])) == 3


def test_reads_are_queued_in_request_order_and_iter_completed_yields_all(direct_dir):
    write_file(direct_dir / "a.bin")
    requests = [
        ReadRequest(file=0, offset=b * ALIGN, length=ALIGN, dest=aligned_empty(ALIGN), tag=(b,))
        for b in (9, 2, 5, 0)
    ]
    with IOEngine([direct_dir / "a.bin"]) as engine:
        reads = engine.submit(requests)
        assert [r.tags for r in reads] == [((9,),), ((2,),), ((5,),), ((0,),)]
        done = list(iter_completed(reads, timeout=10))
        assert {id(r) for r in done} == {id(r) for r in reads}
        # One worker takes the queue in order, so it also finishes in order.
        assert [rec.tags for rec in engine.log] == [r.tags for r in reads]
        engine.clear_log()
        assert engine.log == []


def test_close_joins_threads(direct_dir):
    write_file(direct_dir / "a.bin")
    before = threading.active_count()
    requests = [
        ReadRequest(file=0, offset=b * ALIGN, length=ALIGN, dest=aligned_empty(ALIGN), tag=(b,))
        for b in range(0, 60, 2)
    ]
    engine = IOEngine([direct_dir / "a.bin"], threads=3)
    reads = engine.submit(requests)
    engine.close()  # waits for the queued reads
    assert all(r.future.done() and r.future.exception() is None for r in reads)
    assert threading.active_count() == before
    engine.close()  # idempotent
    with pytest.raises(StorageError, match="after close"):
        engine.submit(requests)

    with IOEngine([direct_dir / "a.bin"], threads=3) as engine:
        engine.read(requests)
        assert threading.active_count() > before
    assert threading.active_count() == before


def test_truncated_file_raises_and_engine_recovers(direct_dir):
    path = direct_dir / "layer.bin"
    data = write_file(path, 16 * ALIGN)
    before = threading.active_count()
    engine = IOEngine([path], threads=2)
    os.truncate(path, 4 * ALIGN)
    past = ReadRequest(file=0, offset=12 * ALIGN, length=ALIGN, dest=aligned_empty(ALIGN))
    across = ReadRequest(file=0, offset=3 * ALIGN, length=2 * ALIGN, dest=aligned_empty(2 * ALIGN))
    unaligned = ReadRequest(file=0, offset=4 * ALIGN - 5, length=10, dest=np.empty(10, np.uint8))
    with pytest.raises(StorageError, match=rf"short read: .*layer\.bin.*at offset {12 * ALIGN}"):
        engine.read([past])
    with pytest.raises(
        StorageError, match=rf"{2 * ALIGN} bytes at offset {3 * ALIGN}, got {ALIGN}"
    ):
        engine.read([across])
    with pytest.raises(StorageError, match=r"10 bytes at offset 16379, got 5"):
        engine.read([unaligned])
    ok = engine.read([ReadRequest(file=0, offset=0, length=ALIGN, dest=aligned_empty(ALIGN))])
    assert len(ok) == 1 and len(engine.log) == 1  # failed reads are not logged
    engine.close()
    assert threading.active_count() == before

    path.write_bytes(data)
    with IOEngine([path]) as engine:
        engine.read([past])
    assert past.dest.tobytes() == data[12 * ALIGN : 13 * ALIGN]


def test_missing_file_and_bad_requests(direct_dir):
    missing = direct_dir / "nope.bin"
    with pytest.raises(StorageError, match="nope.bin"):
        IOEngine([missing])
    write_file(direct_dir / "a.bin")
    with pytest.raises(StorageError, match="nope.bin"):  # the opened file is closed again
        IOEngine([direct_dir / "a.bin", missing])
    with IOEngine([direct_dir / "a.bin"]) as engine:
        with pytest.raises(StorageError, match="file 1"):
            engine.submit([ReadRequest(file=1, offset=0, length=8, dest=np.empty(8, np.uint8))])
        with pytest.raises(StorageError, match="8 bytes"):
            engine.submit([ReadRequest(file=0, offset=0, length=8, dest=np.empty(9, np.uint8))])
        with pytest.raises(StorageError, match="uint8"):
            engine.submit([ReadRequest(file=0, offset=0, length=8, dest=np.empty(2, np.float32))])
        with pytest.raises(StorageError, match="> 0"):
            engine.submit([ReadRequest(file=0, offset=0, length=0, dest=np.empty(0, np.uint8))])


def test_fallback_when_odirect_refused(tmp_path, rng, monkeypatch):
    data = write_file(tmp_path / "a.bin")
    real_open = os.open

    def no_direct_open(path, flags, *args, **kwargs):
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(sio.os, "open", no_direct_open)
    requests = mixed_requests(rng, len(data))
    with IOEngine([tmp_path / "a.bin"], threads=2) as engine:
        assert not engine.direct and "a.bin" in engine.fallback_reason
        records = engine.read(requests)
    assert not any(rec.direct for rec in records)
    for r in requests:
        assert r.dest.tobytes() == data[r.offset : r.offset + r.length]


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no /dev/shm")
def test_tmpfs_file_reads_either_way(rng):
    """tmpfs refuses O_DIRECT on older kernels (the engine falls back) and accepts it since 6.6."""
    with tempfile.TemporaryDirectory(dir="/dev/shm") as d:
        data = write_file(Path(d) / "a.bin")
        requests = mixed_requests(rng, len(data))
        with IOEngine([Path(d) / "a.bin"]) as engine:
            assert engine.direct or "O_DIRECT" in engine.fallback_reason
            engine.read(requests)
    for r in requests:
        assert r.dest.tobytes() == data[r.offset : r.offset + r.length]


def test_aligned_empty():
    for align in (ALIGN, 1 << 16):
        a = aligned_empty(3 * align + 5, align)
        assert a.dtype == np.uint8 and a.size == 3 * align + 5 and a.ctypes.data % align == 0
    assert aligned_empty(0).size == 0


def test_measure_bandwidth(direct_dir):
    path = direct_dir / "bench.bin"
    write_file(path, 4 << 20)
    points = measure_bandwidth(path, block_sizes=(4096, 65536), threads=(1, 2), seconds=0.005)
    assert [(p.block, p.threads) for p in points] == [(4096, 1), (4096, 2), (65536, 1), (65536, 2)]
    assert all(p.mb_per_s > 0 and p.reads >= p.threads and p.direct for p in points)
    write_file(path, 1 << 20)
    with pytest.raises(StorageError, match="bench.bin"):
        measure_bandwidth(path, seconds=0.005)
