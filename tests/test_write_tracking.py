"""Write-tracking semantics and the KVMGT slot hooks, checked against the kernel.

Written from spec/kernel-semantics.md (§1.1-§1.4, §2, §3.3-§3.4, §4, §6), not from ``kvmpt/kernel/vm.py``.
The story under review: in v6.5 KVMGT's ``track_flush_slot`` ran at S2c, before a MOVE could still
fail at S3, and dropped its write protection; a failed MOVE then left GVT shadowing guest page-table
pages whose writes no longer reach its handler (Yan Zhao, <20221108084416.11447-1-yan.y.zhao@intel.com>).
v6.6 moved the hook to commit (``track_remove_region``, DELETE only) and rejects MOVE while KVMGT is
attached.
"""
from __future__ import annotations

import dataclasses
import errno

import pytest

from kvmpt import VM, Design

PAGE = 4096
KVM_MEM_LOG_DIRTY_PAGES = 1
UA = 0x1000_0000_0000
GPA10 = 0xC000_0000
SIZE10 = 0x20_0000
NPAGES10 = SIZE10 // PAGE
GFN10 = GPA10 // PAGE
UA10 = UA + GPA10
NEW_GPA = 0x1_0000_0000
NEW_GFN = NEW_GPA // PAGE
PRESETS = ("v6.5", "v6.6")


def count_or_none(vm, gfn, as_id=0):
    try:
        return vm.write_track_count(gfn, as_id=as_id)
    except LookupError:
        return None


def slots(vm, as_id=0):
    return [(s.id, s.as_id, s.base_gfn, s.npages, s.flags, s.userspace_addr)
            for s in vm.memslots(as_id=as_id)]


def state(vm, gvt, gfns):
    return {
        "slots": slots(vm),
        "counts": {g: count_or_none(vm, g) for g in gfns},
        "tracked": {g: (vm.gfn_is_write_tracked(g) if count_or_none(vm, g) is not None else None)
                    for g in gfns},
        "ptable": {g: gvt.is_write_protected(g) for g in gfns},
        "stale": sorted(gvt.stale_gfns()),
        "invariants": vm.check_invariants(),
    }


def errno_of(call, *args):
    with pytest.raises(OSError) as ei:
        call(*args)
    return ei.value.errno


def vm_with_gvt(design, shadowed=(GFN10 + 3,)):
    """Slot 0 (64 KiB at 0) and the selftest's slot 10 (2 MiB at 0xc0000000); KVMGT attached and
    shadowing ``shadowed`` (GTT page-table pages of the guest)."""
    if isinstance(design, str):
        design = Design.preset(design)
    vm = VM(design=design)
    vm.set_user_memory_region(0, 0, 0, 16 * PAGE, UA)
    vm.set_user_memory_region(10, 0, GPA10, SIZE10, UA10)
    gvt = vm.attach_kvmgt()
    for g in shadowed:
        gvt.shadow(g)
    return vm, gvt


@pytest.fixture(params=PRESETS)
def preset(request):
    return request.param


# --------------------------------------------------------------------------------------------------
# §1.1-§1.4, §4.2-§4.3: adding and removing a write-track

def test_shadow_write_tracks_the_gfn(preset):
    """intel_gvt_page_track_add -> kvm_slot_page_track_add_page (v6.5) / kvm_write_track_add_gfn
    (v6.6): count +1, the gfn is write-tracked, and a guest write to it traps to KVMGT's handler."""
    vm, gvt = vm_with_gvt(preset, shadowed=())
    g = GFN10 + 3
    assert vm.write_track_count(g) == 0 and not vm.gfn_is_write_tracked(g)
    assert vm.guest_write(g * PAGE) == "direct"
    gvt.shadow(g)
    assert vm.write_track_count(g) == 1
    assert vm.gfn_is_write_tracked(g)
    assert gvt.is_write_protected(g)
    assert vm.guest_write(g * PAGE) == "handled"
    assert vm.guest_write(g * PAGE + 0xFF8, nbytes=8) == "handled"
    # only that gfn: its neighbours are untouched RAM
    assert vm.write_track_count(g + 1) == 0 and vm.write_track_count(g - 1) == 0
    assert vm.guest_write((g + 1) * PAGE) == "direct"
    assert not gvt.stale_gfns()
    assert vm.check_invariants() == []


