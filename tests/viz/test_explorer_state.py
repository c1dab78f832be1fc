"""The explorers as a notebook leaves them: they own their temporary layouts for as long as
they live, a failing callback shows in the widget (not only in the kernel's log), and a
contract-style check on its own instance leaves the displayed explorer at its defaults.
Runs the bundled model on the real offload engine (two tokens; nothing timed)."""

from __future__ import annotations

import gc
import shutil

import pytest

import pi2lab as pl
from pi2lab.errors import StorageError
from pi2lab.storage.layout import open_layout
from pi2lab.viz import offload_apps
from tests.viz.test_planner_figures import explorer as planner_explorer


@pytest.fixture(scope="module")
def prompt():
    return pl.load_pretrained("builtin").encode("def add(a, b):")


def make_explorer(prompt) -> offload_apps.PipelineExplorer:
    """Builds the layouts in this scope only, as a notebook cell does."""
    layouts = offload_apps.FlashLayouts()
    return offload_apps.PipelineExplorer(layouts, prompt, steps=2, sizes=[4])


def open_from_a_scope_that_ends():
    return offload_apps.FlashLayouts().open(4)


def test_a_temporary_layout_lives_as_long_as_a_layout_opened_from_it():
    layout = open_from_a_scope_that_ends()
    gc.collect()
    assert layout.path.name == "pydoc-drelu"  # a readable model name, not tmpXXXX
    assert open_layout(layout.path).units == layout.units
    root = layout.path.parent.parent
    del layout
    gc.collect()
    assert not root.exists()


def test_pipeline_explorer_owns_its_layouts_and_keeps_its_defaults(prompt):
    app = make_explorer(prompt)
    gc.collect()
    assert app.layouts.root.is_dir()
    defaults = {w.description or repr(w): w.value for w in app.controls}
    first = app.figure.layout.title.text.split("<br>")[0]
    assert len(first) <= 70 and "C=4" in first  # the configuration goes on the second line

    # a contract-style check builds its own instance and moves its controls
    check = offload_apps.PipelineExplorer(app.layouts, prompt, steps=2, sizes=[4])
    check.io_threads.value = 2
    assert check.error is None
    assert {e["thread"] for e in check.run.rows if e["stage"] == "read"} <= {"io0", "io1"}
    assert {w.description or repr(w): w.value for w in app.controls} == defaults

    # the displayed one still redraws after the scope that made its layouts ended
    app.policy.value = "lru"
    assert app.error is None and not app.errors.outputs
    assert "lru" in app.figure.layout.title.text and app.config().policy == "lru"
    assert app.hot_fraction.disabled  # the hot fraction is for the segmented policy only


def test_pipeline_explorer_shows_a_failed_redraw(prompt):
    app = make_explorer(prompt)
    shutil.rmtree(app.layouts(4))  # what the old cleanup cell did to the explorer's layout
    before = app.run
    app.io_threads.value = 2
    assert isinstance(app.error, StorageError)
    assert app.run is before
    assert "Not redrawn: StorageError" in app.figure.layout.title.text
    assert "StorageError" in app.errors.outputs[0]["text"]


def test_planner_explorer_shows_a_failed_measurement_then_clears_it():
    def fail(plan):
        raise StorageError("flash.json: no such layout")

    app = planner_explorer(measure=fail)
    app.measure_button.click()
    assert isinstance(app.error, StorageError) and app.measured == {}
    assert "Not redrawn: StorageError: flash.json" in app.figure.layout.title.text
    assert not app.measure_button.disabled  # ready for another try
    app.share.value = 0.5
    assert app.error is None and not app.errors.outputs
    assert app.figure.layout.title.text.startswith("Predicted")
