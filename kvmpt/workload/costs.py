"""The cost model: cycles per primitive operation, and cycles to time.

The model (``kvmpt.kernel.vm``, ``kvmpt.kernel.kvmgt``) counts primitive operations in a
:class:`kvmpt.kernel.work.Work`; this module prices them from ``data/costs.toml``.
Each entry there carries a point estimate, a low..high range, a source tag
(``[S]``/``[D]``/``[G]``/``[M]``/``[R]`` as in ``spec/workloads.md``) and its
source, and names the Work counter(s) it prices::

    from kvmpt.workload.costs import default_costs
    c = default_costs()
    c.price(call.work)            # {"hash_probe": 707_443.2, "zap": 15000.0, ...} cycles
    c.cycles_to_us(c.total(call.work))
    c.mmu_lock_hold(call.work)    # (cycles held in total, cycles of the longest hold)
    c.at("high")                  # the same table at the high end of every range

Every cycle figure of the package comes from the :class:`CostModel` methods
(``price``/``total`` and the views built on them), applied to the model's own
accounting.  A trapped guest write (one that faulted to emulation:
``emulated_writes``) is priced as ``vm_exit + emulation`` plus ``gvt_handler``
per ``handler_calls`` and the ptable lookup (≈ 5 µs at 3 GHz, the [G] figure
of workloads.md §2.3): :meth:`CostModel.trapped_write_cycles`.  A write to a
gfn no memslot holds, or to a READONLY slot, is an MMIO exit to the VMM
(``mmio_exits``, :meth:`CostModel.mmio_cycles`), not a trapped write.
``mmu_lock`` hold time is the cycles of the primitives done while it was held,
by mode (:meth:`CostModel.mmu_lock_hold`): a write hold is what a vCPU fault
that needs the lock waits behind; a read hold blocks only writers.

The loader validates the file and reports errors as ``file:line: [table]
field 'key': problem`` (``tomllib`` gives no positions for values, so the
line is found by scanning the text, see :class:`TomlLocator`).
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping

from kvmpt.constants import TAGS
from kvmpt.infra.paths import DATA_DIR
from kvmpt.infra.tomlfile import (Field, InputError, TomlLocator, check_table, located,  # noqa: F401
                       read_toml)
from kvmpt.kernel.work import PRIMITIVES, HookCall, Work

__all__ = [
    "COSTS_PATH", "TAGS", "Cost", "CostModel", "CostError", "TomlLocator",
    "load_costs", "default_costs", "price", "cycles_to_us", "COUNTERS",
    "TRAPPED_WRITE_COUNTERS",
]

COSTS_PATH = DATA_DIR / "costs.toml"
#: the Work counters a cost entry may price
COUNTERS = PRIMITIVES + ("mmu_lock_acquisitions", "mmu_lock_read_acquisitions")
#: the Work counters of a guest write that faulted to emulation (priced by
#: :meth:`CostModel.trapped_write_cycles`)
TRAPPED_WRITE_COUNTERS = ("emulated_writes", "handler_calls", "gfn_probes", "chain_steps",
                          "mmu_lock_read_acquisitions")
ESTIMATES = ("point", "low", "high")


class CostError(InputError):
    """A cost file is malformed; the message names file, line, table and field."""


@dataclass(frozen=True)
class Cost:
    """One priced primitive: ``cycles`` (point estimate) within ``low``..``high``."""

    name: str
    counts: tuple[str, ...]
    cycles: float
    low: float
    high: float
    tag: str
    source: str

    def value(self, estimate: str = "point") -> float:
        return {"point": self.cycles, "low": self.low, "high": self.high}[estimate]


@dataclass(frozen=True)
class CostModel:
    """The priced primitives and the clock rate (``ghz``) that turns cycles into time."""

    costs: Mapping[str, Cost]
    ghz: float
    clock: Cost
    path: Path | None = field(default=None, compare=False)
    estimate: str = "point"

    # ---------------------------------------------------------------- views
    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(self.costs)

    def cycles(self, name: str) -> float:
        """Cycles of one primitive (e.g. ``"tlb_flush"``) at this model's estimate."""
        return self.costs[name].cycles

    def at(self, estimate: str) -> "CostModel":
        """The same table with every primitive (and the clock) at ``"low"``,
        ``"high"`` or ``"point"``.  Low cost means a fast clock too."""
        if estimate not in ESTIMATES:
            raise ValueError(f"estimate must be one of {ESTIMATES}, got {estimate!r}")
        src = self.costs
        new = {k: replace(c, cycles=c.value(estimate)) for k, c in src.items()}
        ghz = {"point": self.clock.cycles, "low": self.clock.high,
               "high": self.clock.low}[estimate]
        return replace(self, costs=new, ghz=ghz, estimate=estimate)

    def with_cycles(self, **cycles: float) -> "CostModel":
        """Override point estimates: ``with_cycles(tlb_flush=30000)``; unknown names raise."""
        new = dict(self.costs)
        for k, v in cycles.items():
            if k == "ghz":
                if not v > 0:
                    raise ValueError("ghz must be > 0")
                continue
            if k not in new:
                raise ValueError(f"unknown primitive {k!r}; known: {', '.join(new)}")
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0):
                raise ValueError(f"cycles for {k!r} must be a number >= 0, got {v!r}")
            new[k] = replace(new[k], cycles=float(v))
        return replace(self, costs=new, ghz=float(cycles.get("ghz", self.ghz)))

    # -------------------------------------------------------------- pricing
    # The one place a count becomes cycles.  Every figure below is priced from
    # the model's own accounting (a ``Work``, a ``HookCall``, or a mapping of Work
    # counters such as a ``Work.held`` dict), never from write outcomes.
    @staticmethod
    def _counts(work) -> dict[str, float]:
        if isinstance(work, Work):
            d = dict(work.ops)
            for k in COUNTERS:
                if k not in d:
                    d[k] = getattr(work, k)
            return d
        if isinstance(work, Mapping):
            return {k: v for k, v in work.items() if k in COUNTERS}
        raise TypeError(f"price() wants a kvmpt.kernel.work.Work or a mapping of Work counters, "
                        f"got {type(work).__name__}")

    def price(self, work) -> dict[str, float]:
        """Cycles per category (one per cost entry) for a Work or a mapping of
        Work counters (unknown keys such as ``mmu_lock_held_steps`` are ignored)."""
        counts = self._counts(work)
        return {name: float(sum(counts.get(k, 0) for k in c.counts)) * c.cycles
                for name, c in self.costs.items()}

    def total(self, work) -> float:
        """All cycles of ``work`` (a Work or a mapping of Work counters)."""
        return float(sum(self.price(work).values()))

    def _only(self, work, counters: tuple[str, ...]) -> float:
        counts = self._counts(work)
        return self.total({k: counts.get(k, 0) for k in counters})

    def trapped_write_cycles(self, work) -> float:
        """Cycles of the guest writes that faulted to emulation in ``work`` (the Work of
        a guest-write stream): ``vm_exit + emulation`` per ``emulated_writes``,
        ``gvt_handler`` per ``handler_calls``, ``hash_probe``/``chain_step`` per
        ``gfn_probes``/``chain_steps`` (``kvmgt_page_track_write()``'s lookup), and
        the ``mmu_lock`` read acquisitions of a design that takes it there.  MMIO exits
        are not trapped writes: :meth:`mmio_cycles`."""
        return self._only(work, TRAPPED_WRITE_COUNTERS)

    def mmio_cycles(self, work) -> float:
        """Cycles of the guest writes that exited to the VMM (no slot, or a READONLY
        slot: ``KVM_EXIT_MMIO``), ``mmio_exit`` per ``mmio_exits``."""
        return self._only(work, ("mmio_exits",))

    def hook_cycles(self, call: HookCall) -> float:
        """Cycles of one slot-hook call (KVMGT's hook, or KVM's own zap): its whole Work."""
        return self.total(call.work)

    def wasted_cycles(self, call: HookCall) -> float:
        """Cycles of the counter and lpage updates a hook call made into metadata freed
        by the same update (S7): :attr:`HookCall.wasted_updates` priced; 0 if not wasted."""
        return self.total(call.wasted_counts)

    def mmu_lock_hold(self, work, mode: str = "write") -> tuple[float, float]:
        """(cycles done under ``mmu_lock`` in total, cycles of the longest single hold),
        for the holds of one ``mode``: ``"write"`` (``write_lock``: what a vCPU fault
        and every other ``mmu_lock`` user waits behind) or ``"read"`` (``read_lock``:
        blocks writers only, e.g. a zap on DELETE/MOVE or GVT's add/remove)."""
        if mode == "write":
            return self.total(work.held), self.total(work.max_hold)
        if mode == "read":
            return self.total(work.read_held), self.total(work.read_max_hold)
        raise ValueError(f"mode must be 'write' or 'read', got {mode!r}")

    def cycles_to_us(self, cycles: float) -> float:
        return float(cycles) / (self.ghz * 1e3)

    def table(self) -> str:
        """The cost table as text: name, cycles, range, tag (``kvmpt.infra.text.table``)."""
        from kvmpt.infra.text import table
        rows = [(c.name, f"{c.cycles:.2f}", f"{c.low:.2f}", f"{c.high:.2f}", c.tag)
                for c in self.costs.values()]
        rows.append(("clock (GHz)", f"{self.ghz:.2f}", f"{self.clock.low:.2f}",
                     f"{self.clock.high:.2f}", self.clock.tag))
        return table(("primitive", "cycles", "low", "high", "tag"), rows, align="lrrrl",
                     max_width=None)