def test_shadow_twice_is_eexist_and_counts_once(preset):
    """gvt/page_track.c:intel_vgpu_register_page_track returns -EEXIST for a gfn already in GVT's
    radix tree (and intel_gvt_page_track_add would skip a gfn already in ptable anyway), so KVMGT
    holds at most one write-track reference per gfn."""
    vm, gvt = vm_with_gvt(preset)
    g = GFN10 + 3
    assert errno_of(gvt.shadow, g) == errno.EEXIST
    assert vm.write_track_count(g) == 1
    assert gvt.is_write_protected(g)
    assert vm.guest_write(g * PAGE) == "handled"
    assert vm.check_invariants() == []


def test_unshadow_drops_the_track(preset):
    """intel_gvt_page_track_remove -> kvm_write_track_remove_gfn: count -1, hash entry deleted; a
    later guest write faults the SPTE writable again (not emulated): "direct"."""
    vm, gvt = vm_with_gvt(preset)
    g = GFN10 + 3
    gvt.unshadow(g)
    assert vm.write_track_count(g) == 0
    assert not vm.gfn_is_write_tracked(g)
    assert not gvt.is_write_protected(g)
    assert vm.guest_write(g * PAGE) == "direct"
    assert not gvt.stale_gfns()
    assert vm.check_invariants() == []


def test_shadow_gfn_without_slot_is_einval(preset):
    """v6.5 intel_gvt_page_track_add: gfn_to_memslot() == NULL -> -EINVAL; v6.6
    kvm_write_track_add_gfn: same.  Nothing is added to ptable."""
    vm, gvt = vm_with_gvt(preset, shadowed=())
    g = 0x50_0000
    assert errno_of(gvt.shadow, g) == errno.EINVAL
    assert not gvt.is_write_protected(g)
    with pytest.raises(LookupError):
        vm.write_track_count(g)
    assert not gvt.stale_gfns()


def test_write_track_count_outside_any_slot_is_lookup_error(preset):
    """contract: write_track_count raises LookupError when no slot holds the gfn; the kernel query
    kvm_gfn_is_write_tracked returns false for !slot."""
    vm = VM(design=Design.preset(preset))
    vm.set_user_memory_region(1, 0, 0, PAGE, UA)
    with pytest.raises(LookupError):
        vm.write_track_count(1)
    assert vm.write_track_count(0) == 0
    with pytest.raises(LookupError):
        vm.write_track_count(0, as_id=1)


def test_attach_twice_is_eexist(preset):
    """intel_vgpu_open_device: a second vGPU on the same kvm -> -EEXIST (at most one external node)."""
    vm, gvt = vm_with_gvt(preset)
    assert errno_of(vm.attach_kvmgt) == errno.EEXIST
    assert vm.guest_write((GFN10 + 3) * PAGE) == "handled"


def test_guest_write_outcomes(preset):
    """guest_write: "direct" for untracked RAM (no trap); "handled" for a gfn in KVMGT's ptable
    (page_fault_handle_page_track -> emulate -> kvm_page_track_write -> kvmgt_page_track_write);
    outside any slot it is MMIO, never "direct"."""
    vm, gvt = vm_with_gvt(preset)
    assert vm.guest_write(0) == "direct"
    assert vm.guest_write(GPA10) == "direct"
    assert vm.guest_write((GFN10 + 3) * PAGE) == "handled"
    assert vm.guest_write(0x8000_0000) != "direct"             # no slot there


def test_guest_write_ignored_when_tracked_but_not_in_ptable():
    """kvmgt_page_track_write: a tracked gfn that is not in ptable is ignored by KVMGT.  Reached via
    the v6.5 flush hook with drop_protection_on_remove=False (a41e34b05da7 before aa611a99adb4): a
    failed MOVE drops the hash entry but leaves KVM's count, so the write still traps and nobody
    handles it."""
    d = dataclasses.replace(Design.preset("v6.5"), drop_protection_on_remove=False)
    vm, gvt = vm_with_gvt(d)
    g = GFN10 + 3
    vm.fail_next_prepare(errno.ENOMEM)
    assert errno_of(vm.set_user_memory_region, 10, 0, NEW_GPA, SIZE10, UA10) == errno.ENOMEM
    assert vm.write_track_count(g) == 1
    assert vm.gfn_is_write_tracked(g)
    assert not gvt.is_write_protected(g)
    assert vm.guest_write(g * PAGE) == "ignored"
    assert g in set(gvt.stale_gfns())


