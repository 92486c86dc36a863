"""Tests of kvmpt.race, the lock-design explorer (issues 5 and 13), and its figures."""
from __future__ import annotations

import subprocess
import sys

import pytest

from kvmpt.kernel.lockdep import GFN_LOCK, MMU_LOCK, VGPU_LOCK, Lockdep
from kvmpt.race import (DEFAULT_SCENARIO, LOCKS, SCENARIOS, VERDICTS, Bug, Lock, _cycle,
                        _Model, explore, matrix, sample)
from kvmpt.race.steps import Step

# What the kernel code of each design does in each scenario (spec section 4.6; the SRCU
# reasoning for detach and same-slot DELETE is in kvmpt/race/'s docstring).
EXPECTED = {
    "write_vs_unshadow": {"none": "use-after-free", "mmu_lock": "sleep-in-atomic",
                          "gfn_lock": "deadlock", "vgpu_lock": "safe"},
    "write_vs_remove_region": {"none": "use-after-free", "mmu_lock": "sleep-in-atomic",
                               "gfn_lock": "deadlock", "vgpu_lock": "safe"},
    "write_same_slot_vs_remove_region": {"none": "safe", "mmu_lock": "sleep-in-atomic",
                                         "gfn_lock": "deadlock", "vgpu_lock": "safe"},
    "write_vs_detach": {"none": "safe", "mmu_lock": "sleep-in-atomic",
                        "gfn_lock": "deadlock", "vgpu_lock": "safe"},
    "two_vcpus": {"none": "use-after-free", "mmu_lock": "sleep-in-atomic",
                  "gfn_lock": "deadlock", "vgpu_lock": "safe"},
    "two_vcpus_vs_unshadow": {"none": "use-after-free", "mmu_lock": "sleep-in-atomic",
                              "gfn_lock": "deadlock", "vgpu_lock": "safe"},
    "write_vs_unshadow_vs_remove_region": {"none": "use-after-free",
                                           "mmu_lock": "sleep-in-atomic",
                                           "gfn_lock": "deadlock", "vgpu_lock": "safe"},
    # two vGPUs (issue 13): per-instance locks and tables
    "two_vgpus_write_vs_unshadow": {"none": "safe", "mmu_lock": "sleep-in-atomic",
                                    "gfn_lock": "deadlock", "vgpu_lock": "safe"},
    "two_vgpus_reclaim": {"none": "use-after-free", "mmu_lock": "sleep-in-atomic",
                          "gfn_lock": "deadlock", "vgpu_lock": "not-held"},
}
PAIRS = [(lk, sc) for sc in EXPECTED for lk in LOCKS]


@pytest.fixture(scope="module")
def results():
    return {(lk, sc): explore(lk, sc) for lk, sc in PAIRS}


# --- the contract -------------------------------------------------------------------------
@pytest.mark.parametrize("lock,verdict", [("none", "use-after-free"),
                                          ("mmu_lock", "sleep-in-atomic"),
                                          ("gfn_lock", "deadlock"), ("vgpu_lock", "safe")])
def test_default_scenario_verdicts(lock, verdict):
    r = explore(lock=lock)
    assert r.scenario == DEFAULT_SCENARIO == "write_vs_unshadow"
    assert r.verdict == verdict
    assert isinstance(r.schedules, int) and r.schedules > 0
    assert r.states > 0 and r.transitions >= r.states - 1
    assert (r.witness is None) == (verdict == "safe")


@pytest.mark.parametrize("lock,scenario", PAIRS)
def test_every_scenario_every_design(results, lock, scenario):
    r = results[lock, scenario]
    assert r.verdict in VERDICTS
    assert r.verdict == EXPECTED[scenario][lock]
    assert 0 < r.failing_states < r.states or r.verdict == "safe"
    if r.verdict == "safe":
        assert r.failures == {} and r.witness is None and r.message is None
        assert r.kinds == {} and r.failing_states == 0 and r.end_states > 0
    else:
        # the verdict is the first reachable kind in VERDICTS order, and it is among them
        assert r.verdict in r.failures and 0 < r.failing_schedules <= r.schedules
        assert r.verdict == next(k for k in VERDICTS[1:] if k in r.kinds)
        assert r.message.startswith(r.verdict)


def test_scenarios_listed():
    assert set(SCENARIOS) == set(EXPECTED)
    assert {"write_vs_unshadow", "write_vs_remove_region", "write_vs_detach",
            "two_vcpus"} <= set(SCENARIOS)


