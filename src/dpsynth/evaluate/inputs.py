"""What ``evaluate`` reads: the synthetic and test texts with their labels, and their embeddings (cached)."""

from __future__ import annotations

import logging
import shlex
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpsynth.config_base import load_yaml
from dpsynth.data import (
    EmbeddedDataset,
    columns_text,
    embedded_dataset,
    embedded_names,
    missing_column_hint,
    norm_label,
    read_table,
)
from dpsynth.errors import ConfigError, DataError
from dpsynth.evaluate.embedding import (  # noqa: F401 - re-exported: callers import them from here
    default_embedder,
    embed_synthetic,
    embed_test,
    eval_cache_dir,
)
from dpsynth.privacy.private_data import is_private_source, notify_owner, private_text_keys, text_key
from dpsynth.run import RunDir

log = logging.getLogger("dpsynth")

_RUN_FORMATS = ("jsonl", "parquet", "csv")  # RunDir.output(format): synthetic.jsonl, ...


@dataclass
class LabelledTexts:
    texts: list[str]
    labels: list[str]
    source: str
    rounds: list[int] | None = None  # per-record generation round (run directories of WASP-like methods)
    generators: list[str] | None = None  # per-record generator name, where the records carry one
    run_dir: Path | None = None

    def __len__(self) -> int:
        return len(self.texts)


# ---------------------------------------------------------------- inputs
def read_run_config(run_dir: str | Path | None) -> dict[str, Any]:
    """A run directory's ``config.yaml`` as a dict; {} when there is none or it cannot be read.

    Evaluation and the report learn what a run used (its data source, task, private-set size) from
    this public file alone, never from the private data."""
    if run_dir is None:
        return {}
    path = RunDir(run_dir).config
    if not path.exists():
        return {}
    import yaml

    try:
        cfg = load_yaml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return cfg if isinstance(cfg, dict) else {}


def run_data_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The ``data`` section of a run's config ({} when absent or malformed)."""
    data = cfg.get("data")
    if not isinstance(data, dict):
        return {}
    if "n_private" not in data and "m_private" in data:  # a run's config.yaml from before the rename
        data = {**data, "n_private": data["m_private"]}
    return data


def used_embedded_dataset(cfg: dict[str, Any]) -> EmbeddedDataset | None:
    """The embedded dataset the run drew its private data from (``data.private: embedded:imdb`` or
    ``embedded:newsgroups``), None for any other source."""
    try:
        return embedded_dataset(run_data_config(cfg).get("private"))
    except DataError:  # an embedded name this version does not know
        return None


def other_task(cfg: dict[str, Any], embedded: EmbeddedDataset) -> str | None:
    """Why the records of a run that names ``embedded`` are about another task, or None.

    A zero-shot run reads no private data, so its ``data.private`` is the default (``embedded:imdb``)
    whatever it wrote about: the class names it declared tell (spam / ham is not IMDb, although both
    label 0 and 1).  Real IMDb reviews are then no reference for it, nor IMDb's test split a test set."""
    declared = run_data_config(cfg).get("labels")
    if cfg.get("method") != "zero-shot" or not isinstance(declared, dict):
        return None
    if _names(declared) == _names(embedded.labels):
        return None
    theirs = _names(embedded.labels)
    return f"this zero-shot run's labels {_names(declared)} are not those of {embedded.source} {theirs}"


def find_run_output(run_dir: Path) -> Path | None:
    """The synthetic output file of a run directory (the config's output_format first)."""
    formats = list(_RUN_FORMATS)
    fmt = read_run_config(run_dir).get("output_format")
    if isinstance(fmt, str) and fmt in formats:
        formats.remove(fmt)
        formats.insert(0, fmt)
    for f in formats:
        if RunDir(run_dir).output(f).exists():
            return RunDir(run_dir).output(f)
    return None


