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
from kvmpt.infra.tomlfile import located, names, number_problem, read_toml, resolve
from kvmpt.workload.layouts import load_layout
from kvmpt.workload.scenario.definition import (_BOUNDS, CHURN_RATES, PROFILES, REBOOT_ORDERS,
                                                SCENARIO_DIR, TRACE_DIR, TRACK_AT, Figure,
                                                Scenario, ScenarioError, _resize_ram)

__all__ = ["load_scenario", "list_scenarios"]

#: file layout: table -> {field: kind}.  "figure" = inline table {value, low, high, tag, source}
_SCHEMA: dict[str, dict[str, str]] = {
    "scenario": {"name": "str", "description": "str", "seed": "int"},
    "vm": {"layout": "str", "boot": "str", "ram_gib": "figure"},
    "tracking": {"tracked_gfns": "figure", "track_at": "str"},
    "writes": {"write_rate": "figure", "pt_fraction": "figure", "hot_fraction": "figure",
               "hot_share": "figure", "duration_s": "figure"},
    "churn": {"profile": "str", "vars_pairs": "figure", "reboot_order": "str",
              **{k: "figure" for k in CHURN_RATES}},
}
_REQUIRED = {
    "scenario": ("name", "description", "seed"),
    "vm": ("layout",),
    "tracking": ("tracked_gfns",),
    "writes": ("write_rate", "duration_s"),
    "churn": ("profile",),
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
    bounds = _BOUNDS.get(key)
    if bounds:
        bmin, bmax, integer = bounds
        if not bmin <= v <= bmax:
            raise err(f"value {v} is outside {bmin}..{bmax}")
        if integer and isinstance(v, float):
            raise err(f"value must be an integer, got {v!r}")
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
        for key in entries:
            if key not in spec:
                raise ScenarioError(located(path, loc, (table,), key,
                                            f"unknown field (known: {', '.join(spec)})"))
        for key in _REQUIRED[table]:
            if key not in entries:
                raise ScenarioError(located(path, loc, (table,), None,
                                            f"missing field '{key}'"))
        for key, kind in spec.items():
            if key not in entries:
                continue
            raw = entries[key]
            if kind == "figure":
                fig = _figure(path, loc, table, key, raw)
                figs[key] = fig
                kw[key] = fig.value
            elif kind == "int":
                if isinstance(raw, bool) or not isinstance(raw, int):
                    raise ScenarioError(located(path, loc, (table,), key,
                                                f"must be an integer, got {raw!r}"))
                kw[key] = raw
            else:
                if not isinstance(raw, str):
                    raise ScenarioError(located(path, loc, (table,), key,
                                                f"must be a string, got {raw!r}"))
                kw[key] = raw
    # references and enumerations, reported at their line
    if kw["name"] != path.stem:
        raise ScenarioError(located(path, loc, ("scenario",), "name",
                                    f"{kw['name']!r} differs from the file name {path.stem!r}"))
    checks = (("churn", "profile", kw["profile"], tuple(PROFILES)),
              ("tracking", "track_at", kw.get("track_at", "after-boot"), TRACK_AT),
              ("churn", "reboot_order", kw.get("reboot_order", "relayout-first"), REBOOT_ORDERS))
    for table, key, val, allowed in checks:
        if val not in allowed:
            raise ScenarioError(located(path, loc, (table,), key,
                                        f"{val!r} is not one of {', '.join(allowed)}"))
    try:
        lay = load_layout(kw["layout"])
    except ValueError as exc:
        raise ScenarioError(located(path, loc, ("vm",), "layout", str(exc))) from None
    boot = kw.get("boot", "layout")
    if boot != "layout":
        if not boot.startswith("trace:") or not (TRACE_DIR / f"{boot[6:]}.trace").exists():
            known = ", ".join("trace:" + p.stem for p in sorted(TRACE_DIR.glob("*.trace")))
            raise ScenarioError(located(path, loc, ("vm",), "boot",
                                        f"{boot!r} is neither 'layout' nor one of {known}"))
    if "ram_gib" in kw and boot != "layout":
        raise ScenarioError(located(path, loc, ("vm",), "ram_gib",
                                    "cannot resize a traced boot (the trace creates its own RAM "
                                    "slots); use boot = \"layout\""))
    if "ram_gib" in kw:
        try:
            _resize_ram(lay, kw["ram_gib"])
        except ValueError as exc:
            raise ScenarioError(located(path, loc, ("vm",), "ram_gib", str(exc))) from None
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
