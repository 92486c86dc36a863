"""KVMGT's slot hook (drivers/gpu/drm/i915/gvt/kvmgt.c): ``kvmgt_page_track_flush_slot()``
(v6.5, fired at invalidate, S2c) and ``kvmgt_page_track_remove_region()`` (v6.6, fired at
commit of a DELETE, S7), which share one body: walk the range, drop each ``ptable`` hit.

:class:`KvmgtSlotHook` is the part of :class:`kvmpt.kernel.kvmgt.KVMGT` that mirrors
them: the walk one gfn at a time (``_walk_plain``) or in one Numba call
(``_walk_kernel``, ``kvmpt.kernels.walk.slot_walk``), and the Work and lockdep of the
call, booked once for both (``_book_slot_hook``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from kvmpt.kernel import lockdep as ld
from kvmpt.kernel.page_track import replay_warnings, write_track_remove_gfn_locked
from kvmpt.kernel.work import HookCall

if TYPE_CHECKING:
    from kvmpt.kernel.memslot import MemorySlot


class KvmgtSlotHook:
    """The slot hook of a vGPU's KVMGT (uses ``vm``, ``design``, ``ptable``,
    ``_mutex_design``, ``_table_lock`` and ``_changed`` of :class:`KVMGT`)."""

    def slot_hook(self, hook: str, base_gfn: int, npages: int, slot: "MemorySlot | None",
                  call: HookCall) -> None:
        """The body shared by ``kvmgt_page_track_flush_slot()`` (v6.5, given the slot)
        and ``kvmgt_page_track_remove_region()`` (v6.6, given gfn + nr_pages only).

        For every gfn of the range: one ptable lookup; on a hit, optionally drop
        KVM's write protection (``drop_protection_on_remove``), then
        ``kvmgt_protect_table_del()``.  Locking follows the design:

        * ptable under ``mmu_lock`` (none / mmu_lock): ``write_lock(mmu_lock)``
          across the whole loop (v6.5 ``kvmgt_page_track_flush_slot``);
        * ptable under a mutex (gfn_lock / vgpu_lock): the mutex across the loop,
          ``mmu_lock`` only per protected gfn around the KVM call (v4 11/29), and
          no ``mmu_lock`` at all when protection is not dropped (v6.6).

        Dropping protection with the slot (flush hook) decrements that slot's
        own counters, ``kvm_slot_page_track_remove_page(kvm, slot, gfn)``; without
        a slot (remove hook) it has to go through ``kvm_write_track_remove_gfn()``,
        which looks the gfn up in address space 0 (``gfn_to_memslot``) and
        returns -EINVAL when the slot is already gone.
        """
        walk = self._walk_kernel if self.vm.kernels else self._walk_plain
        hits, steps, lookups, ndrop = walk(base_gfn, npages, slot)
        self._book_slot_hook(call, npages, hits, steps, lookups, ndrop)
        self._changed()

    def _walk_plain(self, base_gfn: int, npages: int, slot):
        """The hook's loop, one gfn at a time: (hits, chain steps, slot lookups,
        protections dropped)."""
        vm, drop = self.vm, self.design.drop_protection_on_remove
        hits, steps, lookups, ndrop = [], 0, 0, 0
        for gfn in range(base_gfn, base_gfn + npages):
            found, s = self.ptable.find(gfn)
            steps += s
            if not found:
                continue
            hits.append(gfn)
            if drop:
                target = slot
                if target is None:
                    target = vm._gfn_to_memslot(gfn, 0)
                    lookups += 1
                if target is not None:
                    write_track_remove_gfn_locked(target, gfn, None, vm.warnings, vm._op)
                    ndrop += 1
            self.ptable.delete(gfn)
        return hits, steps, lookups, ndrop

    def _walk_kernel(self, base_gfn: int, npages: int, slot):
        """``_walk_plain`` in one kernel call (``kvmpt.kernels.walk.slot_walk``)."""
        from kvmpt.kernel.flat import slots_as_arrays
        from kvmpt.kernels.walk import DROP_LOOKUP, DROP_NONE, DROP_SLOT, slot_walk
        vm = self.vm
        if not len(self.ptable):
            return [], 0, 0, 0         # every chain is empty: each probe costs no step
        arr = vm._ptable_arrays(self.ptable).copy()
        hits = np.zeros(max(arr.n, 1), dtype=np.uint64)
        dropped = np.zeros(max(arr.n, 1), dtype=np.uint8)
        events = np.zeros((max(arr.n, 1), 6), dtype=np.int64)
        mode, target, sa = DROP_NONE, -1, None
        if self.design.drop_protection_on_remove:
            if slot is not None:
                mode, target, sa = DROP_SLOT, 0, slots_as_arrays([slot])
            else:
                mode, sa = DROP_LOOKUP, vm._slot_arrays(0)
        sa = sa or slots_as_arrays([])
        nh, steps, lookups, nev = slot_walk(
            np.uint64(base_gfn), npages, arr.shift, arr.head, arr.nxt, arr.key, arr.clen,
            arr.occ, True, hits, mode, target, sa.base, sa.npages, sa.counter_addrs,
            sa.lpage2_addrs, sa.lpage3_addrs, dropped, events)
        out = hits[:nh].tolist()
        replay_warnings(vm, sa.slots, events[:nev], lambda r: out[r], vm._op)
        for g in out:
            self.ptable.delete(g)
        vm._remember_ptable_arrays(self.ptable, arr)
        return out, int(steps), int(lookups), int(dropped[:nh].sum())

    def _book_slot_hook(self, call: HookCall, npages: int, hits: list, steps: int,
                        lookups: int, ndrop: int) -> None:
        """The Work and lockdep of one slot-hook call, for both walks."""
        vm, work = self.vm, call.work
        outer_mmu = not self._mutex_design()
        lock = ld.MMU_LOCK if outer_mmu else self._table_lock
        vm.lockdep.acquire("ioctl", lock)
        if outer_mmu:
            work.mmu_lock_begin()
        work.add("gfn_probes", npages)
        work.add("chain_steps", steps)
        work.add("slot_lookups", lookups)
        call.hits = len(hits)
        if outer_mmu:
            work.add("counter_updates", ndrop)
            work.add("lpage_updates", 2 * ndrop)
        else:
            work.add_hold(ndrop, {"counter_updates": 1, "lpage_updates": 2})
        work.add("hash_deletes", len(hits))
        if outer_mmu:
            work.mmu_lock_end()
        vm.lockdep.release("ioctl", lock)
