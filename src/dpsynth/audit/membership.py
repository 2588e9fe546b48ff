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
2015), so no attack's ROC curve lies above ``dp_tpr_bound`` and no AUC above ``dp_auc_bound`` (those
bounds, the scores and the intervals are plain statistics in ``attack_stats``; this module reads runs).  One
subtlety: a member is compared with a non-member of the same run, i.e. the release of D + a with that of
D + b, two data sets that differ by a substitution, which add/remove DP bounds only through group privacy
(2 eps, (1 + e^eps) delta).  The verdict therefore tests against that bound (``design_bound``); the
add/remove bound is reported beside it.  The audit reports each attack's AUC with a bootstrap interval
and its TPR at low FPRs; an interval beyond the bound (on either side of 0.5) contradicts the epsilon
claim, one around 0.5 is what DP predicts but does not prove it (a stronger attack might do better).

A draw of M records can sit a little nearer to every synthetic set than the non-members do, by chance,
and that draw repeats across every run of one seed.  ``against`` reads the run next to a run of the same
configuration that read nothing (zero-shot): the same members, non-members and attacks on both sets, and a
paired bootstrap of the AUC difference, so what the draw gives both largely cancels (fully only where the
two sets depend on it alike: same generators, judge and N) and what is left is the run's.

Why only embedded data: the audit reads the private records without any privacy and publishes statistics
of them (an AUC is one).  On a user's own records that result would be an unaccounted release, so the
audit refuses such runs; run the same configuration on an embedded dataset, whose records are public
stand-ins, and audit that run.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from dpsynth.audit.attack_stats import (
    attack_result,
    design_bound,
    dp_auc_bound,
    nearest_similarity,
    paired_difference,
)
from dpsynth.data import norm_label
from dpsynth.datasets import embedded_names
from dpsynth.embeddings import Embedder
from dpsynth.errors import ConfigError, DataError
from dpsynth.evaluate.inputs import (
    default_embedder,
    embed_synthetic,
    embed_test,
    find_run_output,
    load_synthetic,
    read_run_config,
    run_data_config,
    used_embedded_dataset,
)
from dpsynth.privacy.rounding import round_up
from dpsynth.run import RunDir

MEMBERSHIP_FILE = "membership.json"
TEXT_METHODS = ("wasp", "aug-pe", "zero-shot", "dp-finetune")  # the methods that run on an embedded text set
REFERENCE = 500  # public test records the calibrated attack measures typicality against (fixed sample)
MIN_CANDIDATES = 20  # fewer members or non-members than this: the interval says nothing (2 vs 2 can "separate")
NEAR_COPY = 0.95  # cosine at or above which a synthetic sample is counted as a near copy of a candidate
# Non-members by default: at least this many.  As many as the members (100) made the AUC swing with which
# 100 pool records were drawn (0.42-0.51 over the benchmark's DP runs, all with the same draw);
# 1,000 shrink that part of the spread threefold and make FPR 0.1% measurable.
NON_MEMBERS = 1000
ATTACKS = {
    "nearest": "cosine of the nearest synthetic sample",
    "nearest_same_label": "cosine of the nearest synthetic sample of the candidate's label",
    # A typical record is near everything, a synthetic set included, whether it was a member or not: the
    # reference set (the dataset's public test split, never private) measures how near everything is, and
    # the difference keeps what the synthetic set adds (the calibration of Watson et al., ICLR 2022, and of
    # Carlini et al.'s LiRA, S&P 2022, with a public reference in place of shadow models)
    "nearest_calibrated": "cosine of the nearest synthetic sample minus that of the nearest public test record",
}


# ---------------------------------------------------------------- a run
def _guarantee(run_dir: RunDir) -> tuple[float, float]:
    try:
        report = json.loads(run_dir.privacy.read_text(encoding="utf-8"))
        epsilon, delta = float(report["epsilon"]), float(report["delta"])
    except (OSError, ValueError, KeyError, TypeError):
        raise DataError(
            f"audit membership: {run_dir.path} has no readable privacy.json; audit a finished run "
            f"(`dpsynth run --resume --out {run_dir.path}` finishes it)"
        ) from None
    if not (epsilon >= 0 and 0 <= delta < 1):  # NaN fails both: a damaged file, not a guarantee to test
        raise DataError(
            f"audit membership: {run_dir.privacy} holds epsilon {epsilon:g}, delta {delta:g}, which no run "
            "writes (epsilon >= 0, 0 <= delta < 1): the file is damaged; audit a run whose privacy.json is intact"
        )
    return epsilon, delta


