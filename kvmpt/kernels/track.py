"""Bulk write-track counter updates: GVT shadowing many page-table pages at once.

Kernels mirror arch/x86/kvm/mmu/page_track.c and mmu.c (v6.5/v6.6) at the
level of ``kvmpt.kernel.page_track``: the u16 ``gfn_write_track`` counter with its
``WARN_ON`` (count left unchanged), and ``disallow_lpage`` at the 2M and 1G
levels (``WARN_ON(< 0)``, change kept).  A kernel never formats a warning: it
records an event row ``(index, count, slot, gfn_write_track before,
lpage 2M before, lpage 1G before)`` and the model replays that row through
``kvmpt.kernel.page_track``'s own functions, so the warning text is the model's.
"""
from __future__ import annotations

import numpy as np

from kvmpt.kernels.common import find_slot, hash_64, hlist_add_head, hlist_find, load_i32, load_u16, \
    store_i32, store_u16
from kvmpt.kernels.policy import kernel

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
