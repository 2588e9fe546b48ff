"""The private-data handle of the text methods: load, validate, embed, encode; never printed.

``load_private`` reads and validates the labelled private records and returns a ``PrivateData``.  The
handle keeps the records in underscore attributes that only this module reads; a method asks it for
what its mechanism needs and never sees a raw record:

- ``embed(embedder)``: the records' embeddings and labels, for the vote (``privacy/voting.py``);
- ``encode(fn)``: ``fn(texts, labels)`` applied here, e.g. dp-finetune's tokenization for DP-SGD;
- ``noisy_label_counts`` / ``noisy_total``: counts that exist only until the Gaussian noise is added.

``tests/test_privacy_boundary.py`` checks, from the source, that no module outside ``dpsynth/privacy``
reads the handle's attributes or imports the loader (docs/privacy.md, "Who reads private records").

Error messages name the file, column and row number, never a record's text or label value, because
error messages end up in logs and bug reports.
"""

from __future__ import annotations

import hashlib
import html
import os
import sys
import unicodedata
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from dpsynth.data import (
    columns_text,
    embedded_dataset,
    is_number,
    norm_label,
    read_table,
    require_columns,
    where_records,
)
from dpsynth.datasets import medmcqa_private
from dpsynth.errors import DataError
from dpsynth.knowledgesg.protocol import format_record
from dpsynth.privacy import mechanisms

if TYPE_CHECKING:
    from dpsynth.config import Config
    from dpsynth.embeddings import Embedder

T = TypeVar("T")

# The file formats' own per-record checks (dpsynth.data, dpsynth.csv_text): one record that fails them
# refuses a whole file, so the domain names them too.
# Checked for every source, file or in memory (a DataFrame, a Dataset): a cell a record alone holds decides it.
CELL_DOMAIN = (
    "in every record, each column read holds a single value or none (not a list, an object, bytes that are "
    "not text in data.encoding, or text with a lone surrogate such as a JSON \\ud800 escape), whatever the format"
)
JSON_DOMAIN = (
    "every JSON/JSONL record is valid JSON and one object (a .json file: a list of objects or a mapping of "
    "columns of one length) that gives no key twice and holds no numeral too long for Python to read (over "
    "4,300 digits by default) and no values nested deeper than Python reads"
)
FILE_DOMAIN = (
    "every record of a file decodes in data.encoding (UTF-8 by default)",
    "no CSV/TSV record has more non-empty fields than the header names columns",
    JSON_DOMAIN,
    CELL_DOMAIN,
)
# The input domain of the text methods: checks that refuse the whole input (privacy.json
# lists them; the guarantee is stated over datasets whose records pass them).
PRIVATE_TEXT_DOMAIN = (
    "the private set holds at least one record",
    "every record has a non-empty text (data.text_column); missing values count as empty",
    "every record's label (data.label_column) is one of the declared data.labels",
    *FILE_DOMAIN,
)


class PrivateData:
    """Validated private records.  Lives only in memory; its repr, str and format show only the count."""

    __slots__ = ("_texts", "_labels")

    def __init__(self, texts: Sequence[str], labels: Sequence[str]) -> None:
        self._texts: tuple[str, ...] = tuple(texts)
        self._labels: tuple[str, ...] = tuple(labels)  # label values as declared in config.data.labels

    def __len__(self) -> int:
        return len(self._texts)

    def __repr__(self) -> str:  # never print private text, not even by accident
        return f"PrivateData(<{len(self._texts)} records>)"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def embed(self, embedder: Embedder) -> tuple[np.ndarray, np.ndarray]:
        """The records' embeddings (kept in memory only, never cached) and their labels, for the vote.

        Each record is embedded on its own.  A batched encode pads a batch to its longest text and sorts
        texts by length, so adding or removing one record changed how the others were batched, and their
        embeddings moved in the last bits (1e-7): enough to flip a near-tie in another record's Top-Q vote,
        against the sensitivity argument's premise that each record's vote is a function of that record
        alone.  Alone, a record's embedding is.  It costs about 1.5x the batched time on a CPU.
        """
        rows = [embedder.encode([t]) for t in self._texts]
        emb = np.concatenate(rows, axis=0) if rows else embedder.encode([])
        return emb, np.asarray(self._labels)

    def encode(self, fn: Callable[[tuple[str, ...], tuple[str, ...]], T]) -> T:
        """``fn(texts, labels)``: a method's encoding of the records (e.g. token tensors for DP-SGD)."""
        return fn(self._texts, self._labels)

    def noisy_label_counts(self, labels: Sequence[str], sigma: float, grid_bits: int = 0) -> np.ndarray:
        """The number of records of each label in ``labels``, plus N(0, sigma^2) each: the exact discrete
        Gaussian on the grid 2^-grid_bits, or (``grid_bits`` 0) the float one."""
        raw = np.array([sum(1 for v in self._labels if v == k) for k in labels], dtype=np.float64)
        return mechanisms.add_noise(raw, sigma, grid_bits)  # the pre-noise counts are never written or returned

    def noisy_total(self, sigma: float, grid_bits: int = 0) -> np.ndarray:
        """The number of records plus N(0, sigma^2) (as ``noisy_label_counts``), as a 1-element array."""
        return mechanisms.add_noise(np.array([float(len(self._texts))]), sigma, grid_bits)


