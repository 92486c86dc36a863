"""Figures for what the slot hooks cost, and the summary table.

Pure functions from :func:`kvmpt.review.claims.price_rows` rows (and summary rows) to
``plotly.graph_objects.Figure``; buttons (``updatemenus``) switch the metric.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import plotly.graph_objects as go

from kvmpt.review.figures.layout import fit

__all__ = ["METRICS", "hook_cost_figure", "summary_table_figure"]

#: metric key -> (button label, y-axis title, log axis?)
METRICS: dict[str, tuple[str, str, bool]] = {
    "us": ("hook time (µs)", "slot hook time per DELETE (µs at 3 GHz, kvmpt.workload.costs)", True),
    "hold_us": ("longest mmu_lock hold (µs)",
                "longest single mmu_lock hold (µs; 0 is not drawn on a log axis)", True),
    "probes": ("ptable lookups", "ptable lookups (probes) per DELETE", True),
    "mmu_lock_max_hold": ("longest mmu_lock hold",
                          "longest single mmu_lock hold (primitive ops)", True),
    "table_lock_hold": ("table-lock hold", "ops done holding KVMGT's table lock", True),
    "wasted_updates": ("wasted updates",
                       "count + lpage updates into metadata freed at S7", False),
    "wasted_cycles": ("wasted cycles", "cycles of updates into metadata freed at S7", False),
}

_DESIGN_COLOURS = ["#E45756", "#F58518", "#4C78A8", "#54A24B", "#B279A2", "#72B7B2"]
_DASHES = ["solid", "dash", "dot", "dashdot", "longdash"]
GIB_PAGES = 1 << 18


def hook_cost_figure(rows: Sequence[Mapping[str, Any]], metric: str | None = None,
                     x: str = "npages") -> go.Figure:
    """The chosen metric of one DELETE's slot hook, one line per design and per value of
    the other parameter, against ``x``: ``"npages"`` (the deleted slot's size, GiB, log
    scale up to 1 TiB; lines per tracked count) or ``"tracked"`` (shadowed pages in it,
    log scale; lines per slot size).  Points scaled from a smaller exact run
    (``exact=False``) are open markers.  Buttons switch the metric."""
    if x not in ("npages", "tracked"):
        raise ValueError(f"x must be 'npages' or 'tracked', got {x!r}")
    other = "tracked" if x == "npages" else "npages"
    metrics = METRICS
    keys = [k for k in metrics if k in rows[0]]
    metric = metric or keys[0]
    designs = list(dict.fromkeys(r["design"] for r in rows))
    others = sorted({r[other] for r in rows})
    fig = go.Figure()
    groups = []

    def xval(r):
        return r["npages"] / GIB_PAGES if x == "npages" else r["tracked"]

    def other_label(v):
        return f"{v:,} tracked" if other == "tracked" else _size(v)

    for i, d in enumerate(designs):
        for j, o in enumerate(others):
            g = sorted((r for r in rows if r["design"] == d and r[other] == o), key=xval)
            if not g:
                continue
            groups.append(g)
            proposal = d.startswith("proposal")
            fig.add_trace(go.Scatter(
                x=[xval(r) for r in g], y=[r[metric] for r in g],
                mode="lines+markers", name=f"{d} — {other_label(o)}",
                legendgroup=d,
                line=dict(color=_DESIGN_COLOURS[i % len(_DESIGN_COLOURS)],
                          dash="dot" if proposal else _DASHES[j % len(_DASHES)],
                          width=3 if proposal else 2),
                marker=dict(symbol=["circle" if r["exact"] else "circle-open" for r in g],
                            size=8),
                customdata=[[_size(r["npages"]), r["tracked"], "model, gfn by gfn"
                             if r["exact"] else "scaled from a smaller exact run"] for r in g],
                hovertemplate=(f"<b>{d}</b><br>slot %{{customdata[0]}}"
                               "<br>%{customdata[1]:,} tracked gfns<br>%{y:,.1f}"
                               "<br><i>%{customdata[2]}</i><extra></extra>")))
    buttons = []
    for k in keys:
        label, ytitle, log = metrics[k]
        buttons.append(dict(label=label, method="update",
                            args=[{"y": [[r[k] for r in g] for g in groups]},
                                  {"yaxis.title.text": ytitle,
                                   "yaxis.type": "log" if log else "linear"}]))
    label, ytitle, log = metrics[metric]
    if x == "npages":
        xaxis = dict(title="size of the deleted slot (log scale)", type="log",
                     tickvals=[1 / 16, 1, 16, 256, 1024],
                     ticktext=["64 MiB", "1 GiB", "16 GiB", "256 GiB", "1 TiB"])
        what = "vs the deleted slot's size"
    else:
        xaxis = dict(title="shadowed pages in the deleted slot (log scale)", type="log")
        what = "vs the number of shadowed pages in it"
    fig.update_layout(
        title=dict(text=f"KVMGT's slot hook on one memslot DELETE, {what} "
                        "(dotted: a proposal, not in any kernel)", font=dict(size=13),
                   y=0.98, yanchor="top"),
        xaxis=xaxis, yaxis=dict(title=ytitle, type="log" if log else "linear"),
        template="plotly_white",
        updatemenus=[dict(type="buttons", direction="right", x=0, xanchor="left",
                          buttons=buttons, showactive=True, font=dict(size=10),
                          active=keys.index(metric) if metric in keys else 0)])
    return fit(fig, height=640, left=70, bottom=150)


def _size(npages: int) -> str:
    b = npages << 12
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20)):
        if b >= 1 << shift:
            v = b / (1 << shift)
            return f"{v:g} {unit}"
    return f"{b >> 10} KiB"


def summary_table_figure(columns: Sequence[str], rows: Sequence[Sequence[Any]],
                         title: str = "Each design × each effect") -> go.Figure:
    """A plotly table (renders in the HTML export; the text report prints the same rows)."""
    cols = list(zip(*rows)) if rows else [[] for _ in columns]
    fig = go.Figure(go.Table(
        header=dict(values=[f"<b>{c}</b>" for c in columns], fill_color="#e8eef7",
                    align="left", font=dict(size=12)),
        cells=dict(values=[[("" if v is None else v) for v in c] for c in cols],
                   align="left", font=dict(size=12), height=26)))
    fig.update_layout(title=dict(text=title), template="plotly_white")
    return fit(fig, height=110 + 30 * (len(rows) + 1), left=10, right=10, bottom=10,
               legend_below=False)
