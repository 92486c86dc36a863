"""KVMGT's slot walk (``kvmgt_page_track_remove_region`` / ``_flush_slot``): the walk
kernel without and with dropping protection vs a plain-Python per-gfn loop
(``ProtectTable.find``) vs the C loop, on the biggest RAM slot; then a big slot
deleted with KVMGT attached, end to end through the model."""
from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np

from kvmpt.bench.cloop import c_walk
from kvmpt.bench.config import GOALS
from kvmpt.bench.guest import Guest
from kvmpt.bench.timing import Timed, fmt_rate, rate, rss_gib
from kvmpt.constants import PAGE_SIZE, USERSPACE_ADDR as UA


def _kernel_walk(big, pt, drop: bool):
    """The walk kernel with deletion on a fresh copy of the table (and, when dropping,
    of the slot's counters, so every round starts alike); returns (its own time,
    (hits, chain steps)): the copies are not timed."""
    from kvmpt.kernel.flat import slots_as_arrays
    from kvmpt.kernels import walk as kwalk
    w = pt.copy()
    hits = np.zeros(max(w.n, 1), dtype=np.uint64)
    dropped = np.zeros(max(w.n, 1), dtype=np.uint8)
    ev = np.zeros((max(w.n, 1), 6), dtype=np.int64)
    if drop:
        copy = SimpleNamespace(base_gfn=big.base_gfn, npages=big.npages, flags=0,
                               arch=SimpleNamespace(
                                   gfn_write_track=big.arch.gfn_write_track.copy(),
                                   lpage_info=[lp.copy() for lp in big.arch.lpage_info]))
        one = slots_as_arrays([copy])
        drop_args = (kwalk.DROP_SLOT, 0, one.base, one.npages, one.counter_addrs,
                     one.lpage2_addrs, one.lpage3_addrs)
    else:
        z = np.zeros(0, dtype=np.uint64)
        drop_args = (kwalk.DROP_NONE, -1, z, z, z, z, z)
    t0 = time.perf_counter()
    nh, steps, _, _ = kwalk.slot_walk(np.uint64(big.base_gfn), big.npages, w.shift, w.head,
                                      w.nxt, w.key, w.clen, w.occ, True, hits, *drop_args,
                                      dropped, ev)
    return time.perf_counter() - t0, (nh, steps)


def _c_walk_once(lib, big, pt):
    """The C walk with deletion on a fresh copy of the table; returns its own time."""
    w = pt.copy()
    t0 = time.perf_counter()
    out = c_walk(lib, big.base_gfn, big.npages, w, True)
    return time.perf_counter() - t0, out


def _python_walk(find, base: int, n: int) -> int:
    """``n`` gfns from ``base`` probed one at a time; the chain steps."""
    steps = 0
    for gfn in range(base, base + n):
        steps += find(gfn)[1]
    return steps


def bench_walk(cfg, rep, g: Guest, lib) -> None:
    """The walk contenders on the biggest RAM slot, interleaved round by round."""
    big = max(g.ram, key=lambda s: s.npages)
    ptable = g.gvt.ptable
    rep.line()
    rep.line(f"== slot walk: slot {big.id}, {big.npages:,} gfns, ptable {len(ptable):,} "
             f"entries in {1 << ptable.bits:,} buckets (interleaved rounds, median ratios)")
    pt = g.vm._ptable_arrays(ptable)
    ng = min(big.npages, cfg.python_gfns)
    walkers = {"kernel": (big.npages, lambda: _kernel_walk(big, pt, False)),
               "kernel_drop": (big.npages, lambda: _kernel_walk(big, pt, True)),
               "python": (ng, lambda: _python_walk(ptable.find, big.base_gfn, ng))}
    if lib is not None:
        walkers["c"] = (big.npages, lambda: _c_walk_once(lib, big, pt))
    t = Timed(walkers, cfg.repeat, self_timed=("kernel", "kernel_drop", "c"))
    nh, steps = t.out["kernel"]
    rep.line(f"  kernel            {fmt_rate(t.rate('kernel'), 'gfns')}  ({t.ms('kernel'):.1f} ms;"
             f" {nh:,} hits, {steps:,} chain steps)")
    rep.line(f"  kernel, dropping  {fmt_rate(t.rate('kernel_drop'), 'gfns')}  "
             f"({t.ms('kernel_drop'):.1f} ms; counters and lpage counts of the hits "
             f"decremented)")
    rep.line(f"  python (per gfn)  {fmt_rate(t.rate('python'), 'gfns')}  ({ng:,} gfns in "
             f"{t.ms('python'):.1f} ms)   kernel/python = {t.ratio('kernel', 'python'):,.0f}x")
    rep.goal(">= 300 M gfns/s slot walk", t.rate("kernel") >= GOALS["walk_gfns_per_s"],
             f"{t.rate('kernel') / 1e6:.0f} M/s")
    rep.goal(">= 200x the Python path (walk)", t.ratio("kernel", "python") >= GOALS["vs_python"],
             f"{t.ratio('kernel', 'python'):,.0f}x")
    if lib is None:
        return
    kc = 1 / t.ratio("kernel", "c")
    rep.line(f"  C -O2             {fmt_rate(t.rate('c'), 'gfns')}  ({t.ms('c'):.1f} ms; "
             f"{'agree' if t.out['c'] == (nh, steps) else 'DISAGREE'})   kernel time / C time = "
             f"{kc:.2f}")
    rep.goal("slot walk within 2x of C", kc <= GOALS["vs_c"], f"kernel {kc:.2f}x C time")


def bench_delete(cfg, rep) -> None:
    """A ``cfg.walk_tib`` TiB slot with ``cfg.tracked`` shadowed pages deleted with
    KVMGT attached, through ``vm.set_user_memory_region`` (v6.6's remove hook and
    v6.5's flush hook)."""
    from kvmpt.kernel.vm import VM
    npages = int(cfg.walk_tib * (1 << 40)) // PAGE_SIZE
    rep.line()
    rep.line(f"== {cfg.walk_tib:g} TiB slot ({npages:,} gfns) deleted with KVMGT attached "
             f"({cfg.tracked:,} shadowed pages in it)")
    for design in ("v6.6", "v6.5"):
        r = np.random.default_rng(cfg.seed)
        vm = VM(design=design)
        gpa = 1 << 40
        vm.set_user_memory_region(1, 0, gpa, npages * PAGE_SIZE, UA)
        gvt = vm.attach_kvmgt()
        base = gpa // PAGE_SIZE
        gvt.shadow_many(np.uint64(base) + r.choice(npages, cfg.tracked, replace=False)
                        .astype(np.uint64))
        t0 = time.perf_counter()
        vm.set_user_memory_region(1, 0, gpa, 0, UA)
        t = time.perf_counter() - t0
        call = [c for c in vm.hook_calls if c.node == "kvmgt"][-1]
        rep.line(f"  {design}: {call.hook:<20} {t * 1e3:8.1f} ms  "
                 f"{fmt_rate(rate(npages, t), 'gfns')}  hits {call.hits:,}, "
                 f"chain steps {call.work.ops['chain_steps']:,}, "
                 f"counter updates {call.work.ops['counter_updates']:,}")
        del vm, gvt
    peak = rss_gib()
    rep.line(f"  peak RSS of the process so far {peak:.2f} GiB")
    rep.goal(f"{cfg.walk_tib:g} TiB slot walk without running out of memory", True,
             f"peak RSS {peak:.2f} GiB")
