"""GVT's page-track tree (drivers/gpu/drm/i915/gvt/page_track.c, v6.5/v6.6).

``vgpu->page_track_tree`` is a radix tree of ``struct intel_vgpu_page_track``
(handler, ``tracked``) keyed by gfn: the guest page-table pages GVT shadows.
``intel_vgpu_register_page_track()`` inserts (-EEXIST if present),
``intel_vgpu_enable_page_track()`` calls KVMGT's ``intel_gvt_page_track_add()``,
``intel_vgpu_unregister_page_track()`` removes the entry and calls
``intel_gvt_page_track_remove()`` if it was tracked.  A guest write to a gfn in the
tree that does not reach ``intel_vgpu_page_track_handler()`` leaves GVT's shadow
page table stale.

:class:`GvtPageTrack` is the part of :class:`kvmpt.kernel.kvmgt.KVMGT` that mirrors this
file; the ``ptable`` side and the hooks are in ``kvmpt.kernel.kvmgt``.
"""
from __future__ import annotations

import errno

import numpy as np

from kvmpt.kernel import lockdep as ld
from kvmpt.kernel.memslot import PAGE_SHIFT
from kvmpt.kernel.mmu import as_u64_array


class GvtPageTrack:
    """The vGPU's page-track tree and the entry points GVT's GTT code calls."""

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
        self._register(np.array([gfn], dtype=np.uint64))

    def _register(self, gfns: np.ndarray) -> None:
        """GVT's radix tree and the host page behind each gfn (none when no slot holds
        it: v6.6 returns 0 for a gfn already in ``ptable`` whatever the slots say)."""
        self.page_track_tree.update(dict.fromkeys(gfns.tolist(), True))
        slots = self.vm._as[0]
        for g in gfns.tolist():
            slot = slots.find_gfn(g)
            if slot is not None:
                self.shadow_hva[g] = slot.userspace_addr + ((g - slot.base_gfn) << PAGE_SHIFT)
        self._changed()

    def shadow_many(self, gfns) -> None:
        """``shadow(g)`` for each g of ``gfns`` (a NumPy integer array) in order: the
        same state, warnings, Work and lockdep, and the same OSError at the same gfn
        (the gfns before it stay shadowed).  With ``vm.kernels`` the adds run in one
        jitted kernel (``kvmpt.kernels.track.page_track_add_gfns``)."""
        gfns = as_u64_array(gfns, "gfns")
        self._check_attached()
        if not self.vm.kernels:
            for g in gfns.tolist():
                self.shadow(g)
            return
        # intel_vgpu_register_page_track(): -EEXIST for a gfn already in the tree
        tree, stop, seen = self.page_track_tree, gfns.shape[0], set()
        for i, g in enumerate(gfns.tolist()):
            if g in tree or g in seen:
                stop = i
                break
            seen.add(g)
        todo = gfns[:stop]
        status, steps, tlb, n_ok = self._page_track_add_kernel(todo)
        if n_ok < todo.shape[0]:
            stop = n_ok                # the kernel stopped at a gfn no AS0 slot holds
        self._book_adds(status[:n_ok], steps[:n_ok], tlb[:n_ok])
        self._register(todo[:n_ok])
        if stop < gfns.shape[0]:
            self.shadow(int(gfns[stop]))          # raises as the loop would
            raise AssertionError("shadow_many: shadow() did not raise where the loop stops")

    def unshadow(self, gfn: int) -> None:
        """Mirrors ``intel_vgpu_unregister_page_track()``: radix-tree delete, then
        ``intel_gvt_page_track_remove()`` if it was tracked (its return value is
        ignored, as in gvt/page_track.c).  Unshadowing an unknown gfn is a no-op."""
        gfn = self.vm._check_gfn(gfn)
        tracked = self.page_track_tree.pop(gfn, None)
        self.shadow_hva.pop(gfn, None)
        if tracked:
            self.page_track_remove(gfn)
        self._changed()

    def stale_gfns(self) -> list[int]:
        """Gfns GVT shadows whose guest writes (from a vCPU outside SMM) would not
        reach its handler: no memslot, write-track count 0, not in ``ptable``, or
        the vGPU is detached (its shadows stay; see ``detach``)."""
        return sorted(g for g, tracked in self.page_track_tree.items()
                      if tracked and self.vm._classify(g, 0) != "handled")

    def shadowed_gfns(self) -> list[int]:
        return sorted(g for g, t in self.page_track_tree.items() if t)

    def _failsafe_remove(self, gfn: int) -> None:
        """``intel_vgpu_page_track_handler()`` with ``vgpu->failsafe`` set:
        ``intel_gvt_page_track_remove()`` ("Remove write protection to prevent furture
        traps").  Series v1 (gfn_lock) takes ``gfn_lock`` again there: a mutex is not
        recursive, the call never returns (lockdep: recursive locking)."""
        vm = self.vm
        if self.design.kvmgt_lock == "gfn_lock" and vm.lockdep.holds("vcpu", ld.GFN_LOCK):
            vm.lockdep.acquire("vcpu", ld.GFN_LOCK)
            return
        self.page_track_remove(gfn)
