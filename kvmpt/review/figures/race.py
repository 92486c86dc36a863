"""Figures for ``kvmpt.race``: a witness interleaving as a swimlane.

Pure functions from a :class:`kvmpt.race.RaceResult` to a ``plotly.graph_objects.Figure``.
"""
from __future__ import annotations

import textwrap

import plotly.graph_objects as go

from kvmpt.review.figures.layout import fit

__all__ = ["witness_swimlane", "witness_swimlanes", "verdict_matrix"]

#: colours of lock-hold bars (one per lock) and of the verdicts.
_LOCK_COLOURS = ["#4C78A8", "#F58518", "#54A24B", "#B279A2", "#9D755D", "#72B7B2"]
VERDICT_COLOURS = {"safe": "#54A24B", "use-after-free": "#E45756",
                   "sleep-in-atomic": "#F58518", "deadlock": "#B279A2",
                   "not-held": "#EECA3B", "missed-write": "#9D755D"}


def _label(text: str, width: int = 20, lines: int = 3) -> str:
    wrapped = textwrap.wrap(text, width) or [""]
    if len(wrapped) > lines:
        wrapped = wrapped[:lines]
        wrapped[-1] = wrapped[-1][: width - 1] + "…"
    return "<br>".join(wrapped)


def _count(n: int) -> str:
    """A schedule count that fits a grid cell: exact up to a million, then 2.7e+12."""
    return f"{n:,}" if n < 10**6 else f"{n:.2e}".replace("e+0", "e+")


def _hold_segments(steps, thread, attr="held"):
    """{lock name: [(first step, last step), ...]} the thread holds it after each step."""
    segs: dict[str, list[list[int]]] = {}
    for i, s in enumerate(steps, 1):
        for lock in getattr(s, attr).get(thread, ()):
            runs = segs.setdefault(lock, [])
            if runs and runs[-1][1] == i - 1:
                runs[-1][1] = i
            else:
                runs.append([i, i])
    return segs


def witness_swimlane(result) -> go.Figure:
    """One lane per thread, one column per step of ``result``'s witness.

    Markers are the steps (hover for the kernel function each mirrors); solid bars under a
    lane show which locks that thread holds after each step, dashed bars below those its open
    SRCU read sections; the failing step is a cross in the verdict's colour.
    A safe result gives an empty lane chart that says how many schedules were explored."""
    threads = list(result.threads)
    lane = {t: len(threads) - 1 - i for i, t in enumerate(threads)}   # first thread on top
    steps = result.witness_detail or []
    fig = go.Figure()
    colour = VERDICT_COLOURS.get(result.verdict, "#333333")

    # lock-hold bars
    lock_names = sorted({lk for s in steps for held in s.held.values() for lk in held})
    lock_colour = {lk: _LOCK_COLOURS[i % len(_LOCK_COLOURS)] for i, lk in enumerate(lock_names)}
    shown = set()
    for t in threads:
        for lk, runs in sorted(_hold_segments(steps, t).items()):
            y = lane[t] - 0.16 - 0.07 * lock_names.index(lk)
            for a, b in runs:
                fig.add_trace(go.Scatter(
                    x=[a - 0.45, b + 0.45], y=[y, y], mode="lines",
                    line=dict(color=lock_colour[lk], width=5),
                    name=f"holds {lk}", legendgroup=lk, showlegend=lk not in shown,
                    hovertemplate=f"{t} holds {lk} after steps {a}–{b}<extra></extra>"))
                shown.add(lk)

    # SRCU read sections: thin dashed bars under the lock bars
    domains = sorted({d for s in steps for secs in s.sections.values() for d in secs})
    for t in threads:
        for d, runs in sorted(_hold_segments(steps, t, "sections").items()):
            y = lane[t] - 0.16 - 0.07 * (len(lock_names) + domains.index(d))
            for a, b in runs:
                fig.add_trace(go.Scatter(
                    x=[a - 0.45, b + 0.45], y=[y, y], mode="lines",
                    line=dict(color="#888888", width=2, dash="dot" if d == "kvm->srcu" else "dash"),
                    name=f"in {d} read section", legendgroup=d, showlegend=d not in shown,
                    hovertemplate=f"{t} in {d} read section, steps {a}–{b}<extra></extra>"))
                shown.add(d)

    # steps
    for t in threads:
        idx = [i for i, s in enumerate(steps, 1) if s.thread == t and not s.failing]
        if not idx:
            continue
        fig.add_trace(go.Scatter(
            x=idx, y=[lane[t]] * len(idx), mode="markers+text",
            marker=dict(size=11, color="#333333", symbol="circle"),
            text=[_label(steps[i - 1].text, 16, 4) for i in idx],
            textposition=["top center" if i % 2 else "bottom center" for i in idx],
            textfont=dict(size=9), cliponaxis=False,   # the first step's label may reach left
            customdata=[[steps[i - 1].text, steps[i - 1].where] for i in idx],
            hovertemplate=f"<b>{t}</b> step %{{x}}<br>%{{customdata[0]}}"
                          "<br><i>%{customdata[1]}</i><extra></extra>",
            name=t, showlegend=False))
    fails = [(i, s) for i, s in enumerate(steps, 1) if s.failing]
    if fails:
        fig.add_trace(go.Scatter(
            x=[i for i, _ in fails], y=[lane[s.thread] for _, s in fails],
            mode="markers+text",
            marker=dict(size=16, color=colour, symbol="x"),
            text=[_label(s.text) for _, s in fails], textposition="top center",
            textfont=dict(size=9, color=colour), cliponaxis=False,
            customdata=[[s.text, s.where] for _, s in fails],
            hovertemplate="<b>%{customdata[0]}</b><br><i>%{customdata[1]}</i><extra></extra>",
            name=result.verdict))

    n = len(steps)
    if steps:
        title = (f"{result.scenario}, lock={result.lock}: <b>{result.verdict}</b> — "
                 f"a shortest failing interleaving ({n} rows; {result.failing_states:,} of "
                 f"{result.states:,} distinct states fail)")
    else:
        title = (f"{result.scenario}, lock={result.lock}: <b>safe</b> — no failing "
                 f"interleaving among {result.states:,} distinct states")
        fig.add_annotation(x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                           text="safe: no witness to draw", font=dict(size=16, color=colour))
    fig.update_layout(
        title=dict(text=title),
        xaxis=dict(title="step of the interleaving", dtick=1, range=[0, max(n, 1) + 1],
                   zeroline=False),
        yaxis=dict(title="thread", tickvals=[lane[t] for t in threads], ticktext=threads,
                   range=[-0.8, len(threads) - 0.2], zeroline=False),
        template="plotly_white")
    return fit(fig, height=230 + 170 * len(threads), left=70, right=30, bottom=90, title_size=14)


