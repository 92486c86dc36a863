"""Replay real memslot traffic through the model, and the ``kvmpt replay`` command.

:func:`replay` applies each :class:`~kvmpt.workload.trace.MemslotOp` through
``vm.set_user_memory_region()`` (the ioctl's ``slot`` field carries ``as_id``
in bits 16..31, as QEMU's ``kvm_set_user_memory_region()`` passes it), compares
the errno with the trace's ``ret=`` and reports:

* op counts by kind (``enum kvm_mr_change``: CREATE, DELETE, MOVE, FLAGS_ONLY,
  plus NOOP and REJECTED), decided by the model's one rules function
  (``kvmpt.kernel.memslot.check_set_user_memory_region``, mirroring
  ``__kvm_set_memory_region()``, spec/kernel-semantics.md §3.1) against the VM's
  slots just before the op;
* mismatches between the model's errno and the trace's;
* the final layout per address space;
* with KVMGT attached and a tracked set of gfns placed in RAM, what the design
  does to it: the page-track hook calls with their primitive-op counts (and
  cycles, given a cost table), the work wasted, and the gfns GVT still shadows
  whose writes no longer reach its handler ("stale"), with the ops that made
  them stale.  Address-space-1 (SMM) DELETEs of a boot trace are the case to
  watch (workloads.md §2.5).

A trace that starts mid-life (its first op on a slot is a DELETE, as in the
2020 VGA toggle trace) gets an inferred prologue: the slot is created first
from the DELETE line's gpa/ua and the size/flags of the trace's next CREATE of
it (``infer_missing=True``).
"""
from __future__ import annotations

import errno as errno_mod
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from kvmpt.constants import RAM_ROLES
from kvmpt.workload.costs import CostModel
from kvmpt.kernel.design import Design
from kvmpt.kernel.design import parse_design as _parse_design
from kvmpt.kernel.memslot import CHANGES, DELETE
from kvmpt.workload.trace import MemslotOp
from kvmpt.kernel.vm import VM as _ModelVM

__all__ = [
    "KINDS", "WORK_FIELDS", "OpResult", "ReplayResult", "TrackedSet", "classify",
    "infer_prologue", "auto_track_point", "place_tracked", "replay", "replay_designs",
]

KINDS = CHANGES
#: primitive-op counters reported per hook (kvmpt.kernel.work); missing ones count 0
WORK_FIELDS = ("gfn_probes", "chain_steps", "counter_updates", "lpage_updates", "tlb_flushes",
               "hash_deletes", "zaps", "srcu_syncs", "mmu_lock_acquisitions",
               "mmu_lock_held_steps")
BIG_SLOT_PAGES = 1 << 18          # 1 GiB: "big RAM slot" (workloads.md §1.5)


# ---------------------------------------------------------------------------
# Classification: the kernel's own decision (kvmpt.kernel.memslot.check_set_user_memory_region)

def classify(op: MemslotOp, vm) -> str:
    """The change ``__kvm_set_memory_region()`` picks for ``op`` against ``vm``'s slots
    now: one of ``KINDS`` (``REJECTED``: refused by the ioctl's checks, no change made).
    The decision is the model's own (:meth:`kvmpt.kernel.vm.VM.check_user_memory_region`)."""
    return vm.check_user_memory_region(op.ioctl_slot, op.flags, op.gpa, op.size,
                                       op.ua).change


