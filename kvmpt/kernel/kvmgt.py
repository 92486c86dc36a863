"""KVMGT, the external page tracker (drivers/gpu/drm/i915/gvt/kvmgt.c).

Two structures, kept apart as in the kernel:

* ``ptable``: KVMGT's "protect table" of the gfns it asked KVM to write-track
  (:class:`kvmpt.kernel.ptable.ProtectTable`);
* ``page_track_tree``: GVT's radix tree of the guest page-table pages it shadows
  (``kvmpt.kernel.gvt``, gvt/page_track.c).

:class:`KVMGT` holds both; this module mirrors kvmgt.c: the write hook
(``kvmgt_page_track_write``), ``intel_gvt_page_track_add/remove`` and close.  The slot
hook (``kvmgt_page_track_flush_slot`` / ``kvmgt_page_track_remove_region``) is
:mod:`kvmpt.kernel.kvmgt_slot_hook`; GVT's page-track tree is :mod:`kvmpt.kernel.gvt`.
"""
from __future__ import annotations

import contextlib
import errno

import numpy as np

from kvmpt.kernel import lockdep as ld
from kvmpt.kernel.gvt import GvtPageTrack
from kvmpt.kernel.kvmgt_slot_hook import KvmgtSlotHook
from kvmpt.kernel.lockdep import reported_times
from kvmpt.kernel.page_track import (NotifierNode, gpa_to_gfn, replay_warnings,
                                     write_track_add_gfn_locked, write_track_remove_gfn_locked)
from kvmpt.kernel.ptable import ProtectTable
from kvmpt.kernel.work import Work


#: kinds of ``intel_gvt_page_track_add()`` result (the codes of the bulk kernel)
ADDED, FOUND, EINVAL = 0, 1, 2
#: kinds of ``kvmgt_page_track_write()`` call (the codes of the write kernel)
NOT_FOUND, FOUND_NOT_SHADOWED, FOUND_SHADOWED = 0, 1, 2


