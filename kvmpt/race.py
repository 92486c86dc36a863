"""The lock-design explorer: every interleaving of KVMGT's ``track_write`` against its removers.

The review thread's last point (spec/kernel-semantics.md section 4.6) is a concurrency bug:
``kvmgt_page_track_write()`` looked a gfn up in KVMGT's ``ptable`` hash with no lock while
another thread could ``hash_del`` + ``kfree`` the entry (<Y26SI3uh8JV0vvO6@google.com>,
2022-11-11).  Four answers were on the table, and :func:`explore` runs the kernel code of each:

``"none"``      v6.5: add/del under ``mmu_lock``, the lookup in ``track_write`` unlocked.
``"mmu_lock"``  the rejected idea: take ``mmu_lock`` (a spinning rwlock) around the lookup
                and the handler -- but the handler sleeps (``vgpu_lock``, ``cache_lock``).
``"gfn_lock"``  v1 of the series, patch 09/27 (<20221223005739.1295925-10-seanjc@google.com>):
                a dedicated mutex, taken inside the already hoisted ``vgpu_lock`` around the
                lookup and the handler; the handler re-enters ``intel_gvt_page_track_add``
                (<Y6vOEjHZhOWulyo1@yzhao56-desk.sh.intel.com>, 2022-12-28) or ``_remove``
                (<Y7STZZkd3EaRXLTC@google.com>, 2023-01-03), which take it again.
``"vgpu_lock"`` v6.6 (commit 49a83e190b5b): ``vgpu_lock`` hoisted into
                ``kvmgt_page_track_write``, the handler no longer takes it, add/remove assert it,
                ``remove_region`` takes it.

Use
---
::

    from kvmpt.race import explore, sample, scenarios
    r = explore("none")                      # default scenario "write_vs_unshadow"
    r.verdict, r.schedules, r.states         # ('use-after-free', 18703, 227)
    print(r)                                 # summary + the witness as a per-thread table
    r.witness                                # [(thread, step), ...], None when safe
    explore("vgpu_lock", "write_vs_remove_region").verdict            # 'safe'
    explore("none", "write_vs_detach", srcu=False).verdict            # what-if, see below
    sample("none", runs=1000, seed=1).outcomes                        # random schedules

``scenarios()`` lists the scenarios; ``kvmpt.figures.race.witness_swimlane(r)`` draws a
witness.

How it works
------------
Each thread is a short program of :class:`Step` s (lock, unlock, SRCU read section,
``synchronize_srcu``, hash probe, chain-node read, hash delete + free, handler branch ...),
generated from the kernel code of the chosen design and scenario; every step names the
kernel function it mirrors.  The explorer enumerates every interleaving breadth-first over
explicit states, with two reductions that lose no behaviour:

* **state hashing**: interleavings that reach the same state (program counters, held locks,
  SRCU sections, hash chain, freed nodes, ...) are explored once;
* **eager thread-local steps**: jumps on a thread's own locals commute with everything and
  run immediately after the step before them, so they are never interleaving points.

It reports, the first time they happen on a path (the path then ends):

* **use-after-free** -- a chain-node read of a node some other thread has ``kfree``'d
  (KASAN's complaint);
* **sleep-in-atomic** -- a step that may sleep (``mutex_lock``, ``synchronize_srcu``, a
  ``GFP_KERNEL`` allocation) while the thread holds a spinning lock, judged by the shared
  :class:`kvmpt.lockdep.Lockdep` exactly as lockdep would, whether or not the mutex is
  contended;
* **deadlock** -- a cycle in the wait-for graph (a thread waiting for a lock held by, or an
  SRCU reader that is, a thread in the cycle), including the one-thread cycle of taking a
  non-recursive mutex twice (lockdep's "possible recursive locking detected").

Breadth-first order makes the reported witness a shortest failing interleaving.

SRCU and detach (a decision, with the code it rests on)
-------------------------------------------------------
``intel_vgpu_close_device()`` (kvmgt.c, v6.5 and v6.6) calls
``kvm_page_track_unregister_notifier()`` -- ``hlist_del_rcu`` under ``mmu_lock``, then
``synchronize_srcu(&head->track_srcu)`` (page_track.c) -- and only *then*
``kvmgt_protect_table_destroy()``, which frees every ``ptable`` entry with no lock at all.
``kvm_page_track_write()`` calls ``track_write`` from inside
``srcu_read_lock(&head->track_srcu)``.  So a writer that found KVMGT's node on the list is
waited for before the table is freed, and a writer that starts later no longer finds the node.
We therefore model SRCU read sections and ``synchronize_srcu`` as a real wait (a grace period
waits for the read sections open when it starts, not for later ones), and the explorer proves
``write_vs_detach`` safe for every lock design that does not fail on its own (``"none"`` and
``"vgpu_lock"``).  ``explore(..., srcu=False)`` turns grace periods into no-ops: then detach
is a use-after-free even under ``vgpu_lock``, because ``kvmgt_protect_table_destroy`` does
not take it -- detach is safe because of SRCU, not because of the lock.

The same reasoning covers a memslot DELETE: the vCPU holds ``kvm->srcu`` around the emulated
write (``vcpu_run`` -> ``kvm_vcpu_srcu_read_lock``), and ``kvm_swap_active_memslots()``
waits for it (``synchronize_srcu_expedited``) before the slot hook runs, so a write *into the
deleted slot* is safe even in v6.5 (scenario ``write_same_slot_vs_remove_region``).  The race
needs a write to a gfn of a surviving slot whose ``ptable`` bucket chain also holds a gfn of
the deleted slot: the walk then reads the node the slot hook frees.  ``ptable`` has 2^18
buckets (gvt.h: ``DECLARE_HASHTABLE(ptable, 18)``, formerly ``NR_BKT (1 << 18)``); the model
uses one, so gfns that share a bucket in the kernel share it here.

Not modelled, on purpose: KVM's own notifier (v6.5) and ``kvm_mmu_track_write`` (v6.6) --
they touch no KVMGT state and take ``mmu_lock`` only after KVMGT's callback returned;
``slots_arch_lock`` (no other thread here takes it); the ``hlist_empty`` fast path of
``kvm_page_track_write`` (it only skips work; the list walk inside the SRCU section decides);
the queued rwlock's writer fairness.  A ``hash_add`` is one atomic step, so the model does not
look for torn reads of a half-inserted node.

Model-only: this module never imports plotly (``kvmpt.figures.race`` draws a witness).
"""
from __future__ import annotations

import dataclasses
import random
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import NamedTuple

from .lockdep import (CACHE_LOCK, GFN_LOCK, MMU_LOCK, SLOTS_LOCK, VGPU_LOCK, LockClass,
                      Lockdep)

__all__ = ["explore", "sample", "matrix", "scenarios", "RaceResult", "SampleResult",
           "LOCKS", "VERDICTS", "SCENARIOS", "DEFAULT_SCENARIO"]

LOCKS = ("none", "mmu_lock", "gfn_lock", "vgpu_lock")
VERDICTS = ("safe", "use-after-free", "sleep-in-atomic", "deadlock")
_BUGS = VERDICTS[1:]          # tie-break order for witnesses of equal length
SLOT_HOOKS = ("flush", "remove")

#: where each design's code comes from, for the ``where`` column of a witness.
#: Functions a design changes carry its label; code it leaves alone carries the kernel
#: version it sits in (``KERNEL``).  Sources: "mmu_lock" is the idea rejected in
#: <Y26SI3uh8JV0vvO6@google.com>; "gfn_lock" is v1 patch 09/27,
#: <20221223005739.1295925-10-seanjc@google.com>, as the rest of v1 left it (its 27/27,
#: <20221223005739.1295925-28-seanjc@google.com>, shows the final kvmgt_page_track_write).
VERSION = {"none": "v6.5", "mmu_lock": "v6.5 + mmu_lock idea", "gfn_lock": "series v1",
           "vgpu_lock": "v6.6"}
KERNEL = {"none": "v6.5", "mmu_lock": "v6.5", "gfn_lock": "v6.5", "vgpu_lock": "v6.6"}

# SRCU domains (spec section 3.5).
KVM_SRCU = "kvm->srcu"
TRACK_SRCU = "track_srcu"

# Guest frame numbers of the scenarios.  All share the model's single ptable bucket.
GFN = 0x1000         # a guest page-table page GVT shadows; the vCPU writes it
NEIGHBOUR = 0x2000   # another shadowed gfn in the same bucket (second vCPU / deleted slot)
CHILD = 0x1800       # a page-table page the write handler starts shadowing
NR_BUCKETS = 1

_KVMGT = "drivers/gpu/drm/i915/gvt/kvmgt.c"
_GVT_PT = "drivers/gpu/drm/i915/gvt/page_track.c"
_PT = "arch/x86/kvm/mmu/page_track.c"
_KVM_MAIN = "virt/kvm/kvm_main.c"
_X86 = "arch/x86/kvm/x86.c"


# ---------------------------------------------------------------------------------------
# State
# ---------------------------------------------------------------------------------------
class Thread(NamedTuple):
    """One thread's part of a state: program counter, held locks, open SRCU sections, locals."""

    pc: int = 0
    held: tuple = ()            # ((LockClass, mode), ...) in acquisition order
    srcu: tuple = ()            # ((domain, n), ...) open read sections
    nsec: int = 0               # read sections opened so far (names the next one)
    wait: frozenset = frozenset()   # synchronize_srcu: the sections its grace period waits for
    p: int | None = None        # hash-walk cursor: the node this thread is about to read
    found: bool = False         # result of the last ptable lookup
    tracked: bool = False       # result of the last page_track_tree lookup


