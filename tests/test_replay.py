"""kvmpt.workload.replay: replaying memslot traffic, op kinds, tracked sets, the text report.

Everything runs against the real model (``kvmpt.kernel.vm.VM``, v6.6 unless a test
says otherwise): replay has no rules of its own to test apart from it.
"""
from __future__ import annotations

import errno
from pathlib import Path

import pytest

from kvmpt import Design
from kvmpt.workload.costs import default_costs
from kvmpt.workload.layouts import build_ops, churn_ops, load_layout
from kvmpt.workload.replay import (KINDS, classify, infer_prologue, place_tracked, replay,
                          replay_designs)
from kvmpt.review.textreport import MAX_WIDTH, render_replay
from kvmpt.workload.trace import MemslotOp, load_ops, load_qemu_trace
from kvmpt import VM as _VM

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT / "data" / "traces"
VGA = TRACES / "qemu_vga_bar_toggle_2020.trace"
SMM_ON = TRACES / "i440fx_seabios_40g_smm_on.trace"
SMM_OFF = TRACES / "i440fx_seabios_40g_smm_off.trace"


def op(as_id, slot, gpa, size, flags=0, ua=0x7f0000000000, ret=None):
    return MemslotOp(as_id=as_id, slot=slot, flags=flags, gpa=gpa, size=size, ua=ua, ret=ret)


# ---------------------------------------------------------------------------
# classify(): spec/kernel-semantics.md §3.1 #9-11

def test_public_names_survive_the_split():
    """kvmpt.workload.replay is a package; every name it exported is still there, and
    kvmpt.VM is its VM (the model's VM plus vm.replay)."""
    import kvmpt
    import kvmpt.workload.replay as rp
    for name in rp.__all__ + ["VM", "BIG_SLOT_PAGES", "parse_design"]:
        assert hasattr(rp, name), name
    assert kvmpt.VM is rp.VM and callable(rp.replay) and not isinstance(rp.replay, type(rp))


def test_classify_follows_the_kernel_rules():
    vm = _VM()
    vm.set_user_memory_region(3, 0, 0x100000, 0x10000, 0x7f0000000000)
    assert classify(op(0, 3, 0x100000, 0), vm) == "DELETE"
    # size 0 for a missing slot: the kernel returns -EINVAL before making a DELETE
    assert classify(op(0, 4, 0x100000, 0), vm) == "REJECTED"
    assert classify(op(0, 5, 0x200000, 0x1000), vm) == "CREATE"
    assert classify(op(0, 3, 0x200000, 0x10000), vm) == "MOVE"
    assert classify(op(0, 3, 0x100000, 0x10000, flags=1), vm) == "FLAGS_ONLY"
    assert classify(op(0, 3, 0x200000, 0x10000, flags=1), vm) == "MOVE"
    assert classify(op(0, 3, 0x100000, 0x10000), vm) == "NOOP"
    assert classify(op(0, 3, 0x100000, 0x20000), vm) == "REJECTED"   # size change
    assert classify(op(0, 3, 0x100000, 0x10000, flags=2), vm) == "REJECTED"   # READONLY
    assert classify(op(0, 3, 0x100000, 0x10000, ua=0x7f0000001000), vm) == "REJECTED"
    assert classify(op(0, 5, 0x200800, 0x1000), vm) == "REJECTED"   # unaligned gpa
    assert classify(op(0, 5, 0x200000, 0x1000, flags=4), vm) == "REJECTED"
    assert classify(op(2, 5, 0x200000, 0x1000), vm) == "REJECTED"      # as_id >= 2
    assert classify(op(0, 32764, 0x200000, 0x1000), vm) == "REJECTED"  # internal slot id
    assert classify(op(0, 5, 0x108000, 0x1000), vm) == "REJECTED"      # overlap
    assert vm.check_user_memory_region(5, 0, 0x108000, 0x1000, 0).errno == errno.EEXIST


def test_infer_prologue_for_a_trace_that_starts_mid_life():
    ops = load_qemu_trace(VGA)
    pro = infer_prologue(ops)
    assert [(o.as_id, o.slot, o.gpa, o.size, o.flags, o.ua) for o in pro] == [
        (0, 3, 0xfd000000, 0x1000000, 1, 0x7fadf6800000),
        (1, 3, 0xfd000000, 0x1000000, 1, 0x7fadf6800000)]
    assert infer_prologue(ops, present={(0, 3), (1, 3)}) == []
    assert infer_prologue(load_qemu_trace(SMM_ON)) == []


# ---------------------------------------------------------------------------
# replay()

