"""The ``kvm_set_user_memory`` line parser: every format of spec/workloads.md §1.7, one
line at a time (:func:`parse_trace_line`), and a whole trace (:func:`load_qemu_trace`)."""
from __future__ import annotations

import os
import re
from typing import Iterable

from kvmpt.kernel.memslot import U32_MAX, U64_MAX
from kvmpt.workload.trace.op import (EVENT, FD_MAX, FD_MIN, MAX_ERRNO, MAX_TIMESTAMP_S,
                                     PID_MAX_LIMIT, STYLE_ADDRSPACE, STYLE_GUEST_MEMFD,
                                     STYLE_RESTRICTED, STYLE_SLOT, MemslotOp, TraceError,
                                     TraceOps)
from kvmpt.workload.trace.source import read_source, source_name


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


def parse_number(where: str, key: str, text: str) -> int:
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
        fields[key] = parse_number(where, key, kv["val"])
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



def load_qemu_trace(source) -> TraceOps:
    """Read every ``kvm_set_user_memory`` record from ``source``.

    ``source`` is a path, a string holding several lines, bytes, or an iterable of
    lines.  Unrelated lines are skipped; lines that mention the event as prose are
    skipped and listed in the result's ``prose_lines``; a malformed record raises
    :class:`TraceError` (a ``ValueError``) naming the file, the line and the field.
    """
    name = source_name(source)
    if not isinstance(source, (str, bytes, bytearray, os.PathLike)) and \
            not isinstance(source, Iterable):
        raise TraceError(f"a trace is a path, text, bytes or lines, got "
                         f"{type(source).__name__}")
    text = read_source(source, name, strict=False)
    ops, prose = [], []
    for lineno, line in enumerate(text.split("\n"), start=1):
        op, is_prose = _parse(line, lineno, name)
        if op is not None:
            ops.append(op)
        elif is_prose:
            prose.append(lineno)
    return TraceOps(ops, name, prose)
