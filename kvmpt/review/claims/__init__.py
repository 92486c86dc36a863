"""The review thread's claims, each as a small experiment on the model.

The design notebook (``notebooks/01_page_track_hooks.ipynb``) walks Sean
Christopherson's reply of 2022-11-11 (<Y26SI3uh8JV0vvO6@google.com>) claim by
claim.  It writes each claim's experiment out in the public API (``VM``, ``attach_kvmgt``,
``fail_next_prepare`` ...); this package holds the same experiments as functions (for the
summary, the text report, the dashboard and the tests), the bulk work the notebook runs
behind one call (cost curves, trace censuses), and the bookkeeping both share
(:mod:`~kvmpt.review.claims.common`).  Everything returns plain data; figures live in
``kvmpt.review.figures``, text formats in ``kvmpt.infra.text``.  Nothing here imports plotly.

=======================  ==================================================================
module                   claim
=======================  ==================================================================
``common``               the slot layout, the shadowed pages, :class:`Snapshot`, the writes
``flow``                 section 1: :func:`memslot_flow`, :func:`vm_snapshot`
``failedmove``           section 2, "The 'flush' hook is flawed as it's invoked before the
                         memslot operation is guaranteed": :func:`failed_move`
``costs``                section 3, "Dropping write protections when a memslot is being
                         deleted is a waste of cycles": :func:`slot_hook_cost`,
                         :func:`cost_curve`, :func:`ptable_walk_cost`, :func:`price_rows`
``move``                 section 4, "actively prevent MOVE if there are external page
                         trackers": :func:`move_with_kvmgt`, :func:`qemu_move_census`
``locks``                section 5, "kvmgt_page_track_write() ... without mmu_lock":
                         :func:`lock_verdicts`
``summary``              section 6: :func:`summary_table`, every design against every effect
``explore``              section 7: :func:`evaluate`, the dashboard's one experiment call
=======================  ==================================================================
"""
from __future__ import annotations

from kvmpt.constants import GIB
from kvmpt.review.claims.common import (TRACE_DIR, Snapshot, page_table_writes, pick_pages,
                                        shadowed_slot, slot_ua, snapshot, write_stream)
from kvmpt.review.claims.costs import (DELETE_BASE_GFN, PROPOSAL, SECTION3_DESIGNS, HookCost,
                                       cost_curve, hook_cost, price_rows, ptable_walk_cost,
                                       slot_hook_cost)
from kvmpt.review.claims.explore import design_of, evaluate, static_variants
from kvmpt.review.claims.failedmove import CAUSES, SECTION2_DESIGNS, FailedMove, failed_move
from kvmpt.review.claims.flow import memslot_flow, vm_snapshot
from kvmpt.review.claims.locks import lock_verdict, lock_verdicts
from kvmpt.review.claims.move import move_with_kvmgt, qemu_move_census
from kvmpt.review.claims.summary import (EFFECT_NOTES, EFFECTS, PROPOSAL_SHORT, SUMMARY_DESIGNS,
                                         fmt_us, summary_table)

__all__ = [
    "GIB", "SECTION2_DESIGNS", "SECTION3_DESIGNS", "Snapshot", "FailedMove", "HookCost",
    "memslot_flow", "vm_snapshot", "failed_move", "slot_hook_cost", "ptable_walk_cost",
    "cost_curve",
    "price_rows", "move_with_kvmgt", "qemu_move_census", "lock_verdicts", "summary_table",
    "EFFECTS", "EFFECT_NOTES", "fmt_us", "PROPOSAL", "SUMMARY_DESIGNS", "TRACE_DIR", "write_stream",
    # added with the split: the notebook's building blocks and the dashboard's experiment
    "PROPOSAL_SHORT", "CAUSES", "snapshot", "pick_pages", "page_table_writes", "slot_ua",
    "shadowed_slot",
    "hook_cost", "DELETE_BASE_GFN", "lock_verdict", "design_of", "evaluate", "static_variants",
]
