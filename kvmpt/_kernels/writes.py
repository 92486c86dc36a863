"""The guest write stream: classify many guest writes at once.

Mirrors, per write, the path ``VM.guest_write()`` models: ``search_memslots()``
for the gfn (no slot or a READONLY slot: an MMIO exit, "ignored"); the slot's
``gfn_write_track`` count (0: the store completes, "direct"); otherwise the
write traps (``page_fault_handle_page_track()``), is emulated, and
``kvm_page_track_write()`` calls KVMGT's ``kvmgt_page_track_write()``: one
``ptable`` probe (``__kvmgt_protect_table_find()``); a hit runs
``intel_vgpu_page_track_handler()`` ("handled"), a miss is "ignored".  A write
to a gfn GVT shadows that is not handled is also "missed".
"""
from __future__ import annotations

import weakref

import numpy as np

from ..lockdep import Lockdep
from ..memslot import PAGE_SHIFT, PAGE_SIZE
from ..work import Work, _zero
from .common import GOLDEN_RATIO_64, find_slot, hash_64, hlist_find, load_u16, occ_test, \
    prefetch, set_build, set_contains
from .flat import empty_ptable_arrays, ptable_arrays, slot_arrays
from .policy import kernel

DIRECT, IGNORED, HANDLED = 0, 1, 2
OUTCOME_NAMES = ("direct", "ignored", "handled")
# kinds of trapped write that reach KVMGT, for the lockdep replay
NOT_FOUND, FOUND_NOT_SHADOWED, FOUND_SHADOWED = 0, 1, 2

PREFETCH_AHEAD = 32     # writes; measured best of 8..64 on a 32 MiB counter array

# stats vector of the batch kernel
(S_DIRECT, S_IGNORED, S_HANDLED, S_MISSED, S_EMULATED, S_PROBES, S_STEPS, S_HANDLER,
 S_KIND0, S_KIND1, S_KIND2, S_FIRST0, S_FIRST1, S_FIRST2, S_HOLD_BEST, S_HOLD_STEPS,
 S_HOLD_FOUND, S_STOP, S_MAXOFF, S_LEN) = range(20)


@kernel
def classify_gfn(g, hint, slot_base, slot_npages, slot_trap, counter_addrs, tracker, shift,
                 head, nxt, key, occ):
    """One write's path: returns (outcome, slot index, trapped, chain steps).
    ``trapped`` means it reached ``kvm_page_track_write()`` with a tracker."""
    si = find_slot(slot_base, slot_npages, g, hint)
    if si < 0 or slot_trap[si] == 0:
        return IGNORED, si, False, 0
    if load_u16(counter_addrs[si], g - slot_base[si]) == 0:
        return DIRECT, si, False, 0
    if not tracker:
        return IGNORED, si, False, 0
    h = hash_64(g, shift)
    if occ_test(occ, h) == 0:
        return IGNORED, si, True, 0
    node, steps, prev = hlist_find(head, nxt, key, h, g)
    if node >= 0:
        return HANDLED, si, True, steps
    return IGNORED, si, True, steps


@kernel
def classify_gfns(gfns, slot_base, slot_npages, slot_trap, counter_addrs, tracker, shift, head,
                  nxt, key, occ):
    """``classify_gfn`` for each gfn: the outcome codes (no side effects)."""
    out = np.empty(gfns.shape[0], dtype=np.uint8)
    hint = -1
    for i in range(gfns.shape[0]):
        o, si, t, s = classify_gfn(gfns[i], hint, slot_base, slot_npages, slot_trap,
                                   counter_addrs, tracker, shift, head, nxt, key, occ)
        if si >= 0:
            hint = si
        out[i] = o
    return out


