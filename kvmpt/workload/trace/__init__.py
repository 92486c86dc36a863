"""Import QEMU's ``kvm_set_user_memory`` trace lines as memslot operations.

QEMU prints one trace line per ``KVM_SET_USER_MEMORY_REGION(2)`` ioctl from
``kvm_set_user_memory_region()`` in ``accel/kvm/kvm-all.c``.  The event's format
string (``accel/kvm/trace-events``) changed over the years; every format seen in
public traces is accepted (``spec/workloads.md`` §1.7):

* old (QEMU 4.x .. 6.0): ``Slot#%d flags=0x%x gpa=0x.. size=0x.. ua=0x.. ret=%d``,
  where the slot field is the ioctl's ``slot``: ``as_id << 16 | id``
  (``Slot#65539`` is slot 3 of address space 1, the SMM one);
* ``AddrSpace#%d Slot#%d ...`` (QEMU 6.1+, "trace: Split address space and slot
  id in trace_kvm_set_user_memory()");
* the same plus out-of-tree ``restricted_fd=%d restricted_offset=0x..`` after
  ``ret=`` (2023 UPM/SNP development branches);
* current: ``... ua=0x.. guest_memfd=%d guest_memfd_offset=0x.. ret=%d``.

Each may carry the log backend's ``pid@sec.usec:`` prefix, which QEMU's
``scripts/tracetool/backend/log.py`` prints when ``message_with_timestamp`` is
set (always, in older QEMU).  ``ret=`` is kept as the ioctl's result
(``-errno`` on failure); lines without it (hand-trimmed quotes) get ``ret=None``.

Lines that do not contain the event, ``#`` comment lines, and lines where the
event name is followed by prose rather than ``AddrSpace#``/``Slot#``/``key=``
fields are skipped.  A line that is a record but cannot be parsed raises
``ValueError("line N: ...")`` naming what is wrong.

The CSV format of ``shared/data/qemu_vga_bar_toggle_2020.csv`` (``unix_ts, as_id,
slot, op, gpa_hex, size_hex, flags_hex``) is read by :func:`load_memslot_csv`,
and :func:`render_trace_lines` writes ops back as trace lines.

The package: :mod:`~kvmpt.workload.trace.op` (the record, its styles and limits,
rendering it), :mod:`~kvmpt.workload.trace.parse` (the line parser),
:mod:`~kvmpt.workload.trace.csvfile` (the CSV loader), :mod:`~kvmpt.workload.trace.source`
(reading a path, text, bytes or lines).  ``kvmpt.trace`` is this package.
"""
from __future__ import annotations

import os

from kvmpt.kernel.memslot import (KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY,  # noqa: F401
                                  PAGE_SIZE, U32_MAX, U64_MAX)
from kvmpt.workload.trace.csvfile import load_memslot_csv
from kvmpt.workload.trace.op import (EVENT, FD_MAX, FD_MIN, MAX_ERRNO,  # noqa: F401
                                     MAX_TIMESTAMP_S, PID_MAX_LIMIT, STYLE_ADDRSPACE,
                                     STYLE_GUEST_MEMFD, STYLE_RESTRICTED, STYLE_SLOT, STYLES,
                                     GuestRange, MemslotOp, TraceError, TraceOps,
                                     render_trace_line, render_trace_lines)
from kvmpt.workload.trace.parse import load_qemu_trace, parse_trace_line

__all__ = [
    "MemslotOp", "TraceOps", "TraceError", "load_qemu_trace", "parse_trace_line",
    "render_trace_line", "render_trace_lines", "load_memslot_csv", "load_ops", "EVENT",
    "GuestRange",
]


def load_ops(source) -> TraceOps:
    """A trace file, or a ``.csv`` file in the shared CSV format, as ops."""
    if isinstance(source, (str, os.PathLike)) and str(source).lower().endswith(".csv"):
        return load_memslot_csv(source)
    return load_qemu_trace(source)
