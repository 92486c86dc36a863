"""The benchmark's guest and its write stream: a q35-like VM with KVMGT attached,
the page-table pages GVT shadows and a seeded stream of guest writes."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from kvmpt.constants import GIB, MIB, USERSPACE_ADDR as UA


def build_guest(guest_gib: int, design="v6.6"):
    """A q35-like guest: low RAM, RAM 1 MiB..2 GiB, RAM above 4 GiB for the rest,
    a 128 MiB vGPU aperture slot and a read-only 4 MiB firmware slot; KVMGT
    attached.  Returns (vm, gvt, the three RAM slots)."""
    from kvmpt.kernel.vm import VM
    vm = VM(design=design)
    low_top = min(2 * GIB, guest_gib * GIB)
    slots = [(0, 0, 0xA0000, 0), (1, 0x100000, low_top - 0x100000, 0)]
    if guest_gib * GIB > low_top:
        slots.append((2, 4 * GIB, guest_gib * GIB - low_top, 0))
    slots += [(3, 0xC000_0000, 128 * MIB, 0), (4, 0xFFC0_0000, 4 * MIB, 2)]
    for sid, gpa, size, flags in slots:
        vm.set_user_memory_region(sid, flags, gpa, size, UA + gpa)
    gvt = vm.attach_kvmgt()
    ram = [s for s in vm.memslots(0) if s.id in (0, 1, 2)]
    return vm, gvt, ram


def ram_gfns(ram, idx: np.ndarray) -> np.ndarray:
    """Map indices in [0, total RAM pages) to gfns of the RAM slots."""
    sizes = np.array([s.npages for s in ram], dtype=np.int64)
    bases = np.array([s.base_gfn for s in ram], dtype=np.uint64)
    ends = np.cumsum(sizes)
    which = np.searchsorted(ends, idx, side="right")
    off = idx - (ends - sizes)[which]
    return bases[which] + off.astype(np.uint64)


def make_writes(ram, shadowed, n, pt_share, seed):
    """``n`` guest-physical write addresses, ``pt_share`` of them to shadowed pages
    (``kvmpt.kernels.workload.guest_write_stream``)."""
    from kvmpt.kernels.workload import guest_write_stream
    return guest_write_stream(ram, shadowed, n, pt_share, seed)


@dataclass
class Guest:
    """One end-to-end run: the VM, KVMGT, the RAM slots, the shadowed gfns, the
    writes and what ``vm.guest_write_batch`` counted."""

    vm: object
    gvt: object
    ram: list
    shadowed: np.ndarray
    gpas: np.ndarray
    res: object


#: the phases of :func:`end_to_end`, timed separately
PHASES = ("build", "shadow", "writes", "batch", "total")


def end_to_end(guest_gib: int, tracked: int, writes: int, pt_share: float,
               seed: int) -> tuple[dict[str, float], Guest]:
    """Build the guest, shadow ``tracked`` random RAM pages, generate the writes and
    run them through ``vm.guest_write_batch``; returns ({phase: seconds}, the guest)."""
    r = np.random.default_rng(seed)
    t0 = time.perf_counter()
    vm, gvt, ram = build_guest(guest_gib)
    t1 = time.perf_counter()
    total = sum(s.npages for s in ram)
    shadowed = np.unique(ram_gfns(ram, r.choice(total, tracked, replace=False)))
    r.shuffle(shadowed)
    gvt.shadow_many(shadowed)
    t2 = time.perf_counter()
    gpas = make_writes(ram, shadowed, writes, pt_share, seed)
    t3 = time.perf_counter()
    res = vm.guest_write_batch(gpas)
    t4 = time.perf_counter()
    return (dict(zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0))),
            Guest(vm, gvt, ram, shadowed, gpas, res))
