"""PEARL's private input: a table (CSV/JSONL/Parquet/DataFrame) or an array (.npy/.npz/ndarray).

``load_private_table`` reads the records, checks the few things that still refuse input (the ``DOMAIN_*``
lines, listed in privacy.json) and builds the schema from what is declared; the records are held by
a ``PrivateRecords`` handle that lives only in memory, only until the sketch is released.  Like the text
methods' ``PrivateData`` (``private_data.py``), the handle keeps the records in underscore attributes
that only this module reads, is never printed, and gives PEARL only what its releases need:

- ``release_counts``: the noisy number of records per class (``sketch.release_counts``);
- ``apply(fn)`` / ``encode(fn)``: ``fn(table, array)`` applied here, for the schema releases and the
  encoding into [0, 1]^D that the sketch reads.

The schema model and the console notes are PEARL's (``methods/pearl``), imported where they are used so
that this module can be imported first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from dpsynth.data import columns_text, header_problem, norm_label, read_table, table_suffix, where_records
from dpsynth.errors import ConfigError, DataError, DpsynthError
from dpsynth.privacy import sketch as sk
from dpsynth.privacy.private_data import CELL_DOMAIN, FILE_DOMAIN, notify_owner

if TYPE_CHECKING:
    from dpsynth.config import Config
    from dpsynth.methods.pearl.schema import Schema

T = TypeVar("T")

# The checks that still refuse input, in prepare (console only, before the run directory exists): the
# guarantee is stated over inputs that pass them (privacy.json "domain").  Everything else about a
# value is handled record by record (clipped, imputed, or encoded as no category: encode_table).
DOMAIN_NOT_EMPTY = "the private set holds at least one record"
DOMAIN_LABEL = "every record's label (data.label_column) is one of the declared data.labels"
DOMAIN_HEADER = (
    "the CSV's first line is a header, not a record: no column name is a number (unless the numbered names are "
    "the positions 0..k-1 or 1..k), reads like a sentence, and no two are values of their own columns"
)
DOMAIN_SAME_KEYS = "every record of the JSON/JSONL file has the same keys (its columns)"
DOMAIN_FINITE_ARRAY = "array input: every value of every record is finite (no NaN or infinity)"
_ARRAY_SUFFIXES = (".npy", ".npz")


class PrivateRecords:
    """The loaded private data.  Lives only in memory, only until the sketch is released; its repr, str
    and format show only the count."""

    __slots__ = ("_table", "_array", "_labels", "where")

    def __init__(self, labels: np.ndarray, where: str, *, table: Any = None, array: np.ndarray | None = None) -> None:
        self._table = table  # pandas DataFrame of strings (table mode)
        self._array = array  # (n, D) float64 (array mode)
        self._labels = labels  # class index per record
        self.where = where  # the source as the owner named it (a path or "dataset"), for console notes

    def __len__(self) -> int:
        return int(len(self._table) if self._table is not None else len(self._array if self._array is not None else []))

    def __repr__(self) -> str:  # never print private values
        return f"PrivateRecords(<{len(self)} records>)"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def release_counts(self, n_classes: int, *, noise_multiplier: float) -> np.ndarray:
        """The noisy number of records per class (``sketch.release_counts``)."""
        return sk.release_counts(self._labels, n_classes, noise_multiplier=noise_multiplier)

    def apply(self, fn: Callable[[Any, np.ndarray | None], T]) -> T:
        """``fn(table, array)`` (one of them None): a release drawn from the records, or console notes."""
        return fn(self._table, self._array)

    def encode(self, fn: Callable[[Any, np.ndarray | None], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """``fn(table, array)`` and the class index of each record: the encoded records the sketch reads."""
        return fn(self._table, self._array), self._labels


Loaded = tuple[PrivateRecords, "Schema", list[str]]  # the records, the declared schema, the domain checks


def is_array_source(source: Any) -> bool:
    if isinstance(source, (np.ndarray, Mapping)):
        return True
    if isinstance(source, (str, Path)):
        return Path(str(source)).suffix.lower() in _ARRAY_SUFFIXES
    return False


def load_private_table(source: Any, config: Config, spec: dict[str, Any], declared: list[str] | None) -> Loaded:
    """The private records, the schema as declared (``spec``: ``load_schema_spec``) and the domain checks."""
    where = str(source) if isinstance(source, (str, Path)) else "dataset"
    if is_array_source(source):
        return _load_array(source, config, spec, declared, where)
    return _load_table(source, config, spec, declared, where)


def _label_set(col: str, declared: list[str] | None, label_present: bool, where: str) -> tuple[str | None, list[str]]:
    """The label column and the public classes; [""] when unlabelled."""
    if label_present:
        if not declared:
            raise ConfigError(
                f"data.labels: the data has a label column {col!r}; declare the public label set, e.g. "
                "--labels '0,1,2' (dpsynth never reads it from private data: the set of labels observed is "
                "itself private)"
            )
        return col, list(declared)
    if declared:
        raise DataError(
            f"{where}: no label column {col!r} (data.label_column) although data.labels is declared; "
            "pass --label-column NAME or drop --labels for unlabelled data"
        )
    return None, [""]


def _class_index(
    values: list[Any], classes: list[str], where: str, what: str, fix: str, encoding: str = "utf-8"
) -> np.ndarray:
    """Each record's class index; a label outside the declared classes refuses the input (a domain check)."""
    index = {v: i for i, v in enumerate(classes)}
    yi = np.array([index.get(norm_label(v), -1) for v in values], dtype=np.int64)
    bad = np.flatnonzero(yi < 0)
    if bad.size:
        raise DataError(
            f"{where}: {bad.size} record(s) have {what} not in data.labels {sorted(classes)} "
            f"({where_records(where, bad, encoding)}); {fix} or declare the label"
        )
    return yi