# --------------------------------------------------------------------------------------------------
# §3.3: FLAGS_ONLY shares the arrays, MOVE gets fresh ones

def test_flags_only_keeps_counts(preset):
    """kvm_arch_prepare_memory_region FLAGS_ONLY: memcpy(&new->arch, &old->arch) -- the new slot
    shares gfn_track / lpage_info, so write-track counts carry over."""
    vm, gvt = vm_with_gvt(preset)
    g = GFN10 + 3
    vm.set_user_memory_region(10, KVM_MEM_LOG_DIRTY_PAGES, GPA10, SIZE10, UA10)
    assert vm.write_track_count(g) == 1
    assert vm.guest_write(g * PAGE) == "handled"
    vm.set_user_memory_region(10, 0, GPA10, SIZE10, UA10)
    assert vm.write_track_count(g) == 1
    assert gvt.is_write_protected(g)
    assert not gvt.stale_gfns()
    assert vm.check_invariants() == []
    gvt.unshadow(g)                                  # the shared counter is the live one
    assert vm.write_track_count(g) == 0


def test_move_gives_fresh_zeroed_counters_v65():
    """kvm_alloc_memslot_metadata: memset(&new->arch, 0) -- after a MOVE every gfn of the new range
    has count 0; kvm_arch_commit_memory_region frees the old slot's arrays (counts dropped, not
    transferred; Sean, <ZBHnugUe0SSmQKGI@google.com>)."""
    vm, gvt = vm_with_gvt("v6.5", shadowed=(GFN10, GFN10 + 3, GFN10 + NPAGES10 - 1))
    vm.set_user_memory_region(10, 0, NEW_GPA, SIZE10, UA10)
    for i in (0, 3, NPAGES10 - 1):
        assert vm.write_track_count(NEW_GFN + i) == 0
        assert not vm.gfn_is_write_tracked(NEW_GFN + i)
        with pytest.raises(LookupError):
            vm.write_track_count(GFN10 + i)


# --------------------------------------------------------------------------------------------------
# §3.4 / §6.1: a MOVE that fails after the slot hook

def _fail_move(vm, how):
    if how == "enomem":
        vm.fail_next_prepare(errno.ENOMEM)
        want, gpa = errno.ENOMEM, 0x8000_0000             # inside the 4 GiB of VM(max_gfn=MAX_GFN)
    else:                                            # end gfn beyond kvm_mmu_max_gfn()
        want, gpa = errno.EINVAL, (MAX_GFN - 3) * PAGE    # callers build VM(max_gfn=MAX_GFN)
    assert errno_of(vm.set_user_memory_region, 10, 0, gpa, SIZE10, UA10) == want


MAX_GFN = 0xF_FFFF          # a 4 GiB guest physical address space


@pytest.mark.parametrize("how", ["enomem", "max_gfn"])
def test_failed_move_v65_flush_hook_loses_protection(how):
    """The v6.5 bug (spec §3.4, §6.1 "MOVE with KVMGT attached", Yan Zhao 2022-11-08):
    kvm_invalidate_memslot -> kvm_page_track_flush_slot -> kvmgt_page_track_flush_slot drops the
    write-track and the hash entry of every protected gfn; prepare then fails (ENOMEM from metadata,
    or EINVAL beyond kvm_mmu_max_gfn) and S4 re-activates old with the *same*, decremented arrays.
    GVT still shadows the gfn but the guest's writes no longer reach its handler."""
    design = Design.preset("v6.5")
    vm = VM(design=design, max_gfn=MAX_GFN)
    vm.set_user_memory_region(0, 0, 0, 16 * PAGE, UA)
    vm.set_user_memory_region(10, 0, GPA10, SIZE10, UA10)
    gvt = vm.attach_kvmgt()
    g = GFN10 + 3
    gvt.shadow(g)
    before = slots(vm)
    _fail_move(vm, how)
    assert slots(vm) == before                         # the slot itself is back
    assert vm.write_track_count(g) == 0                # decreased from 1
    assert not vm.gfn_is_write_tracked(g)
    assert not gvt.is_write_protected(g)
    assert g in set(gvt.stale_gfns())
    assert vm.guest_write(g * PAGE) != "handled"
    assert vm.guest_write(g * PAGE) == "direct"        # count 0: the write is not even trapped
    assert vm.check_invariants() != []