def load_private(
    source: str | Path | Any,
    text_column: str,
    label_column: str,
    labels: dict[str, str],
    encoding: str = "utf-8",
    *,
    m_private: int = 100,
    seed: int = 0,
) -> PrivateData:
    """Load and validate the private records.  Only the data owner sees these errors."""
    embedded = embedded_dataset(source)
    if embedded is not None:
        df = embedded.private(m_private, seed)
        text_column, label_column, where = "text", "label", embedded.source
    else:
        # a label declared as "None" is data; only the two columns read must hold text
        df = read_table(source, encoding, keep={label_column: labels}, columns={text_column, label_column})
        where = str(source) if isinstance(source, (str, Path)) else "dataset"
    if len(df) == 0:
        raise DataError(f"{where}: holds no records; add at least two records per label")
    require_columns(df, where, {"data.text_column": text_column, "data.label_column": label_column})
    texts = [str(t) for t in df[text_column].tolist()]
    values = [norm_label(v) for v in df[label_column].tolist()]
    empty = [i for i, t in enumerate(texts) if not t.strip() or t == "nan"]
    if empty:
        raise DataError(
            f"{where}: {len(empty)} record(s) have an empty {text_column!r} "
            f"({where_records(source, empty, encoding)}); remove or fill them"
        )
    if all(is_number(t) for t in texts):
        # An id or score column named as the text.  A note, not a stop: whether every text is a number can
        # hinge on one record, and the run's existence must not (a domain check is per record).
        notify_owner(
            f"{where}: every {text_column!r} is a number, not text; if that is not the text column, name the "
            f"right one with data.text_column (--text-column), after stopping the run (Ctrl-C) if one has "
            f"started; {columns_text(df)}"
        )
    blank = [i for i, v in enumerate(values) if v == "" and "" not in labels]
    if blank:
        raise DataError(
            f"{where}: {len(blank)} record(s) have an empty {label_column!r} "
            f"({where_records(source, blank, encoding)}); fill or remove them"
        )
    unknown = [i for i, v in enumerate(values) if v not in labels]
    if unknown:
        raise DataError(
            f"{where}: {len(unknown)} record(s) have a {label_column!r} not in data.labels "
            f"{sorted(labels)} ({where_records(source, unknown, encoding)}); fix the rows or declare the label"
        )
    counts = Counter(values)
    small = [lab for lab in labels if counts.get(lab, 0) < 2]
    if small:
        # Not an error: aborting here would make the run's existence depend on one record (a class
        # with no or one record simply receives few votes).  Console only, never logged.
        notify_owner(
            f"{where}: label(s) {small} have fewer than 2 private records; the run goes on, but their share "
            "of the output rests on noise"
        )
    return PrivateData(texts, values)


def load_run_private(config: Config, source: Any = None) -> PrivateData:
    """The labelled private records a run's ``data`` section names (``source``: records passed in memory,
    overriding data.private), validated, with the console note when privacy.delta is large for their count.

    One place for the prompting methods and dp-finetune, so both read and check their input alike."""
    d = config.data
    assert d.labels is not None
    records = load_private(
        source if source is not None else d.private,
        d.text_column,
        d.label_column,
        d.labels,
        d.encoding,
        m_private=d.n_private,
        seed=d.seed,
    )
    warn_if_delta_large(config.privacy.delta, len(records))
    return records


def load_qa_pairs(
    source: Any, qcol: str, acol: str, encoding: str, where: str, label: str, *, m_private: int, seed: int
) -> Any:
    """KnowledgeSG's private instruction/response pairs as a (text, label) table for DP fine-tuning, which
    dp-finetune's ``load_private`` reads; checks columns and empty cells.  ``source`` None: ``m_private``
    pairs drawn with ``seed`` from the embedded MedMCQA pool."""
    import pandas as pd

    df = read_table(medmcqa_private(m_private, seed) if source is None else source, encoding, columns={qcol, acol})
    if len(df) == 0:
        raise DataError(f"{where}: holds no records")
    require_columns(df, where, {"knowledgesg.instruction_column": qcol, "knowledgesg.response_column": acol})
    q = [str(x) for x in df[qcol].tolist()]
    a = [str(x) for x in df[acol].tolist()]
    empty = [i for i in range(len(q)) if not q[i].strip() or not a[i].strip()]
    if empty:
        raise DataError(
            f"{where}: {len(empty)} record(s) have an empty {qcol!r} or {acol!r} "
            f"({where_records(source, empty, encoding)}); remove or fill them"
        )
    return pd.DataFrame({"text": [format_record(x, y) for x, y in zip(q, a, strict=True)], "label": label})