def load_synthetic(
    source: Any, text_column: str = "text", label_column: str = "label", encoding: str = "utf-8"
) -> LabelledTexts:
    """A run directory, a file (CSV/JSONL/JSON/Parquet/HF dataset folder), a DataFrame, a list of
    record dicts, or a ``SynthesisResult``.  ``encoding``: a CSV/JSONL file's (a run writes UTF-8)."""
    run_dir: Path | None = None
    if hasattr(source, "records") and hasattr(source, "run_dir"):  # SynthesisResult
        run_dir = Path(source.run_dir)
        frame_source: Any = source.to_pandas()
        where = str(run_dir)
    elif isinstance(source, list):
        import pandas as pd

        frame_source = pd.DataFrame.from_records(source)
        where = "synthetic records"
    elif isinstance(source, (str, Path)):
        path = Path(str(source)).expanduser()
        if not path.exists():
            raise DataError(f"--synthetic: {path} does not exist; give a run directory or a CSV/JSONL/Parquet file")
        if path.is_dir() and not (path / "dataset_info.json").exists() and not (path / "dataset_dict.json").exists():
            out = find_run_output(path)
            if out is None and RunDir(path).config.is_file():  # a run stopped before its output, as report says
                raise DataError(
                    f"--synthetic: {path}: the run is not finished; if it is no longer running, finish it with "
                    f"`dpsynth run --resume --out {shlex.quote(str(path))}`, then evaluate it"
                )
            stopped = RunDir(path).stopped_sample() if out is not None else None
            if stopped:
                raise DataError(f"--synthetic: {stopped}, then evaluate it")
            if out is None:
                raise DataError(
                    f"--synthetic: {path} is a folder without synthetic.jsonl/.csv/.parquet; give a finished "
                    "run directory or the synthetic file itself"
                )
            run_dir, frame_source = path, out
        else:
            frame_source = path
            # the output file of a run that a `dpsynth sample` left unfinished: its part, as for the folder
            if (
                path.is_file()
                and find_run_output(path.parent) == path
                and (stopped := RunDir(path.parent).stopped_sample())
            ):
                raise DataError(f"--synthetic: {stopped}, then evaluate it")
        where = str(frame_source)
    else:
        frame_source, where = source, "synthetic data"
    run_config = read_run_config(run_dir) if run_dir is not None else {}
    if run_config.get("method") == "pearl":  # "pass --text-column NAME" would send a table down the text path
        raise DataError(
            f"--synthetic: {run_dir} is a PEARL run, whose output is a table; `dpsynth evaluate` scores text sets. "
            "Train a classifier of your own on its columns and test it on real held-out rows (docs/pearl.md, "
            "Evaluation, shows how the benchmark does it)"
        )
    declared = (run_config.get("data") or {}).get("labels")
    keep = {label_column: [str(k) for k in declared]} if isinstance(declared, dict) else None
    # a label declared as "None" is a label, not a missing value
    df = read_table(
        frame_source, encoding, keep=keep, encoding_option="--synthetic-encoding", columns={text_column, label_column}
    )
    data = _labelled(df, text_column, label_column, where, "synthetic", ("--text-column", "--label-column"))
    data.run_dir = run_dir
    if "round" in df.columns:
        try:
            data.rounds = [int(float(r)) for r in df.loc[data_rows(df, text_column), "round"].tolist()]
        except ValueError:
            data.rounds = None
    if "generator" in df.columns:
        data.generators = [str(g) for g in df.loc[data_rows(df, text_column), "generator"].tolist()]
    return data


def data_rows(df: Any, text_column: str) -> Any:
    return df[text_column].astype(str).str.strip().ne("")


def refuse_private_data(source: Any, flag: str, syn: LabelledTexts, fix: str) -> None:
    """Refuse ``source`` (``--test``, ``--reference-zero-shot``) when it is the run's private data (the same
    file or folder, or a byte-identical copy: ``privacy.private_data.is_private_source``): scores with it
    are exact statistics of the private records, outside the privacy guarantee, and they would be
    written to evaluation.json and the report.  A synthetic set given as a file of a run directory is
    checked against that run's config.yaml.  ``fix``: what to give instead."""
    found = _run_config(syn)
    if found is None:
        return
    config, run_cfg = found
    if is_private_source(source, run_data_config(run_cfg).get("private")):
        raise ConfigError(
            f"{flag} {source}: this is the run's private data (data.private in {config}); "
            "scores with it are exact statistics of the private records, which the privacy guarantee does not "
            f"cover, and they would be written to evaluation.json and the report; {fix}"
        )


