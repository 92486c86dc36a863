"""What ``kvmpt bench`` measures and against what: its sizes (:class:`BenchConfig`),
the ``--quick`` sizes and the goals the ratios are compared with.

The options live here, beside the sizes they set, so that ``python -m kvmpt.bench``
builds the same parser as ``kvmpt bench`` (``kvmpt.cli.bench``) without importing
the command layer.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from pathlib import Path

#: the one-line summary of ``kvmpt bench`` and ``python -m kvmpt.bench``
DESCRIPTION = "run the kernel benchmarks and print their ratios"

#: the performance goals each ratio is printed against (never asserted)
GOALS = {
    "writes_per_s": 100e6,
    "walk_gfns_per_s": 300e6,
    "vs_python": 200.0,
    "vs_c": 2.0,
    "e2e_s": 1.0,
    "peak_rss_gib": 2.0,
}

#: the sizes of ``--quick`` (a smoke run); ``tracked`` is capped at QUICK_TRACKED
QUICK = {"guest_gib": 1, "writes": 200_000, "walk_tib": 1 / 64,
         "python_writes": 20_000, "python_gfns": 50_000}
QUICK_TRACKED = 2_000


@dataclass(frozen=True)
class BenchConfig:
    """The sizes of one benchmark run (the defaults are the goals' sizes)."""

    guest_gib: int = 64               # guest RAM
    writes: int = 10_000_000          # guest writes
    tracked: int = 20_000             # page-table pages GVT shadows
    pt_write_share: float = 0.1       # share of writes that hit shadowed pages
    walk_tib: float = 1.0             # the big slot deleted with KVMGT attached, TiB
    python_writes: int = 100_000      # writes timed on the plain-Python path
    python_gfns: int = 200_000        # gfns timed on the plain-Python walk
    repeat: int = 3                   # rounds (best of / median over)
    seed: int = 1
    no_c: bool = False                # skip the C comparison
    c_source: Path | None = None      # benchmarks/kvmpt_loops.c (None: next to the package)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "BenchConfig":
        """The sizes :func:`add_arguments` parsed; ``--quick`` replaces them by
        :data:`QUICK`."""
        kw = {f.name: getattr(args, f.name) for f in fields(cls)}
        if args.quick:
            kw.update(QUICK, tracked=min(kw["tracked"], QUICK_TRACKED))
        return cls(**kw)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``kvmpt bench`` (and ``python -m kvmpt.bench``)."""
    d = BenchConfig()
    p.add_argument("--guest-gib", type=int, default=d.guest_gib,
                   help=f"guest RAM (default {d.guest_gib})")
    p.add_argument("--writes", type=int, default=d.writes, help="guest writes (default 10M)")
    p.add_argument("--tracked", type=int, default=d.tracked,
                   help=f"page-table pages GVT shadows (default {d.tracked})")
    p.add_argument("--pt-write-share", type=float, default=d.pt_write_share,
                   help=f"share of writes that hit shadowed pages (default {d.pt_write_share})")
    p.add_argument("--walk-tib", type=float, default=d.walk_tib,
                   help="size of the big slot deleted with KVMGT attached, TiB (default 1)")
    p.add_argument("--python-writes", type=int, default=d.python_writes,
                   help=f"writes timed on the plain-Python path (default {d.python_writes})")
    p.add_argument("--python-gfns", type=int, default=d.python_gfns,
                   help=f"gfns timed on the plain-Python walk (default {d.python_gfns})")
    p.add_argument("--repeat", type=int, default=d.repeat,
                   help=f"best of N timings (default {d.repeat})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"RNG seed (default {d.seed})")
    p.add_argument("--no-c", action="store_true", help="skip the C comparison")
    p.add_argument("--c-source", type=Path, default=None,
                   help="benchmarks/kvmpt_loops.c (default: found next to the package)")
    p.add_argument("--quick", action="store_true",
                   help="small sizes (a smoke run: 1 GiB guest, 200k writes, 16 GiB walk)")
