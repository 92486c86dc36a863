"""The figure-fit check itself can fail: a figure whose title, legend or width overflows is
reported, a figure that fits is not."""
from __future__ import annotations

import pytest

from .conftest import needs_chromium
from .figcheck import check_figures, screenshot_dir

pytestmark = [pytest.mark.browser, needs_chromium]


def _page(tmp_path, figs) -> str:
    import plotly.graph_objects as go  # noqa: F401
    parts = [f.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, f in enumerate(figs)]
    path = tmp_path / "figs.html"
    path.write_text("<html><body>" + "".join(parts) + "</body></html>", encoding="utf-8")
    return path.as_uri()


def test_overflowing_figures_are_reported(tmp_path, browser_context):
    import plotly.graph_objects as go
    bar = go.Bar(x=["v6.5", "v6.6"], y=[3, 1], name="a legend entry")
    fits = go.Figure(bar, layout=dict(title="DELETE of a slot", height=300,
                                      margin=dict(l=60, r=20, t=60, b=50)))
    long_title = go.Figure(bar, layout=dict(
        title="kvm_set_memslot() step by step: " + "a title far too long for its figure " * 4,
        height=300))
    legend_out = go.Figure(bar, layout=dict(
        title="legend", height=300, showlegend=True, margin=dict(autoexpand=False, r=20),
        legend=dict(x=1.3, xanchor="left", title="designs: flush / remove / reject")))
    too_wide = go.Figure(bar, layout=dict(title="fixed width", width=1500, height=300))
    clipped = go.Figure(go.Scatter(x=[1, 2, 3], y=[1, 1, 1], mode="markers+text",
                                   text=["commit", "commit", "free_metadata"],
                                   textposition="middle right"),
                        layout=dict(title="a label cut by the plot area", height=300,
                                    xaxis=dict(range=[0.5, 3.2])))
    page = browser_context.new_page()
    page.set_viewport_size({"width": 900, "height": 800})
    page.goto(_page(tmp_path, [fits, long_title, legend_out, too_wide, clipped]))
    page.wait_for_selector(".js-plotly-plot .main-svg")
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot .gtitle')"
                           ".length === 5")
    out = screenshot_dir("figcheck-selftest")
    n, problems = check_figures(page, out, "selftest-")
    assert n == 5 and len(list(out.glob("*.png"))) == 5
    by_fig = {k: [p for p in problems if p.startswith(f"selftest-fig0{k}")] for k in range(1, 6)}
    assert by_fig[1] == [], by_fig[1]
    assert any('title "kvm_set_memslot()' in p and "overflows right" in p for p in by_fig[2])
    assert any(p.split(": ", 1)[1].startswith("legend") for p in by_fig[3]), by_fig[3]
    assert any("figure is 1500 px wide, the page 900 px" in p for p in by_fig[4]), by_fig[4]
    assert len(by_fig[5]) == 1 and by_fig[5][0].endswith(
        '\'a label cut by the plot area\'): text "free_metadata" is cut by its plot area'), by_fig[5]