class World(NamedTuple):
    """A whole explicit state; hashable, so interleavings reaching it are merged."""

    threads: tuple
    nodes: tuple                # per allocated kvmgt_pgfn: (gfn, next node or None, alive)
    heads: tuple                # per ptable bucket: first node or None
    radix: frozenset            # gfns in GVT's page_track_tree
    registered: bool            # KVMGT's node is on track_notifier_list
    slots: tuple                # per memslot: "valid" | "invalid" | "gone"


def _bucket(gfn: int) -> int:
    """``hash_min(gfn, HASH_BITS(ptable))``, shrunk to the model's bucket count."""
    return gfn % NR_BUCKETS


def _chain(w: World, gfn: int):
    """Nodes of ``gfn``'s bucket, head first."""
    n = w.heads[_bucket(gfn)]
    while n is not None:
        yield n
        n = w.nodes[n][1]


def _set(w: World, tid: int, **kw) -> World:
    ts = list(w.threads)
    ts[tid] = ts[tid]._replace(**kw)
    return w._replace(threads=tuple(ts))


def _hash_add(w: World, gfn: int) -> World:
    """``hash_add(info->ptable, &p->hnode, gfn)``: the new node goes to the bucket head."""
    b = _bucket(gfn)
    nid = len(w.nodes)
    heads = list(w.heads)
    nodes = w.nodes + ((gfn, heads[b], True),)
    heads[b] = nid
    return w._replace(nodes=nodes, heads=tuple(heads))


def _hash_del_free(w: World, nid: int) -> World:
    """``hash_del(&p->hnode); kfree(p)``: unlink the node, then free it."""
    gfn, nxt, _ = w.nodes[nid]
    b = _bucket(gfn)
    heads, nodes = list(w.heads), list(w.nodes)
    if heads[b] == nid:
        heads[b] = nxt
    else:
        for m in _chain(w, gfn):
            if nodes[m][1] == nid:
                nodes[m] = (nodes[m][0], nxt, nodes[m][2])
                break
    nodes[nid] = (gfn, nxt, False)
    return w._replace(nodes=tuple(nodes), heads=tuple(heads))


# ---------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------
class Ok(NamedTuple):
    outcomes: list              # [(World, row text), ...]; several for a nondeterministic branch


class Blocked(NamedTuple):
    waits_for: frozenset        # thread ids it waits for (its own id for a self-deadlock)
    why: str


class Bug(NamedTuple):
    kind: str
    text: str                   # the failing step's row
    message: str


@dataclass(frozen=True)
class Ctx:
    """What a step may look at besides the state: thread names and the SRCU switch."""

    names: tuple
    srcu: bool = True


@dataclass(frozen=True)
class Step:
    """One scheduling point of a thread.  ``where`` names the kernel function it mirrors."""

    text: str
    where: str
    local = False               # thread-local: runs eagerly, never an interleaving point
    label: str | None = None    # jump target (resolved into ``target`` by ``_assemble``)
    target: int = -1

    def attempt(self, w: World, tid: int, cx: Ctx):  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def _next(w: World, tid: int, **kw) -> World:
        return _set(w, tid, pc=w.threads[tid].pc + 1, **kw)


def _lockdep(w: World, cx: Ctx) -> Lockdep:
    return Lockdep.from_held({cx.names[i]: t.held for i, t in enumerate(w.threads)})


def _sleep_bug(w: World, tid: int, cx: Ctx, text: str, where: str):
    """``might_sleep()`` judged by the shared lockdep layer; a Bug or None."""
    ld = _lockdep(w, cx)
    if ld.might_sleep(cx.names[tid], text):
        return Bug("sleep-in-atomic", text, ld.reports[-1].message + f" [{where}]")
    return None


@dataclass(frozen=True)
class Lock(Step):
    """``mutex_lock`` / ``read_lock`` / ``write_lock``: blocks while another thread holds it."""

    lock: LockClass = MMU_LOCK
    mode: str = "write"

    def attempt(self, w, tid, cx):
        ctx = cx.names[tid]
        ld = _lockdep(w, cx)
        ok = ld.acquire(ctx, self.lock, self.mode)
        kinds = [r.kind for r in ld.reports]
        if "sleep-in-atomic" in kinds:
            msg = next(r.message for r in ld.reports if r.kind == "sleep-in-atomic")
            return Bug("sleep-in-atomic", self.text, f"{msg} [{self.where}]")
        if not ok:
            return Blocked(frozenset({tid}), f"{ctx} already holds {self.lock.name} "
                                             f"(a mutex is not recursive)")
        others = ld.conflicting_holders(ctx, self.lock, self.mode)
        if others:
            ids = frozenset(cx.names.index(o) for o in others)
            return Blocked(ids, f"{self.lock.name} held by {', '.join(others)}")
        return Ok([(self._next(w, tid, held=tuple(ld.held[ctx])), self.text)])


@dataclass(frozen=True)
class Unlock(Step):
    lock: LockClass = MMU_LOCK

    def attempt(self, w, tid, cx):
        ctx = cx.names[tid]
        ld = _lockdep(w, cx)
        ld.release(ctx, self.lock)
        return Ok([(self._next(w, tid, held=tuple(ld.held[ctx])), self.text)])


@dataclass(frozen=True)
class AssertHeld(Step):
    """``lockdep_assert_held``: a model error if the program does not hold the lock."""

    lock: LockClass = VGPU_LOCK
    local = True

    def run_local(self, w, tid, cx):
        if not _lockdep(w, cx).assert_held(cx.names[tid], self.lock, where=self.where):
            raise AssertionError(f"{cx.names[tid]}: {self.lock.name} not held in {self.where}")
        return self._next(w, tid)


@dataclass(frozen=True)
class SrcuReadLock(Step):
    domain: str = KVM_SRCU

    def attempt(self, w, tid, cx):
        t = w.threads[tid]
        sec = (self.domain, t.nsec)
        return Ok([(self._next(w, tid, srcu=t.srcu + (sec,), nsec=t.nsec + 1), self.text)])


@dataclass(frozen=True)
class SrcuReadUnlock(Step):
    domain: str = KVM_SRCU

    def attempt(self, w, tid, cx):
        t = w.threads[tid]
        keep = list(t.srcu)
        for i in range(len(keep) - 1, -1, -1):
            if keep[i][0] == self.domain:
                del keep[i]
                break
        return Ok([(self._next(w, tid, srcu=tuple(keep)), self.text)])


@dataclass(frozen=True)
class SyncSrcuStart(Step):
    """``synchronize_srcu``, part 1: the grace period starts; it will wait for the read
    sections open now (later readers are not waited for).  May sleep."""

    domain: str = KVM_SRCU

    def attempt(self, w, tid, cx):
        bug = _sleep_bug(w, tid, cx, self.text, self.where)
        if bug:
            return bug
        snap = frozenset((i, s) for i, t in enumerate(w.threads) if i != tid
                         for s in t.srcu if s[0] == self.domain) if cx.srcu else frozenset()
        text = self.text + ("" if cx.srcu else "  [what-if: srcu=False, no wait]")
        return Ok([(self._next(w, tid, wait=snap), text)])


@dataclass(frozen=True)
class SyncSrcuWait(Step):
    """``synchronize_srcu``, part 2: returns once every waited-for read section has ended."""

    domain: str = KVM_SRCU

    def attempt(self, w, tid, cx):
        open_ = {(i, s) for i, s in w.threads[tid].wait if s in w.threads[i].srcu}
        if open_:
            who = sorted({i for i, _ in open_})
            return Blocked(frozenset(who), f"waits for {', '.join(cx.names[i] for i in who)} "
                           f"to leave its {self.domain} read section")
        return Ok([(self._next(w, tid, wait=frozenset()), self.text)])


@dataclass(frozen=True)
class Probe(Step):
    """``hash_for_each_possible``: read the bucket head into the walk cursor ``p``."""

    gfn: int = GFN

    def attempt(self, w, tid, cx):
        head = w.heads[_bucket(self.gfn)]
        if head is None:   # empty bucket: not found, skip the node reads
            w2 = _set(w, tid, pc=self.target, p=None, found=False)
            return Ok([(w2, f"{self.text} → empty bucket, not found")])
        return Ok([(self._next(w, tid, p=head),
                    f"{self.text} → p = node({w.nodes[head][0]:#x})")])


@dataclass(frozen=True)
class ReadNode(Step):
    """One iteration of ``__kvmgt_protect_table_find``: read ``p->gfn`` (and
    ``p->hnode.next``).  Reading a freed node is the use-after-free."""

    gfn: int = GFN

    def attempt(self, w, tid, cx):
        nid = w.threads[tid].p
        ngfn, nxt, alive = w.nodes[nid]
        if not alive:
            return Bug("use-after-free", f"read p->gfn of node({ngfn:#x}) — already kfree'd",
                       f"{cx.names[tid]} reads node({ngfn:#x}) of the ptable chain after "
                       f"another thread's hash_del + kfree: use-after-free [{self.where}]")
        if ngfn == self.gfn:
            return Ok([(self._next(w, tid, p=None, found=True),
                        f"read p->gfn of node({ngfn:#x}) → match")])
        if nxt is None:
            return Ok([(self._next(w, tid, p=None, found=False),
                        f"read p->gfn of node({ngfn:#x}) → end of chain, not found")])
        return Ok([(_set(w, tid, p=nxt),
                    f"read p->gfn of node({ngfn:#x}) → p = next, node({w.nodes[nxt][0]:#x})")])


