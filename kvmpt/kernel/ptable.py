"""KVMGT's protect table (drivers/gpu/drm/i915/gvt/kvmgt.c, ``kvmgt_protect_table_*``).

``ptable``: ``struct hlist_head ptable[NR_BKT]`` with ``NR_BKT = 1 << 18`` (gvt.h, v6.6)
of ``struct kvmgt_pgfn``: the gfns KVMGT asked KVM to write-track.  Modelled as the
chained hash table it is (``hash_64()`` golden-ratio hashing, ``hlist_add_head``
insertion), so that lookups cost chain steps.
"""
from __future__ import annotations

import numpy as np

GOLDEN_RATIO_64 = 0x61C8864680B583EB     # include/linux/hash.h
U64 = (1 << 64) - 1
PTABLE_BITS = 18                          # gvt.h: DECLARE_HASHTABLE(ptable, 18)


def hash_64(val: int, bits: int = PTABLE_BITS) -> int:
    """Mirrors ``hash_64_generic()`` (include/linux/hash.h): ``val * GOLDEN_RATIO_64 >> (64 - bits)``."""
    return ((val * GOLDEN_RATIO_64) & U64) >> (64 - bits)


def hash_64_array(gfns: np.ndarray, bits: int = PTABLE_BITS) -> np.ndarray:
    """``hash_64`` over a ``uint64`` array (NumPy multiplies modulo 2^64)."""
    with np.errstate(over="ignore"):
        return (gfns.astype(np.uint64) * np.uint64(GOLDEN_RATIO_64)) >> np.uint64(64 - bits)


class ProtectTable:
    """KVMGT's ``ptable``: ``hash_init`` / ``hash_add`` / ``hash_del`` /
    ``hash_for_each_possible`` over 2^18 hlist buckets."""

    def __init__(self, bits: int = PTABLE_BITS) -> None:
        self.bits = bits
        self.buckets: dict[int, list[int]] = {}     # bucket -> gfns, chain head first
        self.chain_len = np.zeros(1 << bits, dtype=np.int32)
        self._members: set[int] = set()
        self.gen = 0          # bumped by every change: kernels rebuild their flat copy
        self.flat = None      # (gen, the kernels' flat form), see VM._ptable_arrays

    def __contains__(self, gfn: int) -> bool:
        return gfn in self._members

    def __len__(self) -> int:
        return len(self._members)

    def gfns(self) -> set[int]:
        return set(self._members)

    def find(self, gfn: int) -> tuple[bool, int]:
        """Mirrors ``__kvmgt_protect_table_find()``: walk the bucket until the gfn
        matches.  Returns (found, chain steps)."""
        chain = self.buckets.get(hash_64(gfn, self.bits), ())
        for i, g in enumerate(chain):
            if g == gfn:
                return True, i + 1
        return False, len(chain)

    def add(self, gfn: int) -> None:
        """Mirrors ``kvmgt_protect_table_add()`` after its find: ``hash_add`` puts the
        node at the chain head."""
        b = hash_64(gfn, self.bits)
        self.buckets.setdefault(b, []).insert(0, gfn)
        self.chain_len[b] += 1
        self._members.add(gfn)
        self.gen += 1

    def delete(self, gfn: int) -> None:
        """Mirrors ``kvmgt_protect_table_del()``'s ``hash_del`` + ``kfree``."""
        b = hash_64(gfn, self.bits)
        chain = self.buckets[b]
        chain.remove(gfn)
        if not chain:
            del self.buckets[b]
        self.chain_len[b] -= 1
        self._members.discard(gfn)
        self.gen += 1

    def destroy(self) -> None:
        """Mirrors ``kvmgt_protect_table_destroy()``: free every entry, no call into KVM."""
        self.buckets.clear()
        self.chain_len[:] = 0
        self._members.clear()
        self.gen += 1

    def add_many(self, gfns: np.ndarray) -> None:
        """``add(g)`` for each g in order (``hash_add`` at the chain head), with the
        hashing vectorised: what the bulk shadowing path applies."""
        if not gfns.size:
            return
        buckets = hash_64_array(gfns, self.bits).astype(np.int64)
        for g, b in zip(gfns.tolist(), buckets.tolist()):
            self.buckets.setdefault(b, []).insert(0, g)
        np.add.at(self.chain_len, buckets, 1)
        self._members.update(gfns.tolist())
        self.gen += 1
