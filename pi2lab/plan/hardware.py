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
        lines.append(f"  {format_size(block):>26} {cells}")
    return "\n".join(lines)


def format_size(nbytes: int) -> str:
    """``nbytes`` as text: whole MiB or KiB where it divides, else bytes."""
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale and nbytes % scale == 0:
            return f"{nbytes // scale} {unit}"
    return f"{nbytes} B"
