"""kvmpt.review.report without executing notebooks: finding them, the text summary, the CLI."""
from __future__ import annotations

import re

import nbformat
import pytest

from kvmpt.review import report, results


def _saved(**record):
    """The last cell of a design notebook, as executed: ``results.save(...)``'s output."""
    c = nbformat.v4.new_code_cell("from kvmpt.review import results\nresults.save(seed=SEED)")
    c.outputs = [nbformat.v4.new_output("display_data",
                                        data={results.MIME: results.record(**record),
                                              "text/plain": "kvmpt results"})]
    return c


def _executed(tmp_path, *cells, seed=0, notes=(), name="01_demo", end=True):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("SEED = 99  # the source is not what the report reads")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# Title"), params, *cells]
    if end:
        nb.cells.append(_saved(seed=seed, notes=notes))
    path = tmp_path / f"{name}.ipynb"
    nbformat.write(nb, str(path))
    return path


def _checked(text):
    c = nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\nprint(table)")
    c.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
    return c


def test_find_notebooks_numbered_only(tmp_path):
    for name in ("01_a.ipynb", "02_b.ipynb", "scratch.ipynb", "1_c.ipynb"):
        (tmp_path / name).write_text("{}")
    assert [p.name for p in report.find_notebooks(tmp_path)] == ["01_a.ipynb", "02_b.ipynb"]
    assert report.find_notebooks()[0].name == "01_page_track_hooks.ipynb"


def test_text_summary_takes_checked_tables_under_their_headings(tmp_path):
    md = nbformat.v4.new_markdown_cell("## 2. \"The `flush` hook is flawed\"\n\ntext")
    summary = nbformat.v4.new_markdown_cell(
        "## Summary\n\n* **First** finding, `code`\n  continued.\n* Second.\n\n## References")
    unchecked = nbformat.v4.new_code_cell("print(1)")
    unchecked.outputs = [nbformat.v4.new_output("stream", name="stdout", text="noise\n")]
    path = _executed(tmp_path, md, _checked("a  b\n-----\n1  2\n"), unchecked,
                     _checked("more\n"), summary, notes=["a note on the rows"])
    text = report.text_summary([path])
    assert '2. "The flush hook is flawed"\na  b\n-----\n1  2' in text
    assert '2. "The flush hook is flawed" (cont.)\nmore' in text
    assert "noise" not in text
    assert "First finding" not in text, "the report read the notebook's prose"
    assert "Notes on the summary rows\n* a note on the rows" in text
    assert "seed:     0" in text                   # from the record, not the parameters cell
    assert max(map(len, text.splitlines())) < 80


def test_text_summary_seed_and_notes_across_notebooks(tmp_path):
    a = _executed(tmp_path, _checked("x\n"), seed=3, notes=["n1", "n2"], name="01_a")
    b = _executed(tmp_path, _checked("y\n"), seed=3, notes=["n2", "n3"], name="02_b")
    text = report.text_summary([a, b])
    assert "seed:     3" in text and "scenario: 01_a, 02_b" in text
    assert "* n1\n* n2\n* n3\n" in text          # once each, in order
    c = _executed(tmp_path, _checked("z\n"), seed=4, name="03_c")
    assert "seed:     -" in report.text_summary([a, c])


def test_text_summary_needs_the_results_record(tmp_path):
    path = _executed(tmp_path, _checked("x\n"), end=False)
    with pytest.raises(ValueError, match="01_demo.ipynb: no results record"):
        report.text_summary([path])


def test_results_record_checks_its_values():
    with pytest.raises(TypeError, match="seed"):
        results.record(seed="0")
    with pytest.raises(TypeError, match="notes"):
        results.record(seed=0, notes="one string, not a list")
    assert results.record(seed=None)["seed"] is None


def test_results_save_displays_the_record(capsys):
    from IPython.core.interactiveshell import InteractiveShell
    shell = InteractiveShell.instance()
    seen = []
    shell.display_pub.publish = lambda data, **kw: seen.append(data)
    try:
        rec = results.save(seed=5, notes=["x"])
    finally:
        InteractiveShell.clear_instance()
    assert seen and seen[0][results.MIME] == rec == results.record(seed=5, notes=["x"])


def test_text_summary_refuses_wide_tables(tmp_path):
    path = _executed(tmp_path, _checked("x" * 90 + "\n"))
    with pytest.raises(ValueError, match="wider than 79"):
        report.text_summary([path])


def test_make_offline_drops_only_cdn_scripts():
    html = ('<script src="https://cdnjs.cloudflare.com/ajax/libs/mathjax/3.2.2/es5/'
            'tex-svg.min.js"></script><script src="https://cdnjs.cloudflare.com/ajax/libs/'
            'require.js/2.1.10/require.min.js"></script><script>var plotly = 1;</script>'
            '<a href="https://lore.kernel.org/r/x@y">x</a>')
    out = report.make_offline(html)
    assert "cdnjs" not in out and "var plotly = 1" in out and "lore.kernel.org" in out


def test_cli_missing_notebook_is_a_usage_error(tmp_path, capsys):
    from kvmpt.cli import main
    assert main(["report", "--notebook", str(tmp_path / "nope.ipynb"),
                 "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.ipynb" in err


def test_two_renders_of_the_same_figures_are_the_same_bytes():
    """plotly's div ids are uuid4s; the report numbers them in page order instead."""
    import plotly.graph_objects as go
    fig = go.Figure(go.Bar(x=["v6.5", "v6.6"], y=[3, 1]), layout_title_text="t")

    def page(nbconvert_order):
        html = "<html>" + "".join(fig.to_html(full_html=False, include_plotlyjs=False)
                                  for _ in range(2)) + "</html>"
        if nbconvert_order:                        # nbconvert writes class before id
            html = re.sub(r'<div id="([^"]+)" class="plotly-graph-div"',
                          r'<div class="plotly-graph-div" id="\1"', html)
        return html

    for order in (False, True):
        a, b = page(order), page(order)
        assert a != b                              # plotly's own ids differ per render
        sa, sb = report.stable_ids(a), report.stable_ids(b)
        assert sa == sb
        assert 'id="kvmpt-fig-1"' in sa and 'id="kvmpt-fig-2"' in sa
        first = re.search(r'id="([0-9a-f-]{36})"', a).group(1)
        assert sa.count("kvmpt-fig-1") == a.count(first) >= 3   # the div and its scripts
