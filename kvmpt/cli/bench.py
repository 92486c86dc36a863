"""``kvmpt bench``: run the kernel benchmarks and print their ratios (the Numba kernels vs
plain Python vs a C ``-O2`` loop); a smoke run with ``--quick``.  The benchmark itself is
:mod:`kvmpt.bench`; its options are declared there (``kvmpt.bench.config``), beside the
sizes they set, so that ``python -m kvmpt.bench`` parses the same ones without importing
this layer."""
from __future__ import annotations

from kvmpt.bench.config import DESCRIPTION as HELP, add_arguments

__all__ = ["HELP", "add_arguments", "run"]


def run(args) -> int:
    from kvmpt.bench import BenchConfig, run_bench
    return run_bench(BenchConfig.from_args(args))
