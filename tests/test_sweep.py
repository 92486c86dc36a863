"""kvmpt.sweep: grid expansion, the tidy table, local pool vs Dask, resuming, the CLI.

Most tests drive :func:`kvmpt.sweep.sweep` with a stand-in scenario and run function
(``FakeScenario``, ``fake_run``) so they test the sweep machinery, not the model; the
tests marked ``real`` run the real ``kvmpt.workload.scenario.run`` on tiny scenarios.
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from kvmpt import Design, cli
from kvmpt import sweep as sweep_mod
from kvmpt.sweep import Grid, load_table, log_path_for, sweep

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


# ---------------------------------------------------------------------------
# Stand-ins (module level: the process pool and Dask pickle them by reference)

@dataclasses.dataclass(frozen=True)
class FakeScenario:
    name: str = "fake"
    ram_gib: int = 8
    tracked_gfns: int = 4000
    write_rate: float = 2000.0
    churn: str = "boot"

    def with_overrides(self, **params):
        known = {f.name for f in dataclasses.fields(self)} - {"name"}
        unknown = set(params) - known
        if unknown:
            raise ValueError(f"unknown scenario parameter(s) {sorted(unknown)}")
        return dataclasses.replace(self, **params)


def fake_run(scenario, design, seed=None):
    """Deterministic metrics from (scenario, design, seed); some parameter values misbehave."""
    if scenario.churn == "raise":
        raise RuntimeError("injected failure\nsecond line")
    if scenario.churn == "die":
        os._exit(7)                                   # a worker that dies abruptly
    if scenario.churn == "sleep":
        time.sleep(120)                               # a run still going when the sweep dies
    if scenario.churn == "die-once" and os.environ.get("KVMPT_TEST_DIE") == "1":
        os._exit(3)                                   # kills a serial sweep mid-way
    rng = random.Random(f"{scenario!r}|{design!r}|{seed}")
    flush = design.slot_hook == "flush"
    return SimpleNamespace(summary={
        "wasted_cycles": scenario.tracked_gfns * (50 if flush else 2) + rng.randrange(100),
        "mmu_lock_hold_us": scenario.ram_gib * (2.5 if flush else 0.25) + rng.random(),
        "missed_writes": int(flush and design.drop_protection_on_remove) * rng.randrange(1, 9),
        "stale": flush,
        "ram_gib": scenario.ram_gib,                  # echoes a parameter: not a new column
    })


FAKE = FakeScenario()
GRID = Grid({"ram_gib": [1, 1024], "tracked_gfns": [0, 100_000], "churn": ["boot", "raise"]},
            designs=["v6.5", "v6.6"], seeds=[0, 1])


# ---------------------------------------------------------------------------
# Grid

def test_grid_expands_in_a_fixed_order_with_stable_keys():
    runs = GRID.expand("fake")
    assert len(runs) == len(GRID) == 2 * 2 * 2 * 2 * 2
    assert [r.index for r in runs] == list(range(len(runs)))
    # parameters slowest-first, then design, then seed fastest
    assert [r.seed for r in runs[:4]] == [0, 1, 0, 1]
    assert [r.design.name for r in runs[:4]] == ["v6.5", "v6.5", "v6.6", "v6.6"]
    assert runs[0].params_dict == {"ram_gib": 1, "tracked_gfns": 0, "churn": "boot"}
    assert runs[-1].params_dict == {"ram_gib": 1024, "tracked_gfns": 100_000, "churn": "raise"}
    assert len({r.key for r in runs}) == len(runs)
    # the key is the run's, not its position's: same run in another grid -> same key
    other = Grid({"churn": ["boot"], "tracked_gfns": [0], "ram_gib": [1]}, designs="v6.5",
                 seeds=[1]).expand("fake")
    assert other[0].key == runs[1].key
    assert Grid(GRID.to_dict()["params"], designs="v6.5,v6.6", seeds="0-1") == GRID
    assert Grid.from_dict(GRID.to_dict()) == GRID
    assert GRID.expand("other")[0].key != runs[0].key


def test_grid_rejects_bad_input():
    with pytest.raises(ValueError, match="seeds="):
        Grid({"seed": [1, 2]})
    with pytest.raises(ValueError, match="repeats"):
        Grid({"ram_gib": [1, 1]})
    with pytest.raises(ValueError, match="no values"):
        Grid({"ram_gib": []})
    with pytest.raises(sweep_mod.GridError, match="parameter 'ram_gib': values must be"):
        Grid({"ram_gib": [[1]]})
    with pytest.raises(ValueError, match="unknown design"):
        Grid({}, designs="v6.7")
    with pytest.raises(ValueError, match="repeated seed"):
        Grid({}, seeds="0-3,2")
    with pytest.raises(ValueError, match="unknown grid key"):
        Grid.from_dict({"params": {"ram_gib": [1]}, "ram_gib": [2]})
    assert Grid.from_dict({"ram_gib": [1, 2], "seeds": 2}) == Grid({"ram_gib": [1, 2]}, seeds=2)


def test_design_and_seed_parsing():
    assert len(sweep_mod.parse_designs("all")) == 32
    d = sweep_mod.parse_design("flush/allow-move/gfn_lock/keep")
    assert d == Design("flush", "allow", "gfn_lock", False)
    assert sweep_mod.parse_design(d.name) == d
    assert sweep_mod.parse_designs("slot_hook=flush,move=allow;v6.6")[0].move == "allow"
    assert sweep_mod.parse_designs("v6.6,v6.6") == (Design.preset("v6.6"),)
    assert sweep_mod.parse_seeds("0-2,7") == (0, 1, 2, 7)
    assert sweep_mod.parse_seeds(3) == (0, 1, 2)
    assert sweep_mod.parse_param("tracked_gfns=0,4_000,1e5") == ("tracked_gfns", [0, 4000, 1e5])
    assert sweep_mod.parse_param("churn=boot,none")[1] == ["boot", "none"]
    with pytest.raises(ValueError):
        sweep_mod.parse_param("tracked_gfns")


# ---------------------------------------------------------------------------
# The table

@pytest.fixture(scope="module")
def serial_table():
    return sweep(GRID, FAKE, workers=0, progress=False, run_fn=fake_run)


def test_table_is_tidy_and_failed_runs_are_rows(serial_table):
    t = serial_table
    assert len(t) == len(GRID)
    assert t.columns[:8] == ["run", "key", "scenario", "design", "slot_hook", "move",
                             "kvmgt_lock", "drop_protection_on_remove"]
    assert t.columns[8:14] == ["ram_gib", "tracked_gfns", "churn", "seed", "status", "error"]
    assert t.metric_columns == ["wasted_cycles", "mmu_lock_hold_us", "missed_writes", "stale"]
    assert t.column("run") == list(range(len(GRID)))
    bad = t.failed()
    assert len(bad) == len(GRID) // 2 and all(r["churn"] == "raise" for r in bad)
    assert bad[0]["error"].startswith("RuntimeError: injected failure second line (at test_sweep")
    assert bad[0]["wasted_cycles"] is None
    ok = t.where(status="ok", design="v6.5", tracked_gfns=100_000)
    assert ok.column("wasted_cycles") and all(v >= 5_000_000 for v in ok.column("wasted_cycles"))
    assert t.meta["grid"] == GRID.to_dict() and t.meta["scenario"] == "fake"
    assert t.meta["kvmpt_version"] and t.stats["failed"] == len(bad)


def test_same_grid_and_seeds_same_table(serial_table):
    assert sweep(GRID, FAKE, workers=0, progress=False, run_fn=fake_run) == serial_table


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_save_and_load_round_trip(serial_table, tmp_path, suffix):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    path = tmp_path / f"t{suffix}"
    serial_table.save(path)
    back = load_table(path)
    assert back == serial_table
    assert back.meta["grid"] == GRID.to_dict()
    assert back.meta["kvmpt_version"] == serial_table.meta["kvmpt_version"]
    assert back.metric_columns == serial_table.metric_columns
    first = path.read_bytes()
    serial_table.save(path)
    assert path.read_bytes() == first                       # deterministic bytes
    if suffix == ".csv":
        assert json.loads(Path(str(path) + ".json").read_text())["scenario"] == "fake"


# ---------------------------------------------------------------------------
# Executors

def test_local_pool_matches_serial(serial_table):
    t = sweep(GRID, FAKE, workers=2, progress=False, run_fn=fake_run)
    assert t == serial_table


def test_a_worker_that_dies_is_a_failed_row_and_the_rest_finish(tmp_path):
    grid = Grid({"churn": ["boot", "die", "raise"], "tracked_gfns": [1, 2]}, designs="v6.6")
    t = sweep(grid, FAKE, workers=2, progress=False, run_fn=fake_run, out=tmp_path / "t.csv")
    status = dict(zip(zip(t.column("churn"), t.column("tracked_gfns")), t.column("status")))
    assert status == {("boot", 1): "ok", ("boot", 2): "ok", ("die", 1): "error",
                      ("die", 2): "error", ("raise", 1): "error", ("raise", 2): "error"}
    assert all(e.startswith("WorkerDied") for e in t.where(churn="die").column("error"))
    assert log_path_for(tmp_path / "t.csv").exists()          # kept: there are failures


@pytest.fixture(scope="module")
def cluster():
    """A real 2-worker LocalCluster on loopback, shared by this file's Dask tests."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as c:
        yield c


