"""The review thread's claims, each as a small experiment on the model.

The design notebook (``notebooks/01_page_track_hooks.ipynb``) walks Sean
Christopherson's reply of 2022-11-11 (<Y26SI3uh8JV0vvO6@google.com>) claim by
claim; every claim's evidence is one function here, returning plain data
(dataclasses, dicts, lists).  ``kvmpt.review.figures.memslot`` / ``kvmpt.review.figures.costs``
draw them, ``kvmpt.review.report`` prints them.  This module never imports plotly.

=====================  ==========================================================
function               claim
=====================  ==========================================================
:func:`memslot_flow`   what happens, step by step (S1..S8), on each kind of update
:func:`failed_move`    "The 'flush' hook is flawed as it's invoked before the
                       memslot operation is guaranteed"
:func:`slot_hook_cost` "Dropping write protections when a memslot is being
                       deleted is a waste of cycles"
:func:`move_with_kvmgt` / :func:`qemu_move_census`
                       "actively prevent MOVE if there are external page trackers"
:func:`lock_verdicts`  "kvmgt_page_track_write() ... without mmu_lock"
:func:`summary_table`  every design against every effect
=====================  ==========================================================
"""
from __future__ import annotations

import errno
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from kvmpt.constants import GIB, PAGE_SHIFT, USERSPACE_ADDR as _UA
from kvmpt.infra.paths import DATA_DIR
from kvmpt.workload.costs import CostModel, default_costs
from kvmpt.kernel.work import HookCall
from kvmpt.kernel.design import Design
from kvmpt.kernel.vm import WRITE_OUTCOMES
from kvmpt.kernel.work import PRIMITIVES

__all__ = [
    "GIB", "SECTION2_DESIGNS", "SECTION3_DESIGNS", "Snapshot", "FailedMove", "HookCost",
    "memslot_flow", "vm_snapshot", "failed_move", "slot_hook_cost", "ptable_walk_cost",
    "cost_curve",
    "price_rows", "move_with_kvmgt", "qemu_move_census", "lock_verdicts", "summary_table",
    "EFFECTS", "EFFECT_NOTES", "fmt_us", "PROPOSAL", "SUMMARY_DESIGNS", "TRACE_DIR", "write_stream",
]

TRACE_DIR = DATA_DIR / "traces"

#: The three points section 2 toggles between: the slot hook alone, then the MOVE policy.
SECTION2_DESIGNS = {
    "v6.5: flush hook, MOVE allowed": Design.preset("v6.5"),
    "remove hook, MOVE allowed": Design.preset("v6.5").replace(slot_hook="remove"),
    "v6.6: remove hook, MOVE rejected": Design.preset("v6.6"),
}

#: Section 3: who walks what on a DELETE, and under which lock.
SECTION3_DESIGNS = {
    "v6.5: flush + drop, mmu_lock": Design.preset("v6.5"),
    "v4 11/29: flush + drop, vgpu_lock":
        Design.preset("v6.5").replace(kvmgt_lock="vgpu_lock"),
    "v6.6: remove_region, vgpu_lock": Design.preset("v6.6"),
}
PROPOSAL = "proposal, in no kernel: walk ptable"

#: Short column labels for the summary (fits 79 columns with four columns).
SUMMARY_DESIGNS = {
    "v6.5": Design.preset("v6.5"),
    "remove,allow": Design.preset("v6.5").replace(slot_hook="remove"),
    "v6.6": Design.preset("v6.6"),
}


def _vm(design, max_gfn=None):
    from kvmpt.kernel.vm import VM
    return VM(design=design) if max_gfn is None else VM(design=design, max_gfn=max_gfn)


def _shadow(gvt, gfns) -> None:
    """GVT shadows ``gfns`` (``gvt.shadow_many``: ``intel_gvt_page_track_add`` for each,
    in ascending order)."""
    gvt.shadow_many(np.sort(np.asarray(gfns, dtype=np.int64)))


