"""Would re-balancing classes pay?  An offline check on WASP sets.

A WASP run splits each round over the classes by the private class shares it estimates from the noisy
votes, so its set follows the private draw (plus noise); a zero-shot run makes the classes even.  The
test splits are about even.  For each WASP + judge set at N >= 300, this scores the set as released, a
class-balanced subset (every class cut to the smallest class's count) and a subset of the same size
drawn at random from the set as released (``--draws`` draws each), like ``dpsynth evaluate``.  (Inside a
run, samples the judge rejects are asked for again until each class's quota is met, so filtering
itself never unbalances a set.)

Analysis only: it reads released synthetic sets and public test splits, never a private set.

    python bench/diag_balance.py [--draws 10] [--name diag_balance]
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
from diag_release import CACHE, accuracy  # noqa: E402
from dpsynth.data import EMBEDDED_DATASETS  # noqa: E402
from dpsynth.evaluate.inputs import default_embedder, embed_test, load_test  # noqa: E402

SETS: list[tuple[str, str]] = [
    ("imdb", "wasp+judge-eps4-n300-m100-s0"),
    ("imdb", "wasp+judge-pooled-n1000-m100-s0"),
    ("newsgroups", "wasp+judge-eps4-n300-m100-s0"),
    ("newsgroups", "wasp+judge-eps4-n300-m100-s1"),
    ("newsgroups", "wasp+judge-eps4-n300-m100-s2"),
]


def check(dataset: str, name: str, draws: int, embedder: Any) -> dict[str, Any] | None:
    path = _set_dir(dataset) / f"{name}.jsonl"
    if not path.exists():
        return None
    ds = EMBEDDED_DATASETS[f"embedded:{dataset}"]
    t = load_test(ds.source)
    test = (embed_test(list(t.texts), embedder), [str(v) for v in t.labels])
    rows = _read(path)
    x = embed_test([str(r["text"]) for r in rows], embedder, CACHE)
    y = np.asarray([str(r["label"]) for r in rows])
    classes = sorted(set(y))
    smallest = min(int((y == c).sum()) for c in classes)
    rng = np.random.default_rng(0)
    balanced, as_is = [], []
    for _ in range(draws):
        idx = np.concatenate([rng.choice(np.flatnonzero(y == c), smallest, replace=False) for c in classes])
        balanced.append(accuracy(x[idx], list(y[idx]), test))
        idx = rng.choice(len(y), len(idx), replace=False)
        as_is.append(accuracy(x[idx], list(y[idx]), test))
    out = {
        "dataset": dataset,
        "set": name,
        "class_counts": {c: int((y == c).sum()) for c in classes},
        "test_class_counts": {c: int((np.asarray(test[1]) == c).sum()) for c in classes},
        "whole_set": round(accuracy(x, list(y), test), 4),
        "k": smallest * len(classes),
        "balanced": {"mean": round(float(np.mean(balanced)), 4), "std": round(float(np.std(balanced, ddof=1)), 4)},
        "random_as_released": {"mean": round(float(np.mean(as_is)), 4), "std": round(float(np.std(as_is, ddof=1)), 4)},
    }
    print(out, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--name", default="diag_balance")
    args = ap.parse_args()
    embedder = default_embedder()
    results = [r for d, n in SETS if (r := check(d, n, args.draws, embedder)) is not None]
    write_result(
        args.name,
        {
            "command": "python bench/diag_balance.py " + " ".join(sys.argv[1:]),
            "evaluator": "LogisticRegression on MiniLM embeddings, the dataset's fixed test split",
            "sets": results,
        },
    )


if __name__ == "__main__":
    main()
