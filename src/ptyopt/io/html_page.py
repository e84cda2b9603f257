"""Self-contained HTML pages (the run dashboard and the study report): figures as inline base64 PNG, tables,
sections and one page with inline CSS. Nothing refers outside the file — no URLs, scripts, fonts or linked
images — so a page reads the same offline, mailed, or copied off a cluster. No JavaScript.

Every function returns an HTML fragment (a str); text given to them is escaped here, fragments are not.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ptyopt.io.integrity import write_atomically  # noqa: E402

_DPI = 90  # page figures: legible at 100 % zoom, a few tens of kB each

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 1.5em auto;
       max-width: 1400px; padding: 0 1em; color: #1d1d1f; background: #ffffff; line-height: 1.4; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; border-bottom: 1px solid #d0d7de; padding-bottom: 0.2em; margin-top: 1.6em; }
.banner { padding: 0.6em 1em; border-radius: 6px; font-weight: 600; margin: 0.8em 0; }
.banner.running { background: #fff4ce; border: 1px solid #e0b400; }
.banner.finished { background: #dff3e3; border: 1px solid #2da44e; }
.banner.stopped { background: #ffe1e0; border: 1px solid #cf222e; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #d0d7de; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f5f7; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; }
figure { display: inline-block; margin: 0.4em 0.8em 0.4em 0; vertical-align: top; }
figcaption { font-size: 0.85em; color: #57606a; text-align: center; }
pre { background: #f6f8fa; border: 1px solid #d0d7de; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
pre.text { white-space: pre-wrap; font-family: inherit; font-size: 0.95em; }
details summary { cursor: pointer; font-weight: 600; margin: 0.4em 0; }
p.note { color: #57606a; font-size: 0.9em; }
"""


class Markup(str):
    """A fragment that is HTML already (a table cell holding a link): not escaped again."""


def escape(text: object) -> str:
    return text if isinstance(text, Markup) else html.escape(str(text), quote=True)


def link(text: str, href: str) -> Markup:
    """A link to a file beside the page (relative ``href``): navigation only, nothing the page loads."""
    return Markup(f'<a href="{html.escape(href, quote=True)}">{html.escape(text)}</a>')


def png_data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def image_tag(data: bytes, alt: str, width_px: int | None = None) -> str:
    """<img> of PNG bytes as a data: URI (alt text for screen readers and for tests)."""
    width = f' width="{int(width_px)}"' if width_px else ""
    return f'<img src="{png_data_uri(data)}" alt="{escape(alt)}"{width}>'


def figure_png(fig: plt.Figure, dpi: int = _DPI) -> bytes:
    """A matplotlib figure as PNG bytes; the figure is closed."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return buffer.getvalue()


def figure_tag(fig: plt.Figure, alt: str, caption: str | None = None) -> str:
    """A matplotlib figure as an inline <img> (in a <figure> with a caption when one is given)."""
    tag = image_tag(figure_png(fig), alt)
    return f"<figure>{tag}<figcaption>{escape(caption)}</figcaption></figure>" if caption else tag


def file_tag(path: str | Path, alt: str, caption: str | None = None) -> str:
    """A PNG file embedded as an inline <img> (the page does not link to the file)."""
    tag = image_tag(Path(path).read_bytes(), alt)
    return f"<figure>{tag}<figcaption>{escape(caption)}</figcaption></figure>" if caption else tag


def array_tag(image: np.ndarray, alt: str, caption: str | None = None, *, cmap: str = "gray",
              limits: tuple[float, float] | None = None, max_px: int = 160) -> str:
    """A 2-D array (Y, X) as a small inline PNG thumbnail (no axes), block-averaged down to at most max_px per
    side; ``limits`` (low, high) fixes the grey scale (shared scales make thumbnails comparable)."""
    values = np.asarray(image, dtype=np.float64)
    step = max(1, math.ceil(max(values.shape) / max_px))
    if step > 1:
        rows, cols = values.shape[0] // step * step, values.shape[1] // step * step
        values = values[:rows, :cols].reshape(rows // step, step, cols // step, step).mean(axis=(1, 3))
    low, high = limits if limits is not None else (float(np.nanmin(values)), float(np.nanmax(values)))
    buffer = io.BytesIO()
    plt.imsave(buffer, values, cmap=cmap, vmin=low, vmax=high if high > low else low + 1.0, format="png")
    tag = image_tag(buffer.getvalue(), alt, width_px=min(max_px, 4 * values.shape[1]))
    return f"<figure>{tag}<figcaption>{escape(caption)}</figcaption></figure>" if caption else tag


def format_number(value: object) -> str:
    """Numbers with 4 significant digits (integers as they are); anything else as text."""
    if isinstance(value, Markup):
        return value
    if isinstance(value, bool) or value is None:
        return "–" if value is None else str(value)
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return "–" if not math.isfinite(value) else f"{float(value):.4g}"
    return str(value)


def table(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A table of text cells (numbers formatted by ``format_number`` and right-aligned; ``Markup`` as it is)."""
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = "".join(f'<td class="num">{escape(format_number(v))}</td>'
                        if isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)
                        else f"<td>{escape(format_number(v))}</td>" for v in row)
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def section(title: str, *parts: str) -> str:
    return f"<section><h2>{escape(title)}</h2>{''.join(parts)}</section>"


def details(summary: str, *parts: str, open_: bool = False) -> str:
    """A collapsible block (closed unless ``open_``)."""
    return f"<details{' open' if open_ else ''}><summary>{escape(summary)}</summary>{''.join(parts)}</details>"


def _class(css_class: str | None) -> str:
    return f' class="{escape(css_class)}"' if css_class else ""


def preformatted(text: str, css_class: str | None = None) -> str:
    return f"<pre{_class(css_class)}>{escape(text)}</pre>"


def paragraph(text: str, css_class: str | None = None) -> str:
    return f"<p{_class(css_class)}>{escape(text)}</p>"


def banner(text: str, kind: str) -> str:
    """A status line: kind is 'running', 'finished' or 'stopped' (its colour)."""
    return f'<div class="banner {escape(kind)}">{escape(text)}</div>'


def page(title: str, *parts: str, refresh_s: int | None = None) -> str:
    """A whole HTML5 document with inline CSS; ``refresh_s`` makes the browser reload it (a page that a
    running job rewrites)."""
    refresh = f'<meta http-equiv="refresh" content="{int(refresh_s)}">' if refresh_s else ""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            # an empty data: icon, so that no browser asks the file system for favicon.ico
            f"<link rel=\"icon\" href=\"data:,\">{refresh}"
            f"<title>{escape(title)}</title><style>{_CSS}</style></head>"
            f"<body><h1>{escape(title)}</h1>{''.join(parts)}</body></html>\n")


def write_page(path: str | Path, document: str) -> Path:
    """Write the page atomically (a watcher's browser never reads half a page)."""
    return write_atomically(path, lambda tmp: tmp.write_text(document, encoding="utf-8"))
