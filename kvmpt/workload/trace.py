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
import math
import os
import re
from dataclasses import dataclass
from typing import Iterable

from kvmpt.kernel.memslot import (KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY, PAGE_SIZE,  # noqa: F401
                      U32_MAX, U64_MAX)
from kvmpt.infra.tomlfile import InputError, decode, read_text

__all__ = [
    "MemslotOp", "TraceOps", "TraceError", "load_qemu_trace", "parse_trace_line",
    "render_trace_line", "render_trace_lines", "load_memslot_csv", "load_ops", "EVENT",
]

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
# What makes a line "look like a record" although it does not parse as one: a Slot#
# field or two of the four fields every format has, in any case.
_RECORDISH_RE = re.compile(r"(?i)\bslot#-?\d|\b(?:flags|gpa|size|ua)=")
_HEX_TEXT = re.compile(r"0[xX][0-9a-fA-F]{1,64}")
_DEC_TEXT = re.compile(r"-?\d{1,64}")

# field name -> inclusive range of what the trace event's argument can hold
# (accel/kvm/trace-events: uint32_t flags, uint64_t gpa/size/ua/offset, int ret/fd)
_HEX = {"flags", "gpa", "size", "ua", "guest_memfd_offset", "restricted_offset"}
_DEC = {"ret", "guest_memfd", "restricted_fd"}
_RANGE = {"flags": (0, U32_MAX), "gpa": (0, U64_MAX), "size": (0, U64_MAX),
          "ua": (0, U64_MAX), "guest_memfd_offset": (0, U64_MAX),
          "restricted_offset": (0, U64_MAX), "ret": (-MAX_ERRNO, 0),
          "guest_memfd": (FD_MIN, FD_MAX), "restricted_fd": (FD_MIN, FD_MAX)}
_REQUIRED = ("flags", "gpa", "size", "ua")


def _looks_like_record(text: str) -> bool:
    return len(_RECORDISH_RE.findall(text)) >= 2


def _parse_number(where: str, key: str, text: str) -> int:
    if key in _HEX:
        if not _HEX_TEXT.fullmatch(text):
            raise TraceError(f"{where}: {key}: {text!r} is not a 0x-prefixed hex number")
        value = int(text, 16)
    else:
        if not _DEC_TEXT.fullmatch(text):
            raise TraceError(f"{where}: {key}: {text!r} is not a decimal integer")
        value = int(text)
    lo, hi = _RANGE[key]
    if not lo <= value <= hi:
        if key == "flags" and value > hi:
            raise TraceError(f"{where}: {key}: {text} does not fit in 32 bits")
        if hi == U64_MAX and value > hi:
            raise TraceError(f"{where}: {key}: {text} does not fit in 64 bits")
        what = {"ret": " (0 or -errno, errno <= MAX_ERRNO)", "guest_memfd": " (an fd or -1)",
                "restricted_fd": " (an fd or -1)"}.get(key, "")
        raise TraceError(f"{where}: {key}: {text} is outside {lo}..{hi}{what}")
    return value


def parse_trace_line(line: str, lineno: int = 1, source: str = "<text>") -> MemslotOp | None:
    """Parse one line: a :class:`MemslotOp`, None if the line is not a
    ``kvm_set_user_memory`` record, or :class:`TraceError` (``source:lineno: ...``) if it
    is one, or looks like one, but is malformed."""
    return _parse(line, lineno, source)[0]