def _draw(data: dict[str, Any], where: Path) -> tuple[int, int]:
    """data.n_private and data.seed as the run recorded them (a full config.yaml always has both)."""
    try:
        n, seed = data["n_private"], data["seed"]
        if isinstance(n, bool) or isinstance(seed, bool):
            raise TypeError
        return int(n), int(seed)
    except (KeyError, TypeError, ValueError):
        raise DataError(
            f"audit membership: {where}/config.yaml does not record data.n_private and data.seed as whole "
            "numbers, so the run's private draw cannot be rebuilt; audit a run directory written by dpsynth run"
        ) from None


def output_fingerprint(path: Path) -> str:
    """sha256 of the synthetic file the audit measured: the report tells a later, different set apart."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def placebo_fingerprint(result: Any) -> str | None:
    """sha256 of the ``--against`` run's synthetic file as it is now (None: no comparison, or not found)."""
    try:
        output = find_run_output(Path(result["against"]["run"]))
        return output_fingerprint(output) if output is not None else None
    except (KeyError, TypeError, OSError):
        return None


def membership_audit(
    run: str | Path,
    *,
    embedder: Embedder | None = None,
    non_members: int | None = None,
    seed: int = 0,
    placebo: bool = False,
    against: str | Path | None = None,
) -> dict[str, Any]:
    """Attack a finished run on an embedded dataset; returns what ``membership.json`` holds.

    ``non_members``: pool records the run never read (default: ``NON_MEMBERS``, or as many as the members
    if more); ``seed`` draws them.  ``against``: a run of the same configuration that read no private
    record, attacked with the same candidates, so the verdict can tell the run's signal from the draw's.
    Nothing per record is returned: only rates, AUCs and counts."""
    from dpsynth.methods.registry import METHODS

    run_dir = RunDir(run)
    cfg = read_run_config(run_dir.path)
    if not cfg:
        raise DataError(f"audit membership: {run_dir.path} holds no run (no readable config.yaml)")
    data = run_data_config(cfg)
    dataset = used_embedded_dataset(cfg)
    method = cfg.get("method")
    if dataset is None:
        why = (
            "The audit reads the private records without privacy and publishes statistics of them, so it runs "
            f"only on runs over public stand-ins ({embedded_names()})"
        )
        if method in METHODS and method not in TEXT_METHODS:  # PEARL, KnowledgeSG: no embedded text set to run on
            raise ConfigError(
                f"audit membership: a {method} run cannot be audited: {why}, and only {', '.join(TEXT_METHODS)} "
                "runs read them"
            )
        raise ConfigError(
            f"audit membership: the run read {data.get('private', 'records')!r}, not an embedded text dataset. "
            f"{why}: run the same configuration with --private embedded:imdb (or embedded:newsgroups) and audit "
            "that run"
        )
    reads_private = method not in METHODS or METHODS[method].reads_private
    if placebo != (not reads_private):
        raise ConfigError(
            f"audit membership: a {method} run reads no private record, so it has no members; audit it with "
            "--placebo to see how far the AUC moves with the draw alone (the zero-shot run of the same config)"
            if reads_private is False
            else f"audit membership: --placebo audits a run that read no private record (zero-shot); {method} read them"
        )
    if against is not None and placebo:
        raise ConfigError(
            "audit membership: --against compares a run that read the private draw with a placebo; give the "
            "private run as RUN and the zero-shot run after --against, without --placebo"
        )
    epsilon, delta = _guarantee(run_dir)
    if placebo:  # no guarantee to test (it read nothing): its AUCs are the reference a private run is read against
        epsilon, delta = math.inf, 0.0
    n_private, data_seed = _draw(data, run_dir.path)
    if n_private < MIN_CANDIDATES or (non_members is not None and non_members < MIN_CANDIDATES):
        raise DataError(
            f"audit membership: needs at least {MIN_CANDIDATES} members and {MIN_CANDIDATES} non-members (the run "
            f"drew {n_private} private records): fewer cannot support a verdict either way"
        )
    syn, output = _released(run_dir)
    placebo_run = _placebo_run(against, run_dir, dataset.source) if against is not None else None
    released_p = _released(placebo_run, "--against ") if placebo_run is not None else None  # before any embedding
    pool, _ = dataset.split()
    member_idx = dataset.private_index(n_private, data_seed)
    members_df = pool.loc[member_idx]
    rest = pool.drop(index=member_idx)
    rest = rest[~rest["text"].isin(set(members_df["text"]))]  # a duplicate of a member's text is no outsider
    n_out = min(non_members if non_members is not None else max(n_private, NON_MEMBERS), len(rest))
    if n_out < MIN_CANDIDATES:  # a draw of nearly the whole pool leaves too few records it never read
        raise DataError(
            f"audit membership: the run drew {n_private} of the {len(pool)} pool records, which leaves {n_out} it "
            f"never read; the audit needs at least {MIN_CANDIDATES} non-members: audit a run with a smaller "
            "data.n_private"
        )
    outsiders_df = rest.sample(n=n_out, random_state=seed)

    embedder = embedder or default_embedder()
    cand = list(members_df["text"].astype(str)) + list(outsiders_df["text"].astype(str))
    cand_emb = embed_test(cand, embedder)
    cand_labels = [norm_label(v) for v in [*members_df["label"], *outsiders_df["label"]]]
    if released_p is not None and not {norm_label(v) for v in released_p[0].labels} & set(cand_labels):
        raise ConfigError(
            f"audit membership: --against {against}: none of its samples carries a label of {dataset.source} "
            f"({', '.join(sorted(set(cand_labels)))}); compare with a zero-shot run of the same config"
        )
    test = dataset.test()
    test = test[~test["text"].astype(str).isin(set(cand))]  # no candidate's twin
    reference = list(test["text"].astype(str).sample(n=min(REFERENCE, len(test)), random_state=0))
    typical = nearest_similarity(cand_emb, embed_test(reference, embedder))
    m = len(members_df)
    scores = _scores(syn, embedder, cand_emb, cand_labels, typical)
    attacks = {
        name: {"score": ATTACKS[name], **attack_result(s[:m], s[m:], epsilon, delta, seed, tests=len(scores))}
        for name, s in scores.items()
    }
    near = scores["nearest"]
    bound = dp_auc_bound(*design_bound(epsilon, delta))
    comparison = None
    if placebo_run is not None and released_p is not None:
        syn_p, output_p = released_p
        scores_p = _scores(syn_p, embedder, cand_emb, cand_labels, typical)
        paired = {
            name: paired_difference(s, scores_p[name], m, seed, tests=len(scores))
            for name, s in scores.items()
            if name in scores_p
        }
        comparison = {
            "run": str(placebo_run.path.resolve()),  # the report finds it from any folder
            "method": read_run_config(placebo_run.path).get("method"),
            "synthetic": len(syn_p),
            "synthetic_sha256": output_fingerprint(output_p),
            "attacks": paired,
            "verdict": against_verdict(paired),
        }
    return {
        "run": str(run_dir.path.resolve()),
        "method": method,
        "dataset": dataset.source,
        "members": m,
        "non_members": n_out,
        "synthetic": len(syn),
        "synthetic_file": output.name,
        "synthetic_sha256": output_fingerprint(output),
        "embedding_model": embedder.name,
        "epsilon": epsilon if math.isfinite(epsilon) else "inf",  # JSON has no infinity
        "delta": delta,
        "auc_bound": bound,
        "auc_bound_add_remove": dp_auc_bound(epsilon, delta),
        "attacks": attacks,
        "near_copies": {
            "threshold": NEAR_COPY,
            "members": int((near[:m] >= NEAR_COPY).sum()),
            "non_members": int((near[m:] >= NEAR_COPY).sum()),
        },
        "placebo": placebo,
        "verdict": placebo_verdict(attacks) if placebo else verdict(attacks, bound, epsilon),
        **({"against": comparison} if comparison is not None else {}),
    }


