"""Model objects -> the flat arrays the kernels take (struct of arrays), cached.

``ptable_arrays(pt)``: KVMGT's ``ProtectTable`` as an ``hlist`` in arrays
(``head``, ``nxt``, ``key``, ``clen``, ``occ``; see ``common``), rebuilt lazily
when ``pt.gen`` (bumped by every add/delete/destroy) moves.  The arrays are
shared with the cache: kernels that change them get ``copy=True``.

``slot_arrays(vm, as_id)``: the live slots of one address space sorted by
``base_gfn``: ``base`` and ``npages`` (uint64), ``trap`` (uint8: writes can
trap, i.e. not ``KVM_MEM_READONLY``), and numba typed Lists of the slots' own
``gfn_write_track`` and ``lpage_info`` arrays (no copies: kernels update the
model's arrays in place).  Rebuilt when the slot set changes.
"""
from __future__ import annotations

import itertools
import weakref
from dataclasses import dataclass

import numpy as np
from numba.typed import List

from ..memslot import KVM_MEM_READONLY
from .common import build_occ


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


_ptable_cache: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


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


def ptable_arrays(pt) -> PtableArrays:
    """The cached flat form of ``pt`` (read-only for callers)."""
    hit = _ptable_cache.get(pt)
    gen = getattr(pt, "gen", None)
    if hit is not None and gen is not None and hit[0] == gen:
        return hit[1]
    arr = build_ptable_arrays(pt)
    if gen is not None:
        _ptable_cache[pt] = (gen, arr)
    return arr


def remember_ptable_arrays(pt, arr: PtableArrays) -> None:
    """Install ``arr`` as the flat form of ``pt`` at its current generation (a kernel
    produced it while the Python table was brought to the same state)."""
    gen = getattr(pt, "gen", None)
    if gen is not None:
        _ptable_cache[pt] = (gen, arr)


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
    counters: object      # typed List of uint16 arrays (gfn_write_track)
    counter_addrs: np.ndarray   # uint64: data address of each gfn_write_track
    lpage2: object        # typed List of int32 arrays (lpage_info[0], 2M)
    lpage3: object        # typed List of int32 arrays (lpage_info[1], 1G)


_slot_cache: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_EMPTY_U16 = np.zeros(1, dtype=np.uint16)
_EMPTY_I32 = np.zeros(1, dtype=np.int32)


def _typed(arrays, dummy):
    out = List()
    for a in arrays:
        out.append(a)
    if not arrays:            # numba needs a typed element to type an empty List
        out.append(dummy)
        out.pop()
    return out


def slot_arrays(vm, as_id: int) -> SlotArrays:
    slots = vm._as[as_id].sorted()
    sig = tuple((id(s), id(s.arch.gfn_write_track), s.base_gfn, s.npages, s.flags)
                for s in slots)
    per_vm = _slot_cache.setdefault(vm, {})
    hit = per_vm.get(as_id)
    if hit is not None and hit[0] == sig:
        return hit[1]
    arr = SlotArrays(
        slots,
        np.array([s.base_gfn for s in slots], dtype=np.uint64),
        np.array([s.npages for s in slots], dtype=np.uint64),
        np.array([0 if s.flags & KVM_MEM_READONLY else 1 for s in slots], dtype=np.uint8),
        _typed([s.arch.gfn_write_track for s in slots], _EMPTY_U16),
        np.array([s.arch.gfn_write_track.ctypes.data for s in slots], dtype=np.uint64),
        _typed([s.arch.lpage_info[0] for s in slots], _EMPTY_I32),
        _typed([s.arch.lpage_info[1] for s in slots], _EMPTY_I32),
    )
    per_vm[as_id] = (sig, arr)
    return arr