def test_dask_local_cluster_matches_local(serial_table, cluster):
    import distributed
    with distributed.Client(cluster) as client:
        t = sweep(GRID, FAKE, client=client, progress=False, run_fn=fake_run)
    assert t == serial_table
    # and by address, as `kvmpt sweep --scheduler tcp://...` does
    assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
    t2 = sweep(GRID, FAKE, scheduler=cluster.scheduler_address, progress=False,
               run_fn=fake_run)
    assert t2 == serial_table


# ---------------------------------------------------------------------------
# Resuming

class _Stop:
    def __init__(self, at):
        self.at, self.calls = at, []

    def __call__(self, scenario, design, seed=None):
        if len(self.calls) == self.at:
            raise KeyboardInterrupt
        self.calls.append((scenario, design, seed))
        return fake_run(scenario, design, seed)


def test_interrupted_sweep_resumes_without_redoing_runs(serial_table, tmp_path):
    out = tmp_path / "s.parquet"
    pytest.importorskip("pyarrow")
    first = _Stop(at=11)
    with pytest.raises(KeyboardInterrupt):
        sweep(GRID, FAKE, out=out, workers=0, progress=False, run_fn=first)
    assert not out.exists()
    lines = log_path_for(out).read_text().splitlines()
    assert len(lines) == 1 + 11                                  # header + finished runs
    second = _Stop(at=-1)
    t = sweep(GRID, FAKE, out=out, workers=0, progress=False, run_fn=second, resume=True,
              keep_log=True)
    assert len(second.calls) == len(GRID) - 11
    assert t.stats["resumed"] == 11 and t == serial_table and load_table(out) == serial_table
    # a third resume runs nothing; retrying failures re-runs just those
    third = _Stop(at=-1)
    sweep(GRID, FAKE, out=out, workers=0, progress=False, run_fn=third, resume=True,
          keep_log=True)
    assert third.calls == []
    sweep(GRID, FAKE, out=out, workers=0, progress=False, run_fn=third, resume=True,
          retry_failed=True)
    assert len(third.calls) == len(serial_table.failed())
    # without resume, the log is started over
    fourth = _Stop(at=-1)
    sweep(GRID, FAKE, out=out, workers=0, progress=False, run_fn=fourth)
    assert len(fourth.calls) == len(GRID)