def infer_prologue(ops: Sequence[MemslotOp],
                   present: Iterable[tuple[int, int]] = ()) -> list[MemslotOp]:
    """CREATEs for slots the trace deletes before it ever creates them.

    ``present`` holds the (as_id, slot) pairs that already exist.  A DELETE
    line carries the old slot's gpa and ua (QEMU's ``kvm_set_user_memory_region()``
    only zeroes ``memory_size``); the size and flags come from the trace's
    next CREATE of the same (as_id, slot) at the same gpa.  Slots for which
    no such CREATE exists are left alone (their DELETE will mismatch).
    """
    live = set(present)
    prologue: list[MemslotOp] = []
    for i, op in enumerate(ops):
        key = (op.as_id, op.slot)
        if op.size:
            live.add(key)
            continue
        if key in live:
            live.discard(key)
            continue
        if op.ret not in (0, None):
            continue
        for later in ops[i + 1:]:
            if (later.as_id, later.slot) == key and later.size and later.gpa == op.gpa:
                prologue.append(MemslotOp(as_id=op.as_id, slot=op.slot, flags=later.flags,
                                          gpa=op.gpa, size=later.size, ua=op.ua, ret=0,
                                          style=op.style, tag="[D]"))
                break
    return prologue


# ---------------------------------------------------------------------------
# The tracked set

@dataclass(frozen=True)
class TrackedSet:
    gfns: tuple[int, ...]
    placed_after: int                 # number of trace ops applied before placement
    slots: tuple[tuple[int, int, int], ...]   # (slot id, base_gfn, npages) used, AS0
    seed: int
    failed: int = 0                   # shadow() calls the model refused


def _ram_candidates(vm, roles: Mapping[tuple[int, int], str] | None) -> list[Any]:
    """AS0 slots where guest page-table pages would live (workloads.md §2.2: the
    big low-RAM and high-RAM slots): by role when known, else writable, not
    dirty-logged slots of at least 1 GiB, else the largest such slot."""
    slots = [s for s in vm.memslots(0) if not s.flags]
    if roles:
        by_role = [s for s in slots if roles.get((0, s.id)) in RAM_ROLES]
        if by_role:
            return by_role
    big = [s for s in slots if s.npages >= BIG_SLOT_PAGES]
    if big:
        return big
    return sorted(slots, key=lambda s: -s.npages)[:1]


def place_tracked(vm, gvt, n: int, seed: int = 0,
                  roles: Mapping[tuple[int, int], str] | None = None,
                  placed_after: int = 0) -> TrackedSet:
    """Shadow ``n`` gfns in AS0 RAM, in runs of 1-64 contiguous gfns [G] (workloads.md §2.2).

    Slots are picked in proportion to their size; the draw is deterministic
    for a given ``seed`` and layout.  Raises ValueError if there is no RAM.
    """
    cands = _ram_candidates(vm, roles)
    total = sum(s.npages for s in cands)
    if not cands or total < n:
        raise ValueError(f"cannot place {n} tracked gfns: address space 0 has "
                         f"{total} gfns of RAM at that point (use a layout, or --track-after)")
    rng = np.random.default_rng(seed)
    weights = np.array([s.npages for s in cands], dtype=float) / total
    chosen: set[int] = set()
    order: list[int] = []
    while len(order) < n:
        s = cands[int(rng.choice(len(cands), p=weights))]
        run = int(rng.integers(1, 65))
        start = s.base_gfn + int(rng.integers(0, max(1, s.npages - run + 1)))
        for g in range(start, min(start + run, s.base_gfn + s.npages)):
            if g not in chosen and len(order) < n:
                chosen.add(g)
                order.append(g)
    # every candidate lies in an address-space-0 RAM slot, so the only failure
    # is a gfn GVT already shadows (intel_vgpu_register_page_track: -EEXIST)
    todo = [g for g in sorted(order) if g not in gvt.page_track_tree]
    failed = len(order) - len(todo)
    gvt.shadow_many(np.array(todo, dtype=np.uint64))
    return TrackedSet(gfns=tuple(sorted(order)), placed_after=placed_after,
                      slots=tuple((s.id, s.base_gfn, s.npages) for s in cands), seed=seed,
                      failed=failed)