@pytest.mark.parametrize("drop", [True, False])
@pytest.mark.parametrize("how", ["enomem", "max_gfn"])
def test_failed_move_remove_hook_changes_nothing(how, drop):
    """With track_remove_region (fired at S7, DELETE only) nothing has run before S3, so a failed MOVE
    leaves counts, ptable and the handler path exactly as they were -- whatever KVMGT's hook would do
    on removal.  MOVE is allowed here to reach prepare's other failures."""
    d = Design(slot_hook="remove", move="allow", kvmgt_lock="vgpu_lock",
               drop_protection_on_remove=drop)
    vm = VM(design=d, max_gfn=MAX_GFN)
    vm.set_user_memory_region(0, 0, 0, 16 * PAGE, UA)
    vm.set_user_memory_region(10, 0, GPA10, SIZE10, UA10)
    gvt = vm.attach_kvmgt()
    g = GFN10 + 3
    gvt.shadow(g)
    before = state(vm, gvt, [g, g + 1])
    _fail_move(vm, how)
    assert state(vm, gvt, [g, g + 1]) == before
    assert vm.guest_write(g * PAGE) == "handled"
    assert vm.check_invariants() == []


def test_move_rejected_v66_changes_nothing():
    """v6.6 kvm_arch_prepare_memory_region: MOVE with an external user -> -EINVAL before any
    metadata work; S2's zap does not touch write-track counts, and no page-track hook has fired."""
    vm, gvt = vm_with_gvt("v6.6")
    g = GFN10 + 3
    before = state(vm, gvt, [g, NEW_GFN + 3])
    assert errno_of(vm.set_user_memory_region, 10, 0, NEW_GPA, SIZE10, UA10) == errno.EINVAL
    assert state(vm, gvt, [g, NEW_GFN + 3]) == before
    assert vm.guest_write(g * PAGE) == "handled"
    assert vm.check_invariants() == []


def test_move_v66_without_kvmgt_succeeds():
    """v6.6: kvm_page_track_has_external_user() is false with no notifier registered (after the
    inverted-check fix, spec §5.4), so MOVE goes through."""
    vm = VM(design=Design.preset("v6.6"))
    vm.set_user_memory_region(10, 0, GPA10, SIZE10, UA10)
    vm.set_user_memory_region(10, 0, NEW_GPA, SIZE10, UA10)
    assert slots(vm) == [(10, 0, NEW_GFN, NPAGES10, 0, UA10)]
    assert vm.write_track_count(NEW_GFN) == 0
    assert vm.check_invariants() == []


@pytest.mark.parametrize("design", [
    Design.preset("v6.5"),
    dataclasses.replace(Design.preset("v6.6"), move="allow"),
], ids=["v6.5", "v6.6-move-allowed"])
def test_successful_move_with_kvmgt_leaves_stale_gfns(design):
    """A MOVE that succeeds under KVMGT: the new range has zero counts (fresh metadata), so GVT's
    shadowed GTT page is no longer trapped -- v6.5 (flush hook dropped it first) and the v6.6 hook
    without the MOVE rejection alike.  This is why aa611a99adb4 rejects MOVE."""
    vm, gvt = vm_with_gvt(design)
    g = GFN10 + 3
    vm.set_user_memory_region(10, 0, NEW_GPA, SIZE10, UA10)
    assert vm.write_track_count(NEW_GFN + 3) == 0
    assert vm.guest_write((NEW_GFN + 3) * PAGE) == "direct"
    assert vm.guest_write(g * PAGE) != "handled"
    assert gvt.stale_gfns()
    assert vm.check_invariants() != []


