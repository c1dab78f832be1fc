"""Sweeps on a real local Dask cluster (two worker processes): simulated rows equal direct
simulator calls, a measured configuration on the bundled model, a failing configuration as a
row, resuming skips what the table holds, and bad input as ConfigError / exit status 2."""

import builtins
import json

import pytest

pytest.importorskip("distributed")

import pi2lab as pl
from pi2lab import cli
from pi2lab.lab.grid import Grid, config_hash
from pi2lab.lab.sweep import load_table, run_sweep
from pi2lab.plan.phones import builtin
from pi2lab.plan.shapes import get_shape
from pi2lab.plan.simulator import simulate_decode

SIM = {
    "target": "sim",
    "repetitions": 2,
    "tokens": 3,
    "knobs": {"model": "bamboo-7b", "engine": ["powerinfer2", "llmflash"], "budget": "0.3,0.6"},
}
ENGINE = {  # one measured configuration, and one whose units do not tile the FFN
    "target": "engine",
    "repetitions": 1,
    "tokens": 2,
    "knobs": {"model": "bundled", "cluster_size": [4, 3], "budget": 0.5},
}


def test_simulated_rows_equal_direct_simulator_calls_and_resume_skips_them(lab_scheduler, tmp_path):
    out = tmp_path / "sim.parquet"
    grid = Grid.from_dict(SIM)
    table = run_sweep(grid, out, scheduler=lab_scheduler, progress=False)
    assert len(table) == 4 * 2 and set(table["source"]) == {"simulated"}
    assert table["error"].isna().all() and table["config_hash"].nunique() == 4
    assert list(table.columns[:6]) == [
        "source",
        "config_hash",
        "commit",
        "device",
        "model",
        "engine",
    ]
    row = table[(table["engine"] == "llmflash") & (table["budget"] == 0.3)]
    row = row[row["repetition"] == 1].iloc[0]
    direct = simulate_decode(
        get_shape("bamboo-7b"), builtin("oneplus12"), engine="llmflash", ffn_fraction=0.3,
        tokens=3, seed=1,
    )  # fmt: skip
    assert row["tokens_per_s"] == direct.tokens_per_s and row["io_share"] == direct.io_share
    assert row["memory_mb"] == direct.memory_bytes / 1e6 and row["policy"] == "window-5"
    assert json.loads(row["timeline"]) == json.loads(json.dumps(direct.timeline.rows(0.0)))
    assert load_table(out).equals(table)

    arrived = []
    again = run_sweep(grid, out, scheduler=lab_scheduler, on_rows=lambda t, r: arrived.append(r))
    assert arrived == [] and again.equals(table)  # nothing ran
    wider = Grid.from_dict({**SIM, "knobs": {**SIM["knobs"], "budget": "0.3,0.6,0.9"}})
    table = run_sweep(
        wider, out, scheduler=lab_scheduler, progress=False, on_rows=lambda t, r: arrived.append(r)
    )
    assert len(arrived) == 2 and {r[0]["budget"] for r in arrived} == {0.9}
    assert len(table) == 6 * 2 and len(load_table(out)) == 12


def test_measured_rows_and_a_failing_configuration_as_a_row(lab_scheduler, tmp_path):
    out = tmp_path / "engine.csv"
    table = run_sweep(Grid.from_dict(ENGINE), out, scheduler=lab_scheduler, progress=False)
    ok, bad = table[table["cluster_size"] == 4], table[table["cluster_size"] == 3]
    assert len(ok) == 1 and set(ok["source"]) == {"measured"} and ok["error"].isna().all()
    r = ok.iloc[0]
    assert r["tokens_per_s"] > 0 and r["memory_mb"] > 0 and 0 <= r["hit_rate"] <= 1
    assert r["policy"] == "segmented" and r["mode"] == "cluster" and r["precision"] == "f32"
    stages = {e["stage"] for e in json.loads(r["timeline"])}
    assert {"attention", "compute", "head"} <= stages
    assert len(bad) == 1 and bad["error"].iloc[0].startswith("ConfigError: cluster size 3")
    assert load_table(out)["error"].notna().sum() == 1
    assert config_hash(Grid.from_dict(ENGINE).configurations()[1]) == bad["config_hash"].iloc[0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("target: phone\n", "target 'phone': expected one of engine, sim"),
        ("target: sim\nknobs: {bugdet: 0.5}\n", "unknown knob 'bugdet': expected one of device"),
        ("target: sim\nknobs: {budget: '0.5,2'}\n", r"budget='2': expected a share in \(0, 1\]"),
        ("target: sim\nknobs: {model: llama-70b}\n", "unknown model shape 'llama-70b'"),
        ("target: sim\nknobs: {device: pixel}\n", "unknown hardware profile 'pixel'"),
        ("target: sim\ntokens: 0\n", "expected a whole number >= 1"),
        ("target: sim\nseeds: 3\n", "unknown key 'seeds'"),
        ("target: engine\nknobs: {engine: llama.cpp-mmap}\n", "expected one of powerinfer2"),
        ("[1, 2\n", "not YAML"),
    ],
)
def test_bad_grid_files_are_config_errors(tmp_path, text, message):
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    with pytest.raises(pl.ConfigError, match=message) as e:
        Grid.load(path).configurations()
    assert str(path) in str(e.value)


def test_cli_exit_codes(lab_scheduler, tmp_path, capsys):
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({**SIM, "repetitions": 1, "knobs": {"model": "bamboo-7b"}}))
    out = tmp_path / "t.csv"
    argv = ["sweep", str(grid), "--scheduler", lab_scheduler, "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 0
    assert "1 rows (SIMULATED, not measured), 0 failed" in capsys.readouterr().out
    assert len(load_table(out)) == 1
    for bad, message in (
        ([str(tmp_path / "missing.yaml")], "cannot read the grid file"),
        ([str(grid), "--out", str(tmp_path / "t.xlsx")], "expected a table ending in .parquet"),
    ):
        assert cli.main(["sweep", *bad]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("pi2lab sweep: error:")
        assert message in err


def test_an_unreachable_scheduler_is_a_config_error():
    with pytest.raises(pl.ConfigError, match="scheduler 'tcp://127.0.0.1:9': cannot connect"):
        run_sweep(Grid.from_dict(SIM), scheduler="tcp://127.0.0.1:9", connect_timeout=1)


def test_without_the_lab_extra_the_cli_says_how_to_install(monkeypatch, capsys, tmp_path):
    real = builtins.__import__

    def without_dask(name, *args, **kwargs):
        if name.split(".")[0] in ("dask", "distributed"):
            raise ImportError(f"No module named {name!r}")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_dask)
    assert cli.main(["sweep", str(tmp_path / "grid.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install -e '.[lab]'" in err
