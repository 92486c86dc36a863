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
    """Compile or load every kernel by running the model's bulk paths on a tiny VM;
    returns seconds."""
    t0 = time.perf_counter()
    import numpy as np

    from ..design import Design
    from ..vm import VM
    from . import workload

    for design in ("v6.5", "v6.6"):
        vm = VM(design=Design.preset(design))
        vm.set_user_memory_region(0, 0, 0, 1 << 22, 1 << 32)
        vm.set_user_memory_region(1, 2, 1 << 22, 1 << 16, (1 << 32) + (1 << 22))
        gvt = vm.attach_kvmgt()
        gvt.shadow_many(np.array([3, 5, 700], dtype=np.uint64))
        gpas = np.array([3 << 12, 5 << 12, 9 << 12, (1 << 22) + 8, 1 << 40], dtype=np.uint64)
        vm.guest_write_batch(gpas, outcomes=True)
        vm.guest_write_batch(gpas)
        vm.set_user_memory_region(0, 0, 0, 0, 1 << 32)       # DELETE: the slot walk
        workload.guest_write_stream(vm.memslots(0)[:1], np.array([3], dtype=np.uint64), 4,
                                    0.5, 1)
    return time.perf_counter() - t0
