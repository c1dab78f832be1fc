"""JupyterLab on 127.0.0.1 with a random token over a temporary copy of ``notebooks/``, and
Debian's Chromium driven by Playwright, for :mod:`tests.browser.test_notebooks`.

The server runs with ``CI=1`` (the notebooks' smoke mode, whether or not the tests run under
CI), its own settings (every cell attached to the page, the preferred kernel started without a
dialog, no news or update checks), workspace, runtime and ``TMPDIR`` folders under the test's
temporary folder; it and its kernels are shut down after the module, whatever happened.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
INSTALL = "apt-get install chromium"
SERVER_START_S = 180  # a cold start on a slow 2-core machine imports a lot

SETTINGS = {
    "@jupyterlab/notebook-extension/tracker": {
        "windowingMode": "none",  # every cell in the DOM: checked and in the screenshot
        "autoStartDefaultKernel": True,  # no "Select Kernel" dialog
        "scrollPastEnd": False,  # no blank screen under the last cell in the screenshot
    },
    "@jupyterlab/apputils-extension/notification": {
        "fetchNews": "false",
        "checkForUpdates": False,
        "doNotDisturbMode": True,  # no toasts over the screenshots
    },
}

_screenshots: list[Path] = []
_runs: list[str] = []


def _needed(what: str) -> None:
    """Skips for a missing system part, except under CI, where it fails (see the test module)."""
    if "CI" in os.environ:
        pytest.fail(f"{what} (CI needs it: .ci/run installs it where apt-get works)")
    pytest.skip(what)


@pytest.fixture(scope="session")
def chromium() -> str:
    """The path of Debian's Chromium (``PI2LAB_CHROMIUM`` overrides the search)."""
    path = os.environ.get("PI2LAB_CHROMIUM") or shutil.which("chromium")
    if not path:
        _needed(f"no chromium on PATH for the browser test: {INSTALL}")
    return path


@pytest.fixture(scope="session")
def playwright_api():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _needed("playwright is not installed: pip install -e '.[dev]'")
    with sync_playwright() as api:
        yield api


@pytest.fixture(scope="module")
def browser(playwright_api, chromium):
    browser = playwright_api.chromium.launch(
        executable_path=chromium, args=["--disable-dev-shm-usage", "--disable-gpu"]
    )
    yield browser
    browser.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """The folder the notebooks' screenshots go to: ``PI2LAB_SCREENSHOTS``, else
    ``<temp>/pi2lab-screenshots``; named at the end of the run."""
    named = os.environ.get("PI2LAB_SCREENSHOTS")
    folder = Path(named) if named else Path(tempfile.gettempdir()) / "pi2lab-screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def record_screenshot(path: Path) -> None:
    _screenshots.append(path)


def record_run(line: str) -> None:
    """A line for the end of the run: a notebook, its wall time, what was checked."""
    _runs.append(line)


def pytest_terminal_summary(terminalreporter):
    if _runs or _screenshots:
        terminalreporter.section("notebooks in JupyterLab")
    for line in _runs:
        terminalreporter.write_line(line)
    if _screenshots:
        folder = _screenshots[0].parent
        terminalreporter.write_line(f"screenshots of {len(_screenshots)} notebooks: {folder}")


@dataclass(frozen=True)
class Lab:
    """A running JupyterLab: ``url`` without a trailing slash, its ``token``, and the folder
    it serves (a copy of ``notebooks/``)."""

    url: str
    token: str
    root: Path
    process: subprocess.Popen
    log: Path

    def api(self, method: str, path: str):
        request = urllib.request.Request(
            f"{self.url}{path}",
            method=method,
            headers={"Authorization": f"token {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=30) as r:
            body = r.read()
        return json.loads(body) if body else None

    def shut_down_kernels(self) -> None:
        """Deletes every session and kernel (a kernel shuts down cleanly: its temporary
        folders go with it)."""
        for s in self.api("GET", "/api/sessions"):
            self.api("DELETE", f"/api/sessions/{s['id']}")
        for k in self.api("GET", "/api/kernels"):
            self.api("DELETE", f"/api/kernels/{k['id']}")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _settings(folder: Path) -> None:
    for name, values in SETTINGS.items():
        path = folder / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


@pytest.fixture(scope="module")
def lab(tmp_path_factory, chromium, playwright_api):
    """JupyterLab over a temporary copy of the notebooks; shut down with its kernels after."""
    base = tmp_path_factory.mktemp("lab")
    root = base / "notebooks"
    shutil.copytree(NOTEBOOKS, root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    for name in ("settings", "workspaces", "runtime", "config", "ipython", "tmp"):
        (base / name).mkdir()
    _settings(base / "settings")
    port, token = _free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "CI": "1",  # the notebooks' smoke mode, in the server and so in every kernel
        "JUPYTERLAB_SETTINGS_DIR": str(base / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(base / "workspaces"),
        "JUPYTER_RUNTIME_DIR": str(base / "runtime"),
        "JUPYTER_CONFIG_DIR": str(base / "config"),
        "IPYTHONDIR": str(base / "ipython"),
        "TMPDIR": str(base / "tmp"),
    }
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--allow-root",  # CI runs as root
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.terminals_enabled=False",
        "--LabApp.extension_manager=readonly",
        "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: kernel and cell state
    ]
    log = base / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            cmd, env=env, cwd=base, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Lab(f"http://127.0.0.1:{port}", token, root, process, log)
    try:
        _wait_until_up(server)
        yield server
    finally:
        _stop(server)


def _wait_until_up(server: Lab) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"JupyterLab exited with {server.process.returncode}:\n{server.log_tail()}")
        with contextlib.suppress(OSError, urllib.error.URLError):
            server.api("GET", "/api/status")
            return
        time.sleep(0.5)
    pytest.fail(f"JupyterLab did not answer within {SERVER_START_S} s:\n{server.log_tail()}")


def _stop(server: Lab) -> None:
    """Shuts the kernels down through the API, then the server; kills whatever is left (the
    kernels run in sessions of their own, so the server's process group does not hold them)."""
    try:
        family = psutil.Process(server.process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    with contextlib.suppress(Exception):
        server.shut_down_kernels()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.process.pid, signal.SIGTERM)
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait()
    _, alive = psutil.wait_procs(family, timeout=10)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
