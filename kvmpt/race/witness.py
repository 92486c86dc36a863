"""A witness for the kernel mailing list: ASCII, <= 72 columns, ``CPU0`` / ``CPU1`` columns,
call nesting, sliced to the steps that matter, each step's file:function at its version.

The slice keeps the failing step, the ptable stores and loads (bucket head, node reads,
``hash_del``, ``kfree``, ``hash_add``), and the acquisitions of every lock some thread still
holds when it fails -- the context a reviewer needs to see why the lock did not help.
"""
from __future__ import annotations

import textwrap

from kvmpt.race import objects as O
from kvmpt.race import state as S
from kvmpt.race.steps import AssertHeld, Lock, Note, SyncSrcuStart, SyncSrcuWait

WIDTH = 72
_MAX_DEPTH = 8
_ASCII = str.maketrans({"→": "->", "…": "...", "—": "--", "×": "x", "'": "'"})
_PTABLE = (O.Probe, O.HashDel, O.KFree, O.HashDestroy, O.HashAdd, O.NotifierDel)
_SOURCES = ("v6.5 = torvalds/linux v6.5 (the series' base, fdf0eaf11452); v6.6 = v6.6 "
            "(gvt/gtt.c read at f1864235dda9); series v1 = "
            "<20221223005739.1295925-1-seanjc@google.com>")


def ascii(text: str) -> str:
    return text.translate(_ASCII).encode("ascii", "replace").decode("ascii")


def _short(path: str) -> str:
    return path.replace("drivers/gpu/drm/i915/gvt/", "gvt/")


def _keep(result, i: int, row) -> bool:
    if row.failing:
        return True
    st = row.step
    if isinstance(st, _PTABLE) or isinstance(st, Note):   # notes state the preconditions
        return True
    kind = result.witness_kind or result.verdict
    last = result.witness_detail[-1].held
    if isinstance(st, Lock):
        return any(st.lock.name in held for held in last.values())
    if kind == S.DEADLOCK and isinstance(st, (SyncSrcuStart, SyncSrcuWait)):
        return True
    if kind == S.MISSED and isinstance(st, O.ReadNode):
        return True
    return isinstance(st, AssertHeld) and kind == S.NOT_HELD


def email(result, width: int = WIDTH, sliced: bool = True) -> str:
    """The witness of ``result`` (a :class:`~kvmpt.race.RaceResult`) as plain ASCII text."""
    head = (f"kvmpt race: {result.scenario}, ptable lock {result.lock!r} "
            f"(slot hook {result.slot_hook}{'' if result.srcu else ', srcu=False'}"
            f"{'' if result.lockdep else ', lockdep off'})")
    out = textwrap.wrap(ascii(head), width)
    from kvmpt.race.scenarios import SCENARIOS
    finding = SCENARIOS[result.scenario].finding
    if finding and result.verdict != "safe":
        out += textwrap.wrap(ascii(f"Finding beyond the review thread: {finding}."), width)
    if result.witness_detail is None:
        out += textwrap.wrap(f"Safe: no interleaving fails among {result.states:,} distinct "
                             f"states.", width)
        return "\n".join(out) + "\n"
    rows = [r for i, r in enumerate(result.witness_detail)
            if not sliced or _keep(result, i, r)]
    threads = [t for t in result.threads if any(r.thread == t for r in rows)]
    ncol = max(1, len(threads))
    colw = (width - 2 * (ncol - 1)) // ncol
    kind = result.witness_kind or result.verdict
    shown = "" if kind == result.verdict else f" Witness: {kind}."
    out += textwrap.wrap(ascii(f"Verdict: {result.verdict}.{shown}") +
                         (" Steps that do not matter are left out." if sliced else ""), width)
    out.append("")
    cells = [f"CPU{i} ({t})"[:colw] for i, t in enumerate(threads)]
    out.append(_line(cells, colw))
    out.append(_line(["-" * min(colw, len(c)) for c in cells], colw))
    stacks = {t: () for t in threads}
    refs = []
    for r in rows:
        col = threads.index(r.thread)
        stack = r.step.stack if r.step is not None else ()
        old = stacks[r.thread]
        k = 0
        while k < min(len(old), len(stack)) and old[k] == stack[k]:
            k += 1
        for depth in range(k, len(stack)):
            out.append(_cell(col, ncol, colw, depth, f"{stack[depth]}()"))
        stacks[r.thread] = stack
        refs.append(r.where)
        text = ascii(r.text.strip())
        if stack and text.startswith(stack[-1] + "(") and "): " in text:
            text = text.split("): ", 1)[1]          # the frame line already names it
        text = text.replace("hash_for_each_possible(ptable, p, hnode, gfn)",
                            "hash_for_each_possible()")
        mark = f"[{len(refs)}] "
        depth = min(len(stack), _MAX_DEPTH)
        if len(mark + text) <= colw and len(mark + text) > colw - depth:
            pieces = [mark + text]           # fits the column: pulled left, not wrapped
        else:
            pieces = textwrap.wrap(mark + text, max(12, colw - depth), subsequent_indent=" ",
                                   break_on_hyphens=False) or [mark]
        if r.failing:
            pieces.append(f" <== {kind.upper()}")
        for piece in pieces:
            out.append(_cell(col, ncol, colw, depth, piece))
    out.append("")
    out += textwrap.wrap(ascii(result.message or ""), width)
    out.append("")
    out.append("Steps (file:function, kernel version):")
    for n, where in enumerate(refs, 1):
        path, _, rest = where.partition(":")
        line = f"[{n}] {_short(path)}:{rest}"
        out += textwrap.wrap(ascii(line), width, subsequent_indent="     ",
                             break_on_hyphens=False)
    out += textwrap.wrap(_SOURCES, width)
    return "\n".join(ln.rstrip() for ln in out) + "\n"


def _cell(col: int, ncol: int, colw: int, depth: int, text: str) -> str:
    """One line with ``text`` in column ``col``, indented by call depth; a deep frame whose
    name would not fit is pulled left rather than cut."""
    text = ascii(text)
    depth = max(0, min(depth, _MAX_DEPTH, colw - len(text)))
    cells = [""] * ncol
    cells[col] = (" " * depth + ascii(text))[:colw]
    return _line(cells, colw)


def _line(cells, colw: int) -> str:
    return "  ".join(c.ljust(colw) for c in cells).rstrip()
