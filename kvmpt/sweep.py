"""Parameter sweeps: designs x workload parameters x seeds, and the ``kvmpt sweep`` command.

A design question ("how many cycles does the flush hook waste on a 1 TiB
slot with 100 k tracked gfns?") is answered by running one scenario over a
grid and reading the table::

    from kvmpt.sweep import Grid, sweep
    grid = Grid({"ram_gib": [4, 64, 1024], "tracked_gfns": [0, 4000, 100_000]},
                designs=["v6.5", "v6.6"], seeds=[0, 1])
    table = sweep(grid, scenario="q35-desktop", out="results.parquet")
    # or, as a plain dict:  kvmpt.sweep({"tracked_gfns": [0, 4000], "designs": "all"})

:class:`Grid`
    Workload parameters (each a list of values, passed to
    ``Scenario.with_overrides``), the designs and the seeds.  Expansion is a
    cartesian product in a fixed order: parameters in the order given, the
    first varying slowest, then the design, then the seed (fastest).  Each
    run has a stable key, a hash of (scenario name, parameters, design knobs,
    seed), so a run is the same run whatever grid it appears in.
:func:`sweep`
    Runs every point and returns a :class:`SweepTable`: one row per run, in
    grid order, with the parameters, the design (name and its four knobs),
    the seed, ``status`` ("ok" / "error"), ``error`` and every metric of the
    run's ``summary``.  Locally it uses a process pool (one worker per core)
    with a progress bar; given ``scheduler="tcp://HOST:PORT"`` or a
    ``dask.distributed.Client`` it runs on a Dask cluster, with the same
    results for the same seeds (each run depends only on its scenario,
    design and seed).
Resuming
    With ``out=`` every finished or failed run is appended to a run log,
    ``<out>.runs.jsonl``, as it completes.  ``sweep(..., resume=True)``
    (``kvmpt sweep --resume``) skips the runs already in that log or in a
    table saved earlier at ``out`` by the same scenario and kvmpt version, so
    an interrupted sweep restarts where it stopped and a finished one can be
    grown by adding values to its grid.  A failed run keeps its error string
    and never stops the others.  After a sweep with no failures the log is
    removed (``keep_log=True`` keeps it).  Per-run wall times are in the log
    only: in the table they would make two identical sweeps differ.
Saved tables
    ``.parquet`` (pyarrow) carries the grid, scenario and kvmpt version as
    schema metadata under the key ``kvmpt.sweep``; ``.csv`` (stdlib) gets a
    sidecar ``<name>.csv.json`` with the same metadata plus the column types.
    :func:`load_table` reads either back.

Nothing here imports pandas; :meth:`SweepTable.to_pandas` does if asked.
"""
from __future__ import annotations

import concurrent.futures as cf
import csv
import dataclasses
import hashlib
import io
import itertools
import json
import math
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from .design import KNOBS, Design, parse_design
from .tomlfile import InputError, TomlLocator, decode, located, read_bytes

__all__ = [
    "Grid", "GridError", "RunSpec", "SweepTable", "sweep", "load_table", "diff", "parse_design",
    "parse_designs", "MAX_RUNS",
    "parse_seeds", "parse_param", "log_path_for", "plan", "bench", "HELP", "add_arguments", "run",
]

HELP = "sweep design knobs and workload parameters over seeds; write a tidy table"

#: columns every table has, before the parameters and after them
DESIGN_COLUMNS = ("design", *KNOBS)
_LEAD_COLUMNS = ("run", "key", "scenario")
_STATUS_COLUMNS = ("seed", "status", "error")
_RESERVED = frozenset(_LEAD_COLUMNS + DESIGN_COLUMNS + _STATUS_COLUMNS + ("designs", "seeds"))
#: the scenario a sweep runs when none is named (spec/workloads.md §5's default VM and workload)
DEFAULT_SCENARIO = "q35-desktop"
#: metadata key in Parquet schema metadata and the CSV sidecar
META_KEY = "kvmpt.sweep"
_LOG_FORMAT = 1
_KEY_HEX = 16
#: the most runs one sweep may plan: a bound of the machine, not of the model (each run is a
#: RunSpec and a log record in memory; a million of them is about 1 GB)
MAX_RUNS = 1_000_000
#: the seeds a scenario takes (``scenario._BOUNDS["seed"]``: numpy's SeedSequence, int64)
SEED_MAX = 2**63 - 1
#: the most local worker processes ``workers=`` may ask for
MAX_WORKERS = 256


class GridError(InputError):
    """A grid (file, dict or command-line option) is malformed.  ``key`` is the grid key at
    fault (a parameter name, ``designs``, ``seeds`` or ``scenario``) when there is one;
    ``problem`` is the message without its location."""

    def __init__(self, msg: str, key: str | None = None, problem: str | None = None):
        super().__init__(msg)
        self.key = key
        self.problem = problem if problem is not None else msg


# ---------------------------------------------------------------------------
# Designs, seeds and parameter values from text

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
# The grid

def _json_scalar(v: Any, name: str) -> Any:
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):   # numpy scalar
        v = v.item()
    if isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        if not math.isfinite(v):
            raise GridError(f"parameter {name!r}: {v!r} is not a finite number", key=name,
                            problem=f"{v!r} is not a finite number")
        return v
    why = f"values must be int, float, bool or str, got {type(v).__name__} {v!r}"
    raise GridError(f"parameter {name!r}: {why}", key=name, problem=why)


def _design_knobs(d: Design) -> dict[str, Any]:
    return d.knobs()


def run_key(scenario_name: str, params: Mapping[str, Any], design: Design, seed: int) -> str:
    """The stable key of one run: a hash of its scenario name, parameters, design and seed."""
    blob = json.dumps({"scenario": scenario_name, "params": dict(sorted(params.items())),
                       "design": _design_knobs(design), "seed": seed},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:_KEY_HEX]


@dataclass(frozen=True)
class RunSpec:
    """One point of a grid: its position, key, parameters, design and seed."""

    index: int
    key: str
    params: tuple[tuple[str, Any], ...]
    design: Design
    seed: int

    @property
    def params_dict(self) -> dict[str, Any]:
        return dict(self.params)


