"""arch/x86/kvm/x86.c (and mmu.c): the arch hooks of a memslot update.

:class:`X86` is the part of :class:`kvmpt.kernel.vm.VM` that mirrors
``kvm_arch_flush_shadow_memslot()`` (S2c: v6.5 ``kvm_page_track_flush_slot()``,
v6.6 ``kvm_mmu_zap_all_fast()``), ``kvm_arch_prepare_memory_region()`` (S3, with the
v6.6 MOVE rejection) and ``kvm_arch_commit_memory_region()`` (S7, with the v6.6
``kvm_page_track_delete_slot()``), plus kvmpt's fault injection into prepare.
"""
from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from kvmpt.kernel.memslot import (CREATE, DELETE, FLAGS_ONLY, KVM_MEM_LOG_DIRTY_PAGES, MOVE, MemorySlot,
                      SlotArch)
from kvmpt.kernel.work import HookCall

if TYPE_CHECKING:  # pragma: no cover
    from kvmpt.kernel.kvm_main import OpRecord


class X86:
    """The x86 arch side of ``kvm_set_memslot()``, mixed into :class:`kvmpt.kernel.vm.VM`."""

    def fail_next_prepare(self, err: int | None) -> None:
        """The next memslot update whose ``kvm_prepare_memory_region()`` (S3) reaches
        an allocation fails there with ``err`` (e.g. ``errno.ENOMEM``).

        Allocations in S3, in order: the dirty bitmap (common code, when LOG_DIRTY
        is newly set), then ``kvm_alloc_memslot_metadata()`` (CREATE and MOVE, after
        the MOVE-rejection and max-gfn checks).  A DELETE never fails in prepare on
        x86 (<Y2qSwlN26qWi3ZqH@google.com>), so it passes the injection on; so does
        a MOVE rejected before it allocates.  ``fail_next_prepare(None)`` cancels a
        pending injection.
        """
        if err is None:
            self._fail_next_prepare = None
            return
        if isinstance(err, bool) or not isinstance(err, int) or err not in errno.errorcode:
            raise ValueError(f"fail_next_prepare needs a positive errno such as errno.ENOMEM, "
                             f"got {err!r}")
        self._fail_next_prepare = err

    def _flush_shadow_memslot(self, old: MemorySlot, change: str, rec: OpRecord) -> None:
        """S2c, ``kvm_arch_flush_shadow_memslot()``.  v6.5: ``kvm_page_track_flush_slot()``
        walks the notifier list (newest first, so KVMGT before KVM's own node, whose
        ``track_flush_slot`` is ``kvm_mmu_invalidate_zap_pages_in_memslot()`` ->
        ``kvm_mmu_zap_all_fast()``).  v6.6: ``kvm_mmu_zap_all_fast()`` directly."""
        if self.design.slot_hook == "flush":
            for node in list(self.track_notifier_list):
                if node.external:
                    call = self._hook_call(rec, "track_flush_slot", node.name, change, old)
                    self._event("flush_slot", "S2c", node=node.name, change=change,
                                as_id=old.as_id, id=old.id, base_gfn=old.base_gfn,
                                npages=old.npages)
                    node.owner.slot_hook("track_flush_slot", old.base_gfn, old.npages, old, call)
                else:
                    self._event("flush_slot", "S2c", node=node.name, change=change,
                                as_id=old.as_id, id=old.id, action="kvm_mmu_zap_all_fast")
                    self._zap_all_fast(rec, change, old)
        else:
            self._zap_all_fast(rec, change, old)

    def _zap_all_fast(self, rec: OpRecord, change: str, old: MemorySlot) -> None:
        """``kvm_mmu_zap_all_fast()``: under ``write_lock(mmu_lock)``, bump the MMU
        generation and zap every shadow page of the VM (not only the slot's)."""
        call = self._hook_call(rec, "kvm_mmu_zap_all_fast", "kvm_mmu", change, old)
        self._event("zap_all_fast", "S2c", change=change, as_id=old.as_id, id=old.id)
        with self.mmu_write_lock("ioctl", call.work):
            call.work.add("zaps")
            call.work.add("tlb_flushes")

    def _hook_call(self, rec: OpRecord, hook: str, node: str, change: str,
                   slot: MemorySlot) -> HookCall:
        call = HookCall(rec.index, hook, node, change, slot.as_id, slot.id, slot.base_gfn,
                        slot.npages)
        rec.hook_calls.append(call)
        self.hook_calls.append(call)
        return call

    def _take_injected(self) -> int:
        err, self._fail_next_prepare = self._fail_next_prepare, None
        return err

    def _prepare_memory_region(self, old: MemorySlot | None, new: MemorySlot | None,
                               change: str) -> int:
        """Mirrors ``kvm_prepare_memory_region()`` + x86 ``kvm_arch_prepare_memory_region()``."""
        ident = {"change": change, "as_id": (old or new).as_id, "id": (old or new).id}
        if change != DELETE:
            # common code: dirty bitmap
            if not new.flags & KVM_MEM_LOG_DIRTY_PAGES:
                new.dirty_bitmap = False
            elif old is not None and old.dirty_bitmap:
                new.dirty_bitmap = True
            else:
                if self._fail_next_prepare is not None:
                    err = self._take_injected()
                    self._event("prepare_failed", "S3", **ident, errno=err,
                                reason="kvm_alloc_dirty_bitmap (injected)")
                    return -err
                new.dirty_bitmap = True
        # kvm_arch_prepare_memory_region()
        if change == MOVE and self.design.move == "reject" and self.has_external_user():
            self._event("move_rejected", "S3", **ident, errno=errno.EINVAL,
                        reason="kvm_page_track_has_external_user()")
            return -errno.EINVAL
        if change in (CREATE, MOVE):
            if new.base_gfn + new.npages - 1 > self.max_gfn:
                self._event("prepare_failed", "S3", **ident, errno=errno.EINVAL,
                            reason=f"end gfn {new.base_gfn + new.npages - 1:#x} > "
                                   f"kvm_mmu_max_gfn() {self.max_gfn:#x}")
                return -errno.EINVAL
            if self._fail_next_prepare is not None:
                err = self._take_injected()
                self._event("prepare_failed", "S3", **ident, errno=err,
                            reason="kvm_alloc_memslot_metadata (injected)")
                return -err
            # kvm_alloc_memslot_metadata(): memset(&new->arch, 0) -> fresh arrays
            new.arch = SlotArch.alloc(new.base_gfn, new.npages, new.userspace_addr)
        elif change == FLAGS_ONLY:
            new.arch = old.arch          # memcpy(&new->arch, &old->arch): shared arrays
        return 0

    def _commit_memory_region(self, old: MemorySlot | None, new: MemorySlot | None,
                              change: str, rec: OpRecord, ident: dict) -> None:
        """Mirrors ``kvm_commit_memory_region()`` and x86
        ``kvm_arch_commit_memory_region()`` (S7; cannot fail)."""
        self._event("commit", "S7", **ident)
        if change == DELETE:
            self.nr_memslot_pages -= old.npages
        elif change == CREATE:
            self.nr_memslot_pages += new.npages
        # kvm_arch_commit_memory_region(): v6.6 kvm_page_track_delete_slot() for DELETE
        if change == DELETE and self.design.slot_hook == "remove":
            for node in list(self.track_notifier_list):   # empty list: returns early
                if node.external and node.owner is not None:
                    call = self._hook_call(rec, "track_remove_region", node.name, change, old)
                    self._event("remove_region", "S7", node=node.name, as_id=old.as_id,
                                id=old.id, gfn=old.base_gfn, nr_pages=old.npages)
                    node.owner.slot_hook("track_remove_region", old.base_gfn, old.npages,
                                         None, call)
        freed = None
        if change == MOVE:
            freed = old.arch                   # kvm_arch_free_memslot(kvm, old)
            self._event("free_metadata", "S7", **ident, base_gfn=old.base_gfn,
                        npages=old.npages, by="kvm_arch_commit_memory_region")
        elif change == DELETE:
            freed = old.arch                   # kvm_free_memslot(kvm, old)
            self._event("free_metadata", "S7", **ident, base_gfn=old.base_gfn,
                        npages=old.npages, by="kvm_free_memslot")
        if freed is not None:
            for call in rec.hook_calls:
                if call.node == "kvmgt" and (call.work.ops["counter_updates"]
                                             or call.work.ops["lpage_updates"]):
                    # updates went into arrays freed right now, unless (remove hook,
                    # no slot given) they landed in another address space's slot
                    call.wasted = call.hook == "track_flush_slot"
            freed.free()