def test_v65_move_of_other_slot_keeps_protection():
    """kvmgt_page_track_flush_slot loops over the flushed slot's gfns only: moving an unrelated slot
    (the failed case included) leaves slot 10's protected gfn alone."""
    vm, gvt = vm_with_gvt("v6.5")
    g = GFN10 + 3
    vm.set_user_memory_region(0, 0, 0x10_0000, 16 * PAGE, UA)
    vm.fail_next_prepare(errno.ENOMEM)
    assert errno_of(vm.set_user_memory_region, 0, 0, 0x20_0000, 16 * PAGE, UA) == errno.ENOMEM
    assert vm.write_track_count(g) == 1
    assert vm.guest_write(g * PAGE) == "handled"
    assert not gvt.stale_gfns()
    assert vm.check_invariants() == []


# --------------------------------------------------------------------------------------------------
# §4.4 / §4.5: DELETE purges KVMGT's hash for the range

@pytest.mark.parametrize("p", PRESETS)
def test_delete_purges_ptable_for_the_range(p):
    """v6.5 kvmgt_page_track_flush_slot / v6.6 kvmgt_page_track_remove_region: every gfn of the
    deleted slot leaves ptable; the slot's counters are freed with it (kvm_free_memslot).  gfns of
    other slots are untouched."""
    vm, gvt = vm_with_gvt(p, shadowed=(GFN10, GFN10 + NPAGES10 - 1, 5))
    vm.set_user_memory_region(10, 0, 0, 0, 0)
    assert not gvt.is_write_protected(GFN10)
    assert not gvt.is_write_protected(GFN10 + NPAGES10 - 1)
    with pytest.raises(LookupError):
        vm.write_track_count(GFN10)
    assert gvt.is_write_protected(5)
    assert vm.write_track_count(5) == 1
    assert vm.guest_write(5 * PAGE) == "handled"
    assert vm.warnings == []          # v6.5's remove_page ran on live counts of 1: no underflow


def test_delete_recreate_starts_untracked(preset):
    """CREATE after DELETE: kvm_page_track_create_memslot allocates a zeroed (__vcalloc) array, and
    ptable was purged (flush_slot / remove_region), so once GVT drops and re-registers the page the
    count goes 0 -> 1 again."""
    vm, gvt = vm_with_gvt(preset)
    g = GFN10 + 3
    vm.set_user_memory_region(10, 0, 0, 0, 0)
    vm.set_user_memory_region(10, 0, GPA10, SIZE10, UA10)
    assert vm.write_track_count(g) == 0
    assert vm.guest_write(g * PAGE) == "direct"
    # GVT's own radix tree (intel_vgpu_register_page_track) is not touched by KVM's slot hooks:
    # GVT still believes it shadows g, whose writes now go direct.
    assert g in set(gvt.stale_gfns())
    assert errno_of(gvt.shadow, g) == errno.EEXIST
    gvt.unshadow(g)              # intel_vgpu_unregister_page_track: g is not in ptable, no KVM call
    assert vm.write_track_count(g) == 0
    assert not gvt.stale_gfns()
    gvt.shadow(g)
    assert vm.write_track_count(g) == 1
    assert vm.guest_write(g * PAGE) == "handled"
    assert vm.check_invariants() == []


# --------------------------------------------------------------------------------------------------
# §1.1: the u16 counter WARNs (see also the low-level tests added once vm.py exposes them)
#
# The exported-API entry points the model exposes beside the contract: vm.write_track_add_gfn /
# vm.write_track_remove_gfn (kvm_write_track_{add,remove}_gfn, v6.6), vm.warnings (recorded WARNs)
# and vm.disallow_lpage(gfn, level) (lpage_info[level - 2][idx].disallow_lpage).

USHRT_MAX = 0xFFFF


def _fresh_vm(preset):
    vm = VM(design=Design.preset(preset))
    vm.set_user_memory_region(10, 0, GPA10, SIZE10, UA10)
    return vm


