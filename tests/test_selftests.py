"""The kernel's memslot selftests, replayed against the model (spec/kernel-semantics.md §7).

Sources: tools/testing/selftests/kvm/set_memory_region_test.c (§7.1) and
tools/testing/selftests/kvm/memslot_modification_stress_test.c (§7.3), torvalds/linux.
The model has no vCPU thread, so "the guest reads X" becomes the question the model can answer:
does a guest access at that gpa hit RAM ("direct"), or does it exit (MMIO / not present: anything but
"direct"), and which host address backs it (slot.userspace_addr + (gfn - base_gfn) * 4096).
"""
from __future__ import annotations

import errno

import pytest

from kvmpt import VM, Design

PAGE = 4096
PRESETS = ("v6.5", "v6.6")

# set_memory_region_test.c (x86)
MEM_REGION_SIZE = 0x200000
MEM_REGION_GPA = 0xC0000000
MEM_REGION_SLOT = 10
LOOPS = 10                                  # main(): loops = 10 unless argv[1]
KVM_CAP_NR_MEMSLOTS = 32764                 # x86 KVM_USER_MEM_SLOTS

HVA_BASE = 0x7000_0000_0000                 # mmap()ed host memory of the test, page aligned
HVA_CODE = HVA_BASE                         # slot 0: guest code, page tables, stack
HVA_REGION = HVA_BASE + 0x1000_0000         # the THP-backed 2 MiB region of slot 10
CODE_PAGES = 512                            # vm_create_with_one_vcpu: a few hundred pages at gpa 0


def errno_of(call, *args):
    with pytest.raises(OSError) as ei:
        call(*args)
    return ei.value.errno


def hva_of(vm, gpa, as_id=0):
    """The host address backing ``gpa`` (selftest addr_gpa2hva), or None if no slot holds it."""
    gfn = gpa // PAGE
    for s in vm.memslots(as_id=as_id):
        if s.base_gfn <= gfn < s.base_gfn + s.npages:
            return s.userspace_addr + (gfn - s.base_gfn) * PAGE + gpa % PAGE
    return None


def spawn_vm(design):
    """set_memory_region_test.c:spawn_vm -- slot 0 from vm_create_with_one_vcpu, then slot 10:
    MEM_REGION_SIZE at MEM_REGION_GPA (VM_MEM_SRC_ANONYMOUS_THP, so exactly one 2 MiB page)."""
    vm = VM(design=Design.preset(design) if isinstance(design, str) else design)
    vm.set_user_memory_region(0, 0, 0, CODE_PAGES * PAGE, HVA_CODE)
    vm.set_user_memory_region(MEM_REGION_SLOT, 0, MEM_REGION_GPA, MEM_REGION_SIZE, HVA_REGION)
    return vm


def vm_mem_region_move(vm, slot, new_gpa):
    """kvm_util.c:vm_mem_region_move -- same flags, size and hva, new gpa; asserts success."""
    s = next(s for s in vm.memslots() if s.id == slot)
    vm.set_user_memory_region(slot, s.flags, new_gpa, s.npages * PAGE, s.userspace_addr)


def vm_mem_region_delete(vm, slot):
    """kvm_util.c:vm_mem_region_delete -- KVM_SET_USER_MEMORY_REGION with memory_size 0."""
    vm.set_user_memory_region(slot, 0, 0, 0, 0)


@pytest.fixture(params=PRESETS)
def preset(request):
    return request.param


# --------------------------------------------------------------------------------------------------
# test_move_memory_region

