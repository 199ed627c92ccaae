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

from segx.fileio import write_text

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