def test_write_track_overflow_warns_and_keeps_count(preset):
    """update_gfn_write_track (v6.6; update_gfn_track in v6.5): WARN_ON(val + count > USHRT_MAX) and
    return without changing the count.  The caller carries on: kvm_mmu_gfn_disallow_lpage still adds
    1 (spec §1.1)."""
    vm = _fresh_vm(preset)
    g = GFN10 + 7
    lp0 = vm.disallow_lpage(g, 2)
    for _ in range(USHRT_MAX):
        vm.write_track_add_gfn(g)
    assert vm.write_track_count(g) == USHRT_MAX
    assert len(vm.warnings) == 0
    vm.write_track_add_gfn(g)
    assert vm.write_track_count(g) == USHRT_MAX          # unchanged, not wrapped to 0
    assert len(vm.warnings) == 1
    assert vm.gfn_is_write_tracked(g)
    assert vm.disallow_lpage(g, 2) == lp0 + USHRT_MAX + 1
    # one remove now takes the count to 65534 although 65536 adds were made: the WARN's cost
    vm.write_track_remove_gfn(g)
    assert vm.write_track_count(g) == USHRT_MAX - 1


def test_write_track_underflow_warns_and_keeps_count(preset):
    """update_gfn_write_track: WARN_ON(val + count < 0) and return; the count stays 0.  The caller
    still calls kvm_mmu_gfn_allow_lpage, whose own WARN_ON(disallow_lpage < 0) fires for a huge page
    that started at 0 (the change is kept)."""
    vm = _fresh_vm(preset)
    g = GFN10 + 7
    assert vm.disallow_lpage(g, 2) == 0                   # a 2 MiB-aligned, 2 MiB slot (§1.3)
    vm.write_track_remove_gfn(g)
    assert vm.write_track_count(g) == 0
    assert not vm.gfn_is_write_tracked(g)
    assert len(vm.warnings) >= 1
    assert any("write_track" in (w.where if hasattr(w, "where") else str(w)) for w in vm.warnings)
    assert vm.disallow_lpage(g, 2) == -1
    assert vm.guest_write(g * PAGE) == "direct"


def test_write_track_api_no_slot_is_einval(preset):
    """kvm_write_track_add_gfn / kvm_write_track_remove_gfn (v6.6): gfn_to_memslot() == NULL ->
    -EINVAL, nothing changed, no WARN."""
    vm = _fresh_vm(preset)
    assert errno_of(vm.write_track_add_gfn, 0x10) == errno.EINVAL
    assert errno_of(vm.write_track_remove_gfn, 0x10) == errno.EINVAL
    assert vm.warnings == []


def test_write_track_add_disallows_lpage_at_every_level(preset):
    """__kvm_write_track_add_gfn -> kvm_mmu_gfn_disallow_lpage: +1 at 2M and 1G; remove -> allow_lpage
    -1 at both (spec §1.3).  Initial values from kvm_alloc_memslot_metadata: slot 10 is one aligned
    2 MiB page (2M entry 0), but its end is not 1G aligned (1G entry 1)."""
    vm = _fresh_vm(preset)
    g = GFN10 + 7
    assert (vm.disallow_lpage(g, 2), vm.disallow_lpage(g, 3)) == (0, 1)
    vm.write_track_add_gfn(g)
    assert (vm.disallow_lpage(g, 2), vm.disallow_lpage(g, 3)) == (1, 2)
    vm.write_track_add_gfn(g + 1)
    assert (vm.disallow_lpage(g, 2), vm.disallow_lpage(g, 3)) == (2, 3)
    assert vm.write_track_count(g) == 1 and vm.write_track_count(g + 1) == 1
    vm.write_track_remove_gfn(g)
    vm.write_track_remove_gfn(g + 1)
    assert (vm.disallow_lpage(g, 2), vm.disallow_lpage(g, 3)) == (0, 1)
    assert vm.warnings == []


