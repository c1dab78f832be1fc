"""Every notebook, run with Run All in JupyterLab in a real browser, in smoke mode.

For each ``notebooks/NN_*.ipynb`` (whatever exists when the tests are collected): open it in
JupyterLab as a user would see it (:mod:`tests.browser.conftest`: a temporary copy, ``CI=1``;
a 1280 x 900 window with the file browser open), clear its outputs, Run All from the Run menu
and wait until the kernel is idle with no cell queued; then fail on

- an error output, or stderr that names an exception, in a cell or in an app's ``Output``,
  with the text in the message;
- a widget that does not render (``Error displaying widget``, ``Loading widget``, an app cell
  with no widget element), and a cell that shows a figure or an app without a drawn plotly
  figure;
- an app figure titled ``Not redrawn: ...`` (:class:`pi2lab.viz.apps.ShowsErrors`);
- a figure without a title, a y axis with tick labels but no title, a title past the figure's
  edge, the legend over an axis title, tick labels over each other, a figure much narrower
  than its output area (a fixed width), a control past the edge of its output area;
- a temporary folder's name (``tmpXXXXXXXX``, ``pi2lab-XXXXXXXX``) in an output (apps name the
  model, not the folder it was converted into), and a ratio printed as ``-x``;
- a displayed app whose controls are not at their defaults after Run All (contract cells move
  their own instances, never the displayed one).

For 03, 04, 05 and 07 (those that exist), the first app's first slider is moved one step with
the keyboard (the next option of its first dropdown where it has no slider) and its figure
must redraw without an error; then each of its buttons is pressed (05: *measure*, which once
failed after Run All with a ``StorageError``, a cleanup cell having removed the layout it
reads) and the figure must redraw again without an error.

A screenshot of each whole notebook after Run All goes, pass or fail, to the folder named at
the end of the run: ``PI2LAB_SCREENSHOTS``, default ``<temp>/pi2lab-screenshots``.

Without Chromium or Playwright the tests skip, saying how to install them (``apt-get install
chromium``), so that ``make test`` runs for a newcomer who has no root; under CI (``CI`` set)
they fail instead, since a skipped browser check would let a broken notebook land unseen, and
``.ci/run`` installs Chromium with apt-get where it can. ``pytest -m browser`` runs them alone.
"""

from __future__ import annotations

import contextlib
import re
import time

import pytest

from tests.browser.conftest import NOTEBOOKS, record_run, record_screenshot

try:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
except ImportError:  # the fixtures skip (or fail under CI) before a test runs
    PlaywrightTimeout = TimeoutError

pytestmark = pytest.mark.browser

