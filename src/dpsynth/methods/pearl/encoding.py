"""PEARL's public transforms: a record <-> a vector in [0, 1]^D, by the schema, one record at a time.

Numeric columns are scaled to [0, 1] by their (declared or DP-derived) bounds, categorical columns
are one-hot blocks scaled by 1/sqrt(2), and ``decode`` maps the generator's vectors back to rows (or
an array) with the declared dtypes.  Nothing here is a release: the transforms are public.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dpsynth.cells import category_key
from dpsynth.data import where_records
from dpsynth.methods.pearl.schema import ColumnSpec, Schema, parse_numeric
from dpsynth.privacy import sketch as sk


@dataclass(frozen=True)
class Layout:
    """Where each column sits in the encoded vector in [0, 1]^D (numeric) / {0, 1/sqrt 2}^k (one-hot)."""

    dim: int
    numeric_idx: tuple[int, ...]
    cat_groups: tuple[tuple[int, int], ...]  # (start, size)
    n_classes: int

    def segments(self) -> list[tuple[int, int, bool]]:
        """Contiguous (start, end, is_numeric) runs of the encoded vector, in order."""
        groups = {start: size for start, size in self.cat_groups}
        out: list[tuple[int, int, bool]] = []
        pos = 0
        while pos < self.dim:
            if pos in groups:
                out.append((pos, pos + groups[pos], False))
                pos += groups[pos]
                continue
            end = pos
            while end < self.dim and end not in groups:
                end += 1
            out.append((pos, end, True))
            pos = end
        return out

    @classmethod
    def from_schema(cls, schema: Schema) -> Layout:
        if schema.is_array:
            d = int(np.prod(schema.array_shape or (1,)))
            return cls(d, tuple(range(d)), (), len(schema.classes))
        pos, num, groups = 0, [], []
        for c in schema.columns:
            if c.numeric:
                num.append(pos)
                pos += 1
            else:
                k = len(c.categories or [])
                groups.append((pos, k))
                pos += k
        return cls(pos, tuple(num), tuple(groups), len(schema.classes))


ONEHOT_SCALE = 1.0 / math.sqrt(2.0)  # two categories are at distance 1, like the ends of a numeric range


def scale01(v: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Clip to [lo, hi] (documented: out-of-bound values are clipped) and map to [0, 1]."""
    return (np.clip(v, lo, hi) - lo) / (hi - lo)


def encode_table(df: Any, schema: Schema, where: str = "dataset") -> np.ndarray:
    """Encode a table of strings by the schema, record by record; no value stops the run.

    Each record's encoding depends on that record only (a per-record map, so the sketch's
    sensitivity argument holds whatever the data holds), and no value is refused: a check that
    stopped the run would make the output's existence depend on one record.  Numeric values outside
    [min, max] are clipped; an empty, non-numeric or non-finite value in a numeric column is missing
    and encoded at the middle of the range (0.5, a public value); a value outside a column's
    categories (declared, or too rare to be released) is encoded as no category (all-zero).
    ``value_notes`` tells the data owner, on the console, where that happened.
    """
    layout = Layout.from_schema(schema)
    x = np.zeros((len(df), layout.dim), dtype=np.float64)
    pos = 0
    for c in schema.columns:
        col = df[c.name].astype(str).to_numpy()
        if c.numeric:
            v = parse_numeric(col)
            assert c.lo is not None and c.hi is not None
            x[:, pos] = np.where(np.isnan(v), MISSING_NUMERIC, scale01(np.nan_to_num(v), c.lo, c.hi))
            pos += 1
        else:
            idx = _category_index(col, c.categories or [])
            ok = idx >= 0
            x[np.flatnonzero(ok), pos + idx[ok]] = ONEHOT_SCALE
            pos += len(c.categories or [])
    return x


MISSING_NUMERIC = 0.5  # encoded value of a missing numeric entry: the middle of [min, max], public


def _category_index(col: np.ndarray, cats: Sequence[str]) -> np.ndarray:
    """Index of each value in ``cats`` (matched by ``cells.category_key``: 1.0 and 1 meet), -1 when it is
    not one of them."""
    index = {category_key(v): i for i, v in enumerate(cats)}
    return np.array([index.get(category_key(str(s)), -1) for s in col], dtype=np.int64)


