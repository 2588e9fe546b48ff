"""What should a run release, and in what shape?  Offline checks on kept synthetic sets.

Two questions from the quality issue, answered without generating anything new (every variant is a
post-processing of a set a run already released, so it costs no privacy):

1. **Cut at the last full sentence.**  Samples stop at ``max_new_tokens``; about half end mid-sentence.
   For every set in bench/results/quality_sets/ this scores the set as kept and with each sample cut
   after its last sentence end (``.``, ``!``, ``?``, optionally followed by a closing quote or bracket),
   when that leaves at least ``--min-chars`` characters (shorter samples are kept whole).  The rule is
   the pipeline's own (``dpsynth.prompts.cut_to_sentence``, on by default as ``wasp.whole_sentences``);
   since the results in diag_release.json were written it also skips abbreviations and initials.
2. **Which subset of a large set?**  For every run directory given with ``--run`` (a finished WASP or
   zero-shot run with samples.journal.jsonl, and for WASP the released votes in votes/): subsets of the
   same size k (default 60% of the set, each class keeping its share) chosen
   * at random (``--draws`` draws, mean and sample std),
   * for spread: greedily dropping, inside each class, the sample whose nearest neighbour is closest,
   * by round: the last rounds only,
   * by the released vote (WASP): the samples of rounds 0..T-1 ranked by near - far, summed over
     every vote that covered them (each vote covers all samples made before it; round T's samples
     were never voted on).

Every variant is scored like ``dpsynth evaluate``: logistic regression on MiniLM embeddings, the fixed
2,000-review IMDb test split (or the embedded newsgroups test split for a newsgroups run).

Analysis only: it reads released synthetic sets, released votes and public test splits, never a
private set.

    python bench/diag_release.py [--sets '*'] [--run RUN_DIR ...] [--draws 5] [--name diag_release]
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
from dpsynth.data import EMBEDDED_DATASETS  # noqa: E402
from dpsynth.evaluate.downstream import logreg_utility  # noqa: E402
from dpsynth.evaluate.inputs import default_embedder, embed_test, load_test  # noqa: E402
from dpsynth.prompts import cut_to_sentence  # noqa: E402

SETS = Path(__file__).resolve().parent / "results" / "quality_sets"
CACHE = Path("runs/diag_cache")  # synthetic embeddings, kept apart from the evaluator's test-text cache


def accuracy(x: np.ndarray, y: list[str], test: tuple[np.ndarray, list[str]]) -> float:
    return float(logreg_utility(x, y, test[0], test[1])["accuracy"]["mean"])


def per_class_counts(y: np.ndarray, k: int) -> dict[str, int]:
    """k split over classes in proportion to their counts (largest remainders)."""
    classes, counts = np.unique(y, return_counts=True)
    raw = counts / counts.sum() * k
    out = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - out))[: k - out.sum()]:
        out[i] += 1
    return {str(c): int(n) for c, n in zip(classes, out, strict=True)}


def spread_subset(x: np.ndarray, idx: np.ndarray, keep: int) -> np.ndarray:
    """Greedy near-duplicate removal inside ``idx``: drop the sample whose nearest neighbour is closest."""
    e = x[idx] / np.maximum(np.linalg.norm(x[idx], axis=1, keepdims=True), 1e-12)
    sim = e @ e.T
    np.fill_diagonal(sim, -np.inf)
    alive = np.ones(len(idx), dtype=bool)
    while alive.sum() > keep:
        nn = np.where(alive, sim.max(axis=1), -np.inf)
        drop = int(np.argmax(nn))
        alive[drop] = False
        sim[:, drop] = -np.inf
        sim[drop, :] = -np.inf
    return idx[alive]


def by_score(y: np.ndarray, score: np.ndarray, pool: np.ndarray, quota: dict[str, int]) -> np.ndarray:
    chosen = []
    for c, n in quota.items():
        cand = pool[y[pool] == c]
        chosen.extend(cand[np.argsort(-score[cand], kind="stable")[:n]])
    return np.asarray(chosen)


def cut_sets(pattern: str, min_chars: int, embedder: Any, test: tuple[np.ndarray, list[str]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path in sorted(SETS.glob(f"{pattern}.jsonl")):
        rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
        texts = [str(r["text"]) for r in rows]
        y = [str(r["label"]) for r in rows]
        cut = [cut_to_sentence(t, min_chars) for t in texts]
        before = accuracy(embed_test(texts, embedder, CACHE), y, test)
        after = accuracy(embed_test(cut, embedder, CACHE), y, test)
        out[path.stem] = {
            "n": len(rows),
            "share_cut": round(float(np.mean([a != b.rstrip() for a, b in zip(cut, texts, strict=True)])), 3),
            "words_before": round(float(np.mean([len(t.split()) for t in texts])), 1),
            "words_after": round(float(np.mean([len(t.split()) for t in cut])), 1),
            "accuracy_kept": round(before, 4),
            "accuracy_cut": round(after, 4),
            "gain": round(after - before, 4),
        }
        print(path.stem, out[path.stem], flush=True)
    return out


def subsets(run: Path, share: float, draws: int, embedder: Any, test: tuple[np.ndarray, list[str]]) -> dict[str, Any]:
    journal = (run / "samples.journal.jsonl").read_text(encoding="utf-8")
    rows = [json.loads(x) for x in journal.splitlines() if x.strip()]
    ids = np.asarray([int(r["id"]) for r in rows])
    y = np.asarray([str(r["label"]) for r in rows])
    rounds = np.asarray([int(r["round"]) for r in rows])
    x = embed_test([str(r["text"]) for r in rows], embedder, CACHE)
    k = int(round(share * len(rows)))
    quota = per_class_counts(y, k)
    everything = np.arange(len(rows))

    def score(sel: np.ndarray) -> float:
        return accuracy(x[sel], y[sel].tolist(), test)

    rng = np.random.default_rng(0)
    random = [score(by_score(y, rng.random(len(rows)), everything, quota)) for _ in range(draws)]
    result: dict[str, Any] = {
        "n": len(rows),
        "k": k,
        "all": round(score(everything), 4),
        "random": {
            "mean": round(float(np.mean(random)), 4),
            "std": round(float(np.std(random, ddof=1)), 4),
            "values": [round(v, 4) for v in random],
        },
        "spread": round(score(np.concatenate([spread_subset(x, everything[y == c], n) for c, n in quota.items()])), 4),
        "last_rounds": round(score(by_score(y, rounds.astype(float), everything, quota)), 4),
    }
    votes = list((run / "votes").glob("round_*.npz")) if (run / "votes").is_dir() else []
    if votes:
        vote = np.full(len(rows), np.nan)
        pos = {int(i): p for p, i in enumerate(ids)}
        for f in votes:
            v = np.load(f)
            for i, near, far in zip(v["ids"], v["near"], v["far"], strict=True):
                p = pos[int(i)]
                vote[p] = np.nan_to_num(vote[p]) + float(near) - float(far)
        voted = np.flatnonzero(~np.isnan(vote))
        vq = per_class_counts(y[voted], min(k, len(voted)))
        result["voted_pool"] = len(voted)
        result["random_from_voted"] = round(
            float(np.mean([score(by_score(y, rng.random(len(rows)), voted, vq)) for _ in range(draws)])), 4
        )
        result["top_vote"] = round(score(by_score(y, np.nan_to_num(vote, nan=-np.inf), voted, vq)), 4)
        result["bottom_vote"] = round(score(by_score(y, -np.nan_to_num(vote, nan=np.inf), voted, vq)), 4)
    print(run, result, flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", default="*", help="glob over quality_sets names for the sentence cut ('' to skip)")
    ap.add_argument("--run", action="append", default=[], help="run directory for the subset comparison")
    ap.add_argument("--dataset", choices=[n.removeprefix("embedded:") for n in EMBEDDED_DATASETS], default="imdb")
    ap.add_argument("--share", type=float, default=0.6, help="subset size as a share of the set")
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--min-chars", type=int, default=40)
    ap.add_argument("--name", default="diag_release")
    args = ap.parse_args()
    embedder = default_embedder()
    ds = EMBEDDED_DATASETS[f"embedded:{args.dataset}"]
    t = load_test(ds.source)
    test = (embed_test(list(t.texts), embedder), [str(v) for v in t.labels])
    payload: dict[str, Any] = {
        "command": "python bench/diag_release.py " + " ".join(sys.argv[1:]),
        "dataset": ds.source,
        "evaluator": "LogisticRegression on MiniLM embeddings, the dataset's fixed test split",
    }
    if args.sets:
        per_set = cut_sets(args.sets, args.min_chars, embedder, test)
        gains = [v["gain"] for v in per_set.values()]
        payload["sentence_cut"] = {
            "mean_gain": round(float(np.mean(gains)), 4),
            "sets_improved": sum(g > 0 for g in gains),
            "sets": len(gains),
            "per_set": per_set,
        }
    if args.run:
        payload["subsets"] = {run: subsets(Path(run), args.share, args.draws, embedder, test) for run in args.run}
    write_result(args.name, payload)


if __name__ == "__main__":
    main()
