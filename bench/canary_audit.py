"""Canary audit of DP fine-tuning (issue 5): exposure and verbatim leakage at epsilon = inf, 8, 4.

Canaries ``<name>'s secret code is <4 digits>`` repeated 1, 10 and 100 times are added to 100 IMDb
reviews; SmolLM2-135M + LoRA is fine-tuned once per epsilon (inf = no clipping, no noise) with the
same schedule; each true secret is ranked among all 10,000 secrets of its length.

    OMP_NUM_THREADS=1 python bench/canary_audit.py [--epsilons inf,8,4] [--n-private 100] [--digits 4]

Writes bench/results/canary_audit.json (and prints the Markdown table used in docs/dp-finetune.md).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402
from dpsynth.audit.canaries import AuditSettings, markdown_table, run_canary_audit  # noqa: E402
from dpsynth.config import FinetuneConfig  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epsilons", default="inf,8,4")
    ap.add_argument("--n-private", "--m-private", dest="m_private", type=int, default=100)
    ap.add_argument("--digits", type=int, default=4)
    ap.add_argument("--repeats", default="1,10,100")
    ap.add_argument("--candidates", type=int, default=10_000)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--epochs", type=float, default=4.0)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--learning-rate", type=float, default=5e-3)
    ap.add_argument("--max-length", type=int, default=32)
    ap.add_argument("--prompt-format", default="plain", choices=["plain", "chat", "auto"])
    ap.add_argument("--name", default="canary_audit")
    args = ap.parse_args()
    ft = FinetuneConfig(
        prompt_format=args.prompt_format,
        max_length=args.max_length,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        max_new_tokens=40,
        generation_batch_size=32,
        checkpoint_every=10**6,
    )
    settings = AuditSettings(
        epsilons=tuple(math.inf if e.strip() == "inf" else float(e) for e in args.epsilons.split(",")),
        m_private=args.m_private,
        digits=args.digits,
        repeats=tuple(int(r) for r in args.repeats.split(",")),
        n_candidates=args.candidates,
        n_samples=args.samples,
    )
    t0 = time.perf_counter()
    result = run_canary_audit(settings, ft, log=lambda m: print(m, file=sys.stderr, flush=True))
    result["total_seconds"] = time.perf_counter() - t0
    result["command"] = "OMP_NUM_THREADS=1 python bench/canary_audit.py " + " ".join(sys.argv[1:])
    print(markdown_table(result))
    write_result(args.name, result)


if __name__ == "__main__":
    main()
