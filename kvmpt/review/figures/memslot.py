"""Figures for the memslot update flow and what a failed or rejected MOVE does.

Pure functions from :mod:`kvmpt.review.claims` results to ``plotly.graph_objects.Figure``.
Every figure that shows several designs carries plotly ``updatemenus`` buttons, one
per design, so the static HTML export toggles designs without a kernel.
"""
from __future__ import annotations

import errno as errno_mod
from typing import Any, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from kvmpt.constants import WRITE_OUTCOMES
from kvmpt.review.figures.layout import fit, wrap

__all__ = ["STEP_LANES", "update_timeline", "update_timelines", "failed_move_figure",
           "move_policy_figure", "qemu_census_figure", "design_buttons", "scenario_timeline",
           "scenario_traces", "scenario_title", "vm_layout_figure"]

#: The kernel steps of kvm_set_memslot() (spec/kernel-semantics.md 3.2), top to bottom.
STEP_LANES = (
    ("S2a-b", "S2a-b invalidate: INVALID copy active, SRCU sync"),
    ("S2c", "S2c kvm_arch_flush_shadow_memslot"),
    ("S3", "S3 kvm_prepare_memory_region"),
    ("S4", "S4 failure: old slot re-activated"),
    ("S5", "S5 install + SRCU sync"),
    ("S7", "S7 kvm_commit_memory_region"),
)
_LANE = {s: len(STEP_LANES) - 1 - i for i, (s, _) in enumerate(STEP_LANES)}

#: Event colours: page-track hooks stand out, failures are red.
_STEP_COLOUR = {
    "flush_slot": "#E45756", "remove_region": "#54A24B", "zap_all_fast": "#4C78A8",
    "prepare_failed": "#B22222", "move_rejected": "#F58518", "restore": "#B22222",
    "free_metadata": "#9D755D",
}
_BEFORE, _AFTER = "#9ecae1", "#08519c"


def _total(writes: Mapping[str, int]) -> int:
    """Writes issued: the sum over the model's outcomes (``kvmpt.kernel.vm.WRITE_OUTCOMES``)."""
    return sum(writes[k] for k in WRITE_OUTCOMES)


def _errname(e: int) -> str:
    return "ok" if not e else "-" + errno_mod.errorcode.get(e, str(e))


def _event_text(step: str, d: Mapping[str, Any]) -> str:
    if step == "flush_slot":
        return f"flush→{d.get('node', '?')}"
    if step == "remove_region":
        return f"remove_region→{d.get('node', '?')}"
    if step in ("prepare_failed", "move_rejected"):
        return f"{step} ({_errname(d.get('errno', 0))})"
    return step


def _timeline_traces(flow: Mapping[str, Any]) -> tuple[list[go.BaseTraceType], list[dict],
                                                       list[dict], int]:
    """Traces, shapes and annotations of one design's timeline; x = event number."""
    events = flow["events"]
    traces, shapes, notes = [], [], []
    xs, ys, texts, colours, hovers = [], [], [], [], []
    x = 0
    for k, (label, err, stale) in enumerate(flow["ops"]):
        mine = [e for e in events if e[0] == label]
        if not mine:
            continue
        x0 = x + 0.5
        for _, step, S, detail in mine:
            x += 1
            xs.append(x)
            ys.append(_LANE.get(S, -1))
            texts.append(_event_text(step, detail))
            colours.append(_STEP_COLOUR.get(step, "#333333"))
            hovers.append(f"<b>{label}</b><br>{S} {step}<br>" + "<br>".join(
                f"{kk}={vv:#x}" if isinstance(vv, int) and kk in ("base_gfn", "gfn") else
                f"{kk}={vv}" for kk, vv in detail.items() if kk not in ("op", "S")))
        x1 = x + 0.5
        shapes.append(dict(type="rect", xref="x", yref="paper", x0=x0, x1=x1, y0=0, y1=1,
                           fillcolor="#f0f0f0" if k % 2 else "#fafafa", line_width=0,
                           layer="below"))
        notes.append(dict(x=(x0 + x1) / 2, y=1.0, xref="x", yref="paper", yanchor="bottom",
                          showarrow=False, font=dict(size=10, color="#B22222" if err else "#333"),
                          text=f"{label.replace(', ', ',<br>').replace(' (', '<br>(')}"
                               f"<br><b>{_errname(err)}</b>, {stale} stale"))
    pos, last = [], {}
    for xx, yy in zip(xs, ys):          # neighbours in one lane: alternate above / below
        up = not (last.get(yy) == xx - 1 and pos[-1] == "top center")
        pos.append("top center" if up else "bottom center")
        last[yy] = xx
    traces.append(go.Scatter(
        x=xs, y=ys, mode="markers+text", text=texts, textposition=pos,
        textfont=dict(size=9), marker=dict(size=12, color=colours, line=dict(width=1)),
        cliponaxis=False, hovertext=hovers, hoverinfo="text", name=flow["design"], showlegend=False))
    return traces, shapes, notes, x


