"""How PEARL's time grows with the number of frequencies m and the number of records n.

Two parts, timed separately because only the first touches private data:
  * the sketch release (random Fourier features of every record, one Gaussian release): O(n m D);
  * generator training on the release: O(steps * C * B * m * D), independent of n.
Plus one end-to-end run on sklearn digits (1,347 training records, D = 64, 10 classes) with the
default settings, which the docs quote.

    python bench/bench_pearl.py            # writes bench/results/pearl_scaling.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402
from dpsynth.config import Config  # noqa: E402
from dpsynth.methods.pearl import Layout, PearlMethod, TrainSettings, train_generator  # noqa: E402
from dpsynth.privacy import sketch as sk  # noqa: E402
from dpsynth.progress import ProgressReporter  # noqa: E402
from dpsynth.run import RunDir  # noqa: E402


def time_sketch(n: int, m: int, dim: int = 64, classes: int = 10, repeats: int = 3) -> float:
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(n, dim))
    y = rng.integers(0, classes, size=n)
    freqs = sk.random_frequencies(dim, m, 0.3 * np.sqrt(dim), 3.0, 0)
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        counts = sk.release_counts(y, classes, noise_multiplier=1.0)
        sk.release_sketch(
            x, y, [str(c) for c in range(classes)], freqs, noise_multiplier=1.0, counts=counts, count_sigma=1.0
        )
        best = min(best, time.perf_counter() - t0)
    return best


def time_training(m: int, steps: int, threads: int, dim: int = 64, classes: int = 10, batch: int = 128) -> float:
    freqs = sk.random_frequencies(dim, m, 0.3 * np.sqrt(dim), 3.0, 0)
    sketch = sk.NoisySketch(
        freqs, np.zeros((classes, 2 * m)), np.full(classes, 100.0), 1.0, 1.0, tuple(map(str, range(classes)))
    )
    layout = Layout(dim, tuple(range(dim)), (), classes)
    t0 = time.perf_counter()
    train_generator(sketch, layout, TrainSettings(steps=steps, batch=batch, threads=threads))
    return (time.perf_counter() - t0) / steps


def digits_end_to_end(threads: int, epsilon: float = 1.0) -> dict[str, float]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    xtr, _, ytr, _ = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    cfg = Config(
        method="pearl",
        n_synthetic=len(xtr),
        data={"labels": [str(i) for i in range(10)]},
        privacy={"epsilon": epsilon, "delta": 1e-5},
        pearl={"data_schema": {"array": {"min": 0, "max": 16}}, "train_threads": threads},
        seed=0,
    )
    method = PearlMethod(cfg, {"x": xtr.reshape(-1, 8, 8).astype(np.int64), "label": ytr})
    t0 = time.perf_counter()
    method.prepare()
    t1 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        rd = RunDir(Path(tmp) / "run")
        rd.create(cfg)
        method.run(rd, ProgressReporter(enabled=False))
    t2 = time.perf_counter()
    assert method.sketch is not None
    return {
        "records": len(xtr),
        "m": method.sketch.m,
        "train_steps": cfg.pearl.train_steps,
        "prepare_and_calibrate_s": t1 - t0,
        "sketch_train_sample_s": t2 - t1,
        "total_s": t2 - t0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for training")
    ap.add_argument("--steps", type=int, default=100, help="training steps timed per m")
    args = ap.parse_args()
    ms = [125, 250, 500, 1000, 2000]
    ns = [1_000, 10_000, 100_000]
    by_n = []
    for n in ns:
        s = time_sketch(n, 500)
        by_n.append({"n": n, "m": 500, "sketch_s": s})
        print(f"sketch n={n} m=500: {s:.3f}s", flush=True)
    time_training(64, 5, args.threads)  # warm-up: torch's first call pays one-off initialisation
    by_m = []
    for m in ms:
        s = time_sketch(10_000, m)
        t = time_training(m, args.steps, args.threads)
        by_m.append({"m": m, "n": 10_000, "sketch_s": s, "train_step_s": t, "train_2000_steps_s": 2000 * t})
        print(f"m={m}: sketch(n=10k) {s:.3f}s, train {t * 1000:.1f} ms/step", flush=True)
    e2e = digits_end_to_end(args.threads)
    print(f"digits end to end: {e2e}", flush=True)
    write_result(
        "pearl_scaling",
        {
            "what": "sketch release time vs records n and frequencies m (D=64, 10 classes); training time per "
            "step vs m (10 classes x 128 samples per step, D=64); digits end to end with defaults",
            "torch_threads": args.threads,
            "sketch_by_n": by_n,
            "by_m": by_m,
            "digits_end_to_end": e2e,
            "command": "python " + " ".join(sys.argv),
        },
    )


if __name__ == "__main__":
    main()
