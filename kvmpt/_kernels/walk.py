"""The slot walk of KVMGT's slot hook, over every gfn of the range.

Mirrors the loop of ``kvmgt_page_track_flush_slot()`` (v6.5, given the slot)
and ``kvmgt_page_track_remove_region()`` (v6.6, given gfn + nr_pages):
``for (i = 0; i < nr_pages; i++)``: one ``kvmgt_gfn_is_write_protected()``
probe of ``ptable`` per gfn, ascending; on a hit optionally drop KVM's write
protection (``kvm_slot_page_track_remove_page()`` on the given slot, or
``kvm_write_track_remove_gfn()`` = a ``gfn_to_memslot()`` lookup in address
space 0 when the hook has no slot), then ``kvmgt_protect_table_del()``.
Chain steps are counted exactly: a miss costs the bucket's chain as it is at
that moment, a hit its position, and each deletion shortens later probes.
"""
from __future__ import annotations

import numpy as np

from .common import U64_1, find_slot, hash_64, hlist_del, hlist_find, occ_test
from .flat import ptable_arrays, remember_ptable_arrays
from .policy import kernel
from .track import write_track_update_gfn

DROP_NONE, DROP_SLOT, DROP_LOOKUP = 0, 1, 2


@kernel
def slot_walk(base_gfn, npages, shift, head, nxt, key, clen, occ, delete, hits,
              drop, target, slot_base, slot_npages, track_addrs, lp2_addrs, lp3_addrs,
              dropped, events):
    """The hook loop over [base_gfn, base_gfn + npages).  ``drop``: DROP_NONE,
    DROP_SLOT (into slot ``target``) or DROP_LOOKUP (``find_slot`` per hit).
    ``dropped[k]`` is 1 when hit k's protection was dropped.  Returns (hits,
    chain steps, slot lookups, event rows)."""
    nh = 0
    steps = 0
    lookups = 0
    nev = 0
    hint = -1
    g = base_gfn
    for _ in range(npages):
        h = hash_64(g, shift)
        if occ_test(occ, h) != 0:
            node, s, prev = hlist_find(head, nxt, key, h, g)
            steps += s
            if node >= 0:
                hits[nh] = g
                dropped[nh] = 0
                si = -1
                if drop == DROP_SLOT:
                    si = target
                elif drop == DROP_LOOKUP:
                    lookups += 1
                    si = find_slot(slot_base, slot_npages, g, hint)
                if si >= 0:
                    hint = si
                    before, nev = write_track_update_gfn(track_addrs[si], lp2_addrs[si],
                                                         lp3_addrs[si], g, slot_base[si], -1,
                                                         events, nev, nh, si)
                    dropped[nh] = 1
                if delete:
                    hlist_del(head, nxt, clen, occ, h, node, prev)
                nh += 1
        g += U64_1
    return nh, steps, lookups, nev


@kernel
def walk_count(base_gfn, npages, shift, head, nxt, key, occ):
    """The probe loop alone, without deleting (a read-only walk): (hits, chain steps)."""
    nh = 0
    steps = 0
    g = base_gfn
    for _ in range(npages):
        h = hash_64(g, shift)
        if occ_test(occ, h) != 0:
            node, s, prev = hlist_find(head, nxt, key, h, g)
            steps += s
            if node >= 0:
                nh += 1
        g += U64_1
    return nh, steps


# ------------------------------------------------------------------ wrappers
_NO_SLOTS = np.zeros(0, dtype=np.uint64)


def _dummy_slots():
    return _NO_SLOTS, _NO_SLOTS, _NO_SLOTS, _NO_SLOTS, _NO_SLOTS


