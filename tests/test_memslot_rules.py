"""KVM_SET_USER_MEMORY_REGION rules, checked against the kernel (spec/kernel-semantics.md §3, §6.1).

Written from the spec, not from ``kvmpt/kernel/vm.py``: every test names the kernel function it comes from.

Part 1: the validation checks of ``kvm_vm_ioctl_set_memory_region`` / ``check_memory_region_flags`` /
``__kvm_set_memory_region`` (v6.5/v6.6, virt/kvm/kvm_main.c; spec §3.1), each with its errno, and the
order in which they run.  Most checks return -EINVAL, so their relative order is invisible in the errno;
what *is* visible is that every one of them runs before ``kvm_set_memslot()``: no hook event, no state
change, and an armed ``fail_next_prepare(ENOMEM)`` is not consumed (it only fires at S3).  Where two
checks with different outcomes collide (EINVAL vs EEXIST vs the DELETE / MOVE classification vs the
prepare-time checks) the tests pin the kernel's order.

Part 2: the step order of ``kvm_set_memslot()`` (spec §3.2, §3.3, §6.1) as recorded in ``vm.events``,
for each change kind under both design presets.  Relative order only (index comparisons on step
names), since the model may record extra steps such as a KVM zap or the memslot swaps.

Part 3: bad Python-level input (negative numbers, floats, strings, out-of-range integers, unknown
design names): a clear error and no state change.
"""
from __future__ import annotations

import dataclasses
import errno

import pytest

from kvmpt import VM, Design

PAGE = 4096
KVM_MEM_LOG_DIRTY_PAGES = 1 << 0          # include/uapi/linux/kvm.h
KVM_MEM_READONLY = 1 << 1
KVM_USER_MEM_SLOTS = 32764                 # x86: KVM_MEM_SLOTS_NUM (SHRT_MAX) - 3 internal slots
KVM_ADDRESS_SPACE_NUM = 2                  # x86: normal + SMM
KVM_MEM_MAX_NR_PAGES = (1 << 31) - 1       # include/linux/kvm_host.h
U64 = (1 << 64) - 1

# The selftest geometry (set_memory_region_test.c): slot 10, 2 MiB at 0xc0000000.
GPA10 = 0xC000_0000
SIZE10 = 0x20_0000
UA = 0x1000_0000_0000                      # a page-aligned user address well below TASK_SIZE_MAX
UA10 = UA + GPA10
GPA11 = GPA10 + SIZE10                     # slot 11: one page right after slot 10
UA11 = UA + GPA11
PRESETS = ("v6.5", "v6.6")


# --------------------------------------------------------------------------------------------------
# helpers

def slot_tuple(s):
    return (s.id, s.as_id, s.base_gfn, s.npages, s.flags, s.userspace_addr)


def slots(vm, as_id=0):
    return [slot_tuple(s) for s in vm.memslots(as_id=as_id)]


def count_or_none(vm, gfn, as_id=0):
    try:
        return vm.write_track_count(gfn, as_id=as_id)
    except LookupError:
        return None


def snapshot(vm, gfns=(), gvt=None):
    """Everything a failed ioctl must leave alone: both address spaces' slots, the event log,
    write-track counts of ``gfns`` and (if attached) KVMGT's view of them."""
    state = {
        "slots": [slots(vm, a) for a in range(KVM_ADDRESS_SPACE_NUM)],
        "events": list(vm.events),
        "counts": {g: count_or_none(vm, g) for g in gfns},
    }
    if gvt is not None:
        state["ptable"] = {g: gvt.is_write_protected(g) for g in gfns}
        state["stale"] = sorted(gvt.stale_gfns())
    return state


def steps(vm, since=0):
    return [s for s, _ in vm.events[since:]]


def assert_order(seq, *names):
    """Each name occurs in ``seq`` and their first occurrences come in the given order."""
    for n in names:
        assert n in seq, f"{n!r} missing from {seq}"
    idx = [seq.index(n) for n in names]
    assert idx == sorted(idx), f"expected order {names}, got {seq}"


def errno_of(call, *args):
    with pytest.raises(OSError) as ei:
        call(*args)
    return ei.value.errno


def make_vm(preset="v6.6", **kw):
    return VM(design=Design.preset(preset), **kw)


def base_vm(preset="v6.6", **kw):
    """slot 0 (64 KiB at 0), slot 10 (2 MiB at 0xc0000000), slot 11 (one page right after it)."""
    vm = make_vm(preset, **kw)
    vm.set_user_memory_region(0, 0, 0, 16 * PAGE, UA)
    vm.set_user_memory_region(10, 0, GPA10, SIZE10, UA10)
    vm.set_user_memory_region(11, 0, GPA11, PAGE, UA11)
    return vm


@pytest.fixture(params=PRESETS)
def preset(request):
    return request.param


# --------------------------------------------------------------------------------------------------
# Part 1: validation, in the kernel's order

