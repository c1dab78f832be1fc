"""Measuring this machine: a :class:`~pi2lab.plan.hardware.HardwareProfile` named
``this-machine`` from timed runs here (``pi2lab profile-hw``).

Memory bandwidth (a NumPy sum), dense weight throughput (a jitted matrix-vector product),
sparse throughput (the offload engine's host FFN on gathered bundles), random reads by block
size and thread count and sequential reads (the I/O engine, ``O_DIRECT`` where the filesystem
allows it), usable RAM and CPU threads; every figure's ``sources`` entry says how it was taken.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import threadpoolctl

from pi2lab.errors import StorageError
from pi2lab.fileio import bench_dir
from pi2lab.pipeline.scheduler import activation
from pi2lab.plan.hardware import HardwareProfile, StoragePoint, format_size
from pi2lab.storage.io import IOEngine, ReadRequest, aligned_empty, measure_bandwidth

MEASURE_BLOCKS = (4096, 16384, 49152, 65536, 262144, 1 << 20)
"""Block sizes of the random-read curve: 4 KiB (a phone's I/O unit), 16 KiB, 48 KiB (one f32
neuron bundle at d=4096), 64 KiB, 256 KiB, 1 MiB."""

_MiB = 1 << 20
_BUNDLE_D = 4096


def measure(
    *,
    storage_file: str | os.PathLike | None = None,
    quick: bool = False,
    threads: Sequence[int] = (1, 2, 4),
) -> HardwareProfile:
    """Measures the machine it runs on (name ``this-machine``); takes ~15 s (quick: ~3 s) plus
    writing the temporary storage file.

    Args:
      storage_file: file to read for the storage figures, at least 4 MiB; by default a
        temporary file (1 GiB; quick: 64 MiB) written under ``pi2lab.fileio.bench_dir()``
        and deleted afterwards.
      quick: smaller arrays, files and fewer repeats (smoke runs; noisier figures).
      threads: thread counts of the random-read curve.

    Raises:
      StorageError: the storage file is missing, too small, or a read fails.
    """
    today = datetime.date.today().isoformat()
    tag = f"measured by pi2lab profile-hw{' --quick' if quick else ''}, {today}"
    runs = 5 if quick else 7
    sources = {}

    mem_bytes = (64 if quick else 512) * _MiB
    memory = memory_gbs(mem_bytes, runs)
    sources["memory_gbs"] = (
        f"{tag}: NumPy sum of a {mem_bytes // _MiB} MiB float32 array, one thread, median of {runs}"
    )
    dense_bytes = (32 if quick else 256) * _MiB
    dense_gbs = _dense_gbs(dense_bytes, runs)
    sources["dense_gbs"] = (
        f"{tag}: jitted jnp.einsum('fd,d->f') over a {dense_bytes // _MiB} MiB float32 matrix "
        f"(JAX {jax.__version__}, {jax.default_backend()} backend), bytes / median of {runs}"
    )
    sparse_bytes = (32 if quick else 256) * _MiB
    sparse_gbs, gathered = _sparse_gbs(sparse_bytes, runs)
    sources["sparse_gbs"] = (
        f"{tag}: offload engine's host FFN (np.take of 10% of [F, 3, {_BUNDLE_D}] float32 "
        f"bundles from {sparse_bytes // _MiB} MiB, one [3n, D] @ x product, dReLU, down for "
        f"firing neurons; one BLAS thread), {gathered / _MiB:.1f} MiB gathered / median of {runs}"
    )

    temp = None
    if storage_file is None:
        temp = _write_temp_file(bench_dir(), (64 if quick else 1024) * _MiB)
        where = f"a {os.path.getsize(temp) // _MiB} MiB temporary file under {bench_dir()}"
    else:
        where = f"{storage_file} ({os.path.getsize(storage_file) / _MiB:.0f} MiB)"
    try:
        path = temp or Path(storage_file)
        seconds = 0.1 if quick else 0.3
        points = measure_bandwidth(
            path, block_sizes=MEASURE_BLOCKS, threads=tuple(threads), seconds=seconds
        )
        sequential_mbs, seq_direct, seq_note = _sequential_mbs(
            path, (64 if quick else 512) * _MiB, 3
        )
    finally:
        if temp is not None:
            temp.unlink(missing_ok=True)
    direct = all(p.direct for p in points)
    bypass = (
        "O_DIRECT"
        if direct
        else "page cache (O_DIRECT refused: figures measure memory, not the device)"
    )
    sources["storage"] = (
        f"{tag}: pi2lab.storage.io.measure_bandwidth, random block-aligned reads over {where}, "
        f"{bypass}, {seconds} s per (block, threads); blocks "
        f"{', '.join(format_size(b) for b in MEASURE_BLOCKS)}; threads {tuple(threads)}"
    )
    sources["direct"] = (
        "true: every read bypassed the page cache (O_DIRECT)"
        if direct and seq_direct
        else f"false: O_DIRECT refused on {path}; storage figures measure the page cache"
    )
    sources["sequential_mbs"] = (
        f"{tag}: sequential 1 MiB reads, one IOEngine thread, "
        f"{'O_DIRECT' if seq_direct else 'page cache (O_DIRECT refused)'}, {seq_note}"
    )
    ram_bytes, ram_note = _ram_bytes()
    sources["ram_bytes"] = f"{tag}: {ram_note}"
    sources["cpu_threads"] = f"{tag}: os.cpu_count()"
    return HardwareProfile(
        name="this-machine",
        description=_describe(),
        cpu_threads=os.cpu_count() or 1,
        ram_bytes=ram_bytes,
        memory_gbs=memory,
        dense_gbs=dense_gbs,
        sparse_gbs=sparse_gbs,
        storage=tuple(
            StoragePoint(block=p.block, threads=p.threads, mb_per_s=round(p.mb_per_s, 1))
            for p in points
        ),
        sequential_mbs=sequential_mbs,
        sources=sources,
    )


def median_seconds(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def memory_gbs(nbytes: int, runs: int) -> float:
    """GB/s of a one-thread NumPy sum over ``nbytes`` of float32 (median of ``runs``)."""
    a = np.ones(nbytes // 4, np.float32)
    a.sum()  # fault the pages in before timing
    return round(nbytes / median_seconds(a.sum, runs) / 1e9, 2)


def _dense_gbs(nbytes: int, runs: int) -> float:
    rows = nbytes // (4 * _BUNDLE_D)
    kw, kx = jax.random.split(jax.random.key(0))
    w = jax.random.normal(kw, (rows, _BUNDLE_D), jnp.float32)  # [F, D]
    x = jax.random.normal(kx, (_BUNDLE_D,), jnp.float32)  # [D]
    matvec = jax.jit(lambda w, x: jnp.einsum("fd,d->f", w, x))
    matvec(w, x).block_until_ready()  # compile
    seconds = median_seconds(lambda: matvec(w, x).block_until_ready(), runs)
    return round(w.nbytes / seconds / 1e9, 2)


def _sparse_gbs(nbytes: int, runs: int) -> tuple[float, int]:
    """The offload engine's f32 host path (``FfnStore.compute``, batch 1) on a random 10% of
    the bundles: gather into a contiguous buffer, then gate and up as one ``[3n, D] @ x``
    product and down for the neurons that fire. Returns (GB/s of gathered bytes, bytes)."""
    rng = np.random.default_rng(0)
    d = _BUNDLE_D
    f = max(nbytes // (3 * d * 4), 10)
    bundles = rng.standard_normal((f, 3, d), dtype=np.float32)  # [F, 3, D]
    x = rng.standard_normal(d, dtype=np.float32)  # [D]
    n = f // 10
    picks = [np.sort(rng.choice(f, n, replace=False)) for _ in range(runs + 1)]
    buf = np.empty((n, 3, d), np.float32)  # [n, 3, D]

    def ffn(idx):
        # mode='clip': with the default 'raise', take buffers `out` (3x slower here)
        np.take(bundles, idx, axis=0, out=buf, mode="clip")
        y = (buf.reshape(-1, d) @ x).reshape(-1, 3)  # [n, 3]: gate, up, (unused) down dots
        h = activation(y[:, 0], y[:, 1], "drelu", 0.0)  # [n]
        nz = np.flatnonzero(h)
        return h[nz] @ buf[nz, 2]  # [D]

    with threadpoolctl.threadpool_limits(1, "blas"):
        ffn(picks[-1])  # warm
        it = iter(picks)
        seconds = median_seconds(lambda: ffn(next(it)), runs)
    return round(buf.nbytes / seconds / 1e9, 2), buf.nbytes


def _write_temp_file(folder: Path, nbytes: int) -> Path:
    """A file of ``nbytes`` random bytes in ``folder``, synced so that the dirty pages do not
    compete with the reads measured next."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="profile-hw.", suffix=".bin", dir=folder)
    chunk = np.random.default_rng(0).bytes(min(nbytes, 64 * _MiB))
    try:
        written = 0
        while written < nbytes:
            written += os.write(fd, chunk[: nbytes - written])
        os.fsync(fd)
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except BaseException:
        os.close(fd)
        Path(name).unlink(missing_ok=True)
        raise
    os.close(fd)
    return Path(name)