def _parse(line: str, lineno: int, source: str) -> tuple[MemslotOp | None, bool]:
    """(op or None, whether the line mentions the event as prose)."""
    where = f"{source}:{lineno}"
    text = line.rstrip("\r\n")
    if lineno == 1 and text.startswith("\ufeff"):
        text = text[1:]
    if text.lstrip().startswith("#"):
        return None, False                      # a comment in a saved trace file
    m = _EVENT_RE.search(text)
    if m is None:
        if _looks_like_record(text) and re.search(r"(?i)\bslot#\d", text):
            raise TraceError(f"{where}: looks like a {EVENT} record but the event name is "
                             "missing or misspelled")
        return None, False
    head, body = text[:m.start()], text[m.end():]
    first = body.split(None, 1)[0] if body.strip() else ""
    if first and not (first.startswith(("AddrSpace#", "Slot#")) or "=" in first):
        if _looks_like_record(body):
            raise TraceError(f"{where}: cannot read field {first!r} (expected AddrSpace#N, "
                             "Slot#N or key=value)")
        return None, True                       # prose that mentions the event name

    pid = timestamp = None
    head = head.strip()
    if head:
        p = _PREFIX_RE.search(head)
        if p is not None:
            pid = int(p["pid"]) if len(p["pid"]) < 16 else PID_MAX_LIMIT + 1
            if not 0 < pid <= PID_MAX_LIMIT:
                raise TraceError(f"{where}: pid: {p['pid']} is outside 1..{PID_MAX_LIMIT}")
            if len(p["usec"]) != 6:
                raise TraceError(f"{where}: timestamp: {p['sec']}.{p['usec']} should have 6 "
                                 "digits of microseconds")
            sec = int(p["sec"]) if len(p["sec"]) < 20 else MAX_TIMESTAMP_S + 1
            if sec > MAX_TIMESTAMP_S:
                raise TraceError(f"{where}: timestamp: {p['sec']} s is past 2^40 s")
            timestamp = sec + int(p["usec"]) / 1e6
        # anything else before the event (ftrace task/cpu columns, a mail's
        # "> " quote) is tolerated and carries no timestamp we trust.

    tokens = body.split()
    if not tokens:
        raise TraceError(f"{where}: {EVENT} with no fields")
    as_field = slot_field = None
    fields: dict[str, int] = {}
    order: list[str] = []
    for tok in tokens:
        h = _HASH_RE.match(tok)
        if h is not None:
            key = h["key"]
            if not _DEC_TEXT.fullmatch(h["val"]):
                raise TraceError(f"{where}: {key}#: {h['val']!r} is not a decimal integer")
            val = int(h["val"])
            if val < 0:
                raise TraceError(f"{where}: {key}#: {val} is negative")
            if key == "AddrSpace":
                if as_field is not None or slot_field is not None or fields:
                    raise TraceError(f"{where}: AddrSpace#: must come first, once")
                as_field = val
            else:
                if slot_field is not None or fields:
                    raise TraceError(f"{where}: Slot#: must come before the key=value "
                                     "fields, once")
                slot_field = val
            continue
        kv = _KV_RE.match(tok)
        if kv is None:
            raise TraceError(f"{where}: cannot read field {tok!r} "
                             "(expected AddrSpace#N, Slot#N or key=value)")
        key = kv["key"]
        if key not in _HEX and key not in _DEC:
            raise TraceError(f"{where}: {key}: unknown field")
        if key in fields:
            raise TraceError(f"{where}: {key}: field appears twice")
        fields[key] = _parse_number(where, key, kv["val"])
        order.append(key)

    if slot_field is None:
        raise TraceError(f"{where}: missing Slot#")
    missing = [k for k in _REQUIRED if k not in fields]
    if missing:
        raise TraceError(f"{where}: missing field{'s' if len(missing) > 1 else ''} "
                         + ", ".join(missing))
    if ("guest_memfd" in fields) != ("guest_memfd_offset" in fields):
        raise TraceError(f"{where}: guest_memfd and guest_memfd_offset come together")
    if ("restricted_fd" in fields) != ("restricted_offset" in fields):
        raise TraceError(f"{where}: restricted_fd and restricted_offset come together")

    if as_field is None:
        # Old format: the slot number is the ioctl's u32 slot field.
        if slot_field > U32_MAX:
            raise TraceError(f"{where}: Slot#: {slot_field} does not fit in 32 bits")
        as_id, slot = slot_field >> 16, slot_field & 0xFFFF
        style = STYLE_SLOT
        if "guest_memfd" in fields or "restricted_fd" in fields:
            raise TraceError(f"{where}: guest_memfd/restricted fields need AddrSpace#")
    else:
        if as_field > 0xFFFF or slot_field > 0xFFFF:
            raise TraceError(f"{where}: AddrSpace#{as_field} Slot#{slot_field}: both "
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
    ), False


def _is_path(source) -> bool:
    return isinstance(source, os.PathLike) or (
        isinstance(source, str) and "\n" not in source and
        not (EVENT in source and not os.path.exists(source)))


def _text_of(source, name: str, strict: bool = True) -> str:
    """The text of a trace or CSV source (path, text, bytes or iterable of lines),
    read the one way :mod:`kvmpt.infra.tomlfile` reads every input.  A trace is a log that
    may interleave other programs' output, so bytes that are not UTF-8 become U+FFFD
    there (a record with one then fails on its field); the CSV is decoded strictly."""
    if _is_path(source):
        return read_text(source, TraceError, strict=strict)
    if isinstance(source, str):
        return decode(source.encode("utf-8", "surrogatepass"), name, TraceError)
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
        if not strict:
            data = data.decode("utf-8", "replace").encode("utf-8")
        return decode(data, name, TraceError)
    parts = []
    for line in source:
        if isinstance(line, (bytes, bytearray)):
            line = bytes(line).decode("utf-8", "replace")
        elif not isinstance(line, str):
            raise TraceError(f"{name}: lines must be str or bytes, got {type(line).__name__}")
        parts.append(line if line.endswith("\n") else line + "\n")
    return decode("".join(parts).encode("utf-8", "surrogatepass"), name, TraceError)


def _source_name(source) -> str:
    if _is_path(source):
        return str(source)
    return "<bytes>" if isinstance(source, (bytes, bytearray)) else \
        "<text>" if isinstance(source, str) else "<lines>"


