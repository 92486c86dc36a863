"""Named, seeded scenarios and ``run(scenario, design)``: the numbers of the review.

A scenario (a TOML file in ``data/scenarios/``) names

* a VM **layout** from ``data/layouts/`` (``kvmpt.workload.layouts``) and how it boots:
  ``boot = "layout"`` builds the layout and replays its ``[[churn]]`` entries,
  ``boot = "trace:NAME"`` replays a real QEMU boot trace from ``data/traces/``
  (then adds layout slots the trace lacks, such as the vGPU aperture);
* a **tracked set**: ``tracked_gfns`` guest page-table pages GVT shadows once
  the guest i915 driver loads, placed in the RAM slots in runs of 1-64
  (``kvmpt.workload.replay.place_tracked``, workloads.md §2.2);
* a **guest write stream**: ``write_rate`` writes/s for ``duration_s``
  seconds, a fraction ``pt_fraction`` aimed at shadowed page-table pages
  (``hot_share`` of those at the hottest ``hot_fraction`` of them), the rest
  spread over RAM;
* a **memslot op schedule** after the driver loads, from a churn
  **profile** (:data:`PROFILES`) whose rates the file may override: OVMF
  variable writes (pflash VARS slot DELETE/CREATE pairs), vGPU BAR toggle
  bursts, reboots, and for the adversarial VMM MOVEs of RAM slots with a
  fraction failing in prepare (``vm.fail_next_prepare(ENOMEM)``).  QEMU never
  MOVEs (workloads.md §1.6), so only the ``adversarial`` profile does.

Every figure in a scenario file is an inline table ``{ value, low, high, tag,
source }`` so its source tag and range travel with it.  Errors name the file,
the line, the table and the field.

:func:`run` applies the schedule to a fresh ``VM(design)`` in time order;
the guest writes that fall between two events run as one batch
(``vm.guest_write_batch``).  Every count in the result is the model's own
(``vm.work``, ``vm.hook_calls``, ``vm.write_stats``) and every cycle figure is
``kvmpt.workload.costs.CostModel``'s price of it.  The result has a flat ``summary``
(:data:`SUMMARY_METRICS`) and a per-op ``timeseries`` of NumPy columns.
"""
from __future__ import annotations

import errno as errno_mod
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from kvmpt.constants import GIB, RAM_ROLES
from kvmpt.infra.paths import DATA_DIR
from kvmpt.workload.costs import COUNTERS, TAGS, CostModel, default_costs
from kvmpt.kernel.design import Design
from kvmpt.workload.layouts import Churn, Layout, build_ops, churn_ops, final_state, load_layout
from kvmpt.kernel.memslot import CHANGES, REJECTED
from kvmpt.infra.tomlfile import InputError, located, names, number_problem, read_toml, resolve
from kvmpt.workload.trace import MemslotOp, load_qemu_trace
from kvmpt.kernel.vm import VM, WRITE_OUTCOMES
from kvmpt.kernel.work import HookCall, Work

__all__ = [
    "DEFAULT_SCENARIO", "SCENARIO_DIR", "TRACE_DIR", "PROFILES", "Figure", "Scenario", "ScenarioError",
    "RunResult", "load_scenario", "list_scenarios", "run", "SUMMARY_METRICS",
]

#: the scenario to use when none is named: the default VM and workload of workloads.md §5
DEFAULT_SCENARIO = "q35-desktop"
SCENARIO_DIR = DATA_DIR / "scenarios"
TRACE_DIR = DATA_DIR / "traces"
IOCTL_SPACING_S = 57e-6     # median spacing of back-to-back memslot ioctls [D] workloads.md §1.5


class ScenarioError(InputError):
    """A scenario file or override is malformed; the message names the file, line, table and
    field.  ``field`` is the parameter at fault when one is (None otherwise)."""

    def __init__(self, msg: str, field: str | None = None, problem: str | None = None):
        super().__init__(msg)
        self.field = field
        self.problem = problem if problem is not None else msg


@dataclass(frozen=True)
class Figure:
    """A number with its provenance: point value, range, tag and source."""

    value: float
    low: float | None = None
    high: float | None = None
    tag: str = "[G]"
    source: str = ""


# ---------------------------------------------------------------------------
# Churn profiles (rates of runtime memslot events after the guest driver loads)

def _f(value, low, high, tag, source) -> Figure:
    return Figure(value, low, high, tag, source)


_VARS_SRC = ("OVMF SetVariable at runtime: ~0.01-1 writes/s [G], each 3-5 VARS slot "
             "DELETE/CREATE pairs [G] (workloads.md §1.5, §5)")
_BAR_SRC = ("BAR toggle burst (7 DELETE/CREATE pairs of the vGPU BAR2 slot) on a guest "
            "driver reload [G]; burst shape [S] Peter Xu, kvm list, 27 Apr 2020 (workloads.md §1.5)")
_REBOOT_SRC = "guest reboot: most boot churn repeats (workloads.md §1.5 [D]); rate [G]"
_MOVE_SRC = ("adversarial VMM: 1 MOVE per 100-1,000 ops, 0.1-1% failing in prepare "
             "(workloads.md §5 [G]); QEMU issues none (§1.6 [S])")

