"""``evaluate(synthetic, test)``: utility and fidelity of a synthetic set against real held-out data.

The result leads with one headline figure (accuracy of the default classifier trained on the
synthetic set and tested on the real test set) beside reference points a reader can place it
against: the same classifier trained on a real sample of the private set's size (runs on the
embedded IMDb data), on a zero-shot synthetic set (when one is given) and the majority-class
rate; the fidelity metrics come with a reading in plain words (:func:`fidelity.readings`).

Every text is embedded once and the arrays are shared by the classifier and every fidelity
metric.  Test-set embeddings (public held-out data) are cached on disk under
``$DPSYNTH_CACHE_DIR/eval`` (default ``~/.cache/dpsynth/eval``), keyed by model name and the
SHA-256 of each text.  Synthetic embeddings are read from a run directory's own
``embeddings.npz`` where the run used the same model, and computed otherwise; either can be
passed precomputed (``synthetic_embeddings=`` / ``test_embeddings=``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dpsynth.data import EMBEDDED_IMDB, IMDB_TEST_SIZE, imdb_test, read_table
from dpsynth.embeddings import EMBEDDED_MINILM, Embedder, EmbeddingCache, SentenceTransformerEmbedder
from dpsynth.errors import ConfigError, DataError
from dpsynth.evaluate import downstream, fidelity
from dpsynth.io import atomic_write_json

log = logging.getLogger("dpsynth")

EVALUATION_FILE = "evaluation.json"
MAUVE_MIN_SAMPLES = 100
# The real-sample reference: how many independent draws of the private set's size (their spread is real:
# which reviews are drawn changes the accuracy, unlike a seed of the deterministic classifier).
REFERENCE_DRAWS = 3
# FID has no fixed scale (it shrinks as samples grow), so it is read against a real sample of the
# synthetic set's own size; above this many records that sample is not drawn (embedding it costs time).
FID_REFERENCE_MAX = 1000
_RUN_FILES = ("synthetic.jsonl", "synthetic.parquet", "synthetic.csv")
# the max_seq_length a run embeds with (api.py builds SentenceTransformerEmbedder with its default)
_RUN_MAX_SEQ_LENGTH = 256


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


def eval_cache_dir() -> Path:
    base = os.environ.get("DPSYNTH_CACHE_DIR") or "~/.cache/dpsynth"
    return Path(base).expanduser() / "eval"


# ---------------------------------------------------------------- inputs
def read_run_config(run_dir: str | Path | None) -> dict[str, Any]:
    """A run directory's ``config.yaml`` as a dict; {} when there is none or it cannot be read.

    Evaluation and the report learn what a run used (its data source, task, private-set size) from
    this public file alone, never from the private data."""
    if run_dir is None:
        return {}
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        return {}
    import yaml

    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
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


def used_embedded_imdb(cfg: dict[str, Any]) -> bool:
    """Whether the run's private data was the embedded IMDb draw (``data.private: embedded:imdb``)."""
    return run_data_config(cfg).get("private") == EMBEDDED_IMDB


def find_run_output(run_dir: Path) -> Path | None:
    """The synthetic output file of a run directory (the config's output_format first)."""
    names = list(_RUN_FILES)
    fmt = read_run_config(run_dir).get("output_format")
    if isinstance(fmt, str) and f"synthetic.{fmt}" in names:
        names.remove(f"synthetic.{fmt}")
        names.insert(0, f"synthetic.{fmt}")
    for n in names:
        if (run_dir / n).exists():
            return run_dir / n
    return None


def load_synthetic(source: Any, text_column: str = "text", label_column: str = "label") -> LabelledTexts:
    """A run directory, a file (CSV/JSONL/JSON/Parquet/HF dataset folder), a DataFrame, a list of
    record dicts, or a ``SynthesisResult``."""
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
            if out is None:
                raise DataError(
                    f"--synthetic: {path} is a folder without synthetic.jsonl/.csv/.parquet; give a finished "
                    "run directory or the synthetic file itself"
                )
            run_dir, frame_source = path, out
        else:
            frame_source = path
        where = str(frame_source)
    else:
        frame_source, where = source, "synthetic data"
    df = read_table(frame_source)
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


