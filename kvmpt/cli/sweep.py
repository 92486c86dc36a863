"""``kvmpt sweep``: the command's options, the grid they make, and what it prints.

The grid is the ``--grid`` file, then ``--param`` / ``--designs`` / ``--seeds`` over it; each
key remembers where it came from, so a bad value is one line naming the file and line or the
option (exit 2).  Exit 0 when every run succeeded, 1 when some failed.  The first Ctrl-C
stops the sweep cleanly; a second one exits at once.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from kvmpt.infra.text import table
from kvmpt.sweep.bench import bench
from kvmpt.sweep.driver import MAX_WORKERS, check_out, resolve_scenario, scenario_name, plan, sweep
from kvmpt.sweep.executors import WORKER_WAIT_S
from kvmpt.sweep.grid import Grid
from kvmpt.sweep.parse import parse_param, read_grid
from kvmpt.sweep.runlog import log_path_for

__all__ = ["HELP", "add_arguments", "run"]

HELP = "sweep design knobs and workload parameters over seeds; write a tidy table"


def add_arguments(p) -> None:
    p.description = (
        "Run one scenario over a grid of designs x workload parameters x seeds and write a "
        "tidy table: one row per run with its parameters, design knobs, seed, status and "
        "every summary metric.  Runs in parallel on this machine's cores, or on a Dask "
        "cluster with --scheduler; with --out, finished runs are logged to OUT.runs.jsonl "
        "so --resume can skip them after an interruption.")
    p.epilog = ("Exit status: 0 when every run succeeded, 1 when some runs failed (they are "
                "rows with status=error), 2 for bad input.")
    p.add_argument("--grid", metavar="FILE",
                   help="grid file (TOML: optional scenario, designs, seeds, and a [params] "
                        "table of name = [values]); --param/--designs/--seeds override it")
    p.add_argument("--param", "-p", action="append", default=[], metavar="NAME=V1,V2,...",
                   help="sweep a scenario parameter over these values (repeatable), e.g. "
                        "ram_gib=1,64,1024 or tracked_gfns=0,4000,100_000")
    p.add_argument("--scenario", metavar="NAME|FILE",
                   help="the scenario to run (default: the grid file's, else the default one)")
    p.add_argument("--designs", metavar="LIST",
                   help="comma-separated designs: v6.5, v6.6, all (the 32 combinations) or "
                        "names like flush/allow-move/none/drop; separate knob specs "
                        "(slot_hook=flush,move=allow,...) with ';' (default: v6.5,v6.6)")
    p.add_argument("--seeds", metavar="LIST",
                   help="seeds as a cpulist, e.g. 0-4 or 0,1,7 (default: the grid file's, else 0)")
    p.add_argument("--out", "-o", metavar="FILE",
                   help="write the table to FILE.parquet or FILE.csv (with a .csv.json "
                        "sidecar); default: CSV on stdout, no run log")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="run on a Dask cluster, e.g. tcp://10.0.0.1:8786, instead of locally")
    p.add_argument("--worker-wait", type=float, default=WORKER_WAIT_S, metavar="SECONDS",
                   help="with --scheduler: how long to wait while the cluster has no live "
                        f"worker before giving up (default {WORKER_WAIT_S:g})")
    p.add_argument("--workers", "-j", type=int, metavar="N",
                   help="local worker processes (default: one per core; 0 = serial, in this "
                        "process)")
    p.add_argument("--resume", action="store_true",
                   help="skip runs already in OUT.runs.jsonl or in the table at OUT (needs "
                        "--out): restarts an interrupted sweep, or grows a finished one by "
                        "the grid's new points; without it every run is done again")
    p.add_argument("--retry-failed", action="store_true",
                   help="with --resume, run again the runs the log records as failed")
    p.add_argument("--keep-log", action="store_true",
                   help="keep OUT.runs.jsonl after a sweep with no failures")
    p.add_argument("--list-params", action="store_true",
                   help="print the scenario's parameters (what --param can sweep) with their "
                        "values and documented ranges, and exit")
    p.add_argument("--dry-run", action="store_true",
                   help="print the number of runs and the grid, run nothing")
    p.add_argument("--bench", action="store_true",
                   help="benchmark: runs/s of a small sweep on a local pool vs a 2-worker "
                        "LocalCluster on 127.0.0.1, and their ratio")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary line")


def _grid_from_args(args) -> tuple[Grid, Any]:
    """The grid of ``kvmpt sweep``: the ``--grid`` file (either form), then ``--param``,
    ``--designs`` and ``--seeds`` over it; each key remembers where it came from, so an
    error names the file and line or the option."""
    spec: dict[str, Any] = {"params": {}}
    origin: dict[str, str] = {}
    if args.grid:
        spec, origin = read_grid(args.grid)
    params = dict(spec.get("params") or {})
    for text in args.param:
        k, vals = parse_param(text)
        params[k] = vals
        origin[k] = f"--param {text}"
    designs, seeds = spec.get("designs"), spec.get("seeds")
    if args.designs:
        designs, origin["designs"] = args.designs, f"--designs {args.designs}"
    if args.seeds:
        seeds, origin["seeds"] = args.seeds, f"--seeds {args.seeds}"
    if args.scenario:
        origin["scenario"] = f"--scenario {args.scenario}"
    elif "scenario" not in spec:
        origin.pop("scenario", None)
    grid = Grid(params, designs=designs, seeds=seeds, origin=origin)
    return grid, args.scenario or spec.get("scenario")


def _param_listing(sc) -> str:
    """The scenario's sweepable parameters: name, value, range and tag where it has them."""
    params = sc.parameters() if callable(getattr(sc, "parameters", None)) else (
        {f.name: getattr(sc, f.name) for f in dataclasses.fields(sc)}
        if dataclasses.is_dataclass(sc) else {})
    rows = []
    for k, v in params.items():
        if k in ("name", "seed"):
            continue
        rng = tag = ""
        fig = None
        if callable(getattr(sc, "figure", None)):
            try:
                fig = sc.figure(k)
            except (KeyError, ValueError, AttributeError, TypeError):
                fig = None
        if fig is not None:
            lo, hi = getattr(fig, "low", None), getattr(fig, "high", None)
            rng = f"{lo:g} .. {hi:g}" if isinstance(lo, (int, float)) and \
                isinstance(hi, (int, float)) else ""
            tag = (getattr(fig, "tag", "") or "") if rng else ""
        rows.append((k, "-" if v is None else f"{v:g}" if isinstance(v, float) else str(v),
                     rng, tag))
    return (f"scenario {scenario_name(sc)} (seeds: --seeds; designs: --designs)\n"
            + table(("parameter", "value", "range", "tag"), rows, align="llll", max_width=None)
            + "\n")


