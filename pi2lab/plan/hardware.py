"""Hardware profiles: what a device can compute, move and read, as a small documented JSON.

A profile holds measured (or published) rates, each with the source it came from:

- ``memory_gbs``: memory read bandwidth, GB/s (one stream of large reads);
- ``dense_gbs``: weight bytes per second a dense f32 matrix-vector product streams (decode is
  memory-bound, so compute is modelled as bytes over this rate);
- ``sparse_gbs``: the same for gathered neuron bundles (the offload engine's host FFN);
- ``storage``: random-read bandwidth by block size and issuing thread count, MB/s, reads that
  bypass the page cache (``O_DIRECT`` here; the paper's UFS figures for phones);
- ``sequential_mbs``: large sequential reads, MB/s;
- ``ram_bytes``: memory usable by the runtime;
- ``cpu_threads``: compute threads available;
- ``sources``: field -> where the number comes from (a command and date, or a citation);
  measured profiles add ``direct`` (whether the reads bypassed the page cache).

Profiles come from :func:`measure` (this machine: ``pi2lab profile-hw``), :func:`builtin`
(the phones PowerInfer-2 was evaluated on, from its published figures, with every assumption
labelled ``assumed:`` in ``sources``) or a JSON file (:meth:`HardwareProfile.load`);
:func:`resolve_profile` takes a built-in name or a path.

Units: GB = 1e9 bytes, MB = 1e6 bytes.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
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

from pi2lab.errors import ConfigError, StorageError
from pi2lab.fileio import atomic_file, bench_dir
from pi2lab.pipeline.scheduler import activation
from pi2lab.storage.io import IOEngine, ReadRequest, aligned_empty, measure_bandwidth

FORMAT = "pi2lab-hardware-1"


@dataclasses.dataclass(frozen=True, kw_only=True)
class StoragePoint:
    """Random-read bandwidth at one block size and thread count.

    Attributes:
      block: Bytes per read.
      threads: Threads issuing reads.
      mb_per_s: Measured (or published) bandwidth, MB/s.
    """

    block: int
    threads: int
    mb_per_s: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class HardwareProfile:
    """A device's rates (see the module docstring for each field's meaning and unit).

    Attributes:
      name: Short name (``oneplus12``, ``this-machine``...).
      description: One line about the device.
      cpu_threads: Compute threads available.
      ram_bytes: Memory usable by the runtime.
      memory_gbs: Memory read bandwidth, GB/s.
      dense_gbs: Dense f32 matrix-vector weight throughput, GB/s.
      sparse_gbs: Gathered-bundle FFN weight throughput, GB/s.
      storage: Random-read points, by block and threads.
      sequential_mbs: Sequential read bandwidth, MB/s.
      sources: Field name -> source of its number.
    """

    name: str
    description: str
    cpu_threads: int
    ram_bytes: int
    memory_gbs: float
    dense_gbs: float
    sparse_gbs: float
    storage: tuple[StoragePoint, ...]
    sequential_mbs: float
    sources: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        for field in ("memory_gbs", "dense_gbs", "sparse_gbs", "sequential_mbs"):
            if not getattr(self, field) > 0:
                raise ConfigError(f"hardware profile {self.name!r}: {field} must be > 0")
        if self.cpu_threads < 1 or self.ram_bytes <= 0 or not self.storage:
            raise ConfigError(
                f"hardware profile {self.name!r}: expected cpu_threads >= 1, ram_bytes > 0 and "
                "at least one storage point"
            )
        for p in self.storage:
            if p.block <= 0 or p.threads < 1 or not p.mb_per_s > 0:
                raise ConfigError(f"hardware profile {self.name!r}: bad storage point {p}")

    def read_mbs(self, block: int, threads: int = 1) -> float:
        """Random-read bandwidth (MB/s) for ``block``-byte reads from ``threads`` threads:
        log-linear interpolation over block sizes at the nearest measured thread count."""
        counts = sorted({p.threads for p in self.storage})
        t = min(counts, key=lambda c: (abs(c - threads), c))
        pts = sorted((p.block, p.mb_per_s) for p in self.storage if p.threads == t)
        blocks = np.log([b for b, _ in pts])
        rates = [r for _, r in pts]
        return float(np.interp(np.log(block), blocks, rates))

    def read_seconds(self, block: int, count: float, threads: int = 1) -> float:
        """Seconds to read ``count`` random blocks of ``block`` bytes."""
        return count * block / (self.read_mbs(block, threads) * 1e6)

    def to_json(self) -> dict:
        out = dataclasses.asdict(self)
        out["format"] = FORMAT
        out["storage"] = [dataclasses.asdict(p) for p in self.storage]
        return out

    @classmethod
    def from_json(cls, data: dict, where: str = "profile") -> HardwareProfile:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            got = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ConfigError(f"{where}: format {got!r}; expected {FORMAT!r}")
        fields = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(fields - {"sources"} - set(data))
        if missing:
            raise ConfigError(f"{where}: missing fields {missing}")
        try:
            storage = tuple(StoragePoint(**p) for p in data["storage"])
            kwargs = {k: v for k, v in data.items() if k in fields and k != "storage"}
            return cls(**kwargs, storage=storage)
        except TypeError as e:
            raise ConfigError(f"{where}: malformed profile ({e})") from e
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from e

    def save(self, path: str | os.PathLike) -> Path:
        with atomic_file(path) as tmp:
            tmp.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> HardwareProfile:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such hardware profile")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not a JSON hardware profile ({e})") from e
        return cls.from_json(data, str(path))


def format_profile(profile: HardwareProfile) -> str:
    """A short table: the scalar rates, then random-read MB/s by block (rows) and threads."""
    p = profile
    lines = [
        f"{p.name}: {p.description}",
        f"  memory {p.memory_gbs:.1f} GB/s   dense {p.dense_gbs:.1f} GB/s   "
        f"sparse {p.sparse_gbs:.1f} GB/s   sequential {p.sequential_mbs:.0f} MB/s",
        f"  RAM {p.ram_bytes / 1e9:.1f} GB   compute threads {p.cpu_threads}",
    ]
    counts = sorted({s.threads for s in p.storage})
    lines.append("  random reads, MB/s:  block " + "".join(f"{t:>8}T" for t in counts))
    rates = {(s.block, s.threads): s.mb_per_s for s in p.storage}
    for block in sorted({s.block for s in p.storage}):
        cells = "".join(
            f"{rates[block, t]:>9.0f}" if (block, t) in rates else f"{'-':>9}" for t in counts
        )
        lines.append(f"  {_size(block):>26} {cells}")
    return "\n".join(lines)


def _size(nbytes: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale and nbytes % scale == 0:
            return f"{nbytes // scale} {unit}"
    return f"{nbytes} B"


# ---------------------------------------------------------------------------------------------
# Measuring this machine

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
    memory_gbs = _memory_gbs(mem_bytes, runs)
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
        f"{', '.join(_size(b) for b in MEASURE_BLOCKS)}; threads {tuple(threads)}"
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
        memory_gbs=memory_gbs,
        dense_gbs=dense_gbs,
        sparse_gbs=sparse_gbs,
        storage=tuple(
            StoragePoint(block=p.block, threads=p.threads, mb_per_s=round(p.mb_per_s, 1))
            for p in points
        ),
        sequential_mbs=sequential_mbs,
        sources=sources,
    )


def _median_seconds(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _memory_gbs(nbytes: int, runs: int) -> float:
    a = np.ones(nbytes // 4, np.float32)
    a.sum()  # fault the pages in before timing
    return round(nbytes / _median_seconds(a.sum, runs) / 1e9, 2)


def _dense_gbs(nbytes: int, runs: int) -> float:
    rows = nbytes // (4 * _BUNDLE_D)
    kw, kx = jax.random.split(jax.random.key(0))
    w = jax.random.normal(kw, (rows, _BUNDLE_D), jnp.float32)  # [F, D]
    x = jax.random.normal(kx, (_BUNDLE_D,), jnp.float32)  # [D]
    matvec = jax.jit(lambda w, x: jnp.einsum("fd,d->f", w, x))
    matvec(w, x).block_until_ready()  # compile
    seconds = _median_seconds(lambda: matvec(w, x).block_until_ready(), runs)
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
        seconds = _median_seconds(lambda: ffn(next(it)), runs)
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
        seconds = _median_seconds(lambda: io.read(requests), passes)
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


# ---------------------------------------------------------------------------------------------
# Published phones

PAPER = "PowerInfer-2 (arXiv 2406.06282)"
_PAPER_MD = "arXiv 2406.06282"

# Decode cost fitted once from the paper's in-memory decode speed (see _phone_compute_fit).
_HIDDEN, _FFN, _LAYERS, _KV_WIDTH, _VOCAB = 4096, 14336, 32, 1024, 32000
_INT4_BYTES_PER_WEIGHT = 7.5 * 1024 / (3 * 4096)  # one INT4 bundle: 7.5 KB for 3 x 4096
_MIXTRAL_FFN_WEIGHTS = 32 * 8 * 3 * 4096 * 14336
_MIXTRAL_PREDICTOR_BYTES = 2.6e9
_ACTIVE_FFN = 0.10
_IN_MEMORY_TOK_S = 12.5
_MULTI_ISSUE_LOSS = 0.40

BUILTIN_PROFILES = ("oneplus12", "oneplus-ace2")
"""Names :func:`builtin` accepts."""


def _phone_compute_fit() -> tuple[float, str]:
    """GB/s of weight bytes a OnePlus 12 decode step streams, from 12.5 tok/s in memory."""
    attn = _LAYERS * (2 * _HIDDEN * _HIDDEN + 2 * _HIDDEN * _KV_WIDTH)
    head = _VOCAB * _HIDDEN
    ffn = _LAYERS * 3 * _HIDDEN * _FFN
    b = _INT4_BYTES_PER_WEIGHT
    pred_share = _MIXTRAL_PREDICTOR_BYTES / (_MIXTRAL_FFN_WEIGHTS * b)
    weights = (attn + head + _ACTIVE_FFN * ffn) * b
    predictors = pred_share * ffn * b
    per_token = weights + predictors
    gbs = per_token * _IN_MEMORY_TOK_S / 1e9
    dense_all = (attn + head + ffn) * b
    text = (
        f"fitted once from {PAPER} v1 §2 (motivation): TurboSparse-Mistral-7B decodes ~"
        f"{_IN_MEMORY_TOK_S} tok/s in memory on the OnePlus 12 (PowerInfer-1 and LLM-in-a-Flash "
        f"alike, both sparse engines; §7.1: 'Mistral-7B' in figures = TurboSparse-Mistral-7B). "
        f"Bytes per token: INT4 at {b} B/weight incl. scales (flash layout: a 3 x 4096 "
        f"INT4 neuron bundle is 7.5 KB) x [attention {attn / 1e9:.3f}G + LM head "
        f"{head / 1e9:.3f}G + "
        f"{_ACTIVE_FFN:.0%} of FFN {ffn / 1e9:.3f}G weights (assumed: TurboSparse ~90% of "
        f"neurons inactive)] = {weights / 1e9:.3f} GB, + predictors {predictors / 1e9:.3f} GB "
        f"(assumed: the Mixtral-47B budget's share, 2.6 GB predictors / "
        f"{_MIXTRAL_FFN_WEIGHTS * b / 1e9:.1f} GB INT4 FFN = {pred_share:.1%}, of Mistral's "
        f"{ffn * b / 1e9:.2f} GB FFN) = {per_token / 1e9:.3f} GB/token; x {_IN_MEMORY_TOK_S} "
        f"tok/s = {gbs:.1f} GB/s, used for dense and sparse alike (one published speed cannot "
        f"separate them). A dense reading ({dense_all / 1e9:.2f} GB/token x 12.5 = "
        f"{dense_all * _IN_MEMORY_TOK_S / 1e9:.1f} GB/s) exceeds the 43.9 GB/s memory bandwidth, "
        f"so 12.5 tok/s is not a dense pass"
    )
    return round(gbs, 1), text


def _phone_storage(published: dict[int, float], scale: float = 1.0) -> tuple:
    """1-thread points (published, or scaled and rounded to two significant figures) and
    2-thread points at the paper's multi-issue loss."""
    one = [
        StoragePoint(block=b, threads=1, mb_per_s=r if scale == 1 else _sig2(r * scale))
        for b, r in published.items()
    ]
    two = [
        StoragePoint(block=p.block, threads=2, mb_per_s=_sig2(p.mb_per_s * (1 - _MULTI_ISSUE_LOSS)))
        for p in one
    ]
    return tuple(one + two)


