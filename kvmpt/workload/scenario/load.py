"""Reading a scenario file: :func:`load_scenario` and :func:`list_scenarios`.

A scenario file (``data/scenarios/NAME.toml``) has five tables, ``[scenario]``,
``[vm]``, ``[tracking]``, ``[writes]`` and ``[churn]`` (:data:`_SCHEMA`).  Every
figure in it is an inline table ``{ value, low, high, tag, source }`` so its data
tag and range travel with it.  The file is read by ``kvmpt.infra.tomlfile`` (the
one input reader); every error names the file, the line, the table and the field.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from kvmpt.constants import TAGS
from kvmpt.infra.tomlfile import (Field, check_table, located, names, number_problem,
                                  read_toml, resolve)
from kvmpt.workload.layouts import load_layout
from kvmpt.workload.scenario.definition import (CHURN_RATES, SCENARIO_DIR, TRACE_DIR, Figure,
                                                Scenario, ScenarioError)

__all__ = ["load_scenario", "list_scenarios"]

#: a figure: an inline table {value, low, high, tag, source}, checked by :func:`_figure`
_FIG = Field(dict, required=False)
_FIG_REQUIRED = Field(dict)
_STR = Field(str, required=False)

#: the file's shape: table -> {field: Field} (``kvmpt.infra.tomlfile.check_table``).  The
#: values (ranges, choices, a layout that fits ``ram_gib``) are the Scenario's own checks
#: (``definition._validate``), reported here at the field's line (:data:`_FIELD_AT`).
_SCHEMA: dict[str, dict[str, Field]] = {
    "scenario": {"name": Field(str), "description": Field(str), "seed": Field(int)},
    "vm": {"layout": Field(str), "boot": _STR, "ram_gib": _FIG},
    "tracking": {"tracked_gfns": _FIG_REQUIRED, "track_at": _STR},
    "writes": {"write_rate": _FIG_REQUIRED, "pt_fraction": _FIG, "hot_fraction": _FIG,
               "hot_share": _FIG, "duration_s": _FIG_REQUIRED},
    "churn": {"profile": Field(str), "vars_pairs": _FIG, "reboot_order": _STR,
              **{k: _FIG for k in CHURN_RATES}},
}


def list_scenarios() -> list[str]:
    """The scenarios shipped in ``data/scenarios/``."""
    return names(SCENARIO_DIR)


def _resolve(name_or_path) -> Path:
    return resolve(SCENARIO_DIR, name_or_path, "scenario", ScenarioError)


def _figure(path, loc, table, key, raw) -> Figure:
    def err(msg):
        return ScenarioError(located(path, loc, (table,), key, msg))

    if not isinstance(raw, dict):
        raise err("must be an inline table { value = ..., low = ..., high = ..., tag = "
                  "\"[G]\", source = \"...\" } so the figure keeps its tag and range")
    for k in raw:
        if k not in ("value", "low", "high", "tag", "source"):
            raise err(f"unknown key {k!r} in the figure (known: value, low, high, tag, source)")
    for k in ("value", "tag", "source"):
        if k not in raw:
            raise err(f"the figure lacks '{k}'")
    for k in ("value", "low", "high"):
        if k in raw:
            why = number_problem(raw[k])
            if why:
                raise err(f"'{k}' {why}")
    if raw["tag"] not in TAGS:
        raise err(f"tag {raw['tag']!r} is not one of {' '.join(TAGS)}")
    if not isinstance(raw["source"], str) or not raw["source"].strip():
        raise err("source must be a non-empty string")
    lo, hi, v = raw.get("low"), raw.get("high"), raw["value"]
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise err(f"value {v} is outside its range low={lo} .. high={hi}")
    return Figure(v, lo, hi, raw["tag"], raw["source"])


def load_scenario(name_or_path) -> Scenario:
    """Load and validate a scenario by name (a file in ``data/scenarios/``) or path."""
    if isinstance(name_or_path, Scenario):
        return name_or_path
    path = _resolve(name_or_path)
    doc, loc = read_toml(path, ScenarioError)
    for key, val in doc.items():
        if key not in _SCHEMA:
            raise ScenarioError(located(path, loc, (key,) if isinstance(val, dict) else (),
                                        None if isinstance(val, dict) else key,
                                        f"unknown top-level entry (known tables: "
                                        f"{', '.join('[' + t + ']' for t in _SCHEMA)})"))
    kw: dict[str, Any] = {}
    figs: dict[str, Figure] = {}
    for table, spec in _SCHEMA.items():
        if table not in doc:
            raise ScenarioError(f"{path}: missing [{table}] table")
        entries = doc[table]
        if not isinstance(entries, dict):
            raise ScenarioError(located(path, loc, (), table, "must be a table"))
        for key, raw in entries.items():      # a plain number where a figure belongs: say why
            if key in spec and spec[key].kind is dict and not isinstance(raw, dict):
                _figure(path, loc, table, key, raw)
        check_table(ScenarioError, path, loc, (table,), entries, spec)
        for key, f in spec.items():
            if key not in entries:
                continue
            if f.kind is dict:
                figs[key] = _figure(path, loc, table, key, entries[key])
                kw[key] = figs[key].value
            else:
                kw[key] = entries[key]
    # references, reported at their line
    if kw["name"] != path.stem:
        raise ScenarioError(located(path, loc, ("scenario",), "name",
                                    f"{kw['name']!r} differs from the file name {path.stem!r}"))
    try:
        load_layout(kw["layout"])
    except ValueError as exc:
        raise ScenarioError(located(path, loc, ("vm",), "layout", str(exc))) from None
    boot = kw.get("boot", "layout")
    if boot != "layout":
        if not boot.startswith("trace:") or not (TRACE_DIR / f"{boot[6:]}.trace").exists():
            known = ", ".join("trace:" + p.stem for p in sorted(TRACE_DIR.glob("*.trace")))
            raise ScenarioError(located(path, loc, ("vm",), "boot",
                                        f"{boot!r} is neither 'layout' nor one of {known}"))
    kw["churn"] = kw.pop("profile")
    try:
        return Scenario(**kw, figures=figs, path=path)
    except ScenarioError as exc:
        table, key = _FIELD_AT.get(exc.field, ("scenario", None))
        raise ScenarioError(located(path, loc, (table,), key, exc.problem), field=exc.field,
                            problem=exc.problem) from None


#: parameter -> (table, key) in a scenario file, for locating a validation error
_FIELD_AT = {key: (table, key) for table, spec in _SCHEMA.items() for key in spec}
_FIELD_AT["churn"] = ("churn", "profile")
