"""Does every plotly figure on a page fit its box?  Screenshots and a text-overflow check.

For each rendered plotly figure (``.js-plotly-plot``) on a Playwright page:

* a PNG of the figure is saved (``<dir>/<prefix>-fig<NN>.png``), for a reviewer to look at;
* every drawn text of the figure — title, legend entries, axis titles and tick labels,
  annotations, updatemenu buttons, data labels — is measured with
  ``getBoundingClientRect()`` and must lie inside the figure's own rectangle (within
  :data:`TOL` px), where the cell or the page would cut it, and a data label inside the
  plot area's clip rectangle, which plotly cuts it to (``cliponaxis``);
* the figure itself must fit the page's width and the notebook output area it sits in
  (a fixed ``width`` wider than the cell is cut at the cell's right edge).

Screenshots go to ``$KVMPT_SCREENSHOTS`` or ``build/screenshots/`` of the checkout.
"""
from __future__ import annotations

import os
from pathlib import Path

from .conftest import ROOT

TOL = 2.0                     # px: sub-pixel text metrics and anti-aliasing

#: text plotly draws: the svg <text> of the title, legend, axes, annotations, menus, table
_MEASURE = r"""
([el, tol]) => {
  const r = el.getBoundingClientRect();
  const area = el.closest('.jp-OutputArea-output, .jp-RenderedHTMLCommon, .output_subarea')
  const ar = area ? area.getBoundingClientRect() : null;
  const page = document.documentElement.clientWidth;
  const kind = (t) => {
    for (const [sel, name] of [['.gtitle', 'title'], ['.legend', 'legend'],
                               ['.updatemenu-container', 'updatemenu button'],
                               ['.annotation', 'annotation'], ['.xtitle, .ytitle, [class*="title"]', 'axis title'],
                               ['.xtick, .ytick, [class$="tick"]', 'tick label'],
                               ['.table', 'table cell']]) {
      if (t.closest(sel)) return name;
    }
    return 'text';
  };
  const out = [];
  if (r.right > page + tol) out.push(`figure is ${Math.round(r.width)} px wide, the page ${page} px`);
  if (ar && r.right > ar.right + tol)
    out.push(`figure right edge ${Math.round(r.right)} px is past its output area's ${Math.round(ar.right)} px`);
  for (const t of el.querySelectorAll('svg text')) {
    const s = getComputedStyle(t);
    if (s.display === 'none' || s.visibility === 'hidden' || s.opacity === '0') continue;
    const clip = t.closest('[clip-path]');
    if (clip && t.closest('.table')) continue;          // table cells scroll inside the table
    const b = t.getBoundingClientRect();
    if (b.width === 0 || b.height === 0 || !t.textContent.trim()) continue;
    const over = [];
    if (b.left < r.left - tol) over.push(`left by ${Math.round(r.left - b.left)} px`);
    if (b.right > r.right + tol) over.push(`right by ${Math.round(b.right - r.right)} px`);
    if (b.top < r.top - tol) over.push(`top by ${Math.round(r.top - b.top)} px`);
    if (b.bottom > r.bottom + tol) over.push(`bottom by ${Math.round(b.bottom - r.bottom)} px`);
    if (over.length)
      out.push(`${kind(t)} "${t.textContent.trim().slice(0, 60)}" overflows ${over.join(', ')}`);
    // text in a clipped layer (a plot area clips its data labels): cut where the clip ends
    const m = clip && /#([^"')]+)["']?\)/.exec(clip.getAttribute('clip-path'));
    const shape = m && document.getElementById(m[1]);
    const cr = shape && shape.firstElementChild;      // in the clipped group's user space
    let c = null;
    if (cr && cr.getBBox) {
      const bb = cr.getBBox(), k = clip.getScreenCTM();
      c = {left: k.e + bb.x * k.a, top: k.f + bb.y * k.d, width: bb.width * k.a,
           right: k.e + (bb.x + bb.width) * k.a, bottom: k.f + (bb.y + bb.height) * k.d};
    }
    if (c && c.width > 0 && (b.left < c.left - tol || b.right > c.right + tol ||
                             b.top < c.top - tol || b.bottom > c.bottom + tol))
      out.push(`${kind(t)} "${t.textContent.trim().slice(0, 60)}" is cut by its plot area`);
  }
  return {title: (el.querySelector('.gtitle') || {}).textContent || '',
          width: Math.round(r.width), problems: out};
}
"""


def screenshot_dir(name: str) -> Path:
    base = Path(os.environ.get("KVMPT_SCREENSHOTS", ROOT / "build" / "screenshots"))
    d = base / name
    d.mkdir(parents=True, exist_ok=True)
    for old in d.glob("*.png"):
        old.unlink()
    return d


def check_figures(page, out_dir: Path, prefix: str = "", selector: str = ".js-plotly-plot"
                  ) -> tuple[int, list[str]]:
    """Screenshot and measure every figure matching ``selector``; returns (figures seen,
    problems), each problem naming the figure (its number and title) and the text."""
    figs = page.locator(selector)
    n = figs.count()
    problems = []
    for i in range(n):
        fig = figs.nth(i)
        fig.scroll_into_view_if_needed()
        fig.screenshot(path=str(out_dir / f"{prefix}fig{i + 1:02d}.png"))
        res = page.evaluate(_MEASURE, [fig.element_handle(), TOL])
        for p in res["problems"]:
            problems.append(f"{prefix}fig{i + 1:02d} ({res['width']} px, "
                            f"{res['title'][:50]!r}): {p}")
    return n, problems
