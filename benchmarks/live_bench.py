"""The goals of the live checks, as figures and ratios (needs a usable /dev/kvm).

    python benchmarks/live_bench.py [--requests 10000] [--seed 0] [--repeat 3]

Prints, for this machine's kernel:
* differential memslot test: requests sent, seconds, requests/s, time / 60 s goal,
  agreement under the host profile and under v6.5/v6.6 for requests whose rule did not
  change (goal: 100 % and 100 %);
* committed QEMU traces: ops replayed and how many match or are explained (goal: all);
* calibration of CREATE, FLAGS_ONLY (dirty log on/off), MOVE, DELETE at 1 GiB .. 4 TiB plus
  the MMIO round trip: seconds, time / 120 s goal, peak RSS before and after.
A ratio below 1 meets its goal.  Exit status 1 if an agreement goal is missed.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..",
                                                      ".numba_cache"))

from kvmpt.live import kvm_usable  # noqa: E402
from kvmpt.live.calibrate import SIZES, calibrate  # noqa: E402
from kvmpt.live.diff import differential  # noqa: E402
from kvmpt.live.host import host_facts, host_profile  # noqa: E402
from kvmpt.live.ioctl import Kvm  # noqa: E402
from kvmpt.live.traces import replay_traces  # noqa: E402
from kvmpt.kernel.memslot import V6_6  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    ok, why = kvm_usable()
    if not ok:
        print(f"live_bench: no usable /dev/kvm: {why}")
        return 2
    with Kvm() as kvm:
        facts = host_facts(kvm)
    prof = host_profile(facts=facts)
    print(f"host: {facts['kernel']}, {facts['cpu']}, {facts['kvm_module']}"
          f"{', nested' if facts['nested'] else ''}")

    rep = differential(args.requests, args.seed, host_profile=prof)
    print(f"differential: {rep.requests:,} requests in {rep.seconds:.1f} s "
          f"({rep.requests / rep.seconds:,.0f} requests/s); time / 60 s goal = "
          f"{rep.seconds / 60:.2f}")
    print(f"  agreement, host profile: {100 * rep.agreement:.2f} % (goal 100 %)")
    print(f"  agreement, v6.5/v6.6 where the rule did not change: "
          f"{100 * rep.unchanged_agreement:.2f} % of {rep.unchanged:,} (goal 100 %)")

    t0 = time.perf_counter()
    traces = replay_traces(prof, V6_6, facts["max_gfn"])
    ops = [o for v in traces.values() for o in v]
    good = sum(o.status != "unexplained" and o.host == o.model for o in ops)
    print(f"traces: {len(traces)} files, {len(ops)} ops, {good} match or explained "
          f"(goal {len(ops)}); {time.perf_counter() - t0:.2f} s")

    cal = calibrate(SIZES, args.repeat, host=facts)
    print(f"calibration: 5 operations x {len(SIZES)} sizes (1 GiB .. 4 TiB) x {args.repeat} "
          f"+ MMIO round trip in {cal.seconds:.1f} s; time / 120 s goal = "
          f"{cal.seconds / 120:.2f}")
    print(f"  peak RSS {cal.peak_rss_before >> 20} MiB before, {cal.peak_rss_after >> 20} MiB "
          f"after (flat: {cal.peak_rss_after - cal.peak_rss_before < 32 << 20})")
    for op in ("CREATE", "MOVE", "DELETE"):
        print(f"  {op} 1 TiB: {cal.get(op, 1 << 40).median * 1e3:.0f} ms")
    print(f"  MMIO round trip: {cal.get('MMIO_ROUND_TRIP').median * 1e6:.1f} us")
    met = rep.agreement == 1.0 and rep.unchanged_agreement == 1.0 and good == len(ops)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
