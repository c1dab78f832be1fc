"""The paper-reproduction tables: every row present and labelled simulated, paper figures as in
the paper notes, ratios consistent, the ablation ladder monotone, the CLI's simulate command.

All figures here are simulated on a virtual clock (2 tokens per run to stay fast); nothing
asserts on how close they come to the paper.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pi2lab.config import ModelConfig
from pi2lab.errors import ConfigError
from pi2lab.pipeline.scheduler import PipelineConfig
from pi2lab.plan import paper
from pi2lab.plan import reproduce as rp
from pi2lab.plan.mmap_baseline import file_blocks
from pi2lab.plan.phones import builtin
from pi2lab.plan.shapes import ModelShape, get_shape
from pi2lab.plan.simulator import simulate_decode
from pi2lab.plan.tables import format_reproduction
from tests.conftest import tiny_shape

PAPER_MD = Path("/work/shared/paper/powerinfer2.md")


@pytest.fixture(scope="module")
def result():
    return rp.reproduce(quick=True, tokens=2)


def all_dicts(obj):
    if isinstance(obj, dict):
        yield obj
        for v in obj.values():
            yield from all_dicts(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from all_dicts(v)


def test_every_row_present_and_labelled_simulated(result):
    for key in ("decode_oneplus12", "decode_oneplus_ace2"):
        rows = result[key]["rows"]
        assert {(r["model"], r["engine"]) for r in rows} == {
            (m, e) for m in paper.MODELS for e in paper.ENGINES
        }
        assert [s["model"] for s in result[key]["speedups"]] == list(paper.MODELS)
    assert [r["rung"] for r in result["ablation"]["rows"]] == list(paper.PAPER["ablation"])
    sweep = result["memory_sweep"]
    assert {(p["memory_gb"], p["engine"]) for p in sweep["points"]} == {
        (g, e) for g in (7.0, 13.0, 19.0) for e in paper.ENGINES
    }
    tables = [v for v in result.values() if isinstance(v, dict)]
    assert all(t["simulated"] is True for t in tables)
    # every dict holding a simulated figure says so
    for d in all_dicts(result):
        if any(k.startswith("simulated_") for k in d):
            assert d.get("simulated") is True, d
    json.dumps(result)  # serialisable as `pi2lab reproduce --json` prints it


def test_paper_figures_match_the_paper_notes():
    if not PAPER_MD.exists():
        pytest.skip("paper notes not available")
    text = PAPER_MD.read_text()
    table = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 4 and cells[1][:1].isdigit():
            table[cells[0]] = [float(c) for c in cells[1:]]
    assert len(table) == 4
    cols = ("powerinfer2", "llama.cpp-mmap", "llmflash")  # the paper's column order
    for model, label in paper.MODELS.items():
        assert [paper.PAPER["decode_oneplus12"][model][e] for e in cols] == table[label]
    ladder = re.search(r"baseline ([\d.]+) -> .*?bundling ([\d.]+) -> .*?cache ([\d.]+)", text)
    pipeline = re.search(r"cluster pipeline ([\d.]+)", text)
    got = [*map(float, ladder.groups()), float(pipeline.group(1))]
    assert list(paper.PAPER["ablation"].values()) == got
    m = re.search(
        r"19 GB available: ([\d.]+) tok/s \(LLM-in-a-Flash ([\d.]+), llama.cpp ([\d.]+)", text
    )
    assert [float(x) for x in m.groups()] == [
        paper.PAPER["mixtral_19gb"][e] for e in ("powerinfer2", "llmflash", "llama.cpp-mmap")
    ]
    assert str(paper.PAPER["mixtral_half_ffn"]) in text


def test_ratios_and_speedups_consistent(result):
    d = result["decode_oneplus12"]
    by = {(r["model"], r["engine"]): r for r in d["rows"]}
    for r in d["rows"]:
        assert r["paper_tokens_per_s"] == paper.PAPER["decode_oneplus12"][r["model"]][r["engine"]]
        assert r["ratio"] == pytest.approx(
            r["simulated_tokens_per_s"] / r["paper_tokens_per_s"], rel=1e-3
        )
        assert r["simulated_tokens_per_s"] > 0
        assert (r["note"] is None) == (abs(r["ratio"] - 1) <= 0.25)
    for s in d["speedups"]:
        pi2 = by[(s["model"], "powerinfer2")]
        for other, key in (("llama.cpp-mmap", "over_llama_cpp"), ("llmflash", "over_llmflash")):
            o = by[(s["model"], other)]
            assert s[f"simulated_{key}"] == pytest.approx(
                pi2["simulated_tokens_per_s"] / o["simulated_tokens_per_s"], rel=1e-3
            )
            assert s[f"paper_{key}"] == pytest.approx(
                pi2["paper_tokens_per_s"] / o["paper_tokens_per_s"], rel=1e-3
            )
    assert d["speedups"][0]["paper_over_llama_cpp"] == pytest.approx(29.25)
    # every engine keeps half of its FFN bytes beside what it holds resident: llama.cpp its
    # non-FFN weights (no predictors, no separate scales) and half of its GGUF FFN blocks
    for model in paper.MODELS:
        used = {e: by[(model, e)]["memory_used_gb"] for e in paper.ENGINES}
        assert used["llama.cpp-mmap"] < used["powerinfer2"] == used["llmflash"]
        shape = get_shape(model)
        blocks = file_blocks(shape)
        nonffn = sum(b for stage, *_, b in blocks if stage != "compute")
        ffn = sum(b for stage, *_, b in blocks if stage == "compute")
        kv = shape.kv_cache_bytes(1024)
        assert used["llama.cpp-mmap"] == round((nonffn + ffn // 2 + kv) / 1e9, 3)
    ace2 = result["decode_oneplus_ace2"]
    assert all(r["paper_tokens_per_s"] is None and r["ratio"] is None for r in ace2["rows"])
    assert "simulated figures only" in ace2["notes"][0]


def test_ablation_ladder_monotone(result):
    rows = result["ablation"]["rows"]
    sims = [r["simulated_tokens_per_s"] for r in rows]
    assert sims == sorted(sims)
    assert result["summary"]["ablation_monotone"]
    assert rows[0]["knobs"] == {
        "ffn_fraction": 0.0,
        "pipeline": "none",
        "bundling": "none",
        "issue": "blocking",
    }
    # the compute threads read until the pipeline brings its one I/O thread
    assert [r["knobs"]["issue"] for r in rows] == ["blocking"] * 3 + ["queued"]
    assert rows[-1]["knobs"]["pipeline"] == "cluster"
    assert rows[1]["paper_gain"] == pytest.approx(1.09 / 0.40, rel=1e-3)


def test_memory_sweep_paper_points(result):
    sweep = result["memory_sweep"]
    pts = {p["label"]: p for p in sweep["paper_points"]}
    assert len(pts) == 4
    assert pts["PowerInfer-2, all 19 GB"]["paper_tokens_per_s"] == 11.68
    half = next(p for p in pts.values() if "50%" in p["label"])
    assert half["paper_tokens_per_s"] == 9.96 and half["memory_gb"] > 7
    # more memory never means a smaller PowerInfer-2 cache
    shares = [p["simulated_cache_share"] for p in sweep["points"] if p["engine"] == "powerinfer2"]
    assert shares == sorted(shares)


def test_format_says_simulated_in_every_header(result):
    text = format_reproduction(result)
    headers = [ln for ln in text.splitlines() if ln and not ln.startswith((" ", "paper figures"))]
    assert len(headers) >= 6
    assert all(re.search("SIMULATED", h) for h in headers), headers
    assert "paper" in text and "no phone was used" in text
    assert "Llama-13B (ReLU)" in text and "+ cluster pipeline" in text


def test_unbundled_reads_three_rows_per_unit():
    shape = tiny_shape()
    masks = np.zeros((3, shape.units), bool)
    masks[:, [0, 2, 5]] = True
    kw = dict(
        ffn_fraction=0.0,
        trace=[masks],
        tokens=3,
        pipeline=PipelineConfig(mode="none", coalesce=False),
    )
    prof = builtin("oneplus12")
    one = simulate_decode(shape, prof, **kw)
    three = simulate_decode(shape, prof, bundling="none", **kw)
    two = simulate_decode(shape, prof, bundling="row-column", **kw)
    assert one.bytes_read.tolist() == [3 * 4096] * 3
    assert three.bytes_read.tolist() == [9 * 4096] * 3  # each 64-byte row a 4 KiB span
    # row-column: the 64-byte gate row, then the 128-byte up row + down column, each a span
    assert two.bytes_read.tolist() == [6 * 4096] * 3
    for r in (two, three):
        assert r.stage_seconds["compute"] == pytest.approx(one.stage_seconds["compute"])
    assert three.tokens_per_s < two.tokens_per_s < one.tokens_per_s
    for bundling in ("none", "row-column"):
        with pytest.raises(ConfigError, match="gate-first"):
            simulate_decode(
                shape,
                prof,
                bundling=bundling,
                **{**kw, "pipeline": PipelineConfig(gate_first=True)},
            )
    with pytest.raises(ConfigError, match="bundling='rows'"):
        simulate_decode(shape, prof, bundling="rows", **kw)


def test_llmflash_as_run_settings():
    """LLM in a Flash as the paper ran it: no overlap, row-column bundles, no merging, blocking
    reads, two copies per miss; the decode table runs it so and says how."""
    got = rp.llmflash_as_run()
    assert got["pipeline"] == PipelineConfig(mode="none", coalesce=False)
    assert (got["bundling"], got["issue"], got["copies"]) == ("row-column", "blocking", 2)
    table = rp.decode_table(tokens=2, models=["llama-7b"])
    assert any("LLM in a Flash as the paper ran it" in n for n in table["notes"])
    assert any("budget: every engine keeps 50%" in n for n in table["notes"])


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "pi2lab.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_cli_simulate_json_and_bad_names():
    proc = run_cli(
        "simulate", "--device", "oneplus12", "--model", "llama-7b", "--memory-gb", "4",
        "--tokens", "2", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["simulated"] is True and out["shape"] == "llama-7b"
    assert out["memory_bytes"] <= 4e9 and out["tokens_per_s"] > 0
    for bad in (["--device", "pixel-9"], ["--model", "gpt-5"]):
        proc = run_cli("simulate", *bad, "--tokens", "2")
        assert proc.returncode == 2
        assert len(proc.stderr.strip().splitlines()) == 1
        assert "error" in proc.stderr and bad[1] in proc.stderr


def test_cli_simulate_bad_budgets_name_the_flag(capsys):
    from pi2lab.cli import main

    for bad, message in (
        (["--ffn-on-flash", "2"], "ffn_on_flash=2.0: expected a share in [0, 1]"),
        (["--memory-gb", "nan"], "memory_gb=nan: expected a finite number of GB"),
    ):
        assert main(["simulate", *bad, "--tokens", "2"]) == 2
        assert capsys.readouterr().err == f"pi2lab simulate: error: {message}\n"


def test_in_memory_check_against_hand_computation():
    """In memory, llama.cpp computes every byte of its file once per token at dense_gbs (no
    faults after the first token); PowerInfer-2's compute-only speed is the fitted 12.5."""
    prof = builtin("oneplus12")
    got = rp.in_memory(prof)
    file_bytes = sum(b for *_, b in file_blocks(get_shape("turbosparse-mistral-7b")))
    assert got["simulated"] is True
    assert got["simulated_llama_cpp_tokens_per_s"] == pytest.approx(
        prof.dense_gbs * 1e9 / file_bytes, rel=1e-3
    )
    assert got["simulated_powerinfer2_tokens_per_s"] == pytest.approx(12.5, rel=0.01)
    assert got["simulated_over_llama_cpp"] == pytest.approx(
        got["simulated_powerinfer2_tokens_per_s"] / got["simulated_llama_cpp_tokens_per_s"],
        rel=1e-3,
    )
    assert got["paper_over_llama_cpp"] == paper.PAPER["in_memory_over_llama_cpp"]