def test_resume_refuses_a_log_from_another_scenario_or_model(tmp_path, monkeypatch):
    out = tmp_path / "s.csv"
    with pytest.raises(KeyboardInterrupt):
        sweep(GRID, FAKE, out=out, workers=0, progress=False, run_fn=_Stop(at=3))
    with pytest.raises(ValueError, match="different scenario"):
        sweep(GRID, dataclasses.replace(FAKE, write_rate=1.0), out=out, workers=0,
              progress=False, run_fn=fake_run, resume=True)
    monkeypatch.setattr("kvmpt.sweep.runlog.source_fingerprint", lambda: "edited-model")
    with pytest.raises(ValueError, match="model source"):
        sweep(GRID, FAKE, out=out, workers=0, progress=False, run_fn=fake_run, resume=True)


def test_killed_sweep_process_resumes(serial_table, tmp_path):
    """The sweep process dies (os._exit in a serial run) half-way; a restart finishes it."""
    out = tmp_path / "k.csv"
    grid = Grid({"churn": ["boot", "die-once"], "tracked_gfns": [0, 7]}, designs="v6.5,v6.6")
    script = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(HERE)!r})
        from test_sweep import FAKE, fake_run
        from kvmpt.sweep import Grid, sweep
        sweep(Grid.from_dict({json.dumps(grid.to_dict())}), FAKE, out={str(out)!r},
              workers=0, progress=False, run_fn=fake_run)
    """)
    env = dict(os.environ, KVMPT_TEST_DIE="1")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    n_done = len(log_path_for(out).read_text().splitlines()) - 1
    assert n_done == 4                                           # the "boot" half
    t = sweep(grid, FAKE, out=out, workers=2, progress=False, run_fn=fake_run, resume=True)
    assert t.stats == dict(t.stats, resumed=4, ran=4, failed=0)
    assert t == sweep(grid, FAKE, workers=0, progress=False, run_fn=fake_run)
    assert not log_path_for(out).exists()                        # done, no failures


def test_bad_parameter_fails_before_any_run():
    calls = _Stop(at=-1)
    with pytest.raises(ValueError, match="unknown scenario parameter"):
        sweep(Grid({"tracked_gfns": [1], "ram_gb": [1]}), FAKE, workers=0, run_fn=calls)
    assert calls.calls == []


# ---------------------------------------------------------------------------
# The command line

def _cli(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_help_documents_every_option(capsys):
    rc, out, _ = _cli(capsys, "sweep", "--help")
    assert rc == 0
    for opt in ("--grid", "--param", "--scenario", "--designs", "--seeds", "--out",
                "--scheduler", "--workers", "--resume", "--retry-failed", "--keep-log",
                "--dry-run", "--bench", "--quiet", "--list-params"):
        assert opt in out


@pytest.mark.parametrize("argv, msg", [
    (["--param", "tracked_gfns"], "name=v1,v2"),
    (["--designs", "v9"], "unknown design"),
    (["--seeds", "3-1"], "bad seed list"),
    (["--resume"], "--resume needs --out"),
    (["--grid", "/nonexistent/grid.toml"], "/nonexistent/grid.toml: no such file"),
    (["--param", "seed=1,2"], "seeds="),
    (["--out", "x.xlsx", "--param", "a=1"], ".parquet or .csv"),
])
def test_cli_bad_input_is_one_line(capsys, argv, msg):
    rc, out, err = _cli(capsys, "sweep", *argv)
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("kvmpt: error:") and msg in err


def test_cli_dry_run_reads_a_grid_file(capsys, tmp_path):
    g = tmp_path / "g.toml"
    g.write_text('designs = "all"\nseeds = "0-2"\n[params]\ntracked_gfns = [0, 100000]\n')
    rc, out, _ = _cli(capsys, "sweep", "--grid", str(g), "--param", "ram_gib=4,1024",
                      "--dry-run")
    assert rc == 0 and out.startswith(f"{32 * 3 * 2 * 2} runs of scenario 'q35-desktop':")
    # q35 keeps 2 GiB below 4G: a 1 GiB guest is refused before any run
    rc, _, err = _cli(capsys, "sweep", "--grid", str(g), "--param", "ram_gib=1,1024",
                      "--dry-run")
    assert rc == 2 and "ram_gib=1" in err
    g.write_text("designs = [\n")
    rc, _, err = _cli(capsys, "sweep", "--grid", str(g), "--dry-run")
    assert rc == 2 and "not valid TOML" in err


def test_kvmpt_sweep_is_the_package_and_its_sweep_the_function(serial_table):
    import kvmpt
    assert kvmpt.sweep is sys.modules["kvmpt.sweep"] and kvmpt.sweep.Grid is Grid
    assert kvmpt.sweep.sweep(GRID, FAKE, workers=0, progress=False, run_fn=fake_run) == \
        serial_table
    # one name, one thing: a module is not callable (PEP 713, callable modules, was rejected)
    with pytest.raises(TypeError, match="not callable"):
        kvmpt.sweep(GRID, FAKE)


# ---------------------------------------------------------------------------
# Figures

def test_heatmap_has_a_trace_and_a_button_per_design(serial_table):
    from kvmpt.review.figures import sweep as figs
    fig = figs.heatmap(serial_table, "wasted_cycles", "ram_gib", "tracked_gfns",
                       where={"churn": "boot"})
    assert [t.name for t in fig.data] == ["v6.5", "v6.6"]
    assert [t.visible for t in fig.data] == [True, False]
    buttons = fig.layout.updatemenus[0].buttons
    assert [b.label for b in buttons] == ["v6.5", "v6.6"]
    assert buttons[1].args[0]["visible"] == [False, True]
    assert "wasted cycles" in fig.layout.title.text and fig.layout.xaxis.title.text == \
        "RAM slot size (GiB)"
    # cells: mean over the two seeds; v6.5 wastes 25x more per tracked gfn than v6.6
    z65, z66 = fig.data[0].z, fig.data[1].z
    assert list(fig.data[0].y) == ["0", "100\u2009000"]
    assert z65[1][0] > 20 * z66[1][0]
    # failed runs are left out, and a cell with none that succeeded is empty
    fig2 = figs.heatmap(serial_table, "wasted_cycles", "ram_gib", "churn")
    assert list(fig2.data[0].z[1]) == [None, None]
    assert "failed" in fig2.data[0].text[1][0]
    with pytest.raises(ValueError, match="no column"):
        figs.heatmap(serial_table, "nope", "ram_gib", "tracked_gfns")


def test_faceted_lines(serial_table, tmp_path):
    from kvmpt.review.figures import sweep as figs
    fig = figs.lines(serial_table, "mmu_lock_hold_us", "ram_gib", facet_col="tracked_gfns",
                     where={"churn": "boot"})
    assert len(fig.data) == 2 * 2                            # designs x facets
    assert [t.showlegend for t in fig.data] == [True, True, False, False]
    assert fig.layout.xaxis.type == "log"                    # 1 .. 1024 GiB
    assert fig.layout.yaxis.title.text == "mmu_lock hold (µs)"
    assert [a.text for a in fig.layout.annotations] == ["tracked gfns = 0",
                                                        "tracked gfns = 100\u2009000"]
    fig.write_html(tmp_path / "f.html", include_plotlyjs=False)
    # every supported table type gives the same figure
    assert figs.lines(serial_table.rows, "mmu_lock_hold_us", "ram_gib").to_dict() == \
        figs.lines(serial_table, "mmu_lock_hold_us", "ram_gib").to_dict()


# ---------------------------------------------------------------------------
# With the real model (tiny runs)

TINY = Grid({"duration_s": [0.02], "tracked_gfns": [0, 500], "churn": ["quiet", "adversarial"]},
            designs="v6.5,v6.6", seeds=[0])


@pytest.fixture(scope="module")
def real_table():
    return sweep(TINY, "q35-desktop", workers=2, progress=False)


def test_real_sweep_runs_and_is_deterministic(real_table):
    assert real_table.failed() == []
    assert real_table.meta["scenario"] == "q35-desktop"
    assert {"wasted_cycles", "mmu_lock_max_hold_us", "missed_writes"} <= \
        set(real_table.metric_columns)
    again = sweep(TINY, "q35-desktop", workers=0, progress=False)
    assert again == real_table


def test_real_sweep_on_dask_matches_local(real_table, cluster):
    t = sweep(TINY, "q35-desktop", scheduler=cluster.scheduler_address, progress=False)
    assert t == real_table


def test_real_sweep_rejects_an_unknown_parameter():
    with pytest.raises(ValueError, match="ram_gb"):
        sweep(Grid({"ram_gb": [1]}), "q35-desktop", workers=0, progress=False)


def test_cli_sweep_writes_csv_with_sidecar_and_resumes(capsys, tmp_path):
    out = tmp_path / "s.csv"
    def sweep_argv(tracked="0,200"):
        return ["sweep", "--scenario", "q35-desktop", "-p", "duration_s=0.02", "-p",
                f"tracked_gfns={tracked}", "--designs", "v6.6", "--workers", "0",
                "--out", str(out)]
    argv = sweep_argv()
    rc, _, err = _cli(capsys, *argv)
    assert rc == 0, err
    assert "2 runs (2 run now, 0 already done), 0 failed" in err
    t = load_table(out)
    assert len(t) == 2 and t.meta["grid"]["designs"] == ["v6.6"]
    assert not log_path_for(out).exists()                    # removed: no failures
    rc, _, err = _cli(capsys, *argv, "--resume")             # done runs come from the table
    assert rc == 0 and "(0 run now, 2 already done)" in err
    rc, _, err = _cli(capsys, *sweep_argv("0,200,300"), "--resume")
    assert rc == 0 and "3 runs (1 run now, 2 already done)" in err
    rc, _, err = _cli(capsys, *argv)                          # without --resume: all again
    assert rc == 0 and "(2 run now" in err
    rc, out_csv, _ = _cli(capsys, *argv[:-2], "--quiet")      # no --out: CSV on stdout
    assert rc == 0 and out_csv == t.to_csv()


# ---------------------------------------------------------------------------
# The committed sweep (data/sweeps/small.parquet)

SMALL = ROOT / "data" / "sweeps" / "small.parquet"
REGENERATE = "kvmpt sweep --grid data/sweeps/small.toml --out data/sweeps/small.parquet"


@pytest.fixture(scope="module")
def small():
    pytest.importorskip("pyarrow")
    if not SMALL.exists():
        pytest.skip(f"{SMALL} not made yet ({REGENERATE})")
    return load_table("small")


def test_committed_sweep_matches_its_grid(small):
    grid = Grid.from_toml(ROOT / "data" / "sweeps" / "small.toml")
    assert small.meta["grid"] == grid.to_dict()
    assert small.column("key") == [r.key for r in grid.expand(small.meta["scenario"])]
    assert small.failed() == []
    assert SMALL.stat().st_size < 1_000_000
    assert {"wasted_cycles", "mmu_lock_max_hold_us", "missed_writes"} <= set(small.metric_columns)


def test_committed_sweep_is_what_the_model_gives_now(small):
    """Two cheap rows of the committed sweep, run again: same metrics, or regenerate it."""
    rows = [r for r in small.rows if r["ram_gib"] == min(small.column("ram_gib"))
            and r["churn"] == "adversarial" and r["tracked_gfns"] > 0 and r["seed"] == 0]
    for row in (rows[0], rows[-1]):
        grid = Grid({p: [row[p]] for p in small.param_columns}, designs=[row["design"]],
                    seeds=[row["seed"]])
        now = sweep(grid, small.meta["scenario"], workers=0, progress=False).rows[0]
        assert now["key"] == row["key"]
        stale = {m: (row[m], now.get(m)) for m in small.metric_columns
                 if (now.get(m) != pytest.approx(row[m], rel=1e-9)
                     if isinstance(row[m], float) else now.get(m) != row[m])}
        assert not stale, f"data/sweeps/small.parquet is stale ({stale}); run: {REGENERATE}"


def test_committed_sweep_figures(small):
    from kvmpt.review.figures import sweep as figs
    fig = figs.heatmap(small, "wasted_cycles", "ram_gib", "tracked_gfns",
                       where={"churn": "reboot", "write_rate": 2000})
    assert len(fig.data) == len(small.meta["grid"]["designs"])
    fig = figs.lines(small, "missed_writes", "write_rate", facet_col="churn")
    assert len(fig.layout.annotations) == 3


def test_resume_extends_a_finished_sweep(serial_table, tmp_path):
    """A finished sweep (no failures, so its log is gone) grown by one parameter value runs
    only the new points: the saved table's rows count as done."""
    pytest.importorskip("pyarrow")
    out = tmp_path / "e.parquet"
    ok_grid = Grid({"ram_gib": [1, 1024], "tracked_gfns": [0, 100_000], "churn": ["boot"]},
                   designs=["v6.5", "v6.6"], seeds=[0, 1])
    part = Grid({"ram_gib": [1], "tracked_gfns": [0, 100_000], "churn": ["boot"]},
                designs=["v6.5", "v6.6"], seeds=[0, 1])
    sweep(part, FAKE, out=out, workers=0, progress=False, run_fn=fake_run)
    assert not log_path_for(out).exists()
    calls = _Stop(at=-1)
    t = sweep(ok_grid, FAKE, out=out, workers=0, progress=False, run_fn=calls, resume=True)
    assert len(calls.calls) == len(ok_grid) - len(part) and t.stats["resumed"] == len(part)
    assert t == sweep(ok_grid, FAKE, workers=0, progress=False, run_fn=fake_run)