def update_timeline(flow: Mapping[str, Any]) -> go.Figure:
    """The ``vm.events`` of one design's updates (:func:`kvmpt.review.claims.memslot_flow`) as a
    timeline: one lane per kernel step S2..S7, one marker per event, one band per update."""
    return update_timelines({flow["design"]: flow})


def update_timelines(flows: Mapping[str, Mapping[str, Any]]) -> go.Figure:
    """Several designs' timelines in one figure, a button per design."""
    fig = go.Figure()
    owners, per = [], []
    for k, (name, flow) in enumerate(flows.items()):
        traces, shapes, notes, n = _timeline_traces(flow)
        for t in traces:
            t.visible = k == 0
            fig.add_trace(t)
            owners.append(k)
        title = (f"kvm_set_memslot() step by step, design <b>{name}</b> — notifier list: "
                 f"{' → '.join(flow['notifiers']) or '(empty)'}; KVMGT shadows "
                 f"{flow['tracked']} pages of slot 1")
        per.append(dict(shapes=shapes, annotations=notes, title=title, n=n))
    lanes = [lbl for _, lbl in STEP_LANES]
    first = per[0]
    fig.update_layout(
        title=dict(text=first["title"], font=dict(size=13), y=0.98),
        shapes=first["shapes"], annotations=first["annotations"],
        # room beside the first and last event; their labels (9 px, up to "free_metadata")
        # may reach into the margins (cliponaxis=False), which are wide enough for them
        xaxis=dict(title="events in order (vm.events)",
                   range=[-0.5, max(p["n"] for p in per) + 1.5], dtick=1, showgrid=False),
        yaxis=dict(title="", tickvals=[_LANE[s] for s, _ in STEP_LANES], ticktext=lanes,
                   range=[-0.6, len(lanes) - 0.3]),
        template="plotly_white")
    if len(per) > 1:
        fig.update_layout(updatemenus=[design_buttons(
            list(flows), owners, [dict(shapes=p["shapes"], annotations=p["annotations"],
                                       **{"title.text": p["title"]}) for p in per])])
    return fit(fig, height=520, left=300, right=70, above=62)


def design_buttons(labels: Sequence[str], owners: Sequence[int],
                   layouts: Sequence[dict] | None = None, y: float = 1.18) -> dict:
    """An ``updatemenus`` entry: button k shows the traces whose owner is k and applies
    ``layouts[k]`` (a relayout dict)."""
    buttons = []
    for k, label in enumerate(labels):
        buttons.append(dict(label=label, method="update",
                            args=[{"visible": [o == k for o in owners]},
                                  dict(layouts[k]) if layouts else {}]))
    kind = "buttons" if len(labels) <= 4 else "dropdown"   # many designs: a drop-down
    return dict(type=kind, direction="right" if kind == "buttons" else "down", x=0,
                xanchor="left", y=y, yanchor="top", buttons=buttons, showactive=True,
                active=0, pad=dict(r=4, t=2), font=dict(size=11))


_STATE_ROWS = (("shadowed", "GVT shadows<br>(page_track_tree)"),
               ("ptable", "in KVMGT's<br>ptable"),
               ("kvm_tracked", "KVM write-tracks<br>(count > 0)"),
               ("stale", "stale: writes<br>miss GVT"))
#: every write in these scenarios targets a shadowed page: all but "handled" are missed
_WRITE_ROWS = (("handled", "reached<br>GVT's handler"), ("direct", "missed:<br>not trapped"),
               ("ignored", "missed: trapped,<br>ignored"), ("mmio", "missed:<br>MMIO exit"))
_WRITE_COLOURS = ["#54A24B", "#E45756", "#F58518", "#B279A2"]


