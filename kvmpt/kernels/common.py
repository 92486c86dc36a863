"""Kernel building blocks shared by the write, walk and track kernels.

* ``hash_64``: include/linux/hash.h ``hash_64_generic()``, the bucket function of
  KVMGT's ``ptable`` (``hash_for_each_possible()`` -> ``hash_min()`` ->
  ``hash_64()`` for a 64-bit ``gfn_t``).
* The ``ptable`` as flat arrays, shaped like the kernel's ``hlist``: ``head``
  (int32 per bucket, -1 = empty), ``nxt`` and ``key`` per node, ``clen`` (the
  chain length per bucket) and ``occ`` (one bit per non-empty bucket, 32 KiB for
  2^18 buckets, so the common "empty bucket" answer comes from L1).  Chains keep
  the kernel's order: ``hash_add()`` = ``hlist_add_head()`` puts new nodes first.
* A small open-addressed set of gfns (``set_*``), for the rare side sets the
  write kernel needs.
* ``find_slot``: ``search_memslots()`` over slot arrays sorted by ``base_gfn``.

Numba's cache keys a kernel on its own source file only: after editing this
file, clear the cache directory (``NUMBA_CACHE_DIR`` or
``kvmpt/kernels/__pycache__``) so the kernels that inline these are rebuilt.
"""
from __future__ import annotations

import numpy as np

from kvmpt.kernels.policy import JIT_DISABLED, kernel

GOLDEN_RATIO_64 = np.uint64(0x61C8864680B583EB)
EMPTY = np.uint64(0xFFFFFFFFFFFFFFFF)     # no gfn (gfns are < 2**52)
U64_1 = np.uint64(1)
U64_6 = np.uint64(6)
U64_63 = np.uint64(63)


# Per-slot arrays (``gfn_write_track``, ``lpage_info``) reach the kernels as arrays of
# data addresses (struct of arrays across slots, no numba typed List): a kernel
# keeps "the current slot" as plain integers, where an array variable would be a
# reference-counted struct carried through the loop (twice as slow on the write
# loop), and no List has to be built and compiled for.  The caller keeps the
# arrays alive (``flat.SlotArrays.keep``).
if JIT_DISABLED:
    import ctypes

    def load_u16(addr, idx):
        """``((u16 *)addr)[idx]`` (plain-Python form, NUMBA_DISABLE_JIT=1)."""
        return np.uint16(ctypes.c_uint16.from_address(int(addr) + 2 * int(idx)).value)

    def store_u16(addr, idx, val):
        ctypes.c_uint16.from_address(int(addr) + 2 * int(idx)).value = int(val)

    def load_i32(addr, idx):
        return np.int32(ctypes.c_int32.from_address(int(addr) + 4 * int(idx)).value)

    def store_i32(addr, idx, val):
        ctypes.c_int32.from_address(int(addr) + 4 * int(idx)).value = int(val)

    def prefetch(addr):
        """A cache hint: nothing to do without the JIT."""
else:
    from llvmlite import ir
    from numba.core import cgutils, types
    from numba.extending import intrinsic

    def _elem_ptr(builder, addr, idx, bits):
        ptr = builder.inttoptr(addr, ir.IntType(bits).as_pointer())
        return builder.gep(ptr, [idx])

    @intrinsic
    def load_u16(typingctx, addr, idx):
        """``((u16 *)addr)[idx]``."""
        def codegen(context, builder, signature, args):
            return builder.load(_elem_ptr(builder, args[0], args[1], 16))
        return types.uint16(types.uint64, types.uint64), codegen

    @intrinsic
    def store_u16(typingctx, addr, idx, val):
        """``((u16 *)addr)[idx] = val``."""
        def codegen(context, builder, signature, args):
            builder.store(args[2], _elem_ptr(builder, args[0], args[1], 16))
            return context.get_dummy_value()
        return types.void(types.uint64, types.uint64, types.uint16), codegen

    @intrinsic
    def load_i32(typingctx, addr, idx):
        """``((s32 *)addr)[idx]``."""
        def codegen(context, builder, signature, args):
            return builder.load(_elem_ptr(builder, args[0], args[1], 32))
        return types.int32(types.uint64, types.uint64), codegen

    @intrinsic
    def store_i32(typingctx, addr, idx, val):
        """``((s32 *)addr)[idx] = val``."""
        def codegen(context, builder, signature, args):
            builder.store(args[2], _elem_ptr(builder, args[0], args[1], 32))
            return context.get_dummy_value()
        return types.void(types.uint64, types.uint64, types.int32), codegen

    @intrinsic
    def prefetch(typingctx, addr):
        """``__builtin_prefetch(addr, 0, 3)`` (llvm.prefetch): the write kernel asks
        for the counter of a write some iterations ahead, so the random loads into
        a large ``gfn_write_track`` overlap."""
        sig = types.void(types.uint64)

        def codegen(context, builder, signature, args):
            i8p = ir.IntType(8).as_pointer()
            i32 = ir.IntType(32)
            fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
            fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
            builder.call(fn, [builder.inttoptr(args[0], i8p), ir.Constant(i32, 0),
                              ir.Constant(i32, 3), ir.Constant(i32, 1)])
            return context.get_dummy_value()
        return sig, codegen