def _ioctl(vm, region: tuple) -> int:
    """``KVM_SET_USER_MEMORY_REGION`` with ``region``: 0, or the errno it failed with."""
    try:
        vm.set_user_memory_region(*region)
    except OSError as exc:
        return exc.errno
    return 0


def _region(slot: int, gpa: int, size: int, flags: int = 0, ua: int | None = None):
    return (slot, flags, gpa, size, _UA + (slot << 40) if ua is None else ua)


# ------------------------------------------------------------------------ section 1
def memslot_flow(design: Design | str = "v6.6", tracked: int = 4) -> dict[str, Any]:
    """One VM, one update of every kind, KVMGT attached and shadowing ``tracked`` pages
    of the slot the updates touch.  Returns ``{"ops": [(label, errno)], "events":
    [(op label, step, S, detail)], "notifiers": [...], "slots": [...]}``: the
    ``vm.events`` of each update, in order, labelled with the update that made them;
    ``ops`` rows are ``(label, errno, stale pages after it)``."""
    d = Design.coerce(design)
    vm = _vm(d)
    gvt = vm.attach_kvmgt()
    vm.set_user_memory_region(*_region(0, 0, 3 * GIB))
    ops = [("CREATE slot 1", _region(1, 4 * GIB, GIB), None),
           ("FLAGS_ONLY (dirty log)", _region(1, 4 * GIB, GIB, flags=1), None),
           ("MOVE, ENOMEM in prepare", _region(1, 8 * GIB, GIB, flags=1), errno.ENOMEM),
           ("MOVE to 8 GiB", _region(1, 8 * GIB, GIB, flags=1), None),
           ("DELETE slot 1", None, None)]
    out_ops, events = [], []  # (label, errno, stale pages after it), (label, step, S, detail)
    shadow_at = 4 * GIB >> PAGE_SHIFT
    for label, args, inject in ops:
        if label.startswith("FLAGS_ONLY"):
            for i in range(tracked):
                gvt.shadow(shadow_at + 64 * i)
        if args is None:       # DELETE wherever slot 1 is now
            s = next(s for s in vm.memslots(0) if s.id == 1)
            args = _region(1, s.base_gfn << PAGE_SHIFT, 0, ua=s.userspace_addr)
        if inject:
            vm.fail_next_prepare(inject)
        n0 = len(vm.events)
        err = _ioctl(vm, args)
        out_ops.append((label, err, len(gvt.stale_gfns())))
        for step, detail in vm.events[n0:]:
            events.append((label, step, detail.get("S", ""), dict(detail)))
    return {"design": d.name, "ops": out_ops, "events": events, "tracked": tracked,
            "notifiers": [n.name for n in vm.track_notifier_list],
            "slots": [(s.id, s.base_gfn, s.npages) for s in vm.memslots(0)],
            "stale": len(gvt.stale_gfns()), "violations": len(vm.check_invariants())}


def vm_snapshot(design: Design | str = "v6.6", layout: str = "q35-ovmf-smm",
                tracked: int = 256, seed: int = 0) -> dict[str, Any]:
    """A booted VM of ``layout`` (``data/layouts``) with KVMGT attached and ``tracked`` guest
    page-table pages shadowed in its RAM slots (``kvmpt.workload.replay.place_tracked``): every
    memslot with its role, KVM's write-tracked gfns, KVMGT's ``ptable`` and the notifier
    list, for the section-1 picture."""
    from kvmpt.workload.layouts import layout_ops, load_layout
    from kvmpt.workload.replay import place_tracked
    d = Design.coerce(design)
    lay = load_layout(layout)
    vm = _vm(d)
    gvt = vm.attach_kvmgt()
    for op in layout_ops(lay):
        vm.set_user_memory_region(op.ioctl_slot, op.flags, op.gpa, op.size, op.ua)
    roles = {(s.as_id, s.slot): s.role for s in lay.slots}
    placed = place_tracked(vm, gvt, tracked, seed, roles)
    slots = []
    for as_id in (0, 1):
        for s in vm.memslots(as_id):
            tracked_here = [g for g in placed.gfns
                            if s.base_gfn <= g < s.base_gfn + s.npages and as_id == 0]
            n_tracked = int(np.count_nonzero(s.arch.gfn_write_track))
            slots.append({"as_id": as_id, "id": s.id, "base_gfn": s.base_gfn,
                          "npages": s.npages, "flags": s.flags,
                          "role": roles.get((as_id, s.id), "?"),
                          "write_tracked": n_tracked, "shadowed": tracked_here})
    return {"design": d.name, "layout": layout, "slots": slots,
            "notifiers": [n.name for n in vm.track_notifier_list],
            "ptable": len(gvt.ptable), "shadowed": len(gvt.shadowed_gfns()),
            "stale": len(gvt.stale_gfns()), "violations": len(vm.check_invariants())}