class KVMGT(GvtPageTrack, KvmgtSlotHook):
    """One attached vGPU's KVMGT state (``struct intel_vgpu``), the object
    ``vm.attach_kvmgt()`` returns.

    Locks: the GTT shadowing path runs in lockdep context ``"gvt"``, guest
    writes in ``"vcpu"``, memslot updates in ``"ioctl"``.

    Every hook with a bulk (Numba) path books its work in one function that the
    plain path calls too: ``_track_write_section`` (guest writes),
    ``_book_adds`` (``intel_gvt_page_track_add``), ``_book_slot_hook`` (the slot
    walk, :class:`kvmpt.kernel.kvmgt_slot_hook.KvmgtSlotHook`).  ``vm.kernels``
    chooses the path; the plain one has no jitted call.
    """

    def __init__(self, vm) -> None:       # vm: the kvmpt.kernel.vm.VM this vGPU attaches to
        self.vm = vm
        self.design = vm.design
        self.ptable = ProtectTable()
        #: gfn -> ``intel_vgpu_page_track.tracked``: GVT's radix tree of the guest
        #: page-table pages it shadows (only tracked entries are modelled)
        self.page_track_tree: dict[int, bool] = {}
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

    def _changed(self) -> None:
        self.vm.generation += 1

    def is_write_protected(self, gfn: int) -> bool:
        """Mirrors ``kvmgt_gfn_is_write_protected()``: the gfn is in ``ptable``."""
        return gfn in self.ptable

    def detach(self) -> None:
        """Mirrors ``intel_vgpu_close_device()`` (drivers/gpu/drm/i915/gvt/kvmgt.c, v6.6):
        ``intel_gvt_release_vgpu()`` -> ``intel_gvt_deactivate_vgpu()``, which stops
        the vGPU but does not free its PPGTT mms: the shadow pages, their entries in
        ``vgpu->page_track_tree`` and KVM's write-track counts stay until a vGPU reset
        or destroy (``intel_vgpu_reset_gtt``/``intel_vgpu_clean_gtt`` ->
        ``ppgtt_free_spt()`` -> ``intel_vgpu_unregister_page_track()``).  Then
        ``clear_bit(INTEL_VGPU_STATUS_ATTACHED)``,
        ``kvm_page_track_unregister_notifier()`` (``synchronize_srcu``) and
        ``kvmgt_protect_table_destroy()`` (frees every ``ptable`` entry, no call into
        KVM).  Afterwards guest writes to those gfns still trap (their counts are
        not dropped) and no notifier takes them: ``"ignored"``, and missed for the
        shadows GVT keeps (``stale_gfns()`` lists them); ``check_invariants()``
        reports the leaked protection."""
        self._check_attached()
        self.attached = False
        self.vm._unregister_notifier(self.node)
        self.ptable.destroy()
        self._changed()

    def _check_attached(self) -> None:
        if not self.attached:
            raise OSError(errno.ESRCH, "vGPU is not attached (INTEL_VGPU_STATUS_ATTACHED clear)")

    # ------------------------------------------ intel_gvt_page_track_{add,remove}
    def page_track_add(self, gfn: int) -> int:
        """Mirrors ``intel_gvt_page_track_add()``.  v6.5 (ptable under mmu_lock):
        srcu, ``gfn_to_memslot`` (-EINVAL), ``write_lock(mmu_lock)``, skip if in
        ptable, else ``kvm_slot_page_track_add_page`` + ``kvmgt_protect_table_add``.
        v6.6 (caller holds vgpu_lock): return 0 if in ptable, else
        ``kvm_write_track_add_gfn()`` (srcu, ``gfn_to_memslot`` -EINVAL, ``mmu_lock``,
        ``__kvm_write_track_add_gfn``) then ``kvmgt_protect_table_add()``.  The state
        change here, the work and locks in ``_book_adds``."""
        vm = self.vm
        mutex = self._mutex_design()
        slot = None
        if not mutex:
            slot = vm._gfn_to_memslot(gfn, 0)
            if slot is None:
                status, steps, tlb = EINVAL, 0, 0
        if mutex or slot is not None:
            found, steps = self.ptable.find(gfn)
            tlb = 0
            if found:
                status = FOUND
            else:
                slot = slot or vm._gfn_to_memslot(gfn, 0)
                if slot is None:
                    status = EINVAL
                else:
                    tlb = int(write_track_add_gfn_locked(slot, gfn, None, vm.warnings, vm._op))
                    self.ptable.add(gfn)
                    status = ADDED
        self._book_adds(np.array([status], dtype=np.int8), np.array([steps], dtype=np.int64),
                        np.array([tlb], dtype=np.int8))
        self._changed()
        return -errno.EINVAL if status == EINVAL else 0

    def _page_track_add_kernel(self, gfns: np.ndarray):
        """``page_track_add`` for each gfn in one kernel call, up to the first that fails
        (-EINVAL, which the kernel leaves unchanged): returns (status, chain steps, TLB
        flush, gfns added or found before it); WARNs replayed."""
        from kvmpt.kernels.track import EVENT_COLS, page_track_add_gfns
        vm = self.vm
        n = gfns.shape[0]
        sa = vm._slot_arrays(0)
        pt = vm._ptable_arrays(self.ptable).copy(extra=n)
        status = np.zeros(n, dtype=np.int8)
        steps = np.zeros(n, dtype=np.int64)
        tlb = np.zeros(n, dtype=np.int8)
        events = np.zeros((max(n, 1), EVENT_COLS), dtype=np.int64)
        done, n_nodes, nev = page_track_add_gfns(
            gfns, self._mutex_design(), pt.shift, pt.head, pt.nxt, pt.key, pt.clen, pt.occ,
            pt.n, sa.base, sa.npages, sa.counter_addrs, sa.lpage2_addrs, sa.lpage3_addrs,
            status, steps, tlb, events)
        pt.n = n_nodes
        added = gfns[:done][status[:done] == ADDED]
        replay_warnings(vm, sa.slots, events[:nev], lambda r: gfns[r], vm._op)
        self.ptable.add_many(added)
        vm._remember_ptable_arrays(self.ptable, pt)
        return status, steps, tlb, int(done) - int(bool(done) and status[done - 1] == EINVAL)

    def _book_adds(self, status: np.ndarray, steps: np.ndarray, tlb: np.ndarray) -> None:
        """The Work and lockdep of ``intel_gvt_page_track_add()`` calls with these
        results, for the plain path (one call) and the kernel (many) alike.

        v6.6 (mutex): ``gfn_probes``/``chain_steps`` under the table mutex,
        ``slot_lookups`` for each call that reached ``kvm_write_track_add_gfn()``,
        one ``write_lock(mmu_lock)`` hold per add (counter, 2 lpage levels, TLB
        flush), ``hash_inserts``.  v6.5: ``slot_lookups`` first, then one
        ``mmu_lock`` hold per call around probe + add."""
        vm, work, lockdep = self.vm, self.vm.work, self.vm.lockdep
        added, reached = status == ADDED, status != EINVAL
        n_added = int(added.sum())
        t = tlb.astype(np.int64)
        steps = steps.astype(np.int64)
        if self._mutex_design():
            work.add("gfn_probes", int(status.size))
            work.add("chain_steps", int(steps.sum()))
            work.add("slot_lookups", int((status != FOUND).sum()))
            if n_added:
                k = int(np.argmax(np.where(added, t, -1)))
                work.add_holds(n_added, {"counter_updates": n_added,
                                         "lpage_updates": 2 * n_added,
                                         "tlb_flushes": int(t[added].sum())},
                               {"counter_updates": 1, "lpage_updates": 2,
                                "tlb_flushes": int(t[k])})
            work.add("hash_inserts", n_added)
            kinds = [(FOUND, [self._table_lock]), (EINVAL, [self._table_lock]),
                     (ADDED, [self._table_lock, ld.MMU_LOCK])]
        else:
            work.add("slot_lookups", int(status.size))
            n = int(reached.sum())
            if n:
                sums = np.where(reached, 1 + steps + np.where(added, 4 + t, 0), -1)
                k = int(np.argmax(sums))
                longest = {"gfn_probes": 1, "chain_steps": int(steps[k])}
                if added[k]:
                    longest.update(counter_updates=1, lpage_updates=2,
                                   tlb_flushes=int(t[k]), hash_inserts=1)
                work.add_holds(n, {"gfn_probes": n, "chain_steps": int(steps[reached].sum()),
                                   "counter_updates": n_added, "lpage_updates": 2 * n_added,
                                   "tlb_flushes": int(t[added].sum()),
                                   "hash_inserts": n_added}, longest)
            kinds = [(FOUND, [ld.MMU_LOCK]), (ADDED, [ld.MMU_LOCK])]
        for kind, locks in kinds:
            times = int((status == kind).sum())
            if times:
                with reported_times(lockdep, times), vm.lockdep_ctx("gvt", *locks):
                    if ld.MMU_LOCK in locks and kind == ADDED:
                        lockdep.assert_held_write("gvt", ld.MMU_LOCK,
                                                  "__kvm_write_track_add_gfn")

    def page_track_remove(self, gfn: int) -> int:
        """Mirrors ``intel_gvt_page_track_remove()`` (v6.5: under mmu_lock; v6.6:
        caller holds vgpu_lock, returns early if not in ptable, and keeps the entry
        if ``kvm_write_track_remove_gfn()`` fails with -EINVAL)."""
        vm, work = self.vm, self.vm.work
        self._changed()
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

    def _probe(self, gfn: int, work: Work) -> bool:
        """``kvmgt_gfn_is_write_protected()``: one ptable lookup, accounted in ``work``."""
        found, steps = self.ptable.find(gfn)
        work.add("gfn_probes")
        work.add("chain_steps", steps)
        return found

    # ------------------------------------------------------------- track_write
    def track_write(self, gpa: int, nbytes: int) -> bool:
        """``kvmgt_page_track_write()``; returns True if GVT's handler ran.  The
        lookup here; the locks and work in ``_track_write_section``; in failsafe mode
        the handler's ``intel_gvt_page_track_remove()`` runs inside the section."""
        gfn = gpa_to_gfn(gpa)
        found, steps = self.ptable.find(gfn)
        shadowed = found and gfn in self.page_track_tree
        with self._track_write_section(found, shadowed, 1, steps, steps):
            if shadowed and self.failsafe:
                self._failsafe_remove(gfn)
        return found

    @contextlib.contextmanager
    def _track_write_section(self, found: bool, shadowed: bool, n: int = 1, steps: int = 0,
                             longest: int = 0):
        """The locks and work of ``n`` ``kvmgt_page_track_write()`` calls of one kind,
        walking ``steps`` chain entries in all (``longest`` the most in one call), for
        the plain path (n = 1) and the write kernel alike.  Lockdep judges the lock
        sequence once; whatever it reports is reported ``n`` times.

        * none (v6.5): unlocked ``kvmgt_gfn_is_write_protected()``; on a hit
          ``intel_vgpu_page_track_handler()`` takes ``vgpu_lock`` itself.
        * mmu_lock (the rejected idea): ``read_lock(&kvm->mmu_lock)`` around lookup
          and handler -- v6.5 KVMGT changes ``ptable`` only under
          ``write_lock(&kvm->mmu_lock)`` (kvmgt.c ``intel_gvt_page_track_add/remove``,
          ``kvmgt_page_track_flush_slot``), so a reader needs only the read side; any
          rwlock mode spins, so the sleeping handler is "sleeping function called
          from invalid context" (<Y26SI3uh8JV0vvO6@google.com>).
        * gfn_lock (series v1): ``vgpu_lock`` then ``gfn_lock``.
        * vgpu_lock (v6.6, 49a83e190b5b): ``vgpu_lock`` hoisted into
          ``kvmgt_page_track_write()``; the handler no longer takes it.

        In the handler, a shadowed gfn's update (``ppgtt_write_protection_handler``)
        may sleep (``cache_lock`` in ``intel_gvt_dma_unmap_guest_page``); a gfn GVT
        does not shadow returns -ENXIO first.
        """
        work, lockdep = self.vm.work, self.vm.lockdep
        lock = self.design.kvmgt_lock
        totals = {"gfn_probes": n, "chain_steps": steps, "handler_calls": n if found else 0}
        if lock == "mmu_lock":
            work.add_holds(n, totals, {"gfn_probes": 1, "chain_steps": longest,
                                       "handler_calls": int(found)}, mode="read")
        else:
            for k, v in totals.items():
                work.add(k, v)
        outer = {"none": [], "mmu_lock": [(ld.MMU_LOCK, "read")],
                 "gfn_lock": [(ld.VGPU_LOCK, "write"), (ld.GFN_LOCK, "write")],
                 "vgpu_lock": [(ld.VGPU_LOCK, "write")]}[lock]
        if found and lock == "none":
            outer = [(ld.VGPU_LOCK, "write")]
        with reported_times(lockdep, n):
            taken = [l for l, mode in outer if lockdep.acquire("vcpu", l, mode)]
            try:
                if shadowed:
                    lockdep.might_sleep("vcpu", "ppgtt_write_protection_handler -> "
                                        "mutex_lock(cache_lock)")
                yield
            finally:
                for l in reversed(taken):
                    lockdep.release("vcpu", l)
