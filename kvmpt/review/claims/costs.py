"""Section 3: "Dropping write protections when a memslot is being deleted is a waste of
cycles" (<Y26SI3uh8JV0vvO6@google.com>): what KVMGT's slot hook does on one DELETE, counted
in the model's primitives (``kvmpt.kernel.work``) and priced by ``kvmpt.workload.costs``.

:func:`slot_hook_cost` is the experiment (the notebook writes it out in the public API);
:func:`cost_curve` runs it over slot sizes x shadowed pages (bulk work, scaled above
``exact_max_pages``); :func:`ptable_walk_cost` prices the proposal that is in no kernel.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from kvmpt.constants import PAGE_SHIFT
from kvmpt.kernel.design import Design
from kvmpt.kernel.work import PRIMITIVES, HookCall
from kvmpt.review.claims.common import new_vm, pick_pages, slot_ua
from kvmpt.workload.costs import CostModel, default_costs

__all__ = ["SECTION3_DESIGNS", "PROPOSAL", "HookCost", "slot_hook_cost", "hook_cost",
           "ptable_walk_cost", "cost_curve", "price_rows", "DELETE_BASE_GFN"]

#: Section 3: who walks what on a DELETE, and under which lock.
SECTION3_DESIGNS = {
    "v6.5: flush + drop, mmu_lock": Design.preset("v6.5"),
    "v4 11/29: flush + drop, vgpu_lock":
        Design.preset("v6.5").replace(kvmgt_lock="vgpu_lock"),
    "v6.6: remove_region, vgpu_lock": Design.preset("v6.6"),
}
PROPOSAL = "proposal, in no kernel: walk ptable"

#: Where the deleted slot starts: 2^29 gfns = 2 TiB, room for slots up to 1 TiB.
DELETE_BASE_GFN = 1 << (40 - PAGE_SHIFT + 1)

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
    count what KVMGT's slot hook does (the model's ``HookCall.work``, :func:`hook_cost`).
    The notebook's section 3 writes this experiment out in the public API."""
    d = Design.coerce(design)
    vm = new_vm(d)
    base = DELETE_BASE_GFN
    vm.set_user_memory_region(1, 0, base << PAGE_SHIFT, npages << PAGE_SHIFT, slot_ua(1))
    gvt = vm.attach_kvmgt()
    gvt.shadow_many(pick_pages(np.random.default_rng(seed), base, npages, tracked))
    c0 = len(vm.hook_calls)
    vm.set_user_memory_region(1, 0, base << PAGE_SHIFT, 0, slot_ua(1))   # DELETE
    return hook_cost(d, npages, min(tracked, npages), vm.hook_calls[c0:])


def hook_cost(design: Design | str, npages: int, tracked: int,
              calls: Sequence[HookCall]) -> HookCost:
    """:class:`HookCost` of the KVMGT slot-hook calls among ``calls`` (``vm.hook_calls``
    made by one DELETE of a slot of ``npages`` pages holding ``tracked`` shadowed
    pages): their ``Work`` counters summed, the
    longest ``mmu_lock`` hold, the updates into metadata freed at S7."""
    d = Design.coerce(design)
    calls = [c for c in calls if c.node == "kvmgt"]
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
    return HookCost(d.name, npages, tracked, ops["gfn_probes"], ops["chain_steps"],
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
