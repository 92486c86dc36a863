"""``kvmpt replay``: a QEMU trace (or a layout's boot churn) through each design.

The replay itself is :func:`kvmpt.workload.replay.replay_designs`; the text output is
:func:`kvmpt.review.textreport.render_replay`.
"""
from __future__ import annotations

import json
import os
import sys

from kvmpt.infra.text import table
from kvmpt.kernel.design import parse_design
from kvmpt.workload.costs import default_costs
from kvmpt.workload.replay import replay_designs
from kvmpt.workload.trace import MemslotOp, load_ops

HELP = "replay a QEMU memslot trace (or a layout's boot churn) through each design"


def add_arguments(p) -> None:
    p.description = (
        "Apply every kvm_set_user_memory line of TRACE through the model's "
        "KVM_SET_USER_MEMORY_REGION, compare errnos with the trace's ret=, and report op "
        "counts by kind, mismatches, the final layout per address space and, with "
        "--kvmgt/--tracked, what each design's page-track hooks do to KVMGT's tracked gfns.")
    p.add_argument("trace", metavar="TRACE", nargs="?",
                   help="a QEMU trace/log file (any kvm_set_user_memory format), a .csv in "
                        "the shared CSV format, or layout:NAME to replay a layout's boot "
                        "churn after building it (names: kvmpt replay --list-layouts)")
    p.add_argument("--design", action="append", metavar="NAME",
                   help="design preset (v6.5, v6.6) or knobs as "
                        "slot_hook=flush,move=allow,kvmgt_lock=none,drop=1; repeat to compare "
                        "(default: v6.5 and v6.6)")
    p.add_argument("--kvmgt", action="store_true",
                   help="attach KVMGT (register its page-track notifier) before the first op")
    p.add_argument("--tracked", type=int, default=0, metavar="N",
                   help="shadow N gfns in address-space-0 RAM, in runs of 1-64 (implies "
                        "--kvmgt; default 0)")
    p.add_argument("--track-after", type=int, default=None, metavar="K",
                   help="place the tracked gfns after K trace ops (default: after the "
                        "trace's last CREATE of a >= 1 GiB RAM slot in address space 0, when "
                        "the guest driver could have loaded; for layout:NAME and --layout: "
                        "0, right after the build)")
    p.add_argument("--layout", metavar="NAME",
                   help="build this layout before replaying TRACE (see --list-layouts)")
    p.add_argument("--no-infer", action="store_true",
                   help="do not create slots the trace deletes before creating them")
    p.add_argument("--seed", type=int, default=0, help="seed for placing tracked gfns (default 0)")
    p.add_argument("--costs", choices=("point", "low", "high", "none"), default="point",
                   help="price primitive ops with data/costs.toml at its point estimate, "
                        "the low or high end of every range, or not at all (default point)")
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="output format (default text: tables under 80 columns)")
    p.add_argument("--out", metavar="FILE",
                   help="write the report to FILE instead of standard output")
    p.add_argument("--ops", action="store_true",
                   help="also list every op with its kind and errno")
    p.add_argument("--list-layouts", action="store_true",
                   help="print the layout names and exit (TRACE may be '-')")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def _costs(estimate: str):
    """``data/costs.toml`` at ``estimate`` ("point", "low", "high"), or None for "none"."""
    return None if estimate == "none" else default_costs().at(estimate)


def run(args) -> int:
    from kvmpt.workload import layouts as layouts_mod
    from kvmpt.review import textreport

    if args.list_layouts:
        print(table(("layout", "description"),
                    [(n, layouts_mod.load_layout(n).description)
                     for n in layouts_mod.layout_names()], align="ll", max_width=None))
        return 0
    if not args.trace:
        raise ValueError("replay needs a TRACE (a trace file, a .csv, or layout:NAME)")
    if args.tracked < 0:
        raise ValueError("--tracked must be >= 0")
    designs = [parse_design(d) for d in (args.design or ["v6.5", "v6.6"])]

    setup: list[MemslotOp] = []
    roles: dict[tuple[int, int], str] = {}
    if args.layout:
        lay = layouts_mod.load_layout(args.layout)
        setup = layouts_mod.build_ops(lay)
        roles = {(s.as_id, s.slot): s.role for s in lay.slots}
    if args.trace.startswith("layout:"):
        if args.layout:
            raise ValueError("give either layout:NAME as TRACE or --layout, not both")
        lay = layouts_mod.load_layout(args.trace[len("layout:"):])
        setup = layouts_mod.build_ops(lay)
        roles = {(s.as_id, s.slot): s.role for s in lay.slots}
        ops = layouts_mod.churn_ops(lay)
        scenario = f"layout {lay.name} + boot churn"
    else:
        if not os.path.exists(args.trace):
            raise ValueError(f"{args.trace}: no such file")
        ops = load_ops(args.trace)
        if not ops:
            raise ValueError(f"{args.trace}: no kvm_set_user_memory lines")
        prose = ops.prose_lines
        if prose:
            print(f"kvmpt replay: {args.trace}: skipped {len(prose)} line(s) that mention "
                  f"kvm_set_user_memory in prose (lines {', '.join(map(str, prose[:5]))}"
                  f"{', ...' if len(prose) > 5 else ''})", file=sys.stderr)
        scenario = os.path.basename(args.trace) + (f" on layout {args.layout}"
                                                   if args.layout else "")
    track_after = args.track_after
    if track_after is None and setup:
        track_after = 0
    progress = None if not args.quiet else False
    results = replay_designs(ops, designs, setup_ops=setup, kvmgt=args.kvmgt,
                             tracked=args.tracked, track_after=track_after, seed=args.seed,
                             costs=_costs(args.costs),
                             infer_missing=not args.no_infer,
                             roles=roles or None, progress=progress, source=scenario)
    if args.format == "json":
        text = json.dumps({"scenario": scenario, "seed": args.seed,
                           "results": [r.summary() for r in results]}, indent=2) + "\n"
    else:
        text = textreport.render_replay(results, scenario=scenario, seed=args.seed,
                                        list_ops=args.ops)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text)
        if not args.quiet:
            print(f"kvmpt: wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