@dataclass(frozen=True, init=False)
class Grid:
    """Workload parameters (name -> values), designs and seeds; expands to :class:`RunSpec`\\ s.

    ``Grid({"ram_gib": [1, 1024], "tracked_gfns": [0, 100_000]}, designs="all", seeds=3)``.
    A scalar value is a one-value list.  ``designs`` takes what :func:`parse_designs` takes
    (default v6.5 and v6.6); ``seeds`` what :func:`parse_seeds` takes (default ``[0]``)."""

    params: tuple[tuple[str, tuple[Any, ...]], ...]
    designs: tuple[Design, ...]
    seeds: tuple[int, ...]
    origin: Mapping[str, str] = dataclasses.field(default_factory=dict, compare=False,
                                                  repr=False)

    def __init__(self, params: Mapping[str, Any] | None = None, designs=None, seeds=None,
                 origin: Mapping[str, str] | None = None):
        try:
            self._build(params, designs, seeds)
        except GridError as exc:
            where = (origin or {}).get(exc.key or "")
            if where is None:
                raise
            raise GridError(f"{where}: {exc.problem}", key=exc.key, problem=exc.problem) \
                from None
        object.__setattr__(self, "origin", dict(origin or {}))

    def _build(self, params, designs, seeds) -> None:
        if params is not None and not isinstance(params, Mapping):
            raise GridError(f"params: must be a table of name = [values], got "
                            f"{type(params).__name__} {params!r}", key="params",
                            problem="must be a table of name = [values]")
        items: list[tuple[str, tuple[Any, ...]]] = []
        for name, values in (params or {}).items():
            def bad(msg):
                return GridError(f"parameter {name!r}: {msg}", key=name, problem=msg)

            if not isinstance(name, str) or not name.isidentifier():
                raise bad("the name is not an identifier")
            if name in _RESERVED:
                hint = " (use seeds=)" if name == "seed" else (
                    " (use designs=)" if name in ("design", "designs") else "")
                raise bad(f"{name!r} cannot be a swept parameter{hint}")
            if isinstance(values, Mapping):
                raise bad("want a value or a list of values, got a table")
            if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
                values = [values]
            vals = tuple(_json_scalar(v, name) for v in values)
            if not vals:
                raise bad("has no values")
            if len({json.dumps(v) for v in vals}) != len(vals):
                raise bad(f"repeats a value: {list(vals)}")
            items.append((name, vals))
        object.__setattr__(self, "params", tuple(items))
        object.__setattr__(self, "designs", parse_designs(designs))
        object.__setattr__(self, "seeds", parse_seeds(seeds))
        if len(self) > MAX_RUNS:
            sizes = " x ".join(str(len(v)) for _, v in items)
            why = (f"the grid has {len(self)} runs ({sizes + ' x ' if sizes else ''}"
                   f"{len(self.designs)} designs x {len(self.seeds)} seeds); the limit is "
                   f"{MAX_RUNS}")
            raise GridError(why, key="runs", problem=why)

    def where(self, key: str) -> str | None:
        """Where a grid key came from (``grid.toml:7: [params] field 'ram_gib'``,
        ``--param ram_gib=...``), when the grid was read from a file or options."""
        return self.origin.get(key)

    # -- construction from files / dicts ------------------------------------
    @classmethod
    def from_dict(cls, d: Mapping[str, Any], origin: Mapping[str, str] | None = None) -> "Grid":
        """From ``{"params": {...}, "designs": [...], "seeds": [...]}`` (what :meth:`to_dict`
        gives and a grid TOML file holds) or the flat ``{"ram_gib": [...], ..., "designs":
        [...], "seeds": [...]}``; a ``scenario`` key is allowed and ignored here."""
        spec = grid_spec(d)
        return cls(spec["params"], designs=spec.get("designs"), seeds=spec.get("seeds"),
                   origin=origin)

    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> "Grid":
        """Read a grid file::

            scenario = "desktop"        # optional; kvmpt sweep uses it unless --scenario
            designs = ["v6.5", "v6.6"]  # or "all"
            seeds = "0-2"               # or [0, 1, 2]
            [params]
            ram_gib = [1, 16, 256, 1024]
            tracked_gfns = [0, 4000, 100000]

        or the same without the ``[params]`` header (every key other than ``scenario``,
        ``designs`` and ``seeds`` is then a parameter).  Errors name the file and line.
        """
        spec, origin = read_grid(path)
        return cls(spec["params"], designs=spec.get("designs"), seeds=spec.get("seeds"),
                   origin=origin)

    def to_dict(self) -> dict[str, Any]:
        return {"params": {k: list(v) for k, v in self.params},
                "designs": [d.name for d in self.designs],
                "seeds": list(self.seeds)}

    # -- expansion ----------------------------------------------------------
    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.params)

    def __len__(self) -> int:
        n = len(self.designs) * len(self.seeds)
        for _, v in self.params:
            n *= len(v)
        return n

    def expand(self, scenario_name: str = "") -> list[RunSpec]:
        """Every run, in grid order (parameters slowest-first, then design, then seed)."""
        names = self.param_names
        runs = []
        combos = itertools.product(*(v for _, v in self.params))
        for i, (combo, design, seed) in enumerate(
                (c, d, s) for c in combos for d in self.designs for s in self.seeds):
            params = tuple(zip(names, combo))
            runs.append(RunSpec(i, run_key(scenario_name, dict(params), design, seed),
                                params, design, seed))
        return runs


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
        from .tomlfile import loads_toml
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


# ---------------------------------------------------------------------------
# The table

def _col_type(values: Iterable[Any]) -> str:
    kinds = {type(v) for v in values if v is not None}
    if not kinds:
        return "str"
    if kinds == {bool}:
        return "bool"
    if kinds <= {int}:
        return "int"
    if kinds <= {int, float}:
        return "float"
    return "str"


def row_matches(row: Mapping[str, Any], equals: Mapping[str, Any]) -> bool:
    """Whether ``row``'s columns equal ``equals`` (a list/tuple/set value means "any of")."""
    for k, v in equals.items():
        if isinstance(v, (list, tuple, set, frozenset)):
            if row.get(k) not in v:
                return False
        elif row.get(k) != v:
            return False
    return True


