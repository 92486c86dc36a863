"""A sweep's result: a ``pyarrow.Table``, one row per run in grid order, and its files.

The data is the Arrow table (:attr:`SweepTable.arrow`); what it was made from (grid,
scenario, kvmpt version, which columns are parameters and metrics) is its schema metadata
under :data:`META_KEY`, so a saved ``.parquet`` file carries it.  :class:`SweepTable` adds
only the run counts of the sweep that made it (``stats``, never saved: they would make two
identical sweeps differ) and a few names over the Arrow table that figures, tests and the
command use: ``column``, ``where``, ``failed``, ``param_columns``, ``metric_columns``.

Files: ``.parquet`` (pyarrow, zstd) or ``.csv`` (stdlib ``csv``: None is an empty field,
floats are ``repr`` so they round-trip) with a sidecar ``<name>.csv.json`` holding the same
metadata plus the column types.  :func:`load_table` reads either back.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import pyarrow as pa

from kvmpt.infra.paths import DATA_DIR
from kvmpt.constants import KNOBS

__all__ = ["SweepTable", "load_table", "row_matches", "assemble", "diff", "META_KEY", "SWEEP_DIR",
           "LEAD_COLUMNS", "DESIGN_COLUMNS", "STATUS_COLUMNS", "RESERVED"]

#: columns every table has: these, then the parameters, then the status columns, then metrics
LEAD_COLUMNS = ("run", "key", "scenario")
DESIGN_COLUMNS = ("design", *KNOBS)
STATUS_COLUMNS = ("seed", "status", "error")
#: names a swept parameter cannot have
RESERVED = frozenset(LEAD_COLUMNS + DESIGN_COLUMNS + STATUS_COLUMNS + ("designs", "seeds"))
#: metadata key in Parquet schema metadata and the CSV sidecar
META_KEY = "kvmpt.sweep"
#: where the committed sweeps live (data/sweeps/, shipped as package data)
SWEEP_DIR = DATA_DIR / "sweeps"

#: a column's type name (the CSV sidecar's ``column_types``) <-> its Arrow type
_ARROW_TYPES = {"bool": pa.bool_(), "int": pa.int64(), "float": pa.float64(), "str": pa.string()}
_TYPE_NAMES = {t: name for name, t in _ARROW_TYPES.items()}


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


def _arrow_column(values: list[Any], kind: str) -> pa.Array:
    if kind == "float":
        values = [None if v is None else float(v) for v in values]
    elif kind == "str":
        values = [None if v is None else str(v) for v in values]
    return pa.array(values, type=_ARROW_TYPES[kind])


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
    """A sweep's tidy table: :attr:`arrow` (a ``pyarrow.Table`` with the metadata) and
    :attr:`stats` (runs done now, resumed from the log, failed; not saved)."""

    def __init__(self, arrow: pa.Table, stats: Mapping[str, Any] | None = None):
        self.arrow = arrow
        self.stats = dict(stats or {})
        md = arrow.schema.metadata or {}
        self.meta: dict[str, Any] = json.loads(md.get(META_KEY.encode(), b"{}"))

    @classmethod
    def from_rows(cls, rows: Sequence[Mapping[str, Any]], columns: Sequence[str],
                  meta: Mapping[str, Any], types: Mapping[str, str] | None = None
                  ) -> "SweepTable":
        """From row dicts; each column's type is ``types[c]`` or the narrowest that holds
        its values (bool, int, float, else str)."""
        arrays, fields = [], []
        for c in columns:
            vals = [r.get(c) for r in rows]
            kind = (types or {}).get(c) or _col_type(vals)
            arrays.append(_arrow_column(vals, kind))
            fields.append(pa.field(c, _ARROW_TYPES[kind]))
        schema = pa.schema(fields, metadata={META_KEY: json.dumps(dict(meta), sort_keys=True)})
        return cls(pa.Table.from_arrays(arrays, schema=schema))

    # -- reading ------------------------------------------------------------
    @property
    def columns(self) -> list[str]:
        return self.arrow.column_names

    @property
    def rows(self) -> list[dict[str, Any]]:
        return self.arrow.to_pylist()

    def __len__(self) -> int:
        return self.arrow.num_rows

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows)

    def __getitem__(self, name: str) -> list[Any]:
        return self.column(name)

    def __eq__(self, other: object) -> bool:
        """Same columns, types and values (the metadata and stats may differ)."""
        if not isinstance(other, SweepTable):
            return NotImplemented
        return self.arrow.equals(other.arrow)

    def __repr__(self) -> str:
        return (f"SweepTable({len(self)} runs x {len(self.columns)} columns, "
                f"scenario={self.meta.get('scenario')!r}, failed={len(self.failed())})")

    def column(self, name: str) -> list[Any]:
        if name not in self.columns:
            raise KeyError(f"no column {name!r}; columns: {', '.join(self.columns)}")
        return self.arrow.column(name).to_pylist()

    @property
    def param_columns(self) -> list[str]:
        return list(self.meta.get("param_columns", []))

    @property
    def metric_columns(self) -> list[str]:
        return list(self.meta.get("metric_columns", []))

    def where(self, **equals: Any) -> "SweepTable":
        """The rows whose columns equal the given values (a list value means "any of")."""
        mask = pa.array([row_matches(r, equals) for r in self.rows], type=pa.bool_())
        return SweepTable(self.arrow.filter(mask))

    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r.get("status") != "ok"]

    def column_types(self) -> dict[str, str]:
        return {f.name: _TYPE_NAMES.get(f.type, "str") for f in self.arrow.schema}

    def to_dict(self) -> dict[str, list[Any]]:
        """Dict of columns."""
        return self.arrow.to_pydict()

    def to_arrow(self) -> pa.Table:
        return self.arrow

    def to_pandas(self):
        return self.arrow.to_pandas()

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
        import pyarrow.parquet as pq
        tmp = Path(str(path) + ".tmp")
        try:
            pq.write_table(self.arrow, tmp, compression="zstd")
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
            w.writerow(["" if v is None else repr(v) if isinstance(v, float) else v
                        for v in r.values()])
        if path is None:
            return buf.getvalue()
        p = Path(path)
        _atomic_write(p, buf.getvalue())
        side = dict(self.meta, column_types=self.column_types())
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
        return SweepTable(pq.read_table(p))
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
        return SweepTable.from_rows(rows, columns, meta,
                                    types={c: ctypes.get(c, "str") for c in columns})
    raise ValueError(f"{p}: a sweep table ends in .parquet or .csv")


def assemble(specs: Sequence[Any], records: Mapping[str, Mapping[str, Any]],
             param_names: Sequence[str], scenario_name: str, meta: Mapping[str, Any]
             ) -> SweepTable:
    """The table of a sweep: one row per run spec (in their order) from its record, the
    metrics in the order the runs' summaries first gave them."""
    pcols = list(param_names)
    fixed = set(LEAD_COLUMNS) | set(DESIGN_COLUMNS) | set(STATUS_COLUMNS) | set(pcols)
    metric_cols: list[str] = []
    rows = []
    for spec in specs:
        rec = records[spec.key]
        row: dict[str, Any] = {"run": spec.index, "key": spec.key, "scenario": scenario_name,
                               "design": spec.design.name, **spec.design.knobs()}
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
    columns = [*LEAD_COLUMNS, *DESIGN_COLUMNS, *pcols, *STATUS_COLUMNS, *metric_cols]
    meta = dict(meta, metric_columns=metric_cols, n_runs=len(rows),
                n_failed=sum(r["status"] != "ok" for r in rows))
    return SweepTable.from_rows(rows, columns, meta)


def diff(a: SweepTable, b: SweepTable) -> str:
    """The first difference between two tables, in words ('' if they are equal)."""
    if a.columns != b.columns:
        return (f"columns differ: only in the first {sorted(set(a.columns) - set(b.columns))}, "
                f"only in the second {sorted(set(b.columns) - set(a.columns))}")
    if len(a) != len(b):
        return f"{len(a)} rows vs {len(b)}"
    if a.arrow.schema.types != b.arrow.schema.types:
        return f"column types differ: {a.column_types()} vs {b.column_types()}"
    for ra, rb in zip(a.rows, b.rows):
        for c in a.columns:
            if ra.get(c) != rb.get(c):
                return (f"run {ra.get('run')} ({ra.get('key')}): {c} = {ra.get(c)!r} "
                        f"vs {rb.get(c)!r}")
    return ""
