"""Does the verdict depend on the classifier?  Zero-shot + judge against WASP + judge, fine-tuned.

Every accuracy in docs/quality.md comes from one classifier: logistic regression on frozen MiniLM
embeddings.  The WASP paper fine-tunes the encoder instead, and a fine-tuned encoder can use what frozen
embeddings hide (wording, length, the realism WASP's contrastive rounds add), so the ranking of two
synthetic sets could differ between the two.  This script scores kept sets of the learning curve's
N = 300 pairs (zero-shot + judge and WASP + judge, same seed, same generators and judge) with
``dpsynth evaluate``'s fine-tuned classifier (MiniLM + linear head, its fixed recipe) and, for
scale, the same classifier trained on 300 real records of the benchmark's draw for that seed.  The
logistic-regression accuracy of each set is recorded beside it.

Analysis only: it reads released synthetic sets, public test splits and the public pool's draws.
Results are written after every set (``--name``), so a stopped run keeps what it measured.

    python bench/diag_finetune_clf.py [--seeds 0,1,2] [--clf-seeds 0] [--n 300] [--name diag_finetune_clf] [--no-real]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, write_result  # noqa: E402
from diag_mix import _read, _set_dir  # noqa: E402
from diag_release import CACHE, accuracy  # noqa: E402
from dpsynth.data import EMBEDDED_DATASETS  # noqa: E402
from dpsynth.evaluate.downstream import finetune_utility  # noqa: E402
from dpsynth.evaluate.inputs import default_embedder, embed_test, load_test  # noqa: E402

ROWS = ("zero-shot+judge-eps0", "wasp+judge-eps4")
# IMDb's N = 1,000 pair of seed 0 is the throughput profile's side-by-side run, kept under other names
# (same generators, judge and seed; bench/results/profile_wasp_n1000_both.json): the learning curve's pair.
# (``wasp+judge-eps4-n1000-m100-s0`` is an earlier run, made before the class-share fix.)
OVERRIDES = {
    ("imdb", 1000, 0): {"zero-shot+judge-eps0": "zero-shot+judge", "wasp+judge-eps4": "wasp+judge-pooled"},
}


def score(
    texts: list[str], labels: list[str], test: Any, test_x: np.ndarray, embedder: Any, clf_seeds: list[int]
) -> dict[str, Any]:
    """Fine-tuned accuracy (mean over ``clf_seeds``) and logistic-regression accuracy of one training set."""
    ft = finetune_utility(texts, labels, list(test.texts), [str(v) for v in test.labels], seeds=clf_seeds)
    x = embed_test(texts, embedder, CACHE)
    return {
        "n": len(texts),
        "finetune": round(float(ft["accuracy"]["mean"]), 4),
        "finetune_runs": [round(float(a), 4) for a in ft["accuracy"].get("values", [])],
        "logreg": round(accuracy(x, labels, (test_x, [str(v) for v in test.labels])), 4),
        "seconds": ft["seconds"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", default="imdb,newsgroups")
    ap.add_argument("--seeds", default="0,1,2", help="generation seeds of the kept N = 300 sets")
    ap.add_argument("--clf-seeds", default="0", help="fine-tuning seeds per set")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--name", default="diag_finetune_clf")
    ap.add_argument("--no-real", action="store_true", help="skip the real-data reference (it costs 3-4 sets)")
    a = ap.parse_args()
    clf_seeds = [int(s) for s in a.clf_seeds.split(",")]
    embedder = default_embedder()
    out: dict[str, Any] = {"n": a.n, "clf_seeds": clf_seeds, "sets": []}
    previous = RESULTS / f"{a.name}.json"  # a stopped run continues: sets already scored are kept
    if previous.exists():
        kept = json.loads(previous.read_text())
        if kept.get("n") == a.n and kept.get("clf_seeds") == clf_seeds:
            out["sets"] = kept["sets"]
    done = {(r["dataset"], r["seed"], r["row"]) for r in out["sets"]}
    first_seed = int(a.seeds.split(",")[0])
    for dataset in a.datasets.split(","):
        ds = EMBEDDED_DATASETS[f"embedded:{dataset}"]
        test = load_test(ds.source)
        test_x = embed_test(list(test.texts), embedder)
        for seed in (int(s) for s in a.seeds.split(",")):
            for row in ROWS:
                if (dataset, seed, row) in done:
                    continue
                stem = OVERRIDES.get((dataset, a.n, seed), {}).get(row, row)
                path = _set_dir(dataset) / f"{stem}-n{a.n}-m100-s{seed}.jsonl"
                if not path.exists():
                    print(f"skip {path}: not kept")
                    continue
                rows = _read(path)
                t0 = time.time()
                r = score(
                    [str(x["text"]) for x in rows], [str(x["label"]) for x in rows], test, test_x, embedder, clf_seeds
                )
                out["sets"].append({"dataset": dataset, "seed": seed, "row": row, **r})
                print(dataset, seed, row, r, f"{time.time() - t0:.0f} s", flush=True)
                write_result(a.name, out)
            if a.no_real or seed != first_seed or (dataset, seed, f"real-{a.n}") in done:
                continue  # the real-data reference once per dataset: it costs as much as a set
            real = ds.private(a.n, seed)  # the benchmark's draw of n public-pool records for this seed
            r = score(
                [str(t) for t in real["text"]], [str(v) for v in real["label"]], test, test_x, embedder, clf_seeds
            )
            out["sets"].append({"dataset": dataset, "seed": seed, "row": f"real-{a.n}", **r})
            print(dataset, seed, f"real-{a.n}", r, flush=True)
            write_result(a.name, out)


if __name__ == "__main__":
    main()
