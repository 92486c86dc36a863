"""The VM model: KVM_SET_USER_MEMORY_REGION, write tracking, guest writes, KVMGT.

This is the plain-Python reference the Numba kernels are checked against.  It
follows spec/kernel-semantics.md section 3 step by step; every step records an
event ``(step, detail)`` in ``vm.events`` with the kernel step label (S1..S8).

Which kernel code runs depends on ``vm.design`` (``kvmpt.design.Design``):
the notifier list holds KVM's own node only in the ``flush`` era (v6.5), the
MOVE check exists only with ``move="reject"``, and so on.
"""
from __future__ import annotations

import contextlib
import errno
from dataclasses import dataclass, field

import numpy as np

from . import lockdep as ld
from .design import Design
from .kvmgt import KVMGT
from .memslot import (CREATE, DELETE, FLAGS_ONLY, HUGE_LEVELS,
                      KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY, MOVE, NOOP, PAGE_SHIFT,
                      PAGE_SIZE, V6_6, Decision, KernelProfile, MemorySlot, Memslots, SlotArch,
                      check_set_user_memory_region, gfn_to_index, initial_lpage_info,
                      level_shift)
from .page_track import (KernelWarning, NotifierNode, gfn_is_write_tracked, gpa_to_gfn,
                         write_track_add_gfn_locked, write_track_remove_gfn_locked)
from .work import HookCall, Work

#: Default ``kvm_mmu_max_gfn()``: a host with 52 physical address bits
#: (``(1ULL << (shadow_phys_bits - PAGE_SHIFT)) - 1``), as in contract.md.
DEFAULT_MAX_GFN = (1 << 40) - 1

#: what a guest write does (the batch kernel's codes index this tuple)
WRITE_OUTCOMES = ("direct", "ignored", "handled", "mmio")


@dataclass
class OpRecord:
    """One KVM_SET_USER_MEMORY_REGION call as the model saw it."""

    index: int
    slot: int
    flags: int
    guest_phys_addr: int
    memory_size: int
    userspace_addr: int
    change: str | None = None      # one of memslot.CHANGES other than REJECTED
    errno: int = 0
    hook_calls: list[HookCall] = field(default_factory=list)

    @property
    def as_id(self) -> int:
        return self.slot >> 16


