"""Section 6: every design against every effect, as one table (the summary the notebook
prints, the text report pastes into a reply), and the designs it compares."""
from __future__ import annotations

import errno
from typing import Any

from kvmpt.constants import PAGE_SHIFT
from kvmpt.infra.text import fmt_bytes, fmt_count_m, fmt_us
from kvmpt.kernel.design import Design
from kvmpt.review.claims.costs import PROPOSAL, cost_curve, price_rows
from kvmpt.review.claims.failedmove import FailedMove

__all__ = ["SUMMARY_DESIGNS", "EFFECTS", "EFFECT_NOTES", "PROPOSAL_SHORT", "summary_table",
           "fmt_us"]

#: Short column labels for the summary (fits 79 columns with four columns).
SUMMARY_DESIGNS = {
    "v6.5": Design.preset("v6.5"),
    "remove,allow": Design.preset("v6.5").replace(slot_hook="remove"),
    "v6.6": Design.preset("v6.6"),
}
#: The ptable-walk proposal's column (DELETE rows only).
PROPOSAL_SHORT = "ptable walk*"

#: (key, label) of the summary's effects, in the order of the review thread
EFFECTS = (
    ("failed_stale", "failed MOVE: stale"),
    ("failed_missed", "failed MOVE: missed"),
    ("move", "MOVE with KVMGT"),
    ("move_stale", "MOVE: stale pages"),
    ("probes", "DELETE {size}: lookups"),
    ("hook_us", "DELETE {size}: hook"),
    ("hold_us", "DELETE {size}: mmu_lock"),
    ("wasted", "DELETE: wasted updates"),
    ("verdict", "track_write race"),
    ("qemu_moves", "QEMU trace MOVEs"),
    ("qemu_stale", "QEMU SMM boot: stale"),
)

#: What each effect row means (printed under the table in the text report).
EFFECT_NOTES = (
    "failed MOVE: shadowed pages stale / guest page-table writes missed after a MOVE "
    "that fails with -ENOMEM in prepare (S3)",
    "MOVE with KVMGT: a MOVE that would succeed, KVMGT attached; stale pages after it",
    "DELETE: KVMGT's slot hook on one slot of that size: ptable lookups, its time, the "
    "longest mmu_lock hold (kvmpt.workload.costs, point estimates), count updates into freed "
    "metadata",
    "track_write race: kvmpt.race verdict for the design's ptable lock",
    "QEMU trace MOVEs: MOVEs in the replayed real QEMU traces (data/traces)",
    "QEMU SMM boot: shadowed pages made stale by address-space-1 DELETEs when the "
    "traces are replayed with KVMGT shadowing pages (a finding beyond the thread)",
    "ptable walk*: a proposal in no kernel: remove_region walks ptable, O(tracked)",
    "times: kvmpt.workload.costs point estimates at 3 GHz (data/costs.toml has the ranges)",
)


def summary_table(designs: dict[str, Design], failed: dict[str, FailedMove],
                  moves: dict[str, dict], verdicts: dict[str, Any],
                  census: list[dict] | None = None, *, size_pages: int = 1 << 28,
                  tracked: int = 64, exact_max_pages: int = 1 << 18, seed: int = 0,
                  proposal: bool = True) -> tuple[list[str], list[list[str]], dict]:
    """Each design x each effect, as strings: ``(columns, rows, numbers)``.

    ``designs``: short column label -> Design; ``failed`` / ``moves``: ``Design.name`` ->
    :func:`failed_move` / :func:`move_with_kvmgt` results; ``verdicts``: lock -> RaceResult;
    ``census``: :func:`qemu_move_census` rows.
    The DELETE rows run :func:`cost_curve` for one slot of ``size_pages`` pages holding
    ``tracked`` shadowed pages.  ``numbers`` holds the unformatted values."""
    size = fmt_bytes(size_pages << PAGE_SHIFT)
    costs = price_rows(cost_curve(designs, [size_pages], [tracked],
                                  exact_max_pages=exact_max_pages, seed=seed,
                                  proposal=proposal))
    cols = list(designs) + ([PROPOSAL_SHORT] if proposal else [])
    qemu_moves = None if census is None else sum(r["move"] for r in census
                                                 if r["design"] == census[0]["design"])
    numbers: dict[str, dict[str, Any]] = {}
    for label in cols:
        d = designs.get(label)
        c = next(r for r in costs if r["design"] == (label if d is not None else PROPOSAL))
        f = None if d is None else failed.get(d.name)
        m = None if d is None else moves.get(d.name)
        numbers[label] = {
            "failed_stale": None if f is None else f.after.stale,
            "failed_missed": None if f is None else f.missed,
            "move": None if m is None else ("allowed" if not m["errno"] else
                                            "-" + errno.errorcode[m["errno"]]),
            "move_stale": None if m is None else m["after"].stale,
            "probes": c["probes"], "hook_us": c["us"], "hold_us": c["hold_us"],
            "wasted": c["wasted_updates"],
            "verdict": None if d is None else verdicts[d.kvmgt_lock].verdict,
            "qemu_moves": qemu_moves if d is not None else None,
            "qemu_stale": _census_stale(census, d),
        }
    rows = []
    for key, label in EFFECTS:
        row = [label.format(size=size)]
        for c in cols:
            v = numbers[c][key]
            if v is None:
                row.append("-")
            elif key in ("hook_us", "hold_us"):
                row.append(fmt_us(v))
            elif isinstance(v, int):
                row.append(fmt_count_m(v))
            else:
                row.append(str(v))
        rows.append(row)
    return ["effect"] + cols, rows, numbers


def _census_stale(census, d: Design | None):
    if census is None or d is None:
        return None
    vals = [r["stale"] for r in census if r["design"] == d.name and r["stale"] is not None]
    return sum(vals) if vals else None
