"""Differential memslot testing: the running kernel against the model, errno by errno.

Each generated sequence (``kvmpt.live.requests``) goes to a fresh live VM and
to two fresh model VMs: one under the host's :class:`~kvmpt.kernel.memslot.KernelProfile`
(``kvmpt.live.host.host_profile``), one under the v6.5/v6.6 rules
(``V6_6``).  Per request the host's errno is compared with the host-profile
model's; a request whose two model answers agree is one "whose rule did not
change", and for those the v6.6 answer is compared with the host too.

When the host and the model disagree, the rest of that sequence is dropped
(their states may differ from there on) and the next sequence starts on a new
VM: a disagreement never leaves the two out of step.  :func:`shrink` cuts a
disagreeing sequence down to a minimal one that still disagrees.
"""
from __future__ import annotations

import errno as errno_mod
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Sequence

from kvmpt.infra.text import fmt_errno as errname, table
from kvmpt.live.ioctl import Kvm
from kvmpt.live.model import ModelSide
from kvmpt.live.requests import Request, sequences

__all__ = ["Outcome", "DiffReport", "run_sequence", "differential", "shrink"]


#: (words in either model's reason, the rule that changed after v6.6), first match wins
CHANGED_RULES = (
    ("", "KVM_SET_USER_MEMORY_REGION2 (6.8+; -ENOTTY in v6.6)"),
    ("KVM_ADDRESS_SPACE_NUM", "one address space (KVM_CAP_MULTI_ADDRESS_SPACE: no SMM)"),
    ("access_ok", "access_ok() against USER_PTR_MAX (v6.6: the sign bit)"),
    ("GUEST_MEMFD", "guest_memfd (6.8+)"),
    ("guest_memfd", "guest_memfd (6.8+)"),
)
AFTERMATH = "aftermath of an earlier changed request"


def changed_rule(o: "Outcome") -> str:
    """The rule that makes the host-profile and v6.6 answers differ for ``o``."""
    if o.v66 == errno_mod.ENOTTY and o.request.v2:
        return CHANGED_RULES[0][1]
    for words, rule in CHANGED_RULES[1:]:
        if words in o.model_reason or words in o.v66_reason:
            return rule
    return AFTERMATH


@dataclass(frozen=True)
class Outcome:
    """One request's answers: the host's errno, the host-profile model's and the
    v6.6 model's (errno and the rule that decided it)."""

    index: int
    request: Request
    host: int
    model: int
    model_reason: str
    v66: int
    v66_reason: str

    @property
    def agree(self) -> bool:
        return self.host == self.model

    @property
    def rule_unchanged(self) -> bool:
        return self.model == self.v66

    def describe(self) -> str:
        return (f"#{self.index} {self.request}: host {errname(self.host)}, "
                f"model {errname(self.model)} ({self.model_reason})")


@dataclass
class DiffReport:
    """What :func:`differential` found."""

    seed: int
    requests: int = 0
    sequences: int = 0
    agree: int = 0
    unchanged: int = 0
    unchanged_agree: int = 0
    seconds: float = 0.0
    changed: Counter = field(default_factory=Counter)      # (v66, host, reason) -> n
    by_errno: Counter = field(default_factory=Counter)     # host errno name -> n
    disagreements: list[tuple[int, list[Request], Outcome]] = field(default_factory=list)
    restarts: int = 0
    facts: dict = field(default_factory=dict)
    profile: object = None

    @property
    def agreement(self) -> float:
        return self.agree / self.requests if self.requests else 1.0

    @property
    def unchanged_agreement(self) -> float:
        return self.unchanged_agree / self.unchanged if self.unchanged else 1.0

    def add(self, outs: Sequence[Outcome]) -> None:
        for o in outs:
            self.requests += 1
            self.agree += o.agree
            self.by_errno[errname(o.host)] += 1
            if o.rule_unchanged:
                self.unchanged += 1
                self.unchanged_agree += o.host == o.v66
            else:
                self.changed[(changed_rule(o), errname(o.v66), errname(o.model))] += 1

    def summary_lines(self) -> list[str]:
        """The report: a (check, result) table, then the requests whose rule changed after
        v6.6 and any disagreement (shrunk to a minimal sequence), one per line."""
        rows = [
            ("requests tried", f"{self.requests:,} in {self.sequences:,} fresh VMs "
                               f"(seed {self.seed}, {self.seconds:.1f} s)"),
            ("agreement, host rules", f"{self.agree:,}/{self.requests:,} "
                                      f"({100 * self.agreement:.2f} %)"),
            ("agreement, v6.5/v6.6", f"{self.unchanged_agree:,}/{self.unchanged:,} "
                                     f"({100 * self.unchanged_agreement:.2f} %), rule unchanged"),
        ]
        rows += [(f"host errno {k}", f"{v:,}") for k, v in sorted(self.by_errno.items())]
        rows.append(("disagreements", f"{len(self.disagreements):,} (below)"
                     if self.disagreements else "none"))
        lines = table(("check", "result"), rows, align="ll").splitlines()
        if self.changed:
            lines.append("requests whose rule changed after v6.6 (v6.6 errno -> host errno):")
            for (why, a, b), n in sorted(self.changed.items(), key=lambda kv: (kv[0][0], -kv[1])):
                lines.append(f"  {why}: {a} -> {b}: {n:,}")
        if self.disagreements:
            lines.append(f"DISAGREEMENTS: {len(self.disagreements)}")
            for seq_seed, reqs, out in self.disagreements:
                lines.append(f"  sequence {seq_seed}, minimal ({len(reqs)} requests):")
                for r in reqs[:-1]:
                    lines.append(f"    {r}")
                lines.append(f"    {out.describe()}")
        return lines


