"""Figures size to their cell (kvmpt.review.figures.layout): no fixed width, wrapped titles,
a top margin that holds the title and the design buttons.  The browser tests measure the
rendered text; these check the layout each figure function returns."""
from __future__ import annotations

import re

import plotly.graph_objects as go
import pytest

from kvmpt.review.figures.layout import TITLE_CHARS, fit, title_lines, wrap


def _visible_lines(text):
    return [re.sub(r"<[^>]+>", "", ln) for ln in re.split(r"<br\s*/?>", text)]


def test_wrap_breaks_between_words_and_keeps_tags():
    t = "kvm_set_memslot() step by step, design <b>v6.5</b> — " + "word " * 40
    w = wrap(t, 50)
    assert max(map(len, _visible_lines(w))) <= 50
    assert w.replace("<br>", " ").split() == t.split()
    assert "<b>v6.5</b>" in w
    bold = wrap("x " * 45 + "lock <b>none: use-after-free</b> (4 states)", 100)
    assert "<b>none: use-after-free</b>" in bold         # a bold span is never split
    assert wrap("a<br>b") == "a<br>b" and wrap(w, 50) == w          # idempotent
    assert title_lines(w) == w.count("<br>") + 1


def test_fit_drops_the_width_and_makes_room_for_title_and_buttons():
    long = "MOVE fails in prepare → -ENOMEM; design <b>v6.5</b>: " + "x " * 120
    fig = go.Figure(go.Bar(x=[1], y=[1]), layout=dict(title=long, width=1100))
    fig.update_layout(updatemenus=[dict(type="buttons", buttons=[
        dict(label="a", method="update", args=[{"visible": [True]}, {"title.text": long * 2}]),
        dict(label="b", method="update", args=[{"visible": [True]}, {}])])])
    fit(fig, height=400)
    lay = fig.layout
    assert lay.width is None and lay.autosize is True and lay.height == 400
    assert max(map(len, _visible_lines(lay.title.text))) <= TITLE_CHARS
    button_title = lay.updatemenus[0].buttons[0].args[1]["title.text"]
    assert max(map(len, _visible_lines(button_title))) <= TITLE_CHARS
    lines = title_lines(button_title)                 # the longest title sets the margin
    assert lay.margin.t >= lines * 19 + 34
    assert lay.title.yref == "container" and lay.title.yanchor == "top"
    assert lay.updatemenus[0].yanchor == "bottom" and lay.updatemenus[0].y == 1
    assert lay.legend.orientation == "h" and lay.legend.yanchor == "bottom"


def _figures():
    """One figure of each kind the notebooks draw, from cheap inputs."""
    from kvmpt import race
    from kvmpt.review import claims
    from kvmpt.review.figures import costs, memslot, race as race_figs, sweep
    from kvmpt.sweep import load_table
    flows = {n: claims.memslot_flow(n, tracked=4) for n in ("v6.5", "v6.6")}
    verdicts = {lk: race.explore(lk) for lk in ("none", "vgpu_lock")}
    table = load_table("small")
    rows = [{"design": d, "npages": n << 18, "tracked": 64, "exact": True, "probes": n,
             "us": 1.0 * n, "hold_us": 2.0 * n} for d in ("v6.5", "v6.6") for n in (1, 16)]
    return {
        "update_timelines": memslot.update_timelines(flows),
        "witness_swimlanes": race_figs.witness_swimlanes(verdicts),
        "hook_cost_figure": costs.hook_cost_figure(rows, metric="us"),
        "summary_table_figure": costs.summary_table_figure(["a", "b"], [(1, 2), (3, 4)]),
        "heatmap": sweep.heatmap(table, "missed_writes", x="churn", y="tracked_gfns"),
    }


@pytest.mark.parametrize("name", ["update_timelines", "witness_swimlanes", "hook_cost_figure",
                                  "summary_table_figure", "heatmap"])
def test_figures_have_no_fixed_width(name):
    fig = _cached()[name]
    assert fig.layout.width is None, f"{name} has a fixed width"
    titles = [fig.layout.title.text or ""] + [
        b.args[1].get("title.text", "") for m in fig.layout.updatemenus or ()
        for b in m.buttons if len(b.args) > 1 and isinstance(b.args[1], dict)]
    for t in titles:
        assert max(map(len, _visible_lines(t))) <= TITLE_CHARS + 10, (name, t)


_CACHE: dict = {}


def _cached():
    if not _CACHE:
        _CACHE.update(_figures())
    return _CACHE
