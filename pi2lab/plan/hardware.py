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
- ``flash``: optionally a :class:`FlashModel`, a phone's UFS described by the paper's
  measurements (4 KiB rate by address range and issuing core, one command queue); when set,
  it answers :meth:`HardwareProfile.read_mbs` and ``storage`` only lists its values;
- ``sources``: field -> where the number comes from (a command and date, or a citation);
  measured profiles add ``direct`` (whether the reads bypassed the page cache).

Profiles come from :func:`pi2lab.plan.measure.measure` (this machine: ``pi2lab profile-hw``),
:func:`pi2lab.plan.phones.builtin` (the phones PowerInfer-2 was evaluated on, from its published
figures, with every assumption labelled ``assumed:`` in ``sources``) or a JSON file
(:meth:`HardwareProfile.load`); :func:`pi2lab.plan.phones.resolve_profile` takes a built-in name
or a path.

Units: GB = 1e9 bytes, MB = 1e6 bytes.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from pi2lab.errors import ConfigError
from pi2lab.fileio import atomic_file
from pi2lab.storage.io import ALIGN

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
class FlashModel:
    """A phone's flash (UFS) as its random-read measurements describe it.

    One read of ``b`` bytes costs a per-command time plus its transfer:
    ``t = command(span) + core_extra(core) + b / link``, where

    - ``command(span)`` follows the 4 KiB random-read rate measured for reads spread over an
      address range of ``span`` bytes (:attr:`random_4k`, from the big core): ``4096 / rate -
      4096 / link``; the rate is log-linear in the range between the measured points, falls on
      past the last one at the last segment's slope per doubling, and never drops below
      :attr:`floor_4k_mbs`; ranges below the first point read at the first point's rate;
    - ``core_extra(core)``: what issuing from a slower core adds to a 4 KiB read, from the
      4 KiB rates by issuing core (:attr:`cores`, measured within the first range);
    - ``link``: transfer rate, fitted so that a ``large_block`` read within the first range
      takes ``large_block / large_mbs``;
    - one command queue: reads issued from more than one thread are served one at a time and
      each is slower by ``1 / (1 - multi_issue_loss)``;
    - blocking reads (``blocking=True``: each issuing thread waits for its read before it issues
      the next, so no I/O thread keeps the device's queue full) take a command time of at least
      ``4096 / blocking_4k_mbs - 4096 / link`` whatever the range; the transfer and the issuing
      core's cost add as above.

    Attributes:
      random_4k: ``((span bytes, MB/s), ...)``, 4 KiB random reads by address range, ascending.
      floor_4k_mbs: Lowest 4 KiB rate at any range, MB/s.
      cores: Issuing core -> 4 KiB random MB/s within the first range.
      io_core: The core that issues reads (a key of ``cores``).
      large_block: Bytes of the large random read that fixes the link rate.
      large_mbs: Its measured rate, MB/s.
      multi_issue_loss: Share of the rate lost when several threads issue reads.
      blocking_4k_mbs: 4 KiB random MB/s of blocking reads from one thread (None: as fast as
        queued reads), at most the first range's queued rate.
    """

    random_4k: tuple[tuple[int, float], ...]
    floor_4k_mbs: float
    cores: dict
    io_core: str
    large_block: int
    large_mbs: float
    multi_issue_loss: float
    blocking_4k_mbs: float | None = None

    def __post_init__(self):
        spans = [s for s, _ in self.random_4k]
        rates = [r for _, r in self.random_4k]
        if not spans or spans != sorted(set(spans)) or spans[0] <= 0:
            raise ConfigError(
                f"flash model: random_4k spans {spans}: expected ascending, distinct, > 0"
            )
        if not all(r > 0 for r in rates) or not 0 < self.floor_4k_mbs <= min(rates):
            raise ConfigError(
                f"flash model: 4 KiB rates {rates}, floor {self.floor_4k_mbs}: expected rates "
                "> 0 and 0 < floor <= every rate"
            )
        if self.io_core not in self.cores or not all(r > 0 for r in self.cores.values()):
            raise ConfigError(
                f"flash model: io_core {self.io_core!r}: expected one of {sorted(self.cores)}, "
                "each with a rate > 0"
            )
        if self.large_block <= ALIGN or not self.large_mbs > 0:
            raise ConfigError(
                f"flash model: large_block={self.large_block}, large_mbs={self.large_mbs}: "
                f"expected a block above {ALIGN} bytes and a rate > 0"
            )
        if not (self.large_block / self.large_mbs > ALIGN / rates[0] and self.link_mbs >= rates[0]):
            raise ConfigError(
                f"flash model: {self.large_block}-byte reads at {self.large_mbs} MB/s beside "
                f"{ALIGN}-byte reads at {rates[0]} MB/s: no link rate fits (expected the large "
                "reads faster)"
            )
        if not 0 <= self.multi_issue_loss < 1:
            raise ConfigError(
                f"flash model: multi_issue_loss={self.multi_issue_loss}: expected [0, 1)"
            )
        if self.blocking_4k_mbs is not None and not 0 < self.blocking_4k_mbs <= rates[0]:
            raise ConfigError(
                f"flash model: blocking_4k_mbs={self.blocking_4k_mbs}: expected a rate > 0 and "
                f"at most the queued 4 KiB rate {rates[0]}"
            )

    @property
    def link_mbs(self) -> float:
        """Transfer rate, MB/s: what a read costs beyond its command time."""
        t_large = self.large_block / self.large_mbs
        t_small = ALIGN / self.random_4k[0][1]
        return (self.large_block - ALIGN) / (t_large - t_small)

    def random_4k_mbs(self, span: int | None = None) -> float:
        """4 KiB random-read MB/s from the big core over an address range of ``span`` bytes
        (``None``: the first measured range)."""
        pts = self.random_4k
        if span is None or span <= pts[0][0]:
            return float(pts[0][1])
        logs = np.log2([s for s, _ in pts])
        x = np.log2(span)
        if len(pts) == 1:
            rate = pts[0][1]
        elif x <= logs[-1]:
            rate = float(np.interp(x, logs, [r for _, r in pts]))
        else:
            slope = (pts[-1][1] - pts[-2][1]) / (logs[-1] - logs[-2])
            rate = pts[-1][1] + slope * (x - logs[-1])
        return float(max(rate, self.floor_4k_mbs))

    def read_seconds(
        self,
        block: int,
        span: int | None = None,
        *,
        issuers: int = 1,
        core: str | None = None,
        blocking: bool = False,
    ) -> float:
        """Seconds one ``block``-byte read takes over an address range of ``span`` bytes,
        issued from ``core`` (default :attr:`io_core`) while ``issuers`` threads issue reads;
        ``blocking``: each issuer waits for its read before the next (see the class docstring)."""
        if block <= 0 or issuers < 1:
            raise ConfigError(f"flash read: block={block}, issuers={issuers}: expected both >= 1")
        core = self.io_core if core is None else core
        if core not in self.cores:
            raise ConfigError(f"flash read: core {core!r}: expected one of {sorted(self.cores)}")
        link = self.link_mbs * 1e6
        command = ALIGN / (self.random_4k_mbs(span) * 1e6) - ALIGN / link
        if blocking and self.blocking_4k_mbs is not None:
            command = max(command, ALIGN / (self.blocking_4k_mbs * 1e6) - ALIGN / link)
        ref = max(self.cores.values())
        extra = ALIGN / (self.cores[core] * 1e6) - ALIGN / (ref * 1e6)
        t = command + extra + block / link
        return t / (1 - self.multi_issue_loss) if issuers > 1 else t

    def read_mbs(
        self,
        block: int,
        span: int | None = None,
        *,
        issuers: int = 1,
        core: str | None = None,
        blocking: bool = False,
    ) -> float:
        """MB/s of ``block``-byte random reads (see :meth:`read_seconds`)."""
        t = self.read_seconds(block, span, issuers=issuers, core=core, blocking=blocking)
        return block / t / 1e6

    def to_json(self) -> dict:
        out = dataclasses.asdict(self)
        out["random_4k"] = [list(p) for p in self.random_4k]
        return out

    @classmethod
    def from_json(cls, data: dict) -> FlashModel:
        data = dict(data)
        data["random_4k"] = tuple((int(s), float(r)) for s, r in data["random_4k"])
        return cls(**data)


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
      flash: The flash read model, where the device is described by one (phones).
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
    flash: FlashModel | None = None
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

    def read_mbs(
        self, block: int, threads: int = 1, span: int | None = None, *, blocking: bool = False
    ) -> float:
        """Random-read bandwidth (MB/s) for ``block``-byte reads from ``threads`` threads over
        an address range of ``span`` bytes, ``blocking`` (each thread waits for its read before
        the next) or queued by one I/O thread: the :attr:`flash` model where there is one, else
        log-linear interpolation over block sizes at the nearest measured thread count (the
        measured curve knows no range and was taken with blocking reads: ``span`` and
        ``blocking`` are ignored)."""
        if self.flash is not None:
            return self.flash.read_mbs(block, span, issuers=threads, blocking=blocking)
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
        out["flash"] = self.flash.to_json() if self.flash is not None else None
        return out

    @classmethod
    def from_json(cls, data: dict, where: str = "profile") -> HardwareProfile:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            got = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ConfigError(f"{where}: format {got!r}; expected {FORMAT!r}")
        fields = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(fields - {"sources", "flash"} - set(data))
        if missing:
            raise ConfigError(f"{where}: missing fields {missing}")
        try:
            storage = tuple(StoragePoint(**p) for p in data["storage"])
            flash = FlashModel.from_json(data["flash"]) if data.get("flash") else None
            skip = ("storage", "flash")
            kwargs = {k: v for k, v in data.items() if k in fields and k not in skip}
            return cls(**kwargs, storage=storage, flash=flash)
        except (TypeError, KeyError, ValueError) as e:
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
    if p.flash is not None:
        f = p.flash
        ranges = ", ".join(f"{format_size(a)} {r:,.0f}" for a, r in f.random_4k)
        cores = ", ".join(f"{c} {r:,.0f}" for c, r in f.cores.items())
        lines.append(
            f"  flash model: 4 KiB random MB/s by range {ranges} (floor {f.floor_4k_mbs:,.0f}); "
            f"by core {cores}; link {f.link_mbs:,.0f} MB/s; one command queue "
            f"(-{f.multi_issue_loss:.0%} from several issuers); "
            + (
                f"blocking reads 4 KiB {f.blocking_4k_mbs:,.0f}; "
                if f.blocking_4k_mbs is not None
                else ""
            )
            + f"listed below within {format_size(f.random_4k[0][0])} (queued)"
        )
    counts = sorted({s.threads for s in p.storage})
    lines.append("  random reads, MB/s:  block " + "".join(f"{t:>8}T" for t in counts))
    rates = {(s.block, s.threads): s.mb_per_s for s in p.storage}
    for block in sorted({s.block for s in p.storage}):
        cells = "".join(
            f"{rates[block, t]:>9.0f}" if (block, t) in rates else f"{'-':>9}" for t in counts
        )
        lines.append(f"  {format_size(block):>26} {cells}")
    return "\n".join(lines)


def format_size(nbytes: int) -> str:
    """``nbytes`` as text: whole MiB or KiB where it divides, else bytes."""
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale and nbytes % scale == 0:
            return f"{nbytes // scale} {unit}"
    return f"{nbytes} B"
