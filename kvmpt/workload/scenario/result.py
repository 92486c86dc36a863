"""What a run records: :class:`RunResult`, its per-op time series and hook-call table, and
its text table.

A row of the time series is one memslot op (:func:`_op_row`), a row of the hook
table one slot-hook call (:func:`_hook_table`); both are priced by
``kvmpt.workload.costs.CostModel``, the one home of cycle figures.  The text table
(:meth:`RunResult.summary_table`) is ``kvmpt.infra.text.table``, the one renderer.
The ``r`` these functions take is the run's state (``kvmpt.workload.scenario.loop._Run``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kvmpt.infra.text import table
from kvmpt.kernel.design import Design
from kvmpt.kernel.memslot import REJECTED
from kvmpt.kernel.work import Work
from kvmpt.workload.costs import CostModel
from kvmpt.workload.scenario.definition import Scenario
from kvmpt.workload.scenario.metrics import kvmgt_cycles, lock_holds, wasted_cycles, zap_cycles
from kvmpt.workload.scenario.schedule import Event
from kvmpt.workload.trace import MemslotOp

__all__ = ["RunResult"]


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
    r0 = results[0]
    title = (f"scenario {r0.scenario.name} (seed {r0.seed}), clock "
             f"{r0.costs.ghz:g} GHz, costs: {r0.costs.estimate}")
    rows = [[label, *[format(r.summary[key], fmt) for r in results]]
            for key, label, fmt in _SUMMARY_ROWS]
    return title + "\n" + table(["", *[r.design.name for r in results]], rows)


# ---------------------------------------------------------------------------
# The columns: one row per memslot op, one row per slot-hook call

#: the time series' columns (then one ``cyc_<category>`` per cost category)
_OP_COLUMNS = (
    "op", "t_s", "phase", "cause", "kind", "as_id", "slot", "npages", "errno", "hits",
    "hook_cycles", "zap_cycles", "ioctl_cycles", "wasted_cycles", "mmu_lock_hold_us",
    "mmu_lock_held_us", "writes", "trapped_write_cycles", "missed_writes", "stale_gfns",
    "violations")


def _op_row(r, ev: Event, op: MemslotOp, rec, err: int, ioctl_work: dict[str, int],
            hits: int) -> dict[str, Any]:
    """One time-series row: the op, what its hook calls and ioctl cost, and the guest
    writes since the previous op."""
    costs = r.costs
    calls = rec.hook_calls if rec is not None else []
    by_cat = costs.price(ioctl_work)
    for c in calls:
        for k, v in costs.price(c.work).items():
            by_cat[k] += v
    holds = lock_holds(costs, calls)
    row = dict(
        op=len(r.rows), t_s=ev.t, phase=ev.phase, cause=ev.cause,
        kind=rec.change if rec is not None else REJECTED, as_id=op.as_id, slot=op.slot,
        npages=op.npages, errno=err, hits=hits,
        hook_cycles=kvmgt_cycles(costs, calls), zap_cycles=zap_cycles(costs, calls),
        ioctl_cycles=costs.total(ioctl_work),
        wasted_cycles=wasted_cycles(costs, calls),
        mmu_lock_hold_us=costs.cycles_to_us(max((h[1] for h in holds), default=0.0)),
        mmu_lock_held_us=costs.cycles_to_us(sum(h[0] for h in holds)),
        writes=r.writes_since_op, trapped_write_cycles=costs.trapped_write_cycles(r.since_op),
        missed_writes=r.vm.write_stats["missed"], stale_gfns=r.stale_now,
        violations=r.violations_now)
    row.update({f"cyc_{c}": v for c, v in by_cat.items()})
    return row


def _hook_table(r) -> dict[str, np.ndarray]:
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
