"""``kvmpt report``: execute the design notebooks, write standalone HTML and a text summary.

Each numbered notebook (``notebooks/NN_*.ipynb``) is executed once, in a fresh kernel of
this Python, with ``PLOTLY_RENDERER=notebook`` (plotly.js embedded once per page, so the
HTML needs no network) and ``KVMPT_REPORT=1`` (the notebooks then skip their live
dashboards: widgets are dead in static HTML, and a FigureWidget would add megabytes of
widget state; the static figures with design buttons follow every dashboard anyway).

Outputs in ``--out DIR``:

``NN_name.html``   the executed notebook, standalone (``--format html``)
``summary.txt``    what the notebooks executed (:mod:`kvmpt.review.results`): the tables of
                   their checked cells (``# NBVAL_CHECK_OUTPUT``) under their section
                   headings, and the notes of the results record each notebook's last cell
                   saves; fixed width under 80 columns, ready to paste into a
                   mailing-list reply (``--format text``)

The text is taken from the executed notebook's outputs, never from its prose, so it
always shows the numbers the HTML shows.  The command line is :mod:`kvmpt.cli.report`.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

from kvmpt.infra.paths import NOTEBOOK_DIR
from kvmpt.review import results

__all__ = ["find_notebooks", "execute_notebook", "to_html", "text_summary", "build",
           "update_notebooks"]

_NUMBERED = re.compile(r"^\d\d_.*\.ipynb$")


def find_notebooks(directory: Path | str = NOTEBOOK_DIR) -> list[Path]:
    """The numbered notebooks, in reading order."""
    d = Path(directory)
    return sorted(p for p in d.glob("*.ipynb") if _NUMBERED.match(p.name))


def _kernel_env(renderer: str | None = "notebook") -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PLOTLY_RENDERER", None)
    if renderer:
        env["PLOTLY_RENDERER"] = renderer
    env["KVMPT_REPORT"] = "1"
    bindir = str(Path(sys.executable).parent)          # the kernelspec runs `python`
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    return env


def execute_notebook(path: Path, out: Path, timeout: int = 600) -> Path:
    """Execute ``path`` into ``out`` (an .ipynb) in a fresh kernel of this Python."""
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
           f"--ExecutePreprocessor.timeout={timeout}",
           "--ExecutePreprocessor.kernel_name=python3",
           f"--output-dir={out.parent}", f"--output={out.stem}", str(path)]
    r = subprocess.run(cmd, env=_kernel_env(), cwd=str(path.parent), capture_output=True,
                       text=True)
    if r.returncode:
        tail = "\n".join(r.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"executing {path.name} failed:\n{tail}")
    return out


def update_notebooks(notebooks: Sequence[Path] | None = None, timeout: int = 600,
                     log=print) -> list[Path]:
    """Refresh the committed notebooks: ``jupytext --sync`` each pair, then execute it in
    place with the kernel's default plotly renderer and no dashboard (``KVMPT_REPORT=1``),
    so the committed outputs are small and nbval's checked cells are current."""
    done = []
    for nb in (list(notebooks) if notebooks else find_notebooks()):
        nb = Path(nb)
        for cmd in ([sys.executable, "-m", "jupytext", "--sync", "--quiet", str(nb)],
                    [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook",
                     "--execute", "--inplace", f"--ExecutePreprocessor.timeout={timeout}",
                     "--ExecutePreprocessor.kernel_name=python3", str(nb)]):
            r = subprocess.run(cmd, env=_kernel_env(renderer=None), cwd=str(nb.parent),
                               capture_output=True, text=True)
            if r.returncode:
                raise RuntimeError(f"{' '.join(cmd[2:4])} {nb.name} failed:\n"
                                   + "\n".join(r.stderr.strip().splitlines()[-15:]))
        _strip_volatile(nb)
        log(f"kvmpt report: refreshed {nb} ({nb.stat().st_size / 1e3:.0f} kB)")
        done.append(nb)
    return done


def _strip_volatile(nb_path: Path) -> None:
    """Drop what would bloat or churn the committed notebook: widget state, kernel
    timings, and the outputs of cells nbval ignores (figures; the HTML report has them)."""
    import nbformat
    nb = nbformat.read(str(nb_path), as_version=4)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code" and "nbval-ignore-output" in cell.metadata.get("tags", []):
            cell.outputs = [o for o in cell.outputs if o.get("output_type") == "stream"]
    nbformat.write(nb, str(nb_path))


def to_html(executed: Path, out_dir: Path, name: str) -> Path:
    """Convert an executed notebook to standalone HTML (no re-execution)."""
    cmd = [sys.executable, "-m", "jupyter", "nbconvert", "--to", "html",
           f"--output-dir={out_dir}", f"--output={name}", str(executed)]
    r = subprocess.run(cmd, env=_kernel_env(), capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"HTML export of {executed.name} failed: "
                           + "\n".join(r.stderr.strip().splitlines()[-10:]))
    path = out_dir / f"{name}.html"
    path.write_text(stable_ids(make_offline(path.read_text(encoding="utf-8"))),
                    encoding="utf-8")
    return path


