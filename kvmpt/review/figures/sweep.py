"""Figures for ``kvmpt.sweep``: a sweep table as heatmaps and faceted line plots.

Pure functions from a sweep table (a :class:`kvmpt.sweep.SweepTable`, a list of row dicts,
a pyarrow Table or a pandas DataFrame) to a ``plotly.graph_objects.Figure``.  Each point is
the mean of a metric over the runs that share it (seeds, and any parameter not on an axis);
failed runs are left out and counted in the hover text.  Heatmaps carry one trace per design
and ``updatemenus`` buttons to switch between them, so a static HTML export can still
toggle designs without a kernel.
"""
from __future__ import annotations

import math
import statistics
from typing import Any, Callable, Iterable, Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = ["heatmap", "lines", "label", "unit", "records", "aggregate", "UNITS", "NAMES"]

#: units of the parameters and metrics kvmpt knows by name; others come from the suffix
UNITS: dict[str, str] = {
    "ram_gib": "GiB", "slot_gib": "GiB", "tracked_gfns": "gfns", "write_rate": "writes/s",
    "duration_s": "s", "move_rate": "MOVEs/s", "prepare_fail_rate": "fraction",
    "missed_writes": "writes", "stale_gfns": "gfns", "seed": "", "trapped_writes": "writes",
    "writes_mmio": "writes",
}
_SUFFIX_UNITS = (("_cycles", "cycles"), ("_us", "µs"), ("_ns", "ns"), ("_ms", "ms"),
                 ("_s", "s"), ("_gib", "GiB"), ("_mib", "MiB"), ("_gfns", "gfns"),
                 ("_per_s", "/s"), ("_rate", "/s"), ("_steps", "steps"), ("_pages", "pages"),
                 ("_writes", "writes"), ("_count", ""), ("_frac", "fraction"))
#: lines that coincide (designs that behave alike) stay visible: dashes and markers differ
_DASHES = ["solid", "dash", "dot", "dashdot", "longdash", "longdashdot"]
_SYMBOLS = ["circle", "square", "diamond", "triangle-up", "x", "star"]
_DESIGN_COLOURS = ["#4C78A8", "#E45756", "#54A24B", "#F58518", "#B279A2", "#72B7B2",
                   "#9D755D", "#EECA3B"]


def unit(name: str) -> str:
    if name in UNITS:
        return UNITS[name]
    for suffix, u in _SUFFIX_UNITS:
        if name.endswith(suffix):
            return u
    return ""


#: readable names of the parameters and metrics kvmpt knows (units are added by label())
NAMES: dict[str, str] = {
    "ram_gib": "RAM slot size", "slot_gib": "slot size", "tracked_gfns": "tracked gfns",
    "write_rate": "guest write rate", "duration_s": "duration", "move_rate": "MOVE rate",
    "prepare_fail_rate": "prepare failure rate", "missed_writes": "missed writes",
    "mmu_lock_max_hold_us": "longest mmu_lock write hold",
    "mmu_lock_read_max_hold_us": "longest mmu_lock read hold",
    "trapped_writes": "trapped (emulated) writes", "writes_mmio": "MMIO exits",
}
_STRIP = ("_per_s", "_us", "_ns", "_ms", "_s", "_gib", "_mib", "_frac")


def label(name: str) -> str:
    """``"mmu_lock_hold_us"`` -> ``"mmu_lock hold (µs)"``: a readable axis title with units."""
    words = NAMES.get(name)
    if words is None:
        words = name
        for suffix in _STRIP:
            if name.endswith(suffix):
                words = name[: -len(suffix)]
                break
        words = words.replace("mmu_lock", "mmu\x00lock").replace("_", " ").replace("\x00", "_")
    u = unit(name)
    return f"{words} ({u})" if u and u not in words else words


def records(table: Any) -> list[dict[str, Any]]:
    """The rows of any supported table type as a list of dicts."""
    if hasattr(table, "rows") and isinstance(table.rows, list):
        return table.rows
    if hasattr(table, "to_pylist"):                 # pyarrow.Table
        return table.to_pylist()
    if hasattr(table, "to_dict") and hasattr(table, "columns") and hasattr(table, "iloc"):
        return table.to_dict("records")             # pandas.DataFrame
    rows = list(table)
    if rows and not isinstance(rows[0], Mapping):
        raise TypeError("a sweep table is a SweepTable, a list of dicts, a pyarrow Table or "
                        "a pandas DataFrame")
    return rows


def _ordered(values: Iterable[Any]) -> list[Any]:
    """Distinct values: numbers ascending, anything else in first-seen (grid) order."""
    seen: list[Any] = []
    for v in values:
        if v not in seen:
            seen.append(v)
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in seen):
        return sorted(seen)
    return seen


def _in_order(values: Iterable[Any]) -> list[Any]:
    seen: list[Any] = []
    for v in values:
        if v not in seen:
            seen.append(v)
    return seen