# --- witnesses ----------------------------------------------------------------------------
def _failing(r):
    return [s for s in r.witness_detail if s.failing]


def test_witness_rows_and_table(results):
    r = results["none", "write_vs_unshadow"]
    assert all(isinstance(t, str) and isinstance(s, str) for t, s in r.witness)
    assert {t for t, _ in r.witness} <= set(r.threads) == {"vcpu0", "gvt"}
    table = r.table()
    lines = table.splitlines()
    assert "vcpu0" in lines[0] and "gvt" in lines[0] and "mirrors" in lines[0]
    assert len(lines) == 2 + len(r.witness)
    for (_, text), line in zip(r.witness, lines[2:]):
        assert text in line
    assert lines[-1].lstrip().startswith("!")
    text = str(r)
    assert "use-after-free" in text and f"{r.schedules:,} schedules" in text and table in text
    assert "safe" in str(results["vgpu_lock", "write_vs_unshadow"])


def test_every_row_cites_a_kernel_function(results):
    for r in results.values():
        for s in r.witness_detail or []:
            path, _, rest = s.where.partition(":")
            assert path.endswith(".c") and "(" in rest and rest.endswith(")"), s.where


def test_use_after_free_witness_is_probe_then_free_then_read(results):
    r = results["none", "write_vs_unshadow"]
    rows = r.witness
    probe = next(i for i, (t, s) in enumerate(rows) if t == "vcpu0" and "p = node(0x1000)" in s)
    free = next(i for i, (t, s) in enumerate(rows) if t == "gvt" and "kfree" in s)
    assert probe < free < len(rows) - 1
    assert rows[-1][0] == "vcpu0" and "kfree'd" in rows[-1][1]
    # the unlocked lookup: vcpu0 holds no lock when it reads the freed node
    assert _failing(r)[0].held["vcpu0"] == ()


def test_remove_region_uaf_needs_a_bucket_neighbour(results):
    r = results["none", "write_vs_remove_region"]
    assert "node(0x2000)" in r.witness[-1][1]          # the deleted slot's gfn, not 0x1000
    assert any("kvmgt_protect_table_del(0x2000)" in s for t, s in r.witness if t == "memslot")
    # and kvm->srcu protects a write into the deleted slot itself
    assert results["none", "write_same_slot_vs_remove_region"].verdict == "safe"


def test_sleep_in_atomic_witness(results):
    r = results["mmu_lock", "write_vs_unshadow"]
    last = _failing(r)[0]
    assert last.thread == "vcpu0" and last.text == "mutex_lock(&vgpu->vgpu_lock)"
    assert MMU_LOCK.name in last.held["vcpu0"]
    assert "sleeping function called from invalid context" in r.message


def test_deadlock_witness_is_the_reentry(results):
    r = results["gfn_lock", "write_vs_unshadow"]
    last = _failing(r)[0]
    assert last.thread == "vcpu0" and "mutex_lock(&info->gfn_lock)" in last.text
    assert "intel_gvt_page_track_remove" in last.where
    assert GFN_LOCK.name in last.held["vcpu0"]
    assert any("failsafe" in s for _, s in r.witness)


def test_witness_is_shortest_and_counts_match_brute_force():
    """Enumerate every maximal path without state hashing: same schedule count, same failure
    counts, and no failing path shorter than the reported witness."""
    for lock in LOCKS:
        r = explore(lock)
        m = _Model(lock, DEFAULT_SCENARIO, r.slot_hook, True)
        counts, shortest = {}, {}
        stack = [(m.init, 0)]
        while stack:
            w, d = stack.pop()
            moves, dead, _ = m.expand(w)
            if dead is not None or not moves:
                kind = "deadlock" if dead is not None else "safe"
                counts[kind] = counts.get(kind, 0) + 1
                shortest[kind] = min(shortest.get(kind, d), d)
                continue
            for tid, res in moves:
                if isinstance(res, Bug):
                    counts[res.kind] = counts.get(res.kind, 0) + 1
                    shortest[res.kind] = min(shortest.get(res.kind, d + 1), d + 1)
                    continue
                for w2, _ in res.outcomes:
                    stack.append((m.step(w, tid, w2), d + 1))
        assert sum(counts.values()) == r.schedules
        assert {k: v for k, v in counts.items() if k != "safe"} == r.failures
        if r.witness is not None:
            executed = sum(not s.failing for s in r.witness_detail)
            length = executed + (r.verdict != "deadlock")   # a bug step is a step
            assert length == shortest[r.verdict]


