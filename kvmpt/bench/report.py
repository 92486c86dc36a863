"""The benchmark's output: lines as they are measured, and the goals at the end."""
from __future__ import annotations


class Report:
    """Prints each line at once (a long run shows progress) and keeps the goals
    (name, met, detail) for :meth:`goals_summary`."""

    def __init__(self):
        self.goals: list[tuple[str, bool, str]] = []

    def line(self, text=""):
        print(text, flush=True)

    def goal(self, name, ok, detail):
        self.goals.append((name, ok, detail))

    def goals_summary(self) -> None:
        self.line()
        self.line("== goals")
        for name, ok, detail in self.goals:
            self.line(f"  [{'met ' if ok else 'MISS'}] {name}: {detail}")
