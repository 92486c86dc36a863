"""The schedule: every event of a run, in time order, decided before the run starts.

:func:`build_schedule` lays out

* **boot**: the layout's build ops and its ``[[churn]]`` entries
  (``kvmpt.workload.layouts``), or a real QEMU boot trace from ``data/traces/`` plus
  the layout slots the trace lacks; KVMGT attaches at vfio realize; the guest i915
  driver loads (``track``) after boot or right after the RAM layout;
* **runtime**: Poisson OVMF variable writes and adversarial MOVEs, periodic BAR
  toggle bursts and reboots at the scenario's rates (:meth:`Scenario.rate`),
  serialized one after the other as QEMU serializes memory transactions under the
  BQL.  Back-to-back ioctls are :data:`IOCTL_SPACING_S` apart.

An :class:`Event` is data; ``kvmpt.workload.scenario.loop`` applies it.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from kvmpt.constants import RAM_ROLES
from kvmpt.workload.layouts import Churn, Layout, build_ops, churn_ops, final_state
from kvmpt.workload.scenario.definition import TRACE_DIR, Scenario
from kvmpt.workload.trace import MemslotOp, load_qemu_trace

__all__ = ["Event", "build_schedule", "IOCTL_SPACING_S"]

IOCTL_SPACING_S = 57e-6     # median spacing of back-to-back memslot ioctls [D] workloads.md §1.5


@dataclass
class Event:
    """One thing that happens at time ``t`` (seconds): a memslot ``op``, a MOVE
    decided at run time (``move``), KVMGT ``attach``, GVT shadowing the tracked
    set (``track``) or dropping every shadow at a vGPU reset (``untrack``)."""

    t: float
    kind: str
    phase: str
    cause: str
    op: MemslotOp | None = None
    slot_key: tuple[int, int] | None = None
    fail: bool = False


def _burst(layout: Layout, roles, pairs: int, gap_us: float, period_us: float, t: float,
           tag: str | None) -> tuple[list[MemslotOp], float]:
    """``pairs`` rounds of DELETE + CREATE of every slot with one of ``roles``, from
    ``t`` on (``kvmpt.workload.layouts.churn_ops`` timing); returns the ops and the end time."""
    one = replace(layout, churn=(Churn("burst", tuple(roles), int(pairs), float(gap_us),
                                       float(period_us), tag or "[G]", "scenario"),))
    ops = churn_ops(one, t0=t)
    end = (ops[-1].timestamp if ops else t) + IOCTL_SPACING_S
    return ops, end


#: runtime burst kind -> (the slot role it toggles, the cause the time series names)
_RUNTIME_BURSTS = {"vars": ("flash-vars", "OVMF variable write"),
                   "bar": ("vgpu-aperture", "vGPU BAR toggle")}
#: a burst's (pairs, gap_us, period_us, tag) when the layout has no churn entry for its role
#: (a VARS burst's pairs are always the scenario's ``vars_pairs``)
_BURST_DEFAULTS = {"flash-vars": (None, 50, 200, "[G]"), "vgpu-aperture": (7, 1000, 1900, "[D]")}


def _churn_entry(layout: Layout, role: str):
    for c in layout.churn:
        if role in c.roles:
            return c
    return None


def _poisson_times(rng, rate: float, t0: float, t1: float) -> np.ndarray:
    if rate <= 0 or t1 <= t0:
        return np.zeros(0)
    n = int(rng.poisson(rate * (t1 - t0)))
    return np.sort(rng.uniform(t0, t1, n))


def _boot_events(sc: Scenario, layout: Layout, t0: float, phase: str, cause: str,
                 with_build: bool) -> tuple[list[Event], float]:
    """Build (optionally) + the layout's boot churn, or a trace replay."""
    ev: list[Event] = []
    t = t0
    if sc.boot.startswith("trace:") and with_build:
        ops = load_qemu_trace(TRACE_DIR / f"{sc.boot[6:]}.trace")
        # KVMGT's notifier registers at vfio device realize, after machine init: after the
        # trace's first two DELETEs (the initial RAM split) [D] workloads.md §3.3.
        dels = [i for i, o in enumerate(ops) if o.size == 0]
        attach_at = dels[1] + 1 if len(dels) >= 2 else 0
        for i, o in enumerate(ops):
            if i == attach_at:
                ev.append(Event(t, "attach", phase, "vfio realize"))
            ev.append(Event(t, "op", phase, "boot trace", op=o))
            t += IOCTL_SPACING_S
        if attach_at >= len(ops):
            ev.append(Event(t, "attach", phase, "vfio realize"))
        live = set(final_state(ops))         # (as_id, slot) of the slots the trace leaves
        for s in sorted(layout.slots, key=lambda s: (s.as_id, s.gpa)):
            if (s.as_id, s.slot) not in live:
                ev.append(Event(t, "op", phase, "layout slot absent from the trace",
                                op=MemslotOp(s.as_id, s.slot, s.flags, s.gpa, s.size, s.ua,
                                             ret=0, tag=s.tag)))
                t += IOCTL_SPACING_S
        return ev, t
    if with_build:
        for o in build_ops(layout):
            ev.append(Event(t, "op", phase, "build", op=o))
            t += IOCTL_SPACING_S
        ev.append(Event(t, "attach", phase, "vfio realize"))
    for o in churn_ops(layout, t0=t):
        ev.append(Event(o.timestamp, "op", phase, cause, op=o))
    if ev:
        t = max(t, ev[-1].t) + IOCTL_SPACING_S
    return ev, t