# ------------------------------------------------------------------------ section 2
@dataclass(frozen=True)
class Snapshot:
    """What KVM, KVMGT and GVT each believe about the shadowed pages at one moment."""

    shadowed: int          # pages GVT shadows (its radix tree, tracked=true)
    ptable: int            # entries in KVMGT's ptable
    kvm_tracked: int       # shadowed pages whose gfn_write_track count is > 0
    stale: int             # shadowed pages whose guest writes would not reach GVT
    violations: int        # vm.check_invariants() lines

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def _snapshot(vm, gvt) -> Snapshot:
    shadowed = gvt.shadowed_gfns()
    kvm = 0
    for g in shadowed:
        try:
            kvm += vm.write_track_count(g) > 0
        except LookupError:
            pass
    return Snapshot(len(shadowed), len(gvt.ptable), kvm, len(gvt.stale_gfns()),
                    len(vm.check_invariants()))


def write_stream(vm, gpas: np.ndarray) -> dict[str, int]:
    """Guest writes at ``gpas`` (``vm.guest_write_batch``): the counts by outcome
    (``kvmpt.kernel.vm.WRITE_OUTCOMES``) and ``missed``, as the model booked them."""
    got = vm.guest_write_batch(np.asarray(gpas, dtype=np.uint64))
    return {k: int(got[k]) for k in (*WRITE_OUTCOMES, "missed")}


@dataclass
class FailedMove:
    """A MOVE of a slot holding shadowed pages that fails in prepare (S3)."""

    design: str
    cause: str                     # "max_gfn" | "enomem"
    errno: int
    before: Snapshot
    after: Snapshot
    writes: dict[str, int]         # guest writes to the shadowed pages after the MOVE
    events: list = field(default_factory=list)
    hook_calls: list = field(default_factory=list)     # (hook, node, hits, harmful)

    @property
    def missed(self) -> int:
        return self.writes["missed"]