def private_keys(syn: LabelledTexts) -> tuple[Path, frozenset[str] | None] | None:
    """The run's config.yaml and the keys of its private texts (``privacy.private_data.private_text_keys``:
    None when they cannot be read here), read once for every real data set evaluate is given; None when
    ``syn`` is not a run's output (nothing to compare with)."""
    found = _run_config(syn)
    if found is None:
        return None
    config, cfg = found
    return config, private_text_keys(run_data_config(cfg))


def refuse_private_texts(texts: Sequence[str], flag: str, private: tuple[Path, frozenset[str] | None] | None) -> None:
    """Refuse real data that is the run's private records in another form (the private file saved as
    JSONL, reordered, other columns, other case: ``refuse_private_data`` compares bytes and cannot see it):
    half of its texts or more are private texts, or it holds half of the private texts or more.  Scores on
    it would be exact statistics of the private records, outside the guarantee.  A few shared texts (a held-
    out set and the private records can share a short or duplicated text) are a console note (never logged),
    counts only: removing them would make the test set depend on the private records."""
    if private is None:
        return
    config, keys = private
    if keys is None:
        log.warning(f"{flag}: not compared with the run's data.private (not readable here); be sure it is held out")
        return
    shared = sum(1 for t in texts if text_key(t) in keys)
    if shared == 0:
        return
    if 2 * shared >= min(len(texts), len(keys)):
        raise ConfigError(
            f"{flag}: {shared} of its {len(texts)} texts are texts of the run's private records (data.private in "
            f"{config}; compared ignoring case, white space and Unicode form): a copy of them. Scores on it are "
            "exact statistics of the private records, which the privacy guarantee does not cover, and they would "
            "be written to evaluation.json and the report; use real records held out before the run"
        )
    notify_owner(
        f"{flag}: {shared} of its {len(texts)} texts also occur among the run's private records (a text the source "
        "data itself repeats, a short text, or a private record in the held-out set). A test set split off before "
        "the run (an embedded dataset's test split is) needs nothing; if this one was not, do not report its scores"
    )


def _run_config(syn: LabelledTexts) -> tuple[Path, dict[str, Any]] | None:
    """The config.yaml of the run that released ``syn`` and its contents (None: not a run's output, or a
    run that read no private data, such as zero-shot: nothing to compare with)."""
    found = _find_run(syn)
    if found is None:
        return None
    config, cfg, _ = found
    if cfg is None or cfg.get("method") == "zero-shot":  # its data.private is the default, never read
        return None
    return config, cfg


_RUN_FILES = ("privacy.json", "ledger.json", "samples.journal.jsonl")  # written by every run, next to config.yaml


def _find_run(syn: LabelledTexts) -> tuple[Path, dict[str, Any] | None, str | None] | None:
    """(config.yaml, its contents, why they cannot be used) for a set that came out of a dpsynth run: a run
    directory, or a file in one.  None when it did not: no config.yaml beside the file, or someone else's
    (a folder without a run's files, whose config.yaml names no dpsynth method)."""
    if syn.run_dir is not None:
        folder = Path(syn.run_dir)
    elif Path(syn.source).expanduser().is_file():
        folder = Path(syn.source).expanduser().parent
    else:
        return None
    config = folder / "config.yaml"
    run_like = any((folder / name).exists() for name in _RUN_FILES)
    if not config.exists():
        return (config, None, f"{folder} is a run directory without its config.yaml") if run_like else None
    import yaml

    from dpsynth.methods.registry import METHODS

    try:
        cfg = load_yaml(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        return (config, None, f"{config} cannot be read ({type(exc).__name__})") if run_like else None
    known = isinstance(cfg, dict) and cfg.get("method") in METHODS
    if not (known or run_like):
        return None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("data"), dict):
        return config, None, f"{config} has no data section"
    return config, cfg, None


