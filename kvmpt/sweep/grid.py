"""The grid of a sweep: workload parameters x designs x seeds, expanded to :class:`RunSpec`\\ s.

Expansion is a cartesian product in a fixed order: parameters in the order given, the first
varying slowest, then the design, then the seed (fastest).  Each run has a stable key, a hash
of (scenario name, parameters, design knobs, seed), so a run is the same run whatever grid it
appears in.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from kvmpt.kernel.design import Design
from kvmpt.sweep.parse import MAX_RUNS, GridError, grid_spec, parse_designs, parse_seeds, read_grid
from kvmpt.sweep.table import RESERVED

__all__ = ["Grid", "RunSpec", "run_key", "KEY_HEX"]

#: hex digits of a run key and of a run log's fingerprint
KEY_HEX = 16


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


def run_key(scenario_name: str, params: Mapping[str, Any], design: Design, seed: int) -> str:
    """The stable key of one run: a hash of its scenario name, parameters, design and seed."""
    blob = json.dumps({"scenario": scenario_name, "params": dict(sorted(params.items())),
                       "design": design.knobs(), "seed": seed},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:KEY_HEX]


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
            if name in RESERVED:
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


