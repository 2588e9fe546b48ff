"""The report's repetition section: how often synthetic records begin alike, repeat a name, or repeat exactly.

Why it is on the page: once a set's labels are mostly right, what separates a useful set from a weak one in
our benchmarks is its variety (docs/quality.md, "Where does WASP's set lose?"), and the commonest failure is
invisible in five random samples per class: a generator that returns to one invented film or one opening
("Rise and Roll is a ...") in one record out of fifteen.  Real texts of a task seldom share their first five
words, so the counts below read without a reference set, and they read only the synthetic records.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from dpsynth.report.markup import esc, fmt, table
from dpsynth.report.text import clean_for_display

OPENING_WORDS = 5
# one opening or one name in at least this share of a class's records (and in at least MIN_RECORDS of them)
# is called out in a warning box: 5% is several times what the commonest five-word opening or film title
# reaches in real IMDb reviews or in a zero-shot set of 1,000
WARN_SHARE = 0.05
MIN_RECORDS = 5
TOP = 10
# the first characters of a text are enough for its opening (after a prompt echo of up to ~100 characters is
# removed), and the name count reads no further than this either: a report of 100,000 records stays quick
_OPENING_CHARS = 1_000
_NAME_CHARS = 5_000

_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")
# two or more capitalised words, joined by spaces and at most two short lower-case connectors between each
# ("Rise and Roll", "The Lord of the Rings", "Emma Stone"); every piece is bounded, so the scan is linear
_NAME = re.compile(
    r"\b[A-Z][\w'\u2019-]{0,30}"
    r"(?:[ \t]+(?:(?:of|the|and|de|la|in|on|a|an|to)[ \t]+){0,2}[A-Z][\w'\u2019-]{0,30})+"
)


def opening(text: str, task: str | None = None, labels: Iterable[str] = ()) -> str:
    """The first ``OPENING_WORDS`` words of ``text``, lower-cased, once markdown and a prompt echo are gone."""
    shown = clean_for_display(text[:_OPENING_CHARS], task, labels)
    return " ".join(w.lower() for w in _WORD.findall(shown)[:OPENING_WORDS])


# "And I", "When I'm": the pronoun is capitalised everywhere, so a run is cut at it
_PRONOUN = re.compile(r"^I(?:['\u2019](?:m|ve|d|ll|s))?$")
_CONNECTOR = re.compile(r"^[a-z]")


def names(text: str) -> set[str]:
    """The capitalised names in ``text``, at least two capitalised words each ("The Matrix": a sentence's
    capitalised first word counts too), cut at the pronoun "I" ("And I" is no name)."""
    found = set()
    for m in _NAME.finditer(text[:_NAME_CHARS]):
        piece: list[str] = []
        for word in [*m.group(0).split(), "I"]:  # the sentinel closes the last piece
            if not _PRONOUN.match(word):
                piece.append(word)
                continue
            while piece and _CONNECTOR.match(piece[-1]):  # "Emma and I": no trailing "and"
                piece.pop()
            while piece and _CONNECTOR.match(piece[0]):  # "I and Star Wars": no leading "and"
                piece.pop(0)
            if sum(not _CONNECTOR.match(w) for w in piece) >= 2:
                found.add(" ".join(piece))
            piece = []
    return found


def _key(text: str) -> str:
    return " ".join(text.split()).lower()


def repetition_section(records: list[dict[str, Any]], labels: Mapping[str, str], task: str | None = None) -> str:
    """The section: per class, distinct openings, exact duplicates and the commonest opening and name; then the
    openings and names most repeated across the set; a warning box for any in at least ``WARN_SHARE`` of a
    class."""
    parts = ['<section id="repetition"><h2>Repetition</h2>']
    texts: dict[str, list[str]] = {}
    for r in records:
        text = str(r.get("text", "")).strip()
        if text:
            texts.setdefault(str(r.get("label", "")), []).append(text)
    if not texts:
        parts.append('<p class="note">No synthetic text to read.</p></section>')
        return "".join(parts)
    parts.append(
        f'<p class="note">How varied the synthetic set is, read from its records alone. An opening is a record\'s '
        f"first {OPENING_WORDS} words (lower-cased, after the cleaning the samples below get); a name is a run "
        "of capitalised words, counted once per record. Real texts of a task seldom share their first words "
        "or keep returning to one name (in 1,000 real IMDb reviews, 98% or more of each class's openings are "
        "distinct and no name is in more than 2% of the reviews); a set that does was written from few ideas, "
        "and a classifier trained on it sees less of the task than its record count suggests.</p>"
    )
    label_names = list(labels.values())
    rows: list[list[Any]] = []
    top_openings: list[tuple[int, str, str, int]] = []
    top_names: Counter[str] = Counter()
    warnings: list[str] = []
    for k in sorted(texts):
        class_texts = texts[k]
        n = len(class_texts)
        name = labels.get(k, k) if k else "all records"
        opens = Counter(opening(t, task, label_names) for t in class_texts)
        opens.pop("", None)
        found: Counter[str] = Counter()
        for t in class_texts:
            found.update(names(t))
        top_names.update(found)
        duplicates = n - len({_key(t) for t in class_texts})
        first_open, open_count = opens.most_common(1)[0] if opens else ("", 0)
        first_name, name_count = found.most_common(1)[0] if found else ("", 0)
        rows.append(
            [
                name,
                n,
                f"{fmt(len(opens))} ({len(opens) / n:.0%})",
                duplicates,
                f"“{first_open}” ({fmt(open_count)})" if open_count > 1 else "none repeated",
                f"{first_name} ({fmt(name_count)})" if name_count > 1 else "none repeated",
            ]
        )
        top_openings += [(c, o, name, n) for o, c in opens.items() if c > 1]
        for what, text_, count in (("begin “{}”", first_open, open_count), ("name {}", first_name, name_count)):
            if count >= MIN_RECORDS and count >= WARN_SHARE * n:
                warnings.append(
                    f"{fmt(count)} of the {fmt(n)} records of class {name} ({count / n:.0%}) "
                    + what.format(text_)
                    + "."
                )
    if warnings:
        parts.append(
            '<p class="warn">'
            + esc(" ".join(warnings))
            + esc(
                " A set this repetitive may train a classifier on one story told many times; compare it with a "
                "zero-shot set (`dpsynth evaluate --reference-zero-shot`) before releasing it."
            )
            + "</p>"
        )
    headers = ["class", "records", "distinct openings", "exact duplicates", "commonest opening", "commonest name"]
    parts.append(table(headers, rows))
    top_openings.sort(key=lambda x: (-x[0], x[2], x[1]))
    if top_openings:
        parts.append("<h3>Most repeated openings</h3>")
        parts.append(
            table(
                ["opening", "class", "records", "share of class"],
                [[f"“{o}”", cls, c, f"{c / n:.1%}"] for c, o, cls, n in top_openings[:TOP]],
            )
        )
    repeated_names = [(nm, c) for nm, c in top_names.most_common() if c > 1][:TOP]
    if repeated_names:
        total = sum(len(v) for v in texts.values())
        parts.append("<h3>Most repeated names</h3>")
        parts.append(
            table(["name", "records", "share of the set"], [[nm, c, f"{c / total:.1%}"] for nm, c in repeated_names])
        )
    parts.append("</section>")
    return "".join(parts)
