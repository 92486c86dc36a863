"""Dashboard redraw in JupyterLab, click to new figure: ``python benchmarks/dashboard_redraw.py``.

Goal (issue): the *first* redraw of the design dashboard takes under 0.5 s from the click on
a design toggle to the new figure, in JupyterLab.  Measured exactly as
``tests/browser/test_jupyterlab.py`` does (``tests/browser/labdrive.py``): a JupyterLab on a
temporary copy of ``notebooks/01_page_track_hooks.ipynb``, headless Debian chromium, Run All,
then click ``remove (v6.6)`` and wait for a dashboard title naming the new design; then
toggle back and forth ``--clicks`` more times (settings seen before are cached by the
dashboard, so these are the warm redraws).  Prints every time and the goal ratio (first
redraw / 0.5 s; under 1 meets the goal).  No test asserts these times.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kvmpt.review.dashboard import REDRAW_GOAL_S  # noqa: E402
from tests.browser import labdrive  # noqa: E402

GOAL_S = REDRAW_GOAL_S
#: (button, text the redrawn title then contains)
TOGGLES = (("remove (v6.6)", "design remove/allow-move/none/drop"),
           ("flush (v6.5)", "design v6.5:"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clicks", type=int, default=4,
                    help="warm redraws after the first (default 4)")
    ap.add_argument("--width", type=int, default=1300, help="browser window width (px)")
    args = ap.parse_args(argv)
    if args.clicks < 0:
        ap.error("--clicks must be >= 0")
    if not Path(labdrive.CHROMIUM).is_file():
        print(f"{labdrive.CHROMIUM} not found: apt-get install chromium", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="kvmpt-redraw-") as tmp, \
            labdrive.lab_server(Path(tmp)) as (base, token), \
            labdrive.browser(args.width) as ctx:
        page = ctx.new_page()
        labdrive.run_all(page, base, token)
        first = labdrive.toggle_and_time(page, *TOGGLES[0])
        later = [labdrive.toggle_and_time(page, *TOGGLES[(i + 1) % 2])
                 for i in range(args.clicks)]
    print("JupyterLab dashboard redraw, click to new figure title "
          "(benchmarks/dashboard_redraw.py)")
    print(f"  first redraw        {first:7.3f} s   goal {GOAL_S} s   ratio {first / GOAL_S:.2f}"
          f"   {'meets' if first < GOAL_S else 'MISSES'} the goal")
    if later:
        print(f"  later redraws       {', '.join(f'{t:.3f}' for t in later)} s"
              f"   (median {sorted(later)[len(later) // 2]:.3f} s, ratio "
              f"{sorted(later)[len(later) // 2] / GOAL_S:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
