"""Race-explorer timings: ``python benchmarks/race_bench.py [--spin]``.

The unit tests assert no wall-clock limits; this prints them instead.  Goal (issue 5): every
design x scenario explores in under 5 s on a development machine; the ratio column is the
slowest pair's time over that goal.  ``--spin`` also times SPIN's run per pair (export,
``spin -a``, compiling ``pan``, the search).
"""
from __future__ import annotations

import argparse
import time

from kvmpt.race import LOCKS, SCENARIOS, explore

GOAL_S = 5.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spin", action="store_true", help="also time SPIN per pair")
    ap.add_argument("--repeat", type=int, default=3, help="best of N (default 3)")
    args = ap.parse_args(argv)
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")
    worst = 0.0
    print(f"{'scenario':36} {'lock':10} {'states':>7} {'explore s':>10}"
          + (f" {'SPIN s':>7} {'SPIN states':>11}" if args.spin else ""))
    for sc in SCENARIOS:
        for lk in LOCKS:
            best = min(_time(lambda: explore(lk, sc)) for _ in range(args.repeat))
            r = explore(lk, sc)
            worst = max(worst, best)
            line = f"{sc:36} {lk:10} {r.states:7,} {best:10.3f}"
            if args.spin:
                from kvmpt.race.spin import verify
                s = verify(lk, sc)
                line += f" {s.seconds:7.2f} {s.states:11,}"
            print(line)
    print(f"slowest pair {worst:.3f} s; ratio to the {GOAL_S:.0f} s goal: {worst / GOAL_S:.3f}")
    return 0


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    raise SystemExit(main())