# --- the programs come from the kernel code of each design --------------------------------
def _locks_in(lock, scenario, thread, where_part):
    m = _Model(lock, scenario, "flush" if lock in ("none", "mmu_lock") else "remove", True)
    prog = m.progs[m.names.index(thread)]
    return {(s.lock.name, s.mode) for s in prog if isinstance(s, Lock) and where_part in s.where}


def test_programs_follow_each_design():
    w = "kvmgt.c:kvmgt_page_track_write"
    assert _locks_in("none", DEFAULT_SCENARIO, "vcpu0", w) == set()
    assert _locks_in("mmu_lock", DEFAULT_SCENARIO, "vcpu0", w) == {(MMU_LOCK.name, "read")}
    assert {n for n, _ in _locks_in("gfn_lock", DEFAULT_SCENARIO, "vcpu0", w)} == \
        {VGPU_LOCK.name, GFN_LOCK.name}
    assert {n for n, _ in _locks_in("vgpu_lock", DEFAULT_SCENARIO, "vcpu0", w)} == \
        {VGPU_LOCK.name}
    h = "page_track.c:intel_vgpu_page_track_handler"
    assert VGPU_LOCK.name in {n for n, _ in _locks_in("none", DEFAULT_SCENARIO, "vcpu0", h)}
    assert _locks_in("vgpu_lock", DEFAULT_SCENARIO, "vcpu0", h) == set()   # hoisted
    rm = "kvmgt.c:intel_gvt_page_track_remove"
    assert GFN_LOCK.name in {n for n, _ in _locks_in("gfn_lock", DEFAULT_SCENARIO, "gvt", rm)}
    assert (MMU_LOCK.name, "write") in _locks_in("none", DEFAULT_SCENARIO, "gvt", rm)
    region = "kvmgt.c:kvmgt_page_track_remove_region"
    assert {n for n, _ in _locks_in("vgpu_lock", "write_vs_remove_region", "memslot",
                                    region)} == {VGPU_LOCK.name}


def test_slot_hook_and_design_knobs():
    from kvmpt.kernel.design import Design
    assert explore(design=Design.preset("v6.5"), scenario="write_vs_remove_region").verdict \
        == "use-after-free"
    assert explore(design="v6.6", scenario="write_vs_remove_region").verdict == "safe"
    # v4 11/29: the flush hook under vgpu_lock is already safe; v6.5 locking with the
    # remove hook is not (the lookup is still unlocked)
    assert explore("vgpu_lock", "write_vs_remove_region", slot_hook="flush").verdict == "safe"
    assert explore("none", "write_vs_remove_region", slot_hook="remove").verdict == \
        "use-after-free"


def test_detach_is_safe_because_of_srcu():
    """Without the grace period, kvmgt_protect_table_destroy frees under the reader, even
    with vgpu_lock (destroy does not take it)."""
    for lock in ("none", "vgpu_lock"):
        assert explore(lock, "write_vs_detach").verdict == "safe"
        r = explore(lock, "write_vs_detach", srcu=False)
        assert r.verdict == "use-after-free"
        assert any("kvmgt_protect_table_destroy" in s for t, s in r.witness if t == "close")
    assert explore("none", "write_same_slot_vs_remove_region", srcu=False).verdict == \
        "use-after-free"


def test_bad_arguments():
    with pytest.raises(ValueError, match="lock="):
        explore("spinlock")
    with pytest.raises(ValueError, match="scenario="):
        explore("none", "write_vs_nothing")
    with pytest.raises(ValueError, match="slot_hook="):
        explore("none", slot_hook="move")


def test_matrix():
    m = matrix(["write_vs_unshadow"])
    assert {k: r.verdict for k, r in m.items()} == {
        (lk, "write_vs_unshadow"): EXPECTED["write_vs_unshadow"][lk] for lk in LOCKS}


# --- random schedules: the cross-check ------------------------------------------------------
@pytest.mark.parametrize("scenario", ["write_vs_unshadow", "write_vs_remove_region",
                                      "two_vcpus", "write_vs_detach"])