def resolve_test(test: Any, syn: LabelledTexts, run_cfg: dict[str, Any]) -> tuple[Any, str | None]:
    """The test set to score against, and a note for the reader when it was not given.

    Scoring against the wrong real data still yields a plausible number (a medical CSV scored 0.49
    against IMDb reviews, with no warning), so a test set is required.  The one exception is a run
    directory whose config.yaml shows it ran on ``embedded:imdb``: its fixed test split is then the
    only right test set, and the note says it was chosen."""
    if test is not None:
        return test, None
    if syn.run_dir is not None and used_embedded_imdb(run_cfg):
        return EMBEDDED_IMDB, (
            f"no --test given: the run used data.private = {EMBEDDED_IMDB}, so its fixed "
            f"{IMDB_TEST_SIZE:,}-review test split is the test set"
        )
    if syn.run_dir is not None:
        why = f"the run in {syn.run_dir} did not use data.private = {EMBEDDED_IMDB} (config.yaml)"
    else:
        why = f"{syn.source} is not a run directory of a run on {EMBEDDED_IMDB}"
    raise ConfigError(
        f"--test: give the real held-out data to score against (--test FILE: CSV/JSONL/Parquet); {why}, so "
        "there is no default test set"
    )


def load_test(source: Any, text_column: str = "text", label_column: str = "label") -> LabelledTexts:
    """``embedded:imdb`` (the project's fixed 2,000-review IMDb test split) or any table source."""
    if isinstance(source, str) and source == EMBEDDED_IMDB:
        df, where = imdb_test(), EMBEDDED_IMDB
        text_column, label_column = "text", "label"
    else:
        if isinstance(source, (str, Path)) and not Path(str(source)).expanduser().exists():
            raise DataError(f"--test: {source} does not exist; give a CSV/JSONL/Parquet file or embedded:imdb")
        df = read_table(source)
        where = str(source) if isinstance(source, (str, Path)) else "test data"
    return _labelled(df, text_column, label_column, where, "test", ("--test-text-column", "--test-label-column"))


def _labelled(
    df: Any, text_column: str, label_column: str, where: str, role: str, flags: tuple[str, str]
) -> LabelledTexts:
    if len(df) == 0:
        raise DataError(f"{where}: the {role} set has no records; nothing to evaluate")
    for col, flag in ((text_column, flags[0]), (label_column, flags[1])):
        if col not in df.columns:
            cols = ", ".join(map(str, list(df.columns)[:20]))
            raise DataError(f"{where}: no column {col!r} in the {role} set (columns: {cols}); pass {flag} NAME")
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


def norm_label(v: Any) -> str:
    s = str(v).strip()
    if s.endswith(".0") and s[:-2].lstrip("-").isdigit():
        s = s[:-2]
    return s


def check_labels(syn: LabelledTexts, test: LabelledTexts) -> list[str]:
    """Raise if the label sets cannot be compared; return warnings for softer mismatches."""
    s, t = set(syn.labels), set(test.labels)

    def show(xs: set[str]) -> str:
        items = sorted(xs)
        return "[" + ", ".join(repr(x) for x in items[:8]) + (", ..." if len(items) > 8 else "") + "]"

    if not s & t:
        raise DataError(
            f"labels do not match: the synthetic set has labels {show(s)}, the test set {show(t)}; check "
            "--label-column / --test-label-column (both must hold the same label values)"
        )
    if s - t:
        raise DataError(
            f"labels do not match: synthetic labels {show(s - t)} never occur in the test set {show(t)}; check "
            "--label-column / --test-label-column"
        )
    if len(s) < 2:
        raise DataError(
            f"{syn.source}: the synthetic set has a single label {show(s)}; a classifier needs at least two"
        )
    warnings = []
    if t - s:
        warnings.append(f"test labels {show(t - s)} have no synthetic samples; the classifier can never predict them")
    return warnings


