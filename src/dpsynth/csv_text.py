"""A CSV/TSV file's lines, checked before and beside pandas: the header row and each record's fields.

pandas reads what it can and guesses the rest, and two of its guesses let one record change how every
other record is read: a first record with one field more than the header turns the first column into the
row index (every record shifts one column left), and a header that is in fact a record is taken as the
column names.  A DP guarantee needs each record's encoding to depend on that record alone, so these
checks refuse such input, record by record, in messages that name lines and columns, never a value.
"""

from __future__ import annotations

import contextlib
import csv
import io
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from dpsynth.errors import DataError

LINE_BREAK = re.compile(r"\r\n|\r|\n")
HEADER_NAME_CHARS = 64  # a column name longer than this, or with more spaces than the limit below, reads
HEADER_NAME_SPACES = {True: 3, False: 7}  # like a sentence (strict: for messages; else: for refusing a file)


def check_csv_lines(text: str, sep: str, path: Path) -> None:
    """Refuse a header that names a column twice, and a record with more non-empty fields than the header
    names (one line: file, line, counts).  Empty trailing fields (``a,b,`` from a spreadsheet export) are
    dropped as pandas drops them; a record with fewer fields has missing values, which every reader
    handles per record."""
    # pandas ends lines at LF, CR and CRLF only; str.splitlines() would also split at form feeds, U+2028 and
    # the like inside a record, and the fields counted here would not be the ones pandas reads
    lines = LINE_BREAK.split(text)
    first = next((i for i, line in enumerate(lines) if line.strip()), 0)
    reader = csv.reader(io.StringIO("\n".join(lines[first:])), delimiter=sep)
    with unlimited_fields():
        _check_fields(reader, sep, path, first)


@contextlib.contextmanager
def unlimited_fields() -> Iterator[None]:
    """Lift the csv module's field size limit (131,072 characters, not pandas' limit) while reading: beyond
    it the module raises, and a check that gave up there would let pandas read the file unchecked."""
    limit = csv.field_size_limit()
    csv.field_size_limit(sys.maxsize)
    try:
        yield
    finally:
        csv.field_size_limit(limit)


def _check_fields(reader: Any, sep: str, path: Path, first: int) -> None:
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise _unparsable(path, first + reader.line_num, exc) from None
    seen: dict[str, int] = {}
    for i, name in enumerate(header):
        if name and name in seen:
            # by position, not by name: in a file without a header row the "header" is a private record, and
            # two equal cells of it must not reach an error message
            raise DataError(
                f"{path}: the name of column {seen[name] + 1} appears more than once in the header (line "
                f"{first + 1}, again as column {i + 1}); rename or remove the repeated column"
            )
        seen[name] = i
    width = len(header)
    try:
        end = reader.line_num
        for fields in reader:
            start, end = end + 1, reader.line_num  # a quoted value may hold line breaks: a record spans lines
            if len(fields) > width and any(f.strip() for f in fields[width:]):
                where = f"line {first + end}" if start == end else f"lines {first + start}-{first + end}"
                # a quote left open runs the record on into the next line, whose fields it then appears to have
                spans = f" (is a quote opened on line {first + start} not closed?)" if start != end else ""
                raise DataError(
                    f"{path}: the record on {where} has {len(fields)} fields, the header names {width} columns"
                    f"{spans}; quote a value that holds {'a tab' if sep == chr(9) else 'a comma'}, or fix that "
                    "line (its values cannot be matched to the columns)"
                )
    except csv.Error as exc:  # never read past: pandas could read that line some other way, unchecked
        raise _unparsable(path, first + reader.line_num, exc) from None


def _unparsable(path: Path, line: int, exc: csv.Error) -> DataError:
    """A line the field check cannot split (the csv module's reason names no value)."""
    return DataError(
        f"{path}: line {line} cannot be split into fields ({exc}); check its quoting (a value that holds a "
        "quote must be quoted, with the quote doubled)"
    )


def header_problem(names: Sequence[Any], df: pd.DataFrame | None = None, strict: bool = True) -> str | None:
    """Why ``names`` (a CSV's column names) look like a record rather than a header, or None.

    Why this exists: a CSV without a header row is read with its first record as the column names, and
    those names then appear in error messages (and, for PEARL, in the published output and schema), so
    the record would leak.  The tests never repeat a name: a name that is a number (two or more numbered
    names that are the positions 0..k-1 or 1..k, what pandas writes for unnamed columns, are a header,
    beside named ones such as a label), a name that reads like a sentence, or names that are values of
    their own columns in other records (``df``).  ``strict`` (an error message, where a false alarm only
    hides the names) counts one such name in any record and a sentence from 4 spaces.  Otherwise (refusing
    a file, which the privacy report lists as a per-record check) one record must hold two of the names in
    their own columns, and a sentence takes 8 spaces: a column "smoker" of smoker/non-smoker or a survey
    question is a header.  A first record made only of short, distinct words cannot be told from a header
    (docs/privacy.md).
    """
    texts = [str(n).strip() for n in names]
    numbers = sorted(int(t) for t in texts if t.isdigit())
    positions = len(numbers) > 1 and numbers in ([*range(len(numbers))], [*range(1, len(numbers) + 1)])
    if not positions and any(is_number(t) for t in texts):
        return "a column name is a number"
    if any(len(t) > HEADER_NAME_CHARS or t.count(" ") > HEADER_NAME_SPACES[strict] for t in texts):
        return "a column name reads like text"
    if df is None or positions or not len(df):
        return None
    own = "column names are also values of their own columns"
    if strict:
        for name, col in zip(texts, df.columns, strict=False):  # stops at the first one (wide tables)
            if name and (df[col].astype(str).str.strip() == name).any():
                return own
        return None
    # per record: how many of its cells equal their column's name; two different records that each match
    # one name do not refuse the file (else one record could decide whether a run happens at all)
    hits = pd.Series(0, index=df.index)
    for name, col in zip(texts, df.columns, strict=False):
        if name:
            hits += (df[col].astype(str).str.strip() == name).astype(int)
    return own if bool((hits >= min(2, len(texts))).any()) else None


def is_number(text: str) -> bool:
    """``12``, ``-3.5``, ``1,000``, ``2e3`` (not ``nan`` or ``inf``, which are words here)."""
    t = text.strip().replace(",", "")
    try:
        float(t)
    except ValueError:
        return False
    return t.lower().lstrip("+-") not in ("nan", "inf", "infinity")