#: profile -> default rates; a scenario may override each one.
PROFILES: dict[str, dict[str, Figure]] = {
    "quiet": {
        "vars_write_rate": _f(0.0, 0.0, 0.0, "[G]", "no runtime churn"),
        "bar_toggle_rate": _f(0.0, 0.0, 0.0, "[G]", "no runtime churn"),
        "reboot_rate": _f(0.0, 0.0, 0.0, "[G]", "no runtime churn"),
        "move_rate": _f(0.0, 0.0, 0.0, "[S]", "QEMU never MOVEs (workloads.md §1.6)"),
        "prepare_fail_rate": _f(0.0, 0.0, 0.0, "[G]", "no MOVE, nothing to fail"),
    },
    "desktop": {
        "vars_write_rate": _f(1.0, 0.01, 1.0, "[G]", _VARS_SRC),
        "bar_toggle_rate": _f(0.0, 0.0, 0.1, "[G]", _BAR_SRC),
        "reboot_rate": _f(0.0, 0.0, 0.0, "[G]", _REBOOT_SRC),
        "move_rate": _f(0.0, 0.0, 0.0, "[S]", "QEMU never MOVEs (workloads.md §1.6)"),
        "prepare_fail_rate": _f(0.0, 0.0, 0.0, "[G]", "no MOVE, nothing to fail"),
    },
    "driver-reload": {
        "vars_write_rate": _f(1.0, 0.01, 1.0, "[G]", _VARS_SRC),
        "bar_toggle_rate": _f(1.0, 0.1, 2.0, "[G]", _BAR_SRC),
        "reboot_rate": _f(0.0, 0.0, 0.0, "[G]", _REBOOT_SRC),
        "move_rate": _f(0.0, 0.0, 0.0, "[S]", "QEMU never MOVEs (workloads.md §1.6)"),
        "prepare_fail_rate": _f(0.0, 0.0, 0.0, "[G]", "no MOVE, nothing to fail"),
    },
    "reboot": {
        "vars_write_rate": _f(1.0, 0.01, 1.0, "[G]", _VARS_SRC),
        "bar_toggle_rate": _f(0.0, 0.0, 0.1, "[G]", _BAR_SRC),
        "reboot_rate": _f(1.0, 0.1, 2.0, "[G]", _REBOOT_SRC),
        "move_rate": _f(0.0, 0.0, 0.0, "[S]", "QEMU never MOVEs (workloads.md §1.6)"),
        "prepare_fail_rate": _f(0.0, 0.0, 0.0, "[G]", "no MOVE, nothing to fail"),
    },
    "adversarial": {
        "vars_write_rate": _f(1.0, 0.01, 1.0, "[G]", _VARS_SRC),
        "bar_toggle_rate": _f(0.0, 0.0, 0.1, "[G]", _BAR_SRC),
        "reboot_rate": _f(0.0, 0.0, 0.0, "[G]", _REBOOT_SRC),
        "move_rate": _f(20.0, 0.1, 100.0, "[G]", _MOVE_SRC),
        "prepare_fail_rate": _f(0.01, 0.001, 0.01, "[G]", _MOVE_SRC),
    },
}
CHURN_RATES = tuple(PROFILES["quiet"])

# ---------------------------------------------------------------------------
# The Scenario value

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
_DEFAULTS: dict[str, Figure] = {
    "pt_fraction": _f(0.95, 0.5, 1.0, "[G]", "most writes of a 3D workload hit shadowed "
                      "PT pages; the rest land in ordinary RAM (issue 3)"),
    "hot_fraction": _f(0.2, 0.05, 1.0, "[G]", "locality: a hot subset of PT pages"),
    "hot_share": _f(0.8, 0.0, 1.0, "[G]", "locality: share of PT writes to the hot subset"),
    "vars_pairs": _f(4, 3, 5, "[G]", _VARS_SRC),
}
TRACK_AT = ("after-boot", "after-ram-layout")
REBOOT_ORDERS = ("relayout-first", "vgpu-first")
#: bounds checked on every figure (and on overrides): name -> (min, max, integer?)
_BOUNDS = {
    "seed": (0, 2**63 - 1, True), "ram_gib": (0.001, 8192, False),
    "tracked_gfns": (0, 10**6, True), "write_rate": (0, 1e7, False),
    "pt_fraction": (0, 1, False), "hot_fraction": (0, 1, False), "hot_share": (0, 1, False),
    "duration_s": (0, 3600, False), "vars_pairs": (1, 100, True),
    "vars_write_rate": (0, 1000, False), "bar_toggle_rate": (0, 1000, False),
    "reboot_rate": (0, 100, False), "move_rate": (0, 10000, False),
    "prepare_fail_rate": (0, 1, False),
}


