"""Steps on kernel objects: KVMGT's ``ptable``, GVT's ``page_track_tree``, KVM's notifier
list, memslots and write-track counts.  ``v`` is the vGPU (= VM) whose object a step touches."""
from __future__ import annotations

from dataclasses import dataclass

from kvmpt.kernel.lockdep import MMU_LOCK, AnyLock
from kvmpt.race import state as S
from kvmpt.race.state import CHILD, GFN
from kvmpt.race.steps import Bug, Ok, Step, lockdep_of, sleep_bug


@dataclass(frozen=True)
class Probe(Step):
    """``hash_for_each_possible``: read the bucket head into the walk cursor ``p``."""

    gfn: int = GFN
    v: int = 0

    def attempt(self, w, tid, cx):
        head = w.heads[self.v][S.bucket(self.gfn)]
        if head is None:   # empty bucket: not found, skip the node reads
            return self._missed(w, tid, cx, f"{self.text} → empty bucket, not found")
        return Ok([(self._next(w, tid, p=head),
                    f"{self.text} → p = node({w.nodes[head][1]:#x})")])

    def _missed(self, w, tid, cx, text):
        """The walk ends without a match: a missed write if the entry is live right now."""
        if S.live(w, self.v, self.gfn):
            return Bug(S.MISSED, f"{text} — but {self.gfn:#x} is in ptable",
                       f"{cx.names[tid]}'s lockless ptable walk ends without {self.gfn:#x} "
                       f"although its entry is live: the trapped write is ignored and GVT's "
                       f"shadow page table goes stale [{self.where}]")
        return Ok([(self._jump(w, tid, p=None, found=False), text)])


@dataclass(frozen=True)
class ReadNode(Probe):
    """One iteration of ``__kvmgt_protect_table_find``: read ``p->gfn`` and ``p->hnode.next``.
    Reading a freed node is the use-after-free; reading ``next == NULL`` from a node another
    thread has just unlinked (``hlist_del_init``) ends the walk early."""

    def attempt(self, w, tid, cx):
        nid = w.threads[tid].p
        _, ngfn, nxt, alive, linked = w.nodes[nid]
        if not alive:
            return Bug(S.UAF, f"read p->gfn of node({ngfn:#x}) — already kfree'd",
                       f"{cx.names[tid]} reads node({ngfn:#x}) of the ptable chain after "
                       f"another thread's hash_del + kfree: use-after-free [{self.where}]")
        if ngfn == self.gfn:
            return Ok([(self._next(w, tid, p=None, found=True),
                        f"read p->gfn of node({ngfn:#x}) → match")])
        if nxt is None:
            how = "end of chain" if linked else "next = NULL (unlinked by hash_del)"
            return self._missed(w, tid, cx, f"read p->gfn of node({ngfn:#x}) → {how}, "
                                            f"not found")
        return Ok([(S.set_thread(w, tid, p=nxt),
                    f"read p->gfn of node({ngfn:#x}) → p = next, node({w.nodes[nxt][1]:#x})")])


@dataclass(frozen=True)
class FindLocked(Step):
    """``kvmgt_gfn_is_write_protected`` by a caller that holds the table's lock: the whole
    chain walk is one step (no remover can run concurrently; a freed node is still caught)."""

    gfn: int = GFN
    v: int = 0

    def attempt(self, w, tid, cx):
        for nid in S.chain(w, self.v, self.gfn):
            _, ngfn, _, alive, _ = w.nodes[nid]
            if not alive:
                return Bug(S.UAF, f"{self.text}: node({ngfn:#x}) already kfree'd",
                           f"{cx.names[tid]} walks a freed ptable node [{self.where}]")
            if ngfn == self.gfn:
                return Ok([(self._next(w, tid, found=True), f"{self.text} → yes")])
        return Ok([(self._next(w, tid, found=False), f"{self.text} → no")])


@dataclass(frozen=True)
class HashAdd(Step):
    """``kvmgt_protect_table_add``: ``kzalloc(GFP_ATOMIC)`` (does not sleep) + ``hash_add``
    (one store publishes the node at the bucket head)."""

    gfn: int = GFN
    v: int = 0

    def attempt(self, w, tid, cx):
        if S.find_linked(w, self.v, self.gfn) is not None:
            return Ok([(self._next(w, tid), f"{self.text} → already present")])
        return Ok([(self._next(S.hash_add(w, self.v, self.gfn), tid), self.text)])


@dataclass(frozen=True)
class HashDel(Step):
    """``kvmgt_protect_table_del``, first half: ``p = __kvmgt_protect_table_find()`` then
    ``hash_del(&p->hnode)`` (``hlist_del_init``); jumps to ``label`` when not present."""

    gfn: int = GFN
    v: int = 0

    def attempt(self, w, tid, cx):
        nid = S.find_linked(w, self.v, self.gfn)
        if nid is None:
            return Ok([(self._jump(w, tid, p=None), f"{self.text} → not present")])
        return Ok([(self._next(S.hash_unlink(w, nid), tid, p=nid), self.text)])


@dataclass(frozen=True)
class KFree(Step):
    """``kvmgt_protect_table_del``, second half: ``kfree(p)``."""

    def attempt(self, w, tid, cx):
        return Ok([(self._next(S.kfree(w, w.threads[tid].p), tid, p=None), self.text)])