def _released(run_dir: RunDir, role: str = "") -> tuple[Any, Path]:
    """A finished run's synthetic set and its file (``role``: how the user named the run, for messages)."""
    output = find_run_output(run_dir.path)
    if output is None:
        raise DataError(
            f"audit membership: {role}{run_dir.path} has no synthetic.jsonl/.csv/.parquet; give a finished run"
        )
    try:
        syn = load_synthetic(run_dir.path)
    except DataError as exc:
        raise DataError(f"audit membership: {role}{run_dir.path}: {exc}") from None
    if len(syn) == 0:
        raise DataError(f"audit membership: {role}{run_dir.path} released no synthetic record")
    return syn, output


def _scores(
    syn: Any, embedder: Embedder, cand_emb: np.ndarray, cand_labels: list[str], typical: np.ndarray
) -> dict[str, np.ndarray]:
    """Each attack's score of every candidate against one synthetic set (``typical``: each candidate's
    nearness to the public reference records, which the calibrated attack subtracts)."""
    syn_emb, _ = embed_synthetic(syn, embedder)
    syn_labels = [norm_label(v) for v in syn.labels]
    scores = {"nearest": nearest_similarity(cand_emb, syn_emb)}
    if set(cand_labels) & set(syn_labels):  # else every per-label score is -1: no attack at all
        scores["nearest_same_label"] = nearest_similarity(cand_emb, syn_emb, cand_labels, syn_labels)
    scores["nearest_calibrated"] = scores["nearest"] - typical
    return scores