@kernel
def page_track_write_batch(gpas, slot_base, slot_npages, slot_trap, counter_addrs,
                           tracker, shift, head, nxt, key, occ, missed_tab, missed_shift,
                           has_missed, noshadow_tab, noshadow_shift, has_noshadow,
                           stop_on_shadowed, track_hold, want, outcomes, missed_out, stats):
    """Classify ``gpas`` in order and count the primitive work (see module doc).

    The same path as ``classify_gfn``, written out in the loop: the slot last
    found is kept in scalars (``search_memslots()`` runs only when a write leaves
    it), the counter of the write ``PREFETCH_AHEAD`` places on is prefetched when
    it falls in that slot, and the ``ptable`` probe is only made for a trapped
    write.
    ``missed_tab``: the shadowed gfns whose writes are not handled (precomputed by
    ``classify_gfns``); ``noshadow_tab``: ``ptable`` gfns GVT does not shadow (the
    handler returns -ENXIO for them).  With ``stop_on_shadowed`` the loop stops
    before the first handled write to a shadowed gfn (failsafe: the handler would
    change state); ``stats[S_STOP]`` is where it stopped.  With ``track_hold`` (the
    mmu_lock design, where each probe is an ``mmu_lock`` hold) the first largest hold
    is recorded.  ``stats[S_MAXOFF]`` is the largest in-page offset seen (the
    wrapper checks page crossings with it).  ``counter_addrs[i]`` is
    the data address of slot i's ``gfn_write_track`` (the caller keeps it alive)."""
    n = gpas.shape[0]
    n_direct = 0
    n_missed = 0
    emulated = 0
    probes = 0
    chain = 0
    handler = 0
    kinds = np.zeros(3, dtype=np.int64)
    firsts = np.full(3, -1, dtype=np.int64)
    best = -1
    best_steps = 0
    best_found = 0
    stop = n
    maxoff = np.uint64(0)
    offmask = np.uint64(PAGE_SIZE - 1)
    pshift = np.uint64(PAGE_SHIFT)
    u1 = np.uint64(1)
    u6 = np.uint64(6)
    u63 = np.uint64(63)
    cur = np.uint64(0)
    cb = np.uint64(1)          # current slot [cb, ce): empty until a slot is found
    ce = np.uint64(0)
    ctrap = False
    u2 = np.uint64(2)
    side = has_missed or want
    for i in range(n):
        if i + PREFETCH_AHEAD < n:
            ga = gpas[i + PREFETCH_AHEAD] >> pshift
            if ga >= cb and ga < ce:
                prefetch(cur + (ga - cb) * u2)
        g = gpas[i] >> pshift
        maxoff = max(maxoff, gpas[i] & offmask)
        o = IGNORED
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
        if ctrap:
            if load_u16(cur, g - cb) == 0:
                o = DIRECT
                n_direct += 1
            else:
                emulated += 1
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
                        kind = FOUND_SHADOWED
                        if has_noshadow and set_contains(noshadow_tab, noshadow_shift, g):
                            kind = FOUND_NOT_SHADOWED
                        if stop_on_shadowed and kind == FOUND_SHADOWED:
                            emulated -= 1
                            stop = i
                            break
                        o = HANDLED
                        handler += 1
                    probes += 1
                    chain += s
                    kinds[kind] += 1
                    if firsts[kind] < 0:
                        firsts[kind] = i
                    if track_hold:
                        hold = 1 + s + (1 if found else 0)
                        if hold > best:
                            best = hold
                            best_steps = s
                            best_found = 1 if found else 0
        if side:
            m = False
            if has_missed and set_contains(missed_tab, missed_shift, g):
                m = True
                n_missed += 1
            if want:
                outcomes[i] = o
                missed_out[i] = m
    stats[S_DIRECT] = n_direct
    stats[S_IGNORED] = stop - n_direct - handler     # every write processed is one of three
    stats[S_HANDLED] = handler
    stats[S_MISSED] = n_missed
    stats[S_EMULATED] = emulated
    stats[S_PROBES] = probes
    stats[S_STEPS] = chain
    stats[S_HANDLER] = handler
    for k in range(3):
        stats[S_KIND0 + k] = kinds[k]
        stats[S_FIRST0 + k] = firsts[k]
    stats[S_HOLD_BEST] = best if best > 0 else 0
    stats[S_HOLD_STEPS] = best_steps
    stats[S_HOLD_FOUND] = best_found
    stats[S_STOP] = stop
    stats[S_MAXOFF] = maxoff


