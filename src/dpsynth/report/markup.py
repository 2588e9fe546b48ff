"""The report's HTML building blocks: the style sheet, escaping, number formatting and tables."""

from __future__ import annotations

import html
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import PurePath
from typing import Any

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;color:#1d2330;
background:#fafbfc;line-height:1.5}
main{max-width:980px;margin:0 auto;padding:1.5rem 1.25rem 3rem}
header{border-bottom:1px solid #dde2ea;margin-bottom:1rem}
h1{font-size:1.6rem;margin:.2rem 0}h2{font-size:1.25rem;margin:2rem 0 .6rem;border-bottom:1px solid #e4e8ef;
padding-bottom:.2rem}h3{font-size:1.02rem;margin:1.2rem 0 .4rem}
.meta{color:#5a6478;font-size:.9rem}
nav{display:flex;flex-wrap:wrap;gap:.2rem .9rem}nav a{font-size:.92rem;color:#2456a6;text-decoration:none}
.tablewrap{max-width:100%;overflow-x:auto;margin:.5rem 0 1rem}
table{border-collapse:collapse;margin:0;font-size:.88rem;background:#fff}
.subtables{display:flex;flex-wrap:wrap;gap:0 1.5rem;align-items:flex-start}
.subtables>div{max-width:100%;min-width:0}
h4{font-size:.92rem;margin:.7rem 0 .2rem;font-weight:600}
th,td{border:1px solid #dde2ea;padding:.3rem .55rem;text-align:left;vertical-align:top}
th{background:#f0f3f8;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.headline{background:#eef3fb;border-left:4px solid #2456a6;padding:.6rem 1rem;margin:.6rem 0}
.headline .figure{font-size:1.45rem;margin:.1rem 0}.headline p{margin:.3rem 0}
.headline ul{margin:.4rem 0;padding-left:1.2rem}.refs td:last-child{white-space:nowrap}
.guarantee{background:#eef6ee;border-left:4px solid #3c8d3c;padding:.7rem 1rem;margin:.6rem 0}
.warn{background:#fff6e5;border-left:4px solid #d08a00;padding:.5rem 1rem;margin:.6rem 0}
.note{color:#5a6478;font-size:.9rem}
.sample{background:#fff;border:1px solid #dde2ea;border-radius:4px;padding:.5rem .75rem;margin:.4rem 0;
white-space:pre-wrap;word-wrap:break-word;font-size:.9rem}
.sample .text{margin:0}
.sample .src{display:block;color:#5a6478;font-size:.78rem;margin-top:.25rem}
.sample details{font-size:.78rem;color:#5a6478;margin-top:.2rem}
.sample details pre{white-space:pre-wrap;margin:.3rem 0 0;font-size:.8rem}
svg.chart{width:100%;max-width:680px;height:auto;display:block;margin:.5rem 0 1rem}
pre{background:#fff;border:1px solid #dde2ea;padding:.75rem;overflow-x:auto;font-size:.82rem}
code{font-size:.9em;overflow-wrap:anywhere}
"""


# A lone surrogate cannot be written as UTF-8: a run directory's name that is not UTF-8 reaches Python as
# U+DC80..U+DCFF (os.fsdecode's surrogateescape), a JSON "\ud800" escape as itself; either ended the report in a
# UnicodeEncodeError when the page was written.
_SURROGATE = re.compile("[\ud800-\udfff]")
_NOT_ESCAPED_BYTE = re.compile("[\ud800-\udc7f\udd00-\udfff]")


def safe_text(text: str) -> str:
    """``text`` without lone surrogates: a file name's undecodable bytes (surrogateescape) decoded with
    U+FFFD in their place, as UTF-8 decoding with errors="replace" shows them; any other surrogate U+FFFD."""
    if not _SURROGATE.search(text):
        return text
    text = _NOT_ESCAPED_BYTE.sub("\ufffd", text)
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def shown_path(path: str) -> str:
    """An absolute path as a shared report shows it: the folders above the last one (a home directory, a
    user name) are none of its readers' business.  A relative path is shown as given."""
    return f".../{PurePath(path).name}" if os.path.isabs(path) else path


def esc(x: Any) -> str:
    """``x`` as HTML text: escaped, and writable as UTF-8 (``safe_text``)."""
    return html.escape(safe_text("" if x is None else str(x)), quote=True)


def fmt(x: Any, digits: int = 4) -> str:
    """A number for a table cell: ints with separators, floats to ``digits`` significant figures."""
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if math.isnan(x):
            return "—"
        if x == 0:
            return "0"
        if abs(x) >= 1 or abs(x) < 1e-3:
            return f"{x:.{digits}g}"
        return f"{x:.{digits}f}".rstrip("0").rstrip(".")
    return str(x)


# a share or ratio written as text ("12%", "70 / 567", "0.93 (12%)", "0.71 +- 0.02"): right-aligned like the
# numbers beside it, in a column of figures only (a label column's "4/5" or "50%" is a name and stays left)
_FIGURE = re.compile(r"^(?=.*\d)(?=.*[%/\u00b1]|.*\+-)[\d\s.,%/()+\-\u00b1\u2212]+$")


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _figures_only(column: Sequence[Any]) -> bool:
    """A column whose every filled cell is a number or a figure written as text, with one of the latter."""
    filled = [x for x in column if x is not None and x != ""]
    text = [x for x in filled if isinstance(x, str)]
    return bool(text) and all(_is_number(x) or isinstance(x, str) and _FIGURE.match(x) for x in filled)


def _cell(x: Any, figure_column: bool = False) -> str:
    if _is_number(x) or figure_column and isinstance(x, str) and _FIGURE.match(x):
        return f'<td class="num">{esc(fmt(x))}</td>'
    if isinstance(x, (dict, list)):
        return f"<td><code>{esc(json.dumps(x, default=str))}</code></td>"
    return f"<td>{esc(fmt(x))}</td>"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], cls: str = "") -> str:
    rows = [list(r) for r in rows]
    width = max((len(r) for r in rows), default=0)
    figures = [_figures_only([r[i] for r in rows if i < len(r)]) for i in range(width)]
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(_cell(c, figures[i]) for i, c in enumerate(row)) + "</tr>" for row in rows)
    c = f' class="{esc(cls)}"' if cls else ""
    # the wrapper scrolls a table wider than the page inside itself, so the page never widens
    return f'<div class="tablewrap"><table{c}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
