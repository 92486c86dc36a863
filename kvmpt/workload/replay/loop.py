"""The replay loop: each op through ``vm.set_user_memory_region()``, recorded as an
:class:`~kvmpt.workload.replay.result.OpResult`; :func:`replay_designs` runs it on a
fresh VM per design, and :class:`VM` is ``kvmpt.VM`` (the model's VM plus ``vm.replay``)."""
from __future__ import annotations

import errno as errno_mod
import sys
from typing import Mapping, Sequence

from kvmpt.constants import PAGE_SHIFT
from kvmpt.kernel.design import Design
from kvmpt.kernel.design import parse_design as _parse_design
from kvmpt.kernel.memslot import DELETE
from kvmpt.kernel.vm import VM as _ModelVM
from kvmpt.workload.costs import CostModel
from kvmpt.workload.replay.prologue import infer_prologue
from kvmpt.workload.replay.result import OpResult, ReplayResult
from kvmpt.workload.replay.tracked import (TrackedSet, auto_track_point, place_tracked,
                                           ram_candidates)
from kvmpt.workload.trace import MemslotOp


def _stale_count(gvt) -> int | None:
    if gvt is None:
        return None
    return len(gvt.stale_gfns())


def _may_change_staleness(calls, kind: str) -> bool:
    """Whether an op can have changed which shadowed gfns are stale, so that
    ``gvt.stale_gfns()`` (a walk over every shadowed gfn) is worth calling:
    a slot hook that hit a tracked gfn or touched a write-track count, or any
    MOVE (fresh, zeroed counts for the new range, §3.3).  Other ops leave
    KVMGT's ptable and the counts of shadowed gfns alone.  The final
    ``stale_gfns`` is always computed in full; ``ReplayResult.unattributed_stale``
    says if this rule ever missed one."""
    for c in calls:
        if c.hits or c.work.ops["counter_updates"]:
            return True
    return kind == "MOVE"


def _apply(vm, op: MemslotOp, index: int, gvt, stale_before: int | None) -> OpResult:
    """Apply one op and record what it did (kind, errno, hook calls, WARNs, staleness)."""
    decision = vm.check_user_memory_region(op.ioctl_slot, op.flags, op.gpa, op.size, op.ua)
    kind, old = decision.change, decision.old
    note = ""
    if kind == DELETE and op.base_gfn != old.base_gfn:
        note = (f"DELETE line says gpa 0x{op.gpa:x}, the slot is at "
                f"0x{old.base_gfn << PAGE_SHIFT:x}")
    calls_before, warns_before, log_before = (len(vm.hook_calls), len(vm.warnings),
                                              len(vm.op_log))
    try:
        vm.set_user_memory_region(op.ioctl_slot, op.flags, op.gpa, op.size, op.ua)
        err = 0
    except OSError as exc:
        err = exc.errno if exc.errno is not None else errno_mod.EIO
    calls = tuple(vm.hook_calls[calls_before:])
    warns = tuple(w.message for w in vm.warnings[warns_before:])
    log = vm.op_log
    if len(log) > log_before and log[-1].change != kind:    # one rules function: never
        raise AssertionError(f"op {index}: decided {kind}, the model made {log[-1].change}")
    stale_after, newly = stale_before, 0
    if gvt is not None and _may_change_staleness(calls, kind):
        stale_after = _stale_count(gvt)
        newly = max(0, stale_after - (stale_before or 0))
    return OpResult(index=index, op=op, kind=kind, errno=err, expected=op.errno, note=note,
                    hook_calls=calls, stale_after=stale_after, newly_stale=newly,
                    warnings=warns)


def _progress(iterable, total: int, enabled: bool | None, desc: str):
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return iterable
    from tqdm import tqdm
    return tqdm(iterable, total=total, desc=desc, unit="op", leave=False, mininterval=0.5,
                delay=1.0)


