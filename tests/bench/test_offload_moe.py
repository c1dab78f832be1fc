"""``pi2lab bench offload``'s Mixtral-shaped section on a small width: every engine runs on the
per-expert layout and the section reaches the table and the rows (no timing is asserted)."""

from pi2lab.bench import format_table
from pi2lab.bench.common import machine
from pi2lab.bench.offload import bench_mixtral
from pi2lab.bench.rows import provenance, rows


def test_mixtral_section_runs_every_engine_and_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("PI2LAB_BENCH_DIR", str(tmp_path))
    row = bench_mixtral(steps=2, repeats=1, layers=1, hidden=256, ffn=512, profile_tokens=3)
    engines = {"powerinfer2", "llmflash", "dense-stream", "powerinfer2, expert-aware cache"}
    assert set(row["engines"]) == engines
    assert all(r["tokens"] == 2 for r in row["engines"].values())
    assert row["engines"]["dense-stream"]["mb_read_per_token"] > 0  # half of each routed expert
    counts = row["expert_popularity"]["counts"]
    assert len(counts) == 1 and len(counts[0]) == 8 and sum(counts[0]) == 3 * 2
    result = {
        "bench": "offload",
        "machine": machine(),
        "synthetic_mixtral": row,
        "provenance": provenance(),
    }
    table = format_table(result)
    assert "synthetic_mixtral: synthetic Mixtral-shaped dReLU MoE, 1 layers of 8 experts" in table
    assert "powerinfer2 / llmflash (paper, Mixtral-47B: 4.15)" in table
    assert {r["engine"] for r in rows(result)} == engines
