"""Model tests that the kernel-rule tests don't cover: the design knobs, KVMGT's
hooks, work accounting, the SMM address-space finding, lockdep reports."""
import errno
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvmpt import VM, Design
from kvmpt.kernel.ptable import GOLDEN_RATIO_64, ProtectTable, hash_64

UA = 0x7F0000000000
GIB = 1 << 30


def make_vm(design, gib=1, smm=False, base_gpa=0x100000):
    vm = VM(design=design)
    vm.set_user_memory_region(0, 0, base_gpa, gib * GIB, UA)
    if smm:
        vm.set_user_memory_region(1 << 16, 0, base_gpa, gib * GIB, UA)
    return vm


# ------------------------------------------------------------------ Design
def test_presets_match_contract():
    assert Design.preset("v6.5") == Design("flush", "allow", "none", True)
    assert Design.preset("v6.6") == Design("remove", "reject", "vgpu_lock", False)
    assert len(Design.all()) == 32 and len(set(Design.all())) == 32


@pytest.mark.parametrize("kw", [dict(slot_hook="late"), dict(move="deny"),
                                dict(kvmgt_lock="rcu"), dict(drop_protection_on_remove=1)])
def test_bad_design_values_are_named(kw):
    with pytest.raises((ValueError, TypeError), match=next(iter(kw))):
        Design(**kw)


def test_unknown_preset():
    with pytest.raises(ValueError, match="v6.7"):
        Design.preset("v6.7")
    with pytest.raises(ValueError):
        VM(design="v6.7")


# --------------------------------------------------------- hash table
def test_hash_64_is_the_golden_ratio_multiply():
    """include/linux/hash.h hash_64_generic(): val * GOLDEN_RATIO_64 >> (64 - bits)."""
    assert hash_64(0) == 0
    assert hash_64(1) == GOLDEN_RATIO_64 >> 46
    assert all(0 <= hash_64(g) < 1 << 18 for g in range(0, 1 << 20, 4099))


def _walk_reference(table_gfns_in_insert_order, base, npages):
    """Obviously-correct sequential walk: one lookup per gfn, delete on hit."""
    buckets = {}
    for g in table_gfns_in_insert_order:
        buckets.setdefault(hash_64(g), []).insert(0, g)      # hash_add: head insertion
    steps, hits = 0, []
    for g in range(base, base + npages):
        chain = buckets.get(hash_64(g), [])
        if g in chain:
            i = chain.index(g)
            steps += i + 1
            chain.pop(i)
            hits.append(g)
        else:
            steps += len(chain)
    return hits, steps


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 5000), unique=True, max_size=60),
       st.integers(0, 4000), st.integers(1, 3000), st.integers(0, 3))
def test_slot_walk_counts_chain_steps_exactly(gfns, base, npages, collide):
    """KVMGT's slot-hook loop, on the plain path and in the kernel, against a walk
    written from the kernel's loop (v6.6: no protection dropped)."""
    # force collisions: add gfns that share buckets with existing ones
    extra = [g + (1 << 18) * k for g in gfns[:collide] for k in (1, 2)]
    order = gfns + [e for e in extra if e not in gfns]
    expect = _walk_reference(order, base, npages)
    for kernels in (False, True):
        gvt = VM("v6.6", kernels=kernels).attach_kvmgt()
        for g in order:
            gvt.ptable.add(g)
        walk = gvt._walk_kernel if kernels else gvt._walk_plain
        hits, steps, lookups, dropped = walk(base, npages, None)
        assert (list(hits), steps, lookups, dropped) == (*expect, 0, 0)
        t = gvt.ptable
        assert all(g not in t for g in hits) and len(t) == len(order) - len(hits)


# ------------------------------------------------- hooks and accounting
def shadowed_vm(design, gfns=(0x200, 0x201, 0x5000), smm=False):
    vm = make_vm(design, smm=smm)
    gvt = vm.attach_kvmgt()
    for g in gfns:
        gvt.shadow(g)
    return vm, gvt


