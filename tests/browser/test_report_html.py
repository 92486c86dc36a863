"""``kvmpt report``: the standalone HTML in a real browser, offline, and the text summary.

The report is built once per session (``report_dir``, about 10 s).  The browser tests open
the page in headless Debian chromium with every non-``file:`` request aborted, check that
every figure rendered, click an updatemenu button and check the figure changed.
"""
from __future__ import annotations

import json
import re

import pytest

from .conftest import needs_chromium

NB = "01_page_track_hooks"
pytestmark = pytest.mark.slow


def _figure_cells(nb_path) -> int:
    """Plotly figures the notebook draws: one per ``.show()`` call in a code cell."""
    nb = json.loads(nb_path.read_text())
    return sum("".join(c["source"]).count(".show()") for c in nb["cells"]
               if c["cell_type"] == "code")


def test_report_files(report_dir):
    html = (report_dir / f"{NB}.html").read_text(encoding="utf-8")
    assert len(re.findall(r"plotly\.js v\d", html)) == 1, "plotly.js must be embedded once"
    assert "application/vnd.jupyter.widget-state+json" not in html, "widget state in HTML"
    assert "anywidget" not in html and "FigureWidget" not in html.split("</style>")[-1] \
        .replace("go.FigureWidget", ""), "FigureWidget state in the HTML"
    assert not re.search(r'<script[^>]*\bsrc="https?://', html), "a CDN script is left"
    assert len(html) < 8_000_000, f"HTML is {len(html):,} bytes"


def test_text_summary_pastes_into_a_mail(report_dir):
    text = (report_dir / "summary.txt").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert max(len(ln) for ln in lines) < 80
    assert all(ln == ln.rstrip() for ln in lines), "trailing blanks"
    assert "6. Summary: each design × each effect" in text
    for effect in ("failed MOVE: missed", "MOVE with KVMGT", "track_write race"):
        assert effect in text
    assert "use-after-free" in text and "-EINVAL" in text
    assert text.isascii() or set(c for c in text if not c.isascii()) <= {"×", "—", "µ"}


def test_report_cli_text_only(tmp_path, capsys):
    """``kvmpt report --format text --out DIR`` prints the summary and writes no HTML."""
    from kvmpt.cli import main
    assert main(["report", "--format", "text", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "track_write race" in out
    assert not list(tmp_path.glob("*.html"))
    assert (tmp_path / "summary.txt").read_text(encoding="utf-8") == out


@pytest.mark.browser
@needs_chromium
def test_html_renders_offline_and_buttons_toggle(report_dir, browser_context):
    from kvmpt.review.report import find_notebooks
    expected = _figure_cells(next(p for p in find_notebooks() if p.stem == NB))
    page = browser_context.new_page()
    requests, errors = [], []

    def block(route):
        requests.append(route.request.url)
        route.abort()
    page.route(re.compile(r"^(?!file:).*"), block)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto((report_dir / f"{NB}.html").as_uri())
    page.wait_for_selector(".plotly-graph-div .main-svg", timeout=60_000)
    figs = page.locator(".plotly-graph-div")
    assert figs.count() == expected
    for i in range(expected):
        fig = figs.nth(i)
        assert fig.locator(".main-svg").count() >= 1, f"figure {i} did not render"
        n = page.evaluate("(el) => el.data.length", fig.element_handle())
        assert n > 0, f"figure {i} has no traces"
    assert not requests, f"the page tried the network: {requests[:3]}"
    assert not errors, f"JavaScript errors: {errors[:3]}"

    # The failed-MOVE figure: switch from v6.5 to "remove hook, MOVE allowed".
    fig = page.locator(".plotly-graph-div", has=page.locator(
        "g.updatemenu-button", has_text="remove hook, MOVE allowed")).first
    handle = fig.element_handle()
    before = page.evaluate("(el) => [el.data.map(t => t.visible), el.layout.title.text]",
                           handle)
    fig.locator("g.updatemenu-button", has_text="remove hook, MOVE allowed").click()
    page.wait_for_function("(el) => el.layout.title.text.includes('remove hook')", arg=handle,
                           timeout=10_000)
    after = page.evaluate("(el) => [el.data.map(t => t.visible), el.layout.title.text]",
                          handle)
    assert before[0] != after[0], "the button did not change which traces are visible"
    assert "0 of 4,000" not in after[1] and "remove hook" in after[1]
    assert "v6.5" in before[1]
    assert "remove hook" in fig.locator(".gtitle").text_content()

    # The cost figure: a metric button restyles every trace's y.
    cost = page.locator(".plotly-graph-div", has=page.locator(
        "g.updatemenu-button", has_text="wasted updates")).first
    ch = cost.element_handle()
    y0 = page.evaluate("(el) => JSON.stringify(el.data.map(t => Array.from(t.y)))", ch)
    cost.locator("g.updatemenu-button", has_text="wasted updates").click()
    page.wait_for_function("(el) => el.layout.yaxis.title.text.includes('freed')", arg=ch,
                           timeout=10_000)
    y1 = page.evaluate("(el) => JSON.stringify(el.data.map(t => Array.from(t.y)))", ch)
    assert y0 != y1


@pytest.mark.browser
@needs_chromium
@pytest.mark.parametrize("width", [1280])
def test_html_figures_fit_the_page(report_dir, browser_context, width):
    """Every figure of every report page at a 1280 px window: a PNG of each (build/screenshots/
    html-1280/), and no title, legend, tick, annotation or button text outside its figure."""
    from .figcheck import check_figures, screenshot_dir
    out = screenshot_dir(f"html-{width}")
    page = browser_context.new_page()
    page.set_viewport_size({"width": width, "height": 1000})
    problems, seen = [], 0
    for html in sorted(report_dir.glob("*.html")):
        page.goto(html.as_uri())
        page.wait_for_selector(".plotly-graph-div .main-svg", timeout=60_000)
        page.wait_for_timeout(500)                  # responsive figures settle to the page
        n, found = check_figures(page, out, f"{html.stem}-")
        seen += n
        problems += found
    assert seen >= 10 and len(list(out.glob("*.png"))) == seen
    assert not problems, "\n".join(problems)
