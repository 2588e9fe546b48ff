"""The statistics of a membership-inference audit: what (epsilon, delta)-DP allows any membership test,
the nearest-sample attack's score, its AUC and TPR at low FPR with bootstrap intervals, and the paired
difference against a placebo.  Pure numbers on arrays: no run, no file, no record (``membership`` reads
runs and calls these).

(epsilon, delta)-DP bounds every such test: at any threshold, TPR <= e^eps FPR + delta and
1 - FPR <= e^eps (1 - TPR) + delta (the hypothesis-testing view of DP: Kairouz, Oh and Viswanath, ICML
2015), so no attack's ROC curve lies above ``dp_tpr_bound`` and no AUC above ``dp_auc_bound``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

FPRS = (0.001, 0.01, 0.1)  # the low false-positive rates an attacker cares about (Carlini et al., S&P 2022)
BOOTSTRAP = 1000  # resamples for the AUC's 95% interval
EXP_MAX = 700.0  # math.exp overflows past about 709.8: an epsilon this large allows everything


# ---------------------------------------------------------------- what (epsilon, delta)-DP allows
def dp_tpr_bound(epsilon: float, delta: float, fpr: float | np.ndarray) -> float | np.ndarray:
    """The largest true-positive rate any membership test can have at ``fpr`` against an (eps, delta)-DP
    release: min(1, e^eps fpr + delta, 1 - e^-eps (1 - delta - fpr))."""
    x = np.asarray(fpr, dtype=float)
    if math.isinf(epsilon):
        out = np.ones_like(x)
    else:
        e = math.exp(min(epsilon, EXP_MAX))  # beyond it the bound is 1 at every FPR above 0 anyway
        out = np.minimum.reduce([np.ones_like(x), e * x + delta, 1.0 - (1.0 - delta - x) / e])
        out = np.clip(out, 0.0, 1.0)
    return float(out) if np.ndim(fpr) == 0 else out


def dp_auc_bound(epsilon: float, delta: float) -> float:
    """The largest AUC any membership test can reach against an (eps, delta)-DP release: the area under
    ``dp_tpr_bound`` (0.5 at eps = delta = 0, 1 at eps = inf)."""
    if math.isinf(epsilon):
        return 1.0
    x = np.linspace(0.0, 1.0, 200_001)
    y = np.asarray(dp_tpr_bound(epsilon, delta, x))
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2)


# ---------------------------------------------------------------- the attack
def nearest_similarity(
    candidates: np.ndarray,
    synthetic: np.ndarray,
    candidate_labels: list[str] | None = None,
    synthetic_labels: list[str] | None = None,
    chunk: int = 1024,
) -> np.ndarray:
    """Each candidate's cosine similarity to its nearest synthetic sample (of its own label when labels are
    given; -1 when the set has no sample of that label).  In chunks of candidates, so memory stays small."""
    c = candidates / np.maximum(np.linalg.norm(candidates, axis=1, keepdims=True), 1e-12)
    s = synthetic / np.maximum(np.linalg.norm(synthetic, axis=1, keepdims=True), 1e-12)
    if not len(s):
        return np.full(len(c), -1.0)
    out = np.empty(len(c))
    syn_labels = np.asarray(synthetic_labels) if synthetic_labels is not None else None
    for i in range(0, len(c), chunk):
        sims = c[i : i + chunk] @ s.T
        if candidate_labels is not None and syn_labels is not None:
            same = np.asarray(candidate_labels[i : i + chunk])[:, None] == syn_labels[None, :]
            sims = np.where(same, sims, -1.0)
        out[i : i + chunk] = sims.max(axis=1)
    return out


def roc_auc(members: np.ndarray, non_members: np.ndarray) -> float:
    """P(a member scores above a non-member), ties counted half (the Mann-Whitney U over both sizes, from
    ranks: O(n log n), so thousands of candidates and a bootstrap stay cheap)."""
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([members, non_members]))  # ties get their mean rank
    m, n = len(members), len(non_members)
    return float((ranks[:m].sum() - m * (m + 1) / 2) / (m * n))


def tpr_at_fpr(members: np.ndarray, non_members: np.ndarray, fpr: float) -> float:
    """The share of members above the threshold that lets at most ``fpr`` of the non-members through."""
    k = math.floor(fpr * len(non_members))  # non-members allowed above the threshold
    ranked = np.sort(non_members)[::-1]
    threshold = ranked[k] if k < len(ranked) else -np.inf
    return float(np.mean(members > threshold))


def clopper_pearson(hits: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """The exact binomial interval of a rate seen as ``hits`` of ``n`` (Clopper and Pearson, Biometrika
    1934).  For a TPR at a low FPR it says how much the members alone leave open; the threshold, set by a
    handful of non-members, moves it further, so an estimate above the DP bound means something only when
    this interval's lower end is above it."""
    from scipy.stats import beta

    a = (1 - level) / 2
    lo = 0.0 if hits == 0 else float(beta.ppf(a, hits, n - hits + 1))
    hi = 1.0 if hits == n else float(beta.ppf(1 - a, hits + 1, n - hits))
    return lo, hi


