"""Top-Q voting alone: M = 10,000 private, N = 100,000 synthetic, 384-d, 2 classes, Q = 8.

Target (issue #3): under 15 s on 2 cores with bounded memory, with the discrete Gaussian a run draws
(the float noise it replaced is timed beside it).  Memory is bounded
by chunking (``chunk_rows`` private rows x n_class synthetic distances at a time);
we report peak RSS growth.

    python bench/bench_voting.py [--m 10000] [--n 100000]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402
from dpsynth.privacy.voting import noisy_top_q_vote, top_q_sensitivity  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--m", type=int, default=10_000)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--q", type=int, default=8)
    args = ap.parse_args()
    rng = np.random.default_rng(0)

    def unit(rows: int) -> np.ndarray:
        x = rng.normal(size=(rows, args.d)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    priv, syn = unit(args.m), unit(args.n)
    plab, slab = rng.integers(0, 2, args.m).astype(str), rng.integers(0, 2, args.n).astype(str)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    # the discrete Gaussian on the histograms' own grid, as a run draws it (sigma 3.53 spans 452 steps at Q = 8)
    grid_bits = max(args.q - 1, 1)
    votes = noisy_top_q_vote(priv, plab, syn, slab, q=args.q, use_far=True, sigma=3.53, grid_bits=grid_bits)
    secs = time.perf_counter() - t
    t = time.perf_counter()
    noisy_top_q_vote(priv, plab, syn, slab, q=args.q, use_far=True, sigma=3.53)
    float_secs = time.perf_counter() - t
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    inputs_mb = (priv.nbytes + syn.nbytes) / 2**20
    write_result(
        "voting",
        {
            "command": "python bench/bench_voting.py",
            "m_private": args.m,
            "n_synthetic": args.n,
            "dim": args.d,
            "q": args.q,
            "classes": 2,
            "seconds": round(secs, 2),
            "noise": f"discrete Gaussian on the grid 2^-{grid_bits}",
            "seconds_with_float_noise": round(float_secs, 2),
            "target_seconds": 15,
            "meets_target": secs < 15,
            "inputs_mib": round(inputs_mb, 1),
            "peak_rss_growth_mib": round((rss1 - rss0) / 1024, 1),
            "sensitivity": top_q_sensitivity(args.q, True),
            "released_bins": int(votes.near.size * 2),
        },
    )


if __name__ == "__main__":
    main()
