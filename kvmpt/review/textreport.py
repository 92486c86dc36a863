"""``kvmpt replay``'s text output: one :class:`~kvmpt.workload.replay.ReplayResult` per design.

Rendered with the one table renderer, :mod:`kvmpt.infra.text` (fixed width, under 80
columns, pasteable into a mail to kvm@vger.kernel.org).
"""
from __future__ import annotations

from typing import Any, Sequence

from kvmpt.constants import KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY, PAGE_SHIFT
from kvmpt.infra.text import (MAX_WIDTH, fmt_bytes, fmt_count, fmt_cycles, fmt_errno,  # noqa: F401
                              fmt_hex, fmt_pages, fmt_seconds, header, render_document, table)
from kvmpt.infra.text import wrap as _wrap

__all__ = ["render_replay", "MAX_WIDTH"]


def _where(r) -> str:
    """A result's position: its trace line, or ``#index`` for generated ops."""
    if r.op.lineno:
        return str(r.op.lineno)
    return "pro" if r.index < 0 else f"#{r.index}"


#: the columns every per-op table starts with, and their alignment
_OP_COLUMNS = ["where", "kind", "AS", "slot", "gpa"]
_OP_ALIGN = "llllr"


def _op_cells(x) -> list:
    """The cells of ``_OP_COLUMNS`` for one :class:`~kvmpt.workload.replay.OpResult`."""
    return [_where(x), x.kind, f"AS{x.op.as_id}", x.op.slot, fmt_hex(x.op.gpa)]


def _size(x) -> str:
    return fmt_bytes(x.op.size) if x.op.size else "0"


def _op_table(items, columns, align, cells, max_listed: int | None = None) -> str:
    """A per-op table (``_OP_COLUMNS`` + ``columns``), the first ``max_listed`` items and
    a line saying how many more there are."""
    shown = items if max_listed is None else items[:max_listed]
    body = table(_OP_COLUMNS + columns, [_op_cells(x) + cells(x) for x in shown],
                 align=_OP_ALIGN + align)
    left = len(items) - len(shown)
    return body + (f"\n... and {left:,} more" if left else "")



_HOOK_ROWS = (
    ("calls", "calls"),
    ("gfn_probes", "gfns looked up"),
    ("hits", "tracked gfns hit"),
    ("empty_walks", "walks that hit nothing"),
    ("chain_steps", "hash chain steps"),
    ("hash_deletes", "hash deletes"),
    ("counter_updates", "write-track count updates"),
    ("lpage_updates", "lpage count updates"),
    ("tlb_flushes", "remote TLB flushes"),
    ("mmu_lock_acquisitions", "mmu_lock acquisitions"),
    ("mmu_lock_held_steps", "steps under mmu_lock"),
    ("wasted_calls", "wasted calls"),
    ("wasted_updates", "wasted count updates"),
    ("harmful_calls", "calls on a failed update"),
)


def _layout_rows(layout: dict[int, list[tuple[int, int, int, int, int]]]):
    rows = []
    for as_id in sorted(layout):
        for sid, gpa, size, flags, _ua in sorted(layout[as_id], key=lambda t: t[1]):
            what = [n for b, n in ((KVM_MEM_LOG_DIRTY_PAGES, "LOG_DIRTY"),
                                   (KVM_MEM_READONLY, "READONLY")) if flags & b]
            rows.append((f"AS{as_id}", sid, fmt_hex(gpa), fmt_bytes(size),
                         fmt_pages(size >> PAGE_SHIFT), "|".join(what) or "-"))
    return rows


