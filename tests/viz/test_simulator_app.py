"""The simulator explorer (06) on a tiny shape and a hand-made profile: every control
re-simulates and redraws a Gantt chart labelled SIMULATED (nothing timed)."""

from __future__ import annotations

from pi2lab.viz.simulator_app import SimulatorExplorer
from tests.viz.test_planner_figures import profile, tiny_shape


def explorer() -> SimulatorExplorer:
    return SimulatorExplorer(
        phones={"phone": profile("phone")}, shapes={"tiny": tiny_shape()}, tokens=4
    )


def test_simulated_gantt_on_the_virtual_clock():
    app = explorer()
    assert app.error is None and app.pipeline() is None
    title = app.figure.layout.title.text
    assert title.startswith("SIMULATED: tiny on phone, powerinfer2")
    assert "cluster overlap, 1 I/O thread(s)" in title
    assert "SIMULATED" in app.figure.layout.xaxis.title.text
    assert {t.name for t in app.figure.data} >= {"compute", "read"}
    assert "<b>simulated</b>" in app.summary.value


def test_controls_resimulate_and_mmap_disables_the_pipeline_knobs():
    app = explorer()
    app.io_threads.value = 2
    assert app.pipeline().io_threads == 2 and app.pipeline().mode == "cluster"
    reads = {e["thread"] for e in app.result.timeline.rows() if e["stage"] == "read"}
    assert reads <= {"io0", "io1"} and "2 I/O thread(s)" in app.figure.layout.title.text
    app.mode.value = "none"
    assert app.pipeline().mode == "none" and "none overlap" in app.figure.layout.title.text
    before = app.result
    app.engine.value = "llama.cpp-mmap"
    assert app.error is None and app.result is not before
    assert app.mode.disabled and app.io_threads.disabled and app.pipeline() is None
    assert "no overlap, one reader" in app.figure.layout.title.text


def test_a_failed_simulation_shows_in_the_widget():
    app = explorer()
    before = app.result
    app.tokens = 0  # simulate_decode refuses: the error lands in the widget, not the log
    app.share.value = 0.25
    assert app.error is not None and app.result is before
    assert "Not redrawn: ConfigError" in app.figure.layout.title.text
    assert app.errors.outputs and "tokens=0" in app.errors.outputs[0]["text"]
