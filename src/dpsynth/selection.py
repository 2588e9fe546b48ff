"""Post-processing of the noisy vote: generator weights, class shares, good/bad pools.

Everything here reads only released (noised) votes and public data, so it costs
no privacy (post-processing).  Formulas follow docs/wasp.md steps 4-6; the
normalisation avoids the reference code's division by a noisy sum that can be
near zero or negative.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import TypeVar

import numpy as np

K = TypeVar("K", bound=Hashable)


def generator_weights(
    near: np.ndarray,
    generators: Sequence[str],
    sample_generators: Sequence[str],
    *,
    sigma: float,
    tau: float,
) -> dict[str, float]:
    """p = softmax(score / tau) with score_k = (votes per sample of k) / (votes per sample overall).

    The denominator is floored at 3 noise standard deviations of the overall mean
    (sigma / sqrt(n), public), so it is never ~0 or negative.
    """
    gens = np.asarray(sample_generators)
    n = len(near)
    overall = float(near.sum()) / max(n, 1)
    denom = max(overall, 3.0 * sigma / math.sqrt(max(n, 1)), 1e-12)
    scores = []
    for g in generators:
        mask = gens == g
        per_sample = float(near[mask].sum()) / mask.sum() if mask.any() else 0.0
        scores.append(per_sample / denom)
    s = np.asarray(scores) / tau
    p = np.exp(s - s.max())
    p /= p.sum()
    return {g: float(w) for g, w in zip(generators, p, strict=True)}


def allocate(total: int, shares: Mapping[K, float], floor: int = 0) -> dict[K, int]:
    """Split ``total`` by ``shares``: floor(total * p), remainder by largest fractional part.

    Every key gets at least ``floor`` (if the total allows) so that no generator or
    class starves permanently.  The one largest-remainder split of the package: WASP's
    per-generator and per-class budgets, PEARL's and dp-finetune's output class quotas.
    """
    keys = list(shares)
    if total <= 0 or not keys:
        return {k: 0 for k in keys}
    floor = min(floor, total // len(keys))
    rest = total - floor * len(keys)
    p = np.asarray([max(shares[k], 0.0) for k in keys], dtype=np.float64)
    p = p / p.sum() if p.sum() > 0 else np.full(len(keys), 1.0 / len(keys))
    raw = p * rest
    base = np.floor(raw).astype(int)
    order = np.argsort(-(raw - base), kind="stable")
    for i in order[: rest - int(base.sum())]:
        base[i] += 1
    return {k: int(b) + floor for k, b in zip(keys, base, strict=True)}


def class_shares(
    near: np.ndarray, sample_labels: Sequence[str], labels: Sequence[str], uniform_mix: float
) -> dict[str, float]:
    """Per-class share from the noisy vote mass (clipped at 0), mixed with uniform.

    Never from raw private label counts (docs/privacy.md, failure modes).
    """
    lab = np.asarray(sample_labels)
    mass = np.array([max(float(near[lab == c].sum()), 0.0) for c in labels])
    uniform = np.full(len(labels), 1.0 / len(labels))
    p = mass / mass.sum() if mass.sum() > 0 else uniform
    p = (1 - uniform_mix) * p + uniform_mix * uniform
    return {c: float(x) for c, x in zip(labels, p, strict=True)}


def top_indices(scores: np.ndarray, candidates: np.ndarray, s: int) -> list[int]:
    """The ``s`` candidates with the largest noisy scores, best first."""
    if candidates.size == 0:
        return []
    order = np.argsort(-scores[candidates], kind="stable")[:s]
    return [int(i) for i in candidates[order]]