@dataclass(frozen=True)
class FindLocked(Step):
    """``kvmgt_gfn_is_write_protected`` by a caller that holds the table's lock: the whole
    chain walk is one step (no remover can run concurrently; a freed node is still caught)."""

    gfn: int = GFN

    def attempt(self, w, tid, cx):
        for nid in _chain(w, self.gfn):
            ngfn, _, alive = w.nodes[nid]
            if not alive:
                return Bug("use-after-free", f"{self.text}: node({ngfn:#x}) already kfree'd",
                           f"{cx.names[tid]} walks a freed ptable node [{self.where}]")
            if ngfn == self.gfn:
                return Ok([(self._next(w, tid, found=True), f"{self.text} → yes")])
        return Ok([(self._next(w, tid, found=False), f"{self.text} → no")])


@dataclass(frozen=True)
class HashAdd(Step):
    """``kvmgt_protect_table_add``: ``kzalloc(GFP_ATOMIC)`` (does not sleep) + ``hash_add``."""

    gfn: int = GFN

    def attempt(self, w, tid, cx):
        if any(w.nodes[n][0] == self.gfn for n in _chain(w, self.gfn)):
            return Ok([(self._next(w, tid), f"{self.text} → already present")])
        return Ok([(self._next(_hash_add(w, self.gfn), tid), self.text)])


@dataclass(frozen=True)
class HashDelFree(Step):
    """``kvmgt_protect_table_del``: find + ``hash_del`` + ``kfree``."""

    gfn: int = GFN

    def attempt(self, w, tid, cx):
        for nid in _chain(w, self.gfn):
            if w.nodes[nid][0] == self.gfn:
                return Ok([(self._next(_hash_del_free(w, nid), tid), self.text)])
        return Ok([(self._next(w, tid), f"{self.text} → not present")])


@dataclass(frozen=True)
class HashDestroy(Step):
    """``kvmgt_protect_table_destroy``: ``hash_for_each_safe`` + ``hash_del`` + ``kfree``."""

    def attempt(self, w, tid, cx):
        for b in range(NR_BUCKETS):
            while w.heads[b] is not None:
                w = _hash_del_free(w, w.heads[b])
        return Ok([(self._next(w, tid), self.text)])


@dataclass(frozen=True)
class WriteTrack(Step):
    """KVM's write-track count change for a gfn: must hold ``mmu_lock`` for write
    (``lockdep_assert_held_write`` in ``__kvm_write_track_{add,remove}_gfn``, v6.6)."""

    def attempt(self, w, tid, cx):
        if not _lockdep(w, cx).assert_held_write(cx.names[tid], MMU_LOCK, self.where):
            raise AssertionError(f"{cx.names[tid]}: mmu_lock not held for write in {self.where}")
        return Ok([(self._next(w, tid), self.text)])


@dataclass(frozen=True)
class RadixLookup(Step):
    """``intel_vgpu_find_page_track``: is the gfn in GVT's ``page_track_tree``?"""

    gfn: int = GFN

    def attempt(self, w, tid, cx):
        hit = self.gfn in w.radix
        return Ok([(self._next(w, tid, tracked=hit),
                    f"{self.text} → {'found' if hit else '-ENXIO'}")])


@dataclass(frozen=True)
class RadixDelete(Step):
    """``intel_vgpu_unregister_page_track``: ``radix_tree_delete`` + ``kfree(track)``."""

    gfn: int = GFN

    def attempt(self, w, tid, cx):
        hit = self.gfn in w.radix
        return Ok([(self._next(w._replace(radix=w.radix - {self.gfn}), tid, tracked=hit),
                    self.text if hit else f"{self.text} → not registered")])


@dataclass(frozen=True)
class RadixInsert(Step):
    """``intel_vgpu_register_page_track``: ``kzalloc(GFP_KERNEL)`` (may sleep) + insert."""

    gfn: int = CHILD

    def attempt(self, w, tid, cx):
        bug = _sleep_bug(w, tid, cx, self.text, self.where)
        if bug:
            return bug
        return Ok([(self._next(w._replace(radix=w.radix | {self.gfn}), tid), self.text)])


@dataclass(frozen=True)
class NotifierWalk(Step):
    """``hlist_for_each_entry_srcu(n, &head->track_notifier_list, ...)``: is KVMGT's node on
    the list?  Jumps to ``label`` when it is not."""

    def attempt(self, w, tid, cx):
        if w.registered:
            return Ok([(self._next(w, tid), f"{self.text} → KVMGT's node")])
        return Ok([(_set(w, tid, pc=self.target), f"{self.text} → list empty, skip")])


@dataclass(frozen=True)
class NotifierDel(Step):
    """``hlist_del_rcu(&n->node)`` under ``write_lock(&kvm->mmu_lock)``."""

    def attempt(self, w, tid, cx):
        if not _lockdep(w, cx).assert_held_write(cx.names[tid], MMU_LOCK, self.where):
            raise AssertionError(f"{cx.names[tid]}: mmu_lock not held in {self.where}")
        return Ok([(self._next(w._replace(registered=False), tid), self.text)])


@dataclass(frozen=True)
class SlotUsable(Step):
    """``kvm_vcpu_write_guest`` in ``emulator_write_phys``: the write lands (and
    ``kvm_page_track_write`` runs) only if the gfn's memslot is valid; an INVALID or deleted
    slot makes it fail, and the notifier is not called.  Jumps to ``label`` on failure."""

    slot: int = 0

    def attempt(self, w, tid, cx):
        state = w.slots[self.slot]
        if state == "valid":
            return Ok([(self._next(w, tid), f"{self.text} → slot {self.slot} valid, written")])
        return Ok([(_set(w, tid, pc=self.target),
                    f"{self.text} → slot {self.slot} {state}: fails, no track_write")])


@dataclass(frozen=True)
class SlotLookup(Step):
    """``gfn_to_memslot(kvm, gfn)`` under ``kvm->srcu``: NULL once the slot is deleted (an
    INVALID slot is still returned).  Jumps to ``label`` on NULL (the caller's -EINVAL)."""

    slot: int = 0

    def attempt(self, w, tid, cx):
        if w.slots[self.slot] != "gone":
            return Ok([(self._next(w, tid), f"{self.text} → slot {self.slot}")])
        return Ok([(_set(w, tid, pc=self.target), f"{self.text} → NULL: -EINVAL")])


@dataclass(frozen=True)
class SlotSet(Step):
    """``kvm_swap_active_memslots``: publish the slot as INVALID (S2b) or deleted (S5)."""

    slot: int = 1
    state: str = "invalid"

    def attempt(self, w, tid, cx):
        slots = list(w.slots)
        slots[self.slot] = self.state
        return Ok([(self._next(w._replace(slots=tuple(slots)), tid), self.text)])


@dataclass(frozen=True)
class Note(Step):
    """A visible step with no modelled effect (kept for the reader of a witness)."""

    def attempt(self, w, tid, cx):
        return Ok([(self._next(w, tid), self.text)])


@dataclass(frozen=True)
class Choose(Step):
    """A branch the kernel takes on data the model does not track (e.g. ``vgpu->failsafe``,
    the guest PTE value): every branch is explored.  ``branches`` = ((label, text), ...)."""

    branches: tuple = ()
    targets: tuple = ()

    def attempt(self, w, tid, cx):
        return Ok([(_set(w, tid, pc=t), f"{self.text}: {text}")
                   for t, (_, text) in zip(self.targets, self.branches)])


@dataclass(frozen=True)
class Goto(Step):
    local = True

    def run_local(self, w, tid, cx):
        return _set(w, tid, pc=self.target)


@dataclass(frozen=True)
class IfNot(Step):
    """Jump to ``label`` unless the thread-local ``var`` is true (``if (!found) ...``)."""

    var: str = "found"
    local = True

    def run_local(self, w, tid, cx):
        if getattr(w.threads[tid], self.var):
            return self._next(w, tid)
        return _set(w, tid, pc=self.target)


@dataclass(frozen=True)
class If(Step):
    """Jump to ``label`` if the thread-local ``var`` is true."""

    var: str = "found"
    local = True

    def run_local(self, w, tid, cx):
        if getattr(w.threads[tid], self.var):
            return _set(w, tid, pc=self.target)
        return self._next(w, tid)


@dataclass(frozen=True)
class Label:
    name: str


def _assemble(items) -> tuple:
    """Resolve ``Label`` markers into step indices (``label`` -> ``target``)."""
    pos, steps = {}, []
    for it in items:
        if isinstance(it, Label):
            if it.name in pos:
                raise ValueError(f"duplicate label {it.name}")
            pos[it.name] = len(steps)
        else:
            steps.append(it)
    out = []
    for s in steps:
        if isinstance(s, Choose):
            s = dataclasses.replace(s, targets=tuple(pos[lab] for lab, _ in s.branches))
        elif s.label is not None:
            s = dataclasses.replace(s, target=pos[s.label])
        out.append(s)
    return tuple(out)


