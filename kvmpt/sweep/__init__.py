"""Parameter sweeps: designs x workload parameters x seeds, and the ``kvmpt sweep`` command.

A design question ("how many cycles does the flush hook waste on a 1 TiB
slot with 100 k tracked gfns?") is answered by running one scenario over a
grid and reading the table::

    from kvmpt.sweep import Grid, sweep
    grid = Grid({"ram_gib": [4, 64, 1024], "tracked_gfns": [0, 4000, 100_000]},
                designs=["v6.5", "v6.6"], seeds=[0, 1])
    table = sweep(grid, scenario="q35-desktop", out="results.parquet")
    # or, as a plain dict:  sweep({"tracked_gfns": [0, 4000], "designs": "all"})

:class:`Grid`
    Workload parameters (each a list of values, passed to
    ``Scenario.with_overrides``), the designs and the seeds.  Expansion is a
    cartesian product in a fixed order: parameters in the order given, the
    first varying slowest, then the design, then the seed (fastest).  Each
    run has a stable key, a hash of (scenario name, parameters, design knobs,
    seed), so a run is the same run whatever grid it appears in.
:func:`sweep`
    Runs every point and returns a :class:`SweepTable` (its data a
    ``pyarrow.Table``, ``table.arrow``): one row per run, in
    grid order, with the parameters, the design (name and its four knobs),
    the seed, ``status`` ("ok" / "error"), ``error`` and every metric of the
    run's ``summary``.  Locally it uses a process pool (one worker per core)
    with a progress bar; given ``scheduler="tcp://HOST:PORT"`` or a
    ``dask.distributed.Client`` it runs on a Dask cluster, with the same
    results for the same seeds (each run depends only on its scenario,
    design and seed).
Resuming
    With ``out=`` every finished or failed run is appended to a run log,
    ``<out>.runs.jsonl``, as it completes.  ``sweep(..., resume=True)``
    (``kvmpt sweep --resume``) skips the runs already in that log or in a
    table saved earlier at ``out`` by the same scenario and kvmpt version, so
    an interrupted sweep restarts where it stopped and a finished one can be
    grown by adding values to its grid.  A failed run keeps its error string
    and never stops the others.  After a sweep with no failures the log is
    removed (``keep_log=True`` keeps it).  Per-run wall times are in the log
    only: in the table they would make two identical sweeps differ.
Saved tables
    ``.parquet`` (pyarrow) carries the grid, scenario and kvmpt version as
    schema metadata under the key ``kvmpt.sweep``; ``.csv`` (stdlib) gets a
    sidecar ``<name>.csv.json`` with the same metadata plus the column types.
    :func:`load_table` reads either back.

The package, one concern a module: ``parse`` (designs, seeds, values and grid files from
text), ``grid`` (:class:`Grid`, :class:`RunSpec`), ``table`` (the result: a ``pyarrow.Table``
and its files), ``runlog`` (the resumable run log and its fingerprint), ``executors``
(serial, local pool, Dask), ``driver`` (:func:`sweep`, :func:`plan`) and ``bench``; the command ``kvmpt sweep``
is :mod:`kvmpt.cli.sweep`.  ``kvmpt.sweep`` is this package; the function is
``kvmpt.sweep.sweep`` (``from kvmpt.sweep import sweep``).
"""
from __future__ import annotations

from kvmpt.sweep.bench import BENCH_PARAMS, BENCH_SEEDS, bench
from kvmpt.sweep.driver import DEFAULT_SCENARIO, MAX_WORKERS, plan, sweep
from kvmpt.sweep.executors import WORKER_WAIT_S
from kvmpt.sweep.grid import Grid, RunSpec, run_key
from kvmpt.sweep.parse import (MAX_RUNS, SEED_MAX, GridError, grid_spec, parse_design, parse_designs,
                    parse_param, parse_seeds, read_grid, read_grid_file)
from kvmpt.sweep.runlog import log_path_for, source_fingerprint
from kvmpt.sweep.table import DESIGN_COLUMNS, META_KEY, SWEEP_DIR, SweepTable, diff, load_table, row_matches

__all__ = [
    "Grid", "GridError", "RunSpec", "SweepTable", "sweep", "load_table", "diff", "parse_design",
    "parse_designs", "MAX_RUNS", "SEED_MAX", "MAX_WORKERS", "WORKER_WAIT_S", "DEFAULT_SCENARIO",
    "DESIGN_COLUMNS", "META_KEY", "SWEEP_DIR", "BENCH_PARAMS", "BENCH_SEEDS",
    "parse_seeds", "parse_param", "grid_spec", "read_grid", "read_grid_file", "run_key",
    "row_matches", "log_path_for", "source_fingerprint", "plan", "bench",
]