def test_replay_vga_toggle_trace():
    res = replay(_VM(), load_qemu_trace(VGA))
    assert len(res.prologue) == 2 and all(r.ok for r in res.prologue)
    assert res.counts["DELETE"] == 14 and res.counts["CREATE"] == 14
    assert res.mismatches == [] and all(r.match for r in res.results)
    assert res.final_layout[0] == [(3, 0xfd000000, 0x1000000, 1, 0x7fadf6800000)]
    assert res.final_layout[1] == [(3, 0xfd000000, 0x1000000, 1, 0x7fadf6800000)]
    without = replay(_VM(), load_qemu_trace(VGA), infer_missing=False)
    assert len(without.mismatches) == 2          # the first two DELETEs: EINVAL vs ret=0
    assert without.mismatches[0].errno == errno.EINVAL


@pytest.mark.parametrize("path, counts", [
    (SMM_OFF, {"CREATE": 31, "DELETE": 21}),
    (SMM_ON, {"CREATE": 66, "DELETE": 46}),
])
def test_replay_boot_traces(path, counts):
    res = replay(_VM(), load_qemu_trace(path))
    assert res.mismatches == []
    assert {k: v for k, v in res.counts.items() if v} == counts
    assert len(res.final_layout[0]) == 10


def test_replay_reports_errno_mismatch_and_delete_gpa_notes():
    ops = [op(0, 1, 0x0, 0x100000, ret=0), op(0, 1, 0x0, 0x100000, ret=0),   # no-op
           op(0, 2, 0x80000, 0x100000, ret=0),                               # overlap
           op(0, 1, 0x4000, 0, ret=0)]                                       # gpa differs
    res = replay(_VM(), ops)
    assert [r.kind for r in res.results] == ["CREATE", "NOOP", "REJECTED", "DELETE"]
    assert [r.errno for r in res.results] == [0, 0, errno.EEXIST, 0]
    assert [r.index for r in res.mismatches] == [2]
    assert "gpa 0x4000" in res.notes[0].note


def test_tracked_set_is_deterministic_and_in_big_ram():
    def placed(seed):
        vm = _VM()
        for o in build_ops(load_layout("q35-ovmf-smm")):
            vm.set_user_memory_region(o.ioctl_slot, o.flags, o.gpa, o.size, o.ua)
        return place_tracked(vm, vm.attach_kvmgt(), 500, seed=seed)
    a, b, c = placed(1), placed(1), placed(2)
    assert a.gfns == b.gfns != c.gfns
    assert len(a.gfns) == 500 == len(set(a.gfns))
    big = [(base, n) for _sid, base, n in a.slots]
    assert all(n >= 1 << 18 for _b, n in big)
    assert all(any(base <= g < base + n for base, n in big) for g in a.gfns)


def test_tracked_needs_ram():
    with pytest.raises(ValueError, match="cannot place 10 tracked gfns"):
        replay(_VM(), load_qemu_trace(VGA), tracked=10)


def test_as1_ram_delete_makes_gfns_stale_with_a_tracker_that_ignores_as_id():
    """workloads.md §2.5: the hook gets no as_id, so an SMM-address-space DELETE
    purges KVMGT's entries for gfns that stay protected in AS0."""
    lay = load_layout("q35-ovmf-smm")
    vm = _VM()
    for o in build_ops(lay):
        vm.set_user_memory_region(o.ioctl_slot, o.flags, o.gpa, o.size, o.ua)
    as1_low = [s for s in lay.with_role("ram-low") if s.as_id == 1][0]
    res = replay(vm, [op(1, as1_low.slot, as1_low.gpa, 0, ua=as1_low.ua, ret=0)],
                 tracked=400, track_after=0, seed=3)
    assert res.tracked is not None and res.tracked.placed_after == 0
    st = res.staling_ops
    assert [(r.kind, r.op.as_id, r.op.gpa) for r in st] == [("DELETE", 1, 0x100000)]
    low = [g for g in res.tracked.gfns if g < 0x80000]
    assert len(res.stale_gfns) == st[0].newly_stale == len(low) > 0


def test_churn_with_tracked_set():
    lay = load_layout("q35-ovmf-smm")
    vm = _VM()
    for o in build_ops(lay):
        vm.set_user_memory_region(o.ioctl_slot, o.flags, o.gpa, o.size, o.ua)
    res = replay(vm, churn_ops(lay), tracked=400, track_after=0, seed=3)
    st = res.staling_ops
    assert (st[0].kind, st[0].op.as_id, st[0].op.gpa) == ("DELETE", 0, 0x100000)
    table = res.hook_table()["track_remove_region"]
    assert table["calls"] == res.counts["DELETE"]
    assert table["gfn_probes"] > 0 and table["cycles"] is None
    assert res.hook_table()["track_remove_region"]["wasted_cycles"] is None


