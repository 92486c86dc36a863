"""kvmpt.review.report without executing notebooks: finding them, the text summary, the CLI."""
from __future__ import annotations

import re

import nbformat
import pytest

from kvmpt.review import report


def _executed(tmp_path, *cells, seed="0"):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(f"SEED = {seed}  # the seed")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# Title"), params, *cells]
    path = tmp_path / "01_demo.ipynb"
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
                     _checked("more\n"), summary)
    text = report.text_summary([path])
    assert "Findings (01_demo)\n* First finding, code continued.\n* Second." in text
    assert '2. "The flush hook is flawed"\na  b\n-----\n1  2' in text
    assert '2. "The flush hook is flawed" (cont.)\nmore' in text
    assert "noise" not in text
    assert "seed:     0" in text
    assert max(map(len, text.splitlines())) < 80


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
