"""Builders shared by the planning tests."""

import dataclasses

from pi2lab.config import ModelConfig
from pi2lab.plan.hardware import HardwareProfile
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
