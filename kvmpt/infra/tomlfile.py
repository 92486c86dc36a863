"""Reading kvmpt's input files: the one place that turns bytes into checked values.

Every loader (layouts, scenarios, costs, sweep grids, QEMU traces, the memslot
CSV) reads its file through :func:`read_text`, so all of them

* decode UTF-8 strictly, drop a leading byte-order mark and accept CRLF line ends;
* report a bad byte as ``file:line: not valid UTF-8 ...`` in the loader's own error
  type (a subclass of :class:`InputError`, itself a ``ValueError``);
* name the file and the line in every error: ``file:line: [table] field 'key': problem``
  for TOML (``tomllib`` gives values without positions; :class:`TomlLocator` finds
  the line of a table or key by scanning the text), ``file:line: field: problem`` for
  line-oriented formats.

:func:`check_table` validates one TOML table against a declared schema
(:class:`Field`: type, range, finite numbers, allowed values, known keys) before
anything is built from it, with msgspec (a Struct declared from the schema; what msgspec
cannot hold is listed above :class:`_WideInt`); :func:`number_problem` is the numeric
check of the line-oriented loaders and of integer bounds beyond int64 (integers are
compared exactly, so ``2**80`` is "outside the range", not an ``OverflowError``).
"""
from __future__ import annotations

import functools
import math
import os
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

import msgspec

#: the byte-order mark some editors put at the start of a UTF-8 file
BOM = "\ufeff"


class InputError(ValueError):
    """Bad input: the message names the file, the line (when known), the field and the
    problem.  Each loader raises its own subclass (``LayoutError``, ``TraceError``, ...)."""


