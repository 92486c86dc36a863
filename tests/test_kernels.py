"""The Numba kernels against the plain-Python model and against ``tests/reference.py``.

Every bulk path of the model runs twice: on a ``VM(kernels=False)`` (the plain-Python
path, no jitted call) and on a ``VM(kernels=True)``; the two must leave the same state,
Work, warnings and lockdep record (lockdep's reports compared as a multiset: the batch
reports them grouped by kind of write).

* ``VM.guest_write_batch`` (every design, failsafe on and off, broken states where GVT
  shadows gfns KVM no longer traps), and vs ``tests/reference.py``.
* KVMGT's slot walk (plain vs kernel vs the reference), on tables with few buckets so
  chains are long, and the whole slot hook.
* ``KVMGT.shadow_many``, including the u16 WARN and the EEXIST / EINVAL stops.
* a stateful test driving random memslot / shadow / unshadow / write sequences through
  both VMs, comparing after every step.

Sizes are small on purpose (the big ones are in ``kvmpt bench``); the file also passes
with ``NUMBA_DISABLE_JIT=1``.
"""
from __future__ import annotations

import dataclasses
import errno
import itertools
import os
import subprocess
import sys

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import reference as ref
from kvmpt import VM, Design
from kvmpt.kernels import policy
from kvmpt.kernel.vm import warmup
from kvmpt.kernel.ptable import ProtectTable
from kvmpt.kernel.vm import WRITE_OUTCOMES
from kvmpt.kernel.work import HookCall

EXAMPLES = int(os.environ.get("KVMPT_KERNEL_EXAMPLES", "60"))   # raise it for a soak run
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
UA = 0x7F00_0000_0000
KVM_MEM_READONLY = 2
DESIGNS = [Design(slot_hook=h, move=m, kvmgt_lock=lk, drop_protection_on_remove=d)
           for h, m, lk, d in itertools.product(("flush", "remove"), ("allow", "reject"),
                                                ("none", "mmu_lock", "gfn_lock", "vgpu_lock"),
                                                (False, True))]


@pytest.fixture(scope="session", autouse=True)
def jit_warm():
    """Compile (or load from the cache) every kernel once per session."""
    warmup()


# ---------------------------------------------------------------------- helpers
def full_state(vm):
    """Everything a kernel could change, in comparable form."""
    st_ = {}
    for as_id in (0, 1):
        st_[f"slots{as_id}"] = [
            (s.id, s.base_gfn, s.npages, s.flags, s.arch.gfn_write_track.tolist(),
             [lp.tolist() for lp in s.arch.lpage_info]) for s in vm.memslots(as_id)]
    gvt = vm.kvmgt
    if gvt is not None:
        st_["chains"] = ref.snapshot_chains(gvt.ptable)
        st_["chain_len"] = {int(b): int(gvt.ptable.chain_len[b])
                            for b in np.flatnonzero(gvt.ptable.chain_len)}
        st_["members"] = sorted(gvt.ptable.gfns())
        st_["tree"] = dict(gvt.page_track_tree)
        st_["shadow_hva"] = dict(getattr(gvt, "shadow_hva", {}))
        st_["attached"] = gvt.attached
    st_["write_stats"] = dict(vm.write_stats)
    st_["work"] = work_state(vm.work)
    st_["warnings"] = [(w.op, w.where, w.message) for w in vm.warnings]
    st_["reports"] = sorted((r.kind, r.context, r.message) for r in vm.lockdep.reports)
    st_["order"] = set(vm.lockdep.order)
    st_["held"] = {k: list(v) for k, v in vm.lockdep.held.items() if v}
    st_["events"] = list(vm.events)
    st_["hooks"] = [(c.hook, c.node, c.hits, work_state(c.work), c.wasted, c.harmful)
                    for c in vm.hook_calls]
    return st_


def work_state(w):
    return (dict(w.ops), dict(w.held), dict(w.max_hold), w.mmu_lock_acquisitions,
            dict(w.read_held), dict(w.read_max_hold), w.mmu_lock_read_acquisitions)


def assert_same(a, b):
    sa, sb = full_state(a), full_state(b)
    for k in sa:
        assert sa[k] == sb[k], f"{k} differs"


_slot = st.tuples(st.sampled_from([0, 0, 1]), st.integers(1, 40), st.integers(0, 600),
                 st.booleans(), st.booleans())
