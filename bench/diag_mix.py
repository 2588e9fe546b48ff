"""Would WASP gain from zero-shot prompts in its contrastive rounds?  An offline check on kept sets.

WASP's contrastive rounds write samples that are more realistic and more often of the right label than
zero-shot ones, and much less diverse (docs/quality.md, "Where does WASP's set lose?").  A run could keep
part of every round zero-shot (the vote would still set the generator weights and class shares).  Before
building that, this script mixes two sets that runs already released, with the same generators, judge,
N and seed: a zero-shot + judge set Z and a WASP + judge set W.  For each pair and each share f of
zero-shot samples, it draws K samples, K = the number of W's contrastive samples (rounds >= 1): f x K at
random from Z and the rest at random from W's contrastive rounds, each class getting an equal quota of
both, and scores the mix like ``dpsynth evaluate`` (logistic regression on MiniLM, the dataset's fixed test
split), ``--draws`` draws per share.  f = 0 is W's contrastive samples alone, f = 1 is Z alone (K of them).

A second question on the same zero-shot sets: would the vote pay if it only chose among the generators?
For each Z it scores each generator's samples alone against all generators mixed, at the same size (each
class the same count: the smallest a generator has of any class); the WASP run's released vote mass per
generator says which generator the vote would favour (runs/, where the run directory is kept).

Analysis only: it reads released synthetic sets and public test splits, never a private set.

    python bench/diag_mix.py [--draws 5] [--shares 0,0.25,0.5,0.75,1] [--name diag_mix]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402
from diag_release import CACHE, accuracy  # noqa: E402
from dpsynth.data import EMBEDDED_DATASETS  # noqa: E402
from dpsynth.evaluate.inputs import default_embedder, embed_test, load_test  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
# (dataset, N, seed, zero-shot set, WASP set): the pairs measured with the same code, generators and judge
PAIRS: list[tuple[str, int, int, str, str]] = [
    *[("imdb", 100, s, f"zero-shot+judge-eps0-n100-m100-s{s}", f"wasp+judge-eps4-n100-m100-s{s}") for s in (0, 1, 2)],
    ("imdb", 1000, 0, "zero-shot+judge-n1000-m100-s0", "wasp+judge-pooled-n1000-m100-s0"),
    *[
        ("newsgroups", 100, s, f"zero-shot+judge-eps0-n100-m100-s{s}", f"wasp+judge-eps4-n100-m100-s{s}")
        for s in (0, 1, 2)
    ],
    ("newsgroups", 300, 0, "zero-shot+judge-eps0-n300-m100-s0", "wasp+judge-eps4-n300-m100-s0"),
]


def _set_dir(dataset: str) -> Path:
    return RESULTS / ("quality_sets" if dataset == "imdb" else f"quality_sets_{dataset}")


def _read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def mix_scores(
    z: list[dict[str, Any]],
    w: list[dict[str, Any]],
    shares: list[float],
    draws: int,
    embedder: Any,
    test: tuple[np.ndarray, list[str]],
    seed: int,
) -> dict[str, Any]:
    """Accuracy of each zero-shot share's mixes (mean, std over draws), and of both sets as released."""
    xz = embed_test([str(r["text"]) for r in z], embedder, CACHE)
    xw = embed_test([str(r["text"]) for r in w], embedder, CACHE)
    yz = np.asarray([str(r["label"]) for r in z])
    yw = np.asarray([str(r["label"]) for r in w])
    contrastive = np.asarray([int(r.get("round", 0)) >= 1 for r in w])
    classes = sorted(set(yz) | set(yw))
    per_class = min(
        min(int(((yw == c) & contrastive).sum()) for c in classes), min(int((yz == c).sum()) for c in classes)
    )
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {
        "zero_shot_as_released": accuracy(xz, list(yz), test),
        "wasp_as_released": accuracy(xw, list(yw), test),
        "per_class": per_class,
        "k": per_class * len(classes),
        "shares": {},
    }
    for f in shares:
        n_z = round(f * per_class)
        accs = []
        for _ in range(draws):
            rows_z: list[int] = []
            rows_w: list[int] = []
            for c in classes:
                rows_z += rng.choice(np.flatnonzero(yz == c), n_z, replace=False).tolist()
                pool = np.flatnonzero((yw == c) & contrastive)
                rows_w += rng.choice(pool, per_class - n_z, replace=False).tolist()
            x = np.concatenate([xz[rows_z], xw[rows_w]])
            y = list(yz[rows_z]) + list(yw[rows_w])
            accs.append(accuracy(x, y, test))
        out["shares"][str(f)] = {"mean": float(np.mean(accs)), "std": float(np.std(accs, ddof=1)) if draws > 1 else 0.0}
    return out