def refuse_unreadable_run_config(syn: LabelledTexts) -> None:
    """Refuse a synthetic set from a run directory whose config.yaml is missing or damaged.

    The checks that keep the run's private records out of ``--test`` and ``--reference-zero-shot`` read
    data.private from that file; without it they used to pass silently, and scores on the private records
    (exact statistics, outside the guarantee) were written to evaluation.json.  A folder without a run's
    files (privacy.json, ledger.json, the journal) is not a run directory and is not refused."""
    found = _find_run(syn)
    if found is None or found[2] is None:
        return
    raise ConfigError(
        f"--synthetic: {found[2]}, so evaluate cannot check that the real data it is given are not the run's "
        "private records (data.private); restore config.yaml (e.g. from a copy of the run directory), or, "
        "if the real data were held out before the run, evaluate a copy of the synthetic file outside it"
    )


# below this many distinct texts, a test set that shares texts with the synthetic set is not called synthetic
_MIN_TEXTS_TO_CALL_SYNTHETIC = 10


def refuse_synthetic_as_real(flag: str, source: Any, texts: Sequence[str], syn: LabelledTexts) -> None:
    """Refuse real data (``--test``) that is a synthetic set: the evaluated set itself (a classifier trained
    and tested on the same texts scored 0.97, reported as "tested on real held-out records"), or the
    output file of a dpsynth run.  Compared as distinct texts, so that a test set with a few repeated
    short texts that a synthetic set also holds is not refused."""
    keys = {text_key(t) for t in syn.texts}
    distinct = {text_key(t) for t in texts}
    shared = len(distinct & keys)
    if len(distinct) >= _MIN_TEXTS_TO_CALL_SYNTHETIC and 2 * shared >= len(distinct):
        raise ConfigError(
            f"{flag}: {shared} of its {len(distinct)} distinct texts are texts of the synthetic set being "
            "evaluated; scores on it say nothing about real data: give real records held out before the run"
        )
    if isinstance(source, (str, Path)) and _is_run_output(Path(str(source)).expanduser()):
        raise ConfigError(
            f"{flag}: {source} is the synthetic output of a dpsynth run, not real records; give real records "
            "held out before the run"
        )


def count_test_copies(syn: LabelledTexts, test_texts: Sequence[str]) -> int:
    """How many synthetic records are word for word texts of the test set, refused when they are half the
    synthetic set or more (a classifier trained on them is tested on what it was trained on).

    Fewer are a warning with the count, never silence: a generator that memorised public reviews of the
    test split makes every score optimistic by up to that share."""
    test_keys = {text_key(t) for t in test_texts}
    shared = sum(1 for t in syn.texts if text_key(t) in test_keys)
    if len(syn) >= _MIN_TEXTS_TO_CALL_SYNTHETIC and 2 * shared >= len(syn):
        raise DataError(
            f"--synthetic: {shared} of its {len(syn)} records are texts of the test set word for word; a "
            "classifier trained on them is tested on its own training records: evaluate against real records "
            "the generators cannot have seen (--test)"
        )
    return shared


def _is_run_output(path: Path) -> bool:
    folder = path if path.is_dir() else path.parent
    run_like = (folder / "config.yaml").is_file() and any((folder / name).exists() for name in _RUN_FILES)
    return run_like and (path.is_dir() or path.stem == "synthetic")


def refuse_non_zero_shot_reference(reference: LabelledTexts, syn: LabelledTexts) -> None:
    """``--reference-zero-shot`` is the set made without private data that the synthetic set is compared
    with: another method's run there (a WASP run was accepted and printed as "zero-shot synthetic set"), or
    the evaluated set itself (in any order), would make that comparison say nothing.  A file outside a run
    directory is taken at the user's word."""
    fix = "give a zero-shot run's directory or output (dpsynth run --method zero-shot with the same generators)"
    if {text_key(t) for t in reference.texts} == {text_key(t) for t in syn.texts}:
        raise ConfigError(f"--reference-zero-shot: names the synthetic set being evaluated; {fix}")
    found = _find_run(reference)
    if found is None:
        return
    config, cfg, problem = found
    if cfg is None:
        raise ConfigError(f"--reference-zero-shot: {problem}, so its method cannot be told; {fix}")
    if cfg.get("method") != "zero-shot":
        raise ConfigError(f"--reference-zero-shot: {config.parent} is a {cfg.get('method')} run, not zero-shot; {fix}")