@pytest.mark.browser
def test_heatmap_buttons_switch_designs_in_static_html(serial_table, tmp_path):
    """The exported HTML needs no kernel: clicking a design button shows that design."""
    chromium = os.environ.get("KVMPT_CHROMIUM", "/usr/bin/chromium")
    if not os.access(chromium, os.X_OK):
        pytest.skip(f"{chromium} not found (./dev test installs Debian chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    from kvmpt.review.figures import sweep as figs
    page_file = tmp_path / "heatmap.html"
    figs.heatmap(serial_table, "wasted_cycles", "ram_gib", "tracked_gfns").write_html(
        page_file, include_plotlyjs=True, include_mathjax=False)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--no-first-run",
                                          "--disable-background-networking"])
        try:
            page = browser.new_page()
            page.goto(page_file.as_uri())
            page.wait_for_selector(".plotly-graph-div .main-svg")
            graph = page.locator(".plotly-graph-div").first
            visible = "(el) => el.data.map(t => t.visible)"
            assert graph.evaluate(visible) == [True, False]
            page.locator("g.updatemenu-button", has_text="v6.6").click()
            page.wait_for_function(
                "() => document.querySelector('.plotly-graph-div').data[1].visible === true")
            assert graph.evaluate(visible) == [False, True]
            assert "design: v6.6" in page.locator(".gtitle").first.text_content()
        finally:
            browser.close()


