"""Benchmark: runs/s of one sweep on a local process pool vs a Dask ``LocalCluster``.

``kvmpt sweep --bench`` and ``benchmarks/sweep_bench.py`` call :func:`bench`; it checks that
both executors give the same table before it prints their ratio.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Callable

from kvmpt.infra.text import fmt_seconds, table
from kvmpt.sweep.driver import sweep
from kvmpt.sweep.executors import worker_init
from kvmpt.sweep.grid import Grid
from kvmpt.sweep.table import diff

__all__ = ["bench", "BENCH_PARAMS", "BENCH_SEEDS"]

#: the benchmark's default grid: short runs, enough of them to amortize process start-up
BENCH_SEEDS = 5
BENCH_PARAMS: dict[str, list[Any]] = {
    "duration_s": [0.05], "tracked_gfns": [0, 1000, 4000], "churn": ["desktop", "adversarial"]}


def bench(grid: Grid | None = None, scenario: Any = None, run_fn: Callable | None = None,
          n_workers: int = 2, file=None) -> dict[str, float]:
    """Time the same sweep on a local process pool and on a ``LocalCluster`` of ``n_workers``
    single-threaded worker processes on 127.0.0.1; print runs/s for each and their ratio."""
    file = file or sys.stdout
    if grid is None:
        grid = Grid(BENCH_PARAMS, designs=["v6.5", "v6.6"], seeds=BENCH_SEEDS)
    from distributed import Client, LocalCluster
    t0 = time.perf_counter()
    local = sweep(grid, scenario, workers=n_workers, progress=False, run_fn=run_fn)
    t_local = time.perf_counter() - t0
    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                      host="127.0.0.1", dashboard_address=None) as cluster, \
            Client(cluster) as client:
        client.run(worker_init)
        t0 = time.perf_counter()
        dist = sweep(grid, scenario, client=client, progress=False, run_fn=run_fn)
        t_dask = time.perf_counter() - t0
    if dist != local:
        raise RuntimeError("the Dask sweep's table differs from the local one: "
                           + diff(local, dist))
    n = len(local)
    res = {"runs": n, "local_runs_per_s": n / t_local, "dask_runs_per_s": n / t_dask,
           "ratio": (n / t_dask) / (n / t_local)}
    print(f"sweep benchmark: {n} runs of scenario {local.meta['scenario']!r}, "
          f"{n_workers} workers", file=file)
    print(table(("executor", "runs/s", "time"),
                [("local process pool", f"{res['local_runs_per_s']:.1f}", fmt_seconds(t_local)),
                 ("LocalCluster (dask)", f"{res['dask_runs_per_s']:.1f}", fmt_seconds(t_dask)),
                 ("ratio dask/local", f"{res['ratio']:.2f}", "")]), file=file)
    return res
