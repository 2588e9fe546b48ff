"""Where does WASP's set drift from real data?  Round by round, offline, on finished runs.

The quality issue's question is why WASP, which spends privacy to learn what the private data looks
like, releases sets that score no better than zero-shot prompting.  This script splits the question in
two, for every run directory given:

1. **Does the released vote point at realistic samples?**  For each vote (votes/round_t.npz, released,
   noisy): the correlation between a sample's near - far votes and its *realism*, the cosine to its
   nearest real test record of the same label (the public test split stands in for the private
   distribution, which it shares); and the realism of the good pool (the top ``--top-s`` near votes per
   class, as the run picks them) against the mean of the voted population.
2. **Do the rounds prompted with that pool write more realistic samples?**  For each round's samples:
   FID to the test split (in MiniLM space), diversity (mean cosine to the nearest other sample of the
   round: 1 = duplicates), and mean realism as above.  FID and diversity depend on the set's size, so
   both are measured on ``--chunk`` samples at a time (default 200, a round of a default N = 1,000 run).

A run may also be a kept set (bench/results/quality_sets/NAME.jsonl: text, label, round), e.g. a
zero-shot set for comparison; it has no votes.  For scale, ``real_reference`` gives the same figures for
``--reference-n`` real test records (drawn with seed 0) measured against the rest of the test split.

Analysis only: it reads released synthetic samples, released votes and the public test split, never a
private record.

    python bench/diag_rounds.py --run RUN_DIR_OR_SET [--run ...] [--dataset imdb|newsgroups] [--name diag_rounds]
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
from dpsynth.evaluate.fidelity import frechet_distance  # noqa: E402
from dpsynth.evaluate.inputs import default_embedder, embed_test, load_test  # noqa: E402

CACHE = Path("runs/diag_cache")  # synthetic embeddings (bench/diag_release.py's cache)


def diversity(x: np.ndarray) -> float:
    """Mean cosine of each (unit-norm) embedding to its nearest other one."""
    s = x @ x.T
    np.fill_diagonal(s, -np.inf)
    return float(s.max(axis=1).mean())


def realism(x: np.ndarray, y: np.ndarray, real: np.ndarray, real_y: np.ndarray) -> np.ndarray:
    """Each sample's cosine to its nearest real record of its own label (0 where the label has none)."""
    out = np.zeros(len(x))
    for c in np.unique(y):
        ref = real[real_y == c]
        if len(ref):
            out[y == c] = (x[y == c] @ ref.T).max(axis=1)
    return out


def one_run(run: Path, real: np.ndarray, real_y: np.ndarray, embedder: Any, top_s: int, chunk: int) -> dict[str, Any]:
    journal = run if run.is_file() else run / "samples.journal.jsonl"
    rows = [json.loads(r) for r in journal.read_text(encoding="utf-8").splitlines() if r.strip()]
    x = embed_test([str(r["text"]) for r in rows], embedder, CACHE)
    y = np.asarray([str(r["label"]) for r in rows])
    rounds = np.asarray([int(r["round"]) for r in rows])
    real_of = realism(x, y, real, real_y)
    per_round = {}
    for t in sorted(set(rounds.tolist())):
        idx = np.flatnonzero(rounds == t)
        # figures depend on the set size: a round larger than --chunk is measured in consecutive chunks
        # of that size (in generation order), averaged, so that rounds and runs of different sizes compare
        parts = [idx[i : i + chunk] for i in range(0, len(idx) - chunk + 1, chunk)] if len(idx) > chunk else [idx]
        per_round[str(t)] = {
            "n": len(idx),
            "chunks": len(parts),
            "fid": round(float(np.mean([frechet_distance(x[q], real) for q in parts])), 4),
            "diversity_nn_cos": round(float(np.mean([diversity(x[q]) for q in parts])), 4),
            "realism": round(float(real_of[idx].mean()), 4),
        }
    pos = {int(r["id"]): p for p, r in enumerate(rows) if "id" in r}  # kept sets have no ids (and no votes)
    per_vote = {}
    votes = sorted((run / "votes").glob("round_*.npz"), key=lambda p: int(p.stem.split("_")[1])) if run.is_dir() else []
    for f in votes:
        v = np.load(f)
        p = np.asarray([pos[int(i)] for i in v["ids"]])
        near = np.asarray(v["near"], dtype=float)
        score = near - (np.asarray(v["far"], dtype=float) if v["far"].size else 0.0)
        good = np.concatenate(
            [np.flatnonzero(y[p] == c)[np.argsort(-near[y[p] == c], kind="stable")[:top_s]] for c in np.unique(y[p])]
        )
        per_vote[f.stem] = {
            "population": len(p),
            "corr_near_minus_far_realism": round(float(np.corrcoef(score, real_of[p])[0, 1]), 4),
            "good_pool_realism": round(float(real_of[p][good].mean()), 4),
            "population_realism": round(float(real_of[p].mean()), 4),
        }
    result = {"samples": len(rows), "rounds": per_round, "votes": per_vote}
    print(run, json.dumps(result), flush=True)
    return result


def real_reference(real: np.ndarray, real_y: np.ndarray, n: int) -> dict[str, Any]:
    """The per-round figures for n real test records, against the other test records."""
    pick = np.random.default_rng(0).permutation(len(real))
    held, rest = pick[:n], pick[n:]
    return {
        "n": n,
        "reference": len(rest),
        "fid": round(frechet_distance(real[held], real[rest]), 4),
        "diversity_nn_cos": round(diversity(real[held]), 4),
        "realism": round(float(realism(real[held], real_y[held], real[rest], real_y[rest]).mean()), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", action="append", required=True, help="a finished WASP run directory")
    ap.add_argument("--dataset", choices=[n.removeprefix("embedded:") for n in EMBEDDED_DATASETS], default="imdb")
    ap.add_argument("--top-s", type=int, default=8, help="good pool size per class (wasp.top_s)")
    ap.add_argument("--chunk", type=int, default=200, help="set size at which FID and diversity are measured")
    ap.add_argument("--reference-n", type=int, default=None, help="real test records in real_reference (--chunk)")
    ap.add_argument("--name", default="diag_rounds")
    args = ap.parse_args()
    embedder = default_embedder()
    ds = EMBEDDED_DATASETS[f"embedded:{args.dataset}"]
    test = load_test(ds.source)
    real = embed_test(list(test.texts), embedder)
    real_y = np.asarray([str(v) for v in test.labels])
    write_result(
        args.name,
        {
            "command": "python bench/diag_rounds.py " + " ".join(sys.argv[1:]),
            "dataset": ds.source,
            "embedding": embedder.name,
            "real_reference": real_reference(real, real_y, args.reference_n or args.chunk),
            "runs": {run: one_run(Path(run), real, real_y, embedder, args.top_s, args.chunk) for run in args.run},
        },
    )


if __name__ == "__main__":
    main()