def decode(data: bytes, name, error=InputError) -> str:
    """UTF-8 text of ``data`` with a leading BOM dropped and CRLF / CR turned into LF;
    a byte that is not UTF-8 raises ``error("name:line: not valid UTF-8 ...")``."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise error(f"{name}:{line}: not valid UTF-8 (byte 0x{data[exc.start]:02x} at "
                    f"column {col}: {exc.reason})") from None
    if text.startswith(BOM):
        text = text[1:]
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def read_bytes(path, error=InputError) -> bytes:
    """The bytes of the file at ``path``; a file that cannot be read raises
    ``error("path: no such file")`` or ``error("path: cannot read: ...")``."""
    if not isinstance(path, (str, os.PathLike)):
        raise error(f"a file is a path (str or os.PathLike), got {type(path).__name__} {path!r}")
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:     # ValueError: a NUL in the path
        raise error(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None


def read_text(path, error=InputError, strict: bool = True) -> str:
    """The text of the file at ``path``, as :func:`decode` gives it.  ``strict=False``
    turns bytes that are not UTF-8 into U+FFFD instead of raising (for logs that
    interleave other programs' output)."""
    data = read_bytes(path, error)
    if not strict:
        data = data.decode("utf-8", "replace").encode("utf-8")
    return decode(data, path, error)


class TomlLocator:
    """Line numbers of tables and keys in a TOML text, found by scanning it.

    ``tomllib`` returns plain values without positions, so each ``key =`` line
    is attributed to the table header above it: ``[a.b]`` gives the table
    path ``("a", "b")``, the n-th ``[[x]]`` gives ``("x", n)``.  Keys inside
    multi-line strings or arrays are not confused with assignments because
    only lines outside such constructs are scanned.
    """

    _HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    _KEY = re.compile(r'^\s*("[^"]*"|[A-Za-z0-9_\-]+)\s*=')

    def __init__(self, text: str):
        self.tables: dict[tuple, int] = {}
        self.keys: dict[tuple, int] = {}
        counts: dict[str, int] = {}
        current: tuple = ()
        depth = 0            # open [ ... ] of a multi-line array
        in_string = None     # the delimiter of an open multi-line string
        # lines as TOML counts them: only "\n" ends one (str.splitlines would also split
        # at \x0c, \x1c, U+2028 ... and put every later key on the wrong line)
        for n, line in enumerate(text.replace("\r\n", "\n").split("\n"), start=1):
            if in_string:
                if in_string in line:
                    in_string = None
                continue
            if depth == 0:
                m = self._HEADER.match(line)
                if m:
                    name = tuple(p.strip().strip('"') for p in m.group(2).split("."))
                    if m.group(1) == "[[":
                        i = counts.get(".".join(name), 0)
                        counts[".".join(name)] = i + 1
                        current = name + (i,)
                    else:
                        current = name
                    self.tables.setdefault(current, n)
                    continue
                m = self._KEY.match(line)
                if m:
                    self.keys.setdefault(current + (m.group(1).strip('"'),), n)
            value = line.split("=", 1)[1] if depth == 0 and "=" in line else line
            value = re.sub(r'"(\\.|[^"\\])*"', '""', value)      # drop string contents
            value = value.split("#", 1)[0]
            for delim in ('"""', "'''"):
                if value.count(delim) % 2 == 1:
                    in_string = delim
            depth = max(0, depth + value.count("[") - value.count("]"))

    def line(self, table: tuple, key: str | None = None) -> int | None:
        """The line of ``key`` in ``table``, else of the table header, else None."""
        if key is not None and table + (key,) in self.keys:
            return self.keys[table + (key,)]
        return self.tables.get(table)


def _fmt_table(table: tuple) -> str:
    out = []
    for p in table:
        if isinstance(p, int):
            out[-1] = f"{out[-1]}[{p}]"
        else:
            out.append(str(p))
    return "[" + ".".join(out) + "]" if out else "top level"


def located(path, loc: TomlLocator, table: tuple, key: str | None, msg: str) -> str:
    line = loc.line(table, key)
    where = f"{path}:{line if line is not None else '?'}: {_fmt_table(table)}"
    if key is not None:
        where += f" field '{key}'"
    return f"{where}: {msg}"


def resolve(directory: Path, name_or_path, kind: str, error=InputError) -> Path:
    """A data file by path (``x.toml`` that exists) or by name (``directory/name.toml``)."""
    if not isinstance(name_or_path, (str, Path)) or "\0" in str(name_or_path):
        raise error(f"a {kind} is a name or a path, got {type(name_or_path).__name__} "
                    f"{name_or_path!r}")
    p = Path(name_or_path)
    if p.suffix == ".toml":
        if p.is_file():
            return p
        if p.exists() or len(p.parts) > 1:
            raise error(f"{p}: cannot read: {'not a file' if p.exists() else 'no such file'}")
    cand = directory / f"{name_or_path}.toml"
    if "/" not in str(name_or_path) and cand.is_file():
        return cand
    raise error(f"unknown {kind} {str(name_or_path)!r}; known {kind}s: "
                f"{', '.join(names(directory))}")


def names(directory: Path) -> list[str]:
    """The ``*.toml`` files of a data directory, by name."""
    return sorted(p.stem for p in directory.glob("*.toml"))


_AT_LINE = re.compile(r"\(at line (\d+), column (\d+)\)|\(at end of document\)")


def read_toml(path: Path, error=InputError) -> tuple[dict, TomlLocator]:
    """Parse a data file; a syntax error (a duplicate key is one) becomes
    ``error("path:line: not valid TOML: ...")``."""
    text = read_text(path, error)
    return loads_toml(text, path, error), TomlLocator(text)


def loads_toml(text: str, path, error=InputError) -> dict:
    """``tomllib.loads`` with its errors located and in the loader's error type."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = _AT_LINE.search(msg)
        line = (m.group(1) if m.group(1) else str(text.count("\n") + 1)) if m else "?"
        msg = _AT_LINE.sub(lambda mm: f"(column {mm.group(2)})" if mm.group(2) else "",
                           msg).strip()
        raise error(f"{path}:{line}: not valid TOML: {msg}") from None
    except RecursionError:
        raise error(f"{path}: not valid TOML: arrays or tables nested too deeply") from None


# ---------------------------------------------------------------------------
# Schema checks

def number_problem(v, *, integer: bool = False, lo=None, hi=None) -> str | None:
    """What is wrong with ``v`` as a number (None if nothing): a bool or non-number, a
    non-integer where an integer is wanted, NaN or infinity, or a value outside
    ``lo..hi``.  Integers are compared exactly, never converted to float."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return f"must be {'an integer' if integer else 'a number'}, got {type(v).__name__} {v!r}"
    if isinstance(v, float):
        if not math.isfinite(v):
            return f"must be a finite number, got {v!r}"
        if integer:
            return f"must be an integer, got {v!r}"
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        return f"{_num(v)} is outside {_num(lo) if lo is not None else '-inf'}.." \
               f"{_num(hi) if hi is not None else 'inf'}"
    return None


def _num(v) -> str:
    if isinstance(v, int) and abs(v) >= 1 << 64:     # addresses and sizes read best in hex
        return f"0x{v:x}" if v >= 0 else f"-0x{-v:x}"
    return f"{v:g}" if isinstance(v, float) else str(v)


@dataclass(frozen=True)
class Field:
    """One key of a TOML table: its kind (``int``, ``float`` = any finite number,
    ``str``, ``bool``, ``list``, ``dict``), whether it is required, a range, allowed values
    (``str`` or ``int`` fields, without a range), and for lists the kind of their items."""

    kind: type
    required: bool = True
    lo: Any = None
    hi: Any = None
    choices: tuple | None = None
    items: type | None = None

    def __post_init__(self):
        if self.kind not in _KIND_NAMES or self.items not in (None, *_KIND_NAMES):
            raise TypeError(f"Field kind and items are among {', '.join(map(str, _KIND_NAMES))}")
        if self.choices is not None and (self.kind not in (int, str) or
                                         (self.lo, self.hi) != (None, None)):
            raise TypeError("Field choices are for str or int fields without a range")


_KIND_NAMES = {int: "int", float: "a number", str: "str", bool: "bool", list: "a list",
               dict: "a table"}


# The checks are msgspec's (``msgspec.convert(..., strict=True)`` of the table into a
# Struct declared from the spec): a table, known keys, required keys, each value's kind
# (``bool`` is not a number; ``float`` takes ints), ranges as ``Meta(ge, le)``, finite
# numbers as a float range of +-DBL_MAX (NaN and infinities fail it), list items,
# choices as a ``Literal``.  Two things stay here because msgspec cannot hold them:
# * integer bounds beyond int64 (``U64_MAX`` for addresses and sizes: msgspec 0.22's
#   ``Meta`` takes only int64 bounds): such a field is :class:`_WideInt`, whose bounds
#   :func:`number_problem` checks inside the same ``convert`` (its ``dec_hook``);
# * positions: tomllib gives none, so :class:`TomlLocator` finds the line, and the
#   message is today's wording of what msgspec rejected at which key (:func:`_explain`).
_FLOAT_MAX = sys.float_info.max
_INT64 = range(-(1 << 63), 1 << 63)


class _WideInt(int):
    """An int field whose bounds do not fit msgspec's int64 ``Meta``; ``field`` holds them."""

    field: Field


def _wide_int(tp, v):
    """msgspec's ``dec_hook`` for :class:`_WideInt` fields: msgspec's own int check, then
    the bounds by :func:`number_problem` (raised as msgspec reports its own)."""
    try:
        msgspec.convert(v, int, strict=True)
    except msgspec.ValidationError as exc:     # re-raised so that msgspec adds the key
        raise TypeError(str(exc)) from None
    why = number_problem(v, integer=True, lo=tp.field.lo, hi=tp.field.hi)
    if why:
        raise ValueError(why)
    return tp(v)


def _value_type(f: Field):
    """The msgspec type of one field's value."""
    if f.choices is not None:
        return Literal[f.choices]
    if f.kind is int and any(b is not None and b not in _INT64 for b in (f.lo, f.hi)):
        return type("_WideInt", (_WideInt,), {"field": f})
    if f.kind in (int, float):
        lo, hi = (f.lo, f.hi) if f.kind is int else (
            -_FLOAT_MAX if f.lo is None else f.lo, _FLOAT_MAX if f.hi is None else f.hi)
        return Annotated[f.kind, msgspec.Meta(ge=lo, le=hi)] if (lo, hi) != (None, None) \
            else f.kind
    if f.kind is list and f.items is not None:
        return list[f.items]
    return f.kind


@functools.lru_cache(maxsize=None)
def _structs(spec: tuple[tuple[str, Field], ...]):
    """Two msgspec Structs for a spec: its shape (known and required keys, any values)
    and its values (each field's type), keys renamed to the TOML keys."""
    names = {f"f{i}": key for i, (key, _) in enumerate(spec)}

    def struct(value_type):
        return msgspec.defstruct(
            "Table", [(n, value_type(f)) if f.required else (n, value_type(f), msgspec.UNSET)
                      for n, (_, f) in zip(names, spec)],
            kw_only=True, forbid_unknown_fields=True, rename=names)
    return struct(lambda f: object), struct(_value_type)


_AT = re.compile(r"^(?P<problem>.*?)(?: - at `\$\.(?P<key>[^`]*?)(?:\[(?P<item>\d+)\])?`)?$",
                 re.DOTALL)


def _explain(exc: msgspec.ValidationError, entry, spec: Mapping[str, Field]):
    """(key or None, problem) in kvmpt's words for what msgspec rejected."""
    m = _AT.match(str(exc))
    problem, key, item = m["problem"], m["key"], m["item"]
    if key is None:
        for start, say in (("Object contains unknown field `", None),
                           ("Object missing required field `", "missing field '{}'")):
            if problem.startswith(start):
                name = problem[len(start):-1]
                return (name, f"unknown field (known: {', '.join(spec)})") if say is None \
                    else (None, say.format(name))
        return None, "must be a table"
    f, v = spec[key], entry[key]
    if item is not None:
        v = v[int(item)]
        return key, f"items must be {_KIND_NAMES[f.items]}, got {type(v).__name__} {v!r}"
    if problem.startswith("Expected `") and "`, got `" in problem:
        return key, f"must be {_KIND_NAMES[f.kind]}, got {type(v).__name__} {v!r}"
    if problem.startswith("Invalid enum value"):
        return key, f"{v!r} is not one of {' '.join(map(str, f.choices))}"
    if f.kind in (int, float):       # a range, NaN or infinity; an int past float's range
        return key, (number_problem(v, integer=f.kind is int, lo=f.lo, hi=f.hi)
                     or f"must be a finite number, got {_num(v)}")
    return key, problem


def check_table(error, path, loc: "TomlLocator", table: tuple, entry,
                spec: Mapping[str, Field]) -> None:
    """Check ``entry`` (the TOML table at ``table``) against ``spec``: a table, known
    keys only, every required key, each value of its kind, finite, in range and among
    the choices.  msgspec checks the shape first (unknown keys in the file's order, then
    missing ones in the spec's), then the values in the spec's order; the first problem
    raises ``error(located(...))``."""
    shape, values = _structs(tuple(spec.items()))
    try:
        msgspec.convert(entry, shape, strict=True)
        msgspec.convert({k: entry[k] for k in spec if k in entry}, values, strict=True,
                        dec_hook=_wide_int)
    except msgspec.ValidationError as exc:
        raise error(located(path, loc, table, *_explain(exc, entry, spec))) from None