# (name, (slot, flags, gpa, size, ua), errno).  Each runs against base_vm() with
# fail_next_prepare(ENOMEM) armed: the errno must be the check's own (not ENOMEM), nothing may change,
# and the armed failure must still be pending afterwards (the check ran before S3).
INVALID = [
    # #1 kvm_vm_ioctl_set_memory_region: (u16)mem->slot >= KVM_USER_MEM_SLOTS
    ("slot_id_32764", (KVM_USER_MEM_SLOTS, 0, 0x1_0000_0000, PAGE, UA), errno.EINVAL),
    ("slot_id_u16_max", (0xFFFF, 0, 0x1_0000_0000, PAGE, UA), errno.EINVAL),
    ("as1_slot_id_32764", ((1 << 16) | KVM_USER_MEM_SLOTS, 0, 0x1_0000_0000, PAGE, UA), errno.EINVAL),
    # #2 check_memory_region_flags: only LOG_DIRTY_PAGES | READONLY on x86 (v6.5/v6.6; bit 2,
    # KVM_MEM_GUEST_MEMFD, only exists from 6.8 and is invalid for non-private VMs anyway)
    ("flags_bit2", (12, 1 << 2, 0x1_0000_0000, PAGE, UA), errno.EINVAL),
    ("flags_bit31", (12, 1 << 31, 0x1_0000_0000, PAGE, UA), errno.EINVAL),
    # #2 before #3: bad flags *and* unaligned size -> flags check (EINVAL either way; no state change)
    ("flags_and_unaligned_size", (12, 1 << 3, 0x1_0000_0000, PAGE + 1, UA), errno.EINVAL),
    # #3 memory_size not page aligned
    ("size_unaligned", (12, 0, 0x1_0000_0000, PAGE + 1, UA), errno.EINVAL),
    ("size_one_byte", (12, 0, 0x1_0000_0000, 1, UA), errno.EINVAL),
    # #4 guest_phys_addr not page aligned
    ("gpa_unaligned", (12, 0, 0x1_0000_0001, PAGE, UA), errno.EINVAL),
    # #5 userspace_addr not page aligned / not a user address (access_ok)
    ("ua_unaligned", (12, 0, 0x1_0000_0000, PAGE, UA + 8), errno.EINVAL),
    ("ua_kernel_half", (12, 0, 0x1_0000_0000, PAGE, 0xFFFF_8880_0000_0000), errno.EINVAL),
    # #6 as_id = slot >> 16 >= KVM_ADDRESS_SPACE_NUM (x86: 2)
    ("as_id_2", ((2 << 16) | 12, 0, 0x1_0000_0000, PAGE, UA), errno.EINVAL),
    ("as_id_u16_max", ((0xFFFF << 16) | 12, 0, 0x1_0000_0000, PAGE, UA), errno.EINVAL),
    # #7 guest_phys_addr + memory_size wraps around u64
    ("gpa_plus_size_wraps", (12, 0, (1 << 64) - PAGE, 2 * PAGE, UA), errno.EINVAL),
    # #8 memory_size >> PAGE_SHIFT > KVM_MEM_MAX_NR_PAGES (2^31 - 1)
    ("too_many_pages", (12, 0, 0x1_0000_0000, (KVM_MEM_MAX_NR_PAGES + 1) * PAGE, UA), errno.EINVAL),
    # #9 DELETE (size 0) of a slot that does not exist
    ("delete_nonexistent", (12, 0, 0, 0, 0), errno.EINVAL),
    ("delete_wrong_as", ((1 << 16) | 10, 0, GPA10, 0, UA10), errno.EINVAL),
    # #2..#6 run before the size == 0 -> DELETE branch: these do NOT delete slot 10
    ("delete_with_bad_flags", (10, 1 << 2, GPA10, 0, UA10), errno.EINVAL),
    ("delete_with_unaligned_gpa", (10, 0, GPA10 + 1, 0, UA10), errno.EINVAL),
    ("delete_with_unaligned_ua", (10, 0, GPA10, 0, UA10 + 1), errno.EINVAL),
    ("delete_with_as_id_2", ((2 << 16) | 10, 0, GPA10, 0, UA10), errno.EINVAL),
    # #11 modify: hva, size and READONLY are immutable
    ("modify_size", (10, 0, GPA10, 2 * SIZE10, UA10), errno.EINVAL),
    ("modify_size_smaller", (10, 0, GPA10, SIZE10 - PAGE, UA10), errno.EINVAL),
    ("modify_ua", (10, 0, GPA10, SIZE10, UA10 + SIZE10), errno.EINVAL),
    ("modify_set_readonly", (10, KVM_MEM_READONLY, GPA10, SIZE10, UA10), errno.EINVAL),
    # #11 runs before the MOVE classification and the overlap check
    ("move_and_set_readonly", (10, KVM_MEM_READONLY, GPA10 - PAGE, SIZE10, UA10), errno.EINVAL),
    ("move_and_resize", (10, 0, GPA10 + 0x100_0000, SIZE10 + PAGE, UA10), errno.EINVAL),
    # growing slot 10 over slot 11 is a size change: EINVAL from #11, not EEXIST from #12
    ("modify_size_into_overlap", (10, 0, GPA10, SIZE10 + PAGE, UA10), errno.EINVAL),
    # #12 kvm_check_memslot_overlap: CREATE or MOVE over another slot of the same address space
    ("create_overlap_inside", (12, 0, GPA10 + 0x10_0000, PAGE, UA), errno.EEXIST),
    ("create_overlap_front", (12, 0, GPA10 - PAGE, 2 * PAGE, UA), errno.EEXIST),
    ("create_overlap_cover", (12, 0, GPA10 - PAGE, SIZE10 + 3 * PAGE, UA), errno.EEXIST),
    ("create_overlap_slot0", (12, 0, 15 * PAGE, 2 * PAGE, UA), errno.EEXIST),
    ("move_overlap_other_slot", (11, 0, GPA10 + SIZE10 - PAGE, PAGE, UA11), errno.EEXIST),
]


@pytest.mark.parametrize("name,args,want", INVALID, ids=[c[0] for c in INVALID])
def test_validation_errno_before_prepare(preset, name, args, want):
    """__kvm_set_memory_region (v6.5/v6.6) checks #1..#12 of spec §3.1, each with its errno.

    fail_next_prepare(ENOMEM) is armed first: the result must be the check's errno, and the armed
    failure must survive (all these checks run before kvm_set_memslot reaches S3)."""
    vm = base_vm(preset)
    vm.fail_next_prepare(errno.ENOMEM)
    before = snapshot(vm)
    assert errno_of(vm.set_user_memory_region, *args) == want
    assert snapshot(vm) == before
    # still armed: the next update that reaches prepare fails with ENOMEM
    assert errno_of(vm.set_user_memory_region, 12, 0, 0x1_0000_0000, PAGE, UA) == errno.ENOMEM
    assert snapshot(vm)["slots"] == before["slots"]


def test_slot_id_boundary_32763_ok(preset):
    """kvm_vm_ioctl_set_memory_region: x86 has KVM_USER_MEM_SLOTS = 32764 user slots, so id 32763
    is the last valid one (set_memory_region_test.c:test_add_max_memory_regions)."""
    vm = make_vm(preset)
    vm.set_user_memory_region(KVM_USER_MEM_SLOTS - 1, 0, 0, PAGE, UA)
    assert slots(vm) == [(KVM_USER_MEM_SLOTS - 1, 0, 0, 1, 0, UA)]
    assert errno_of(vm.set_user_memory_region, KVM_USER_MEM_SLOTS, 0, PAGE, PAGE, UA) == errno.EINVAL


