"""Builders shared by the planning tests."""

import dataclasses

from pi2lab.config import ModelConfig
from pi2lab.plan.hardware import FlashModel, HardwareProfile
from pi2lab.plan.shapes import ModelShape
from tests.conftest import round_profile

NUMERIC = [
    f.name
    for f in dataclasses.fields(HardwareProfile)
    if f.name not in ("name", "description", "sources", "flash")
]


def toy(**overrides) -> HardwareProfile:
    storage = {(4096, 1): 100.0, (65536, 1): 500.0, (4096, 4): 300.0, (65536, 4): 900.0}
    fields = dict(
        name="toy",
        description="a toy device",
        cpu_threads=3,
        ram_bytes=5_000_000_000,
        memory_gbs=20.5,
        dense_gbs=17.25,
        sparse_gbs=9.0,
        sequential_mbs=1200.0,
        sources={"memory_gbs": "made up"},
    )
    return round_profile(storage, **{**fields, **overrides})


def moe_shape() -> ModelShape:
    """A small Mixtral-like shape: 2 layers of 4 experts, top-2, 20% of neurons active."""
    cfg = ModelConfig(
        architecture="mixtral",
        ffn_activation="drelu",
        vocab_size=1000,
        hidden_size=256,
        intermediate_size=640,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=64,
        num_experts=4,
        num_experts_per_tok=2,
    )
    return ModelShape(name="moe", config=cfg, active_fraction=(0.2, 0.2))


_MIB = 1 << 20


def flash_model(**overrides) -> FlashModel:
    """4 KiB: 1,024 MB/s (4 us) within 128 MiB, 768 within 512 MiB (-128 MB/s per doubling),
    floor 400; transfer 4,096 MB/s (1 us per 4 KiB), so a command costs 3 us within 128 MiB;
    a 13 x 4 KiB read there: 3 + 13 = 16 us = 3,328 MB/s. Cores: mid 819.2 MB/s (5 us, +1 us),
    little 512 (8 us, +4 us). Several issuers: each read x 2 (loss 0.5). Blocking reads: 4 KiB
    at 512 MB/s (8 us), a command of at least 7 us."""
    fields = dict(
        random_4k=((128 * _MIB, 1024.0), (512 * _MIB, 768.0)),
        floor_4k_mbs=400.0,
        cores={"big": 1024.0, "mid": 819.2, "little": 512.0},
        io_core="big",
        large_block=13 * 4096,
        large_mbs=3328.0,
        multi_issue_loss=0.5,
        blocking_4k_mbs=512.0,
    )
    return FlashModel(**{**fields, **overrides})
