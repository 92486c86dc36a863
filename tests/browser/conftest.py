"""Shared fixtures for the real-browser tests (headless Debian chromium via Playwright).

No browser is downloaded: Playwright drives /usr/bin/chromium, which ``./dev test`` (and
``.ci/run``) install with apt.  Without it the browser tests skip with that reason.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from .labdrive import CHROMIUM, CHROMIUM_ARGS, ROOT

needs_chromium = pytest.mark.skipif(
    not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)),
    reason=f"{CHROMIUM} not found: install Debian chromium (./dev test does it: "
           "apt-get install chromium); Playwright's own browser download is not used")


@pytest.fixture(scope="session")
def report_dir(tmp_path_factory):
    """``kvmpt report`` (HTML + text) into a temporary directory, once per session."""
    from kvmpt.review.report import build
    out = tmp_path_factory.mktemp("report")
    build(out, ("html", "text"), log=lambda m: None)
    return out


@pytest.fixture()
def browser_context():
    """A fresh persistent Chromium context on /usr/bin/chromium, closed afterwards."""
    sync_api = pytest.importorskip("playwright.sync_api")
    profile = tempfile.mkdtemp(prefix="kvmpt-chromium-")
    with sync_api.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1300, "height": 1000})
        try:
            yield ctx
        finally:
            ctx.close()
            shutil.rmtree(profile, ignore_errors=True)