# ---------------------------------------------------------------------------
# Loading

#: the most cycles one primitive may cost (about a day at 10 GHz): a bound that keeps every
#: figure a float, so a typo such as 10**400 is an error here, not an OverflowError later
MAX_CYCLES = 1e15
#: clock rates a cost file may give, in GHz
MAX_GHZ = 100
_ENTRY = {"counts": Field(list, items=str), "cycles": Field(float, lo=0, hi=MAX_CYCLES),
          "low": Field(float, lo=0, hi=MAX_CYCLES), "high": Field(float, lo=0, hi=MAX_CYCLES),
          "tag": Field(str, choices=TAGS), "source": Field(str)}
_CLOCK = {"ghz": Field(float, lo=0, hi=MAX_GHZ), "low": Field(float, lo=0, hi=MAX_GHZ),
          "high": Field(float, lo=0, hi=MAX_GHZ),
          "tag": Field(str, choices=TAGS), "source": Field(str)}


def _check_entry(path, loc, table: tuple, entry, spec: dict) -> None:
    check_table(CostError, path, loc, table, entry, spec)
    if not entry["source"].strip():
        raise CostError(located(path, loc, table, "source", "must not be empty"))
    point = "ghz" if "ghz" in spec else "cycles"
    if not entry["low"] <= entry[point] <= entry["high"]:
        bad = "low" if entry["low"] > entry[point] else "high"
        raise CostError(located(path, loc, table, bad,
                                f"range low={entry['low']} .. high={entry['high']} does not "
                                f"contain {point}={entry[point]}"))