def test_shadow_disallows_lpage(preset):
    """KVMGT's shadow goes through the same add: count 1 and disallow_lpage +1 (spec §1.3, §4.2)."""
    vm, gvt = vm_with_gvt(preset, shadowed=())
    g = GFN10 + 3
    before = (vm.disallow_lpage(g, 2), vm.disallow_lpage(g, 3))
    gvt.shadow(g)
    assert (vm.disallow_lpage(g, 2), vm.disallow_lpage(g, 3)) == (before[0] + 1, before[1] + 1)
    gvt.unshadow(g)
    assert (vm.disallow_lpage(g, 2), vm.disallow_lpage(g, 3)) == before


def test_misaligned_move_disallows_every_2m_page(preset):
    """kvm_alloc_memslot_metadata: if (base_gfn ^ (userspace_addr >> PAGE_SHIFT)) is misaligned for
    a level, every lpage_info entry starts at 1.  The selftest's MOVE to GPA - 4096 does exactly
    that (which is why set_memory_region_test wants the region to be one large page at first)."""
    vm = _fresh_vm(preset)
    vm.set_user_memory_region(10, 0, GPA10 - PAGE, SIZE10, UA10)
    for g in (GFN10 - 1, GFN10, GFN10 + NPAGES10 - 2):
        assert vm.disallow_lpage(g, 2) == 1
    vm.set_user_memory_region(10, 0, GPA10, SIZE10, UA10)
    assert vm.disallow_lpage(GFN10, 2) == 0


def test_flags_only_shares_lpage_info(preset):
    """FLAGS_ONLY memcpy()s old->arch: lpage_info is shared too, so disallow counts carry over."""
    vm, gvt = vm_with_gvt(preset)
    g = GFN10 + 3
    before = (vm.disallow_lpage(g, 2), vm.disallow_lpage(g, 3))
    vm.set_user_memory_region(10, KVM_MEM_LOG_DIRTY_PAGES, GPA10, SIZE10, UA10)
    assert (vm.disallow_lpage(g, 2), vm.disallow_lpage(g, 3)) == before
    assert vm.check_invariants() == []


def test_move_gives_fresh_lpage_info_v65():
    """MOVE: kvm_alloc_memslot_metadata recomputes lpage_info from alignment alone -- the +1 of the
    shadowed gfn is gone at the new range."""
    vm, gvt = vm_with_gvt("v6.5")
    vm.set_user_memory_region(10, 0, NEW_GPA, SIZE10, UA10)
    # NEW_GPA (4 GiB) is 1G aligned, the slot's end is not: 2M entry 0, 1G entry 1
    assert (vm.disallow_lpage(NEW_GFN + 3, 2), vm.disallow_lpage(NEW_GFN + 3, 3)) == (0, 1)


# --------------------------------------------------------------------------------------------------
# Address space 1 (SMM): KVMGT works on gfns, not on (as_id, gfn)

def test_shadow_uses_address_space_0_only(preset):
    """v6.6 kvm_write_track_add_gfn / v6.5 intel_gvt_page_track_add resolve the slot with
    gfn_to_memslot(kvm, gfn), i.e. address space 0: a gfn held only by an SMM (AS 1) slot is
    -EINVAL; a gfn in both is tracked in the AS 0 slot only."""
    vm = VM(design=Design.preset(preset))
    vm.set_user_memory_region((1 << 16) | 10, 0, GPA10, SIZE10, UA10)
    gvt = vm.attach_kvmgt()
    assert errno_of(gvt.shadow, GFN10 + 3) == errno.EINVAL
    vm.set_user_memory_region(10, 0, GPA10, SIZE10, UA10)
    gvt.shadow(GFN10 + 3)
    assert vm.write_track_count(GFN10 + 3, as_id=0) == 1
    assert vm.write_track_count(GFN10 + 3, as_id=1) == 0
    assert vm.check_invariants() == []