# ---------------------------------------------------------------------------------------
# Thread programs: the kernel code of each design
# ---------------------------------------------------------------------------------------
class _Gen:
    """Builds thread programs for one lock design; unique labels per inlined body."""

    def __init__(self, lock: str, slot_hook: str, slot_of: dict | None = None):
        self.lock, self.slot_hook = lock, slot_hook
        self.slot_of = slot_of or {}
        self.v, self.kv = VERSION[lock], KERNEL[lock]
        self._n = 0

    def label(self, stem: str) -> str:
        self._n += 1
        return f"{stem}{self._n}"

    def at(self, fn: str, version: str | None = None) -> str:
        """``file:function (version)`` for code the lock design changes."""
        return f"{fn} ({version or self.v})"

    def kat(self, fn: str) -> str:
        """``file:function (version)`` for code the lock design leaves alone."""
        return f"{fn} ({self.kv})"

    def assert_table_lock(self) -> Step:
        """``lockdep_assert_held`` in ``__kvmgt_protect_table_find`` (kvmgt.c): on
        ``gfn_lock`` in v1 09/27, on ``vgpu_lock`` in v6.6 (v6.5 had none)."""
        lock = GFN_LOCK if self.lock == "gfn_lock" else VGPU_LOCK
        return AssertHeld(f"lockdep_assert_held(&info->{lock.name.split('->')[1]})",
                          self.at(f"{_KVMGT}:__kvmgt_protect_table_find"), lock=lock)

    # -- KVM side ----------------------------------------------------------------------
    def lookup(self, gfn: int, at: str, label: str) -> Step:
        """``slot = gfn_to_memslot(kvm, gfn); if (!slot) ... -EINVAL``."""
        return SlotLookup(f"gfn_to_memslot({gfn:#x})", at, slot=self.slot_of.get(gfn, 0),
                          label=label)

    def kvm_write_track(self, gfn: int, add: bool, fail: str) -> list:
        """``kvm_write_track_{add,remove}_gfn`` (arch/x86/kvm/mmu/page_track.c, v6.6):
        ``srcu_read_lock(&kvm->srcu)``; ``gfn_to_memslot`` (-EINVAL, jump to ``fail``, if
        the slot is gone); ``write_lock(&kvm->mmu_lock)``; the count change; unlock.  v1's
        callers did the same steps themselves around ``kvm_slot_page_track_*_page``."""
        fn = "kvm_write_track_add_gfn" if add else "kvm_write_track_remove_gfn"
        inner = "__kvm_write_track_add_gfn" if add else "__kvm_write_track_remove_gfn"
        at = self.at(f"{_PT}:{fn}", "v6.6")
        ok, nf = self.label("kwt_ok"), self.label("kwt_nf")
        return [
            SrcuReadLock("srcu_read_lock(&kvm->srcu)", at, domain=KVM_SRCU),
            self.lookup(gfn, at, nf),
            Lock("write_lock(&kvm->mmu_lock)", at, lock=MMU_LOCK, mode="write"),
            WriteTrack(f"{inner}({gfn:#x}): count {'+' if add else '-'}1",
                       self.at(f"{_PT}:{inner}", "v6.6")),
            Unlock("write_unlock(&kvm->mmu_lock)", at, lock=MMU_LOCK),
            SrcuReadUnlock("srcu_read_unlock(&kvm->srcu)", at, domain=KVM_SRCU),
            Goto("", at, label=ok),
            Label(nf),
            SrcuReadUnlock("srcu_read_unlock(&kvm->srcu)", at, domain=KVM_SRCU),
            Goto("", at, label=fail),
            Label(ok),
        ]

    # -- KVMGT add / remove ------------------------------------------------------------
    def page_track_remove(self, gfn: int) -> list:
        """``intel_gvt_page_track_remove`` (drivers/gpu/drm/i915/gvt/kvmgt.c).

        v6.5 (and the mmu_lock idea): srcu + ``write_lock(mmu_lock)``, and under it the
        ptable check, ``kvm_slot_page_track_remove_page`` and ``kvmgt_protect_table_del``.
        v1 09/27 (gfn_lock): ``mutex_lock(&info->gfn_lock)``; the ptable check; srcu,
        ``write_lock(mmu_lock)`` only around ``kvm_slot_page_track_remove_page``; then
        ``kvmgt_protect_table_del``; unlock.  v6.6: the caller holds ``vgpu_lock``; ptable
        check, ``kvm_write_track_remove_gfn``, ``kvmgt_protect_table_del``."""
        at = self.at(f"{_KVMGT}:intel_gvt_page_track_remove")
        skip = self.label("rm_skip")
        find = FindLocked(f"kvmgt_gfn_is_write_protected({gfn:#x})",
                          self.kat(f"{_KVMGT}:kvmgt_gfn_is_write_protected"), gfn=gfn)
        delete = HashDelFree(f"kvmgt_protect_table_del({gfn:#x}): hash_del + kfree",
                             self.kat(f"{_KVMGT}:kvmgt_protect_table_del"), gfn=gfn)
        if self.lock in ("none", "mmu_lock"):
            nf = self.label("rm_nf")
            return [
                SrcuReadLock("srcu_read_lock(&kvm->srcu)", at, domain=KVM_SRCU),
                self.lookup(gfn, at, nf),
                Lock("write_lock(&kvm->mmu_lock)", at, lock=MMU_LOCK, mode="write"),
                find, IfNot("", at, label=skip),
                WriteTrack(f"kvm_slot_page_track_remove_page({gfn:#x})",
                           self.at(f"{_PT}:kvm_slot_page_track_remove_page", "v6.5")),
                delete,
                Label(skip),
                Unlock("write_unlock(&kvm->mmu_lock)", at, lock=MMU_LOCK),
                Label(nf),
                SrcuReadUnlock("srcu_read_unlock(&kvm->srcu)", at, domain=KVM_SRCU),
            ]
        if self.lock == "gfn_lock":
            return [
                Lock("mutex_lock(&info->gfn_lock)", at, lock=GFN_LOCK),
                self.assert_table_lock(),
                find, IfNot("", at, label=skip),
                *self.kvm_write_track(gfn, add=False, fail=skip),
                delete,
                Label(skip),
                Unlock("mutex_unlock(&info->gfn_lock)", at, lock=GFN_LOCK),
            ]
        return [  # vgpu_lock, v6.6
            self.assert_table_lock(),
            find, IfNot("", at, label=skip),
            *self.kvm_write_track(gfn, add=False, fail=skip),
            delete,
            Label(skip),
        ]

    def page_track_add(self, gfn: int) -> list:
        """``intel_gvt_page_track_add`` (kvmgt.c): the mirror image of remove, ending in
        ``kvmgt_protect_table_add`` (``kzalloc(GFP_ATOMIC)`` + ``hash_add``)."""
        at = self.at(f"{_KVMGT}:intel_gvt_page_track_add")
        skip = self.label("add_skip")
        find = FindLocked(f"kvmgt_gfn_is_write_protected({gfn:#x})",
                          self.kat(f"{_KVMGT}:kvmgt_gfn_is_write_protected"), gfn=gfn)
        add = HashAdd(f"kvmgt_protect_table_add({gfn:#x}): kzalloc(GFP_ATOMIC) + hash_add",
                      self.kat(f"{_KVMGT}:kvmgt_protect_table_add"), gfn=gfn)
        if self.lock in ("none", "mmu_lock"):
            nf = self.label("add_nf")
            return [
                SrcuReadLock("srcu_read_lock(&kvm->srcu)", at, domain=KVM_SRCU),
                self.lookup(gfn, at, nf),
                Lock("write_lock(&kvm->mmu_lock)", at, lock=MMU_LOCK, mode="write"),
                find, If("", at, label=skip),
                WriteTrack(f"kvm_slot_page_track_add_page({gfn:#x})",
                           self.at(f"{_PT}:kvm_slot_page_track_add_page", "v6.5")),
                add,
                Label(skip),
                Unlock("write_unlock(&kvm->mmu_lock)", at, lock=MMU_LOCK),
                Label(nf),
                SrcuReadUnlock("srcu_read_unlock(&kvm->srcu)", at, domain=KVM_SRCU),
            ]
        if self.lock == "gfn_lock":
            return [
                Lock("mutex_lock(&info->gfn_lock)", at, lock=GFN_LOCK),
                self.assert_table_lock(),
                find, If("", at, label=skip),
                *self.kvm_write_track(gfn, add=True, fail=skip),
                add,
                Label(skip),
                Unlock("mutex_unlock(&info->gfn_lock)", at, lock=GFN_LOCK),
            ]
        return [
            self.assert_table_lock(),
            find, If("", at, label=skip),
            *self.kvm_write_track(gfn, add=True, fail=skip),
            add,
            Label(skip),
        ]

    # -- the write path ----------------------------------------------------------------
    def page_track_handler(self, gfn: int) -> list:
        """``intel_vgpu_page_track_handler`` (drivers/gpu/drm/i915/gvt/page_track.c).

        v6.5 took ``vgpu_lock`` itself, first thing (also under the mmu_lock idea); from
        v1 08/27 "Hoist acquisition of vgpu_lock out to kvmgt_page_track_write()"
        (<20221223005739.1295925-9-seanjc@google.com>, kept in v6.6) its caller holds it.
        It looks the gfn up in ``page_track_tree`` (-ENXIO if gone), then takes one of
        three paths the model cannot predict:

        * ``page_track->handler`` = ``ppgtt_write_protection_handler`` (gtt.c) updating an
          entry: ``ppgtt_invalidate_pte`` -> ``intel_gvt_dma_unmap_guest_page`` (kvmgt.c)
          -> ``mutex_lock(&vgpu->cache_lock)`` -- it sleeps;
        * the same handler meeting a new page-table page:
          ``ppgtt_populate_spt_by_guest_entry`` -> ``intel_vgpu_register_page_track``
          (``GFP_KERNEL``) + ``intel_vgpu_enable_page_track`` -> ``intel_gvt_page_track_add``
          -- it re-enters add;
        * ``vgpu->failsafe``: ``intel_gvt_page_track_remove(vgpu, gfn)`` -- it re-enters
          remove (<Y7STZZkd3EaRXLTC@google.com>)."""
        at = self.at(f"{_GVT_PT}:intel_vgpu_page_track_handler")
        own_lock = self.lock in ("none", "mmu_lock")
        out, b_pte, b_new, b_fs = self.label("h_out"), self.label("h_pte"), \
            self.label("h_new"), self.label("h_fs")
        prog = []
        if own_lock:
            prog.append(Lock("mutex_lock(&vgpu->vgpu_lock)", at, lock=VGPU_LOCK))
        prog += [
            RadixLookup(f"intel_vgpu_find_page_track({gfn:#x})",
                        self.kat(f"{_GVT_PT}:intel_vgpu_find_page_track"), gfn=gfn),
            IfNot("", at, var="tracked", label=out),
            Choose("handler", at, branches=(
                (b_pte, "ppgtt_write_protection_handler updates an entry"),
                (b_new, "ppgtt_write_protection_handler shadows a new page table"),
                (b_fs, "vgpu->failsafe → intel_gvt_page_track_remove"))),
            Label(b_pte),
            Lock("mutex_lock(&vgpu->cache_lock)",
                 self.kat(f"{_KVMGT}:intel_gvt_dma_unmap_guest_page"), lock=CACHE_LOCK),
            Unlock("mutex_unlock(&vgpu->cache_lock)",
                   self.kat(f"{_KVMGT}:intel_gvt_dma_unmap_guest_page"), lock=CACHE_LOCK),
            Goto("", at, label=out),
            Label(b_new),
            RadixInsert(f"intel_vgpu_register_page_track({CHILD:#x}): kzalloc(GFP_KERNEL)",
                        self.kat(f"{_GVT_PT}:intel_vgpu_register_page_track"), gfn=CHILD),
            *self.page_track_add(CHILD),
            Goto("", at, label=out),
            Label(b_fs),
            *self.page_track_remove(gfn),
            Label(out),
        ]
        if own_lock:
            prog.append(Unlock("mutex_unlock(&vgpu->vgpu_lock)", at, lock=VGPU_LOCK))
        return prog

    def kvmgt_track_write(self, gfn: int) -> list:
        """``kvmgt_page_track_write`` (drivers/gpu/drm/i915/gvt/kvmgt.c).

        v6.5: ``if (kvmgt_gfn_is_write_protected(info, gfn)) intel_vgpu_page_track_handler()``
        with no lock.  mmu_lock idea: the same inside ``read_lock(&kvm->mmu_lock)`` (a
        reader is enough against add/del, which take it for write).  v1 09/27:
        ``mutex_lock(&info->vgpu_lock)`` (hoisted by the patch before it) then
        ``mutex_lock(&info->gfn_lock)``, around lookup and handler.  v6.6:
        ``mutex_lock(&info->vgpu_lock)`` around lookup and handler."""
        at = self.at(f"{_KVMGT}:kvmgt_page_track_write")
        find_at = self.at(f"{_KVMGT}:__kvmgt_protect_table_find")
        miss = self.label("w_miss")
        lookup = [
            Probe("hash_for_each_possible(ptable, p, hnode, gfn)", find_at, gfn=gfn, label=miss),
            ReadNode("read p->gfn", find_at, gfn=gfn),
            IfNot("", at, label=miss),
            *self.page_track_handler(gfn),
            Label(miss),
        ]
        if self.lock == "none":
            return lookup
        if self.lock == "mmu_lock":
            return [Lock("read_lock(&kvm->mmu_lock)", at, lock=MMU_LOCK, mode="read"),
                    *lookup,
                    Unlock("read_unlock(&kvm->mmu_lock)", at, lock=MMU_LOCK)]
        if self.lock == "gfn_lock":
            return [Lock("mutex_lock(&info->vgpu_lock)", at, lock=VGPU_LOCK),
                    Lock("mutex_lock(&info->gfn_lock)", at, lock=GFN_LOCK),
                    self.assert_table_lock(),
                    *lookup,
                    Unlock("mutex_unlock(&info->gfn_lock)", at, lock=GFN_LOCK),
                    Unlock("mutex_unlock(&info->vgpu_lock)", at, lock=VGPU_LOCK)]
        return [Lock("mutex_lock(&info->vgpu_lock)", at, lock=VGPU_LOCK),
                self.assert_table_lock(),
                *lookup,
                Unlock("mutex_unlock(&info->vgpu_lock)", at, lock=VGPU_LOCK)]

    def vcpu_write(self, gfn: int, slot: int) -> list:
        """A vCPU's emulated write to a shadowed page: ``vcpu_run`` holds ``kvm->srcu``
        (arch/x86/kvm/x86.c); ``emulator_write_phys`` writes guest memory and, only if that
        worked, calls ``kvm_page_track_write`` (page_track.c, v6.5; ``__kvm_page_track_write``
        in v6.6), which walks the notifier list inside ``srcu_read_lock(&head->track_srcu)``
        and calls KVMGT's ``track_write``."""
        pt = self.kat(f"{_PT}:kvm_page_track_write" if self.lock != "vgpu_lock"
                      else f"{_PT}:__kvm_page_track_write")
        done, unl = self.label("v_done"), self.label("v_unl")
        return [
            SrcuReadLock("srcu_read_lock(&kvm->srcu)", self.kat(f"{_X86}:vcpu_run"),
                         domain=KVM_SRCU),
            SlotUsable(f"emulator_write_phys({gfn:#x})", self.kat(f"{_X86}:emulator_write_phys"),
                       slot=slot, label=done),
            SrcuReadLock("srcu_read_lock(&head->track_srcu)", pt, domain=TRACK_SRCU),
            NotifierWalk("hlist_for_each_entry_srcu", pt, label=unl),
            *self.kvmgt_track_write(gfn),
            Label(unl),
            SrcuReadUnlock("srcu_read_unlock(&head->track_srcu)", pt, domain=TRACK_SRCU),
            Label(done),
            SrcuReadUnlock("srcu_read_unlock(&kvm->srcu)", self.kat(f"{_X86}:vcpu_run"),
                           domain=KVM_SRCU),
        ]

    # -- the removers --------------------------------------------------------------------
    def gtt_unshadow(self, gfn: int) -> list:
        """GVT stops shadowing a guest page table: a guest MMIO write (PPGTT destroy
        notification) is emulated under ``mutex_lock(&vgpu->vgpu_lock)``
        (``intel_vgpu_emulate_mmio_write``, gvt/mmio.c) and reaches ``ppgtt_free_spt``
        (gtt.c) -> ``intel_vgpu_unregister_page_track`` (gvt/page_track.c):
        ``radix_tree_delete`` and, if it was tracked, ``intel_gvt_page_track_remove``."""
        mmio = self.kat("drivers/gpu/drm/i915/gvt/mmio.c:intel_vgpu_emulate_mmio_write")
        un = self.kat(f"{_GVT_PT}:intel_vgpu_unregister_page_track")
        skip = self.label("u_skip")
        return [
            Lock("mutex_lock(&vgpu->vgpu_lock)", mmio, lock=VGPU_LOCK),
            RadixDelete(f"ppgtt_free_spt: radix_tree_delete({gfn:#x}) + kfree(track)", un,
                        gfn=gfn),
            IfNot("", un, var="tracked", label=skip),
            *self.page_track_remove(gfn),
            Label(skip),
            Unlock("mutex_unlock(&vgpu->vgpu_lock)", mmio, lock=VGPU_LOCK),
        ]

    def slot_hook_body(self, gfns: list) -> list:
        """KVMGT's slot hook over the deleted slot's gfns.

        ``flush``: ``kvmgt_page_track_flush_slot`` (kvmgt.c, v6.5): ``write_lock(mmu_lock)``
        across the loop; per protected gfn ``kvm_slot_page_track_remove_page`` +
        ``kvmgt_protect_table_del``.  Under vgpu_lock (v4 11/29) the loop is in
        ``vgpu_lock`` with mmu_lock per gfn; v1 09/27 did the same with gfn_lock.
        ``remove``: ``kvmgt_page_track_remove_region`` (kvmgt.c, v6.6): the loop in
        ``mutex_lock(&info->vgpu_lock)``, per protected gfn only ``kvmgt_protect_table_del``
        (v1 took gfn_lock; under "none"/"mmu_lock", a combination no kernel had, the
        table's lock, mmu_lock)."""
        fn = ("kvmgt_page_track_flush_slot" if self.slot_hook == "flush"
              else "kvmgt_page_track_remove_region")
        at = self.at(f"{_KVMGT}:{fn}", "v6.5" if self.slot_hook == "flush" and
                     self.lock in ("none", "mmu_lock") else None)
        outer = {"none": MMU_LOCK, "mmu_lock": MMU_LOCK, "gfn_lock": GFN_LOCK,
                 "vgpu_lock": VGPU_LOCK}[self.lock]
        verb = {MMU_LOCK: "write_lock(&kvm->mmu_lock)", GFN_LOCK: "mutex_lock(&info->gfn_lock)",
                VGPU_LOCK: "mutex_lock(&info->vgpu_lock)"}[outer]
        unverb = verb.replace("mutex_lock", "mutex_unlock").replace("write_lock", "write_unlock")
        prog = [Lock(verb, at, lock=outer, mode="write")]
        if outer is not MMU_LOCK:
            prog.append(self.assert_table_lock())
        for g in gfns:
            skip = self.label("s_skip")
            prog += [FindLocked(f"kvmgt_gfn_is_write_protected({g:#x})", at, gfn=g),
                     IfNot("", at, label=skip)]
            if self.slot_hook == "flush":
                if outer is MMU_LOCK:
                    prog.append(WriteTrack(f"kvm_slot_page_track_remove_page({g:#x})",
                                           self.at(f"{_PT}:kvm_slot_page_track_remove_page",
                                                   "v6.5")))
                else:
                    prog += [Lock("write_lock(&kvm->mmu_lock)", at, lock=MMU_LOCK),
                             WriteTrack(f"kvm_slot_page_track_remove_page({g:#x})",
                                        self.at(f"{_PT}:kvm_slot_page_track_remove_page",
                                                "v6.5")),
                             Unlock("write_unlock(&kvm->mmu_lock)", at, lock=MMU_LOCK)]
            prog += [HashDelFree(f"kvmgt_protect_table_del({g:#x}): hash_del + kfree",
                                 self.kat(f"{_KVMGT}:kvmgt_protect_table_del"), gfn=g),
                     Label(skip)]
        prog.append(Unlock(unverb, at, lock=outer))
        return prog

    def memslot_delete(self, slot: int, gfns: list) -> list:
        """``KVM_SET_USER_MEMORY_REGION`` deleting ``slot`` (virt/kvm/kvm_main.c:
        ``kvm_set_memory_region`` -> ``kvm_set_memslot``, spec section 3.2): under
        ``slots_lock``, S2 makes the slot INVALID and ``synchronize_srcu_expedited(&kvm->srcu)``;
        S2c ``kvm_arch_flush_shadow_memslot`` fires the v6.5 flush hook; S5 deletes the slot
        and synchronizes again; S7 ``kvm_arch_commit_memory_region`` fires the v6.6
        ``track_remove_region`` hook (``kvm_page_track_delete_slot``); then the slot's
        metadata is freed.  Both hooks walk the notifier list under ``track_srcu``."""
        setm = self.kat(f"{_KVM_MAIN}:kvm_set_memory_region")
        swap = self.kat(f"{_KVM_MAIN}:kvm_swap_active_memslots")
        if self.slot_hook == "flush":
            hook_at = self.at(f"{_PT}:kvm_page_track_flush_slot", "v6.5")
        else:
            hook_at = self.at(f"{_PT}:kvm_page_track_delete_slot", "v6.6")
        skip = self.label("m_skip")
        hook = [
            SrcuReadLock("srcu_read_lock(&head->track_srcu)", hook_at, domain=TRACK_SRCU),
            NotifierWalk("hlist_for_each_entry_srcu", hook_at, label=skip),
            *self.slot_hook_body(gfns),
            Label(skip),
            SrcuReadUnlock("srcu_read_unlock(&head->track_srcu)", hook_at, domain=TRACK_SRCU),
        ]
        prog = [
            Lock("mutex_lock(&kvm->slots_lock)", setm, lock=SLOTS_LOCK),
            SlotSet(f"S2 kvm_invalidate_memslot: slot {slot} INVALID", swap, slot=slot,
                    state="invalid"),
            SyncSrcuStart("synchronize_srcu_expedited(&kvm->srcu)", swap, domain=KVM_SRCU),
            SyncSrcuWait("  … grace period over", swap, domain=KVM_SRCU),
        ]
        if self.slot_hook == "flush":
            prog += hook
        prog += [
            SlotSet(f"S5 kvm_delete_memslot: slot {slot} gone", swap, slot=slot, state="gone"),
            SyncSrcuStart("synchronize_srcu_expedited(&kvm->srcu)", swap, domain=KVM_SRCU),
            SyncSrcuWait("  … grace period over", swap, domain=KVM_SRCU),
        ]
        if self.slot_hook == "remove":
            prog += hook
        prog += [
            Note("kvm_free_memslot: gfn_write_track freed",
                 self.kat(f"{_KVM_MAIN}:kvm_commit_memory_region")),
            Unlock("mutex_unlock(&kvm->slots_lock)", setm, lock=SLOTS_LOCK),
        ]
        return prog

    def detach(self) -> list:
        """``intel_vgpu_close_device`` (kvmgt.c, v6.5 and v6.6): ``intel_gvt_release_vgpu``
        (gvt/vgpu.c: cleans workloads under ``vgpu_lock``; whether that already tears down
        GTT shadows is UNCONFIRMED, spec section 8, so it touches no ptable entry here), then
        ``kvm_page_track_unregister_notifier`` (page_track.c: ``hlist_del_rcu`` under
        ``write_lock(mmu_lock)``, then ``synchronize_srcu(&head->track_srcu)``), then
        ``kvmgt_protect_table_destroy`` -- which frees every entry with no lock."""
        rel = self.kat("drivers/gpu/drm/i915/gvt/vgpu.c:intel_gvt_release_vgpu")
        unreg = self.kat(f"{_PT}:kvm_page_track_unregister_notifier")
        return [
            Lock("mutex_lock(&vgpu->vgpu_lock)", rel, lock=VGPU_LOCK),
            Unlock("mutex_unlock(&vgpu->vgpu_lock)", rel, lock=VGPU_LOCK),
            Lock("write_lock(&kvm->mmu_lock)", unreg, lock=MMU_LOCK),
            NotifierDel("hlist_del_rcu(&n->node)", unreg),
            Unlock("write_unlock(&kvm->mmu_lock)", unreg, lock=MMU_LOCK),
            SyncSrcuStart("synchronize_srcu(&head->track_srcu)", unreg, domain=TRACK_SRCU),
            SyncSrcuWait("  … grace period over", unreg, domain=TRACK_SRCU),
            HashDestroy("kvmgt_protect_table_destroy: hash_del + kfree all",
                        self.kat(f"{_KVMGT}:kvmgt_protect_table_destroy")),
        ]


