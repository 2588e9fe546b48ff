"""Benchmark-only PEARL tools: the epsilon = inf reference run and the text-embedding sketch.

* ``NonPrivatePearl``: ``PearlMethod`` with every release drawn without noise (epsilon = inf), the
  reference row of ``pearl_eval.py``; its privacy.json and ledger say it is not private.
* ``embedding_sketch`` / ``select_by_sketch``: the same characteristic-function sketch applied to
  text *embeddings*: pick the generated candidates whose empirical characteristic function best
  matches a private embedding sketch (a cheap baseline next to WASP, ``quality.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from dpsynth.errors import DataError
from dpsynth.methods.pearl import PearlMethod
from dpsynth.privacy import sketch as sk
from dpsynth.privacy.events import Event
from dpsynth.privacy.ledger import Ledger
from dpsynth.run import RunDir


class NonPrivatePearl(PearlMethod):
    """PEARL without noise: the benchmark's epsilon = inf reference (the report and the ledger say so).

    The releases are planned as for a private run, then drawn with noise multiplier 0; the ledger's
    cap is infinite.  Never reachable from the CLI or ``dpsynth.synthesize``.
    """

    def privacy_events(self) -> list[Event]:
        return [replace(e, noise_multiplier=0.0) for e in super().privacy_events()]

    def open_ledger(self, run_dir: RunDir, epsilon: float | None = None) -> Ledger:
        return super().open_ledger(run_dir, epsilon=math.inf)

    def report(self, ledger: Ledger, released: dict[str, Any], sketch: sk.NoisySketch) -> dict[str, Any]:
        report = super().report(ledger, released, sketch)
        report["guarantee"] = "NOT differentially private: benchmark reference run without noise (epsilon = inf)"
        for m in report["mechanisms"]:
            m["name"] = m["name"].replace("Gaussian: ", "") + " (released WITHOUT noise)"
        return report


def embedding_sketch(
    embeddings: np.ndarray,
    *,
    epsilon: float,
    delta: float,
    labels: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
    n_frequencies: int = 512,
    bandwidth: float = 1.0,
    spread: float = 2.0,
    seed: int = 0,
    count_budget: float = 0.1,
    accountant: str = "pld",
) -> tuple[sk.NoisySketch, sk.BudgetPlan]:
    """Release a DP characteristic-function sketch of private text embeddings (one Gaussian release).

    ``embeddings``: (n, d) private embeddings (e.g. unit-norm sentence embeddings, for which the
    default bandwidth 1 matches typical distances); ``labels``/``classes``: optional public class
    set for per-class sketches.  The sensitivity is the same as for tables (features have norm
    1 whatever the input scale); the class counts are a second release (``count_budget`` of mu^2).
    Returns the sketch and its budget plan (for the report).
    """
    e = np.asarray(embeddings, dtype=np.float64)
    if classes is None:
        classes, y = [""], np.zeros(len(e), dtype=np.int64)
    else:
        if labels is None or len(labels) != len(e):
            raise ValueError("labels must give one class per embedding")
        index = {c: i for i, c in enumerate(classes)}
        if any(v not in index for v in labels):
            raise DataError("embedding_sketch: a label is not in the declared classes")
        y = np.array([index[v] for v in labels], dtype=np.int64)
    plan = sk.plan_budget(
        epsilon,
        delta,
        [
            ("counts", "records per class", sk.COUNTS_SENSITIVITY, "add/remove: one count moves by 1", count_budget),
            (
                "sketch",
                "per-class random Fourier features of private embeddings",
                1.0,
                "add/remove: ||f(x)||=1",
                1.0 - count_budget,
            ),
        ],
        accountant=accountant,  # type: ignore[arg-type]
    )
    z_counts, z_sketch = plan.releases[0].noise_multiplier, plan.releases[1].noise_multiplier
    counts = sk.release_counts(y, len(classes), noise_multiplier=z_counts)
    freqs = sk.random_frequencies(e.shape[1], n_frequencies, bandwidth, spread, seed)
    s = sk.release_sketch(e, y, list(classes), freqs, noise_multiplier=z_sketch, counts=counts, count_sigma=z_counts)
    return s, plan


def select_by_sketch(
    candidate_embeddings: np.ndarray,
    noisy_sketch: sk.NoisySketch,
    k: int,
    *,
    label: str | None = None,
) -> np.ndarray:
    """Indices of k candidates whose empirical characteristic function best matches the sketch.

    Greedy kernel herding: at each step add the candidate that most reduces
    ||Phi_target - (1/|S|) sum_{i in S} phi(c_i)||^2 over the sketch's frequencies, where
    Phi_target is the ECF of class ``label`` (or the share-weighted mix of classes when None).
    Pure post-processing of the release: choosing among generated candidates costs no privacy.
    Cost O(k * N * m).
    """
    c = np.asarray(candidate_embeddings, dtype=np.float64)
    n = len(c)
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}]")
    if c.shape[1] != noisy_sketch.dim:
        raise ValueError("candidate embeddings and sketch have different dimensions")
    ecf = noisy_sketch.ecf()
    target = noisy_sketch.class_shares() @ ecf if label is None else ecf[list(noisy_sketch.classes).index(label)]
    feats = sk.fourier_features(c, noisy_sketch.freqs) * math.sqrt(noisy_sketch.m)  # unit modulus per frequency
    chosen = np.zeros(n, dtype=bool)
    order = np.empty(k, dtype=np.int64)
    s = np.zeros_like(target)
    for t in range(k):
        # ||target - (s + f_i)/(t+1)||^2 = const + (2 f_i.(s - (t+1) target) + ||f_i||^2) / (t+1)^2, ||f_i||^2 = m
        score = feats @ (s - (t + 1) * target)
        score[chosen] = np.inf
        i = int(np.argmin(score))
        chosen[i] = True
        order[t] = i
        s += feats[i]
    return order