def test_v65_delete_wastes_counter_updates_under_one_long_mmu_lock_hold():
    vm, gvt = shadowed_vm("v6.5")
    vm.set_user_memory_region(0, 0, 0x100000, 0, UA)
    call = next(c for c in vm.hook_calls if c.node == "kvmgt")
    assert call.hook == "track_flush_slot" and call.hits == 3
    w = call.work
    assert w.gfn_probes == GIB >> 12                       # every gfn of the slot
    assert w.counter_updates == 3 and w.lpage_updates == 6
    assert w.mmu_lock_acquisitions == 1                    # held across the whole loop
    assert w.mmu_lock_held_steps >= w.gfn_probes
    assert call.wasted and call.wasted_updates == 9
    assert gvt.stale_gfns() == [0x200, 0x201, 0x5000]      # the slot is gone: writes are MMIO


def test_v66_remove_region_takes_no_mmu_lock_and_wastes_nothing():
    vm, gvt = shadowed_vm("v6.6")
    vm.set_user_memory_region(0, 0, 0x100000, 0, UA)
    call = next(c for c in vm.hook_calls if c.node == "kvmgt")
    assert call.hook == "track_remove_region" and call.hits == 3
    assert call.work.gfn_probes == GIB >> 12               # still O(npages)
    assert call.work.mmu_lock_acquisitions == 0
    assert call.work.counter_updates == 0 and not call.wasted
    assert vm.check_invariants() == []                     # GVT still shadows them, ...
    assert len(gvt.ptable) == 0


def test_mutex_design_with_protection_drop_takes_mmu_lock_per_hit():
    """v4 11/29 shape: vgpu_lock across the loop, mmu_lock per protected gfn."""
    d = Design("flush", "allow", "vgpu_lock", True)
    vm, gvt = shadowed_vm(d)
    vm.set_user_memory_region(0, 0, 0x100000, 0, UA)
    w = next(c for c in vm.hook_calls if c.node == "kvmgt").work
    assert w.mmu_lock_acquisitions == 3
    assert w.mmu_lock_max_hold_steps == 3                  # 1 counter + 2 lpage updates
    assert w.held["gfn_probes"] == 0


@pytest.mark.parametrize("design", Design.all(), ids=lambda d: d.name)
def test_every_design_runs_every_change(design):
    vm, gvt = shadowed_vm(design)
    vm.set_user_memory_region(0, 1, 0x100000, GIB, UA)                     # FLAGS_ONLY
    assert vm.write_track_count(0x200) == 1                                 # shared arrays
    try:
        vm.set_user_memory_region(0, 1, 0x100000 + 4 * GIB, GIB, UA)        # MOVE
        moved = True
    except OSError as e:
        assert e.errno == errno.EINVAL and design.move == "reject"
        moved = False
    vm.fail_next_prepare(errno.ENOMEM)
    with pytest.raises(OSError):
        vm.set_user_memory_region(3, 0, 0x400000000000, GIB, UA)            # CREATE fails
    vm.set_user_memory_region(0, 1, 0, 0, UA)                               # DELETE
    assert vm.memslots() == []
    if moved:
        assert design.move == "allow"
    for gpa in (0x200 << 12, 0x9000 << 12):
        assert vm.guest_write(gpa) in ("direct", "ignored", "handled", "mmio")


def test_allowed_move_leaves_gvt_shadowing_untracked_gfns_under_both_hooks():
    for hook in ("flush", "remove"):
        vm, gvt = shadowed_vm(Design(hook, "allow", "vgpu_lock", False))
        vm.set_user_memory_region(0, 0, 0x100000 + 4 * GIB, GIB, UA)
        assert gvt.stale_gfns() == [0x200, 0x201, 0x5000], hook
        moved = [v for v in vm.check_invariants() if "is now at gfn" in v]
        assert len(moved) == 3, hook        # the PT pages now sit at gfn + 4 GiB, unprotected