# ---------------------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scenario:
    """Named threads plus the initial ptable (gfns in ``hash_add`` order) and memslots."""

    name: str
    doc: str
    build: object               # (_Gen) -> [(thread name, items), ...]
    ptable: tuple = (GFN,)
    slots: int = 1
    slot_of: tuple = ()         # (gfn, memslot) pairs; gfns not listed are in slot 0


def _write_vs_unshadow(g: _Gen):
    return [("vcpu0", g.vcpu_write(GFN, slot=0)), ("gvt", g.gtt_unshadow(GFN))]


def _write_vs_remove_region(g: _Gen):
    return [("vcpu0", g.vcpu_write(GFN, slot=0)),
            ("memslot", g.memslot_delete(slot=1, gfns=[NEIGHBOUR]))]


def _write_same_slot_vs_remove_region(g: _Gen):
    return [("vcpu0", g.vcpu_write(NEIGHBOUR, slot=1)),
            ("memslot", g.memslot_delete(slot=1, gfns=[NEIGHBOUR]))]


def _write_vs_detach(g: _Gen):
    return [("vcpu0", g.vcpu_write(GFN, slot=0)), ("close", g.detach())]


def _two_vcpus(g: _Gen):
    return [("vcpu0", g.vcpu_write(GFN, slot=0)), ("vcpu1", g.vcpu_write(NEIGHBOUR, slot=0))]