#: scripts the page would fetch from a CDN and does not need: MathJax (nbconvert's
#: template and one per plotly figure; no LaTeX here) and require.js (only for widgets,
#: which the report does not build).  plotly.js itself is inline.
_CDN_SCRIPT = re.compile(
    r'<script[^>]*\bsrc="https?://[^"]*(?:mathjax|require\.js|require\.min\.js)[^"]*"[^>]*>'
    r'\s*</script>', re.I)


def make_offline(html: str) -> str:
    """Remove the CDN scripts of :data:`_CDN_SCRIPT`, so opening the page makes no
    network request at all."""
    return _CDN_SCRIPT.sub("", html)


#: plotly gives each figure's div a random uuid4 id (plotly.io.to_html with div_id=None);
#: nbconvert may reorder the div's attributes (class before id)
_PLOTLY_DIV = re.compile(r'<div\b[^>]*?\bid="([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-'
                         r'[0-9a-f]{12})"')


def stable_ids(html: str) -> str:
    """Replace plotly's random figure div ids (and every use of them in the page's
    scripts) by ``kvmpt-fig-1``, ``kvmpt-fig-2``, ... in page order, so two renders of the
    same notebook are the same bytes."""
    ids = list(dict.fromkeys(_PLOTLY_DIV.findall(html)))
    if not ids:
        return html
    names = {u: f"kvmpt-fig-{i}" for i, u in enumerate(ids, start=1)}
    pattern = re.compile("|".join(map(re.escape, ids)))
    return pattern.sub(lambda m: names[m.group(0)], html)


def text_summary(executed: Sequence[Path]) -> str:
    """The executed notebooks' results (:func:`kvmpt.review.results.load`: their checked
    tables and the record their last cell saved) as one plain-text document."""
    from kvmpt.infra.text import MAX_WIDTH, header, render_document

    sections, names, seeds, notes = [], [], set(), []
    for path in executed:
        res = results.load(path)
        names.append(res.notebook)
        seeds.add(res.seed)
        notes += [n for n in res.notes if n not in notes]
        if res.findings:
            sections.append((_clip(f"Findings ({res.notebook})", MAX_WIDTH),
                             "\n".join(_wrap("* " + results.plain(f)) for f in res.findings)))
        for title, text in res.tables:
            too_wide = [ln for ln in text.splitlines() if len(ln) > MAX_WIDTH]
            if too_wide:
                raise ValueError(f"{Path(path).name}: a checked table is wider than "
                                 f"{MAX_WIDTH} columns: {too_wide[0]!r}")
            sections.append((_clip(title, MAX_WIDTH), text))
    if notes:
        sections.append(("Notes on the summary rows", "\n".join(_wrap("* " + n) for n in notes)))
    seed = next(iter(seeds)) if len(seeds) == 1 else None
    head = header("kvmpt design review: page-track hooks and KVMGT",
                  design="v6.5, v6.6 and the variants between them",
                  scenario=", ".join(names), seed=seed,
                  extra=[("html", "the .html files beside this one (plotly, offline)")])
    return render_document(head, sections)


def _clip(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 2] + ".."


def _wrap(text: str, width: int = 79) -> str:
    import textwrap
    return "\n".join(textwrap.wrap(text, width, subsequent_indent="  "))


def build(out: Path | str, formats: Sequence[str] = ("html", "text"),
          notebooks: Sequence[Path] | None = None, timeout: int = 600,
          log=print) -> dict[str, object]:
    """Execute the notebooks and write the requested formats into ``out``.
    Returns ``{"html": [paths], "text": path | None, "seconds": float}``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    nbs = list(notebooks) if notebooks else find_notebooks()
    if not nbs:
        raise ValueError(f"no numbered notebooks in {NOTEBOOK_DIR}")
    t0 = time.perf_counter()
    html, executed = [], []
    with tempfile.TemporaryDirectory(prefix="kvmpt-report-") as tmp:
        for nb in nbs:
            t1 = time.perf_counter()
            ex = execute_notebook(Path(nb), Path(tmp) / Path(nb).name, timeout)
            executed.append(ex)
            if "html" in formats:
                html.append(to_html(ex, out, Path(nb).stem))
            log(f"kvmpt report: {Path(nb).name} executed in {time.perf_counter() - t1:.1f} s")
        text_path = None
        if "text" in formats:
            text_path = out / "summary.txt"
            text_path.write_text(text_summary(executed), encoding="utf-8")
    for p in html:
        log(f"kvmpt report: wrote {p} ({p.stat().st_size / 1e6:.1f} MB)")
    if text_path:
        log(f"kvmpt report: wrote {text_path}")
    return {"html": html, "text": text_path, "seconds": time.perf_counter() - t0}