def run_sequence(kvm: Kvm, reqs: Sequence[Request], host_profile, v66_profile,
                 max_gfn: int, stop_at_disagreement: bool = True) -> list[Outcome]:
    """Send ``reqs`` to a fresh VM of ``kvm`` and to two fresh model VMs; the
    outcomes up to and including the first disagreement (all of them with
    ``stop_at_disagreement=False``).  The VM is closed on return."""
    host_model = ModelSide(host_profile, max_gfn)
    v66_model = ModelSide(v66_profile, max_gfn)
    outs: list[Outcome] = []
    with kvm.create_vm() as vm:
        for i, req in enumerate(reqs):
            if req.v2:
                h = vm.set_user_memory_region2(req.slot, req.flags, req.gpa, req.size, req.ua,
                                               req.guest_memfd_offset, req.guest_memfd)
            else:
                h = vm.set_user_memory_region(req.slot, req.flags, req.gpa, req.size, req.ua)
            m, why = host_model.apply(req)
            v, vwhy = v66_model.apply(req)
            outs.append(Outcome(i, req, h, m, why, v, vwhy))
            if h != m and stop_at_disagreement:
                break
    return outs


def shrink(kvm: Kvm, reqs: Sequence[Request], host_profile, v66_profile, max_gfn: int,
           budget: int = 400) -> tuple[list[Request], Outcome]:
    """A minimal sub-sequence of ``reqs`` whose last request still disagrees
    (greedy delta debugging: drop chunks, then single requests, while the
    disagreement stays).  ``budget`` bounds the number of replays."""
    def failing(cand: list[Request]) -> Outcome | None:
        outs = run_sequence(kvm, cand, host_profile, v66_profile, max_gfn)
        return outs[-1] if outs and not outs[-1].agree else None

    cur = list(reqs)
    out = failing(cur)
    if out is None:
        raise ValueError("the sequence does not disagree; nothing to shrink")
    cur = cur[:out.index + 1]
    tries, chunk = 0, max(1, len(cur) // 2)
    while chunk >= 1 and tries < budget:
        i, changed = 0, False
        while i < len(cur) - 1 and tries < budget:
            cand = cur[:i] + cur[i + chunk:] if i + chunk < len(cur) else cur[:i] + cur[-1:]
            if len(cand) < len(cur):
                tries += 1
                got = failing(cand)
                if got is not None:
                    cur, out, changed = cand[:got.index + 1], got, True
                    continue
            i += chunk
        if not changed:
            chunk //= 2
    return cur, out


def differential(total: int = 10_000, seed: int = 0, length: int = 50,
                 region2: bool | None = None, host_profile=None, v66_profile=None,
                 progress: Callable[[int, int], None] | None = None,
                 kvm_path: str | None = None) -> DiffReport:
    """Send ``total`` generated requests (sequences of ``length``, from ``seed``)
    to live VMs and to the model; the :class:`DiffReport`.  ``region2`` defaults
    to whether the host has ``KVM_CAP_USER_MEMORY2``.  ``progress(done, total)``
    is called after each sequence."""
    from kvmpt.kernel.memslot import V6_6
    from kvmpt.live.host import host_facts, host_profile as make_profile

    t0 = time.perf_counter()
    rep = DiffReport(seed=seed)
    with Kvm(*(() if kvm_path is None else (kvm_path,))) as kvm:
        facts = host_facts(kvm)
        hp = host_profile or make_profile(facts=facts)
        v66 = v66_profile or V6_6
        rep.facts, rep.profile = facts, hp
        max_gfn = facts["max_gfn"]
        if region2 is None:
            region2 = bool(hp.user_memory2)
        for seq_seed, reqs in sequences(seed, total, length, region2):
            outs = run_sequence(kvm, reqs, hp, v66, max_gfn)
            rep.sequences += 1
            rep.add(outs)
            if outs and not outs[-1].agree:
                rep.restarts += 1
                small, out = shrink(kvm, outs_requests(outs), hp, v66, max_gfn)
                rep.disagreements.append((seq_seed, small, out))
            if progress is not None:
                progress(rep.requests, total)
    rep.seconds = time.perf_counter() - t0
    return rep


def outs_requests(outs: Sequence[Outcome]) -> list[Request]:
    return [o.request for o in outs]


def describe_requests(seed: int, total: int, length: int = 50, region2: bool = True) -> str:
    """What :func:`kvmpt.live.requests.sequences` generates for ``seed`` and what the
    v6.6 model answers to it (no kernel needed): a few lines of text, the same on
    every machine."""
    from kvmpt.kernel.memslot import V6_6
    kinds: Counter = Counter()
    answers: Counter = Counter()
    n = 0
    for _, reqs in sequences(seed, total, length, region2):
        model = ModelSide(V6_6)
        for r in reqs:
            n += 1
            kinds["REGION2" if r.v2 else "REGION"] += 1
            kinds["size 0 (DELETE)" if r.size == 0 else "size > 0"] += 1
            e, why = model.apply(r)
            answers[errname(e) if e else why] += 1
    import textwrap
    lines = [f"{n:,} requests from seed {seed} (sequences of {length}):",
             "  " + ", ".join(f"{k} {v:,}" for k, v in sorted(kinds.items())),
             "the v6.6 model answers:",
             "  " + ", ".join(f"{k} {v:,}" for k, v in sorted(answers.items()))]
    return "\n".join(textwrap.fill(x, 79, subsequent_indent="  ") for x in lines)
