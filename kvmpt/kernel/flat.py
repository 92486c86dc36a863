"""The model's bridge to the Numba kernels: model objects -> the flat arrays they take.

``build_ptable_arrays(pt)``: KVMGT's ``ProtectTable`` as an ``hlist`` in arrays
(``head``, ``nxt``, ``key``, ``clen``, ``occ``; see ``common``).  Kernels that
change a table get a ``copy()``.

``slots_as_arrays(slots)``: slots sorted by ``base_gfn``: ``base`` and
``npages`` (uint64), ``trap`` (uint8: writes can trap, i.e. not
``KVM_MEM_READONLY``), and the data addresses of the slots' own
``gfn_write_track`` and ``lpage_info`` arrays (no copies: kernels update the
model's arrays in place; ``keep`` holds the arrays alive).

The model caches both per VM generation (``kvmpt.kernel.vm.VM.generation``).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from kvmpt.kernels.common import build_occ
from kvmpt.constants import KVM_MEM_READONLY


@dataclass
class PtableArrays:
    bits: int
    shift: np.uint64
    head: np.ndarray      # int32[2**bits]
    nxt: np.ndarray       # int32[capacity]
    key: np.ndarray       # uint64[capacity]
    clen: np.ndarray      # int32[2**bits]
    occ: np.ndarray       # uint64[2**bits / 64]
    n: int                # nodes in use: [0, n)

    def copy(self, extra: int = 0) -> "PtableArrays":
        """A private copy with room for ``extra`` more nodes."""
        cap = self.n + extra
        nxt = np.full(max(cap, 1), -1, dtype=np.int32)
        key = np.zeros(max(cap, 1), dtype=np.uint64)
        nxt[:self.n] = self.nxt[:self.n]
        key[:self.n] = self.key[:self.n]
        return PtableArrays(self.bits, self.shift, self.head.copy(), nxt, key,
                            self.clen.copy(), self.occ.copy(), self.n)


def build_ptable_arrays(pt) -> PtableArrays:
    """Flatten ``pt.buckets`` (bucket -> gfns, chain head first) preserving chain order."""
    bits = pt.bits
    nb = 1 << bits
    chains = list(pt.buckets.items())
    n = sum(len(c) for _, c in chains)
    head = np.full(nb, -1, dtype=np.int32)
    nxt = np.full(max(n, 1), -1, dtype=np.int32)
    key = np.zeros(max(n, 1), dtype=np.uint64)
    if n:
        b = np.fromiter((b for b, _ in chains), dtype=np.int64, count=len(chains))
        lens = np.fromiter((len(c) for _, c in chains), dtype=np.int64, count=len(chains))
        key[:n] = np.fromiter(itertools.chain.from_iterable(c for _, c in chains),
                              dtype=np.uint64, count=n)
        starts = np.cumsum(lens) - lens
        head[b] = starts
        nxt[:n] = np.arange(1, n + 1, dtype=np.int32)
        nxt[starts + lens - 1] = -1
    clen = np.ascontiguousarray(pt.chain_len, dtype=np.int32).copy()
    return PtableArrays(bits, np.uint64(64 - bits), head, nxt, key, clen, build_occ(clen), n)


def empty_ptable_arrays(bits: int = 18) -> PtableArrays:
    nb = 1 << bits
    clen = np.zeros(nb, dtype=np.int32)
    return PtableArrays(bits, np.uint64(64 - bits), np.full(nb, -1, dtype=np.int32),
                        np.full(1, -1, dtype=np.int32), np.zeros(1, dtype=np.uint64), clen,
                        np.zeros((nb + 63) // 64, dtype=np.uint64), 0)


@dataclass
class SlotArrays:
    slots: list           # the MemorySlot objects, sorted by base_gfn
    base: np.ndarray      # uint64
    npages: np.ndarray    # uint64
    trap: np.ndarray      # uint8
    counter_addrs: np.ndarray   # uint64: data address of each gfn_write_track (u16)
    lpage2_addrs: np.ndarray    # uint64: lpage_info[0] (2M, s32)
    lpage3_addrs: np.ndarray    # uint64: lpage_info[1] (1G, s32)
    keep: list            # the arrays behind the addresses


def _addrs(arrays, dtype) -> np.ndarray:
    for a in arrays:
        if a.dtype != dtype or not a.flags.c_contiguous:
            raise TypeError(f"slot metadata must be C-contiguous {dtype}, got {a.dtype}")
    return np.array([a.ctypes.data for a in arrays], dtype=np.uint64)


def slots_as_arrays(slots) -> SlotArrays:
    """``SlotArrays`` for the given slots (sorted by ``base_gfn`` by the caller)."""
    track = [s.arch.gfn_write_track for s in slots]
    lp2 = [s.arch.lpage_info[0] for s in slots]
    lp3 = [s.arch.lpage_info[1] for s in slots]
    return SlotArrays(
        list(slots),
        np.array([s.base_gfn for s in slots], dtype=np.uint64),
        np.array([s.npages for s in slots], dtype=np.uint64),
        np.array([0 if s.flags & KVM_MEM_READONLY else 1 for s in slots], dtype=np.uint8),
        _addrs(track, np.uint16), _addrs(lp2, np.int32), _addrs(lp3, np.int32),
        track + lp2 + lp3)