def auto_track_point(ops: Sequence[MemslotOp],
                     roles: Mapping[tuple[int, int], str] | None = None) -> int:
    """Where the tracked set goes by default: after the trace's last CREATE of a
    big address-space-0 RAM slot, i.e. once firmware has laid out RAM and the
    guest's i915 driver could load (workloads.md §2.2: nothing is tracked before
    that).  The churn after that point, e.g. the SMM address space's RAM
    DELETEs of an SMM boot, then meets a full tracked set.  0 if the trace
    creates no such slot."""
    point = 0
    for i, op in enumerate(ops):
        if op.as_id or not op.size or op.flags:
            continue
        role = roles.get((0, op.slot)) if roles else None
        if role in RAM_ROLES or (role is None and op.npages >= BIG_SLOT_PAGES):
            point = i + 1
    return point




# ---------------------------------------------------------------------------
# Results

@dataclass(frozen=True)
class OpResult:
    """What one op did: the kind the kernel picked, the errno the model
    returned (0 on success), the trace's errno (or None) and whether they agree."""

    index: int                    # position in the trace's op list (-1: prologue)
    op: MemslotOp
    kind: str
    errno: int
    expected: int | None
    note: str = ""
    hook_calls: tuple = ()
    stale_after: int | None = None
    newly_stale: int = 0
    warnings: tuple[str, ...] = ()       # kernel WARNs the model recorded during the op

    @property
    def match(self) -> bool | None:
        return None if self.expected is None else self.expected == self.errno

    @property
    def ok(self) -> bool:
        return self.errno == 0

    def describe(self) -> str:
        where = f"line {self.op.lineno}" if self.op.lineno else f"op {self.index}"
        err = "ok" if self.errno == 0 else errno_mod.errorcode.get(self.errno, str(self.errno))
        return (f"{where}: {self.kind} AS{self.op.as_id} slot {self.op.slot} "
                f"gpa 0x{self.op.gpa:x} size 0x{self.op.size:x} -> {err}")