class SweepTable:
    """A tidy table: one row (a dict) per run, in grid order, with fixed columns.

    ``table.rows`` is the list of dicts, ``table.columns`` the column order,
    ``table.column(name)`` one column as a list, ``table.meta`` what is saved with
    it (grid, scenario, kvmpt version, which columns are parameters/metrics).
    ``table.stats`` (not saved) counts the runs done now, resumed from the log, failed."""

    def __init__(self, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None,
                 meta: Mapping[str, Any] | None = None, stats: Mapping[str, Any] | None = None):
        self.rows = [dict(r) for r in rows]
        if columns is None:
            columns = []
            for r in self.rows:
                columns.extend(k for k in r if k not in columns)
        self.columns = list(columns)
        self.meta = dict(meta or {})
        self.stats = dict(stats or {})

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows)

    def __getitem__(self, name: str) -> list[Any]:
        return self.column(name)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SweepTable):
            return NotImplemented
        return self.columns == other.columns and self.rows == other.rows

    def __repr__(self) -> str:
        return (f"SweepTable({len(self.rows)} runs x {len(self.columns)} columns, "
                f"scenario={self.meta.get('scenario')!r}, failed={len(self.failed())})")

    def column(self, name: str) -> list[Any]:
        if name not in self.columns:
            raise KeyError(f"no column {name!r}; columns: {', '.join(self.columns)}")
        return [r.get(name) for r in self.rows]

    @property
    def param_columns(self) -> list[str]:
        return list(self.meta.get("param_columns", []))

    @property
    def metric_columns(self) -> list[str]:
        return list(self.meta.get("metric_columns", []))

    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r.get("status") != "ok"]

    def where(self, **equals: Any) -> "SweepTable":
        """The rows whose columns equal the given values (a list value means "any of")."""
        return SweepTable([r for r in self.rows if row_matches(r, equals)], self.columns,
                          self.meta)

    def to_dict(self) -> dict[str, list[Any]]:
        """Dict of columns."""
        return {c: self.column(c) for c in self.columns}

    def column_types(self) -> dict[str, str]:
        return {c: _col_type(r.get(c) for r in self.rows) for c in self.columns}

    def to_pandas(self):
        import pandas as pd
        return pd.DataFrame(self.rows, columns=self.columns)

    def to_arrow(self):
        import pyarrow as pa
        types = {"bool": pa.bool_(), "int": pa.int64(), "float": pa.float64(), "str": pa.string()}
        ctypes = self.column_types()
        arrays, fields = [], []
        for c in self.columns:
            t = ctypes[c]
            vals = self.column(c)
            if t == "float":
                vals = [None if v is None else float(v) for v in vals]
            elif t == "str":
                vals = [None if v is None else str(v) for v in vals]
            arrays.append(pa.array(vals, type=types[t]))
            fields.append(pa.field(c, types[t]))
        meta = {META_KEY: json.dumps(self.meta, sort_keys=True)}
        return pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=meta))

    # -- saving -------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write ``.parquet`` (with metadata) or ``.csv`` (with a ``.csv.json`` sidecar)."""
        p = Path(path)
        if p.suffix == ".parquet":
            self.to_parquet(p)
        elif p.suffix == ".csv":
            self.to_csv(p)
        else:
            raise ValueError(f"{p}: output must end in .parquet or .csv")
        return p

    def to_parquet(self, path: str | os.PathLike) -> None:
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ValueError("writing .parquet needs pyarrow (pip install 'kvmpt[dev]'); "
                             "or write .csv") from None
        tmp = Path(str(path) + ".tmp")
        try:
            pq.write_table(self.to_arrow(), tmp, compression="zstd")
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)     # nothing half-written is left behind
            raise

    def to_csv(self, path: str | os.PathLike | None = None) -> str | None:
        """Write CSV (None is an empty field; floats as ``repr``, so they round-trip) and the
        sidecar ``<path>.json``; with no path, return the CSV text."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.columns)
        for r in self.rows:
            w.writerow(["" if r.get(c) is None else repr(r[c]) if isinstance(r[c], float)
                        else r[c] for c in self.columns])
        if path is None:
            return buf.getvalue()
        p = Path(path)
        _atomic_write(p, buf.getvalue())
        side = dict(self.meta)
        side["column_types"] = self.column_types()
        _atomic_write(Path(str(p) + ".json"), json.dumps(side, indent=1, sort_keys=True) + "\n")
        return None


def _atomic_write(p: Path, text: str) -> None:
    tmp = p.with_name(p.name + ".tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)         # nothing half-written is left behind
        raise


#: where the committed sweeps live (data/sweeps/, shipped as package data)
SWEEP_DIR = Path(__file__).resolve().parent / "data" / "sweeps"


def load_table(path: str | os.PathLike) -> SweepTable:
    """Read a table written by :meth:`SweepTable.save` (Parquet, or CSV + its sidecar).

    A bare name such as ``"small"`` is a committed sweep in ``data/sweeps/``."""
    p = Path(path)
    if not p.suffix and not p.exists() and p.name == str(path):
        for suffix in (".parquet", ".csv"):
            if (SWEEP_DIR / f"{p.name}{suffix}").exists():
                p = SWEEP_DIR / f"{p.name}{suffix}"
                break
        else:
            known = sorted({q.stem for q in SWEEP_DIR.glob("*") if q.suffix in
                            (".parquet", ".csv")})
            raise ValueError(f"no committed sweep {str(path)!r}; known: {', '.join(known)}")
    if p.suffix == ".parquet":
        import pyarrow.parquet as pq
        t = pq.read_table(p)
        md = t.schema.metadata or {}
        meta = json.loads(md.get(META_KEY.encode(), b"{}"))
        return SweepTable(t.to_pylist(), t.column_names, meta)
    if p.suffix == ".csv":
        side = Path(str(p) + ".json")
        meta = json.loads(side.read_text()) if side.exists() else {}
        ctypes = meta.pop("column_types", {})
        conv = {"int": int, "float": float, "bool": lambda s: s == "True", "str": str}
        with open(p, newline="") as f:
            reader = csv.reader(f)
            columns = next(reader)
            rows = [{c: (None if v == "" else conv[ctypes.get(c, "str")](v))
                     for c, v in zip(columns, rec)} for rec in reader]
        return SweepTable(rows, columns, meta)
    raise ValueError(f"{p}: a sweep table ends in .parquet or .csv")


# ---------------------------------------------------------------------------
# One run (in a worker)

def _metric(v: Any) -> Any:
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        try:
            v = v.item()
        except (TypeError, ValueError):
            return str(v)
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None if math.isnan(v) else v
    return str(v)


def _execute(scenario: Any, design: Design, seed: int, key: str, run_fn: Callable) -> dict:
    """Run one point; never raises for an ordinary exception (it is the record's error)."""
    t0 = time.perf_counter()
    try:
        result = run_fn(scenario, design, seed=seed)
        summary = result.summary if hasattr(result, "summary") else result
        if not isinstance(summary, Mapping):
            raise TypeError(f"run returned {type(result).__name__}, not a result with a "
                            ".summary mapping")
        metrics = {str(k): _metric(v) for k, v in summary.items()}
        return {"key": key, "status": "ok", "error": None, "summary": metrics,
                "wall_s": round(time.perf_counter() - t0, 6)}
    except Exception as exc:   # noqa: BLE001 - a failed run is data, not a crash
        tb = traceback.extract_tb(exc.__traceback__)
        where = f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
        msg = " ".join(str(exc).split()) or "-"
        return {"key": key, "status": "error", "error": f"{type(exc).__name__}: {msg}{where}",
                "summary": {}, "wall_s": round(time.perf_counter() - t0, 6)}


def _worker_init(sweep_pid: int | None = None) -> None:
    # One process per core already; keep each run's Numba kernels single-threaded.
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    if sweep_pid is not None:           # end with the sweep, even if it is SIGKILLed
        from .procs import exit_with
        exit_with(sweep_pid)
        # Ctrl-C reaches the whole process group: the sweep handles it and stops the pool,
        # a worker must not print a KeyboardInterrupt traceback of its own
        signal.signal(signal.SIGINT, signal.SIG_IGN)


# ---------------------------------------------------------------------------
# The run log

def log_path_for(out: str | os.PathLike) -> Path:
    """Where :func:`sweep` keeps the run log of a sweep writing ``out``."""
    return Path(str(out) + ".runs.jsonl")


class _RunLog:
    """JSON lines: a header, then one line per finished or failed run (appended, flushed)."""

    def __init__(self, path: Path, header: dict, resume: bool):
        self.path = path
        self.done: dict[str, dict] = {}
        if resume and path.exists():
            # a log torn or damaged by a crash: bad bytes and bad lines are skipped, not fatal
            text = path.read_bytes().decode("utf-8", "replace")
            lines = text.splitlines()
            first = _loads(lines[0]) if lines else None
            if first is not None and first.get("kvmpt_sweep_log") == _LOG_FORMAT:
                if first.get("fingerprint") != header["fingerprint"]:
                    raise ValueError(
                        f"{path}: this run log was made by a different scenario definition or "
                        "model source; run without --resume to start over")
                for line in lines[1:]:
                    rec = _loads(line)      # a torn last line (killed mid-write) is skipped
                    if rec and "key" in rec and rec.get("status") in ("ok", "error"):
                        self.done[rec["key"]] = rec
                self.f = open(path, "a")
                if lines and not text.endswith("\n"):
                    self.f.write("\n")
                return
        path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(path, "w")
        self.f.write(json.dumps(header, sort_keys=True) + "\n")
        self.f.flush()

    def append(self, rec: dict) -> None:
        # keys in their order: a run's metrics keep the order its summary gave them
        self.f.write(json.dumps(rec) + "\n")
        self.f.flush()

    def close(self) -> None:
        self.f.close()


def _loads(line: str):
    try:
        v = json.loads(line)
    except json.JSONDecodeError:
        return None
    return v if isinstance(v, dict) else None


# ---------------------------------------------------------------------------
# Executors

def _run_local(todo, payload, run_fn, workers, on_done):
    """Process pool, at most 2 x workers runs in flight.  A worker that dies (os._exit, a
    segfault) breaks the pool: the runs that were in flight are then retried one at a time
    in a fresh pool, and the one that kills its pool again is recorded as failed."""
    ctx = multiprocessing.get_context("forkserver" if "forkserver" in
                                      multiprocessing.get_all_start_methods() else "spawn")
    if ctx.get_start_method() == "forkserver":
        # the forkserver ends with this process too (kvmpt/_forkserver_guard.py); it only
        # takes effect if this call starts the forkserver, which the first sweep does
        ctx.set_forkserver_preload(["__main__", "kvmpt._forkserver_guard"])
    me = os.getpid()

    def new_pool(n):
        return cf.ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_worker_init,
                                      initargs=(me,))

    queue = list(todo)
    queue.reverse()                          # pop() from the end = grid order
    pool = new_pool(workers)
    inflight: dict[cf.Future, RunSpec] = {}
    try:
        while queue or inflight:
            while queue and len(inflight) < 2 * workers:
                spec = queue.pop()
                try:
                    fut = pool.submit(_execute, payload(spec), spec.design, spec.seed,
                                      spec.key, run_fn)
                except cf.process.BrokenProcessPool:
                    # the pool broke after its last results came in: this run never
                    # started, so it goes back in line
                    queue.append(spec)
                    if inflight:         # they fail with BrokenProcessPool: handled below
                        break
                    pool.shutdown(wait=False, cancel_futures=True)
                    pool = new_pool(workers)
                    continue
                inflight[fut] = spec
            done, _ = cf.wait(inflight, return_when=cf.FIRST_COMPLETED)
            broken: list[RunSpec] = []
            for fut in sorted(done, key=lambda f: inflight[f].index):
                spec = inflight.pop(fut)
                try:
                    on_done(spec, fut.result())
                except cf.process.BrokenProcessPool:
                    broken.append(spec)
            if broken:
                broken.extend(inflight.values())
                inflight.clear()
                pool.shutdown(wait=False, cancel_futures=True)
                for spec in sorted(broken, key=lambda s: s.index):
                    solo = new_pool(1)
                    try:
                        rec = solo.submit(_execute, payload(spec), spec.design, spec.seed,
                                          spec.key, run_fn).result()
                    except cf.process.BrokenProcessPool:
                        rec = {"key": spec.key, "status": "error", "summary": {},
                               "error": "WorkerDied: the worker process running this run "
                                        "exited abruptly", "wall_s": None}
                    finally:
                        solo.shutdown(wait=False, cancel_futures=True)
                    on_done(spec, rec)
                pool = new_pool(workers)
    except BaseException:
        for fut in inflight:
            fut.cancel()
        _stop_pool(pool)
        raise
    pool.shutdown(wait=True)