@kernel
def hash_64(val, shift):
    """Mirrors ``hash_64_generic(val, bits)``: ``val * GOLDEN_RATIO_64 >> (64 - bits)``;
    ``shift`` is ``64 - bits`` as a uint64."""
    return (val * GOLDEN_RATIO_64) >> shift


@kernel
def occ_test(occ, h):
    return (occ[h >> U64_6] >> (h & U64_63)) & U64_1


@kernel
def occ_set(occ, h):
    occ[h >> U64_6] |= U64_1 << (h & U64_63)


@kernel
def occ_clear(occ, h):
    occ[h >> U64_6] &= ~(U64_1 << (h & U64_63))


@kernel
def hlist_find(head, nxt, key, h, gfn):
    """Mirrors ``__kvmgt_protect_table_find()``: ``hash_for_each_possible()`` from the
    bucket head until the gfn matches.  Returns (node or -1, chain steps, previous
    node or -1); a miss costs the whole chain."""
    prev = -1
    node = head[h]
    steps = 0
    while node >= 0:
        steps += 1
        if key[node] == gfn:
            return node, steps, prev
        prev = node
        node = nxt[node]
    return -1, steps, prev


@kernel
def hlist_del(head, nxt, clen, occ, h, node, prev):
    """``hash_del()``: unlink ``node`` (found after ``prev``) from bucket ``h``."""
    if prev < 0:
        head[h] = nxt[node]
    else:
        nxt[prev] = nxt[node]
    nxt[node] = -1
    clen[h] -= 1
    if clen[h] == 0:
        occ_clear(occ, h)


@kernel
def hlist_add_head(head, nxt, key, clen, occ, h, node, gfn):
    """``hash_add()`` = ``hlist_add_head()``: ``node`` becomes the bucket's first."""
    key[node] = gfn
    nxt[node] = head[h]
    head[h] = node
    clen[h] += 1
    occ_set(occ, h)


@kernel
def build_occ(clen):
    """One bit per bucket with a non-empty chain."""
    nb = clen.shape[0]
    occ = np.zeros((nb + 63) // 64, dtype=np.uint64)
    for b in range(nb):
        if clen[b] > 0:
            occ[b >> 6] |= np.uint64(1) << np.uint64(b & 63)
    return occ


@kernel
def set_build(keys):
    """An open-addressed set (linear probing, load <= 1/2) of ``keys`` (uint64).
    Returns (table, shift) for ``set_contains``."""
    bits = 1
    while (1 << bits) < 2 * keys.shape[0]:
        bits += 1
    table = np.full(1 << bits, EMPTY, dtype=np.uint64)
    mask = np.uint64((1 << bits) - 1)
    shift = np.uint64(64 - bits)
    for i in range(keys.shape[0]):
        k = keys[i]
        j = (k * GOLDEN_RATIO_64) >> shift
        while table[j] != EMPTY and table[j] != k:
            j = (j + U64_1) & mask
        table[j] = k
    return table, shift


@kernel
def set_contains(table, shift, k):
    mask = np.uint64(table.shape[0] - 1)
    j = (k * GOLDEN_RATIO_64) >> shift
    while True:
        t = table[j]
        if t == k:
            return True
        if t == EMPTY:
            return False
        j = (j + U64_1) & mask


@kernel
def find_slot(slot_base, slot_npages, gfn, hint):
    """Mirrors ``search_memslots()``: the index of the slot holding ``gfn`` in arrays
    sorted by ``base_gfn``, or -1.  ``hint`` (the last slot found) is tried first,
    like the kernel's per-vCPU ``last_used_slot``."""
    n = slot_base.shape[0]
    if 0 <= hint < n and gfn >= slot_base[hint] and gfn - slot_base[hint] < slot_npages[hint]:
        return hint
    lo = 0
    hi = n
    while lo < hi:
        mid = (lo + hi) >> 1
        if slot_base[mid] <= gfn:
            lo = mid + 1
        else:
            hi = mid
    i = lo - 1
    if i >= 0 and gfn - slot_base[i] < slot_npages[i]:
        return i
    return -1
