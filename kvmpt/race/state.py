"""The explorer's explicit state: threads, per-vGPU ``ptable`` chains, GVT trees, memslots.

Everything per vGPU is indexed by the vGPU's number ``v`` (0, 1): KVMGT allows one vGPU per
VM (``intel_vgpu_open_device`` returns -EEXIST for a second, spec section 1.5), so vGPU ``v``
sits in VM ``v``, and its ``ptable``, ``page_track_tree``, notifier node and memslots are that
VM's.  A lock is a :class:`kvmpt.kernel.lockdep.LockInstance` (or a bare class in one-vGPU
scenarios), so two vGPUs' ``vgpu_lock`` are two locks.

A ``ptable`` node is ``(v, gfn, next, alive, linked)``: ``hash_del`` is ``hlist_del_init``
(include/linux/list.h), which stores the predecessor's ``next`` and then sets the node's own
``next`` to NULL (``INIT_HLIST_NODE``) -- ``linked`` becomes False, ``next`` None -- while the
node stays readable until ``kfree`` clears ``alive``.  A lockless walker that already holds a
pointer to the unlinked node therefore reads ``next == NULL`` and stops early: the missed
lookup of :data:`MISSED`.
"""
from __future__ import annotations

from typing import NamedTuple

# SRCU domains (spec section 3.5); per VM, so a domain is (name, vm).
KVM_SRCU = "kvm->srcu"
TRACK_SRCU = "track_srcu"

# Guest frame numbers of the scenarios.  All share the model's single ptable bucket.
GFN = 0x1000         # a guest page-table page GVT shadows; the vCPU writes it
NEIGHBOUR = 0x2000   # another shadowed gfn in the same bucket (second vCPU / deleted slot)
CHILD = 0x1800       # a page-table page the write handler starts shadowing
NR_BUCKETS = 1

#: verdicts, in the order a result reports them when several are reachable: memory safety
#: first, then lockdep's complaints, then the silent miss.
UAF, SLEEP, DEADLOCK, NOT_HELD, MISSED = ("use-after-free", "sleep-in-atomic", "deadlock",
                                          "not-held", "missed-write")
VERDICTS = ("safe", UAF, SLEEP, DEADLOCK, NOT_HELD, MISSED)
BUGS = VERDICTS[1:]


class Thread(NamedTuple):
    """One thread's part of a state: program counter, held locks, open SRCU sections, locals."""

    pc: int = 0
    held: tuple = ()            # ((lock, mode), ...) in acquisition order
    srcu: tuple = ()            # (((domain, vm), n), ...) open read sections
    nsec: int = 0               # read sections opened so far (names the next one)
    wait: frozenset = frozenset()   # synchronize_srcu: the sections its grace period waits for
    p: int | None = None        # hash-walk cursor: the node this thread is about to read
    found: bool = False         # result of the last ptable lookup
    tracked: bool = False       # result of the last page_track_tree lookup


class World(NamedTuple):
    """A whole explicit state; hashable, so interleavings reaching it are merged."""

    threads: tuple
    nodes: tuple                # per allocated kvmgt_pgfn: (v, gfn, next, alive, linked)
    heads: tuple                # per vGPU, per ptable bucket: first node or None
    radix: frozenset            # (v, gfn) in GVT's page_track_tree
    registered: tuple           # per vGPU: KVMGT's node is on its VM's track_notifier_list
    slots: tuple                # per VM, per memslot: "valid" | "invalid" | "gone"


def bucket(gfn: int) -> int:
    """``hash_min(gfn, HASH_BITS(ptable))``, shrunk to the model's bucket count."""
    return gfn % NR_BUCKETS


def chain(w: World, v: int, gfn: int):
    """Node ids of vGPU ``v``'s bucket for ``gfn``, head first."""
    n = w.heads[v][bucket(gfn)]
    while n is not None:
        yield n
        n = w.nodes[n][2]


def live(w: World, v: int, gfn: int) -> bool:
    """Whether vGPU ``v``'s ptable holds a linked, allocated entry for ``gfn``."""
    return any(w.nodes[n][1] == gfn and w.nodes[n][3] for n in chain(w, v, gfn))


def set_thread(w: World, tid: int, **kw) -> World:
    ts = list(w.threads)
    ts[tid] = ts[tid]._replace(**kw)
    return w._replace(threads=tuple(ts))


def _set_head(w: World, v: int, b: int, nid) -> World:
    heads = [list(h) for h in w.heads]
    heads[v][b] = nid
    return w._replace(heads=tuple(tuple(h) for h in heads))


def hash_add(w: World, v: int, gfn: int) -> World:
    """``hash_add(info->ptable, &p->hnode, gfn)``: the new node goes to the bucket head."""
    b = bucket(gfn)
    nid = len(w.nodes)
    w = w._replace(nodes=w.nodes + ((v, gfn, w.heads[v][b], True, True),))
    return _set_head(w, v, b, nid)


def hash_unlink(w: World, nid: int) -> World:
    """``hash_del(&p->hnode)`` = ``hlist_del_init``: the predecessor (bucket head or previous
    node) now points past the node, and the node's own ``next`` becomes NULL."""
    v, gfn, nxt, alive, _ = w.nodes[nid]
    b = bucket(gfn)
    nodes = list(w.nodes)
    if w.heads[v][b] == nid:
        w = _set_head(w, v, b, nxt)
    else:
        for m in chain(w, v, gfn):
            if nodes[m][2] == nid:
                nodes[m] = nodes[m][:2] + (nxt,) + nodes[m][3:]
                break
    nodes[nid] = (v, gfn, None, alive, False)
    return w._replace(nodes=tuple(nodes))


def kfree(w: World, nid: int) -> World:
    """``kfree(p)``: the node's memory is gone (a later read is KASAN's use-after-free)."""
    nodes = list(w.nodes)
    nodes[nid] = nodes[nid][:3] + (False,) + nodes[nid][4:]
    return w._replace(nodes=tuple(nodes))


def find_linked(w: World, v: int, gfn: int):
    """The linked node of ``gfn`` in vGPU ``v``'s table (what a locked find returns), or None."""
    for nid in chain(w, v, gfn):
        if w.nodes[nid][1] == gfn:
            return nid
    return None


def initial(nthreads: int, ptables: dict, nvgpus: int, slots: tuple) -> World:
    """The state before any thread runs: each vGPU's ptable filled in ``hash_add`` order,
    GVT's tree holding the same gfns, every notifier registered, every memslot valid."""
    w = World(threads=tuple(Thread() for _ in range(nthreads)), nodes=(),
              heads=tuple((None,) * NR_BUCKETS for _ in range(nvgpus)),
              radix=frozenset((v, g) for v, gfns in ptables.items() for g in gfns),
              registered=(True,) * nvgpus,
              slots=tuple(("valid",) * n for n in slots))
    for v, gfns in ptables.items():
        for gfn in gfns:
            w = hash_add(w, v, gfn)
    return w