# ---------------------------------------------------------------- embeddings
def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:80] or "model"


def embed_test(texts: Sequence[str], embedder: Embedder, cache_dir: str | Path | None = None) -> np.ndarray:
    """Embed public test texts through the on-disk cache (one .npz per model and max_seq_length)."""
    seq = getattr(embedder, "max_seq_length", None)
    base = Path(cache_dir).expanduser() if cache_dir is not None else eval_cache_dir()
    path = base / f"{_slug(embedder.name)}{f'-seq{seq}' if seq else ''}.npz"
    cache = EmbeddingCache(path, embedder.name)
    emb = cache.embed(embedder, list(texts))
    if cache.misses:
        try:
            cache.save()
        except OSError as exc:  # a read-only home must not break evaluation
            log.warning("could not write the test embedding cache %s (%s)", path, exc.strerror)
    return emb


class _ThroughCache:
    """An Embedder that answers from a read-only cache first (the run's own ``embeddings.npz``)."""

    def __init__(self, embedder: Embedder, cache: EmbeddingCache) -> None:
        self.name = embedder.name
        self._embedder = embedder
        self.cache = cache

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.cache.embed(self._embedder, texts)


def embed_synthetic(
    data: LabelledTexts, embedder: Embedder, cache_path: str | Path | None = None
) -> tuple[np.ndarray, dict[str, int]]:
    """Synthetic embeddings.  Looks up, in order: ``cache_path`` (an .npz cache this function also
    updates), the run directory's own ``embeddings.npz`` (read-only, only when the run used the
    same model and max_seq_length), then embeds.  Returns (embeddings, hit counts)."""
    source: Embedder = embedder
    run_cache = None
    seq = getattr(embedder, "max_seq_length", _RUN_MAX_SEQ_LENGTH)
    if data.run_dir is not None and (data.run_dir / "embeddings.npz").exists() and seq == _RUN_MAX_SEQ_LENGTH:
        try:
            run_cache = EmbeddingCache(data.run_dir / "embeddings.npz", embedder.name)
        except Exception:  # noqa: BLE001 - a damaged cache only costs time
            run_cache = None
        if run_cache is not None:
            source = _ThroughCache(embedder, run_cache)  # never saved: the run directory's cache is the run's
    if cache_path is not None:
        own = EmbeddingCache(cache_path, embedder.name)
        emb = own.embed(source, list(data.texts))
        if own.misses:
            own.save()
        own_hits = own.hits
    else:
        emb = source.encode(list(data.texts))
        own_hits = 0
    return emb, {"synthetic_from_cache": own_hits, "synthetic_from_run_cache": run_cache.hits if run_cache else 0}


def default_embedder(model: str = EMBEDDED_MINILM) -> Embedder:
    return SentenceTransformerEmbedder(model)


