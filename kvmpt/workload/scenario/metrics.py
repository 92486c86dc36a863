"""The declared metrics of a run: :data:`SUMMARY_METRICS`, one function per summary key.

Mesa's ``DataCollector(model_reporters={...})``: each metric is computed at the
end of the run from the VM's own state (``vm.work``, ``vm.hook_calls``,
``vm.write_stats``, ``vm.op_log``, ``vm.warnings``), the loop's per-cause ``Work``
deltas and its per-op rows.  Counts are the model's; every cycle and microsecond
figure is ``kvmpt.workload.costs.CostModel``'s price of a ``Work``.  The ``r``
each metric takes is the run's state (``kvmpt.workload.scenario.loop._Run``).

The prices of a list of slot-hook calls (:func:`kvmgt_cycles`, :func:`zap_cycles`,
:func:`wasted_cycles`, :func:`lock_holds`) serve the run's totals here and each
op's row of the time series (``result._op_row``) alike.
"""
from __future__ import annotations

import errno as errno_mod
from typing import Any

import numpy as np

from kvmpt.constants import WRITE_OUTCOMES
from kvmpt.kernel.memslot import CHANGES

__all__ = ["SUMMARY_METRICS", "kvmgt_cycles", "zap_cycles", "wasted_cycles", "lock_holds"]


def _kinds(r) -> np.ndarray:
    return np.array([row["kind"] for row in r.rows], dtype=object)


def _errnos(r) -> np.ndarray:
    return np.array([row["errno"] for row in r.rows], dtype=int)


def _per(total: float, n: int) -> float:
    return total / n if n else 0.0


# Prices of a list of slot-hook calls (``vm.hook_calls``, or one op's ``rec.hook_calls``):
# the run's totals here, one op's row in ``result._op_row``.

def kvmgt_cycles(costs, calls) -> float:
    """Cycles of KVMGT's slot-hook calls (``track_flush_slot`` / ``track_remove_region``)."""
    return sum(costs.hook_cycles(c) for c in calls if c.node == "kvmgt")


def zap_cycles(costs, calls) -> float:
    """Cycles of KVM's own slot hook (``kvm_mmu_zap_all_fast``)."""
    return sum(costs.hook_cycles(c) for c in calls if c.node != "kvmgt")


def wasted_cycles(costs, calls) -> float:
    return sum(costs.wasted_cycles(c) for c in calls)


def lock_holds(costs, calls) -> list[tuple[float, float]]:
    """(held, longest) ``mmu_lock`` write-hold cycles of each call."""
    return [costs.mmu_lock_hold(c.work) for c in calls]


def _hook_cycles(r) -> float:
    return kvmgt_cycles(r.costs, r.vm.hook_calls)


def _zap_cycles(r) -> float:
    return zap_cycles(r.costs, r.vm.hook_calls)


def _memslot_cycles(r) -> float:
    return _hook_cycles(r) + _zap_cycles(r) + r.costs.total(r.caused["memslot"])


def _delete_hook_cycles(r) -> float:
    dels = r.deletes_with_kvmgt()
    return _per(kvmgt_cycles(r.costs, [c for d in dels for c in d.hook_calls]), len(dels))


def _wasted(r) -> float:
    return wasted_cycles(r.costs, r.vm.hook_calls)


def _memslot_holds(r) -> list[tuple[float, float]]:
    return lock_holds(r.costs, r.vm.hook_calls)


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
        sum(h[0] for h in lock_holds(r.costs, r.kvmgt_calls())), len(r.kvmgt_calls()))),
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
