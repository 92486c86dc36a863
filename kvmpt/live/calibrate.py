"""Cost calibration on the running kernel: memslot ioctls from 1 GiB to 4 TiB, and a
vCPU's trapped-write round trip.

* **Memslot ioctls.**  For each slot size, on one fresh VM and for each
  repetition: CREATE (slot 0 at gpa 0), FLAGS_ONLY turning
  ``KVM_MEM_LOG_DIRTY_PAGES`` on (the dirty bitmap is allocated), FLAGS_ONLY
  turning it off, MOVE to gpa = size, DELETE.  The user range is never mapped
  and never touched: KVM checks it with ``access_ok()`` only, so a 4 TiB slot
  costs the host metadata, not memory, and this process's RSS stays flat
  (:func:`calibrate` reports the peak).
* **Trapped write.**  A real-mode guest of two instructions (``mov [0x8000],
  al; jmp $-3``) stores to a ``KVM_MEM_READONLY`` slot in a loop; each store
  exits to userspace with ``KVM_EXIT_MMIO`` and ``KVM_RUN`` resumes it.  One
  4 KiB page is mapped: it holds the code and backs the read-only slot.

Results are :class:`Calibration` objects, stored as ``data/host/*.toml``
measurement files (tag ``[M]``; see data/README.md) by :func:`write_toml` and
read back by :func:`read_toml`.
"""
from __future__ import annotations

import ctypes
import mmap
import resource
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from kvmpt.live.ioctl import KVM_EXIT_MMIO, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY, Kvm
from kvmpt.live.requests import UA_BASE

__all__ = ["OPS", "SIZES", "Sample", "Calibration", "calibrate", "mmio_round_trip",
           "write_toml", "read_toml", "peak_rss_bytes", "MeasurementError"]

from kvmpt.constants import GIB as GiB, TIB as TiB  # noqa: E402
#: default slot sizes, 1 GiB ... 4 TiB
SIZES = (GiB, 16 * GiB, 256 * GiB, TiB, 4 * TiB)
#: the timed memslot operations, in the order one repetition runs them
OPS = ("CREATE", "FLAGS_ONLY_DIRTY_ON", "FLAGS_ONLY_DIRTY_OFF", "MOVE", "DELETE")
MMIO = "MMIO_ROUND_TRIP"

# The real-mode guest: 0x1000: A2 00 80   mov [0x8000], al
#                      0x1003: EB FB      jmp 0x1000
_GUEST_CODE = bytes((0xA2, 0x00, 0x80, 0xEB, 0xFB))
_CODE_GPA, _RO_GPA = 0x1000, 0x8000


def peak_rss_bytes() -> int:
    """This process's peak resident set (``getrusage`` ``ru_maxrss``, KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass(frozen=True)
class Sample:
    """One operation at one size: every repetition's seconds."""

    op: str
    size: int                  # bytes; 0 for the MMIO round trip
    seconds: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def low(self) -> float:
        return min(self.seconds)

    @property
    def high(self) -> float:
        return max(self.seconds)


@dataclass
class Calibration:
    """A calibration run: what was measured, on which machine, when."""

    host: dict                             # kvmpt.live.host.host_facts()
    samples: list[Sample] = field(default_factory=list)
    peak_rss_before: int = 0
    peak_rss_after: int = 0
    seconds: float = 0.0

    def get(self, op: str, size: int = 0) -> Sample:
        for s in self.samples:
            if s.op == op and s.size == size:
                return s
        raise KeyError(f"no sample for {op} at {size:#x} bytes")

    def sizes(self) -> list[int]:
        return sorted({s.size for s in self.samples if s.op != MMIO})

    @property
    def label(self) -> str:
        h = self.host
        return (f"{h.get('kernel', '?')}, {h.get('cpu', '?')}"
                f"{', nested' if h.get('nested') else ''}, {h.get('date', '?')}")


def _timed(fn: Callable[[], int]) -> float:
    t0 = time.perf_counter()
    err = fn()
    dt = time.perf_counter() - t0
    if err:
        raise OSError(err, f"a calibration ioctl failed with errno {err}")
    return dt


