"""Committed QEMU traces, replayed op by op against a live VM.

Each trace of ``data/traces/`` that records one VM is loaded with
:func:`kvmpt.workload.trace.load_qemu_trace`, completed with the CREATEs it deletes
before creating (:func:`kvmpt.workload.replay.infer_prologue`, as ``kvmpt replay``
does), and sent to a fresh live VM, a model VM under the host's profile and
one under v6.6.  Per op the recorded ``ret`` is compared with the host's
answer: equal is a match; different but predicted by the two profiles (the
v6.6 model gives the recorded errno and the host-profile model the host's) is
explained by the profile rule the model names; anything else is unexplained.
``format_samples.trace`` is a parser sample mixing lines of many VMs and is not
replayed (data/README.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kvmpt.infra.paths import DATA_DIR
from kvmpt.workload.replay import infer_prologue
from kvmpt.workload.trace import load_qemu_trace
from kvmpt.infra.text import fmt_errno as errname
from kvmpt.live.ioctl import Kvm
from kvmpt.live.model import ModelSide

__all__ = ["TRACES_DIR", "NOT_REPLAYED", "TraceOp", "trace_files", "replay_trace",
           "replay_traces"]

TRACES_DIR = DATA_DIR / "traces"
#: committed traces that are not one VM's ioctls, with the reason
NOT_REPLAYED = {"format_samples.trace": "a parser sample: one line of each format from "
                                        "different VMs (data/README.md)"}


@dataclass(frozen=True)
class TraceOp:
    """One replayed op: recorded errno (None for an inferred prologue op), the
    host's, the host-profile model's and the v6.6 model's, with the rule that
    decided the host-profile model's answer."""

    trace: str
    lineno: int | None
    text: str
    recorded: int | None
    host: int
    model: int
    v66: int
    reason: str

    @property
    def status(self) -> str:
        if self.recorded is None or self.recorded == self.host:
            return "match"
        if self.model == self.host and self.v66 == self.recorded:
            return "explained"
        return "unexplained"

    def describe(self) -> str:
        where = f"line {self.lineno}" if self.lineno else "prologue"
        return (f"{self.trace} {where}: {self.text}: recorded {errname(self.recorded)}, "
                f"host {errname(self.host)}, model {errname(self.model)} "
                f"(v6.6 {errname(self.v66)}; {self.reason})")


def trace_files(directory: Path = TRACES_DIR) -> list[Path]:
    return sorted(p for p in directory.glob("*.trace") if p.name not in NOT_REPLAYED)


def replay_trace(kvm: Kvm, path: Path, host_profile, v66_profile,
                 max_gfn: int) -> list[TraceOp]:
    """Replay one trace file on a fresh live VM and the two model VMs."""
    ops = load_qemu_trace(path)
    ops = infer_prologue(ops) + ops
    host_model = ModelSide(host_profile, max_gfn)
    v66_model = ModelSide(v66_profile, max_gfn)
    out: list[TraceOp] = []
    with kvm.create_vm() as vm:
        for op in ops:
            h = vm.set_user_memory_region(op.ioctl_slot, op.flags, op.gpa, op.size, op.ua)
            m, why = host_model.apply_fields(op.ioctl_slot, op.flags, op.gpa, op.size, op.ua)
            v, _ = v66_model.apply_fields(op.ioctl_slot, op.flags, op.gpa, op.size, op.ua)
            recorded = op.errno if op.lineno is not None else None
            out.append(TraceOp(path.name, op.lineno, str(op).strip(), recorded, h, m, v, why))
    return out


def replay_traces(host_profile, v66_profile, max_gfn: int, directory: Path = TRACES_DIR,
                  kvm_path: str | None = None) -> dict[str, list[TraceOp]]:
    """Every replayable committed trace: file name -> its replayed ops."""
    with Kvm(*(() if kvm_path is None else (kvm_path,))) as kvm:
        return {p.name: replay_trace(kvm, p, host_profile, v66_profile, max_gfn)
                for p in trace_files(directory)}