layouts = st.tuples(st.tuples(st.just(0), st.integers(1, 40), st.integers(0, 600), st.just(False),
                              st.booleans()),
                    st.lists(_slot, max_size=3)).map(lambda t: [t[0], *t[1]])


def build(design, layout, bits, shadow_idx, bumps, untrack, orphan, failsafe, kernels=True):
    """A VM with ``layout`` slots [(as_id, npages, gap, readonly, misaligned ua)], KVMGT
    attached with a ``2**bits``-bucket ptable, shadowing the AS0 gfns picked by
    ``shadow_idx``; ``bumps`` raises counters directly (other trackers; 65535 to hit the
    WARN); ``untrack`` drops ptable entries behind GVT's back (stale shadows);
    ``orphan`` removes gfns from GVT's tree only (the handler returns -ENXIO)."""
    vm = VM(design=design, kernels=kernels)
    nxt = {0: 0, 1: 0}
    for i, (as_id, npages, gap, ro, mis) in enumerate(layout):
        base = nxt[as_id] + gap
        nxt[as_id] = base + npages
        ua = UA + (base << 12) + (0x1000 if mis else 0)
        vm.set_user_memory_region((as_id << 16) | i, KVM_MEM_READONLY if ro else 0,
                                  base << 12, npages << 12, ua)
    gvt = vm.attach_kvmgt()
    gvt.ptable = ProtectTable(bits=bits)
    gvt.failsafe = failsafe
    gfns0 = [g for s in vm.memslots(0) for g in range(s.base_gfn, s.end_gfn)]
    if gfns0:
        for k in dict.fromkeys(i % len(gfns0) for i in shadow_idx):
            gvt.shadow(gfns0[k])
    allg = [(s, g) for a in (0, 1) for s in vm.memslots(a) for g in range(s.base_gfn, s.end_gfn)]
    for i, v in bumps:
        if allg:
            s, g = allg[i % len(allg)]
            s.arch.gfn_write_track[g - s.base_gfn] = v
    shadowed = sorted(gvt.page_track_tree)
    for i in untrack:
        if shadowed:
            g = shadowed[i % len(shadowed)]
            if g in gvt.ptable:
                gvt.ptable.delete(g)
    for i in orphan:
        if shadowed:
            gvt.page_track_tree.pop(shadowed[i % len(shadowed)], None)
    return vm, gvt