def _state_traces(before, after, writes, show_legend: bool):
    names = [lbl for _, lbl in _STATE_ROWS]
    b = [getattr(before, k) for k, _ in _STATE_ROWS]
    a = [getattr(after, k) for k, _ in _STATE_ROWS]
    w = [writes[k] for k, _ in _WRITE_ROWS]
    return [
        go.Bar(x=names, y=b, name="before the update", marker_color=_BEFORE,
               text=b, textposition="outside", legendgroup="before", showlegend=show_legend,
               hovertemplate="%{x}: %{y} pages before<extra></extra>"),
        go.Bar(x=names, y=a, name="after the update", marker_color=_AFTER,
               text=a, textposition="outside", legendgroup="after", showlegend=show_legend,
               hovertemplate="%{x}: %{y} pages after<extra></extra>"),
        go.Bar(x=[lbl for _, lbl in _WRITE_ROWS], y=w, name="guest writes after",
               marker_color=_WRITE_COLOURS, text=w,
               textposition="outside", showlegend=False,
               hovertemplate="%{x}: %{y} writes<extra></extra>"),
    ]


def _two_panel(results: Mapping[str, Any], get, title_of, panel_titles) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, column_widths=[0.58, 0.42], horizontal_spacing=0.1,
                        subplot_titles=panel_titles)
    owners, layouts = [], []
    ymax_l = ymax_r = 1
    for k, (label, r) in enumerate(results.items()):
        before, after, writes = get(r)
        for i, t in enumerate(_state_traces(before, after, writes, k == 0)):
            t.visible = k == 0
            fig.add_trace(t, row=1, col=1 if i < 2 else 2)
            owners.append(k)
        ymax_l = max([ymax_l] + [getattr(x, k) for x in (before, after) for k, _ in _STATE_ROWS])
        ymax_r = max([ymax_r] + [writes[k] for k, _ in _WRITE_ROWS])
        layouts.append({"title.text": title_of(label, r)})
    fig.update_yaxes(title_text="pages", range=[0, ymax_l * 1.2], row=1, col=1)
    fig.update_yaxes(title_text="guest writes", range=[0, ymax_r * 1.2], row=1, col=2)
    fig.update_layout(
        title=dict(text=layouts[0]["title.text"]), barmode="group", template="plotly_white")
    fig.update_xaxes(tickangle=0)
    if len(results) > 1:
        fig.update_layout(updatemenus=[design_buttons(list(results), owners, layouts)])
    return fit(fig, height=540, bottom=110, above=24)


def failed_move_figure(results: Mapping[str, Any]) -> go.Figure:
    """``{design label: kvmpt.review.claims.FailedMove}`` → before/after bars of what KVM, KVMGT
    and GVT believe, and the guest's page-table writes afterwards; a button per design."""
    def title(label, r):
        cause = {"max_gfn": "new range ends above kvm_mmu_max_gfn()",
                 "enomem": "kvm_alloc_memslot_metadata() fails"}[r.cause]
        return (f"MOVE fails in prepare ({cause}) → {_errname(r.errno)}; "
                f"design <b>{label}</b>:<br>{r.after.stale} of {r.before.shadowed} shadowed "
                f"pages stale, <b>{r.missed:,} of {_total(r.writes):,}</b> guest "
                f"page-table writes missed")
    return _two_panel(results, lambda r: (r.before, r.after, r.writes), title,
                      ("what each side believes (pages)", "guest page-table writes afterwards"))


def move_policy_figure(results: Mapping[str, Mapping[str, Any]]) -> go.Figure:
    """``{design label: kvmpt.review.claims.move_with_kvmgt(...)}``: a MOVE that would succeed,
    with KVMGT attached, allowed or rejected; a button per design."""
    def title(label, r):
        verdict = ("rejected: " + _errname(r["errno"])) if r["errno"] else "allowed"
        return (f"MOVE of a slot holding shadowed page tables, KVMGT attached — <b>{label}</b>: "
                f"{verdict};<br>{r['after'].stale} of {r['before'].shadowed} shadowed pages "
                f"stale, {r['writes']['missed']:,} of {_total(r['writes']):,} writes missed")
    return _two_panel(results, lambda r: (r["before"], r["after"], r["writes"]), title,
                      ("what each side believes (pages)", "guest page-table writes afterwards"))