def _two_vcpus_vs_unshadow(g: _Gen):
    return [("vcpu0", g.vcpu_write(GFN, slot=0)), ("vcpu1", g.vcpu_write(NEIGHBOUR, slot=0)),
            ("gvt", g.gtt_unshadow(GFN))]


def _write_vs_unshadow_vs_remove_region(g: _Gen):
    return [("vcpu0", g.vcpu_write(GFN, slot=0)), ("gvt", g.gtt_unshadow(NEIGHBOUR)),
            ("memslot", g.memslot_delete(slot=1, gfns=[NEIGHBOUR]))]


SCENARIOS = {s.name: s for s in (
    Scenario("write_vs_unshadow",
             "a vCPU's trapped write to a shadowed page table vs GVT unshadowing that page "
             "(intel_vgpu_unregister_page_track -> intel_gvt_page_track_remove)",
             _write_vs_unshadow),
    Scenario("write_vs_remove_region",
             "a vCPU write to gfn 0x1000 (slot 0) vs KVM_SET_USER_MEMORY_REGION deleting slot 1, "
             "whose shadowed gfn 0x2000 shares the ptable bucket (KVMGT's slot hook frees it)",
             _write_vs_remove_region, ptable=(GFN, NEIGHBOUR), slots=2,
             slot_of=((NEIGHBOUR, 1),)),
    Scenario("write_same_slot_vs_remove_region",
             "a vCPU write into the slot being deleted: kvm->srcu makes it safe even unlocked",
             _write_same_slot_vs_remove_region, ptable=(GFN, NEIGHBOUR), slots=2,
             slot_of=((NEIGHBOUR, 1),)),
    Scenario("write_vs_detach",
             "a vCPU write vs closing the vGPU (unregister notifier, synchronize_srcu, "
             "kvmgt_protect_table_destroy)", _write_vs_detach),
    Scenario("two_vcpus",
             "two vCPUs writing two shadowed page tables in one ptable bucket; either handler "
             "may re-enter add/remove", _two_vcpus, ptable=(NEIGHBOUR, GFN)),
    Scenario("two_vcpus_vs_unshadow",
             "three threads: both vCPUs write while GVT unshadows the first one's page",
             _two_vcpus_vs_unshadow, ptable=(NEIGHBOUR, GFN)),
    Scenario("write_vs_unshadow_vs_remove_region",
             "three threads: a vCPU write to 0x1000, GVT unshadowing 0x2000 and the DELETE of "
             "0x2000's slot (remove_region takes vgpu_lock under slots_lock)",
             _write_vs_unshadow_vs_remove_region, ptable=(GFN, NEIGHBOUR), slots=2,
             slot_of=((NEIGHBOUR, 1),)),
)}
DEFAULT_SCENARIO = "write_vs_unshadow"