def test_offload_gains_rows_and_what_they_vary():
    """One row per knob value and budget, all simulated; the dtype rows read the same units in
    bundles of 3x the payload per byte width (f16 24 KiB, int8 12 KiB, int4 6 KiB -> 8 KiB
    slots) and the placement rows the same firings in two orders."""
    shape = ModelShape.from_config(
        ModelConfig.llama2_7b(
            hidden_size=512, intermediate_size=1536, num_layers=2, num_heads=8, num_kv_heads=8
        ),
        name="small",
    )
    got = rp.offload_gains(model=shape, ffn_on_flash=(0.9,), tokens=4)
    assert got["simulated"] is True and got["model"] == "small"
    rows = {(r["knob"], r["value"]): r for r in got["rows"]}
    assert len(rows) == 7 and all(r["simulated"] for r in got["rows"])
    dtype = [rows["bundle dtype", d] for d in ("f16", "int8", "int4")]
    # D=512: f16 3 KiB, int8 1.5 KiB, int4 768 B: one 4 KiB read each, the same count
    assert len({r["simulated_reads_per_token"] for r in dtype}) == 1
    assert dtype[0]["simulated_tokens_per_s"] < dtype[2]["simulated_tokens_per_s"]
    for c in (0.2, 0.7):
        a, b = (rows["placement", f"{o}, coherence {c}"] for o in ("frequency", "coactivation"))
        assert b["simulated_reads_per_token"] <= a["simulated_reads_per_token"]
    assert any("prefetch" in n for n in got["notes"])
    with pytest.raises(ConfigError, match="dense shape"):
        rp.offload_gains(model="turbosparse-mixtral-47b", tokens=2)


def test_cli_reproduce_gains_json(capsys):
    from pi2lab.cli import main

    assert main(["reproduce", "--gains", "--tokens", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["simulated"] is True and out["table"] == "offload_gains"
    assert {r["knob"] for r in out["rows"]} == {"bundle dtype", "placement"}
    assert all(r["simulated"] for r in out["rows"])