def test_costs_turn_counts_into_cycles():
    lay = load_layout("q35-ovmf")
    vm = _VM()
    for o in build_ops(lay):
        vm.set_user_memory_region(o.ioctl_slot, o.flags, o.gpa, o.size, o.ua)
    c = default_costs()
    probes_only = c.with_cycles(**{**dict.fromkeys(c.categories, 0.0), "hash_probe": 2.0})
    res = replay(vm, churn_ops(lay), kvmgt=True, costs=probes_only)
    row = res.hook_table()["track_remove_region"]
    assert row["cycles"] == 2.0 * row["gfn_probes"] > 0
    with pytest.raises(TypeError, match="CostModel"):
        replay(_VM(), [], costs={"gfn_probes": 2.0})


def test_text_report_fits_80_columns_and_has_the_header():
    lay = load_layout("q35-ovmf-smm")
    results = []
    for d in ("v6.5", "v6.6"):
        vm = _VM(d)
        for o in build_ops(lay):
            vm.set_user_memory_region(o.ioctl_slot, o.flags, o.gpa, o.size, o.ua)
        results.append(replay(vm, churn_ops(lay), tracked=300, track_after=0, seed=5))
    text = render_replay(results, scenario="layout q35-ovmf-smm + boot churn", seed=5,
                         list_ops=True)
    lines = text.splitlines()
    assert max(len(l) for l in lines) <= MAX_WIDTH
    assert lines[0].startswith("Memslot trace replay") and lines[0].endswith("kvmpt 0.1.0")
    assert "design:   v6.5, v6.6" in text and "seed:     5" in text
    assert "scenario: layout q35-ovmf-smm + boot churn" in text
    assert "128 MiB" in text and "32,768 pages" in text      # numbers carry units
    assert "ops that made tracked gfns stale" in text


# ---------------------------------------------------------------------------
# The model's end states

@pytest.fixture(scope="module")
def VM():
    return _VM


def _built(VM, design, layout):
    vm = VM(design=Design.coerce(design))
    for o in build_ops(load_layout(layout)):
        vm.set_user_memory_region(o.ioctl_slot, o.flags, o.gpa, o.size, o.ua)
    return vm


@pytest.mark.parametrize("design", ["v6.5", "v6.6"])
@pytest.mark.parametrize("path", [VGA, SMM_ON, SMM_OFF, TRACES / "qemu_vga_bar_toggle_2020.csv"])
def test_model_replays_real_traces_without_mismatch(VM, design, path):
    res = replay(VM(design=Design.coerce(design)), load_ops(path), kvmgt=True)
    assert res.mismatches == []
    assert res.counts["MOVE"] == 0
    assert res.invariant_violations == ()


@pytest.mark.parametrize("layout", ["i440fx-seabios", "i440fx-seabios-smm", "q35-ovmf",
                                    "q35-ovmf-smm"])
def test_model_builds_every_layout(VM, layout):
    vm = _built(VM, "v6.6", layout)
    lay = load_layout(layout)
    for a in lay.address_spaces:
        got = [(s.id, s.base_gfn, s.npages, s.flags) for s in vm.memslots(a)]
        want = [(s.slot, s.base_gfn, s.npages, s.flags) for s in lay.slots_in(a)]
        assert got == want


def test_model_move_is_rejected_with_kvmgt_in_v66_only(VM):
    for design, want in (("v6.6", errno.EINVAL), ("v6.5", 0)):
        vm = _built(VM, design, "q35-ovmf")
        aper = load_layout("q35-ovmf").with_role("vgpu-aperture")[0]
        moved = op(0, aper.slot, 0xd0000000, aper.size, ua=aper.ua, ret=-want)
        res = replay(vm, [moved], kvmgt=True)
        assert res.results[0].kind == "MOVE"
        assert res.results[0].errno == want and res.mismatches == []


@pytest.mark.parametrize("design", ["v6.5", "v6.6"])
def test_model_smm_delete_case(VM, design):
    """The AS1 (SMM) DELETE of a RAM slot while KVMGT tracks AS0 gfns in that range
    (workloads.md §2.5, [D] hypothesis): both hook designs act on gfn ranges without
    an address space, so the gfns in the deleted range lose KVMGT's entry."""
    lay = load_layout("q35-ovmf-smm")
    vm = _built(VM, design, "q35-ovmf-smm")
    as1_low = [s for s in lay.with_role("ram-low") if s.as_id == 1][0]
    delete = op(1, as1_low.slot, as1_low.gpa, 0, ua=as1_low.ua, ret=0)
    res = replay(vm, [delete], tracked=200, track_after=0, seed=7)
    r = res.results[0]
    assert r.ok and r.kind == "DELETE"
    in_range = [g for g in res.tracked.gfns
                if as1_low.base_gfn <= g < as1_low.base_gfn + as1_low.npages]
    assert in_range
    assert r.hook_calls, "a DELETE with KVMGT attached must reach a page-track hook"
    assert set(in_range) <= set(res.stale_gfns)


