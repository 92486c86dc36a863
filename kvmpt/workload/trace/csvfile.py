"""The memslot CSV of ``shared/data/qemu_vga_bar_toggle_2020.csv``
(``unix_ts, as_id, slot, op, gpa_hex, size_hex, flags_hex``): :func:`load_memslot_csv`."""
from __future__ import annotations

import csv
import io
import math
import os
import re
from typing import Iterable

from kvmpt.workload.trace.op import MAX_TIMESTAMP_S, STYLE_SLOT, MemslotOp, TraceError, TraceOps
from kvmpt.workload.trace.parse import parse_number
from kvmpt.workload.trace.source import read_source, source_name

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
    name = source_name(source)
    text = read_source(source, name)
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
            ints[key] = parse_number(where, key, row[col])
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

