"""Ground truth from the running kernel: the model against ``/dev/kvm``.

* :mod:`kvmpt.live.ioctl` — ``/dev/kvm``, VMs, vCPUs (ctypes/fcntl/mmap), :func:`kvm_usable`
* :mod:`kvmpt.live.host` — the machine, its capabilities and probed limits, its
  :class:`kvmpt.kernel.memslot.KernelProfile` (:func:`host_profile`)
* :mod:`kvmpt.live.requests` — seeded random memslot request sequences
* :mod:`kvmpt.live.diff` — differential testing, errno by errno, with shrinking
* :mod:`kvmpt.live.traces` — committed QEMU traces replayed on a live VM
* :mod:`kvmpt.live.calibrate` — memslot ioctl and trapped-write timings, measurement files
* :mod:`kvmpt.live.compare` — the model's own prices of the same operations
* :mod:`kvmpt.cli.live` — ``kvmpt live``
"""
from __future__ import annotations

from pathlib import Path

from kvmpt.infra.paths import DATA_DIR
from kvmpt.live.ioctl import kvm_usable

__all__ = ["kvm_usable", "HOST_DATA_DIR", "measurement_files", "agreement_rows"]

HOST_DATA_DIR = DATA_DIR / "host"


def measurement_files(directory: Path = HOST_DATA_DIR) -> list[Path]:
    """The committed host-measurement files (``data/host/*.toml``), oldest first by name."""
    return sorted(Path(directory).glob("*.toml"))


def agreement_rows(report=None, traces=None) -> list[tuple]:
    """Rows (check, requests or ops, agreeing, agreement %) for a
    :class:`kvmpt.live.diff.DiffReport` and :func:`kvmpt.live.traces.replay_traces`
    result; either may be None."""
    rows = []
    if report is not None:
        rows.append(("generated requests, host rules", report.requests, report.agree,
                     f"{100 * report.agreement:.2f} %"))
        rows.append(("  of them with v6.6 rules unchanged, v6.6 rules", report.unchanged,
                     report.unchanged_agree, f"{100 * report.unchanged_agreement:.2f} %"))
    for name, ops in (traces or {}).items():
        good = sum(o.status != "unexplained" for o in ops)
        rows.append((f"trace {name} (match or explained)", len(ops), good,
                     f"{100 * good / len(ops):.2f} %"))
    return rows