def _stop_pool(pool: cf.ProcessPoolExecutor) -> None:
    """Stop a pool now (Ctrl-C, an error): its workers are killed, not waited for, so
    the interpreter's exit does not join runs that still have minutes to go."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        if proc.is_alive():
            proc.kill()
    for proc in procs:
        proc.join(timeout=5)


def _run_serial(todo, payload, run_fn, on_done):
    for spec in todo:
        on_done(spec, _execute(payload(spec), spec.design, spec.seed, spec.key, run_fn))


#: how long a Dask sweep waits for a live worker before it gives up (seconds)
WORKER_WAIT_S = 300.0
#: how often a Dask sweep checks for results and live workers (seconds; the worker count is
#: the client's cached scheduler_info(), so a check costs no round trip)
_DASK_POLL_S = 0.05


def _n_workers(client) -> int:
    return len((client.scheduler_info() or {}).get("workers", {}))


def _run_dask(todo, payload, run_fn, client, on_done, worker_wait: float = WORKER_WAIT_S,
              log=None):
    """Submit every run and collect results as they come.  While the cluster has no live
    worker the sweep says so on stderr, and raises ``TimeoutError`` when none has come back
    after ``worker_wait`` seconds (the runs already done are in the run log)."""
    from distributed import as_completed
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    futures = {}
    batch = []
    for spec in todo:
        fut = client.submit(_execute, payload(spec), spec.design, spec.seed, spec.key, run_fn,
                            pure=False, key=f"kvmpt-sweep-{spec.key}-{os.urandom(4).hex()}")
        futures[fut] = spec
        batch.append(fut)
    address = getattr(getattr(client, "scheduler", None), "address", None) or "the scheduler"
    no_worker_since = None
    try:
        pending = as_completed(batch)
        while futures:
            done = pending.next_batch(block=False)
            if not done:
                if _n_workers(client) == 0:
                    now = time.monotonic()
                    if no_worker_since is None:
                        no_worker_since = now
                        log(f"kvmpt sweep: no live Dask worker at {address}; "
                            f"{len(futures)} runs wait (giving up after {worker_wait:g} s)")
                    elif now - no_worker_since > worker_wait:
                        raise TimeoutError(
                            f"no live Dask worker at {address} for {worker_wait:g} s; "
                            f"{len(futures)} runs not done (finished runs are in the run log: "
                            "start workers and rerun with --resume)")
                elif no_worker_since is not None:
                    no_worker_since = None
                    log(f"kvmpt sweep: {_n_workers(client)} Dask worker(s) back; continuing")
                time.sleep(_DASK_POLL_S)
                continue
            for fut in done:
                spec = futures.pop(fut)
                if fut.status == "error":
                    exc = fut.exception()
                    rec = {"key": spec.key, "status": "error", "summary": {}, "wall_s": None,
                           "error": f"{type(exc).__name__}: "
                                    f"{' '.join(str(exc).split()) or '-'}"}
                else:
                    rec = fut.result()
                on_done(spec, rec)
    finally:
        for fut in futures:
            fut.cancel()


# ---------------------------------------------------------------------------
# sweep()

def _default_run_fn():
    from .scenario import run as scenario_run
    return scenario_run


def _resolve_scenario(scenario):
    if scenario is None or isinstance(scenario, (str, os.PathLike)):
        from .scenario import load_scenario
        if scenario is None:
            from .scenario import list_scenarios
            names = list_scenarios()
            if not names:
                raise ValueError("no scenarios available")
            scenario = getattr(sys.modules["kvmpt.scenario"], "DEFAULT_SCENARIO",
                               DEFAULT_SCENARIO if DEFAULT_SCENARIO in names else names[0])
        return load_scenario(scenario)
    if not hasattr(scenario, "with_overrides"):
        raise GridError(f"scenario: must be a name, a path, or a Scenario (with "
                        f".with_overrides), got {type(scenario).__name__}", key="scenario")
    return scenario


def _scenario_name(sc) -> str:
    return str(getattr(sc, "name", None) or type(sc).__name__)


def _scenario_description(sc) -> Any:
    """The scenario's parameters as JSON (saved with the table, and part of the run log's
    fingerprint); ``Scenario.parameters()`` when it has one."""
    if callable(getattr(sc, "parameters", None)):
        try:
            return json.loads(json.dumps(sc.parameters(), sort_keys=True, default=str))
        except (TypeError, ValueError):
            pass
    if dataclasses.is_dataclass(sc):
        try:
            d = {f.name: getattr(sc, f.name) for f in dataclasses.fields(sc) if f.compare}
            return json.loads(json.dumps(d, sort_keys=True, default=str))
        except (TypeError, ValueError, RecursionError):
            pass
    return repr(sc)


def source_fingerprint() -> str:
    """A hash of the model's source and data (kvmpt's modules except figures and views,
    ``data/`` except sweeps): resuming refuses a run log or table made by other code."""
    pkg = Path(__file__).resolve().parent
    h = hashlib.sha256()
    files = [p for p in pkg.rglob("*.py") if "figures" not in p.parts
             and p.name not in ("sweep.py", "cli.py", "dashboard.py", "report.py", "textreport.py")]
    data = pkg / "data"
    files += [p for p in data.rglob("*") if p.is_file() and p.suffix in (".toml", ".trace", ".csv")
              and "sweeps" not in p.relative_to(data).parts]
    for p in sorted(files):
        try:
            rel = p.relative_to(pkg)
        except ValueError:
            rel = Path(p.name)
        h.update(str(rel).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:_KEY_HEX]


def _version() -> str:
    from . import __version__
    return __version__


def plan(grid: Grid, scenario: Any = None, expand: bool = True
         ) -> tuple[Any, list[RunSpec], dict[tuple, Any]]:
    """Resolve the scenario, build every run's scenario and expand the grid, so a bad
    parameter name or value fails before any run: (base scenario, runs, params -> scenario).
    ``expand=False`` checks without listing the runs (``--dry-run``)."""
    try:
        base = _resolve_scenario(scenario)
    except ValueError as exc:
        at = grid.where("scenario")
        if at is None or isinstance(exc, GridError):
            raise
        raise GridError(f"{at}: {exc}", key="scenario", problem=str(exc)) from None
    name = _scenario_name(base)
    scen_cache: dict[tuple, Any] = {}
    names = grid.param_names
    for combo in itertools.product(*(v for _, v in grid.params)):
        params = tuple(zip(names, combo))
        try:
            scen_cache[params] = base.with_overrides(**dict(params))
        except (TypeError, ValueError) as exc:
            key = getattr(exc, "field", None)
            problem = getattr(exc, "problem", None) or str(exc)
            at = grid.where(key) if key else None
            what = f"{key}={dict(params)[key]!r}" if key in names else str(dict(params))
            msg = f"scenario {name!r} rejects {what}: {problem}"
            raise GridError(f"{at}: {msg}" if at else msg, key=key, problem=msg) from None
    specs = grid.expand(name) if expand else []
    return base, specs, scen_cache


def sweep(grid: Grid | Mapping[str, Any], scenario: Any = None,
          out: str | os.PathLike | None = None,
          scheduler: str | None = None, client: Any = None, workers: int | None = None,
          progress: bool = True, run_fn: Callable | None = None, *, resume: bool = False,
          retry_failed: bool = False, keep_log: bool = False,
          worker_wait: float = WORKER_WAIT_S) -> SweepTable:
    """Run every point of ``grid`` on ``scenario`` and return the tidy :class:`SweepTable`.

    ``grid``: a :class:`Grid`, or a dict as :meth:`Grid.from_dict` takes.
    ``scenario``: a scenario name or file (``kvmpt.scenario.load_scenario``), or a Scenario;
    each run is ``run_fn(scenario.with_overrides(**params), design, seed=seed)``.
    ``out``: save the table there (``.parquet`` or ``.csv``) and keep a run log beside it.
    ``scheduler``: a Dask scheduler address (``tcp://HOST:PORT``), or pass ``client``;
    otherwise a local process pool of ``workers`` processes (default: one per core;
    ``workers=0`` runs in this process, serially).
    ``progress``: a tqdm bar on stderr when it is a terminal.
    ``run_fn``: defaults to ``kvmpt.scenario.run``; must be picklable (a module-level function)
    for the process pool and Dask.
    ``resume``: skip the runs already in ``out``'s run log or in the table saved at ``out``
    (failed ones too, unless ``retry_failed``).  Without it an existing log is started over.
    ``worker_wait``: on Dask, how long to wait while no worker is alive before raising
    ``TimeoutError`` (the sweep says on stderr that it is waiting).

    Same grid, scenario and seeds give the same table, in grid order, whichever executor ran it.
    A run that raises is a row with ``status="error"`` and the exception in ``error``.
    """
    if not isinstance(grid, Grid):
        grid = Grid.from_dict(grid)
    if scheduler is not None and client is not None:
        raise ValueError("give scheduler or client, not both")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or not 0 <= workers <= MAX_WORKERS):
        raise ValueError(f"workers={workers!r}: want a count 0..{MAX_WORKERS}")
    if out is not None:
        if not isinstance(out, (str, os.PathLike)):
            raise ValueError(f"out={out!r}: want a path ending in .parquet or .csv")
        _check_out(Path(out))
    if isinstance(worker_wait, bool) or not isinstance(worker_wait, (int, float)) \
            or not 0 <= worker_wait <= 7 * 86400:
        raise ValueError(f"worker_wait={worker_wait!r}: want seconds, 0..{7 * 86400}")
    base, specs, scen_cache = plan(grid, scenario)
    run_fn = run_fn or _default_run_fn()
    name = _scenario_name(base)

    def payload(spec: RunSpec):
        return scen_cache[spec.params]

    description = _scenario_description(base)
    version = _version()
    meta = {"kvmpt_version": version, "scenario": name, "scenario_definition": description,
            "grid": grid.to_dict(), "param_columns": list(grid.param_names),
            "design_columns": list(DESIGN_COLUMNS)}
    blob = json.dumps([version, name, description, source_fingerprint()], sort_keys=True,
                      default=str)
    fingerprint = hashlib.sha256(blob.encode()).hexdigest()[:_KEY_HEX]

    meta["fingerprint"] = fingerprint
    log = None
    records: dict[str, dict] = {}
    if out is not None:
        wanted = {s.key for s in specs}
        if resume:      # runs of an earlier, finished sweep into the same file count as done
            records.update(_records_from_table(out, fingerprint, wanted, retry_failed))
        header = {"kvmpt_sweep_log": _LOG_FORMAT, **meta}
        log = _RunLog(log_path_for(out), header, resume)
        for k, rec in log.done.items():
            if k in wanted and (rec["status"] == "ok" or not retry_failed):
                records[k] = rec
    resumed = len(records)
    todo = [s for s in specs if s.key not in records]

    bar = None
    if progress and todo:
        try:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(specs), initial=resumed, desc=f"sweep {name}", unit="run",
                       disable=not sys.stderr.isatty(), file=sys.stderr, dynamic_ncols=True)
        except ImportError:
            bar = None
    n_failed_now = 0

    def on_done(spec: RunSpec, rec: dict) -> None:
        nonlocal n_failed_now
        rec = dict(rec, index=spec.index, seed=spec.seed, params=spec.params_dict,
                   design=spec.design.name)
        records[spec.key] = rec
        if rec["status"] != "ok":
            n_failed_now += 1
        if log is not None:
            log.append(rec)
        if bar is not None:
            bar.update(1)
            if n_failed_now:
                bar.set_postfix(failed=n_failed_now, refresh=False)

    t0 = time.perf_counter()
    own_client = None
    try:
        if todo:
            if scheduler is not None or client is not None:
                if client is None:
                    from distributed import Client
                    own_client = client = Client(scheduler, timeout="20s")
                _run_dask(todo, payload, run_fn, client, on_done, worker_wait)
            elif workers == 0 or (workers is None and (os.cpu_count() or 1) == 1) \
                    or len(todo) == 1 and workers is None:
                _run_serial(todo, payload, run_fn, on_done)
            else:
                _run_local(todo, payload, run_fn, workers or os.cpu_count() or 1, on_done)
    finally:
        if bar is not None:
            bar.close()
        if own_client is not None:
            own_client.close()
        if log is not None:
            log.close()
    elapsed = time.perf_counter() - t0

    table = _assemble(specs, records, grid, name, meta)
    table.stats = {"runs": len(specs), "ran": len(todo), "resumed": resumed,
                   "failed": len(table.failed()), "elapsed_s": elapsed}
    if out is not None:
        table.save(out)
        if not table.failed() and not keep_log:
            log_path_for(out).unlink(missing_ok=True)
    return table


def _check_out(out: Path, make: bool = True) -> None:
    """The output path: ``.parquet`` or ``.csv``, in a directory (made if missing) that is
    a directory; said before any run, in words, not as ``File exists``."""
    if out.suffix not in (".parquet", ".csv"):
        raise ValueError(f"{out}: output must end in .parquet or .csv")
    if out.is_dir():
        raise ValueError(f"{out}: is a directory")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{out}: {parent} is a file, not a directory")
            break
    if not make:
        return
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{out}: cannot make {out.parent}: {exc.strerror or exc}") from None


def _records_from_table(out, fingerprint: str, wanted: set[str],
                        retry_failed: bool) -> dict[str, dict]:
    """Run records rebuilt from a table :func:`sweep` saved at ``out`` (so ``resume`` can
    extend a finished sweep's grid); nothing if it is missing or from another scenario/version."""
    try:
        old = load_table(out)
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    if old.meta.get("fingerprint") != fingerprint or "key" not in old.columns:
        return {}
    metrics = old.metric_columns
    recs = {}
    for r in old.rows:
        if r["key"] in wanted and (r.get("status") == "ok" or not retry_failed):
            recs[r["key"]] = {"key": r["key"], "status": r.get("status"), "error": r.get("error"),
                              "summary": {m: r[m] for m in metrics if r.get(m) is not None}}
    return recs


def _assemble(specs, records, grid, name, meta) -> SweepTable:
    pcols = list(grid.param_names)
    fixed = set(_LEAD_COLUMNS) | set(DESIGN_COLUMNS) | set(_STATUS_COLUMNS) | set(pcols)
    metric_cols: list[str] = []
    rows = []
    for spec in specs:
        rec = records[spec.key]
        row: dict[str, Any] = {"run": spec.index, "key": spec.key, "scenario": name,
                               "design": spec.design.name, **_design_knobs(spec.design)}
        row.update(spec.params_dict)
        row.update(seed=spec.seed, status=rec["status"], error=rec.get("error"))
        for k, v in (rec.get("summary") or {}).items():
            if k in fixed:
                if row.get(k) == v:
                    continue          # the summary echoes a parameter: keep one column
                k = f"summary_{k}"
            if k not in metric_cols:
                metric_cols.append(k)
            row[k] = v
        rows.append(row)
    columns = [*_LEAD_COLUMNS, *DESIGN_COLUMNS, *pcols, *_STATUS_COLUMNS, *metric_cols]
    for r in rows:
        for c in metric_cols:
            r.setdefault(c, None)
    meta = dict(meta, metric_columns=metric_cols, n_runs=len(rows),
                n_failed=sum(r["status"] != "ok" for r in rows))
    return SweepTable(rows, columns, meta)


def diff(a: SweepTable, b: SweepTable) -> str:
    """The first difference between two tables, in words ('' if they are equal)."""
    if a.columns != b.columns:
        return (f"columns differ: only in the first {sorted(set(a.columns) - set(b.columns))}, "
                f"only in the second {sorted(set(b.columns) - set(a.columns))}")
    if len(a) != len(b):
        return f"{len(a)} rows vs {len(b)}"
    for ra, rb in zip(a.rows, b.rows):
        for c in a.columns:
            if ra.get(c) != rb.get(c):
                return (f"run {ra.get('run')} ({ra.get('key')}): {c} = {ra.get(c)!r} "
                        f"vs {rb.get(c)!r}")
    return ""


# ---------------------------------------------------------------------------
# Benchmark: runs/s locally vs on a 2-worker LocalCluster

def bench(grid: Grid | None = None, scenario: Any = None, run_fn: Callable | None = None,
          n_workers: int = 2, file=None) -> dict[str, float]:
    """Time the same sweep on a local process pool and on a ``LocalCluster`` of ``n_workers``
    single-threaded worker processes on 127.0.0.1; print runs/s for each and their ratio."""
    file = file or sys.stdout
    if grid is None:
        grid = Grid(BENCH_PARAMS, designs=["v6.5", "v6.6"], seeds=BENCH_SEEDS)
    from distributed import Client, LocalCluster
    t0 = time.perf_counter()
    local = sweep(grid, scenario, workers=n_workers, progress=False, run_fn=run_fn)
    t_local = time.perf_counter() - t0
    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                      host="127.0.0.1", dashboard_address=None) as cluster, \
            Client(cluster) as client:
        client.run(_worker_init)
        t0 = time.perf_counter()
        dist = sweep(grid, scenario, client=client, progress=False, run_fn=run_fn)
        t_dask = time.perf_counter() - t0
    if dist != local:
        raise RuntimeError("the Dask sweep's table differs from the local one: "
                           + diff(local, dist))
    n = len(local)
    res = {"runs": n, "local_runs_per_s": n / t_local, "dask_runs_per_s": n / t_dask,
           "ratio": (n / t_dask) / (n / t_local)}
    print(f"sweep benchmark: {n} runs of scenario {local.meta['scenario']!r}, "
          f"{n_workers} workers", file=file)
    print(f"  local process pool      {res['local_runs_per_s']:8.1f} runs/s  "
          f"({t_local:.2f} s)", file=file)
    print(f"  LocalCluster (dask)     {res['dask_runs_per_s']:8.1f} runs/s  "
          f"({t_dask:.2f} s)", file=file)
    print(f"  ratio dask/local        {res['ratio']:8.2f}", file=file)
    return res


#: the benchmark's default grid: short runs, enough of them to amortize process start-up
BENCH_SEEDS = 5
BENCH_PARAMS: dict[str, list[Any]] = {
    "duration_s": [0.05], "tracked_gfns": [0, 1000, 4000], "churn": ["desktop", "adversarial"]}


# ---------------------------------------------------------------------------
# kvmpt sweep

def add_arguments(p) -> None:
    p.description = (
        "Run one scenario over a grid of designs x workload parameters x seeds and write a "
        "tidy table: one row per run with its parameters, design knobs, seed, status and "
        "every summary metric.  Runs in parallel on this machine's cores, or on a Dask "
        "cluster with --scheduler; with --out, finished runs are logged to OUT.runs.jsonl "
        "so --resume can skip them after an interruption.")
    p.epilog = ("Exit status: 0 when every run succeeded, 1 when some runs failed (they are "
                "rows with status=error), 2 for bad input.")
    p.add_argument("--grid", metavar="FILE",
                   help="grid file (TOML: optional scenario, designs, seeds, and a [params] "
                        "table of name = [values]); --param/--designs/--seeds override it")
    p.add_argument("--param", "-p", action="append", default=[], metavar="NAME=V1,V2,...",
                   help="sweep a scenario parameter over these values (repeatable), e.g. "
                        "ram_gib=1,64,1024 or tracked_gfns=0,4000,100_000")
    p.add_argument("--scenario", metavar="NAME|FILE",
                   help="the scenario to run (default: the grid file's, else the default one)")
    p.add_argument("--designs", metavar="LIST",
                   help="comma-separated designs: v6.5, v6.6, all (the 32 combinations) or "
                        "names like flush/allow-move/none/drop; separate knob specs "
                        "(slot_hook=flush,move=allow,...) with ';' (default: v6.5,v6.6)")
    p.add_argument("--seeds", metavar="LIST",
                   help="seeds as a cpulist, e.g. 0-4 or 0,1,7 (default: the grid file's, else 0)")
    p.add_argument("--out", "-o", metavar="FILE",
                   help="write the table to FILE.parquet or FILE.csv (with a .csv.json "
                        "sidecar); default: CSV on stdout, no run log")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="run on a Dask cluster, e.g. tcp://10.0.0.1:8786, instead of locally")
    p.add_argument("--worker-wait", type=float, default=WORKER_WAIT_S, metavar="SECONDS",
                   help="with --scheduler: how long to wait while the cluster has no live "
                        f"worker before giving up (default {WORKER_WAIT_S:g})")
    p.add_argument("--workers", "-j", type=int, metavar="N",
                   help="local worker processes (default: one per core; 0 = serial, in this "
                        "process)")
    p.add_argument("--resume", action="store_true",
                   help="skip runs already in OUT.runs.jsonl or in the table at OUT (needs "
                        "--out): restarts an interrupted sweep, or grows a finished one by "
                        "the grid's new points; without it every run is done again")
    p.add_argument("--retry-failed", action="store_true",
                   help="with --resume, run again the runs the log records as failed")
    p.add_argument("--keep-log", action="store_true",
                   help="keep OUT.runs.jsonl after a sweep with no failures")
    p.add_argument("--list-params", action="store_true",
                   help="print the scenario's parameters (what --param can sweep) with their "
                        "values and documented ranges, and exit")
    p.add_argument("--dry-run", action="store_true",
                   help="print the number of runs and the grid, run nothing")
    p.add_argument("--bench", action="store_true",
                   help="benchmark: runs/s of a small sweep on a local pool vs a 2-worker "
                        "LocalCluster on 127.0.0.1, and their ratio")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary line")


