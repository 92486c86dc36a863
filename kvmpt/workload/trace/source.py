"""Reading a trace or memslot CSV source: a path, text, bytes or an iterable of lines."""
from __future__ import annotations

import os

from kvmpt.infra.tomlfile import decode, read_text
from kvmpt.workload.trace.op import EVENT, TraceError


def is_path(source) -> bool:
    return isinstance(source, os.PathLike) or (
        isinstance(source, str) and "\n" not in source and
        not (EVENT in source and not os.path.exists(source)))


def read_source(source, name: str, strict: bool = True) -> str:
    """The text of a trace or CSV source (path, text, bytes or iterable of lines),
    read the one way :mod:`kvmpt.infra.tomlfile` reads every input.  A trace is a log that
    may interleave other programs' output, so bytes that are not UTF-8 become U+FFFD
    there (a record with one then fails on its field); the CSV is decoded strictly."""
    if is_path(source):
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


def source_name(source) -> str:
    if is_path(source):
        return str(source)
    return "<bytes>" if isinstance(source, (bytes, bytearray)) else \
        "<text>" if isinstance(source, str) else "<lines>"