def failed_move(design: Design | str, cause: str = "enomem", *, slot_gib: int = 1,
                tracked: int = 64, writes: int = 2000, seed: int = 0) -> FailedMove:
    """Slot 1 (``slot_gib`` GiB at 4 GiB) holds ``tracked`` pages GVT shadows (guest page
    tables); QEMU MOVEs it and the MOVE fails in ``kvm_prepare_memory_region()``:

    * ``"max_gfn"``: the new range ends above ``kvm_mmu_max_gfn()`` (-EINVAL, bad input);
    * ``"enomem"``: ``kvm_alloc_memslot_metadata()`` fails (-ENOMEM, injected).

    The old slot is restored (S4).  Then the guest writes ``writes`` times to its page
    tables (uniformly over the shadowed pages); a write that does not reach GVT's
    handler is *missed*: its shadow page table is now stale."""
    if cause not in ("max_gfn", "enomem"):
        raise ValueError(f"cause must be 'max_gfn' or 'enomem', got {cause!r}")
    d = Design.coerce(design)
    vm = _vm(d)
    vm.set_user_memory_region(*_region(0, 0, 3 * GIB))
    base, size = 4 * GIB, slot_gib * GIB
    vm.set_user_memory_region(*_region(1, base, size))
    gvt = vm.attach_kvmgt()
    rng = np.random.default_rng(seed)
    npages = size >> PAGE_SHIFT
    gfns = (base >> PAGE_SHIFT) + np.sort(rng.choice(npages, size=min(tracked, npages),
                                                     replace=False))
    _shadow(gvt, gfns)
    before = _snapshot(vm, gvt)
    if cause == "max_gfn":
        target = ((vm.max_gfn + 2) << PAGE_SHIFT) - size   # last page one past max gfn
    else:
        target = base + 2 * size
        vm.fail_next_prepare(errno.ENOMEM)
    n0, c0 = len(vm.events), len(vm.hook_calls)
    err = _ioctl(vm, _region(1, target, size))
    after = _snapshot(vm, gvt)
    offs = rng.integers(0, 512, size=writes) * 8
    gpas = (gfns[rng.integers(0, len(gfns), size=writes)] << PAGE_SHIFT) + offs
    w = write_stream(vm, gpas.astype(np.uint64))
    return FailedMove(d.name, cause, err, before, after, w,
                      [(s, dt.get("S", ""), dt) for s, dt in vm.events[n0:]],
                      [(c.hook, c.node, c.hits, c.harmful) for c in vm.hook_calls[c0:]])


# ------------------------------------------------------------------------ section 3
@dataclass(frozen=True)
class HookCost:
    """Primitive operations of the slot hook(s) of one DELETE (``kvmpt.kernel.work``)."""

    design: str
    npages: int
    tracked: int             # shadowed pages inside the deleted slot
    probes: int              # ptable lookups (gfn_probes) or entries visited (proposal)
    chain_steps: int
    counter_updates: int
    lpage_updates: int
    hash_deletes: int
    mmu_lock_held: int       # primitives done under mmu_lock, in total
    mmu_lock_max_hold: int   # the longest single mmu_lock hold, in primitives
    table_lock_hold: int     # primitives done while KVMGT's table lock is held
    wasted_updates: int      # counter + lpage updates into metadata freed at S7
    exact: bool = True       # False: probes/chain steps scaled from a smaller exact run
    ops: dict = field(default_factory=dict, compare=False)            # every Work counter
    max_hold_ops: dict = field(default_factory=dict, compare=False)   # the longest mmu_lock hold
    wasted_ops: dict = field(default_factory=dict, compare=False)     # updates later freed

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def slot_hook_cost(design: Design | str, npages: int, tracked: int, seed: int = 0,
                   ) -> HookCost:
    """DELETE one slot of ``npages`` pages that holds ``tracked`` shadowed pages, and
    count what KVMGT's slot hook does (the model's ``HookCall.work``)."""
    d = Design.coerce(design)
    vm = _vm(d)
    base = 1 << (40 - PAGE_SHIFT + 1)             # 2^29 gfns = 2 TiB: room for 1 TiB slots
    vm.set_user_memory_region(*_region(1, base << PAGE_SHIFT, npages << PAGE_SHIFT))
    gvt = vm.attach_kvmgt()
    rng = np.random.default_rng(seed)
    t = min(tracked, npages)
    picks = rng.choice(npages, size=t, replace=False) if t else np.array([], dtype=np.int64)
    _shadow(gvt, base + picks)
    c0 = len(vm.hook_calls)
    vm.set_user_memory_region(*_region(1, base << PAGE_SHIFT, 0))
    calls = [c for c in vm.hook_calls[c0:] if c.node == "kvmgt"]
    ops = {k: sum(c.work.ops[k] for c in calls) for k in
           ("gfn_probes", "chain_steps", "counter_updates", "lpage_updates", "hash_deletes",
            "slot_lookups")}
    held = sum(c.work.mmu_lock_held_steps for c in calls)
    max_hold = max((c.work.mmu_lock_max_hold_steps for c in calls), default=0)
    total = sum(sum(c.work.ops.values()) for c in calls)
    mutex = d.kvmgt_lock in ("gfn_lock", "vgpu_lock")
    all_ops = {k: sum(c.work.ops[k] for c in calls) for k in PRIMITIVES}
    all_ops["mmu_lock_acquisitions"] = sum(c.work.mmu_lock_acquisitions for c in calls)
    longest = max(calls, key=lambda c: c.work.mmu_lock_max_hold_steps, default=None)
    max_hold_ops = dict(longest.work.max_hold) if longest is not None else {}
    wasted_ops = {k: sum(c.wasted_counts[k] for c in calls) for k in HookCall.WASTED_COUNTERS}
    return HookCost(d.name, npages, t, ops["gfn_probes"], ops["chain_steps"],
                    ops["counter_updates"], ops["lpage_updates"], ops["hash_deletes"],
                    held, max_hold, total if mutex else held,
                    sum(c.wasted_updates for c in calls), True, all_ops, max_hold_ops,
                    wasted_ops)