def load_qemu_trace(source) -> TraceOps:
    """Read every ``kvm_set_user_memory`` record from ``source``.

    ``source`` is a path, a string holding several lines, bytes, or an iterable of
    lines.  Unrelated lines are skipped; lines that mention the event as prose are
    skipped and listed in the result's ``prose_lines``; a malformed record raises
    :class:`TraceError` (a ``ValueError``) naming the file, the line and the field.
    """
    name = _source_name(source)
    if not isinstance(source, (str, bytes, bytearray, os.PathLike)) and \
            not isinstance(source, Iterable):
        raise TraceError(f"a trace is a path, text, bytes or lines, got "
                         f"{type(source).__name__}")
    text = _text_of(source, name, strict=False)
    ops, prose = [], []
    for lineno, line in enumerate(text.split("\n"), start=1):
        op, is_prose = _parse(line, lineno, name)
        if op is not None:
            ops.append(op)
        elif is_prose:
            prose.append(lineno)
    return TraceOps(ops, name, prose)


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
                     style: str = STYLE_SLOT) -> TraceOps:
    """Read the ``unix_ts,as_id,slot,op,gpa_hex,size_hex,flags_hex`` CSV format.

    ``#`` lines are comments.  The CSV has no ``ua`` (host address) and no
    ``ret``: every row gets the given ``ua`` and ``ret=0`` (the rows are
    ioctls that succeeded).  Rows are tagged [D]: derived from a quoted trace.
    ``op`` must agree with ``size`` (DELETE iff size 0).
    """
    if not isinstance(source, (str, bytes, bytearray, os.PathLike, Iterable)):
        raise TraceError(f"a memslot CSV is a path, text, bytes or lines, got "
                         f"{type(source).__name__}")
    name = _source_name(source)
    text = _text_of(source, name)
    rows = [(n, l) for n, l in enumerate(text.split("\n"), start=1)
            if l.strip() and not l.lstrip().startswith("#")]
    if not rows:
        raise TraceError(f"{name}:1: CSV has no header line (the file has no data)")
    header_no, header = rows[0]
    cols = _csv_fields(name, header_no, header)
    if tuple(c.strip() for c in cols) != _CSV_COLUMNS:
        raise TraceError(f"{name}:{header_no}: CSV header must be {','.join(_CSV_COLUMNS)}")
    ops = []
    for lineno, raw in rows[1:]:
        where = f"{name}:{lineno}"
        vals = [v.strip() for v in _csv_fields(name, lineno, raw)]
        if len(vals) != len(_CSV_COLUMNS):
            raise TraceError(f"{where}: expected {len(_CSV_COLUMNS)} columns, got {len(vals)}")
        row = dict(zip(_CSV_COLUMNS, vals))
        ts = None
        if row["unix_ts"]:
            try:
                ts = float(row["unix_ts"])
            except ValueError:
                raise TraceError(f"{where}: unix_ts: {row['unix_ts']!r} is not a "
                                 "number") from None
            if not (math.isfinite(ts) and 0 <= ts <= MAX_TIMESTAMP_S):
                raise TraceError(f"{where}: unix_ts: {row['unix_ts']} is outside "
                                 f"0..{MAX_TIMESTAMP_S}")
        ints = {}
        for col in ("as_id", "slot"):
            if not re.fullmatch(r"\d{1,6}", row[col]) or int(row[col]) > 0xFFFF:
                raise TraceError(f"{where}: {col}: {row[col]!r} is not a 16-bit field "
                                 "(0..65535)")
            ints[col] = int(row[col])
        for col, key in (("gpa_hex", "gpa"), ("size_hex", "size"), ("flags_hex", "flags")):
            ints[key] = _parse_number(where, key, row[col])
        as_id, slot = ints["as_id"], ints["slot"]
        gpa, size, flags = ints["gpa"], ints["size"], ints["flags"]
        kind = row["op"].upper()
        if kind not in ("CREATE", "DELETE"):
            raise TraceError(f"{where}: op: {row['op']!r} is not CREATE or DELETE")
        if (kind == "DELETE") != (size == 0):
            raise TraceError(f"{where}: op: {kind} disagrees with size=0x{size:x}")
        ops.append(MemslotOp(as_id=as_id, slot=slot, flags=flags, gpa=gpa, size=size,
                             ua=ua, ret=0, lineno=lineno, timestamp=ts,
                             pid=pid if ts is not None else None, style=style, tag="[D]"))
    return TraceOps(ops, source=name)


def _csv_fields(name, lineno: int, raw: str) -> list[str]:
    try:
        return next(csv.reader(io.StringIO(raw)), [])
    except csv.Error as exc:
        raise TraceError(f"{name}:{lineno}: not a CSV row: {exc}") from None


def load_ops(source) -> TraceOps:
    """A trace file, or a ``.csv`` file in the shared CSV format, as ops."""
    if isinstance(source, (str, os.PathLike)) and str(source).lower().endswith(".csv"):
        return load_memslot_csv(source)
    return load_qemu_trace(source)