def test_cli_lists_the_scenario_parameters(capsys):
    rc, out, _ = _cli(capsys, "sweep", "--scenario", "q35-desktop", "--list-params")
    assert rc == 0 and out.startswith("scenario q35-desktop")
    lines = out.splitlines()        # kvmpt.infra.text.table: header row, rule, rows
    assert lines[1].split() == ["parameter", "value", "range", "tag"] and set(lines[2]) == {"-"}
    for name in ("ram_gib", "tracked_gfns", "write_rate", "duration_s", "churn", "move_rate"):
        assert f"\n{name} " in out


# ---------------------------------------------------------------------------
# Hostile grids: every bad grid is exit 2 with file:line, never an internal error

def test_a_flat_grid_file_runs_the_same_grid_as_the_nested_one(capsys, tmp_path):
    flat = tmp_path / "flat.toml"
    flat.write_text("".join(line for line in (ROOT / "data" / "sweeps" / "small.toml")
                            .read_text().splitlines(keepends=True) if line != "[params]\n"))
    assert Grid.from_toml(flat) == Grid.from_toml(ROOT / "data" / "sweeps" / "small.toml")
    rc, out, _ = _cli(capsys, "sweep", "--grid", str(flat), "--dry-run")
    assert rc == 0 and out.startswith("432 runs of scenario 'q35-desktop'")


