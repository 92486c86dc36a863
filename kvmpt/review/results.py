"""What an executed design notebook hands to ``kvmpt report``.

A report is built from what the notebooks *executed*, never from their prose:

* the **checked tables**: the printed output of every code cell marked
  ``# NBVAL_CHECK_OUTPUT`` (the same outputs nbval compares), each titled by the section
  heading it stands under;
* one **results record** per notebook, written by the notebook's last cell::

      from kvmpt.review import results
      results.save(seed=SEED, notes=claims.EFFECT_NOTES)

  :func:`save` displays the values the notebook computed or used (its seed, the notes
  that explain its summary rows) as one output of MIME type :data:`MIME` (plus a short
  ``text/plain`` line for JupyterLab).  It writes no file, so running a notebook leaves the
  checkout clean, and the record travels inside the executed ``.ipynb`` (nbclient output).

:func:`load` reads both back from an executed notebook; ``kvmpt.review.report`` renders
them with :mod:`kvmpt.infra.text`.  This module imports neither the experiments nor
the model.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

__all__ = ["MIME", "CHECK_MARK", "Results", "record", "save", "show_findings", "load", "plain"]

#: the MIME type of the results record in a notebook's outputs
MIME = "application/vnd.kvmpt.results+json"
#: cells whose printed output is a checked table (nbval compares them; the report prints them)
CHECK_MARK = "# NBVAL_CHECK_OUTPUT"
VERSION = 1
_HEADING = re.compile(r"^###?\s+(.+)$", re.M)       # "## 2. ..." sections, "### 5b. ..." parts


@dataclass(frozen=True)
class Results:
    """One executed notebook's results: its record and its checked tables."""

    notebook: str                                   # the notebook's stem, "01_page_track_hooks"
    seed: int | None
    notes: tuple[str, ...] = ()
    findings: tuple[str, ...] = ()
    tables: tuple[tuple[str, str], ...] = field(default=())   # (section heading, printed table)


def record(*, seed: int | None, notes: Sequence[str] = (),
           findings: Sequence[str] = ()) -> dict[str, Any]:
    """The results record as plain JSON: checked here, so a bad value fails in the
    notebook cell that passed it, not later in the report."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"results.save: seed must be an int or None, not {seed!r}")
    for name, items in (("notes", notes), ("findings", findings)):
        if isinstance(items, str) or not all(isinstance(s, str) and s.strip() for s in items):
            raise TypeError(f"results.save: {name} must be a sequence of non-empty strings")
    return {"version": VERSION, "seed": seed, "notes": list(notes), "findings": list(findings)}


def save(*, seed: int | None, notes: Sequence[str] = (), findings: Sequence[str] = ()) -> dict:
    """Display the notebook's results record (call it in the notebook's last cell)."""
    from IPython.display import display
    rec = record(seed=seed, notes=notes, findings=findings)
    display({MIME: rec,
             "text/plain": f"kvmpt results: seed {seed}, {len(rec['notes'])} note(s) "
                           "(read by `kvmpt report`)"}, raw=True)
    return rec


def show_findings(findings: Sequence[str]) -> None:
    """Display the notebook's findings (Markdown strings) as a bulleted list; the last cell
    passes the same tuple to :func:`save`, so the report prints what the reader saw."""
    from IPython.display import Markdown, display
    display(Markdown("\n".join(f"* {f}" for f in findings)))


def _stdout(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", [])
                   if o.get("output_type") == "stream" and o.get("name") == "stdout")


def plain(md: str) -> str:
    """Markdown emphasis and code marks dropped, for plain text."""
    return re.sub(r"[`*]", "", md).replace("\u2019", "'").strip()


def load(path: Path | str) -> Results:
    """The results of the executed notebook ``path``: its record (an error naming the
    notebook if its last cell did not call :func:`save`) and its checked tables."""
    import nbformat
    path = Path(path)
    nb = nbformat.read(str(path), as_version=4)
    rec, tables, heading, part = None, [], path.stem, 0
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            m = _HEADING.search(cell.source)
            if m:
                heading, part = plain(m.group(1)), 0
            continue
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") in ("display_data", "execute_result") \
                    and MIME in out.get("data", {}):
                rec = out["data"][MIME]
        if CHECK_MARK in cell.source:
            text = _stdout(cell).rstrip()
            if text:
                part += 1
                tables.append((heading if part == 1 else f"{heading} (cont.)",
                               "\n".join(ln.rstrip() for ln in text.splitlines())))
    if rec is None:
        raise ValueError(f"{path.name}: no results record; the notebook's last cell must call "
                         "kvmpt.review.results.save(seed=SEED, ...) and the notebook must "
                         "have been executed")
    if rec.get("version") != VERSION:
        raise ValueError(f"{path.name}: results record version {rec.get('version')!r}, "
                         f"this kvmpt reads version {VERSION}")
    return Results(path.stem, rec.get("seed"), tuple(rec.get("notes", ())),
                   tuple(rec.get("findings", ())), tuple(tables))
