"""Section 2: "The 'flush' hook is flawed as it's invoked before the memslot operation is
guaranteed" (<Y26SI3uh8JV0vvO6@google.com>): a MOVE that fails in prepare (S3)."""
from __future__ import annotations

import errno
from dataclasses import dataclass, field

from kvmpt.constants import GIB, PAGE_SHIFT
from kvmpt.kernel.design import Design
from kvmpt.review.claims.common import (Snapshot, page_table_writes, set_region, shadowed_slot,
                                        snapshot, write_stream)

__all__ = ["SECTION2_DESIGNS", "FailedMove", "failed_move", "CAUSES"]

#: The three points section 2 toggles between: the slot hook alone, then the MOVE policy.
SECTION2_DESIGNS = {
    "v6.5: flush hook, MOVE allowed": Design.preset("v6.5"),
    "remove hook, MOVE allowed": Design.preset("v6.5").replace(slot_hook="remove"),
    "v6.6: remove hook, MOVE rejected": Design.preset("v6.6"),
}

#: How the MOVE fails in ``kvm_prepare_memory_region()``: bad input, or an injected -ENOMEM.
CAUSES = ("max_gfn", "enomem")


@dataclass
class FailedMove:
    """A MOVE of a slot holding shadowed pages that fails in prepare (S3)."""

    design: str
    cause: str                     # "max_gfn" | "enomem"
    errno: int
    before: Snapshot
    after: Snapshot
    writes: dict[str, int]         # guest writes to the shadowed pages after the MOVE
    events: list = field(default_factory=list)
    hook_calls: list = field(default_factory=list)     # (hook, node, hits, harmful)

    @property
    def missed(self) -> int:
        return self.writes["missed"]


def failed_move(design: Design | str, cause: str = "enomem", *, slot_gib: int = 1,
                tracked: int = 64, writes: int = 2000, seed: int = 0) -> FailedMove:
    """Slot 1 (``slot_gib`` GiB at 4 GiB) holds ``tracked`` pages GVT shadows (guest page
    tables); QEMU MOVEs it and the MOVE fails in ``kvm_prepare_memory_region()``:

    * ``"max_gfn"``: the new range ends above ``kvm_mmu_max_gfn()`` (-EINVAL, bad input);
    * ``"enomem"``: ``kvm_alloc_memslot_metadata()`` fails (-ENOMEM, injected).

    The old slot is restored (S4).  Then the guest writes ``writes`` times to its page
    tables (uniformly over the shadowed pages); a write that does not reach GVT's
    handler is *missed*: its shadow page table is now stale.  The notebook's section 2
    writes this experiment out in the public API."""
    if cause not in CAUSES:
        raise ValueError(f"cause must be 'max_gfn' or 'enomem', got {cause!r}")
    d = Design.coerce(design)
    vm, gvt, rng, gfns = shadowed_slot(d, slot_gib=slot_gib, tracked=tracked, seed=seed)
    base, size = 4 * GIB, slot_gib * GIB
    before = snapshot(vm, gvt)
    if cause == "max_gfn":
        target = ((vm.max_gfn + 2) << PAGE_SHIFT) - size   # last page one past max gfn
    else:
        target = base + 2 * size
        vm.fail_next_prepare(errno.ENOMEM)
    n0, c0 = len(vm.events), len(vm.hook_calls)
    err = set_region(vm, 1, target, size)
    after = snapshot(vm, gvt)
    w = write_stream(vm, page_table_writes(rng, gfns, writes))
    return FailedMove(d.name, cause, err, before, after, w,
                      [(s, dt.get("S", ""), dt) for s, dt in vm.events[n0:]],
                      [(c.hook, c.node, c.hits, c.harmful) for c in vm.hook_calls[c0:]])
