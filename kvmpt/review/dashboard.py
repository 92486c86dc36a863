"""The design dashboard: ipywidgets controls that re-run a scenario and redraw in place.

Built from one declarative table, :data:`PARAMETERS`: each row names a knob, its widget
kind, its choices and its default; :func:`controls` turns the table into widgets and
:class:`Dashboard` wires them to :func:`evaluate` (the scenario, through the model and
its Numba kernels) and to two ``go.FigureWidget`` s that are updated in place.

The model never imports this module.  In a static HTML export widgets are dead, so
the notebook follows the dashboard with precomputed plotly figures whose buttons
(``updatemenus``) toggle the same design variants without a kernel.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from kvmpt.review.claims import GIB, PROPOSAL, cost_curve, price_rows
from kvmpt.kernel.design import KNOBS, KVMGT_LOCKS, Design, parse_design

__all__ = ["Param", "PARAMETERS", "controls", "evaluate", "Dashboard", "DEFAULTS"]


@dataclass(frozen=True)
class Param:
    """One row of the dashboard's parameter table."""

    name: str                    # the knob (a Design field or a scenario parameter)
    label: str
    kind: str                    # "toggle" | "choice" (a slider over options) | "int"
    options: tuple = ()          # ((label, value), ...) for toggle / choice
    default: Any = None
    lo: int = 0                  # for "int"
    hi: int = 0
    help: str = ""


PARAMETERS: tuple[Param, ...] = (
    Param("slot_hook", "slot hook", "toggle",
          (("flush (v6.5)", "flush"), ("remove (v6.6)", "remove")), "flush",
          help="where KVMGT hears about a memslot going away: S2c or S7"),
    Param("move", "MOVE policy", "toggle", (("allow", "allow"), ("reject", "reject")),
          "allow", help="reject: MOVE with an external tracker -> EINVAL at S3"),
    Param("kvmgt_lock", "ptable lock", "toggle", tuple((lk, lk) for lk in KVMGT_LOCKS),
          "none", help="what guards KVMGT's ptable in kvmgt_page_track_write"),
    Param("drop_protection_on_remove", "protection drop", "toggle",
          (("drop", True), ("keep", False)), True,
          help="does the slot hook also drop KVM's write-track counts"),
    Param("scenario", "scenario", "toggle",
          (("QEMU desktop", "q35-desktop"), ("reboots", "q35-reboot"),
           ("adversarial VMM", "q35-adversarial")), "q35-adversarial",
          help="data/scenarios: QEMU-like churn, or a VMM that MOVEs RAM slots"),
    Param("slot_gib", "slot size", "choice",
          tuple((f"{g} GiB" if g < 1024 else "1 TiB", g) for g in (1, 4, 16, 64, 256, 1024)),
          64, help="the slot the DELETE removes"),
    Param("tracked", "tracked gfns", "choice",
          tuple((f"{n:,}", n) for n in (16, 64, 256, 1024, 4096)), 1024,
          help="guest page-table pages GVT shadows"),
    Param("write_rate", "writes/s", "choice",
          tuple((f"{n:,}", n) for n in (500, 2_000, 10_000)), 2_000,
          help="the guest's write rate in the scenario"),
    Param("seed", "seed", "int", default=0, lo=0, hi=9),
)
DEFAULTS = {p.name: p.default for p in PARAMETERS}
DESIGN_KNOBS = KNOBS
__all__ += ["static_variants", "design_of"]

#: slot sizes the cost curve is drawn at (GiB)
CURVE_GIB = (1, 4, 16, 64, 256, 1024)
EXACT_MAX_PAGES = 1 << 18        # the dashboard runs the walk gfn by gfn up to 1 GiB


def design_of(values: Mapping[str, Any]) -> Design:
    """The design the controls show (``kvmpt.kernel.design.parse_design`` of their knob values)."""
    return parse_design({k: values[k] for k in DESIGN_KNOBS})


# ------------------------------------------------------------------ the scenario
@functools.lru_cache(maxsize=128)
def _run(scenario: str, design: Design, tracked: int, write_rate: int, seed: int):
    import dataclasses

    from kvmpt.workload.scenario import load_scenario, run
    sc = dataclasses.replace(load_scenario(scenario), tracked_gfns=tracked,
                             write_rate=write_rate)
    return run(sc, design, seed=seed, check="end")


