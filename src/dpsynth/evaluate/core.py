"""``evaluate(synthetic, test)``: utility and fidelity of a synthetic set against real held-out data.

The result leads with one headline figure (accuracy of the default classifier trained on the
synthetic set and tested on the real test set) beside reference points a reader can place it
against: the same classifier trained on a real sample of the private set's size (runs on an
embedded dataset), on a zero-shot synthetic set (when one is given) and the majority-class
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
import numbers
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dpsynth.embeddings import EMBEDDED_MINILM, Embedder
from dpsynth.errors import ConfigError, DataError
from dpsynth.evaluate import downstream, fidelity
from dpsynth.evaluate.inputs import (
    LabelledTexts,
    check_labels,
    count_test_copies,
    default_embedder,
    embed_synthetic,
    embed_test,
    load_synthetic,
    load_test,
    other_task,
    private_keys,
    read_run_config,
    refuse_non_zero_shot_reference,
    refuse_private_data,
    refuse_private_texts,
    refuse_synthetic_as_real,
    refuse_unreadable_run_config,
    resolve_test,
    run_data_config,
    used_embedded_dataset,
)
from dpsynth.evaluate.references import (
    REFERENCE_DRAWS,
    headline_figure,
    majority_reference,
    real_reference,
    reference_pool,
    scores_by_round,
)
from dpsynth.io import atomic_write_json

log = logging.getLogger("dpsynth")

EVALUATION_FILE = "evaluation.json"
MAUVE_MIN_SAMPLES = 100
# FID has no fixed scale (it shrinks as samples grow), so it is read against a real sample of the
# synthetic set's own size; above this many records that sample is not drawn (embedding it costs time).
FID_REFERENCE_MAX = 1000


# ---------------------------------------------------------------- evaluate
def evaluate(
    synthetic: Any,
    test: Any = None,
    *,
    text_column: str = "text",
    label_column: str = "label",
    test_text_column: str | None = None,
    test_label_column: str | None = None,
    test_encoding: str = "utf-8",
    synthetic_encoding: str = "utf-8",
    classifiers: str | Sequence[str] = (downstream.LOGREG,),
    seeds: int | Iterable[int] = (0, 1, 2),
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
    finetune: downstream.ClassifierFinetuneConfig | None = None,
    k: int = 3,
    write: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Evaluate a synthetic labelled text set against real held-out data.  Returns a JSON-able dict.

    synthetic: run directory, file, DataFrame, list of records or ``SynthesisResult``.
    test: the real held-out data (a table source, or an embedded dataset's fixed test split:
    ``"embedded:imdb"``, 2,000 IMDb reviews; ``"embedded:newsgroups"``, 1,531 posts).  Required, except
    for a run directory whose config.yaml shows the run used one of them as ``data.private``: that
    run's test split is then the default (``notes`` says so).
    test_encoding: the encoding of a CSV/JSON/JSONL test file (real held-out data often comes from tools
    that write latin-1).
    synthetic_encoding: the same for a synthetic (or ``reference_zero_shot``) CSV/JSONL file made elsewhere.
    classifiers: any of ``"logreg"`` (frozen embeddings, fast, deterministic: fitted once) and
    ``"finetune"`` (MiniLM fine-tuned, once per seed), or ``"all"``; one name or several.  ``logreg``
    always runs: it gives the headline.
    seeds: the fine-tuned classifier's seeds (the deterministic logreg would only repeat itself); a number
    N is seeds 0..N-1, as ``--seeds N``.
    reference_zero_shot: a zero-shot synthetic set (run directory or file, same columns as
    ``synthetic``) on which the headline classifier is also trained, as a reference point.
    reference_real: for runs on an embedded dataset, also train it on real samples of the private set's
    size (``data.n_private``) drawn from its pool, never the run's own draw nor the test split.
    synthetic_embeddings / test_embeddings: precomputed (n, d) arrays, row-aligned with the texts
    (after records with an empty text are dropped); skip embedding entirely.
    cache_dir: where public embeddings (test set, embedded pool) are cached (default ``~/.cache/dpsynth/eval``).
    synthetic_cache: optional .npz path caching synthetic embeddings across calls (read and
    written); a run directory's own ``embeddings.npz`` is always consulted read-only.
    When ``synthetic`` is a run directory and ``write`` is true, the result is also written to
    ``RUN_DIR/evaluation.json``; with ``per_round``, FID (and logreg accuracy) of the samples of
    rounds <= t is computed for every round t.

    The result leads with ``headline`` ({metric, value, classifier, description, text, references}) and
    ``readings`` (plain-words readings of FID, MAUVE and precision/recall).
    """
    say = progress or (lambda msg: log.info(msg))
    if isinstance(classifiers, str):  # one name, not its letters ("unknown 'l'")
        classifiers = (classifiers,)
    if "all" in classifiers:
        classifiers = downstream.CLASSIFIERS
    seeds = _seed_list(seeds)
    bad = [c for c in classifiers if c not in downstream.CLASSIFIERS]
    if bad:
        raise ConfigError(f"--classifier: unknown {bad[0]!r}; use one of {', '.join(downstream.CLASSIFIERS)}, all")
    classifiers = tuple(dict.fromkeys((downstream.LOGREG, *classifiers)))
    if not seeds:
        raise ConfigError("--seeds: at least one seed is needed")
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    syn = load_synthetic(synthetic, text_column, label_column, synthetic_encoding)
    refuse_unreadable_run_config(syn)  # the private-data checks below need the run's data.private
    run_cfg = read_run_config(syn.run_dir)
    test, test_note = resolve_test(test, syn, run_cfg)
    notes = [test_note] if test_note else []
    for n in notes:
        say(n)
    tst = load_test(
        test, test_text_column or text_column, test_label_column or label_column, set(syn.labels), test_encoding
    )
    private = private_keys(syn)  # read once: the test set and the zero-shot reference are checked
    # an embedded set's fixed test split is held out by construction (its few texts that also occur in the
    # training pool are documented): a note asking whether it was held out would only alarm
    refuse_private_texts(tst.texts, "--test", private if test_note is None else None)
    refuse_synthetic_as_real("--test", test, tst.texts, syn)
    in_test = count_test_copies(syn, tst.texts)
    warnings = check_labels(syn, tst)
    if in_test:
        warnings.append(
            f"{in_test} of the {len(syn)} synthetic records are texts of the test set word for word: the "
            "classifier has seen those test records, so its scores are optimistic"
        )
    for w in warnings:
        log.warning(w)
    zs: LabelledTexts | None = None
    if reference_zero_shot is not None:
        refuse_private_data(
            reference_zero_shot, "--reference-zero-shot", syn, "give a zero-shot run's directory or output"
        )
        try:  # the same checks as the synthetic set, in messages that name the flag the user gave
            zs = load_synthetic(reference_zero_shot, text_column, label_column, synthetic_encoding)
            refuse_non_zero_shot_reference(zs, syn)
            check_labels(zs, tst)
            refuse_private_texts(zs.texts, "--reference-zero-shot", private)
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
        say(f"embedding {len(tst)} test texts (kept in a cache for later evaluations)")
        keys = private[1] if private is not None and private[1] is not None else frozenset()
        x_test = embed_test(tst.texts, get_embedder(), cache_dir, keys)
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
        "synthetic": {
            "source": syn.source,
            "n": len(syn),
            "n_in_test": in_test,  # records that are test texts word for word
            **fidelity.label_distribution(syn.labels),
        },
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
        cfg = finetune or downstream.ClassifierFinetuneConfig(model=embedding_model)
        epochs = cfg.epochs_for(len(syn))
        raised = f" (raised from {cfg.epochs} to reach {cfg.min_steps} optimizer steps)" if epochs > cfg.epochs else ""
        say(f"fine-tuning {cfg.model} for {epochs} epochs{raised} x {len(seeds)} seed{'s' if len(seeds) != 1 else ''}")
        result["utility"][downstream.FINETUNE] = downstream.finetune_utility(
            syn.texts, syn.labels, tst.texts, tst.labels, seeds, cfg, progress=say
        )
        timings["finetune"] = time.perf_counter() - t0

    # reference points for the headline
    t0 = time.perf_counter()
    pool = None
    embedded = used_embedded_dataset(run_cfg) if syn.run_dir is not None else None
    if reference_real and embedded is not None and (why_not := other_task(run_cfg, embedded)):
        warnings.append(f"no real-sample reference: {why_not}")
        embedded = None
    if reference_real and embedded is not None:
        pool, why = reference_pool(embedded, run_cfg, tst)
        if why:
            warnings.append(f"no real-sample reference: {why}")
    references: list[dict[str, Any]] = []
    fid_reference: dict[str, Any] | None = None
    if pool is not None:
        m = int(run_data_config(run_cfg).get("n_private") or 0)
        n_fid = len(syn) if fidelity_metrics and len(syn) <= min(FID_REFERENCE_MAX, len(pool)) else 0
        assert embedded is not None
        say(
            f"reference: the classifier on {REFERENCE_DRAWS} real samples of {m} records from the {embedded.title} pool"
        )
        ref, fid_reference = real_reference(
            pool, m, n_fid, get_embedder(), x_test, tst.labels, cache_dir, embedded.title
        )
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
    declared = run_data_config(run_cfg).get("labels")
    names = {str(k): v for k, v in declared.items()} if isinstance(declared, dict) else {}
    references.append(majority_reference(tst.labels, names))
    timings["references"] = time.perf_counter() - t0
    result["headline"] = headline_figure(result["utility"][downstream.LOGREG], model_name, len(syn), tst, references)

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
            if m_res["backend"] != "mauve-text":
                notes.append(
                    "MAUVE: mauve-text is not installed, so the same algorithm ran on scikit-learn's k-means "
                    "(last digits differ from faiss's); pip install 'dpsynth[eval]' for the reference implementation"
                )
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
    result["text_stats"] = {
        "synthetic": fidelity.text_stats(syn.texts, syn.labels),
        "test": fidelity.text_stats(tst.texts, tst.labels),
    }
    timings["text_stats"] = time.perf_counter() - t0

    rounds_known = syn.rounds is not None and len(set(syn.rounds)) > 1
    if per_round and rounds_known:
        t0 = time.perf_counter()
        result["per_round"] = scores_by_round(syn, x_syn, x_test, tst.labels, True)
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
        target = syn.run_dir / EVALUATION_FILE
        try:
            atomic_write_json(target, result)
            result["written_to"] = str(target)
        except OSError as exc:  # a read-only run directory: minutes of work are still shown, not thrown away
            log.warning("could not write %s (%s); the results are shown here only", target, exc.strerror or exc)
    return result


def _check_emb(x: Any, n: int, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim != 2 or len(arr) != n:
        raise DataError(f"{name}: expected an ({n}, d) array aligned with the texts, got shape {arr.shape}")
    bad = int((~np.isfinite(arr).all(axis=1)).sum())
    if bad:  # else scikit-learn's own error, deep in the classifier, names neither the array nor the rows
        raise DataError(f"{name}: {bad} of its {n} rows hold NaN or infinite values; embed those texts again")
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


def _seed_list(seeds: Any) -> list[int]:
    """``seeds`` as a list: a number N is seeds 0..N-1 (as ``--seeds N``); anything but whole numbers is
    refused rather than cut (``[0.7]`` is not seed 0)."""
    if isinstance(seeds, numbers.Integral) and not isinstance(seeds, bool):
        return list(range(int(seeds)))
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Iterable):
        raise ConfigError(f"seeds: a number of seeds or a list of seeds; got {type(seeds).__name__}")
    out = list(seeds)
    bad = [s for s in out if isinstance(s, bool) or not isinstance(s, numbers.Integral)]
    if bad:
        raise ConfigError(f"seeds: whole numbers only; got {bad[0]!r}")
    return [int(s) for s in out]
