"""How much does one released vote rank its population?  Exact against noisy votes, round by round.

WASP's vote covers every sample made so far (docs/wasp.md, step 1), while the private records hand out
the same votes each round and the noise on every bin stays sigma.  So the vote mass an average sample
receives falls as 1 / population, and with it the vote's power to tell samples apart.  For each run
directory given (a benchmark run, whose private records are the benchmark's public draw), per vote:

* ``signal``: votes per sample over the noise sd as the run records it (rounds.json ``vote_signal``,
  ``selection.vote_signal``), recomputed here from the released votes;
* ``exact_signal``: the same from the exact (pre-noise) histogram, which this script can rebuild because
  the benchmark's "private" records are public data;
* ``corr``: correlation of the released near votes with the exact ones;
* ``top_overlap``: the share of the released vote's top ``S`` per class (the good pool) that is also in
  the exact vote's top ``S``; ``top_overlap_sim``: its mean over ``--draws`` fresh noise draws;
* ``latest_only_sim``: the same overlap had the vote covered only the previous round's samples
  (``wasp.vote_on: latest``); its top 8 is chosen among fewer samples per class, so chance alone would
  share more of it (8 / n_c).

Analysis only: the private records here are the benchmark's public draw; only aggregates are written.

    python bench/diag_vote_signal.py --run RUN_DIR [--run ...] [--draws 50] [--name diag_vote_signal]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402
from dpsynth.datasets import EMBEDDED_DATASETS  # noqa: E402
from dpsynth.evaluate.core import default_embedder  # noqa: E402
from dpsynth.privacy.voting import _vote_histograms  # noqa: E402
from dpsynth.selection import class_count_estimates, pooled_class_counts, vote_signal  # noqa: E402

S = 8


def top_overlap(score: np.ndarray, exact: np.ndarray, labels: np.ndarray) -> float:
    """Mean over classes of |top-S by score & top-S by exact| / S."""
    shares = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = min(S, idx.size)
        a = set(idx[np.argsort(-score[idx], kind="stable")[:k]].tolist())
        b = set(idx[np.argsort(-exact[idx], kind="stable")[:k]].tolist())
        shares.append(len(a & b) / k)
    return float(np.mean(shares))


def analyse(run: Path, embedder: Any, draws: int, rng: np.random.Generator) -> dict[str, Any]:
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    data, w = cfg["data"], cfg.get("wasp") or {}
    if data.get("private") not in EMBEDDED_DATASETS:
        raise SystemExit(f"{run}: not a run on an embedded (public) dataset; this check rebuilds exact votes")
    if cfg.get("embedding_model", "all-MiniLM-L6-v2") != "all-MiniLM-L6-v2":
        raise SystemExit(f"{run}: voted with {cfg['embedding_model']}; this check embeds with MiniLM")
    q, labels = int(w.get("q", 8)), [str(k) for k in data["labels"]]
    priv = EMBEDDED_DATASETS[data["private"]].private(int(data["n_private"]), int(data["seed"]))
    p_emb = embedder.encode([str(t) for t in priv["text"]])
    p_lab = np.asarray([str(x) for x in priv["label"]])
    samples = {r["id"]: r for r in map(json.loads, (run / "samples.journal.jsonl").open(encoding="utf-8"))}
    counts, rounds = [], []
    t = 1
    while (run / "votes" / f"round_{t}.npz").exists():
        v = np.load(run / "votes" / f"round_{t}.npz")
        ids, sigma = [int(i) for i in v["ids"]], float(v["sigma"])
        if sigma <= 0:
            raise SystemExit(f"{run}: an exact vote (epsilon = inf) has no noise to compare with")
        lab = np.asarray([str(samples[i]["label"]) for i in ids])
        rnd = np.asarray([int(samples[i]["round"]) for i in ids])
        emb = embedder.encode([samples[i]["text"] for i in ids])
        exact, _ = _vote_histograms(p_emb, p_lab, emb, lab, q, False)
        far = v["far"] if v["far"].size else None
        counts.append(class_count_estimates(v["near"], far, list(lab), labels, q=q, sigma=sigma))
        latest = rnd == t - 1
        exact_latest, _ = _vote_histograms(p_emb, p_lab, emb[latest], lab[latest], q, False)

        def sim(h: np.ndarray, y: np.ndarray, sigma: float = sigma) -> float:
            return float(np.mean([top_overlap(h + rng.normal(0, sigma, h.size), h, y) for _ in range(draws)]))

        rounds.append(
            {
                "round": t,
                "population": len(ids),
                "sigma": round(sigma, 3),
                "signal": round(
                    float(vote_signal(pooled_class_counts(counts, labels), list(lab), q=q, sigma=sigma)), 3
                ),
                "exact_signal": round(float(exact.mean()) / sigma, 3),
                "corr": round(float(np.corrcoef(v["near"], exact)[0, 1]), 3),
                "top_overlap": round(top_overlap(v["near"], exact, lab), 3),
                "top_overlap_sim": round(sim(exact, lab), 3),
                "latest_only_population": int(latest.sum()),
                "latest_only_sim": round(sim(exact_latest, lab[latest]), 3),
            }
        )
        t += 1
    return {
        "run": f"{run.parent.name}/{run.name}",
        "dataset": data["private"],
        "seed": int(data["seed"]),
        "rounds": rounds,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="append", required=True, help="a benchmark run directory (repeatable)")
    ap.add_argument("--draws", type=int, default=50, help="noise draws for the simulated overlaps")
    ap.add_argument("--name", default="diag_vote_signal")
    args = ap.parse_args()
    embedder = default_embedder()
    rng = np.random.default_rng(0)  # analysis noise only: no release is drawn here
    runs = [analyse(Path(r), embedder, args.draws, rng) for r in args.run]
    write_result(args.name, {"top_s": S, "draws": args.draws, "runs": runs})


if __name__ == "__main__":
    main()
