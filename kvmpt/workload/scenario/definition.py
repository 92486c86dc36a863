"""What a scenario is: the :class:`Scenario` value, its churn :data:`PROFILES` and its bounds.

A :class:`Scenario` is a frozen value; building one (from a file, from
``with_overrides``, or by hand) checks every parameter's type, range and choice
(:func:`_validate`), so a run never starts from a bad one.  Every number keeps its
provenance as a :class:`Figure` (value, range, data tag, source; workloads.md tags).

The churn profiles are the rates of runtime memslot events after the guest i915
driver loads (workloads.md §1.5, §5): OVMF variable writes, vGPU BAR toggle
bursts, reboots, and the adversarial VMM's MOVEs with a fraction failing in
prepare.  QEMU never MOVEs (workloads.md §1.6), so only ``adversarial`` does.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from kvmpt.constants import GIB, MIB, SEED_MAX
from kvmpt.infra.paths import DATA_DIR
from kvmpt.infra.tomlfile import InputError, number_problem
from kvmpt.workload.layouts import Layout, load_layout

__all__ = ["DEFAULT_SCENARIO", "SCENARIO_DIR", "TRACE_DIR", "PROFILES", "CHURN_RATES", "TRACK_AT",
           "REBOOT_ORDERS", "Figure", "Scenario", "ScenarioError"]

#: the scenario to use when none is named: the default VM and workload of workloads.md §5
DEFAULT_SCENARIO = "q35-desktop"
SCENARIO_DIR = DATA_DIR / "scenarios"
TRACE_DIR = DATA_DIR / "traces"


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

#: the figures a file may leave out, with their provenance
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
    "seed": (0, SEED_MAX, True), "ram_gib": (0.001, 8192, False),
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
    below = -(-below // (256 * MIB)) * (256 * MIB)
    high = (int(ram_gib * GIB) - below) // (2 * MIB) * (2 * MIB)
    highs = lay.with_role("ram-high")
    if not highs:
        raise ValueError(f"layout {lay.name} has no ram-high slot to resize")
    if high <= 0:
        raise ValueError(f"ram_gib={ram_gib} is not above the layout's {below / GIB:g} GiB "
                         "below 4G (smaller guests change the below-4G split, workloads.md §1.2)")
    slots = tuple(replace(s, size=high, note=f"resized to ram_gib={ram_gib}")
                  if s.role == "ram-high" else s for s in lay.slots)
    return replace(lay, slots=slots)
