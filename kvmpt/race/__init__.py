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
    r.verdict, r.states, r.failing_states    # distinct behaviours, not orderings
    print(r)                                 # summary + the witness as a per-thread table
    r.witness                                # [(thread, step), ...], None when safe
    explore("vgpu_lock", "write_vs_remove_region").verdict            # 'safe'
    explore("none", "write_vs_detach", srcu=False).verdict            # what-if, see below
    sample("none", runs=1000, seed=1).outcomes                        # random schedules
    print(explore("vgpu_lock", "two_vgpus_reclaim").email())          # for a list reply
    explore("vgpu_lock", "two_vgpus_reclaim", lockdep=False).verdict  # 'use-after-free'

``scenarios()`` lists the scenarios; ``kvmpt.review.figures.race.witness_swimlane(r)`` draws a
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
  :class:`kvmpt.kernel.lockdep.Lockdep` exactly as lockdep would, whether or not the mutex is
  contended;
* **deadlock** -- a cycle in the wait-for graph (a thread waiting for a lock held by, or an
  SRCU reader that is, a thread in the cycle), including the one-thread cycle of taking a
  non-recursive mutex twice (lockdep's "possible recursive locking detected").
* **missed-write** -- a lockless ptable walk that ends without the written gfn although its
  entry is live: ``hash_del`` is ``hlist_del_init``, which NULLs the unlinked node's
  ``next``, so a walker standing on it stops early and the trapped write is ignored;
* **not-held** -- ``lockdep_assert_held`` on a lock instance the thread does not hold
  (a WARN; ``explore(..., lockdep=False)`` compiles it out, as production kernels do);

The verdict is the first reachable kind in that order (memory safety first, the silent miss
last); breadth-first order makes the witness a shortest failing interleaving of that kind
(``explore(..., witness="missed-write")`` asks for another reachable kind's).
Local steps (jumps on a thread's own locals) implement ``run_local(thread)`` and cannot see
the world, so the reduction's precondition holds by construction (:mod:`kvmpt.race.steps`).

Locks are instances (``kvmpt.kernel.lockdep.LockInstance``): in the two-vGPU scenarios each vGPU
has its own ``vgpu_lock``, ``ptable`` and ``page_track_tree``, each VM its own ``mmu_lock``
and SRCU domains.  ``two_vgpus_reclaim`` is a finding beyond the thread (see
:mod:`kvmpt.race.threads`, ``Programs.reclaim``).  Every program is also exported to Promela
and checked with SPIN (:mod:`kvmpt.race.promela`).

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
buckets (gvt.h: ``struct hlist_head ptable[NR_BKT]``, ``NR_BKT (1 << 18)``, hashed with
``hash_64``; spec section 9); the model uses one, so gfns that share a bucket in the kernel
share it here.

Not modelled, on purpose: KVM's own notifier (v6.5) and ``kvm_mmu_track_write`` (v6.6) --
they touch no KVMGT state and take ``mmu_lock`` only after KVMGT's callback returned;
``slots_arch_lock`` (no other thread here takes it); the ``hlist_empty`` fast path of
``kvm_page_track_write`` (it only skips work; the list walk inside the SRCU section decides);
the queued rwlock's writer fairness.  A ``hash_add`` is one atomic step, so the model does not
look for torn reads of a half-inserted node.

Model-only: this module never imports plotly (``kvmpt.review.figures.race`` draws a witness).
"""
from __future__ import annotations

from kvmpt.race.explorer import Model, check_args, count_paths, explore, matrix, resolve, sample, wait_cycle
from kvmpt.race.objects import (FindLocked, HashAdd, HashDel, HashDestroy, KFree, Probe, ReadNode,
                      WriteTrack)
from kvmpt.race.programs import KERNEL, LOCKS, SLOT_HOOKS, VERSION, Gen, Label, assemble
from kvmpt.race.result import RaceResult, SampleResult, WitnessStep
from kvmpt.race.scenarios import DEFAULT_SCENARIO, SCENARIOS, THREAD_SCENARIOS, Scenario, scenarios
from kvmpt.race.state import (CHILD, GFN, KVM_SRCU, NEIGHBOUR, NR_BUCKETS, TRACK_SRCU, VERDICTS, Thread,
                    World)
from kvmpt.race.steps import (AssertHeld, Blocked, Bug, Choose, Ctx, Goto, If, IfNot, Lock, Note, Ok,
                    SrcuReadLock, SrcuReadUnlock, Step, SyncSrcuStart, SyncSrcuWait, Unlock)
from kvmpt.race.threads import Programs

__all__ = ["explore", "sample", "matrix", "scenarios", "RaceResult", "SampleResult",
           "LOCKS", "VERDICTS", "SCENARIOS", "DEFAULT_SCENARIO", "THREAD_SCENARIOS",
           # the building blocks, for tests and for writing a new scenario
           "Model", "Programs", "Gen", "Label", "assemble", "Scenario", "WitnessStep",
           "check_args", "count_paths", "resolve", "wait_cycle", "KERNEL", "VERSION",
           "SLOT_HOOKS", "CHILD", "GFN", "NEIGHBOUR", "NR_BUCKETS", "KVM_SRCU", "TRACK_SRCU",
           "Thread", "World", "Step", "Ok", "Blocked", "Bug", "Ctx", "Lock", "Unlock",
           "AssertHeld", "SrcuReadLock", "SrcuReadUnlock", "SyncSrcuStart", "SyncSrcuWait",
           "Goto", "If", "IfNot", "Note", "Choose", "Probe", "ReadNode", "FindLocked",
           "HashAdd", "HashDel", "KFree", "HashDestroy", "WriteTrack"]

# names the first, single-module explorer had (tests and notebooks import some of them)
_Model, _cycle, _assemble, _Gen, _count_paths = Model, wait_cycle, assemble, Programs, count_paths
_check_args, _resolve = check_args, resolve