def resolve_test(test: Any, syn: LabelledTexts, run_cfg: dict[str, Any]) -> tuple[Any, str | None]:
    """The test set to score against, and a note for the reader when it was not given.

    Scoring against the wrong real data still yields a plausible number (a medical CSV scored 0.49
    against IMDb reviews, with no warning), so a test set is required.  The one exception is a run
    directory whose config.yaml shows it ran on an embedded dataset (``embedded:imdb``,
    ``embedded:newsgroups``): its fixed test split is then the
    only right test set, and the note says it was chosen.  A ``test`` that is the run's private data is
    refused (``refuse_private_data``)."""
    if test is not None:
        refuse_private_data(test, "--test", syn, "score against real records held out before the run")
        return test, None
    embedded = used_embedded_dataset(run_cfg) if syn.run_dir is not None else None
    why_not = other_task(run_cfg, embedded) if embedded is not None else None
    if embedded is not None and why_not:  # e.g. a zero-shot run asked for spam / ham: the same values, other classes
        raise ConfigError(
            f"--test: {why_not}, the default test split; give the real held-out data of its task "
            f"(--test FILE: CSV/TSV/JSON/JSONL/Parquet), or --test {embedded.source} if it is that task"
        )
    if embedded is not None:
        return embedded.source, (
            f"no --test given: the run used data.private = {embedded.source}, so its fixed "
            f"{embedded.test_size:,}-{embedded.unit.removesuffix('s')} test split is the test set"
        )
    if syn.run_dir is not None:
        why = f"the run in {syn.run_dir} did not use data.private = {embedded_names()} (config.yaml)"
    else:
        why = f"{syn.source} is not a run directory of a run on {embedded_names()}"
        file = Path(str(syn.source)).expanduser()
        folder_cfg = read_run_config(file.parent) if file.is_file() and find_run_output(file.parent) == file else {}
        if (emb := used_embedded_dataset(folder_cfg) if folder_cfg else None) and not other_task(folder_cfg, emb):
            why += f" (it is a run's output: give the folder, `dpsynth evaluate {shlex.quote(str(file.parent))}`)"
    raise ConfigError(
        f"--test: give the real held-out data to score against (--test FILE: CSV/TSV/JSON/JSONL/Parquet); {why}, so "
        "there is no default test set"
    )


def _names(labels: Mapping[Any, Any]) -> dict[str, str]:
    return {str(k): str(v).strip().lower() for k, v in labels.items()}


def load_test(
    source: Any,
    text_column: str = "text",
    label_column: str = "label",
    labels: Collection[str] = (),
    encoding: str = "utf-8",
) -> LabelledTexts:
    """An embedded dataset's fixed test split (``embedded:imdb``: 2,000 IMDb reviews,
    ``embedded:newsgroups``: 1,531 posts) or any table source.  ``labels`` (the synthetic set's) are read
    as labels even where they look like missing-value placeholders (``None``, ``NA``)."""
    embedded = embedded_dataset(source, "--test")
    if embedded is not None:
        df, where = embedded.test(), embedded.source
        text_column, label_column = "text", "label"
    else:
        if isinstance(source, (str, Path)) and not Path(str(source)).expanduser().exists():
            raise DataError(
                f"--test: {source} does not exist; give a CSV/TSV/JSON/JSONL/Parquet file or {embedded_names()}"
            )
        df = read_table(
            source,
            encoding,
            keep={label_column: labels},
            encoding_option="--test-encoding",
            columns={text_column, label_column},
        )
        where = str(source) if isinstance(source, (str, Path)) else "test data"
    return _labelled(df, text_column, label_column, where, "test", ("--test-text-column", "--test-label-column"))


