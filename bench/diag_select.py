"""Would a DP distribution sketch pay as a selector of zero-shot samples?  An offline check.

WASP's per-sample vote does not rank samples by their use to a classifier (docs/quality.md, "What should
a run release?"), and prompting with its top samples costs diversity.  A different use of the private
data keeps zero-shot's samples as they are and only chooses among them: a DP characteristic-function
sketch of the private embeddings (one Gaussian release, the PEARL sketch of docs/pearl.md), then kernel
herding picks, class by class, the k candidates whose embedding distribution best matches the sketch
(``bench/pearl_tools.py``).  The benchmark's ``pearl-select`` row does this at N = 100 (one seed).

Here the candidates are zero-shot + judge sets that runs already released (no new generation), and the
question is whether the sketch's choice of k = share x |set| beats k chosen at random (same class
quota), and by how much, at epsilon 4 (the sketch spends the whole budget, as a run of this kind
would) and without noise (the ceiling).  Each variant is scored like ``dpsynth evaluate`` (logistic
regression on MiniLM, the dataset's fixed test split).  The private records are the benchmark's draw
for the set's seed (M = 100); they are read once, by the sketch, as in a run.

    python bench/diag_select.py [--share 0.333] [--draws 10] [--sketches 3] [--name diag_select]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402
from diag_mix import _read, _set_dir  # noqa: E402
from diag_release import CACHE, accuracy, per_class_counts  # noqa: E402
from dpsynth.data import EMBEDDED_DATASETS  # noqa: E402
from dpsynth.evaluate.inputs import default_embedder, embed_test, load_test  # noqa: E402
from pearl_tools import embedding_sketch, select_by_sketch  # noqa: E402

# (dataset, seed, zero-shot + judge set): the larger sets, where a third is still 100 samples or more
SETS: list[tuple[str, int, str]] = [
    ("imdb", 0, "zero-shot+judge-eps0-n300-m100-s0"),
    ("imdb", 0, "zero-shot+judge-n1000-m100-s0"),
    ("newsgroups", 0, "zero-shot+judge-eps0-n300-m100-s0"),
    ("newsgroups", 1, "zero-shot+judge-eps0-n300-m100-s1"),
]
NO_NOISE = 1e6  # an epsilon whose noise is negligible: the sketch's ceiling, not DP


def check(
    dataset: str, seed: int, name: str, share: float, draws: int, sketches: int, m: int, embedder: Any
) -> dict[str, Any]:
    ds = EMBEDDED_DATASETS[f"embedded:{dataset}"]
    t = load_test(ds.source)
    test = (embed_test(list(t.texts), embedder), [str(v) for v in t.labels])
    rows = _read(_set_dir(dataset) / f"{name}.jsonl")
    x = embed_test([str(r["text"]) for r in rows], embedder, CACHE)
    y = np.asarray([str(r["label"]) for r in rows])
    classes = list(ds.labels)
    quota = per_class_counts(y, int(round(share * len(rows))))
    rng = np.random.default_rng(seed)
    rand = []
    for _ in range(draws):
        idx = np.concatenate([rng.choice(np.flatnonzero(y == c), quota[c], replace=False) for c in quota])
        rand.append(accuracy(x[idx], list(y[idx]), test))
    priv = ds.private(m, seed)
    e_priv = embedder.encode([str(v) for v in priv["text"]])
    labels = [str(v) for v in priv["label"]]
    del priv
    out: dict[str, Any] = {
        "dataset": dataset,
        "set": name,
        "n": len(rows),
        "k": sum(quota.values()),
        "whole_set": round(accuracy(x, list(y), test), 4),
        "random": {"mean": round(float(np.mean(rand)), 4), "std": round(float(np.std(rand, ddof=1)), 4)},
    }
    for label, eps in (("sketch_eps4", 4.0), ("sketch_no_noise", NO_NOISE)):
        accs = []
        for s in range(sketches if eps != NO_NOISE else 1):
            sketch, _ = embedding_sketch(e_priv, epsilon=eps, delta=1e-5, labels=labels, classes=classes, seed=s)
            idx = np.concatenate(
                [np.flatnonzero(y == c)[select_by_sketch(x[y == c], sketch, quota[c], label=c)] for c in quota]
            )
            accs.append(accuracy(x[idx], list(y[idx]), test))
        out[label] = {"mean": round(float(np.mean(accs)), 4), "runs": [round(a, 4) for a in accs]}
    print(out, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--share", type=float, default=1 / 3)
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--sketches", type=int, default=3)
    ap.add_argument("--m", type=int, default=100)
    ap.add_argument("--name", default="diag_select")
    args = ap.parse_args()
    embedder = default_embedder()
    results = [check(d, s, n, args.share, args.draws, args.sketches, args.m, embedder) for d, s, n in SETS]
    write_result(
        args.name,
        {
            "command": "python bench/diag_select.py " + " ".join(sys.argv[1:]),
            "evaluator": "LogisticRegression on MiniLM embeddings, the dataset's fixed test split",
            "sets": results,
        },
    )


if __name__ == "__main__":
    main()
