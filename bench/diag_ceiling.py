"""How much could the M private records add to a zero-shot + judge set at most?  An offline bound.

Every DP method here reaches the private records through a noisy, low-dimensional channel (votes, a
sketch, noisy counts).  Whatever it learns from them is at most what the records themselves say.  This
script asks what they add when used *without* privacy, in the two ways a DP mechanism could imitate:

* as training data: the zero-shot + judge set and the M records together (the classifier sees them);
* as a label filter: a classifier trained on the M records drops the zero-shot samples it gives another
  label, then every class is cut to the smallest class's count (re-balancing after filtering);

beside the zero-shot + judge set alone and the M records alone.  If neither use puts the set 0.02 above
zero-shot + judge, no DP mechanism that only learns from the records what these uses read can either;
what remains is steering the generators (WASP's prompts), which is measured in docs/quality.md.

The M records are the benchmark's draw for the set's seed (``dataset.private(M, seed)``, from the public
pool; in the benchmark they stand in for a user's private data).  Scored like ``dpsynth evaluate``:
logistic regression on MiniLM, the dataset's fixed test split.  Not DP: a bound, not a method.

    python bench/diag_ceiling.py [--m 100] [--name diag_ceiling]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sklearn.linear_model import LogisticRegression  # noqa: E402

from common import write_result  # noqa: E402
from diag_mix import _read, _set_dir  # noqa: E402
from diag_release import CACHE, accuracy  # noqa: E402
from dpsynth.data import EMBEDDED_DATASETS  # noqa: E402
from dpsynth.evaluate.inputs import default_embedder, embed_test, load_test  # noqa: E402

SETS = [
    (dataset, n, seed, f"zero-shot+judge-eps0-n{n}-m100-s{seed}")
    for dataset in ("imdb", "newsgroups")
    for n in (100, 300)
    for seed in (0, 1, 2)
] + [("imdb", 1000, 0, "zero-shot+judge-n1000-m100-s0")]


def _balanced(y: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The kept indices with every class cut to the smallest class's count (its first ones)."""
    classes = sorted(set(y))
    per = [keep[y[keep] == c] for c in classes]
    k = min(len(p) for p in per)
    return np.concatenate([p[:k] for p in per])


def bound(
    dataset: str, name: str, seed: int, m: int, embedder: Any, test: tuple[np.ndarray, list[str]]
) -> dict[str, Any]:
    rows = _read(_set_dir(dataset) / f"{name}.jsonl")
    xs = embed_test([str(r["text"]) for r in rows], embedder, CACHE)
    ys = np.asarray([str(r["label"]) for r in rows])
    real = EMBEDDED_DATASETS[f"embedded:{dataset}"].private(m, seed)
    xr = embed_test([str(t) for t in real["text"]], embedder, CACHE)
    yr = np.asarray([str(v) for v in real["label"]])
    clf = LogisticRegression(max_iter=2000).fit(xr, yr)
    agree = np.flatnonzero(clf.predict(xs) == ys)
    filtered = _balanced(ys, agree)
    return {
        "dataset": dataset,
        "set": name,
        "seed": seed,
        "n": len(ys),
        "zero_shot_judge": round(accuracy(xs, list(ys), test), 4),
        f"real_{m}": round(accuracy(xr, list(yr), test), 4),
        "union": round(accuracy(np.vstack([xs, xr]), [*ys, *yr], test), 4),
        "filtered_balanced": round(accuracy(xs[filtered], list(ys[filtered]), test), 4),
        "kept_by_filter": len(filtered),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--m", type=int, default=100)
    ap.add_argument("--name", default="diag_ceiling")
    a = ap.parse_args()
    embedder = default_embedder()
    tests: dict[str, tuple[np.ndarray, list[str]]] = {}
    out: dict[str, Any] = {"m": a.m, "sets": []}
    for dataset, _, seed, name in SETS:
        if not (_set_dir(dataset) / f"{name}.jsonl").exists():
            continue
        if dataset not in tests:
            t = load_test(EMBEDDED_DATASETS[f"embedded:{dataset}"].source)
            tests[dataset] = (embed_test(list(t.texts), embedder), [str(v) for v in t.labels])
        r = bound(dataset, name, seed, a.m, embedder, tests[dataset])
        out["sets"].append(r)
        print(r, flush=True)
    for dataset in tests:
        for n in (100, 300, 1000):
            got = [r for r in out["sets"] if r["dataset"] == dataset and r["n"] >= n * 0.95 and r["n"] <= n * 1.05]
            if got:
                out.setdefault("means", []).append(
                    {
                        "dataset": dataset,
                        "n": n,
                        "sets": len(got),
                        **{
                            k: round(float(np.mean([r[k] for r in got])), 4)
                            for k in ("zero_shot_judge", f"real_{a.m}", "union", "filtered_balanced")
                        },
                    }
                )
    write_result(a.name, out)


if __name__ == "__main__":
    main()