@pytest.mark.parametrize("p", PRESETS)
def test_deleting_smm_alias_purges_kvmgt_ptable(p):
    """Derived from code (spec §4.4, §4.5): KVMGT's slot hooks match ptable by gfn and ignore the
    address space.  v6.6 kvm_arch_commit_memory_region calls kvm_page_track_delete_slot for every
    DELETE, and kvmgt_page_track_remove_region(gfn, nr_pages) has no as_id; v6.5
    kvmgt_page_track_flush_slot loops over the (AS 1) slot's gfns, finds them in ptable, and calls
    kvm_slot_page_track_remove_page on the AS 1 slot, whose counter is 0 (underflow WARN).  Either
    way, deleting an SMM slot that aliases a shadowed RAM gfn drops it from ptable while the AS 0
    count stays 1: the guest's writes trap and KVMGT ignores them."""
    vm, gvt = vm_with_gvt(p)
    g = GFN10 + 3
    vm.set_user_memory_region((1 << 16) | 10, 0, GPA10, SIZE10, UA10)
    assert vm.check_invariants() == []
    vm.set_user_memory_region((1 << 16) | 10, 0, 0, 0, 0)
    assert not gvt.is_write_protected(g)
    assert vm.write_track_count(g) == 1
    assert vm.guest_write(g * PAGE) == "ignored"
    assert g in set(gvt.stale_gfns())
    assert vm.check_invariants() != []
    if p == "v6.5":
        assert len(vm.warnings) >= 1            # update_gfn_track underflow on the AS 1 slot
    else:
        assert vm.warnings == []                 # remove_region calls nothing in KVM


# --------------------------------------------------------------------------------------------------
# fail_next_prepare reaches only prepare steps that can fail

@pytest.mark.parametrize("p", PRESETS)
def test_delete_cannot_fail_in_prepare(p):
    """kvm_prepare_memory_region for DELETE: common code does nothing, x86 returns 0 -- "On DELETE,
    kvm_prepare_memory_region() will never fail on x86" (<Y2qSwlN26qWi3ZqH@google.com>).  An armed
    failure is left for the next update that can fail."""
    vm, gvt = vm_with_gvt(p)
    vm.fail_next_prepare(errno.ENOMEM)
    vm.set_user_memory_region(10, 0, 0, 0, 0)
    assert [s.id for s in vm.memslots()] == [0]
    assert errno_of(vm.set_user_memory_region, 12, 0, NEW_GPA, PAGE, UA) == errno.ENOMEM


@pytest.mark.parametrize("p", PRESETS)
def test_flags_only_turning_dirty_logging_off_cannot_fail(p):
    """kvm_prepare_memory_region for FLAGS_ONLY without LOG_DIRTY: dirty_bitmap = NULL, no
    allocation; x86 memcpy()s the arch data.  Nothing can fail."""
    vm = VM(design=Design.preset(p))
    vm.set_user_memory_region(10, KVM_MEM_LOG_DIRTY_PAGES, GPA10, SIZE10, UA10)
    vm.fail_next_prepare(errno.ENOMEM)
    vm.set_user_memory_region(10, 0, GPA10, SIZE10, UA10)
    assert [s.flags for s in vm.memslots()] == [0]


@pytest.mark.parametrize("slot_hook", ["flush", "remove"])
def test_move_reject_never_fires_without_external_tracker(slot_hook):
    """kvm_page_track_has_external_user() after the fix (spec §5.4): with no KVMGT registered, no
    design rejects a MOVE -- the inverted-check regression must not exist in any design."""
    d = Design(slot_hook=slot_hook, move="reject", kvmgt_lock="vgpu_lock",
               drop_protection_on_remove=False)
    vm = VM(design=d)
    vm.set_user_memory_region(10, 0, GPA10, SIZE10, UA10)
    vm.set_user_memory_region(10, 0, GPA10 - PAGE, SIZE10, UA10)
    assert [s.base_gfn for s in vm.memslots()] == [GFN10 - 1]


def test_smm_vcpu_write_to_shadowed_ram_is_not_trapped(preset):
    """Derived from code: the fault path resolves the gfn in the vCPU's current address space
    (kvm_vcpu_gfn_to_memslot), and KVMGT only ever tracked the AS 0 slot.  A vCPU in SMM writing the
    same gfn through an AS 1 slot is not trapped: KVMGT misses it."""
    vm, gvt = vm_with_gvt(preset)
    g = GFN10 + 3
    vm.set_user_memory_region((1 << 16) | 10, 0, GPA10, SIZE10, UA10)
    assert vm.guest_write(g * PAGE) == "handled"
    assert vm.guest_write(g * PAGE, as_id=1) == "direct"
