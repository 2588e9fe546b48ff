"""Membership inference against a finished run's synthetic set: evidence about the privacy claim, not proof.

The question a reader of the privacy report asks: can someone who holds the released synthetic set tell
which records were the private ones?  A run on an embedded dataset (``data.private: embedded:imdb`` or
``embedded:newsgroups``) drew its M private records from a public pool with a fixed seed (``data.n_private``,
``data.seed``), so the audit can rebuild them (the members) and draw as many pool records the run never
read (the non-members, same distribution).  The attacker sees only the synthetic set and scores each
candidate by how close the set comes to it in the embedding space: the cosine similarity of its nearest
synthetic sample, over the whole set and among the samples of the candidate's own label (the
distance-to-closest-record attack: Chen et al., "GAN-Leaks", CCS 2020; Stadler et al., "Synthetic Data -
Anonymisation Groundhog Day", USENIX Security 2022).  Members scoring higher than non-members is
membership leaking.

(epsilon, delta)-DP bounds every such test: at any threshold, TPR <= e^eps FPR + delta and
1 - FPR <= e^eps (1 - TPR) + delta (the hypothesis-testing view of DP: Kairouz, Oh and Viswanath, ICML
2015), so no attack's ROC curve lies above ``dp_tpr_bound`` and no AUC above ``dp_auc_bound``.  The audit
reports each attack's AUC with a bootstrap interval, and its TPR at FPR 1% and 10%, beside those bounds.
An AUC whose interval lies above the bound contradicts the epsilon claim; one near 0.5 is what DP
predicts but does not prove it (a stronger attack might do better).

Why only embedded data: the audit reads the private records without any privacy and publishes statistics
of them (an AUC is one).  On a user's own records that result would be an unaccounted release, so the
audit refuses such runs; run the same configuration on an embedded dataset, whose records are public
stand-ins, and audit that run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from dpsynth.data import norm_label
from dpsynth.datasets import embedded_names
from dpsynth.embeddings import Embedder
from dpsynth.errors import ConfigError, DataError
from dpsynth.evaluate.inputs import (
    default_embedder,
    embed_synthetic,
    embed_test,
    load_synthetic,
    read_run_config,
    run_data_config,
    used_embedded_dataset,
)
from dpsynth.run import RunDir

MEMBERSHIP_FILE = "membership.json"
FPRS = (0.01, 0.1)  # the low false-positive rates an attacker cares about (Carlini et al., S&P 2022)
NEAR_COPY = 0.95  # cosine at or above which a synthetic sample is counted as a near copy of a candidate
BOOTSTRAP = 1000  # resamples for the AUC's 95% interval
ATTACKS = {
    "nearest": "cosine of the nearest synthetic sample",
    "nearest_same_label": "cosine of the nearest synthetic sample of the candidate's label",
}


# ---------------------------------------------------------------- what (epsilon, delta)-DP allows
def dp_tpr_bound(epsilon: float, delta: float, fpr: float | np.ndarray) -> float | np.ndarray:
    """The largest true-positive rate any membership test can have at ``fpr`` against an (eps, delta)-DP
    release: min(1, e^eps fpr + delta, 1 - e^-eps (1 - delta - fpr))."""
    x = np.asarray(fpr, dtype=float)
    if math.isinf(epsilon):
        out = np.ones_like(x)
    else:
        out = np.minimum.reduce(
            [np.ones_like(x), math.exp(epsilon) * x + delta, 1.0 - math.exp(-epsilon) * (1.0 - delta - x)]
        )
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
) -> np.ndarray:
    """Each candidate's cosine similarity to its nearest synthetic sample (of its own label when labels are
    given; -1 when the set has no sample of that label)."""
    c = candidates / np.maximum(np.linalg.norm(candidates, axis=1, keepdims=True), 1e-12)
    s = synthetic / np.maximum(np.linalg.norm(synthetic, axis=1, keepdims=True), 1e-12)
    sims = c @ s.T
    if candidate_labels is not None and synthetic_labels is not None:
        same = np.asarray(candidate_labels)[:, None] == np.asarray(synthetic_labels)[None, :]
        sims = np.where(same, sims, -1.0)
    return np.asarray(sims.max(axis=1) if sims.shape[1] else np.full(len(c), -1.0))


def roc_auc(members: np.ndarray, non_members: np.ndarray) -> float:
    """P(a member scores above a non-member), ties counted half (the Mann-Whitney form of the AUC)."""
    diff = members[:, None] - non_members[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


def tpr_at_fpr(members: np.ndarray, non_members: np.ndarray, fpr: float) -> float:
    """The share of members above the threshold that lets at most ``fpr`` of the non-members through."""
    k = math.floor(fpr * len(non_members))  # non-members allowed above the threshold
    ranked = np.sort(non_members)[::-1]
    threshold = ranked[k] if k < len(ranked) else -np.inf
    return float(np.mean(members > threshold))


def _auc_interval(members: np.ndarray, non_members: np.ndarray, rng: np.random.Generator) -> list[float]:
    """A 95% bootstrap interval of the AUC (members and non-members resampled separately)."""
    aucs = [
        roc_auc(rng.choice(members, len(members)), rng.choice(non_members, len(non_members))) for _ in range(BOOTSTRAP)
    ]
    return [float(np.quantile(aucs, 0.025)), float(np.quantile(aucs, 0.975))]


def attack_result(
    members: np.ndarray, non_members: np.ndarray, epsilon: float, delta: float, seed: int = 0
) -> dict[str, Any]:
    """One attack's AUC (with its interval) and TPR at the low FPRs, each beside what DP allows."""
    rng = np.random.default_rng(seed)  # resampling for the interval, not privacy noise
    return {
        "auc": roc_auc(members, non_members),
        "auc_95": _auc_interval(members, non_members, rng),
        # a rate below 1 / (non-members) cannot be measured: with 30 of them, "FPR 1%" would be FPR 0
        "tpr_at_fpr": {
            str(f): tpr_at_fpr(members, non_members, f) if f * len(non_members) >= 1 else None for f in FPRS
        },
        "tpr_bound_at_fpr": {str(f): float(dp_tpr_bound(epsilon, delta, f)) for f in FPRS},
    }