def test_model_replay_designs_and_report(VM):
    lay = load_layout("q35-ovmf-smm")
    results = replay_designs(churn_ops(lay), ("v6.5", "v6.6"), setup_ops=build_ops(lay),
                             tracked=1000, track_after=0, seed=0)
    assert [r.design.name for r in results] == ["v6.5", "v6.6"]
    for r in results:
        assert r.mismatches == []
        assert set(r.counts) == set(KINDS)
    text = render_replay(results, scenario="q35-ovmf-smm churn", seed=0)
    assert max(len(l) for l in text.splitlines()) <= MAX_WIDTH


def test_auto_track_point_is_after_the_last_big_ram_create():
    from kvmpt.workload.replay import auto_track_point
    on, off = load_qemu_trace(SMM_ON), load_qemu_trace(SMM_OFF)
    assert on[auto_track_point(on) - 1].lineno == 71          # Slot#9 0x100000 3 GiB
    assert off[auto_track_point(off) - 1].lineno == 37
    assert auto_track_point(load_qemu_trace(VGA)) == 0


@pytest.mark.parametrize("path", [VGA, SMM_ON, SMM_OFF, TRACES / "format_samples.trace"])
def test_classify_agrees_with_the_model(VM, path):
    """The decision replay reports is the change the model then makes, op by op."""
    vm = VM(design=Design.preset("v6.6"))
    for o in infer_prologue(load_ops(path)) + load_ops(path):
        want = classify(o, vm)
        n = len(vm.op_log)
        try:
            vm.set_user_memory_region(o.ioctl_slot, o.flags, o.gpa, o.size, o.ua)
        except OSError:
            pass
        got = vm.op_log[-1].change if len(vm.op_log) > n else "REJECTED"
        assert got == want, o


def test_model_smm_boot_trace_as1_delete_stales_gfns(VM):
    """The SMM-on boot trace with 4,000 tracked gfns placed once RAM is laid out:
    the AS1 DELETE of the 0..3 GiB slot at trace line 72 drops KVMGT's entries for
    the tracked gfns that AS0 slot 9 still holds (workloads.md §2.5 [D]).  v6.5
    also WARNs: flush_slot decrements the AS1 slot's zero counters."""
    ops = load_qemu_trace(SMM_ON)
    out = {}
    for d in ("v6.5", "v6.6"):
        res = replay(VM(design=Design.preset(d)), ops, tracked=4000, seed=0)
        assert res.tracked.placed_after == 68 and res.mismatches == []
        st = res.staling_ops
        assert [(r.op.lineno, r.op.as_id, r.kind) for r in st] == [(72, 1, "DELETE")]
        in_slot9 = [g for g in res.tracked.gfns if 0x100 <= g < 0x100 + 786176]
        assert st[0].newly_stale == len(in_slot9) > 0
        out[d] = res
    assert len(out["v6.5"].warnings) > 0 and out["v6.6"].warnings == []


def test_progress_bar():
    res = replay(_VM(), load_qemu_trace(VGA), progress=True)
    assert res.mismatches == [] and res.unattributed_stale == 0


def test_model_with_the_cost_table(VM):
    costs = default_costs()
    res = replay(VM(design=Design.preset("v6.5")), load_qemu_trace(SMM_ON), tracked=2000,
                 costs=costs)
    table = res.hook_table()
    flush = table["track_flush_slot"]
    assert flush["cycles"] == pytest.approx(
        sum(costs.total(c.work) for c in res.hook_calls() if c.hook == "track_flush_slot"))
    assert flush["cycles"] > 0 and flush["mmu_lock_cycles"] > 0
    assert 0 < flush["longest_hold_cycles"] <= flush["mmu_lock_cycles"]
    assert res.us(flush["cycles"]) == pytest.approx(costs.cycles_to_us(flush["cycles"]))
    text = render_replay([res], scenario="smm on", seed=0)
    assert "Mcycles" in text and "as time" in text


def test_vm_replay_observes_a_kvmgt_the_caller_attached(VM):
    vm = _built(VM, "v6.6", "q35-ovmf-smm")
    gvt = vm.attach_kvmgt()
    gvt.shadow(0x200)                                 # in AS0 ram-low
    as1_low = [s for s in load_layout("q35-ovmf-smm").with_role("ram-low") if s.as_id == 1][0]
    res = vm.replay([op(1, as1_low.slot, as1_low.gpa, 0, ua=as1_low.ua, ret=0)])
    assert res.kvmgt and res.tracked is None
    assert res.stale_gfns == (0x200,) and res.staling_ops[0].op.as_id == 1
