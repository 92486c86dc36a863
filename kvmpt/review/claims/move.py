"""Section 4: "actively prevent MOVE if there are external page trackers"
(<Y26SI3uh8JV0vvO6@google.com>): a MOVE that would succeed with KVMGT attached, and the
MOVEs real QEMU issues (its traces in ``data/traces``, replayed: bulk work, one call)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

from kvmpt.constants import GIB, PAGE_SHIFT
from kvmpt.kernel.design import Design
from kvmpt.review.claims.common import (TRACE_DIR, page_table_writes, set_region, shadowed_slot,
                                        snapshot, write_stream)

__all__ = ["move_with_kvmgt", "qemu_move_census"]


def move_with_kvmgt(design: Design | str, *, tracked: int = 64, writes: int = 2000,
                    seed: int = 0) -> dict[str, Any]:
    """A MOVE that *would* succeed (valid target, memory available) of a slot holding
    ``tracked`` shadowed pages, KVMGT attached; then ``writes`` guest writes to those
    page-table pages *where they now are*: a MOVE keeps the host memory (hva) and changes
    its gfns, so after a successful MOVE the guest writes them at ``gfn + delta``, gfns
    nobody tracks.  Every write targets a shadowed page table, so a write that does not
    reach GVT's handler is missed (``writes["missed"]``).  The notebook's section 4 writes
    this experiment out in the public API."""
    d = Design.coerce(design)
    vm, gvt, rng, gfns = shadowed_slot(d, tracked=tracked, seed=seed)
    old_gpa, new_gpa = 4 * GIB, 8 * GIB
    before = snapshot(vm, gvt)
    err = set_region(vm, 1, new_gpa, GIB)                       # MOVE
    after = snapshot(vm, gvt)
    delta = 0 if err else (new_gpa - old_gpa) >> PAGE_SHIFT
    w = write_stream(vm, page_table_writes(rng, gfns + delta, writes, offsets=False))
    w["missed"] = writes - w["handled"]       # every write targets a shadowed page table
    return {"design": d.name, "errno": err, "before": before, "after": after,
            "writes": w, "delta_gfns": delta, "violations": vm.check_invariants()[:3]}


def qemu_move_census(paths: Iterable[str | Path] | None = None,
                     designs: Sequence[Design | str] = ("v6.5", "v6.6"),
                     tracked: int = 0, seed: int = 0) -> list[dict[str, Any]]:
    """Replay each real QEMU trace through each design (``kvmpt.workload.replay``) and count the
    updates by kind: a MOVE count of 0 means rejecting MOVE costs that VMM nothing.

    With ``tracked > 0`` KVMGT is attached and shadows that many RAM pages once the trace
    has laid out RAM (``kvmpt.workload.replay.auto_track_point``); ``stale`` then counts the
    shadowed pages whose writes no longer reach GVT at the end, ``staled_by`` the ops that
    made them stale (``AS1 DELETE`` = an SMM address-space slot), ``warns`` the kernel
    WARNs the model recorded.  A trace with too little RAM for the tracked set (a trace
    that starts mid-life) is replayed without KVMGT (``stale`` is None)."""
    from kvmpt.workload.replay import replay_designs
    from kvmpt.workload.trace import load_qemu_trace
    if paths is None:
        paths = sorted(p for p in TRACE_DIR.glob("*.trace") if "format_samples" not in p.name)
    rows = []
    for p in paths:
        ops = load_qemu_trace(str(p))
        try:
            results = replay_designs(ops, designs, tracked=tracked, seed=seed)
            with_kvmgt = tracked > 0
        except ValueError:
            results = replay_designs(ops, designs)
            with_kvmgt = False
        for r in results:
            s = r.summary()
            rows.append({"trace": Path(p).stem, "design": s["design"], "ops": s["ops"],
                         **{k.lower(): v for k, v in s["counts"].items()},
                         "move_ok": s["ok_counts"]["MOVE"],
                         "as1_deletes": sum(1 for x in r.results
                                            if x.kind == "DELETE" and x.op.as_id == 1),
                         "mismatches": len(s["mismatches"]),
                         "stale": s["stale_gfns"] if with_kvmgt else None,
                         "staled_by": sorted({f"AS{o['as_id']} {o['kind']}"
                                              for o in s["staling_ops"]}),
                         "warns": len(s["kernel_warnings"])})
    return rows
