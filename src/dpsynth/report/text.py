"""Synthetic text for a person to read: markdown markup and prompt echoes removed (display only)."""

from __future__ import annotations

import re
from collections.abc import Iterable

# Small instruction models wrap a review in markdown and echo the prompt ("Sure! Here is a positive movie
# review:").  The cards show the text cleaned for reading; the data and the raw text stay as they are.
# Every pattern runs in linear time: a span never crosses its own opening mark ("**", "__", "["), so a failed
# attempt stops at the next one.  "(.+?)" to the closing mark re-scanned the rest of the text from every "__"
# ("__a " * 32768, 128 KB, took 68 s).
_FENCE = re.compile(r"^[ \t]*(?:```|~~~)[^\n]*$", re.M)
_RULE = re.compile(r"^[ \t]*([-*_])(?:[ \t]*\1){2,}[ \t]*$", re.M)
_HEADING = re.compile(r"^[ \t]{0,3}#{1,6}[ \t]+", re.M)
_QUOTE = re.compile(r"^[ \t]{0,3}>[ \t]?", re.M)
_STAR_BULLET = re.compile(r"^([ \t]*)[*+][ \t]+", re.M)
_STRONG = re.compile(r"(\*\*)(?=\S)((?:[^*]|\*(?!\*))+?)(?<=\S)\*\*|(__)(?=\S)((?:[^_]|_(?!_))+?)(?<=\S)__")
_EMPH_STAR = re.compile(r"(?<![\w*])\*(?=[^\s*])([^*\n]+?)(?<=[^\s*])\*(?![\w*])")
_EMPH_UNDER = re.compile(r"(?<![\w_])_(?=[^\s_])([^_\n]+?)(?<=[^\s_])_(?![\w_])")
_CODE = re.compile(r"`+([^`\n]+?)`+")
_LINK = re.compile(r"!?\[([^\[\]\n]+)\]\([^()\s]*\)")
_LEFTOVER = re.compile(r"\*{2,}|`{3,}|(?<!\S)#{2,}(?!\S)")
_POLITE = r"(?:(?:sure|okay|ok|certainly|of course|absolutely)\b[!.,]*\s*)?"
_HERE_IS = re.compile(_POLITE + r"here(?:'s|\u2019s|\s+is|\s+are)\b[^\n:]{0,100}:[ \t]*\n*", re.I)


def clean_for_display(text: str, task: str | None = None, labels: Iterable[str] = ()) -> str:
    """``text`` for a person to read: markdown markup and a leading prompt echo removed.

    Removes code fences, headings, emphasis, inline code, links (their words stay), rules and quote
    marks, and a leading echo of the request: "Sure! Here is a positive movie review:", or a first
    "<label> <task>:" / "Review:" line.  Only the start of the text is treated as an echo, and a text
    that would be left empty is returned as it was.  For display only: the data is never changed.
    """
    raw = text
    t = text.replace("\r\n", "\n").strip()
    t = _HEADING.sub("", t, count=1) if _HEADING.match(t) else t  # "## Review:" is an echo too
    t = _HERE_IS.sub("", t, count=1) if _HERE_IS.match(t) else t
    words = [w for w in (task or "", "review", "text") if w]
    names = "|".join(re.escape(str(x)) for x in labels if str(x))
    label_part = rf"(?:(?:{names})[ \t]+)?" if names else ""
    echo = re.compile(
        rf"(?:(?:a|an)[ \t]+)?{label_part}(?:{'|'.join(re.escape(w) for w in words)})[ \t]*:[ \t]*\n*", re.I
    )
    if echo.match(t):
        t = echo.sub("", t, count=1)
    t = _FENCE.sub("", t)
    t = _RULE.sub("", t)
    t = _HEADING.sub("", t)
    t = _QUOTE.sub("", t)
    t = _STAR_BULLET.sub("\\1\u2022 ", t)
    t = _LINK.sub(r"\1", t)
    t = _CODE.sub(r"\1", t)
    t = _STRONG.sub(lambda m: m.group(2) if m.group(1) else m.group(4), t)
    t = _EMPH_STAR.sub(r"\1", t)
    t = _EMPH_UNDER.sub(r"\1", t)
    t = _LEFTOVER.sub("", t)
    t = "\n".join(line.rstrip(" \t") for line in t.split("\n"))  # a regex [ \t]+\n re-scanned each run
    t = re.sub(r"\n{3,}", "\n\n", t).strip()
    if len(t) >= 2 and t[0] == t[-1] == '"' and '"' not in t[1:-1]:
        t = t[1:-1].strip()
    return t or raw.strip() or raw


def clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n].rstrip() + " …"
