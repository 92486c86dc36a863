"""Driving JupyterLab with Playwright: start a server, Run All, click a dashboard toggle.

Shared by ``tests/browser/test_jupyterlab.py`` and ``benchmarks/dashboard_redraw.py`` so the
benchmark measures the click-to-redraw time exactly as the test sees it: from the click on
a ``ToggleButtons`` button to the dashboard figure title that names the new design.

The server runs on 127.0.0.1 (a free port, a random token, ``--allow-root``) over a
temporary copy of the notebook; it is stopped by its pid (SIGTERM, then SIGKILL of its own
process group).  Headless Debian chromium (``/usr/bin/chromium``), no Playwright browser
download.
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
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("KVMPT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"]
NB = "01_page_track_hooks.ipynb"
#: the dashboard's FigureWidgets live inside its ipywidgets VBox
DASH_FIGS = ".widget-vbox .js-plotly-plot"
DASH_TITLES = DASH_FIGS + " .gtitle"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def lab_server(tmp: Path, notebook: str = NB):
    """``(base_url, token)`` of a JupyterLab serving a copy of ``notebooks/<notebook>``."""
    work = tmp / "nb"
    work.mkdir(parents=True)
    shutil.copy(ROOT / "notebooks" / notebook, work / notebook)
    settings = tmp / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    # every cell stays in the page (Lab 4 otherwise detaches the cells scrolled out of
    # view), so every figure can be measured
    nb_settings = tmp / "settings" / "@jupyterlab" / "notebook-extension"
    nb_settings.mkdir(parents=True)
    (nb_settings / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ)
    for k in ("KVMPT_REPORT", "PLOTLY_RENDERER"):
        env.pop(k, None)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["JUPYTERLAB_SETTINGS_DIR"] = str(tmp / "settings")
    env["JUPYTERLAB_WORKSPACES_DIR"] = str(tmp / "workspaces")
    env.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".numba_cache"))
    log_path = tmp / "lab.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1",
         f"--port={port}", f"--ServerApp.token={token}", f"--ServerApp.root_dir={work}",
         "--ServerApp.port_retries=0", "--allow-root"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("jupyter lab did not start:\n"
                                       + log_path.read_text()[-2000:])
                time.sleep(0.3)
        yield base, token
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)         # lab shuts its kernels down
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # our own session only
                proc.wait(timeout=10)
        log.close()


@contextlib.contextmanager
def browser(width: int = 1300, height: int = 1000):
    """A persistent headless Chromium context on /usr/bin/chromium."""
    from playwright.sync_api import sync_playwright
    profile = tempfile.mkdtemp(prefix="kvmpt-chromium-")
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": width, "height": height})
        try:
            yield ctx
        finally:
            ctx.close()
            shutil.rmtree(profile, ignore_errors=True)


def run_all(page, base: str, token: str, notebook: str = NB, before=None) -> None:
    """Open the notebook, (call ``before(page)``,) Run All Cells, wait for the dashboard to
    show design v6.5 and the kernel to go idle."""
    page.goto(f"{base}/lab/tree/{notebook}?token={token}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    if before is not None:
        before(page)
    page.locator(".jp-StatusBar-TextItem", has_text="| Idle").first.wait_for(timeout=90_000)
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    # the dashboard is built in the last section; its figure titles name the design
    page.locator(".widget-toggle-buttons button", has_text="remove (v6.6)").first \
        .wait_for(timeout=180_000)
    page.wait_for_function(
        "(sel) => Array.from(document.querySelectorAll(sel))"
        ".some(e => e.textContent.includes('design v6.5:'))", arg=DASH_TITLES, timeout=180_000)
    page.locator(".jp-StatusBar-TextItem", has_text="| Idle").first.wait_for(timeout=180_000)


def titles(page) -> list[str]:
    return page.evaluate("(sel) => Array.from(document.querySelectorAll(sel))"
                         ".map(e => e.textContent)", DASH_TITLES)


def toggle_and_time(page, label: str, expect: str, timeout: float = 30_000) -> float:
    """Click the toggle button ``label``; seconds until a dashboard title contains ``expect``."""
    button = page.locator(".widget-toggle-buttons button", has_text=label).first
    t0 = time.perf_counter()
    button.click()
    page.wait_for_function(
        "([sel, want]) => Array.from(document.querySelectorAll(sel))"
        ".some(e => e.textContent.includes(want))", arg=[DASH_TITLES, expect], timeout=timeout)
    return time.perf_counter() - t0