@dataclass(frozen=True)
class HashDestroy(Step):
    """``kvmgt_protect_table_destroy``: ``hash_for_each_safe`` + ``hash_del`` + ``kfree`` of
    every entry, as one step: it runs after ``synchronize_srcu(&head->track_srcu)``, when no
    walker can be left (with ``srcu=False`` the use-after-free is found without finer steps)."""

    v: int = 0

    def attempt(self, w, tid, cx):
        for b in range(S.NR_BUCKETS):
            while w.heads[self.v][b] is not None:
                nid = w.heads[self.v][b]
                w = S.kfree(S.hash_unlink(w, nid), nid)
        return Ok([(self._next(w, tid), self.text)])


@dataclass(frozen=True)
class WriteTrack(Step):
    """KVM's write-track count change for a gfn: must hold the VM's ``mmu_lock`` for write
    (``lockdep_assert_held_write`` in ``__kvm_write_track_{add,remove}_gfn``, v6.6); a
    program that does not is a model error, not a verdict."""

    lock: AnyLock = MMU_LOCK

    def attempt(self, w, tid, cx):
        if not lockdep_of(w, cx).assert_held_write(cx.names[tid], self.lock, self.where):
            raise AssertionError(f"{cx.names[tid]}: {self.lock.name} not held for write in "
                                 f"{self.where}")
        return Ok([(self._next(w, tid), self.text)])


@dataclass(frozen=True)
class RadixLookup(Step):
    """``intel_vgpu_find_page_track``: is the gfn in GVT's ``page_track_tree``?"""

    gfn: int = GFN
    v: int = 0

    def attempt(self, w, tid, cx):
        hit = (self.v, self.gfn) in w.radix
        return Ok([(self._next(w, tid, tracked=hit),
                    f"{self.text} → {'found' if hit else '-ENXIO'}")])


@dataclass(frozen=True)
class RadixDelete(Step):
    """``intel_vgpu_unregister_page_track``: ``radix_tree_delete`` + ``kfree(track)``."""

    gfn: int = GFN
    v: int = 0

    def attempt(self, w, tid, cx):
        hit = (self.v, self.gfn) in w.radix
        return Ok([(self._next(w._replace(radix=w.radix - {(self.v, self.gfn)}), tid,
                               tracked=hit),
                    self.text if hit else f"{self.text} → not registered")])


@dataclass(frozen=True)
class RadixInsert(Step):
    """``intel_vgpu_register_page_track``: ``kzalloc(GFP_KERNEL)`` (may sleep) + insert."""

    gfn: int = CHILD
    v: int = 0

    def attempt(self, w, tid, cx):
        bug = sleep_bug(w, tid, cx, self.text, self.where)
        if bug:
            return bug
        return Ok([(self._next(w._replace(radix=w.radix | {(self.v, self.gfn)}), tid),
                    self.text)])


@dataclass(frozen=True)
class NotifierWalk(Step):
    """``hlist_for_each_entry_srcu(n, &head->track_notifier_list, ...)``: is KVMGT's node on
    VM ``v``'s list?  Jumps to ``label`` when it is not."""

    v: int = 0

    def attempt(self, w, tid, cx):
        if w.registered[self.v]:
            return Ok([(self._next(w, tid), f"{self.text} → KVMGT's node")])
        return Ok([(self._jump(w, tid), f"{self.text} → list empty, skip")])


@dataclass(frozen=True)
class NotifierDel(Step):
    """``hlist_del_rcu(&n->node)`` under ``write_lock(&kvm->mmu_lock)``."""

    v: int = 0
    lock: AnyLock = MMU_LOCK

    def attempt(self, w, tid, cx):
        if not lockdep_of(w, cx).assert_held_write(cx.names[tid], self.lock, self.where):
            raise AssertionError(f"{cx.names[tid]}: {self.lock.name} not held in {self.where}")
        reg = list(w.registered)
        reg[self.v] = False
        return Ok([(self._next(w._replace(registered=tuple(reg)), tid), self.text)])


@dataclass(frozen=True)
class SlotUsable(Step):
    """``kvm_vcpu_write_guest`` in ``emulator_write_phys``: the write lands (and
    ``kvm_page_track_write`` runs) only if the gfn's memslot is valid; an INVALID or deleted
    slot makes it fail, and the notifier is not called.  Jumps to ``label`` on failure."""

    slot: int = 0
    vm: int = 0

    def attempt(self, w, tid, cx):
        st = w.slots[self.vm][self.slot]
        if st == "valid":
            return Ok([(self._next(w, tid), f"{self.text} → slot {self.slot} valid, written")])
        return Ok([(self._jump(w, tid), f"{self.text} → slot {self.slot} {st}: fails, "
                                        f"no track_write")])


@dataclass(frozen=True)
class SlotLookup(Step):
    """``gfn_to_memslot(kvm, gfn)`` under ``kvm->srcu``: NULL once the slot is deleted (an
    INVALID slot is still returned).  Jumps to ``label`` on NULL (the caller's -EINVAL)."""

    slot: int = 0
    vm: int = 0

    def attempt(self, w, tid, cx):
        if w.slots[self.vm][self.slot] != "gone":
            return Ok([(self._next(w, tid), f"{self.text} → slot {self.slot}")])
        return Ok([(self._jump(w, tid), f"{self.text} → NULL: -EINVAL")])


@dataclass(frozen=True)
class SlotSet(Step):
    """``kvm_swap_active_memslots``: publish the slot as INVALID (S2b) or deleted (S5)."""

    slot: int = 1
    state: str = "invalid"
    vm: int = 0

    def attempt(self, w, tid, cx):
        slots = [list(s) for s in w.slots]
        slots[self.vm][self.slot] = self.state
        return Ok([(self._next(w._replace(slots=tuple(tuple(s) for s in slots)), tid),
                    self.text)])
