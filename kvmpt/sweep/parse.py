"""A sweep's inputs from text: designs, seeds, ``--param`` values and grid files.

One parser per input: ``parse_designs`` / ``parse_seeds`` / ``parse_param`` for the values of
``--designs`` / ``--seeds`` / ``--param`` (and of a grid file's keys), ``read_grid`` for a grid
file (TOML, or JSON), ``grid_spec`` for a grid dict in either form.  Every problem is a
:class:`GridError` naming the key, and the file and line when there is one.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from kvmpt.constants import SEED_MAX
from kvmpt.kernel.design import Design, parse_design
from kvmpt.infra.tomlfile import InputError, TomlLocator, decode, located, read_bytes

__all__ = ["GridError", "MAX_RUNS", "SEED_MAX", "parse_design", "parse_designs", "parse_seeds",
           "parse_param", "grid_spec", "read_grid", "read_grid_file"]

#: the most runs one sweep may plan: a bound of the machine, not of the model (each run is a
#: RunSpec and a log record in memory; a million of them is about 1 GB)
MAX_RUNS = 1_000_000


class GridError(InputError):
    """A grid (file, dict or command-line option) is malformed.  ``key`` is the grid key at
    fault (a parameter name, ``designs``, ``seeds`` or ``scenario``) when there is one;
    ``problem`` is the message without its location."""

    def __init__(self, msg: str, key: str | None = None, problem: str | None = None):
        super().__init__(msg)
        self.key = key
        self.problem = problem if problem is not None else msg


# ---------------------------------------------------------------------------
# Designs, seeds and parameter values

def parse_designs(spec: str | Design | Iterable[str | Design] | None) -> tuple[Design, ...]:
    """Designs from ``"v6.5,v6.6"``, ``"all"`` (the 32 combinations), or a list of names.

    Knob specs contain commas, so in a comma-separated string separate designs with ``;``
    when any of them uses ``knob=value`` syntax."""
    if spec is None:
        return (Design.preset("v6.5"), Design.preset("v6.6"))
    if isinstance(spec, Design):
        return (spec,)
    if isinstance(spec, str):
        parts = [p for p in spec.split(";" if "=" in spec else ",") if p.strip()]
    elif isinstance(spec, (list, tuple)):
        parts = list(spec)
    else:
        why = f"want a name, 'all' or a list of names, got {type(spec).__name__} {spec!r}"
        raise GridError(f"designs: {why}", key="designs", problem=why)
    out: list[Design] = []
    for p in parts:
        if isinstance(p, str) and p.strip() == "all":
            out.extend(Design.all())
        else:
            try:
                out.append(parse_design(p))
            except (TypeError, ValueError) as exc:
                raise GridError(f"designs: {exc}", key="designs", problem=str(exc)) from None
    if not out:
        raise GridError("designs: no designs given", key="designs", problem="no designs given")
    seen: list[Design] = []
    for d in out:
        if d not in seen:
            seen.append(d)
    return tuple(seen)


def parse_seeds(spec: str | int | Iterable[int] | None) -> tuple[int, ...]:
    """Seeds from ``"0,1,2"`` or ranges in the kernel's cpulist style, ``"0-9,20"``.

    A bare int ``n`` (not a string) means ``range(n)``."""
    if spec is None:
        return (0,)

    def bad(msg):
        return GridError(f"seeds: {msg}", key="seeds", problem=msg)

    if isinstance(spec, bool):
        raise bad(f"want a count, a list or a cpulist such as 0-9, got {spec!r}")
    if isinstance(spec, int):
        if spec < 1:
            raise bad(f"seeds={spec}: need at least one seed")
        if spec > MAX_RUNS:
            raise bad(f"seeds={spec} asks for {spec} seeds; the limit is {MAX_RUNS} runs")
        return tuple(range(spec))
    seeds: list[int] = []
    if isinstance(spec, str):
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            lo, dash, hi = part.partition("-")
            try:
                if dash and lo:
                    a, b = int(lo), int(hi)
                    if b < a:
                        raise ValueError
                    if b - a + 1 + len(seeds) > MAX_RUNS:
                        raise bad(f"{spec!r} asks for {b - a + 1 + len(seeds)} seeds; the limit "
                                  f"is {MAX_RUNS} runs")
                    seeds.extend(range(a, b + 1))
                else:
                    seeds.append(int(part))
            except ValueError as exc:
                if isinstance(exc, GridError):
                    raise
                raise bad(f"bad seed list {spec!r}: want e.g. 0,1,2 or 0-9") from None
    elif isinstance(spec, (list, tuple)):
        for s in spec:
            if hasattr(s, "item") and not isinstance(s, (str, bytes)):   # numpy scalar
                s = s.item()
            if isinstance(s, bool) or not isinstance(s, int):
                raise bad(f"seeds must be integers, got {type(s).__name__} {s!r}")
            seeds.append(int(s))
        if len(seeds) > MAX_RUNS:
            raise bad(f"{len(seeds)} seeds; the limit is {MAX_RUNS} runs")
    else:
        raise bad(f"want a count, a list or a cpulist such as 0-9, got {type(spec).__name__} "
                  f"{spec!r}")
    if not seeds:
        raise bad("no seeds given")
    for s in seeds:
        if not 0 <= s <= SEED_MAX:
            raise bad(f"seed {s} is outside 0..{SEED_MAX}")
    if len(set(seeds)) != len(seeds):
        raise bad(f"repeated seed in {spec!r}")
    return tuple(seeds)


def _scalar(text: str) -> Any:
    t = text.strip()
    low = t.lower()
    if low in ("true", "false"):
        return low == "true"
    for conv in (int, float):
        try:
            v = conv(t.replace("_", "")) if t else None
        except ValueError:
            continue
        if v is not None and (conv is int or math.isfinite(v)):
            return v
    if not t:
        raise ValueError("empty value")
    return t


def parse_param(text: str) -> tuple[str, list[Any]]:
    """``"name=v1,v2,..."`` -> ``("name", [v1, v2, ...])``; values become int, float, bool or str
    (``100_000`` and ``1e5`` are numbers)."""
    name, eq, values = text.partition("=")
    name = name.strip()
    if not eq or not name:
        raise ValueError(f"--param wants name=v1,v2,..., got {text!r}")
    try:
        vals = [_scalar(v) for v in values.split(",")]
    except ValueError:
        raise ValueError(f"--param {text!r}: empty value in the list") from None
    return name, vals


# ---------------------------------------------------------------------------
# Grid files and grid dicts

_GRID_KEYS = ("params", "designs", "seeds", "scenario")


def grid_spec(d: Any) -> dict[str, Any]:
    """A grid dict in the nested form ``{"params": {...}, "designs", "seeds", "scenario"}``,
    from either form (nested, or flat: every key but designs/seeds/scenario a parameter);
    checks the keys and the scenario's type."""
    if not isinstance(d, Mapping):
        raise GridError(f"a grid is a table, got {type(d).__name__}")
    if "params" not in d:
        for k, v in d.items():
            if isinstance(v, Mapping):
                raise GridError(f"{k}: unknown table (a grid has one table, [params])", key=k,
                                problem="unknown table (a grid has one table, [params])")
        d = {"params": {k: v for k, v in d.items() if k not in _GRID_KEYS},
             **{k: v for k, v in d.items() if k in _GRID_KEYS}}
    unknown = [k for k in d if k not in _GRID_KEYS]
    if unknown:
        hint = {"seed": " (did you mean seeds?)", "design": " (did you mean designs?)"}
        why = (f"unknown grid key beside [params]{hint.get(unknown[0], '')}: want "
               "designs, seeds, scenario")
        raise GridError(f"{unknown[0]}: {why}", key=unknown[0], problem=why)
    if "scenario" in d and not isinstance(d["scenario"], str):
        why = f"must be a scenario name or file, got {type(d['scenario']).__name__}"
        raise GridError(f"scenario: {why}", key="scenario", problem=why)
    if not isinstance(d.get("params", {}), Mapping):
        why = "must be a table of name = [values]"
        raise GridError(f"params: {why}", key="params", problem=why)
    return dict(d)