def _load_table(source: Any, config: Config, spec: dict[str, Any], declared: list[str] | None, where: str) -> Loaded:
    from dpsynth.methods.pearl.encoding import value_notes
    from dpsynth.methods.pearl.schema import ColumnSpec, Schema

    # a declared label or category spelled like a missing-value marker ("None", "NA" for Namibia) is a value
    keep = {c: list(cs.categories) for c, cs in spec.get("columns", {}).items() if cs.categories}
    if declared and config.data.label_column:
        keep[config.data.label_column] = list(declared)
    df = read_table(source, config.data.encoding, keep=keep, same_keys=True)
    if len(df.columns) == 0 or len(df) == 0:
        raise DataError(f"{where}: has no records; it needs a header row and at least one record")
    cols = [str(c) for c in df.columns]
    df.columns = cols
    split = [sep for sep in (";", "|", "\t") if len(cols) == 1 and len(cols[0].split(sep)) > 1]
    if split and _has_header_row(source):  # a spreadsheet export with ';': one column named by the whole header
        raise DataError(
            f"{where}: was read as one column whose name holds {split[0]!r} separators; save it with commas as "
            ".csv (or tabs as .tsv)"
        )
    why = header_problem(cols, df, strict=False) if _has_header_row(source) else None
    if why is not None:  # the column names are published (output, schema.json): never a record's values
        raise DataError(
            f"{where}: its first line looks like a record, not a header ({why}); PEARL publishes the column names "
            "in its output and schema, so the file needs a header row of column names (rename a column whose name "
            "is a number or a sentence)"
        )
    label_col, classes = _label_set(config.data.label_column, declared, config.data.label_column in cols, where)
    declared_cols: dict[str, ColumnSpec] = spec.get("columns", {})
    missing = [c for c in declared_cols if c not in cols]
    if missing:
        raise DataError(
            f"{where}: no column {missing[0]!r} (pearl.data_schema.columns); {columns_text(df)}; fix the schema or "
            "the file"
        )
    features = [c for c in cols if c != label_col]
    if not features:
        raise DataError(f"{where}: has no feature column besides the label {label_col!r}")
    specs = [replace(declared_cols[c]) if c in declared_cols else ColumnSpec(c) for c in features]
    if label_col is not None:
        yi = _class_index(
            df[label_col].tolist(), classes, where, f"a {label_col!r}", "fix the rows", config.data.encoding
        )
    else:
        yi = np.zeros(len(df), dtype=np.int64)
    # values the declared schema does not cover are handled per record (encode_table); the owner
    # learns where on the console, before the run directory (and its log) exists
    for note in value_notes(df, [c for c in specs if c.complete()], where, config.data.encoding):
        notify_owner(note)
    private = PrivateRecords(yi, where, table=df[features].copy())
    domain = (
        [DOMAIN_NOT_EMPTY]
        + ([DOMAIN_HEADER] if _has_header_row(source) else [])
        + ([DOMAIN_LABEL] if label_col is not None else [])
        + (list(FILE_DOMAIN) if isinstance(source, (str, Path)) and not str(source).startswith("embedded:") else [])
        + ([CELL_DOMAIN] if not isinstance(source, (str, Path)) else [])  # a DataFrame's cells are checked too
    )
    if _is_json_records(source):
        domain.append(DOMAIN_SAME_KEYS)
    return private, Schema(specs, cols, label_col, classes), domain


