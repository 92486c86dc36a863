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

Arrays in, counts out: the model (``kvmpt.kernel.kvmgt.KVMGT.slot_hook``) passes a copy
of its flat ``ptable`` and the slots' counter arrays, and books what comes back.
"""
from __future__ import annotations

from kvmpt.kernels.common import U64_1, find_slot, hash_64, hlist_del, hlist_find, occ_test
from kvmpt.kernels.policy import kernel
from kvmpt.kernels.track import write_track_update_gfn

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
