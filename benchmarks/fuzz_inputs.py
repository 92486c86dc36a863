"""Mutation run over every input format, at full size.

    python benchmarks/fuzz_inputs.py [--mutants 300] [--formats trace,csv,...] [--seed 0]

For each format (a QEMU trace, the memslot CSV, a layout, the cost table, a scenario, a
sweep grid) it makes ``--mutants`` mutants of the shipped data files with the fuzzer of
``tests/mutants.py`` (truncated lines, swapped fields, non-numbers, huge / negative /
non-finite numbers, unknown and duplicate keys, wrong types, binary garbage, empty files,
CRLF, a BOM ...), loads each as the command line does, and prints how many loaded a valid
object, how many were rejected with an error naming the file and a line or field, and the
failures: nonsense accepted, errors without a location, uncaught exceptions, hangs (over
``--limit`` seconds).  Exit status 1 if there is any failure.  ``tests/test_fuzz_inputs.py``
runs the same fuzzer at a small size.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
os.environ.setdefault("NUMBA_CACHE_DIR", str(HERE.parent / ".numba_cache"))
sys.path.insert(0, str(HERE.parent / "tests"))

import mutants  # noqa: E402

COLUMNS = ("loaded", "rejected") + mutants.BAD


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mutants", type=int, default=300, help="mutants per format (default 300)")
    ap.add_argument("--formats", default=",".join(mutants.FORMATS),
                    help=f"comma-separated subset of {','.join(mutants.FORMATS)}")
    ap.add_argument("--seed", type=int, default=0, help="first mutant seed (default 0)")
    ap.add_argument("--limit", type=float, default=10.0,
                    help="seconds after which one load counts as a hang (default 10)")
    ap.add_argument("--show", type=int, default=5, help="failures shown per kind (default 5)")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.formats.split(",") if n.strip()]
    unknown = [n for n in names if n not in mutants.FORMATS]
    if unknown:
        ap.error(f"unknown format(s) {unknown}; known: {', '.join(mutants.FORMATS)}")
    print(f"{'format':<9}" + "".join(f"{c:>10}" for c in COLUMNS) + f"{'ms/mutant':>11}")
    failures = 0
    shown = []
    for name in names:
        fmt = mutants.FORMATS[name]
        t0 = time.perf_counter()
        res = mutants.run(fmt, range(args.seed, args.seed + args.mutants), args.limit)
        ms = (time.perf_counter() - t0) * 1e3 / args.mutants
        print(f"{name:<9}" + "".join(f"{len(res.get(c, [])):>10}" for c in COLUMNS)
              + f"{ms:>11.1f}", flush=True)
        for kind in mutants.BAD:
            failures += len(res.get(kind, []))
            shown += [(name, kind, s, d) for s, d in res.get(kind, [])[:args.show]]
    for name, kind, seed, detail in shown:
        print(f"  {name} mutant {seed}: {kind}: {detail[:300]}")
    print(f"{failures} failures in {len(names) * args.mutants} mutants "
          "(nonsense accepted, errors without file and line/field, uncaught exceptions, hangs)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