@functools.lru_cache(maxsize=4)
def _verdict(lock: str):
    from kvmpt.race import explore
    r = explore(lock)
    return r.verdict, r.failing_states, r.states


@functools.lru_cache(maxsize=256)
def _curve(design: Design, tracked: int, seed: int) -> list[dict]:
    """``claims.cost_curve`` of one design (and the ptable-walk proposal) over
    :data:`CURVE_GIB`, priced (``claims.price_rows``)."""
    return price_rows(cost_curve({design.name: design}, [g * (GIB >> 12) for g in CURVE_GIB],
                                 [tracked], exact_max_pages=EXACT_MAX_PAGES, seed=seed))


def evaluate(values: Mapping[str, Any]) -> dict[str, Any]:
    """Run the dashboard's scenario for one setting of :data:`PARAMETERS`:

    * ``kvmpt.run(scenario, design, seed)`` with the chosen tracked set and write rate
      (the model with its Numba kernels: guest write batches, slot walks), for the
      missed-write and stale-page time series;
    * one DELETE of a ``slot_gib`` slot holding ``tracked`` shadowed pages: the slot
      hook's time and longest ``mmu_lock`` hold (``kvmpt.workload.costs``), against the
      ptable-walk proposal;
    * the lock design's verdict from the race explorer.

    Every piece is cached per setting, so going back to a setting is instant.
    """
    v = {**DEFAULTS, **values}
    d = design_of(v)
    run = _run(v["scenario"], d, int(v["tracked"]), int(v["write_rate"]), int(v["seed"]))
    curve = _curve(d, int(v["tracked"]), int(v["seed"]))
    n = int(v["slot_gib"]) * (GIB >> 12)
    here = next(r for r in curve if r["npages"] == n and r["design"] == d.name)
    return {"design": d, "run": run, "curve": curve, "here": here,
            "verdict": _verdict(d.kvmgt_lock), "values": v}


# ------------------------------------------------------------------ the widgets
def controls(params: Sequence[Param] = PARAMETERS, values: Mapping[str, Any] | None = None):
    """One widget per parameter row: ToggleButtons, SelectionSlider or IntSlider."""
    import ipywidgets as W
    values = {**DEFAULTS, **(values or {})}
    out = {}
    style = {"description_width": "110px"}
    for p in params:
        if p.kind == "toggle":
            w = W.ToggleButtons(options=list(p.options), value=values[p.name],
                                description=p.label, tooltips=[p.help] * len(p.options),
                                style={**style, "button_width": "105px"})
        elif p.kind == "choice":
            w = W.SelectionSlider(options=list(p.options), value=values[p.name],
                                  description=p.label, continuous_update=False, style=style,
                                  layout=W.Layout(width="420px"))
        elif p.kind == "int":
            w = W.IntSlider(value=values[p.name], min=p.lo, max=p.hi, description=p.label,
                            continuous_update=False, style=style, layout=W.Layout(width="420px"))
        else:
            raise ValueError(f"unknown parameter kind {p.kind!r} for {p.name}")
        out[p.name] = w
    return out


def _cost_title(res) -> str:
    h = res["here"]
    v, bad, total = res["verdict"]
    size = res["values"]["slot_gib"]
    return (f"DELETE of a {size:,} GiB slot: slot hook {h['us']:,.0f} µs, longest mmu_lock "
            f"hold {h['hold_us']:,.0f} µs; "
            f"ptable lock <b>{res['design'].kvmgt_lock}: {v}</b> "
            f"({bad:,} of {total:,} states fail)")