def build_schedule(sc: Scenario, layout: Layout, rng: np.random.Generator) -> tuple[list[Event], float, float]:
    """The event list in time order, the time the runtime phase starts, and when it ends."""
    events, t = _boot_events(sc, layout, 0.0, "boot", "boot churn", with_build=True)
    if sc.track_at == "after-ram-layout":
        # the driver loads right after the last AS0 RAM slot is (re)created
        last = max((i for i, e in enumerate(events) if e.kind == "op" and e.op.size
                    and e.op.as_id == 0 and _role(layout, e.op) in RAM_ROLES), default=None)
        pos = (last + 1) if last is not None else len(events)
        at = events[last].t if last is not None else t
        events.insert(pos, Event(at, "track", "boot", "guest i915 loads"))
        t_run = t
    else:
        events.append(Event(t, "track", "boot", "guest i915 loads"))
        t_run = t + IOCTL_SPACING_S
    t_end = t_run + sc.duration_s

    # runtime arrivals, then laid out one after the other (QEMU serializes memory
    # transactions under the BQL)
    arrivals: list[tuple[float, str, int]] = []
    for kind, rate in (("vars", sc.rate("vars_write_rate")), ("move", sc.rate("move_rate"))):
        for x in _poisson_times(rng, rate, t_run, t_end):
            arrivals.append((float(x), kind, 0))
    # driver reloads (BAR toggle bursts) and reboots are rare, long events: periodic with a
    # random phase, so a run of duration_s holds floor or ceil of rate * duration_s of them
    # (a short run is not left with a Poisson draw of 0)
    for kind, rate in (("bar", sc.rate("bar_toggle_rate")), ("reboot", sc.rate("reboot_rate"))):
        if rate > 0:
            x = t_run + rng.uniform(0, 1 / rate)
            while x < t_end:
                arrivals.append((float(x), kind, 0))
                x += 1 / rate
    arrivals.sort()
    fails = rng.random(len(arrivals)) < sc.rate("prepare_fail_rate")
    picks = rng.integers(0, 1 << 30, len(arrivals))
    ram_slots = [s for s in layout.slots_in(0) if s.role in RAM_ROLES]     # by gpa
    free = t_run
    for (x, kind, _), fail, pick in zip(arrivals, fails, picks):
        start = max(x, free)
        if kind in ("vars", "bar"):
            role, cause = _RUNTIME_BURSTS[kind]
            if not layout.with_role(role):
                continue            # no such slot (SeaBIOS: no pflash VARS; no vGPU)
            c = _churn_entry(layout, role)
            pairs, gap, period, tag = ((c.pairs, c.gap_us, c.period_us, c.tag) if c
                                       else _BURST_DEFAULTS[role])
            if kind == "vars":
                pairs = int(sc.vars_pairs)      # the scenario's, not the boot churn's
            ops, free = _burst(layout, [role], pairs, gap, period, start, tag)
            events += [Event(o.timestamp, "op", "runtime", cause, op=o) for o in ops]
        elif kind == "move":
            if not ram_slots:
                continue
            s = ram_slots[int(pick) % len(ram_slots)]
            events.append(Event(start, "move", "runtime", "adversarial MOVE",
                                slot_key=(0, s.slot), fail=bool(fail)))
            free = start + IOCTL_SPACING_S
        elif kind == "reboot":
            free = _reboot(sc, layout, start, events)
    events.sort(key=lambda e: e.t)          # stable: equal times keep their order
    return events, t_run, t_end


def _role(layout: Layout, op: MemslotOp) -> str | None:
    for s in layout.slots:
        if s.as_id == op.as_id and s.slot == op.slot:
            return s.role
    return None


def _reboot(sc: Scenario, layout: Layout, t: float, events: list[Event]) -> float:
    """system_reset: the reset-time memory re-layout (PAM/SMRAM back to their reset
    values: one round of each RAM-role churn entry), the vGPU reset (GVT drops every
    PPGTT shadow), the firmware's boot churn, and the guest driver loading again.
    Which of the first two QEMU does first is not established [G]: ``reboot_order``."""
    relayout = [c for c in layout.churn if any(r in RAM_ROLES for r in c.roles)]
    seq = ["relayout", "untrack"] if sc.reboot_order == "relayout-first" else ["untrack", "relayout"]
    for step in seq:
        if step == "untrack":
            events.append(Event(t, "untrack", "reboot", "vGPU reset"))
            t += IOCTL_SPACING_S
        else:
            for c in relayout:
                ops, t = _burst(layout, c.roles, 1, c.gap_us, c.period_us, t, c.tag)
                events += [Event(o.timestamp, "op", "reboot", "reset re-layout", op=o)
                           for o in ops]
    ev, t = _boot_events(sc, layout, t, "reboot", "firmware boot churn", with_build=False)
    events += ev
    events.append(Event(t, "track", "reboot", "guest i915 loads again"))
    return t + IOCTL_SPACING_S
