"""The dashboard's own figures: pure functions from ``kvmpt.review.claims.evaluate`` results
(and summary tables) to ``plotly.graph_objects.Figure``.

:func:`hook_cost_curve` is the dashboard's second figure (the DELETE cost of the chosen
design's slot hook over slot sizes); :func:`variant_tables` is the static companion of the
notebook's "try your own design" cell: one summary table per committed design variant,
switched by buttons, so the HTML export can still compare them without a kernel.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import plotly.graph_objects as go

from kvmpt.constants import GIB, PAGE_SHIFT
from kvmpt.review.figures.layout import fit, wrap

__all__ = ["hook_cost_curve", "hook_cost_series", "hook_cost_title", "variant_tables"]

_GIB_PAGES = GIB >> PAGE_SHIFT


def hook_cost_title(res: Mapping[str, Any]) -> str:
    h = res["here"]
    v, bad, total = res["verdict"]
    size = res["values"]["slot_gib"]
    return wrap(f"DELETE of a {size:,} GiB slot: slot hook {h['us']:,.0f} µs, longest "
                f"mmu_lock hold {h['hold_us']:,.0f} µs; "
                f"ptable lock <b>{res['design'].kvmgt_lock}: {v}</b> "
                f"({bad:,} of {total:,} states fail)")


def hook_cost_series(res: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The data of :func:`hook_cost_curve`'s traces, in their order, as ``{x, y, name}``:
    what a redraw copies into the FigureWidget (building a Figure costs more than the
    experiment it shows once the experiment is cached)."""
    name = res["design"].name
    curve = res["curve"]
    mine = [r for r in curve if r["design"] == name]
    prop = [r for r in curve if r["design"] == res["proposal"]]
    h = res["here"]
    return [
        {"x": [r["npages"] / _GIB_PAGES for r in mine], "y": [r["us"] for r in mine],
         "name": "this design: slot hook time"},
        {"x": [r["npages"] / _GIB_PAGES for r in prop], "y": [r["us"] for r in prop],
         "name": "proposal (no kernel): walk ptable"},
        {"x": [r["npages"] / _GIB_PAGES for r in mine],
         "y": [max(r["hold_us"], 1e-3) for r in mine],
         "name": "longest mmu_lock hold (0 drawn at 1 ns)"},
        {"x": [h["npages"] / _GIB_PAGES], "y": [h["us"]], "name": "chosen slot size"},
    ]


_STYLES = (dict(mode="lines+markers", line=dict(color="#E45756")),
           dict(mode="lines+markers", line=dict(color="#54A24B", dash="dot")),
           dict(mode="lines+markers", line=dict(color="#4C78A8")),
           dict(mode="markers", marker=dict(size=16, symbol="x", color="#333")))


def hook_cost_curve(res: Mapping[str, Any]) -> go.Figure:
    """One ``evaluate`` result: the slot hook's time and its longest ``mmu_lock`` hold over
    the deleted slot's size, the ptable-walk proposal (dotted), the chosen size marked.
    The traces keep one order whatever the design (:func:`hook_cost_series`), so a
    FigureWidget updates in place."""
    fig = go.Figure([go.Scatter(**series, **style)
                     for series, style in zip(hook_cost_series(res), _STYLES)])
    fig.update_layout(
        title=dict(text=hook_cost_title(res), font=dict(size=12)),
        xaxis=dict(title="deleted slot (GiB, log)", type="log"),
        yaxis=dict(title="µs (kvmpt.workload.costs, 3 GHz)", type="log"),
        template="plotly_white")
    return fit(fig, height=430, left=70, bottom=90, title_size=12)


def variant_tables(tables: Mapping[str, tuple[Sequence[str], Sequence[Sequence[str]]]],
                   title: str = "Try your own design: every effect") -> go.Figure:
    """``{variant label: (columns, rows)}`` (``claims.summary_table`` output): one
    ``go.Table`` per variant, the first shown, a button per variant."""
    if not tables:
        raise ValueError("variant_tables: no variant to show")
    fig = go.Figure()
    labels = list(tables)
    for k, (cols, rows) in enumerate(tables.values()):
        fig.add_trace(go.Table(
            header=dict(values=[f"<b>{c}</b>" for c in cols], align="left",
                        fill_color="#EEEEEE"),
            cells=dict(values=[list(col) for col in zip(*rows)], align="left"),
            columnwidth=[3] + [2] * (len(cols) - 1), visible=k == 0))
    buttons = [dict(label=lab, method="update",
                    args=[{"visible": [j == k for j in range(len(labels))]},
                          {"title.text": f"{title}: <b>{lab}</b>"}])
               for k, lab in enumerate(labels)]
    n_rows = len(next(iter(tables.values()))[1])
    fig.update_layout(
        title=dict(text=f"{title}: <b>{labels[0]}</b>", font=dict(size=13)),
        updatemenus=[dict(type="buttons", direction="right", buttons=buttons, x=0,
                          xanchor="left", showactive=True)],
        template="plotly_white")
    return fit(fig, height=120 + 28 * n_rows, left=10, right=10, bottom=10, legend_below=False)
