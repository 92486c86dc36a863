"""The model side of a live comparison: one model VM under one kernel profile.

:class:`ModelSide` applies a request to a :class:`kvmpt.kernel.vm.VM` built with the
given :class:`kvmpt.kernel.memslot.KernelProfile` and ``max_gfn`` and returns
``(errno, reason)``: what ``VM.set_user_memory_region(2)`` answers (0 on
success) and the rule that decided it.  No rule lives here: the VM decides
(``kvmpt.kernel.memslot.check_set_user_memory_region`` and the model's prepare step).
"""
from __future__ import annotations

from kvmpt.kernel.vm import DEFAULT_MAX_GFN, VM

__all__ = ["ModelSide"]


class ModelSide:
    """A fresh model VM under ``profile`` (design v6.6, no KVMGT attached: the
    design's hooks change no memslot answer without an external tracker)."""

    def __init__(self, profile, max_gfn: int = DEFAULT_MAX_GFN):
        self.profile = profile
        self.vm = VM(design="v6.6", max_gfn=max_gfn, profile=profile)

    def apply(self, req) -> tuple[int, str]:
        """A :class:`kvmpt.live.requests.Request` (REGION or REGION2)."""
        return self.apply_fields(req.slot, req.flags, req.gpa, req.size, req.ua, req.v2,
                                 req.guest_memfd_offset, req.guest_memfd)

    def apply_fields(self, slot: int, flags: int, gpa: int, size: int, ua: int,
                     v2: bool = False, guest_memfd_offset: int = 0,
                     guest_memfd: int = 0) -> tuple[int, str]:
        vm = self.vm
        nlog, nev = len(vm.op_log), len(vm.events)
        try:
            if v2:
                vm.set_user_memory_region2(slot, flags, gpa, size, ua, guest_memfd_offset,
                                           guest_memfd)
            else:
                vm.set_user_memory_region(slot, flags, gpa, size, ua)
        except OSError as exc:
            # a rule of __kvm_set_memory_region(): its reason is the message; a failure
            # inside kvm_set_memslot() (prepare): the event that recorded it
            for step, detail in reversed(vm.events[nev:]):
                if "reason" in detail:
                    return exc.errno, f"{step}: {detail['reason']}"
            msg = str(exc.strerror or exc)
            return exc.errno, msg.split(": ", 1)[-1]
        rec = vm.op_log[-1] if len(vm.op_log) > nlog else None
        return 0, (rec.change if rec is not None else "ok")
