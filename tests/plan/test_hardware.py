"""Hardware profiles: JSON round trip and validation, interpolation, and ``pi2lab profile-hw``.
No timing assertions."""

import json

import pytest

from pi2lab.cli import main
from pi2lab.errors import ConfigError
from pi2lab.plan.hardware import FORMAT, HardwareProfile
from pi2lab.plan.phones import builtin
from tests.plan.conftest import toy


def write_json(path, data):
    path.write_text(json.dumps(data))
    return path


def test_json_round_trip(tmp_path):
    p = toy()
    assert HardwareProfile.load(p.save(tmp_path / "toy.json")) == p
    assert json.loads((tmp_path / "toy.json").read_text())["format"] == FORMAT


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d.update(format="pi2lab-hardware-0"), "format"),
        (lambda d: d.pop("dense_gbs"), "missing fields.*dense_gbs"),
        (lambda d: d.update(memory_gbs=-3.0), "memory_gbs must be > 0"),
        (lambda d: d["storage"][0].update(mb_per_s=-1.0), "bad storage point"),
        (lambda d: d["storage"][0].pop("block"), "malformed"),
        (lambda d: d.update(storage=[]), "storage point"),
    ],
)
def test_malformed_profile_names_the_problem(tmp_path, mutate, match):
    data = toy().to_json()
    mutate(data)
    path = write_json(tmp_path / "bad.json", data)
    with pytest.raises(ConfigError, match=match) as e:
        HardwareProfile.load(path)
    assert str(path) in str(e.value)


def test_not_json_or_missing(tmp_path):
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not a JSON"):
        HardwareProfile.load(tmp_path / "junk.json")
    with pytest.raises(ConfigError, match="format"):
        HardwareProfile.load(write_json(tmp_path / "list.json", [1, 2]))
    with pytest.raises(ConfigError, match="no such hardware profile"):
        HardwareProfile.load(tmp_path / "absent.json")


def test_read_mbs_interpolates_and_picks_nearest_threads():
    p = toy()
    assert p.read_mbs(4096) == pytest.approx(100.0)
    assert p.read_mbs(65536) == pytest.approx(500.0)
    # 16 KiB is halfway between 4 KiB and 64 KiB in log scale
    assert p.read_mbs(16384) == pytest.approx(300.0)
    assert p.read_mbs(1 << 20) == pytest.approx(500.0)  # flat past the last point
    assert p.read_mbs(16384, threads=4) == pytest.approx(600.0)
    assert p.read_mbs(4096, threads=3) == pytest.approx(300.0)  # 3 -> 4
    assert p.read_mbs(4096, threads=2) == pytest.approx(100.0)  # 2 is nearer 1 than 4
    assert p.read_mbs(4096, threads=16) == pytest.approx(300.0)
    assert p.read_seconds(65536, 1000) == pytest.approx(1000 * 65536 / 500e6)


def test_cli_show_json(capsys, tmp_path):
    assert main(["profile-hw", "--show", "oneplus12", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["name"] == "oneplus12" and data["format"] == FORMAT
    out = tmp_path / "p.json"
    assert main(["profile-hw", "--show", "oneplus-ace2", "--out", str(out)]) == 0
    assert "oneplus-ace2" in capsys.readouterr().out
    assert HardwareProfile.load(out) == builtin("oneplus-ace2")


def test_cli_bad_profile_one_line_exit_2(capsys, tmp_path):
    (tmp_path / "bad.json").write_text("[")
    for show in (str(tmp_path / "bad.json"), str(tmp_path / "absent.json"), "pixel9"):
        assert main(["profile-hw", "--show", show]) == 2
        err = capsys.readouterr().err
        assert err.startswith("pi2lab profile-hw: error:") and err.count("\n") == 1
