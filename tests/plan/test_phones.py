"""The published phone profiles: every number cited, the paper's figures, lookup by name or path."""

import pytest

from pi2lab.errors import ConfigError
from pi2lab.plan.hardware import HardwareProfile, format_profile
from pi2lab.plan.phones import BUILTIN_PROFILES, builtin, resolve_profile
from tests.plan.conftest import NUMERIC, toy


@pytest.mark.parametrize("name", BUILTIN_PROFILES)
def test_builtin_profiles_cite_every_number(name, tmp_path):
    p = builtin(name)
    assert p.name == name
    for field in NUMERIC:
        assert isinstance(p.sources.get(field), str) and len(p.sources[field]) > 20, field
    assert p.flash is not None and "128 MB" in p.sources["flash"]
    assert {s.threads for s in p.storage} == {1, 2}
    for block in {s.block for s in p.storage}:
        assert p.read_mbs(block, 2) < p.read_mbs(block, 1)  # one I/O thread is best on UFS
    assert HardwareProfile.load(p.save(tmp_path / "p.json")) == p
    assert resolve_profile(name) == p
    assert name in format_profile(p)


def test_oneplus12_published_figures():
    p = builtin("oneplus12")
    assert p.read_mbs(4096) == pytest.approx(1000, rel=0.1)
    assert p.read_mbs(524288) == pytest.approx(3500, rel=0.05)
    assert p.memory_gbs == pytest.approx(43.9)
    assert p.ram_bytes == 19_000_000_000
    assert p.dense_gbs < p.memory_gbs  # a fit above the memory bandwidth would be unphysical
    ace2 = builtin("oneplus-ace2")
    assert "assumed" in ace2.sources["flash"]
    assert ace2.read_mbs(4096) < p.read_mbs(4096)


def test_unknown_name_lists_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match="oneplus12.*oneplus-ace2"):
        builtin("pixel9")
    with pytest.raises(ConfigError, match="oneplus12"):
        resolve_profile("pixel9")
    path = toy().save(tmp_path / "toy.json")
    assert resolve_profile(path) == toy()
    assert resolve_profile(str(path)) == toy()
