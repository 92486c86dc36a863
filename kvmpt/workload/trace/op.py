"""The trace record: one ``KVM_SET_USER_MEMORY_REGION`` call as QEMU's
``kvm_set_user_memory`` event printed it (:class:`MemslotOp`), the event's line styles
and field limits, and the inverse of the parser: :func:`render_trace_line` prints an op
the way QEMU's format string does (``accel/kvm/trace-events``, spec/workloads.md §1.7)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterable

from kvmpt.constants import PAGE_SHIFT
from kvmpt.infra.tomlfile import InputError

EVENT = "kvm_set_user_memory"

# Line styles, i.e. which format string printed the line.
STYLE_SLOT = "slot"            # "Slot#%d" with as_id << 16 in the slot number
STYLE_ADDRSPACE = "addrspace"  # "AddrSpace#%d Slot#%d ... ret=%d"
STYLE_RESTRICTED = "restricted"  # ... "ret=%d restricted_fd=%d restricted_offset=0x%x"
STYLE_GUEST_MEMFD = "guest_memfd"  # ... "guest_memfd=%d guest_memfd_offset=0x%x ret=%d"
STYLES = (STYLE_SLOT, STYLE_ADDRSPACE, STYLE_RESTRICTED, STYLE_GUEST_MEMFD)


#: include/linux/err.h: the largest errno a syscall returns as -errno
MAX_ERRNO = 4095
#: include/linux/threads.h: PID_MAX_LIMIT on 64-bit (4 * 1024 * 1024)
PID_MAX_LIMIT = 4 * 1024 * 1024
#: the latest log-backend timestamp accepted, in seconds (2^40 s: about 34,800 years)
MAX_TIMESTAMP_S = 1 << 40
#: fds are C ints; QEMU prints -1 for "no guest_memfd"
FD_MIN, FD_MAX = -1, (1 << 31) - 1


class TraceError(InputError):
    """A trace or memslot CSV is malformed: ``FILE:LINE: field: problem``."""


class TraceOps(list):
    """The ops of a trace (a plain list of :class:`MemslotOp`), with what was skipped:
    ``prose_lines``, the line numbers of lines that mention the event but are not
    records (prose), and ``source``, the file's name (or ``<text>``)."""

    def __init__(self, ops=(), source: str = "<text>", prose_lines=()):
        super().__init__(ops)
        self.source = source
        self.prose_lines = list(prose_lines)


class GuestRange:
    """A ``gpa``/``size`` pair in frames, as ``__kvm_set_memory_region()`` computes them
    (virt/kvm/kvm_main.c, v6.6: ``base_gfn = mem->guest_phys_addr >> PAGE_SHIFT``,
    ``npages = mem->memory_size >> PAGE_SHIFT``); shared by trace ops and layout slots."""

    __slots__ = ()
    gpa: int
    size: int

    @property
    def base_gfn(self) -> int:
        return self.gpa >> PAGE_SHIFT

    @property
    def npages(self) -> int:
        return self.size >> PAGE_SHIFT


@dataclass(frozen=True)
class MemslotOp(GuestRange):
    """One ``KVM_SET_USER_MEMORY_REGION`` call as QEMU traced it.

    ``slot`` is the slot id within its address space (the low 16 bits of the
    ioctl's ``slot`` field), ``as_id`` the address space (bits 16..31).
    ``ret`` is what the ioctl returned (0, or ``-errno``), or None if the line
    did not say.  ``timestamp`` is in seconds (the log backend's
    ``sec.usec``), or None.  The guest_memfd / restricted fields are None
    unless the line carried them.  ``lineno`` is 1-based, or None for ops that
    did not come from a text trace.  ``tag`` is the source tag of the
    op ([S] traced, [D] derived, [G] guessed) when known.
    """

    as_id: int
    slot: int
    flags: int
    gpa: int
    size: int
    ua: int
    ret: int | None = None
    lineno: int | None = None
    timestamp: float | None = None
    pid: int | None = None
    guest_memfd: int | None = None
    guest_memfd_offset: int | None = None
    restricted_fd: int | None = None
    restricted_offset: int | None = None
    style: str = STYLE_ADDRSPACE
    tag: str | None = None

    @property
    def ioctl_slot(self) -> int:
        """The ioctl's ``slot`` field: ``as_id << 16 | id``
        (Documentation/virt/kvm/api.rst, KVM_SET_USER_MEMORY_REGION)."""
        return (self.as_id << 16) | self.slot

    @property
    def is_delete(self) -> bool:
        """``memory_size == 0`` asks for a DELETE (``__kvm_set_memory_region``)."""
        return self.size == 0

    @property
    def errno(self) -> int | None:
        """The positive errno the trace reports (0 on success), or None if unknown."""
        return None if self.ret is None else -self.ret

    def replace(self, **changes) -> "MemslotOp":
        return dataclasses.replace(self, **changes)

    def __str__(self) -> str:
        return render_trace_line(self)



# ---------------------------------------------------------------------------
# Rendering

def render_trace_line(op: MemslotOp, style: str | None = None,
                      prefix: bool | None = None) -> str:
    """Format ``op`` the way QEMU's trace event would.

    ``style`` picks the format string (one of ``STYLES``; default: the op's
    own).  ``prefix`` adds the log backend's ``pid@sec.usec:`` (default: when
    the op has a timestamp).  ``ret`` is left out only if it is None.
    """
    style = style or op.style
    if style not in STYLES:
        raise ValueError(f"unknown trace style {style!r}; one of {', '.join(STYLES)}")
    if style == STYLE_SLOT:
        parts = [f"Slot#{op.ioctl_slot}"]
    else:
        parts = [f"AddrSpace#{op.as_id}", f"Slot#{op.slot}"]
    parts += [f"flags=0x{op.flags:x}", f"gpa=0x{op.gpa:x}", f"size=0x{op.size:x}",
              f"ua=0x{op.ua:x}"]
    if style == STYLE_GUEST_MEMFD:
        fd = -1 if op.guest_memfd is None else op.guest_memfd
        parts += [f"guest_memfd={fd}", f"guest_memfd_offset=0x{op.guest_memfd_offset or 0:x}"]
    if op.ret is not None:
        parts.append(f"ret={op.ret}")
    if style == STYLE_RESTRICTED:
        fd = 0 if op.restricted_fd is None else op.restricted_fd
        parts += [f"restricted_fd={fd}", f"restricted_offset=0x{op.restricted_offset or 0:x}"]
    line = EVENT + " " + " ".join(parts)
    if prefix is None:
        prefix = op.timestamp is not None
    if prefix:
        if op.timestamp is None:
            raise ValueError("prefix=True needs an op with a timestamp")
        usec_total = round(op.timestamp * 1e6)
        line = f"{op.pid or 0}@{usec_total // 1_000_000}.{usec_total % 1_000_000:06d}:" + line
    return line


def render_trace_lines(ops: Iterable[MemslotOp], style: str | None = None,
                       prefix: bool | None = None) -> list[str]:
    """:func:`render_trace_line` for each op (no trailing newlines)."""
    return [render_trace_line(op, style=style, prefix=prefix) for op in ops]
