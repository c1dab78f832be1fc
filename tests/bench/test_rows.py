"""Bench results as flat rows (one per engine and repetition, with provenance), rendered as
JSON/CSV/Markdown, and ``bench compare`` of two runs, on a real run and on hand-made results
whose figures are known."""

import csv
import io
import json

import pytest

import pi2lab as pl
from pi2lab import bench, cli
from pi2lab.bench import rows as br

MACHINE = {"backend": "cpu", "platform": "test", "jax": "-"}
META = {"commit": "abc123", "versions": {"pi2lab": "0", "jax": "1"}}


def peer_like(scale: float = 1.0) -> dict:
    return {
        "bench": "peer",
        "machine": MACHINE,
        "provenance": META,
        "kernels": {"matrix": "[1, 1]"},
        "llama_7b_shape": {
            "shape": "s",
            "engines": {
                "llama.cpp Q4_0": {"tokens_per_s": 2.0 * scale, "runs": [1.0, 2.0, 3.0]},
                "pi2lab dense int4": {"tokens_per_s": 4.0 * scale, "runs": [4.0 * scale]},
            },
        },
        "dense_like": {"tokens_per_s": 9.0, "runs_tokens_per_s": [8.0, 10.0], "layers": 2},
        "sparse_like": {
            "dense_tokens_per_s": 5.0,
            "sparse_tokens_per_s": 12.0,
            "runs": {"dense": [5.0, 5.0], "sparse": [11.0, 13.0]},
        },
        "planner_like": {
            "plans": [{"plan": "50% io1", "measured_tokens_per_s": 3.0, "error": -0.1}]
        },
    }


def test_rows_are_one_per_engine_and_repetition_with_their_groups_statistics():
    table = br.rows(peer_like())
    groups = {(r["section"], r["engine"]) for r in table}
    assert groups == {
        ("llama_7b_shape", "llama.cpp Q4_0"),
        ("llama_7b_shape", "pi2lab dense int4"),
        ("dense_like", "dense_like"),
        ("sparse_like", "dense"),
        ("sparse_like", "sparse"),
        ("planner_like", "50% io1"),
    }
    q4 = [r for r in table if r["engine"] == "llama.cpp Q4_0"]
    assert [r["repetition"] for r in q4] == [0, 1, 2]
    assert [r["tokens_per_s"] for r in q4] == [1.0, 2.0, 3.0]
    assert {(r["mean_tokens_per_s"], r["sd_tokens_per_s"], r["n"]) for r in q4} == {(2.0, 1.0, 3)}
    dense = [r for r in table if r["section"] == "dense_like"]
    assert [r["tokens_per_s"] for r in dense] == [8.0, 10.0] and dense[0]["layers"] == 2
    sparse = [r for r in table if r["engine"] == "sparse"]
    assert [r["tokens_per_s"] for r in sparse] == [11.0, 13.0]
    assert sparse[0]["mean_tokens_per_s"] == 12.0
    (plan,) = [r for r in table if r["section"] == "planner_like"]
    assert (plan["tokens_per_s"], plan["error"], plan["n"]) == (3.0, -0.1, 1)
    assert all(r["commit"] == "abc123" and r["version_jax"] == "1" for r in table)


def test_csv_md_and_json_carry_the_same_rows():
    result = peer_like()
    table = br.rows(result)
    parsed = list(csv.DictReader(io.StringIO(br.render(result, "csv"))))
    assert len(parsed) == len(table) == 11
    assert [float(r["tokens_per_s"]) for r in parsed] == [r["tokens_per_s"] for r in table]
    md = br.render(result, "md").splitlines()
    assert len(md) == 2 + len(table) and md[1].startswith("|---|")
    data = json.loads(br.render(result, "json"))
    assert data["rows"] == table and data["llama_7b_shape"] == result["llama_7b_shape"]
    with pytest.raises(pl.ConfigError, match="output 'xml': expected one of"):
        br.render(result, "xml")


def test_compare_prints_the_ratio_per_group(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(br.render(peer_like(), "json"))
    faster = peer_like(scale=1.5)
    faster["llama_7b_shape"]["engines"].pop("llama.cpp Q4_0")
    b.write_text(br.render(faster, "json"))
    table = br.compare(br.load(a), br.load(b))
    ratio = {r["engine"]: r["ratio"] for r in table}
    assert ratio == {
        "llama.cpp Q4_0": None,
        "pi2lab dense int4": 1.5,
        "dense_like": 1.0,
        "dense": 1.0,
        "sparse": 1.0,
        "50% io1": 1.0,
    }
    assert cli.main(["bench", "compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "1.500x" in out and "n/a (in one run only)" in out


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot read it"), ("{", "not JSON"), ("[1, 2]", "expected the JSON object")],
)
def test_compare_refuses_what_is_not_a_bench_run(tmp_path, capsys, content, message):
    path = tmp_path / "run.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(pl.ConfigError, match=message):
        br.load(path)
    assert cli.main(["bench", "compare", str(path), str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_compare_needs_two_files(capsys):
    assert cli.main(["bench", "compare", "only.json"]) == 2
    assert "expected two JSON files" in capsys.readouterr().err


def test_a_real_run_has_provenance_and_rows(capsys):
    assert (
        cli.main(["bench", "dense", "--quick", "--steps", "2", "--layers", "1", "--output", "csv"])
        == 0
    )
    parsed = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {r["section"] for r in parsed} == {"bundled", "synthetic_7b"}
    assert all(
        r["bench"] == "dense" and r["commit"] and float(r["tokens_per_s"]) > 0 for r in parsed
    )
    assert all(r["version_jax"] == bench.rows.provenance()["versions"]["jax"] for r in parsed)
