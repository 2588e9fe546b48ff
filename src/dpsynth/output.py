"""Records out: the synthetic output file (JSONL, CSV, Parquet, written atomically), a Hugging Face
``Dataset``, and the type the output gives its labels back in.

Separate from ``dpsynth.data`` (records in) because it reads nothing: it writes what a run released.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from dpsynth.errors import ConfigError, DataError
from dpsynth.io import atomic_write_bytes


# ---------------------------------------------------------------- writing
def write_table(rows: list[dict[str, Any]], path: str | Path, fmt: str) -> Path:
    """Write records atomically as jsonl, csv or parquet."""
    path = Path(path)
    df = pd.DataFrame(rows)
    if fmt == "jsonl":
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    elif fmt == "csv":
        data = df.to_csv(index=False).encode("utf-8")
    elif fmt == "parquet":
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        data = buf.getvalue()
    else:
        raise DataError(f"output_format: unknown format {fmt!r}; use jsonl, csv or parquet")
    atomic_write_bytes(path, data)
    return path


def to_hf_dataset(rows: list[dict[str, Any]], labels: dict[str, str] | None = None) -> Any:
    """The records as a ``datasets.Dataset``; with the declared ``labels``, integer labels 0..K-1 become a
    ``ClassLabel`` feature whose names are the label names (``ds.features["label"].int2str(1)``)."""
    import datasets

    ds = datasets.Dataset.from_list(rows)
    feature = class_label(labels, rows)
    if feature is not None and "label" in ds.column_names:
        features = ds.features.copy()
        features["label"] = feature
        ds = datasets.Dataset.from_list(rows, features=features)  # not cast_column: it draws a progress bar
    return ds


# ---------------------------------------------------------------- the type of the output's labels
# data.labels keys are strings (a YAML key 0 and a flag "0=negative" read the same); the output gives the
# label back in the input's type.  That type is learned only from public facts, never from the records: the
# declared label set, data.label_type, and a schema the input declares for the whole column (a Parquet
# schema, a Hugging Face feature, a DataFrame dtype).  CSV and JSON declare no schema: there, integer labels
# (every declared label is an integer, as in 0=negative,1=positive) come back as integers.
LabelType = Literal["int", "str"]


def is_integer_label(value: str) -> bool:
    """'0', '1', '-3' are integer labels; '01', '1.5', 'pos' are not (int() would not give them back)."""
    try:
        return str(int(value)) == value
    except ValueError:
        return False


def output_label_type(
    labels: dict[str, str], declared: str = "auto", source: Any = None, label_column: str = "label"
) -> LabelType:
    """The type of the output's label column: ``declared`` (data.label_type) unless 'auto'.

    auto: int when every declared label is an integer and the input does not declare the column as text
    (``declared_column_type``); else str."""
    integers = bool(labels) and all(is_integer_label(k) for k in labels)
    if declared == "int":
        if not integers:
            raise ConfigError(
                f"data.label_type: int needs integer labels, but data.labels declares {sorted(labels)}; use str or auto"
            )
        return "int"
    if declared == "str" or not integers:
        return "str"
    return "str" if declared_column_type(source, label_column) == "str" else "int"


def declared_column_type(source: Any, column: str) -> LabelType | None:
    """'int' or 'str' when ``source`` declares a type for ``column`` (Parquet schema, HF feature, DataFrame
    dtype: numbers count as int), None when it declares none (CSV, JSON, the embedded sets) or cannot tell.

    Reads the schema only, never a record: a Parquet file's footer, a saved dataset's features."""
    try:
        if isinstance(source, pd.DataFrame):
            return _dtype_kind(source[column].dtype) if column in source.columns else None
        if hasattr(source, "features") and hasattr(source, "column_names"):  # datasets.Dataset
            return _feature_kind(source.features.get(column))
        if not isinstance(source, (str, Path)) or str(source).startswith("embedded:"):
            return None
        path = Path(str(source)).expanduser()
        if path.is_dir():
            import datasets

            ds = datasets.load_from_disk(str(path))
            if hasattr(ds, "keys"):
                ds = ds["train"]
            return _feature_kind(ds.features.get(column))
        if path.suffix.lower() in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            schema = pq.read_schema(path)
            return _arrow_kind(schema.field(column).type) if column in schema.names else None
    except Exception:  # noqa: BLE001 - unreadable here: load_private reports it, one line
        return None
    return None


def _dtype_kind(dtype: Any) -> LabelType | None:
    if pd.api.types.is_bool_dtype(dtype):
        return None
    if pd.api.types.is_numeric_dtype(dtype):
        return "int"
    if isinstance(dtype, pd.StringDtype) and dtype.na_value is pd.NA:
        return "str"  # the "string" dtype, which pandas never infers: chosen by the user
    # object, and pandas 3's inferred "str": a type read off the values.  A single record with an int label
    # among text ones turns "str" into object, so taking it as a declaration let one record flip the type
    # of every output label: an un-noised statistic of the private records.  Numeric dtypes are safe: every
    # mix they can come from (all numbers, or numbers and text, which is object) gives "int" either way.
    return None


def _arrow_kind(t: Any) -> LabelType | None:
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return "int"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "str"
    return None


def _feature_kind(feature: Any) -> LabelType | None:
    import datasets

    if isinstance(feature, datasets.ClassLabel):
        return "int"
    if isinstance(feature, datasets.Value):
        dtype = str(feature.dtype)
        if dtype.startswith(("int", "uint", "float")):
            return "int"
        if dtype in ("string", "large_string"):
            return "str"
    return None


def typed_labels(rows: list[dict[str, Any]], label_type: LabelType | None) -> list[dict[str, Any]]:
    """``rows`` with their ``label`` as an int when ``label_type`` is 'int' (new dicts; others as they are)."""
    if label_type != "int":
        return rows
    return [{**r, "label": int(r["label"])} if isinstance(r.get("label"), str) else r for r in rows]


def class_label(labels: dict[str, str] | None, rows: list[dict[str, Any]]) -> Any:
    """A ``datasets.ClassLabel`` for integer labels 0..K-1 (names from ``labels``), else None."""
    if not labels or not rows or not all(isinstance(r.get("label"), int) for r in rows):
        return None
    if set(labels) != {str(i) for i in range(len(labels))}:
        return None
    import datasets

    return datasets.ClassLabel(names=[labels[str(i)] for i in range(len(labels))])
