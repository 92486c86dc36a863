"""The tracked set: the guest page-table pages GVT shadows (workloads.md §2.2), where they
go (:func:`place_tracked`, in AS0 RAM) and when (:func:`auto_track_point`, once the
trace has laid out RAM)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from kvmpt.constants import GIB, PAGE_SHIFT, RAM_ROLES
from kvmpt.workload.trace import MemslotOp

BIG_SLOT_PAGES = GIB >> PAGE_SHIFT     # 1 GiB: "big RAM slot" (workloads.md §1.5)


@dataclass(frozen=True)
class TrackedSet:
    gfns: tuple[int, ...]
    placed_after: int                 # number of trace ops applied before placement
    slots: tuple[tuple[int, int, int], ...]   # (slot id, base_gfn, npages) used, AS0
    seed: int
    failed: int = 0                   # shadow() calls the model refused


def ram_candidates(vm, roles: Mapping[tuple[int, int], str] | None) -> list[Any]:
    """AS0 slots where guest page-table pages would live (workloads.md §2.2: the
    big low-RAM and high-RAM slots): by role when known, else writable, not
    dirty-logged slots of at least 1 GiB, else the largest such slot."""
    slots = [s for s in vm.memslots(0) if not s.flags]
    if roles:
        by_role = [s for s in slots if roles.get((0, s.id)) in RAM_ROLES]
        if by_role:
            return by_role
    big = [s for s in slots if s.npages >= BIG_SLOT_PAGES]
    if big:
        return big
    return sorted(slots, key=lambda s: -s.npages)[:1]


def place_tracked(vm, gvt, n: int, seed: int = 0,
                  roles: Mapping[tuple[int, int], str] | None = None,
                  placed_after: int = 0) -> TrackedSet:
    """Shadow ``n`` gfns in AS0 RAM, in runs of 1-64 contiguous gfns [G] (workloads.md §2.2).

    Slots are picked in proportion to their size; the draw is deterministic
    for a given ``seed`` and layout.  Raises ValueError if there is no RAM.
    """
    cands = ram_candidates(vm, roles)
    total = sum(s.npages for s in cands)
    if not cands or total < n:
        raise ValueError(f"cannot place {n} tracked gfns: address space 0 has "
                         f"{total} gfns of RAM at that point (use a layout, or --track-after)")
    rng = np.random.default_rng(seed)
    weights = np.array([s.npages for s in cands], dtype=float) / total
    chosen: set[int] = set()
    order: list[int] = []
    while len(order) < n:
        s = cands[int(rng.choice(len(cands), p=weights))]
        run = int(rng.integers(1, 65))
        start = s.base_gfn + int(rng.integers(0, max(1, s.npages - run + 1)))
        for g in range(start, min(start + run, s.base_gfn + s.npages)):
            if g not in chosen and len(order) < n:
                chosen.add(g)
                order.append(g)
    # every candidate lies in an address-space-0 RAM slot, so the only failure
    # is a gfn GVT already shadows (intel_vgpu_register_page_track: -EEXIST)
    todo = [g for g in sorted(order) if g not in gvt.page_track_tree]
    failed = len(order) - len(todo)
    gvt.shadow_many(np.array(todo, dtype=np.uint64))
    return TrackedSet(gfns=tuple(sorted(order)), placed_after=placed_after,
                      slots=tuple((s.id, s.base_gfn, s.npages) for s in cands), seed=seed,
                      failed=failed)


def auto_track_point(ops: Sequence[MemslotOp],
                     roles: Mapping[tuple[int, int], str] | None = None) -> int:
    """Where the tracked set goes by default: after the trace's last CREATE of a
    big address-space-0 RAM slot, i.e. once firmware has laid out RAM and the
    guest's i915 driver could load (workloads.md §2.2: nothing is tracked before
    that).  The churn after that point, e.g. the SMM address space's RAM
    DELETEs of an SMM boot, then meets a full tracked set.  0 if the trace
    creates no such slot."""
    point = 0
    for i, op in enumerate(ops):
        if op.as_id or not op.size or op.flags:
            continue
        role = roles.get((0, op.slot)) if roles else None
        if role in RAM_ROLES or (role is None and op.npages >= BIG_SLOT_PAGES):
            point = i + 1
    return point

