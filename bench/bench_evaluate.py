"""Speed of ``dpsynth evaluate``: 6,000 synthetic samples, default classifier + every fidelity metric.

Target (issue #4): a few minutes on 2 cores.  The "synthetic" set is 6,000 IMDb pool reviews
truncated to 60 words with a round column 0..4 (the shape of a WASP output; this is only a speed
benchmark).  The test set is embedded:imdb (2,000 reviews).  Two passes:

* cold: empty test-embedding cache (embeds the 2,000 test reviews too);
* warm: test embeddings cached (the usual case: the test set is fixed).

Both embed the 6,000 synthetic texts (all-MiniLM-L6-v2, max_seq_length 256).  Wall and CPU
seconds are both recorded: on a machine shared with other jobs the wall clock overstates the cost.  A reference check
trains on 1,000 real (untruncated) pool reviews: the project measured 0.767 accuracy for that (docs/quality.md).

    python bench/bench_evaluate.py [--n 6000] [--skip-cold] [--skip-reference]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from common import write_result  # noqa: E402
from dpsynth.data import imdb_split  # noqa: E402
from dpsynth.evaluate import evaluate  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=6000)
    ap.add_argument("--words", type=int, default=60)
    ap.add_argument("--skip-cold", action="store_true")
    ap.add_argument("--skip-reference", action="store_true")
    args = ap.parse_args()

    pool, _ = imdb_split()
    syn = pool.sample(n=args.n, random_state=0).reset_index(drop=True)
    syn["text"] = syn["text"].map(lambda t: " ".join(t.split()[: args.words]))
    syn["round"] = [i % 5 for i in range(len(syn))]
    load_before = os.getloadavg()
    passes = {}
    with tempfile.TemporaryDirectory() as cold_cache:
        for name in (["cold"] if not args.skip_cold else []) + ["warm"]:
            cache = cold_cache if name == "cold" else None  # None: the user's ~/.cache/dpsynth/eval
            if name == "warm":
                evaluate(syn.head(10), "embedded:imdb", fidelity_metrics=False, per_round=False, write=False)
            t, c = time.perf_counter(), time.process_time()
            res = evaluate(syn, "embedded:imdb", cache_dir=cache, write=False, progress=lambda m: None)
            secs, cpu = time.perf_counter() - t, time.process_time() - c
            passes[name] = {
                "seconds": round(secs, 1),
                # CPU seconds of this process (all threads): on a shared machine, cpu/2 is what the
                # wall clock would be on 2 idle cores at best
                "cpu_seconds": round(cpu, 1),
                "breakdown_s": res["timings_s"],
                "logreg_accuracy": res["utility"]["logreg"]["accuracy"]["mean"],
                "fidelity": res["fidelity"],
            }
            print(f"{name}: {secs:.1f} s wall, {cpu:.1f} s cpu {res['timings_s']}", file=sys.stderr)
    reference = None
    if not args.skip_reference:
        real = pool.sample(n=1000, random_state=1)
        t = time.perf_counter()
        r = evaluate(real, "embedded:imdb", fidelity_metrics=False, per_round=False, write=False)
        reference = {
            "train": "1,000 real IMDb pool reviews (untruncated, sample random_state=1)",
            "logreg_accuracy": r["utility"]["logreg"]["accuracy"]["mean"],
            "targets_md_accuracy": 0.767,
            "seconds": round(time.perf_counter() - t, 1),
        }
    write_result(
        "evaluate_speed",
        {
            "command": "python bench/bench_evaluate.py",
            "n_synthetic": args.n,
            "synthetic": f"IMDb pool reviews truncated to {args.words} words (speed only)",
            "test": "embedded:imdb (2,000 reviews)",
            "metrics": "logreg utility, FID, precision/recall k=3, MAUVE, text stats, per-round FID (5 rounds)",
            "passes": passes,
            "target": "a few minutes on 2 cores",
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "reference_check": reference,
        },
    )


if __name__ == "__main__":
    main()
