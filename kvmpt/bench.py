"""``kvmpt bench``: how fast the Numba kernels are, as ratios (not a timed test).

In one run, on the same inputs:

* the guest write stream: ``vm.guest_write_batch`` (kernel) vs N calls of
  ``vm.guest_write`` (plain Python) vs a plain C loop of the same work;
* KVMGT's slot walk: the kernel vs a plain-Python per-gfn loop
  (``ProtectTable.find``), the vectorised NumPy walk, and the C loop, without
  and with dropping protection;
* end to end: a 64 GiB guest (16 M gfns) with 20 k shadowed page-table pages
  and 10 M guest writes, and a 1 TiB slot deleted with KVMGT attached.

The C loops (``benchmarks/kvmpt_loops.c``) are compiled with the system
``cc -O2`` into a temporary directory; without ``cc`` or the source file (a
non-source install) that comparison is skipped with a note.  Inputs come from
a seeded generator.  Also runnable as ``python -m kvmpt.bench`` or
``python benchmarks/bench.py``.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from kvmpt.constants import GIB, MIB, PAGE_SIZE as PAGE, USERSPACE_ADDR as UA
from kvmpt.infra.paths import CHECKOUT_DIR

HELP = "run the kernel benchmarks and print their ratios"


GOALS = {
    "writes_per_s": 100e6,
    "walk_gfns_per_s": 300e6,
    "vs_python": 200.0,
    "vs_c": 2.0,
    "e2e_s": 1.0,
    "peak_rss_gib": 2.0,
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--guest-gib", type=int, default=64, help="guest RAM (default 64)")
    p.add_argument("--writes", type=int, default=10_000_000, help="guest writes (default 10M)")
    p.add_argument("--tracked", type=int, default=20_000,
                   help="page-table pages GVT shadows (default 20000)")
    p.add_argument("--pt-write-share", type=float, default=0.1,
                   help="share of writes that hit shadowed pages (default 0.1)")
    p.add_argument("--walk-tib", type=float, default=1.0,
                   help="size of the big slot deleted with KVMGT attached, TiB (default 1)")
    p.add_argument("--python-writes", type=int, default=100_000,
                   help="writes timed on the plain-Python path (default 100000)")
    p.add_argument("--python-gfns", type=int, default=200_000,
                   help="gfns timed on the plain-Python walk (default 200000)")
    p.add_argument("--repeat", type=int, default=3, help="best of N timings (default 3)")
    p.add_argument("--seed", type=int, default=1, help="RNG seed (default 1)")
    p.add_argument("--no-c", action="store_true", help="skip the C comparison")
    p.add_argument("--c-source", type=Path, default=None,
                   help="benchmarks/kvmpt_loops.c (default: found next to the package)")
    p.add_argument("--quick", action="store_true",
                   help="small sizes (a smoke run: 1 GiB guest, 200k writes, 16 GiB walk)")


# ---------------------------------------------------------------- helpers
def _rounds(contenders, repeat, self_timed=()):
    """Run every contender once per round, ``repeat`` rounds, the order rotated by
    one each round (so no contender always follows the same one); returns
    ({name: [seconds per round]}, {name: last result}).  Contenders named in
    ``self_timed`` return (seconds, result) themselves."""
    times = {k: [] for k in contenders}
    out = {}
    names = list(contenders)
    for r in range(max(repeat, 1)):
        for k in names[r % len(names):] + names[:r % len(names)]:
            fn = contenders[k][1]
            if k in self_timed:
                dt, out[k] = fn()
            else:
                t0 = time.perf_counter()
                out[k] = fn()
                dt = time.perf_counter() - t0
            times[k].append(dt)
    return times, out


def _median(xs):
    xs = sorted(xs)
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2


def _rss_gib() -> float:
    """Peak resident set size of this process so far (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20)


def _rate(n, s):
    return n / s if s > 0 else float("inf")


def _fmt_rate(r, unit):
    return f"{r / 1e6:10.1f} M {unit}/s"


class Report:
    def __init__(self):
        self.goals: list[tuple[str, bool, str]] = []

    def line(self, text=""):
        print(text, flush=True)

    def goal(self, name, ok, detail):
        self.goals.append((name, ok, detail))


