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

import contextlib
import errno
from typing import TYPE_CHECKING

import numpy as np

from . import lockdep as ld
from .memslot import PAGE_SHIFT, MemorySlot, SlotArch
from .page_track import (NotifierNode, gpa_to_gfn, update_gfn_disallow_lpage_count,
                         update_gfn_write_track, write_track_add_gfn_locked,
                         write_track_remove_gfn_locked)
from .work import HookCall, Work

if TYPE_CHECKING:  # pragma: no cover
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
        self.flat = None      # (gen, the kernels' flat form), see VM._ptable_arrays

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

    def add_many(self, gfns: np.ndarray) -> None:
        """``add(g)`` for each g in order (``hash_add`` at the chain head), with the
        hashing vectorised: what the bulk shadowing path applies."""
        if not gfns.size:
            return
        buckets = hash_64_array(gfns, self.bits).astype(np.int64)
        for g, b in zip(gfns.tolist(), buckets.tolist()):
            self.buckets.setdefault(b, []).insert(0, g)
        np.add.at(self.chain_len, buckets, 1)
        self._members.update(gfns.tolist())
        self.gen += 1


#: kinds of ``intel_gvt_page_track_add()`` result (the codes of the bulk kernel)
ADDED, FOUND, EINVAL = 0, 1, 2
#: kinds of ``kvmgt_page_track_write()`` call (the codes of the write kernel)
NOT_FOUND, FOUND_NOT_SHADOWED, FOUND_SHADOWED = 0, 1, 2


class KVMGT:
    """One attached vGPU's KVMGT state (``struct intel_vgpu``), the object
    ``vm.attach_kvmgt()`` returns.

    Locks: the GTT shadowing path runs in lockdep context ``"gvt"``, guest
    writes in ``"vcpu"``, memslot updates in ``"ioctl"``.

    Every hook with a bulk (Numba) path books its work in one function that the
    plain path calls too: ``_track_write_section`` (guest writes),
    ``_book_adds`` (``intel_gvt_page_track_add``), ``_book_slot_hook`` (the slot
    walk).  ``vm.kernels`` chooses the path; the plain one has no jitted call.
    """

    def __init__(self, vm: "VM") -> None:
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
        jitted kernel (``kvmpt._kernels.track.page_track_add_gfns``)."""
        gfns = _as_gfn_array(gfns)
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
        status, steps, tlb, done = self._page_track_add_kernel(todo)
        n_ok = done - 1 if done and status[done - 1] == EINVAL else done
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

    def is_write_protected(self, gfn: int) -> bool:
        """Mirrors ``kvmgt_gfn_is_write_protected()``: the gfn is in ``ptable``."""
        return gfn in self.ptable

    def stale_gfns(self) -> list[int]:
        """Gfns GVT shadows whose guest writes (from a vCPU outside SMM) would not
        reach its handler: no memslot, write-track count 0, not in ``ptable``, or
        the vGPU is detached (its shadows stay; see ``detach``)."""
        return sorted(g for g, tracked in self.page_track_tree.items()
                      if tracked and self.vm._classify(g, 0) != "handled")

    def shadowed_gfns(self) -> list[int]:
        return sorted(g for g, t in self.page_track_tree.items() if t)

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
        """``page_track_add`` for each gfn in one kernel call (until the first EINVAL):
        returns (status, chain steps, TLB flush, gfns processed); WARNs replayed."""
        from ._kernels.track import EVENT_COLS, page_track_add_gfns
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
        return status, steps, tlb, int(done)

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
        vm, work, lockdep = self.vm, self.vm.work, self.vm.lockdep
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

    # ------------------------------------------------------------- the slot hook
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
        """``_walk_plain`` in one kernel call (``kvmpt._kernels.walk.slot_walk``)."""
        from ._kernels.flat import slots_as_arrays
        from ._kernels.walk import DROP_LOOKUP, DROP_NONE, DROP_SLOT, slot_walk
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


@contextlib.contextmanager
def reported_times(lockdep: ld.Lockdep, n: int):
    """What lockdep reports inside the block is reported ``n`` times: the block
    stands for ``n`` calls of one kind that take the same locks in the same state."""
    first = len(lockdep.reports)
    yield
    lockdep.reports.extend(lockdep.reports[first:] * (n - 1))


def replay_warnings(vm, slots, events: np.ndarray, gfn_of_row, op: int) -> None:
    """Turn a kernel's WARN event rows ``(row, count, slot index, counter before,
    lpage 2M before, lpage 1G before)`` into the model's ``KernelWarning``s, in order,
    by running ``kvmpt.page_track``'s own update functions on a one-gfn copy of the
    slot (so the text is the model's)."""
    for row in events:
        r, count, si, before, b2, b3 = (int(x) for x in row)
        gfn = int(gfn_of_row(r))
        s = slots[si]
        fake = MemorySlot(s.id, s.as_id, gfn, 1, s.flags, s.userspace_addr, SlotArch(
            np.array([before], dtype=np.uint16),
            [np.array([b2], dtype=np.int32), np.array([b3], dtype=np.int32)]))
        update_gfn_write_track(fake, gfn, count, None, vm.warnings, op)
        update_gfn_disallow_lpage_count(fake, gfn, count, None, vm.warnings, op)


def _as_gfn_array(gfns) -> np.ndarray:
    a = np.asarray(gfns)
    if a.ndim != 1:
        raise ValueError(f"gfns must be a 1-D array, got shape {a.shape}")
    if a.size and a.dtype.kind not in "iu":
        raise ValueError(f"gfns must be integers, got dtype {a.dtype}")
    if a.dtype.kind == "i" and a.size and int(a.min()) < 0:
        raise ValueError("gfns must be non-negative")
    return np.ascontiguousarray(a, dtype=np.uint64)
