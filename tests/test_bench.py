"""``kvmpt bench``'s plumbing (not its speed: benchmarks print ratios, nothing here is timed):
the command and ``python -m kvmpt.bench`` parse the same options into the same sizes,
``--quick`` shrinks them, the rounds rotate the contenders and the ratios are medians of
per-unit times."""
from __future__ import annotations

import argparse

import numpy as np

from kvmpt.bench import QUICK, BenchConfig, ram_gfns
from kvmpt.bench.config import add_arguments
from kvmpt.bench.timing import Timed, median, rounds
from kvmpt.cli import build_parser


def _cli(*argv):
    return BenchConfig.from_args(build_parser("bench").parse_args(["bench", *argv]))


def _module(*argv):
    p = argparse.ArgumentParser()
    add_arguments(p)
    return BenchConfig.from_args(p.parse_args(list(argv)))


def test_both_entries_parse_the_same_sizes():
    for argv in ([], ["--writes", "5", "--seed", "7", "--no-c"], ["--quick", "--tracked", "50"]):
        assert _cli(*argv) == _module(*argv)
    assert _cli() == BenchConfig()


def test_quick_shrinks_the_sizes_and_caps_tracked():
    q = _cli("--quick", "--repeat", "1")
    assert {k: getattr(q, k) for k in QUICK} == QUICK
    assert q.repeat == 1 and q.tracked == 2_000
    assert _cli("--quick", "--tracked", "50").tracked == 50


def test_rounds_rotate_the_order_and_keep_the_last_result():
    seen = []
    contenders = {k: (1, (lambda k=k: seen.append(k) or k)) for k in "abc"}
    times, out = rounds(contenders, 3)
    assert seen == list("abc" "bca" "cab")
    assert out == {"a": "a", "b": "b", "c": "c"} and all(len(v) == 3 for v in times.values())


def test_ratio_is_the_median_of_per_unit_times():
    clock = {"fast": iter([1.0, 2.0, 9.0]), "slow": iter([100.0, 100.0, 100.0])}
    t = Timed({"fast": (10, lambda: (next(clock["fast"]), None)),
               "slow": (1, lambda: (next(clock["slow"]), None))}, 3,
              self_timed=("fast", "slow"))
    # per unit: fast 0.1, 0.2, 0.9; slow 100 each -> 1000, 500, 111.1; median 500
    assert t.ratio("fast", "slow") == 500.0
    assert t.rate("fast") == 10.0 and t.ms("slow") == 100_000.0
    assert median([3, 1, 2, 4]) == 2.5


def test_ram_gfns_maps_indices_across_slots():
    class S:
        def __init__(self, base_gfn, npages):
            self.base_gfn, self.npages = base_gfn, npages
    ram = [S(0, 2), S(100, 3)]
    assert ram_gfns(ram, np.arange(5)).tolist() == [0, 1, 100, 101, 102]
