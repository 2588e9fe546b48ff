"""One cell of a table as text: the rules that make a cell's text a function of that cell alone.

Readers (pandas, pyarrow, Hugging Face ``datasets``) type a whole column from all its values, so one record
can change how every other record of the column is written: a missing value or a 2.5 turns an integer
column into floats (30 reads ``30.0``), a list in one cell makes the column ``object``.  A DP guarantee
needs each record's encoding to depend on that record alone (PEARL reads the kind and the categories of a
column from these texts), so the cells are normalised here, one by one.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pandas as pd

from dpsynth.errors import DataError


def whole_float_as_int(v: Any) -> Any:
    """A float cell that holds a whole number, as the integer's text (``30.0`` -> ``"30"``); other values as
    they are.  Why: pandas and Hugging Face ``datasets`` give a whole column the float dtype when one record
    has a missing value or a 2.5, and every other record's 30 then read ``30.0``: one record would decide
    how all the others are written (and read as integer or float).  A cell's text must be its own."""
    if isinstance(v, (float, np.floating)) and math.isfinite(v) and float(v).is_integer() and abs(float(v)) < 2**53:
        return str(int(v))
    return v


def category_key(text: str) -> str:
    """The key a category is matched by: stripped, and a whole number written as a float (``1.0``, as CSV
    files and earlier versions spell it) read as the integer (``1``), so that a declared category, a
    released one and a record's value meet whichever way a format or version wrote the number."""
    s = text.strip()
    if s.endswith(".0") and s[:-2].lstrip("-").isdigit():
        return s[:-2]
    return s


_SURROGATE = re.compile("[\ud800-\udfff]")


def not_plain_text(v: Any) -> bool:
    """A cell ``text_values`` must look at: not text or a number, or text with a lone surrogate."""
    if isinstance(v, str):
        return not v.isascii() and _SURROGATE.search(v) is not None  # isascii: O(1), most texts stop there
    return isinstance(v, (bytes, bytearray, list, tuple, dict, set, np.ndarray))


def text_values(values: pd.Series, col: Any, where: str, strict: bool) -> list[Any]:
    """The cells of column ``col`` as text or numbers: bytes decoded as UTF-8, a lone surrogate replaced;
    with ``strict`` (a column the run reads) such a cell, a list or a mapping is a ``DataError`` naming the
    record's number, never its value."""
    out: list[Any] = []
    for i, v in enumerate(values):
        problem = None
        if isinstance(v, str) and not_plain_text(v):
            problem, v = "text that is not valid Unicode (a lone surrogate)", _SURROGATE.sub("\ufffd", v)
        if isinstance(v, (bytes, bytearray)):
            try:
                v = bytes(v).decode("utf-8")
            except UnicodeDecodeError:
                problem, v = "bytes that are not UTF-8 text", bytes(v).decode("utf-8", errors="replace")
        elif isinstance(v, (list, tuple, dict, set, np.ndarray)):
            problem = "a list or a mapping, not text"
        if problem and strict:
            raise DataError(
                f"{where}: column {str(col)!r} holds {problem} (record {i + 1}); give text or numbers in that column"
            )
        out.append(v)
    return out
