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
_TRAILING = re.compile(r"(?:['\u2019]s?|-)+$")  # "Travolta's", a closing quote in "'The Dark Knight'"
_ARTICLE = re.compile(r"^(?:the|a|an) ", re.I)
# a name of nothing but these words says nothing about the set ("The Movie", "Plot Summary", "Rated PG" stays)
_GENERIC = {"the", "a", "an", "this", "movie", "film", "review", "summary", "plot", "story"}


# a sentence's first word is capitalised whatever it is: "With Emma Stone" names Emma Stone
_LEADING = set(
    "after also although and as at because before but by dear during even for from he hello her here hi his how if "  # noqa: SIM905
    "in into it its meanwhile my now of on or our overall she since so still that their then there these they this "
    "those though to unlike we what when where which while who why with without yet you your".split()
)


def _caps(words: list[str]) -> int:
    return sum(not _CONNECTOR.match(w) for w in words)


def _split_and(words: list[str]) -> list[list[str]]:
    """Cut at "and" between two names of two capitalised words or more ("Emma Stone and Chris Hemsworth"),
    not inside one ("Rise and Roll", "Pride and Prejudice")."""
    parts: list[list[str]] = [[]]
    for w in words:
        if w == "and":
            parts.append([])
        else:
            parts[-1].append(w)
    out = [parts[0]]
    for p in parts[1:]:
        if _caps(out[-1]) >= 2 and _caps(p) >= 2:
            out.append(p)
        else:
            out[-1] = [*out[-1], "and", *p]
    return out


def _tidy(words: list[str]) -> str | None:
    """A name from a run of words: no connector at either end, a title written twice once, two capitalised
    words or more, and not only generic words."""
    while words and _CONNECTOR.match(words[-1]):
        words = words[:-1]
    while words and (_CONNECTOR.match(words[0]) or words[0].lower() in _LEADING):
        words = words[1:]
    half = len(words) // 2
    if len(words) % 2 == 0 and half and words[:half] == words[half:]:  # "The Night Circus The Night Circus"
        words = words[:half]
    if _caps(words) < 2 or all(w.lower() in _GENERIC for w in words if not _CONNECTOR.match(w)):
        return None
    return " ".join(words)


def names(text: str) -> set[str]:
    """The capitalised names in ``text``, at least two capitalised words each ("The Matrix": a sentence's
    capitalised first word counts too), as written there; ``name_key`` tells variants of one name apart
    from another name."""
    found: set[str] = set()

    def close(piece: list[str]) -> None:
        for part in _split_and(piece):
            name = _tidy(part)
            if name:
                found.add(name)

    for m in _NAME.finditer(text[:_NAME_CHARS]):
        piece: list[str] = []
        for raw in m.group(0).split():
            if _PRONOUN.match(raw):  # cut at "I": "And I" is no name
                close(piece)
                piece = []
                continue
            word = _TRAILING.sub("", raw)
            piece.append(word)
            if word != raw:  # a possessive or a closing quote ends the name: "John Travolta's Role" is not one
                close(piece)
                piece = []
        close(piece)
    return found


def name_key(name: str) -> str:
    """One key for the ways one name is written: "The Rise and Roll" and "Rise and Roll" are one name."""
    return _ARTICLE.sub("", name).lower()


def _key(text: str) -> str:
    return " ".join(text.split()).lower()


def _class_counts(texts: list[str], task: str | None, labels: list[str]) -> tuple[Counter[str], Counter[str]]:
    """Openings and names of one class: each opening's count, and each name's count of records (a name's
    commonest spelling stands for its variants)."""
    opens = Counter(opening(t, task, labels) for t in texts)
    opens.pop("", None)
    by_key: Counter[str] = Counter()
    spelled: dict[str, Counter[str]] = {}
    for t in texts:
        seen: dict[str, str] = {}
        for name in sorted(names(t)):
            seen.setdefault(name_key(name), name)
        for key, name in seen.items():
            by_key[key] += 1
            spelled.setdefault(key, Counter())[name] += 1
    # in key order, so that names of equal count are listed the same way in every run (a set's order is not)
    return opens, Counter({spelled[k].most_common(1)[0][0]: by_key[k] for k in sorted(by_key)})


