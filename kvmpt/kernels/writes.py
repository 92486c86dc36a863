"""The guest write stream: classify many guest writes at once (arrays in, counts out).

Mirrors, per write, the path ``VM.guest_write()`` models: ``search_memslots()``
for the gfn (no slot or a READONLY slot: an exit to the VMM, ``MMIO``); the
slot's ``gfn_write_track`` count (0: the store completes, ``DIRECT``);
otherwise the write faults to emulation (``page_fault_handle_page_track()`` ->
``RET_PF_EMULATE``) and ``kvm_page_track_write()`` calls KVMGT's
``kvmgt_page_track_write()``: one ``ptable`` probe
(``__kvmgt_protect_table_find()``); a hit runs
``intel_vgpu_page_track_handler()`` (``HANDLED``), a miss is ``IGNORED``.  A
write to a gfn GVT shadows that is not handled is also "missed".

The kernel changes nothing but its output arrays; the model
(``kvmpt.kernel.vm.VM.guest_write_batch``) books the counts it returns.
"""
from __future__ import annotations

import numpy as np

from kvmpt.constants import PAGE_SHIFT, PAGE_SIZE
from kvmpt.kernels.common import (GOLDEN_RATIO_64, find_slot, hash_64, hlist_find, load_u16, prefetch,
                     set_contains)
from kvmpt.kernels.policy import kernel

#: outcome codes: indexes into ``kvmpt.kernel.vm.WRITE_OUTCOMES``
DIRECT, IGNORED, HANDLED, MMIO = 0, 1, 2, 3
#: kinds of trapped write that reach KVMGT (what its handler does differs)
NOT_FOUND, FOUND_NOT_SHADOWED, FOUND_SHADOWED = 0, 1, 2

PREFETCH_AHEAD = 32     # writes; measured best of 8..64 on a 32 MiB counter array

# the stats vector: outcome counts (by code), missed, emulated; per kind: calls, chain
# steps, longest walk, first write index; where the batch stopped; largest page offset
S_OUTCOME = 0
S_MISSED, S_EMULATED = 4, 5
S_KIND_N, S_KIND_STEPS, S_KIND_LONGEST, S_KIND_FIRST = 6, 9, 12, 15
S_STOP, S_MAXOFF, S_LEN = 18, 19, 20


