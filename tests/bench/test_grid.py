"""Knob grids: list-valued knobs parsed and expanded into every combination, bad values refused
with the knob named (ConfigError in the API, one line and status 2 in the CLI), and a real grid
run whose rows carry the knob values (no timing assertions)."""

import json

import pytest

import pi2lab as pl
from pi2lab import bench, cli
from pi2lab.bench import grid as bg
from pi2lab.bench import rows as br
from pi2lab.cli.bench import GRID_FLAGS

BUDGET = bg.Knob(name="budget", read=bg.share(), default=(0.5,))
THREADS = bg.Knob(name="io_threads", read=bg.count(), default=(1,))
MODE = bg.Knob(name="mode", read=bg.choice("none", "matrix", "cluster"))


def test_values_from_text_lists_and_numbers():
    assert bg.parse_values(BUDGET, "0.4, 0.5,1") == (0.4, 0.5, 1.0)
    assert bg.parse_values(BUDGET, [0.4, "0.5", 0.4]) == (0.4, 0.5)  # duplicates dropped
    assert bg.parse_values(THREADS, 2) == (2,)
    assert bg.parse_values(MODE, "cluster,matrix") == ("cluster", "matrix")
    assert bg.parse_values(bg.Knob(name="policy", read=bg.policy_name), "lru,window-3") == (
        "lru",
        "window-3",
    )


@pytest.mark.parametrize(
    ("knob", "values", "message"),
    [
        (BUDGET, "0.4,,0.5", r"budget: empty item in '0.4,,0.5'"),
        (BUDGET, "abc", r"budget='abc': expected a share in \(0, 1\]"),
        (BUDGET, "0", r"budget='0': expected a share in \(0, 1\]"),
        (BUDGET, 1.5, r"budget=1.5: expected a share in \(0, 1\]"),
        (BUDGET, "nan", r"budget='nan': expected a share"),
        (BUDGET, "50%", r"budget='50%': expected a share in \(0, 1\] \(0.5, not 50%\)"),
        (BUDGET, [], "budget: empty list"),
        (THREADS, "1.5", r"io_threads='1.5': expected a whole number >= 1"),
        (THREADS, "0", r"io_threads='0': expected a whole number >= 1"),
        (THREADS, True, "io_threads=True: expected a whole number"),
        (MODE, "pipelined", "mode='pipelined': expected one of none, matrix, cluster"),
        (bg.Knob(name="policy", read=bg.policy_name), "mru", "policy='mru': cache policy 'mru'"),
    ],
)
def test_bad_values_name_the_knob_and_what_was_expected(knob, values, message):
    with pytest.raises(pl.ConfigError, match=message):
        bg.parse_values(knob, values)


def test_a_grid_is_every_combination_first_knob_slowest():
    knobs = [BUDGET, MODE, THREADS]
    grid = bg.parse_grid({"mode": "none,cluster", "budget": "0.4,0.6"}, knobs, "b")
    assert grid == {"mode": ("none", "cluster"), "budget": (0.4, 0.6)}
    points = bg.expand(grid, knobs)  # knobs in their order, io_threads at its default
    assert [tuple(p.values()) for p in points] == [
        (0.4, "none", 1),
        (0.4, "cluster", 1),
        (0.6, "none", 1),
        (0.6, "cluster", 1),
    ]
    assert bg.labels(points, {"mode": ()})[:2] == [
        "budget=0.4 mode=none",  # budget varies, so it is named too
        "budget=0.4 mode=cluster",
    ]
    with pytest.raises(pl.ConfigError, match="bench x: unknown knob 'bugdet': expected one of"):
        bg.parse_grid({"bugdet": "0.5"}, [BUDGET], "bench x")


def test_every_bench_knob_has_a_cli_flag():
    knobs = {k.name for knobs in bench.KNOBS.values() for k in knobs}
    assert knobs == set(GRID_FLAGS)


@pytest.mark.parametrize(
    ("what", "grid", "message"),
    [
        ("peer", {"budget": "0.5"}, "bench peer: unknown knob 'budget': expected one of"),
        ("dense", {"budget": "0.5"}, "expected one of model, precision"),
        ("offload", {"budget": "0.4,,0.5"}, "budget: empty item"),
        ("sparse", {"cluster_size": "16,x"}, "cluster_size='x': expected a whole number"),
        ("planner", {"mode": "fast"}, "mode='fast': expected one of none, matrix, cluster"),
    ],
)
def test_bad_grids_are_refused_before_anything_runs(what, grid, message):
    with pytest.raises(pl.ConfigError, match=message):
        bench.run(what, grid=grid)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--budget", "1.5"], "budget='1.5': expected a share"),
        (["--budget", "0.4,"], "empty item"),
        (["--io-threads", "two"], "io_threads='two'"),
        (["--precision", "int3"], "precision='int3'"),
    ],
)
def test_cli_bad_grid_values_exit_2_with_one_line(argv, message, capsys):
    assert cli.main(["bench", "offload", "--quick", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("pi2lab bench: error:") and message in err


def test_grid_rows_carry_the_knobs_and_compare_pairs_the_points(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PI2LAB_BENCH_DIR", str(tmp_path / "bench"))
    argv = ["bench", "offload", "--quick", "--steps", "2", "--budget", "0.4,0.6", "--json"]
    assert cli.main([*argv, "--policy", "lru"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["grid"]["budget"] == [0.4, 0.6] and result["grid"]["policy"] == ["lru"]
    sections = [k for k, v in result.items() if isinstance(v, dict) and "knobs" in v]
    assert sections == ["budget=0.4 policy=lru", "budget=0.6 policy=lru"]
    rows = result["rows"]
    assert {(r["section"], r["budget"], r["policy"], r["engine"]) for r in rows} == {
        ("budget=0.4 policy=lru", 0.4, "lru", "powerinfer2"),
        ("budget=0.6 policy=lru", 0.6, "lru", "powerinfer2"),
    }
    assert {r["mode"] for r in rows} == {"cluster"} and {r["model"] for r in rows} == {"bundled"}
    assert all(r["memory_mb"] > 0 and 0 <= r["io_share"] <= 1 for r in rows)
    path = tmp_path / "a.json"
    path.write_text(json.dumps(result))
    table = br.compare(br.load(path), br.load(path))
    assert [r["section"] for r in table] == sections and {r["ratio"] for r in table} == {1.0}