def _sequential_mbs(path: Path, max_bytes: int, passes: int) -> tuple[float, bool, str]:
    """MB/s of 1 MiB reads in file order over the first ``max_bytes`` of ``path`` from one
    IOEngine thread (median of ``passes``); also whether O_DIRECT held, and a note."""
    reads = min(os.path.getsize(path), max_bytes) // _MiB
    if reads < 1:
        raise StorageError(f"{path}: need at least 1 MiB for sequential reads")
    dest = aligned_empty(_MiB)
    # one thread takes the reads in submit order; 1 MiB requests are never merged
    requests = [ReadRequest(0, i * _MiB, _MiB, dest) for i in range(reads)]
    with IOEngine([path], threads=1) as io:
        seconds = median_seconds(lambda: io.read(requests), passes)
        direct = io.direct
    note = f"{reads} MiB per pass, median of {passes} passes"
    return round(reads * _MiB / seconds / 1e6, 1), direct, note


def _ram_bytes() -> tuple[int, str]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "/proc/meminfo MemAvailable"
    except OSError:
        pass
    pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    return pages * size, "os.sysconf physical pages x page size (MemAvailable unreadable)"


def _describe() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu
            )
    except OSError:
        pass
    return f"{platform.system()} {platform.release()} {platform.machine()}, {cpu}"
