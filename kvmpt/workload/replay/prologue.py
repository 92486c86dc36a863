"""What an op is, and what a trace that starts mid-life needs first: :func:`classify` (the
change ``__kvm_set_memory_region()`` picks, decided by the model's one rules function) and
:func:`infer_prologue` (CREATEs for slots the trace deletes before creating them)."""
from __future__ import annotations

from typing import Iterable, Sequence

from kvmpt.workload.trace import MemslotOp


def classify(op: MemslotOp, vm) -> str:
    """The change ``__kvm_set_memory_region()`` picks for ``op`` against ``vm``'s slots
    now: one of ``KINDS`` (``REJECTED``: refused by the ioctl's checks, no change made).
    The decision is the model's own (:meth:`kvmpt.kernel.vm.VM.check_user_memory_region`)."""
    return vm.check_user_memory_region(op.ioctl_slot, op.flags, op.gpa, op.size,
                                       op.ua).change


def infer_prologue(ops: Sequence[MemslotOp],
                   present: Iterable[tuple[int, int]] = ()) -> list[MemslotOp]:
    """CREATEs for slots the trace deletes before it ever creates them.

    ``present`` holds the (as_id, slot) pairs that already exist.  A DELETE
    line carries the old slot's gpa and ua (QEMU's ``kvm_set_user_memory_region()``
    only zeroes ``memory_size``); the size and flags come from the trace's
    next CREATE of the same (as_id, slot) at the same gpa.  Slots for which
    no such CREATE exists are left alone (their DELETE will mismatch).
    """
    live = set(present)
    prologue: list[MemslotOp] = []
    for i, op in enumerate(ops):
        key = (op.as_id, op.slot)
        if op.size:
            live.add(key)
            continue
        if key in live:
            live.discard(key)
            continue
        if op.ret not in (0, None):
            continue
        for later in ops[i + 1:]:
            if (later.as_id, later.slot) == key and later.size and later.gpa == op.gpa:
                prologue.append(MemslotOp(as_id=op.as_id, slot=op.slot, flags=later.flags,
                                          gpa=op.gpa, size=later.size, ua=op.ua, ret=0,
                                          style=op.style, tag="[D]"))
                break
    return prologue
