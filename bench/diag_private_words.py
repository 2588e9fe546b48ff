"""Would a DP histogram of the private records' own words give the keyword prompts something new?

The keyword variation (``wasp.variation: keywords``) picks its words from synthetic samples the vote
ranked, so it can only name words the generators already write.  A different mechanism would count the
private records' own words: each record contributes to the words it uses, out of a public candidate list,
and the per-class counts are released with Gaussian noise.  Words the private records of a class use
much more often than that class's synthetic samples ("under-produced" words) would then go into prompts.

Before building that mechanism, this script measures what it would release, offline, on the benchmark's
private draws (public data here):

* candidate list: the words (sklearn's English stop words and words under three letters dropped) of the
  kept zero-shot + judge set of the same seed and N = 300, i.e. public synthetic text, as a run's seed
  round would provide;
* each record's vector: 1 / sqrt(w) on each of the w candidate words it uses, so its L2 norm is 1 and the
  per-class histogram (a record adds to its own class only) has L2 sensitivity 1 under add/remove;
* noise: the noise multiplier of a default run (epsilon 4, delta 1e-5) with the histogram as a fifth
  release beside its T = 4 votes, i.e. sigma = z(epsilon 4, 5 releases) x 1;
* reported per dataset, M and seed (``--draws`` noise draws): how many words per class pass a 4 sigma
  threshold (with about 2,000 candidates per class, pure noise passes one in about 16 draws), how many of
  those are under-produced (the class's private share of records using the word at least twice its
  synthetic share), and the under-produced words of the first draw, best first.

Analysis only: the "private" records are the public benchmark pool's draws; only aggregates are written.

    python bench/diag_private_words.py [--datasets imdb,newsgroups] [--m 100,1000] [--seeds 0,1,2]
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
from dpsynth.data import EMBEDDED_DATASETS  # noqa: E402
from dpsynth.privacy.accountant import GaussianPlan  # noqa: E402

PATTERN = r"(?u)\b[^\W\d_][^\W\d_'-]{2,23}\b"  # the words selection.pool_keywords counts
EPS, DELTA, RELEASES, THRESHOLD, UNDER = 4.0, 1e-5, 5, 4.0, 2.0


def measure(dataset: str, m: int, seed: int, draws: int) -> dict[str, Any]:
    from sklearn.feature_extraction.text import CountVectorizer

    syn = _read(_set_dir(dataset) / f"zero-shot+judge-eps0-n300-m100-s{seed}.jsonl")
    vec = CountVectorizer(stop_words="english", token_pattern=PATTERN, binary=True)
    seen = vec.fit_transform([r["text"] for r in syn])
    vocab = vec.get_feature_names_out()
    syn_y = np.array([str(r["label"]) for r in syn])
    priv = EMBEDDED_DATASETS[f"embedded:{dataset}"].private(m, seed)
    priv_y = priv["label"].astype(str).to_numpy()
    used = vec.transform(priv["text"].tolist()).toarray().astype(np.float64)
    n_words = used.sum(axis=1, keepdims=True)
    weighted = used / np.sqrt(np.maximum(n_words, 1.0))  # each record's L2 norm is 1 (0 with no candidate word)
    sigma = GaussianPlan.calibrate(EPS, DELTA, RELEASES, 1.0).sigma
    rng = np.random.default_rng(seed)
    classes: dict[str, Any] = {}
    for c in sorted(set(priv_y)):
        rows = priv_y == c
        hist = weighted[rows].sum(axis=0)
        priv_share = used[rows].mean(axis=0)
        syn_rows = syn_y == c
        syn_share = np.asarray(seen[syn_rows].sum(axis=0)).ravel() / max(1, int(syn_rows.sum()))
        # a word is under-produced if the class's records use it at least UNDER times as often as its samples
        under = priv_share >= UNDER * np.maximum(syn_share, 1.0 / max(1, int(syn_rows.sum())))
        passed: list[int] = []
        passed_under: list[int] = []
        first: list[str] = []
        for d in range(draws):
            noisy = hist + rng.normal(0.0, sigma, hist.size)
            keep = noisy > THRESHOLD * sigma
            passed.append(int(keep.sum()))
            passed_under.append(int((keep & under).sum()))
            if d == 0:
                order = np.argsort(-np.where(keep & under, noisy, -np.inf))
                first = [str(vocab[i]) for i in order[: int((keep & under).sum())][:15]]
        classes[c] = {
            "records": int(rows.sum()),
            "candidate_words_per_record": round(float(n_words[rows].mean()), 1),
            "passed_mean": round(float(np.mean(passed)), 2),
            "passed_under_produced_mean": round(float(np.mean(passed_under)), 2),
            "best_true_weight_over_sigma": round(float(hist.max() / sigma), 2),
            "under_produced_words_first_draw": first,
        }
    return {
        "dataset": dataset,
        "m": m,
        "seed": seed,
        "candidates": len(vocab),
        "sigma": round(sigma, 3),
        "classes": classes,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="imdb,newsgroups")
    ap.add_argument("--m", default="100,1000")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--name", default="diag_private_words")
    a = ap.parse_args()
    out = []
    for dataset in a.datasets.split(","):
        for m in (int(x) for x in a.m.split(",")):
            for seed in (int(x) for x in a.seeds.split(",")):
                r = measure(dataset, m, seed, a.draws)
                out.append(r)
                for c, v in r["classes"].items():
                    print(
                        f"{dataset} M={m} seed={seed} {c}: passed {v['passed_mean']}, under-produced "
                        f"{v['passed_under_produced_mean']}: {' '.join(v['under_produced_words_first_draw'][:10])}"
                    )
    settings = {"epsilon": EPS, "delta": DELTA, "releases": RELEASES, "threshold_sigmas": THRESHOLD}
    print(write_result(a.name, {"settings": settings, "draws": a.draws, "results": out}))


if __name__ == "__main__":
    main()
