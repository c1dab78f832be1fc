"""Figure builders of pi2lab.viz.plan on hand-made reproduction dicts (no simulation)."""

from __future__ import annotations

import plotly.graph_objects as go

from pi2lab.viz import plan


def test_ablation_bars_simulated_beside_paper():
    table = {
        "device": "oneplus12",
        "rows": [
            {"rung": "baseline", "simulated_tokens_per_s": 1.5, "paper_tokens_per_s": 0.4},
            {"rung": "+ cache", "simulated_tokens_per_s": 9.0, "paper_tokens_per_s": 4.18},
        ],
    }
    fig = plan.ablation_bars(table)
    assert [t.name for t in fig.data] == ["simulated", "paper"]
    assert list(fig.data[0].y) == [1.5, 9.0] and list(fig.data[1].y) == [0.4, 4.18]
    assert "SIMULATED" in fig.layout.title.text


def test_memory_sweep_lines_and_paper_markers():
    sweep = {
        "device": "oneplus12",
        "model": "m",
        "points": [
            {"memory_gb": g, "engine": e, "simulated_tokens_per_s": g * k}
            for g in (7.0, 19.0)
            for e, k in (("powerinfer2", 1.0), ("llama.cpp-mmap", 0.1), ("llmflash", 0.3))
        ],
        "paper_points": [
            {
                "memory_gb": 19.0,
                "engine": "powerinfer2",
                "label": "PI2",
                "paper_tokens_per_s": 11.68,
            }
        ],
    }
    fig = plan.memory_sweep_lines(sweep)
    assert len(fig.data) == 4
    assert list(fig.data[0].y) == [7.0, 19.0]
    assert fig.data[3].mode == "markers" and list(fig.data[3].y) == [11.68]
    assert fig.data[3].marker.color == fig.data[0].line.color
    assert "SIMULATED" in fig.layout.title.text


def test_decode_table_figure_has_dash_for_missing_paper():
    table = {
        "device": "oneplus-ace2",
        "ffn_on_flash": 0.5,
        "rows": [
            {
                "model_label": "Llama-7B",
                "engine_label": "PowerInfer-2",
                "simulated_tokens_per_s": 12.345,
                "paper_tokens_per_s": None,
                "ratio": None,
            }
        ],
    }
    fig = plan.decode_table_figure(table)
    assert isinstance(fig.data[0], go.Table)
    cells = fig.data[0].cells.values
    assert list(cells[2]) == ["12.35"] and list(cells[3]) == ["-"]