def test_random_schedules_find_the_same_bugs(results, scenario):
    for lock in LOCKS:
        r = results[lock, scenario]
        s = sample(lock, scenario, runs=1000, seed=2023)
        assert sum(s.outcomes.values()) == 1000
        assert s.kinds <= set(r.failures)              # nothing the exhaustive search missed
        if r.verdict == "safe":
            assert s.kinds == set() and s.witness is None
        else:
            assert r.verdict in s.kinds                # sampling finds the bug too
            if s.witness_kind == r.verdict:            # and no shorter witness than BFS
                assert len(s.witness) >= len(r.witness)


def test_sampling_is_deterministic():
    a = sample("none", runs=200, seed=7)
    b = sample("none", runs=200, seed=7)
    assert a.outcomes == b.outcomes and a.witness == b.witness
    c = sample("none", runs=200, seed=8)
    assert c.runs == 200


# --- the lockdep layer the explorer shares with the VM model --------------------------------
def test_lockdep_helpers():
    ld = Lockdep.from_held({"a": [(MMU_LOCK, "read")], "b": [(VGPU_LOCK, "write")]})
    assert ld.holds("a", MMU_LOCK, "read")
    assert ld.conflicting_holders("c", MMU_LOCK, "read") == []
    assert ld.conflicting_holders("c", MMU_LOCK, "write") == ["a"]
    assert ld.conflicting_holders("b", VGPU_LOCK) == []
    assert ld.conflicting_holders("c", VGPU_LOCK) == ["b"]
    assert ld.might_sleep("a", "mutex_lock") and ld.reports[-1].kind == "sleep-in-atomic"


def test_wait_for_cycles():
    assert _cycle({0: {0}}) == [0]                    # self-deadlock
    assert _cycle({0: {1}, 1: {0}}) == [0, 1]         # ABBA
    assert _cycle({0: {1, 2}, 2: {0}}) == [0, 2]      # a waiter needs all it waits for
    assert _cycle({0: {1}}) is None                   # 1 can still run


# --- the figure -------------------------------------------------------------------------------
def test_witness_swimlane(results):
    import plotly.graph_objects as go
    from kvmpt.review.figures.race import witness_swimlane
    r = results["none", "write_vs_remove_region"]
    fig = witness_swimlane(r)
    assert isinstance(fig, go.Figure)
    assert "use-after-free" in fig.layout.title.text
    assert fig.layout.xaxis.title.text and fig.layout.yaxis.title.text
    assert list(fig.layout.yaxis.ticktext) == list(r.threads)         # one lane per thread
    steps = sum(len(t.x) for t in fig.data if t.mode == "markers+text")
    assert steps == len(r.witness)
    safe = witness_swimlane(results["vgpu_lock", "write_vs_unshadow"])
    assert "safe" in safe.layout.title.text and safe.layout.annotations


def test_model_does_not_import_plotly():
    code = "import sys, kvmpt.race; kvmpt.race.explore('none'); print('plotly' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_witness_swimlanes_buttons_and_verdict_matrix(results):
    from kvmpt.review.figures.race import verdict_matrix, witness_swimlanes
    by_lock = {lk: results[lk, DEFAULT_SCENARIO] for lk in LOCKS}
    fig = witness_swimlanes(by_lock)
    buttons = fig.layout.updatemenus[0].buttons
    assert [b.label for b in buttons] == [f"{lk}: {r.verdict}" for lk, r in by_lock.items()]
    shown = [b.args[0]["visible"] for b in buttons]
    for k, (b, r) in enumerate(zip(buttons, by_lock.values())):
        assert any(shown[k]) == (r.verdict != "safe")   # a safe result draws no steps ...
        assert bool(b.args[1]["annotations"]) == (r.verdict == "safe")   # ... but says so
        assert not any(a and b for a, b in zip(shown[k], shown[k - 1]))  # own traces only
    assert [bool(tr.visible) for tr in fig.data] == shown[0]
    grid = verdict_matrix(results)
    heat = grid.data[0]
    assert list(heat.x) == list(LOCKS) and list(heat.y) == list(EXPECTED)
    for i, sc in enumerate(EXPECTED):
        for j, lk in enumerate(LOCKS):
            assert VERDICTS[heat.z[i][j]] == EXPECTED[sc][lk]