def read_grid(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, str]]:
    """A grid file (TOML, or JSON if it ends in .json) as ``(nested spec, origin)``: origin
    maps each key to its place in the file, ``path:line: [params] field 'name'``.  Every
    problem raises :class:`GridError` naming the file and line."""
    data = read_bytes(path, GridError)
    p = Path(path)
    text = decode(data, p, GridError)
    if p.suffix == ".json":
        doc = _loads_json(text, p)
        loc = None
    else:
        from kvmpt.infra.tomlfile import loads_toml
        doc = loads_toml(text, p, GridError)
        loc = TomlLocator(text)

    def where(table: tuple, key: str | None) -> str:
        if loc is None:
            return f"{p}: {key}" if key else str(p)
        return located(p, loc, table, key, "")[:-2]

    nested = isinstance(doc, Mapping) and "params" in doc
    try:
        spec = grid_spec(doc)
    except GridError as exc:
        if exc.key is None:
            raise GridError(f"{p}: {exc.problem}") from None
        table = isinstance(doc.get(exc.key), Mapping)
        at = where((exc.key,), None) if table else where((), exc.key)
        raise GridError(f"{at}: {exc.problem}", key=exc.key, problem=exc.problem) from None
    origin = {k: where((), k) for k in ("designs", "seeds", "scenario") if k in spec}
    origin["params"] = where(("params",), None) if nested else str(p)
    origin["runs"] = str(p)
    for k in spec.get("params", {}) if isinstance(spec.get("params"), Mapping) else ():
        origin[k] = where(("params",) if nested else (), k)
    return spec, origin


def read_grid_file(path: str | os.PathLike) -> dict[str, Any]:
    """A grid file (TOML, or JSON if it ends in .json) as a dict in the nested form."""
    return read_grid(path)[0]


def _loads_json(text: str, p: Path) -> Any:
    def no_dups(pairs):
        out = {}
        for k, v in pairs:
            if k in out:
                raise GridError(f"{p}: {k}: appears twice", key=k, problem="appears twice")
            out[k] = v
        return out

    def no_constant(name):
        raise GridError(f"{p}: {name} is not a finite number")

    try:
        return json.loads(text, object_pairs_hook=no_dups, parse_constant=no_constant)
    except json.JSONDecodeError as exc:
        raise GridError(f"{p}:{exc.lineno}: not valid JSON: {exc.msg} (column "
                        f"{exc.colno})") from None
    except RecursionError:
        raise GridError(f"{p}: not valid JSON: nested too deeply") from None

