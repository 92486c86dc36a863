"""Figures for ``kvmpt.live``: host measurements beside the model's own prices.

Pure functions from a :class:`kvmpt.live.calibrate.Calibration` and
:func:`kvmpt.live.compare.model_costs` points (and a differential report) to
``plotly.graph_objects.Figure``; buttons (``updatemenus``) switch the operation,
so the exported HTML can still do it without a kernel.  Every title names the
machine that measured.
"""
from __future__ import annotations

from typing import Sequence

import plotly.graph_objects as go

__all__ = ["calibration_figure", "mmio_figure", "agreement_table_figure", "OP_LABELS"]

OP_LABELS = {
    "CREATE": "CREATE",
    "FLAGS_ONLY_DIRTY_ON": "FLAGS_ONLY (dirty log on)",
    "FLAGS_ONLY_DIRTY_OFF": "FLAGS_ONLY (dirty log off)",
    "MOVE": "MOVE",
    "DELETE": "DELETE",
}
_MODEL_COLOURS = ["#4C78A8", "#E45756", "#F58518"]
_HOST = "#54A24B"


def calibration_figure(cal, model_points: Sequence, ops: Sequence[str] = tuple(OP_LABELS)
                       ) -> go.Figure:
    """Time of each memslot operation against the slot size (log-log): the host's
    median with its min..max as an error bar, and one dashed line per model case
    (``data/costs.toml`` prices).  Buttons pick the operation."""
    sizes = cal.sizes()
    x = [s / (1 << 30) for s in sizes]
    cases = list(dict.fromkeys(p.case for p in model_points))
    fig = go.Figure()
    per_op = 1 + len(cases)
    for i, op in enumerate(ops):
        med = [cal.get(op, s).median * 1e6 for s in sizes]
        lo = [m - cal.get(op, s).low * 1e6 for m, s in zip(med, sizes)]
        hi = [cal.get(op, s).high * 1e6 - m for m, s in zip(med, sizes)]
        fig.add_trace(go.Scatter(
            x=x, y=med, mode="lines+markers", name=f"host [M] ({cal.host.get('kernel', '?')})",
            line=dict(color=_HOST, width=3), visible=i == 0,
            error_y=dict(type="data", array=hi, arrayminus=lo, visible=True),
            hovertemplate="%{x} GiB: %{y:.4g} µs<extra>host</extra>"))
        for j, case in enumerate(cases):
            pts = {p.size: p for p in model_points if p.case == case and p.op == op}
            fig.add_trace(go.Scatter(
                x=x, y=[pts[s].us for s in sizes], mode="lines+markers", name=case,
                line=dict(color=_MODEL_COLOURS[j % 3], dash="dash"), visible=i == 0,
                text=["rejected (-EINVAL)" if pts[s].errno else "" for s in sizes],
                hovertemplate="%{x} GiB: %{y:.4g} µs %{text}<extra>" + case + "</extra>"))
    n = len(fig.data)
    buttons = []
    for i, op in enumerate(ops):
        vis = [i * per_op <= k < (i + 1) * per_op for k in range(n)]
        buttons.append(dict(label=OP_LABELS.get(op, op), method="update",
                            args=[{"visible": vis},
                                  {"title.text": _title(OP_LABELS.get(op, op), cal)}]))
    fig.update_layout(
        title=dict(text=_title(OP_LABELS.get(ops[0], ops[0]), cal), y=0.97),
        xaxis=dict(title="slot size (GiB, log scale)", type="log"),
        yaxis=dict(title="time per ioctl (µs, log scale)", type="log"),
        updatemenus=[dict(type="buttons", direction="right", buttons=buttons, x=0, y=1.16,
                          xanchor="left", yanchor="top", showactive=True)],
        legend=dict(orientation="h", y=-0.22), margin=dict(t=110), height=520)
    return fig


def _title(op: str, cal) -> str:
    return f"{op}: this machine's kernel vs the model<br><sup>{cal.label}</sup>"


def mmio_figure(cal, model_us: dict) -> go.Figure:
    """One trapped write: the host's KVM_RUN -> KVM_EXIT_MMIO -> KVM_RUN round trip
    (median, min..max) beside the model's exit and exit + emulation prices."""
    s = cal.get("MMIO_ROUND_TRIP")
    names = ["host: MMIO exit round trip [M]"] + [f"model: {k}" for k in model_us]
    vals = [s.median * 1e6] + list(model_us.values())
    err = [s.high * 1e6 - s.median * 1e6] + [0] * len(model_us)
    errm = [s.median * 1e6 - s.low * 1e6] + [0] * len(model_us)
    fig = go.Figure(go.Bar(
        x=names, y=vals, marker_color=[_HOST] + _MODEL_COLOURS[:len(model_us)],
        error_y=dict(type="data", array=err, arrayminus=errm),
        text=[f"{v:.3g} µs" for v in vals], textposition="outside"))
    fig.update_layout(title=dict(text=f"One trapped guest write<br><sup>{cal.label}</sup>"),
                      yaxis=dict(title="time per trapped write (µs)"), height=420)
    return fig


def agreement_table_figure(rows: Sequence[Sequence], label: str) -> go.Figure:
    """A table (what, checked, agreed, agreement) of a live check on ``label``."""
    cols = ["check", "requests / ops", "agree", "agreement"]
    fig = go.Figure(go.Table(
        header=dict(values=cols, align="left"),
        cells=dict(values=[[str(r[i]) for r in rows] for i in range(len(cols))], align="left")))
    fig.update_layout(title=dict(text=f"Model vs this machine's kernel<br><sup>{label}</sup>"),
                      height=120 + 30 * len(rows), margin=dict(t=70, b=10))
    return fig
