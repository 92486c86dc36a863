"""How a figure fits its cell: the one place that sizes figures.

Every figure is drawn at the width of the cell it lands in (``autosize``, no fixed
``width``): a JupyterLab window of 1000 to 1600 px, or the HTML report at 1280 px.  So no
text may rely on a wide figure: titles are wrapped to :data:`TITLE_CHARS` characters
(:func:`wrap`), the top margin is made tall enough for the title's lines and a row of
design buttons, and legends go below the plot, where plotly wraps their entries into
rows and grows the bottom margin to hold them.  ``tests/browser`` measures every text
against its figure in a real browser at those widths.
"""
from __future__ import annotations

import re
import textwrap
from typing import Any

import plotly.graph_objects as go

__all__ = ["TITLE_CHARS", "MIN_WIDTH", "wrap", "title_lines", "fit"]

#: the narrowest figure kvmpt draws for: JupyterLab at 1000 px (cell output ~820 px)
MIN_WIDTH = 780
#: characters per title line at 13 px that fit :data:`MIN_WIDTH` (about 7 px a character)
TITLE_CHARS = 100
_TAG = re.compile(r"<[^>]+>")
_LINE_PX = 19                    # one title line at 13 px (plotly's line height ~1.3 em)
_MENU_PX = 34                    # a row of updatemenu buttons


def _visible(s: str) -> int:
    return len(_TAG.sub("", s))


def _words(part: str) -> list[str]:
    """The words of ``part``; a bold span (``<b>...</b>``) is one word, never split."""
    words: list[str] = []
    for w in part.split(" "):
        if words and words[-1].count("<b>") > words[-1].count("</b>"):
            words[-1] += " " + w
        else:
            words.append(w)
    return words


def wrap(text: str, chars: int = TITLE_CHARS) -> str:
    """``text`` (plotly's HTML subset) with ``<br>`` between words so that no line shows
    more than ``chars`` characters (a longer bold span stays on one line); existing
    ``<br>`` are kept, tags are not counted."""
    out = []
    for part in re.split(r"<br\s*/?>", text):
        line = ""
        for word in _words(part):
            cand = f"{line} {word}" if line else word
            if line and _visible(cand) > chars:
                out.append(line)
                line = word
            else:
                line = cand
        out.append(line)
    return "<br>".join(out)


def title_lines(text: str) -> int:
    return len(re.split(r"<br\s*/?>", text or ""))


def fit(fig: go.Figure, *, height: int, left: int = 60, right: int = 20, bottom: int = 50,
        legend_below: bool = True, title_size: int = 13, chars: int = TITLE_CHARS,
        menus_above: bool = True, above: int = 0) -> go.Figure:
    """Size ``fig`` to its cell: no width (plotly fills the cell), ``height`` px, the
    title wrapped and pinned to the top, design buttons (``updatemenus``) in a row just
    above the plot area, a top margin that holds both, the legend below the plot.
    Titles that buttons change (``title.text`` in their relayout args) are wrapped too,
    and the margin is made for the longest of them.  ``above`` (px) is room kept free
    between the plot and the buttons, for annotations drawn above the plot."""
    lay = fig.layout
    titles = [lay.title.text or ""]
    for menu in lay.updatemenus or ():
        for b in menu.buttons or ():
            for arg in (b.args or ())[1:2]:
                if isinstance(arg, dict) and "title.text" in arg:
                    arg["title.text"] = wrap(arg["title.text"], chars)
                    titles.append(arg["title.text"])
        menu.buttons = menu.buttons                      # write the wrapped args back
    lay.title.text = wrap(titles[0], chars) if titles[0] else None
    lines = max(title_lines(t) for t in titles) if any(titles) else 0
    line_px = _LINE_PX * title_size / 13
    menu_px = _MENU_PX if lay.updatemenus and menus_above else 0
    top = int(22 + lines * line_px + menu_px + 8 + above)
    if lines:
        fig.update_layout(title=dict(yref="container", y=1, yanchor="top", pad=dict(t=16),
                                     font=dict(size=title_size)))
    if menus_above:
        for menu in lay.updatemenus or ():
            menu.update(y=1, yanchor="bottom", pad=dict(t=0, b=6 + above))
    legend: dict[str, Any] = {}
    if legend_below:
        legend = dict(orientation="h", x=0, xanchor="left", yref="container", y=0,
                      yanchor="bottom", font=dict(size=11))
    fig.update_layout(autosize=True, width=None, height=height, legend=legend,
                      margin=dict(l=left, r=right, t=top, b=bottom, autoexpand=True))
    return fig