def scenarios() -> dict[str, str]:
    """Scenario name -> one-line description."""
    return {n: s.doc for n, s in SCENARIOS.items()}


# ---------------------------------------------------------------------------------------
# The explorer
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WitnessStep:
    """One row of a witness: who ran which step, the kernel function it mirrors, and the
    locks each thread holds afterwards (for the swimlane figure)."""

    thread: str
    text: str
    where: str
    held: dict                  # thread -> tuple of lock names held after this step
    failing: bool = False
    sections: dict = dataclasses.field(default_factory=dict)   # thread -> open SRCU domains


@dataclass
class RaceResult:
    """What :func:`explore` found for one lock design and scenario.

    ``schedules`` counts the distinct complete interleavings (maximal paths from the initial
    state to a finished, failing or deadlocked end) of the explored state graph; ``states``
    the distinct states; ``failures`` maps a bug kind to how many schedules end in it.
    ``witness`` is a shortest failing interleaving as ``[(thread, step), ...]`` rows (the last
    row is the failing step or, for a deadlock, the blocked acquisitions), or None if safe."""

    lock: str
    scenario: str
    verdict: str
    schedules: int
    states: int
    transitions: int
    threads: tuple
    failures: dict
    message: str | None
    witness_detail: list | None
    seconds: float
    srcu: bool = True
    slot_hook: str = ""
    lock_order: tuple = ()      # (held, then taken) lock-class pairs seen on any schedule
    inversions: tuple = ()      # lockdep's "possible circular locking dependency" messages

    @property
    def witness(self):
        if self.witness_detail is None:
            return None
        return [(s.thread, s.text) for s in self.witness_detail]

    @property
    def failing_schedules(self) -> int:
        return sum(self.failures.values())

    def table(self, where: bool = True) -> str:
        """The witness as a per-thread table: one column per thread, one row per step."""
        if self.witness_detail is None:
            return (f"{self.scenario} / lock={self.lock}: safe — no failing interleaving in "
                    f"{self.schedules:,} schedules ({self.states:,} states)")
        names = list(self.threads)
        widths = {n: max([len(n)] + [len(s.text) for s in self.witness_detail
                                     if s.thread == n]) for n in names}
        head = ["#".rjust(3)] + [n.ljust(widths[n]) for n in names]
        if where:
            head.append("mirrors")
        lines = [" | ".join(head).rstrip(), "-+-".join("-" * len(h) for h in head)]
        for i, s in enumerate(self.witness_detail, 1):
            num = ("!" if s.failing else str(i)).rjust(3)
            cells = [num] + [(s.text if n == s.thread else "").ljust(widths[n]) for n in names]
            if where:
                cells.append(s.where)
            lines.append(" | ".join(cells).rstrip())
        return "\n".join(lines)

    def __str__(self) -> str:
        head = (f"kvmpt.race: scenario={self.scenario} lock={self.lock} "
                f"(slot hook {self.slot_hook}{'' if self.srcu else ', srcu=False'})\n"
                f"verdict: {self.verdict}  —  {self.schedules:,} schedules, {self.states:,} "
                f"states, {self.transitions:,} transitions")   # no timing: outputs stay stable
        if self.failures:
            head += "\nfailing schedules: " + ", ".join(
                f"{k} {v:,}" for k, v in sorted(self.failures.items()))
        if self.message:
            head += f"\n{self.message}"
        for inv in self.inversions:
            head += f"\nlockdep: {inv}"
        return head + "\n\n" + self.table()

    def _repr_pretty_(self, p, cycle):  # IPython
        p.text(str(self))

    def _repr_html_(self) -> str:  # Jupyter: the same table, as HTML
        from html import escape
        failing = ", ".join(f"{k} {v:,}" for k, v in sorted(self.failures.items()))
        head = (f"<p><b>{escape(self.scenario)}</b>, lock=<code>{escape(self.lock)}</code>: "
                f"<b>{escape(self.verdict)}</b> — {self.schedules:,} schedules, "
                f"{self.states:,} states" + (f"; failing: {escape(failing)}" if failing else "")
                + "</p>")
        if self.witness_detail is None:
            return head
        names = list(self.threads)
        rows = ["<tr><th>#</th>" + "".join(f"<th>{escape(n)}</th>" for n in names)
                + "<th>mirrors</th></tr>"]
        for i, st in enumerate(self.witness_detail, 1):
            style = ' style="color:#c0392b;font-weight:bold"' if st.failing else ""
            cells = "".join(f"<td{style if n == st.thread else ''}>"
                            f"{escape(st.text) if n == st.thread else ''}</td>" for n in names)
            rows.append(f"<tr><td>{'!' if st.failing else i}</td>{cells}"
                        f"<td><small>{escape(st.where)}</small></td></tr>")
        msg = f"<p>{escape(self.message)}</p>" if self.message else ""
        return head + msg + "<table>" + "".join(rows) + "</table>"


class _Model:
    """Programs, initial state and the successor relation of one (design, scenario)."""

    def __init__(self, lock: str, scenario: str, slot_hook: str, srcu: bool):
        sc = SCENARIOS[scenario]
        gen = _Gen(lock, slot_hook, dict(sc.slot_of))
        threads = sc.build(gen)
        self.names = tuple(n for n, _ in threads)
        self.progs = tuple(_assemble(items) for _, items in threads)
        self.cx = Ctx(self.names, srcu)
        self.order = Lockdep()
        w = World(threads=tuple(Thread() for _ in threads), nodes=(), heads=(None,) * NR_BUCKETS,
                  radix=frozenset(sc.ptable), registered=True, slots=("valid",) * sc.slots)
        for gfn in sc.ptable:
            w = _hash_add(w, gfn)
        for tid in range(len(threads)):
            w = self.settle(w, tid)
        self.init = w

    def settle(self, w: World, tid: int) -> World:
        """Run the thread's thread-local steps (jumps, lockdep asserts) eagerly."""
        prog = self.progs[tid]
        while w.threads[tid].pc < len(prog) and prog[w.threads[tid].pc].local:
            w = prog[w.threads[tid].pc].run_local(w, tid, self.cx)
        return w

    def done(self, w: World) -> bool:
        return all(t.pc >= len(p) for t, p in zip(w.threads, self.progs))

    def expand(self, w: World):
        """-> (moves, deadlock): moves = [(tid, Ok|Bug)], deadlock = message or None."""
        moves, waits = [], {}
        for tid, (t, prog) in enumerate(zip(w.threads, self.progs)):
            if t.pc >= len(prog):
                continue
            r = prog[t.pc].attempt(w, tid, self.cx)
            if isinstance(r, Blocked):
                waits[tid] = r
            else:
                moves.append((tid, r))
        cycle = _cycle({t: b.waits_for for t, b in waits.items()})
        if not cycle and not moves and not self.done(w):
            cycle = sorted(waits)          # stuck without a cycle: report it all the same
        if cycle:
            return moves, cycle, [(t, self.progs[t][w.threads[t].pc].text.strip(), waits[t].why)
                                  for t in cycle]
        return moves, None, None

    def record_order(self, w: World, tid: int, step: "Lock") -> None:
        """Feed one successful acquisition to a Lockdep that keeps the lock-order graph of
        the whole exploration (lock classes, as lockdep does), for ``lock_order`` and its
        "possible circular locking dependency" reports."""
        ctx = self.names[tid]
        self.order.held = {ctx: list(w.threads[tid].held)}
        self.order.acquire(ctx, step.lock, step.mode)

    def step(self, w: World, tid: int, w2: World) -> World:
        return self.settle(w2, tid)

    def held(self, w: World) -> dict:
        return {n: tuple(l.name for l, _ in t.held) for n, t in zip(self.names, w.threads)}

    def sections(self, w: World) -> dict:
        return {n: tuple(dict.fromkeys(d for d, _ in t.srcu))
                for n, t in zip(self.names, w.threads)}

    def row(self, w_before: World, w_after: World, tid: int, text: str,
            failing: bool = False) -> "WitnessStep":
        return WitnessStep(self.names[tid], text,
                           self.progs[tid][w_before.threads[tid].pc].where,
                           self.held(w_after), failing, self.sections(w_after))


