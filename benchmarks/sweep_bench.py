"""Sweep throughput: runs per second on a local process pool vs a 2-worker Dask LocalCluster.

    python benchmarks/sweep_bench.py [--scenario NAME] [--seeds N] [--workers 2]
    kvmpt sweep --bench                      # the same, with the default grid

Both sweeps run the same grid (kvmpt.sweep.BENCH_PARAMS x v6.5, v6.6 x seeds) of short
runs; the LocalCluster (processes, one thread each, 127.0.0.1 only, no dashboard) is started
before the clock starts, the local pool inside it (as `kvmpt sweep` pays it).  Prints runs/s
for each and the ratio dask/local; a ratio near 1 means the Dask path costs little on one
machine, so the same sweep can be scaled out with --scheduler.  Also checks that both
tables are identical.
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..",
                                                      ".numba_cache"))

from kvmpt.sweep import BENCH_PARAMS, BENCH_SEEDS, Grid, bench  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", help="scenario name or file (default: kvmpt's default)")
    ap.add_argument("--seeds", type=int, default=BENCH_SEEDS,
                    help=f"seeds per grid point (default {BENCH_SEEDS})")
    ap.add_argument("--workers", type=int, default=2,
                    help="local processes and LocalCluster workers (default 2)")
    args = ap.parse_args(argv)
    grid = Grid(BENCH_PARAMS, designs=["v6.5", "v6.6"], seeds=args.seeds)
    bench(grid, args.scenario, n_workers=args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
