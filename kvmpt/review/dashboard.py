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

import threading
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from kvmpt.constants import KNOBS, KVMGT_LOCKS
from kvmpt.review.claims import design_of, static_variants
from kvmpt.review.claims import explore as _explore

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


#: the speed goal of a click: the first redraw, click to new figure in JupyterLab
#: (benchmarks/dashboard_redraw.py measures it, benchmarks/dashboard_bench.py its parts)
REDRAW_GOAL_S = 0.5
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

CURVE_GIB = _explore.CURVE_GIB
EXACT_MAX_PAGES = _explore.EXACT_MAX_PAGES


def evaluate(values: Mapping[str, Any]) -> dict[str, Any]:
    """``kvmpt.review.claims.evaluate`` of ``values`` over :data:`DEFAULTS`: the one
    experiment call behind every redraw."""
    return _explore.evaluate({**DEFAULTS, **values})


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


class Dashboard:
    """Controls + two FigureWidgets, redrawn in place on every change.

    ``Dashboard().widget`` is the ipywidgets box to display; ``last_seconds`` is how long
    the last update took (scenario + redraw), shown under the controls.  With ``warm``
    (the default) the settings the design toggles lead to are evaluated before the
    constructor returns, and after each redraw a background thread evaluates every setting
    one click away from the new one, design knobs first, so a click usually redraws from
    cached results; ``close()`` stops it."""

    #: seconds the warmer waits after a redraw before it computes
    SETTLE_S = 1.0

    def __init__(self, values: Mapping[str, Any] | None = None, warm: bool = True):
        import ipywidgets as W
        import plotly.graph_objects as go

        from kvmpt.review.figures.dashboard import hook_cost_curve
        from kvmpt.review.figures.memslot import scenario_timeline
        self.controls = controls(values=values)
        self.values = {k: w.value for k, w in self.controls.items()}
        t0 = time.perf_counter()
        res = evaluate(self.values)
        self.timeline = go.FigureWidget(scenario_timeline({res["design"].name: res["run"]}))
        self.cost = go.FigureWidget(hook_cost_curve(res))
        self.last_seconds = time.perf_counter() - t0
        self._warm_lock = threading.Lock()
        self._wake = threading.Event()        # a new setting to warm around
        self._idle = threading.Event()        # no redraw running: warming may proceed
        self._idle.set()
        self._closed = False
        self._generation = 0
        self.warm_thread: threading.Thread | None = None
        if warm:
            # The settings a design toggle leads to are evaluated before the cell returns, so
            # the first click redraws from the cache (REDRAW_GOAL_S); the rest in background.
            full = {**DEFAULTS, **self.values}
            for v in _explore.neighbours_in_order(full, self._options()):
                if not any(v[k] != full[k] for k in KNOBS):
                    break
                _explore.evaluate(v)
            self.warm_thread = threading.Thread(target=self._warm_loop, daemon=True,
                                                name="kvmpt-dashboard-warm")
            self.warm_thread.start()      # woken by the first redraw (see _warm_loop)
        self.status = W.HTML(self._status())
        for w in self.controls.values():
            w.observe(self._changed, names="value")
        names = [p.name for p in PARAMETERS]
        left = W.VBox([self.controls[n] for n in names[:5]])
        right = W.VBox([self.controls[n] for n in names[5:]])
        self.widget = W.VBox([W.HBox([left, right]), self.status, self.timeline, self.cost])

    def _options(self) -> dict[str, tuple]:
        return {p.name: tuple(v for _, v in p.options) if p.options
                else tuple(range(p.lo, p.hi + 1)) for p in PARAMETERS}

    def warm(self) -> int:
        """Evaluate, here and now, every setting one click away from the one shown
        (``claims.explore.warm``); returns how many."""
        return _explore.warm({**DEFAULTS, **self.values}, self._options())

    def _warm_loop(self) -> None:
        """The background warmer: one thread for the dashboard's life.  After each redraw
        (the design toggles' settings are evaluated before the cell returns) it evaluates
        the settings one click away from the new one, design knobs first,
        one at a time, pausing while a redraw runs and starting over when the setting
        changes; ``claims.explore`` computes each key once, so a click on a setting being
        warmed waits for that computation instead of repeating it."""
        while True:
            self._wake.wait()
            # Let the redraw's updates reach the browser before competing with the kernel's
            # message threads for the GIL (measured: a busy warmer adds ~0.3 s to a click).
            time.sleep(self.SETTLE_S)
            with self._warm_lock:
                self._wake.clear()
                if self._closed:
                    return
                values, generation = {**DEFAULTS, **self.values}, self._generation
            for v in _explore.neighbours_in_order(values, self._options()):
                self._idle.wait()
                if self._closed or self._generation != generation:
                    break
                _explore.evaluate(v)

    def close(self) -> None:
        """Stop the warmer (the setting it is on finishes) and wait for it."""
        with self._warm_lock:
            self._closed = True
        self._wake.set()
        self._idle.set()
        if self.warm_thread is not None:
            self.warm_thread.join()

    def _status(self) -> str:
        return (f"<small>last update: {self.last_seconds * 1000:,.0f} ms (kvmpt.run through "
                "the Numba kernels + redraw; settings seen before, and those one click away, are "
                "computed ahead)</small>")

    def _changed(self, change) -> None:
        for name, w in self.controls.items():
            self.values[name] = w.value
        self.redraw()

    def redraw(self) -> float:
        """Re-run :func:`evaluate` and update both figures in place; returns seconds."""
        t0 = time.perf_counter()
        self._idle.clear()
        try:
            res = evaluate(self.values)
            self._update(res)
        finally:
            with self._warm_lock:
                self._generation += 1
            self._wake.set()
            self._idle.set()
        self.last_seconds = time.perf_counter() - t0
        self.status.value = self._status()
        return self.last_seconds

    def _update(self, res) -> None:
        from kvmpt.review.figures.dashboard import hook_cost_series, hook_cost_title
        from kvmpt.review.figures.memslot import scenario_title, scenario_traces
        fresh = scenario_traces(res["run"])
        with self.timeline.batch_update():
            for old, new in zip(self.timeline.data, fresh):
                old.x, old.y = new.x, new.y
            self.timeline.layout.title.text = scenario_title(res["design"].name, res["run"])
        with self.cost.batch_update():
            for old, new in zip(self.cost.data, hook_cost_series(res)):
                old.x, old.y, old.name = new["x"], new["y"], new["name"]
            self.cost.layout.title.text = hook_cost_title(res)
