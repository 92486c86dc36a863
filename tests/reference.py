"""Plain-Python references for kvmpt's kernels: dicts, sets and lists, one gfn at a time.

Each function is the obviously-correct version of one kernel in ``kvmpt.kernels``
and reads the model's state without changing it (``slot_walk`` works on a copy
of the chains).  The kernels are checked against these and against the model.
"""
from __future__ import annotations

GOLDEN_RATIO_64 = 0x61C8864680B583EB
KVM_MEM_READONLY = 2


def hash_64(val: int, bits: int) -> int:
    """include/linux/hash.h ``hash_64_generic()``."""
    return ((val * GOLDEN_RATIO_64) % (1 << 64)) >> (64 - bits)


def snapshot_slots(vm, as_id):
    """[(base_gfn, npages, readonly, {index: count} of non-zero counters)]."""
    out = []
    for s in vm.memslots(as_id):
        arr = s.arch.gfn_write_track
        out.append((s.base_gfn, s.npages, bool(s.flags & KVM_MEM_READONLY),
                    {i: int(arr[i]) for i in range(len(arr)) if arr[i]}))
    return out


def snapshot_chains(pt):
    """bucket -> list of gfns, chain head first."""
    return {b: list(c) for b, c in pt.buckets.items()}


def find_in_chains(chains, bits, gfn):
    chain = chains.get(hash_64(gfn, bits), [])
    for i, g in enumerate(chain):
        if g == gfn:
            return True, i + 1
    return False, len(chain)


def guest_writes(vm, gpas, as_id=0):
    """Outcome, missed flag and work of each write, as ``VM.guest_write`` defines them,
    for a state the writes do not change (no failsafe removal)."""
    slots = snapshot_slots(vm, as_id)
    gvt = vm.kvmgt
    tracker = gvt if gvt is not None and gvt.attached else None
    chains = snapshot_chains(tracker.ptable) if tracker else {}
    bits = tracker.ptable.bits if tracker else 18
    shadowed = {g for g, t in gvt.page_track_tree.items() if t} if gvt else set()
    counts = {"direct": 0, "ignored": 0, "handled": 0, "mmio": 0, "missed": 0}
    work = {"emulated_writes": 0, "gfn_probes": 0, "chain_steps": 0, "handler_calls": 0,
            "mmio_exits": 0}
    outcomes, missed = [], []
    for gpa in gpas:
        gfn = int(gpa) >> 12
        slot = next((s for s in slots if s[0] <= gfn < s[0] + s[1]), None)
        if slot is None or slot[2]:
            outcome = "mmio"
            work["mmio_exits"] += 1
        elif not slot[3].get(gfn - slot[0], 0):
            outcome = "direct"
        else:
            work["emulated_writes"] += 1
            outcome = "ignored"
            if tracker is not None:
                found, steps = find_in_chains(chains, bits, gfn)
                work["gfn_probes"] += 1
                work["chain_steps"] += steps
                if found:
                    work["handler_calls"] += 1
                    outcome = "handled"
        counts[outcome] += 1
        m = gfn in shadowed and outcome != "handled"
        counts["missed"] += m
        outcomes.append(outcome)
        missed.append(m)
    return counts, work, outcomes, missed


def slot_walk(pt, base_gfn, npages, delete=True):
    """The hook loop: (hits ascending, chain steps), on a copy of ``pt``'s chains."""
    chains = snapshot_chains(pt)
    hits, steps = [], 0
    for gfn in range(base_gfn, base_gfn + npages):
        chain = chains.get(hash_64(gfn, pt.bits), [])
        if gfn in chain:
            i = chain.index(gfn)
            steps += i + 1
            hits.append(gfn)
            if delete:
                chain.pop(i)
        else:
            steps += len(chain)
    return hits, steps


def shadow_counts(vm, gfns):
    """Write-track counters after shadowing ``gfns`` (new, distinct, each in a slot of
    address space 0), ignoring the WARN clamp: {gfn: expected count}, and the gfns
    whose count would leave 0..65535 (a WARN, count unchanged)."""
    out, warn = {}, []
    for gfn in gfns:
        slot = vm._as[0].find_gfn(gfn)
        if vm.kvmgt.ptable.__contains__(gfn):
            continue
        val = int(slot.arch.gfn_write_track[gfn - slot.base_gfn])
        if val + 1 > 0xFFFF:
            warn.append(gfn)
            out[gfn] = val
        else:
            out[gfn] = val + 1
    return out, warn
