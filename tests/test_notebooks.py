"""The design notebooks: paired scripts in sync, committed outputs small and checked.

nbval itself runs every notebook in the same pytest session: ``pyproject.toml`` adds
``notebooks`` to ``testpaths`` and ``--nbval-lax --nbval-current-env
--nbval-sanitize-with nbval_sanitize.cfg`` to ``addopts``, so each ``notebooks/*.ipynb``
is executed top to bottom and its ``# NBVAL_CHECK_OUTPUT`` cells are compared with the
committed outputs.  This module checks what nbval cannot.

When the model's numbers change on purpose, refresh the committed notebooks (sync with
the py:percent twins, re-execute with small outputs) with ``kvmpt report
--update-notebooks`` and commit both files of each pair.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
MAX_COMMITTED_BYTES = 400_000


def _ids(paths):
    return [p.stem for p in paths]


def test_there_are_numbered_notebooks():
    assert NOTEBOOKS, "notebooks/NN_*.ipynb: none found"
    assert (ROOT / "notebooks" / "01_page_track_hooks.ipynb") in NOTEBOOKS


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_paired_script_in_sync(nb_path):
    """The jupytext py:percent twin has the same cells (type, source, tags) as the
    .ipynb.  Fix a drift with ``jupytext --sync notebooks/NN_name.ipynb``."""
    jupytext = pytest.importorskip("jupytext")
    py = nb_path.with_suffix(".py")
    assert py.is_file(), f"{py.name} is missing: run `jupytext --sync {nb_path.name}`"
    ipynb = jupytext.read(nb_path)
    script = jupytext.read(py)

    def cells(nb):
        return [(c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", [])))
                for c in nb.cells]

    a, b = cells(ipynb), cells(script)
    for i, (x, y) in enumerate(zip(a, b)):
        assert x == y, (f"{nb_path.name} and {py.name} differ at cell {i}: "
                        f"{x[1][:60]!r} vs {y[1][:60]!r} (run `jupytext --sync`)")
    assert len(a) == len(b), (f"{nb_path.name} has {len(a)} cells, {py.name} {len(b)} "
                              "(run `jupytext --sync`)")


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_committed_outputs_small_and_deterministic(nb_path):
    """Committed with outputs (nbval compares the checked cells), but small: no widget
    state, no FigureWidget, no notebook-renderer HTML with plotly.js, run top to bottom."""
    raw = nb_path.read_bytes()
    assert len(raw) < MAX_COMMITTED_BYTES, (
        f"{nb_path.name} is {len(raw):,} bytes; execute it with KVMPT_REPORT=1 (no "
        "dashboard) and without PLOTLY_RENDERER before committing")
    nb = json.loads(raw)
    assert "widgets" not in nb.get("metadata", {}), "widget state committed"
    counts = []
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        counts.append(cell.get("execution_count"))
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            assert "application/vnd.jupyter.widget-view+json" not in data, \
                "a widget view is committed"
            assert "text/html" not in data or "plotly" not in "".join(data["text/html"]), \
                "plotly HTML output committed (PLOTLY_RENDERER was set)"
    ran = [c for c in counts if c is not None]
    assert ran, f"{nb_path.name} is committed without outputs; nbval would check nothing"
    assert ran == sorted(ran) and len(ran) == len(counts), \
        f"{nb_path.name}: execution counts {counts} are not one top-to-bottom run"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_conventions(nb_path):
    """A parameters cell; figure cells ignored by nbval; checked cells exist and print;
    sections end with a caption; references cite Message-IDs."""
    nb = json.loads(nb_path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    md = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    tags = [c.get("metadata", {}).get("tags", []) for c in code]
    assert any("parameters" in t for t in tags), "no cell tagged `parameters`"
    for c, t in zip(code, tags):
        src = "".join(c["source"])
        if ".show()" in src or "display(" in src:
            assert "nbval-ignore-output" in t, \
                f"a figure/widget cell is compared by nbval: {src[:60]!r}"
    checked = [c for c in code if "# NBVAL_CHECK_OUTPUT" in "".join(c["source"])]
    assert len(checked) >= 3
    for c in checked:
        assert any(o.get("name") == "stdout" for o in c.get("outputs", [])), \
            f"checked cell without printed output: {''.join(c['source'])[:60]!r}"
    assert md.startswith("# "), "the notebook starts with a title"
    assert re.search(r"https://lore\.kernel\.org/r/[^()\s]+@[^()\s]+\)", md), \
        "no Message-ID cited (as a lore.kernel.org/r/ link)"
    assert "What to look at" in md


def test_sanitize_file_is_valid():
    import configparser
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "nbval_sanitize.cfg")
    assert cfg.sections()
    for s in cfg.sections():
        re.compile(cfg[s]["regex"])
        assert "replace" in cfg[s]


def test_nbval_is_wired_into_the_one_pytest_run():
    import tomllib
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "notebooks" in conf["testpaths"]
    for opt in ("--nbval-lax", "--nbval-current-env", "--nbval-sanitize-with"):
        assert opt in conf["addopts"]
