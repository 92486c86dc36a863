"""``kvmpt report``: execute the design notebooks, write standalone HTML and a text summary.

Each numbered notebook (``notebooks/NN_*.ipynb``) is executed once, in a fresh kernel of
this Python, with ``PLOTLY_RENDERER=notebook`` (plotly.js embedded once per page, so the
HTML needs no network) and ``KVMPT_REPORT=1`` (the notebooks then skip their live
dashboards: widgets are dead in static HTML, and a FigureWidget would add megabytes of
widget state; the static figures with design buttons follow every dashboard anyway).

Outputs in ``--out DIR``:

``NN_name.html``   the executed notebook, standalone (``--format html``)
``summary.txt``    the notebooks' checked summary tables (the cells marked
                   ``# NBVAL_CHECK_OUTPUT``), fixed width under 80 columns, ready to paste
                   into a mailing-list reply (``--format text``)

The text is taken from the executed notebook itself, so it always shows the numbers the
HTML shows.
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

__all__ = ["HELP", "add_arguments", "run", "find_notebooks", "execute_notebook",
           "to_html", "text_summary", "build", "update_notebooks"]

HELP = "execute the design notebooks and write the report (--out DIR, --format html|text)"
_NUMBERED = re.compile(r"^\d\d_.*\.ipynb$")
CHECK_MARK = "# NBVAL_CHECK_OUTPUT"


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


def _stdout(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", [])
                   if o.get("output_type") == "stream" and o.get("name") == "stdout")


def _read_param(nb, name: str):
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            m = re.search(rf"^{name}\s*=\s*(.+?)\s*(#.*)?$", cell.source, re.M)
            if m:
                return m.group(1)
    return None


def text_summary(executed: Sequence[Path]) -> str:
    """The checked summary tables of the executed notebooks, as one plain-text document."""
    import nbformat

    from kvmpt.infra.text import MAX_WIDTH, header, render_document

    sections, seeds, names = [], set(), []
    for path in executed:
        nb = nbformat.read(str(path), as_version=4)
        names.append(path.stem)
        seeds.add(_read_param(nb, "SEED") or "-")
        findings = _findings(nb)
        if findings:
            sections.append((_clip(f"Findings ({path.stem})", MAX_WIDTH), findings))
        heading, part = path.stem, 0
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                m = re.search(r"^###?\s+(.+)$", cell.source, re.M)   # sections, 5b-style parts
                if m:
                    heading, part = _plain(m.group(1)), 0
            elif cell.cell_type == "code" and CHECK_MARK in cell.source:
                text = _stdout(cell).rstrip()
                if not text:
                    continue
                part += 1
                lines = [ln.rstrip() for ln in text.splitlines()]
                too_wide = [ln for ln in lines if len(ln) > MAX_WIDTH]
                if too_wide:
                    raise ValueError(f"{path.name}: a checked table is wider than "
                                     f"{MAX_WIDTH} columns: {too_wide[0]!r}")
                title = heading if part == 1 else f"{heading} (cont.)"
                sections.append((_clip(title, MAX_WIDTH), "\n".join(lines)))
    from kvmpt.review.claims import EFFECT_NOTES
    notes = "\n".join(_wrap("* " + n) for n in EFFECT_NOTES)
    sections.append(("Notes on the summary rows", notes))
    head = header("kvmpt design review: page-track hooks and KVMGT",
                  design="v6.5, v6.6 and the variants between them",
                  scenario=", ".join(names), seed=int(next(iter(seeds))) if len(seeds) == 1
                  and next(iter(seeds)).isdigit() else None,
                  extra=[("html", "the .html files beside this one (plotly, offline)")])
    return render_document(head, sections)


def _findings(nb) -> str:
    """The bullets of the notebook's ``## Summary`` section, as wrapped plain text."""
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        m = re.search(r"^##\s+Summary\s*$(.*?)(?=^##\s|\Z)", cell.source, re.M | re.S)
        if not m:
            continue
        items, cur = [], None
        for line in m.group(1).splitlines():
            if line.startswith("* "):
                cur = [line[2:].strip()]
                items.append(cur)
            elif cur is not None and line.startswith("  ") and line.strip():
                cur.append(line.strip())
            else:
                cur = None
        return "\n".join(_wrap("* " + _plain(" ".join(i))) for i in items)
    return ""


def _plain(md: str) -> str:
    return re.sub(r"[`*]", "", md).replace("\u2019", "'").strip()


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


def add_arguments(p) -> None:
    p.description = (
        "Execute the numbered design notebooks (notebooks/NN_*.ipynb) and write, into --out, "
        "one standalone HTML page per notebook (plotly.js embedded once, readable offline; "
        "design toggles are plotly buttons) and summary.txt, the notebooks' checked summary "
        "tables as fixed-width text under 80 columns for a mailing-list reply.")
    p.add_argument("--out", default="build/report", metavar="DIR",
                   help="output directory (default: build/report)")
    p.add_argument("--format", action="append", choices=("html", "text"), dest="formats",
                   help="what to write; repeat for both (default: html and text)")
    p.add_argument("--notebook", action="append", metavar="PATH", dest="notebooks",
                   help="a notebook to run instead of all numbered ones (repeatable)")
    p.add_argument("--timeout", type=int, default=600, metavar="S",
                   help="per-cell timeout in seconds (default: 600)")
    p.add_argument("--update-notebooks", action="store_true",
                   help="instead: sync each notebook with its py:percent twin and re-execute "
                        "it in place (small outputs, no dashboard), ready to commit")


def run(args) -> int:
    formats = tuple(args.formats or ("html", "text"))
    notebooks = None
    if args.notebooks:
        notebooks = [Path(n) for n in args.notebooks]
        for n in notebooks:
            if not n.is_file():
                raise FileNotFoundError(2, "No such notebook", str(n))
    if args.update_notebooks:
        update_notebooks(notebooks, args.timeout, log=lambda m: print(m, file=sys.stderr))
        return 0
    res = build(args.out, formats, notebooks, args.timeout,
                log=lambda m: print(m, file=sys.stderr))
    if res["text"] is not None and formats == ("text",):
        sys.stdout.write(Path(res["text"]).read_text(encoding="utf-8"))
    print(f"kvmpt report: done in {res['seconds']:.1f} s", file=sys.stderr)
    return 0
