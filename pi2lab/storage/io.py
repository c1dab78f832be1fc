"""Reads from flash bundle files on I/O threads, overlapped with compute in the main thread.

An :class:`IOEngine` opens its files once and serves batches of :class:`ReadRequest` (a file
index, a byte range and a destination view) on a small thread pool. ``os.preadv`` releases the
GIL, so reads proceed while the main thread runs NumPy or JAX.

**O_DIRECT.** Files are opened with ``O_DIRECT`` by default, so reads bypass the page cache and
measure the device, as on a phone where the weights do not fit in RAM. The kernel then needs the
file offset, the length and the buffer address of every piece to be multiples of the logical
block size; this module uses 4096 (:data:`ALIGN`), which covers every common device. Requests
that are not aligned still work: their covering 4096-aligned range is read into a per-thread
aligned bounce buffer and the bytes are copied out. Use :func:`aligned_empty` for cache slots and
staging buffers so aligned requests go straight into them. A file system that refuses O_DIRECT
(``EINVAL``) is read through the page cache instead; :attr:`IOEngine.fallback_reason` says why
and :attr:`IOEngine.direct` is then False.

**One I/O thread by default.** PowerInfer-2 issues reads from a single thread because a phone's
UFS has one command queue: several issuing threads there lose up to 40% of the bandwidth. On an
NVMe or virtio disk several threads do help small reads (on the reference machine, 4 KiB random
reads go from 56 MB/s on one thread to 141 MB/s on four; see ANCHORS.md), so ``threads`` is a
knob, and :func:`measure_bandwidth` records the curve of the machine at hand.

**Coalescing.** Within one :meth:`IOEngine.submit` call, requests to the same file are sorted by
offset, and a request that starts exactly where the previous one ends (``a.offset + a.length ==
b.offset``) joins its read, as long as the read stays within ``max_coalesce_bytes`` and the OS's
limit on scatter pieces. A merged read is one ``os.preadv`` scattering straight into the
destinations (through the bounce buffer when a piece is unaligned under O_DIRECT). Overlapping or
gapped requests are never merged: reading a gap would cost bandwidth for bytes nobody asked for.

**Completion.** :meth:`IOEngine.submit` returns one :class:`Read` per read after coalescing; each
holds the ``future`` (whose result is the :class:`ReadRecord`) and the ``requests`` it serves.
:func:`iter_completed` yields the reads as they finish, so a pipeline can start on the units whose
bytes have arrived. A failed read raises :class:`~pi2lab.errors.StorageError` from its future;
the engine stays usable.
"""

from __future__ import annotations

import concurrent.futures
import errno
import os
import random
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from pi2lab.errors import StorageError

ALIGN = 4096
"""Alignment (bytes) of offsets, lengths and buffer addresses for O_DIRECT reads."""

# preadv refuses more scatter pieces than this (EINVAL), so it also bounds a merged read.
# sysconf answers -1 where the limit is unknown; 1024 is the Linux value.
IOV_MAX = max(os.sysconf("SC_IOV_MAX"), 0) or 1024
MAX_COALESCE = 1 << 20
"""The default largest merged read, in bytes."""

_MIN_BENCH_BYTES = 4 << 20


def aligned_empty(nbytes: int, align: int = ALIGN) -> np.ndarray:
    """An uninitialised ``uint8`` array of ``nbytes`` bytes whose data pointer is a multiple of
    ``align`` bytes (a power of two), usable as an O_DIRECT destination; slices at multiples of
    ``align`` are aligned too."""
    if nbytes < 0:
        raise ValueError(f"nbytes must be >= 0, got {nbytes}")
    if align <= 0 or align & (align - 1):
        raise ValueError(f"align must be a positive power of two, got {align}")
    # Over-allocate and offset: the slice keeps the larger array alive through ``.base``.
    raw = np.empty(nbytes + align, dtype=np.uint8)
    start = -raw.ctypes.data % align
    return raw[start : start + nbytes]