def _cycle(edges: dict) -> list | None:
    """A cycle in the wait-for graph among blocked threads, or None.  A waiter needs *all*
    the threads it waits for (every holder, every open SRCU reader), so one cycle through any
    of them is a deadlock."""
    colour = {}

    def dfs(node, path):
        colour[node] = 1
        path.append(node)
        for nxt in sorted(edges[node]):
            if nxt not in edges:          # runnable or finished: can still make progress
                continue
            if colour.get(nxt) == 1:
                return path[path.index(nxt):]
            if nxt not in colour:
                found = dfs(nxt, path)
                if found:
                    return found
        colour[node] = 2
        path.pop()
        return None

    for start in sorted(edges):
        if start not in colour:
            found = dfs(start, [])
            if found:
                return found
    return None


def _check_args(lock, scenario, slot_hook):
    if lock not in LOCKS:
        raise ValueError(f"lock={lock!r} is not one of {', '.join(map(repr, LOCKS))}")
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario={scenario!r} is not one of "
                         f"{', '.join(map(repr, SCENARIOS))}")
    if slot_hook is None:   # what the kernel of that design had
        slot_hook = "flush" if lock in ("none", "mmu_lock") else "remove"
    if slot_hook not in SLOT_HOOKS:
        raise ValueError(f"slot_hook={slot_hook!r} is not one of 'flush', 'remove'")
    return slot_hook


def _resolve(lock, design, slot_hook):
    if design is not None:
        from .design import Design
        d = Design.coerce(design)
        return d.kvmgt_lock, slot_hook or d.slot_hook
    return lock, slot_hook


def explore(lock: str = "vgpu_lock", scenario: str = DEFAULT_SCENARIO, *,
            slot_hook: str | None = None, srcu: bool = True, design=None,
            max_states: int = 500_000) -> RaceResult:
    """Enumerate every interleaving of ``scenario``'s threads under lock design ``lock``.

    ``lock``: "none" (v6.5) | "mmu_lock" (rejected) | "gfn_lock" (series v1) |
    "vgpu_lock" (v6.6).  ``scenario``: a key of :data:`SCENARIOS`.  ``slot_hook``: KVMGT's
    memslot hook, "flush" (v6.5) or "remove" (v6.6); by default the one the design's kernel
    had.  ``srcu=False`` is a what-if in which ``synchronize_srcu`` does not wait.  ``design``:
    a :class:`kvmpt.Design` (or preset name) to take ``lock`` and ``slot_hook`` from (it
    overrides ``lock``; an explicit ``slot_hook`` still wins).

    The verdict is the kind of the shortest failing interleaving (ties: use-after-free,
    sleep-in-atomic, deadlock), or "safe" when no interleaving fails."""
    lock, slot_hook = _resolve(lock, design, slot_hook)
    slot_hook = _check_args(lock, scenario, slot_hook)
    t0 = time.perf_counter()
    m = _Model(lock, scenario, slot_hook, srcu)

    index = {m.init: 0}
    states = [m.init]
    parent = [None]              # sid -> (parent sid, tid, row text)
    succ = []                    # sid -> [child sid | ("end", outcome)]
    bugs = []                    # (length, kind order, seq, kind, sid, tid, Bug|blocked rows)
    depth = [0]
    queue = deque([0])
    transitions = 0
    while queue:
        sid = queue.popleft()
        w = states[sid]
        moves, dead, why = m.expand(w)
        out = []
        succ.append(out)          # BFS pops in sid order, so succ[sid] lines up
        if dead is not None:
            bugs.append((depth[sid], 2, len(bugs), "deadlock", sid, None, why))
            out.append(("end", "deadlock"))
            continue
        if not moves:
            out.append(("end", "safe"))
            continue
        for tid, r in moves:
            if isinstance(r, Bug):
                transitions += 1
                bugs.append((depth[sid] + 1, _BUGS.index(r.kind), len(bugs), r.kind, sid, tid, r))
                out.append(("end", r.kind))
                continue
            step = m.progs[tid][w.threads[tid].pc]
            if isinstance(step, Lock):
                m.record_order(w, tid, step)
            for w2, text in r.outcomes:
                transitions += 1
                w2 = m.step(w, tid, w2)
                cid = index.get(w2)
                if cid is None:
                    cid = index[w2] = len(states)
                    states.append(w2)
                    parent.append((sid, tid, text))
                    depth.append(depth[sid] + 1)
                    queue.append(cid)
                    if len(states) > max_states:
                        raise RuntimeError(f"explore({lock!r}, {scenario!r}): more than "
                                           f"{max_states:,} states")
                out.append(cid)

    outcomes = _count_paths(succ)
    root = outcomes[0]
    failures = {k: v for k, v in root.items() if k != "safe" and v}
    verdict, message, detail = "safe", None, None
    if bugs:
        length, _, _, kind, sid, tid, info = min(bugs)
        verdict = kind
        detail = _witness(m, states, parent, sid)
        if kind == "deadlock":
            message = "deadlock: " + "; ".join(f"{m.names[t]} waits in {text}: {why}"
                                               for t, text, why in info)
            for t, text, why in info:
                detail.append(m.row(states[sid], states[sid], t, f"{text} — blocked: {why}",
                                    failing=True))
        else:
            message = f"{kind}: {info.message}"
            detail.append(m.row(states[sid], states[sid], tid, info.text, failing=True))
    return RaceResult(lock=lock, scenario=scenario, verdict=verdict, schedules=sum(root.values()),
                      states=len(states), transitions=transitions, threads=m.names,
                      failures=failures, message=message, witness_detail=detail,
                      seconds=time.perf_counter() - t0, srcu=srcu, slot_hook=slot_hook,
                      lock_order=tuple(sorted(m.order.order)),
                      inversions=tuple(sorted({r.message for r in m.order.reports
                                               if r.kind == "lock-order"})))


def _witness(m: _Model, states, parent, sid) -> list:
    rows = []
    while parent[sid] is not None:
        psid, tid, text = parent[sid]
        rows.append(m.row(states[psid], states[sid], tid, text))
        sid = psid
    return rows[::-1]


def _count_paths(succ) -> list:
    """Per state, how many maximal paths from it end in each outcome (iterative post-order;
    the state graph is acyclic because every step advances a program or a chain walk)."""
    memo = [None] * len(succ)
    for root in range(len(succ)):
        if memo[root] is not None:
            continue
        stack = [(root, False)]
        while stack:
            sid, ready = stack.pop()
            if memo[sid] is not None:
                continue
            kids = [c for c in succ[sid] if not isinstance(c, tuple)]
            if not ready:
                stack.append((sid, True))
                stack.extend((c, False) for c in kids if memo[c] is None)
                continue
            acc = Counter()
            for c in succ[sid]:
                if isinstance(c, tuple):
                    acc[c[1]] += 1
                else:
                    if memo[c] is None:
                        raise RuntimeError("state graph has a cycle")
                    acc.update(memo[c])
            memo[sid] = acc
    return memo


# ---------------------------------------------------------------------------------------
# Random schedules: the cross-check
# ---------------------------------------------------------------------------------------
@dataclass
class SampleResult:
    """Outcome counts of ``runs`` random schedules, and the shortest failing one seen."""

    lock: str
    scenario: str
    runs: int
    seed: int
    outcomes: dict              # verdict -> number of runs
    witness: list | None        # [(thread, step), ...] of the shortest failing run
    witness_kind: str | None

    @property
    def kinds(self) -> set:
        return {k for k in self.outcomes if k != "safe"}


def sample(lock: str = "vgpu_lock", scenario: str = DEFAULT_SCENARIO, *, runs: int = 500,
           seed: int = 0, slot_hook: str | None = None, srcu: bool = True,
           design=None) -> SampleResult:
    """Run ``runs`` random schedules (uniform choice of a runnable thread, then of a branch)
    without state hashing.  Same seed, same result.  Finds bugs by sampling; it proves
    nothing when it finds none."""
    lock, slot_hook = _resolve(lock, design, slot_hook)
    slot_hook = _check_args(lock, scenario, slot_hook)
    m = _Model(lock, scenario, slot_hook, srcu)
    rng = random.Random(seed)
    outcomes, best, best_kind = Counter(), None, None
    for _ in range(runs):
        w, rows, kind = m.init, [], "safe"
        while True:
            moves, dead, why = m.expand(w)
            if dead is not None:
                kind = "deadlock"
                rows += [(m.names[t], f"{text} — blocked: {y}") for t, text, y in why]
                break
            if not moves:
                break
            tid, r = moves[rng.randrange(len(moves))]
            if isinstance(r, Bug):
                kind = r.kind
                rows.append((m.names[tid], r.text))
                break
            w2, text = r.outcomes[rng.randrange(len(r.outcomes))]
            rows.append((m.names[tid], text))
            w = m.step(w, tid, w2)
        outcomes[kind] += 1
        if kind != "safe" and (best is None or len(rows) < len(best)):
            best, best_kind = rows, kind
    return SampleResult(lock, scenario, runs, seed, dict(outcomes), best, best_kind)


def matrix(scenario_names=None, locks=LOCKS, **kw) -> dict:
    """``{(lock, scenario): RaceResult}`` for every pair (all scenarios by default)."""
    names = list(scenario_names or SCENARIOS)
    return {(lk, sc): explore(lk, sc, **kw) for sc in names for lk in locks}