def ptable_walk_cost(npages: int, tracked_in_slot: int, tracked_total: int | None = None,
                     buckets: int | None = None) -> HookCost:
    """The proposal (in no kernel): ``kvmgt_page_track_remove_region()`` iterates KVMGT's
    ``ptable`` (``hash_for_each_safe``) and deletes the entries inside
    ``[gfn, gfn + nr_pages)``, instead of probing every gfn of the range.

    Cost in the same primitives: one bucket-head read per bucket (``buckets``, the
    table's size), one ``chain_steps`` per entry visited (``tracked_total``, every
    entry of the table, in or out of the range), one ``hash_deletes`` per entry in the
    range; O(tracked), independent of ``npages``.  No ``mmu_lock``; the loop runs under
    ``vgpu_lock`` as v6.6's does."""
    from kvmpt.kernel.ptable import PTABLE_BITS
    buckets = (1 << PTABLE_BITS) if buckets is None else buckets
    total = tracked_in_slot if tracked_total is None else tracked_total
    probes = buckets + total
    ops = {"gfn_probes": buckets, "chain_steps": total, "hash_deletes": tracked_in_slot}
    return HookCost(PROPOSAL, npages, tracked_in_slot, probes, total, 0, 0,
                    tracked_in_slot, 0, 0, probes + total + tracked_in_slot, 0, True, ops,
                    {}, {})


def cost_curve(designs: dict[str, Design], sizes: Sequence[int], tracked: Sequence[int], *,
               exact_max_pages: int = 1 << 22, seed: int = 0,
               proposal: bool = True) -> list[dict[str, Any]]:
    """``slot_hook_cost`` for every design x slot size (pages) x tracked count.

    Sizes above ``exact_max_pages`` are not run gfn by gfn: the probe count is the
    loop bound (``npages``, exact by construction), chain steps per probe are those of
    the largest exact run, and the per-hit work (count, lpage and hash updates) does
    not depend on the size; such rows have ``exact=False``."""
    rows = []
    for label, d in designs.items():
        for t in tracked:
            ref: HookCost | None = None
            for n in sorted(sizes):
                if n <= exact_max_pages:
                    c = ref = slot_hook_cost(d, n, t, seed)
                else:
                    if ref is None:
                        ref = slot_hook_cost(d, exact_max_pages, t, seed)
                    c = _scale(ref, n)
                rows.append({**c.as_dict(), "design": label})
    if proposal:
        for t in tracked:
            for n in sorted(sizes):
                rows.append({**ptable_walk_cost(n, min(t, n)).as_dict(), "design": PROPOSAL})
    return rows