def gpas_for(vm, picks):
    """Write addresses: gfns in and around every slot of both address spaces."""
    cands = [0, 1 << 30]
    for a in (0, 1):
        for s in vm.memslots(a):
            cands += [s.base_gfn, s.end_gfn - 1, s.end_gfn, s.base_gfn + s.npages // 2]
    shadow = sorted(vm.kvmgt.page_track_tree) if vm.kvmgt else []
    cands += shadow * 3
    return np.array([(cands[i % len(cands)] << 12) + 8 * (i % 512) for i in picks],
                    dtype=np.uint64)


build_args = dict(
    design=st.sampled_from(DESIGNS), layout=layouts, bits=st.sampled_from([2, 3, 18]),
    shadow_idx=st.lists(st.integers(0, 60), min_size=1, max_size=12),
    bumps=st.lists(st.tuples(st.integers(0, 60), st.sampled_from([1, 2, 65535])),
                   max_size=3),
    untrack=st.lists(st.integers(0, 50), max_size=2),
    orphan=st.lists(st.integers(0, 50), max_size=2))


# ------------------------------------------------------------------ guest writes
@SETTINGS
@given(**build_args, failsafe=st.booleans(),
       picks=st.lists(st.integers(0, 200), min_size=5, max_size=60),
       as_id=st.sampled_from([0, 0, 1]), outcomes=st.booleans())
def test_guest_write_batch_matches_loop_and_reference(design, layout, bits, shadow_idx, bumps,
                                                      untrack, orphan, failsafe, picks, as_id,
                                                      outcomes):
    args = (design, layout, bits, shadow_idx, bumps, untrack, orphan, failsafe)
    loop_vm, _ = build(*args, kernels=False)
    batch_vm, _ = build(*args)
    gpas = gpas_for(loop_vm, picks)
    expect = None if failsafe else ref.guest_writes(batch_vm, gpas, as_id)
    names, missed = [], []
    for gpa in gpas.tolist():
        m0 = loop_vm.write_stats["missed"]
        names.append(loop_vm.guest_write(gpa, 8, as_id))
        missed.append(loop_vm.write_stats["missed"] != m0)
    ops0 = dict(batch_vm.work.ops)
    res = batch_vm.guest_write_batch(gpas, as_id=as_id, outcomes=outcomes)
    assert_same(loop_vm, batch_vm)
    counts = {k: names.count(k) for k in WRITE_OUTCOMES}
    counts["missed"] = sum(missed)
    assert dict(res) == counts
    if outcomes:
        assert [WRITE_OUTCOMES[c] for c in res.outcomes] == names
        assert res.missed.tolist() == missed
    if expect is not None:
        e_counts, e_work, e_names, e_missed = expect
        assert dict(res) == e_counts and e_names == names and e_missed == missed
        assert {k: batch_vm.work.ops[k] - ops0[k] for k in e_work} == e_work


def test_guest_write_batch_failsafe_falls_back_after_first_handled_write():
    vm, gvt = build(Design.preset("v6.6"), [(0, 16, 0, False, False)], 18, [3, 5], [], [], [],
                    failsafe=True)
    loop, _ = build(Design.preset("v6.6"), [(0, 16, 0, False, False)], 18, [3, 5], [], [], [],
                    failsafe=True)
    gpas = np.array([1 << 12, 3 << 12, 3 << 12, 5 << 12, 7 << 12], dtype=np.uint64)
    res = vm.guest_write_batch(gpas)
    for g in gpas.tolist():
        loop.guest_write(g)
    # the first handled write removes 3's protection: the second write to 3 goes direct
    assert dict(res) == {"direct": 3, "ignored": 0, "handled": 2, "mmio": 0, "missed": 1}
    assert_same(loop, vm)


def test_guest_write_batch_mmu_lock_design_records_sleep_in_atomic_per_handled_write():
    d = dataclasses.replace(Design.preset("v6.5"), kvmgt_lock="mmu_lock")
    vm, gvt = build(d, [(0, 16, 0, False, False)], 18, [3], [], [], [], False)
    vm.guest_write_batch(np.array([3 << 12] * 4 + [4 << 12], dtype=np.uint64))
    kinds = [r.kind for r in vm.lockdep.reports]
    assert kinds == ["sleep-in-atomic"] * 4
    # read_lock(&kvm->mmu_lock) per trapped write; the write holds are the shadowing's
    assert vm.work.mmu_lock_read_acquisitions == 4
    assert vm.work.read_max_hold == {**dict.fromkeys(vm.work.ops, 0), "gfn_probes": 1,
                                     "chain_steps": 1, "handler_calls": 1}


def test_flat_caches_follow_model_changes_between_batches():
    """The kernel's flat arrays are cached per VM generation: every change made through
    the model (and through ProtectTable's own methods) is seen by the next batch."""
    vm, gvt = build(Design.preset("v6.6"), [(0, 16, 0, False, False)], 18, [3, 5], [], [], [],
                    False)
    gpas = np.array([3 << 12, 5 << 12, 7 << 12], dtype=np.uint64)
    assert vm.guest_write_batch(gpas)["missed"] == 0
    gvt.ptable.delete(5)                       # behind KVM's back: 5 goes stale
    assert vm.guest_write_batch(gpas)["missed"] == 1
    gvt.shadow(7)
    assert dict(vm.guest_write_batch(gpas)) == {"direct": 0, "ignored": 1, "handled": 2,
                                                "mmio": 0, "missed": 1}
    gvt.unshadow(7)
    assert dict(vm.guest_write_batch(gpas)) == {"direct": 1, "ignored": 1, "handled": 1,
                                                "mmio": 0, "missed": 1}
    vm.set_user_memory_region(0, 0, 0, 0, UA)                # DELETE: every write is mmio
    assert vm.guest_write_batch(gpas)["mmio"] == 3


@pytest.mark.parametrize("bad, exc", [
    (np.array([-1], dtype=np.int64), ValueError),
    (np.array([[0]], dtype=np.uint64), ValueError),
    (np.array([0.5]), ValueError),
    (np.array([4095], dtype=np.uint64), ValueError),      # 8 bytes cross the page
])
def test_guest_write_batch_rejects_bad_input(bad, exc):
    vm = VM()
    with pytest.raises(exc):
        vm.guest_write_batch(bad)
    with pytest.raises(ValueError):
        vm.guest_write_batch(np.zeros(1, dtype=np.uint64), as_id=2)
    with pytest.raises(ValueError):
        vm.guest_write_batch(np.zeros(1, dtype=np.uint64), nbytes=9)
    assert dict(vm.guest_write_batch(np.zeros(0, dtype=np.uint64))) == dict.fromkeys(
        WRITE_OUTCOMES + ("missed",), 0)


# --------------------------------------------------------------------- slot walk
def table(bits, ops):
    pt = ProtectTable(bits=bits)
    for g, add in ops:
        if add and g not in pt:
            pt.add(g)
        elif not add and g in pt:
            pt.delete(g)
    return pt


def walks(bits, ops, base, npages):
    """KVMGT's slot walk on the plain path and in the kernel, on two copies of a table."""
    out = []
    for kernels in (False, True):
        gvt = VM("v6.6", kernels=kernels).attach_kvmgt()
        gvt.ptable = table(bits, ops)
        walk = gvt._walk_kernel if kernels else gvt._walk_plain
        hits, steps, _, _ = walk(base, npages, None)
        out.append(((list(hits), steps), gvt.ptable))
    return out


@SETTINGS
@given(bits=st.integers(1, 6), ops=st.lists(st.tuples(st.integers(0, 300), st.booleans()),
                                             max_size=80),
       base=st.integers(0, 300), npages=st.integers(0, 200))
def test_slot_walk_plain_kernel_and_reference_agree(bits, ops, base, npages):
    expect = ref.slot_walk(table(bits, ops), base, npages, True)
    (plain, a), (kern, b) = walks(bits, ops, base, npages)
    assert plain == kern == expect
    assert ref.snapshot_chains(a) == ref.snapshot_chains(b)
    assert a.chain_len.tolist() == b.chain_len.tolist() and a.gfns() == b.gfns()


def test_slot_walk_counts_steps_on_a_known_chain():
    ops = [(g, True) for g in (10, 11, 12, 13)]
    for (hits, steps), pt in walks(1, ops, 10, 4):
        assert hits == [10, 11, 12, 13] and len(pt) == 0
        assert steps == ref.slot_walk(table(1, ops), 10, 4)[1]


def test_walk_high_gfns_do_not_wrap():
    top = (1 << 52) - 4
    for result, _ in walks(18, [(top + 1, True)], top, 4):
        assert result == ([top + 1], 1)


@SETTINGS
@given(**build_args, which=st.integers(0, 7), given_slot=st.booleans())
def test_slot_hook_kernel_matches_model(design, layout, bits, shadow_idx, bumps, untrack,
                                        orphan, which, given_slot):
    args = (design, layout, bits, shadow_idx, bumps, untrack, orphan, False)
    a, ga = build(*args, kernels=False)
    b, gb = build(*args)
    slots_a = a.memslots(0) + a.memslots(1)
    slots_b = b.memslots(0) + b.memslots(1)
    sa, sb = slots_a[which % len(slots_a)], slots_b[which % len(slots_b)]
    hook = "track_flush_slot" if given_slot else "track_remove_region"
    ca = HookCall(0, hook, "kvmgt", "DELETE", sa.as_id, sa.id, sa.base_gfn, sa.npages)
    cb = HookCall(0, hook, "kvmgt", "DELETE", sb.as_id, sb.id, sb.base_gfn, sb.npages)
    ga.slot_hook(hook, sa.base_gfn, sa.npages, sa if given_slot else None, ca)
    gb.slot_hook(hook, sb.base_gfn, sb.npages, sb if given_slot else None, cb)
    assert_same(a, b)
    assert work_state(ca.work) == work_state(cb.work) and ca.hits == cb.hits


# ------------------------------------------------------------------ bulk shadow
@SETTINGS
@given(**build_args, picks=st.lists(st.integers(0, 60), min_size=1, max_size=40),
       outside=st.lists(st.integers(0, 40), max_size=2))
def test_shadow_many_matches_shadow_loop(design, layout, bits, shadow_idx, bumps, untrack,
                                         orphan, picks, outside):
    args = (design, layout, bits, shadow_idx, bumps, untrack, orphan, False)
    a, ga = build(*args, kernels=False)
    b, gb = build(*args)
    cands = [g for s in a.memslots(0) for g in range(s.base_gfn, s.end_gfn)] or [0]
    gfns = [cands[i % len(cands)] for i in picks]
    for k in outside:          # a gfn no AS0 slot holds -> EINVAL at that point
        gfns.insert(k % (len(gfns) + 1), (1 << 40) + k)
    err_a = err_b = None
    try:
        for g in gfns:
            ga.shadow(g)
    except OSError as e:
        err_a = e.errno
    try:
        gb.shadow_many(np.array(gfns, dtype=np.uint64))
    except OSError as e:
        err_b = e.errno
    assert err_a == err_b
    assert_same(a, b)


def test_shadow_many_warns_on_u16_overflow_and_leaves_the_count():
    vm, gvt = build(Design.preset("v6.6"), [(0, 8, 0, False, False)], 18, [], [], [], [], False)
    s = vm.memslots(0)[0]
    s.arch.gfn_write_track[2] = 0xFFFF
    expect, warn = ref.shadow_counts(vm, [1, 2, 3])
    gvt.shadow_many(np.array([1, 2, 3], dtype=np.uint64))
    assert warn == [2]
    assert {g: vm.write_track_count(g) for g in (1, 2, 3)} == expect
    assert [w.where for w in vm.warnings] == ["update_gfn_write_track"]
    assert gvt.shadowed_gfns() == [1, 2, 3]


def test_shadow_many_stops_with_the_loops_errors():
    vm, gvt = build(Design.preset("v6.6"), [(0, 8, 0, False, False)], 18, [], [], [], [], False)
    with pytest.raises(OSError) as ei:
        gvt.shadow_many(np.array([1, 2, 1, 3], dtype=np.uint64))
    assert ei.value.errno == errno.EEXIST and gvt.shadowed_gfns() == [1, 2]
    with pytest.raises(OSError) as ei:
        gvt.shadow_many(np.array([4, 100, 5], dtype=np.uint64))
    assert ei.value.errno == errno.EINVAL and gvt.shadowed_gfns() == [1, 2, 4]
    with pytest.raises(ValueError):
        gvt.shadow_many(np.array([-1]))
    gvt.detach()
    with pytest.raises(OSError) as ei:
        gvt.shadow_many(np.array([1], dtype=np.uint64))
    assert ei.value.errno == errno.ESRCH


# --------------------------------------------------------------------- stateful
MIB2 = 2 << 20


class KernelsVsModel(RuleBasedStateMachine):
    """Two VMs fed the same random sequence: ``plain`` (``kernels=False``) uses
    guest_write / shadow and the plain walk, ``fast`` uses guest_write_batch /
    shadow_many and the kernels.  They must agree exactly after every step."""

    @initialize(design=st.sampled_from(DESIGNS), bits=st.sampled_from([2, 18]))
    def setup(self, design, bits):
        self.plain, self.fast = VM(design=design, kernels=False), VM(design=design)
        self.bits = bits
        self.ua = UA
        self.attach()

    def both(self, fn):
        out = []
        for vm in (self.plain, self.fast):
            try:
                out.append(("ok", fn(vm)))
            except OSError as e:
                out.append(("err", e.errno))
        assert out[0][0] == out[1][0] and (out[0][0] == "ok" or out[0][1] == out[1][1])
        return out

    def attach(self):
        for vm in (self.plain, self.fast):
            if vm.kvmgt is None or not vm.kvmgt.attached:
                vm.attach_kvmgt().ptable = ProtectTable(bits=self.bits)

    @rule(as_id=st.sampled_from([0, 0, 1]), id=st.integers(0, 4), where=st.integers(0, 7),
          pages=st.sampled_from([16, 512, 600]), flags=st.sampled_from([0, 0, 1, 2]))
    def set_region(self, as_id, id, where, pages, flags):
        self.ua += 8 * MIB2
        ua = self.ua
        self.both(lambda vm: vm.set_user_memory_region((as_id << 16) | id, flags, where * MIB2,
                                                       pages << 12, ua))

    @rule(as_id=st.sampled_from([0, 1]), id=st.integers(0, 4))
    def delete(self, as_id, id):
        self.both(lambda vm: vm.set_user_memory_region((as_id << 16) | id, 0, 0, 0, 0))

    @rule(id=st.integers(0, 4), where=st.integers(0, 7))
    def move(self, id, where):
        s = self.plain._as[0].by_id.get(id)
        if s is None:
            return
        self.both(lambda vm: vm.set_user_memory_region(id, s.flags, where * MIB2,
                                                       s.npages << 12, s.userspace_addr))

    @rule(picks=st.lists(st.integers(0, 4000), min_size=1, max_size=20))
    def shadow(self, picks):
        cands = [g for s in self.plain.memslots(0) for g in range(s.base_gfn, s.end_gfn)]
        if not cands or not self.plain.kvmgt.attached:
            return
        gfns = list(dict.fromkeys(cands[i % len(cands)] for i in picks))
        gfns = [g for g in gfns if g not in self.plain.kvmgt.page_track_tree]

        def plain(vm):
            for g in gfns:
                vm.kvmgt.shadow(g)
        self.both(lambda vm: plain(vm) if vm is self.plain
                  else vm.kvmgt.shadow_many(np.array(gfns, dtype=np.uint64)))

    @rule(k=st.integers(0, 50))
    def unshadow(self, k):
        tree = sorted(self.plain.kvmgt.page_track_tree)
        if tree:
            g = tree[k % len(tree)]
            self.both(lambda vm: vm.kvmgt.unshadow(g))

    @rule(picks=st.lists(st.integers(0, 4000), max_size=40), as_id=st.sampled_from([0, 1]),
          failsafe=st.booleans())
    def writes(self, picks, as_id, failsafe):
        gpas = gpas_for(self.plain, picks)
        self.plain.kvmgt.failsafe = self.fast.kvmgt.failsafe = failsafe
        for g in gpas.tolist():
            self.plain.guest_write(g, 8, as_id)
        self.fast.guest_write_batch(gpas, as_id=as_id)

    @precondition(lambda self: self.plain.kvmgt.attached)
    @rule()
    def detach(self):
        self.both(lambda vm: vm.kvmgt.detach())

    @rule()
    def reattach(self):
        self.attach()

    @invariant()
    def same(self):
        if hasattr(self, "plain"):
            assert_same(self.plain, self.fast)


TestKernelsVsModel = KernelsVsModel.TestCase
TestKernelsVsModel.settings = settings(max_examples=max(EXAMPLES // 2, 1), stateful_step_count=15, deadline=None,
                                       derandomize=True,
                                       suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------------------------- policy
def test_one_policy_module_decorates_every_kernel():
    from kvmpt.kernels import common, track, walk, writes
    for mod in (common, track, walk, writes):
        src = open(mod.__file__).read()
        assert "njit" not in src and "numba.jit" not in src, mod.__name__
    if not policy.JIT_DISABLED:
        assert writes.page_track_write_batch.signatures
        assert walk.slot_walk.signatures and track.page_track_add_gfns.signatures


def test_cache_dir_falls_back_when_nothing_is_writable(tmp_path):
    """With no NUMBA_CACHE_DIR, an unwritable package dir and an unwritable HOME, the
    policy points numba at the temporary directory instead of failing at import."""
    code = ("import os, numba; from kvmpt.kernels import policy; "
            "print(numba.config.CACHE_DIR)")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(HOME="/nonexistent-kvmpt-home", TMPDIR=str(tmp_path))
    if os.access(os.path.dirname(policy.__file__), os.W_OK):
        pytest.skip("the package directory is writable here; the fallback is not needed")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out.startswith(str(tmp_path))


_CACHE_PROBE = """
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
sys.path.insert(0, sys.argv[1])
import kvmpt
assert kvmpt.__file__.startswith(sys.argv[1]), kvmpt.__file__
from kvmpt.kernels import common, track, walk, workload, writes
from kvmpt.kernel.vm import warmup
warmup()
hits = misses = 0
for mod in (common, track, walk, workload, writes):
    for f in vars(mod).values():
        if hasattr(f, "stats") and hasattr(f, "signatures"):
            hits += sum(f.stats.cache_hits.values())
            misses += sum(f.stats.cache_misses.values())
print(hits, misses)
"""


@pytest.mark.slow
@pytest.mark.skipif(policy.JIT_DISABLED, reason="nothing is compiled without the JIT")
def test_cache_works_from_a_non_editable_install(tmp_path):
    """A copy of the package outside the source tree (what a wheel install puts in
    site-packages), no NUMBA_CACHE_DIR: the first process compiles and writes the cache
    next to the installed sources, the second only loads it."""
    import shutil
    site = tmp_path / "site-packages"
    shutil.copytree(os.path.dirname(os.path.dirname(policy.__file__)), site / "kvmpt",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    runs = [subprocess.run([sys.executable, "-c", _CACHE_PROBE, str(site)], env=env,
                           capture_output=True, text=True, check=True).stdout.split()
            for _ in range(2)]
    (hits1, misses1), (hits2, misses2) = ([int(x) for x in r] for r in runs)
    assert misses1 > 0 and hits2 > 0 and misses2 == 0
    assert any((site / "kvmpt" / "kernels" / "__pycache__").glob("*.nbi"))
