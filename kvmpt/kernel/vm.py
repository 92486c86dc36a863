"""The VM model: KVM_SET_USER_MEMORY_REGION, write tracking, guest writes, KVMGT.

``VM`` is ``struct kvm`` as far as page tracking needs it.  Its parts live with the
kernel file they mirror: ``kvm_main`` (the ioctl and ``kvm_set_memslot()``), ``x86``
(the arch hooks), ``mmu`` (a guest write's fault path), ``page_track`` (write
tracking), ``kvmgt``/``gvt``/``ptable`` (the external tracker), and ``invariants``
(kvmpt's own check); this module holds the state, the queries and the exported
page-track API.  With ``kernels=False`` it is the plain-Python reference the Numba
kernels are checked against.  It follows spec/kernel-semantics.md section 3 step by
step; every step records an event ``(step, detail)`` in ``vm.events`` (S1..S8).

Which kernel code runs depends on ``vm.design`` (``kvmpt.kernel.design.Design``):
the notifier list holds KVM's own node only in the ``flush`` era (v6.5), the
MOVE check exists only with ``move="reject"``, and so on.
"""
from __future__ import annotations

import contextlib
import errno
import time

import numpy as np

from kvmpt.kernel import lockdep as ld
from kvmpt.kernel.design import Design
from kvmpt.kernel.invariants import Invariants
from kvmpt.kernel.kvm_main import KvmMain, OpRecord  # noqa: F401  (kvmpt.kernel.vm's names, as before)
from kvmpt.kernel.kvmgt import KVMGT
from kvmpt.kernel.memslot import HUGE_LEVELS, V6_6, KernelProfile, MemorySlot, Memslots, gfn_to_index
from kvmpt.kernel.mmu import WRITE_OUTCOMES, GuestWrites, WriteBatchResult  # noqa: F401  (as before)
from kvmpt.kernel.page_track import (KernelWarning, NotifierNode, gfn_is_write_tracked,
                         write_track_add_gfn_locked, write_track_remove_gfn_locked)
from kvmpt.kernel.work import HookCall, Work
from kvmpt.kernel.x86 import X86

#: Default ``kvm_mmu_max_gfn()``: a host with 52 physical address bits
#: (``(1ULL << (shadow_phys_bits - PAGE_SHIFT)) - 1``), as in contract.md.
DEFAULT_MAX_GFN = (1 << 40) - 1