@pytest.mark.parametrize("body, where, msg", [
    ("seed = 1", ":1: top level field 'seed'", "use seeds="),
    ('design = "v6.6"', ":1: top level field 'design'", "use designs="),
    ('seed = 1\n[params]\nram_gib = [4]', ":1: top level field 'seed'", "did you mean seeds?"),
    ("designs = [1]", ":1: top level field 'designs'", "got int 1"),
    ('designs = ["v9"]', ":1: top level field 'designs'", "unknown design 'v9'"),
    ("seeds = [1.5]", ":1: top level field 'seeds'", "got float 1.5"),
    ("seeds = true", ":1: top level field 'seeds'", "got True"),
    ("seeds = [-1]", ":1: top level field 'seeds'", "seed -1 is outside 0.."),
    ('seeds = "0-100000000"', ":1: top level field 'seeds'", "the limit is 1000000 runs"),
    ("scenario = 5", ":1: top level field 'scenario'", "got int"),
    ("params = 5", ":1: top level field 'params'", "must be a table"),
    ("ram_gib = [[4, 64]]", ":1: top level field 'ram_gib'", "got list [4, 64]"),
    ("ram_gib = [nan]", ":1: top level field 'ram_gib'", "not a finite number"),
    ("[parms]\nx = [1]", ":1: [parms]", "unknown table"),
    ("[params]\n\nram_gb = [4]", ":3: [params] field 'ram_gb'", "unknown scenario parameter"),
    ("[params]\nram_gib = [1]", ":2: [params] field 'ram_gib'", "rejects ram_gib=1"),
    ("seeds = [1]\nseeds = [2]", ":2: not valid TOML", "Cannot overwrite a value"),
])
def test_cli_bad_grid_file_is_exit_2_with_file_and_line(capsys, tmp_path, body, where, msg):
    g = tmp_path / "g.toml"
    g.write_text(body + "\n")
    rc, out, err = _cli(capsys, "sweep", "--grid", str(g), "--dry-run")
    assert rc == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith(f"kvmpt: error: {g}{where}") and msg in err, err
    assert "internal error" not in err


