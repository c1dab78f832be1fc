"""The ablation lab's figures on a hand-made table (every value known) and its widgets headless
on a real sweep: each view says which source it shows, measured and simulated never mix."""

import json

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("distributed")

import pi2lab as pl
from pi2lab.viz import ablation_figures as af
from pi2lab.viz.ablations import AblationLab

EVENTS = [
    {"stage": "attention", "layer": 0, "thread": "compute", "start_ms": 0.0, "end_ms": 1.0,
     "units": 0, "nbytes": 0},
    {"stage": "read", "layer": 0, "thread": "io0", "start_ms": 1.0, "end_ms": 3.0,
     "units": 4, "nbytes": 16384},
]  # fmt: skip


def table(source="simulated") -> pd.DataFrame:
    """2 engines x 2 budgets x 2 repetitions; tokens/s = 10 * budget (+1 for llmflash) + rep."""
    rows = []
    for engine in ("powerinfer2", "llmflash"):
        for budget in (0.3, 0.6):
            for rep in (0, 1):
                rows.append(
                    {
                        "source": source,
                        "config_hash": f"{engine}-{budget}",
                        "commit": "abc",
                        "engine": engine,
                        "budget": budget,
                        "model": "m",
                        "repetition": rep,
                        "tokens_per_s": 10 * budget + (engine == "llmflash") + rep,
                        "io_share": budget,
                        "memory_mb": 1000 * budget,
                        "hit_rate": 0.5,
                        "mb_read_per_token": 1.0,
                        "error": None,
                        "timeline": json.dumps(EVENTS),
                    }
                )
    return pd.DataFrame(rows)


def test_configurations_average_the_repetitions_and_label_what_varies():
    configs = af.configurations(table())
    assert len(configs) == 4 and set(configs["repetitions"]) == {2}
    row = configs[configs["config_hash"] == "llmflash-0.6"].iloc[0]
    assert (
        row["tokens_per_s"] == pytest.approx(7.5) and row["label"] == "engine=llmflash budget=0.6"
    )
    assert af.varied(table()) == ["engine", "budget"]
    mixed = pd.concat([table(), table("measured")])
    with pytest.raises(pl.ConfigError, match="mixes measured and simulated"):
        af.configurations(mixed)
    broken = table()
    broken.loc[0, "error"] = "ConfigError: no"
    assert len(af.one_source(broken, "simulated")) == 7 and af.one_source(broken, "measured").empty


def test_heatmap_cells_are_means_and_titles_name_the_source():
    fig = af.heatmap(table(), "budget", "engine")
    z = np.asarray(fig.data[0].z, float)
    assert list(fig.data[0].x) == ["0.3", "0.6"] and list(fig.data[0].y) == [
        "llmflash",
        "powerinfer2",
    ]
    np.testing.assert_allclose(z, [[4.5, 7.5], [3.5, 6.5]])
    assert fig.layout.title.text.startswith("SIMULATED: tokens/s by budget and engine")
    assert af.heatmap(table("measured"), "budget", "engine").layout.title.text.startswith(
        "Measured here"
    )
    with pytest.raises(pl.ConfigError, match="choose two knobs"):
        af.heatmap(table(), "budget", "budget")
    partial = af.heatmap(table().iloc[:6], "budget", "engine")  # llmflash at 0.6 not yet run
    assert partial.data[0].z[0][1] is None and partial.to_json()


def test_pareto_front_and_speed_memory():
    front = af.pareto_front(np.array([100, 200, 150, 300]), np.array([5, 8, 4, 8]))
    assert front.tolist() == [True, True, False, False]
    fig = af.speed_memory(table())
    points, line = fig.data
    assert len(points.x) == 4 and list(points.marker.color) == [0.3, 0.6, 0.3, 0.6]
    assert list(line.x) == [300, 600] and list(line.text) == [
        "engine=llmflash budget=0.3",
        "engine=llmflash budget=0.6",
    ]
    assert "SIMULATED" in fig.layout.title.text and "I/O share" in fig.layout.title.text


def test_parallel_coordinates_and_gantt():
    fig = af.parallel(table())
    assert [d.label for d in fig.data[0].dimensions] == ["engine", "budget", "tokens/s"]
    sim = af.gantt(table(), "powerinfer2-0.3")
    assert "SIMULATED" in sim.layout.xaxis.title.text and sim.layout.title.text.startswith(
        "SIMULATED"
    )
    real = af.gantt(table("measured"), "powerinfer2-0.3", repetition=1)
    assert "(measured)" in real.layout.xaxis.title.text
    with pytest.raises(pl.ConfigError, match="no timeline"):
        af.gantt(table(), "nope")


def test_the_lab_runs_its_grid_and_redraws_every_view(lab_scheduler):
    lab = AblationLab(scheduler=lab_scheduler)
    assert lab.table.empty and "Run a grid" in lab.figure.layout.title.text
    lab.model.value = ["bamboo-7b"]
    lab.texts["budget"].value = "0.3,0.6"
    lab.repetitions.value, lab.tokens.value = 1, 3
    lab.button.click()
    assert lab.error is None and len(lab.table) == 4 and lab.progress.value == 4
    assert set(lab.table["source"]) == {"simulated"} and lab.source.value == "simulated"
    # the engine's own policy and overlap mode vary with it
    assert list(lab.heat_x.options) == ["engine", "budget", "policy", "mode"]
    assert (lab.heat_x.value, lab.heat_y.value) == ("engine", "budget")
    assert lab.heat.layout.title.text.startswith("SIMULATED")
    assert lab.figure.layout.title.text.startswith("SIMULATED: speed against memory")
    assert len(lab.point.options) == 4 and "<table" in lab.rows_view.value
    lab.point.value = lab.point.options[-1][1]
    assert "engine=llmflash budget=0.6" in lab.timeline.layout.title.text
    lab.heat_y.value = "policy"  # chosen by hand: kept across redraws
    assert "tokens/s by engine and policy" in lab.heat.layout.title.text
    lab.source.value = "measured"  # nothing measured yet: the views say so, none mixed in
    assert lab.figure.layout.title.text == "No measured rows yet"
    lab.source.value = "simulated"
    assert (lab.heat_x.value, lab.heat_y.value) == ("engine", "policy")

    lab.texts["budget"].value = "0.3,,0.6"
    lab.run()
    assert isinstance(lab.error, pl.ConfigError) and "empty item" in str(lab.error)
    assert len(lab.table) == 4

    assert lab.texts["prefetch"].disabled  # the simulator has no cross-layer prefetch
    lab.target.value = "engine"
    assert list(lab.model.options) == ["bundled", "synthetic-7b"] and lab.device.disabled
    assert lab.tokens.value == 4 and not lab.texts["prefetch"].disabled
    lab.texts["budget"].value, lab.texts["prefetch"].value = "0.3", "0,1"
    assert lab.grid().knobs["prefetch"] == (0, 1)
