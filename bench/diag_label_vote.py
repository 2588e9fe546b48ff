"""Would a label-aware vote see label errors?  An offline check on kept synthetic sets.

WASP's vote lets each private record vote only among synthetic samples of its *own* class, so a sample
labelled "positive" that reads negative is invisible to it.  A label-aware vote would add a *cross*
histogram: each private record also votes for its Q nearest synthetic samples of the *other* classes,
and a sample that private records of another class find near counts against it.

This script measures, before any such mechanism goes into the package, whether the cross signal carries
information at the noise a real run would add.  For every kept set in bench/results/quality_sets/:

* the population is the set; the private records are the benchmark's private draw (embedded IMDb pool,
  M = 100, seed 0), embedded with MiniLM;
* "mislabelled" = a judge trained on the real test split (as `dpsynth evaluate`'s label consistency)
  gives the sample another label;
* near (own class, as today) and cross histograms with Gaussian noise at the sigma a default run would
  use (epsilon 4, delta 1e-5, T = 4, Q = 8, near + far; with the cross histogram added to the released
  vector its sensitivity grows from sqrt(2 s) to sqrt(3 s), s = sum 4^-r);
* reported: AUC of each score for telling correctly labelled samples from mislabelled ones, and the
  share of correctly labelled samples among each class's top-S (S = 8) "good examples" chosen by near
  alone vs by near - cross (averaged over noise draws).

Analysis only: the private records here are public benchmark data; only aggregates are written.

    python bench/diag_label_vote.py [--sets '*'] [--draws 20] [--name diag_label_vote]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402
from dpsynth.data import imdb_private, imdb_split  # noqa: E402
from dpsynth.evaluate.core import default_embedder, embed_test  # noqa: E402
from dpsynth.privacy.accountant import GaussianPlan  # noqa: E402

SETS = Path(__file__).resolve().parent / "results" / "quality_sets"
CACHE = Path("runs/diag_cache")
Q, S, T, EPS, DELTA = 8, 8, 4, 4.0, 1e-5


def histograms(priv: np.ndarray, priv_y: np.ndarray, syn: np.ndarray, syn_y: np.ndarray) -> tuple[np.ndarray, ...]:
    """Pre-noise near (own class) and cross (other classes) Top-Q histograms, weights 2^-r."""
    w = np.array([2.0**-r for r in range(Q)])
    near = np.zeros(len(syn))
    cross = np.zeros(len(syn))
    score = priv @ syn.T * 2 - np.einsum("ij,ij->i", syn, syn)[None, :]
    for i in range(len(priv)):
        for hist, mask in ((near, syn_y == priv_y[i]), (cross, syn_y != priv_y[i])):
            cand = np.flatnonzero(mask)
            k = min(Q, cand.size)
            top = cand[np.argsort(-score[i, cand])[:k]]
            hist[top] += w[:k]
    return near, cross


def auc(score: np.ndarray, positive: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative), ties half."""
    pos, neg = score[positive], score[~positive]
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    diff = pos[:, None] - neg[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def top_share(score: np.ndarray, labels: np.ndarray, correct: np.ndarray) -> float:
    chosen = [i for c in np.unique(labels) for i in np.flatnonzero(labels == c)[np.argsort(-score[labels == c])[:S]]]
    return float(correct[chosen].mean())


def analyse(
    rows: list[dict[str, Any]],
    priv: np.ndarray,
    priv_y: np.ndarray,
    judge: Any,
    embedder: Any,
    sigmas: dict[str, float],
    draws: int,
    rng: np.random.Generator,
) -> dict[str, Any]:
    x = embed_test([r["text"] for r in rows], embedder, CACHE)
    y = np.asarray([str(r["label"]) for r in rows])
    correct = judge.predict(x) == y
    near, cross = histograms(priv, priv_y, x, y)
    out: dict[str, Any] = {"n": len(rows), "mislabelled": round(float(1 - correct.mean()), 4)}
    for name, sigma in sigmas.items():
        res: dict[str, list[float]] = {
            k: [] for k in ("auc_near", "auc_near_minus_cross", "auc_minus_cross", "top_near", "top_near_minus_cross")
        }
        for _ in range(draws):
            n = near + rng.normal(0, sigma, near.shape)
            c = cross + rng.normal(0, sigma, cross.shape)
            res["auc_near"].append(auc(n, correct))
            res["auc_near_minus_cross"].append(auc(n - c, correct))
            res["auc_minus_cross"].append(auc(-c, correct))
            res["top_near"].append(top_share(n, y, correct))
            res["top_near_minus_cross"].append(top_share(n - c, y, correct))
        out[name] = {k: round(float(np.nanmean(v)), 4) for k, v in res.items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="*")
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--name", default="diag_label_vote")
    args = ap.parse_args()
    import json

    from sklearn.linear_model import LogisticRegression

    embedder = default_embedder()
    _, test = imdb_split()
    x_test = embed_test(list(test["text"]), embedder)
    judge = LogisticRegression(max_iter=2000).fit(x_test, test["label"].astype(str).to_numpy())
    private = imdb_private(100, seed=0)
    priv = embedder.encode(list(private["text"]))
    priv_y = private["label"].astype(str).to_numpy()
    s = sum(4.0**-r for r in range(Q))
    sigmas = {
        "no_noise": 0.0,
        "eps4_near_far": GaussianPlan.calibrate(EPS, DELTA, T, math.sqrt(2 * s)).sigma,
        "eps4_near_far_cross": GaussianPlan.calibrate(EPS, DELTA, T, math.sqrt(3 * s)).sigma,
    }
    rng = np.random.default_rng(0)
    results: dict[str, Any] = {}
    for path in sorted(SETS.glob(f"{args.sets}.jsonl")):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        results[path.stem] = analyse(rows, priv, priv_y, judge, embedder, sigmas, args.draws, rng)
        print(path.stem, json.dumps(results[path.stem]["eps4_near_far_cross"]), flush=True)
    summary: dict[str, Any] = {}
    for name in sigmas:
        keys = next(iter(results.values()))[name].keys()
        summary[name] = {k: round(float(np.nanmean([r[name][k] for r in results.values()])), 4) for k in keys}
    summary["mislabelled_mean"] = round(float(np.mean([r["mislabelled"] for r in results.values()])), 4)
    write_result(
        args.name,
        {
            "command": "python bench/diag_label_vote.py " + " ".join(sys.argv[1:]),
            "settings": {"q": Q, "top_s": S, "rounds": T, "epsilon": EPS, "delta": DELTA, "m_private": 100},
            "sigmas": {k: round(v, 4) for k, v in sigmas.items()},
            "summary": summary,
            "sets": results,
        },
    )


if __name__ == "__main__":
    main()
