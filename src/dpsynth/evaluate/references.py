"""The headline figure of an evaluation and the reference points it is read against."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dpsynth.data import EmbeddedDataset, norm_label
from dpsynth.embeddings import Embedder
from dpsynth.errors import DataError
from dpsynth.evaluate import downstream, fidelity
from dpsynth.evaluate.inputs import LabelledTexts, embed_test, run_data_config

# The real-sample reference: how many independent draws of the private set's size (their spread is real:
# which reviews are drawn changes the accuracy, unlike a seed of the deterministic classifier).
REFERENCE_DRAWS = 3


def headline_figure(
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


def majority_reference(test_labels: Sequence[str], names: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Accuracy of always answering the most common test label: what a classifier that learnt nothing gets.

    ``names`` (the run's label value -> name) puts the name beside the value: "'0'" alone told a reader
    nothing about which class the test set holds most of."""
    from collections import Counter

    label, count = Counter(test_labels).most_common(1)[0]
    name = (names or {}).get(label)
    shown = f"{label!r}, {name}" if name not in (None, "", label) else repr(label)
    return {
        "name": "majority",
        "label": f"always answering the most common test label ({shown})",
        "value": count / len(test_labels),
    }


def reference_pool(embedded: EmbeddedDataset, run_cfg: dict[str, Any], test: LabelledTexts) -> tuple[Any, str | None]:
    """The embedded pool without the run's own private draw and the test texts, or (None, why not).

    Leaving out the run's own draw means the reference never trains on a record the run treated as
    private, so evaluation.json (written into the run directory) holds nothing computed from the
    private set.  The pool is disjoint from the test split by row, but IMDb repeats some reviews word
    for word (11 pool rows equal test reviews), so test texts are dropped by text as well (the
    20 Newsgroups pool is built without its test texts already)."""

    data = run_data_config(run_cfg)
    try:
        m = int(data.get("n_private") or 0)
        seed = int(data.get("seed") or 0)
    except (TypeError, ValueError):
        return None, "config.yaml data.n_private / data.seed are not integers"
    if m < 2:
        return None, "config.yaml does not give the private set's size (data.n_private)"
    try:
        pool, _ = embedded.split()
        private = set(embedded.private(m, seed)["text"])
    except DataError as exc:
        return None, str(exc)
    pool = pool[~pool["text"].isin(private | set(test.texts))].reset_index(drop=True)
    pool_labels = {norm_label(v) for v in pool["label"]}
    if not pool_labels <= set(test.labels):
        return None, f"the {embedded.title} labels do not occur in the test set"
    if m > len(pool):
        return None, f"data.n_private = {m} is larger than the {embedded.title} pool"
    return pool, None


def real_reference(
    pool: Any,
    m: int,
    n_fid: int,
    embedder: Embedder,
    x_test: np.ndarray,
    test_labels: list[str],
    cache_dir: str | Path | None,
    title: str = "IMDb",
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
                f"{m:,} real records from the embedded {title} pool (the private set's size; mean of {len(accs)} "
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


EQUAL_N_DRAWS = 5  # subsets per round for the equal-size FID (one subset of the first round is the round)


def scores_by_round(
    syn: LabelledTexts, x_syn: np.ndarray, x_test: np.ndarray, test_labels: list[str], with_logreg: bool
) -> list[dict[str, Any]]:
    """FID (and logreg accuracy) of the samples of rounds <= t, for each round t.

    FID falls with the sample size alone (five rounds drawn from one distribution scored 1.20, 0.77, 0.55,
    0.48, 0.46 as they added up), so ``fid_equal_n`` scores every round on ``EQUAL_N_DRAWS`` random subsets
    of the first round's size (the mean): only that one compares rounds.  ``fid`` is the whole set's."""
    assert syn.rounds is not None
    rounds = np.asarray(syn.rounds)
    labels = np.asarray(syn.labels)
    order = sorted(set(syn.rounds))
    n_equal = int((rounds <= order[0]).sum()) if order else 0
    out = []
    for t in order:
        mask = rounds <= t
        row: dict[str, Any] = {"round": int(t), "n": int(mask.sum()), "fid": None, "fid_equal_n": None}
        if mask.sum() >= 2:
            row["fid"] = fidelity.frechet_distance(x_syn[mask], x_test)
        if n_equal >= 2:
            idx = np.flatnonzero(mask)
            rng = np.random.default_rng(int(t))  # an evaluation draw, not a privacy one: reproducible
            draws = [rng.choice(idx, size=n_equal, replace=False) for _ in range(EQUAL_N_DRAWS)]
            row["fid_equal_n"] = float(np.mean([fidelity.frechet_distance(x_syn[d], x_test) for d in draws]))
            row["n_equal"] = n_equal
        if with_logreg and len(set(labels[mask].tolist())) >= 2:
            r = downstream.logreg_utility(x_syn[mask], labels[mask].tolist(), x_test, test_labels)
            row["logreg_accuracy"] = r["accuracy"]["mean"]
        out.append(row)
    return out