@dataclass(frozen=True)
class Scenario:
    """One seeded workload.  Figures (numbers) keep their provenance in ``figures``.

    ``with_overrides(seed=, ram_gib=, tracked_gfns=, write_rate=, duration_s=,
    churn=, move_rate=, prepare_fail_rate=, ...)`` returns a changed copy;
    unknown keys raise ValueError naming the key.
    """

    name: str
    description: str
    seed: int
    layout: str
    boot: str = "layout"
    ram_gib: float | None = None          # None: the layout's own RAM
    tracked_gfns: int = 4000
    track_at: str = "after-boot"
    write_rate: float = 2000.0
    pt_fraction: float = 0.95
    hot_fraction: float = 0.2
    hot_share: float = 0.8
    duration_s: float = 1.0
    churn: str = "desktop"
    vars_pairs: int = 4
    reboot_order: str = "relayout-first"
    vars_write_rate: float | None = None   # None: from the churn profile
    bar_toggle_rate: float | None = None
    reboot_rate: float | None = None
    move_rate: float | None = None
    prepare_fail_rate: float | None = None
    figures: Mapping[str, Figure] = field(default_factory=dict, compare=False, repr=False)
    path: Path | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        _validate(self)

    # ------------------------------------------------------------------ rates
    def rate(self, name: str) -> float:
        """An effective churn rate: the scenario's own value, else its profile's."""
        v = getattr(self, name)
        return float(PROFILES[self.churn][name].value if v is None else v)

    def figure(self, name: str) -> Figure:
        """The provenance of a parameter's value (profile figures for unset rates)."""
        if name in CHURN_RATES and getattr(self, name) is None:
            return PROFILES[self.churn][name]
        fig = self.figures.get(name) or _DEFAULTS.get(name)
        if fig is None:
            return Figure(getattr(self, name), tag="[G]", source="scenario default")
        if fig.value != getattr(self, name):
            return Figure(getattr(self, name), fig.low, fig.high, fig.tag,
                          f"override of {fig.value} ({fig.source})")
        return fig

    def parameters(self) -> dict[str, Any]:
        """Every parameter with its effective value (rates resolved from the profile)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)
               if f.name not in ("figures", "path", "description")}
        for k in CHURN_RATES:
            out[k] = self.rate(k)
        return out

    def with_overrides(self, **params) -> "Scenario":
        """A copy with parameters changed.  ``churn`` names a profile; ``ram_gib``
        resizes the RAM above 4G; unknown keys raise ValueError."""
        known = {f.name for f in fields(self)} - {"figures", "path"}
        for k in params:
            if k not in known:
                raise ScenarioError(f"unknown scenario parameter {k!r}; known: "
                                    f"{', '.join(sorted(known))}", field=k)
        return replace(self, **params)

    def layout_obj(self) -> Layout:
        """The layout with ``ram_gib`` applied (the ram-high slots resized)."""
        lay = load_layout(self.layout)
        if self.ram_gib is None:
            return lay
        return _resize_ram(lay, self.ram_gib)


#: the parameters that are strings (the rest are numbers, checked against _BOUNDS)
_STR_PARAMS = ("name", "description", "layout", "boot", "track_at", "churn", "reboot_order")


def _validate(s: Scenario) -> None:
    """Check every parameter's type, range and choice; raise :class:`ScenarioError` with
    ``field`` set to the parameter (a file loader turns it into ``file:line``)."""
    def bad(name, msg):
        raise ScenarioError(f"scenario {s.name!r}: {name}: {msg}", field=name, problem=msg)

    for name in _STR_PARAMS:
        v = getattr(s, name)
        if not isinstance(v, str):
            bad(name, f"must be a string, got {type(v).__name__} {v!r}")
    if s.churn not in PROFILES:
        bad("churn", f"churn profile {s.churn!r} is not one of {', '.join(PROFILES)}")
    if s.track_at not in TRACK_AT:
        bad("track_at", f"track_at {s.track_at!r} is not one of {', '.join(TRACK_AT)}")
    if s.reboot_order not in REBOOT_ORDERS:
        bad("reboot_order", f"reboot_order {s.reboot_order!r} is not one of "
                            f"{', '.join(REBOOT_ORDERS)}")
    if not (s.boot == "layout" or s.boot.startswith("trace:")):
        bad("boot", f"boot {s.boot!r} must be 'layout' or 'trace:NAME' (a file in data/traces/)")
    for name, (lo, hi, integer) in _BOUNDS.items():
        v = getattr(s, name)
        if v is None:
            continue
        if isinstance(v, (np.integer, np.floating)):
            v = v.item()
        why = number_problem(v, integer=integer, lo=lo, hi=hi)
        if why:
            bad(name, why)
    if s.boot.startswith("trace:") and s.ram_gib is not None:
        bad("ram_gib", "ram_gib cannot resize a traced boot (the trace creates its own RAM "
                       "slots); use boot = 'layout'")
    if s.boot == "layout" and s.ram_gib is not None:
        try:                     # e.g. q35 keeps 2 GiB below 4G: ram_gib must exceed it
            _resize_ram(load_layout(s.layout), s.ram_gib)
        except ValueError as exc:
            bad("ram_gib", str(exc))


def _resize_ram(lay: Layout, ram_gib: float) -> Layout:
    """Resize the RAM above 4G so that guest RAM totals ``ram_gib`` GiB.

    The below-4G part stays as the layout has it (q35: 2 GiB, i440fx: 3 GiB,
    workloads.md §1.2 [S]): it is the AS0 RAM below 4G rounded up to 256 MiB.
    """
    below = sum(s.size for s in lay.slots
                if s.as_id == 0 and s.role in ("ram-legacy", "pam", "ram-low"))
    below = -(-below // (256 << 20)) * (256 << 20)
    high = (int(ram_gib * GIB) - below) // (2 << 20) * (2 << 20)
    highs = lay.with_role("ram-high")
    if not highs:
        raise ValueError(f"layout {lay.name} has no ram-high slot to resize")
    if high <= 0:
        raise ValueError(f"ram_gib={ram_gib} is not above the layout's {below / GIB:g} GiB "
                         "below 4G (smaller guests change the below-4G split, workloads.md §1.2)")
    slots = tuple(replace(s, size=high, note=f"resized to ram_gib={ram_gib}")
                  if s.role == "ram-high" else s for s in lay.slots)
    return replace(lay, slots=slots)


# ---------------------------------------------------------------------------
# Loading

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


# ---------------------------------------------------------------------------
# The schedule

@dataclass
class Event:
    """One thing that happens at time ``t`` (seconds): a memslot ``op``, a MOVE
    decided at run time (``move``), KVMGT ``attach``, GVT shadowing the tracked
    set (``track``) or dropping every shadow at a vGPU reset (``untrack``)."""

    t: float
    kind: str
    phase: str
    cause: str
    op: MemslotOp | None = None
    slot_key: tuple[int, int] | None = None
    fail: bool = False


def _burst(layout: Layout, roles, pairs: int, gap_us: float, period_us: float, t: float,
           tag: str | None) -> tuple[list[MemslotOp], float]:
    """``pairs`` rounds of DELETE + CREATE of every slot with one of ``roles``, from
    ``t`` on (``kvmpt.workload.layouts.churn_ops`` timing); returns the ops and the end time."""
    one = replace(layout, churn=(Churn("burst", tuple(roles), int(pairs), float(gap_us),
                                       float(period_us), tag or "[G]", "scenario"),))
    ops = churn_ops(one, t0=t)
    end = (ops[-1].timestamp if ops else t) + IOCTL_SPACING_S
    return ops, end


def _churn_entry(layout: Layout, role: str):
    for c in layout.churn:
        if role in c.roles:
            return c
    return None


def _poisson_times(rng, rate: float, t0: float, t1: float) -> np.ndarray:
    if rate <= 0 or t1 <= t0:
        return np.zeros(0)
    n = int(rng.poisson(rate * (t1 - t0)))
    return np.sort(rng.uniform(t0, t1, n))


def _boot_events(sc: Scenario, layout: Layout, t0: float, phase: str, cause: str,
                 with_build: bool) -> tuple[list[Event], float]:
    """Build (optionally) + the layout's boot churn, or a trace replay."""
    ev: list[Event] = []
    t = t0
    if sc.boot.startswith("trace:") and with_build:
        ops = load_qemu_trace(TRACE_DIR / f"{sc.boot[6:]}.trace")
        # KVMGT's notifier registers at vfio device realize, after machine init: after the
        # trace's first two DELETEs (the initial RAM split) [D] workloads.md §3.3.
        dels = [i for i, o in enumerate(ops) if o.size == 0]
        attach_at = dels[1] + 1 if len(dels) >= 2 else 0
        for i, o in enumerate(ops):
            if i == attach_at:
                ev.append(Event(t, "attach", phase, "vfio realize"))
            ev.append(Event(t, "op", phase, "boot trace", op=o))
            t += IOCTL_SPACING_S
        if attach_at >= len(ops):
            ev.append(Event(t, "attach", phase, "vfio realize"))
        live = {(o.as_id, o.slot) for o in _final(ops)}
        for s in sorted(layout.slots, key=lambda s: (s.as_id, s.gpa)):
            if (s.as_id, s.slot) not in live:
                ev.append(Event(t, "op", phase, "layout slot absent from the trace",
                                op=MemslotOp(s.as_id, s.slot, s.flags, s.gpa, s.size, s.ua,
                                             ret=0, tag=s.tag)))
                t += IOCTL_SPACING_S
        return ev, t
    if with_build:
        for o in build_ops(layout):
            ev.append(Event(t, "op", phase, "build", op=o))
            t += IOCTL_SPACING_S
        ev.append(Event(t, "attach", phase, "vfio realize"))
    for o in churn_ops(layout, t0=t):
        ev.append(Event(o.timestamp, "op", phase, cause, op=o))
    if ev:
        t = max(t, ev[-1].t) + IOCTL_SPACING_S
    return ev, t


def _final(ops):
    return final_state(ops).values()


