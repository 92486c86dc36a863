"""The event loop: :func:`run` applies a scenario's schedule to a fresh ``VM(design)``.

SimPy's whole loop: pop the next event, apply it.  For each scheduled
:class:`~kvmpt.workload.scenario.schedule.Event` in time order, the guest writes
that fall before it run as one batch (``vm.guest_write_batch``), then the event's
step (:data:`_EVENTS`) runs: KVMGT attaches, GVT shadows or drops its tracked set,
or a memslot ioctl (``KVM_SET_USER_MEMORY_REGION``) runs, a MOVE failing in
prepare when the event says so (``vm.fail_next_prepare(ENOMEM)``).

The VM's own accounting is the only record (``vm.work``, ``vm.hook_calls``,
``vm.write_stats``, ``vm.op_log``); the loop adds which event caused a piece of
``vm.work`` and one row per op.  The result's summary is
``kvmpt.workload.scenario.metrics.SUMMARY_METRICS``.
"""
from __future__ import annotations

import errno as errno_mod
from typing import Any

import numpy as np

from kvmpt.constants import GIB, PAGE_SHIFT, RAM_ROLES
from kvmpt.kernel.design import Design
from kvmpt.kernel.vm import VM
from kvmpt.kernel.work import HookCall
from kvmpt.workload.costs import COUNTERS, CostModel, default_costs
from kvmpt.workload.layouts import Layout
from kvmpt.workload.scenario.definition import Scenario
from kvmpt.workload.scenario.load import load_scenario
from kvmpt.workload.scenario.metrics import SUMMARY_METRICS, lock_holds
from kvmpt.workload.scenario.result import RunResult, _hook_table, _op_row, _OP_COLUMNS
from kvmpt.workload.scenario.schedule import Event, build_schedule
from kvmpt.workload.scenario.writes import _Writes
from kvmpt.workload.trace import MemslotOp

__all__ = ["run", "CAUSES"]