def test_move_memory_region(preset):
    """set_memory_region_test.c:test_move_memory_region, ``LOOPS`` times, no KVMGT (the selftests
    never attach one): MOVE slot 10 to MEM_REGION_GPA - 4096 (misaligned) and back.  Both MOVEs
    must succeed (vm_mem_region_move asserts it); while moved, MEM_REGION_GPA is backed by the
    region's *second* host page ("the guest should not see 2"), and the region's old last page is
    outside every slot (MMIO)."""
    for _ in range(LOOPS):
        vm = spawn_vm(preset)
        n = len(vm.events)
        vm_mem_region_move(vm, MEM_REGION_SLOT, MEM_REGION_GPA - PAGE)
        assert "invalidate" in [s for s, _ in vm.events[n:]]     # the INVALID window: MMIO possible
        assert hva_of(vm, MEM_REGION_GPA - PAGE) == HVA_REGION
        assert hva_of(vm, MEM_REGION_GPA) == HVA_REGION + PAGE     # not the page the host wrote 2 to
        assert vm.guest_write(MEM_REGION_GPA) == "direct"
        assert vm.guest_write(MEM_REGION_GPA + MEM_REGION_SIZE - PAGE) != "direct"
        vm_mem_region_move(vm, MEM_REGION_SLOT, MEM_REGION_GPA)
        assert hva_of(vm, MEM_REGION_GPA) == HVA_REGION            # "the guest should see 1"
        assert vm.guest_write(MEM_REGION_GPA) == "direct"
        assert vm.guest_write(MEM_REGION_GPA + MEM_REGION_SIZE - PAGE) == "direct"
        assert vm.check_invariants() == []


def test_move_memory_region_inverted_check_regression():
    """Regression for aa611a99adb4 "KVM: x86: Reject memslot MOVE operations if KVMGT is attached",
    whose kvm_page_track_has_external_user() was hlist_empty() -- inverted.  On kernels with
    CONFIG_KVM_EXTERNAL_WRITE_TRACKING=y every MOVE on a VM *without* KVMGT failed: "KVM_SET_USER_
    MEMORY_REGION failed ret: -1 errno: 22 slot: 10 new_gpa: 0xbffff000" (Like Xu, 2023-08-31, thread
    "Re: [PATCH v4 16/29]"; memslot_perf_test's move-active-area failed the same way).  Fixed by
    "KVM: x86/mmu: Fix inverted check when detecting external page tracker(s)"
    (<ZPIwtfkVAyFWy41I@google.com>, spec §5.4).  The v6.6 preset includes the fix, so the selftest's
    exact MOVE must succeed without KVMGT -- and fail only once KVMGT is attached."""
    vm = spawn_vm("v6.6")
    vm_mem_region_move(vm, MEM_REGION_SLOT, 0xBFFFF000)
    assert hva_of(vm, 0xBFFFF000) == HVA_REGION
    vm_mem_region_move(vm, MEM_REGION_SLOT, MEM_REGION_GPA)
    vm.attach_kvmgt()
    assert errno_of(vm_mem_region_move, vm, MEM_REGION_SLOT, 0xBFFFF000) == errno.EINVAL


def test_move_memory_region_with_kvmgt_v66_is_einval():
    """With KVMGT really attached, v6.6 rejects the selftest's MOVE with -EINVAL (spec §7.1, §5.3):
    vm_mem_region_move's assertion would fire.  The slot stays where it was, every loop."""
    vm = spawn_vm("v6.6")
    vm.attach_kvmgt()
    before = [(s.id, s.base_gfn, s.npages, s.userspace_addr) for s in vm.memslots()]
    for _ in range(LOOPS):
        assert errno_of(vm_mem_region_move, vm, MEM_REGION_SLOT, MEM_REGION_GPA - PAGE) == errno.EINVAL
        assert [(s.id, s.base_gfn, s.npages, s.userspace_addr) for s in vm.memslots()] == before
        assert hva_of(vm, MEM_REGION_GPA) == HVA_REGION
        assert vm.guest_write(MEM_REGION_GPA + MEM_REGION_SIZE - PAGE) == "direct"


def test_move_memory_region_with_kvmgt_v65_succeeds():
    """v6.5 allowed MOVE with KVMGT attached (the flush hook fired at S2c instead)."""
    vm = spawn_vm("v6.5")
    vm.attach_kvmgt()
    for _ in range(LOOPS):
        vm_mem_region_move(vm, MEM_REGION_SLOT, MEM_REGION_GPA - PAGE)
        assert hva_of(vm, MEM_REGION_GPA) == HVA_REGION + PAGE
        vm_mem_region_move(vm, MEM_REGION_SLOT, MEM_REGION_GPA)
        assert hva_of(vm, MEM_REGION_GPA) == HVA_REGION


# --------------------------------------------------------------------------------------------------
# test_delete_memory_region