def test_delete_then_recreate_leaves_shadows_unprotected_in_both_designs():
    """Neither hook re-protects when RAM comes back at the same gfns (QEMU's
    DELETE + CREATE re-layout): GVT's shadows of those pages go stale."""
    for preset in ("v6.5", "v6.6"):
        vm, gvt = shadowed_vm(preset)
        vm.set_user_memory_region(0, 0, 0x100000, 0, UA)
        assert vm.check_invariants() == [], preset
        vm.set_user_memory_region(0, 0, 0x100000, GIB, UA)
        assert vm.guest_write(0x200 << 12) == "direct", preset
        assert len(vm.check_invariants()) == 3, preset


def test_rejected_move_still_invalidates_and_zaps():
    """spec 3.4: a rejected MOVE does S1-S2 (swap, zap) and S4, but no count changes."""
    vm, gvt = shadowed_vm("v6.6")
    before = len(vm.hook_calls)
    with pytest.raises(OSError) as e:
        vm.set_user_memory_region(0, 0, 0x100000 + 4 * GIB, GIB, UA)
    assert e.value.errno == errno.EINVAL
    steps = [s for s, d in vm.events if d["op"] == vm.op_log[-1].index]
    assert steps == ["invalidate", "zap_all_fast", "prepare", "move_rejected", "restore"]
    assert [c.hook for c in vm.hook_calls[before:]] == ["kvm_mmu_zap_all_fast"]
    assert vm.check_invariants() == [] and gvt.stale_gfns() == []


@pytest.mark.parametrize("design", ["v6.5", "v6.6"])
def test_detach_leaks_kvm_protection_and_says_so(design):
    """intel_vgpu_close_device() -> intel_gvt_release_vgpu() leaves the PPGTT shadows (and
    their page_track_tree entries and KVM's counts) in place; kvmgt_protect_table_destroy()
    frees ptable without calling KVM; the notifier is gone."""
    vm, gvt = shadowed_vm(design)
    gvt.detach()
    assert vm.write_track_count(0x200) == 1
    assert gvt.ptable.gfns() == set()
    assert gvt.shadowed_gfns() == [0x200, 0x201, 0x5000]       # GVT's shadows stay
    assert vm.guest_write(0x200 << 12) == "ignored"            # still trapped, nobody takes it
    assert vm.write_stats["missed"] == 1
    assert gvt.stale_gfns() == [0x200, 0x201, 0x5000]
    inv = vm.check_invariants()
    assert sum("protection leaked" in v for v in inv) == 3
    with pytest.raises(OSError) as e:
        gvt.shadow(0x300)
    assert e.value.errno == errno.ESRCH
    vm.attach_kvmgt()       # a new vGPU may attach after the old one closed


def test_second_attach_is_eexist():
    vm = make_vm("v6.6")
    vm.attach_kvmgt()
    with pytest.raises(OSError) as e:
        vm.attach_kvmgt()
    assert e.value.errno == errno.EEXIST


# ------------------------------------------- the SMM address space (as_id 1)
def test_v66_smm_delete_reaches_kvmgt_and_strands_protected_gfns():
    """x86.c kvm_arch_commit_memory_region() calls kvm_page_track_delete_slot() for any
    DELETE; track_remove_region(gfn, nr_pages) carries no as_id; KVMGT's ptable is keyed
    by gfn alone. The address-space-0 slot keeps its counts: writes trap and are ignored."""
    vm, gvt = shadowed_vm("v6.6", smm=True)
    vm.set_user_memory_region(1 << 16, 0, 0x100000, 0, UA)       # SMM-space DELETE
    assert [s for s, _ in vm.events][-3:] == ["commit", "remove_region", "free_metadata"]
    assert vm.write_track_count(0x200) == 1
    assert not gvt.is_write_protected(0x200)
    assert vm.guest_write(0x200 << 12) == "ignored"
    assert gvt.stale_gfns() == [0x200, 0x201, 0x5000]
    assert vm.write_stats["missed"] == 1
    assert vm.check_invariants()