def _placebo_run(against: str | Path, run_dir: RunDir, source: str) -> RunDir:
    """The run to compare with: same embedded dataset, and it read no private record (else its own members
    would be found, and the comparison would hide a leak as "level")."""
    from dpsynth.methods.registry import METHODS

    placebo = RunDir(against)
    if placebo.path.resolve() == run_dir.path.resolve():
        raise ConfigError(
            "audit membership: --against names the audited run itself; give a zero-shot run of the same config"
        )
    cfg = read_run_config(placebo.path)
    if not cfg:
        raise DataError(f"audit membership: --against {placebo.path} holds no run (no readable config.yaml)")
    used = used_embedded_dataset(cfg)
    if used is None or used.source != source:
        raise ConfigError(
            f"audit membership: --against {placebo.path} is a run on "
            f"{run_data_config(cfg).get('private', 'other records')!r}, not on {source}; compare runs of one dataset"
        )
    method = cfg.get("method")
    if method is None:
        raise DataError(f"audit membership: --against {placebo.path}/config.yaml names no method; give a run dir")
    if method not in METHODS or METHODS[method].reads_private:
        raise ConfigError(
            f"audit membership: --against {placebo.path} is a {method} run, which read private records; give a "
            "run that read none (--method zero-shot with the same generators), so only the draw is shared"
        )
    return placebo


def against_verdict(paired: dict[str, dict[str, Any]]) -> str:
    """One sentence on the run against its placebo, judged on the Bonferroni intervals of the differences
    (the interval shown is the one judged on)."""
    k = len(paired)

    def shown(name: str) -> str:
        a = paired[name]
        lo, hi = a["difference_verdict_interval"]
        return (
            f"the {name} attack's AUC differs from the placebo's {a['auc_placebo']:.3f} by {a['auc_difference']:+.3f} "
            f"({100 - 5 / k:.1f}% interval {lo:+.3f} to {hi:+.3f}, Bonferroni over {k} attacks)"
        )

    above = [n for n, a in paired.items() if a["difference_verdict_interval"][0] > 0]
    if above:
        return (
            f"beyond the placebo: {shown(above[0])}. The run's synthetic set sits nearer its own private records "
            "than a set that never read them: membership shows (the bound above says whether beyond epsilon)"
        )
    below = [n for n, a in paired.items() if a["difference_verdict_interval"][1] < 0]
    if below:
        return (
            f"below the placebo: {shown(below[0])}: the members sit farther from this set than from one that "
            "never read them; no sign of membership beyond what the draw gives"
        )
    best = max(paired, key=lambda n: paired[n]["auc_difference"])
    return (
        f"level with the placebo: {shown(best)}, an interval that covers 0: the AUCs above are not shown to "
        "exceed what the draw alone gives (evidence, not proof)"
    )


def verdict(attacks: dict[str, dict[str, Any]], bound: float, epsilon: float) -> str:
    """One sentence on what the attacks show, judged on their Bonferroni intervals (``auc_verdict_interval``)
    against ``bound`` on both sides of 0.5 (DP bounds the flipped test too)."""
    eps = round_up(epsilon, 6)  # rounded up: never a stronger claim than the run's
    k = len(attacks)

    def shown(name: str) -> str:
        a = attacks[name]
        lo, hi = a["auc_verdict_interval"]
        judged = "95%" if k == 1 else f"{100 - 5 / k:.1f}%, Bonferroni over {k} attacks"
        return f"the {name} attack's AUC {a['auc']:.3f} ({judged}: {lo:.3f}-{hi:.3f})"

    beyond = [n for n, a in attacks.items() if a["auc_verdict_interval"][0] > bound]
    beyond += [n for n, a in attacks.items() if a["auc_verdict_interval"][1] < 1 - bound]
    if beyond:
        return (
            f"{shown(beyond[0])} is beyond what epsilon = {eps} allows this audit ({1 - bound:.3f}-{bound:.3f}): "
            "the privacy claim is contradicted; report it"
        )
    above = [n for n, a in attacks.items() if a["auc_verdict_interval"][0] > 0.5]
    if above:
        return (
            f"members are found more often than chance: {shown(above[0])}, within what epsilon = {eps} allows. "
            "A draw can do this alone: compare with a zero-shot run of the same config (--against ZERO_SHOT_RUN)"
        )
    below = [n for n, a in attacks.items() if a["auc_verdict_interval"][1] < 0.5]
    if below:
        return (
            f"no membership signal: {shown(below[0])} is below chance, i.e. the members sit farther from the "
            "synthetic set than these non-members (the draws differ by chance; more non-members narrow it)"
        )
    best = max(attacks, key=lambda n: attacks[n]["auc"])
    return (
        f"no membership signal found: {shown(best)} is level with chance (0.5); epsilon = {eps} would allow up "
        f"to {bound:.3f} in this design. Evidence, not proof: a stronger attack or more records might find more"
    )


