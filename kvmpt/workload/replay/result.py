"""What a replay returns: one :class:`OpResult` per op and the :class:`ReplayResult`
(op counts by kind, mismatches, final layout, hook work, stale gfns); printed by
:func:`kvmpt.review.textreport.render_replay`."""
from __future__ import annotations

import errno as errno_mod
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from kvmpt.kernel.design import Design
from kvmpt.kernel.memslot import CHANGES
from kvmpt.workload.costs import CostModel
from kvmpt.workload.replay.tracked import TrackedSet
from kvmpt.workload.trace import MemslotOp

KINDS = CHANGES
#: primitive-op counters reported per hook (kvmpt.kernel.work); missing ones count 0
WORK_FIELDS = ("gfn_probes", "chain_steps", "counter_updates", "lpage_updates", "tlb_flushes",
               "hash_deletes", "zaps", "srcu_syncs", "mmu_lock_acquisitions",
               "mmu_lock_held_steps")


@dataclass(frozen=True)
class OpResult:
    """What one op did: the kind the kernel picked, the errno the model
    returned (0 on success), the trace's errno (or None) and whether they agree."""

    index: int                    # position in the trace's op list (-1: prologue)
    op: MemslotOp
    kind: str
    errno: int
    expected: int | None
    note: str = ""
    hook_calls: tuple = ()
    stale_after: int | None = None
    newly_stale: int = 0
    warnings: tuple[str, ...] = ()       # kernel WARNs the model recorded during the op

    @property
    def match(self) -> bool | None:
        return None if self.expected is None else self.expected == self.errno

    @property
    def ok(self) -> bool:
        return self.errno == 0

    def describe(self) -> str:
        where = f"line {self.op.lineno}" if self.op.lineno else f"op {self.index}"
        err = "ok" if self.errno == 0 else errno_mod.errorcode.get(self.errno, str(self.errno))
        return (f"{where}: {self.kind} AS{self.op.as_id} slot {self.op.slot} "
                f"gpa 0x{self.op.gpa:x} size 0x{self.op.size:x} -> {err}")


@dataclass
class ReplayResult:
    """Everything :func:`~kvmpt.workload.replay.replay` found; ``summary()`` for a dict,
    :func:`kvmpt.review.textreport.render_replay` to print."""

    design: Design
    results: list[OpResult]
    prologue: list[OpResult] = field(default_factory=list)
    final_layout: dict[int, list[tuple[int, int, int, int, int]]] = field(default_factory=dict)
    kvmgt: bool = False
    tracked: TrackedSet | None = None
    stale_gfns: tuple[int, ...] = ()
    invariant_violations: tuple[str, ...] = ()
    costs: CostModel | None = None
    seed: int = 0
    source: str = ""

    # -- op-level views ---------------------------------------------------
    @property
    def counts(self) -> dict[str, int]:
        """Ops by kind (attempted)."""
        c = Counter(r.kind for r in self.results)
        return {k: c.get(k, 0) for k in KINDS}

    @property
    def ok_counts(self) -> dict[str, int]:
        c = Counter(r.kind for r in self.results if r.ok)
        return {k: c.get(k, 0) for k in KINDS}

    @property
    def mismatches(self) -> list[OpResult]:
        return [r for r in self.results if r.match is False]

    @property
    def notes(self) -> list[OpResult]:
        return [r for r in self.results if r.note]

    @property
    def warnings(self) -> list[tuple[OpResult, str]]:
        """Kernel WARNs (``WARN_ON`` in the mirrored code) with the op that fired them."""
        return [(r, w) for r in self.results for w in r.warnings]

    @property
    def unattributed_stale(self) -> int:
        """Stale gfns at the end that no op was seen making stale (0 expected)."""
        return max(0, len(self.stale_gfns) - sum(r.newly_stale for r in self.results))

    @property
    def staling_ops(self) -> list[OpResult]:
        """Ops after which more gfns were stale than before."""
        return [r for r in self.results if r.newly_stale > 0]

    # -- hook work ----------------------------------------------------------
    def hook_calls(self) -> list:
        return [c for r in self.results for c in r.hook_calls]

    def hook_table(self) -> dict[str, dict[str, Any]]:
        """Per hook name: calls, wasted calls, empty walks, work counts and, with a cost
        table, cycles (``kvmpt.workload.costs.CostModel``: the whole call, its ``mmu_lock`` write
        holds, the updates into freed metadata)."""
        costs = self.costs
        table: dict[str, dict[str, Any]] = {}
        for c in self.hook_calls():
            row = table.setdefault(c.hook, {"node": c.node, "calls": 0, "wasted_calls": 0,
                                            "harmful_calls": 0, "hits": 0, "empty_walks": 0,
                                            "wasted_updates": 0, **{k: 0 for k in WORK_FIELDS},
                                            "cycles": None, "mmu_lock_cycles": None,
                                            "longest_hold_cycles": None, "wasted_cycles": None})
            w = c.work.as_dict()
            row["calls"] += 1
            row["hits"] += c.hits
            if c.npages and not c.hits:
                row["empty_walks"] += 1
            row["wasted_calls"] += bool(c.wasted)
            row["wasted_updates"] += c.wasted_updates
            row["harmful_calls"] += bool(c.harmful)
            for k in WORK_FIELDS:
                row[k] += w[k]
            if costs is not None:
                held, longest = costs.mmu_lock_hold(c.work)
                row["cycles"] = (row["cycles"] or 0.0) + costs.hook_cycles(c)
                row["mmu_lock_cycles"] = (row["mmu_lock_cycles"] or 0.0) + held
                row["longest_hold_cycles"] = max(row["longest_hold_cycles"] or 0.0, longest)
                row["wasted_cycles"] = (row["wasted_cycles"] or 0.0) + costs.wasted_cycles(c)
        return table

    def us(self, cycles: float | None) -> float | None:
        """Cycles to microseconds with the cost model's clock; None without one."""
        if cycles is None or self.costs is None:
            return None
        return self.costs.cycles_to_us(cycles)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready dict of the result."""
        return {
            "design": self.design.name,
            "source": self.source,
            "seed": self.seed,
            "ops": len(self.results),
            "prologue_ops": len(self.prologue),
            "counts": self.counts,
            "ok_counts": self.ok_counts,
            "mismatches": [{"line": r.op.lineno, "index": r.index, "kind": r.kind,
                            "errno": r.errno, "expected": r.expected} for r in self.mismatches],
            "notes": [{"line": r.op.lineno, "index": r.index, "note": r.note}
                      for r in self.notes],
            "final_layout": {str(a): [{"slot": s, "gpa": hex(g), "size": hex(n),
                                       "flags": hex(f), "ua": hex(u)}
                                      for s, g, n, f, u in v]
                             for a, v in self.final_layout.items()},
            "kvmgt": self.kvmgt,
            "tracked": None if self.tracked is None else {
                "n": len(self.tracked.gfns), "placed_after": self.tracked.placed_after,
                "slots": [list(s) for s in self.tracked.slots], "seed": self.tracked.seed,
                "failed": self.tracked.failed},
            "hooks": self.hook_table(),
            "kernel_warnings": [{"line": r.op.lineno, "index": r.index, "warning": w}
                                for r, w in self.warnings],
            "stale_gfns": len(self.stale_gfns),
            "unattributed_stale": self.unattributed_stale,
            "staling_ops": [{"line": r.op.lineno, "index": r.index, "kind": r.kind,
                             "as_id": r.op.as_id, "slot": r.op.slot,
                             "newly_stale": r.newly_stale} for r in self.staling_ops],
            "invariant_violations": list(self.invariant_violations),
        }
