"""What the running kernel is and which memslot rules it applies.

:func:`host_facts` names the machine (kernel release, CPU, whether it is itself
a guest, the KVM module, the date) and the capabilities the memslot rules
depend on.  :func:`probe_limits` measures, with one-page memslots on a fresh VM,
the two limits no capability reports: the largest gfn a slot may reach
(``kvm_mmu_max_gfn()``) and the highest end of a user range ``access_ok()``
accepts.  :func:`host_profile` turns both into a
:class:`kvmpt.kernel.memslot.KernelProfile` for the model.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
from dataclasses import replace
from pathlib import Path

from kvmpt.constants import PAGE_SIZE as PAGE
from kvmpt.live.ioctl import CAPS, Kvm

__all__ = ["host_facts", "probe_limits", "host_profile", "cpu_model", "kvm_modules"]

_UA = 0x1000_0000_0000


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_model() -> tuple[str, bool]:
    """(``model name`` of the first CPU, whether the ``hypervisor`` flag is set,
    i.e. this kernel itself runs in a VM and KVM here is nested)."""
    model, nested = platform.processor() or "unknown CPU", False
    for line in _cpuinfo().splitlines():
        key, _, val = line.partition(":")
        key = key.strip()
        if key == "model name" and model in ("unknown CPU", platform.processor()):
            model = val.strip()
        elif key == "flags":
            nested = "hypervisor" in val.split()
            break
    return model, nested


def kvm_modules() -> str:
    """The loaded KVM vendor module(s): kvm_intel, kvm_amd, or another (e.g. kvm_pvm)."""
    try:
        mods = sorted(m for m in os.listdir("/sys/module") if m.startswith("kvm_"))
    except OSError:
        return "unknown"
    return ",".join(mods) or "kvm (built in)"


def _probe_max(ok, lo: int, hi: int) -> int:
    """Largest x in [lo, hi] with ok(x), given ok(lo) and ok monotone (binary search)."""
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def probe_limits(kvm: Kvm) -> dict:
    """Measure on a fresh VM (one-page slots, created and deleted again):

    * ``max_gfn``: the largest gfn a slot may end at.  x86
      ``kvm_arch_prepare_memory_region()`` rejects a CREATE whose last gfn is
      above ``kvm_mmu_max_gfn()`` with -EINVAL (arch/x86/kvm/x86.c; mmu.h).
    * ``user_ptr_max``: the highest ``userspace_addr + memory_size`` that
      ``access_ok()`` accepts (x86-64 ``__access_ok()``: ``valid_user_address(sum)``).
    """
    with kvm.create_vm() as vm:
        def gfn_ok(gfn: int) -> bool:
            err = vm.set_user_memory_region(0, 0, gfn * PAGE, PAGE, _UA)
            if not err:
                vm.set_user_memory_region(0, 0, gfn * PAGE, 0, _UA)
            return not err

        def end_ok(page: int) -> bool:
            ua = page * PAGE - PAGE
            err = vm.set_user_memory_region(1, 0, 0, PAGE, ua)
            if not err:
                vm.set_user_memory_region(1, 0, 0, 0, ua)
            return not err

        max_gfn = _probe_max(gfn_ok, 0, (1 << 52) - 1)
        user_ptr_max = _probe_max(end_ok, _UA // PAGE, (1 << 52) - 1) * PAGE
    return {"max_gfn": max_gfn, "user_ptr_max": user_ptr_max}


def host_facts(kvm: Kvm, probe: bool = True) -> dict:
    """The machine and its KVM: a flat dict of strings, ints and bools (it goes into
    measurement files and figure labels as is)."""
    model, nested = cpu_model()
    facts = {
        "machine": os.uname().nodename,
        "kernel": os.uname().release,
        "arch": os.uname().machine,
        "cpu": model,
        "nested": nested,
        "kvm_module": kvm_modules(),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d"),
        "api_version": kvm.api_version(),
    }
    with kvm.create_vm() as vm:
        for name in CAPS:
            facts[name.lower()] = vm.check_extension(name)
    if probe:
        facts.update(probe_limits(kvm))
    return facts


def host_profile(kvm: Kvm | None = None, facts: dict | None = None):
    """The :class:`kvmpt.kernel.memslot.KernelProfile` of the running kernel: ``V6_6`` with
    each rule this kernel answers differently replaced by what it reports or what
    :func:`probe_limits` measured; ``profile.sources`` says which for every field."""
    from kvmpt.kernel.memslot import KVM_MEM_GUEST_MEMFD, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY, V6_6
    if facts is None:
        if kvm is None:
            with Kvm() as k:
                facts = host_facts(k)
        else:
            facts = host_facts(kvm)
    flags = KVM_MEM_LOG_DIRTY_PAGES
    if facts["kvm_cap_readonly_mem"]:
        flags |= KVM_MEM_READONLY
    if facts["kvm_cap_guest_memfd"]:          # asked on the VM fd: for this VM type
        flags |= KVM_MEM_GUEST_MEMFD
    where = f"on {facts['kernel']} ({facts['date']})"
    region2 = bool(facts["kvm_cap_user_memory2"])
    sign_bit = facts["user_ptr_max"] >= (1 << 63) - PAGE
    return replace(
        V6_6,
        name=f"host {facts['kernel']}",
        # KVM_CAP_NR_MEMSLOTS returns KVM_USER_MEM_SLOTS (virt/kvm/kvm_main.c)
        user_mem_slots=facts["kvm_cap_nr_memslots"],
        # KVM_CAP_MULTI_ADDRESS_SPACE: the number of address spaces, or 0 when the kernel
        # has one (the case is compiled only for KVM_MAX_NR_ADDRESS_SPACES > 1)
        address_spaces=max(1, facts["kvm_cap_multi_address_space"]),
        # check_memory_region_flags(): READONLY with kvm_arch_has_readonly_mem(), GUEST_MEMFD
        # where the VM type supports guest_memfd (KVM_CAP_GUEST_MEMFD asked on the VM)
        valid_flags=flags,
        # the V1 flag check came with KVM_SET_USER_MEMORY_REGION2 (6.8)
        v1_flags=KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY if region2 else None,
        # a kernel that accepts user ranges up to the sign bit has the v6.6 rule
        access_ok="sign-bit" if sign_bit else "user-ptr-max",
        user_ptr_max=None if sign_bit else facts["user_ptr_max"],
        user_memory2=region2,
        sources=(
            ("user_mem_slots", f"[M] KVM_CHECK_EXTENSION(KVM_CAP_NR_MEMSLOTS) {where}"),
            ("address_spaces", f"[M] KVM_CHECK_EXTENSION(KVM_CAP_MULTI_ADDRESS_SPACE) = "
                               f"{facts['kvm_cap_multi_address_space']} {where}"),
            ("valid_flags", f"[M] KVM_CAP_READONLY_MEM, KVM_CAP_GUEST_MEMFD (VM fd) {where}; "
                            "[S] check_memory_region_flags (virt/kvm/kvm_main.c, 6.8+)"),
            ("v1_flags", "[S] KVM_SET_USER_MEMORY_REGION_V1_FLAGS (virt/kvm/kvm_main.c, 6.8+)"),
            ("access_ok", "[S] x86-64 __access_ok(): valid_user_address(ptr + size) compares "
                          "with runtime_const_ptr(USER_PTR_MAX) (arch/x86/include/asm/"
                          "uaccess_64.h, 6.12+)"),
            ("user_ptr_max", f"[M] largest accepted userspace_addr + memory_size, binary "
                             f"search with one-page slots {where}"),
            ("user_memory2", f"[M] KVM_CHECK_EXTENSION(KVM_CAP_USER_MEMORY2) {where}"),
        ),
    )
