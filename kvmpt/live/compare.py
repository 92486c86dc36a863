"""The model's own price of what ``kvmpt.live.calibrate`` times on the host.

The same operation sequence as :func:`kvmpt.live.calibrate.memslot_times`
(CREATE, dirty log on, dirty log off, MOVE, DELETE of one slot) runs through a
model :class:`kvmpt.kernel.vm.VM`, and each operation's primitive counts (the VM's own
``work`` plus its hook calls' ``work``) are priced by ``data/costs.toml``
(:meth:`kvmpt.workload.costs.CostModel.total`).  The trapped write is priced as the
model prices one: ``vm_exit`` + ``emulation`` per emulated write.

So a reader sees the model's assumptions beside a real kernel: for example
KVMGT's v6.5 ``track_flush_slot`` walk of a 1 TiB slot (one hash probe per
gfn) against KVM's own DELETE of that slot on this host.
"""
from __future__ import annotations

from dataclasses import dataclass

from kvmpt.workload.costs import COUNTERS, default_costs
from kvmpt.kernel.memslot import KVM_MEM_LOG_DIRTY_PAGES
from kvmpt.kernel.vm import VM
from kvmpt.kernel.work import Work
from kvmpt.live.calibrate import OPS
from kvmpt.live.requests import UA_BASE

__all__ = ["MODEL_CASES", "ModelPoint", "model_costs", "model_trapped_write_us"]

#: (label, design preset, KVMGT attached)
MODEL_CASES = (
    ("model: KVM alone (v6.6)", "v6.6", False),
    ("model: v6.5 + KVMGT (flush_slot walk)", "v6.5", True),
    ("model: v6.6 + KVMGT (remove_region walk)", "v6.6", True),
)


@dataclass(frozen=True)
class ModelPoint:
    case: str
    op: str
    size: int
    us: float
    errno: int


def _counts(vm: VM, before: dict, nacq: int, calls) -> dict:
    counts = {k: vm.work.ops[k] - before[k] for k in before}
    counts["mmu_lock_acquisitions"] = vm.work.mmu_lock_acquisitions - nacq
    for call in calls:
        for k, v in call.work.ops.items():
            counts[k] = counts.get(k, 0) + v
        counts["mmu_lock_acquisitions"] += call.work.mmu_lock_acquisitions
    return {k: v for k, v in counts.items() if k in COUNTERS}


def model_costs(sizes, costs=None, cases=MODEL_CASES) -> list[ModelPoint]:
    """The model's price (µs at ``costs``' clock) of each of :data:`OPS` at each size."""
    costs = costs or default_costs()
    steps = {"CREATE": lambda s: (0, 0, s), "FLAGS_ONLY_DIRTY_ON":
             lambda s: (KVM_MEM_LOG_DIRTY_PAGES, 0, s), "FLAGS_ONLY_DIRTY_OFF":
             lambda s: (0, 0, s), "MOVE": lambda s: (0, s, s), "DELETE": lambda s: (0, s, 0)}
    out: list[ModelPoint] = []
    for label, design, kvmgt in cases:
        for size in sizes:
            vm = VM(design=design)
            if kvmgt:
                vm.attach_kvmgt()
            for op in OPS:
                flags, gpa, sz = steps[op](size)
                if op == "DELETE" and not vm.memslots(0):
                    gpa = 0                                 # the MOVE was rejected
                before, nacq = dict(vm.work.ops), vm.work.mmu_lock_acquisitions
                ncalls = len(vm.hook_calls)
                err = 0
                try:
                    vm.set_user_memory_region(0, flags, gpa, sz, UA_BASE)
                except OSError as exc:
                    err = exc.errno
                cyc = costs.total(_counts(vm, before, nacq, vm.hook_calls[ncalls:]))
                out.append(ModelPoint(label, op, size, costs.cycles_to_us(cyc), err))
    return out


def model_trapped_write_us(costs=None) -> dict[str, float]:
    """The model's prices of one trapped guest write, in µs: the exit alone, exit +
    emulation (the KVM part of a write-tracked store, which KVMGT's handler then takes),
    and an MMIO exit to userspace (``mmio_exits``: what the host's round trip measures)."""
    costs = costs or default_costs()
    out = {"vm_exit": costs.cycles_to_us(costs.cycles("vm_exit"))}
    for label, primitive in (("vm_exit + emulation", "emulated_writes"),
                             ("mmio_exit (KVM_EXIT_MMIO round trip)", "mmio_exits")):
        w = Work()
        w.add(primitive)
        out[label] = costs.cycles_to_us(costs.total(w))
    return out


def model_price_table(sizes, costs=None) -> str:
    """The model's prices of the calibrated operations as a fixed-width text table
    (one row per operation and size, one column per :data:`MODEL_CASES` case)."""
    from kvmpt.infra.text import fmt_bytes, fmt_seconds, table
    pts = {(p.case, p.op, p.size): p for p in model_costs(sizes, costs)}
    cols = ("op", "slot") + tuple(("KVM alone", "6.5+KVMGT", "6.6+KVMGT")[:len(MODEL_CASES)])
    rows = []
    for op in OPS:
        for s in sizes:
            cells = []
            for case, _, _ in MODEL_CASES:
                p = pts[(case, op, s)]
                cells.append(fmt_seconds(p.us * 1e-6) + (" (EINVAL)" if p.errno else ""))
            rows.append((op.replace("FLAGS_ONLY_", "FLAGS "), fmt_bytes(s), *cells))
    return table(cols, rows)