def test_delete_memory_region(preset):
    """set_memory_region_test.c:test_delete_memory_region, ``LOOPS`` times: delete slot 10 (the guest
    reads MMIO_VAL: its access exits), re-create it (the guest reads 0 from RAM again), delete it
    again, then delete slot 0 (code and page tables; the vCPU then dies with SHUTDOWN or
    INTERNAL_ERROR).  Deletes via size 0 must succeed."""
    for _ in range(LOOPS):
        vm = spawn_vm(preset)
        vm_mem_region_delete(vm, MEM_REGION_SLOT)
        assert vm.guest_write(MEM_REGION_GPA) != "direct"
        vm.set_user_memory_region(MEM_REGION_SLOT, 0, MEM_REGION_GPA, MEM_REGION_SIZE, HVA_REGION)
        assert vm.guest_write(MEM_REGION_GPA) == "direct"
        vm_mem_region_delete(vm, MEM_REGION_SLOT)
        assert vm.guest_write(MEM_REGION_GPA) != "direct"
        assert [s.id for s in vm.memslots()] == [0]                 # "only one memslot left"
        vm_mem_region_delete(vm, 0)
        assert list(vm.memslots()) == []
        assert vm.guest_write(0) != "direct"
        # and a third delete of a slot that no longer exists is the kernel's -EINVAL (#9, spec §3.1)
        assert errno_of(vm_mem_region_delete, vm, MEM_REGION_SLOT) == errno.EINVAL
        assert vm.check_invariants() == []


def test_delete_memory_region_with_kvmgt(preset):
    """The same DELETE sequence with KVMGT attached and shadowing a page of slot 10: DELETE is never
    rejected, in either version, and the deleted range leaves KVMGT's ptable."""
    vm = spawn_vm(preset)
    gvt = vm.attach_kvmgt()
    g = MEM_REGION_GPA // PAGE + 1
    gvt.shadow(g)
    vm_mem_region_delete(vm, MEM_REGION_SLOT)
    assert not gvt.is_write_protected(g)
    vm.set_user_memory_region(MEM_REGION_SLOT, 0, MEM_REGION_GPA, MEM_REGION_SIZE, HVA_REGION)
    assert vm.write_track_count(g) == 0
    vm_mem_region_delete(vm, MEM_REGION_SLOT)
    vm_mem_region_delete(vm, 0)
    assert list(vm.memslots()) == []


# --------------------------------------------------------------------------------------------------
# test_zero_memory_regions

def test_zero_memory_regions(preset):
    """set_memory_region_test.c:test_zero_memory_regions: a VM with no memslots at all
    (vm_create_barebones); KVM_RUN ends in KVM_EXIT_INTERNAL_ERROR because nothing is RAM.  Here:
    no slot in either address space, and no guest access anywhere is a plain RAM access."""
    vm = VM(design=Design.preset(preset))
    assert list(vm.memslots()) == [] and list(vm.memslots(as_id=1)) == []
    for gpa in (0, PAGE, 0xFFFF0, MEM_REGION_GPA, 0xFFFF_F000):
        assert vm.guest_write(gpa) != "direct"
    with pytest.raises(LookupError):
        vm.write_track_count(0)
    assert not vm.gfn_is_write_tracked(0)
    assert vm.check_invariants() == []


def test_zero_memory_regions_kvmgt_cannot_shadow(preset):
    """kvm_write_track_add_gfn / v6.5 intel_gvt_page_track_add: no memslot -> -EINVAL."""
    vm = VM(design=Design.preset(preset))
    gvt = vm.attach_kvmgt()
    assert errno_of(gvt.shadow, 0) == errno.EINVAL
    assert not gvt.stale_gfns()


# --------------------------------------------------------------------------------------------------
# test_add_max_memory_regions

def _add_slot(vm, slot):
    vm.set_user_memory_region(slot, 0, slot * MEM_REGION_SIZE, MEM_REGION_SIZE,
                              HVA_BASE + slot * MEM_REGION_SIZE)


