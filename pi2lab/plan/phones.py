"""The phones PowerInfer-2 was evaluated on, as hardware profiles built from the paper's
published device figures (arXiv 2406.06282), with every assumption labelled ``assumed:`` in
``sources``; and :func:`resolve_profile`, which takes a built-in name or a profile file.
"""

from __future__ import annotations

import os
from pathlib import Path

from pi2lab.errors import ConfigError
from pi2lab.plan import paper
from pi2lab.plan.hardware import FlashModel, HardwareProfile, StoragePoint
from pi2lab.plan.shapes import get_shape

PAPER = "PowerInfer-2 (arXiv 2406.06282)"
_PAPER_MD = "arXiv 2406.06282"

# Decode cost fitted once from the paper's in-memory decode speed (see _phone_compute_fit).
_FIT_SHAPE = "turbosparse-mistral-7b"
_IN_MEMORY_TOK_S = paper.PAPER["in_memory_mistral"]
_MULTI_ISSUE_LOSS = 0.40
_MIB = 1 << 20

BUILTIN_PROFILES = ("oneplus12", "oneplus-ace2")
"""Names :func:`builtin` accepts."""


def _phone_compute_fit() -> tuple[float, str]:
    """GB/s of weight bytes a OnePlus 12 decode step streams, from 12.5 tok/s in memory: the
    bytes the simulator charges per token for the TurboSparse-Mistral-7B shape with every FFN
    unit resident, times 12.5, so the simulator decodes that model in memory at the paper's
    speed."""
    shape = get_shape(_FIT_SHAPE)
    c = shape.config
    layers = c.num_layers
    attn = layers * shape.attention_bytes()
    preds = layers * shape.predictor_bytes()
    per_neuron = shape.bundle_bytes + shape.scale_bytes_per_neuron
    active = sum(shape.active_fraction) / layers
    ffn = layers * active * c.intermediate_size * per_neuron
    head = shape.head_bytes()
    per_token = attn + preds + ffn + head
    gbs = per_token * _IN_MEMORY_TOK_S / 1e9
    dense_all = attn + head + layers * c.intermediate_size * per_neuron
    text = (
        f"fitted once from {PAPER} v1 §2 (motivation): TurboSparse-Mistral-7B decodes ~"
        f"{_IN_MEMORY_TOK_S} tok/s in memory on the OnePlus 12 (PowerInfer-1 and LLM-in-a-Flash "
        f"alike, both sparse engines; §7.1: 'Mistral-7B' in figures = TurboSparse-Mistral-7B). "
        f"Bytes per token as the simulator charges them for the built-in {_FIT_SHAPE} shape "
        f"(int4 with f16 scales per 32, pi2lab.plan.shapes): attention {attn / 1e9:.3f} GB + "
        f"predictors {preds / 1e9:.3f} GB + {active:.0%} of the FFN neurons {ffn / 1e9:.3f} GB "
        f"(TurboSparse: ~90% inactive) + LM head {head / 1e9:.3f} GB = {per_token / 1e9:.3f} "
        f"GB/token; x {_IN_MEMORY_TOK_S} tok/s = {gbs:.1f} GB/s, used for dense and sparse alike "
        f"(one published speed cannot separate them), so the simulator's in-memory speed for "
        f"that shape is the paper's. A dense reading ({dense_all / 1e9:.2f} GB/token x "
        f"{_IN_MEMORY_TOK_S} = {dense_all * _IN_MEMORY_TOK_S / 1e9:.1f} GB/s) exceeds the 43.9 "
        "GB/s memory bandwidth, so 12.5 tok/s is not a dense pass"
    )
    return round(gbs, 2), text


def _ufs_flash(scale: float = 1.0) -> FlashModel:
    """The UFS 4.0 read model from the paper's measurements; ``scale`` multiplies every rate
    (rounded to two significant figures) for a device the paper did not measure."""

    def r(x: float) -> float:
        return x if scale == 1 else _sig2(x * scale)

    return FlashModel(
        random_4k=((128 * _MIB, r(_BIG)), (512 * _MIB, r(_RANGE_512))),
        floor_4k_mbs=r(_PHONE_IOPS_4K),
        cores={"big": r(_BIG), "mid": r(_MID), "little": r(_LITTLE)},
        io_core="big",
        large_block=_LARGE_BLOCK,
        large_mbs=r(_LARGE_MBS),
        multi_issue_loss=_MULTI_ISSUE_LOSS,
        blocking_4k_mbs=r(_PHONE_IOPS_4K),
    )


