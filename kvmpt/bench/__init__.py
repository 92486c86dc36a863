"""How fast the Numba kernels are, as ratios (not a timed test): ``kvmpt bench``.

In one run, on the same inputs:

* the guest write stream: ``vm.guest_write_batch`` (kernel) vs N calls of
  ``vm.guest_write`` (plain Python) vs a plain C loop of the same work
  (:mod:`kvmpt.bench.writes`);
* KVMGT's slot walk: the kernel vs a plain-Python per-gfn loop
  (``ProtectTable.find``) and the C loop, without and with dropping protection
  (:mod:`kvmpt.bench.walk`);
* end to end: a 64 GiB guest (16 M gfns) with 20 k shadowed page-table pages
  and 10 M guest writes (:mod:`kvmpt.bench.guest`), and a 1 TiB slot deleted with
  KVMGT attached.

The C loops (``benchmarks/kvmpt_loops.c``) are compiled with the system
``cc -O2`` into a temporary directory (:mod:`kvmpt.bench.cloop`); without ``cc`` or
the source file (a non-source install) that comparison is skipped with a note.
Contenders run interleaved, round by round (:mod:`kvmpt.bench.timing`); inputs come
from a seeded generator; the sizes and goals are :mod:`kvmpt.bench.config`.  Also
runnable as ``python -m kvmpt.bench`` or ``python benchmarks/bench.py``; the command
is ``kvmpt.cli.bench``.
"""
from __future__ import annotations

from kvmpt.bench.cloop import c_guest_writes, c_walk, load_c, unload_c
from kvmpt.bench.config import DESCRIPTION, GOALS, QUICK, BenchConfig, add_arguments
from kvmpt.bench.guest import Guest, build_guest, end_to_end, make_writes, ram_gfns
from kvmpt.bench.report import Report
from kvmpt.bench.runner import run_bench
from kvmpt.bench.writes import raw_write_kernel

__all__ = ["DESCRIPTION", "GOALS", "QUICK", "BenchConfig", "Guest", "Report", "add_arguments",
           "build_guest", "c_guest_writes", "c_walk", "end_to_end", "load_c", "make_writes",
           "ram_gfns", "raw_write_kernel", "run_bench", "unload_c", "main"]


def main(argv=None) -> int:
    """``python -m kvmpt.bench [options]``: the options of ``kvmpt bench``."""
    import argparse
    p = argparse.ArgumentParser(prog="python -m kvmpt.bench", description=DESCRIPTION)
    add_arguments(p)
    return run_bench(BenchConfig.from_args(p.parse_args(argv)))