def build_guest(guest_gib: int, design="v6.6"):
    """A q35-like guest: low RAM, RAM 1 MiB..2 GiB, RAM above 4 GiB for the rest,
    a 128 MiB vGPU aperture slot and a read-only 4 MiB firmware slot; KVMGT
    attached.  Returns (vm, gvt, the three RAM slots)."""
    from kvmpt.kernel.vm import VM
    vm = VM(design=design)
    low_top = min(2 * GIB, guest_gib * GIB)
    slots = [(0, 0, 0xA0000, 0), (1, 0x100000, low_top - 0x100000, 0)]
    if guest_gib * GIB > low_top:
        slots.append((2, 4 * GIB, guest_gib * GIB - low_top, 0))
    slots += [(3, 0xC000_0000, 128 * MIB, 0), (4, 0xFFC0_0000, 4 * MIB, 2)]
    for sid, gpa, size, flags in slots:
        vm.set_user_memory_region(sid, flags, gpa, size, UA + gpa)
    gvt = vm.attach_kvmgt()
    ram = [s for s in vm.memslots(0) if s.id in (0, 1, 2)]
    return vm, gvt, ram


def ram_gfns(ram, idx: np.ndarray) -> np.ndarray:
    """Map indices in [0, total RAM pages) to gfns of the RAM slots."""
    sizes = np.array([s.npages for s in ram], dtype=np.int64)
    bases = np.array([s.base_gfn for s in ram], dtype=np.uint64)
    ends = np.cumsum(sizes)
    which = np.searchsorted(ends, idx, side="right")
    off = idx - (ends - sizes)[which]
    return bases[which] + off.astype(np.uint64)


def make_writes(ram, shadowed, n, pt_share, seed):
    from kvmpt.kernels.workload import guest_write_stream
    return guest_write_stream(ram, shadowed, n, pt_share, seed)


# ------------------------------------------------------------------- C side
def load_c(args, rep: Report):
    if args.no_c:
        rep.line("C comparison: skipped (--no-c)")
        return None
    src = args.c_source or CHECKOUT_DIR / "benchmarks" / "kvmpt_loops.c"
    cc = shutil.which("cc")
    if cc is None:
        rep.line("C comparison: skipped (no system `cc` on PATH)")
        return None
    if not src.is_file():
        rep.line(f"C comparison: skipped ({src} not found; run from a source checkout "
                 "or pass --c-source)")
        return None
    tmp = tempfile.mkdtemp(prefix="kvmpt-bench-")
    so = os.path.join(tmp, "kvmpt_loops.so")
    r = subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", so, str(src)],
                       capture_output=True, text=True)
    if r.returncode:
        rep.line(f"C comparison: skipped (cc failed: {r.stderr.strip().splitlines()[:1]})")
        return None
    ver = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout.splitlines()
    rep.line(f"C comparison: {ver[0] if ver else cc}, -O2, {src.name}")
    lib = ctypes.CDLL(so)
    P = ctypes.c_void_p
    I64, U64, INT, UINT = ctypes.c_int64, ctypes.c_uint64, ctypes.c_int, ctypes.c_uint
    lib.guest_write_batch.argtypes = [P, I64, P, P, P, P, I64, INT, UINT, P, P, P, P, P]
    lib.guest_write_batch.restype = None
    lib.slot_walk.argtypes = [U64, I64, UINT, P, P, P, P, P, INT, P, P]
    lib.slot_walk.restype = None
    lib._tmp = tmp
    return lib


def _p(a):
    return a.ctypes.data


def raw_write_kernel(gpas, sa, pt, shadow, miss):
    """The write kernel alone on prepared arrays (no accounting)."""
    from kvmpt.kernels.writes import S_LEN, page_track_write_batch
    stats = np.zeros(S_LEN, dtype=np.int64)
    o = np.zeros(1, dtype=np.uint8)
    m = np.zeros(1, dtype=np.bool_)
    page_track_write_batch(gpas, sa.base, sa.npages, sa.trap, sa.counter_addrs, True, pt.shift,
                           pt.head, pt.nxt, pt.key, pt.occ, *shadow, *miss, False, False,
                           o, m, stats)
    return stats


def c_guest_writes(lib, gpas, sa, tracker, pt):
    ptrs = sa.counter_addrs
    stats = np.zeros(8, dtype=np.int64)
    lib.guest_write_batch(_p(gpas), gpas.size, _p(sa.base), _p(sa.npages), _p(sa.trap),
                          _p(ptrs), sa.base.size, int(tracker), int(pt.shift), _p(pt.head),
                          _p(pt.nxt), _p(pt.key), _p(pt.occ), _p(stats))
    return stats


def c_walk(lib, base, npages, pt, delete):
    hits = np.zeros(max(pt.n, 1), dtype=np.uint64)
    out = np.zeros(2, dtype=np.int64)
    lib.slot_walk(base, npages, int(pt.shift), _p(pt.head), _p(pt.nxt), _p(pt.key),
                  _p(pt.clen), _p(pt.occ), int(delete), _p(hits), _p(out))
    return int(out[0]), int(out[1])