def value_notes(df: Any, columns: Sequence[ColumnSpec], where: str, encoding: str = "utf-8") -> list[str]:
    """Console notes for the data owner: which rows of which column were imputed or left without a category.

    One line per column, naming the rows (they are the owner's own data), never a value.  For the
    console only (``privacy.private_data.notify_owner``): never logged or written, because the rows are private.
    """
    notes = []
    for c in columns:
        col = df[c.name].astype(str).to_numpy()
        if c.numeric:
            bad = np.flatnonzero(np.isnan(parse_numeric(col)))
            if bad.size:
                notes.append(
                    f"{where}: {bad.size} record(s) have an empty or non-numeric {c.name!r} in a numeric column "
                    f"({where_records(where, bad, encoding)}); they are treated as missing and encoded at the "
                    "middle of [min, max]. Fill them, or declare the column categorical in pearl.data_schema"
                )
            padded = np.flatnonzero([sk.zero_padded(str(s)) for s in col])
            if padded.size:
                notes.append(
                    f"{where}: {padded.size} record(s) write {c.name!r} with leading zeros "
                    f"({where_records(where, padded, encoding)}); a numeric column's output drops them. If it "
                    "holds codes (zip codes, IDs), declare it categorical in pearl.data_schema"
                )
        elif c.categories and "categories" not in c.derived:
            bad = np.flatnonzero(_category_index(col, c.categories) < 0)
            if bad.size:
                notes.append(
                    f"{where}: {bad.size} record(s) have a {c.name!r} value not in the declared categories "
                    f"({where_records(where, bad, encoding)}); they are encoded as no category of that column. Add the "
                    "category to pearl.data_schema or fix the rows"
                )
    return notes


INT_DIGITS = 4000  # below Python's int() limit on digits (sys.get_int_max_str_digits, 4,300 by default)


def typed_values(values: Sequence[str]) -> list[Any]:
    """Category strings as output values: ints when every category is an integer literal (dtype kept)."""
    if all(sk.value_kind(v) == 0 and len(v) <= INT_DIGITS and str(int(v)) == v for v in values):
        return [int(v) for v in values]
    return list(values)  # text, or an integer too long for int() (Python refuses over 4,300 digits): as written


def decode(enc: np.ndarray, y: np.ndarray, schema: Schema) -> tuple[list[dict[str, Any]], np.ndarray | None]:
    """Encoded synthetic records -> output rows (and the array for array data), dtypes as declared."""
    labels = typed_values(schema.classes) if schema.labelled else []
    if schema.is_array:
        c = schema.columns[0]
        assert c.lo is not None and c.hi is not None
        vals = c.lo + np.clip(enc, 0, 1) * (c.hi - c.lo)
        dtype = np.dtype(schema.array_dtype or "float64")
        if dtype.kind in "iub":
            vals = np.clip(np.rint(vals), c.lo, c.hi)
        arr = vals.astype(dtype).reshape((len(enc), *(schema.array_shape or ())))
        flat = arr.reshape(len(enc), -1)
        rows = []
        for i in range(len(enc)):
            r: dict[str, Any] = {f"px_{k}": flat[i, k].item() for k in range(flat.shape[1])}
            if schema.label_column is not None:
                r[schema.label_column] = labels[int(y[i])]
            rows.append(r)
        return rows, arr
    out_cols: dict[str, list[Any]] = {}
    pos = 0
    for c in schema.columns:
        if c.numeric:
            assert c.lo is not None and c.hi is not None
            v = c.lo + np.clip(enc[:, pos], 0, 1) * (c.hi - c.lo)
            if c.kind == "integer":
                lo_i, hi_i = math.ceil(c.lo), math.floor(c.hi)
                out_cols[c.name] = [int(t) for t in np.clip(np.rint(v), lo_i, max(lo_i, hi_i))]
            else:
                out_cols[c.name] = [float(f"{t:.6g}") for t in v]
            pos += 1
        else:
            k = len(c.categories or [])
            typed = typed_values(c.categories or [])
            out_cols[c.name] = [typed[int(j)] for j in np.argmax(enc[:, pos : pos + k], axis=1)]
            pos += k
    if schema.label_column is not None:
        out_cols[schema.label_column] = [labels[int(j)] for j in y]
    rows = [{name: out_cols[name][i] for name in schema.order} for i in range(len(enc))]
    return rows, None