def test_v65_smm_delete_underflows_the_smm_slot_counters():
    """v6.5 kvmgt_page_track_flush_slot() calls kvm_slot_page_track_remove_page() with the
    SMM slot: its counters are 0 -> update_gfn_track WARNs; disallow_lpage goes negative."""
    vm, gvt = shadowed_vm("v6.5", smm=True)
    vm.set_user_memory_region(1 << 16, 0, 0x100000, 0, UA)
    where = {w.where for w in vm.warnings}
    assert {"update_gfn_write_track", "update_gfn_disallow_lpage_count"} <= where
    assert vm.write_track_count(0x200) == 1 and gvt.stale_gfns() == [0x200, 0x201, 0x5000]


def test_smm_vcpu_writes_do_not_trap():
    vm, gvt = shadowed_vm("v6.6", smm=True)
    assert vm.guest_write(0x200 << 12, as_id=1) == "direct"
    assert vm.guest_write(0x200 << 12, as_id=0) == "handled"


# --------------------------------------------------- lock rules (sequential)
@pytest.mark.parametrize("lock,kind", [("none", None), ("mmu_lock", "sleep-in-atomic"),
                                       ("gfn_lock", None), ("vgpu_lock", None)])
def test_track_write_lockdep_reports(lock, kind):
    vm, gvt = shadowed_vm(Design("remove", "reject", lock, False))
    vm.guest_write(0x200 << 12)
    kinds = {r.kind for r in vm.lockdep.reports}
    assert kinds == ({kind} if kind else set())


def test_gfn_lock_failsafe_handler_self_deadlocks():
    """series v1: handler -> intel_gvt_page_track_remove() -> mutex_lock(gfn_lock) again."""
    vm, gvt = shadowed_vm(Design("remove", "reject", "gfn_lock", False))
    gvt.failsafe = True
    vm.guest_write(0x200 << 12)
    assert any(r.kind == "deadlock" for r in vm.lockdep.reports)


def test_failsafe_handler_drops_protection_under_vgpu_lock():
    vm, gvt = shadowed_vm("v6.6")
    gvt.failsafe = True
    assert vm.guest_write(0x200 << 12) == "handled"
    assert vm.write_track_count(0x200) == 0 and not gvt.is_write_protected(0x200)
    assert vm.lockdep.reports == []


# ------------------------------------------------------ bad input
@pytest.mark.parametrize("args", [(0, 0, 0, -4096, UA), (0, 0, 0, 4096.0, UA),
                                  ("0", 0, 0, 4096, UA), (0, 0, 0, True, UA),
                                  (0, 1 << 32, 0, 4096, UA)])
def test_bad_ioctl_fields_change_nothing(args):
    vm, gvt = shadowed_vm("v6.6")
    state = (len(vm.events), [(s.id, s.base_gfn, s.npages) for s in vm.memslots()],
             vm.write_track_count(0x200))
    with pytest.raises((TypeError, ValueError)):
        vm.set_user_memory_region(*args)
    assert state == (len(vm.events), [(s.id, s.base_gfn, s.npages) for s in vm.memslots()],
                     vm.write_track_count(0x200))


def test_u16_counter_overflow_warns_and_keeps_count():
    vm = make_vm("v6.6")
    slot = vm.memslots()[0]
    slot.arch.gfn_write_track[0x200 - slot.base_gfn] = 0xFFFF
    vm.write_track_add_gfn(0x200)
    assert vm.write_track_count(0x200) == 0xFFFF
    assert vm.warnings[-1].where == "update_gfn_write_track"
    assert vm.disallow_lpage(0x200, 2) == 2        # the lpage step carries on (1 initial + 1)


def test_write_track_api_einval_without_slot():
    vm = make_vm("v6.6")
    with pytest.raises(OSError) as e:
        vm.write_track_add_gfn(1 << 30)
    assert e.value.errno == errno.EINVAL
    gvt = vm.attach_kvmgt()
    with pytest.raises(OSError) as e:
        gvt.shadow(1 << 30)
    assert e.value.errno == errno.EINVAL and gvt.shadowed_gfns() == []
