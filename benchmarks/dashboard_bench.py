"""Dashboard redraw timings: ``python benchmarks/dashboard_bench.py [--look S]``.

The unit tests assert no wall-clock limits; this prints them instead.  Goal: the first click
redraws in under 0.5 s.  It builds the dashboard twice at its default setting, once without
and once with the background warmer, waits ``--look`` seconds (the reader looks at the first
figure), then clicks one design knob after another, ``--look`` seconds apart, and prints each
click's time and its ratio to the goal.
"""
from __future__ import annotations

import argparse
import time

from kvmpt.review import dashboard as D
from kvmpt.review.dashboard import REDRAW_GOAL_S
from kvmpt.review.claims import explore as E

GOAL_S = REDRAW_GOAL_S
CLICKS = (("slot_hook", "remove"), ("move", "reject"), ("kvmgt_lock", "vgpu_lock"),
          ("drop_protection_on_remove", False))


def _session(warm: bool, look: float) -> list[float]:
    E.scenario_run.cache_clear()
    E._curve.cache_clear()
    db = D.Dashboard(warm=warm)
    out = []
    try:
        for name, value in CLICKS:
            time.sleep(look)
            t = time.perf_counter()
            db.controls[name].value = value
            out.append(time.perf_counter() - t)
    finally:
        db.close()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--look", type=float, default=8.0,
                    help="seconds between building / clicks (default 8)")
    args = ap.parse_args(argv)
    D.Dashboard(warm=False)                     # compile the Numba kernels once, untimed
    cold, warm = _session(False, args.look), _session(True, args.look)
    print(f"{'click':34} {'no warmer s':>12} {'warmer s':>9} {'warmer/goal':>12}")
    for (name, value), c, w in zip(CLICKS, cold, warm):
        print(f"{name + '=' + str(value):34} {c:12.3f} {w:9.3f} {w / GOAL_S:12.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
