"""virt/kvm/kvm_main.c: ``KVM_SET_USER_MEMORY_REGION`` and ``kvm_set_memslot()``.

:class:`KvmMain` is the part of :class:`kvmpt.kernel.vm.VM` that mirrors kvm_main.c: the
ioctl's checks (one function, :func:`kvmpt.kernel.memslot.check_set_user_memory_region`)
and the S1..S8 flow of ``kvm_set_memslot()`` (spec/kernel-semantics.md section 3.2),
which calls the x86 arch hooks of :class:`kvmpt.kernel.x86.X86`.  Every step records an
event ``(step, detail)`` in ``vm.events`` with the kernel step label.
"""
from __future__ import annotations

import errno
from dataclasses import dataclass, field

import numpy as np

from kvmpt.kernel.memslot import (CREATE, DELETE, MOVE, NOOP, Decision, MemorySlot,
                      check_set_user_memory_region)
from kvmpt.kernel.work import HookCall


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


class KvmMain:
    """``KVM_SET_USER_MEMORY_REGION`` (kvm_main.c), mixed into :class:`kvmpt.kernel.vm.VM`."""

    def _event(self, step: str, S: str, **detail) -> None:
        self.events.append((step, {"op": self._op, "S": S, **detail}))

    def check_user_memory_region(self, slot: int, flags: int, guest_phys_addr: int,
                                 memory_size: int, userspace_addr: int,
                                 ioctl: str = "REGION", guest_memfd_offset: int = 0,
                                 guest_memfd: int = 0) -> Decision:
        """What ``__kvm_set_memory_region()`` would decide for this request now (the
        checks of :func:`kvmpt.kernel.memslot.check_set_user_memory_region` under this VM's
        ``profile``), without doing it: a :class:`kvmpt.kernel.memslot.Decision`."""
        return check_set_user_memory_region(
            self.profile, self._as, _u("slot", slot, 32), _u("flags", flags, 32),
            _u("guest_phys_addr", guest_phys_addr, 64), _u("memory_size", memory_size, 64),
            _u("userspace_addr", userspace_addr, 64), self.nr_memslot_pages, ioctl=ioctl,
            guest_memfd_offset=_u("guest_memfd_offset", guest_memfd_offset, 64),
            guest_memfd=_u("guest_memfd", guest_memfd, 32))

    def set_user_memory_region2(self, slot: int, flags: int, guest_phys_addr: int,
                                memory_size: int, userspace_addr: int,
                                guest_memfd_offset: int = 0, guest_memfd: int = 0) -> None:
        """KVM_SET_USER_MEMORY_REGION2 (Linux 6.8+): the same flow as
        :meth:`set_user_memory_region` under the REGION2 rules of ``profile``
        (-ENOTTY where the kernel has no such ioctl).  ``guest_memfd`` and its offset
        are read only with ``KVM_MEM_GUEST_MEMFD`` (see
        :func:`kvmpt.kernel.memslot.check_set_user_memory_region`)."""
        return self.set_user_memory_region(slot, flags, guest_phys_addr, memory_size,
                                           userspace_addr, _ioctl="REGION2",
                                           _guest_memfd=(guest_memfd_offset, guest_memfd))

    def set_user_memory_region(self, slot: int, flags: int, guest_phys_addr: int,
                               memory_size: int, userspace_addr: int,
                               _ioctl: str = "REGION", _guest_memfd=(0, 0)) -> None:
        """KVM_SET_USER_MEMORY_REGION.  Mirrors ``kvm_vm_ioctl_set_memory_region()`` and
        ``__kvm_set_memory_region()`` (virt/kvm/kvm_main.c, v6.5/v6.6): the checks of
        spec section 3.1 in the kernel's order, then ``kvm_set_memslot()``.

        Returns None; raises OSError with the kernel's errno.  A request rejected
        before ``kvm_set_memslot()`` changes no state and records no event.
        """
        d = self.check_user_memory_region(slot, flags, guest_phys_addr, memory_size,
                                          userspace_addr, ioctl=_ioctl,
                                          guest_memfd_offset=_guest_memfd[0],
                                          guest_memfd=_guest_memfd[1])
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
