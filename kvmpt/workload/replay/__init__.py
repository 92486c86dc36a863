"""Replay real memslot traffic through the model (``kvmpt replay``'s engine).

:func:`replay` applies each :class:`~kvmpt.workload.trace.MemslotOp` through
``vm.set_user_memory_region()`` (the ioctl's ``slot`` field carries ``as_id``
in bits 16..31, as QEMU's ``kvm_set_user_memory_region()`` passes it), compares
the errno with the trace's ``ret=`` and reports:

* op counts by kind (``enum kvm_mr_change``: CREATE, DELETE, MOVE, FLAGS_ONLY,
  plus NOOP and REJECTED), decided by the model's one rules function
  (``kvmpt.kernel.memslot.check_set_user_memory_region``, mirroring
  ``__kvm_set_memory_region()``, spec/kernel-semantics.md §3.1) against the VM's
  slots just before the op;
* mismatches between the model's errno and the trace's;
* the final layout per address space;
* with KVMGT attached and a tracked set of gfns placed in RAM, what the design
  does to it: the page-track hook calls with their primitive-op counts (and
  cycles, given a cost table), the work wasted, and the gfns GVT still shadows
  whose writes no longer reach its handler ("stale"), with the ops that made
  them stale.  Address-space-1 (SMM) DELETEs of a boot trace are the case to
  watch (workloads.md §2.5).

A trace that starts mid-life (its first op on a slot is a DELETE, as in the
2020 VGA toggle trace) gets an inferred prologue: the slot is created first
from the DELETE line's gpa/ua and the size/flags of the trace's next CREATE of
it (``infer_missing=True``).

The package: :mod:`~kvmpt.workload.replay.prologue` (classifying an op, inferring a
prologue), :mod:`~kvmpt.workload.replay.tracked` (placing the tracked set),
:mod:`~kvmpt.workload.replay.result` (:class:`OpResult`, :class:`ReplayResult`),
:mod:`~kvmpt.workload.replay.loop` (:func:`replay`, :func:`replay_designs`, ``kvmpt.VM``).
"""
from __future__ import annotations

from kvmpt.workload.replay.loop import VM, parse_design, replay, replay_designs  # noqa: F401
from kvmpt.workload.replay.prologue import classify, infer_prologue
from kvmpt.workload.replay.result import KINDS, WORK_FIELDS, OpResult, ReplayResult
from kvmpt.workload.replay.tracked import (BIG_SLOT_PAGES, TrackedSet,  # noqa: F401
                                           auto_track_point, place_tracked)

__all__ = [
    "KINDS", "WORK_FIELDS", "OpResult", "ReplayResult", "TrackedSet", "classify",
    "infer_prologue", "auto_track_point", "place_tracked", "replay", "replay_designs",
]