@kernel
def first_page_crossing(gpas, nbytes):
    """Index of the first gpa whose ``nbytes``-byte store crosses a 4 KiB page, or -1
    (the wrapper turns it into the error ``guest_write`` raises)."""
    limit = np.uint64(PAGE_SIZE - nbytes)
    mask = np.uint64(PAGE_SIZE - 1)
    for i in range(gpas.shape[0]):
        if gpas[i] & mask > limit:
            return i
    return -1


# ------------------------------------------------------------------ wrapper
class WriteBatchResult(dict):
    """Counts by outcome: keys "direct", "ignored", "handled", "missed".

    ``.outcomes`` (uint8 codes, ``OUTCOME_NAMES[code]``) and ``.missed`` (bool)
    per write when asked for with ``outcomes=True``, else None; ``.path`` is
    "kernel", "kernel+python" (failsafe tail) or "python" (fallback)."""

    outcomes: np.ndarray | None = None
    missed: np.ndarray | None = None
    path: str = "kernel"


def _as_gpa_array(gpas) -> np.ndarray:
    a = np.asarray(gpas)
    if a.ndim != 1:
        raise ValueError(f"gpas must be a 1-D array, got shape {a.shape}")
    if a.size and a.dtype.kind not in "iu":
        raise ValueError(f"gpas must be integers (uint64 guest physical addresses), "
                         f"got dtype {a.dtype}")
    if a.dtype.kind == "i" and a.size and int(a.min()) < 0:
        raise ValueError("gpas must be non-negative")
    return np.ascontiguousarray(a, dtype=np.uint64)


_side_cache: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _side_sets(vm, gvt, tracker, sa, pt):
    """(shadowed gfns whose writes are not handled, ptable gfns GVT does not shadow)."""
    if gvt is not None and gvt.page_track_tree:
        tree = gvt.page_track_tree
        shadowed = np.fromiter(tree.keys(), dtype=np.uint64, count=len(tree))
        shadowed = shadowed[np.fromiter(tree.values(), dtype=bool, count=len(tree))]
        codes = classify_gfns(shadowed, sa.base, sa.npages, sa.trap, sa.counter_addrs,
                              tracker is not None, pt.shift, pt.head, pt.nxt, pt.key, pt.occ)
        missed_gfns = shadowed[codes != HANDLED]
    else:
        missed_gfns = np.zeros(0, dtype=np.uint64)
    if tracker:
        noshadow = np.fromiter(tracker.ptable.gfns() - tracker.page_track_tree.keys(),
                               dtype=np.uint64)
    else:
        noshadow = np.zeros(0, dtype=np.uint64)
    return missed_gfns, noshadow


def _fingerprint(vm, as_id, sa, tracker):
    """What the side sets depend on, as the model changes it: every change of GVT's
    tree, ``ptable`` or a counter through the VM / KVMGT methods moves the tree
    size, the table generation, a Work count or the memslot op log.  (Writing the
    model's arrays or dicts directly between two batches is not seen: call
    ``forget(vm)`` after doing that.)"""
    gvt = vm.kvmgt
    tree = gvt.page_track_tree if gvt is not None else None
    return (as_id, id(sa), id(tracker), id(gvt), id(tree), len(tree) if tree is not None else -1,
            id(tracker.ptable) if tracker else None, tracker.ptable.gen if tracker else -1,
            id(vm.work), tuple(vm.work.ops.values()), len(vm.op_log))


def forget(vm) -> None:
    """Drop the cached side sets of ``vm`` (after editing model state by hand)."""
    _side_cache.pop(vm, None)


def _check_page_crossing(gpas, nbytes):
    first = first_page_crossing(gpas, nbytes)
    if first >= 0:
        bad = int(gpas[first])
        raise ValueError(f"a {nbytes}-byte write at {bad:#x} crosses a 4 KiB page; "
                         "the emulator splits it: issue one write per page")


