"""Synthetic guest write streams, generated in a kernel (seeded, deterministic).

``synth_gpas`` draws ``n`` 8-byte-aligned guest writes: a share of them to the
page-table pages GVT shadows (the trapped PTE stores of spec/workloads.md
§2.3), the rest uniform over guest RAM.  The generator is splitmix64, so the
same seed gives the same stream with and without the JIT.
"""
from __future__ import annotations

import numpy as np

from kvmpt.kernels.policy import kernel

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_LOW32 = np.uint64(0xFFFFFFFF)


@kernel
def splitmix64(state):
    """One step of splitmix64: returns (new state, 64 random bits)."""
    state = state + _GAMMA
    z = state
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return state, z ^ (z >> np.uint64(31))


@kernel
def synth_gpas(seed, ram_base, ram_npages, shadowed, share_2_32, out):
    """Fill ``out`` with gpas: with probability ``share_2_32 / 2**32`` a shadowed
    gfn, else a uniform gfn of the RAM ranges ``[ram_base, ram_base + ram_npages)``;
    the byte offset is a random multiple of 8 within the page."""
    state = np.uint64(seed)
    total = np.uint64(0)
    for k in range(ram_base.shape[0]):
        total += ram_npages[k]
    nsh = np.uint64(shadowed.shape[0])
    for i in range(out.shape[0]):
        state, r = splitmix64(state)
        if nsh > 0 and (r & _LOW32) < share_2_32:
            g = shadowed[(r >> np.uint64(32)) % nsh]
        else:
            state, r2 = splitmix64(state)
            idx = r2 % total
            g = np.uint64(0)
            for k in range(ram_base.shape[0]):
                if idx < ram_npages[k]:
                    g = ram_base[k] + idx
                    break
                idx -= ram_npages[k]
        state, r3 = splitmix64(state)
        out[i] = (g << np.uint64(12)) | ((r3 & np.uint64(511)) << np.uint64(3))


def guest_write_stream(ram_slots, shadowed, n: int, pt_share: float, seed: int) -> np.ndarray:
    """``n`` gpas over ``ram_slots`` (MemorySlots), ``pt_share`` of them to
    ``shadowed`` gfns.  Deterministic for a seed."""
    if not 0.0 <= pt_share <= 1.0:
        raise ValueError(f"pt_share must be in [0, 1], got {pt_share!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n!r}")
    base = np.array([s.base_gfn for s in ram_slots], dtype=np.uint64)
    npages = np.array([s.npages for s in ram_slots], dtype=np.uint64)
    if not npages.sum() and pt_share < 1.0:
        raise ValueError("no RAM pages to write to")
    out = np.empty(n, dtype=np.uint64)
    share = np.uint64(min(int(pt_share * (1 << 32)), (1 << 32)))
    synth_gpas(np.uint64(seed & ((1 << 64) - 1)), base, npages,
               np.ascontiguousarray(shadowed, dtype=np.uint64), share, out)
    return out