@kernel
def page_track_write_batch(gpas, slot_base, slot_npages, slot_trap, counter_addrs,
                           tracker, shift, head, nxt, key, occ, shadow_tab, shadow_shift,
                           has_shadow, miss_tab, miss_shift, has_miss, stop_on_shadowed, want,
                           outcomes, missed_out, stats):
    """Classify ``gpas`` in order and count what the model books (module doc).

    The slot last found is kept in scalars (``search_memslots()`` runs only when a
    write leaves it); the counter of the write ``PREFETCH_AHEAD`` places on is
    prefetched when it falls in that slot; the ``ptable`` probe is made only for a
    trapped write with a tracker.  ``shadow_tab``: the gfns GVT shadows (an
    open-addressed set, ``common.set_build``), asked only on a ``ptable`` hit;
    ``miss_tab``: those of them whose writes are not handled (``write_outcomes``
    of the shadowed gfns; usually empty).  With ``stop_on_shadowed`` the loop
    stops before the first handled write to a shadowed gfn (failsafe: the handler
    would change state); ``stats[S_STOP]`` is where.  ``counter_addrs[i]`` is the
    data address of slot i's ``gfn_write_track`` (u16)."""
    n = gpas.shape[0]
    stop = n
    maxoff = np.uint64(0)
    offmask = np.uint64(PAGE_SIZE - 1)
    pshift = np.uint64(PAGE_SHIFT)
    u1 = np.uint64(1)
    u2 = np.uint64(2)
    u6 = np.uint64(6)
    u63 = np.uint64(63)
    cur = np.uint64(0)
    cb = np.uint64(1)          # current slot [cb, ce): empty until a slot is found
    ce = np.uint64(0)
    ctrap = False
    counts = np.zeros(4, dtype=np.int64)          # by outcome code
    missed = 0
    emulated = 0
    kind_n = np.zeros(3, dtype=np.int64)
    kind_steps = np.zeros(3, dtype=np.int64)
    kind_longest = np.zeros(3, dtype=np.int64)
    kind_first = np.full(3, -1, dtype=np.int64)
    for i in range(n):
        if i + PREFETCH_AHEAD < n:
            ga = gpas[i + PREFETCH_AHEAD] >> pshift
            if ga >= cb and ga < ce:
                prefetch(cur + (ga - cb) * u2)
        g = gpas[i] >> pshift
        maxoff = max(maxoff, gpas[i] & offmask)
        if not (g >= cb and g < ce):
            si = find_slot(slot_base, slot_npages, g, -1)
            if si >= 0:
                cur = counter_addrs[si]
                cb = slot_base[si]
                ce = cb + slot_npages[si]
                ctrap = slot_trap[si] != 0
            else:
                cb = np.uint64(1)
                ce = np.uint64(0)
                ctrap = False
        if not ctrap:
            o = MMIO
        elif load_u16(cur, g - cb) == 0:
            o = DIRECT
        else:
            o = IGNORED
            if tracker:
                h = (g * GOLDEN_RATIO_64) >> shift
                s = 0
                found = False
                if (occ[h >> u6] >> (h & u63)) & u1:
                    node = head[h]
                    while node >= 0:
                        s += 1
                        if key[node] == g:
                            found = True
                            break
                        node = nxt[node]
                kind = NOT_FOUND
                if found:
                    shadowed = has_shadow and set_contains(shadow_tab, shadow_shift, g)
                    kind = FOUND_SHADOWED if shadowed else FOUND_NOT_SHADOWED
                    if stop_on_shadowed and shadowed:
                        stop = i
                        break
                    o = HANDLED
                kind_n[kind] += 1
                kind_steps[kind] += s
                if s > kind_longest[kind]:
                    kind_longest[kind] = s
                if kind_first[kind] < 0:
                    kind_first[kind] = i
            emulated += 1
        counts[o] += 1
        m = has_miss and set_contains(miss_tab, miss_shift, g)
        if m:
            missed += 1
        if want:
            outcomes[i] = o
            missed_out[i] = m
    for k in range(4):
        stats[S_OUTCOME + k] = counts[k]
    stats[S_MISSED] = missed
    stats[S_EMULATED] = emulated
    for k in range(3):
        stats[S_KIND_N + k] = kind_n[k]
        stats[S_KIND_STEPS + k] = kind_steps[k]
        stats[S_KIND_LONGEST + k] = kind_longest[k]
        stats[S_KIND_FIRST + k] = kind_first[k]
    stats[S_STOP] = stop
    stats[S_MAXOFF] = maxoff


@kernel
def write_outcomes(gfns, slot_base, slot_npages, slot_trap, counter_addrs, tracker, shift,
                   head, nxt, key, occ):
    """The outcome code a write to each gfn would have now (no side effects)."""
    out = np.empty(gfns.shape[0], dtype=np.uint8)
    hint = -1
    for i in range(gfns.shape[0]):
        g = gfns[i]
        si = find_slot(slot_base, slot_npages, g, hint)
        if si < 0 or slot_trap[si] == 0:
            out[i] = MMIO
            continue
        hint = si
        if load_u16(counter_addrs[si], g - slot_base[si]) == 0:
            out[i] = DIRECT
        elif tracker and hlist_find(head, nxt, key, hash_64(g, shift), g)[0] >= 0:
            out[i] = HANDLED
        else:
            out[i] = IGNORED
    return out


@kernel
def first_page_crossing(gpas, nbytes):
    """Index of the first gpa whose ``nbytes``-byte store crosses a 4 KiB page, or -1
    (the model turns it into the error ``guest_write`` raises)."""
    limit = np.uint64(PAGE_SIZE - nbytes)
    mask = np.uint64(PAGE_SIZE - 1)
    for i in range(gpas.shape[0]):
        if gpas[i] & mask > limit:
            return i
    return -1