class ReadRequest(NamedTuple):
    """Bytes ``[offset, offset + length)`` of file ``file`` to be placed in ``dest``.

    A NamedTuple rather than a frozen dataclass because a decode step makes thousands of them
    and construction cost matters.

    Attributes:
      file: index into the engine's file list.
      offset: byte offset in the file.
      length: bytes to read, > 0.
      dest: writable C-contiguous ``uint8`` array of exactly ``length`` bytes, often a slice of a
        larger array from :func:`aligned_empty`.
      tag: caller's label, e.g. ``(layer, unit)``; copied into the :class:`ReadRecord`.
    """

    file: int
    offset: int
    length: int
    dest: np.ndarray
    tag: tuple = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class ReadRecord:
    """One completed read, as logged by the worker that did it.

    Attributes:
      file: index into the engine's file list.
      offset: byte offset of the first requested byte.
      nbytes: bytes delivered to the destinations (the sum of the request lengths).
      io_bytes: bytes the device transferred: ``nbytes``, or the covering 4096-aligned range when
        an unaligned O_DIRECT read went through the bounce buffer.
      start: ``time.perf_counter()`` seconds when the worker issued the read.
      end: ``time.perf_counter()`` seconds when the bytes were in the destinations.
      thread: index of the worker thread, ``0 .. threads - 1``, stable per thread.
      tags: the ``tag`` of every request this read served, in file order.
      direct: whether the read bypassed the page cache (O_DIRECT).
    """

    file: int
    offset: int
    nbytes: int
    io_bytes: int
    start: float
    end: float
    thread: int
    tags: tuple
    direct: bool


@dataclass(frozen=True, kw_only=True, eq=False)
class Read:
    """One read after coalescing: the ``future`` resolves to its :class:`ReadRecord` (or raises
    :class:`~pi2lab.errors.StorageError`); ``requests`` are the requests it serves, by offset."""

    future: concurrent.futures.Future
    requests: tuple[ReadRequest, ...]

    @property
    def file(self) -> int:
        return self.requests[0].file

    @property
    def offset(self) -> int:
        return self.requests[0].offset

    @property
    def nbytes(self) -> int:
        return sum(r.length for r in self.requests)

    @property
    def tags(self) -> tuple:
        return tuple(r.tag for r in self.requests)


def iter_completed(reads: Iterable[Read], timeout: float | None = None) -> Iterator[Read]:
    """Yields ``reads`` as their futures finish (done or failed), like
    ``concurrent.futures.as_completed``; ``timeout`` is in seconds."""
    by_future = {r.future: r for r in reads}
    for future in concurrent.futures.as_completed(by_future, timeout=timeout):
        yield by_future[future]


def coalesce(
    files,
    offsets,
    lengths,
    *,
    merge: bool = True,
    max_bytes: int = MAX_COALESCE,
    max_pieces: int = IOV_MAX,
) -> list[np.ndarray]:
    """Groups read requests into reads by the coalescing rule (see the module docstring).

    Requests ``i`` (``files[i]``, ``offsets[i]``, ``lengths[i]``) are sorted by file and offset
    (stably); a request that starts where the previous one ends joins its read while the read
    stays within ``max_bytes`` and ``max_pieces`` requests. A pure function: the I/O engine
    reads by it and the simulator's virtual read servers charge by it.

    Returns:
      One int64 index array per read, its requests in file order; reads in the order of their
      first request in the input (each request alone, in input order, when ``merge`` is off).
    """
    n = len(offsets)
    if not merge or n < 2:
        return [np.array([i]) for i in range(n)]
    files = np.asarray(files, np.int64)
    off = np.asarray(offsets, np.int64)
    length = np.asarray(lengths, np.int64)
    order = np.lexsort((off, files))  # stable: equal offsets keep their input order
    f, off, length = files[order], off[order], length[order]
    new = np.ones(n, bool)
    new[1:] = (f[1:] != f[:-1]) | (off[1:] != off[:-1] + length[:-1])
    starts = np.flatnonzero(new)
    bounds = np.append(starts, n)
    if np.any(np.diff(bounds) > 1):  # cut chains past max_bytes or max_pieces
        cut = []
        for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            size = pieces = 0
            for j in range(a, b):
                if j == a or size + int(length[j]) > max_bytes or pieces >= max_pieces:
                    cut.append(j)
                    size = pieces = 0
                size += int(length[j])
                pieces += 1
        starts = np.array(cut)
    ends = np.append(starts[1:], n).tolist()
    starts = starts.tolist()
    first = np.minimum.reduceat(order, starts)
    return [order[starts[g] : ends[g]] for g in np.argsort(first, kind="stable").tolist()]