def memslot_times(kvm: Kvm, size: int, repeat: int) -> dict[str, list[float]]:
    """Seconds per repetition of each of :data:`OPS` for one slot size."""
    out: dict[str, list[float]] = {op: [] for op in OPS}
    with kvm.create_vm() as vm:
        def set_(flags, gpa, sz):
            return lambda: vm.set_user_memory_region(0, flags, gpa, sz, UA_BASE)
        for _ in range(repeat):
            out["CREATE"].append(_timed(set_(0, 0, size)))
            out["FLAGS_ONLY_DIRTY_ON"].append(_timed(set_(KVM_MEM_LOG_DIRTY_PAGES, 0, size)))
            out["FLAGS_ONLY_DIRTY_OFF"].append(_timed(set_(0, 0, size)))
            out["MOVE"].append(_timed(set_(0, size, size)))
            out["DELETE"].append(_timed(set_(0, size, 0)))
    return out


def mmio_round_trip(kvm: Kvm, n: int = 20_000, repeat: int = 5) -> list[float]:
    """Seconds per ``KVM_RUN`` -> ``KVM_EXIT_MMIO`` round trip, one value per batch
    of ``n`` trapped stores of the real-mode guest (see module doc)."""
    page = mmap.mmap(-1, mmap.PAGESIZE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        page[:len(_GUEST_CODE)] = _GUEST_CODE
        buf = (ctypes.c_char * mmap.PAGESIZE).from_buffer(page)
        hva = ctypes.addressof(buf)
        try:
            with kvm.create_vm() as vm:
                for slot, flags, gpa in ((0, 0, _CODE_GPA), (1, KVM_MEM_READONLY, _RO_GPA)):
                    err = vm.set_user_memory_region(slot, flags, gpa, mmap.PAGESIZE, hva)
                    if err:
                        raise OSError(err, "KVM_SET_USER_MEMORY_REGION for the MMIO guest failed")
                with vm.create_vcpu(0) as cpu:
                    sregs = cpu.get_sregs()
                    for seg in (sregs.cs, sregs.ds):      # flat real mode: base 0
                        seg.base, seg.selector = 0, 0
                    cpu.set_sregs(sregs)
                    regs = cpu.get_regs()
                    regs.rip, regs.rflags = _CODE_GPA, 0x2
                    cpu.set_regs(regs)
                    reason = cpu.run()
                    phys, _, is_write = cpu.mmio() if reason == KVM_EXIT_MMIO else (0, 0, False)
                    if reason != KVM_EXIT_MMIO or phys != _RO_GPA or not is_write:
                        raise OSError(0, f"the real-mode guest did not exit with a KVM_EXIT_MMIO "
                                         f"write to {_RO_GPA:#x} (exit reason {reason})")
                    run = cpu.run
                    times = []
                    for _ in range(repeat):
                        t0 = time.perf_counter()
                        for _ in range(n):
                            run()
                        times.append((time.perf_counter() - t0) / n)
                    if run() != KVM_EXIT_MMIO:
                        raise OSError(0, "the guest stopped exiting with KVM_EXIT_MMIO")
        finally:
            del buf
    finally:
        page.close()
    return times


def calibrate(sizes=SIZES, repeat: int = 3, mmio_n: int = 20_000, host: dict | None = None,
              progress: Callable[[str], None] | None = None,
              kvm_path: str | None = None) -> Calibration:
    """Time :data:`OPS` at every size of ``sizes`` (``repeat`` times each) and the
    MMIO round trip; the :class:`Calibration`."""
    from kvmpt.live.host import host_facts
    t0 = time.perf_counter()
    with Kvm(*(() if kvm_path is None else (kvm_path,))) as kvm:
        cal = Calibration(host=host or host_facts(kvm), peak_rss_before=peak_rss_bytes())
        for size in sizes:
            if progress:
                progress(f"memslot ioctls at {size >> 30} GiB")
            for op, secs in memslot_times(kvm, size, repeat).items():
                cal.samples.append(Sample(op, size, tuple(secs)))
        if progress:
            progress("MMIO round trip")
        cal.samples.append(Sample(MMIO, 0, tuple(mmio_round_trip(kvm, mmio_n, max(3, repeat)))))
    cal.peak_rss_after = peak_rss_bytes()
    cal.seconds = time.perf_counter() - t0
    return cal


# ------------------------------------------------------------------ data files

def _q(s: str) -> str:
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_toml(cal: Calibration, path: Path | str) -> Path:
    """Write ``cal`` as a host-measurement data file (format in data/README.md)."""
    path = Path(path)
    h = cal.host
    lines = ["# kvmpt live calibration: memslot ioctls and a trapped write timed on a running",
             "# kernel (kvmpt.live.calibrate). Tag [M]: measured on the machine named below.",
             "", "[host]"]
    for key in sorted(h):
        v = h[key]
        if isinstance(v, bool):
            lines.append(f"{key} = {'true' if v else 'false'}")
        elif isinstance(v, int):
            lines.append(f"{key} = {v}")
        else:
            lines.append(f"{key} = {_q(v)}")
    lines += ["", "[run]", 'tag = "[M]"', f"seconds = {cal.seconds:.2f}",
              f"peak_rss_before = {cal.peak_rss_before}", f"peak_rss_after = {cal.peak_rss_after}"]
    for s in cal.samples:
        lines += ["", "[[sample]]", f"op = {_q(s.op)}", f"size = {s.size}",
                  f"median_us = {s.median * 1e6:.3f}", f"low_us = {s.low * 1e6:.3f}",
                  f"high_us = {s.high * 1e6:.3f}",
                  "seconds = [" + ", ".join(f"{x:.9f}" for x in s.seconds) + "]",
                  'tag = "[M]"']
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


class MeasurementError(ValueError):
    """A host-measurement file is malformed; the message names file, line, table, field."""


def _schemas():
    from kvmpt.infra.tomlfile import Field
    run = {"tag": Field(str, choices=("[M]",)), "seconds": Field(float, lo=0),
           "peak_rss_before": Field(int, lo=0), "peak_rss_after": Field(int, lo=0)}
    sample = {"op": Field(str, choices=OPS + (MMIO,)), "size": Field(int, lo=0, hi=1 << 64),
              "median_us": Field(float, lo=0), "low_us": Field(float, lo=0),
              "high_us": Field(float, lo=0), "seconds": Field(list, items=float),
              "tag": Field(str, choices=("[M]",))}
    return run, sample


def read_toml(path: Path | str) -> Calibration:
    """Read a host-measurement file (format in data/README.md) through kvmpt's one input
    reader; :class:`MeasurementError` naming file, line, table and field."""
    from kvmpt.infra.tomlfile import check_table, located, read_toml as _read
    path = Path(path)
    data, loc = _read(path, MeasurementError)
    run_spec, sample_spec = _schemas()
    if not isinstance(data.get("host"), dict):
        raise MeasurementError(located(path, loc, ("host",), None, "missing [host] table"))
    for key, v in data["host"].items():
        if not isinstance(v, (str, int, bool)):
            raise MeasurementError(located(path, loc, ("host",), key,
                                           "must be a string, an int or a bool"))
    if "run" not in data:
        raise MeasurementError(located(path, loc, ("run",), None, "missing [run] table"))
    check_table(MeasurementError, path, loc, ("run",), data["run"], run_spec)
    samples = []
    for i, s in enumerate(data.get("sample", [])):
        check_table(MeasurementError, path, loc, ("sample", i), s, sample_spec)
        if not s["seconds"] or not all(x > 0 for x in s["seconds"]):
            raise MeasurementError(located(path, loc, ("sample", i), "seconds",
                                           "must be a non-empty list of positive times"))
        samples.append(Sample(s["op"], s["size"], tuple(float(x) for x in s["seconds"])))
    run = data["run"]
    return Calibration(host=dict(data["host"]), samples=samples,
                       peak_rss_before=run["peak_rss_before"],
                       peak_rss_after=run["peak_rss_after"], seconds=float(run["seconds"]))