def _park_gpa(layout: Layout) -> dict[int, int]:
    """Where the adversarial VMM MOVEs each AS0 RAM slot: past the top of the layout,
    1 GiB aligned, one window per slot."""
    top = max(s.gpa + s.size for s in layout.slots)
    base = (-(-top // GIB) + 1) * GIB
    out = {}
    for s in layout.slots_in(0):                  # by gpa
        if s.role in RAM_ROLES:
            out[s.slot] = base
            base += (-(-s.size // GIB) + 1) * GIB
    return out


class _Touch:
    """Decides whether a memslot op can change ``vm.check_invariants()`` or
    ``gvt.stale_gfns()`` beyond what its hook calls show (the caller rechecks after
    hits, counter updates, errors and track events anyway).

    Conservative and independent of how the invariants are phrased: an op is
    skipped only if neither its old slot nor its new range holds a gfn GVT
    shadows or KVMGT's ``ptable`` holds (by gfn, or by host address for the
    hva-based shadow check), and the old slot is small and has no write-track
    counts.  ``refresh`` after anything that may have changed those sets; a
    stale cache only over-approximates (more rechecks, never fewer)."""

    def __init__(self) -> None:
        self.gfns = np.zeros(0, dtype=np.int64)
        self.hvas = np.zeros(0, dtype=np.int64)

    def refresh(self, gvt) -> None:
        if gvt is None:
            return
        g = set(gvt.page_track_tree) | gvt.ptable.gfns()
        self.gfns = np.array(sorted(g), dtype=np.int64)
        self.hvas = np.array(sorted(gvt.shadow_hva.values()), dtype=np.int64)

    @staticmethod
    def _any_in(arr: np.ndarray, lo: int, hi: int) -> bool:
        return bool(arr.size) and int(np.searchsorted(arr, hi)) > int(np.searchsorted(arr, lo))

    def touches(self, vm, op: MemslotOp) -> bool:
        ranges = []
        old = next((s for s in vm.memslots(op.as_id) if s.id == op.slot), None)
        if old is not None:
            if old.npages > 1 << 16:
                return True
            arr = old.arch.gfn_write_track
            if arr is not None and arr.any():
                return True
            ranges.append((old.base_gfn, old.npages, old.userspace_addr))
        if op.size:
            ranges.append((op.base_gfn, op.npages, op.ua))
        for base, n, ua in ranges:
            if self._any_in(self.gfns, base, base + n) or \
                    self._any_in(self.hvas, ua, ua + (n << PAGE_SHIFT)):
                return True
        return False


class _Run:
    """One run's state, advanced one event at a time (:data:`_EVENTS`).

    The VM's own accounting is the only record: its ``work`` (everything outside
    the slot hooks), its ``hook_calls`` (each with its own ``work``), its
    ``write_stats`` and its ``op_log``.  The loop adds two things the VM cannot
    know: which event caused a piece of ``vm.work`` (guest writes, a memslot
    ioctl, GVT shadowing: :attr:`caused`, Work counter deltas) and one row per
    memslot op for the time series.  The summary is :data:`SUMMARY_METRICS`,
    computed from those at the end; every cycle figure comes from
    :class:`kvmpt.workload.costs.CostModel`.
    """

    def __init__(self, sc: Scenario, design: Design, costs: CostModel, seed: int, check: str):
        self.sc, self.design, self.costs, self.seed, self.check = sc, design, costs, seed, check
        self.layout = sc.layout_obj()
        ss = np.random.SeedSequence(seed)
        rng_sched, self.rng_track, rng_write = (np.random.default_rng(s) for s in ss.spawn(3))
        self.events, self.t_run, self.t_end = build_schedule(sc, self.layout, rng_sched)
        self.roles = {(s.as_id, s.slot): s.role for s in self.layout.slots}
        self.homes = {s.slot: s.gpa for s in self.layout.slots if s.as_id == 0}
        self.parks = _park_gpa(self.layout)
        self.writes = _Writes(sc, self.layout, rng_write, self.t_run, self.t_end)
        self.vm = VM(design)
        self.gvt = None
        self.attached_at = 0               # len(vm.op_log) when KVMGT attached
        self.caused: dict[str, dict[str, int]] = {c: dict.fromkeys(COUNTERS, 0)
                                                  for c in CAUSES}
        self.rows: list[dict[str, Any]] = []
        self.row_of_op: dict[int, int] = {}            # vm.op_log index -> row
        self.since_op = dict.fromkeys(COUNTERS, 0)     # guest-write work since the last op
        self.writes_since_op = 0
        self.tracked_ever = False
        self.recheck = False
        self.stale_now = self.violations_now = 0
        self.touch = _Touch()

    # ----------------------------------------------------------- accounting
    def _charged(self, cause: str, fn) -> dict[str, int]:
        """Run ``fn()``; add the ``vm.work`` it did to ``caused[cause]`` and return it."""
        work = self.vm.work
        before = {k: getattr(work, k) for k in COUNTERS}
        fn()
        delta = {k: getattr(work, k) - before[k] for k in COUNTERS}
        into = self.caused[cause]
        for k, v in delta.items():
            into[k] += v
        return delta

    # ----------------------------------------------------------------- events
    def guest_writes(self, n: int) -> None:
        """The guest writes that fall before the next event, as one batch."""
        if n <= 0:
            return
        gpas = self.writes.gpas(n)
        delta = self._charged("writes", lambda: self.vm.guest_write_batch(gpas))
        for k, v in delta.items():
            self.since_op[k] += v
        self.writes_since_op += n

    def attach(self, ev: Event) -> None:
        self.gvt = self.vm.attach_kvmgt()
        self.attached_at = len(self.vm.op_log)

    def track(self, ev: Event) -> None:
        """The guest i915 driver loads: GVT shadows the tracked set."""
        if self.gvt is None or not self.sc.tracked_gfns:
            return
        from kvmpt.workload.replay import place_tracked
        seed = int(self.rng_track.integers(0, 2**31))
        self._charged("shadow", lambda: place_tracked(self.vm, self.gvt, int(self.sc.tracked_gfns),
                                                      seed=seed, roles=self.roles))
        self.tracked_ever = True
        self._shadowing_changed()

    def untrack(self, ev: Event) -> None:
        """A vGPU reset: GVT drops every shadow."""
        if self.gvt is None:
            return
        gvt = self.gvt

        def unshadow_all():
            for g in gvt.shadowed_gfns():
                gvt.unshadow(g)

        self._charged("shadow", unshadow_all)
        self._shadowing_changed()

    def _shadowing_changed(self) -> None:
        self.recheck = True
        self.touch.refresh(self.gvt)
        self.writes.set_shadowed(self.gvt.shadowed_gfns())

    def move(self, ev: Event) -> None:
        """The adversarial VMM MOVEs a RAM slot home or away (decided now: the slot
        may have been deleted meanwhile), failing in prepare if the event says so."""
        as_id, sid = ev.slot_key
        cur = {s.id: s for s in self.vm.memslots(as_id)}.get(sid)
        if cur is None:
            return                              # deleted right now: nothing to move
        home = self.homes[sid]
        gpa = home if cur.base_gfn << PAGE_SHIFT != home else self.parks[sid]
        if ev.fail:
            self.vm.fail_next_prepare(errno_mod.ENOMEM)
        self.memslot_op(ev, MemslotOp(as_id, sid, cur.flags, gpa, cur.npages << PAGE_SHIFT,
                                      cur.userspace_addr))

    def op(self, ev: Event) -> None:
        self.memslot_op(ev, ev.op)

    def memslot_op(self, ev: Event, op: MemslotOp) -> None:
        vm, gvt = self.vm, self.gvt
        dirty = self.check == "all" or (gvt is not None and self.tracked_ever
                                        and self.touch.touches(vm, op))
        n_log = len(vm.op_log)
        err = [0]

        def ioctl():
            try:
                vm.set_user_memory_region(op.ioctl_slot, op.flags, op.gpa, op.size, op.ua)
            except OSError as exc:
                err[0] = exc.errno
            # an injection not consumed (MOVE rejected before prepare allocates) must
            # not leak into the next op
            vm.fail_next_prepare(None)

        ioctl_work = self._charged("memslot", ioctl)
        rec = vm.op_log[-1] if len(vm.op_log) > n_log else None   # None: refused in S0 checks
        if rec is not None:
            self.row_of_op[rec.index] = len(self.rows)
        calls = rec.hook_calls if rec is not None else []
        hits = sum(c.hits for c in calls if c.node == "kvmgt")
        if gvt is not None and self.tracked_ever:
            if self.recheck or dirty or hits or err[0]:
                self.stale_now = len(gvt.stale_gfns())
                self.violations_now = len(vm.check_invariants()) if self.check != "end" else -1
                self.recheck = False
                if hits or err[0]:
                    self.touch.refresh(gvt)
        else:
            self.stale_now = 0
        self.rows.append(_op_row(self, ev, op, rec, err[0], ioctl_work, hits))
        self.since_op = dict.fromkeys(COUNTERS, 0)
        self.writes_since_op = 0

    # ---------------------------------------------------------------- result
    def result(self) -> RunResult:
        vm = self.vm
        self.violations = vm.check_invariants()
        if self.rows and self.check == "end":
            self.rows[-1]["violations"] = len(self.violations)
        cols = list(_OP_COLUMNS) + [f"cyc_{c}" for c in self.costs.categories]
        ts = {k: np.array([r[k] for r in self.rows]) for k in cols}
        summary = {name: fn(self) for name, fn in SUMMARY_METRICS.items()}
        return RunResult(self.sc, self.design, self.seed, summary, ts, self.costs,
                         hook_calls=_hook_table(self),
                         warnings=[w.message for w in vm.warnings],
                         violations=self.violations, work=vm.work,
                         write_stats=dict(vm.write_stats))

    # views the metrics share
    def kvmgt_calls(self) -> list[HookCall]:
        return [c for c in self.vm.hook_calls if c.node == "kvmgt"]

    def deletes_with_kvmgt(self) -> list:
        """Successful DELETEs made while KVMGT was attached."""
        return [r for r in self.vm.op_log[self.attached_at:]
                if self.gvt is not None and r.change == "DELETE" and r.errno == 0]

    def write_holds(self) -> list[tuple[float, float]]:
        """(held, longest) cycles of every ``write_lock(mmu_lock)`` account: each hook
        call, and ``vm.work`` (GVT shadowing, notifier changes)."""
        costs, vm = self.costs, self.vm
        return lock_holds(costs, vm.hook_calls) + [costs.mmu_lock_hold(vm.work)]


#: what caused a piece of ``vm.work`` (the slot hooks keep their own Work)
CAUSES = ("writes", "memslot", "shadow")

#: event kind -> the step that applies it (the schedule's whole vocabulary)
_EVENTS = {"attach": _Run.attach, "track": _Run.track, "untrack": _Run.untrack,
           "op": _Run.op, "move": _Run.move}


def run(scenario, design, seed: int | None = None, costs: CostModel | None = None,
        check: str = "ops") -> RunResult:
    """Run ``scenario`` (a Scenario or a name) under ``design`` (a Design or preset name).

    Deterministic for a given (scenario, design, seed); ``seed`` defaults to the
    scenario's.  ``costs`` defaults to ``data/costs.toml``.  ``check="ops"``
    counts invariant violations after every op once anything was tracked;
    ``"end"`` only at the end (faster; the ``violations`` column is then -1
    until the last row); ``"all"`` recomputes after every op instead of only
    after ops that can change them (a cross-check, slower).

    The loop is the whole simulation: for each scheduled event in time order, the
    guest writes that fall before it run as one batch (``vm.guest_write_batch``),
    then the event is applied (:data:`_EVENTS`).  The summary is
    :data:`SUMMARY_METRICS`.
    """
    sc = load_scenario(scenario) if not isinstance(scenario, Scenario) else scenario
    if check not in ("ops", "end", "all"):
        raise ValueError("check must be 'ops', 'end' or 'all'")
    r = _Run(sc, Design.coerce(design), costs or default_costs(),
             sc.seed if seed is None else int(seed), check)
    for ev in r.events:
        if ev.t >= r.t_run:
            r.guest_writes(r.writes.take_until(ev.t))
        _EVENTS[ev.kind](r, ev)
    r.guest_writes(r.writes.rest())
    return r.result()