def build_schedule(sc: Scenario, layout: Layout, rng: np.random.Generator) -> tuple[list[Event], float, float]:
    """The event list in time order, the time the runtime phase starts, and when it ends."""
    events, t = _boot_events(sc, layout, 0.0, "boot", "boot churn", with_build=True)
    if sc.track_at == "after-ram-layout":
        # the driver loads right after the last AS0 RAM slot is (re)created
        last = max((i for i, e in enumerate(events) if e.kind == "op" and e.op.size
                    and e.op.as_id == 0 and _role(layout, e.op) in RAM_ROLES), default=None)
        pos = (last + 1) if last is not None else len(events)
        at = events[last].t if last is not None else t
        events.insert(pos, Event(at, "track", "boot", "guest i915 loads"))
        t_run = t
    else:
        events.append(Event(t, "track", "boot", "guest i915 loads"))
        t_run = t + IOCTL_SPACING_S
    t_end = t_run + sc.duration_s

    # runtime arrivals, then laid out one after the other (QEMU serializes memory
    # transactions under the BQL)
    arrivals: list[tuple[float, str, int]] = []
    for kind, rate in (("vars", sc.rate("vars_write_rate")), ("move", sc.rate("move_rate"))):
        for x in _poisson_times(rng, rate, t_run, t_end):
            arrivals.append((float(x), kind, 0))
    # driver reloads (BAR toggle bursts) and reboots are rare, long events: periodic with a
    # random phase, so a run of duration_s holds floor or ceil of rate * duration_s of them
    # (a short run is not left with a Poisson draw of 0)
    for kind, rate in (("bar", sc.rate("bar_toggle_rate")), ("reboot", sc.rate("reboot_rate"))):
        if rate > 0:
            x = t_run + rng.uniform(0, 1 / rate)
            while x < t_end:
                arrivals.append((float(x), kind, 0))
                x += 1 / rate
    arrivals.sort()
    fails = rng.random(len(arrivals)) < sc.rate("prepare_fail_rate")
    picks = rng.integers(0, 1 << 30, len(arrivals))
    ram_slots = sorted((s for s in layout.slots if s.as_id == 0 and s.role in RAM_ROLES),
                       key=lambda s: s.gpa)
    free = t_run
    for (x, kind, _), fail, pick in zip(arrivals, fails, picks):
        start = max(x, free)
        if kind == "vars":
            c = _churn_entry(layout, "flash-vars")
            if not layout.with_role("flash-vars"):
                continue            # SeaBIOS: no pflash VARS slot
            ops, free = _burst(layout, ["flash-vars"], int(sc.vars_pairs),
                               c.gap_us if c else 50, c.period_us if c else 200, start,
                               c.tag if c else "[G]")
            events += [Event(o.timestamp, "op", "runtime", "OVMF variable write", op=o)
                       for o in ops]
        elif kind == "bar":
            if not layout.with_role("vgpu-aperture"):
                continue
            c = _churn_entry(layout, "vgpu-aperture")
            ops, free = _burst(layout, ["vgpu-aperture"], c.pairs if c else 7,
                               c.gap_us if c else 1000, c.period_us if c else 1900, start,
                               c.tag if c else "[D]")
            events += [Event(o.timestamp, "op", "runtime", "vGPU BAR toggle", op=o)
                       for o in ops]
        elif kind == "move":
            if not ram_slots:
                continue
            s = ram_slots[int(pick) % len(ram_slots)]
            events.append(Event(start, "move", "runtime", "adversarial MOVE",
                                slot_key=(0, s.slot), fail=bool(fail)))
            free = start + IOCTL_SPACING_S
        elif kind == "reboot":
            free = _reboot(sc, layout, start, events)
    events.sort(key=lambda e: e.t)          # stable: equal times keep their order
    return events, t_run, t_end


def _role(layout: Layout, op: MemslotOp) -> str | None:
    for s in layout.slots:
        if s.as_id == op.as_id and s.slot == op.slot:
            return s.role
    return None


def _reboot(sc: Scenario, layout: Layout, t: float, events: list[Event]) -> float:
    """system_reset: the reset-time memory re-layout (PAM/SMRAM back to their reset
    values: one round of each RAM-role churn entry), the vGPU reset (GVT drops every
    PPGTT shadow), the firmware's boot churn, and the guest driver loading again.
    Which of the first two QEMU does first is not established [G]: ``reboot_order``."""
    relayout = [c for c in layout.churn if any(r in RAM_ROLES for r in c.roles)]
    seq = ["relayout", "untrack"] if sc.reboot_order == "relayout-first" else ["untrack", "relayout"]
    for step in seq:
        if step == "untrack":
            events.append(Event(t, "untrack", "reboot", "vGPU reset"))
            t += IOCTL_SPACING_S
        else:
            for c in relayout:
                ops, t = _burst(layout, c.roles, 1, c.gap_us, c.period_us, t, c.tag)
                events += [Event(o.timestamp, "op", "reboot", "reset re-layout", op=o)
                           for o in ops]
    ev, t = _boot_events(sc, layout, t, "reboot", "firmware boot churn", with_build=False)
    events += ev
    events.append(Event(t, "track", "reboot", "guest i915 loads again"))
    return t + IOCTL_SPACING_S


# ---------------------------------------------------------------------------
# Running

@dataclass
class RunResult:
    """What :func:`run` measured.

    ``summary``: flat dict of scalars.  ``timeseries``: dict of NumPy columns,
    one row per memslot op (``t_s``, ``kind``, ``errno``, cycles by category
    ``cyc_<primitive>``, ``hook_cycles``, ``wasted_cycles``, ``mmu_lock_hold_us``
    (longest single hold in the op), ``mmu_lock_held_us`` (all holds),
    ``trapped_write_cycles`` (writes since the previous op), ``missed_writes``
    and ``stale_gfns`` and ``violations`` so far).  ``hook_calls``: dict of NumPy
    columns, one row per slot-hook call (KVMGT's ``track_flush_slot`` /
    ``track_remove_region`` and KVM's ``kvm_mmu_zap_all_fast``) with its op index,
    cycles and ``mmu_lock`` hold.
    """

    scenario: Scenario
    design: Design
    seed: int
    summary: dict[str, Any]
    timeseries: dict[str, np.ndarray]
    costs: CostModel = field(repr=False)
    hook_calls: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    warnings: list[str] = field(default_factory=list, repr=False)
    violations: list[str] = field(default_factory=list, repr=False)
    work: Work | None = field(default=None, repr=False)
    write_stats: dict[str, int] = field(default_factory=dict, repr=False)

    def rows(self) -> list[dict[str, Any]]:
        """The time series as a list of dicts (one per op)."""
        cols = self.timeseries
        n = len(next(iter(cols.values()))) if cols else 0
        return [{k: (v[i].item() if hasattr(v[i], "item") else v[i]) for k, v in cols.items()}
                for i in range(n)]

    def summary_table(self) -> str:
        """The summary as an aligned two-column text table."""
        return _table([self])

    def __repr__(self) -> str:
        s = self.summary
        return (f"RunResult({self.scenario.name!r}, {self.design.name!r}, seed={self.seed}, "
                f"ops={s['ops_total']}, missed_writes={s['missed_writes']}, "
                f"hook_us_per_delete={s['hook_us_per_delete']:.1f})")


