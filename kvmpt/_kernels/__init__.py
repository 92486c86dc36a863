"""kvmpt's data plane: Numba kernels over plain NumPy arrays (struct of arrays).

Modules: ``policy`` (the one place that decides decorator options and the
cache directory), ``common`` (hash, hlist, slot search), ``flat`` (model ->
arrays, cached), ``writes`` (guest write stream), ``walk`` (KVMGT's slot walk),
``track`` (bulk write-track counter updates), ``workload`` (seeded synthetic
write streams).  The model's public wrappers are
``VM.guest_write_batch``, ``ProtectTable.walk_range`` and ``KVMGT.shadow_many``.

``warmup()`` compiles (or loads from the cache) every kernel on tiny inputs.
"""
from __future__ import annotations

import time

__all__ = ["warmup"]


def warmup() -> float:
    """Compile or load every kernel by running it on a tiny VM; returns seconds."""
    t0 = time.perf_counter()
    import numpy as np

    from ..design import Design
    from ..vm import VM
    from . import walk, workload, writes

    for design in ("v6.5", "v6.6"):
        d = Design.preset(design)
        vm = VM(design=d)
        vm.set_user_memory_region(0, 0, 0, 1 << 22, 1 << 32)
        vm.set_user_memory_region(1, 2, 1 << 22, 1 << 16, (1 << 32) + (1 << 22))
        gvt = vm.attach_kvmgt()
        gvt.shadow_many(np.array([3, 5, 700], dtype=np.uint64))
        gpas = np.array([3 << 12, 5 << 12, 9 << 12, (1 << 22) + 8, 1 << 40], dtype=np.uint64)
        vm.guest_write_batch(gpas, outcomes=True)
        vm.guest_write_batch(gpas)
        gvt.ptable.walk_range(0, 8, delete=False)
        walk.walk_range(gvt.ptable, 0, 8, delete=True)
        walk.slot_walk_drop(vm, gvt, 0, 1024, target=vm.memslots(0)[0])
        writes.classify_gfns(np.zeros(1, dtype=np.uint64), *_classify_args(vm))
        writes.first_page_crossing(gpas, 8)
        workload.guest_write_stream(vm.memslots(0)[:1], np.array([3], dtype=np.uint64), 4,
                                    0.5, 1)
    return time.perf_counter() - t0


def _classify_args(vm):
    from .flat import empty_ptable_arrays, slot_arrays
    sa = slot_arrays(vm, 0)
    pt = empty_ptable_arrays()
    return (sa.base, sa.npages, sa.trap, sa.counter_addrs, False, pt.shift, pt.head, pt.nxt,
            pt.key, pt.occ)
