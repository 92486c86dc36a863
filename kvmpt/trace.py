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
"""
from __future__ import annotations

import csv
import dataclasses
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

__all__ = [
    "MemslotOp", "load_qemu_trace", "parse_trace_line", "render_trace_line",
    "render_trace_lines", "load_memslot_csv", "load_ops", "EVENT",
]

EVENT = "kvm_set_user_memory"
PAGE_SIZE = 4096

KVM_MEM_LOG_DIRTY_PAGES = 0x1
KVM_MEM_READONLY = 0x2
KVM_MEM_GUEST_MEMFD = 0x4

# Line styles, i.e. which format string printed the line.
STYLE_SLOT = "slot"            # "Slot#%d" with as_id << 16 in the slot number
STYLE_ADDRSPACE = "addrspace"  # "AddrSpace#%d Slot#%d ... ret=%d"
STYLE_RESTRICTED = "restricted"  # ... "ret=%d restricted_fd=%d restricted_offset=0x%x"
STYLE_GUEST_MEMFD = "guest_memfd"  # ... "guest_memfd=%d guest_memfd_offset=0x%x ret=%d"
STYLES = (STYLE_SLOT, STYLE_ADDRSPACE, STYLE_RESTRICTED, STYLE_GUEST_MEMFD)


@dataclass(frozen=True)
class MemslotOp:
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
    def base_gfn(self) -> int:
        return self.gpa >> 12

    @property
    def npages(self) -> int:
        return self.size >> 12

    @property
    def errno(self) -> int | None:
        """The positive errno the trace reports (0 on success), or None if unknown."""
        return None if self.ret is None else -self.ret

    def replace(self, **changes) -> "MemslotOp":
        return dataclasses.replace(self, **changes)

    def __str__(self) -> str:
        return render_trace_line(self)


# ---------------------------------------------------------------------------
# Parsing

# The event name must stand on its own: at line start, after the log prefix's
# ':' or after whitespace (ftrace's "tracing_mark_write: kvm_set_user_memory ..."),
# and be followed by whitespace.  "kvm_set_user_memory(uint16_t as, ..." in a
# trace-events file is therefore not a record.
_EVENT_RE = re.compile(r"(?:^|(?<=[\s:]))" + EVENT + r"(?=\s|$)")
_PREFIX_RE = re.compile(r"(?P<pid>\d+)@(?P<sec>\d+)\.(?P<usec>\d+):$")
_HASH_RE = re.compile(r"(?P<key>AddrSpace|Slot)#(?P<val>-?\d+)$")
_KV_RE = re.compile(r"(?P<key>[A-Za-z_]+)=(?P<val>\S*)$")

# field name -> (number base, signed?)
_HEX = {"flags", "gpa", "size", "ua", "guest_memfd_offset", "restricted_offset"}
_DEC = {"ret", "guest_memfd", "restricted_fd"}
_REQUIRED = ("flags", "gpa", "size", "ua")
_U64 = (1 << 64) - 1


def _parse_number(line_no: int, key: str, text: str) -> int:
    if key in _HEX:
        if not re.fullmatch(r"0[xX][0-9a-fA-F]+", text):
            raise ValueError(f"line {line_no}: {key}={text!r} is not a 0x-prefixed hex number")
        value = int(text, 16)
        limit = 0xFFFFFFFF if key == "flags" else _U64
        if value > limit:
            raise ValueError(f"line {line_no}: {key}={text} does not fit in "
                             f"{'32' if key == 'flags' else '64'} bits")
        return value
    if not re.fullmatch(r"-?\d+", text):
        raise ValueError(f"line {line_no}: {key}={text!r} is not a decimal integer")
    return int(text)


def parse_trace_line(line: str, lineno: int = 1) -> MemslotOp | None:
    """Parse one line: a :class:`MemslotOp`, None if the line is not a
    ``kvm_set_user_memory`` record, or ``ValueError("line N: ...")`` if it is one
    but malformed."""
    text = line.rstrip("\r\n")
    if text.lstrip().startswith("#"):
        return None                             # a comment in a saved trace file
    m = _EVENT_RE.search(text)
    if m is None:
        return None
    head, body = text[:m.start()], text[m.end():]
    first = body.split(None, 1)[0] if body.strip() else ""
    if first and not (first.startswith(("AddrSpace#", "Slot#")) or "=" in first):
        return None                             # prose that mentions the event name

    pid = timestamp = None
    head = head.strip()
    if head:
        p = _PREFIX_RE.search(head)
        if p is not None:
            pid = int(p["pid"])
            if len(p["usec"]) != 6:
                raise ValueError(f"line {lineno}: timestamp {p['sec']}.{p['usec']} "
                                 "should have 6 digits of microseconds")
            timestamp = int(p["sec"]) + int(p["usec"]) / 1e6
        # anything else before the event (ftrace task/cpu columns, a mail's
        # "> " quote) is tolerated and carries no timestamp we trust.

    tokens = body.split()
    if not tokens:
        raise ValueError(f"line {lineno}: {EVENT} with no fields")
    as_field = slot_field = None
    fields: dict[str, int] = {}
    order: list[str] = []
    for tok in tokens:
        h = _HASH_RE.match(tok)
        if h is not None:
            key, val = h["key"], int(h["val"])
            if val < 0:
                raise ValueError(f"line {lineno}: {key}#{val} is negative")
            if key == "AddrSpace":
                if as_field is not None or slot_field is not None or fields:
                    raise ValueError(f"line {lineno}: AddrSpace# must come first, once")
                as_field = val
            else:
                if slot_field is not None or fields:
                    raise ValueError(f"line {lineno}: Slot# must come before the key=value "
                                     "fields, once")
                slot_field = val
            continue
        kv = _KV_RE.match(tok)
        if kv is None:
            raise ValueError(f"line {lineno}: cannot read field {tok!r} "
                             "(expected AddrSpace#N, Slot#N or key=value)")
        key = kv["key"]
        if key not in _HEX and key not in _DEC:
            raise ValueError(f"line {lineno}: unknown field {key!r}")
        if key in fields:
            raise ValueError(f"line {lineno}: field {key!r} appears twice")
        fields[key] = _parse_number(lineno, key, kv["val"])
        order.append(key)

    if slot_field is None:
        raise ValueError(f"line {lineno}: missing Slot#")
    missing = [k for k in _REQUIRED if k not in fields]
    if missing:
        raise ValueError(f"line {lineno}: missing field{'s' if len(missing) > 1 else ''} "
                         + ", ".join(missing))
    if ("guest_memfd" in fields) != ("guest_memfd_offset" in fields):
        raise ValueError(f"line {lineno}: guest_memfd and guest_memfd_offset come together")
    if ("restricted_fd" in fields) != ("restricted_offset" in fields):
        raise ValueError(f"line {lineno}: restricted_fd and restricted_offset come together")

    if as_field is None:
        # Old format: the slot number is the ioctl's u32 slot field.
        if slot_field > 0xFFFFFFFF:
            raise ValueError(f"line {lineno}: Slot#{slot_field} does not fit in 32 bits")
        as_id, slot = slot_field >> 16, slot_field & 0xFFFF
        style = STYLE_SLOT
        if "guest_memfd" in fields or "restricted_fd" in fields:
            raise ValueError(f"line {lineno}: guest_memfd/restricted fields need AddrSpace#")
    else:
        if as_field > 0xFFFF or slot_field > 0xFFFF:
            raise ValueError(f"line {lineno}: AddrSpace#{as_field} Slot#{slot_field}: both "
                             "are 16-bit fields")
        as_id, slot = as_field, slot_field
        if "guest_memfd" in fields:
            style = STYLE_GUEST_MEMFD
        elif "restricted_fd" in fields:
            style = STYLE_RESTRICTED
        else:
            style = STYLE_ADDRSPACE

    return MemslotOp(
        as_id=as_id, slot=slot, flags=fields["flags"], gpa=fields["gpa"],
        size=fields["size"], ua=fields["ua"], ret=fields.get("ret"), lineno=lineno,
        timestamp=timestamp, pid=pid,
        guest_memfd=fields.get("guest_memfd"),
        guest_memfd_offset=fields.get("guest_memfd_offset"),
        restricted_fd=fields.get("restricted_fd"),
        restricted_offset=fields.get("restricted_offset"),
        style=style, tag="[S]",
    )


def _iter_lines(source) -> Iterator[str]:
    if isinstance(source, str) and ("\n" in source or
                                    (EVENT in source and not os.path.exists(source))):
        yield from source.splitlines()          # text, or a single trace line
    elif isinstance(source, (str, os.PathLike)):
        with open(source, encoding="utf-8", errors="replace") as fh:
            yield from fh
    elif isinstance(source, (bytes, bytearray)):
        yield from bytes(source).decode("utf-8", "replace").splitlines()
    else:
        for line in source:
            yield line.decode("utf-8", "replace") if isinstance(line, bytes) else line


def load_qemu_trace(source) -> list[MemslotOp]:
    """Read every ``kvm_set_user_memory`` record from ``source``.

    ``source`` is a path, a string holding several lines, or an iterable of
    lines.  Unrelated lines are skipped; a malformed record raises
    ``ValueError`` naming its 1-based line number and the problem.
    """
    ops = []
    for lineno, line in enumerate(_iter_lines(source), start=1):
        op = parse_trace_line(line, lineno)
        if op is not None:
            ops.append(op)
    return ops


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


# ---------------------------------------------------------------------------
# CSV (shared/data/qemu_vga_bar_toggle_2020.csv)

_CSV_COLUMNS = ("unix_ts", "as_id", "slot", "op", "gpa_hex", "size_hex", "flags_hex")


def load_memslot_csv(source, *, ua: int = 0, pid: int | None = None,
                     style: str = STYLE_SLOT) -> list[MemslotOp]:
    """Read the ``unix_ts,as_id,slot,op,gpa_hex,size_hex,flags_hex`` CSV format.

    ``#`` lines are comments.  The CSV has no ``ua`` (host address) and no
    ``ret``: every row gets the given ``ua`` and ``ret=0`` (the rows are
    ioctls that succeeded).  Rows are tagged [D]: derived from a quoted trace.
    ``op`` must agree with ``size`` (DELETE iff size 0).
    """
    if isinstance(source, (str, os.PathLike)) and Path(source).exists():
        text = Path(source).read_text(encoding="utf-8")
    elif isinstance(source, str):
        text = source
    else:
        text = "".join(source)
    rows = [(n, l) for n, l in enumerate(text.splitlines(), start=1)
            if l.strip() and not l.lstrip().startswith("#")]
    if not rows:
        raise ValueError("CSV has no header line")
    header_no, header = rows[0]
    cols = next(csv.reader(io.StringIO(header)))
    if tuple(c.strip() for c in cols) != _CSV_COLUMNS:
        raise ValueError(f"line {header_no}: CSV header must be {','.join(_CSV_COLUMNS)}")
    ops = []
    for lineno, raw in rows[1:]:
        vals = [v.strip() for v in next(csv.reader(io.StringIO(raw)))]
        if len(vals) != len(_CSV_COLUMNS):
            raise ValueError(f"line {lineno}: expected {len(_CSV_COLUMNS)} columns, "
                             f"got {len(vals)}")
        row = dict(zip(_CSV_COLUMNS, vals))
        try:
            ts = float(row["unix_ts"]) if row["unix_ts"] else None
            as_id, slot = int(row["as_id"]), int(row["slot"])
            gpa, size, flags = (int(row[k], 16) for k in ("gpa_hex", "size_hex", "flags_hex"))
        except ValueError as exc:
            raise ValueError(f"line {lineno}: {exc}") from None
        kind = row["op"].upper()
        if kind not in ("CREATE", "DELETE"):
            raise ValueError(f"line {lineno}: op {row['op']!r} is not CREATE or DELETE")
        if (kind == "DELETE") != (size == 0):
            raise ValueError(f"line {lineno}: op {kind} disagrees with size=0x{size:x}")
        if not (0 <= as_id <= 0xFFFF and 0 <= slot <= 0xFFFF):
            raise ValueError(f"line {lineno}: as_id and slot are 16-bit fields")
        ops.append(MemslotOp(as_id=as_id, slot=slot, flags=flags, gpa=gpa, size=size,
                             ua=ua, ret=0, lineno=lineno, timestamp=ts,
                             pid=pid if ts is not None else None, style=style, tag="[D]"))
    return ops


def load_ops(source) -> list[MemslotOp]:
    """A trace file, or a ``.csv`` file in the shared CSV format, as ops."""
    if isinstance(source, (str, os.PathLike)) and str(source).lower().endswith(".csv"):
        return load_memslot_csv(source)
    return load_qemu_trace(source)
