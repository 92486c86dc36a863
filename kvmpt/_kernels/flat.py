"""Model objects -> the flat arrays the kernels take (struct of arrays), cached.

``ptable_arrays(pt)``: KVMGT's ``ProtectTable`` as an ``hlist`` in arrays
(``head``, ``nxt``, ``key``, ``clen``, ``occ``; see ``common``), rebuilt lazily
when ``pt.gen`` (bumped by every add/delete/destroy) moves.  The arrays are
shared with the cache: kernels that change them get ``copy=True``.

``slot_arrays(vm, as_id)``: the live slots of one address space sorted by
``base_gfn``: ``base`` and ``npages`` (uint64), ``trap`` (uint8: writes can
trap, i.e. not ``KVM_MEM_READONLY``), and the data addresses of the slots' own
``gfn_write_track`` and ``lpage_info`` arrays (no copies: kernels update the
model's arrays in place; ``keep`` holds the arrays alive).  Rebuilt when the
slot set changes.
"""
from __future__ import annotations

import itertools
import weakref
from dataclasses import dataclass

import numpy as np

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
    counter_addrs: np.ndarray   # uint64: data address of each gfn_write_track (u16)
    lpage2_addrs: np.ndarray    # uint64: lpage_info[0] (2M, s32)
    lpage3_addrs: np.ndarray    # uint64: lpage_info[1] (1G, s32)
    keep: list            # the arrays behind the addresses


_slot_cache: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


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


def slot_arrays(vm, as_id: int) -> SlotArrays:
    """The cached ``SlotArrays`` of one address space's live slots."""
    slots = vm._as[as_id].sorted()
    sig = tuple((id(s), id(s.arch.gfn_write_track), id(s.arch.lpage_info[0]),
                 id(s.arch.lpage_info[1]), s.base_gfn, s.npages, s.flags) for s in slots)
    per_vm = _slot_cache.setdefault(vm, {})
    hit = per_vm.get(as_id)
    if hit is not None and hit[0] == sig:
        return hit[1]
    arr = slots_as_arrays(slots)
    per_vm[as_id] = (sig, arr)
    return arr
