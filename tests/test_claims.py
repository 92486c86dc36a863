"""kvmpt.review.claims (the notebook's evidence), its figures, the dashboard and the report text."""
from __future__ import annotations

import errno
import subprocess
import sys

import plotly.graph_objects as go
import pytest

from kvmpt import Design

from kvmpt.review import claims
from kvmpt.workload.costs import default_costs
from kvmpt.infra.text import MAX_WIDTH, table

V65, V66 = Design.preset("v6.5"), Design.preset("v6.6")
REMOVE_ALLOW = V65.replace(slot_hook="remove")


# ------------------------------------------------------------------ the claims
@pytest.mark.parametrize("cause, err", [("max_gfn", errno.EINVAL), ("enomem", errno.ENOMEM)])
def test_failed_move_flush_hook_strands_every_shadow(cause, err):
    r = claims.failed_move(V65, cause, tracked=32, writes=500)
    assert r.errno == err
    assert r.before.stale == 0 and r.before.ptable == 32 and r.before.kvm_tracked == 32
    assert r.after.shadowed == 32 and r.after.ptable == 0 and r.after.kvm_tracked == 0
    assert r.after.stale == 32
    assert r.missed == 500 and r.writes["handled"] == 0
    assert ("track_flush_slot", "kvmgt", 32, True) in r.hook_calls


@pytest.mark.parametrize("design", [REMOVE_ALLOW, V66])
@pytest.mark.parametrize("cause", ["max_gfn", "enomem"])
def test_failed_move_commit_hook_changes_nothing(design, cause):
    r = claims.failed_move(design, cause, tracked=32, writes=500)
    assert r.errno in (errno.EINVAL, errno.ENOMEM)
    assert r.after == r.before
    assert r.missed == 0 and r.writes["handled"] == 500


def test_failed_move_rejects_unknown_cause():
    with pytest.raises(ValueError, match="cause"):
        claims.failed_move(V66, "eio")


def test_move_with_kvmgt():
    for d in (V65, REMOVE_ALLOW):
        r = claims.move_with_kvmgt(d, tracked=16, writes=200)
        assert r["errno"] == 0 and r["after"].stale == 16 and r["writes"]["missed"] == 200
        assert r["delta_gfns"] == (4 << 30) >> 12
    r = claims.move_with_kvmgt(V66, tracked=16, writes=200)
    assert r["errno"] == errno.EINVAL and r["after"] == r["before"]
    assert r["writes"]["handled"] == 200 and r["writes"]["missed"] == 0


def test_memslot_flow_hook_positions():
    f65, f66 = claims.memslot_flow("v6.5"), claims.memslot_flow("v6.6")
    assert f65["notifiers"] == ["kvmgt", "kvm_mmu"] and f66["notifiers"] == ["kvmgt"]
    failing = "MOVE, ENOMEM in prepare"
    steps65 = [(step, S) for label, step, S, _ in f65["events"] if label == failing]
    assert steps65.index(("flush_slot", "S2c")) < steps65.index(("prepare", "S3"))
    assert ("restore", "S4") in steps65
    assert [(label, S) for label, step, S, _ in f66["events"] if step == "remove_region"] \
        == [("DELETE slot 1", "S7")]
    assert [e for _, e, _ in f65["ops"]] == [0, 0, errno.ENOMEM, 0, 0]
    assert [e for _, e, _ in f66["ops"]] == [0, 0, errno.EINVAL, errno.EINVAL, 0]
    assert dict((label, s) for label, _, s in f65["ops"])[failing] == 4


def test_slot_hook_cost_per_design():
    n, t = 1 << 16, 100
    c65 = claims.slot_hook_cost(V65, n, t)
    c66 = claims.slot_hook_cost(V66, n, t)
    assert c65.probes == c66.probes == n                 # both walk every gfn of the slot
    assert c65.hash_deletes == c66.hash_deletes == t
    assert c65.counter_updates == t and c65.lpage_updates == 2 * t
    assert c65.wasted_updates == 3 * t and c66.wasted_updates == 0
    assert c65.mmu_lock_max_hold >= n                    # one hold across the whole loop
    assert c66.mmu_lock_held == c66.mmu_lock_max_hold == 0
    assert c66.table_lock_hold >= n                      # ... but vgpu_lock across it


def test_scaling_matches_an_exact_run():
    exact = claims.slot_hook_cost(V65, 1 << 20, 512)
    from kvmpt.review.claims.costs import _scale
    scaled = _scale(claims.slot_hook_cost(V65, 1 << 18, 512), 1 << 20)
    assert not scaled.exact and scaled.probes == exact.probes
    assert scaled.wasted_updates == exact.wasted_updates
    assert abs(scaled.chain_steps - exact.chain_steps) <= 0.05 * exact.chain_steps + 16
    assert abs(scaled.mmu_lock_max_hold - exact.mmu_lock_max_hold) \
        <= 0.01 * exact.mmu_lock_max_hold


def test_ptable_walk_proposal_is_flat_in_slot_size():
    a, b = claims.ptable_walk_cost(1 << 10, 64), claims.ptable_walk_cost(1 << 28, 64)
    assert a.probes == b.probes and a.hash_deletes == 64
    assert a.mmu_lock_held == 0 and a.wasted_updates == 0