def render_replay(results: Sequence[Any], *, scenario: str, seed: int | None,
                  list_ops: bool = False, max_listed: int = 12) -> str:
    """``kvmpt replay``'s text output for one :class:`~kvmpt.workload.replay.ReplayResult`
    per design: header, ops by kind, hook work and stale gfns, mismatches, notes, WARNs,
    invariant violations, the final layout (and, with ``list_ops``, every op)."""
    from kvmpt.workload.replay import KINDS

    names = [r.design.name for r in results]
    first = results[0]
    extra = [("ops", f"{len(first.results):,} from the trace"
                     + (f" + {len(first.prologue)} inferred" if first.prologue else ""))]
    if first.tracked is not None:
        extra.append(("tracked", f"{len(first.tracked.gfns):,} gfns in AS0 RAM, placed "
                                 f"after op {first.tracked.placed_after}"))
    elif first.kvmgt:
        extra.append(("tracked", "KVMGT attached; replay placed no tracked set"))
    costs = first.costs
    if costs is None:
        extra.append(("costs", "primitive-op counts only (no cost table)"))
    else:
        extra.append(("costs", f"data/costs.toml, {costs.estimate} estimate, {costs.ghz:g} GHz"))
    head = header("Memslot trace replay", design=", ".join(names), scenario=scenario,
                  seed=seed, extra=extra)
    sections: list[tuple[str, str]] = []

    # ops by kind
    rows = []
    for k in KINDS:
        vals = [r.counts[k] for r in results]
        if any(vals):
            rows.append([k] + [f"{r.ok_counts[k]:,} ok / {r.counts[k]:,}" for r in results])
    rows.append(["errno mismatches"] + [f"{len(r.mismatches):,}" for r in results])
    rows.append(["DELETE gpa disagrees"] + [f"{len(r.notes):,}" for r in results])
    sections.append(("Ops by kind (kernel change type; ok / attempted)",
                     table(["kind"] + names, rows)))

    # what the hooks did
    if any(r.kvmgt for r in results):
        hook_rows = []
        tables = [r.hook_table() for r in results]
        nodes = {h: row.get("node", "") for t in tables for h, row in t.items()}
        # KVMGT's hooks first, then KVM's own (the zap), each alphabetically
        hooks = sorted(nodes, key=lambda h: (nodes[h] != "kvmgt", h))
        have_costs = any(r.costs is not None for r in results)
        for h in hooks:
            who = "KVMGT" if nodes[h] == "kvmgt" else "KVM" if nodes[h] else ""
            hook_rows.append([f"{h} ({who})" if who else h] + ["" for _ in results])
            for key, label in _HOOK_ROWS:
                if key == "empty_walks" and nodes[h] != "kvmgt":
                    continue
                vals = [t.get(h, {}).get(key) for t in tables]
                if not any(vals) and key not in ("calls",):
                    continue
                hook_rows.append(["  " + label] + [fmt_count(v) for v in vals])
            if have_costs:
                for key, label in (("cycles", "cycles"), ("wasted_cycles", "wasted cycles"),
                                   ("mmu_lock_cycles", "cycles under mmu_lock"),
                                   ("longest_hold_cycles", "longest mmu_lock hold")):
                    vals = [t.get(h, {}).get(key) for t in tables]
                    if key != "cycles" and not any(vals):
                        continue
                    hook_rows.append(["  " + label] + [fmt_cycles(v) if h in t else "-"
                                                       for t, v in zip(tables, vals)])
                    if key in ("cycles", "longest_hold_cycles"):
                        hook_rows.append(["    as time"] + [fmt_seconds(_secs(r, v))
                                                            for r, v in zip(results, vals)])
        if not hooks:
            hook_rows.append(["(no page-track hook ran)"] + ["" for _ in results])
        hook_rows.append(["kernel WARNs"] + [fmt_count(len(r.warnings)) for r in results])
        hook_rows.append(["stale gfns at the end"] + [fmt_count(len(r.stale_gfns))
                                                      for r in results])
        hook_rows.append(["ops that made gfns stale"] + [fmt_count(len(r.staling_ops))
                                                         for r in results])
        if any(r.unattributed_stale for r in results):
            hook_rows.append(["stale, op not identified"] + [fmt_count(r.unattributed_stale)
                                                             for r in results])
        hook_rows.append(["invariant violations"] + [fmt_count(len(r.invariant_violations))
                                                     for r in results])
        sections.append(("Page-track hooks and KVMGT's tracked gfns",
                         table(["hook / what"] + names, hook_rows)))

        for r in results:
            st = r.staling_ops
            if not st:
                continue
            sections.append((f"{r.design.name}: ops that made tracked gfns stale",
                             _op_table(st, ["size", "new stale"], "rr",
                                       lambda x: [_size(x), fmt_count(x.newly_stale)],
                                       max_listed)))

    # mismatches and notes
    for r in results:
        mm = r.mismatches
        if mm:
            sections.append((f"{r.design.name}: errno mismatches (model vs trace)",
                             _op_table(mm, ["model", "trace"], "rr",
                                       lambda x: [fmt_errno(x.errno), fmt_errno(x.expected)],
                                       max_listed)))
    if first.notes:
        body = "\n".join(_notes_lines(first.notes[:max_listed]))
        sections.append(("Notes", body))
    for title, items in (("Kernel WARNs", lambda r: [f"{_where(x)}: {w}" for x, w in r.warnings]),
                         ("Invariant violations at the end",
                          lambda r: list(r.invariant_violations))):
        lines = []
        for r in results:
            got = items(r)
            for v in got[:3]:
                lines.append(_wrap(f"{r.design.name}: {v}"))
            if len(got) > 3:
                lines.append(f"{r.design.name}: ... and {len(got) - 3:,} more")
        if lines:
            sections.append((title + " (first 3 per design)", "\n".join(lines)))

    # final layout
    layouts = [r.final_layout for r in results]
    same = all(lay == layouts[0] for lay in layouts)
    for title, lay in ([("all designs", layouts[0])] if same else
                       [(r.design.name, r.final_layout) for r in results]):
        sections.append((f"Final layout ({title})",
                         table(["AS", "slot", "gpa", "size", "pages", "flags"],
                               _layout_rows(lay), align="lrrrrl")))

    if list_ops:
        for r in results:
            sections.append((f"{r.design.name}: every op (prologue first)",
                             _op_table(r.prologue + r.results, ["size", "errno", "match"], "rrl",
                                       lambda x: [_size(x), fmt_errno(x.errno),
                                                  {True: "yes", False: "NO", None: "-"}[x.match]])))
    return render_document(head, sections)


def _secs(result, cycles) -> float | None:
    us = result.us(cycles)
    return None if us is None else us * 1e-6


def _notes_lines(notes) -> list[str]:
    return [_wrap(f"{'line ' if x.op.lineno else 'op '}{_where(x)}: {x.note}") for x in notes]
