"""The model side of a live comparison: one model VM under one kernel profile.

:class:`ModelSide` applies a request to a :class:`kvmpt.vm.VM` built with the
given :class:`kvmpt.memslot.KernelProfile` and returns ``(errno, reason)``: the
errno ``VM.set_user_memory_region`` gives (0 on success) and the rule that
decided it.  No rule lives here: the VM decides.
"""
from __future__ import annotations

import errno as errno_mod

from ..vm import VM

__all__ = ["ModelSide"]


class ModelSide:
    """A fresh model VM under ``profile`` (v6.6 design: no KVMGT is attached, so
    the design's hooks do not change any memslot answer)."""

    def __init__(self, profile):
        self.profile = profile
        self.vm = VM(design="v6.6", profile=profile)

    def apply(self, req) -> tuple[int, str]:
        """A :class:`kvmpt.live.requests.Request` (REGION or REGION2)."""
        return self.apply_fields(req.slot, req.flags, req.gpa, req.size, req.ua, req.v2)

    def apply_fields(self, slot: int, flags: int, gpa: int, size: int, ua: int,
                     v2: bool = False) -> tuple[int, str]:
        vm = self.vm
        before = len(vm.op_log)
        try:
            if v2:
                vm.set_user_memory_region2(slot, flags, gpa, size, ua)
            else:
                vm.set_user_memory_region(slot, flags, gpa, size, ua)
        except OSError as exc:
            return exc.errno or errno_mod.EIO, _reason(exc)
        rec = vm.op_log[-1] if len(vm.op_log) > before else None
        return 0, (rec.change if rec is not None and rec.change else "ok")


def _reason(exc: OSError) -> str:
    text = exc.strerror or str(exc)
    return text.split(": ", 1)[1] if text.startswith("KVM_SET_USER_MEMORY_REGION") \
        and ": " in text else text
