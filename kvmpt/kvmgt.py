"""KVMGT, the external page tracker (drivers/gpu/drm/i915/gvt/kvmgt.c and gvt/page_track.c).

Two structures, kept apart as in the kernel:

* ``ptable``: KVMGT's "protect table", ``DECLARE_HASHTABLE(ptable, 18)`` of
  ``struct kvmgt_pgfn``: the gfns KVMGT asked KVM to write-track.  Modelled as
  the chained hash table it is (2^18 buckets, ``hash_64()`` golden-ratio
  hashing, ``hlist_add_head`` insertion), so that lookups cost chain steps.
* ``page_track_tree``: GVT's radix tree of ``struct intel_vgpu_page_track``
  (``tracked`` flag per gfn): the guest page-table pages GVT shadows.

A guest write to a gfn in ``page_track_tree`` that does not reach
``intel_vgpu_page_track_handler()`` leaves GVT's shadow page table stale.
"""
from __future__ import annotations

import errno
from typing import TYPE_CHECKING

import numpy as np

from . import lockdep as ld
from .page_track import NotifierNode, gpa_to_gfn, write_track_add_gfn_locked, \
    write_track_remove_gfn_locked
from .work import HookCall, Work

if TYPE_CHECKING:  # pragma: no cover
    from .memslot import MemorySlot
    from .vm import VM

GOLDEN_RATIO_64 = 0x61C8864680B583EB     # include/linux/hash.h
U64 = (1 << 64) - 1
PTABLE_BITS = 18                          # gvt.h: DECLARE_HASHTABLE(ptable, 18)


def hash_64(val: int, bits: int = PTABLE_BITS) -> int:
    """Mirrors ``hash_64_generic()`` (include/linux/hash.h): ``val * GOLDEN_RATIO_64 >> (64 - bits)``."""
    return ((val * GOLDEN_RATIO_64) & U64) >> (64 - bits)


def hash_64_array(gfns: np.ndarray, bits: int = PTABLE_BITS) -> np.ndarray:
    """``hash_64`` over a ``uint64`` array (NumPy multiplies modulo 2^64)."""
    with np.errstate(over="ignore"):
        return (gfns.astype(np.uint64) * np.uint64(GOLDEN_RATIO_64)) >> np.uint64(64 - bits)


class ProtectTable:
    """KVMGT's ``ptable``: ``hash_init`` / ``hash_add`` / ``hash_del`` /
    ``hash_for_each_possible`` over 2^18 hlist buckets."""

    def __init__(self, bits: int = PTABLE_BITS) -> None:
        self.bits = bits
        self.buckets: dict[int, list[int]] = {}     # bucket -> gfns, chain head first
        self.chain_len = np.zeros(1 << bits, dtype=np.int32)
        self._members: set[int] = set()
        self.gen = 0          # bumped by every change: kernels rebuild their flat copy

    def __contains__(self, gfn: int) -> bool:
        return gfn in self._members

    def __len__(self) -> int:
        return len(self._members)

    def gfns(self) -> set[int]:
        return set(self._members)

    def find(self, gfn: int) -> tuple[bool, int]:
        """Mirrors ``__kvmgt_protect_table_find()``: walk the bucket until the gfn
        matches.  Returns (found, chain steps)."""
        chain = self.buckets.get(hash_64(gfn, self.bits), ())
        for i, g in enumerate(chain):
            if g == gfn:
                return True, i + 1
        return False, len(chain)

    def add(self, gfn: int) -> None:
        """Mirrors ``kvmgt_protect_table_add()`` after its find: ``hash_add`` puts the
        node at the chain head."""
        b = hash_64(gfn, self.bits)
        self.buckets.setdefault(b, []).insert(0, gfn)
        self.chain_len[b] += 1
        self._members.add(gfn)
        self.gen += 1

    def delete(self, gfn: int) -> None:
        """Mirrors ``kvmgt_protect_table_del()``'s ``hash_del`` + ``kfree``."""
        b = hash_64(gfn, self.bits)
        chain = self.buckets[b]
        chain.remove(gfn)
        if not chain:
            del self.buckets[b]
        self.chain_len[b] -= 1
        self._members.discard(gfn)
        self.gen += 1

    def destroy(self) -> None:
        """Mirrors ``kvmgt_protect_table_destroy()``: free every entry, no call into KVM."""
        self.buckets.clear()
        self.chain_len[:] = 0
        self._members.clear()
        self.gen += 1

    def walk_range(self, base_gfn: int, npages: int, delete: bool = True,
                   chunk: int | None = None) -> tuple[list[int], int]:
        """One lookup per gfn of [base_gfn, base_gfn + npages) in ascending order,
        deleting each hit as it goes (the loop of ``kvmgt_page_track_flush_slot()`` /
        ``kvmgt_page_track_remove_region()``).  Returns (hits ascending, chain steps).

        Runs the jitted kernel ``kvmpt._kernels.walk.slot_walk`` (``chunk`` is
        accepted for ``walk_range_numpy``'s signature and ignored: the kernel needs no
        per-gfn memory); ``walk_range_numpy`` is the reference it is tested against."""
        from ._kernels.walk import walk_range
        return walk_range(self, base_gfn, npages, delete)

    def walk_range_numpy(self, base_gfn: int, npages: int, delete: bool = True,
                         chunk: int = 1 << 22) -> tuple[list[int], int]:
        """``walk_range`` in vectorised NumPy (the reference for the kernel).

        Exact chain-step count: gfns whose bucket holds no hit see the bucket's
        current chain length; gfns in buckets with hits are replayed one by one,
        because each deletion shortens the chain for later probes.
        """
        end = base_gfn + npages
        hits = sorted(g for g in self._members if base_gfn <= g < end)
        hit_buckets = np.array(sorted({hash_64(g, self.bits) for g in hits}), dtype=np.uint64)
        steps = 0
        replay: list[np.ndarray] = []
        for start in range(base_gfn, end, chunk):
            gfns = np.arange(start, min(start + chunk, end), dtype=np.uint64)
            h = hash_64_array(gfns, self.bits)
            if hit_buckets.size:
                mask = np.isin(h, hit_buckets)
                steps += int(self.chain_len[h[~mask]].sum(dtype=np.int64))
                replay.append(gfns[mask])
            else:
                steps += int(self.chain_len[h].sum(dtype=np.int64))
        if hit_buckets.size:
            chains = {int(b): list(self.buckets[int(b)]) for b in hit_buckets}
            for g in (int(x) for part in replay for x in part):
                chain = chains[hash_64(g, self.bits)]
                try:
                    i = chain.index(g)
                except ValueError:
                    steps += len(chain)
                    continue
                steps += i + 1
                if delete:
                    chain.pop(i)
        if delete:
            for g in hits:
                self.delete(g)
        return hits, steps