def notify_owner(message: str) -> None:
    """A message about the private data for the data owner's console only: never logged or written.

    Checks that depend on the private records (class sizes, delta against the number of records) must
    not stop a run, or the output's existence would reveal their outcome; they are shown here instead.
    """
    print("note: " + " ".join(message.split()), file=sys.stderr, flush=True)


def warn_if_delta_large(delta: float, m: int) -> None:
    """delta >= 1/M allows a mechanism that publishes one whole record; say so, but do not stop.

    The check reads M, which is private under add/remove adjacency, so it must not decide whether the
    run goes on.  The (epsilon, delta) statement stays true for any delta; it is just weak.
    """
    if delta >= 1.0 / m:
        notify_owner(
            f"privacy.delta = {delta:g} is not below 1/M for this private set: a guarantee that weak allows "
            "publishing a record; use a smaller delta (e.g. 1e-5)"
        )


def is_private_source(candidate: Any, private: Any) -> bool:
    """Is ``candidate`` (a path given as real test data) a run's private data ``private`` (its
    ``data.private``): the same file or folder, or a file with the same bytes (a copy)?

    ``dpsynth evaluate --test`` must not score against the private records: accuracy, FID and label
    consistency on them are exact, un-noised statistics of the records, and they would go into
    ``evaluation.json`` and the report, which the privacy guarantee does not cover.  Only the files'
    identity and bytes are compared (a hash, nothing parsed, nothing shown); a relative ``private`` is
    read from the working directory, as the run read it.  A test file that holds the private records in
    another form is caught once read, by their ``private_text_keys``."""
    if not isinstance(candidate, (str, os.PathLike)) or not isinstance(private, (str, os.PathLike)):
        return False
    try:
        test, source = Path(candidate).expanduser(), Path(private).expanduser()
        if not test.exists() or not source.exists():
            return False
        if os.path.samefile(test, source):
            return True
        return (
            test.is_file()
            and source.is_file()
            and test.stat().st_size == source.stat().st_size
            and _digest(test) == _digest(source)
        )
    except (OSError, RuntimeError):  # unreadable, or ~user unknown: the loaders say why, with the name
        return False


def text_key(text: Any) -> str:
    """A text as the private-copy check compares it: Unicode NFKC, HTML entities decoded, invisible format
    characters (zero-width spaces, BOM) dropped, case folded, white space collapsed, hashed (the set of keys
    kept in memory is no copy of the texts)."""
    t = unicodedata.normalize("NFKC", html.unescape(str(text)))
    t = "".join(c for c in t if unicodedata.category(c) != "Cf")
    return hashlib.sha256(" ".join(t.casefold().split()).encode("utf-8")).hexdigest()


def private_text_keys(data: Mapping[str, Any]) -> frozenset[str] | None:
    """The ``text_key`` of every text of a run's private records, from its config's ``data`` section
    (``private``, ``text_column``, ``encoding``; for an embedded dataset its draw, ``n_private`` and
    ``seed``).  None when they cannot be read here (a path on another machine or moved, an in-memory source,
    an embedded set this version does not have): a best effort, and the caller says it was skipped.

    Why: ``is_private_source`` compares bytes, so the private file saved again in another format, order,
    column layout or case passes it, and scores against it would be exact statistics of the private records.
    Only keys leave this function, for ``dpsynth evaluate`` to count; no text, no row, nothing written."""
    private = data.get("private")
    if not isinstance(private, (str, os.PathLike)):
        return None
    try:
        embedded = embedded_dataset(private)
        if embedded is not None:
            n, seed = data.get("n_private", data.get("m_private")), data.get("seed", 0)
            if isinstance(n, bool) or not isinstance(n, int) or not isinstance(seed, int):
                return None
            column = embedded.private(n, seed)["text"]
        else:
            path = Path(private).expanduser()
            if not path.exists():
                return None
            text_column = str(data.get("text_column") or "text")
            column = read_table(path, str(data.get("encoding") or "utf-8"), columns={text_column})[text_column]
    except (DataError, OSError, KeyError, ValueError, RuntimeError):
        return None
    return frozenset(text_key(t) for t in column.tolist() if str(t).strip())


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