def _check_range(base_gfn, npages):
    for name, v in (("base_gfn", base_gfn), ("npages", npages)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
    if int(base_gfn) + int(npages) > 1 << 64:
        raise ValueError("base_gfn + npages does not fit in 64 bits")
    return int(base_gfn), int(npages)


def walk_range(pt, base_gfn: int, npages: int, delete: bool = True):
    """``ProtectTable.walk_range`` by kernel: (hits ascending, chain steps); with
    ``delete`` the hits are removed from ``pt`` as the hook does."""
    base_gfn, npages = _check_range(base_gfn, npages)
    if not len(pt):
        return [], 0             # every chain is empty: each probe costs no step
    arr = ptable_arrays(pt)
    if not delete:
        nh, steps = walk_count(np.uint64(base_gfn), npages, arr.shift, arr.head, arr.nxt,
                               arr.key, arr.occ)
        end = base_gfn + npages
        return sorted(g for g in pt.gfns() if base_gfn <= g < end), int(steps)
    work = arr.copy()
    hits = np.zeros(max(arr.n, 1), dtype=np.uint64)
    dropped = np.zeros(max(arr.n, 1), dtype=np.uint8)
    events = np.zeros((1, 6), dtype=np.int64)
    sb, sn, c, l2, l3 = _dummy_slots()
    nh, steps, _, _ = slot_walk(np.uint64(base_gfn), npages, work.shift, work.head, work.nxt,
                                work.key, work.clen, work.occ, True, hits, DROP_NONE, -1,
                                sb, sn, c, l2, l3, dropped, events)
    out = hits[:nh].tolist()
    for g in out:
        pt.delete(g)
    remember_ptable_arrays(pt, work)
    return out, int(steps)


def slot_hook(gvt, hook: str, base_gfn: int, npages: int, slot, call) -> None:
    """``KVMGT.slot_hook`` with the walk and the protection drop in one kernel:
    same ``ptable``, counters, ``vm.warnings``, ``call.work`` and lockdep.

    ``slot`` given (flush hook): drop into that slot's arrays; ``slot`` None
    (remove hook): look each hit up in address space 0, as
    ``kvm_write_track_remove_gfn()`` would."""
    from .. import lockdep as ld
    from .flat import slot_arrays, slots_as_arrays
    from .track import replay_warnings

    vm, work = gvt.vm, call.work
    base_gfn, npages = _check_range(base_gfn, npages)
    drop = gvt.design.drop_protection_on_remove
    outer_mmu = not gvt._mutex_design()
    lock = ld.MMU_LOCK if outer_mmu else gvt._table_lock
    vm.lockdep.acquire("ioctl", lock)
    if outer_mmu:
        work.mmu_lock_begin()
    arr = ptable_arrays(gvt.ptable).copy()
    hits = np.zeros(max(arr.n, 1), dtype=np.uint64)
    dropped = np.zeros(max(arr.n, 1), dtype=np.uint8)
    events = np.zeros((max(arr.n, 1), 6), dtype=np.int64)
    sa = None
    if drop and slot is not None:
        sa = slots_as_arrays([slot])
        mode, target, slots = DROP_SLOT, 0, sa.slots
    elif drop:
        sa = slot_arrays(vm, 0)
        mode, target, slots = DROP_LOOKUP, -1, sa.slots
    if sa is not None:
        sb, sn, c, l2, l3 = (sa.base, sa.npages, sa.counter_addrs, sa.lpage2_addrs,
                             sa.lpage3_addrs)
    else:
        mode, target, slots = DROP_NONE, -1, []
        sb, sn, c, l2, l3 = _dummy_slots()
    nh, steps, lookups, nev = slot_walk(np.uint64(base_gfn), npages, arr.shift, arr.head,
                                        arr.nxt, arr.key, arr.clen, arr.occ, True, hits,
                                        mode, target, sb, sn, c, l2, l3, dropped, events)
    out = hits[:nh].tolist()
    ndrop = int(dropped[:nh].sum())
    work.add("gfn_probes", npages)
    work.add("chain_steps", int(steps))
    call.hits = nh
    work.add("slot_lookups", int(lookups))
    if outer_mmu:
        work.add("counter_updates", ndrop)
        work.add("lpage_updates", 2 * ndrop)
    else:
        work.add_hold(ndrop, {"counter_updates": 1, "lpage_updates": 2})
    work.add("hash_deletes", nh)
    replay_warnings(vm, slots, events[:nev], lambda r: out[r], vm._op)
    for g in out:
        gvt.ptable.delete(g)
    remember_ptable_arrays(gvt.ptable, arr)
    if outer_mmu:
        work.mmu_lock_end()
    vm.lockdep.release("ioctl", lock)


def slot_walk_drop(vm, gvt, base_gfn: int, npages: int, target=None):
    """The hook's walk with protection dropped, outside a memslot update (for the
    benchmark and warmup): deletes hits from ``ptable`` and decrements the
    counters of ``target`` (or of the address-space-0 slot holding each hit).
    Returns (hits, chain steps)."""
    from ..work import HookCall
    call = HookCall(-1, "track_flush_slot" if target is not None else "track_remove_region",
                    "kvmgt", "DELETE", 0, -1, base_gfn, npages)
    design = gvt.design
    if not design.drop_protection_on_remove:
        import dataclasses
        gvt.design = dataclasses.replace(design, drop_protection_on_remove=True)
    try:
        slot_hook(gvt, call.hook, base_gfn, npages, target, call)
    finally:
        gvt.design = design
    return call.hits, call.work.ops["chain_steps"]