class KVMGT:
    """One attached vGPU's KVMGT state (``struct intel_vgpu``), the object
    ``vm.attach_kvmgt()`` returns.

    Locks: the GTT shadowing path runs in lockdep context ``"gvt"``, guest
    writes in ``"vcpu"``, memslot updates in ``"ioctl"``.
    """

    def __init__(self, vm: "VM") -> None:
        self.vm = vm
        self.design = vm.design
        self.ptable = ProtectTable()
        self.page_track_tree: dict[int, bool] = {}     # gfn -> intel_vgpu_page_track.tracked
        # The host page behind each shadowed gfn when GVT shadowed it: a MOVE keeps
        # the hva (userspace_addr cannot change) but shows the page at another gfn.
        self.shadow_hva: dict[int, int] = {}
        self.attached = False
        self.failsafe = False
        self.node = NotifierNode("kvmgt", external=True, owner=self)

    # ------------------------------------------------------------------ locks
    @property
    def _table_lock(self) -> ld.LockClass:
        """The lock guarding ``ptable`` in this design: ``mmu_lock`` (v6.5, where
        add/del run under it), ``gfn_lock`` (series v1) or ``vgpu_lock`` (v6.6)."""
        return {"none": ld.MMU_LOCK, "mmu_lock": ld.MMU_LOCK,
                "gfn_lock": ld.GFN_LOCK, "vgpu_lock": ld.VGPU_LOCK}[self.design.kvmgt_lock]

    def _mutex_design(self) -> bool:
        return self.design.kvmgt_lock in ("gfn_lock", "vgpu_lock")

    # ------------------------------------------------------- GVT entry points
    def shadow(self, gfn: int) -> None:
        """GVT starts shadowing a guest page-table page.

        Mirrors ``intel_vgpu_register_page_track()`` (radix-tree insert, -EEXIST
        if present) then ``intel_vgpu_enable_page_track()`` ->
        ``intel_gvt_page_track_add()`` (gvt/page_track.c, kvmgt.c).  On failure
        the registration is undone and OSError is raised; nothing changes.
        """
        gfn = self.vm._check_gfn(gfn)
        self._check_attached()
        if gfn in self.page_track_tree:
            raise OSError(errno.EEXIST, f"gfn {gfn:#x} is already shadowed "
                          "(intel_vgpu_register_page_track: -EEXIST)")
        r = self.page_track_add(gfn)
        if r:
            raise OSError(-r, f"intel_gvt_page_track_add(gfn={gfn:#x}) failed: "
                          f"{errno.errorcode[-r]} (no memslot in address space 0 holds it)")
        self.page_track_tree[gfn] = True
        slot = self.vm._gfn_to_memslot(gfn, 0)
        self.shadow_hva[gfn] = slot.userspace_addr + ((gfn - slot.base_gfn) << 12)

    def shadow_many(self, gfns) -> None:
        """``shadow(g)`` for each g of ``gfns`` (a NumPy integer array) in order, in one
        jitted kernel (``kvmpt._kernels.track.page_track_add_gfns``): the same state,
        warnings, Work and lockdep as the loop, and the same OSError at the same gfn
        (the gfns before it stay shadowed)."""
        from ._kernels.track import shadow_many
        shadow_many(self, gfns)

    def unshadow(self, gfn: int) -> None:
        """Mirrors ``intel_vgpu_unregister_page_track()``: radix-tree delete, then
        ``intel_gvt_page_track_remove()`` if it was tracked (its return value is
        ignored, as in gvt/page_track.c).  Unshadowing an unknown gfn is a no-op."""
        gfn = self.vm._check_gfn(gfn)
        tracked = self.page_track_tree.pop(gfn, None)
        self.shadow_hva.pop(gfn, None)
        if tracked:
            self.page_track_remove(gfn)

    def is_write_protected(self, gfn: int) -> bool:
        """Mirrors ``kvmgt_gfn_is_write_protected()``: the gfn is in ``ptable``."""
        return gfn in self.ptable

    def stale_gfns(self) -> list[int]:
        """Gfns GVT shadows whose guest writes (from a vCPU outside SMM) would not
        reach its handler: no memslot, write-track count 0, or not in ``ptable``."""
        return sorted(g for g, tracked in self.page_track_tree.items()
                      if tracked and self.vm._classify(g, 0) != "handled")

    def shadowed_gfns(self) -> list[int]:
        return sorted(g for g, t in self.page_track_tree.items() if t)

    def detach(self) -> None:
        """Mirrors ``intel_vgpu_close_device()``: ``intel_gvt_release_vgpu()`` (which
        in mainline does not tear down PPGTT shadows, so KVM's write-track counts
        are *not* dropped), clear ATTACHED, ``kvm_page_track_unregister_notifier()``
        (``synchronize_srcu``), ``kvmgt_protect_table_destroy()``."""
        self._check_attached()
        self.attached = False
        self.vm._unregister_notifier(self.node)
        self.ptable.destroy()
        self.page_track_tree.clear()     # the vGPU is gone: nothing is shadowed any more
        self.shadow_hva.clear()

    def _check_attached(self) -> None:
        if not self.attached:
            raise OSError(errno.ESRCH, "vGPU is not attached (INTEL_VGPU_STATUS_ATTACHED clear)")

    def _probe(self, gfn: int, work: Work) -> bool:
        """``kvmgt_gfn_is_write_protected()``: one ptable lookup, accounted in ``work``."""
        found, steps = self.ptable.find(gfn)
        work.add("gfn_probes")
        work.add("chain_steps", steps)
        return found

    # ------------------------------------------ intel_gvt_page_track_{add,remove}
    def page_track_add(self, gfn: int) -> int:
        """Mirrors ``intel_gvt_page_track_add()``.  v6.5 (ptable under mmu_lock):
        srcu, ``gfn_to_memslot`` (-EINVAL), ``write_lock(mmu_lock)``, skip if in
        ptable, else ``kvm_slot_page_track_add_page`` + ``kvmgt_protect_table_add``.
        v6.6 (caller holds vgpu_lock): return 0 if in ptable, else
        ``kvm_write_track_add_gfn()`` then ``kvmgt_protect_table_add()``."""
        vm, work = self.vm, self.vm.work
        if self._mutex_design():
            with vm.lockdep_ctx("gvt", self._table_lock):
                found = self._probe(gfn, work)
                if found:
                    return 0
                r = vm.write_track_add_gfn(gfn, ctx="gvt", _raise=False)
                if r:
                    return r
                self.ptable.add(gfn)
                work.add("hash_inserts")
                return 0
        slot = vm._gfn_to_memslot(gfn, 0)
        work.add("slot_lookups")
        if slot is None:
            return -errno.EINVAL
        with vm.mmu_write_lock("gvt"):
            found = self._probe(gfn, work)
            if not found:
                write_track_add_gfn_locked(slot, gfn, work, vm.warnings, vm._op)
                self.ptable.add(gfn)
                work.add("hash_inserts")
        return 0

    def page_track_remove(self, gfn: int) -> int:
        """Mirrors ``intel_gvt_page_track_remove()`` (v6.5: under mmu_lock; v6.6:
        caller holds vgpu_lock, returns early if not in ptable, and keeps the entry
        if ``kvm_write_track_remove_gfn()`` fails with -EINVAL)."""
        vm, work = self.vm, self.vm.work
        if self._mutex_design():
            with vm.lockdep_ctx("gvt", self._table_lock):
                found = self._probe(gfn, work)
                if not found:
                    return 0
                r = vm.write_track_remove_gfn(gfn, ctx="gvt", _raise=False)
                if r:
                    return r
                self.ptable.delete(gfn)
                work.add("hash_deletes")
                return 0
        slot = vm._gfn_to_memslot(gfn, 0)
        work.add("slot_lookups")
        if slot is None:
            return -errno.EINVAL
        with vm.mmu_write_lock("gvt"):
            found = self._probe(gfn, work)
            if found:
                write_track_remove_gfn_locked(slot, gfn, work, vm.warnings, vm._op)
                self.ptable.delete(gfn)
                work.add("hash_deletes")
        return 0

    # ------------------------------------------------------------- the hooks
    def track_write(self, gpa: int, nbytes: int) -> bool:
        """``kvmgt_page_track_write()``; returns True if GVT's handler ran.

        none (v6.5): unlocked ``kvmgt_gfn_is_write_protected()``, the handler takes
        ``vgpu_lock`` itself.  mmu_lock: lookup under ``mmu_lock``, and the
        handler then sleeps under it (lockdep reports sleep-in-atomic).  gfn_lock
        (v1): ``vgpu_lock`` then ``gfn_lock``.  vgpu_lock (v6.6): ``vgpu_lock``
        hoisted here, the handler no longer takes it.
        """
        vm, work = self.vm, self.vm.work
        gfn = gpa_to_gfn(gpa)
        lock = self.design.kvmgt_lock
        if lock == "none":
            found = self._probe(gfn, work)
            if found:
                with vm.lockdep_ctx("vcpu", ld.VGPU_LOCK):
                    self.page_track_handler(gpa, nbytes)
            return found
        locks = {"mmu_lock": [ld.MMU_LOCK], "gfn_lock": [ld.VGPU_LOCK, ld.GFN_LOCK],
                 "vgpu_lock": [ld.VGPU_LOCK]}[lock]
        if lock == "mmu_lock":
            work.mmu_lock_begin()
        with vm.lockdep_ctx("vcpu", *locks):
            found = self._probe(gfn, work)
            if found:
                self.page_track_handler(gpa, nbytes)
        if lock == "mmu_lock":
            work.mmu_lock_end()
        return found

    def page_track_handler(self, gpa: int, nbytes: int) -> int:
        """Mirrors ``intel_vgpu_page_track_handler()``: radix-tree lookup (-ENXIO if
        absent); in failsafe mode ``intel_gvt_page_track_remove()``, else the
        shadow update (``ppgtt_write_protection_handler``), which may sleep
        (``cache_lock`` in ``intel_gvt_dma_unmap_guest_page``)."""
        vm = self.vm
        vm.work.add("handler_calls")
        gfn = gpa_to_gfn(gpa)
        if gfn not in self.page_track_tree:
            return -errno.ENXIO
        vm.lockdep.might_sleep("vcpu", "ppgtt_write_protection_handler -> mutex_lock(cache_lock)")
        if self.failsafe:
            if self.design.kvmgt_lock == "gfn_lock" and vm.lockdep.holds("vcpu", ld.GFN_LOCK):
                # v1: intel_gvt_page_track_remove() takes gfn_lock again -> never returns.
                vm.lockdep.acquire("vcpu", ld.GFN_LOCK)
                return -errno.EDEADLK
            return self.page_track_remove(gfn)
        return 0

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
        vm, work = self.vm, call.work
        drop = self.design.drop_protection_on_remove
        outer_mmu = not self._mutex_design()
        if outer_mmu:
            vm.lockdep.acquire("ioctl", ld.MMU_LOCK)
            work.mmu_lock_begin()
        else:
            vm.lockdep.acquire("ioctl", self._table_lock)
        hits, steps = self.ptable.walk_range(base_gfn, npages, delete=True)
        work.add("gfn_probes", npages)
        work.add("chain_steps", steps)
        call.hits = len(hits)
        for gfn in hits:
            if drop:
                target = slot
                if target is None:
                    target = vm._gfn_to_memslot(gfn, 0)
                    work.add("slot_lookups")
                if target is not None:
                    if not outer_mmu:
                        work.mmu_lock_begin()
                    write_track_remove_gfn_locked(target, gfn, work, vm.warnings, vm._op)
                    if not outer_mmu:
                        work.mmu_lock_end()
            work.add("hash_deletes")
        if outer_mmu:
            work.mmu_lock_end()
            vm.lockdep.release("ioctl", ld.MMU_LOCK)
        else:
            vm.lockdep.release("ioctl", self._table_lock)
