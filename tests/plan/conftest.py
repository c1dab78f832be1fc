"""Builders shared by the planning tests."""

import dataclasses

from pi2lab.plan.hardware import HardwareProfile
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