def test_cost_curve_and_prices():
    rows = claims.price_rows(claims.cost_curve(claims.SECTION3_DESIGNS, [1 << 12, 1 << 22],
                                               [8], exact_max_pages=1 << 14))
    assert {r["design"] for r in rows} == set(claims.SECTION3_DESIGNS) | {claims.PROPOSAL}
    big = {r["design"]: r for r in rows if r["npages"] == 1 << 22}
    assert not big["v6.5: flush + drop, mmu_lock"]["exact"]
    v65 = big["v6.5: flush + drop, mmu_lock"]
    c = default_costs()
    # v6.5 probes every gfn of the slot inside one write_lock(mmu_lock) hold
    assert c.cycles_to_us(v65["probes"] * c.cycles("hash_probe")) <= v65["hold_us"] <= v65["us"]
    assert v65["hold_us"] == pytest.approx(c.cycles_to_us(c.total(v65["max_hold_ops"])))
    assert v65["wasted_cycles"] == pytest.approx(8 * (300 + 2 * 300))
    assert big["v6.6: remove_region, vgpu_lock"]["hold_us"] == 0
    assert big[claims.PROPOSAL]["hold_us"] == 0 and big[claims.PROPOSAL]["wasted_cycles"] == 0
    assert all(r["us"] > 0 for r in rows)


def test_qemu_traffic_has_no_move():
    rows = claims.qemu_move_census()
    assert {r["trace"] for r in rows} >= {"i440fx_seabios_40g_smm_off",
                                          "i440fx_seabios_40g_smm_on"}
    assert all(r["move"] == 0 and r["mismatches"] == 0 for r in rows)


def test_smm_address_space_delete_stales_kvmgt_in_both_designs():
    rows = [r for r in claims.qemu_move_census(tracked=64)
            if r["trace"] == "i440fx_seabios_40g_smm_on"]
    assert {r["design"] for r in rows} == {"v6.5", "v6.6"}
    for r in rows:
        assert r["stale"] > 0 and r["staled_by"] == ["AS1 DELETE"]
    assert {r["design"]: r["warns"] > 0 for r in rows} == {"v6.5": True, "v6.6": False}
    off = [r for r in claims.qemu_move_census(tracked=64)
           if r["trace"] == "i440fx_seabios_40g_smm_off"]
    assert all(r["stale"] == 0 for r in off)


def test_lock_verdicts():
    v = claims.lock_verdicts()
    assert {k: r.verdict for k, r in v.items()} == {
        "none": "use-after-free", "mmu_lock": "sleep-in-atomic", "gfn_lock": "deadlock",
        "vgpu_lock": "safe"}


def test_summary_table_fits_a_mail():
    d = claims.SUMMARY_DESIGNS
    cols, rows, nums = claims.summary_table(
        d, {x.name: claims.failed_move(x, tracked=8, writes=100) for x in d.values()},
        {x.name: claims.move_with_kvmgt(x, tracked=8, writes=100) for x in d.values()},
        claims.lock_verdicts(), claims.qemu_move_census(), size_pages=1 << 20, tracked=8,
        exact_max_pages=1 << 14)
    text = table(cols, rows)
    assert max(map(len, text.splitlines())) <= MAX_WIDTH
    assert ".." not in text, "a label was clipped"
    assert nums["v6.5"]["failed_missed"] == 100 and nums["v6.6"]["failed_missed"] == 0
    assert nums["v6.6"]["move"] == "-EINVAL" and nums["v6.6"]["verdict"] == "safe"
    assert nums[claims.PROPOSAL_SHORT]["verdict"] is None


def test_model_side_never_imports_the_view():
    code = ("import sys, kvmpt.kernel.vm, kvmpt.review.claims, kvmpt.race, kvmpt.workload.replay; "
            "bad = [m for m in ('plotly', 'ipywidgets', 'kvmpt.review.dashboard') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------ the figures
def _check_buttons(fig: go.Figure, n_designs: int):
    menu = fig.layout.updatemenus[0]
    assert len(menu.buttons) == n_designs
    for b in menu.buttons:
        vis = b.args[0]["visible"]
        assert len(vis) == len(fig.data) and any(vis)


def test_memslot_figures():
    from kvmpt.review.figures import memslot as M
    flows = {n: claims.memslot_flow(n) for n in ("v6.5", "v6.6")}
    f = M.update_timelines(flows)
    _check_buttons(f, 2)
    assert f.layout.title.text and f.layout.xaxis.title.text
    fm = {label: claims.failed_move(d, tracked=8, writes=50)
          for label, d in claims.SECTION2_DESIGNS.items()}
    f = M.failed_move_figure(fm)
    _check_buttons(f, 3)
    assert "8 of 8" in f.layout.title.text and f.layout.yaxis.title.text == "pages"
    f = M.qemu_census_figure(claims.qemu_move_census(designs=["v6.6"]))
    assert "0 MOVE" in f.layout.title.text


def test_cost_figure_metric_buttons():
    from kvmpt.review.figures import costs as K
    rows = claims.price_rows(claims.cost_curve({"v6.5": V65}, [1 << 12, 1 << 14], [4, 8],
                                               exact_max_pages=1 << 14))
    for x in ("npages", "tracked"):
        f = K.hook_cost_figure(rows, x=x)
        buttons = f.layout.updatemenus[0].buttons
        assert {"hook time (µs)", "wasted updates"} <= {b.label for b in buttons}
        for b in buttons:
            assert len(b.args[0]["y"]) == len(f.data)
        assert f.layout.xaxis.type == "log" and f.layout.yaxis.title.text
    with pytest.raises(ValueError):
        K.hook_cost_figure(rows, x="seed")