def test_as_id_in_high_bits(preset):
    """__kvm_set_memory_region: as_id = mem->slot >> 16, id = (u16)mem->slot; x86 has two address
    spaces (KVM_ADDRESS_SPACE_NUM = 2, the second is SMM)."""
    vm = make_vm(preset)
    vm.set_user_memory_region((1 << 16) | (KVM_USER_MEM_SLOTS - 1), 0, 0, PAGE, UA)
    assert slots(vm, 0) == []
    assert slots(vm, 1) == [(KVM_USER_MEM_SLOTS - 1, 1, 0, 1, 0, UA)]


def test_same_range_in_other_address_space_is_not_overlap(preset):
    """kvm_check_memslot_overlap walks only __kvm_memslots(kvm, as_id): the same gpa range (and the
    same slot id) in AS 1 does not collide with AS 0."""
    vm = base_vm(preset)
    vm.set_user_memory_region((1 << 16) | 10, 0, GPA10, SIZE10, UA10)
    vm.set_user_memory_region((1 << 16) | 12, 0, GPA11, PAGE, UA11)   # over AS0's slot 11
    assert [s[:4] for s in slots(vm, 1)] == [(10, 1, GPA10 // PAGE, SIZE10 // PAGE),
                                             (12, 1, GPA11 // PAGE, 1)]
    assert len(slots(vm, 0)) == 3
    # and deleting AS1's slot 10 leaves AS0's slot 10 alone
    vm.set_user_memory_region((1 << 16) | 10, 0, 0, 0, 0)
    assert (10, 0, GPA10 // PAGE, SIZE10 // PAGE, 0, UA10) in slots(vm, 0)
    assert [s[0] for s in slots(vm, 1)] == [12]


def test_adjacent_ranges_do_not_overlap(preset):
    """kvm_check_memslot_overlap: ranges are [base_gfn, base_gfn + npages), so a slot that ends
    where another starts (or starts where another ends) is fine."""
    vm = base_vm(preset)
    vm.set_user_memory_region(12, 0, GPA10 - PAGE, PAGE, UA)
    vm.set_user_memory_region(13, 0, GPA11 + PAGE, PAGE, UA + PAGE)
    assert [s[0] for s in slots(vm)] == [0, 12, 10, 11, 13]


def test_max_nr_pages_boundary_reaches_prepare(preset):
    """__kvm_set_memory_region: npages > KVM_MEM_MAX_NR_PAGES is EINVAL; exactly 2^31 - 1 pages
    passes that check and goes on to kvm_set_memslot (seen here by an armed ENOMEM at S3, so the
    model need not allocate an 8 TiB slot)."""
    vm = make_vm(preset)
    vm.fail_next_prepare(errno.ENOMEM)
    ok_size = KVM_MEM_MAX_NR_PAGES * PAGE
    assert errno_of(vm.set_user_memory_region, 1, 0, 0, ok_size + PAGE, UA) == errno.EINVAL
    assert errno_of(vm.set_user_memory_region, 1, 0, 0, ok_size, UA) == errno.ENOMEM
    assert slots(vm) == []


def test_flags_readonly_and_log_dirty_accepted(preset):
    """check_memory_region_flags: KVM_MEM_LOG_DIRTY_PAGES and KVM_MEM_READONLY (x86 has
    __KVM_HAVE_READONLY_MEM) are the valid flags."""
    vm = make_vm(preset)
    vm.set_user_memory_region(1, KVM_MEM_READONLY, 0, PAGE, UA)
    vm.set_user_memory_region(2, KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY, PAGE, PAGE, UA + PAGE)
    vm.set_user_memory_region(3, KVM_MEM_LOG_DIRTY_PAGES, 2 * PAGE, PAGE, UA + 2 * PAGE)
    assert [s[4] for s in slots(vm)] == [KVM_MEM_READONLY, 3, KVM_MEM_LOG_DIRTY_PAGES]


def test_delete_uses_only_the_slot_id(preset):
    """__kvm_set_memory_region: size 0 -> kvm_set_memslot(old, NULL, DELETE); the (aligned) gpa
    and hva of the request are not compared with the slot's."""
    vm = base_vm(preset)
    vm.set_user_memory_region(10, 0, 0x7000_0000, 0, UA)
    assert [s[0] for s in slots(vm)] == [0, 11]
    assert errno_of(vm.set_user_memory_region, 10, 0, GPA10, 0, UA10) == errno.EINVAL


def test_delete_readonly_slot_with_zero_flags(preset):
    """The READONLY-is-immutable rule (#11) is in the modify branch; DELETE (#9) returns before it."""
    vm = make_vm(preset)
    vm.set_user_memory_region(1, KVM_MEM_READONLY, 0, PAGE, UA)
    vm.set_user_memory_region(1, 0, 0, 0, UA)
    assert slots(vm) == []


def test_identical_request_is_a_noop(preset):
    """__kvm_set_memory_region: same base, same flags -> return 0 before kvm_set_memslot: no hooks,
    no events, and an armed prepare failure is not consumed."""
    vm = base_vm(preset)
    gvt = vm.attach_kvmgt()
    gvt.shadow(GPA10 // PAGE)
    vm.fail_next_prepare(errno.ENOMEM)
    before = snapshot(vm, [GPA10 // PAGE], gvt)
    assert vm.set_user_memory_region(10, 0, GPA10, SIZE10, UA10) is None
    assert snapshot(vm, [GPA10 // PAGE], gvt) == before
    assert errno_of(vm.set_user_memory_region, 12, 0, 0x1_0000_0000, PAGE, UA) == errno.ENOMEM


def test_flag_change_is_flags_only(preset):
    """__kvm_set_memory_region: same base, different flags -> KVM_MR_FLAGS_ONLY (a LOG_DIRTY toggle)."""
    vm = base_vm(preset)
    n = len(vm.events)
    vm.set_user_memory_region(10, KVM_MEM_LOG_DIRTY_PAGES, GPA10, SIZE10, UA10)
    assert (10, 0, GPA10 // PAGE, SIZE10 // PAGE, KVM_MEM_LOG_DIRTY_PAGES, UA10) in slots(vm)
    s = steps(vm, n)
    assert "invalidate" not in s and "commit" in s
    vm.set_user_memory_region(10, 0, GPA10, SIZE10, UA10)
    assert (10, 0, GPA10 // PAGE, SIZE10 // PAGE, 0, UA10) in slots(vm)


def test_base_change_is_move_and_may_change_flags(preset):
    """__kvm_set_memory_region: base_gfn != old->base_gfn -> KVM_MR_MOVE; the flags may change in
    the same call (e.g. LOG_DIRTY turned on)."""
    vm = base_vm(preset)
    n = len(vm.events)
    vm.set_user_memory_region(10, KVM_MEM_LOG_DIRTY_PAGES, GPA10 - PAGE, SIZE10, UA10)
    assert (10, 0, GPA10 // PAGE - 1, SIZE10 // PAGE, KVM_MEM_LOG_DIRTY_PAGES, UA10) in slots(vm)
    assert "invalidate" in steps(vm, n)


def test_move_may_overlap_its_own_old_range(preset):
    """kvm_check_memslot_overlap skips the slot being moved (tmp->id == id), so the selftest's MOVE
    to GPA - 4096 is legal."""
    vm = base_vm(preset)
    vm.set_user_memory_region(10, 0, GPA10 - PAGE, SIZE10, UA10)
    vm.set_user_memory_region(10, 0, GPA10, SIZE10, UA10)
    assert (10, 0, GPA10 // PAGE, SIZE10 // PAGE, 0, UA10) in slots(vm)


def test_memslots_ordered_by_base_gfn(preset):
    """vm.memslots(): live slots ordered by base_gfn (the kernel's gfn_tree), not by id."""
    vm = make_vm(preset)
    vm.set_user_memory_region(5, 0, 0x30_0000, PAGE, UA)
    vm.set_user_memory_region(1, 0, 0x10_0000, PAGE, UA + PAGE)
    vm.set_user_memory_region(9, 0, 0x20_0000, PAGE, UA + 2 * PAGE)
    assert [s[0] for s in slots(vm)] == [1, 9, 5]
    vm.set_user_memory_region(5, 0, 0, PAGE, UA)                      # MOVE to the front
    assert [s[0] for s in slots(vm)] == [5, 1, 9]


# -- prepare-time failures (S3), spec §3.3 / §3.4 -----------------------------------------------------

MAX_GFN = 0xF_FFFF          # a 4 GiB guest physical address space


def test_create_end_gfn_beyond_max_gfn(preset):
    """kvm_arch_prepare_memory_region: CREATE with base_gfn + npages - 1 > kvm_mmu_max_gfn() -> EINVAL
    at S3; ending exactly at max_gfn is fine."""
    vm = make_vm(preset, max_gfn=MAX_GFN)
    before = snapshot(vm)
    assert errno_of(vm.set_user_memory_region, 1, 0, (MAX_GFN + 1) * PAGE, PAGE, UA) == errno.EINVAL
    assert errno_of(vm.set_user_memory_region, 1, 0, MAX_GFN * PAGE, 2 * PAGE, UA) == errno.EINVAL
    assert snapshot(vm)["slots"] == before["slots"]
    s = steps(vm)
    assert "prepare" in s and "install" not in s and "commit" not in s
    vm.set_user_memory_region(1, 0, MAX_GFN * PAGE, PAGE, UA)
    assert slots(vm) == [(1, 0, MAX_GFN, 1, 0, UA)]


def test_move_end_gfn_beyond_max_gfn_restores_old(preset):
    """kvm_arch_prepare_memory_region: MOVE beyond kvm_mmu_max_gfn() -> EINVAL at S3, after the
    INVALID swap of S2; S4 re-activates the old slot (kvm_activate_memslot(invalid_slot, old))."""
    vm = make_vm(preset, max_gfn=MAX_GFN)
    vm.set_user_memory_region(1, 0, 0x10_0000, 4 * PAGE, UA)
    before = snapshot(vm)
    n = len(vm.events)
    assert errno_of(vm.set_user_memory_region, 1, 0, (MAX_GFN - 2) * PAGE, 4 * PAGE, UA) == errno.EINVAL
    assert snapshot(vm)["slots"] == before["slots"]
    s = steps(vm, n)
    assert_order(s, "invalidate", "prepare", "restore")
    assert "install" not in s and "commit" not in s


def test_overlap_checked_before_max_gfn(preset):
    """#12 (EEXIST, __kvm_set_memory_region) runs before kvm_arch_prepare_memory_region's max_gfn
    check (EINVAL): a CREATE that does both gets EEXIST, and never reaches prepare."""
    vm = make_vm(preset, max_gfn=MAX_GFN)
    vm.set_user_memory_region(1, 0, MAX_GFN * PAGE, PAGE, UA)
    before = snapshot(vm)
    assert errno_of(vm.set_user_memory_region, 2, 0, MAX_GFN * PAGE, 2 * PAGE, UA) == errno.EEXIST
    assert snapshot(vm) == before


def test_fail_next_prepare_create(preset):
    """kvm_set_memslot S4 for CREATE: prepare fails -> unlock, return r; the caller kfree()s new.
    No slot appears, and the injection is used up (the next CREATE succeeds)."""
    vm = base_vm(preset)
    vm.fail_next_prepare(errno.ENOMEM)
    before = snapshot(vm)
    n = len(vm.events)
    assert errno_of(vm.set_user_memory_region, 12, 0, 0x1_0000_0000, PAGE, UA) == errno.ENOMEM
    assert snapshot(vm)["slots"] == before["slots"]
    s = steps(vm, n)
    assert "prepare" in s
    for bad in ("invalidate", "install", "commit", "restore", "flush_slot", "remove_region"):
        assert bad not in s
    vm.set_user_memory_region(12, 0, 0x1_0000_0000, PAGE, UA)
    assert (12, 0, 0x10_0000, 1, 0, UA) in slots(vm)


def test_fail_next_prepare_flags_only(preset):
    """S3 for FLAGS_ONLY can fail (kvm_alloc_dirty_bitmap -ENOMEM when LOG_DIRTY is turned on);
    S4: unlock and return, the slot keeps its old flags."""
    vm = base_vm(preset)
    vm.fail_next_prepare(errno.ENOMEM)
    before = snapshot(vm)
    assert errno_of(vm.set_user_memory_region, 10, KVM_MEM_LOG_DIRTY_PAGES, GPA10, SIZE10, UA10) \
        == errno.ENOMEM
    assert snapshot(vm)["slots"] == before["slots"]
    assert "restore" not in steps(vm, len(before["events"]))


def test_fail_next_prepare_move_restores_old(preset):
    """S4 for MOVE: kvm_activate_memslot(kvm, invalid_slot, old) puts the very same old slot back."""
    vm = base_vm(preset)
    vm.fail_next_prepare(errno.ENOMEM)
    before = snapshot(vm)
    n = len(vm.events)
    assert errno_of(vm.set_user_memory_region, 10, 0, 0x1_0000_0000, SIZE10, UA10) == errno.ENOMEM
    assert snapshot(vm)["slots"] == before["slots"]
    s = steps(vm, n)
    assert_order(s, "invalidate", "prepare", "restore")
    assert "install" not in s and "commit" not in s and "free_metadata" not in s
    vm.set_user_memory_region(10, 0, 0x1_0000_0000, SIZE10, UA10)     # injection used up
    assert (10, 0, 0x10_0000, SIZE10 // PAGE, 0, UA10) in slots(vm)


@pytest.mark.parametrize("err", [errno.ENOMEM, errno.EINVAL, errno.EIO])
def test_fail_next_prepare_errno_passed_through(preset, err):
    """kvm_set_memslot returns r from kvm_prepare_memory_region unchanged."""
    vm = make_vm(preset)
    vm.fail_next_prepare(err)
    assert errno_of(vm.set_user_memory_region, 1, 0, 0, PAGE, UA) == err
    assert slots(vm) == []


def test_move_rejected_errno_is_einval_v66():
    """v6.6 kvm_arch_prepare_memory_region: MOVE && kvm_page_track_has_external_user() -> -EINVAL
    (not -EBUSY, spec §5.3), for any slot, tracked gfns or not."""
    vm = base_vm("v6.6")
    vm.attach_kvmgt()                       # attached, nothing shadowed: still rejected
    before = snapshot(vm)
    assert errno_of(vm.set_user_memory_region, 11, 0, 0x1_0000_0000, PAGE, UA11) == errno.EINVAL
    assert snapshot(vm)["slots"] == before["slots"]


def test_overlap_checked_before_move_rejection_v66():
    """#12 (EEXIST) is in __kvm_set_memory_region, the MOVE rejection is in prepare (S3)."""
    vm = base_vm("v6.6")
    vm.attach_kvmgt()
    before = snapshot(vm)
    assert errno_of(vm.set_user_memory_region, 11, 0, GPA10, PAGE, UA11) == errno.EEXIST
    assert snapshot(vm) == before


# --------------------------------------------------------------------------------------------------
# Part 2: step order of kvm_set_memslot, per change kind and design (spec §3.2, §6.1)

NEVER = {"restore", "move_rejected"}


@pytest.mark.parametrize("kvmgt", [False, True], ids=["no-kvmgt", "kvmgt"])
def test_steps_create(preset, kvmgt):
    """kvm_set_memslot CREATE: prepare (S3) -> kvm_create_memslot (S5) -> commit (S7).
    No invalidation and no page-track slot hook in either version (spec §3.4)."""
    vm = base_vm(preset)
    if kvmgt:
        vm.attach_kvmgt()
    n = len(vm.events)
    vm.set_user_memory_region(12, 0, 0x1_0000_0000, PAGE, UA)
    s = steps(vm, n)
    assert_order(s, "prepare", "install", "commit")
    for bad in ("invalidate", "flush_slot", "remove_region", "free_metadata", *NEVER):
        assert bad not in s, s


@pytest.mark.parametrize("kvmgt", [False, True], ids=["no-kvmgt", "kvmgt"])
def test_steps_flags_only(preset, kvmgt):
    """kvm_set_memslot FLAGS_ONLY: no invalidate (S2 is DELETE/MOVE only), so no slot hook; the new
    slot shares old->arch (memcpy in kvm_arch_prepare_memory_region), so no metadata is freed."""
    vm = base_vm(preset)
    if kvmgt:
        vm.attach_kvmgt()
    n = len(vm.events)
    vm.set_user_memory_region(10, KVM_MEM_LOG_DIRTY_PAGES, GPA10, SIZE10, UA10)
    s = steps(vm, n)
    assert_order(s, "prepare", "install", "commit")
    for bad in ("invalidate", "flush_slot", "remove_region", "free_metadata", *NEVER):
        assert bad not in s, s


@pytest.mark.parametrize("kvmgt", [False, True], ids=["no-kvmgt", "kvmgt"])
def test_steps_delete_v65(kvmgt):
    """v6.5 DELETE: kvm_invalidate_memslot -> kvm_arch_flush_shadow_memslot -> kvm_page_track_flush_slot
    (S2c; KVM's own mmu_sp_tracker node is always registered, so the walk is never empty, spec §1.6)
    -> prepare -> kvm_delete_memslot -> commit -> kvm_free_memslot (old metadata)."""
    vm = base_vm("v6.5")
    if kvmgt:
        vm.attach_kvmgt()
    n = len(vm.events)
    vm.set_user_memory_region(10, 0, 0, 0, 0)
    s = steps(vm, n)
    assert_order(s, "invalidate", "flush_slot", "prepare", "install", "commit", "free_metadata")
    for bad in ("remove_region", *NEVER):
        assert bad not in s, s


@pytest.mark.parametrize("kvmgt", [False, True], ids=["no-kvmgt", "kvmgt"])
def test_steps_delete_v66(kvmgt):
    """v6.6 DELETE: invalidate (kvm_mmu_zap_all_fast, no page-track hook) -> prepare -> delete ->
    kvm_arch_commit_memory_region: kvm_page_track_delete_slot -> kvm_free_memslot.
    kvm_page_track_delete_slot returns early on an empty notifier list (spec §2.1), so
    remove_region fires only with KVMGT attached, and only after commit begins."""
    vm = base_vm("v6.6")
    if kvmgt:
        vm.attach_kvmgt()
    n = len(vm.events)
    vm.set_user_memory_region(10, 0, 0, 0, 0)
    s = steps(vm, n)
    assert_order(s, "invalidate", "prepare", "install", "commit", "free_metadata")
    assert "flush_slot" not in s
    if kvmgt:
        assert_order(s, "install", "commit", "remove_region", "free_metadata")
        assert s.count("remove_region") == 1
    else:
        assert "remove_region" not in s
    for bad in NEVER:
        assert bad not in s, s


@pytest.mark.parametrize("preset_kvmgt", [("v6.5", False), ("v6.5", True), ("v6.6", False)],
                         ids=["v6.5-no-kvmgt", "v6.5-kvmgt", "v6.6-no-kvmgt"])
def test_steps_move_ok(preset_kvmgt):
    """MOVE ok: invalidate (+ v6.5 flush_slot at S2c) -> prepare (fresh metadata) -> kvm_move_memslot
    -> commit -> kvm_arch_free_memslot(old) inside kvm_arch_commit_memory_region.  No
    remove_region: v6.6 calls kvm_page_track_delete_slot for DELETE only."""
    preset, kvmgt = preset_kvmgt
    vm = base_vm(preset)
    if kvmgt:
        vm.attach_kvmgt()
    n = len(vm.events)
    vm.set_user_memory_region(10, 0, 0x1_0000_0000, SIZE10, UA10)
    s = steps(vm, n)
    if preset == "v6.5":
        assert_order(s, "invalidate", "flush_slot", "prepare", "install", "commit", "free_metadata")
    else:
        assert_order(s, "invalidate", "prepare", "install", "commit", "free_metadata")
        assert "flush_slot" not in s
    for bad in ("remove_region", *NEVER):
        assert bad not in s, s


@pytest.mark.parametrize("preset_kvmgt", [("v6.5", False), ("v6.5", True), ("v6.6", False)],
                         ids=["v6.5-no-kvmgt", "v6.5-kvmgt", "v6.6-no-kvmgt"])
def test_steps_move_failed_in_prepare(preset_kvmgt):
    """MOVE fails at S3: S2 (and in v6.5 the flush hook) already ran; S4 restores old; nothing is
    installed or committed, and the old metadata is not freed (it is live again)."""
    preset, kvmgt = preset_kvmgt
    vm = base_vm(preset)
    if kvmgt:
        vm.attach_kvmgt()
    vm.fail_next_prepare(errno.ENOMEM)
    n = len(vm.events)
    assert errno_of(vm.set_user_memory_region, 10, 0, 0x1_0000_0000, SIZE10, UA10) == errno.ENOMEM
    s = steps(vm, n)
    if preset == "v6.5":
        assert_order(s, "invalidate", "flush_slot", "prepare", "restore")
    else:
        assert_order(s, "invalidate", "prepare", "restore")
        assert "flush_slot" not in s
    for bad in ("install", "commit", "free_metadata", "remove_region", "move_rejected"):
        assert bad not in s, s


def test_steps_move_rejected_v66():
    """v6.6 MOVE with KVMGT attached: S1-S2 still run (INVALID swap and fast zap, spec §3.4 note),
    then kvm_arch_prepare_memory_region rejects (-EINVAL) and S4 restores old."""
    vm = base_vm("v6.6")
    vm.attach_kvmgt()
    n = len(vm.events)
    assert errno_of(vm.set_user_memory_region, 10, 0, 0x1_0000_0000, SIZE10, UA10) == errno.EINVAL
    s = steps(vm, n)
    assert_order(s, "invalidate", "move_rejected", "restore")
    for bad in ("install", "commit", "free_metadata", "remove_region", "flush_slot"):
        assert bad not in s, s


def test_steps_move_after_detach_v66():
    """kvm_page_track_has_external_user() is !hlist_empty(): once KVMGT unregisters, MOVE works."""
    vm = base_vm("v6.6")
    gvt = vm.attach_kvmgt()
    gvt.detach()
    n = len(vm.events)
    vm.set_user_memory_region(10, 0, 0x1_0000_0000, SIZE10, UA10)
    s = steps(vm, n)
    assert_order(s, "invalidate", "prepare", "install", "commit")
    assert "move_rejected" not in s


def test_steps_custom_design_remove_hook_move_allowed():
    """Design knobs are independent: remove hook + MOVE allowed (v6.6 without commit aa611a99adb4)
    gives an ordinary MOVE with no slot hook at all (track_remove_region is DELETE-only)."""
    d = dataclasses.replace(Design.preset("v6.6"), move="allow")
    vm = VM(design=d)
    vm.set_user_memory_region(10, 0, GPA10, SIZE10, UA10)
    vm.attach_kvmgt()
    n = len(vm.events)
    vm.set_user_memory_region(10, 0, 0x1_0000_0000, SIZE10, UA10)
    s = steps(vm, n)
    assert_order(s, "invalidate", "prepare", "install", "commit", "free_metadata")
    for bad in ("flush_slot", "remove_region", *NEVER):
        assert bad not in s, s


def test_steps_custom_design_flush_hook_move_rejected():
    """flush hook + MOVE rejected (roughly the tree between v4 patches 16 and 19): the flush hook
    fires at S2c *before* the rejection at S3."""
    d = dataclasses.replace(Design.preset("v6.5"), move="reject")
    vm = VM(design=d)
    vm.set_user_memory_region(10, 0, GPA10, SIZE10, UA10)
    vm.attach_kvmgt()
    n = len(vm.events)
    assert errno_of(vm.set_user_memory_region, 10, 0, 0x1_0000_0000, SIZE10, UA10) == errno.EINVAL
    s = steps(vm, n)
    assert_order(s, "invalidate", "flush_slot", "move_rejected", "restore")
    assert "install" not in s and "commit" not in s


# --------------------------------------------------------------------------------------------------
# Part 3: bad Python-level input
#
# The ioctl's struct kvm_userspace_memory_region has __u32 slot, __u32 flags and __u64 gpa / size /
# userspace_addr.  Values that C could not even carry (negative, >= 2^64, floats, strings, None) are
# a caller bug: a kernel reviewer accepts either a Python-level ValueError/TypeError/OverflowError
# ("this is not a u64") or OSError(EINVAL) (what the kernel returns for the value as the ioctl would
# have truncated it, e.g. a negative size seen as a huge page-aligned u64 fails #7/#8).  What is
# never acceptable is success, a different errno, a crash deep in the model, or a state change.

PY_ERRORS = (ValueError, TypeError, OverflowError)


def _assert_rejected_cleanly(vm, args, extra_gfns=()):
    before = snapshot(vm, extra_gfns)
    try:
        vm.set_user_memory_region(*args)
    except PY_ERRORS:
        pass
    except OSError as e:
        assert e.errno == errno.EINVAL, f"{args}: errno {e.errno}"
    else:
        pytest.fail(f"set_user_memory_region{args} was accepted")
    assert snapshot(vm, extra_gfns) == before


BAD_NUMBERS = [
    ("negative_size", (12, 0, 0x1_0000_0000, -PAGE, UA)),
    ("negative_size_delete_like", (10, 0, GPA10, -SIZE10, UA10)),
    ("negative_gpa", (12, 0, -PAGE, PAGE, UA)),
    ("negative_ua", (12, 0, 0x1_0000_0000, PAGE, -PAGE)),
    ("negative_slot", (-1, 0, 0x1_0000_0000, PAGE, UA)),
    ("negative_flags", (12, -1, 0x1_0000_0000, PAGE, UA)),
    ("gpa_2_64", (12, 0, 1 << 64, PAGE, UA)),
    ("size_2_64", (12, 0, 0, 1 << 64, UA)),
    ("slot_2_32_plus_12", ((1 << 32) | 12, 0, 0x1_0000_0000, PAGE, UA)),     # must not alias slot 12
    ("slot_2_32_plus_10_delete", ((1 << 32) | 10, 0, 0, 0, 0)),             # must not delete slot 10
    ("flags_2_32_plus_1", (10, (1 << 32) | 1, GPA10, SIZE10, UA10)),        # must not alias LOG_DIRTY
]


@pytest.mark.parametrize("name,args", BAD_NUMBERS, ids=[c[0] for c in BAD_NUMBERS])
def test_out_of_range_integers_rejected(preset, name, args):
    """Values outside the ioctl's __u32/__u64 fields: clear error, no state change (see above)."""
    vm = base_vm(preset)
    _assert_rejected_cleanly(vm, args)


NON_INTEGERS = [
    ("float_size", (12, 0, 0x1_0000_0000, 4096.0, UA)),
    ("float_gpa", (12, 0, float(0x1_0000_0000), PAGE, UA)),
    ("float_slot", (12.0, 0, 0x1_0000_0000, PAGE, UA)),
    ("str_size", (12, 0, 0x1_0000_0000, "4096", UA)),
    ("str_slot", ("12", 0, 0x1_0000_0000, PAGE, UA)),
    ("none_ua", (12, 0, 0x1_0000_0000, PAGE, None)),
    ("none_flags", (12, None, 0x1_0000_0000, PAGE, UA)),
    ("complex_size", (12, 0, 0x1_0000_0000, 4096 + 0j, UA)),
]


@pytest.mark.parametrize("name,args", NON_INTEGERS, ids=[c[0] for c in NON_INTEGERS])
def test_non_integers_rejected(preset, name, args):
    """The ioctl takes integers only.  Even an integral float like 4096.0 is refused: a reviewer
    expects TypeError/ValueError rather than a silent int() that would also truncate 4096.5.
    An OSError is not acceptable here: the kernel never sees such a value."""
    vm = base_vm(preset)
    before = snapshot(vm)
    with pytest.raises((TypeError, ValueError)):
        vm.set_user_memory_region(*args)
    assert snapshot(vm) == before


def test_numpy_integers_accepted(preset):
    """Integers from a NumPy trace array are integers (the replay path feeds them): accepted like int."""
    np = pytest.importorskip("numpy")
    vm = make_vm(preset)
    vm.set_user_memory_region(np.uint32(1), np.uint32(0), np.uint64(0x10_0000), np.uint64(PAGE),
                              np.uint64(UA))
    assert slots(vm) == [(1, 0, 0x100, 1, 0, UA)]


def test_bool_arguments(preset):
    """bool is an int subclass.  Either a TypeError (strict) or the int meaning (True == 1, so
    flags=True is LOG_DIRTY) is acceptable; anything else is not."""
    vm = make_vm(preset)
    try:
        vm.set_user_memory_region(1, True, 0, PAGE, UA)
    except TypeError:
        assert slots(vm) == []
    else:
        assert slots(vm) == [(1, 0, 0, 1, KVM_MEM_LOG_DIRTY_PAGES, UA)]


def test_unknown_design_names():
    """Design.preset / VM(design=...) with a name that is not a preset: ValueError, naming it."""
    with pytest.raises(ValueError, match="v6.7"):
        Design.preset("v6.7")
    with pytest.raises(ValueError):
        VM(design="v6.7")
    with pytest.raises(ValueError):
        Design(slot_hook="zap")
    with pytest.raises(ValueError):
        Design(move="ebusy")
    with pytest.raises(ValueError):
        Design(kvmgt_lock="rcu")
    with pytest.raises(ValueError):
        dataclasses.replace(Design.preset("v6.6"), move="maybe")
    with pytest.raises(TypeError):
        VM(design=42)


def test_design_is_immutable():
    """contract: Design is a frozen dataclass."""
    d = Design.preset("v6.6")
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.move = "allow"
    assert dataclasses.replace(d, move="allow").move == "allow"
    assert d.move == "reject"


def test_bad_vm_arguments():
    """VM(max_gfn=...) is kvm_mmu_max_gfn(): a non-negative integer."""
    for bad in (-1, 1.5, "0xfffff"):
        with pytest.raises((ValueError, TypeError)):
            VM(design=Design.preset("v6.6"), max_gfn=bad)


def test_fail_next_prepare_bad_errno(preset):
    """fail_next_prepare(err) takes a positive errno; 0 would mean "succeed" and a name is not a
    number.  A bad value is refused and nothing is armed."""
    vm = make_vm(preset)
    for bad in (0, -errno.ENOMEM, "ENOMEM", 12.0):
        with pytest.raises((ValueError, TypeError)):
            vm.fail_next_prepare(bad)
    vm.set_user_memory_region(1, 0, 0, PAGE, UA)            # nothing armed
    assert slots(vm) == [(1, 0, 0, 1, 0, UA)]


def test_fail_next_prepare_none_cancels(preset):
    """fail_next_prepare(None) disarms a pending injection (e.g. one a rejected MOVE left)."""
    vm = make_vm(preset)
    vm.fail_next_prepare(errno.ENOMEM)
    vm.fail_next_prepare(None)
    vm.set_user_memory_region(1, 0, 0, PAGE, UA)
    assert slots(vm) == [(1, 0, 0, 1, 0, UA)]


# -- S3 internal order (spec §3.2 S3, §3.3): dirty bitmap -> MOVE rejection -> max_gfn -> metadata ---
#
# kvm_prepare_memory_region's allocations are the only places an -ENOMEM can come from, so an armed
# fail_next_prepare(ENOMEM) stands for "the next allocation in S3 fails".  Their order relative to the
# EINVAL checks of kvm_arch_prepare_memory_region is the kernel's:
#   1. common code: kvm_alloc_dirty_bitmap(new), only if LOG_DIRTY is newly set (else reuse / NULL);
#   2. v6.6: MOVE && kvm_page_track_has_external_user() -> -EINVAL;
#   3. CREATE/MOVE: end gfn > kvm_mmu_max_gfn() -> -EINVAL;
#   4. kvm_alloc_memslot_metadata() -> -ENOMEM.

def test_s3_dirty_bitmap_before_move_rejection_v66():
    """A MOVE that newly turns on LOG_DIRTY allocates the dirty bitmap in common code before x86's
    MOVE rejection runs: the allocation failure decides (ENOMEM)."""
    vm = base_vm("v6.6")
    vm.attach_kvmgt()
    vm.fail_next_prepare(errno.ENOMEM)
    assert errno_of(vm.set_user_memory_region, 10, KVM_MEM_LOG_DIRTY_PAGES, 0x1_0000_0000, SIZE10,
                    UA10) == errno.ENOMEM
    assert (10, 0, GPA10 // PAGE, SIZE10 // PAGE, 0, UA10) in slots(vm)


def test_s3_move_rejection_before_metadata_alloc_v66():
    """Without a new dirty bitmap, the MOVE rejection (EINVAL) comes before
    kvm_alloc_memslot_metadata, so the armed allocation failure is still pending afterwards."""
    vm = base_vm("v6.6")
    gvt = vm.attach_kvmgt()
    vm.fail_next_prepare(errno.ENOMEM)
    assert errno_of(vm.set_user_memory_region, 10, 0, 0x1_0000_0000, SIZE10, UA10) == errno.EINVAL
    gvt.detach()
    assert errno_of(vm.set_user_memory_region, 10, 0, 0x1_0000_0000, SIZE10, UA10) == errno.ENOMEM


def test_s3_existing_dirty_bitmap_is_reused_v66():
    """kvm_prepare_memory_region: old already has a dirty bitmap -> new reuses it (no allocation), so
    a MOVE of a dirty-logged slot under KVMGT is rejected (EINVAL), not an allocation failure."""
    vm = base_vm("v6.6")
    vm.set_user_memory_region(10, KVM_MEM_LOG_DIRTY_PAGES, GPA10, SIZE10, UA10)
    vm.attach_kvmgt()
    vm.fail_next_prepare(errno.ENOMEM)
    assert errno_of(vm.set_user_memory_region, 10, KVM_MEM_LOG_DIRTY_PAGES, 0x1_0000_0000, SIZE10,
                    UA10) == errno.EINVAL


def test_s3_max_gfn_before_metadata_alloc(preset):
    """kvm_arch_prepare_memory_region checks the end gfn before kvm_alloc_memslot_metadata: EINVAL
    wins over an allocation failure, which stays armed; with LOG_DIRTY newly set, the dirty bitmap
    (common code) is allocated first and its failure wins."""
    vm = make_vm(preset, max_gfn=MAX_GFN)
    vm.fail_next_prepare(errno.ENOMEM)
    assert errno_of(vm.set_user_memory_region, 1, 0, MAX_GFN * PAGE, 2 * PAGE, UA) == errno.EINVAL
    assert errno_of(vm.set_user_memory_region, 1, KVM_MEM_LOG_DIRTY_PAGES, MAX_GFN * PAGE, 2 * PAGE,
                    UA) == errno.ENOMEM
    assert slots(vm) == []


# -- access_ok() on x86-64 in v6.5/v6.6 ---------------------------------------------------------------

def test_userspace_addr_access_ok_is_the_sign_bit_in_v65_v66(preset):
    """#5 access_ok(userspace_addr, memory_size).  From v6.4 (6014bc27561f "x86-64: make access_ok()
    independent of LAM", 2023-04-28, in v6.4-rc1) until USER_PTR_MAX arrived in late 2024, x86-64
    __access_ok() with a non-constant size is: sum = ptr + size; valid_user_address(sum) && sum >=
    ptr, where valid_user_address(x) is ((long)x >= 0).  So in v6.5 and v6.6 a page-aligned hva
    above TASK_SIZE_MAX but below 2^63 passes check #5 (the kernel relies on the non-canonical guard
    instead); only a range reaching bit 63 is -EINVAL.  (Before v6.4 the bound was TASK_SIZE_MAX.)"""
    vm = make_vm(preset)
    vm.set_user_memory_region(1, 0, 0, PAGE, 1 << 47)                       # non-canonical, not < 0
    vm.set_user_memory_region(2, 0, PAGE, PAGE, (1 << 63) - 2 * PAGE)       # sum = 2^63 - 4096
    assert errno_of(vm.set_user_memory_region, 3, 0, 2 * PAGE, PAGE, (1 << 63) - PAGE) == errno.EINVAL
    assert errno_of(vm.set_user_memory_region, 3, 0, 2 * PAGE, 2 * PAGE, (1 << 63) - PAGE) \
        == errno.EINVAL
    assert [s[0] for s in slots(vm)] == [1, 2]