@pytest.mark.parametrize("argv, msg", [
    (["--seeds=-1"], "--seeds -1: seed -1 is outside"),
    (["--seeds", "0-100000000"], "asks for 100000001 seeds; the limit is 1000000"),
    (["--param", "ram_gib=1"], "--param ram_gib=1: scenario 'q35-desktop' rejects ram_gib=1"),
    (["--param", "tracked_gfns=" + ",".join(map(str, range(2000))), "--seeds", "0-999"],
     "the grid has 4000000 runs"),
    (["--workers", "100000"], "--workers 100000: want 0..256"),
])
def test_cli_unbounded_or_negative_options_are_refused(capsys, argv, msg):
    rc, _, err = _cli(capsys, "sweep", *argv, "--dry-run")
    assert rc == 2 and msg in err, err


def test_grid_file_bom_crlf_and_bad_bytes(tmp_path):
    g = tmp_path / "g.toml"
    g.write_bytes(b"\xef\xbb\xbfseeds = [1, 2]\r\n[params]\r\nram_gib = [4]\r\n")
    assert Grid.from_toml(g).seeds == (1, 2)
    g.write_bytes(b"seeds = [1]\n\xff\n")
    with pytest.raises(sweep_mod.GridError, match=rf"^{g}:2: not valid UTF-8"):
        Grid.from_toml(g)
    j = tmp_path / "g.json"
    j.write_text('{"seeds": [1], "seeds": [2]}')
    with pytest.raises(sweep_mod.GridError, match="seeds: appears twice"):
        Grid.from_toml(j)
    j.write_text('{"params": {"ram_gib": [NaN]}}')
    with pytest.raises(sweep_mod.GridError, match="NaN is not a finite number"):
        Grid.from_toml(j)


