"""Section 1: what happens, step by step (S1..S8 of ``kvm_set_memslot()``), on each kind of
memslot update, and the picture of a booted VM with KVMGT attached."""
from __future__ import annotations

import errno
from typing import Any

import numpy as np

from kvmpt.constants import GIB, PAGE_SHIFT
from kvmpt.kernel.design import Design
from kvmpt.review.claims.common import new_vm, set_region, slot_ua

__all__ = ["memslot_flow", "vm_snapshot"]


def memslot_flow(design: Design | str = "v6.6", tracked: int = 4) -> dict[str, Any]:
    """One VM, one update of every kind, KVMGT attached and shadowing ``tracked`` pages
    of the slot the updates touch.  Returns ``{"ops": [(label, errno)], "events":
    [(op label, step, S, detail)], "notifiers": [...], "slots": [...]}``: the
    ``vm.events`` of each update, in order, labelled with the update that made them;
    ``ops`` rows are ``(label, errno, stale pages after it)``."""
    d = Design.coerce(design)
    vm = new_vm(d)
    gvt = vm.attach_kvmgt()
    vm.set_user_memory_region(0, 0, 0, 3 * GIB, slot_ua(0))
    ops = [("CREATE slot 1", (4 * GIB, GIB, 0), None),
           ("FLAGS_ONLY (dirty log)", (4 * GIB, GIB, 1), None),
           ("MOVE, ENOMEM in prepare", (8 * GIB, GIB, 1), errno.ENOMEM),
           ("MOVE to 8 GiB", (8 * GIB, GIB, 1), None),
           ("DELETE slot 1", None, None)]
    out_ops, events = [], []  # (label, errno, stale pages after it), (label, step, S, detail)
    shadow_at = 4 * GIB >> PAGE_SHIFT
    for label, args, inject in ops:
        if label.startswith("FLAGS_ONLY"):
            for i in range(tracked):
                gvt.shadow(shadow_at + 64 * i)
        if inject:
            vm.fail_next_prepare(inject)
        n0 = len(vm.events)
        if args is None:       # DELETE wherever slot 1 is now
            s = next(s for s in vm.memslots(0) if s.id == 1)
            err = set_region(vm, 1, s.base_gfn << PAGE_SHIFT, 0, ua=s.userspace_addr)
        else:
            gpa, size, flags = args
            err = set_region(vm, 1, gpa, size, flags)
        out_ops.append((label, err, len(gvt.stale_gfns())))
        for step, detail in vm.events[n0:]:
            events.append((label, step, detail.get("S", ""), dict(detail)))
    return {"design": d.name, "ops": out_ops, "events": events, "tracked": tracked,
            "notifiers": [n.name for n in vm.track_notifier_list],
            "slots": [(s.id, s.base_gfn, s.npages) for s in vm.memslots(0)],
            "stale": len(gvt.stale_gfns()), "violations": len(vm.check_invariants())}


def vm_snapshot(design: Design | str = "v6.6", layout: str = "q35-ovmf-smm",
                tracked: int = 256, seed: int = 0) -> dict[str, Any]:
    """A booted VM of ``layout`` (``data/layouts``) with KVMGT attached and ``tracked`` guest
    page-table pages shadowed in its RAM slots (``kvmpt.workload.replay.place_tracked``): every
    memslot with its role, KVM's write-tracked gfns, KVMGT's ``ptable`` and the notifier
    list, for the section-1 picture."""
    from kvmpt.workload.layouts import layout_ops, load_layout
    from kvmpt.workload.replay import place_tracked
    d = Design.coerce(design)
    lay = load_layout(layout)
    vm = new_vm(d)
    gvt = vm.attach_kvmgt()
    for op in layout_ops(lay):
        vm.set_user_memory_region(op.ioctl_slot, op.flags, op.gpa, op.size, op.ua)
    roles = {(s.as_id, s.slot): s.role for s in lay.slots}
    placed = place_tracked(vm, gvt, tracked, seed, roles)
    slots = []
    for as_id in (0, 1):
        for s in vm.memslots(as_id):
            tracked_here = [g for g in placed.gfns
                            if s.base_gfn <= g < s.base_gfn + s.npages and as_id == 0]
            n_tracked = int(np.count_nonzero(s.arch.gfn_write_track))
            slots.append({"as_id": as_id, "id": s.id, "base_gfn": s.base_gfn,
                          "npages": s.npages, "flags": s.flags,
                          "role": roles.get((as_id, s.id), "?"),
                          "write_tracked": n_tracked, "shadowed": tracked_here})
    return {"design": d.name, "layout": layout, "slots": slots,
            "notifiers": [n.name for n in vm.track_notifier_list],
            "ptable": len(gvt.ptable), "shadowed": len(gvt.shadowed_gfns()),
            "stale": len(gvt.stale_gfns()), "violations": len(vm.check_invariants())}
