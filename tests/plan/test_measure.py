"""Measuring this machine on a small file (quick mode). No timing assertions."""

import numpy as np

from pi2lab.plan.hardware import HardwareProfile
from pi2lab.plan.measure import measure
from tests.plan.conftest import NUMERIC


def test_measure_quick_on_a_small_file(tmp_path):
    f = tmp_path / "flash.bin"
    f.write_bytes(np.random.default_rng(0).bytes(8 << 20))
    p = measure(storage_file=f, quick=True, threads=(1, 2))
    assert p.name == "this-machine" and p.description
    for field in ("memory_gbs", "dense_gbs", "sparse_gbs", "sequential_mbs"):
        assert getattr(p, field) > 0, field
    assert p.cpu_threads >= 1 and p.ram_bytes > 0
    assert {(s.block, s.threads) for s in p.storage} == {
        (b, t) for b in (4096, 16384, 49152, 65536, 262144, 1 << 20) for t in (1, 2)
    }
    assert all(s.mb_per_s > 0 for s in p.storage)
    for field in NUMERIC:
        assert "pi2lab profile-hw" in p.sources[field], field
    assert p.sources["direct"].split(":")[0] in ("true", "false")
    assert HardwareProfile.load(p.save(tmp_path / "me.json")) == p
