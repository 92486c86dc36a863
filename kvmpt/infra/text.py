"""Plain text for the mailing list: the one table renderer and the number formats.

Everything here renders to fixed-width ASCII that stays under 80 columns, so a
report can be pasted into a mail to kvm@vger.kernel.org without re-wrapping.
Every report starts with a header naming the design(s), the scenario, the seed
and the kvmpt version; every number carries its unit (``16 MiB``,
``4,096 pages``, ``1.2 Mcycles``) or is a plain count whose row says what is
counted.

Every text table kvmpt prints goes through :func:`table`; every report is
:func:`header` + :func:`render_document`.  ``kvmpt replay``'s output is
:mod:`kvmpt.review.textreport`.
"""
from __future__ import annotations

import errno as errno_mod
from typing import Any, Iterable, Sequence

__all__ = [
    "MAX_WIDTH", "header", "table", "section", "render_document", "wrap",
    "fmt_count", "fmt_bytes", "fmt_pages", "fmt_cycles", "fmt_hex", "fmt_errno",
    "fmt_seconds", "fmt_us", "fmt_count_m",
]

MAX_WIDTH = 79          # columns; a mail line of 80 with the quote marker still fits 80


def _version() -> str:
    from kvmpt._version import __version__
    return __version__


# ---------------------------------------------------------------------------
# Numbers with units

def fmt_count(n: int | float | None, unit: str = "") -> str:
    """``1,234`` or ``1,234 ops``; None is ``-``."""
    if n is None:
        return "-"
    s = f"{n:,.0f}" if isinstance(n, float) and n.is_integer() or isinstance(n, int) \
        else f"{n:,.2f}"
    return f"{s} {unit}" if unit else s


def fmt_bytes(n: int | None) -> str:
    """Exact binary units: the largest unit that divides ``n`` (``640 KiB``, ``3 GiB``,
    ``2,047 MiB``), so a slot 1 MiB short of 2 GiB never reads as ``2.00 GiB``."""
    if n is None:
        return "-"
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift:,} {unit}"
    return f"{n:,} B"


def fmt_pages(n: int | None) -> str:
    return "-" if n is None else f"{n:,} pages" if n != 1 else "1 page"


def fmt_cycles(c: float | None) -> str:
    """``850 cycles``, ``12.3 kcycles``, ``4.56 Mcycles``, ``1.20 Gcycles``; None is ``n/a``."""
    if c is None:
        return "n/a"
    for unit, scale in (("Gcycles", 1e9), ("Mcycles", 1e6), ("kcycles", 1e3)):
        if abs(c) >= scale:
            return f"{c / scale:.3g} {unit}"
    return f"{c:.0f} cycles"


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if abs(s) >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def fmt_us(us: float | None) -> str:
    """Microseconds, one decimal: ``125.1 us``, ``121.7 ms`` from 1,000 us; None is ``-``."""
    if us is None:
        return "-"
    return f"{us / 1000:,.1f} ms" if us >= 1000 else f"{us:,.1f} us"


def fmt_count_m(n: int | None) -> str:
    """A count for a narrow column: ``1,234``, ``268 M`` from ten million; None is ``-``."""
    if n is None:
        return "-"
    return f"{n / 1e6:,.0f} M" if n >= 10_000_000 else f"{n:,}"


def fmt_hex(n: int | None) -> str:
    return "-" if n is None else f"0x{n:x}"


def fmt_errno(e: int | None) -> str:
    """``0`` / ``EINVAL`` / ``-`` for unknown."""
    if e is None:
        return "-"
    if e == 0:
        return "0"
    return errno_mod.errorcode.get(e, str(e))


# ---------------------------------------------------------------------------
# Layout

def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:max(1, width - 2)] + ".."


def header(title: str, *, design: str, scenario: str, seed: int | None,
           extra: Sequence[tuple[str, str]] = ()) -> str:
    """The report header: title, kvmpt version, design(s), scenario, seed."""
    ver = f"kvmpt {_version()}"
    top = _clip(title, MAX_WIDTH - len(ver) - 2)
    lines = [top + " " * (MAX_WIDTH - len(top) - len(ver)) + ver, "=" * MAX_WIDTH]
    fields = [("design", design), ("scenario", scenario),
              ("seed", "-" if seed is None else str(seed)), *extra]
    for k, v in fields:
        lines.append(_clip(f"{k + ':':10s}{v}", MAX_WIDTH))
    return "\n".join(lines)


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]],
          align: str | None = None, max_width: int | None = MAX_WIDTH) -> str:
    """A fixed-width table: a header row, a rule, the rows.

    ``align`` has one letter per column (``l`` or ``r``; default: first column
    left, others right).  Cells are ``str()``-ed.  If the table would be wider
    than ``max_width``, the widest left-aligned column is clipped with ``..``;
    ``max_width=None`` never clips (a terminal listing, not a mail).
    """
    cols = [str(c) for c in columns]
    body = [[("" if v is None else str(v)) for v in r] for r in rows]
    for r in body:
        if len(r) != len(cols):
            raise ValueError(f"row has {len(r)} cells, table has {len(cols)} columns")
    align = align or ("l" + "r" * (len(cols) - 1))
    widths = [max([len(cols[i])] + [len(r[i]) for r in body]) for i in range(len(cols))]
    sep = 2
    total = sum(widths) + sep * (len(cols) - 1)
    while max_width is not None and total > max_width:
        left = [i for i in range(len(cols)) if align[i] == "l" and widths[i] > 6]
        cand = left or [i for i in range(len(cols)) if widths[i] > 6]
        if not cand:
            break
        i = max(cand, key=lambda j: widths[j])
        widths[i] -= total - max_width
        widths[i] = max(widths[i], 6)
        total = sum(widths) + sep * (len(cols) - 1)

    def fmt(cells):
        out = []
        for i, c in enumerate(cells):
            c = _clip(c, widths[i])
            out.append(c.ljust(widths[i]) if align[i] == "l" else c.rjust(widths[i]))
        return (" " * sep).join(out).rstrip()

    lines = [fmt(cols), "-" * (total if max_width is None else min(total, max_width))]
    lines += [fmt(r) for r in body]
    return "\n".join(lines)


def section(title: str, body: str) -> str:
    return f"{title}\n{body}" if body else title


def render_document(head: str, sections: Sequence[tuple[str, str]]) -> str:
    """Header, then each (title, body) separated by a blank line; checks the width."""
    parts = [head] + [section(t, b) for t, b in sections]
    text = "\n\n".join(parts) + "\n"
    for n, line in enumerate(text.splitlines(), start=1):
        if len(line) > MAX_WIDTH:
            raise AssertionError(f"report line {n} is {len(line)} columns: {line!r}")
    return text


def wrap(line: str, width: int = MAX_WIDTH) -> str:
    import textwrap
    return "\n".join(textwrap.wrap(line, width, subsequent_indent="    ")) or line