def replay(vm, ops: Sequence[MemslotOp], *, kvmgt: bool = False, tracked: int = 0,
           track_after: int | None = None, seed: int = 0, costs=None,
           infer_missing: bool = True, roles: Mapping[tuple[int, int], str] | None = None,
           check_invariants: bool = True, progress: bool | None = False,
           source: str = "") -> ReplayResult:
    """Apply ``ops`` to ``vm`` in order and report what happened (see module doc).

    ``kvmgt`` attaches KVMGT before the first op (QEMU opens the vfio device at
    realize, before the guest runs; workloads.md §3.3); ``tracked > 0``
    implies it and places that many shadowed gfns in AS0 RAM after
    ``track_after`` trace ops (None: :func:`auto_track_point`, or the first
    point after it with enough RAM).  ``roles``
    maps (as_id, slot) to a layout role, to place them in RAM slots by role.
    ``costs`` (a ``kvmpt.workload.costs.CostModel``) prices the hook calls.
    """
    ops = list(ops)
    if costs is not None and not isinstance(costs, CostModel):
        raise TypeError(f"costs must be a kvmpt.workload.costs.CostModel or None, got "
                        f"{type(costs).__name__}")
    if tracked < 0:
        raise ValueError("tracked must be >= 0")
    if track_after is not None and not 0 <= track_after <= len(ops):
        raise ValueError(f"track_after={track_after} is outside 0..{len(ops)}")
    design = vm.design
    address_spaces = range(vm.profile.address_spaces)

    # A KVMGT the caller attached (and maybe shadowed gfns with) is observed as is.
    gvt = vm.kvmgt
    if gvt is not None and not gvt.attached:
        gvt = None
    if gvt is None and (kvmgt or tracked > 0):
        gvt = vm.attach_kvmgt()
    kvmgt = gvt is not None

    prologue_results: list[OpResult] = []
    if infer_missing:
        present = {(a, s.id) for a in address_spaces for s in vm.memslots(a)}
        for op in infer_prologue(ops, present):
            prologue_results.append(_apply(vm, op, -1, gvt, _stale_count(gvt)))

    tracked_set: TrackedSet | None = None
    target = track_after if track_after is not None else auto_track_point(ops, roles)

    def maybe_place(done: int) -> None:
        nonlocal tracked_set
        if tracked_set is not None or tracked <= 0 or done < target:
            return
        if track_after is not None:
            tracked_set = place_tracked(vm, gvt, tracked, seed, roles, done)
            return
        cands = ram_candidates(vm, roles)
        if sum(s.npages for s in cands) >= tracked:
            tracked_set = place_tracked(vm, gvt, tracked, seed, roles, done)

    results: list[OpResult] = []
    maybe_place(0)
    stale = _stale_count(gvt)
    for i, op in enumerate(_progress(ops, len(ops), progress, design.name)):
        r = _apply(vm, op, i, gvt, stale)
        results.append(r)
        if r.stale_after is not None:
            stale = r.stale_after
        maybe_place(i + 1)
    if tracked > 0 and tracked_set is None:
        raise ValueError(f"cannot place {tracked} tracked gfns: address space 0 never has "
                         "that much RAM in this trace (use a layout)")

    final = {a: [(s.id, s.base_gfn << PAGE_SHIFT, s.npages << PAGE_SHIFT, s.flags, s.userspace_addr)
                 for s in vm.memslots(a)] for a in address_spaces}
    final = {a: v for a, v in final.items() if v or a == 0}
    stale_gfns = tuple(sorted(gvt.stale_gfns())) if gvt is not None else ()
    violations = tuple(vm.check_invariants()) if check_invariants else ()
    return ReplayResult(design=design, results=results, prologue=prologue_results,
                        final_layout=final, kvmgt=kvmgt, tracked=tracked_set,
                        stale_gfns=stale_gfns, invariant_violations=violations, costs=costs,
                        seed=seed, source=source)


def _new_vm(design):
    return VM(design=Design.coerce(design))


class VM(_ModelVM):
    """``kvmpt.VM``: the model's :class:`kvmpt.kernel.vm.VM` with ``vm.replay(ops)`` (the
    contract's name), which lives here so that the model imports nothing above it."""

    def replay(self, ops, **kwargs) -> "ReplayResult":
        """Apply QEMU memslot ops (``kvmpt.workload.trace.load_qemu_trace``): :func:`replay`."""
        return replay(self, ops, **kwargs)


def replay_designs(ops: Sequence[MemslotOp], designs: Sequence[Design | str] = ("v6.5", "v6.6"),
                   *, setup_ops: Sequence[MemslotOp] = (), **kwargs) -> list[ReplayResult]:
    """:func:`replay` on a fresh VM per design; ``setup_ops`` (a layout) are applied
    first and must all succeed, and ``track_after`` counts from the end of them."""
    out = []
    for d in designs:
        vm = _new_vm(d)
        for op in setup_ops:
            try:
                vm.set_user_memory_region(op.ioctl_slot, op.flags, op.gpa, op.size, op.ua)
            except OSError as exc:
                raise ValueError(f"layout op failed ({exc.strerror or exc}): {op}") from None
        out.append(replay(vm, ops, **kwargs))
    return out


#: kept for callers of ``kvmpt.workload.replay.parse_design``; the one parser is
#: :func:`kvmpt.kernel.design.parse_design`
parse_design = _parse_design
