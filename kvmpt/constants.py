"""kvmpt's constants: the one home of every number more than one layer needs.

The kernel's ABI and x86 limits (cited to the header that defines each), sizes, the
host address the experiments give their slots, and the data tags of ``data/``.  The
bottom layer: it imports nothing, and the Numba kernels may import it.
"""
from __future__ import annotations

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
U64_MAX = (1 << 64) - 1
U32_MAX = (1 << 32) - 1
USHRT_MAX = 0xFFFF

# include/uapi/linux/kvm.h
KVM_MEM_LOG_DIRTY_PAGES = 1 << 0
KVM_MEM_READONLY = 1 << 1
#: Linux 6.8+: the slot's memory is a guest_memfd file (KVM_SET_USER_MEMORY_REGION2 only)
KVM_MEM_GUEST_MEMFD = 1 << 2
#: flags check_memory_region_flags() accepts on x86 in v6.5/v6.6
#: (virt/kvm/kvm_main.c; READONLY under __KVM_HAVE_READONLY_MEM, which x86 defines).
KVM_VALID_FLAGS = KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY

# arch/x86/include/asm/kvm_host.h (CONFIG_KVM_SMM=y): address space 1 is SMM.
KVM_ADDRESS_SPACE_NUM = 2
# include/linux/kvm_host.h: KVM_MEM_SLOTS_NUM = SHRT_MAX since commit 4fc096a99e01;
# x86 keeps KVM_INTERNAL_MEM_SLOTS = 3 (TSS, identity map, APIC access page).
KVM_MEM_SLOTS_NUM = 32767
KVM_INTERNAL_MEM_SLOTS = 3
KVM_USER_MEM_SLOTS = KVM_MEM_SLOTS_NUM - KVM_INTERNAL_MEM_SLOTS   # 32764
KVM_MEM_MAX_NR_PAGES = (1 << 31) - 1
#: x86-64 4-level paging: TASK_SIZE_MAX = (1 << 47) - PAGE_SIZE.  Not the access_ok()
#: bound in v6.5/v6.6, which only checks the sign bit of ptr + size (see kvmpt/kernel/memslot.py).
TASK_SIZE_MAX = (1 << 47) - PAGE_SIZE

#: huge page levels that have lpage_info on x86: PG_LEVEL_2M = 2, PG_LEVEL_1G = 3
HUGE_LEVELS = (2, 3)

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30
TIB = 1 << 40

#: the host (userspace) address experiments give their slots: page aligned, below
#: TASK_SIZE_MAX, far from 0 (as QEMU's mmap()ed guest RAM is)
USERSPACE_ADDR = 0x7F00_0000_0000

#: where a figure in data/ comes from: sourced, derived, guessed, measured, range
#: (data/README.md)
TAGS = ("[S]", "[D]", "[G]", "[M]", "[R]")

#: layout roles whose slots hold guest RAM, where KVMGT's tracked page-table pages live
RAM_ROLES = ("ram-low", "ram-high")

#: the design knobs (kvmpt.kernel.design.Design) and the values each takes
SLOT_HOOKS = ("flush", "remove")
MOVE_POLICIES = ("allow", "reject")
KVMGT_LOCKS = ("none", "mmu_lock", "gfn_lock", "vgpu_lock")
#: the knobs in field order: the columns of a sweep, the controls of the dashboard
KNOBS = ("slot_hook", "move", "kvmgt_lock", "drop_protection_on_remove")

#: what a guest write comes to (kvmpt.kernel.mmu): not trapped; trapped, no tracker took it;
#: trapped and KVMGT's handler ran; no slot or a read-only slot (an exit to the VMM)
WRITE_OUTCOMES = ("direct", "ignored", "handled", "mmio")

#: the largest seed a run takes (scenario overrides, sweep grids): numpy's SeedSequence entropy
#: as a signed 64-bit integer
SEED_MAX = 2**63 - 1