def placebo_verdict(attacks: dict[str, dict[str, Any]]) -> str:
    """A run that read no private record cannot know its "members": whatever its AUCs are, the draw alone
    gave them, and an audited run's AUC means something only beyond them."""
    shown = ", ".join(f"{n} {a['auc']:.3f} (95% {a['auc_95'][0]:.3f}-{a['auc_95'][1]:.3f})" for n, a in attacks.items())
    return (
        f"placebo (this run read no private record): AUC {shown} is what the draw alone gives; a run of the "
        "same configuration that read the draw leaks membership only as far as its AUCs exceed these"
    )


def rate_text(x: float, bound: bool = False) -> str:
    """A rate without rounding a small one to 0 (0.0027 is not 0.00).  A ``bound`` (what DP allows) is
    rounded up: shown rounded to nearest, 0.4449 would read as a tighter bound, 0.44, than DP gives."""
    if bound and 0 < x < 1:
        return f"{math.ceil(x * 100) / 100:.2f}" if x >= 0.1 else round_up(x, 2)
    return f"{x:.2f}" if x >= 0.1 or x == 0 else f"{x:.2g}"


def _tpr_interval(attack: dict[str, Any], fpr: str) -> str:
    ci = (attack.get("tpr_95") or {}).get(fpr)
    return f" (95% {rate_text(ci[0])}-{rate_text(ci[1])})" if ci else ""


def summary_lines(result: dict[str, Any]) -> list[str]:
    """The audit as a few lines for the terminal."""
    eps = float(result["epsilon"])
    placebo = bool(result.get("placebo"))
    lines = [
        f"membership audit of {result['run']} ({result['method']}, {result['dataset']}): {result['members']} "
        f"{'records of the draw (it read none of them)' if placebo else 'members'}, {result['non_members']} "
        f"non-members, {result['synthetic']} synthetic samples",
        "placebo: this run read no private record, so there is no guarantee to test; its AUCs are what the draw "
        "alone gives"
        if placebo
        else f"epsilon = {round_up(eps, 6)}, delta = {round_up(float(result['delta']), 6)}: no attack can "
        f"exceed AUC {round_up(result['auc_bound'], 3)} in this design (member against non-member; "
        f"{round_up(result['auc_bound_add_remove'], 3)} for one record added or removed)",
    ]
    for name, a in result["attacks"].items():
        lo, hi = a["auc_95"]
        tprs = ", ".join(
            f"TPR {a['tpr_at_fpr'][f]:.2f}{_tpr_interval(a, f)} at FPR {float(f):g}"
            + ("" if placebo else f" (DP allows {rate_text(a['tpr_bound_at_fpr'][f], bound=True)} in this design)")
            for f in a["tpr_at_fpr"]
            if a["tpr_at_fpr"][f] is not None
        )
        lines.append(f"  {name}: AUC {a['auc']:.3f} (95% {lo:.3f}-{hi:.3f}); {tprs or 'too few non-members for a TPR'}")
    nc = result["near_copies"]
    lines.append(
        f"  near copies (cosine >= {nc['threshold']}): {nc['members']} members, {nc['non_members']} non-members"
    )
    lines.append(result["verdict"])
    against = result.get("against")
    if against:
        lines.append(f"against {against['run']} ({against['method']}, read no private record; same candidates):")
        for name, a in against["attacks"].items():
            lo, hi = a["difference_95"]
            lines.append(
                f"  {name}: AUC {a['auc_placebo']:.3f} there, difference {a['auc_difference']:+.3f} "
                f"(95% {lo:+.3f} to {hi:+.3f})"
            )
        lines.append(against["verdict"])
    return lines
