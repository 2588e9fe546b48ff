"""Why does a synthetic set train a weak classifier?  Label consistency and diversity of kept sets.

For every set in bench/results/quality_sets/ (written by bench/quality.py), this reports:

* label consistency (`dpsynth.evaluate.fidelity.label_consistency`, as `dpsynth evaluate` reports it): the
  share of samples that a judge trained on the real test split gives the label they were generated for,
  overall, per generator and per round; real reviews score the judge's cross-validated accuracy (printed).
* words per sample, and diversity: mean cosine similarity of each sample to its nearest other sample of the
  same set (1.0 = near-duplicates; 100 real reviews score about 0.5).

Analysis only: it reads synthetic sets and the public test split, never a private set.

    python bench/diag_quality.py [--dataset imdb|newsgroups] [--sets 'wasp-eps4-*'] [--name diag_quality]

--dataset newsgroups reads bench/results/quality_sets_newsgroups/ and judges with the topic task's test split.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402
from dpsynth.data import EMBEDDED_DATASETS  # noqa: E402
from dpsynth.evaluate.fidelity import label_consistency  # noqa: E402
from dpsynth.evaluate.inputs import default_embedder, embed_test, load_test  # noqa: E402

SETS = Path(__file__).resolve().parent / "results" / "quality_sets"
CACHE = Path("runs/diag_cache")  # synthetic embeddings: kept apart from the evaluator's test-text cache


def diversity(emb: np.ndarray) -> float:
    if len(emb) < 2:
        return float("nan")
    e = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    sim = e @ e.T
    np.fill_diagonal(sim, -1.0)
    return float(sim.max(axis=1).mean())


def analyse(rows: list[dict[str, Any]], x_test: np.ndarray, y_test: list[str], embedder: Any) -> dict[str, Any]:
    texts = [r["text"] for r in rows]
    labels = [str(r["label"]) for r in rows]
    x = embed_test(texts, embedder, CACHE)  # cached on disk: a second look costs nothing
    by_gen = label_consistency(x, labels, x_test, y_test, groups=[str(r.get("generator", "?")) for r in rows])
    by_round = label_consistency(x, labels, x_test, y_test, groups=[str(r.get("round", "?")) for r in rows])
    return {
        "n": len(rows),
        "label_consistency": round(by_gen["score"], 4),
        "real_reference": by_gen["real_reference"],
        "by_generator": by_gen["by_generator"],
        "by_round": by_round["by_generator"],
        "words_mean": round(float(np.mean([len(t.split()) for t in texts])), 1),
        "nn_cosine_mean": round(diversity(x), 4),
    }


def correlations(results: dict[str, Any], dataset: str = "imdb") -> dict[str, Any]:
    """Pearson r between each set's logreg accuracy (bench/results/quality[_DATASET].json) and its diagnostics."""
    name = "quality.json" if dataset == "imdb" else f"quality_{dataset}.json"
    runs = json.loads((SETS.parent / name).read_text())["rows"]
    acc = {f"{r['row'].replace(':', '-')}-eps{r['epsilon']:g}-n{r['n']}-m{r['m']}-s{r['seed']}": r for r in runs}
    names = [k for k in results if k in acc]
    out: dict[str, Any] = {"n_sets": len(names)}
    if len(names) < 3:
        return out
    a = np.asarray([acc[k]["accuracy_mean"] for k in names])
    for key, values in {
        "label_consistency": [results[k]["label_consistency"] for k in names],
        "nn_cosine_mean": [results[k]["nn_cosine_mean"] for k in names],
        "fid": [acc[k]["fid"] for k in names],
        "mauve": [acc[k]["mauve"] for k in names],
    }.items():
        out[key] = round(float(np.corrcoef(a, np.asarray(values, dtype=float))[0, 1]), 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="imdb", choices=["imdb", "newsgroups"])
    ap.add_argument("--sets", default="*", help="glob over bench/results/quality_sets[_DATASET]/*.jsonl names")
    ap.add_argument("--name", default="diag_quality", help="result name in bench/results/")
    args = ap.parse_args()
    embedder = default_embedder()
    test = load_test(EMBEDDED_DATASETS[f"embedded:{args.dataset}"].source)
    x_test, y_test = embed_test(list(test.texts), embedder), [str(v) for v in test.labels]
    sets = SETS if args.dataset == "imdb" else SETS.parent / f"quality_sets_{args.dataset}"
    results: dict[str, Any] = {}
    for path in sorted(sets.glob(f"{args.sets}.jsonl")):
        rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
        r = results[path.stem] = analyse(rows, x_test, y_test, embedder)
        by_gen = {g: round(v["score"], 3) for g, v in r["by_generator"].items()}
        print(
            f"{path.stem:45s} consistency={r['label_consistency']:.3f} words={r['words_mean']:5.1f} "
            f"nn_cos={r['nn_cosine_mean']:.3f} by_gen={by_gen}",
            flush=True,
        )
    corr = correlations(results, args.dataset)
    print("correlation with downstream accuracy over the kept sets:", corr)
    # diversity of 100 real texts, for reference (pandas' draw with seed 1, as earlier results used)
    real = pd.Series(list(test.texts)).sample(n=min(100, len(test.texts)), random_state=1)
    real_div = round(diversity(embed_test(list(real), embedder)), 4)
    ref = next(iter(results.values()))["real_reference"] if results else None
    write_result(
        args.name,
        {
            "command": "python bench/diag_quality.py " + " ".join(sys.argv[1:]),
            "dataset": f"embedded:{args.dataset}",
            "judge": "LogisticRegression on MiniLM embeddings of the dataset's fixed test split",
            "real_reference_label_consistency": ref,
            "real_100_nn_cosine_mean": real_div,
            "correlation_with_accuracy": corr,
            "sets": results,
        },
    )


if __name__ == "__main__":
    main()