def test_printed_results_are_deterministic_and_render_html(results):
    a, b = explore("none"), explore("none")
    assert str(a) == str(b) and a.witness == b.witness
    html = a._repr_html_()
    assert "<table>" in html and "use-after-free" in html and "vcpu0" in html
    assert "<table>" not in results["vgpu_lock", DEFAULT_SCENARIO]._repr_html_()


def test_lock_order_graph_of_v66_has_no_inversion(results):
    r = results["vgpu_lock", "write_vs_remove_region"]
    assert ("kvm->slots_lock", "vgpu->vgpu_lock") in r.lock_order      # remove_region
    assert ("vgpu->vgpu_lock", "kvm->mmu_lock") in r.lock_order        # kvm_write_track_*
    assert r.inversions == ()
    v1 = results["gfn_lock", "write_vs_unshadow"]
    assert ("vgpu->vgpu_lock", "vgpu->gfn_lock") in v1.lock_order      # v1 08/27 then 09/27


# --- issue 13: instances, store granularity, reduction, arguments, email -----------------
def test_lock_instances_exclude_per_instance_and_order_per_class():
    a, b = VGPU_LOCK.of("vgpu0"), VGPU_LOCK.of("vgpu1")
    assert a != b and a.cls == b.cls == VGPU_LOCK and a.name == "vgpu0->vgpu_lock"
    ld = Lockdep()
    assert ld.acquire("x", a) and ld.conflicting_holders("y", b) == []
    assert ld.conflicting_holders("y", a) == ["x"]
    assert ld.holds("x", a) and not ld.holds("x", b) and not ld.holds("x", VGPU_LOCK)
    assert ld.acquire("x", b)                                  # another instance: no deadlock
    assert [r.kind for r in ld.reports] == ["recursion"]       # ... but lockdep's class report
    assert not ld.acquire("x", a)                              # the same instance: deadlock
    assert ld.reports[-1].kind == "deadlock"
    ld2 = Lockdep()
    ld2.acquire("x", VGPU_LOCK.of("vgpu0"))
    ld2.acquire("x", MMU_LOCK.of("kvm0"))
    assert ld2.order == {("vgpu->vgpu_lock", "kvm->mmu_lock")}  # edges between classes


def test_reclaim_is_a_v66_finding():
    """v6.6: reclaim_one_ppgtt_mm() frees vGPU 1's ptable entry holding only vGPU 0's
    vgpu_lock: lockdep's assert fires; without lockdep it is a use-after-free against VM 1's
    kvmgt_page_track_write(), which holds vGPU 1's lock."""
    r = explore("vgpu_lock", "two_vgpus_reclaim")
    last = r.witness_detail[-1]
    assert r.verdict == "not-held" and last.thread == "gvt0"
    assert "vgpu0->vgpu_lock" in last.held["gvt0"] and "vgpu1->vgpu_lock" in r.message
    off = explore("vgpu_lock", "two_vgpus_reclaim", lockdep=False)
    assert off.verdict == "use-after-free" and off.witness_detail[-1].thread == "vm1.vcpu0"
    assert "vgpu1->vgpu_lock" in off.witness_detail[-1].held["vm1.vcpu0"]
    assert any("reclaim_one_ppgtt_mm" in s.where for s in off.witness_detail)
    assert SCENARIOS["two_vgpus_reclaim"].finding
    # v1's dedicated gfn_lock, taken inside remove, would have excluded the foreign removal
    v1 = explore("gfn_lock", "two_vgpus_reclaim")
    assert v1.verdict == "deadlock" and "use-after-free" not in v1.kinds


def test_missed_lookup_after_hash_del():
    """hash_del = hlist_del_init: a lockless walker on the unlinked node reads next = NULL
    and ignores a write to a gfn that is still in ptable (only without a lock)."""
    r = explore("none", "write_vs_remove_region")
    assert r.kinds.get("missed-write", 0) > 0 and r.verdict == "use-after-free"
    for lock in ("mmu_lock", "gfn_lock", "vgpu_lock"):
        assert "missed-write" not in explore(lock, "write_vs_remove_region").kinds
    m = _Model("none", "write_vs_remove_region", "flush", True)

    def run_until(w, tid, name):
        while type(m.progs[tid][w.threads[tid].pc]).__name__ != name:
            w = m.step(w, tid, dict(m.expand(w)[0])[tid].outcomes[0][0])
        return w

    w = run_until(m.init, 1, "HashDel")      # the DELETE's hook is about to unlink 0x2000
    w = run_until(w, 0, "ReadNode")          # vCPU 0 walks: p = node(0x2000), the head
    w = m.step(w, 1, dict(m.expand(w)[0])[1].outcomes[0][0])       # hash_del, no kfree yet
    res = dict(m.expand(w)[0])[0]
    assert isinstance(res, Bug) and res.kind == "missed-write" and "0x1000" in res.message