class Dashboard:
    """Controls + two FigureWidgets, redrawn in place on every change.

    ``Dashboard().widget`` is the ipywidgets box to display; ``last_seconds`` is how long
    the last update took (scenario + redraw), shown under the controls."""

    def __init__(self, values: Mapping[str, Any] | None = None):
        import ipywidgets as W
        import plotly.graph_objects as go

        from kvmpt.review.figures.memslot import scenario_timeline
        self.controls = controls(values=values)
        self.values = {k: w.value for k, w in self.controls.items()}
        t0 = time.perf_counter()
        res = evaluate(self.values)
        self.timeline = go.FigureWidget(scenario_timeline({res["design"].name: res["run"]}))
        self.cost = go.FigureWidget(self._cost_figure(res))
        self.last_seconds = time.perf_counter() - t0
        self.status = W.HTML(self._status())
        for w in self.controls.values():
            w.observe(self._changed, names="value")
        names = [p.name for p in PARAMETERS]
        left = W.VBox([self.controls[n] for n in names[:5]])
        right = W.VBox([self.controls[n] for n in names[5:]])
        self.widget = W.VBox([W.HBox([left, right]), self.status, self.timeline, self.cost])

    def _status(self) -> str:
        return (f"<small>last update: {self.last_seconds * 1000:,.0f} ms (kvmpt.run through "
                "the Numba kernels + redraw; settings seen before are cached)</small>")

    @staticmethod
    def _cost_figure(res):
        import plotly.graph_objects as go
        fig = go.Figure()
        for name, colour, dash in ((res["design"].name, "#E45756", "solid"),
                                   (PROPOSAL, "#54A24B", "dot")):
            rows = [r for r in res["curve"] if r["design"] == name]
            fig.add_trace(go.Scatter(
                x=[r["npages"] / (GIB >> 12) for r in rows], y=[r["us"] for r in rows],
                mode="lines+markers", line=dict(color=colour, dash=dash),
                name="this design: slot hook time" if name != PROPOSAL
                else "proposal (no kernel): walk ptable"))
        rows = [r for r in res["curve"] if r["design"] == res["design"].name]
        fig.add_trace(go.Scatter(
            x=[r["npages"] / (GIB >> 12) for r in rows],
            y=[max(r["hold_us"], 1e-3) for r in rows], mode="lines+markers",
            line=dict(color="#4C78A8"), name="longest mmu_lock hold (0 drawn at 1 ns)"))
        h = res["here"]
        fig.add_trace(go.Scatter(x=[h["npages"] / (GIB >> 12)], y=[h["us"]], mode="markers",
                                 marker=dict(size=16, symbol="x", color="#333"),
                                 name="chosen slot size"))
        fig.update_layout(
            title=dict(text=_cost_title(res), font=dict(size=12)),
            xaxis=dict(title="deleted slot (GiB, log)", type="log"),
            yaxis=dict(title="µs (kvmpt.workload.costs, 3 GHz)", type="log"),
            template="plotly_white", height=380, width=1050,
            margin=dict(l=70, r=20, t=60, b=50))
        return fig

    def _changed(self, change) -> None:
        for name, w in self.controls.items():
            self.values[name] = w.value
        self.redraw()

    def redraw(self) -> float:
        """Re-run :func:`evaluate` and update both figures in place; returns seconds."""
        from kvmpt.review.figures.memslot import scenario_title, scenario_traces
        t0 = time.perf_counter()
        res = evaluate(self.values)
        fresh = scenario_traces(res["run"])
        with self.timeline.batch_update():
            for old, new in zip(self.timeline.data, fresh):
                old.x, old.y = new.x, new.y
            self.timeline.layout.title.text = scenario_title(res["design"].name, res["run"])
        new = self._cost_figure(res)
        with self.cost.batch_update():
            for old, tr in zip(self.cost.data, new.data):
                old.x, old.y, old.name = tr.x, tr.y, tr.name
            self.cost.layout.title.text = new.layout.title.text
        self.last_seconds = time.perf_counter() - t0
        self.status.value = self._status()
        return self.last_seconds


def static_variants(scenario: str = "q35-adversarial", tracked: int | None = None,
                    write_rate: int | None = None, seed: int | None = None) -> dict[str, Any]:
    """The kernel-free companion of the dashboard: ``kvmpt.run`` of ``scenario`` for every
    combination of slot hook x MOVE policy x protection drop (the lock of the kernel the
    hook comes from), precomputed for a figure with a drop-down of designs."""
    import dataclasses

    from kvmpt.workload.scenario import load_scenario, run
    sc = load_scenario(scenario)
    changes = {k: v for k, v in (("tracked_gfns", tracked), ("write_rate", write_rate))
               if v is not None}
    sc = dataclasses.replace(sc, **changes)
    out = {}
    for hook in ("flush", "remove"):
        for move in ("allow", "reject"):
            for drop in (True, False):
                d = Design(hook, move, "none" if hook == "flush" else "vgpu_lock", drop)
                out[d.name] = run(sc, d, seed=seed, check="end")
    return out