def _filter(rows, where: Mapping[str, Any] | None):
    from kvmpt.sweep.table import row_matches
    return [r for r in rows if row_matches(r, where)] if where else rows


def aggregate(rows: Sequence[Mapping[str, Any]], metric: str, by: Sequence[str],
              agg: str | Callable[[list[float]], float] = "mean") -> dict[tuple, dict[str, Any]]:
    """Group ``rows`` by the ``by`` columns; for each group the aggregate of ``metric`` over
    the runs that succeeded, their min and max, and the counts of ok and failed runs."""
    fn: Callable[[list[float]], float]
    if callable(agg):
        fn = agg
    else:
        fn = {"mean": statistics.fmean, "median": statistics.median, "max": max, "min": min,
              "sum": math.fsum}[agg]
    groups: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        g = groups.setdefault(tuple(r.get(c) for c in by), {"values": [], "failed": 0})
        v = r.get(metric)
        if r.get("status", "ok") != "ok" or v is None:
            g["failed"] += r.get("status", "ok") != "ok"
            continue
        g["values"].append(float(v))
    for g in groups.values():
        vals = g["values"]
        g.update(value=fn(vals) if vals else None, lo=min(vals) if vals else None,
                 hi=max(vals) if vals else None, n=len(vals))
    return groups


def _check_columns(rows, *names):
    if not rows:
        raise ValueError("the sweep table has no rows (after filtering)")
    missing = [n for n in names if n is not None and n not in rows[0]]
    if missing:
        raise ValueError(f"no column(s) {missing} in the sweep table; columns: "
                         f"{', '.join(rows[0])}")


