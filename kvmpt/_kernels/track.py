"""Bulk write-track counter updates: GVT shadowing many page-table pages at once.

Kernels mirror arch/x86/kvm/mmu/page_track.c and mmu.c (v6.5/v6.6) at the
level of ``kvmpt.page_track``: the u16 ``gfn_write_track`` counter with its
``WARN_ON`` (count left unchanged), and ``disallow_lpage`` at the 2M and 1G
levels (``WARN_ON(< 0)``, change kept).  A kernel never formats a warning: it
records an event row ``(index, count, slot, gfn_write_track before,
lpage 2M before, lpage 1G before)`` and the wrapper replays that row through
``kvmpt.page_track``'s own functions, so the warning text is the model's.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from .. import lockdep as ld
from .. import page_track as _py
from ..work import Work, _zero
from .common import find_slot, hash_64, hlist_add_head, hlist_find, load_i32, load_u16, \
    store_i32, store_u16
from .flat import ptable_arrays, remember_ptable_arrays, slot_arrays
from .policy import kernel

USHRT_MAX = 0xFFFF
ADDED, FOUND, EINVAL = 0, 1, 2
EVENT_COLS = 6


@kernel
def update_gfn_write_track(track, idx, count):
    """Mirrors ``update_gfn_write_track()`` on the u16 array at address ``track``:
    returns (changed, value before); a result outside 0..USHRT_MAX is a WARN and
    leaves the count unchanged."""
    val = np.int64(load_u16(track, idx))
    new = val + count
    if new < 0 or new > USHRT_MAX:
        return False, val
    store_u16(track, idx, np.uint16(new))
    return True, val


@kernel
def update_gfn_disallow_lpage_count(lp2, lp3, gfn, base_gfn, count):
    """Mirrors ``update_gfn_disallow_lpage_count()`` at PG_LEVEL_2M and PG_LEVEL_1G
    (``gfn_to_index()``) on the s32 arrays at ``lp2`` and ``lp3``; returns
    (warned, 2M before, 1G before)."""
    s2 = np.uint64(9)
    s3 = np.uint64(18)
    i2 = (gfn >> s2) - (base_gfn >> s2)
    i3 = (gfn >> s3) - (base_gfn >> s3)
    b2 = np.int64(load_i32(lp2, i2))
    b3 = np.int64(load_i32(lp3, i3))
    store_i32(lp2, i2, np.int32(b2 + count))
    store_i32(lp3, i3, np.int32(b3 + count))
    return (b2 + count < 0) or (b3 + count < 0), b2, b3


@kernel
def write_track_update_gfn(track, lp2, lp3, gfn, base_gfn, count, events, nev, row_id, slot):
    """``__kvm_write_track_{add,remove}_gfn()`` minus the SPTE work: counter, then
    lpage counts.  Appends an event row on any WARN; returns (counter before, nev)."""
    changed, before = update_gfn_write_track(track, gfn - base_gfn, count)
    warned, b2, b3 = update_gfn_disallow_lpage_count(lp2, lp3, gfn, base_gfn, count)
    if (not changed) or warned:
        events[nev, 0] = row_id
        events[nev, 1] = count
        events[nev, 2] = slot
        events[nev, 3] = before
        events[nev, 4] = b2
        events[nev, 5] = b3
        nev += 1
    return before, nev


@kernel
def page_track_add_gfns(gfns, mutex_design, shift, head, nxt, key, clen, occ, n_nodes,
                        slot_base, slot_npages, track_addrs, lp2_addrs, lp3_addrs,
                        status, steps_out, tlb_out, events):
    """``intel_gvt_page_track_add()`` for each gfn in order (kvmgt.c; v6.6 when
    ``mutex_design``: probe ``ptable`` first, then ``kvm_write_track_add_gfn()``'s
    ``gfn_to_memslot()``; v6.5: ``gfn_to_memslot()`` first, then the probe under
    ``mmu_lock``).  A new gfn gets counter +1, lpage +1 and goes to its chain's
    head.  Stops at the first gfn no address-space-0 slot holds (status EINVAL).
    Returns (gfns processed including a failing one, nodes in use, events)."""
    nev = 0
    hint = -1
    for i in range(gfns.shape[0]):
        g = gfns[i]
        h = hash_64(g, shift)
        si = -1
        if not mutex_design:
            si = find_slot(slot_base, slot_npages, g, hint)
            if si < 0:
                status[i] = EINVAL
                return i + 1, n_nodes, nev
        node, steps, prev = hlist_find(head, nxt, key, h, g)
        steps_out[i] = steps
        if node >= 0:
            status[i] = FOUND
            continue
        if mutex_design:
            si = find_slot(slot_base, slot_npages, g, hint)
            if si < 0:
                status[i] = EINVAL
                return i + 1, n_nodes, nev
        hint = si
        before, nev = write_track_update_gfn(track_addrs[si], lp2_addrs[si], lp3_addrs[si], g,
                                             slot_base[si], 1, events, nev, i, si)
        tlb_out[i] = 1 if before == 0 else 0
        hlist_add_head(head, nxt, key, clen, occ, h, n_nodes, g)
        n_nodes += 1
        status[i] = ADDED
    return gfns.shape[0], n_nodes, nev


# ------------------------------------------------------------------ wrappers
def replay_warnings(vm, slots, events: np.ndarray, gfn_of_row, op: int) -> None:
    """Turn kernel event rows into the model's ``KernelWarning``s, in order, by
    running ``kvmpt.page_track``'s update functions on a one-gfn copy of the slot."""
    for row in events:
        r, count, si, before, b2, b3 = (int(x) for x in row)
        gfn = int(gfn_of_row(r))
        s = slots[si]
        fake = SimpleNamespace(id=s.id, as_id=s.as_id, base_gfn=gfn, arch=SimpleNamespace(
            gfn_write_track=np.array([before], dtype=np.uint16),
            lpage_info=[np.array([b2], dtype=np.int32), np.array([b3], dtype=np.int32)]))
        _py.update_gfn_write_track(fake, gfn, count, Work(), vm.warnings, op)
        _py.update_gfn_disallow_lpage_count(fake, gfn, count, Work(), vm.warnings, op)