def _phone_storage(flash: FlashModel) -> tuple:
    """The flash model's rates within its first range, 1 and 2 issuing threads, at the
    block sizes the paper measured (for tables and the cost model's default)."""
    return tuple(
        StoragePoint(block=b, threads=t, mb_per_s=round(flash.read_mbs(b, issuers=t), 1))
        for t in (1, 2)
        for b in (4096, 8192, 65536, _LARGE_BLOCK)
    )


def _sig2(x: float) -> float:
    """Two significant figures: a derived figure carries no more than its inputs."""
    return float(f"{x:.2g}")


_BIG, _MID, _LITTLE = 1076.0, 1008.0, 762.0  # MB/s, 4 KB random reads by issuing core
_RANGE_512 = 850.0  # MB/s, 4 KB random reads within a 512 MB range ("under 850")
_PHONE_IOPS_4K = 100_000 * 4096 / 1e6  # MB/s: ~100K random IOPS on a phone, at 4 KiB
_LARGE_BLOCK, _LARGE_MBS = 524288, 3500.0  # 512 KB random reads
_UFS4_SEQUENTIAL = 4000.0
_UFS31_SEQUENTIAL = 2100.0
_STORAGE_MODEL = (
    "Read model (pi2lab.plan.hardware.FlashModel): a read costs a command time plus its "
    "transfer. 4 KB random reads from the big core: 1,076 MB/s within a 128 MB range, 850 MB/s "
    "within 512 MB (the paper says 'under 850'; 850 taken), log-linear in the range between, and "
    "past 512 MB falling on at the same ~113 MB/s per doubling (assumed: the paper says only "
    "that a whole model file reads slower) down to a floor of 100K IOPS x 4 KiB = 410 MB/s (the "
    "paper's phone random-IOPS figure). Issuing from a mid or little core adds the difference "
    "of their 4 KB read times (1,008 and 762 MB/s). The transfer rate, ~3,560 MB/s, is fitted "
    "so that a 512 KB read within 128 MB runs at 3,500 MB/s (assumed: that figure was taken "
    "within the same range). Blocking reads (each issuing thread waits for its read before the "
    "next, as page faults and reads from the compute threads do, where the 1,076 MB/s needs an "
    "I/O thread keeping the queue full): 4 KB at 100K IOPS = 410 MB/s at any range, the paper's "
    "phone random-IOPS figure read as the rate of reads issued one at a time (assumed; its 4 KB "
    "sequential figure, 450 MB/s, is likewise far below the 4 KB random one and so cannot have "
    "been taken with a full queue). "
)
_TWO_THREADS = (
    f"One command queue: reads from several issuing threads are served one at a time, each "
    f"slower by 1 / (1 - {_MULTI_ISSUE_LOSS:.1f}); {PAPER} v1 (I/O pipeline): issuing reads "
    f"from several cores loses up to {_MULTI_ISSUE_LOSS:.0%} (UFS has one command queue; "
    "PowerInfer-2 uses exactly one I/O thread); the stated upper bound of the loss, at every "
    "block size (assumed). The storage points list the model's rates within 128 MB"
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
        storage=_phone_storage(_ufs_flash()),
        sequential_mbs=_UFS4_SEQUENTIAL,
        flash=_ufs_flash(),
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
            "storage": "the flash model's rates within a 128 MB range (see flash)",
            "flash": (
                f"{PAPER} v1 §2 (UFS 4.0 characterisation), {_PAPER_MD}: 1 thread: 4 KB random "
                f"{_BIG:,.0f} MB/s issued from the big core within a 128 MB range (mid core "
                f"{_MID:,.0f}, little {_LITTLE:,.0f}; ~1 GB/s overall; under 850 MB/s within a 512 "
                "MB range, so spread-out flash files read slower); 512 KB random 3,500 MB/s; "
                "~100K random IOPS. " + _STORAGE_MODEL + _TWO_THREADS
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
        storage=_phone_storage(_ufs_flash(ratio)),
        sequential_mbs=_UFS31_SEQUENTIAL,
        flash=_ufs_flash(ratio),
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
            "storage": "the flash model's rates within a 128 MB range (see flash)",
            "flash": (
                "assumed: the OnePlus 12's UFS 4.0 read model (4 KB 1,076 / 850 MB/s within 128 "
                f"/ 512 MB, by core, 100K IOPS floor, 512 KB 3,500 MB/s, {PAPER} v1 §2) with "
                f"every rate x {ratio:.3f}, the ratio of UFS 3.1 to UFS 4.0 sequential "
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
