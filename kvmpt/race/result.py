"""What an exploration returns, and how it prints (plain text, HTML)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from kvmpt.infra.text import table


@dataclass(frozen=True)
class WitnessStep:
    """One row of a witness: who ran which step, the kernel function it mirrors, and the
    locks each thread holds afterwards (for the swimlane figure).  ``step`` is the program
    step (its class, call ``stack`` and lock), for the mailing-list rendering."""

    thread: str
    text: str
    where: str
    held: dict                  # thread -> tuple of lock names held after this step
    failing: bool = False
    sections: dict = dataclasses.field(default_factory=dict)   # thread -> open SRCU domains
    step: object = None


@dataclass
class RaceResult:
    """What :func:`explore` found for one lock design and scenario.

    Behaviours, not orderings: ``states`` counts the distinct states reached (program
    counters, held locks, SRCU sections, every ptable chain, freed nodes, ...),
    ``failing_states`` the distinct states in which some thread's next step fails (or that
    are deadlocked), ``end_states`` the distinct states where every thread finished.
    ``schedules`` counts complete interleavings of the state graph -- orderings, in which
    steps that commute are counted in every order, so it measures how hard testing would
    be, not how many different things can happen; ``failures`` splits it by bug kind.
    ``witness`` is a shortest failing interleaving of the verdict's kind as
    ``[(thread, step), ...]`` rows (the last row is the failing step or, for a deadlock, the
    blocked acquisitions), or None if safe."""

    lock: str
    scenario: str
    verdict: str
    schedules: int
    states: int
    transitions: int
    threads: tuple
    failures: dict
    message: str | None
    witness_detail: list | None
    seconds: float
    srcu: bool = True
    slot_hook: str = ""
    lock_order: tuple = ()      # (held, then taken) lock-class pairs seen on any schedule
    inversions: tuple = ()      # lockdep's "possible circular locking dependency" messages
    failing_states: int = 0
    end_states: int = 0
    kinds: dict = dataclasses.field(default_factory=dict)   # bug kind -> failing states
    lockdep: bool = True
    witness_kind: str | None = None     # the bug kind of the witness (the verdict's unless asked)

    @property
    def witness(self):
        if self.witness_detail is None:
            return None
        return [(s.thread, s.text) for s in self.witness_detail]

    @property
    def failing_schedules(self) -> int:
        return sum(self.failures.values())

    def email(self, **kw) -> str:
        """The witness for a mailing-list reply (ASCII, <= 72 columns, CPU columns)."""
        from kvmpt.race.witness import email
        return email(self, **kw)

    def table(self, where: bool = True) -> str:
        """The witness as a per-thread table: one column per thread, one row per step."""
        if self.witness_detail is None:
            return (f"{self.scenario} / lock={self.lock}: safe — no failing interleaving "
                    f"among {self.states:,} states")
        names = list(self.threads)
        rows = [[("!" if s.failing else str(i))]
                + [s.text if n == s.thread else "" for n in names] + ([s.where] if where else [])
                for i, s in enumerate(self.witness_detail, 1)]
        cols = ["#"] + names + (["mirrors"] if where else [])
        # a notebook/terminal view: no column is clipped (email() is the mail rendering)
        return table(cols, rows, align="r" + "l" * (len(cols) - 1), max_width=None)

    def counts(self) -> str:
        """One line of the behaviour counts."""
        kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(self.kinds.items()))
        return (f"{self.states:,} states, {self.failing_states:,} failing"
                + (f" ({kinds})" if kinds else "") + f", {self.end_states:,} end states")

    def __str__(self) -> str:
        what = ", ".join(x for x in (f"slot hook {self.slot_hook}",
                                      "" if self.srcu else "srcu=False",
                                      "" if self.lockdep else "lockdep=False") if x)
        head = (f"kvmpt.race: scenario={self.scenario} lock={self.lock} ({what})\n"
                f"verdict: {self.verdict}  —  {self.counts()}\n"
                f"orderings: {self.schedules:,} schedules over {self.transitions:,} "
                f"transitions (commuting steps counted in every order)")  # no timing
        if self.message:
            head += f"\n{self.message}"
        for inv in self.inversions:
            head += f"\nlockdep: {inv}"
        return head + "\n\n" + self.table()

    def _repr_pretty_(self, p, cycle):  # IPython
        p.text(str(self))

    def _repr_html_(self) -> str:  # Jupyter: the same table, as HTML
        from html import escape
        head = (f"<p><b>{escape(self.scenario)}</b>, lock=<code>{escape(self.lock)}</code>: "
                f"<b>{escape(self.verdict)}</b> — {escape(self.counts())}</p>")
        if self.witness_detail is None:
            return head
        names = list(self.threads)
        rows = ["<tr><th>#</th>" + "".join(f"<th>{escape(n)}</th>" for n in names)
                + "<th>mirrors</th></tr>"]
        for i, st in enumerate(self.witness_detail, 1):
            style = ' style="color:#c0392b;font-weight:bold"' if st.failing else ""
            cells = "".join(f"<td{style if n == st.thread else ''}>"
                            f"{escape(st.text) if n == st.thread else ''}</td>" for n in names)
            rows.append(f"<tr><td>{'!' if st.failing else i}</td>{cells}"
                        f"<td><small>{escape(st.where)}</small></td></tr>")
        msg = f"<p>{escape(self.message)}</p>" if self.message else ""
        return head + msg + "<table>" + "".join(rows) + "</table>"


@dataclass
class SampleResult:
    """Outcome counts of ``runs`` random schedules, and the shortest failing one seen."""

    lock: str
    scenario: str
    runs: int
    seed: int
    outcomes: dict              # verdict -> number of runs
    witness: list | None        # [(thread, step), ...] of the shortest failing run
    witness_kind: str | None

    @property
    def kinds(self) -> set:
        return {k for k in self.outcomes if k != "safe"}