def _as_gfn_array(gfns) -> np.ndarray:
    a = np.asarray(gfns)
    if a.ndim != 1:
        raise ValueError(f"gfns must be a 1-D array, got shape {a.shape}")
    if a.size and a.dtype.kind not in "iu":
        raise ValueError(f"gfns must be integers, got dtype {a.dtype}")
    if a.dtype.kind == "i" and a.size and int(a.min()) < 0:
        raise ValueError("gfns must be non-negative")
    return np.ascontiguousarray(a, dtype=np.uint64)


def _account(work: Work, mutex: bool, status, steps, tlb) -> None:
    """The Work of ``intel_gvt_page_track_add()`` per gfn, summed: what the loop
    adds with ``work.add`` and one ``mmu_lock`` hold per KVM call, whose largest
    (first of the largest) becomes ``max_hold`` if it beats the current one."""
    added = status == ADDED
    n_added = int(added.sum())
    t = tlb.astype(np.int64)
    steps = steps.astype(np.int64)
    if mutex:
        outside = {"gfn_probes": int(status.size), "chain_steps": int(steps.sum()),
                   "slot_lookups": int((status != FOUND).sum()), "hash_inserts": n_added}
        inside = {"counter_updates": n_added, "lpage_updates": 2 * n_added,
                  "tlb_flushes": int(t[added].sum())}
        holds = n_added
        sums = np.where(added, 3 + t, -1)
        def hold_of(k):
            return {"counter_updates": 1, "lpage_updates": 2, "tlb_flushes": int(t[k])}
    else:
        outside = {"slot_lookups": int(status.size)}
        inside = {"gfn_probes": int(status.size), "chain_steps": int(steps.sum()),
                  "counter_updates": n_added, "lpage_updates": 2 * n_added,
                  "tlb_flushes": int(t[added].sum()), "hash_inserts": n_added}
        holds = int(status.size)
        sums = 1 + steps + np.where(added, 5 + t, 0)
        def hold_of(k):
            h = {"gfn_probes": 1, "chain_steps": int(steps[k])}
            if added[k]:
                h.update(counter_updates=1, lpage_updates=2, tlb_flushes=int(t[k]),
                         hash_inserts=1)
            return h
    for k, v in outside.items():
        work.add(k, v)
    work.mmu_lock_acquisitions += holds
    for k, v in inside.items():
        work.ops[k] += v
        work.held[k] += v
    if holds:
        k = int(np.argmax(sums))
        if sums[k] >= 0 and int(sums[k]) > sum(work.max_hold.values()):
            work.max_hold = {**_zero(), **hold_of(k)}