def _scale(c: HookCost, n: int) -> HookCost:
    """``c`` (an exact run) extended to a slot of ``n`` pages with the same tracked set.

    Probes are the loop bound, ``n``.  Each extra gfn probed lands in a bucket that holds,
    on average, the range's tracked entries spread over the table's buckets, of which
    half are still there (the walk deletes them as it passes): ``hits / (2 * buckets)``
    chain steps per extra probe.  Counter, lpage and hash updates do not change."""
    from kvmpt.kernel.ptable import PTABLE_BITS
    probes = n
    chain = c.chain_steps + int(round((n - c.npages) * c.hash_deletes / (2 << PTABLE_BITS)))
    extra = probes - c.probes + chain - c.chain_steps
    outer = c.mmu_lock_max_hold >= c.probes and c.probes > 0
    ops = dict(c.ops, gfn_probes=probes, chain_steps=chain)
    hold = dict(c.max_hold_ops)
    if outer:
        hold.update(gfn_probes=probes, chain_steps=chain)
    return HookCost(c.design, n, c.tracked, probes, chain, c.counter_updates,
                    c.lpage_updates, c.hash_deletes,
                    c.mmu_lock_held + (extra if outer else 0),
                    c.mmu_lock_max_hold + (extra if outer else 0),
                    c.table_lock_hold + extra, c.wasted_updates, False, ops, hold,
                    dict(c.wasted_ops))


def price_rows(rows: list[dict[str, Any]], costs: CostModel | None = None,
               ) -> list[dict[str, Any]]:
    """Add cycles and microseconds to :func:`cost_curve` rows with ``kvmpt.workload.costs``
    (``default_costs()`` unless given): ``cycles``/``us`` (the whole hook, its Work
    counters ``ops``), ``hold_us`` (the longest ``mmu_lock`` write hold,
    ``max_hold_ops``), ``wasted_cycles`` (``wasted_ops``)."""
    costs = costs or default_costs()
    out = []
    for r in rows:
        cyc = costs.total(r["ops"])
        out.append({**r, "cycles": cyc, "us": costs.cycles_to_us(cyc),
                    "hold_us": costs.cycles_to_us(costs.total(r["max_hold_ops"])),
                    "wasted_cycles": costs.total(r["wasted_ops"])})
    return out


# ------------------------------------------------------------------------ section 4
def move_with_kvmgt(design: Design | str, *, tracked: int = 64, writes: int = 2000,
                    seed: int = 0) -> dict[str, Any]:
    """A MOVE that *would* succeed (valid target, memory available) of a slot holding
    ``tracked`` shadowed pages, KVMGT attached; then ``writes`` guest writes to those
    page-table pages *where they now are*: a MOVE keeps the host memory (hva) and changes
    its gfns, so after a successful MOVE the guest writes them at ``gfn + delta``, gfns
    nobody tracks.  Every write targets a shadowed page table, so a write that does not
    reach GVT's handler is missed (``writes["missed"]``)."""
    d = Design.coerce(design)
    vm = _vm(d)
    vm.set_user_memory_region(*_region(0, 0, 3 * GIB))
    old_gpa, new_gpa = 4 * GIB, 8 * GIB
    vm.set_user_memory_region(*_region(1, old_gpa, GIB))
    gvt = vm.attach_kvmgt()
    rng = np.random.default_rng(seed)
    gfns = (old_gpa >> PAGE_SHIFT) + np.sort(rng.choice(GIB >> PAGE_SHIFT, size=tracked,
                                                        replace=False))
    _shadow(gvt, gfns)
    before = _snapshot(vm, gvt)
    err = _ioctl(vm, _region(1, new_gpa, GIB))
    after = _snapshot(vm, gvt)
    delta = 0 if err else (new_gpa - old_gpa) >> PAGE_SHIFT
    where = gfns + delta
    gpas = (where[rng.integers(0, tracked, size=writes)] << PAGE_SHIFT).astype(np.uint64)
    w = write_stream(vm, gpas)
    w["missed"] = writes - w["handled"]       # every write targets a shadowed page table
    return {"design": d.name, "errno": err, "before": before, "after": after,
            "writes": w, "delta_gfns": delta, "violations": vm.check_invariants()[:3]}