# ---------------------------------------------------------------- a run
def _guarantee(run_dir: RunDir) -> tuple[float, float]:
    try:
        report = json.loads(run_dir.privacy.read_text(encoding="utf-8"))
        return float(report["epsilon"]), float(report["delta"])
    except (OSError, ValueError, KeyError, TypeError):
        raise DataError(
            f"audit membership: {run_dir.path} has no readable privacy.json; audit a finished run "
            f"(`dpsynth run --resume --out {run_dir.path}` finishes it)"
        ) from None


def membership_audit(
    run: str | Path, *, embedder: Embedder | None = None, non_members: int | None = None, seed: int = 0
) -> dict[str, Any]:
    """Attack a finished run on an embedded dataset; returns what ``membership.json`` holds.

    ``non_members``: pool records the run never read (default: as many as the members); ``seed`` draws
    them.  Nothing per record is returned: only rates, AUCs and counts."""
    run_dir = RunDir(run)
    cfg = read_run_config(run_dir.path)
    if not cfg:
        raise DataError(f"audit membership: {run_dir.path} holds no run (no readable config.yaml)")
    data = run_data_config(cfg)
    dataset = used_embedded_dataset(cfg)
    if dataset is None:
        raise ConfigError(
            f"audit membership: the run read {data.get('private', 'records')!r}, not an embedded dataset. The "
            "audit reads the private records without privacy and publishes statistics of them, so it runs only "
            f"on runs over public stand-ins ({embedded_names()}): run the same configuration with --private "
            "embedded:imdb (or embedded:newsgroups) and audit that run"
        )
    if cfg.get("method") == "zero-shot":
        raise ConfigError("audit membership: a zero-shot run reads no private record; there is no member to find")
    epsilon, delta = _guarantee(run_dir)
    n_private, data_seed = int(data.get("n_private", 100)), int(data.get("seed", 0))
    pool, _ = dataset.split()
    member_idx = dataset.private_index(n_private, data_seed)
    rest = pool.drop(index=member_idx)
    n_out = min(non_members or n_private, len(rest))
    if n_private < 2 or n_out < 2:
        raise DataError("audit membership: needs at least 2 members and 2 non-members")
    members_df = pool.loc[member_idx]
    outsiders_df = rest.sample(n=n_out, random_state=seed)

    syn = load_synthetic(run_dir.path)
    if len(syn) == 0:
        raise DataError(f"audit membership: {run_dir.path} released no synthetic record")
    embedder = embedder or default_embedder()
    syn_emb, _ = embed_synthetic(syn, embedder)
    cand = list(members_df["text"].astype(str)) + list(outsiders_df["text"].astype(str))
    cand_emb = embed_test(cand, embedder)
    cand_labels = [norm_label(v) for v in [*members_df["label"], *outsiders_df["label"]]]
    syn_labels = [norm_label(v) for v in syn.labels]
    m = len(members_df)
    scores = {
        "nearest": nearest_similarity(cand_emb, syn_emb),
        "nearest_same_label": nearest_similarity(cand_emb, syn_emb, cand_labels, syn_labels),
    }
    attacks = {
        name: {"score": ATTACKS[name], **attack_result(s[:m], s[m:], epsilon, delta, seed)}
        for name, s in scores.items()
    }
    near = scores["nearest"]
    bound = dp_auc_bound(epsilon, delta)
    return {
        "run": str(run_dir.path),
        "method": cfg.get("method"),
        "dataset": dataset.source,
        "members": m,
        "non_members": n_out,
        "synthetic": len(syn),
        "embedding_model": embedder.name,
        "epsilon": epsilon if math.isfinite(epsilon) else "inf",  # JSON has no infinity
        "delta": delta,
        "auc_bound": bound,
        "attacks": attacks,
        "near_copies": {
            "threshold": NEAR_COPY,
            "members": int((near[:m] >= NEAR_COPY).sum()),
            "non_members": int((near[m:] >= NEAR_COPY).sum()),
        },
        "verdict": verdict(attacks, bound, epsilon),
    }