def test_add_max_memory_regions_boundary(preset):
    """set_memory_region_test.c:test_add_max_memory_regions, cheaply: the last two slot ids at their
    selftest GPAs (slot * 2 MiB) succeed; slot = KVM_CAP_NR_MEMSLOTS (32764) -> EINVAL."""
    vm = VM(design=Design.preset(preset))
    for slot in (0, 1, KVM_CAP_NR_MEMSLOTS - 2, KVM_CAP_NR_MEMSLOTS - 1):
        _add_slot(vm, slot)
    before = [(s.id, s.base_gfn) for s in vm.memslots()]
    assert errno_of(_add_slot, vm, KVM_CAP_NR_MEMSLOTS) == errno.EINVAL
    assert [(s.id, s.base_gfn) for s in vm.memslots()] == before
    assert before[-1] == (KVM_CAP_NR_MEMSLOTS - 1, (KVM_CAP_NR_MEMSLOTS - 1) * MEM_REGION_SIZE // PAGE)


def test_add_max_memory_regions(preset):
    """set_memory_region_test.c:test_add_max_memory_regions in full: slots 0..32763, each 2 MiB at
    slot * 2 MiB with its own hva; then slot 32764 must fail with EINVAL.  (About half a second
    per preset in the model, so it is not marked slow.)"""
    vm = VM(design=Design.preset(preset))
    for slot in range(KVM_CAP_NR_MEMSLOTS):
        _add_slot(vm, slot)
    assert len(vm.memslots()) == KVM_CAP_NR_MEMSLOTS
    assert errno_of(_add_slot, vm, KVM_CAP_NR_MEMSLOTS) == errno.EINVAL
    assert len(vm.memslots()) == KVM_CAP_NR_MEMSLOTS


def test_add_many_memory_regions(preset):
    """A 1024-slot slice of test_add_max_memory_regions that always runs: all created, ordered by
    base_gfn, each gpa resolving to its own hva."""
    vm = VM(design=Design.preset(preset))
    for slot in range(1024):
        _add_slot(vm, slot)
    ms = vm.memslots()
    assert [s.id for s in ms] == list(range(1024))
    assert hva_of(vm, 1023 * MEM_REGION_SIZE + PAGE) == HVA_BASE + 1023 * MEM_REGION_SIZE + PAGE


# --------------------------------------------------------------------------------------------------
# memslot_modification_stress_test.c

DUMMY_MEMSLOT_INDEX = 7
ITERATIONS = 10                             # DEFAULT_MEMSLOT_MODIFICATION_ITERATIONS
MEMSTRESS_SLOT = 1
MEMSTRESS_BYTES = 16 << 20                  # the test's default is 1 GiB per vCPU; scaled down here
MAX_GFN = (1 << 40) - 1


def memstress_vm(design):
    """memstress: slot 0 for code, the test memory slot at the top of the guest physical address
    space (gpa = (max_gfn - guest_num_pages) pages, aligned down)."""
    vm = VM(design=Design.preset(design), max_gfn=MAX_GFN)
    vm.set_user_memory_region(0, 0, 0, CODE_PAGES * PAGE, HVA_CODE)
    npages = MEMSTRESS_BYTES // PAGE
    gpa = ((MAX_GFN - npages) * PAGE) & ~(MEM_REGION_SIZE - 1)
    vm.set_user_memory_region(MEMSTRESS_SLOT, 0, gpa, MEMSTRESS_BYTES, HVA_REGION)
    return vm, gpa


def test_memslot_modification_stress(preset):
    """memslot_modification_stress_test.c:add_remove_memslot -- ``ITERATIONS`` times, create a
    one-page memslot (index 7) just below the memstress region and delete it again; every ioctl
    must succeed, and the vCPUs' memory stays plain RAM throughout."""
    vm, gpa = memstress_vm(preset)
    dummy_gpa = gpa - PAGE
    for _ in range(ITERATIONS):
        vm.set_user_memory_region(DUMMY_MEMSLOT_INDEX, 0, dummy_gpa, PAGE, HVA_BASE + 0x2000_0000)
        assert vm.guest_write(dummy_gpa) == "direct"
        assert vm.guest_write(gpa) == "direct"
        vm_mem_region_delete(vm, DUMMY_MEMSLOT_INDEX)
        assert vm.guest_write(dummy_gpa) != "direct"
        assert vm.guest_write(gpa + MEMSTRESS_BYTES - PAGE) == "direct"
    assert [s.id for s in vm.memslots()] == [0, MEMSTRESS_SLOT]
    assert vm.check_invariants() == []


def test_memslot_modification_stress_with_kvmgt(preset):
    """The same create/delete loop with KVMGT shadowing pages of the memstress region: neither v6.5's
    flush hook nor v6.6's remove hook touches gfns outside the deleted one-page slot."""
    vm, gpa = memstress_vm(preset)
    gvt = vm.attach_kvmgt()
    shadowed = [gpa // PAGE, gpa // PAGE + 17]
    for g in shadowed:
        gvt.shadow(g)
    dummy_gpa = gpa - PAGE
    for _ in range(ITERATIONS):
        vm.set_user_memory_region(DUMMY_MEMSLOT_INDEX, 0, dummy_gpa, PAGE, HVA_BASE + 0x2000_0000)
        vm_mem_region_delete(vm, DUMMY_MEMSLOT_INDEX)
        for g in shadowed:
            assert vm.write_track_count(g) == 1
            assert gvt.is_write_protected(g)
            assert vm.guest_write(g * PAGE) == "handled"
    assert not gvt.stale_gfns()
    assert vm.check_invariants() == []


# --------------------------------------------------------------------------------------------------
# memslot_perf_test.c: "move active area" (spec §7.2)

PERF_MEM_GPA = 0x10000000                   # MEM_GPA
PERF_MEM_SIZE = (512 << 20) + (64 << 10)    # MEM_SIZE = 512 MiB + MEM_EXTRA_SIZE (64 KiB in 2023)


def perf_vm(design, max_mem_slots=KVM_CAP_NR_MEMSLOTS):
    """memslot_perf_test.c:prepare_vm -- slots 1..max_mem_slots-1 split MEM_SIZE evenly from MEM_GPA;
    the last slot also takes the remainder."""
    vm = VM(design=Design.preset(design))
    vm.set_user_memory_region(0, 0, 0, CODE_PAGES * PAGE, HVA_CODE)
    nslots = max_mem_slots - 1
    mempages = PERF_MEM_SIZE // PAGE
    per, rem = divmod(mempages, nslots)
    gpa = PERF_MEM_GPA
    for slot in range(1, max_mem_slots):
        npages = per + (rem if slot == max_mem_slots - 1 else 0)
        vm.set_user_memory_region(slot, 0, gpa, npages * PAGE, HVA_BASE + gpa)
        gpa += npages * PAGE
    return vm, nslots


def test_memslot_perf_move_active_area(preset):
    """memslot_perf_test.c:test_memslot_move_loop with 32764 memslots: the last slot (32763) is
    MOVEd to MEM_GPA + MEM_SIZE and back.  This is the ioctl Like Xu's run on the inverted-check
    tree failed ("slot 32763 new_gpa 0x30010000", errno 22, 2023-08-31, spec §7.2); with the fix and
    no KVMGT both presets must succeed."""
    vm, nslots = perf_vm(preset)
    last = next(s for s in vm.memslots() if s.id == nslots)
    src = last.base_gfn * PAGE
    assert PERF_MEM_GPA + PERF_MEM_SIZE == 0x30010000
    for _ in range(3):
        vm_mem_region_move(vm, nslots, PERF_MEM_GPA + PERF_MEM_SIZE)
        assert vm.guest_write(src) != "direct"                       # the moved half: MMIO
        assert vm.guest_write(src - PAGE) == "direct"                # the other half: RAM
        vm_mem_region_move(vm, nslots, src)
        assert vm.guest_write(src) == "direct"
    assert len(vm.memslots()) == KVM_CAP_NR_MEMSLOTS


def test_memslot_perf_move_active_area_with_kvmgt_v66():
    """The same MOVE on v6.6 with KVMGT attached: -EINVAL (spec §5.3), the slot stays put."""
    vm, nslots = perf_vm("v6.6", max_mem_slots=64)
    vm.attach_kvmgt()
    assert errno_of(vm_mem_region_move, vm, nslots, PERF_MEM_GPA + PERF_MEM_SIZE) == errno.EINVAL
    assert max(s.base_gfn + s.npages for s in vm.memslots()) * PAGE == PERF_MEM_GPA + PERF_MEM_SIZE