def qemu_move_census(paths: Iterable[str | Path] | None = None,
                     designs: Sequence[Design | str] = ("v6.5", "v6.6"),
                     tracked: int = 0, seed: int = 0) -> list[dict[str, Any]]:
    """Replay each real QEMU trace through each design (``kvmpt.workload.replay``) and count the
    updates by kind: a MOVE count of 0 means rejecting MOVE costs that VMM nothing.

    With ``tracked > 0`` KVMGT is attached and shadows that many RAM pages once the trace
    has laid out RAM (``kvmpt.workload.replay.auto_track_point``); ``stale`` then counts the
    shadowed pages whose writes no longer reach GVT at the end, ``staled_by`` the ops that
    made them stale (``AS1 DELETE`` = an SMM address-space slot), ``warns`` the kernel
    WARNs the model recorded.  A trace with too little RAM for the tracked set (a trace
    that starts mid-life) is replayed without KVMGT (``stale`` is None)."""
    from kvmpt.workload.replay import replay_designs
    from kvmpt.workload.trace import load_qemu_trace
    if paths is None:
        paths = sorted(p for p in TRACE_DIR.glob("*.trace") if "format_samples" not in p.name)
    rows = []
    for p in paths:
        ops = load_qemu_trace(str(p))
        try:
            results = replay_designs(ops, designs, tracked=tracked, seed=seed)
            with_kvmgt = tracked > 0
        except ValueError:
            results = replay_designs(ops, designs)
            with_kvmgt = False
        for r in results:
            s = r.summary()
            rows.append({"trace": Path(p).stem, "design": s["design"], "ops": s["ops"],
                         **{k.lower(): v for k, v in s["counts"].items()},
                         "move_ok": s["ok_counts"]["MOVE"],
                         "as1_deletes": sum(1 for x in r.results
                                            if x.kind == "DELETE" and x.op.as_id == 1),
                         "mismatches": len(s["mismatches"]),
                         "stale": s["stale_gfns"] if with_kvmgt else None,
                         "staled_by": sorted({f"AS{o['as_id']} {o['kind']}"
                                              for o in s["staling_ops"]}),
                         "warns": len(s["kernel_warnings"])})
    return rows


# ------------------------------------------------------------------------ section 5
def lock_verdicts(scenario: str | None = None, **kw) -> dict[str, Any]:
    """``kvmpt.race.explore`` for each lock design: ``{lock: RaceResult}`` (``kw``: the
    explorer's what-ifs, e.g. ``lockdep=False``)."""
    from kvmpt import race
    sc = scenario or race.DEFAULT_SCENARIO
    return {lk: race.explore(lk, sc, **kw) for lk in race.LOCKS}


# ------------------------------------------------------------------------ section 6
#: (key, label) of the summary's effects, in the order of the review thread
EFFECTS = (
    ("failed_stale", "failed MOVE: stale"),
    ("failed_missed", "failed MOVE: missed"),
    ("move", "MOVE with KVMGT"),
    ("move_stale", "MOVE: stale pages"),
    ("probes", "DELETE {size}: lookups"),
    ("hook_us", "DELETE {size}: hook"),
    ("hold_us", "DELETE {size}: mmu_lock"),
    ("wasted", "DELETE: wasted updates"),
    ("verdict", "track_write race"),
    ("qemu_moves", "QEMU trace MOVEs"),
    ("qemu_stale", "QEMU SMM boot: stale"),
)

#: What each effect row means (printed under the table in the text report).
EFFECT_NOTES = (
    "failed MOVE: shadowed pages stale / guest page-table writes missed after a MOVE "
    "that fails with -ENOMEM in prepare (S3)",
    "MOVE with KVMGT: a MOVE that would succeed, KVMGT attached; stale pages after it",
    "DELETE: KVMGT's slot hook on one slot of that size: ptable lookups, its time, the "
    "longest mmu_lock hold (kvmpt.workload.costs, point estimates), count updates into freed "
    "metadata",
    "track_write race: kvmpt.race verdict for the design's ptable lock",
    "QEMU trace MOVEs: MOVEs in the replayed real QEMU traces (data/traces)",
    "QEMU SMM boot: shadowed pages made stale by address-space-1 DELETEs when the "
    "traces are replayed with KVMGT shadowing pages (a finding beyond the thread)",
    "ptable walk*: a proposal in no kernel: remove_region walks ptable, O(tracked)",
    "times: kvmpt.workload.costs point estimates at 3 GHz (data/costs.toml has the ranges)",
)