def _grid_from_args(args) -> tuple[Grid, Any]:
    """The grid of ``kvmpt sweep``: the ``--grid`` file (either form), then ``--param``,
    ``--designs`` and ``--seeds`` over it; each key remembers where it came from, so an
    error names the file and line or the option."""
    spec: dict[str, Any] = {"params": {}}
    origin: dict[str, str] = {}
    if args.grid:
        spec, origin = read_grid(args.grid)
    params = dict(spec.get("params") or {})
    for text in args.param:
        k, vals = parse_param(text)
        params[k] = vals
        origin[k] = f"--param {text}"
    designs, seeds = spec.get("designs"), spec.get("seeds")
    if args.designs:
        designs, origin["designs"] = args.designs, f"--designs {args.designs}"
    if args.seeds:
        seeds, origin["seeds"] = args.seeds, f"--seeds {args.seeds}"
    if args.scenario:
        origin["scenario"] = f"--scenario {args.scenario}"
    elif "scenario" not in spec:
        origin.pop("scenario", None)
    grid = Grid(params, designs=designs, seeds=seeds, origin=origin)
    return grid, args.scenario or spec.get("scenario")


def _param_listing(sc) -> str:
    """The scenario's sweepable parameters: name, value, range and tag where it has them."""
    params = sc.parameters() if callable(getattr(sc, "parameters", None)) else (
        {f.name: getattr(sc, f.name) for f in dataclasses.fields(sc)}
        if dataclasses.is_dataclass(sc) else {})
    rows = [("parameter", "value", "range", "tag")]
    for k, v in params.items():
        if k in ("name", "seed"):
            continue
        rng = tag = ""
        fig = None
        if callable(getattr(sc, "figure", None)):
            try:
                fig = sc.figure(k)
            except (KeyError, ValueError, AttributeError, TypeError):
                fig = None
        if fig is not None:
            lo, hi = getattr(fig, "low", None), getattr(fig, "high", None)
            rng = f"{lo:g} .. {hi:g}" if isinstance(lo, (int, float)) and \
                isinstance(hi, (int, float)) else ""
            tag = (getattr(fig, "tag", "") or "") if rng else ""
        rows.append((k, "-" if v is None else f"{v:g}" if isinstance(v, float) else str(v),
                     rng, tag))
    w = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [f"scenario {_scenario_name(sc)} (seeds: --seeds; designs: --designs)"]
    lines += ["  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip() for r in rows]
    return "\n".join(lines) + "\n"


def run(args) -> int:
    if args.retry_failed and not args.resume:
        raise ValueError("--retry-failed needs --resume")
    if args.resume and not args.out:
        raise ValueError("--resume needs --out (the run log lives beside the output)")
    if args.workers is not None and not 0 <= args.workers <= MAX_WORKERS:
        raise ValueError(f"--workers {args.workers}: want 0..{MAX_WORKERS}")
    if args.out:
        _check_out(Path(args.out), make=False)
    if args.bench:
        grid = None
        if args.grid or args.param or args.designs or args.seeds:
            grid, _ = _grid_from_args(args)
        bench(grid, args.scenario)
        return 0
    grid, scenario = _grid_from_args(args)
    if args.list_params:
        sys.stdout.write(_param_listing(_resolve_scenario(scenario)))
        return 0
    if args.dry_run:
        base, _, _ = plan(grid, scenario, expand=False)
        print(f"{len(grid)} runs of scenario {_scenario_name(base)!r}: "
              f"{json.dumps(grid.to_dict())}")
        return 0
    _exit_on_second_interrupt()
    table = sweep(grid, scenario, out=args.out, scheduler=args.scheduler,
                  workers=args.workers, progress=not args.quiet, resume=args.resume,
                  retry_failed=args.retry_failed, keep_log=args.keep_log,
                  worker_wait=args.worker_wait)
    if args.out is None:
        sys.stdout.write(table.to_csv())
    st = table.stats
    if not args.quiet:
        where = f" -> {args.out}" if args.out else ""
        print(f"kvmpt sweep: {st['runs']} runs ({st['ran']} run now, {st['resumed']} already "
              f"done), {st['failed']} failed, {st['elapsed_s']:.1f} s{where}", file=sys.stderr)
        if st["failed"] and args.out:
            print(f"kvmpt sweep: failed runs are in {args.out} (status=error) and "
                  f"{log_path_for(args.out)}; rerun with --resume --retry-failed",
                  file=sys.stderr)
    return 1 if st["failed"] else 0


def _exit_on_second_interrupt() -> None:
    """The first Ctrl-C stops the sweep cleanly (KeyboardInterrupt: the pool is stopped,
    the run log closed, ``kvmpt: interrupted``); a second one, while that cleanup runs,
    exits at once with status 130 and no traceback (the run log is flushed per line)."""
    if threading.current_thread() is not threading.main_thread():
        return
    pressed = []

    def handler(signum, frame):
        if pressed:
            os.write(2, b"kvmpt: interrupted again: exiting now\n")
            os._exit(130)
        pressed.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)


class _CallableModule(types.ModuleType):
    """``kvmpt.sweep`` is both this module and the function: ``kvmpt.sweep(grid, ...)`` and
    ``kvmpt.sweep.Grid`` both work, whichever was touched first."""

    def __call__(self, *args, **kwargs) -> SweepTable:
        return sweep(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