def verdict(attacks: dict[str, dict[str, Any]], bound: float, epsilon: float) -> str:
    """One sentence on what the strongest attack shows, in the reader's terms."""
    name, best = max(attacks.items(), key=lambda kv: kv[1]["auc"])
    lo, hi = best["auc_95"]
    eps = "inf" if math.isinf(epsilon) else f"{epsilon:g}"
    if lo > bound:
        return (
            f"the {name} attack's AUC ({best['auc']:.3f}, 95% {lo:.3f}-{hi:.3f}) is above what epsilon = {eps} "
            f"allows ({bound:.3f}): the privacy claim is contradicted; report it"
        )
    if lo > 0.5:
        return (
            f"members are found more often than chance (the {name} attack's AUC {best['auc']:.3f}, 95% "
            f"{lo:.3f}-{hi:.3f}), within what epsilon = {eps} allows ({bound:.3f})"
        )
    return (
        f"no membership signal found: the strongest attack's AUC ({best['auc']:.3f}, 95% {lo:.3f}-{hi:.3f}) "
        f"is level with chance (0.5); epsilon = {eps} would allow up to {bound:.3f}. Evidence, not proof: a "
        "stronger attack or more records might find more"
    )


def summary_lines(result: dict[str, Any]) -> list[str]:
    """The audit as a few lines for the terminal."""
    eps = float(result["epsilon"])
    lines = [
        f"membership audit of {result['run']} ({result['method']}, {result['dataset']}): {result['members']} "
        f"members, {result['non_members']} non-members, {result['synthetic']} synthetic samples",
        f"epsilon = {'inf' if math.isinf(eps) else f'{eps:g}'}, delta = {result['delta']:g}: no attack can "
        f"exceed AUC {result['auc_bound']:.3f}",
    ]
    for name, a in result["attacks"].items():
        lo, hi = a["auc_95"]
        tprs = ", ".join(
            f"TPR {a['tpr_at_fpr'][f]:.2f} at FPR {float(f):g} (bound {a['tpr_bound_at_fpr'][f]:.2f})"
            if a["tpr_at_fpr"][f] is not None
            else f"FPR {float(f):g} not measurable with {result['non_members']} non-members"
            for f in a["tpr_at_fpr"]
        )
        lines.append(f"  {name}: AUC {a['auc']:.3f} (95% {lo:.3f}-{hi:.3f}); {tprs}")
    nc = result["near_copies"]
    lines.append(
        f"  near copies (cosine >= {nc['threshold']}): {nc['members']} members, {nc['non_members']} non-members"
    )
    lines.append(result["verdict"])
    return lines
