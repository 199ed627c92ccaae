"""Self-contained HTML report pages: one file, inline CSS, no script needed, nothing remote.

Every report segx writes (check_dataset, evaluate, training) is built from these pieces, so the
escaping rule lives in one place: every text that comes from a user's data (file names, class
names, messages) goes through :func:`esc`; images are referenced by a path relative to the page
(``img``) so the folder can be moved or opened offline.
"""
from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Iterable

from segx.utils.fileio import write_text

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;
background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;color:#c8cedb}
main{padding:8px 24px 40px;max-width:1400px}
section{background:#fff;border:1px solid #dde1e8;border-radius:6px;margin:16px 0;padding:12px 16px}
h2{font-size:16px;margin:4px 0 10px}
table{border-collapse:collapse;font-size:13px}
th,td{border-bottom:1px solid #e5e8ee;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f0f2f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#137333}.bad{color:#b3261e}.warn{color:#8a5a00}
.gallery{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0;background:#fafbfc;border:1px solid #e5e8ee;border-radius:4px;padding:6px}
figure img{display:block;max-width:100%;height:auto}
figcaption{font-size:12px;color:#4a5263;margin-top:4px;word-break:break-all}
.swatch{display:inline-block;width:12px;height:12px;border:1px solid #999;margin-right:6px;
vertical-align:middle}
.hidden{display:none}
"""


class Raw(str):
    """HTML built by the caller from escaped pieces: :func:`table` puts it in a cell as is."""


def esc(value: object) -> str:
    """Text from the user's data, safe inside HTML text and attribute values."""
    return html.escape(str(value), quote=True)


def cell(value: object) -> str:
    """A table cell's content: :class:`Raw` as is, anything else escaped."""
    return value if isinstance(value, Raw) else esc(value)


def rel(path: str | Path, page: str | Path) -> str:
    """``path`` relative to the folder of ``page``, as a URL-safe relative reference."""
    from urllib.parse import quote
    relpath = os.path.relpath(Path(path).resolve(), Path(page).resolve().parent)
    return quote(Path(relpath).as_posix())


def img(src: str, alt: str, width: int | None = None) -> str:
    """An ``<img>`` for an already relative ``src`` (see :func:`rel`), lazily loaded."""
    size = f' width="{int(width)}"' if width else ""
    return f'<img src="{esc(src)}" alt="{esc(alt)}" loading="lazy"{size}>'


def table(header: Iterable[str], rows: Iterable[Iterable[object]],
          numeric: Iterable[int] = ()) -> str:
    """A table of escaped cells (:class:`Raw` cells as they are); the columns in ``numeric``
    are right-aligned; a header of empty strings gives a table without a header row."""
    numeric = set(numeric)
    header = list(header)
    head = "".join(f"<th>{esc(h)}</th>" for h in header) if any(header) else ""
    body = "".join(
        "<tr>" + "".join(f'<td{" class=num" if i in numeric else ""}>{cell(c)}</td>'
                         for i, c in enumerate(row)) + "</tr>" for row in rows)
    thead = f"<thead><tr>{head}</tr></thead>" if head else ""
    return f"<table>{thead}<tbody>{body}</tbody></table>"


def section(title: str, body_html: str, anchor: str | None = None) -> str:
    """A titled block; ``body_html`` must already be escaped HTML."""
    ident = f' id="{esc(anchor)}"' if anchor else ""
    return f"<section{ident}><h2>{esc(title)}</h2>{body_html}</section>"


def page(title: str, subtitle: str, sections: Iterable[str], extra_css: str = "") -> str:
    """A whole page: escaped title and subtitle, the given (already escaped) sections."""
    return ("<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
            '<meta name=viewport content="width=device-width,initial-scale=1">'
            f"<title>{esc(title)}</title><style>{_CSS}{extra_css}</style></head><body>"
            f"<header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header>"
            f"<main>{''.join(sections)}</main></body></html>\n")


def write_page(path: str | Path, html_text: str) -> Path:
    """Write the page atomically (a browser reloading it never sees half a page)."""
    return write_text(path, html_text)


# --------------------------------------------------------------------------- added helpers
def raw_table(header: Iterable[str], rows: Iterable[Iterable[str]],
              numeric: Iterable[int] = (), attrs: str = "") -> str:
    """A table whose header is escaped text and whose cells are already-escaped HTML (for
    swatches, links or coloured cells); the columns in ``numeric`` are right-aligned."""
    numeric = set(numeric)
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td{" class=num" if i in numeric else ""}>{c}</td>'
                         for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table{attrs}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def swatch(rgb: Iterable[int]) -> str:
    """A small colour square (a class's palette colour)."""
    r, g, b = (int(c) for c in rgb)
    return f'<span class=swatch style="background:rgb({r},{g},{b})"></span>'


def link(href: str, text: str) -> str:
    """A link to an already relative ``href`` (see :func:`rel`)."""
    return f'<a href="{esc(href)}">{esc(text)}</a>'


def _decimate(xs: list, ys: list, most: int) -> tuple[list, list]:
    """At most ``most`` points, evenly spaced, always keeping the last."""
    if len(xs) <= most:
        return list(xs), list(ys)
    step = len(xs) / (most - 1)
    keep = sorted({int(k * step) for k in range(most - 1)} | {len(xs) - 1})
    return [xs[k] for k in keep], [ys[k] for k in keep]


def _ticks(lo: float, hi: float) -> list[float]:
    return [lo + (hi - lo) * k / 4 for k in range(5)]


def line_chart(title: str, series: list[tuple[str, list, list, str]], width: int = 420,
               height: int = 220, y_range: tuple[float, float] | None = None,
               markers: bool = False, most: int = 800,
               x_range: tuple[float, float] | None = None) -> str:
    """An inline SVG line chart (no script): ``series`` is ``[(name, xs, ys, css colour)]``;
    ``None`` values are skipped; long series are thinned to ``most`` points; ``x_range`` and
    ``y_range`` fix the axes (else the data's extent). Each drawn point of a ``markers`` chart
    is a ``<circle class=pt>`` with its value as a tooltip."""
    pts = [(x, y) for _, xs, ys, _ in series for x, y in zip(xs, ys) if y is not None]
    left, right, top, bottom = 52, 10, 24, 30
    body = [f'<text x="{left}" y="15" class=ct>{esc(title)}</text>']
    if pts:
        x0, x1 = x_range or (min(p[0] for p in pts), max(p[0] for p in pts))
        y0, y1 = y_range or (min(p[1] for p in pts), max(p[1] for p in pts))
        x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1e-9 + abs(y0) * 0.1)
        pw, ph = width - left - right, height - top - bottom

        def sx(x: float) -> float:
            return left + (x - x0) / (x1 - x0) * pw

        def sy(y: float) -> float:
            return top + (1 - (y - y0) / (y1 - y0)) * ph
        body += [f'<line x1="{left}" y1="{sy(t):.1f}" x2="{width - right}" y2="{sy(t):.1f}" '
                 f'class=grid /><text x="{left - 4}" y="{sy(t) + 4:.1f}" class=yt>{t:.3g}</text>'
                 for t in _ticks(y0, y1)]
        body += [f'<text x="{sx(t):.1f}" y="{height - 10}" class=xt>{t:g}</text>'
                 for t in sorted({round(t) for t in _ticks(x0, x1)})]
        for name, xs, ys, colour in series:
            kept = [(x, y) for x, y in zip(xs, ys) if y is not None]
            xs, ys = _decimate([p[0] for p in kept], [p[1] for p in kept], most)
            line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(xs, ys))
            body.append(f'<polyline points="{line}" fill="none" stroke="{esc(colour)}" '
                        f'stroke-width="1.5"><title>{esc(name)}</title></polyline>')
            if markers:
                body += [f'<circle class=pt cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" '
                         f'fill="{esc(colour)}"><title>{esc(name)} @ {x}: {y:.4f}</title>'
                         "</circle>" for x, y in zip(xs, ys)]
    return (f'<svg class=chart width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'role="img" aria-label="{esc(title)}">{"".join(body)}</svg>')


CHART_CSS = """
svg.chart{background:#fff;border:1px solid #e5e8ee;margin:4px}
svg.chart .grid{stroke:#e5e8ee}svg.chart text{font-size:10px;fill:#4a5263}
svg.chart .yt{text-anchor:end}svg.chart .xt{text-anchor:middle}
svg.chart .ct{font-size:12px;fill:#1d2330;font-weight:600}
"""


def refreshing(html_text: str, seconds: int) -> str:
    """``html_text`` (from :func:`page`) reloading itself every ``seconds`` in the browser (for
    a page that is rewritten while something runs)."""
    return html_text.replace("<head>", f'<head><meta http-equiv="refresh" '
                                       f'content="{int(seconds)}">', 1)