def _single_tracker(vm):
    """KVMGT if it is the one external notifier with an owner, None if there is
    none; False if the list holds something else (the batch then falls back)."""
    owners = [n.owner for n in vm.track_notifier_list if n.external and n.owner is not None]
    if not owners:
        return None
    if len(owners) == 1 and owners[0] is vm.kvmgt:
        return owners[0]
    return False


def _python_path(vm, gpas, nbytes, as_id, want, res, start=0):
    if want and res.outcomes is None:
        res.outcomes = np.zeros(gpas.shape[0], dtype=np.uint8)
        res.missed = np.zeros(gpas.shape[0], dtype=bool)
    code = {name: i for i, name in enumerate(OUTCOME_NAMES)}
    stats = vm.write_stats
    for i in range(start, gpas.shape[0]):
        before = stats["missed"]
        o = vm.guest_write(int(gpas[i]), nbytes, as_id)
        if want:
            res.outcomes[i] = code[o]
            res.missed[i] = stats["missed"] != before


def _lockdep_replay(vm, gvt, gpas, nbytes, stats):
    """What lockdep records for the trapped writes: run ``gvt.track_write`` once per
    kind present against a scratch Lockdep and Work (no failsafe here, so the
    model's state does not change), then repeat each kind's reports as many times
    as that kind occurs.  Returns (new lock-order edges, reports), or None when
    reports come from more than one kind (their interleaving would matter)."""
    scratch = Lockdep(order=set(vm.lockdep.order))
    saved = vm.lockdep, vm.work
    per_kind = []
    firsts = [(int(stats[S_FIRST0 + k]), k) for k in range(3) if stats[S_KIND0 + k]]
    try:
        vm.lockdep, vm.work = scratch, Work()
        for first, k in sorted(firsts):
            before = len(scratch.reports)
            gvt.track_write(int(gpas[first]), nbytes)
            per_kind.append((k, scratch.reports[before:]))
    finally:
        vm.lockdep, vm.work = saved
    noisy = [(k, r) for k, r in per_kind if r]
    if len(noisy) > 1:
        return None
    reports = []
    for k, r in noisy:
        reports = [rep for _ in range(int(stats[S_KIND0 + k])) for rep in r]
    return scratch.order - vm.lockdep.order, reports