def _u(name: str, value, bits: int) -> int:
    """Python-side check of an ioctl field: an int that fits ``__u{bits}``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer (a __u{bits} field of struct "
                        f"kvm_userspace_memory_region), got {type(value).__name__} {value!r}")
    value = int(value)
    if value < 0:
        raise ValueError(f"{name}={value} is negative; it is a __u{bits} field of struct "
                         "kvm_userspace_memory_region")
    if value >= 1 << bits:
        raise ValueError(f"{name}={value:#x} does not fit in a __u{bits}")
    return value


class VM:
    """A KVM x86 VM with two address spaces, page write-tracking, and optionally KVMGT.

    ``VM(design=Design.preset("v6.6"), max_gfn=(1 << 40) - 1)``; ``design`` may
    also be a preset name.  ``max_gfn`` is ``kvm_mmu_max_gfn()``.
    """

    def __init__(self, design: Design | str | None = None, max_gfn: int = DEFAULT_MAX_GFN,
                 profile: KernelProfile = V6_6, kernels: bool = True):
        self.design = Design.coerce(design)
        if not isinstance(profile, KernelProfile):
            raise TypeError(f"profile must be a kvmpt.memslot.KernelProfile, got "
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

    # ============================================================ guest writes
    def _classify(self, gfn: int, as_id: int) -> str:
        """Where a guest write to ``gfn`` goes, without side effects."""
        slot = self._as[as_id].find_gfn(gfn)
        if slot is None or slot.flags & KVM_MEM_READONLY:
            return "mmio"
        if not slot.arch.gfn_write_track[gfn - slot.base_gfn]:
            return "direct"
        gvt = self.kvmgt
        if gvt is not None and gvt.attached and gfn in gvt.ptable:
            return "handled"
        return "ignored"

    def guest_write(self, gpa: int, nbytes: int = 8, as_id: int = 0) -> str:
        """A vCPU stores ``nbytes`` at ``gpa`` (``as_id`` 1 = a vCPU in SMM).

        * ``"mmio"``: no memslot holds the gfn, or a ``KVM_MEM_READONLY`` one does: the
          store exits to the VMM (``KVM_EXIT_MMIO``); no page-track notifier sees it
          (``kvm_page_track_write()`` runs only after ``emulator_write_phys()``
          wrote guest memory).
        * ``"direct"``: the gfn is not write-tracked; the store completes in the guest
          (a read-only SPTE left behind by an earlier track is made writable by the
          fault, since ``mmu_try_to_unsync_pages()`` finds the count 0).
        * ``"ignored"``: the gfn is write-tracked, so the store faults
          (``page_fault_handle_page_track()`` -> ``RET_PF_EMULATE``) and is emulated
          (``emulator_write_phys()``), but no tracker takes it: KVMGT's ``ptable``
          lacks it, or no KVMGT is attached.
        * ``"handled"``: trapped, emulated, and ``kvm_page_track_write()`` ran KVMGT's
          ``track_write``, which found the gfn in ``ptable`` and called GVT's handler.

        A write to a gfn GVT shadows that is not ``"handled"`` is counted as
        missed in ``vm.write_stats``.
        """
        gpa = _u("gpa", gpa, 64)
        nbytes = _check_nbytes(nbytes)
        if (gpa & (PAGE_SIZE - 1)) + nbytes > PAGE_SIZE:
            raise ValueError(f"a {nbytes}-byte write at {gpa:#x} crosses a 4 KiB page; "
                             "the emulator splits it: issue one write per page")
        self._memslots(as_id)
        gfn = gpa_to_gfn(gpa)
        slot = self._as[as_id].find_gfn(gfn)
        if slot is None or slot.flags & KVM_MEM_READONLY:
            outcome = "mmio"
        elif not slot.arch.gfn_write_track[gfn - slot.base_gfn]:
            outcome = "direct"
        else:
            # trapped and emulated: kvm_page_track_write() -> __kvm_page_track_write()
            handled = False
            for node in list(self.track_notifier_list):
                if node.external and node.owner is not None:
                    handled |= node.owner.track_write(gpa, nbytes)
            outcome = "handled" if handled else "ignored"
        gvt = self.kvmgt
        missed = gvt is not None and outcome != "handled" and bool(gvt.page_track_tree.get(gfn))
        self._book_writes({outcome: 1, "missed": int(missed)})
        return outcome

    def _book_writes(self, counts: dict[str, int]) -> None:
        """``write_stats`` and the Work of guest writes (counts by outcome, plus
        "missed"), for the plain path and the write kernel alike: an emulated write
        per "handled"/"ignored", an exit to the VMM per "mmio".  KVMGT's own work
        is booked by ``KVMGT._track_write_section``."""
        for k, v in counts.items():
            self.write_stats[k] += int(v)
        self.work.add("emulated_writes", int(counts.get("handled", 0) + counts.get("ignored", 0)))
        self.work.add("mmio_exits", int(counts.get("mmio", 0)))

    def guest_write_batch(self, gpas, as_id: int = 0, outcomes: bool = False,
                          nbytes: int = 8):
        """``guest_write(gpa, nbytes, as_id)`` for every gpa of ``gpas`` (a NumPy uint64
        array); with ``vm.kernels`` in one jitted kernel
        (``kvmpt._kernels.writes.page_track_write_batch``).

        Returns a :class:`WriteBatchResult`: a mapping with keys "direct", "ignored",
        "handled", "mmio", "missed" (the counts of this batch); with
        ``outcomes=True`` its ``.outcomes`` (uint8 codes into ``WRITE_OUTCOMES``) and
        ``.missed`` (bool) hold per-write results.  ``write_stats``, ``work`` and
        ``lockdep`` change as N calls would (lockdep's reports in order of kind).
        Where KVMGT's handler changes state (failsafe mode) the kernel stops before
        the first such write and the plain path does the rest.
        """
        gpas = _as_gpa_array(gpas)
        nbytes = _check_nbytes(nbytes)
        self._memslots(as_id)
        as_id = int(as_id)
        res = WriteBatchResult(dict.fromkeys(WRITE_OUTCOMES + ("missed",), 0))
        if outcomes:
            res.outcomes = np.zeros(gpas.shape[0], dtype=np.uint8)
            res.missed = np.zeros(gpas.shape[0], dtype=bool)
        before = dict(self.write_stats)
        start = self._write_batch_kernel(gpas, as_id, nbytes, res) if self.kernels else 0
        code = {name: i for i, name in enumerate(WRITE_OUTCOMES)}
        for i in range(start, gpas.shape[0]):
            m = self.write_stats["missed"]
            o = self.guest_write(int(gpas[i]), nbytes, as_id)
            if outcomes:
                res.outcomes[i] = code[o]
                res.missed[i] = self.write_stats["missed"] != m
        res.update({k: self.write_stats[k] - before[k] for k in before})
        return res

    def _write_batch_kernel(self, gpas: np.ndarray, as_id: int, nbytes: int,
                            res: "WriteBatchResult") -> int:
        """The kernel part of ``guest_write_batch``: returns where the plain path takes
        over (the length of ``gpas`` when the kernel did every write)."""
        from ._kernels import writes as kw
        crossing = kw.first_page_crossing(gpas, nbytes)
        if crossing >= 0:
            raise ValueError(f"a {nbytes}-byte write at {int(gpas[crossing]):#x} crosses a "
                             "4 KiB page; the emulator splits it: issue one write per page")
        gvt = self.kvmgt
        tracker = gvt if gvt is not None and gvt.attached else None
        sa = self._slot_arrays(as_id)
        pt = self._ptable_arrays(tracker.ptable) if tracker else self._flat_of(
            "empty-ptable", _empty_ptable)
        shadow_tab, shadow_shift, has_shadow = self._shadow_set()
        miss_tab, miss_shift, has_miss = self._miss_set(as_id, sa, tracker, pt)
        out_o = res.outcomes if res.outcomes is not None else np.zeros(1, dtype=np.uint8)
        out_m = res.missed if res.missed is not None else np.zeros(1, dtype=np.bool_)
        stats = np.zeros(kw.S_LEN, dtype=np.int64)
        kw.page_track_write_batch(
            gpas, sa.base, sa.npages, sa.trap, sa.counter_addrs, tracker is not None,
            pt.shift, pt.head, pt.nxt, pt.key, pt.occ, shadow_tab, shadow_shift, has_shadow,
            miss_tab, miss_shift, has_miss, bool(tracker and tracker.failsafe),
            res.outcomes is not None, out_o, out_m, stats)
        counts = {name: int(stats[kw.S_OUTCOME + i]) for i, name in enumerate(WRITE_OUTCOMES)}
        counts["missed"] = int(stats[kw.S_MISSED])
        self._book_writes(counts)
        if tracker is not None:
            kinds = [(kw.NOT_FOUND, False, False), (kw.FOUND_NOT_SHADOWED, True, False),
                     (kw.FOUND_SHADOWED, True, True)]
            for k, found, shadowed in sorted(kinds, key=lambda x: stats[kw.S_KIND_FIRST + x[0]]):
                calls = int(stats[kw.S_KIND_N + k])
                if calls:
                    with tracker._track_write_section(found, shadowed, calls,
                                                      int(stats[kw.S_KIND_STEPS + k]),
                                                      int(stats[kw.S_KIND_LONGEST + k])):
                        pass
        return int(stats[kw.S_STOP])

    # ----------------------------------------------- flat arrays for the kernels
    def _flat_of(self, key, build, version=None):
        """``build()``, cached under ``key`` for this generation (and ``version``)."""
        stamp = (self.generation, version)
        hit = self._flat.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        value = build()
        self._flat[key] = (stamp, value)
        return value

    def _slot_arrays(self, as_id: int):
        from ._kernels.flat import slots_as_arrays
        return self._flat_of(("slots", as_id), lambda: slots_as_arrays(self._as[as_id].sorted()))

    @staticmethod
    def _ptable_arrays(pt):
        """KVMGT's ``ptable`` as the kernels' flat hlist, cached on the table per its own
        generation (``ProtectTable.gen``, bumped by every add/delete/destroy)."""
        from ._kernels.flat import build_ptable_arrays
        if pt.flat is None or pt.flat[0] != pt.gen:
            pt.flat = (pt.gen, build_ptable_arrays(pt))
        return pt.flat[1]

    @staticmethod
    def _remember_ptable_arrays(pt, arr) -> None:
        """``arr`` (a kernel's copy, changed as ``pt`` now is) is ``pt``'s flat form."""
        pt.flat = (pt.gen, arr)

    def _shadowed(self) -> np.ndarray:
        tree = self.kvmgt.page_track_tree if self.kvmgt is not None else {}
        return np.fromiter((g for g, t in tree.items() if t), dtype=np.uint64)

    def _shadow_set(self):
        """The gfns GVT shadows as the write kernel's set: (table, shift, any)."""
        def build():
            from ._kernels.common import set_build
            keys = self._shadowed()
            return (*set_build(keys), keys.size > 0)
        return self._flat_of("shadowed", build)

    def _miss_set(self, as_id, sa, tracker, pt):
        """The shadowed gfns whose writes from ``as_id`` would not be handled now."""
        def build():
            from ._kernels.common import set_build
            from ._kernels.writes import HANDLED, write_outcomes
            gfns = self._shadowed()
            codes = write_outcomes(gfns, sa.base, sa.npages, sa.trap, sa.counter_addrs,
                                   tracker is not None, pt.shift, pt.head, pt.nxt, pt.key,
                                   pt.occ)
            keys = gfns[codes != HANDLED]
            return (*set_build(keys), keys.size > 0)
        return self._flat_of(("missed", as_id), build,
                             tracker.ptable.gen if tracker is not None else None)

    # ===================================================== memslot updates
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

    def _event(self, step: str, S: str, **detail) -> None:
        self.events.append((step, {"op": self._op, "S": S, **detail}))

    def check_user_memory_region(self, slot: int, flags: int, guest_phys_addr: int,
                                 memory_size: int, userspace_addr: int) -> Decision:
        """What ``__kvm_set_memory_region()`` would decide for this request now (the
        checks of :func:`kvmpt.memslot.check_set_user_memory_region` under this VM's
        ``profile``), without doing it: a :class:`kvmpt.memslot.Decision`."""
        return check_set_user_memory_region(
            self.profile, self._as, _u("slot", slot, 32), _u("flags", flags, 32),
            _u("guest_phys_addr", guest_phys_addr, 64), _u("memory_size", memory_size, 64),
            _u("userspace_addr", userspace_addr, 64), self.nr_memslot_pages)

    def set_user_memory_region(self, slot: int, flags: int, guest_phys_addr: int,
                               memory_size: int, userspace_addr: int) -> None:
        """KVM_SET_USER_MEMORY_REGION.  Mirrors ``kvm_vm_ioctl_set_memory_region()`` and
        ``__kvm_set_memory_region()`` (virt/kvm/kvm_main.c, v6.5/v6.6): the checks of
        spec section 3.1 in the kernel's order, then ``kvm_set_memslot()``.

        Returns None; raises OSError with the kernel's errno.  A request rejected
        before ``kvm_set_memslot()`` changes no state and records no event.
        """
        d = self.check_user_memory_region(slot, flags, guest_phys_addr, memory_size,
                                          userspace_addr)
        slot, flags, gpa, size, ua = (int(x) for x in (slot, flags, guest_phys_addr,
                                                        memory_size, userspace_addr))
        if d.errno:
            raise OSError(d.errno, f"KVM_SET_USER_MEMORY_REGION: {d.reason}")
        if d.change == NOOP:
            self._begin_op(slot, flags, gpa, size, ua).change = NOOP
            return None
        change, old = d.change, d.old
        new = None if change == DELETE else MemorySlot(d.id, d.as_id, d.base_gfn, d.npages,
                                                       flags, ua)
        rec = self._begin_op(slot, flags, gpa, size, ua)
        rec.change = change
        r = self._set_memslot(old, new, change, rec)
        rec.errno = -r
        self.generation += 1
        if r:
            raise OSError(-r, f"KVM_SET_USER_MEMORY_REGION ({change} slot {d.id} as_id {d.as_id}) "
                          f"failed: {errno.errorcode[-r]}")
        return None

    def _begin_op(self, slot, flags, gpa, size, ua) -> OpRecord:
        self._op += 1
        rec = OpRecord(self._op, slot, flags, gpa, size, ua)
        self.op_log.append(rec)
        return rec

    def _swap(self) -> None:
        """``kvm_swap_active_memslots()``: drops ``slots_arch_lock``,
        ``synchronize_srcu_expedited(&kvm->srcu)``."""
        self.work.add("srcu_syncs")

    def _set_memslot(self, old: MemorySlot | None, new: MemorySlot | None, change: str,
                     rec: OpRecord) -> int:
        """Mirrors ``kvm_set_memslot()`` (virt/kvm/kvm_main.c): S1..S8."""
        slots = self._as[(old or new).as_id]
        ident = {"change": change, "as_id": (old or new).as_id, "id": (old or new).id}
        # S1: mutex_lock(&kvm->slots_arch_lock)
        invalid = None
        if change in (DELETE, MOVE):
            # S2a: invalid_slot = copy of old (shares old->arch), KVM_MEMSLOT_INVALID,
            #      replaces old in the inactive set; S2b: swap -> INVALID copy is active.
            invalid = old.copy()
            invalid.invalid = True
            slots.replace(old, invalid)
            self._swap()
            self._event("invalidate", "S2a-b", **ident, base_gfn=old.base_gfn, npages=old.npages)
            # S2c: kvm_arch_flush_shadow_memslot(kvm, old)
            self._flush_shadow_memslot(old, change, rec)
            # S2d-f: guest_memory_reclaimed, re-take slots_arch_lock, old->arch = invalid->arch
            old.arch = invalid.arch
        # S3: kvm_prepare_memory_region()
        self._event("prepare", "S3", **ident)
        r = self._prepare_memory_region(old, new, change)
        if r:
            # S4: undo
            if change in (DELETE, MOVE):
                slots.replace(invalid, old)
                self._swap()
                self._event("restore", "S4", **ident, errno=-r)
                for call in rec.hook_calls:
                    w = call.work.ops
                    call.harmful = call.node == "kvmgt" and (w["counter_updates"] or w["hash_deletes"]) > 0
            return r
        # S5: install
        if change == CREATE:
            slots.replace(None, new)
        elif change == DELETE:
            slots.replace(invalid, None)
        elif change == MOVE:
            slots.replace(invalid, new)
        else:
            slots.replace(old, new)
        self._swap()
        self._event("install", "S5", **ident)
        # S6: kfree(invalid_slot); S7: kvm_commit_memory_region()
        self._commit_memory_region(old, new, change, rec, ident)
        return 0   # S8

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

    # ============================================================ invariants
    def check_invariants(self) -> list[str]:
        """Every disagreement between KVM's write-track counters, KVMGT's ``ptable``
        and GVT's shadowed pages, in a reviewer's words; [] when they agree.

        With TDP (EPT) and no nested guest KVM's own shadow MMU write-tracks
        nothing, so (spec section 6.2) for every gfn of every address-space-0
        slot ``gfn_write_track == (1 if gfn in ptable else 0)``; address space 1
        counters stay 0 (KVMGT adds through ``gfn_to_memslot()``, address space
        0); each ``disallow_lpage`` equals its initial value plus the write-track
        references inside that huge page; every ``ptable`` gfn is shadowed by GVT
        and has a memslot whose counter traps writes; every shadowed gfn that guest
        RAM backs (a writable address-space-0 slot) is in ``ptable``.  GVT's shadow
        follows the guest page, i.e. the host page (hva) it had when shadowed: after
        a MOVE that page shows up at another gfn, which nothing protects.  A shadowed
        gfn whose memory is gone is not a disagreement (the guest cannot write it;
        ``gvt.stale_gfns()`` still lists it), but once RAM is created there again
        without protection it is.
        """
        out: list[str] = []
        gvt = self.kvmgt if self.kvmgt is not None and self.kvmgt.attached else None
        ptable = gvt.ptable.gfns() if gvt else set()
        for as_id, slots in enumerate(self._as):
            for s in slots.sorted():
                arr = s.arch.gfn_write_track
                nz = np.flatnonzero(arr)
                for i in nz:
                    gfn = s.base_gfn + int(i)
                    want = 1 if (as_id == 0 and gfn in ptable) else 0
                    if int(arr[i]) != want:
                        if want == 0 and gvt is None:
                            why = "no external tracker is attached (protection leaked)"
                        elif as_id == 1:
                            why = "KVMGT only tracks through address space 0"
                        else:
                            why = "KVMGT's ptable does not hold it"
                        out.append(f"gfn {gfn:#x} (as {as_id}, slot {s.id}): KVM write-track "
                                   f"count is {int(arr[i])}, expected {want}: {why}; guest "
                                   f"writes to it trap and are ignored")
                for level in HUGE_LEVELS:
                    expect = initial_lpage_info(s.base_gfn, s.npages, s.userspace_addr, level)
                    if nz.size:
                        idx = ((s.base_gfn + nz) >> level_shift(level)) - (s.base_gfn >> level_shift(level))
                        np.add.at(expect, idx, arr[nz].astype(np.int32))
                    bad = np.flatnonzero(s.arch.lpage_info[level - 2] != expect)
                    for j in bad[:8]:
                        out.append(f"slot {s.id} (as {as_id}) level {level} huge page {int(j)}: "
                                   f"disallow_lpage is {int(s.arch.lpage_info[level - 2][j])}, "
                                   f"expected {int(expect[j])} from alignment and write-track "
                                   f"counts")
        if gvt is not None:
            shadowed = {g for g, t in gvt.page_track_tree.items() if t}
            for gfn in sorted(ptable - shadowed):
                out.append(f"gfn {gfn:#x} is in KVMGT's ptable but GVT does not shadow it")
            for gfn in sorted(shadowed):
                hva = gvt.shadow_hva.get(gfn)
                seen_at = [s.base_gfn + ((hva - s.userspace_addr) >> PAGE_SHIFT)
                           for s in self._as[0].sorted()
                           if not s.flags & KVM_MEM_READONLY
                           and s.userspace_addr <= hva < s.userspace_addr + (s.npages << PAGE_SHIFT)]
                if gfn in seen_at:
                    # the page is still at its gfn (other gfns aliasing the same host
                    # page are a limit of gfn-based tracking, not of these designs)
                    if gfn not in ptable:
                        out.append(f"gfn {gfn:#x}: GVT shadows it and the guest can write it, "
                                   f"but KVMGT's ptable does not hold it; guest writes will not "
                                   f"reach the handler (stale shadow page table)")
                elif seen_at:
                    out.append(f"gfn {gfn:#x}: GVT shadows it, but the guest page behind it "
                               f"(hva {hva:#x}) is now at gfn {seen_at[0]:#x} (the slot moved); "
                               f"guest writes there are not trapped for GVT")
            for gfn in sorted(ptable):
                slot = self._as[0].find_gfn(gfn)
                if slot is None:
                    out.append(f"gfn {gfn:#x} is in KVMGT's ptable but no memslot holds it "
                               f"(the slot moved or was deleted): writes are not trapped")
                elif not slot.arch.gfn_write_track[gfn - slot.base_gfn]:
                    out.append(f"gfn {gfn:#x} is in KVMGT's ptable but KVM's write-track "
                               f"count is 0: guest writes go direct, GVT misses them")
        return out

    # ============================================================== replay
    def replay(self, ops, **kwargs):
        """Apply QEMU memslot ops (``kvmpt.trace.load_qemu_trace``); see ``kvmpt.replay``."""
        from .replay import replay
        return replay(self, ops, **kwargs)

    def __repr__(self) -> str:
        n = [len(a.by_id) for a in self._as]
        return (f"VM(design={self.design.name!r}, slots={n}, "
                f"kvmgt={'attached' if self.kvmgt and self.kvmgt.attached else 'none'})")


class WriteBatchResult(dict):
    """Counts by outcome: keys "direct", "ignored", "handled", "mmio", "missed";
    ``.outcomes`` (uint8 codes into ``WRITE_OUTCOMES``) and ``.missed`` (bool) per
    write when asked for with ``outcomes=True``, else None."""

    outcomes: np.ndarray | None = None
    missed: np.ndarray | None = None


def _check_nbytes(nbytes) -> int:
    if isinstance(nbytes, bool) or not isinstance(nbytes, (int, np.integer)) \
            or not 1 <= nbytes <= 8:
        raise ValueError(f"nbytes must be 1..8 (one emulated store), got {nbytes!r}")
    return int(nbytes)


def _as_gpa_array(gpas) -> np.ndarray:
    a = np.asarray(gpas)
    if a.ndim != 1:
        raise ValueError(f"gpas must be a 1-D array, got shape {a.shape}")
    if a.size and a.dtype.kind not in "iu":
        raise ValueError(f"gpas must be integers (uint64 guest physical addresses), "
                         f"got dtype {a.dtype}")
    if a.dtype.kind == "i" and a.size and int(a.min()) < 0:
        raise ValueError("gpas must be non-negative")
    return np.ascontiguousarray(a, dtype=np.uint64)


def _empty_ptable():
    from ._kernels.flat import empty_ptable_arrays
    return empty_ptable_arrays()