def _bootstrap(members: np.ndarray, non_members: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """AUCs of ``BOOTSTRAP`` resamples (members and non-members resampled separately)."""
    return np.array(
        [
            roc_auc(rng.choice(members, len(members)), rng.choice(non_members, len(non_members)))
            for _ in range(BOOTSTRAP)
        ]
    )


def attack_result(
    members: np.ndarray, non_members: np.ndarray, epsilon: float, delta: float, seed: int = 0, tests: int = 1
) -> dict[str, Any]:
    """One attack's AUC with its 95% interval (and the wider one the verdict uses when ``tests`` attacks are
    judged together: Bonferroni), and its TPR at the low FPRs with a Clopper-Pearson interval, beside what
    DP allows at each: in this audit's design (``design_bound``: a member against a non-member) and for one
    record added or removed.  ``epsilon``, ``delta``: the run's add/remove guarantee."""
    boot = _bootstrap(members, non_members, np.random.default_rng(seed))  # resampling, not privacy noise
    tail = 0.025 / tests
    # a rate below 1 / (non-members) cannot be measured: with 30 of them, "FPR 1%" would be FPR 0
    tprs = {str(f): tpr_at_fpr(members, non_members, f) if f * len(non_members) >= 1 else None for f in FPRS}
    design = design_bound(epsilon, delta)
    return {
        "auc": roc_auc(members, non_members),
        "auc_95": [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))],
        "auc_verdict_interval": [float(np.quantile(boot, tail)), float(np.quantile(boot, 1 - tail))],
        "tpr_at_fpr": tprs,
        "tpr_95": {
            f: None if t is None else list(clopper_pearson(round(t * len(members)), len(members)))
            for f, t in tprs.items()
        },
        "tpr_bound_at_fpr": {str(f): float(dp_tpr_bound(*design, f)) for f in FPRS},
        "tpr_bound_at_fpr_add_remove": {str(f): float(dp_tpr_bound(epsilon, delta, f)) for f in FPRS},
    }


def paired_difference(scores: np.ndarray, placebo: np.ndarray, m: int, seed: int = 0, tests: int = 1) -> dict[str, Any]:
    """AUC of ``scores`` minus AUC of ``placebo`` on the same candidates (the first ``m`` members), with a
    paired bootstrap: each resample draws members and non-members once and scores both sets on them, so the
    draw's own nearness, shared by both, drops out of the interval."""
    rng = np.random.default_rng(seed)  # resampling, not privacy noise
    n = len(scores) - m
    diffs = np.empty(BOOTSTRAP)
    for b in range(BOOTSTRAP):
        mi, ni = rng.integers(0, m, m), m + rng.integers(0, n, n)
        diffs[b] = roc_auc(scores[mi], scores[ni]) - roc_auc(placebo[mi], placebo[ni])
    tail = 0.025 / tests
    return {
        "auc_placebo": roc_auc(placebo[:m], placebo[m:]),
        "auc_difference": roc_auc(scores[:m], scores[m:]) - roc_auc(placebo[:m], placebo[m:]),
        "difference_95": [float(np.quantile(diffs, 0.025)), float(np.quantile(diffs, 0.975))],
        "difference_verdict_interval": [float(np.quantile(diffs, tail)), float(np.quantile(diffs, 1 - tail))],
    }


def design_bound(epsilon: float, delta: float) -> tuple[float, float]:
    """(eps, delta) for this audit's design: a member against a non-member is a substitution, which
    add/remove (eps, delta)-DP covers as a group of two, (2 eps, (1 + e^eps) delta)."""
    if math.isinf(epsilon):
        return epsilon, delta
    return 2 * epsilon, min(1.0, (1 + math.exp(min(epsilon, EXP_MAX))) * delta)