_SUMMARY_ROWS = (
    ("ops_total", "memslot ops", "d"), ("ops_DELETE", "  DELETE", "d"),
    ("ops_CREATE", "  CREATE", "d"), ("ops_MOVE", "  MOVE (attempted)", "d"),
    ("ops_failed", "  failed", "d"), ("moves_rejected", "MOVEs rejected (EINVAL)", "d"),
    ("prepare_failures", "prepare failures (ENOMEM)", "d"),
    ("hook_calls", "KVMGT slot-hook calls", "d"),
    ("hook_us_per_delete", "hook time per DELETE (us)", ".2f"),
    ("hook_cycles_per_delete", "hook cycles per DELETE", ".0f"),
    ("wasted_cycles", "wasted cycles", ".0f"),
    ("mmu_lock_max_hold_us", "mmu_lock longest write hold (us)", ".2f"),
    ("mmu_lock_hold_us_per_hook_call", "mmu_lock held per KVMGT hook (us)", ".2f"),
    ("mmu_lock_memslot_hold_us_total", "mmu_lock held by memslot ops (us)", ".2f"),
    ("mmu_lock_hold_us_total", "mmu_lock write-held, total (us)", ".2f"),
    ("mmu_lock_read_hold_us_total", "mmu_lock read-held, total (us)", ".2f"),
    ("memslot_us_total", "memslot ioctl work (us)", ".1f"),
    ("writes_total", "guest writes", "d"), ("trapped_writes", "  trapped (emulated)", "d"),
    ("writes_mmio", "  MMIO exits", "d"),
    ("trapped_write_us", "trapped-write time (us)", ".1f"),
    ("mmio_us", "MMIO-exit time (us)", ".1f"),
    ("missed_writes", "missed writes", "d"), ("stale_gfns_end", "stale gfns at end", "d"),
    ("violations_end", "invariant violations at end", "d"),
    ("kernel_warnings", "kernel WARNs", "d"),
)


def _table(results: list[RunResult]) -> str:
    """The summaries side by side (``kvmpt.infra.text.table``), under a title line."""
    from kvmpt.infra.text import table
    r0 = results[0]
    title = (f"scenario {r0.scenario.name} (seed {r0.seed}), clock "
             f"{r0.costs.ghz:g} GHz, costs: {r0.costs.estimate}")
    rows = [[label, *[format(r.summary[key], fmt) for r in results]]
            for key, label, fmt in _SUMMARY_ROWS]
    return title + "\n" + table(["", *[r.design.name for r in results]], rows)


class _Writes:
    """The guest write stream: times, and targets drawn per batch."""

    def __init__(self, sc: Scenario, layout: Layout, rng: np.random.Generator,
                 t_run: float, t_end: float):
        self.sc, self.rng = sc, rng
        n = int(round(sc.write_rate * sc.duration_s))
        self.times = np.sort(rng.uniform(t_run, t_end, n)) if n else np.zeros(0)
        self.pos = 0
        ram = [s for s in layout.slots if s.as_id == 0 and s.role in RAM_ROLES]
        self.ram_base = np.array([s.base_gfn for s in ram], dtype=np.int64)
        self.ram_np = np.array([s.npages for s in ram], dtype=np.int64)
        self.pt = np.zeros(0, dtype=np.int64)
        self.hot = np.zeros(0, dtype=np.int64)

    def set_shadowed(self, gfns) -> None:
        self.pt = np.array(sorted(gfns), dtype=np.int64)
        perm = self.rng.permutation(self.pt.size)
        k = int(math.ceil(self.sc.hot_fraction * self.pt.size))
        self.hot = self.pt[perm[:k]] if k else self.pt

    def take_until(self, t: float) -> int:
        end = int(np.searchsorted(self.times, t, side="right"))
        n, self.pos = end - self.pos, end
        return n

    def rest(self) -> int:
        n, self.pos = self.times.size - self.pos, self.times.size
        return n

    def gpas(self, n: int) -> np.ndarray:
        rng, sc = self.rng, self.sc
        k = int(rng.binomial(n, sc.pt_fraction)) if self.pt.size else 0
        k_hot = int(rng.binomial(k, sc.hot_share)) if k else 0
        parts = []
        if k_hot:
            parts.append(self.hot[rng.integers(0, self.hot.size, k_hot)])
        if k - k_hot:
            parts.append(self.pt[rng.integers(0, self.pt.size, k - k_hot)])
        m = n - k
        if m and self.ram_np.size:
            w = self.ram_np / self.ram_np.sum()
            which = rng.choice(self.ram_np.size, size=m, p=w)
            parts.append(self.ram_base[which] + (rng.random(m) * self.ram_np[which]).astype(np.int64))
        gfns = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        offs = rng.integers(0, 512, gfns.size, dtype=np.int64) << 3     # 8-byte PTE stores
        return ((gfns << 12) | offs).astype(np.uint64)


