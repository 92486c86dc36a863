"""One ``kvmpt bench`` run: warm the JIT, then each section in turn."""
from __future__ import annotations

from kvmpt.bench.cloop import unload_c
from kvmpt.bench.config import BenchConfig
from kvmpt.bench.report import Report
from kvmpt.bench.walk import bench_delete, bench_walk
from kvmpt.bench.writes import bench_end_to_end, bench_writes


def run_bench(cfg: BenchConfig) -> int:
    """Print the benchmark's timings, ratios and goals for ``cfg``; returns 0."""
    from kvmpt._version import __version__
    from kvmpt.kernel.vm import warmup
    from kvmpt.kernels import policy

    rep = Report()
    rep.line(f"kvmpt {__version__} bench: numba "
             f"{'disabled (NUMBA_DISABLE_JIT=1)' if policy.JIT_DISABLED else 'jit'}, "
             f"cache dir {policy.cache_dir()}, seed {cfg.seed}, best of {cfg.repeat}")
    rep.line(f"warmup (compile or load every kernel): {warmup():.2f} s")
    g = bench_end_to_end(cfg, rep)
    lib = bench_writes(cfg, rep, g)
    try:
        bench_walk(cfg, rep, g, lib)
        del g                     # the end-to-end guest goes before the big slot
        bench_delete(cfg, rep)
    finally:
        unload_c(lib)
    rep.goals_summary()
    return 0
