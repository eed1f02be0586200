"""HTML building blocks of the reports: inline CSS, escaping, embedded images, tables, numbers.

Self-contained means a pathologist can mail the file and open it offline: every image is
embedded as base64, the CSS is inline, nothing is fetched from the network.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1150px;color:#1d2330;background:#fff}
h1{font-size:1.6em;border-bottom:3px solid #7a2f63;padding-bottom:6px}h2{color:#7a2f63;margin-top:1.8em}
h3{margin-bottom:.3em}table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #c9cdd6;padding:4px 8px;text-align:right}th{background:#eef0f5}td.l,th.l{text-align:left}
.figs{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}.figs img{max-width:360px;border:1px solid #ddd}
img.wide{max-width:100%;border:1px solid #ddd}.note{background:#fff4d6;border-left:4px solid #e0a800;padding:4px 10px;margin:4px 0}
.missing{background:#fde8e8;border-left:4px solid #c0392b;padding:4px 10px;margin:4px 0}
pre{background:#f6f7f9;padding:10px;font-size:.8em;max-height:420px;overflow:auto}
.headline{font-size:1.1em;background:#eef7ee;border-left:4px solid #2e8b57;padding:6px 12px}
img.thumb{max-width:240px;display:block}
"""


class Raw(str):
    """Markup a table cell holds as is (an embedded image); everything else is escaped."""


def esc(value) -> str:
    return value if isinstance(value, Raw) else html.escape(str(value))


def img_tag(path: Path | None, alt: str, css: str = "") -> str:
    if path is None or not Path(path).is_file():
        return f'<div class="missing">{esc(alt)}: not available</div>'
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    cls = f' class="{css}"' if css else ""
    return f'<img{cls} alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def table(header: list[str], rows: list[list], left: int = 1) -> str:
    """An HTML table; the first `left` columns are left-aligned (names), the rest numbers."""
    th = "".join(f'<th class="l">{esc(h)}</th>' if i < left else f"<th>{esc(h)}</th>" for i, h in enumerate(header))
    body = "".join(
        "<tr>"
        + "".join(f'<td class="l">{esc(v)}</td>' if i < left else f"<td>{esc(v)}</td>" for i, v in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{th}</tr>{body}</table>"


def fmt(value, ci=None, digits: int = 3) -> str:
    """A number, its CI when known; undefined values say so rather than print NaN."""
    if value is None:
        return "undefined"
    text = f"{value:.{digits}f}" if isinstance(value, (int, float)) else str(value)
    if ci:
        text += f" ({ci[0]:.{digits}f}-{ci[1]:.{digits}f})"
    return text


def notes_html(notes) -> str:
    return "".join(f'<div class="note">{esc(n)}</div>' for n in notes)


def page(title: str, body: str) -> str:
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f"<style>{CSS}</style></head><body><h1>{esc(title)}</h1>{body}"
        f'<p style="color:#888;font-size:.8em">made by histoflow report; self-contained (no network needed)</p>'
        f"</body></html>"
    )