def _labelled(
    df: Any, text_column: str, label_column: str, where: str, role: str, flags: tuple[str, str]
) -> LabelledTexts:
    if len(df) == 0:
        raise DataError(f"{where}: the {role} set has no records; nothing to evaluate")
    for col, flag in ((text_column, flags[0]), (label_column, flags[1])):
        if col not in df.columns:
            hint = missing_column_hint(df, where, col, flag, flag)
            raise DataError(f"{where}: no column {col!r} in the {role} set ({columns_text(df)}); {hint}")
    keep = data_rows(df, text_column)
    dropped = int((~keep).sum())
    if dropped:
        log.warning("%s: skipped %d %s record(s) with an empty %r", where, dropped, role, text_column)
    texts = [str(t) for t in df.loc[keep, text_column].tolist()]
    if not texts:
        raise DataError(f"{where}: every {role} record has an empty {text_column!r}; nothing to evaluate")
    labels = [norm_label(v) for v in df.loc[keep, label_column].tolist()]
    if any(lab == "" for lab in labels):
        n = sum(lab == "" for lab in labels)
        raise DataError(f"{where}: {n} {role} record(s) have an empty {label_column!r}; fill or drop them")
    return LabelledTexts(texts, labels, where)


LABEL_CHARS = 40  # a label value longer than this, or with more spaces than LABEL_SPACES, is not printed
LABEL_SPACES = 3
SMALL_TEST = 100  # below this many test records, one record moves accuracy by more than a point: say so
SMALL_CLASS = 5  # below this many synthetic records in a class, a score says more about them than the method


def check_labels(syn: LabelledTexts, test: LabelledTexts) -> list[str]:
    """Raise if the label sets cannot be compared; return warnings for softer mismatches."""
    s, t = set(syn.labels), set(test.labels)
    if len(test.labels) < 2:  # its one label occurs once, so the messages below would hide it as maybe-text
        raise DataError(
            f"{test.source}: the test set has 1 labelled record; accuracy on it can only be 0 or 1. "
            "Give a labelled test set of at least a few dozen records per class"
        )

    def show(xs: set[str], labels: list[str]) -> str:
        """Label values for a message, but never one that may be a record's text: a wrong label column (the
        text column, say) of a test file that holds private records must not print them.  Shown: values that
        read like a label (short, few spaces) and either occur at least twice or belong to a column whose
        values mostly repeat (as labels do, and texts do not)."""
        counts = Counter(labels)
        repeats = 2 * len(counts) <= len(labels)
        items = sorted(
            x for x in xs if (repeats or counts[x] >= 2) and len(x) <= LABEL_CHARS and x.count(" ") <= LABEL_SPACES
        )
        hidden = len(xs) - len(items)
        text = "[" + ", ".join(repr(x) for x in items[:8]) + (", ..." if len(items) > 8 else "") + "]"
        if hidden:
            text += f" and {hidden} value(s) not shown (they occur once or read like text: is that the text column?)"
        return text

    if not s & t:
        raise DataError(
            f"labels do not match: the synthetic set has labels {show(s, syn.labels)}, the test set "
            f"{show(t, test.labels)}; check --label-column / --test-label-column (both must hold the same label values)"
        )
    if s - t:
        raise DataError(
            f"labels do not match: synthetic labels {show(s - t, syn.labels)} never occur in the test set "
            f"{show(t, test.labels)}; check --label-column / --test-label-column"
        )
    if len(s) < 2:
        raise DataError(
            f"{syn.source}: the synthetic set has a single label {show(s, syn.labels)}; a classifier needs at least two"
        )
    warnings = []
    if len(test.labels) < SMALL_TEST:
        warnings.append(
            f"the test set has {len(test.labels)} records: accuracy moves in steps of "
            f"{1 / len(test.labels):.3f}, so differences that small between sets mean nothing; "
            f"compare on {SMALL_TEST} records or more"
        )
    if t - s:
        warnings.append(
            f"test labels {show(t - s, test.labels)} have no synthetic samples; the classifier can never predict them"
        )
    if (fewest := min(Counter(syn.labels).values())) < SMALL_CLASS:
        warnings.append(
            f"the synthetic set's smallest class has {fewest} record{'s' * (fewest != 1)}: a classifier trained on "
            "so few says more about those records than about the method; make more (`dpsynth sample`)"
        )
    return warnings