def _fmt(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10_000:
        return f"{v:,}".replace(",", "\u2009")    # thin-space thousands: 100 000
    return str(v)


def _fmt_value(v: float | None) -> str:
    if v is None:
        return "no successful run"
    return f"{v:,.4g}" if abs(v) < 1e6 else f"{v:,.0f}"


def heatmap(table: Any, metric: str, x: str, y: str, *, design: str = "design",
            where: Mapping[str, Any] | None = None, agg: str | Callable = "mean",
            title: str | None = None, colorscale: str = "Viridis",
            shared_scale: bool = True) -> go.Figure:
    """``metric`` over parameters ``x`` and ``y``, one heatmap per design, with buttons.

    Cells aggregate (``agg``, default the mean) the successful runs at that (x, y, design),
    over seeds and every other parameter not fixed by ``where`` (e.g. ``where={"churn":
    "boot"}``).  Axes are categorical in value order, so log-spaced grids (1, 16, 1024 GiB)
    get equal-width cells.  With ``shared_scale`` every design uses one colour scale, so
    switching designs compares like with like."""
    rows = _filter(records(table), where)
    _check_columns(rows, metric, x, y, design)
    designs = _in_order(r[design] for r in rows)
    xs, ys = _ordered(r[x] for r in rows), _ordered(r[y] for r in rows)
    groups = aggregate(rows, metric, (design, x, y), agg)
    all_vals = [g["value"] for g in groups.values() if g["value"] is not None]
    zmin = min(all_vals) if all_vals and shared_scale else None
    zmax = max(all_vals) if all_vals and shared_scale else None
    name = title or f"{label(metric)} by {label(x)} and {label(y)}"
    fig = go.Figure()
    for i, d in enumerate(designs):
        z, text = [], []
        for yv in ys:
            zrow, trow = [], []
            for xv in xs:
                g = groups.get((d, xv, yv))
                zrow.append(None if g is None else g["value"])
                if g is None:
                    trow.append("not in the sweep")
                else:
                    extra = f"<br>{g['failed']} failed run(s)" if g["failed"] else ""
                    spread = (f"<br>range {_fmt_value(g['lo'])} … {_fmt_value(g['hi'])}"
                              if g["n"] > 1 else "")
                    how = agg if isinstance(agg, str) else "aggregate"
                    trow.append(f"{_fmt_value(g['value'])} ({how} of {g['n']} run(s))"
                                f"{spread}{extra}")
            z.append(zrow)
            text.append(trow)
        fig.add_trace(go.Heatmap(
            z=z, x=[_fmt(v) for v in xs], y=[_fmt(v) for v in ys], text=text,
            name=str(d), visible=(i == 0), colorscale=colorscale, zmin=zmin, zmax=zmax,
            texttemplate="%{z:.3~s}" if len(xs) * len(ys) <= 64 else None,
            colorbar=dict(title=dict(text=label(metric), side="right")),
            hovertemplate=(f"design {d}<br>{label(x)} = %{{x}}<br>{label(y)} = %{{y}}"
                           "<br>%{text}<extra></extra>")))
    fig.update_layout(
        title=dict(text=f"{name}<br><sup>design: {designs[0]}</sup>", x=0.0, xanchor="left"),
        xaxis=dict(title=label(x), type="category"),
        yaxis=dict(title=label(y), type="category"),
        margin=dict(t=110 if len(designs) > 1 else 80), template="plotly_white")
    if len(designs) > 1:
        buttons = [dict(label=str(d), method="update",
                        args=[{"visible": [j == i for j in range(len(designs))]},
                              {"title.text": f"{name}<br><sup>design: {d}</sup>"}])
                   for i, d in enumerate(designs)]
        fig.update_layout(updatemenus=[dict(
            type="buttons", direction="right", buttons=buttons, showactive=True,
            x=0.0, xanchor="left", y=1.02, yanchor="bottom", pad=dict(t=0, b=4))])
    return fig


def lines(table: Any, metric: str, x: str, *, color: str = "design",
          facet_col: str | None = None, facet_row: str | None = None,
          where: Mapping[str, Any] | None = None, agg: str | Callable = "mean",
          log_x: bool | None = None, log_y: bool = False, title: str | None = None,
          error_bars: bool = True) -> go.Figure:
    """``metric`` against parameter ``x``, one line per ``color`` value (default: per design),
    in a grid of panels by ``facet_col`` / ``facet_row`` (other parameters).

    Points aggregate the successful runs at that x (over seeds and any parameter not on a
    facet); the error bars span their min..max.  ``log_x`` defaults to on when x is numeric,
    positive and spans more than a factor of 100."""
    rows = _filter(records(table), where)
    _check_columns(rows, metric, x, color, facet_col, facet_row)
    cols = _ordered(r[facet_col] for r in rows) if facet_col else [None]
    frows = _ordered(r[facet_row] for r in rows) if facet_row else [None]
    colours = _in_order(r[color] for r in rows)
    xs = _ordered(r[x] for r in rows)
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in xs)
    if log_x is None:
        log_x = numeric and min(xs) > 0 and max(xs) / min(xs) > 100
    keyed = [dict(r, _fr=r.get(facet_row) if facet_row else None,
                  _fc=r.get(facet_col) if facet_col else None) for r in rows]
    groups = aggregate(keyed, metric, ("_fr", "_fc", color, x), agg)
    titles = [" · ".join(p for p in (
        f"{label(facet_row)} = {_fmt(fr)}" if facet_row else "",
        f"{label(facet_col)} = {_fmt(fc)}" if facet_col else "") if p)
        for fr in frows for fc in cols]
    fig = make_subplots(rows=len(frows), cols=len(cols), shared_xaxes=True, shared_yaxes=True,
                        subplot_titles=titles if (facet_col or facet_row) else None,
                        horizontal_spacing=0.04, vertical_spacing=0.12 if facet_row else 0.08)
    for ri, fr in enumerate(frows, 1):
        for ci, fc in enumerate(cols, 1):
            for k, cv in enumerate(colours):
                pts = [(xv, groups[(fr, fc, cv, xv)]) for xv in xs if (fr, fc, cv, xv) in groups]
                ys = [g["value"] for _, g in pts]
                err = None
                if error_bars and any(g["n"] > 1 for _, g in pts):
                    err = dict(type="data", symmetric=False, thickness=1, width=3,
                               array=[None if g["value"] is None else g["hi"] - g["value"]
                                      for _, g in pts],
                               arrayminus=[None if g["value"] is None else g["value"] - g["lo"]
                                           for _, g in pts])
                fig.add_trace(go.Scatter(
                    x=[xv if numeric else _fmt(xv) for xv, _ in pts], y=ys, error_y=err,
                    mode="lines+markers", name=str(cv), legendgroup=str(cv),
                    showlegend=(ri == 1 and ci == 1),
                    line=dict(color=_DESIGN_COLOURS[k % len(_DESIGN_COLOURS)],
                              dash=_DASHES[k % len(_DASHES)]),
                    marker=dict(symbol=_SYMBOLS[k % len(_SYMBOLS)], size=7),
                    customdata=[[g["n"], g["failed"]] for _, g in pts],
                    hovertemplate=(f"{color} {cv}<br>{label(x)} = %{{x}}<br>"
                                   f"{label(metric)} = %{{y:,.4g}}<br>%{{customdata[0]}} run(s),"
                                   " %{customdata[1]} failed<extra></extra>")), row=ri, col=ci)
    fig.update_xaxes(type="log" if log_x else ("linear" if numeric else "category"))
    for ci in range(1, len(cols) + 1):
        fig.update_xaxes(title_text=label(x), row=len(frows), col=ci)
    fig.update_yaxes(type="log" if log_y else "linear")
    for ri in range(1, len(frows) + 1):
        fig.update_yaxes(title_text=label(metric), row=ri, col=1)
    fig.update_layout(title=dict(text=title or f"{label(metric)} vs {label(x)}", x=0.0,
                                 xanchor="left"),
                      legend=dict(title=dict(text=color)), template="plotly_white",
                      height=max(380, 300 * len(frows) + 80))
    return fig
