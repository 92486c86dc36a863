"""JupyterLab end to end: open the design notebook, run all cells, click a design toggle
of the dashboard and see its figure redraw.

Starts ``jupyter lab`` on 127.0.0.1 (a free port, a random token, ``--allow-root``) over
a temporary copy of the notebook, drives it with headless Debian chromium through
Playwright, and stops the server by its pid.  The time from the click to the redrawn
title is printed (``-s``) and must stay under a generous bound on a loaded CI machine;
``KVMPT_REDRAW_BUDGET`` (seconds, default 5) sets it.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import ROOT, needs_chromium

pytestmark = [pytest.mark.browser, pytest.mark.slow, needs_chromium]
NB = "01_page_track_hooks.ipynb"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def lab(tmp_path):
    pytest.importorskip("jupyterlab")
    work = tmp_path / "nb"
    work.mkdir()
    shutil.copy(ROOT / "notebooks" / NB, work / NB)
    settings = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ)
    for k in ("KVMPT_REPORT", "PLOTLY_RENDERER"):
        env.pop(k, None)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["JUPYTERLAB_SETTINGS_DIR"] = str(tmp_path / "settings")
    env["JUPYTERLAB_WORKSPACES_DIR"] = str(tmp_path / "workspaces")
    env.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".numba_cache"))
    log = open(tmp_path / "lab.log", "w")
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
                                       + (tmp_path / "lab.log").read_text()[-2000:])
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


#: the dashboard's FigureWidgets live inside its ipywidgets VBox
DASH_TITLES = ".widget-vbox .js-plotly-plot .gtitle"


def _titles(page) -> list[str]:
    return page.evaluate("(sel) => Array.from(document.querySelectorAll(sel))"
                         ".map(e => e.textContent)", DASH_TITLES)


def _toggle_and_time(page, label: str, expect: str, timeout: float = 30_000) -> float:
    button = page.locator(".widget-toggle-buttons button", has_text=label).first
    t0 = time.perf_counter()
    button.click()
    page.wait_for_function(
        "([sel, want]) => Array.from(document.querySelectorAll(sel))"
        ".some(e => e.textContent.includes(want))", arg=[DASH_TITLES, expect], timeout=timeout)
    return time.perf_counter() - t0


def test_run_all_then_toggle_redraws(lab, browser_context):
    base, token = lab
    page = browser_context.new_page()
    page.goto(f"{base}/lab/tree/{NB}?token={token}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.locator(".jp-StatusBar-TextItem", has_text="| Idle").first.wait_for(timeout=90_000)
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()

    # the dashboard is built in the last section; its figure titles name the design
    page.locator(".widget-toggle-buttons button", has_text="remove (v6.6)").first \
        .wait_for(timeout=180_000)
    page.wait_for_function(
        "(sel) => Array.from(document.querySelectorAll(sel))"
        ".some(e => e.textContent.includes('design v6.5:'))", arg=DASH_TITLES, timeout=60_000)
    page.locator(".jp-StatusBar-TextItem", has_text="| Idle").first.wait_for(timeout=180_000)
    errors = page.locator(".jp-RenderedText[data-mime-type='application/vnd.jupyter.error']")
    assert errors.count() == 0, errors.first.text_content()[:2000]
    assert page.locator(".js-plotly-plot .main-svg").count() >= 9

    before = _titles(page)
    cold = _toggle_and_time(page, "remove (v6.6)", "design remove/allow-move/none/drop")
    after = _titles(page)
    assert before != after
    assert any("design remove/allow-move/none/drop" in t for t in after)
    assert page.locator(".widget-toggle-buttons button.mod-active",
                        has_text="remove (v6.6)").count() == 1
    warm = _toggle_and_time(page, "flush (v6.5)", "design v6.5:")
    warm2 = _toggle_and_time(page, "remove (v6.6)", "design remove/allow-move/none/drop")
    print(f"\nJupyterLab dashboard redraw, click to new title: first {cold:.3f} s, "
          f"warm {warm:.3f} s / {warm2:.3f} s")
    budget = float(os.environ.get("KVMPT_REDRAW_BUDGET", "5"))
    assert min(warm, warm2) < budget