class VM(KvmMain, X86, GuestWrites, Invariants):
    """A KVM x86 VM with two address spaces, page write-tracking, and optionally KVMGT.

    ``VM(design=Design.preset("v6.6"), max_gfn=(1 << 40) - 1)``; ``design`` may
    also be a preset name.  ``max_gfn`` is ``kvm_mmu_max_gfn()``.
    """

    def __init__(self, design: Design | str | None = None, max_gfn: int = DEFAULT_MAX_GFN,
                 profile: KernelProfile = V6_6, kernels: bool = True):
        self.design = Design.coerce(design)
        if not isinstance(profile, KernelProfile):
            raise TypeError(f"profile must be a kvmpt.kernel.memslot.KernelProfile, got "
                            f"{type(profile).__name__}")
        self.profile = profile
        if not isinstance(kernels, bool):
            raise TypeError(f"kernels must be a bool, got {type(kernels).__name__}")
        #: bulk work (write batches, bulk shadowing, slot walks) in Numba kernels; False:
        #: the plain-Python path, the reference the kernels are checked against
        self.kernels = kernels
        #: bumped by every change made through the model's methods; the flat arrays the
        #: kernels read are cached per generation (state edited by hand is not seen)
        self.generation = 0
        self._flat: dict = {}
        if isinstance(max_gfn, bool) or not isinstance(max_gfn, (int, np.integer)) or max_gfn < 0:
            raise ValueError(f"max_gfn must be a non-negative integer, got {max_gfn!r}")
        self.max_gfn = int(max_gfn)
        self._as = [Memslots() for _ in range(profile.address_spaces)]
        self.nr_memslot_pages = 0
        self.events: list[tuple[str, dict]] = []
        self.warnings: list[KernelWarning] = []
        self.op_log: list[OpRecord] = []
        self.hook_calls: list[HookCall] = []
        self.work = Work()                 # everything outside the slot hooks
        self.lockdep = ld.Lockdep()
        self.write_stats = dict.fromkeys(WRITE_OUTCOMES + ("missed",), 0)
        self.kvmgt: KVMGT | None = None
        self._fail_next_prepare: int | None = None
        self._op = -1
        # kvm_page_track_init(): an empty list.  v6.5 kvm_mmu_init_vm() registers
        # KVM's own mmu_sp_tracker (track_write = kvm_mmu_pte_write, track_flush_slot
        # = kvm_mmu_invalidate_zap_pages_in_memslot); v6.6 (f1c58cdb8e04) does not.
        self.track_notifier_list: list[NotifierNode] = []
        if self.design.slot_hook == "flush":
            self.track_notifier_list.insert(0, NotifierNode("kvm_mmu", external=False))

    # =================================================================== query
    def memslots(self, as_id: int = 0) -> list[MemorySlot]:
        """The live slots of one address space, ordered by ``base_gfn``."""
        return self._memslots(as_id).sorted()

    def _memslots(self, as_id: int) -> Memslots:
        if isinstance(as_id, bool) or not isinstance(as_id, (int, np.integer)) \
                or not 0 <= as_id < len(self._as):
            raise ValueError(f"as_id must be 0..{len(self._as) - 1} (KVM_ADDRESS_SPACE_NUM = "
                             f"{len(self._as)}), got {as_id!r}")
        return self._as[int(as_id)]

    def _check_gfn(self, gfn) -> int:
        if isinstance(gfn, bool) or not isinstance(gfn, (int, np.integer)) or gfn < 0:
            raise ValueError(f"gfn must be a non-negative integer, got {gfn!r}")
        return int(gfn)

    def _gfn_to_memslot(self, gfn: int, as_id: int = 0) -> MemorySlot | None:
        """Mirrors ``__gfn_to_memslot(__kvm_memslots(kvm, as_id), gfn)``; the exported
        page-track API always uses ``gfn_to_memslot()`` = address space 0."""
        return self._as[as_id].find_gfn(gfn)

    def write_track_count(self, gfn: int, as_id: int = 0) -> int:
        """``gfn_write_track[gfn - base_gfn]`` of the slot holding ``gfn``; LookupError if none."""
        gfn = self._check_gfn(gfn)
        slot = self._memslots(as_id).find_gfn(gfn)
        if slot is None:
            raise LookupError(f"no memslot in address space {as_id} holds gfn {gfn:#x}")
        return int(slot.arch.gfn_write_track[gfn - slot.base_gfn])

    def gfn_is_write_tracked(self, gfn: int, as_id: int = 0) -> bool:
        """Mirrors ``kvm_gfn_is_write_tracked()``: False when no slot holds the gfn."""
        gfn = self._check_gfn(gfn)
        return gfn_is_write_tracked(self._memslots(as_id).find_gfn(gfn), gfn)

    def disallow_lpage(self, gfn: int, level: int, as_id: int = 0) -> int:
        """``lpage_info[level - 2][idx].disallow_lpage`` for the huge page holding ``gfn``."""
        gfn = self._check_gfn(gfn)
        if level not in HUGE_LEVELS:
            raise ValueError(f"level must be 2 (2M) or 3 (1G), got {level!r}")
        slot = self._memslots(as_id).find_gfn(gfn)
        if slot is None:
            raise LookupError(f"no memslot in address space {as_id} holds gfn {gfn:#x}")
        return int(slot.arch.lpage_info[level - 2][gfn_to_index(gfn, slot.base_gfn, level)])

    def has_external_user(self) -> bool:
        """Mirrors ``kvm_page_track_has_external_user()`` after the inverted-check fix
        (<ZPIwtfkVAyFWy41I@google.com>): ``!hlist_empty(track_notifier_list)``.  In the
        v6.6 list only external nodes exist; in a flush-era list KVM's own node is
        skipped, which is what the check meant when it landed (after f1c58cdb8e04)."""
        return any(n.external for n in self.track_notifier_list)

    # ============================================================ lock helpers
    @contextlib.contextmanager
    def lockdep_ctx(self, ctx: str, *locks: ld.LockClass):
        taken = []
        try:
            for lock in locks:
                if self.lockdep.acquire(ctx, lock):
                    taken.append(lock)
            yield
        finally:
            for lock in reversed(taken):
                self.lockdep.release(ctx, lock)

    @contextlib.contextmanager
    def mmu_write_lock(self, ctx: str, work: Work | None = None):
        """``write_lock(&kvm->mmu_lock)`` ... ``write_unlock``, accounted in ``work``."""
        work = work or self.work
        self.lockdep.acquire(ctx, ld.MMU_LOCK)
        work.mmu_lock_begin()
        try:
            yield
        finally:
            work.mmu_lock_end()
            self.lockdep.release(ctx, ld.MMU_LOCK)

    # ================================================== exported page-track API
    def write_track_add_gfn(self, gfn: int, ctx: str = "gvt", _raise: bool = True) -> int:
        """Mirrors ``kvm_write_track_add_gfn(kvm, gfn)`` (page_track.c, v6.6):
        ``srcu_read_lock``, ``gfn_to_memslot`` (address space 0; -EINVAL if none),
        ``write_lock(mmu_lock)``, ``__kvm_write_track_add_gfn``.  Returns 0, or
        raises OSError(EINVAL) (returns -EINVAL when called from the model)."""
        return self._write_track_gfn(gfn, ctx, _raise, "add", write_track_add_gfn_locked)

    def write_track_remove_gfn(self, gfn: int, ctx: str = "gvt", _raise: bool = True) -> int:
        """Mirrors ``kvm_write_track_remove_gfn(kvm, gfn)`` (page_track.c, v6.6): the
        same srcu / ``gfn_to_memslot`` / ``mmu_lock`` pattern around
        ``__kvm_write_track_remove_gfn``."""
        return self._write_track_gfn(gfn, ctx, _raise, "remove", write_track_remove_gfn_locked)

    def _write_track_gfn(self, gfn, ctx, _raise, what, locked_fn) -> int:
        gfn = self._check_gfn(gfn)
        slot = self._gfn_to_memslot(gfn, 0)
        self.work.add("slot_lookups")
        if slot is None:
            if _raise:
                raise OSError(errno.EINVAL, f"kvm_write_track_{what}_gfn: no memslot holds "
                              f"gfn {gfn:#x}")
            return -errno.EINVAL
        with self.mmu_write_lock(ctx):
            self.lockdep.assert_held_write(ctx, ld.MMU_LOCK, f"__kvm_write_track_{what}_gfn")
            locked_fn(slot, gfn, self.work, self.warnings, self._op)
        self.generation += 1
        return 0

    # ================================================================ KVMGT
    def attach_kvmgt(self) -> KVMGT:
        """Mirrors ``intel_vgpu_open_device()``: -EEXIST if a vGPU is already attached
        to this VM (``__kvmgt_vgpu_exist``), ``kvmgt_protect_table_init``, then
        ``kvm_page_track_register_notifier()`` (``hlist_add_head_rcu`` under
        ``mmu_lock``: KVMGT's node goes first in the list)."""
        if self.kvmgt is not None and self.kvmgt.attached:
            raise OSError(errno.EEXIST, "a vGPU is already attached to this VM "
                          "(intel_vgpu_open_device: __kvmgt_vgpu_exist)")
        gvt = KVMGT(self)
        gvt.attached = True
        with self.mmu_write_lock("gvt"):
            self.track_notifier_list.insert(0, gvt.node)
        self.kvmgt = gvt
        self.generation += 1
        return gvt

    def _unregister_notifier(self, node: NotifierNode) -> None:
        """Mirrors ``kvm_page_track_unregister_notifier()``: ``hlist_del_rcu`` under
        ``mmu_lock``, then ``synchronize_srcu(&head->track_srcu)``."""
        with self.mmu_write_lock("gvt"):
            self.track_notifier_list.remove(node)
        self.work.add("srcu_syncs")
        self.generation += 1

    def __repr__(self) -> str:
        n = [len(a.by_id) for a in self._as]
        return (f"VM(design={self.design.name!r}, slots={n}, "
                f"kvmgt={'attached' if self.kvmgt and self.kvmgt.attached else 'none'})")


def warmup() -> float:
    """Compile or load every kernel by running the model's bulk paths on a tiny VM;
    returns seconds."""
    t0 = time.perf_counter()
    import numpy as np

    from kvmpt.kernels import workload

    for design in ("v6.5", "v6.6"):
        vm = VM(design=Design.preset(design))
        vm.set_user_memory_region(0, 0, 0, 1 << 22, 1 << 32)
        vm.set_user_memory_region(1, 2, 1 << 22, 1 << 16, (1 << 32) + (1 << 22))
        gvt = vm.attach_kvmgt()
        gvt.shadow_many(np.array([3, 5, 700], dtype=np.uint64))
        gpas = np.array([3 << 12, 5 << 12, 9 << 12, (1 << 22) + 8, 1 << 40], dtype=np.uint64)
        vm.guest_write_batch(gpas, outcomes=True)
        vm.guest_write_batch(gpas)
        vm.set_user_memory_region(0, 0, 0, 0, 1 << 32)       # DELETE: the slot walk
        workload.guest_write_stream(vm.memslots(0)[:1], np.array([3], dtype=np.uint64), 4,
                                    0.5, 1)
    return time.perf_counter() - t0