def guest_write_batch(vm, gpas, as_id: int = 0, outcomes: bool = False, nbytes: int = 8):
    """``vm.guest_write(gpa, nbytes, as_id)`` for every gpa, in one kernel call.

    Returns a ``WriteBatchResult``; updates ``vm.write_stats`` and ``vm.work``
    (``emulated_writes``, ``gfn_probes``, ``chain_steps``, ``handler_calls``, and
    the ``mmu_lock`` holds of the mmu_lock design) and ``vm.lockdep`` exactly as
    the loop would.

    Where the handler has side effects the kernel cannot reproduce, the batch
    uses the plain-Python path: in failsafe mode from the first handled write to
    a shadowed gfn on (the handler removes protection, changing later writes),
    and for the whole batch when lockdep reports from different kinds of write
    would interleave, when the vCPU context already holds a lock, when a
    ``mmu_lock`` hold is open, or when the notifier list holds anything but the
    VM's KVMGT.
    """
    vm._memslots(as_id)
    as_id = int(as_id)
    gpas = _as_gpa_array(gpas)
    if isinstance(nbytes, bool) or not isinstance(nbytes, (int, np.integer)) \
            or not 1 <= nbytes <= 8:
        raise ValueError(f"nbytes must be 1..8 (one emulated store), got {nbytes!r}")
    nbytes = int(nbytes)
    n = gpas.shape[0]
    res = WriteBatchResult()
    before = dict(vm.write_stats)
    tracker = _single_tracker(vm)
    if tracker is False or vm.work._current is not None or vm.lockdep.holding("vcpu"):
        _check_page_crossing(gpas, nbytes)
        res.path = "python"
        _python_path(vm, gpas, nbytes, as_id, outcomes, res)
        res.update({k: vm.write_stats[k] - before[k] for k in before})
        return res

    sa = slot_arrays(vm, as_id)
    gvt = vm.kvmgt
    pt = ptable_arrays(tracker.ptable) if tracker else empty_ptable_arrays()
    fp = _fingerprint(vm, as_id, sa, tracker)
    hit = _side_cache.get(vm)
    if hit is not None and hit[0] == fp:
        missed_gfns, noshadow, mtab, mshift, ntab, nshift = hit[1]
    else:
        missed_gfns, noshadow = _side_sets(vm, gvt, tracker, sa, pt)
        mtab, mshift = set_build(missed_gfns)
        ntab, nshift = set_build(noshadow)
    side = (missed_gfns, noshadow, mtab, mshift, ntab, nshift)
    stop_on = bool(tracker and tracker.failsafe)
    out_o = np.zeros(n if outcomes else 1, dtype=np.uint8)
    out_m = np.zeros(n if outcomes else 1, dtype=np.bool_)
    stats = np.zeros(S_LEN, dtype=np.int64)
    page_track_write_batch(gpas, sa.base, sa.npages, sa.trap, sa.counter_addrs,
                           tracker is not None,
                           pt.shift, pt.head, pt.nxt, pt.key, pt.occ, mtab, mshift,
                           missed_gfns.size > 0, ntab, nshift, noshadow.size > 0, stop_on,
                           bool(tracker and tracker.design.kvmgt_lock == "mmu_lock"),
                           bool(outcomes), out_o, out_m, stats)
    if stats[S_STOP] < n or int(stats[S_MAXOFF]) + nbytes > PAGE_SIZE:
        _check_page_crossing(gpas, nbytes)      # nothing is applied yet
    lockdep = (set(), [])
    if tracker and stats[S_EMULATED]:
        lockdep = _lockdep_replay(vm, tracker, gpas, nbytes, stats)
        if lockdep is None:
            res.path = "python"
            _python_path(vm, gpas, nbytes, as_id, outcomes, res)
            res.update({k: vm.write_stats[k] - before[k] for k in before})
            return res
    # apply the prefix the kernel did
    for k, name in enumerate(OUTCOME_NAMES):
        vm.write_stats[name] += int(stats[S_DIRECT + k])
    vm.write_stats["missed"] += int(stats[S_MISSED])
    work = vm.work
    work.add("emulated_writes", int(stats[S_EMULATED]))
    if tracker:
        calls = int(stats[S_KIND0] + stats[S_KIND1] + stats[S_KIND2])
        if tracker.design.kvmgt_lock == "mmu_lock" and calls:
            work.mmu_lock_acquisitions += calls
            for name, s in (("gfn_probes", S_PROBES), ("chain_steps", S_STEPS),
                            ("handler_calls", S_HANDLER)):
                work.ops[name] += int(stats[s])
                work.held[name] += int(stats[s])
            if int(stats[S_HOLD_BEST]) > sum(work.max_hold.values()):
                work.max_hold = {**_zero(), "gfn_probes": 1,
                                 "chain_steps": int(stats[S_HOLD_STEPS]),
                                 "handler_calls": int(stats[S_HOLD_FOUND])}
        else:
            work.add("gfn_probes", int(stats[S_PROBES]))
            work.add("chain_steps", int(stats[S_STEPS]))
            work.add("handler_calls", int(stats[S_HANDLER]))
        edges, reports = lockdep
        vm.lockdep.order |= edges
        vm.lockdep.reports.extend(reports)
    if outcomes:
        res.outcomes, res.missed = out_o, out_m
    stop = int(stats[S_STOP])
    if stop < n:
        res.path = "kernel+python"
        _side_cache.pop(vm, None)
        _python_path(vm, gpas, nbytes, as_id, outcomes, res, start=stop)
    else:      # the batch changed only counts: its side sets still hold
        _side_cache[vm] = (_fingerprint(vm, as_id, sa, tracker), side)
    res.update({k: vm.write_stats[k] - before[k] for k in before})
    return res