def load_costs(path=None) -> CostModel:
    """Load and validate a cost file (default ``data/costs.toml``)."""
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise CostError(f"a cost file is a path, got {type(path).__name__} {path!r}")
    path = Path(path) if path is not None else COSTS_PATH
    doc, loc = read_toml(path, CostError)
    for key in doc:
        if key not in ("clock", "primitive"):
            raise CostError(located(path, loc, (key,) if isinstance(doc[key], dict) else (),
                                    None if isinstance(doc[key], dict) else key,
                                    "unknown top-level entry (known: [clock], [primitive.NAME])"))
    if "clock" not in doc:
        raise CostError(f"{path}: missing [clock] table")
    _check_entry(path, loc, ("clock",), doc["clock"], _CLOCK)
    if not doc["clock"]["ghz"] > 0 or not doc["clock"]["low"] > 0:
        raise CostError(located(path, loc, ("clock",), "ghz", "clock rate must be > 0"))
    prims = doc.get("primitive")
    if isinstance(prims, dict) and not all(isinstance(e, dict) for e in prims.values()):
        bad = next(k for k, e in prims.items() if not isinstance(e, dict))
        raise CostError(located(path, loc, ("primitive",), bad, "must be a [primitive.NAME] "
                                                                 "table"))
    if not isinstance(prims, dict) or not prims:
        raise CostError(f"{path}: no [primitive.NAME] tables")
    costs: dict[str, Cost] = {}
    priced: set[str] = set()
    for name, e in prims.items():
        table = ("primitive", name)
        _check_entry(path, loc, table, e, _ENTRY)
        if not e["counts"] or not all(isinstance(c, str) for c in e["counts"]):
            raise CostError(located(path, loc, table, "counts",
                                    "must be a non-empty list of Work counter names"))
        for k, c in enumerate(e["counts"]):
            if c in e["counts"][:k]:
                raise CostError(located(path, loc, table, "counts",
                                        f"{c!r} is listed twice (it would be priced twice)"))
            if c not in COUNTERS:
                raise CostError(located(path, loc, table, "counts",
                                        f"{c!r} is not a Work counter (known: "
                                        f"{', '.join(COUNTERS)})"))
        priced.update(e["counts"])
        costs[name] = Cost(name, tuple(e["counts"]), float(e["cycles"]), float(e["low"]),
                           float(e["high"]), e["tag"], e["source"])
    missing = [c for c in COUNTERS if c not in priced]
    if missing:
        raise CostError(f"{path}: no [primitive.*] entry prices {', '.join(missing)} "
                        "(every Work counter needs a cost)")
    c = doc["clock"]
    clock = Cost("clock", (), float(c["ghz"]), float(c["low"]), float(c["high"]), c["tag"],
                 c["source"])
    return CostModel(costs=costs, ghz=float(c["ghz"]), clock=clock, path=path)


@functools.lru_cache(maxsize=1)
def default_costs() -> CostModel:
    """``data/costs.toml``, loaded once."""
    return load_costs()


def price(work, costs: CostModel | None = None) -> dict[str, float]:
    """Cycles per category for ``work`` under ``costs`` (default: ``data/costs.toml``)."""
    return (costs or default_costs()).price(work)


def cycles_to_us(cycles: float, costs: CostModel | None = None) -> float:
    """Cycles to microseconds at the cost model's clock rate (default 3 GHz)."""
    return (costs or default_costs()).cycles_to_us(cycles)
