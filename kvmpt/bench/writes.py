"""The guest write stream: end to end through the model, then
``vm.guest_write_batch`` (kernel and accounting) vs the write kernel alone vs N
calls of ``vm.guest_write`` (plain Python) vs the C loop, on the same VM and writes."""
from __future__ import annotations

import numpy as np

from kvmpt.bench.cloop import c_guest_writes, load_c
from kvmpt.bench.config import GOALS
from kvmpt.bench.guest import Guest, end_to_end
from kvmpt.bench.timing import Timed, fmt_rate, rss_gib


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


def bench_end_to_end(cfg, rep) -> Guest:
    """A ``cfg.guest_gib`` guest, ``cfg.tracked`` shadowed pages, ``cfg.writes`` writes:
    the best of ``cfg.repeat`` runs per phase, and the peak RSS.  Returns the last
    run's guest for the next sections."""
    rss0 = rss_gib()
    rep.line()
    rep.line(f"== end to end: {cfg.guest_gib} GiB guest, {cfg.tracked} shadowed pages, "
             f"{cfg.writes:,} writes ({cfg.pt_write_share:.0%} to shadowed pages)")
    run = (cfg.guest_gib, cfg.tracked, cfg.writes, cfg.pt_write_share, cfg.seed)
    t, g = end_to_end(*run)
    for _ in range(max(cfg.repeat - 1, 0)):
        g = None                      # free the last guest before building the next
        t1, g = end_to_end(*run)
        t = {k: min(v, t1[k]) for k, v in t.items()}
    peak = rss_gib()
    rep.line(f"  guest RAM gfns           {sum(s.npages for s in g.ram):>14,}")
    rep.line(f"  build VM + slots         {t['build'] * 1e3:10.1f} ms")
    rep.line(f"  shadow_many ({g.shadowed.size:,})     {t['shadow'] * 1e3:10.1f} ms")
    rep.line(f"  generate writes          {t['writes'] * 1e3:10.1f} ms")
    rep.line(f"  guest_write_batch        {t['batch'] * 1e3:10.1f} ms   {dict(g.res)}")
    rep.line(f"  total                    {t['total'] * 1e3:10.1f} ms   "
             f"(goal < {GOALS['e2e_s'] * 1e3:.0f} ms: ratio {t['total'] / GOALS['e2e_s']:.2f} "
             f"of budget)")
    rep.line(f"  peak RSS of the process  {peak:10.2f} GiB  (before the scenario {rss0:.2f} GiB; "
             f"goal < {GOALS['peak_rss_gib']:.0f} GiB)")
    rep.goal(f"{cfg.guest_gib} GiB guest end to end < 1 s warm", t["total"] < GOALS["e2e_s"],
             f"{t['total']:.3f} s")
    rep.goal("peak memory < 2 GiB", peak < GOALS["peak_rss_gib"], f"{peak:.2f} GiB")
    return g


def bench_writes(cfg, rep, g: Guest):
    """The write contenders, interleaved round by round; ratios are medians over rounds.
    Loads the C loops here (its note follows this section's heading) and returns them
    (None when skipped) for the slot walk; :func:`kvmpt.bench.cloop.unload_c` frees them."""
    rep.line()
    rep.line("== guest write stream (same VM, same writes; contenders interleaved each round, "
             "ratios are the median over rounds)")
    lib = load_c(cfg, rep)
    vm, gvt, gpas, res = g.vm, g.gvt, g.gpas, g.res
    sa = vm._slot_arrays(0)
    pt = vm._ptable_arrays(gvt.ptable)
    shadow, miss = vm._shadow_set(), vm._miss_set(0, sa, gvt, pt)
    sub = gpas[:cfg.python_writes]
    contenders = {
        "batch": (gpas.size, lambda: vm.guest_write_batch(gpas)),
        "kernel": (gpas.size, lambda: raw_write_kernel(gpas, sa, pt, shadow, miss)),
        "python": (sub.size, lambda: [vm.guest_write(a) for a in sub.tolist()]),
    }
    if lib is not None:
        contenders["c"] = (gpas.size, lambda: c_guest_writes(lib, gpas, sa, True, pt))
    t = Timed(contenders, cfg.repeat)
    rep.line(f"  vm.guest_write_batch {fmt_rate(t.rate('batch'), 'writes')}  ({gpas.size:,} writes "
             f"in {t.ms('batch'):.1f} ms: validation, kernel, accounting)")
    rep.line(f"  kernel alone         {fmt_rate(t.rate('kernel'), 'writes')}  "
             f"({t.ms('kernel'):.1f} ms)")
    rep.line(f"  python guest_write   {fmt_rate(t.rate('python'), 'writes')}  ({sub.size:,} writes "
             f"in {t.ms('python'):.1f} ms)   batch/python = {t.ratio('batch', 'python'):,.0f}x, "
             f"kernel/python = {t.ratio('kernel', 'python'):,.0f}x")
    rep.goal(">= 100 M guest writes/s (kernel alone)", t.rate("kernel") >= GOALS["writes_per_s"],
             f"{t.rate('kernel') / 1e6:.1f} M/s (batch API {t.rate('batch') / 1e6:.1f} M/s)")
    rep.goal(">= 200x the Python path (writes, batch API)",
             t.ratio("batch", "python") >= GOALS["vs_python"],
             f"{t.ratio('batch', 'python'):,.0f}x (kernel alone "
             f"{t.ratio('kernel', 'python'):,.0f}x)")
    if lib is None:
        return None
    st = t.out["c"]
    ok = [int(st[0]), int(st[1]), int(st[2]), int(st[7])] == [
        res["direct"], res["ignored"], res["handled"], res["mmio"]]
    kc, bc = 1 / t.ratio("kernel", "c"), 1 / t.ratio("batch", "c")
    rep.line(f"  C -O2 loop           {fmt_rate(t.rate('c'), 'writes')}  ({t.ms('c'):.1f} ms;"
             f" counts {'agree' if ok else 'DISAGREE'})   kernel time / C time = {kc:.2f}, "
             f"batch time / C time = {bc:.2f}")
    rep.goal("guest writes within 2x of C (kernel alone)", kc <= GOALS["vs_c"],
             f"kernel {kc:.2f}x C time (batch API {bc:.2f}x)")
    return lib