@dataclass
class ReplayResult:
    """Everything :func:`replay` found; ``summary()`` for a dict, ``kvmpt.review.textreport`` to print."""

    design: Design
    results: list[OpResult]
    prologue: list[OpResult] = field(default_factory=list)
    final_layout: dict[int, list[tuple[int, int, int, int, int]]] = field(default_factory=dict)
    kvmgt: bool = False
    tracked: TrackedSet | None = None
    stale_gfns: tuple[int, ...] = ()
    invariant_violations: tuple[str, ...] = ()
    costs: CostModel | None = None
    seed: int = 0
    source: str = ""

    # -- op-level views ---------------------------------------------------
    @property
    def counts(self) -> dict[str, int]:
        """Ops by kind (attempted)."""
        c = Counter(r.kind for r in self.results)
        return {k: c.get(k, 0) for k in KINDS}

    @property
    def ok_counts(self) -> dict[str, int]:
        c = Counter(r.kind for r in self.results if r.ok)
        return {k: c.get(k, 0) for k in KINDS}

    @property
    def mismatches(self) -> list[OpResult]:
        return [r for r in self.results if r.match is False]

    @property
    def notes(self) -> list[OpResult]:
        return [r for r in self.results if r.note]

    @property
    def warnings(self) -> list[tuple[OpResult, str]]:
        """Kernel WARNs (``WARN_ON`` in the mirrored code) with the op that fired them."""
        return [(r, w) for r in self.results for w in r.warnings]

    @property
    def unattributed_stale(self) -> int:
        """Stale gfns at the end that no op was seen making stale (0 expected)."""
        return max(0, len(self.stale_gfns) - sum(r.newly_stale for r in self.results))

    @property
    def staling_ops(self) -> list[OpResult]:
        """Ops after which more gfns were stale than before."""
        return [r for r in self.results if r.newly_stale > 0]

    # -- hook work ----------------------------------------------------------
    def hook_calls(self) -> list:
        return [c for r in self.results for c in r.hook_calls]

    def hook_table(self) -> dict[str, dict[str, Any]]:
        """Per hook name: calls, wasted calls, empty walks, work counts and, with a cost
        table, cycles (``kvmpt.workload.costs.CostModel``: the whole call, its ``mmu_lock`` write
        holds, the updates into freed metadata)."""
        costs = self.costs
        table: dict[str, dict[str, Any]] = {}
        for c in self.hook_calls():
            row = table.setdefault(c.hook, {"node": c.node, "calls": 0, "wasted_calls": 0,
                                            "harmful_calls": 0, "hits": 0, "empty_walks": 0,
                                            "wasted_updates": 0, **{k: 0 for k in WORK_FIELDS},
                                            "cycles": None, "mmu_lock_cycles": None,
                                            "longest_hold_cycles": None, "wasted_cycles": None})
            w = c.work.as_dict()
            row["calls"] += 1
            row["hits"] += c.hits
            if c.npages and not c.hits:
                row["empty_walks"] += 1
            row["wasted_calls"] += bool(c.wasted)
            row["wasted_updates"] += c.wasted_updates
            row["harmful_calls"] += bool(c.harmful)
            for k in WORK_FIELDS:
                row[k] += w[k]
            if costs is not None:
                held, longest = costs.mmu_lock_hold(c.work)
                row["cycles"] = (row["cycles"] or 0.0) + costs.hook_cycles(c)
                row["mmu_lock_cycles"] = (row["mmu_lock_cycles"] or 0.0) + held
                row["longest_hold_cycles"] = max(row["longest_hold_cycles"] or 0.0, longest)
                row["wasted_cycles"] = (row["wasted_cycles"] or 0.0) + costs.wasted_cycles(c)
        return table

    def us(self, cycles: float | None) -> float | None:
        """Cycles to microseconds with the cost model's clock; None without one."""
        if cycles is None or self.costs is None:
            return None
        return self.costs.cycles_to_us(cycles)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready dict of the result."""
        return {
            "design": self.design.name,
            "source": self.source,
            "seed": self.seed,
            "ops": len(self.results),
            "prologue_ops": len(self.prologue),
            "counts": self.counts,
            "ok_counts": self.ok_counts,
            "mismatches": [{"line": r.op.lineno, "index": r.index, "kind": r.kind,
                            "errno": r.errno, "expected": r.expected} for r in self.mismatches],
            "notes": [{"line": r.op.lineno, "index": r.index, "note": r.note}
                      for r in self.notes],
            "final_layout": {str(a): [{"slot": s, "gpa": hex(g), "size": hex(n),
                                       "flags": hex(f), "ua": hex(u)}
                                      for s, g, n, f, u in v]
                             for a, v in self.final_layout.items()},
            "kvmgt": self.kvmgt,
            "tracked": None if self.tracked is None else {
                "n": len(self.tracked.gfns), "placed_after": self.tracked.placed_after,
                "slots": [list(s) for s in self.tracked.slots], "seed": self.tracked.seed,
                "failed": self.tracked.failed},
            "hooks": self.hook_table(),
            "kernel_warnings": [{"line": r.op.lineno, "index": r.index, "warning": w}
                                for r, w in self.warnings],
            "stale_gfns": len(self.stale_gfns),
            "unattributed_stale": self.unattributed_stale,
            "staling_ops": [{"line": r.op.lineno, "index": r.index, "kind": r.kind,
                             "as_id": r.op.as_id, "slot": r.op.slot,
                             "newly_stale": r.newly_stale} for r in self.staling_ops],
            "invariant_violations": list(self.invariant_violations),
        }


# ---------------------------------------------------------------------------
# Replay

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
    if kind == DELETE and (op.gpa >> 12) != old.base_gfn:
        note = (f"DELETE line says gpa 0x{op.gpa:x}, the slot is at "
                f"0x{old.base_gfn << 12:x}")
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
        cands = _ram_candidates(vm, roles)
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

    final = {a: [(s.id, s.base_gfn << 12, s.npages << 12, s.flags, s.userspace_addr)
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


#: kept for callers of ``kvmpt.workload.replay.parse_design``: the one parser is kvmpt.kernel.design's
parse_design = _parse_design
