"""JupyterLab end to end: open the design notebook, run all cells, check every figure fits
its cell at 1000 px (file browser closed: with it open the cell is only ~570 px, narrower
than the figures are made for) and then 1600 px, click a design toggle of the dashboard and see it redraw.

Starts ``jupyter lab`` over a temporary copy of the notebook and drives it with headless
Debian chromium (:mod:`tests.browser.labdrive`).  Every figure is saved as a PNG
(``build/screenshots/lab-1600/``, ``lab-1000/``) and measured (:mod:`tests.browser.figcheck`):
no text outside its figure, no figure wider than its cell.  The click-to-redraw time is
printed (``-s``), not asserted: ``benchmarks/dashboard_redraw.py`` holds the goal.
"""
from __future__ import annotations

import pytest

from . import labdrive
from .conftest import needs_chromium
from .figcheck import check_figures, screenshot_dir

pytestmark = [pytest.mark.browser, pytest.mark.slow, needs_chromium]


@pytest.fixture()
def lab(tmp_path):
    pytest.importorskip("jupyterlab")
    with labdrive.lab_server(tmp_path) as server:
        yield server


def _render_all(page) -> None:
    """Scroll every output into view once: Lab's plotly renderer draws a figure when its
    output is first shown."""
    outputs = page.locator(".jp-OutputArea-output")
    for i in range(outputs.count()):
        outputs.nth(i).scroll_into_view_if_needed()
        page.wait_for_timeout(100)


def _collapse_left_sidebar(page) -> None:
    """Close the file browser (click its current tab): at 1000 px it takes 280 px."""
    tab = page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current")
    if tab.count():
        tab.first.click()
        page.wait_for_function("() => !document.querySelector("
                               "'.jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current')")


def _fit(page, width: int) -> tuple[int, int, list[str]]:
    page.set_viewport_size({"width": width, "height": 1000})
    page.wait_for_timeout(1500)                      # Lab relayouts, plotly resizes
    _render_all(page)
    out = screenshot_dir(f"lab-{width}")
    n, problems = check_figures(page, out, "nb-",
                                ".jp-Notebook .js-plotly-plot:not(.widget-vbox .js-plotly-plot)")
    nd, dash = check_figures(page, out, "dashboard-", labdrive.DASH_FIGS)
    return n, nd, problems + dash


def test_run_all_then_toggle_redraws(lab, browser_context):
    base, token = lab
    page = browser_context.new_page()
    # 1000 px first: the dashboard's FigureWidgets take their width when first drawn and do
    # not follow a later window resize (plotly's anywidget FigureWidget)
    page.set_viewport_size({"width": 1000, "height": 1000})
    labdrive.run_all(page, base, token, before=_collapse_left_sidebar)
    errors = page.locator(".jp-RenderedText[data-mime-type='application/vnd.jupyter.error']")
    assert errors.count() == 0, errors.first.text_content()[:2000]
    assert page.locator(".js-plotly-plot .main-svg").count() >= 9

    before = labdrive.titles(page)
    cold = labdrive.toggle_and_time(page, "remove (v6.6)", "design remove/allow-move/none/drop")
    after = labdrive.titles(page)
    assert before != after
    assert any("design remove/allow-move/none/drop" in t for t in after)
    assert page.locator(".widget-toggle-buttons button.mod-active",
                        has_text="remove (v6.6)").count() == 1
    warm = labdrive.toggle_and_time(page, "flush (v6.5)", "design v6.5:")
    warm2 = labdrive.toggle_and_time(page, "remove (v6.6)", "design remove/allow-move/none/drop")
    print(f"\nJupyterLab dashboard redraw, click to new title: first {cold:.3f} s, "
          f"warm {warm:.3f} s / {warm2:.3f} s")

    problems = []
    for width in (1000, 1600):
        n, nd, found = _fit(page, width)
        assert n >= 9 and nd == 2, (width, n, nd)          # the notebook's, the dashboard's
        problems += [f"{width} px: {p}" for p in found]
    assert not problems, "\n".join(problems)
