"""What the running kernel is and which memslot rules it applies.

:func:`host_facts` names the machine (kernel release, CPU, whether it is itself
a guest, the KVM module, the date) and the capabilities the memslot rules
depend on.  :func:`probe_limits` measures, with one-page memslots on a fresh VM,
the two limits no capability reports: the largest gfn a slot may reach
(``kvm_mmu_max_gfn()``) and the highest end of a user range ``access_ok()``
accepts.  :func:`host_profile` turns both into a
:class:`kvmpt.memslot.KernelProfile` for the model.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
from dataclasses import replace
from pathlib import Path

from .ioctl import CAPS, Kvm

__all__ = ["host_facts", "probe_limits", "host_profile", "cpu_model", "kvm_modules"]

PAGE = 4096
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
    """The :class:`kvmpt.memslot.KernelProfile` of the running kernel: the v6.6
    profile with every field this kernel answers differently replaced by what
    it reports (capabilities) or what :func:`probe_limits` measured."""
    from ..memslot import V6_6, KernelProfile
    if facts is None:
        if kvm is None:
            with Kvm() as k:
                facts = host_facts(k)
        else:
            facts = host_facts(kvm)
    return KernelProfile.from_host(facts, base=V6_6) if hasattr(KernelProfile, "from_host") \
        else replace(V6_6)