def run(args) -> int:
    if args.retry_failed and not args.resume:
        raise ValueError("--retry-failed needs --resume")
    if args.resume and not args.out:
        raise ValueError("--resume needs --out (the run log lives beside the output)")
    if args.workers is not None and not 0 <= args.workers <= MAX_WORKERS:
        raise ValueError(f"--workers {args.workers}: want 0..{MAX_WORKERS}")
    if args.out:
        check_out(Path(args.out), make=False)
    if args.bench:
        grid = None
        if args.grid or args.param or args.designs or args.seeds:
            grid, _ = _grid_from_args(args)
        bench(grid, args.scenario)
        return 0
    grid, scenario = _grid_from_args(args)
    if args.list_params:
        sys.stdout.write(_param_listing(resolve_scenario(scenario)))
        return 0
    if args.dry_run:
        base, _, _ = plan(grid, scenario, expand=False)
        print(f"{len(grid)} runs of scenario {scenario_name(base)!r}: "
              f"{json.dumps(grid.to_dict())}")
        return 0
    _exit_on_second_interrupt()
    table = sweep(grid, scenario, out=args.out, scheduler=args.scheduler,
                  workers=args.workers, progress=not args.quiet, resume=args.resume,
                  retry_failed=args.retry_failed, keep_log=args.keep_log,
                  worker_wait=args.worker_wait)
    if args.out is None:
        sys.stdout.write(table.to_csv())
    st = table.stats
    if not args.quiet:
        where = f" -> {args.out}" if args.out else ""
        print(f"kvmpt sweep: {st['runs']} runs ({st['ran']} run now, {st['resumed']} already "
              f"done), {st['failed']} failed, {st['elapsed_s']:.1f} s{where}", file=sys.stderr)
        if st["failed"] and args.out:
            print(f"kvmpt sweep: failed runs are in {args.out} (status=error) and "
                  f"{log_path_for(args.out)}; rerun with --resume --retry-failed",
                  file=sys.stderr)
    return 1 if st["failed"] else 0


def _exit_on_second_interrupt() -> None:
    """The first Ctrl-C stops the sweep cleanly (KeyboardInterrupt: the pool is stopped,
    the run log closed, ``kvmpt: interrupted``); a second one, while that cleanup runs,
    exits at once with status 130 and no traceback (the run log is flushed per line)."""
    if threading.current_thread() is not threading.main_thread():
        return
    pressed = []

    def handler(signum, frame):
        if pressed:
            os.write(2, b"kvmpt: interrupted again: exiting now\n")
            os._exit(130)
        pressed.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
