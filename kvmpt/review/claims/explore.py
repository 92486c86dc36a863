"""Section 7: the experiment behind the dashboard, one call per setting of its controls.

:func:`evaluate` takes the dashboard's parameter values (``kvmpt.review.dashboard.PARAMETERS``)
and returns plain data: the scenario run (``kvmpt.run`` through the model and its Numba
kernels), the DELETE cost curve of the design's slot hook against the ptable-walk proposal,
and the race explorer's verdict for the design's lock.  Each piece is cached on the knobs it
depends on, so a change of one control re-runs only what that control changes.
:func:`static_variants` is the kernel-free companion: the scenario for every combination of
the design knobs, for a figure with buttons.
"""
from __future__ import annotations

import dataclasses
import functools
import threading
from concurrent.futures import Future
from typing import Any, Callable, Mapping

from kvmpt.constants import GIB, KNOBS, PAGE_SHIFT
from kvmpt.kernel.design import Design, parse_design
from kvmpt.review.claims.costs import PROPOSAL, cost_curve, price_rows
from kvmpt.review.claims.locks import lock_verdict

__all__ = ["CURVE_GIB", "EXACT_MAX_PAGES", "design_of", "evaluate", "scenario_run",
           "static_variants", "neighbours", "neighbours_in_order", "warm"]

#: slot sizes the dashboard's cost curve is drawn at (GiB)
CURVE_GIB = (1, 4, 16, 64, 256, 1024)
EXACT_MAX_PAGES = 1 << 18        # the dashboard runs the walk gfn by gfn up to 1 GiB
_GIB_PAGES = GIB >> PAGE_SHIFT


def design_of(values: Mapping[str, Any]) -> Design:
    """The design the controls show (``kvmpt.kernel.design.parse_design`` of their knob values)."""
    return parse_design({k: values[k] for k in KNOBS})


def _single_flight(fn: Callable) -> Callable:
    """Cache ``fn`` per argument tuple, computing each key once even when two threads
    (a click and :func:`warm`) ask for it at the same time: the second waits for the
    first's result.  ``.calls`` counts the computations, ``.hits`` the answers served
    from the cache; ``.cache_clear()`` forgets everything."""
    lock = threading.Lock()
    futures: dict[tuple, Future] = {}

    @functools.wraps(fn)
    def cached(*args):
        with lock:
            fut = futures.get(args)
            mine = fut is None
            if mine:
                fut = futures[args] = Future()
                cached.calls += 1
            else:
                cached.hits += 1
        if mine:
            try:
                fut.set_result(fn(*args))
            except BaseException as exc:      # re-raised below and to every waiter
                with lock:
                    del futures[args]
                fut.set_exception(exc)
        return fut.result()

    def cache_clear():
        with lock:
            futures.clear()
            cached.calls = cached.hits = 0

    cached.calls = cached.hits = 0
    cached.cache_clear = cache_clear
    return cached


@_single_flight
def scenario_run(scenario: str, design: Design, tracked: int, write_rate: int, seed: int):
    """``kvmpt.run`` of ``scenario`` with ``tracked`` shadowed pages and the guest writing
    ``write_rate`` times a second, checked at the end; computed once per argument tuple."""
    from kvmpt.workload.scenario import load_scenario, run
    sc = dataclasses.replace(load_scenario(scenario), tracked_gfns=tracked,
                             write_rate=write_rate)
    return run(sc, design, seed=seed, check="end")


@_single_flight
def _curve(design: Design, tracked: int, seed: int) -> tuple[dict, ...]:
    """``cost_curve`` of one design (and the ptable-walk proposal) over :data:`CURVE_GIB`,
    priced.  A DELETE never reaches the MOVE check, so the dashboard asks with
    ``move="allow"`` whatever the control says (:func:`evaluate`)."""
    return tuple(price_rows(cost_curve({design.name: design},
                                       [g * _GIB_PAGES for g in CURVE_GIB], [tracked],
                                       exact_max_pages=EXACT_MAX_PAGES, seed=seed)))


def evaluate(values: Mapping[str, Any]) -> dict[str, Any]:
    """Run the dashboard's experiment for one setting of its parameters:

    * ``kvmpt.run(scenario, design, seed)`` with the chosen tracked set and write rate,
      for the missed-write and stale-page time series;
    * one DELETE of a ``slot_gib`` slot holding ``tracked`` shadowed pages: the slot
      hook's time and longest ``mmu_lock`` hold (``kvmpt.workload.costs``), against the
      ptable-walk proposal, at every size of :data:`CURVE_GIB`;
    * the lock design's verdict from the race explorer.

    ``values`` must name every knob of ``KNOBS`` and ``scenario``, ``slot_gib``, ``tracked``,
    ``write_rate``, ``seed``.  Every piece is cached on what it depends on."""
    d = design_of(values)
    tracked, seed = int(values["tracked"]), int(values["seed"])
    run = scenario_run(values["scenario"], d, tracked, int(values["write_rate"]), seed)
    rows = _curve(d.replace(move="allow"), tracked, seed)
    cost_name = d.replace(move="allow").name
    curve = [dict(r, design=d.name) if r["design"] == cost_name else dict(r) for r in rows]
    n = int(values["slot_gib"]) * _GIB_PAGES
    here = next(r for r in curve if r["npages"] == n and r["design"] == d.name)
    r = lock_verdict(d.kvmgt_lock)
    return {"design": d, "run": run, "curve": curve, "here": here, "proposal": PROPOSAL,
            "verdict": (r.verdict, r.failing_states, r.states), "values": dict(values)}


def neighbours(values: Mapping[str, Any], options: Mapping[str, tuple]) -> list[dict]:
    """The settings one control change away from ``values`` (``options``: each control's
    possible values): what the next click can ask for, to warm :func:`evaluate`'s caches."""
    out = []
    for name, opts in options.items():
        for o in opts:
            if o != values[name]:
                out.append({**values, name: o})
    return out


def neighbours_in_order(values: Mapping[str, Any], options: Mapping[str, tuple]) -> list[dict]:
    """:func:`neighbours`, the design-knob changes first (the likeliest first click)."""
    return sorted(neighbours(values, options),
                  key=lambda v: not any(v[k] != values[k] for k in KNOBS))


def warm(values: Mapping[str, Any], options: Mapping[str, tuple],
         stop: threading.Event | None = None) -> int:
    """:func:`evaluate` every setting one control change away from ``values``, design knobs
    first (the likeliest first click), so the next redraw finds its results cached.  Stops
    early when ``stop`` is set; returns the number of settings evaluated."""
    done = 0
    for v in neighbours_in_order(values, options):
        if stop is not None and stop.is_set():
            break
        evaluate(v)
        done += 1
    return done


def static_variants(scenario: str = "q35-adversarial", tracked: int | None = None,
                    write_rate: int | None = None, seed: int | None = None) -> dict[str, Any]:
    """The kernel-free companion of the dashboard: ``kvmpt.run`` of ``scenario`` for every
    combination of slot hook x MOVE policy x protection drop (the lock of the kernel the
    hook comes from), precomputed for a figure with a drop-down of designs."""
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
