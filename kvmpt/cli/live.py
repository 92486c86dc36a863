"""``kvmpt live``: check the model against this machine's kernel and calibrate costs on it.

Runs, on ``/dev/kvm``: the differential memslot test (``kvmpt.live.diff``), the
replay of every committed QEMU trace (``kvmpt.live.traces``) and the cost
calibration (``kvmpt.live.calibrate``), then prints a summary a reviewer can
paste (under 80 columns) and writes the calibration as a host-measurement file
(``--out``).  Exit status 0 when the model agrees with the host everywhere, 1
when it does not, 2 when ``/dev/kvm`` is missing or unusable (or on bad input).
"""
from __future__ import annotations

import argparse
import os
import sys
import textwrap
from pathlib import Path

from kvmpt.infra.text import (MAX_WIDTH, fmt_bytes, fmt_count, fmt_seconds, header,
                              render_document, table)
from kvmpt.live.calibrate import MMIO, OPS, SIZES, peak_rss_bytes

HELP = "check the model against /dev/kvm, calibrate costs"

_SIZE_UNITS = {"G": 30, "T": 40, "M": 20}


def parse_size(text: str) -> int:
    """``1G``, ``256G``, ``4T``, ``512M`` -> bytes (ValueError naming the text)."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    if not t or t[-1] not in _SIZE_UNITS or not t[:-1].isdigit() or int(t[:-1]) <= 0:
        raise ValueError(f"--sizes: {text!r} is not a size such as 1G, 256G or 4T")
    return int(t[:-1]) << _SIZE_UNITS[t[-1]]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--requests", type=int, default=10_000, metavar="N",
                   help="differential requests to send (default 10000; 0 skips the check)")
    p.add_argument("--seed", type=int, default=0, help="request generator seed (default 0)")
    p.add_argument("--length", type=int, default=50, metavar="L",
                   help="requests per fresh VM (default 50)")
    p.add_argument("--no-traces", action="store_true", help="skip the committed-trace replay")
    p.add_argument("--no-calibrate", action="store_true", help="skip the cost calibration")
    p.add_argument("--sizes", default=",".join(f"{s >> 30}G" for s in SIZES),
                   help="slot sizes to time (default 1G,16G,256G,1024G,4096G)")
    p.add_argument("--repeat", type=int, default=3, help="repetitions per size (default 3)")
    p.add_argument("--out", type=Path, default=Path("build/live"),
                   help="directory for the measurement file (default build/live)")
    p.add_argument("--kvm", default="/dev/kvm", help=argparse.SUPPRESS)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: when stderr is a terminal)")


def _bar(enabled: bool | None, total: int, desc: str, unit: str):
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit=unit, leave=False, mininterval=0.3)


def _wrap(lines) -> str:
    out = []
    for line in lines:
        indent = " " * (len(line) - len(line.lstrip()) + 2)
        out += textwrap.wrap(line, MAX_WIDTH, subsequent_indent=indent) or [""]
    return "\n".join(out)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def run(args) -> int:
    from kvmpt.kernel.memslot import V6_6
    from kvmpt.live.calibrate import calibrate, write_toml
    from kvmpt.live.compare import model_costs, model_trapped_write_us
    from kvmpt.live.diff import differential
    from kvmpt.live.host import host_facts, host_profile
    from kvmpt.live.ioctl import Kvm, kvm_usable
    from kvmpt.live.traces import replay_traces

    if args.requests < 0 or args.length < 1 or args.repeat < 1:
        raise ValueError("--requests must be >= 0, --length and --repeat >= 1")
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    ok, why = kvm_usable(args.kvm)
    if not ok:
        print(f"kvmpt live: cannot run here: {why}", file=sys.stderr)
        return 2
    fds0, rss0 = _open_fds(), peak_rss_bytes()
    with Kvm(args.kvm) as kvm:
        facts = host_facts(kvm)
    prof = host_profile(facts=facts)
    sections = []
    host_rows = [(k, str(facts[k])) for k in ("machine", "kernel", "cpu", "nested", "kvm_module",
                                              "kvm_cap_nr_memslots",
                                              "kvm_cap_multi_address_space",
                                              "kvm_cap_user_memory2", "kvm_cap_guest_memfd")]
    host_rows += [("max_gfn (probed)", f"{facts['max_gfn']:#x}"),
                  ("user_ptr_max (probed)", f"{facts['user_ptr_max']:#x}")]
    sections.append(("This machine", table(("fact", "value"), host_rows, align="ll")))

    failed = False
    if args.requests:
        bar = _bar(args.progress, args.requests, "differential", "req")
        last = [0]

        def tick(done, total):
            if bar is not None:
                bar.update(done - last[0])
                last[0] = done
        rep = differential(args.requests, args.seed, args.length, host_profile=prof,
                           progress=tick, kvm_path=args.kvm)
        if bar is not None:
            bar.close()
        failed |= bool(rep.disagreements)
        sections.append(("Differential memslot test (host vs model)",
                         _wrap(rep.summary_lines())))
    if not args.no_traces:
        res = replay_traces(prof, V6_6, facts["max_gfn"], kvm_path=args.kvm)
        rows, notes = [], []
        for name, ops in res.items():
            st = [o.status for o in ops]
            rows.append((name, len(ops), st.count("match"), st.count("explained"),
                         st.count("unexplained")))
            notes += [o.describe() for o in ops if o.status == "unexplained"]
            reasons = sorted({o.reason for o in ops if o.status == "explained"})
            notes += [f"{name}: explained by the profile: {r}" for r in reasons]
        failed |= any(r[4] for r in rows)
        sections.append(("Committed QEMU traces replayed on this kernel",
                         table(("trace", "ops", "match", "explained", "unexplained"), rows)
                         + ("\n" + _wrap(notes) if notes else "")))
    if not args.no_calibrate:
        bar = _bar(args.progress, len(sizes) + 1, "calibrate", "step")
        cal = calibrate(sizes, args.repeat, host=facts, kvm_path=args.kvm,
                        progress=(lambda _m: bar.update(1)) if bar is not None else None)
        if bar is not None:
            bar.close()
        path = write_toml(cal, args.out / f"host-{facts['kernel']}-{facts['date']}.toml")
        model = {(p.case, p.op, p.size): p.us for p in model_costs(sizes)}
        rows = []
        for op in OPS:
            for size in sizes:
                s = cal.get(op, size)
                rows.append((op.replace("FLAGS_ONLY_", "FLAGS "), fmt_bytes(size),
                             fmt_seconds(s.median), f"{fmt_seconds(s.low)}..{fmt_seconds(s.high)}",
                             fmt_seconds(model[("model: KVM alone (v6.6)", op, size)] * 1e-6),
                             fmt_seconds(model[("model: v6.5 + KVMGT (flush_slot walk)", op,
                                                size)] * 1e-6)))
        mm = cal.get(MMIO)
        tw = model_trapped_write_us()
        body = table(("op", "slot", "host", "host range", "model KVM", "model 6.5+GT"), rows)
        body += (f"\n\nMMIO round trip (KVM_RUN -> KVM_EXIT_MMIO -> KVM_RUN): host "
                 f"{fmt_seconds(mm.median)} ({fmt_seconds(mm.low)}..{fmt_seconds(mm.high)}); "
                 f"model (data/costs.toml): MMIO exit "
                 f"{fmt_seconds(tw['mmio_exit (KVM_EXIT_MMIO round trip)'] * 1e-6)}, "
                 f"in-kernel exit + emulation {fmt_seconds(tw['vm_exit + emulation'] * 1e-6)}.")
        body += (f"\nPeak RSS {fmt_count(cal.peak_rss_before >> 20)} MiB before, "
                 f"{fmt_count(cal.peak_rss_after >> 20)} MiB after slots up to "
                 f"{fmt_bytes(max(sizes))}; {fmt_seconds(cal.seconds)} in all.")
        body += f"\nMeasurement file: {path}"
        sections.append(("Cost calibration (median of repeats) [M]", _wrap(body.splitlines())))
    fds1 = _open_fds()
    sections.append(("Hygiene", _wrap([
        f"file descriptors open: {fds0} before, {fds1} after (every VM and vCPU fd closed)"
        if fds1 == fds0 else f"FILE DESCRIPTORS LEAKED: {fds0} before, {fds1} after",
        f"peak RSS {fmt_count(rss0 >> 20)} MiB at start, "
        f"{fmt_count(peak_rss_bytes() >> 20)} MiB at the end"])))
    failed |= fds1 != fds0
    head = header("kvmpt live: the model against this machine's kernel",
                  design=f"profile {prof.name} (and v6.6)",
                  scenario=f"{args.requests:,} generated requests, committed traces",
                  seed=args.seed)
    sys.stdout.write(render_document(head, sections))
    return 1 if failed else 0