# ---------------------------------------------------------------------------
# Process hygiene: children end with the sweep, Ctrl-C twice, nothing half-written

def _descendants(pid: int) -> set[int]:
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    parent[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    out, frontier = set(), {pid}
    while frontier:
        frontier = {c for c, pp in parent.items() if pp in frontier} - out
        out |= frontier
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


_SLEEPY = textwrap.dedent(f"""
    import sys; sys.path.insert(0, {str(HERE)!r})
    from test_sweep import FAKE, fake_run
    from kvmpt.sweep import Grid, sweep
    from kvmpt.cli.sweep import _exit_on_second_interrupt
    _exit_on_second_interrupt()
    try:
        sweep(Grid({{"churn": ["sleep"], "tracked_gfns": list(range(6))}}), FAKE,
              out=sys.argv[1], workers=2, progress=False, run_fn=fake_run)
    except KeyboardInterrupt:
        print("kvmpt: interrupted", file=sys.stderr)
        sys.exit(130)
""")


def _start_sleepy_sweep(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", _SLEEPY, str(tmp_path / "s.csv")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    for _ in range(300):          # until the forkserver and both workers are up
        kids = _descendants(proc.pid)
        if len(kids) >= 4:
            return proc, kids
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"the sweep's pool did not start: {proc.communicate()}")


def test_no_child_survives_a_sigkilled_sweep(tmp_path):
    proc, kids = _start_sleepy_sweep(tmp_path)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(k) for k in kids):
        time.sleep(0.1)
    survivors = [k for k in kids if _alive(k)]
    for k in survivors:
        os.kill(k, 9)
    assert survivors == [], "children of the sweep outlived it by 5 s"


def test_ctrl_c_twice_exits_at_once_without_a_traceback(tmp_path):
    import signal
    proc, kids = _start_sleepy_sweep(tmp_path)
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)       # the runs sleep 120 s: not waited for
    assert proc.returncode in (130, -signal.SIGINT), err
    assert "Traceback" not in err and "interrupted" in err
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(k) for k in kids):
        time.sleep(0.1)
    assert not any(_alive(k) for k in kids)


def test_a_failed_save_leaves_no_tmp_file(serial_table, tmp_path, monkeypatch):
    target = tmp_path / "t.csv"
    target.mkdir()                               # os.replace onto a directory fails
    with pytest.raises(OSError):
        serial_table.save(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]
    pq = pytest.importorskip("pyarrow.parquet")

    def broken(table, where, **kw):
        Path(where).write_bytes(b"PAR1 half")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(pq, "write_table", broken)
    with pytest.raises(OSError, match="No space"):
        serial_table.save(tmp_path / "t.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]


def test_cli_out_below_a_regular_file(capsys, tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    rc, _, err = _cli(capsys, "sweep", "--out", str(f / "t.csv"), "--dry-run")
    assert rc == 2 and f"{f} is a file, not a directory" in err and "File exists" not in err


def test_dask_sweep_with_no_live_worker_says_so_and_times_out(capsys):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=0, host="127.0.0.1",
                                  dashboard_address=":0") as c, distributed.Client(c) as client:
        with pytest.raises(TimeoutError, match="no live Dask worker at .* for 0.5 s; 1 runs"):
            sweep(Grid({"tracked_gfns": [1]}, designs="v6.6"), FAKE, client=client,
                  progress=False, run_fn=fake_run, worker_wait=0.5)
    err = capsys.readouterr().err
    assert "kvmpt sweep: no live Dask worker at" in err and "giving up after 0.5 s" in err