def summary_table(designs: dict[str, Design], failed: dict[str, FailedMove],
                  moves: dict[str, dict], verdicts: dict[str, Any],
                  census: list[dict] | None = None, *, size_pages: int = 1 << 28,
                  tracked: int = 64, exact_max_pages: int = 1 << 18, seed: int = 0,
                  proposal: bool = True) -> tuple[list[str], list[list[str]], dict]:
    """Each design x each effect, as strings: ``(columns, rows, numbers)``.

    ``designs``: short column label -> Design; ``failed`` / ``moves``: ``Design.name`` ->
    :func:`failed_move` / :func:`move_with_kvmgt` results; ``verdicts``: lock -> RaceResult;
    ``census``: :func:`qemu_move_census` rows.
    The DELETE rows run :func:`cost_curve` for one slot of ``size_pages`` pages holding
    ``tracked`` shadowed pages.  ``numbers`` holds the unformatted values."""
    from kvmpt.infra.text import fmt_bytes
    size = fmt_bytes(size_pages << PAGE_SHIFT)
    costs = price_rows(cost_curve(designs, [size_pages], [tracked],
                                  exact_max_pages=exact_max_pages, seed=seed,
                                  proposal=proposal))
    cols = list(designs) + ([PROPOSAL_SHORT] if proposal else [])
    qemu_moves = None if census is None else sum(r["move"] for r in census
                                                 if r["design"] == census[0]["design"])
    numbers: dict[str, dict[str, Any]] = {}
    for label in cols:
        d = designs.get(label)
        c = next(r for r in costs if r["design"] == (label if d is not None else PROPOSAL))
        f = None if d is None else failed.get(d.name)
        m = None if d is None else moves.get(d.name)
        numbers[label] = {
            "failed_stale": None if f is None else f.after.stale,
            "failed_missed": None if f is None else f.missed,
            "move": None if m is None else ("allowed" if not m["errno"] else
                                            "-" + errno.errorcode[m["errno"]]),
            "move_stale": None if m is None else m["after"].stale,
            "probes": c["probes"], "hook_us": c["us"], "hold_us": c["hold_us"],
            "wasted": c["wasted_updates"],
            "verdict": None if d is None else verdicts[d.kvmgt_lock].verdict,
            "qemu_moves": qemu_moves if d is not None else None,
            "qemu_stale": _census_stale(census, d),
        }
    rows = []
    for key, label in EFFECTS:
        row = [label.format(size=size)]
        for c in cols:
            v = numbers[c][key]
            if v is None:
                row.append("-")
            elif key in ("hook_us", "hold_us"):
                row.append(_fmt_us(v))
            elif isinstance(v, int):
                row.append(_fmt_int(v))
            else:
                row.append(str(v))
        rows.append(row)
    return ["effect"] + cols, rows, numbers


PROPOSAL_SHORT = "ptable walk*"


def _census_stale(census, d: Design | None):
    if census is None or d is None:
        return None
    vals = [r["stale"] for r in census if r["design"] == d.name and r["stale"] is not None]
    return sum(vals) if vals else None


def fmt_us(us: float | None) -> str:
    """``121.7 ms`` / ``125.1 us``; None is ``-``."""
    return "-" if us is None else _fmt_us(us)


def _fmt_int(n: int) -> str:
    if n >= 10_000_000:
        return f"{n / 1e6:,.0f} M"
    return f"{n:,}"


def _fmt_us(us: float) -> str:
    if us >= 1000:
        return f"{us / 1000:,.1f} ms"
    return f"{us:,.1f} us"
