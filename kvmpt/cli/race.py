"""``kvmpt race DESIGN [SCENARIO]``: explore one design x scenario and print the result."""
from __future__ import annotations

HELP = "explore the lock interleavings of a design (--email: a witness for a list reply)"


def add_arguments(p) -> None:
    from kvmpt.race.scenarios import DEFAULT_SCENARIO, SCENARIOS
    p.add_argument("design", metavar="DESIGN",
                   help="a ptable lock (none, mmu_lock, gfn_lock, vgpu_lock) or any design "
                        "kvmpt.kernel.design.parse_design reads (v6.5, v6.6, knob=value,...)")
    p.add_argument("scenario", metavar="SCENARIO", nargs="?", default=DEFAULT_SCENARIO,
                   help=f"one of: {', '.join(SCENARIOS)} (default {DEFAULT_SCENARIO})")
    p.add_argument("--email", action="store_true",
                   help="print the witness for a mailing-list reply (ASCII, <= 72 columns)")
    p.add_argument("--full", action="store_true", help="with --email: do not slice steps")
    p.add_argument("--no-lockdep", action="store_true",
                   help="compile lockdep_assert_held out (a production kernel)")
    p.add_argument("--no-srcu", action="store_true",
                   help="what-if: synchronize_srcu does not wait")
    p.add_argument("--witness", metavar="KIND",
                   help="show the shortest interleaving of this reachable bug kind (e.g. "
                        "missed-write) instead of the verdict's")
    p.add_argument("--spin", action="store_true",
                   help="also verify with SPIN and print its verdict and state count")


def run(args) -> int:
    from kvmpt.race.explorer import explore
    from kvmpt.race.programs import LOCKS
    kw = dict(srcu=not args.no_srcu, lockdep=not args.no_lockdep, witness=args.witness)
    if args.design in LOCKS:
        kw["lock"] = args.design
    else:
        kw["design"] = args.design
    r = explore(scenario=args.scenario, **kw)
    print(r.email(sliced=not args.full) if args.email else str(r))
    if args.spin:
        from kvmpt.race.spin import verify
        s = verify(r.lock, r.scenario, slot_hook=r.slot_hook, srcu=r.srcu, lockdep=r.lockdep)
        print(f"SPIN: {s.verdict} ({', '.join(s.kinds) or 'no bug reachable'}), "
              f"{s.states:,} states stored; explorer: {r.verdict}")
        return 0 if s.verdict == r.verdict else 1
    return 0