def _sig2(x: float) -> float:
    """Two significant figures: a derived figure carries no more than its inputs."""
    return float(f"{x:.2g}")


_BIG, _MID, _LITTLE = 1076.0, 1008.0, 762.0  # MB/s, 4 KB random reads by issuing core
_UFS4_RANDOM = {4096: _BIG, 524288: 3500.0}
_UFS4_SEQUENTIAL = 4000.0
_UFS31_SEQUENTIAL = 2100.0
_STORAGE_MODEL = (
    "read_mbs interpolates log-linearly between the published block sizes and is flat "
    "outside them; "
)
_TWO_THREADS = (
    f"2 threads: the 1-thread figure x {1 - _MULTI_ISSUE_LOSS:.1f}; {PAPER} v1 (I/O "
    f"pipeline): issuing reads from several cores loses up to {_MULTI_ISSUE_LOSS:.0%} (UFS has "
    "one command queue; PowerInfer-2 uses exactly one I/O thread); the stated upper bound of the "
    "loss, "
    "applied at every block size (assumed)"
)


def _oneplus12() -> HardwareProfile:
    compute, compute_src = _phone_compute_fit()
    return HardwareProfile(
        name="oneplus12",
        description=(
            "OnePlus 12: Snapdragon 8 Gen 3 (1 big + 5 mid + 2 little cores), 24 GB with 19 GB "
            f"usable, UFS 4.0; published figures from {PAPER}"
        ),
        cpu_threads=6,
        ram_bytes=19_000_000_000,
        memory_gbs=43.9,
        dense_gbs=compute,
        sparse_gbs=compute,
        storage=_phone_storage(_UFS4_RANDOM),
        sequential_mbs=_UFS4_SEQUENTIAL,
        sources={
            "cpu_threads": (
                f"{PAPER} v1 §2: 8 cores, 1 big + 5 mid + 2 little. Assumed: PowerInfer-2 "
                "computes on the big and the 5 mid cores (6 threads) and leaves the little cores "
                "out (slowest; issuing 4 KB reads from one reaches 762 vs 1,076 MB/s from the big "
                "core); its single I/O thread mostly waits in reads and shares the big core"
            ),
            "ram_bytes": f"{PAPER} v1 §7.1 (Table 3): 24 GB, 19 GB usable; {_PAPER_MD}",
            "memory_gbs": (
                f"{PAPER} v1 §2: CPU memory bandwidth 43.9 GB/s measured while running a 7B "
                f"model; {_PAPER_MD}"
            ),
            "dense_gbs": compute_src,
            "sparse_gbs": "same fit as dense_gbs: " + compute_src,
            "storage": (
                f"{PAPER} v1 §2 (UFS 4.0 characterisation), {_PAPER_MD}: 1 thread: 4 KB random "
                f"{_BIG:,.0f} MB/s issued from the big core within a 128 MB range (mid core "
                f"{_MID:,.0f}, little {_LITTLE:,.0f}; ~1 GB/s overall; under 850 MB/s within a 512 "
                "MB range, so spread-out flash files read slower); 512 KB random 3,500 MB/s. "
                + _STORAGE_MODEL
                + _TWO_THREADS
            ),
            "sequential_mbs": (
                f"{PAPER} v1 §2, {_PAPER_MD}: UFS 4.0 sequential reads 450 MB/s at 4 KB rising "
                "to 4 GB/s at 512 KB; the large-read figure"
            ),
        },
    )


