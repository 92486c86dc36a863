"""``kvmpt report``: execute the design notebooks, write standalone HTML and a text summary.

The work is :func:`kvmpt.review.report.build`; this module is its command line.
"""
from __future__ import annotations

import sys
from pathlib import Path

HELP = "execute the design notebooks and write the report (--out DIR, --format html|text)"


def add_arguments(p) -> None:
    p.description = (
        "Execute the numbered design notebooks (notebooks/NN_*.ipynb) and write, into --out, "
        "one standalone HTML page per notebook (plotly.js embedded once, readable offline; "
        "design toggles are plotly buttons) and summary.txt, the tables the notebooks printed "
        "and checked, as fixed-width text under 80 columns for a mailing-list reply.")
    p.add_argument("--out", default="build/report", metavar="DIR",
                   help="output directory (default: build/report)")
    p.add_argument("--format", action="append", choices=("html", "text"), dest="formats",
                   help="what to write; repeat for both (default: html and text)")
    p.add_argument("--notebook", action="append", metavar="PATH", dest="notebooks",
                   help="a notebook to run instead of all numbered ones (repeatable)")
    p.add_argument("--timeout", type=int, default=600, metavar="S",
                   help="per-cell timeout in seconds (default: 600)")
    p.add_argument("--update-notebooks", action="store_true",
                   help="instead: sync each notebook with its py:percent twin and re-execute "
                        "it in place (small outputs, no dashboard), ready to commit")


def run(args) -> int:
    from kvmpt.review.report import build, update_notebooks
    formats = tuple(args.formats or ("html", "text"))
    notebooks = None
    if args.notebooks:
        notebooks = [Path(n) for n in args.notebooks]
        for n in notebooks:
            if not n.is_file():
                raise FileNotFoundError(2, "No such notebook", str(n))
    if args.update_notebooks:
        update_notebooks(notebooks, args.timeout, log=lambda m: print(m, file=sys.stderr))
        return 0
    res = build(args.out, formats, notebooks, args.timeout,
                log=lambda m: print(m, file=sys.stderr))
    if res["text"] is not None and formats == ("text",):
        sys.stdout.write(Path(res["text"]).read_text(encoding="utf-8"))
    print(f"kvmpt report: done in {res['seconds']:.1f} s", file=sys.stderr)
    return 0