def _is_aligned(value: int) -> bool:
    return value % ALIGN == 0


def _open(path: Path, direct: bool) -> tuple[int, bool, str | None]:
    """Opens ``path`` read-only; returns ``(fd, direct, why_not_direct)``."""
    if direct and not hasattr(os, "O_DIRECT"):
        direct, why = False, "os.O_DIRECT is not available on this platform"
    else:
        why = None
    try:
        if direct:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                return os.open(path, os.O_RDONLY), False, f"{path}: O_DIRECT refused at open ({e})"
            # Some file systems accept O_DIRECT at open and refuse the reads; find out now rather
            # than in the middle of a decode step.
            try:
                os.preadv(fd, [aligned_empty(ALIGN)], 0)
            except OSError as e:
                os.close(fd)
                if e.errno != errno.EINVAL:
                    raise
                return os.open(path, os.O_RDONLY), False, f"{path}: O_DIRECT reads refused ({e})"
            return fd, True, None
        return os.open(path, os.O_RDONLY), False, why
    except FileNotFoundError as e:
        raise StorageError(f"flash file not found: {path}") from e
    except OSError as e:
        raise StorageError(f"cannot open flash file {path}: {e}") from e


def _preadv_full(fd: int, buffers: list, offset: int, total: int, direct: bool) -> int:
    """Reads up to ``total`` bytes at ``offset`` into ``buffers``; returns the bytes read, fewer
    only at the end of the file."""
    got = os.preadv(fd, buffers, offset)
    # Regular files read short only at EOF or on a signal; retry from where it stopped, unless
    # that point is unaligned under O_DIRECT (then it can only be EOF, and a retry gives EINVAL).
    while 0 < got < total and not (direct and got % ALIGN):
        rest, skip = [], got
        for buf in buffers:
            if skip >= len(buf):
                skip -= len(buf)
                continue
            rest.append(buf[skip:])
            skip = 0
        n = os.preadv(fd, rest, offset + got)
        if n == 0:
            break
        got += n
    return got