def _warning(name: str, n: int, opens: Counter[str], found: Counter[str]) -> str:
    """The warning sentence of one class, or "": every opening and name in at least ``WARN_SHARE`` of it (three
    of each at most)."""

    def frequent(counts: Counter[str]) -> list[tuple[str, int]]:
        return [(x, c) for x, c in counts.most_common(3) if c >= MIN_RECORDS and c >= WARN_SHARE * n]

    said = [f"{fmt(c)} ({c / n:.0%}) begin “{o}”" for o, c in frequent(opens)]
    said += [f"{fmt(c)} ({c / n:.0%}) mention “{m}”" for m, c in frequent(found)]
    return f"Class {name} ({fmt(n)} records): {', '.join(said)}." if said else ""


def repetition_section(
    records: list[dict[str, Any]],
    labels: Mapping[str, str],
    task: str | None = None,
    test_stats: Mapping[str, Any] | None = None,
) -> str:
    """The section: per class, the commonest opening and name, distinct openings and exact duplicates; then
    the openings and names most repeated; a warning box for every one in at least ``WARN_SHARE`` of a class."""
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
        "of capitalised words (“The Rise and Roll” and “Rise and Roll” are one name), counted once per record. "
        "How much real text repeats depends on the task: in three draws of 1,000 real IMDb reviews, 98% to 99% "
        "of each class's openings are distinct and no name is in more than 3% of a class, while forum posts "
        "answering one thread share its subject line (in the embedded newsgroups test posts one opening is in "
        "up to 16% of a class). A synthetic set far more repetitive than the real texts of its task was "
        "written from few ideas, and a classifier trained on it sees less of the task than its record count "
        "suggests.</p>"
    )
    real = (test_stats or {}).get("distinct_openings")
    if isinstance(real, (int, float)) and not isinstance(real, bool):
        top = (test_stats or {}).get("commonest_opening_share")
        top_text = (
            f", the commonest opening in {top:.1%} of a class"
            if isinstance(top, (int, float)) and not isinstance(top, bool)
            else ""
        )
        parts.append(
            f"<p class=\"note\">This task's real texts, from the evaluation's test set: {real:.0%} of each "
            f"class's openings distinct on average{esc(top_text)} (counted on the raw text).</p>"
        )
    label_names = list(labels.values())
    rows: list[list[Any]] = []
    top_openings: list[tuple[int, str, str, int]] = []
    top_names: list[tuple[int, str, str, int]] = []
    warnings: list[str] = []
    for k in sorted(texts):
        class_texts = texts[k]
        n = len(class_texts)
        name = labels.get(k, k) if k else "all records"
        opens, found = _class_counts(class_texts, task, label_names)
        duplicates = n - len({_key(t) for t in class_texts})
        first_open, open_count = opens.most_common(1)[0] if opens else ("", 0)
        first_name, name_count = found.most_common(1)[0] if found else ("", 0)
        rows.append(
            [
                name,
                f"“{first_open}” ({fmt(open_count)}, {open_count / n:.1%})" if open_count > 1 else "none repeated",
                f"{first_name} ({fmt(name_count)}, {name_count / n:.1%})" if name_count > 1 else "none repeated",
                f"{fmt(len(opens))} ({len(opens) / n:.0%})",
                duplicates,
                n,
            ]
        )
        top_openings += [(c, o, name, n) for o, c in opens.items() if c > 1]
        top_names += [(c, m, name, n) for m, c in found.items() if c > 1]
        warnings.append(_warning(name, n, opens, found))
    if any(warnings):
        parts.append(
            '<p class="warn">'
            + esc(" ".join(filter(None, warnings)))
            + " Unless the real texts of the task repeat this much, a classifier trained on this set learns a few "
            "stories told many times; compare the set with a zero-shot one "
            "(<code>dpsynth evaluate RUN_DIR --reference-zero-shot ZERO_SHOT_SET</code>) before releasing it.</p>"
        )
    headers = ["class", "commonest opening", "commonest name", "distinct openings", "exact duplicates", "records"]
    parts.append(table(headers, rows))
    for title, what, found_ in (
        ("Most repeated openings", "opening", top_openings),
        ("Most repeated names", "name", top_names),
    ):
        found_.sort(key=lambda x: (-x[0] / x[3], x[2], x[1]))
        if found_:
            shown = [[f"“{x}”" if what == "opening" else x, cls, c, f"{c / n:.1%}"] for c, x, cls, n in found_[:TOP]]
            parts.append(f"<h3>{title}</h3>" + table([what, "class", "records", "share of class"], shown))
    parts.append("</section>")
    return "".join(parts)