def per_generator(
    z: list[dict[str, Any]], draws: int, embedder: Any, test: tuple[np.ndarray, list[str]], seed: int
) -> dict[str, Any]:
    """Accuracy of each generator's zero-shot samples alone, and of all generators mixed, at equal size."""
    x = embed_test([str(r["text"]) for r in z], embedder, CACHE)
    y = np.asarray([str(r["label"]) for r in z])
    g = np.asarray([str(r["generator"]) for r in z])
    classes, gens = sorted(set(y)), sorted(set(g))
    per_class = min(int(((g == a) & (y == c)).sum()) for a in gens for c in classes)
    rng = np.random.default_rng(seed)

    def score(mask: np.ndarray) -> float:
        accs = []
        for _ in range(draws):
            picks = [rng.choice(np.flatnonzero(mask & (y == c)), per_class, replace=False) for c in classes]
            idx = np.concatenate(picks)
            accs.append(accuracy(x[idx], list(y[idx]), test))
        return float(np.mean(accs))

    return {
        "per_class": per_class,
        "alone": {a: score(g == a) for a in gens},
        "mixed": score(np.ones(len(z), dtype=bool)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--shares", default="0,0.25,0.5,0.75,1")
    ap.add_argument("--name", default="diag_mix")
    args = ap.parse_args()
    shares = [float(s) for s in args.shares.split(",")]
    embedder = default_embedder()
    tests: dict[str, tuple[np.ndarray, list[str]]] = {}
    results = []
    for dataset, n, seed, zname, wname in PAIRS:
        d = _set_dir(dataset)
        zp, wp = d / f"{zname}.jsonl", d / f"{wname}.jsonl"
        if not (zp.exists() and wp.exists()):
            print(f"skip {dataset} N={n} seed {seed}: a set is missing", flush=True)
            continue
        if dataset not in tests:
            t = load_test(EMBEDDED_DATASETS[f"embedded:{dataset}"].source)
            tests[dataset] = (embed_test(list(t.texts), embedder), [str(v) for v in t.labels])
        z = _read(zp)
        r = mix_scores(z, _read(wp), shares, args.draws, embedder, tests[dataset], seed)
        r["per_generator"] = per_generator(z, args.draws, embedder, tests[dataset], seed)
        runs = Path("runs") / ("quality" if dataset == "imdb" else f"quality-{dataset}") / wname
        if (runs / "rounds.json").exists():  # the vote mass each generator received, round by round
            rounds = json.loads((runs / "rounds.json").read_text(encoding="utf-8"))
            r["wasp_vote_mass"] = [x.get("vote_mass") for x in rounds if x.get("vote_mass")]
        r.update(dataset=dataset, n=n, seed=seed, zero_shot_set=zname, wasp_set=wname)
        print(json.dumps(r), flush=True)
        results.append(r)
    write_result(
        args.name,
        {
            "command": "python bench/diag_mix.py " + " ".join(sys.argv[1:]),
            "evaluator": "LogisticRegression on MiniLM embeddings, the dataset's fixed test split",
            "draws": args.draws,
            "pairs": results,
        },
    )


if __name__ == "__main__":
    main()