# ------------------------------------------------------------------- run
def run(args) -> int:
    from kvmpt import __version__
    from kvmpt.kernels import policy
    from kvmpt.kernel.vm import warmup
    from kvmpt.kernels import walk as kwalk
    from kvmpt.kernel.flat import slots_as_arrays

    if args.quick:
        args.guest_gib, args.writes, args.walk_tib = 1, 200_000, 1 / 64
        args.python_writes, args.python_gfns = 20_000, 50_000
        args.tracked = min(args.tracked, 2_000)
    rep = Report()
    rep.line(f"kvmpt {__version__} bench: numba "
             f"{'disabled (NUMBA_DISABLE_JIT=1)' if policy.JIT_DISABLED else 'jit'}, "
             f"cache dir {policy.cache_dir()}, seed {args.seed}, best of {args.repeat}")
    t_warm = warmup()
    rep.line(f"warmup (compile or load every kernel): {t_warm:.2f} s")
    rss0 = _rss_gib()

    # -------- end to end: 64 GiB guest, 20k shadowed pages, 10M writes
    rep.line()
    rep.line(f"== end to end: {args.guest_gib} GiB guest, {args.tracked} shadowed pages, "
             f"{args.writes:,} writes ({args.pt_write_share:.0%} to shadowed pages)")

    def scenario():
        r = np.random.default_rng(args.seed)
        t0 = time.perf_counter()
        vm, gvt, ram = build_guest(args.guest_gib)
        t1 = time.perf_counter()
        total = sum(s.npages for s in ram)
        shadowed = np.unique(ram_gfns(ram, r.choice(total, args.tracked, replace=False)))
        r.shuffle(shadowed)
        gvt.shadow_many(shadowed)
        t2 = time.perf_counter()
        gpas = make_writes(ram, shadowed, args.writes, args.pt_write_share, args.seed)
        t3 = time.perf_counter()
        res = vm.guest_write_batch(gpas)
        t4 = time.perf_counter()
        return (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0), (vm, gvt, ram, shadowed, gpas, res)

    times, (vm, gvt, ram, shadowed, gpas, res) = scenario()
    for _ in range(max(args.repeat - 1, 0)):
        del vm, gvt, ram, shadowed, gpas, res
        t, (vm, gvt, ram, shadowed, gpas, res) = scenario()
        times = tuple(min(a, b) for a, b in zip(times, t))
    peak = _rss_gib()
    n_gfns = sum(s.npages for s in ram)
    rep.line(f"  guest RAM gfns           {n_gfns:>14,}")
    rep.line(f"  build VM + slots         {times[0] * 1e3:10.1f} ms")
    rep.line(f"  shadow_many ({shadowed.size:,})     {times[1] * 1e3:10.1f} ms")
    rep.line(f"  generate writes          {times[2] * 1e3:10.1f} ms")
    rep.line(f"  guest_write_batch        {times[3] * 1e3:10.1f} ms   "
             f"{dict(res)}")
    rep.line(f"  total                    {times[4] * 1e3:10.1f} ms   "
             f"(goal < {GOALS['e2e_s'] * 1e3:.0f} ms: ratio {times[4] / GOALS['e2e_s']:.2f} of budget)")
    rep.line(f"  peak RSS of the process  {peak:10.2f} GiB  (before the scenario {rss0:.2f} GiB; "
             f"goal < {GOALS['peak_rss_gib']:.0f} GiB)")
    rep.goal(f"{args.guest_gib} GiB guest end to end < 1 s warm", times[4] < GOALS["e2e_s"],
             f"{times[4]:.3f} s")
    rep.goal("peak memory < 2 GiB", peak < GOALS["peak_rss_gib"], f"{peak:.2f} GiB")

    # -------- guest writes: kernel vs Python vs C, interleaved round by round
    rep.line()
    rep.line("== guest write stream (same VM, same writes; contenders interleaved each round, "
             "ratios are the median over rounds)")
    sa = vm._slot_arrays(0)
    pt = vm._ptable_arrays(gvt.ptable)
    shadow, miss = vm._shadow_set(), vm._miss_set(0, sa, gvt, pt)
    lib = load_c(args, rep)
    sub = gpas[:args.python_writes]
    contenders = {
        "batch": (gpas.size, lambda: vm.guest_write_batch(gpas)),
        "kernel": (gpas.size, lambda: raw_write_kernel(gpas, sa, pt, shadow, miss)),
        "python": (sub.size, lambda: [vm.guest_write(g) for g in sub.tolist()]),
    }
    if lib is not None:
        contenders["c"] = (gpas.size, lambda: c_guest_writes(lib, gpas, sa, True, pt))
    t, out = _rounds(contenders, args.repeat)
    rate = {k: _rate(contenders[k][0], min(v)) for k, v in t.items()}
    per_write = {k: [x / contenders[k][0] for x in v] for k, v in t.items()}
    ratio = lambda a, b: _median([y / x for x, y in zip(per_write[a], per_write[b])])  # noqa: E731
    rep.line(f"  vm.guest_write_batch {_fmt_rate(rate['batch'], 'writes')}  ({gpas.size:,} writes in "
             f"{min(t['batch']) * 1e3:.1f} ms: validation, kernel, accounting)")
    rep.line(f"  kernel alone         {_fmt_rate(rate['kernel'], 'writes')}  "
             f"({min(t['kernel']) * 1e3:.1f} ms)")
    rep.line(f"  python guest_write   {_fmt_rate(rate['python'], 'writes')}  ({sub.size:,} writes in "
             f"{min(t['python']) * 1e3:.1f} ms)   batch/python = {ratio('batch', 'python'):,.0f}x, "
             f"kernel/python = {ratio('kernel', 'python'):,.0f}x")
    rep.goal(">= 100 M guest writes/s (kernel alone)", rate["kernel"] >= GOALS["writes_per_s"],
             f"{rate['kernel'] / 1e6:.1f} M/s (batch API {rate['batch'] / 1e6:.1f} M/s)")
    rep.goal(">= 200x the Python path (writes, batch API)",
             ratio("batch", "python") >= GOALS["vs_python"],
             f"{ratio('batch', 'python'):,.0f}x (kernel alone {ratio('kernel', 'python'):,.0f}x)")
    if lib is not None:
        st = out["c"]
        ok = [int(st[0]), int(st[1]), int(st[2]), int(st[7])] == [
            res["direct"], res["ignored"], res["handled"], res["mmio"]]
        kc, bc = 1 / ratio("kernel", "c"), 1 / ratio("batch", "c")
        rep.line(f"  C -O2 loop           {_fmt_rate(rate['c'], 'writes')}  ({min(t['c']) * 1e3:.1f} ms;"
                 f" counts {'agree' if ok else 'DISAGREE'})   kernel time / C time = {kc:.2f}, "
                 f"batch time / C time = {bc:.2f}")
        rep.goal("guest writes within 2x of C (kernel alone)", kc <= GOALS["vs_c"],
                 f"kernel {kc:.2f}x C time (batch API {bc:.2f}x)")

    # -------- slot walk: kernel vs Python vs NumPy vs C, on the biggest RAM slot
    big = max(ram, key=lambda s: s.npages)
    rep.line()
    rep.line(f"== slot walk: slot {big.id}, {big.npages:,} gfns, ptable {len(gvt.ptable):,} "
             f"entries in {1 << gvt.ptable.bits:,} buckets (interleaved rounds, median ratios)")
    z = np.zeros(0, dtype=np.uint64)

    def k_walk(drop):
        """The walk kernel with deletion on a fresh copy of the table; returns its own
        time (the copies are not timed)."""
        w = pt.copy()
        hits = np.zeros(max(w.n, 1), dtype=np.uint64)
        dropped = np.zeros(max(w.n, 1), dtype=np.uint8)
        ev = np.zeros((max(w.n, 1), 6), dtype=np.int64)
        if drop:       # into copies of the slot's arrays, so every repeat starts alike
            from types import SimpleNamespace
            copy = SimpleNamespace(base_gfn=big.base_gfn, npages=big.npages, flags=0,
                                   arch=SimpleNamespace(
                                       gfn_write_track=big.arch.gfn_write_track.copy(),
                                       lpage_info=[lp.copy() for lp in big.arch.lpage_info]))
            one = slots_as_arrays([copy])
            args_ = (kwalk.DROP_SLOT, 0, one.base, one.npages, one.counter_addrs,
                     one.lpage2_addrs, one.lpage3_addrs)
        else:
            args_ = (kwalk.DROP_NONE, -1, z, z, z, z, z)
        t0 = time.perf_counter()
        nh, steps, _, _ = kwalk.slot_walk(np.uint64(big.base_gfn), big.npages, w.shift, w.head,
                                          w.nxt, w.key, w.clen, w.occ, True, hits, *args_,
                                          dropped, ev)
        return time.perf_counter() - t0, (nh, steps)

    def c_once():
        w = pt.copy()
        t0 = time.perf_counter()
        r_ = c_walk(lib, big.base_gfn, big.npages, w, True)
        return time.perf_counter() - t0, r_

    ng = min(big.npages, args.python_gfns)
    find = gvt.ptable.find

    def py_walk():
        s_ = 0
        for g in range(big.base_gfn, big.base_gfn + ng):
            s_ += find(g)[1]
        return s_

    walkers = {"kernel": (big.npages, lambda: k_walk(False)),
               "kernel_drop": (big.npages, lambda: k_walk(True)),
               "python": (ng, py_walk)}
    if lib is not None:
        walkers["c"] = (big.npages, c_once)
    t, out = _rounds(walkers, args.repeat, self_timed=("kernel", "kernel_drop", "c"))
    rate = {k: _rate(walkers[k][0], min(v)) for k, v in t.items()}
    per_gfn = {k: [x / walkers[k][0] for x in v] for k, v in t.items()}
    ratio = lambda a, b: _median([y / x for x, y in zip(per_gfn[a], per_gfn[b])])  # noqa: E731
    nh, steps = out["kernel"]
    rep.line(f"  kernel            {_fmt_rate(rate['kernel'], 'gfns')}  ({min(t['kernel']) * 1e3:.1f} ms;"
             f" {nh:,} hits, {steps:,} chain steps)")
    rep.line(f"  kernel, dropping  {_fmt_rate(rate['kernel_drop'], 'gfns')}  "
             f"({min(t['kernel_drop']) * 1e3:.1f} ms; counters and lpage counts of the hits "
             f"decremented)")
    rep.line(f"  python (per gfn)  {_fmt_rate(rate['python'], 'gfns')}  ({ng:,} gfns in "
             f"{min(t['python']) * 1e3:.1f} ms)   kernel/python = {ratio('kernel', 'python'):,.0f}x")
    rep.goal(">= 300 M gfns/s slot walk", rate["kernel"] >= GOALS["walk_gfns_per_s"],
             f"{rate['kernel'] / 1e6:.0f} M/s")
    rep.goal(">= 200x the Python path (walk)", ratio("kernel", "python") >= GOALS["vs_python"],
             f"{ratio('kernel', 'python'):,.0f}x")
    if lib is not None:
        kc = 1 / ratio("kernel", "c")
        rep.line(f"  C -O2             {_fmt_rate(rate['c'], 'gfns')}  ({min(t['c']) * 1e3:.1f} ms; "
                 f"{'agree' if out['c'] == (nh, steps) else 'DISAGREE'})   kernel time / C time = "
                 f"{kc:.2f}")
        rep.goal("slot walk within 2x of C", kc <= GOALS["vs_c"], f"kernel {kc:.2f}x C time")
    del vm, gvt, ram, shadowed, gpas, res, sa, pt

    # -------- 1 TiB slot deleted with KVMGT attached, end to end through the model
    npages = int(args.walk_tib * (1 << 40)) // PAGE
    rep.line()
    rep.line(f"== {args.walk_tib:g} TiB slot ({npages:,} gfns) deleted with KVMGT attached "
             f"({args.tracked:,} shadowed pages in it)")
    from kvmpt.kernel.vm import VM
    for design in ("v6.6", "v6.5"):
        r = np.random.default_rng(args.seed)
        vm = VM(design=design)
        gpa = 1 << 40
        vm.set_user_memory_region(1, 0, gpa, npages * PAGE, UA)
        gvt = vm.attach_kvmgt()
        base = gpa // PAGE
        gvt.shadow_many(np.uint64(base) + r.choice(npages, args.tracked, replace=False)
                        .astype(np.uint64))
        t0 = time.perf_counter()
        vm.set_user_memory_region(1, 0, gpa, 0, UA)
        t = time.perf_counter() - t0
        call = [c for c in vm.hook_calls if c.node == "kvmgt"][-1]
        rep.line(f"  {design}: {call.hook:<20} {t * 1e3:8.1f} ms  {_fmt_rate(_rate(npages, t), 'gfns')}"
                 f"  hits {call.hits:,}, chain steps {call.work.ops['chain_steps']:,}, "
                 f"counter updates {call.work.ops['counter_updates']:,}")
        del vm, gvt
    peak2 = _rss_gib()
    rep.line(f"  peak RSS of the process so far {peak2:.2f} GiB")
    rep.goal(f"{args.walk_tib:g} TiB slot walk without running out of memory", True,
             f"peak RSS {peak2:.2f} GiB")

    rep.line()
    rep.line("== goals")
    for name, ok, detail in rep.goals:
        rep.line(f"  [{'met ' if ok else 'MISS'}] {name}: {detail}")
    if lib is not None:
        shutil.rmtree(lib._tmp, ignore_errors=True)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="kvmpt bench", description=HELP)
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