# ---------------------------------------------------------------- evaluate
def evaluate(
    synthetic: Any,
    test: Any = None,
    *,
    text_column: str = "text",
    label_column: str = "label",
    test_text_column: str | None = None,
    test_label_column: str | None = None,
    classifiers: Sequence[str] = (downstream.LOGREG,),
    seeds: Sequence[int] = (0, 1, 2),
    fidelity_metrics: bool = True,
    mauve: bool = True,
    per_round: bool = True,
    reference_zero_shot: Any = None,
    reference_real: bool = True,
    embedder: Embedder | None = None,
    embedding_model: str = EMBEDDED_MINILM,
    synthetic_embeddings: np.ndarray | None = None,
    test_embeddings: np.ndarray | None = None,
    cache_dir: str | Path | None = None,
    synthetic_cache: str | Path | None = None,
    finetune: downstream.FinetuneConfig | None = None,
    k: int = 3,
    write: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Evaluate a synthetic labelled text set against real held-out data.  Returns a JSON-able dict.

    synthetic: run directory, file, DataFrame, list of records or ``SynthesisResult``.
    test: the real held-out data (a table source, or ``"embedded:imdb"`` for the fixed 2,000-review
    IMDb test split).  Required, except for a run directory whose config.yaml shows the run used
    ``data.private: embedded:imdb``: that run's test split is then the default (``notes`` says so).
    classifiers: any of ``"logreg"`` (frozen embeddings, fast, deterministic: fitted once) and
    ``"finetune"`` (MiniLM fine-tuned, once per seed).  ``logreg`` always runs: it gives the headline.
    seeds: the fine-tuned classifier's seeds (the deterministic logreg would only repeat itself).
    reference_zero_shot: a zero-shot synthetic set (run directory or file, same columns as
    ``synthetic``) on which the headline classifier is also trained, as a reference point.
    reference_real: for runs on ``embedded:imdb``, also train it on real samples of the private set's
    size (``data.n_private``) drawn from the embedded pool, never the run's own draw nor the test split.
    synthetic_embeddings / test_embeddings: precomputed (n, d) arrays, row-aligned with the texts
    (after records with an empty text are dropped); skip embedding entirely.
    cache_dir: where public embeddings (test set, IMDb pool) are cached (default ``~/.cache/dpsynth/eval``).
    synthetic_cache: optional .npz path caching synthetic embeddings across calls (read and
    written); a run directory's own ``embeddings.npz`` is always consulted read-only.
    When ``synthetic`` is a run directory and ``write`` is true, the result is also written to
    ``RUN_DIR/evaluation.json``; with ``per_round``, FID (and logreg accuracy) of the samples of
    rounds <= t is computed for every round t.

    The result leads with ``headline`` ({metric, value, classifier, description, text, references}) and
    ``readings`` (plain-words readings of FID, MAUVE and precision/recall).
    """
    say = progress or (lambda msg: log.info(msg))
    bad = [c for c in classifiers if c not in downstream.CLASSIFIERS]
    if bad:
        raise ConfigError(f"--classifier: unknown {bad[0]!r}; use one of {', '.join(downstream.CLASSIFIERS)}, all")
    classifiers = tuple(dict.fromkeys((downstream.LOGREG, *classifiers)))
    seeds = list(seeds)
    if not seeds:
        raise ConfigError("--seeds: at least one seed is needed")
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    syn = load_synthetic(synthetic, text_column, label_column)
    run_cfg = read_run_config(syn.run_dir)
    test, test_note = resolve_test(test, syn, run_cfg)
    notes = [test_note] if test_note else []
    for n in notes:
        say(n)
    tst = load_test(test, test_text_column or text_column, test_label_column or label_column)
    warnings = check_labels(syn, tst)
    for w in warnings:
        log.warning(w)
    zs: LabelledTexts | None = None
    if reference_zero_shot is not None:
        try:  # the same checks as the synthetic set, in messages that name the flag the user gave
            zs = load_synthetic(reference_zero_shot, text_column, label_column)
            check_labels(zs, tst)
        except DataError as exc:
            raise DataError(f"--reference-zero-shot: {str(exc).removeprefix('--synthetic: ')}") from None
    timings["load"] = time.perf_counter() - t_start

    def get_embedder() -> Embedder:
        nonlocal embedder
        if embedder is None:
            embedder = default_embedder(embedding_model)
        return embedder

    # embeddings: once, shared by every metric
    t0 = time.perf_counter()
    emb_info: dict[str, Any] = {}
    if synthetic_embeddings is not None:
        x_syn = _check_emb(synthetic_embeddings, len(syn), "synthetic_embeddings")
    else:
        say(f"embedding {len(syn)} synthetic texts")
        x_syn, hits = embed_synthetic(syn, get_embedder(), synthetic_cache)
        emb_info.update(hits)
    if test_embeddings is not None:
        x_test = _check_emb(test_embeddings, len(tst), "test_embeddings")
    else:
        say(f"embedding {len(tst)} test texts (cached)")
        x_test = embed_test(tst.texts, get_embedder(), cache_dir)
    if x_syn.shape[1] != x_test.shape[1]:
        raise DataError(
            f"embedding dimensions differ: synthetic {x_syn.shape[1]} vs test {x_test.shape[1]}; embed both "
            "with the same model"
        )
    timings["embed"] = time.perf_counter() - t0
    model_name = embedder.name if embedder is not None else embedding_model

    result: dict[str, Any] = {
        "headline": None,  # filled below; first in the file, as it is first for the reader
        "readings": {},
        "synthetic": {"source": syn.source, "n": len(syn), **fidelity.label_distribution(syn.labels)},
        "test": {"source": tst.source, "n": len(tst), **fidelity.label_distribution(tst.labels)},
        "embedding_model": model_name,
        "utility": {},
    }

    # utility
    t0 = time.perf_counter()
    say("training logistic regression on synthetic embeddings")
    result["utility"][downstream.LOGREG] = downstream.logreg_utility(x_syn, syn.labels, x_test, tst.labels)
    timings["logreg"] = time.perf_counter() - t0
    if downstream.FINETUNE in classifiers:
        t0 = time.perf_counter()
        cfg = finetune or downstream.FinetuneConfig(model=embedding_model)
        say(f"fine-tuning {cfg.model} for {cfg.epochs} epochs x {len(seeds)} seeds")
        result["utility"][downstream.FINETUNE] = downstream.finetune_utility(
            syn.texts, syn.labels, tst.texts, tst.labels, seeds, cfg, progress=say
        )
        timings["finetune"] = time.perf_counter() - t0

    # reference points for the headline
    t0 = time.perf_counter()
    pool = None
    if reference_real and syn.run_dir is not None and used_embedded_imdb(run_cfg):
        pool, why = _imdb_reference_pool(run_cfg, tst)
        if why:
            warnings.append(f"no real-sample reference: {why}")
    references: list[dict[str, Any]] = []
    fid_reference: dict[str, Any] | None = None
    if pool is not None:
        m = int(run_data_config(run_cfg).get("n_private") or 0)
        n_fid = len(syn) if fidelity_metrics and len(syn) <= min(FID_REFERENCE_MAX, len(pool)) else 0
        say(f"reference: the classifier on {REFERENCE_DRAWS} real samples of {m} records from the IMDb pool")
        ref, fid_reference = _real_reference(pool, m, n_fid, get_embedder(), x_test, tst.labels, cache_dir)
        if ref is not None:
            references.append(ref)
    if zs is not None:
        say(f"reference: the classifier on the zero-shot set ({len(zs)} records)")
        x_zs, _ = embed_synthetic(zs, get_embedder())
        u = downstream.logreg_utility(x_zs, zs.labels, x_test, tst.labels)
        where = str(zs.run_dir) if zs.run_dir is not None else zs.source
        references.append(
            {
                "name": "zero-shot",
                "label": f"zero-shot synthetic set ({len(zs):,} records, {where})",
                "value": u["accuracy"]["mean"],
                "macro_f1": u["macro_f1"]["mean"],
                "n_train": len(zs),
                "source": zs.source,
            }
        )
    references.append(_majority_reference(tst.labels))
    timings["references"] = time.perf_counter() - t0
    result["headline"] = _headline(result["utility"][downstream.LOGREG], model_name, len(syn), tst, references)

    # fidelity
    if fidelity_metrics:
        t0 = time.perf_counter()
        fid_res: dict[str, Any] = {"fid": fidelity.frechet_distance(x_syn, x_test)}
        if fid_reference is not None:
            fid_res["fid_real_reference"] = fid_reference
        timings["fid"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if len(x_syn) > k and len(x_test) > k:
            p, r = fidelity.precision_recall(x_test, x_syn, k)
            fid_res.update(precision=p, recall=r, k=k)
        else:
            fid_res.update(precision=None, recall=None, k=k)
            warnings.append(f"precision/recall need more than k={k} samples in each set; skipped")
        timings["precision_recall"] = time.perf_counter() - t0
        if mauve:
            t0 = time.perf_counter()
            say("computing MAUVE")
            m_res = fidelity.mauve_score(x_syn, x_test)
            fid_res.update(mauve=m_res["mauve"], mauve_star=m_res["mauve_star"], mauve_buckets=m_res["num_buckets"])
            fid_res["mauve_backend"] = m_res["backend"]
            if min(len(x_syn), len(x_test)) < MAUVE_MIN_SAMPLES:
                warnings.append(
                    f"MAUVE from fewer than {MAUVE_MIN_SAMPLES} samples per side ({m_res['num_buckets']} k-means "
                    "buckets) is unreliable; compare it only at several hundred samples or more"
                )
            timings["mauve"] = time.perf_counter() - t0
        if len(set(tst.labels)) >= 2:
            t0 = time.perf_counter()
            fid_res["label_consistency"] = fidelity.label_consistency(
                x_syn, syn.labels, x_test, tst.labels, groups=syn.generators
            )
            timings["label_consistency"] = time.perf_counter() - t0
        fid_res["n_synthetic"], fid_res["n_test"] = len(x_syn), len(x_test)
        result["fidelity"] = fid_res
        result["readings"] = fidelity.readings(fid_res, MAUVE_MIN_SAMPLES)
    t0 = time.perf_counter()
    result["text_stats"] = {"synthetic": fidelity.text_stats(syn.texts), "test": fidelity.text_stats(tst.texts)}
    timings["text_stats"] = time.perf_counter() - t0

    rounds_known = syn.rounds is not None and len(set(syn.rounds)) > 1
    if per_round and rounds_known:
        t0 = time.perf_counter()
        result["per_round"] = _per_round(syn, x_syn, x_test, tst.labels, True)
        timings["per_round"] = time.perf_counter() - t0

    timings["total"] = time.perf_counter() - t_start
    result["notes"] = notes
    result["warnings"] = warnings
    result["embeddings"] = emb_info
    result["timings_s"] = {k_: round(v, 3) for k_, v in timings.items()}
    from dpsynth import __version__

    result["dpsynth_version"] = __version__
    result = _jsonable(result)
    if write and syn.run_dir is not None:
        atomic_write_json(syn.run_dir / EVALUATION_FILE, result)
        result["written_to"] = str(syn.run_dir / EVALUATION_FILE)
    return result


# ---------------------------------------------------------------- headline and its references
def _headline(
    logreg: dict[str, Any], model: str, n_synthetic: int, test: LabelledTexts, references: list[dict[str, Any]]
) -> dict[str, Any]:
    """The one figure a reader looks at first, with what it means and what to compare it with."""
    value = logreg["accuracy"]["mean"]
    description = (
        f"logistic regression on frozen {model} embeddings, trained on the {n_synthetic:,} synthetic records, "
        f"tested on {len(test):,} real held-out records ({test.source})"
    )
    return {
        "metric": "accuracy",
        "value": value,
        "classifier": downstream.LOGREG,
        "description": description,
        "text": f"accuracy {value:.4f}: {description}",
        "references": references,
    }


def _majority_reference(test_labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy of always answering the most common test label: what a classifier that learnt nothing gets."""
    from collections import Counter

    label, count = Counter(test_labels).most_common(1)[0]
    return {
        "name": "majority",
        "label": f"always answering the most common test label ({label!r})",
        "value": count / len(test_labels),
    }


def _imdb_reference_pool(run_cfg: dict[str, Any], test: LabelledTexts) -> tuple[Any, str | None]:
    """The embedded IMDb pool without the run's own private draw and the test texts, or (None, why not).

    Leaving out the run's own draw means the reference never trains on a record the run treated as
    private, so evaluation.json (written into the run directory) holds nothing computed from the
    private set.  The pool is disjoint from the test split by row, but IMDb repeats some reviews word
    for word (11 pool rows equal test reviews), so test texts are dropped by text as well."""
    from dpsynth.data import imdb_private, imdb_split

    data = run_data_config(run_cfg)
    try:
        m = int(data.get("n_private") or 0)
        seed = int(data.get("seed") or 0)
    except (TypeError, ValueError):
        return None, "config.yaml data.n_private / data.seed are not integers"
    if m < 2:
        return None, "config.yaml does not give the private set's size (data.n_private)"
    try:
        pool, _ = imdb_split()
        private = set(imdb_private(m, seed)["text"])
    except DataError as exc:
        return None, str(exc)
    pool = pool[~pool["text"].isin(private | set(test.texts))].reset_index(drop=True)
    pool_labels = {norm_label(v) for v in pool["label"]}
    if not pool_labels <= set(test.labels):
        return None, "the IMDb labels do not occur in the test set"
    if m > len(pool):
        return None, f"data.n_private = {m} is larger than the IMDb pool"
    return pool, None


def _real_reference(
    pool: Any,
    m: int,
    n_fid: int,
    embedder: Embedder,
    x_test: np.ndarray,
    test_labels: list[str],
    cache_dir: str | Path | None,
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The headline classifier trained on ``REFERENCE_DRAWS`` real samples of ``m`` records (mean and
    spread over draws: which records are drawn does change the result), and the FID of one real
    sample of ``n_fid`` records (the synthetic set's size; 0: none) against the test set."""
    draws = [pool.sample(n=m, random_state=s) for s in range(REFERENCE_DRAWS)]
    fid_sample = pool.sample(n=n_fid, random_state=0) if n_fid > 1 else None
    texts = list(dict.fromkeys(t for d in [*draws, fid_sample] if d is not None for t in d["text"].tolist()))
    x = embed_test(texts, embedder, cache_dir)  # public texts: cached like the test split
    row = {t: i for i, t in enumerate(texts)}
    accs = []
    for d in draws:
        labels = [norm_label(v) for v in d["label"]]
        if len(set(labels)) < 2:
            continue
        idx = [row[t] for t in d["text"]]
        accs.append(downstream.logreg_utility(x[idx], labels, x_test, test_labels)["accuracy"]["mean"])
    ref = None
    if accs:
        summary = downstream.summarize(accs)
        ref = {
            "name": "real",
            "label": (
                f"{m:,} real records from the embedded IMDb pool (the private set's size; mean of {len(accs)} "
                "draws, never the run's own draw nor the test split)"
            ),
            "value": summary["mean"],
            "std": summary["std"],
            "values": summary["values"],
            "n_train": m,
            "draws": len(accs),
        }
    fid_ref = None
    if fid_sample is not None:
        idx = [row[t] for t in fid_sample["text"]]
        fid_ref = {"fid": fidelity.frechet_distance(x[idx], x_test), "n": n_fid}
    return ref, fid_ref


def _per_round(
    syn: LabelledTexts, x_syn: np.ndarray, x_test: np.ndarray, test_labels: list[str], with_logreg: bool
) -> list[dict[str, Any]]:
    """FID (and logreg accuracy) of the samples of rounds <= t, for each round t."""
    assert syn.rounds is not None
    rounds = np.asarray(syn.rounds)
    labels = np.asarray(syn.labels)
    out = []
    for t in sorted(set(syn.rounds)):
        mask = rounds <= t
        row: dict[str, Any] = {"round": int(t), "n": int(mask.sum()), "fid": None}
        if mask.sum() >= 2:
            row["fid"] = fidelity.frechet_distance(x_syn[mask], x_test)
        if with_logreg and len(set(labels[mask].tolist())) >= 2:
            r = downstream.logreg_utility(x_syn[mask], labels[mask].tolist(), x_test, test_labels)
            row["logreg_accuracy"] = r["accuracy"]["mean"]
        out.append(row)
    return out


def _check_emb(x: Any, n: int, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim != 2 or len(arr) != n:
        raise DataError(f"{name}: expected an ({n}, d) array aligned with the texts, got shape {arr.shape}")
    return arr


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    return obj


def load_evaluation(run_dir: str | Path) -> dict[str, Any] | None:
    p = Path(run_dir) / EVALUATION_FILE
    if not p.exists():
        return None
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None