def qemu_census_figure(rows: Sequence[Mapping[str, Any]]) -> go.Figure:
    """Memslot updates by kind in each replayed QEMU trace (one design's rows suffice:
    the kind does not depend on the design)."""
    seen, traces = set(), []
    for r in rows:
        if r["trace"] in seen:
            continue
        seen.add(r["trace"])
        traces.append(r)
    kinds = (("create", "CREATE", "#4C78A8"), ("delete", "DELETE", "#9D755D"),
             ("flags_only", "FLAGS_ONLY", "#72B7B2"), ("move", "MOVE", "#E45756"))
    fig = go.Figure()
    names = [r["trace"] for r in traces]
    for key, label, colour in kinds:
        ys = [r[key] for r in traces]
        fig.add_trace(go.Bar(x=names, y=ys, name=label, marker_color=colour, text=ys,
                             textposition="auto",
                             hovertemplate=f"%{{x}}: %{{y}} {label}<extra></extra>"))
    total_moves = sum(r["move"] for r in traces)
    fig.update_layout(
        title=dict(text=f"Real QEMU memslot traffic, replayed: <b>{total_moves} MOVE</b> in "
                        f"{sum(r['ops'] for r in traces)} ioctls — rejecting MOVE costs QEMU "
                        "nothing", font=dict(size=13)),
        barmode="stack", template="plotly_white",
        xaxis_title="trace (data/traces)", yaxis_title="KVM_SET_USER_MEMORY_REGION calls")
    return fit(fig, height=440, bottom=90)


#: MOVE outcomes in a scenario run, by errno
_MOVE_MARKS = ((0, "MOVE ok", "#E45756", "triangle-up"),
               (12, "MOVE failed in prepare (-ENOMEM)", "#B22222", "x"),
               (22, "MOVE rejected (-EINVAL)", "#54A24B", "circle-open"))


def scenario_traces(result) -> list[go.Scatter]:
    """The traces of :func:`scenario_timeline` for one ``kvmpt.run`` result, in a fixed
    order (missed writes, stale pages, then one marker trace per MOVE outcome), so a
    dashboard can update them in place."""
    ts = result.timeseries
    t = ts["t_s"]
    missed, stale = ts["missed_writes"], ts["stale_gfns"]
    end = float(result.summary.get("sim_time_s", t[-1] if len(t) else 0.0))
    # the writes after the last op count too: close both lines at the end of the run
    t_end = np.append(t, end)
    missed_end = np.append(missed, result.summary.get("missed_writes", missed[-1]))
    stale_end = np.append(stale, result.summary.get("stale_gfns_end", stale[-1]))
    out = [
        go.Scatter(x=t_end, y=missed_end, mode="lines",
                   line=dict(color="#E45756", width=2, shape="hv"),
                   name="missed page-table writes (cumulative)", xaxis="x", yaxis="y",
                   hovertemplate="t=%{x:.3f} s: %{y:,} writes missed<extra></extra>"),
        go.Scatter(x=t_end, y=stale_end, mode="lines",
                   line=dict(color="#4C78A8", width=2, shape="hv"),
                   name="stale shadowed pages", xaxis="x2", yaxis="y2",
                   hovertemplate="t=%{x:.3f} s: %{y:,} pages stale<extra></extra>"),
    ]
    kind, err = ts["kind"], ts["errno"]
    for code, label, colour, symbol in _MOVE_MARKS:
        m = (kind == "MOVE") & (err == code)
        out.append(go.Scatter(
            x=t[m], y=stale[m], mode="markers", name=label, xaxis="x2", yaxis="y2",
            marker=dict(color=colour, symbol=symbol, size=10, line=dict(width=2)),
            hovertemplate=f"t=%{{x:.3f}} s: {label}<extra></extra>"))
    return out


def scenario_title(label: str, result) -> str:
    """The title of :func:`scenario_timeline` for one design, wrapped to fit the cell (a
    dashboard writes it into a FigureWidget as is)."""
    s = result.summary
    return wrap(f"{s['scenario']}, design <b>{label}</b>: {s['ops_MOVE']} MOVEs "
                f"({s['moves_rejected']} rejected, {s['prepare_failures']} failed in prepare) "
                f"→ <b>{s['missed_writes']:,} of {s['writes_total']:,}</b> guest writes "
                f"missed, {s['stale_gfns_end']:,} of {s['tracked_gfns']:,} shadowed pages "
                "stale at the end")