def witness_swimlanes(results) -> go.Figure:
    """Several witnesses in one static figure, with a button per result (plotly
    ``updatemenus``), so an HTML export can toggle lock designs without a kernel.

    ``results``: RaceResults, or a mapping whose values are RaceResults (e.g.
    ``{lock: explore(lock)}``).  Each button is labelled ``lock: verdict``."""
    rs = list(results.values()) if hasattr(results, "values") else list(results)
    if not rs:
        raise ValueError("witness_swimlanes needs at least one result")
    figs = [witness_swimlane(r) for r in rs]
    fig = go.Figure()
    owner = []
    for k, f in enumerate(figs):
        for tr in f.data:
            tr.visible = k == 0
            fig.add_trace(tr)
            owner.append(k)
    buttons = []
    for k, (r, f) in enumerate(zip(rs, figs)):
        lay = f.layout
        buttons.append(dict(
            label=f"{r.lock}: {r.verdict}", method="update",
            args=[{"visible": [o == k for o in owner]},
                  {"title.text": lay.title.text,
                   "xaxis.range": list(lay.xaxis.range),
                   "yaxis.tickvals": list(lay.yaxis.tickvals),
                   "yaxis.ticktext": list(lay.yaxis.ticktext),
                   "yaxis.range": list(lay.yaxis.range),
                   "annotations": list(lay.annotations)}]))
    first = figs[0].layout
    fig.update_layout(
        title=first.title, xaxis=first.xaxis, yaxis=first.yaxis,
        annotations=list(first.annotations), template="plotly_white",
        updatemenus=[dict(type="buttons", direction="right", x=0, xanchor="left",
                          buttons=buttons, showactive=True)])
    # the tallest witness sets the height: its lanes must not be squeezed by the others'
    return fit(fig, height=max(f.layout.height for f in figs) + 40, left=70, right=30,
               bottom=90, title_size=14)


def verdict_matrix(results) -> go.Figure:
    """The verdict of every (lock design, scenario) as a coloured grid.

    ``results``: ``{(lock, scenario): RaceResult}``, as returned by ``kvmpt.race.matrix``.
    Each cell says the verdict and how many of the distinct states fail."""
    from kvmpt.constants import KVMGT_LOCKS as LOCKS
    from kvmpt.race.state import VERDICTS
    locks = [lk for lk in LOCKS if any(k[0] == lk for k in results)]
    scens = list(dict.fromkeys(k[1] for k in results))
    z, text = [], []
    for sc in scens:
        zr, tr = [], []
        for lk in locks:
            r = results.get((lk, sc))
            if r is None:
                zr.append(None)
                tr.append("")
                continue
            zr.append(VERDICTS.index(r.verdict))
            tr.append(f"<b>{r.verdict}</b><br>{r.failing_states:,} failing /"
                      f"<br>{r.states:,} states")
        z.append(zr)
        text.append(tr)
    n = len(VERDICTS)
    scale = []
    for i, v in enumerate(VERDICTS):
        scale += [[i / n, VERDICT_COLOURS[v]], [(i + 1) / n, VERDICT_COLOURS[v]]]
    fig = go.Figure(go.Heatmap(
        z=z, x=locks, y=scens, text=text, texttemplate="%{text}", textfont=dict(size=11),
        colorscale=scale, zmin=-0.5, zmax=n - 0.5, xgap=3, ygap=3,
        colorbar=dict(tickvals=list(range(n)), ticktext=list(VERDICTS), title="verdict"),
        hovertemplate="lock=%{x}<br>scenario=%{y}<br>%{text}<extra></extra>"))
    fig.update_layout(
        title="Every interleaving, every lock design: verdict (failing / distinct states)",
        xaxis=dict(title="what guards KVMGT's ptable in kvmgt_page_track_write", side="bottom"),
        yaxis=dict(title="scenario", autorange="reversed"),
        template="plotly_white")
    return fit(fig, height=160 + 80 * len(scens), left=230, right=40, bottom=70,
               legend_below=False)