def _park_gpa(layout: Layout) -> dict[int, int]:
    """Where the adversarial VMM MOVEs each AS0 RAM slot: past the top of the layout,
    1 GiB aligned, one window per slot."""
    top = max(s.gpa + s.size for s in layout.slots)
    base = (-(-top // GIB) + 1) * GIB
    out = {}
    for s in sorted((s for s in layout.slots if s.as_id == 0 and s.role in RAM_ROLES),
                    key=lambda s: s.gpa):
        out[s.slot] = base
        base += (-(-s.size // GIB) + 1) * GIB
    return out


class _Touch:
    """Decides whether a memslot op can change ``vm.check_invariants()`` or
    ``gvt.stale_gfns()`` beyond what its hook calls show (the caller rechecks after
    hits, counter updates, errors and track events anyway).

    Conservative and independent of how the invariants are phrased: an op is
    skipped only if neither its old slot nor its new range holds a gfn GVT
    shadows or KVMGT's ``ptable`` holds (by gfn, or by host address for the
    hva-based shadow check), and the old slot is small and has no write-track
    counts.  ``refresh`` after anything that may have changed those sets; a
    stale cache only over-approximates (more rechecks, never fewer)."""

    def __init__(self) -> None:
        self.gfns = np.zeros(0, dtype=np.int64)
        self.hvas = np.zeros(0, dtype=np.int64)

    def refresh(self, gvt) -> None:
        if gvt is None:
            return
        g = set(gvt.page_track_tree) | gvt.ptable.gfns()
        self.gfns = np.array(sorted(g), dtype=np.int64)
        self.hvas = np.array(sorted(gvt.shadow_hva.values()), dtype=np.int64)

    @staticmethod
    def _any_in(arr: np.ndarray, lo: int, hi: int) -> bool:
        return bool(arr.size) and int(np.searchsorted(arr, hi)) > int(np.searchsorted(arr, lo))

    def touches(self, vm, op: MemslotOp) -> bool:
        ranges = []
        old = next((s for s in vm.memslots(op.as_id) if s.id == op.slot), None)
        if old is not None:
            if old.npages > 1 << 16:
                return True
            arr = old.arch.gfn_write_track
            if arr is not None and arr.any():
                return True
            ranges.append((old.base_gfn, old.npages, old.userspace_addr))
        if op.size:
            ranges.append((op.base_gfn, op.npages, op.ua))
        for base, n, ua in ranges:
            if self._any_in(self.gfns, base, base + n) or \
                    self._any_in(self.hvas, ua, ua + (n << 12)):
                return True
        return False


class _Run:
    """One run's state, advanced one event at a time (:data:`_EVENTS`).

    The VM's own accounting is the only record: its ``work`` (everything outside
    the slot hooks), its ``hook_calls`` (each with its own ``work``), its
    ``write_stats`` and its ``op_log``.  The loop adds two things the VM cannot
    know: which event caused a piece of ``vm.work`` (guest writes, a memslot
    ioctl, GVT shadowing: :attr:`caused`, Work counter deltas) and one row per
    memslot op for the time series.  The summary is :data:`SUMMARY_METRICS`,
    computed from those at the end; every cycle figure comes from
    :class:`kvmpt.workload.costs.CostModel`.
    """

    def __init__(self, sc: Scenario, design: Design, costs: CostModel, seed: int, check: str):
        self.sc, self.design, self.costs, self.seed, self.check = sc, design, costs, seed, check
        self.layout = sc.layout_obj()
        ss = np.random.SeedSequence(seed)
        rng_sched, self.rng_track, rng_write = (np.random.default_rng(s) for s in ss.spawn(3))
        self.events, self.t_run, self.t_end = build_schedule(sc, self.layout, rng_sched)
        self.roles = {(s.as_id, s.slot): s.role for s in self.layout.slots}
        self.homes = {s.slot: s.gpa for s in self.layout.slots if s.as_id == 0}
        self.parks = _park_gpa(self.layout)
        self.writes = _Writes(sc, self.layout, rng_write, self.t_run, self.t_end)
        self.vm = VM(design)
        self.gvt = None
        self.attached_at = 0               # len(vm.op_log) when KVMGT attached
        self.caused: dict[str, dict[str, int]] = {c: dict.fromkeys(COUNTERS, 0)
                                                  for c in CAUSES}
        self.rows: list[dict[str, Any]] = []
        self.row_of_op: dict[int, int] = {}            # vm.op_log index -> row
        self.since_op = dict.fromkeys(COUNTERS, 0)     # guest-write work since the last op
        self.writes_since_op = 0
        self.tracked_ever = False
        self.recheck = False
        self.stale_now = self.violations_now = 0
        self.touch = _Touch()

    # ----------------------------------------------------------- accounting
    def _charged(self, cause: str, fn) -> dict[str, int]:
        """Run ``fn()``; add the ``vm.work`` it did to ``caused[cause]`` and return it."""
        work = self.vm.work
        before = {k: getattr(work, k) for k in COUNTERS}
        fn()
        delta = {k: getattr(work, k) - before[k] for k in COUNTERS}
        into = self.caused[cause]
        for k, v in delta.items():
            into[k] += v
        return delta

    # ----------------------------------------------------------------- events
    def guest_writes(self, n: int) -> None:
        """The guest writes that fall before the next event, as one batch."""
        if n <= 0:
            return
        gpas = self.writes.gpas(n)
        delta = self._charged("writes", lambda: self.vm.guest_write_batch(gpas))
        for k, v in delta.items():
            self.since_op[k] += v
        self.writes_since_op += n

    def attach(self, ev: Event) -> None:
        self.gvt = self.vm.attach_kvmgt()
        self.attached_at = len(self.vm.op_log)

    def track(self, ev: Event) -> None:
        """The guest i915 driver loads: GVT shadows the tracked set."""
        if self.gvt is None or not self.sc.tracked_gfns:
            return
        from kvmpt.workload.replay import place_tracked
        seed = int(self.rng_track.integers(0, 2**31))
        self._charged("shadow", lambda: place_tracked(self.vm, self.gvt, int(self.sc.tracked_gfns),
                                                      seed=seed, roles=self.roles))
        self.tracked_ever = True
        self._shadowing_changed()

    def untrack(self, ev: Event) -> None:
        """A vGPU reset: GVT drops every shadow."""
        if self.gvt is None:
            return
        gvt = self.gvt

        def unshadow_all():
            for g in gvt.shadowed_gfns():
                gvt.unshadow(g)

        self._charged("shadow", unshadow_all)
        self._shadowing_changed()

    def _shadowing_changed(self) -> None:
        self.recheck = True
        self.touch.refresh(self.gvt)
        self.writes.set_shadowed(self.gvt.shadowed_gfns())

    def move(self, ev: Event) -> None:
        """The adversarial VMM MOVEs a RAM slot home or away (decided now: the slot
        may have been deleted meanwhile), failing in prepare if the event says so."""
        as_id, sid = ev.slot_key
        cur = {s.id: s for s in self.vm.memslots(as_id)}.get(sid)
        if cur is None:
            return                              # deleted right now: nothing to move
        gpa = self.homes[sid] if cur.base_gfn << 12 != self.homes[sid] else self.parks[sid]
        if ev.fail:
            self.vm.fail_next_prepare(errno_mod.ENOMEM)
        self.memslot_op(ev, MemslotOp(as_id, sid, cur.flags, gpa, cur.npages << 12,
                                      cur.userspace_addr))

    def op(self, ev: Event) -> None:
        self.memslot_op(ev, ev.op)

    def memslot_op(self, ev: Event, op: MemslotOp) -> None:
        vm, gvt = self.vm, self.gvt
        dirty = self.check == "all" or (gvt is not None and self.tracked_ever
                                        and self.touch.touches(vm, op))
        n_log = len(vm.op_log)
        err = [0]

        def ioctl():
            try:
                vm.set_user_memory_region(op.ioctl_slot, op.flags, op.gpa, op.size, op.ua)
            except OSError as exc:
                err[0] = exc.errno
            # an injection not consumed (MOVE rejected before prepare allocates) must
            # not leak into the next op
            vm.fail_next_prepare(None)

        ioctl_work = self._charged("memslot", ioctl)
        rec = vm.op_log[-1] if len(vm.op_log) > n_log else None   # None: refused in S0 checks
        if rec is not None:
            self.row_of_op[rec.index] = len(self.rows)
        calls = rec.hook_calls if rec is not None else []
        hits = sum(c.hits for c in calls if c.node == "kvmgt")
        if gvt is not None and self.tracked_ever:
            if self.recheck or dirty or hits or err[0]:
                self.stale_now = len(gvt.stale_gfns())
                self.violations_now = len(vm.check_invariants()) if self.check != "end" else -1
                self.recheck = False
                if hits or err[0]:
                    self.touch.refresh(gvt)
        else:
            self.stale_now = 0
        self.rows.append(_op_row(self, ev, op, rec, err[0], ioctl_work, hits))
        self.since_op = dict.fromkeys(COUNTERS, 0)
        self.writes_since_op = 0

    # ---------------------------------------------------------------- result
    def result(self) -> RunResult:
        vm, gvt = self.vm, self.gvt
        self.violations = vm.check_invariants()
        if self.rows and self.check == "end":
            self.rows[-1]["violations"] = len(self.violations)
        cols = list(_OP_COLUMNS) + [f"cyc_{c}" for c in self.costs.categories]
        ts = {k: np.array([r[k] for r in self.rows]) for k in cols}
        summary = {name: fn(self) for name, fn in SUMMARY_METRICS.items()}
        return RunResult(self.sc, self.design, self.seed, summary, ts, self.costs,
                         hook_calls=_hook_table(self),
                         warnings=[w.message for w in vm.warnings],
                         violations=self.violations, work=vm.work,
                         write_stats=dict(vm.write_stats))

    # views the metrics share
    def kvmgt_calls(self) -> list[HookCall]:
        return [c for c in self.vm.hook_calls if c.node == "kvmgt"]

    def deletes_with_kvmgt(self) -> list:
        """Successful DELETEs made while KVMGT was attached."""
        return [r for r in self.vm.op_log[self.attached_at:]
                if self.gvt is not None and r.change == "DELETE" and r.errno == 0]

    def write_holds(self) -> list[tuple[float, float]]:
        """(held, longest) cycles of every ``write_lock(mmu_lock)`` account: each hook
        call, and ``vm.work`` (GVT shadowing, notifier changes)."""
        hold = self.costs.mmu_lock_hold
        return [hold(c.work) for c in self.vm.hook_calls] + [hold(self.vm.work)]


#: what caused a piece of ``vm.work`` (the slot hooks keep their own Work)
CAUSES = ("writes", "memslot", "shadow")

#: event kind -> the step that applies it (the schedule's whole vocabulary)
_EVENTS = {"attach": _Run.attach, "track": _Run.track, "untrack": _Run.untrack,
           "op": _Run.op, "move": _Run.move}

_OP_COLUMNS = (
    "op", "t_s", "phase", "cause", "kind", "as_id", "slot", "npages", "errno", "hits",
    "hook_cycles", "zap_cycles", "ioctl_cycles", "wasted_cycles", "mmu_lock_hold_us",
    "mmu_lock_held_us", "writes", "trapped_write_cycles", "missed_writes", "stale_gfns",
    "violations")


def _op_row(r: _Run, ev: Event, op: MemslotOp, rec, err: int, ioctl_work: dict[str, int],
            hits: int) -> dict[str, Any]:
    """One time-series row: the op, what its hook calls and ioctl cost, and the guest
    writes since the previous op."""
    costs = r.costs
    calls = rec.hook_calls if rec is not None else []
    by_cat = costs.price(ioctl_work)
    for c in calls:
        for k, v in costs.price(c.work).items():
            by_cat[k] += v
    holds = [costs.mmu_lock_hold(c.work) for c in calls]
    row = dict(
        op=len(r.rows), t_s=ev.t, phase=ev.phase, cause=ev.cause,
        kind=rec.change if rec is not None else REJECTED, as_id=op.as_id, slot=op.slot,
        npages=op.npages, errno=err, hits=hits,
        hook_cycles=sum(costs.hook_cycles(c) for c in calls if c.node == "kvmgt"),
        zap_cycles=sum(costs.hook_cycles(c) for c in calls if c.node != "kvmgt"),
        ioctl_cycles=costs.total(ioctl_work),
        wasted_cycles=sum(costs.wasted_cycles(c) for c in calls),
        mmu_lock_hold_us=costs.cycles_to_us(max((h[1] for h in holds), default=0.0)),
        mmu_lock_held_us=costs.cycles_to_us(sum(h[0] for h in holds)),
        writes=r.writes_since_op, trapped_write_cycles=costs.trapped_write_cycles(r.since_op),
        missed_writes=r.vm.write_stats["missed"], stale_gfns=r.stale_now,
        violations=r.violations_now)
    row.update({f"cyc_{c}": v for c, v in by_cat.items()})
    return row


def _hook_table(r: _Run) -> dict[str, np.ndarray]:
    """One row per slot-hook call (``vm.hook_calls``), priced."""
    costs = r.costs
    cols: dict[str, list] = {k: [] for k in (
        "op", "hook", "node", "change", "as_id", "slot", "npages", "hits", "cycles",
        "mmu_lock_held_us", "mmu_lock_max_hold_us", "wasted", "harmful")}
    for c in r.vm.hook_calls:
        held, longest = costs.mmu_lock_hold(c.work)
        for k, v in (("op", r.row_of_op[c.op]), ("hook", c.hook), ("node", c.node),
                     ("change", c.change), ("as_id", c.as_id), ("slot", c.slot_id),
                     ("npages", c.npages), ("hits", c.hits), ("cycles", costs.hook_cycles(c)),
                     ("mmu_lock_held_us", costs.cycles_to_us(held)),
                     ("mmu_lock_max_hold_us", costs.cycles_to_us(longest)),
                     ("wasted", bool(c.wasted)), ("harmful", bool(c.harmful))):
            cols[k].append(v)
    return {k: np.array(v) for k, v in cols.items()}


def _kinds(r: _Run) -> np.ndarray:
    return np.array([row["kind"] for row in r.rows], dtype=object)


def _errnos(r: _Run) -> np.ndarray:
    return np.array([row["errno"] for row in r.rows], dtype=int)


def _per(total: float, n: int) -> float:
    return total / n if n else 0.0


def _hook_cycles(r: _Run) -> float:
    return sum(r.costs.hook_cycles(c) for c in r.kvmgt_calls())


def _zap_cycles(r: _Run) -> float:
    return sum(r.costs.hook_cycles(c) for c in r.vm.hook_calls if c.node != "kvmgt")


def _memslot_cycles(r: _Run) -> float:
    return _hook_cycles(r) + _zap_cycles(r) + r.costs.total(r.caused["memslot"])


def _delete_hook_cycles(r: _Run) -> float:
    dels = r.deletes_with_kvmgt()
    return _per(sum(r.costs.hook_cycles(c) for d in dels for c in d.hook_calls
                    if c.node == "kvmgt"), len(dels))


def _wasted(r: _Run) -> float:
    return sum(r.costs.wasted_cycles(c) for c in r.vm.hook_calls)


def _memslot_holds(r: _Run) -> list[tuple[float, float]]:
    return [r.costs.mmu_lock_hold(c.work) for c in r.vm.hook_calls]


#: summary key -> how it is computed from the run (Mesa's ``model_reporters``).  Counts
#: come from the VM's own accounting; cycles and microseconds from ``kvmpt.workload.costs``.
#: ``mmu_lock`` holds are by mode: write holds stall vCPU faults and every other user;
#: read holds (``kvmgt_page_track_write()`` in the ``mmu_lock`` design) stall writers.
SUMMARY_METRICS: dict[str, Any] = {
    "scenario": lambda r: r.sc.name,
    "design": lambda r: r.design.name,
    "seed": lambda r: r.seed,
    "sim_time_s": lambda r: float(r.t_end),
    "ops_total": lambda r: len(r.rows),
    **{f"ops_{k}": (lambda k: lambda r: int((_kinds(r) == k).sum()))(k) for k in CHANGES},
    "ops_failed": lambda r: int((_errnos(r) != 0).sum()),
    "moves_rejected": lambda r: int(((_kinds(r) == "MOVE")
                                     & (_errnos(r) == errno_mod.EINVAL)).sum()),
    "prepare_failures": lambda r: int((_errnos(r) == errno_mod.ENOMEM).sum()),
    "hook_calls": lambda r: len(r.kvmgt_calls()),
    "harmful_hook_calls": lambda r: sum(bool(c.harmful) for c in r.kvmgt_calls()),
    "hook_cycles_total": _hook_cycles,
    "hook_cycles_per_delete": _delete_hook_cycles,
    "hook_us_per_delete": lambda r: r.costs.cycles_to_us(_delete_hook_cycles(r)),
    "zap_cycles_total": _zap_cycles,
    "ioctl_cycles_total": lambda r: r.costs.total(r.caused["memslot"]),
    "memslot_cycles_total": _memslot_cycles,
    "memslot_us_total": lambda r: r.costs.cycles_to_us(_memslot_cycles(r)),
    "wasted_cycles": _wasted,
    "wasted_us": lambda r: r.costs.cycles_to_us(_wasted(r)),
    "mmu_lock_max_hold_us": lambda r: r.costs.cycles_to_us(
        max(h[1] for h in r.write_holds())),
    # every write hold: the memslot ops' hooks and zaps, GVT shadowing, notifier changes
    "mmu_lock_hold_us_total": lambda r: r.costs.cycles_to_us(
        sum(h[0] for h in r.write_holds())),
    "mmu_lock_memslot_max_hold_us": lambda r: r.costs.cycles_to_us(
        max((h[1] for h in _memslot_holds(r)), default=0.0)),
    "mmu_lock_memslot_hold_us_total": lambda r: r.costs.cycles_to_us(
        sum(h[0] for h in _memslot_holds(r))),
    "mmu_lock_hold_us_per_hook_call": lambda r: r.costs.cycles_to_us(_per(
        sum(r.costs.mmu_lock_hold(c.work)[0] for c in r.kvmgt_calls()), len(r.kvmgt_calls()))),
    "mmu_lock_read_max_hold_us": lambda r: r.costs.cycles_to_us(
        r.costs.mmu_lock_hold(r.vm.work, "read")[1]),
    "mmu_lock_read_hold_us_total": lambda r: r.costs.cycles_to_us(
        r.costs.mmu_lock_hold(r.vm.work, "read")[0]),
    "shadow_cycles": lambda r: r.costs.total(r.caused["shadow"]),
    "writes_total": lambda r: sum(r.vm.write_stats[k] for k in WRITE_OUTCOMES),
    **{f"writes_{k}": (lambda k: lambda r: r.vm.write_stats[k])(k) for k in WRITE_OUTCOMES},
    "trapped_writes": lambda r: r.caused["writes"]["emulated_writes"],
    "trapped_write_cycles": lambda r: r.costs.trapped_write_cycles(r.caused["writes"]),
    "trapped_write_us": lambda r: r.costs.cycles_to_us(
        r.costs.trapped_write_cycles(r.caused["writes"])),
    "mmio_exits": lambda r: r.caused["writes"]["mmio_exits"],
    "mmio_us": lambda r: r.costs.cycles_to_us(r.costs.mmio_cycles(r.caused["writes"])),
    "missed_writes": lambda r: r.vm.write_stats["missed"],
    "tracked_gfns": lambda r: int(r.sc.tracked_gfns),
    "shadowed_end": lambda r: len(r.gvt.shadowed_gfns()) if r.gvt is not None else 0,
    "stale_gfns_end": lambda r: len(r.gvt.stale_gfns()) if r.gvt is not None else 0,
    "violations_end": lambda r: len(r.violations),
    "kernel_warnings": lambda r: len(r.vm.warnings),
    "clock_ghz": lambda r: r.costs.ghz,
    "costs_estimate": lambda r: r.costs.estimate,
}


def run(scenario, design, seed: int | None = None, costs: CostModel | None = None,
        check: str = "ops") -> RunResult:
    """Run ``scenario`` (a Scenario or a name) under ``design`` (a Design or preset name).

    Deterministic for a given (scenario, design, seed); ``seed`` defaults to the
    scenario's.  ``costs`` defaults to ``data/costs.toml``.  ``check="ops"``
    counts invariant violations after every op once anything was tracked;
    ``"end"`` only at the end (faster; the ``violations`` column is then -1
    until the last row); ``"all"`` recomputes after every op instead of only
    after ops that can change them (a cross-check, slower).

    The loop is the whole simulation: for each scheduled event in time order, the
    guest writes that fall before it run as one batch (``vm.guest_write_batch``),
    then the event is applied (:data:`_EVENTS`).  The summary is
    :data:`SUMMARY_METRICS`.
    """
    sc = load_scenario(scenario) if not isinstance(scenario, Scenario) else scenario
    if check not in ("ops", "end", "all"):
        raise ValueError("check must be 'ops', 'end' or 'all'")
    r = _Run(sc, Design.coerce(design), costs or default_costs(),
             sc.seed if seed is None else int(seed), check)
    for ev in r.events:
        if ev.t >= r.t_run:
            r.guest_writes(r.writes.take_until(ev.t))
        _EVENTS[ev.kind](r, ev)
    r.guest_writes(r.writes.rest())
    return r.result()