def _has_header_row(source: Any) -> bool:
    """A CSV/TSV file, whose first line dpsynth takes as the column names (JSON keys, Parquet and HF schemas
    and a DataFrame's columns are names by construction)."""
    return _read_as(source, (".csv", ".tsv", ".txt"))


def _is_json_records(source: Any) -> bool:
    """A JSON or JSONL file, whose columns are its records' keys (``read_table(same_keys=True)``)."""
    return _read_as(source, (".json", ".jsonl", ".ndjson"))


def _read_as(source: Any, suffixes: tuple[str, ...]) -> bool:
    """``source`` is a file that ``read_table`` reads as one of ``suffixes``: by its last suffix, as it
    does (``sales.csv.parquet`` is Parquet), and not a folder (a saved HF dataset named ``data.csv``)."""
    if not isinstance(source, (str, Path)):
        return False
    return table_suffix(source) in suffixes and not Path(str(source)).expanduser().is_dir()


def _load_array(src: Any, config: Config, spec: dict[str, Any], declared: list[str] | None, where: str) -> Loaded:
    from dpsynth.methods.pearl.schema import ColumnSpec, Schema

    key, label_key = config.pearl.array_key, config.data.label_column
    y_raw = None
    try:
        if isinstance(src, np.ndarray):
            x = src
        elif isinstance(src, Mapping):
            if key not in src:
                raise DataError(f"dataset: no array {key!r} (pearl.array_key); it has {sorted(src)}")
            x = src[key]
            # a plain list declares no dtype: one inferred from the values would let one record (a 2.5 among
            # integers) decide the output's type and rounding, so it is read as float64, a public choice;
            # arrays and tensors keep the dtype they declare
            x = x if hasattr(x, "dtype") else np.asarray(x, dtype=np.float64)
            y_raw = src.get(label_key)
        else:
            p = Path(str(src)).expanduser()
            if not p.exists():
                raise DataError(f"{p}: file does not exist; check --private / data.private")
            if p.stat().st_size == 0:
                raise DataError(f"{p}: file is empty (0 bytes); save the array with numpy.save / savez")
            if p.suffix.lower() == ".npy":
                x = np.load(p, allow_pickle=False)
            else:
                with np.load(p, allow_pickle=False) as z:
                    if key not in z.files:
                        raise DataError(f"{p}: no array {key!r} (pearl.array_key); the file has {sorted(z.files)}")
                    x = z[key]
                    y_raw = z[label_key] if label_key in z.files else None
    except DpsynthError:
        raise
    except Exception as exc:  # noqa: BLE001 - numpy's load errors are long
        raise DataError(f"{where}: not a readable .npy/.npz array ({type(exc).__name__}); save it with numpy") from None
    x = np.asarray(x)
    if x.ndim < 2 or x.shape[0] == 0:
        raise DataError(f"{where}: needs an array of shape (records, ...) with at least one record")
    if x.dtype.kind not in "biuf":
        raise DataError(f"{where}: array dtype {x.dtype} is not numeric")
    flat = x.reshape(len(x), -1).astype(np.float64)
    if not np.isfinite(flat).all():
        raise DataError(f"{where}: the array holds NaN or infinite values; clean them first")
    label_col, classes = _label_set(label_key, declared, y_raw is not None, where)
    if y_raw is not None:
        y = np.asarray(y_raw).reshape(-1)
        if len(y) != len(x):
            raise DataError(f"{where}: {len(y)} labels for {len(x)} records")
        yi = _class_index(y.tolist(), classes, where, "a label", "fix them")
    else:
        yi = np.zeros(len(x), dtype=np.int64)
    cspec: ColumnSpec = spec.get("array") or ColumnSpec("array")
    cspec = replace(cspec, name="array", kind="integer" if x.dtype.kind in "biu" else "float")
    if (cspec.lo is None or cspec.hi is None) and x.dtype.kind in "bu" and x.dtype.itemsize == 1:
        # the dtype's own range is public (bool -> [0, 1], uint8 -> [0, 255]): nothing derived
        info_hi = 1.0 if x.dtype.kind == "b" else 255.0
        cspec.lo = 0.0 if cspec.lo is None else cspec.lo
        cspec.hi = info_hi if cspec.hi is None else cspec.hi
    private = PrivateRecords(yi, where, array=flat)
    domain = [DOMAIN_NOT_EMPTY, DOMAIN_FINITE_ARRAY] + ([DOMAIN_LABEL] if y_raw is not None else [])
    schema = Schema(
        [cspec], [], label_col, classes, array_shape=tuple(int(s) for s in x.shape[1:]), array_dtype=str(x.dtype)
    )
    return private, schema, domain
