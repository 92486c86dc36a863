"""Scenarios: files load and validate with line-precise errors; run() is deterministic and
shows what each design does (v6.5 loses protection on a failed MOVE, v6.6 rejects the MOVE)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

import kvmpt
from kvmpt.kernel.design import Design
from kvmpt.workload.scenario import (PROFILES, SCENARIO_DIR, RunResult, Scenario, ScenarioError,
                            list_scenarios, load_scenario, run)

SHIPPED = ("q35-desktop", "q35-3d", "q35-reboot", "q35-adversarial", "i440fx-boot-trace",
           "i440fx-desktop")


def small(name: str, **kw) -> Scenario:
    """A shipped scenario cut down so a test run takes a fraction of a second."""
    return load_scenario(name).with_overrides(**{"duration_s": 0.5, "write_rate": 1000.0,
                                                 "tracked_gfns": 1000, **kw})


# ------------------------------------------------------------------ loading

def test_shipped_scenarios_load_with_tags():
    assert set(SHIPPED) <= set(list_scenarios())
    for name in list_scenarios():
        sc = load_scenario(name)
        assert sc.name == name and sc.churn in PROFILES
        for key in ("tracked_gfns", "write_rate", "duration_s", "move_rate"):
            fig = sc.figure(key)
            assert fig.tag in ("[S]", "[D]", "[G]", "[M]", "[R]") and fig.source
        assert sc.layout_obj().slots


def test_load_by_path_and_scenario_passthrough():
    sc = load_scenario(SCENARIO_DIR / "q35-desktop.toml")
    assert load_scenario(sc) is sc
    with pytest.raises(ScenarioError, match="unknown scenario 'nope'"):
        load_scenario("nope")


def test_package_keeps_every_public_name():
    """The package re-exports what the single module exported; ``kvmpt.run`` is its run."""
    import kvmpt.workload.scenario as pkg
    from kvmpt.workload.scenario import loop
    assert all(getattr(pkg, name) is not None for name in pkg.__all__)
    assert kvmpt.run is pkg.run is loop.run and pkg.DEFAULT_SCENARIO in list_scenarios()


def test_with_overrides():
    sc = load_scenario("q35-desktop")
    o = sc.with_overrides(seed=7, tracked_gfns=10, write_rate=5.0, duration_s=0.1,
                          churn="adversarial", move_rate=3.0, prepare_fail_rate=0.5,
                          ram_gib=16)
    assert (o.seed, o.tracked_gfns, o.churn, o.rate("move_rate")) == (7, 10, "adversarial", 3.0)
    assert o.figure("move_rate").source.startswith("override") is False  # not in the file
    assert sc.with_overrides(churn="adversarial").rate("move_rate") == \
        PROFILES["adversarial"]["move_rate"].value
    assert sc.figure("write_rate").tag == "[G]"
    assert "override of 2000" in sc.with_overrides(write_rate=1.0).figure("write_rate").source
    high = [s for s in o.layout_obj().slots if s.role == "ram-high"]
    assert high and all(s.size == 14 * (1 << 30) for s in high)      # 16 GiB - 2 GiB below 4G
    with pytest.raises(ValueError, match="'bogus'"):
        sc.with_overrides(bogus=1)
    with pytest.raises(ValueError, match="churn profile 'nope'"):
        sc.with_overrides(churn="nope")
    with pytest.raises(ValueError, match="prepare_fail_rate"):
        sc.with_overrides(prepare_fail_rate=2.0)
    with pytest.raises(ValueError, match="traced boot"):
        load_scenario("i440fx-boot-trace").with_overrides(ram_gib=64)
    with pytest.raises(ValueError, match="below 4G"):
        sc.with_overrides(ram_gib=1).layout_obj()
    assert dataclasses.is_dataclass(sc) and sc == load_scenario("q35-desktop")


# ------------------------------------------------------------ broken files

def _broken(tmp_path, old: str, new: str, name: str = "q35-desktop") -> Path:
    text = (SCENARIO_DIR / f"{name}.toml").read_text()
    assert old in text, old
    p = tmp_path / f"{name}.toml"
    p.write_text(text.replace(old, new, 1))
    return p


def _line(path: Path, needle: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


@pytest.mark.parametrize("old,new,needle,where,what", [
    ("[writes]\n", "[writes]\nwrite_rat = 3\n", "write_rat", "[writes] field 'write_rat'",
     "unknown field"),
    ('tag = "[G]", source = "workloads.md §2.3/§5', 'tag = "G", source = "workloads.md §2.3/§5',
     'tag = "G"', "[writes] field 'write_rate'", "tag 'G'"),
    ("write_rate = { value = 2000, low = 100", "write_rate = { value = 20, low = 100",
     "value = 20,", "[writes] field 'write_rate'", "outside its range"),
    ('profile = "desktop"', 'profile = "office"', "office", "[churn] field 'profile'",
     "'office' is not one of"),
    ('layout = "q35-ovmf-smm"', 'layout = "q99"', "q99", "[vm] field 'layout'",
     "unknown layout"),
    ('boot = "layout"', 'boot = "trace:nope"', "trace:nope", "[vm] field 'boot'", "neither"),
    ('name = "q35-desktop"', 'name = "other"', 'name = "other"', "[scenario] field 'name'",
     "differs from the file name"),
    ('boot = "layout"', 'boot = "trace:i440fx_seabios_40g_smm_on"\nram_gib = { value = 16, '
     'tag = "[G]", source = "x" }', "ram_gib", "[vm] field 'ram_gib'", "traced boot"),
    ("seed = 20221111", 'seed = "x"', 'seed = "x"', "[scenario] field 'seed'",
     "must be int, got str 'x'"),
    ('layout = "q35-ovmf-smm"', "layout = 35", "layout = 35", "[vm] field 'layout'",
     "must be str, got int 35"),
    ("pt_fraction = { value = 0.95, low = 0.5, high = 1.0",
     "pt_fraction = { value = 1.5, low = 0.5, high = 2.0", "value = 1.5",
     "[writes] field 'pt_fraction'", "1.5 is outside 0..1"),
    ("tracked_gfns = { value = 4000,", "tracked_gfns = { value = 4000.5,", "4000.5",
     "[tracking] field 'tracked_gfns'", "must be an integer, got 4000.5"),
    ("seed = 20221111", "seed = 9223372036854775808", "seed = 9223",
     "[scenario] field 'seed'", "9223372036854775808 is outside 0..9223372036854775807"),
    ('track_at = "after-boot"', 'track_at = "never"', "never", "[tracking] field 'track_at'",
     "is not one of"),
])
def test_errors_name_file_line_and_field(tmp_path, old, new, needle, where, what):
    p = _broken(tmp_path, old, new)
    with pytest.raises(ScenarioError) as e:
        load_scenario(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}:{_line(p, needle)}: {where}"), msg
    assert what in msg


def test_plain_number_must_be_a_figure(tmp_path):
    p = _broken(tmp_path, "duration_s = { value = 2.0, low = 0.5, high = 60, tag = \"[G]\", "
                "source = \"simulated runtime after the driver loads, kept short for the "
                "plain-Python write path\" }", "duration_s = 2.0")
    with pytest.raises(ScenarioError) as e:
        load_scenario(p)
    assert f"{p}:{_line(p, 'duration_s = 2.0')}: [writes] field 'duration_s': must be an " \
           "inline table" in str(e.value)


def test_missing_table_field_and_toml_syntax(tmp_path):
    text = (SCENARIO_DIR / "q35-desktop.toml").read_text()
    p = tmp_path / "q35-desktop.toml"
    p.write_text(text[:text.index("[churn]")])
    with pytest.raises(ScenarioError, match=r"missing \[churn\] table"):
        load_scenario(p)
    p = _broken(tmp_path, 'profile = "desktop"\n', "")
    with pytest.raises(ScenarioError) as e:
        load_scenario(p)
    assert f":{_line(p, '[churn]')}: [churn]: missing field 'profile'" in str(e.value)
    p.write_text("[scenario\n")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load_scenario(p)
    p.write_text(text + "\n[extra]\nx = 1\n")
    with pytest.raises(ScenarioError, match=rf"{p}:{_line(p, '[extra]')}: \[extra\]"):
        load_scenario(p)


# -------------------------------------------------------------------- run

def test_run_is_deterministic_and_seeded():
    sc = small("q35-desktop")
    a, b = run(sc, "v6.6"), run(sc, Design.preset("v6.6"))
    assert isinstance(a, RunResult) and a.summary == b.summary
    for k in a.timeseries:
        assert np.array_equal(a.timeseries[k], b.timeseries[k]), k
    c = run(sc, "v6.6", seed=sc.seed + 1)
    assert c.seed == sc.seed + 1 and c.summary != a.summary
    assert kvmpt.run is run


def test_result_shape():
    r = kvmpt.run(small("q35-desktop"), "v6.5")
    s, ts = r.summary, r.timeseries
    for key in ("wasted_cycles", "hook_cycles_per_delete", "mmu_lock_max_hold_us",
                "mmu_lock_hold_us_total", "trapped_write_cycles", "missed_writes",
                "stale_gfns_end", "violations_end", "ops_DELETE", "moves_rejected",
                "prepare_failures"):
        assert np.isscalar(s[key]), key
    n = s["ops_total"]
    assert n > 0 and all(len(v) == n for v in ts.values())
    assert {"cyc_hash_probe", "cyc_zap", "cyc_srcu_sync", "mmu_lock_hold_us",
            "missed_writes", "violations"} <= set(ts)
    assert np.all(np.diff(ts["missed_writes"]) >= 0)
    dels = (ts["kind"] == "DELETE") & (ts["errno"] == 0)
    assert s["hook_cycles_per_delete"] == pytest.approx(ts["hook_cycles"][dels].mean())
    assert s["writes_total"] == 500
    assert len(r.rows()) == n and isinstance(r.rows()[0]["t_s"], float)
    assert "v6.5" in r.summary_table() and "missed writes" in r.summary_table()
    hc = r.hook_calls
    kvmgt = hc["node"] == "kvmgt"
    assert kvmgt.sum() == s["hook_calls"] and set(hc["op"]) <= set(ts["op"])
    assert s["mmu_lock_hold_us_per_hook_call"] == pytest.approx(
        hc["mmu_lock_held_us"][kvmgt].mean())
    assert ts["hook_cycles"].sum() == pytest.approx(hc["cycles"][kvmgt].sum())


def test_v65_flush_holds_mmu_lock_across_the_slot_walk():
    sc = small("q35-desktop")
    old, new = run(sc, "v6.5"), run(sc, "v6.6")
    # v6.5: write_lock(mmu_lock) across kvmgt_page_track_flush_slot's loop; v6.6: only the zap
    assert old.summary["mmu_lock_max_hold_us"] > 10 * new.summary["mmu_lock_max_hold_us"]
    assert new.summary["missed_writes"] == old.summary["missed_writes"] == 0


def test_adversarial_moves_show_the_v65_bug_and_the_v66_rejection():
    sc = small("q35-adversarial", prepare_fail_rate=0.5)
    old, new = run(sc, "v6.5"), run(sc, "v6.6")
    o, n = old.summary, new.summary
    assert o["ops_MOVE"] == n["ops_MOVE"] > 0
    assert o["prepare_failures"] > 0 and o["moves_rejected"] == 0
    assert o["missed_writes"] > 0 and o["stale_gfns_end"] > 0 and o["violations_end"] > 0
    assert o["wasted_cycles"] > 0 and o["harmful_hook_calls"] > 0
    assert n["moves_rejected"] == n["ops_MOVE"] and n["prepare_failures"] == 0
    assert n["missed_writes"] == 0 and n["stale_gfns_end"] == 0 and n["violations_end"] == 0
    assert n["wasted_cycles"] == 0


def test_quiet_profile_issues_no_move():
    r = run(small("q35-desktop", churn="quiet"), "v6.6")
    assert r.summary["ops_MOVE"] == 0
    assert set(r.timeseries["phase"]) == {"boot"}


def test_incremental_checks_match_full_checks():
    sc = small("q35-adversarial", prepare_fail_rate=0.5, duration_s=0.3)
    a, b = run(sc, "v6.5"), run(sc, "v6.5", check="all")
    assert np.array_equal(a.timeseries["violations"], b.timeseries["violations"])
    assert np.array_equal(a.timeseries["stale_gfns"], b.timeseries["stale_gfns"])


def test_q35_adversarial_counts_are_the_models_own():
    # issue 10: run() priced every "handled" + "ignored" write as trapped (401 on this run)
    # while the model emulated 171; a write no memslot holds is an MMIO exit, not a trap.
    r = run(load_scenario("q35-adversarial").with_overrides(duration_s=0.5), "v6.5")
    s, w, c = r.summary, r.work, r.costs
    assert s["trapped_writes"] == w.emulated_writes == 171
    assert s["writes_mmio"] == r.write_stats["mmio"] == w.mmio_exits == 230
    assert s["writes_handled"] + s["writes_ignored"] == s["trapped_writes"]
    assert s["writes_total"] == sum(r.write_stats[k] for k in ("direct", "ignored", "handled",
                                                                "mmio"))
    assert s["missed_writes"] == r.write_stats["missed"]
    # the trapped-write price: exit + emulation per emulated write, GVT's handler per
    # handled write, plus the ptable lookups (a few cycles each)
    floor = (s["trapped_writes"] * (c.cycles("vm_exit") + c.cycles("emulation"))
             + s["writes_handled"] * c.cycles("gvt_handler"))
    assert floor <= s["trapped_write_cycles"] < floor + 1000 * s["trapped_writes"]
    assert s["mmio_us"] == pytest.approx(c.cycles_to_us(s["writes_mmio"] * c.cycles("mmio_exit")))


def test_smm_boot_trace_reaches_kvmgt_from_address_space_1():
    # workloads.md §2.5 [D]: AS1 DELETEs of RAM drop KVMGT's entries for AS0-tracked gfns;
    # in v6.5 the per-gfn remove against the AS1 slot's zero counters WARNs.
    sc = load_scenario("i440fx-boot-trace").with_overrides(duration_s=0.2, write_rate=500.0,
                                                           tracked_gfns=500)
    old, new = run(sc, "v6.5"), run(sc, "v6.6")
    assert old.summary["kernel_warnings"] > 0 and new.summary["kernel_warnings"] == 0
    assert old.summary["stale_gfns_end"] > 0 and new.summary["stale_gfns_end"] > 0


def test_reboots_are_periodic_and_drop_then_restore_the_shadows():
    sc = small("q35-reboot", duration_s=2.0, reboot_rate=1.0)
    r = run(sc, "v6.6")
    ts = r.timeseries
    causes = list(ts["cause"])
    assert 1 <= causes.count("reset re-layout") // 4 <= 2     # ram-low in 2 AS, DELETE + CREATE
    assert r.summary["shadowed_end"] == sc.tracked_gfns
    # between the reset re-layout and the vGPU reset the shadows are stale in both designs
    assert ts["stale_gfns"].max() > 0 and r.summary["stale_gfns_end"] == 0


def test_mmu_lock_design_counts_read_holds_on_the_write_path():
    # the mmu_lock design: kvmgt_page_track_write() looks up ptable and runs the handler
    # under read_lock(&kvm->mmu_lock); those holds are reported apart from write holds
    sc = small("q35-desktop", churn="quiet")
    r = run(sc, Design(kvmgt_lock="mmu_lock"))
    s = r.summary
    held, longest = r.costs.mmu_lock_hold(r.work, "read")
    assert s["mmu_lock_read_hold_us_total"] == pytest.approx(r.costs.cycles_to_us(held))
    assert held > 0
    assert s["mmu_lock_read_max_hold_us"] >= r.costs.cycles_to_us(r.costs.cycles("gvt_handler"))
    assert s["writes_handled"] > 0
    v66 = run(sc, "v6.6").summary
    assert v66["mmu_lock_read_hold_us_total"] == v66["mmu_lock_read_max_hold_us"] == 0
