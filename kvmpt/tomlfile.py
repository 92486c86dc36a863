"""Reading kvmpt's TOML data files: line numbers for error messages, and name lookup.

``tomllib`` gives values without positions; ``TomlLocator`` finds the line of a
table or key by scanning the text, so that a malformed layout, scenario or cost
file is reported as ``file:line: [table] field 'key': problem``.
"""
from __future__ import annotations

import re
import tomllib
from pathlib import Path


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
        for n, line in enumerate(text.splitlines(), start=1):
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


def resolve(directory: Path, name_or_path, kind: str, error=ValueError) -> Path:
    """A data file by path (``x.toml`` that exists) or by name (``directory/name.toml``)."""
    p = Path(name_or_path)
    if p.suffix == ".toml" and p.exists():
        return p
    cand = directory / f"{name_or_path}.toml"
    if cand.exists():
        return cand
    raise error(f"unknown {kind} {str(name_or_path)!r}; known {kind}s: "
                f"{', '.join(names(directory))}")


def names(directory: Path) -> list[str]:
    """The ``*.toml`` files of a data directory, by name."""
    return sorted(p.stem for p in directory.glob("*.toml"))


def read_toml(path: Path, error=ValueError) -> tuple[dict, TomlLocator]:
    """Parse a data file; a syntax error becomes ``error("path: not valid TOML: ...")``."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML: {exc}") from None
    return doc, TomlLocator(text)