def test_local_steps_cannot_see_the_world():
    with pytest.raises(TypeError, match="marked local"):
        class ReadsShared(Step):
            local = True

            def attempt(self, w, tid, cx):
                return None
    with pytest.raises(TypeError, match="run_local"):
        class NoBody(Step):
            local = True


@pytest.mark.parametrize("kw,match", [
    (dict(max_states=0), "max_states"), (dict(max_states=-1), "max_states"),
    (dict(max_states=1.5), "max_states"), (dict(max_states=True), "max_states"),
    (dict(srcu="no"), "srcu"), (dict(srcu=None), "srcu"), (dict(lockdep=1), "lockdep")])
def test_argument_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        explore("none", **kw)
    if "max_states" not in kw:
        with pytest.raises(ValueError, match=match):
            sample("none", runs=1, **kw)


def test_max_states_is_enforced():
    with pytest.raises(RuntimeError, match="more than 10 states"):
        explore("none", max_states=10)


def test_behaviours_not_orderings(results):
    r = results["none", "two_vcpus_vs_unshadow"]
    assert r.schedules > 10**9 > r.states          # orderings dwarf the distinct states
    text = str(r)
    assert f"{r.states:,} states" in text and "commuting steps" in text


@pytest.mark.parametrize("lock,scenario", PAIRS)
def test_email_witness(results, lock, scenario):
    r = results[lock, scenario]
    text = r.email()
    assert text.isascii()
    assert max(len(line) for line in text.splitlines()) <= 72
    if r.verdict == "safe":
        assert "Safe" in text and "CPU0" not in text
        return
    assert "CPU0 (" in text and f"<== {r.verdict.upper()}" in text
    refs = [ln for ln in text.splitlines() if ln.startswith("[")]
    assert refs and all(".c:" in ln for ln in refs)
    if len({s.thread for s in r.witness_detail}) > 1 and r.verdict != "not-held":
        assert "CPU1 (" in text
    assert len(text.splitlines()) < len(r.email(sliced=False).splitlines()) or \
        len(r.witness_detail) < 6


def test_email_nests_calls():
    text = explore("vgpu_lock", "two_vgpus_reclaim", lockdep=False).email()
    lines = text.splitlines()
    i = next(k for k, ln in enumerate(lines) if ln.strip() == "reclaim_one_ppgtt_mm()")
    j = next(k for k, ln in enumerate(lines) if ln.strip() == "ppgtt_free_spt()")
    indent = lambda ln: len(ln) - len(ln.lstrip())
    assert i < j and indent(lines[j]) > indent(lines[i])


def test_cli_race(capsys):
    from kvmpt.cli import main
    assert main(["race", "v6.6", "two_vgpus_reclaim", "--email", "--no-lockdep"]) == 0
    out = capsys.readouterr().out
    assert "USE-AFTER-FREE" in out and out.isascii()
    assert main(["race", "none"]) == 0
    assert "verdict: use-after-free" in capsys.readouterr().out
    assert main(["race", "vgpu_lock", "no_such_scenario"]) == 2
    assert "scenario=" in capsys.readouterr().err


def test_witness_of_another_reachable_kind():
    r = explore("none", "write_vs_remove_region", witness="missed-write")
    assert r.verdict == "use-after-free" and r.witness_kind == "missed-write"
    assert r.message.startswith("missed-write") and r.witness_detail[-1].failing
    assert "hash_del" in " ".join(t for _, t in r.witness)
    assert "kfree" not in " ".join(t for _, t in r.witness)      # unlinked, not yet freed
    text = r.email()
    assert "<== MISSED-WRITE" in text and "Witness: missed-write" in text
    with pytest.raises(ValueError, match="safe"):
        explore("vgpu_lock", "write_vs_remove_region", witness="missed-write")
    with pytest.raises(ValueError, match="reachable"):
        explore("none", "write_vs_remove_region", witness="deadlock")
    with pytest.raises(ValueError, match="witness="):
        explore("none", witness="oops")