def _ptable_add_many(pt, gfns: np.ndarray) -> None:
    """``pt.add(g)`` for each g in order (``hash_add`` at the chain head), with the
    hashing vectorised."""
    from ..kvmgt import hash_64_array
    if not gfns.size:
        return
    buckets = hash_64_array(gfns, pt.bits).astype(np.int64)
    for g, b in zip(gfns.tolist(), buckets.tolist()):
        pt.buckets.setdefault(b, []).insert(0, g)
    np.add.at(pt.chain_len, buckets, 1)
    pt._members.update(gfns.tolist())
    pt.gen += int(gfns.size)


def shadow_many(gvt, gfns) -> None:
    """``gvt.shadow(g)`` for each g of ``gfns`` in order, in one kernel call.

    Same resulting state (counters, lpage counts, ``ptable`` chains, GVT's tree
    and ``shadow_hva``), ``vm.warnings``, ``vm.work`` and lockdep as the loop.
    The gfn where the loop would raise (already shadowed, no slot) is handed to
    ``gvt.shadow`` itself after the ones before it, so the exception is the
    model's own.  Falls back to the loop when lockdep would say something (the
    GVT context already holds a lock, or the reverse lock order was seen) or a
    ``mmu_lock`` hold is open.
    """
    vm = gvt.vm
    gfns = _as_gfn_array(gfns)
    gvt._check_attached()
    tree = gvt.page_track_tree
    mutex = gvt._mutex_design()
    table_lock = gvt._table_lock
    if vm.lockdep.holding("gvt") or vm.work._current is not None or \
            (mutex and (ld.MMU_LOCK.name, table_lock.name) in vm.lockdep.order):
        for g in gfns.tolist():
            gvt.shadow(g)
        return
    # Where the loop raises before the kernel could tell: intel_vgpu_register_page_track()
    # -EEXIST, or (mutex designs) a gfn already in ptable that no AS0 slot holds.
    members = gvt.ptable.gfns() if mutex else ()
    slots0 = vm._as[0]
    stop, seen = gfns.shape[0], set()
    for i, g in enumerate(gfns.tolist()):
        if g in tree or g in seen or (g in members and slots0.find_gfn(g) is None):
            stop = i
            break
        seen.add(g)
    todo = gfns[:stop]
    n = todo.shape[0]
    sa = slot_arrays(vm, 0)
    pt = ptable_arrays(gvt.ptable).copy(extra=n)
    status = np.zeros(n, dtype=np.int8)
    steps = np.zeros(n, dtype=np.int64)
    tlb = np.zeros(n, dtype=np.int8)
    events = np.zeros((max(n, 1), EVENT_COLS), dtype=np.int64)
    done, n_nodes, nev = page_track_add_gfns(
        todo, mutex, pt.shift, pt.head, pt.nxt, pt.key, pt.clen, pt.occ, pt.n,
        sa.base, sa.npages, sa.counter_addrs, sa.lpage2_addrs, sa.lpage3_addrs, status, steps,
        tlb, events)
    pt.n = n_nodes
    if done and status[done - 1] == EINVAL:      # the kernel changed nothing for it
        stop, done = done - 1, done - 1
    ok = todo[:done]
    status, steps, tlb = status[:done], steps[:done], tlb[:done]
    _account(vm.work, mutex, status, steps, tlb)
    if mutex and (status == ADDED).any():
        vm.lockdep.order.add((table_lock.name, ld.MMU_LOCK.name))
    replay_warnings(vm, sa.slots, events[:nev], lambda r: todo[r], vm._op)
    _ptable_add_many(gvt.ptable, ok[status == ADDED])
    tree.update(dict.fromkeys(ok.tolist(), True))
    if done:
        # the host page behind each gfn (every gfn here has an address-space-0 slot)
        si = np.searchsorted(sa.base, ok, side="right") - 1
        ua = np.array([s.userspace_addr for s in sa.slots], dtype=np.uint64)
        hva = ua[si] + ((ok - sa.base[si]) << np.uint64(12))
        gvt.shadow_hva.update(zip(ok.tolist(), hva.tolist()))
    remember_ptable_arrays(gvt.ptable, pt)
    if stop < gfns.shape[0]:
        gvt.shadow(int(gfns[stop]))          # raises as the loop would
        raise AssertionError("shadow_many: gvt.shadow did not raise where the loop stops")


