"""KVM x86 page write-tracking: the per-slot counters and the large-page counts.

Mirrors arch/x86/kvm/mmu/page_track.c and the lpage helpers of
arch/x86/kvm/mmu/mmu.c.  The functions take the slot already resolved and
expect the caller to hold ``mmu_lock`` for write (the kernel's ``__``
functions); ``kvmpt.kernel.vm.VM`` does the SRCU / ``gfn_to_memslot`` / locking
part of the exported API.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kvmpt.kernel.memslot import HUGE_LEVELS, PAGE_SHIFT, USHRT_MAX, MemorySlot, SlotArch, gfn_to_index
from kvmpt.kernel.work import Work

#: Assumption [G]: when a gfn's count goes 0 -> 1, the guest had the page mapped
#: writable (it was just writing the page table it asks GVT to shadow), so
#: kvm_mmu_slot_gfn_write_protect() changes an SPTE and a remote TLB flush follows.
#: kvmpt does not model individual SPTEs.
FLUSH_ON_FIRST_PROTECT = True


@dataclass(frozen=True)
class KernelWarning:
    """A WARN the kernel would print; the model carries on as the kernel does."""

    op: int
    where: str
    message: str


def update_gfn_write_track(slot: MemorySlot, gfn: int, count: int, work: Work | None,
                           warnings: list, op: int) -> bool:
    """Mirrors ``update_gfn_write_track()`` (page_track.c, v6.6; ``update_gfn_track()``
    in v6.5): ``WARN_ON(val + count < 0 || val + count > USHRT_MAX)`` and return
    **without** changing the count.  Returns whether the count changed.  ``work``
    None: the caller books the primitive itself (``KVMGT``'s booking functions)."""
    arr = slot.arch.gfn_write_track
    idx = gfn - slot.base_gfn
    val = int(arr[idx])
    if work is not None:
        work.add("counter_updates")
    if val + count < 0 or val + count > USHRT_MAX:
        warnings.append(KernelWarning(
            op, "update_gfn_write_track",
            f"WARN: gfn_write_track[{gfn:#x}] = {val} {'+' if count > 0 else '-'} "
            f"{abs(count)} leaves 0..{USHRT_MAX} (as_id {slot.as_id}, slot {slot.id}); "
            f"count left unchanged"))
        return False
    arr[idx] = val + count
    return True


def update_gfn_disallow_lpage_count(slot: MemorySlot, gfn: int, count: int,
                                    work: Work | None, warnings: list, op: int) -> None:
    """Mirrors ``update_gfn_disallow_lpage_count()`` (mmu.c, v6.5/v6.6): adds
    ``count`` at every huge level, then ``WARN_ON(disallow_lpage < 0)`` (the
    change is kept)."""
    for level in HUGE_LEVELS:
        linfo = slot.arch.lpage_info[level - 2]
        i = gfn_to_index(gfn, slot.base_gfn, level)
        linfo[i] += count
        if work is not None:
            work.add("lpage_updates")
        if linfo[i] < 0:
            warnings.append(KernelWarning(
                op, "update_gfn_disallow_lpage_count",
                f"WARN: disallow_lpage for gfn {gfn:#x} at level {level} went to "
                f"{int(linfo[i])} (as_id {slot.as_id}, slot {slot.id})"))


def write_track_add_gfn_locked(slot: MemorySlot, gfn: int, work: Work | None,
                               warnings: list, op: int) -> bool:
    """Mirrors ``__kvm_write_track_add_gfn()`` (v6.6) / ``kvm_slot_page_track_add_page()``
    (v6.5): count +1, ``kvm_mmu_gfn_disallow_lpage()``, then
    ``kvm_mmu_slot_gfn_write_protect()`` and ``kvm_flush_remote_tlbs()`` if an
    SPTE changed.  SPTEs are write-protected, not zapped.  Returns whether a TLB flush
    followed."""
    before = int(slot.arch.gfn_write_track[gfn - slot.base_gfn])
    update_gfn_write_track(slot, gfn, 1, work, warnings, op)
    update_gfn_disallow_lpage_count(slot, gfn, 1, work, warnings, op)
    flush = FLUSH_ON_FIRST_PROTECT and before == 0
    if flush and work is not None:
        work.add("tlb_flushes")
    return flush


def write_track_remove_gfn_locked(slot: MemorySlot, gfn: int, work: Work | None,
                                  warnings: list, op: int) -> None:
    """Mirrors ``__kvm_write_track_remove_gfn()`` (v6.6) /
    ``kvm_slot_page_track_remove_page()`` (v6.5): count -1 and
    ``kvm_mmu_gfn_allow_lpage()``.  No TLB flush, no SPTE change."""
    update_gfn_write_track(slot, gfn, -1, work, warnings, op)
    update_gfn_disallow_lpage_count(slot, gfn, -1, work, warnings, op)


def gfn_is_write_tracked(slot: MemorySlot | None, gfn: int) -> bool:
    """Mirrors ``kvm_gfn_is_write_tracked()`` (v6.6) / ``kvm_slot_page_track_is_active()``."""
    if slot is None or slot.arch is None or slot.arch.gfn_write_track is None:
        return False
    return bool(slot.arch.gfn_write_track[gfn - slot.base_gfn])


def gpa_to_gfn(gpa: int) -> int:
    return gpa >> PAGE_SHIFT


@dataclass(eq=False)
class NotifierNode:
    """``struct kvm_page_track_notifier_node``.

    ``external`` is False only for KVM's own ``mmu_sp_tracker`` (v6.5), which
    has ``track_write = kvm_mmu_pte_write`` and ``track_flush_slot =
    kvm_mmu_invalidate_zap_pages_in_memslot``.
    """

    name: str
    external: bool
    owner: object = None


def replay_warnings(vm, slots, events: np.ndarray, gfn_of_row, op: int) -> None:
    """Turn a kernel's WARN event rows ``(row, count, slot index, counter before,
    lpage 2M before, lpage 1G before)`` into the model's ``KernelWarning``s, in order,
    by running ``kvmpt.kernel.page_track``'s own update functions on a one-gfn copy of the
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