class IOEngine:
    """Serves :class:`ReadRequest` batches on ``threads`` I/O threads; a context manager.

    Args:
      paths: the files, opened once each; requests name them by index.
      threads: I/O worker threads. One is the PowerInfer-2 default (see the module docstring).
      direct: open with O_DIRECT (bypassing the page cache) where the file system allows.
      coalesce: merge adjacent requests of one submit into one read.
      max_coalesce_bytes: the largest merged read, in bytes; a single request may be larger.

    Attributes:
      paths: the files, as ``Path``.
      threads: number of worker threads.
      direct: True when every file is read with O_DIRECT.
      fallback_reason: why some file is read through the page cache, or None.
      log: :class:`ReadRecord` of every successful read, appended by the workers in completion
        order; read it when no reads are in flight, or copy it; :meth:`clear_log` empties it.
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        *,
        threads: int = 1,
        direct: bool = True,
        coalesce: bool = True,
        max_coalesce_bytes: int = MAX_COALESCE,
    ):
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        if max_coalesce_bytes < 1:
            raise ValueError(f"max_coalesce_bytes must be >= 1, got {max_coalesce_bytes}")
        self.paths = tuple(Path(p) for p in paths)
        self.threads = threads
        self.coalesce = coalesce
        self.max_coalesce_bytes = max_coalesce_bytes
        self.log: list[ReadRecord] = []
        self._log_lock = threading.Lock()
        self._fds: list[int] = []
        self._direct: list[bool] = []
        reasons = []
        try:
            for path in self.paths:
                fd, is_direct, why = _open(path, direct)
                self._fds.append(fd)
                self._direct.append(is_direct)
                if why is not None and direct:
                    reasons.append(why)
        except BaseException:
            for fd in self._fds:
                os.close(fd)
            raise
        self.direct = direct and all(self._direct)
        self.fallback_reason = (
            "; ".join(reasons) + "; reading through the page cache" if reasons else None
        )
        self._local = threading.local()
        self._next_index = 0
        self._index_lock = threading.Lock()
        self._closed = False
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="pi2lab-io", initializer=self._init_worker
        )

    def _init_worker(self) -> None:
        with self._index_lock:
            self._local.index = self._next_index
            self._next_index += 1
        self._local.bounce = aligned_empty(0)

    def __enter__(self) -> IOEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"IOEngine({len(self.paths)} files, threads={self.threads}, direct={self.direct}, "
            f"coalesce={self.coalesce}, {state})"
        )

    def close(self) -> None:
        """Waits for reads in flight, joins the worker threads and closes the files. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(wait=True)
        for fd in self._fds:
            os.close(fd)
        self._fds = []

    def clear_log(self) -> None:
        """Empties :attr:`log`."""
        with self._log_lock:
            self.log.clear()

    def submit(self, requests: Sequence[ReadRequest]) -> list[Read]:
        """Queues ``requests``; returns one :class:`Read` per read after coalescing, in the order
        of each read's first request in ``requests`` (workers take them in that order, so put
        what is needed first, first).

        Raises:
          StorageError: the engine is closed, or a request is malformed (file index out of
            range, negative offset, non-positive length, ``dest`` not a writable C-contiguous
            uint8 array of ``length`` bytes). Read failures arrive through the futures.
        """
        if self._closed:
            raise StorageError("IOEngine.submit after close()")
        for r in requests:
            self._check(r)
        groups = coalesce(
            [r.file for r in requests],
            [r.offset for r in requests],
            [r.length for r in requests],
            merge=self.coalesce,
            max_bytes=self.max_coalesce_bytes,
        )
        reads = []
        for group in groups:
            pieces = tuple(requests[i] for i in group.tolist())
            try:
                future = self._executor.submit(self._do_read, pieces)
            except RuntimeError as e:  # closed by another thread since the check above
                raise StorageError("IOEngine.submit after close()") from e
            reads.append(Read(future=future, requests=pieces))
        return reads

    def read(self, requests: Sequence[ReadRequest]) -> list[ReadRecord]:
        """Submits ``requests`` and waits; returns the records in submit order, raising the
        first read's StorageError if any read failed."""
        return [r.future.result() for r in self.submit(requests)]

    def _check(self, r: ReadRequest) -> None:
        if not 0 <= r.file < len(self.paths):
            raise StorageError(f"read request names file {r.file}; engine has {len(self.paths)}")
        if r.offset < 0 or r.length <= 0:
            raise StorageError(
                f"read request {r.tag} on {self.paths[r.file]}: offset {r.offset} and length "
                f"{r.length} must be >= 0 and > 0"
            )
        d = r.dest
        if not (
            isinstance(d, np.ndarray)
            and d.dtype == np.uint8
            and d.nbytes == r.length
            and d.flags.c_contiguous
            and d.flags.writeable
        ):
            got = f"{d.dtype} {d.shape}" if isinstance(d, np.ndarray) else type(d).__name__
            raise StorageError(
                f"read request {r.tag} on {self.paths[r.file]}: dest must be a writable "
                f"C-contiguous uint8 array of {r.length} bytes, got {got}"
            )

    def _do_read(self, pieces: tuple[ReadRequest, ...]) -> ReadRecord:
        """Worker body: one (possibly scattered) read; raises StorageError on failure."""
        first = pieces[0]
        file, offset = first.file, first.offset
        fd, direct = self._fds[file], self._direct[file]
        total = sum(p.length for p in pieces)
        bounce = direct and not (
            _is_aligned(offset)
            and all(_is_aligned(p.length) and _is_aligned(p.dest.ctypes.data) for p in pieces)
        )
        start = time.perf_counter()
        try:
            if bounce:
                lo = offset - offset % ALIGN
                hi = -(-(offset + total) // ALIGN) * ALIGN
                buf = self._bounce(hi - lo)
                got = _preadv_full(fd, [buf], lo, hi - lo, direct) - (offset - lo)
                io_bytes = hi - lo
                if got >= total:
                    pos = offset - lo
                    for p in pieces:
                        np.copyto(p.dest, buf[pos : pos + p.length])
                        pos += p.length
            else:
                got = _preadv_full(fd, [p.dest for p in pieces], offset, total, direct)
                io_bytes = total
        except OSError as e:
            raise StorageError(
                f"read failed: flash file {self.paths[file]}: {total} bytes at offset {offset} "
                f"(tags {first.tag}..): {e}"
            ) from e
        if got < total:
            size = os.fstat(fd).st_size
            raise StorageError(
                f"short read: flash file {self.paths[file]}: {total} bytes at offset {offset}, "
                f"got {max(got, 0)} (file is {size} bytes; tags {first.tag}..)"
            )
        end = time.perf_counter()
        record = ReadRecord(
            file=file,
            offset=offset,
            nbytes=total,
            io_bytes=io_bytes,
            start=start,
            end=end,
            thread=self._local.index,
            tags=tuple(p.tag for p in pieces),
            direct=direct,
        )
        with self._log_lock:
            self.log.append(record)
        return record

    def _bounce(self, nbytes: int) -> np.ndarray:
        """This worker's aligned bounce buffer, at least ``nbytes`` long (grown to the next
        power of two so a growing workload reallocates only a few times)."""
        buf = self._local.bounce
        if len(buf) < nbytes:
            buf = self._local.bounce = aligned_empty(1 << (nbytes - 1).bit_length())
        return buf[:nbytes]


@dataclass(frozen=True, kw_only=True, slots=True)
class BandwidthPoint:
    """Random-read bandwidth at one block size and thread count.

    Attributes:
      block: bytes per read (reads start at multiples of ``block``).
      threads: threads issuing reads at once, each one read in flight.
      mb_per_s: bytes read per second over all threads, in MB/s (10**6 bytes).
      reads: reads done in the measurement.
      direct: whether reads bypassed the page cache.
    """

    block: int
    threads: int
    mb_per_s: float
    reads: int
    direct: bool


def measure_bandwidth(
    path: str | os.PathLike,
    *,
    block_sizes: Sequence[int] = (4096, 16384, 65536, 262144, 1 << 20),
    threads: Sequence[int] = (1, 2, 4),
    seconds: float = 0.3,
    direct: bool = True,
) -> list[BandwidthPoint]:
    """Random block-aligned reads over the whole of ``path`` from N threads for about ``seconds``
    each (every thread does at least one read), for every (block, threads) pair.

    Without O_DIRECT (or where it falls back) the page cache serves repeated blocks, so the
    figures then measure memory, not the device. The file must be at least
    ``max(4 MiB, 4 * max(block_sizes))`` bytes so reads spread over many blocks.

    Raises:
      StorageError: the file is missing or too small, or a read fails.
    """
    path = Path(path)
    if any(b <= 0 or b % ALIGN for b in block_sizes):
        raise ValueError(f"block sizes must be positive multiples of {ALIGN}, got {block_sizes}")
    if any(t < 1 for t in threads):
        raise ValueError(f"thread counts must be >= 1, got {threads}")
    fd, is_direct, _ = _open(path, direct)
    try:
        size = os.fstat(fd).st_size
        need = max(_MIN_BENCH_BYTES, 4 * max(block_sizes))
        if size < need:
            raise StorageError(
                f"bandwidth file {path} is {size} bytes; need at least {need} for random reads"
            )
        points = []
        for block in block_sizes:
            for n in threads:
                reads, elapsed = _random_reads(fd, path, size, block, n, seconds)
                points.append(
                    BandwidthPoint(
                        block=block,
                        threads=n,
                        mb_per_s=reads * block / elapsed / 1e6,
                        reads=reads,
                        direct=is_direct,
                    )
                )
        return points
    finally:
        os.close(fd)


def _random_reads(
    fd: int, path: Path, size: int, block: int, n: int, seconds: float
) -> tuple[int, float]:
    """``n`` threads reading random ``block``-aligned blocks for ``seconds``; returns the reads
    done and the elapsed seconds."""
    counts = [0] * n
    errors: list[BaseException] = []
    barrier = threading.Barrier(n + 1)
    deadline = [0.0]

    def worker(k: int) -> None:
        buf = aligned_empty(block)
        rng = random.Random(k)
        blocks = size // block
        barrier.wait()
        try:
            while True:
                off = rng.randrange(blocks) * block
                if os.preadv(fd, [buf], off) != block:
                    raise StorageError(f"short read: {path}: {block} bytes at offset {off}")
                counts[k] += 1
                if time.perf_counter() >= deadline[0]:
                    break
        except (OSError, StorageError) as e:
            errors.append(e)

    workers = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(n)]
    for w in workers:
        w.start()
    t0 = time.perf_counter()
    deadline[0] = t0 + seconds
    barrier.wait()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise StorageError(f"bandwidth measurement failed: {errors[0]}") from errors[0]
    return sum(counts), elapsed