def _oneplus_ace2() -> HardwareProfile:
    ratio = _UFS31_SEQUENTIAL / _UFS4_SEQUENTIAL
    dram = 51.2 / 76.8  # peak LPDDR5-6400 / LPDDR5X-9600, 64-bit bus
    compute, _ = _phone_compute_fit()
    memory = _sig2(43.9 * dram)
    scaled_compute = round(compute * dram, 1)
    dram_note = (
        "assumed: scaled from the OnePlus 12 by peak DRAM rate, Snapdragon 8+ Gen 1 LPDDR5-6400 "
        "(51.2 GB/s) / Snapdragon 8 Gen 3 LPDDR5X-9600 (76.8 GB/s) = "
        f"{dram:.3f} (Qualcomm spec sheets; not measured in the paper)"
    )
    return HardwareProfile(
        name="oneplus-ace2",
        description=(
            "OnePlus Ace 2: Snapdragon 8+ Gen 1 (1 big + 3 mid + 4 little cores), 16 GB with "
            "11 GB usable, UFS 3.1; device facts from "
            f"{PAPER}, rates mostly assumed (the paper publishes no UFS 3.1 curve)"
        ),
        cpu_threads=4,
        ram_bytes=11_000_000_000,
        memory_gbs=memory,
        dense_gbs=scaled_compute,
        sparse_gbs=scaled_compute,
        storage=_phone_storage(_UFS4_RANDOM, ratio),
        sequential_mbs=_UFS31_SEQUENTIAL,
        sources={
            "cpu_threads": (
                "assumed: the big and the 3 mid cores of the Snapdragon 8+ Gen 1 (Cortex-X2 + 3 "
                "A710 + 4 A510, Qualcomm spec sheet), little cores left out as on the OnePlus 12"
            ),
            "ram_bytes": f"{PAPER} v1 §7.1 (Table 3): 16 GB, 11 GB usable; {_PAPER_MD}",
            "memory_gbs": (
                f"43.9 GB/s x {dram:.3f} = {43.9 * dram:.1f}, ~{memory:g} GB/s (two significant "
                f"figures); {dram_note}"
            ),
            "dense_gbs": (
                f"the OnePlus 12 fit ({compute} GB/s, see oneplus12) x {dram:.3f} = "
                f"{scaled_compute} GB/s; {dram_note}; the older CPU cores (X2/A710 vs X4/A720) "
                "may make it lower still"
            ),
            "sparse_gbs": f"same as dense_gbs: {compute} x {dram:.3f} = {scaled_compute} GB/s",
            "storage": (
                "assumed: the OnePlus 12's UFS 4.0 random-read figures (4 KB 1,076, 512 KB 3,500 "
                f"MB/s, {PAPER} v1 §2) x {ratio:.3f}, the ratio of UFS 3.1 to UFS 4.0 sequential "
                f"reads ({_UFS31_SEQUENTIAL:,.0f} / {_UFS4_SEQUENTIAL:,.0f} MB/s), rounded to two "
                "significant figures; the paper gives no UFS 3.1 curve. "
                + _STORAGE_MODEL
                + _TWO_THREADS
            ),
            "sequential_mbs": (
                "assumed: UFS 3.1 spec-sheet sequential read ~2,100 MB/s (JEDEC UFS 3.1, HS-G4 "
                "x2 lanes; typical vendor figure), not measured in the paper"
            ),
        },
    )


_BUILDERS = {"oneplus12": _oneplus12, "oneplus-ace2": _oneplus_ace2}


def builtin(name: str) -> HardwareProfile:
    """The published profile ``name`` (one of :data:`BUILTIN_PROFILES`).

    Raises:
      ConfigError: an unknown name; the message lists the valid ones.
    """
    if name not in _BUILDERS:
        raise ConfigError(
            f"unknown hardware profile {name!r}; built-in profiles: {', '.join(BUILTIN_PROFILES)}"
        )
    return _BUILDERS[name]()


def resolve_profile(name_or_path: str | os.PathLike) -> HardwareProfile:
    """A built-in profile by name, else the JSON profile file at ``name_or_path``.

    Raises:
      ConfigError: neither a built-in name nor a readable, valid profile file.
    """
    text = os.fspath(name_or_path)
    if text in _BUILDERS:
        return builtin(text)
    if Path(text).exists() or os.sep in text or text.endswith(".json"):
        return HardwareProfile.load(text)
    raise ConfigError(
        f"unknown hardware profile {text!r}: not a file, and not one of the built-in profiles "
        f"({', '.join(BUILTIN_PROFILES)})"
    )