PAGES = sorted(p.name for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
CONTROL_CHECKS = ("03", "04", "05", "07")

KERNEL_START_MS = 180_000
RUN_ALL_MS = 900_000  # one notebook in smoke mode, JIT compiles included, on 2 slow cores
RENDER_MS = 60_000
REDRAW_MS = 300_000  # 04's app decodes on the offload engine for every change
VIEWPORT = {"width": 1280, "height": 900}
MAX_SHOT_PX = 16_000

# The displayed apps' controls right after Run All: {notebook prefix: {label: shown}}
DEFAULTS = {
    "02": {"threshold": "+0.00"},
    "03": {"budget": "25%", "policy": "Segmented", "hot fraction": "50%", "cluster size": "4"},
    "04": {"I/O threads": "1", "FFN cached": "50%", "cluster size": "4"},
    "05": {"FFN share": "50%", "device": "this machine (measured profile)"},
}

TEMP_NAME = re.compile(r"\b(tmp[a-z0-9_]{8}|pi2lab-[a-z0-9_]{8})\b")
EXCEPTION = re.compile(r"Traceback|\b[A-Z]\w*(Error|Exception)\b")
RATIO_WITHOUT_NUMBER = re.compile(r"(?<![\w.-])-x\b")
NOT_RENDERED = ("Error displaying widget", "Loading widget")
NARROW = 0.8  # a figure narrower than this share of its output area: a fixed width left over
SHOWS = re.compile(r"\.(show|widget)\(\)")

# Page-side helpers, on window.pi2 (window.jupyterapp: the server runs with
# expose_app_in_browser, as JupyterLab's own UI tests do)
HELPERS = """
window.pi2 = {
  panel: () => window.jupyterapp.shell.currentWidget,
  kernel: () => window.pi2.panel()?.sessionContext?.session?.kernel,
  code: () => window.pi2.panel().content.widgets.filter(c => c.model.type === 'code'),
  busy: (c) => c.node.querySelector('.jp-InputPrompt')?.textContent.includes('*'),
  failed: (c) => c.model.outputs.toJSON().some(o => o.output_type === 'error'),
  hash: (s) => {
    let h = 0;
    for (let i = 0; i < s.length; i++) h = (h * 31 + s.charCodeAt(i)) | 0;
    return h;
  },
  figure: (node) => {
    const gd = node.matches('.js-plotly-plot') ? node : node.querySelector('.js-plotly-plot');
    if (!gd || !gd.querySelector('.main-svg')) return null;
    let state;
    try { state = JSON.stringify([gd.data, gd.layout]); }
    catch (e) { state = gd.querySelector('.main-svg').outerHTML; }
    const area = gd.closest('.jp-OutputArea-output')?.getBoundingClientRect().width ?? 0;
    return {
      hash: window.pi2.hash(state),
      title: gd.layout?.title?.text ?? '',
      width: gd.querySelector('.main-svg').getBoundingClientRect().width,
      area: area,
      layout: window.pi2.overlaps(gd),
    };
  },
  // controls of an app that stick out of its output area (cut off, or under the next panel)
  outside: (node) => {
    const area = node.querySelector('.jp-OutputArea-output > .jupyter-widgets')
      ?.parentElement.getBoundingClientRect();
    if (!area) return [];
    const controls = '.widget-inline-hbox, .widget-toggle-buttons, .widget-button';
    return [...node.querySelectorAll(controls)]
      .filter(w => w.getBoundingClientRect().right > area.right + 1)
      .map(w => (w.querySelector('.widget-label')?.textContent || w.textContent).trim());
  },
  // what a reader would see as broken in a drawn figure: a title past the figure's edge, the
  // legend over an axis title, tick labels of one axis over each other
  overlaps: (gd) => {
    const box = e => e.getBoundingClientRect();
    const hit = (a, b) => a.left < b.right - 1 && b.left < a.right - 1
      && a.top < b.bottom - 1 && b.top < a.bottom - 1;
    const svg = box(gd.querySelector('.main-svg'));
    const issues = [];
    if (!gd.querySelector('.g-gtitle .gtitle')?.textContent) issues.push('no title');
    for (const plot of gd.querySelectorAll('.cartesianlayer .subplot')) {
      const y = [...plot.classList].map(k => k.match(/^x\\d*(y\\d*)$/)?.[1]).find(Boolean);
      const ticks = [...plot.querySelectorAll(`.${y}tick text`)].some(t => t.textContent);
      if (y && ticks && !gd.querySelector(`.g-${y}title text`)?.textContent)
        issues.push(`the ${y} axis has no title`);
    }
    for (const t of gd.querySelectorAll('.g-gtitle .gtitle')) {
      const b = box(t);
      if (b.width && (b.left < svg.left - 1 || b.right > svg.right + 1))
        issues.push(`title past the edge: ${t.textContent.slice(0, 60)}`);
    }
    const legend = gd.querySelector('.legend');
    const axisTitles = gd.querySelectorAll('[class^="g-x"][class$="title"] text,'
      + ' [class^="g-y"][class$="title"] text');
    if (legend) for (const a of axisTitles)
      if (a.textContent && hit(box(legend), box(a)))
        issues.push(`legend over the axis title ${a.textContent}`);
    for (const axis of gd.querySelectorAll('.xaxislayer-above, .yaxislayer-above')) {
      const ticks = [...axis.querySelectorAll('[class$="tick"] > text')]
        .filter(t => t.textContent).map(box);
      if (ticks.some((t, i) => i && hit(ticks[i - 1], t)))
        issues.push('tick labels over each other');
    }
    return issues;
  },
  controls: (node) => {
    const out = {};
    for (const w of node.querySelectorAll('.widget-slider, .widget-dropdown')) {
      const label = w.querySelector('.widget-label')?.textContent.trim();
      const readout = w.querySelector('.widget-readout');
      const select = w.querySelector('select');
      const shown = readout ? readout.textContent : select?.options[select.selectedIndex]?.text;
      if (label) out[label] = (shown ?? '').replace(/\\u00a0/g, ' ').trim();
    }
    return out;
  },
  running: () => window.pi2.code().map((c, i) => [i, c]).filter(([i, c]) => window.pi2.busy(c))
    .map(([i, c]) => `code cell ${i}: ${c.model.sharedModel.getSource().split('\\n')[0]}`),
};
"""

STARTED = "() => window.pi2.code().some(window.pi2.busy)"

# all code cells ran, or the run stopped at an error; the kernel idle either way
FINISHED = """() => {
  const k = window.pi2.kernel(), cells = window.pi2.code();
  if (!k || k.status !== 'idle' || cells.some(window.pi2.busy)) return false;
  return cells.every(c => c.model.executionCount !== null) || cells.some(window.pi2.failed);
}"""

# every cell that ran cleanly and shows a figure or an app has a drawn plotly figure
FIGURES_DRAWN = """() => window.pi2.code().every(c => {
  const s = c.model.sharedModel.getSource();
  if (!/\\.(show|widget)\\(\\)/.test(s) || c.model.executionCount === null) return true;
  if (window.pi2.failed(c)) return true;
  return [...c.node.querySelectorAll('.js-plotly-plot')].some(g => g.querySelector('.main-svg'));
})"""

CELLS = """() => window.pi2.code().map((c, i) => {
  const outputs = c.model.outputs.toJSON();
  const area = c.node.querySelector('.jp-Cell-outputWrapper');
  const stderr = '.jupyter-widgets [data-mime-type="application/vnd.jupyter.stderr"]';
  return {
    index: i,
    count: c.model.executionCount,
    source: c.model.sharedModel.getSource(),
    errors: outputs.filter(o => o.output_type === 'error').map(o => `${o.ename}: ${o.evalue}`),
    views: outputs.filter(o => o.data?.['application/vnd.jupyter.widget-view+json']).length,
    rendered: [...c.node.querySelectorAll('.jp-OutputArea-output > .jupyter-widgets')].length,
    figures: [...c.node.querySelectorAll('.js-plotly-plot')].map(window.pi2.figure),
    // the cell's stderr stream, and stderr an app's Output widget shows
    stderr: outputs.filter(o => o.output_type === 'stream' && o.name === 'stderr')
      .map(o => Array.isArray(o.text) ? o.text.join('') : o.text)
      .concat([...c.node.querySelectorAll(stderr)].map(e => e.innerText)),
    text: area ? area.innerText : '',
    outside: window.pi2.outside(c.node),
  };
})"""


def menu(page, top: str, item: str) -> None:
    page.get_by_role("menuitem", name=top, exact=True).click()
    page.get_by_role("menuitem", name=item, exact=True).click()


def open_and_run(page, lab, name: str) -> None:
    """Opens ``name``, clears its outputs and runs it with Run All; returns once the kernel
    is idle with no cell queued (all ran, or the run stopped at an error)."""
    page.goto(f"{lab.url}/lab/tree/{name}?reset&token={lab.token}")
    page.wait_for_function("() => !!window.jupyterapp", timeout=KERNEL_START_MS)
    page.add_script_tag(content=HELPERS)
    page.wait_for_function(
        "(name) => { const k = window.pi2.kernel(); return !!k && k.status === 'idle'"
        " && k.connectionStatus === 'connected' && window.pi2.panel().context.path === name; }",
        arg=name,
        timeout=KERNEL_START_MS,
    )
    menu(page, "Edit", "Clear Outputs of All Cells")  # execution counts too: [ ] until run
    menu(page, "Run", "Run All Cells")
    page.wait_for_function(f"() => ({STARTED})() || ({FINISHED})()", timeout=30_000)
    try:
        page.wait_for_function(FINISHED, timeout=RUN_ALL_MS, polling=1000)
    except PlaywrightTimeout:
        running = page.evaluate("() => window.pi2.running()")
        pytest.fail(f"{name}: Run All not done after {RUN_ALL_MS // 1000} s; running {running}")


def screenshot(page, path) -> None:
    """The whole notebook: the viewport grown to the notebook's height first (the notebook
    scrolls inside the page, so a full-page shot alone holds only the first screen)."""
    height = page.evaluate(
        """() => {
          const o = window.pi2.panel().content.node.querySelector('.jp-WindowedPanel-outer');
          const r = o.getBoundingClientRect();
          return o.scrollHeight + r.top + (window.innerHeight - r.bottom);
        }"""
    )
    page.set_viewport_size({"width": VIEWPORT["width"], "height": min(int(height), MAX_SHOT_PX)})
    page.wait_for_timeout(1000)  # plotly's responsive relayout
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(VIEWPORT)
    record_screenshot(path)


def problems(cells: list[dict]) -> list[str]:
    """What is wrong with the cells' outputs, one entry per problem."""
    found = []
    ran = sum(c["count"] is not None for c in cells)
    if ran < len(cells) and not any(c["errors"] for c in cells):
        found.append(f"only {ran} of {len(cells)} code cells ran")
    for c in cells:
        where = f"code cell {c['index']} ({c['source'].splitlines()[0][:60]!r})"
        found += [f"{where}: error output {e}" for e in c["errors"]]
        found += [f"{where}: stderr\n{t[-2000:]}" for t in c["stderr"] if EXCEPTION.search(t)]
        found += [f"{where}: shows {m!r}" for m in NOT_RENDERED if m in c["text"]]
        clean = c["count"] is not None and not c["errors"]
        if clean and ".widget()" in c["source"] and not c["rendered"]:
            found.append(f"{where}: the app's widget did not render")
        if clean and SHOWS.search(c["source"]) and not any(c["figures"]):
            found.append(f"{where}: no plotly figure drawn")
        for f in filter(None, c["figures"]):
            if "Not redrawn" in f["title"]:
                found.append(f"{where}: figure titled {f['title']!r}")
            found += [f"{where}: {issue}" for issue in f["layout"]]
            if f["width"] < NARROW * f["area"]:
                found.append(f"{where}: figure {f['width']:.0f} px wide in {f['area']:.0f} px")
        if RATIO_WITHOUT_NUMBER.search(c["text"]):
            found.append(f"{where}: a ratio printed without its number ('-x')")
        found += [f"{where}: control {w!r} sticks out of the output area" for w in c["outside"]]
        if m := TEMP_NAME.search(c["text"]):
            found.append(f"{where}: a temporary folder's name in the output: {m.group()!r}")
    return found


def app_cell(cells: list[dict]) -> int | None:
    """Index (among code cells) of the first cell showing an app with a figure."""
    for c in cells:
        if c["views"] and any(c["figures"]) and ".widget()" in c["source"]:
            return c["index"]
    return None


def figure_state(page, index: int) -> dict:
    return page.evaluate("(i) => window.pi2.figure(window.pi2.code()[i].node)", index)


def wait_for_redraw(page, index: int, before: dict, what: str) -> None:
    """Waits until the figure of code cell ``index`` differs from ``before``, then fails on
    anything wrong in that cell (a failed callback redraws too: its title says so)."""
    try:
        page.wait_for_function(
            "([i, h]) => { const f = window.pi2.figure(window.pi2.code()[i].node);"
            " return !!f && f.hash !== h; }",
            arg=[index, before["hash"]],
            timeout=REDRAW_MS,
            polling=500,
        )
    except PlaywrightTimeout:
        pytest.fail(f"{what}: the figure did not redraw within {REDRAW_MS // 1000} s")
    page.wait_for_timeout(500)  # the Output widget's stderr follows the figure
    bad = problems([page.evaluate(CELLS)[index]])
    assert not bad, f"{what}:\n" + "\n".join(bad)


def move_a_control(page, cell) -> str | None:
    """Moves the app's first enabled slider one step right with the keyboard, else sets the
    first enabled dropdown that has a choice to its next option; returns what it moved, or None
    when nothing can move yet (07's view controls are empty until a grid has run)."""
    handles = cell.locator(".widget-slider .noUi-target:not([disabled]) .noUi-handle")
    if handles.count():
        slider = handles.first.locator("xpath=ancestor::div[contains(@class, 'widget-slider')]")
        label = slider.locator(".widget-label").first.inner_text()
        handles.first.focus()
        handles.first.press("ArrowRight")
        return f"slider {label!r}"
    for select in cell.locator(".widget-dropdown select:not([disabled])").all():
        options = select.locator("option").all_inner_texts()
        if len(options) > 1:
            pick = (select.evaluate("s => s.selectedIndex") + 1) % len(options)
            select.select_option(index=pick)
            return f"dropdown to {options[pick]!r}"
    return None


def check_controls(page, index: int) -> list[str]:
    """Moves a control of the app in code cell ``index`` and presses each of its buttons (the
    buttons first where no control can move before them); each must redraw the figure
    cleanly. Returns what was done."""
    cell = page.locator(".jp-Notebook .jp-CodeCell").nth(index)
    done = []

    def move() -> bool:
        before = figure_state(page, index)
        moved = move_a_control(page, cell)
        if moved is not None:
            wait_for_redraw(page, index, before, f"after moving the {moved}")
            done.append(f"moved the {moved}")
        return moved is not None

    moved = move()
    buttons = cell.locator("button.widget-button:not([disabled])")
    for label in buttons.all_inner_texts():
        before = figure_state(page, index)
        cell.locator("button.widget-button", has_text=label.strip()).first.click()
        wait_for_redraw(page, index, before, f"after pressing {label.strip()!r}")
        done.append(f"pressed {label.strip()!r}")
    for _ in range(REDRAW_MS // 2000):  # a run may still be filling the view controls
        if moved or move():
            return done
        page.wait_for_timeout(2000)
    pytest.fail("the app has no enabled slider or dropdown with a choice")


@pytest.mark.parametrize("name", PAGES)
def test_notebook_runs_in_jupyterlab(name, lab, browser, screenshots):
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(60_000)
    started = time.monotonic()
    try:
        try:
            open_and_run(page, lab, name)
            with contextlib.suppress(PlaywrightTimeout):  # problems() names what is missing
                page.wait_for_function(FIGURES_DRAWN, timeout=RENDER_MS, polling=500)
        finally:
            with contextlib.suppress(Exception):  # a failure says why; the shot is a bonus
                screenshot(page, screenshots / name.replace(".ipynb", ".png"))
        cells = page.evaluate(CELLS)
        found = problems(cells)
        assert not found, f"{name} after Run All:\n" + "\n".join(found)

        prefix, index = name[:2], app_cell(cells)
        if prefix in DEFAULTS or prefix in CONTROL_CHECKS:
            assert index is not None, f"{name}: no app with a figure"
        if prefix in DEFAULTS:
            shown = page.evaluate("(i) => window.pi2.controls(window.pi2.code()[i].node)", index)
            wrong = {k: shown.get(k) for k, v in DEFAULTS[prefix].items() if shown.get(k) != v}
            assert not wrong, f"{name}: the app is not at its defaults: {wrong} (shows {shown})"
        done = check_controls(page, index) if prefix in CONTROL_CHECKS else []
        record_run("; ".join([f"{name}: {time.monotonic() - started:.0f} s", *done]))
    finally:
        context.close()
        with contextlib.suppress(OSError):  # a dead server: the fixture's finalizer cleans up
            lab.shut_down_kernels()