def scenario_timeline(results: Mapping[str, Any]) -> go.Figure:
    """``{design label: kvmpt.run(...) result}``: cumulative missed guest page-table writes
    (top) and stale shadowed pages with every MOVE marked by outcome (bottom) over the
    scenario's simulated time; a button (or a drop-down) per design."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        row_heights=[0.5, 0.5])
    owners, layouts = [], []
    for k, (label, r) in enumerate(results.items()):
        for i, tr in enumerate(scenario_traces(r)):
            tr.visible = k == 0
            tr.showlegend = k == 0
            tr.legendgroup = tr.name
            fig.add_trace(tr, row=1 if i == 0 else 2, col=1)
            owners.append(k)
        layouts.append({"title.text": scenario_title(label, r)})
    fig.update_yaxes(title_text="missed writes", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="stale pages", rangemode="tozero", row=2, col=1)
    fig.update_xaxes(title_text="simulated time (s)", row=2, col=1)
    fig.update_layout(
        title=dict(text=layouts[0]["title.text"]), template="plotly_white")
    if len(results) > 1:
        fig.update_layout(updatemenus=[design_buttons(list(results), owners, layouts)])
    return fit(fig, height=560, left=70, bottom=90, title_size=12)


_ROLE_COLOURS = {"ram-legacy": "#9ecae1", "ram-low": "#4C78A8", "ram-high": "#4C78A8",
                 "pam": "#72B7B2", "vgpu-aperture": "#F58518", "flash-code": "#9D755D",
                 "flash-vars": "#BAB0AC", "bios-rom": "#9D755D", "vga-vram": "#B279A2",
                 "smram-high": "#EECA3B"}


def vm_layout_figure(snap: Mapping[str, Any]) -> go.Figure:
    """A VM's memslots (:func:`kvmpt.review.claims.vm_snapshot`): one row per slot, a bar from its
    first to its last gpa (GiB), and a tick per page GVT shadows; the hover gives
    ``base_gfn``, ``npages``, flags and how many of the slot's ``gfn_write_track``
    counters are non-zero."""
    rows = sorted(snap["slots"], key=lambda s: (s["as_id"], s["base_gfn"]))
    names = [f"AS{s['as_id']} slot {s['id']}: {s['role']}" for s in rows]
    gib = 1 << 18
    fig = go.Figure()
    from kvmpt.infra.text import fmt_bytes
    fig.add_trace(go.Bar(
        y=names, x=[max(s["npages"] / gib, 0.05) for s in rows],    # tiny slots stay visible
        base=[s["base_gfn"] / gib for s in rows], orientation="h",
        text=[fmt_bytes(s["npages"] << 12) + (" RO" if s["flags"] & 2 else "")
              for s in rows], textposition="outside", cliponaxis=False,
        marker_color=[_ROLE_COLOURS.get(s["role"], "#999999") for s in rows],
        customdata=[[hex(s["base_gfn"]), f"{s['npages']:,}", s["flags"], s["write_tracked"]]
                    for s in rows],
        hovertemplate=("%{y}<br>base_gfn %{customdata[0]}, npages %{customdata[1]}, "
                       "flags %{customdata[2]}<br>gfn_write_track non-zero: "
                       "%{customdata[3]}<extra></extra>"),
        name="memslot (bar: gpa range)", showlegend=True))
    xs, ys = [], []
    for s, name in zip(rows, names):
        xs += [g / gib for g in s["shadowed"]]
        ys += [name] * len(s["shadowed"])
    fig.add_trace(go.Scatter(
        x=xs, y=ys, mode="markers", marker=dict(symbol="line-ns-open", size=14, color="#E45756",
                                                line=dict(width=1)),
        name="page GVT shadows (in ptable, write-tracked)",
        hovertemplate="shadowed gfn at %{x:.4f} GiB<extra></extra>"))
    fig.update_layout(
        title=dict(text=(f"{snap['layout']} with a vGPU, design <b>{snap['design']}</b>: "
                         f"notifier list {' → '.join(snap['notifiers'])}; {snap['shadowed']} "
                         f"shadowed pages, {snap['ptable']} ptable entries, "
                         f"{snap['violations']} invariant violations"), font=dict(size=13)),
        xaxis=dict(title="guest physical address (GiB)"),
        yaxis=dict(autorange="reversed", title=""), barmode="overlay",
        template="plotly_white")
    return fit(fig, height=190 + 28 * len(rows), left=230, right=60, bottom=90)
