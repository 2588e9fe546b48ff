"""The report's privacy section: the guarantee in plain words, the mechanisms, the input domain (privacy.json)."""

from __future__ import annotations

import math
from typing import Any

from dpsynth.privacy.report import PrivacyReport
from dpsynth.privacy.rounding import round_up
from dpsynth.report.markup import esc, fmt, shown_path, table

MECHANISM_COLUMNS = ["name", "reads", "sensitivity_l2", "sigma", "noise_multiplier", "count", "planned_count"]


# What a run directory holds beyond the guarantee (docs/privacy.md, "Not guarded"): said where the guarantee
# is stated, so that a reader does not take "the run" for every file in its folder
NOT_COVERED = (
    "Not covered: wall times (run.log, rounds.json and this report say how long steps took), every figure "
    "read from your own test data (evaluation.json, and on this page the headline, the test shares of the "
    "classes, the test texts' openings under Repetition and the Evaluation section; private unless that "
    "data is public) and what you wrote into the config (file paths included). To share, share the "
    "synthetic records and privacy.json."
)


def privacy_section(priv: PrivacyReport | None, problem: str = "") -> str:
    """The section; ``priv`` None: no privacy.json, or (``problem`` says why) one that cannot be read."""
    parts = ['<section id="privacy"><h2>Privacy guarantee</h2>']
    if priv is None:
        why = (
            f"<code>privacy.json</code> cannot be read as a privacy report ({esc(problem)})"
            if problem
            else "This run directory has no <code>privacy.json</code>: the run did not finish, or it was not "
            "written by dpsynth"
        )
        parts.append(f'<p class="warn">{why}. No privacy guarantee can be stated.</p></section>')
        return "".join(parts)
    eps, delta, mechs, adjacency = priv.epsilon, priv.delta, priv.mechanisms, priv.adjacency
    not_dp = not priv.differentially_private or not math.isfinite(eps)
    if not_dp:
        shown = round_up(eps, 3) if math.isfinite(eps) else "∞"
        words = (
            f"<strong>This run is NOT differentially private</strong> (ε = {esc(shown)}): it is a reference run "
            f"without the privacy guarantee. {esc(priv.guarantee)}"
        )
    elif eps == 0 and not mechs:
        words = (
            "This run never read any private data, so its output has no privacy cost (ε = 0): the synthetic "
            "records depend only on public inputs (task, label names, the generators)."
        )
    else:
        factor = math.exp(eps) if eps < 700 else math.inf
        words = (
            f"This run satisfies <strong>(ε = {esc(round_up(eps, 3))}, δ = {esc(round_up(delta, 2))})"
            f"-differential privacy</strong> with respect to {esc(adjacency)}. In plain words: adding or "
            f"removing any one private record changes the probability of any outcome of this run — the "
            f"synthetic records and the statistics released to make them — by at most a factor of "
            f"e<sup>ε</sup> ≈ {esc(round_up(factor, 3))}, plus at most δ = {esc(round_up(delta, 2))} added to "
            "that probability (δ is added, not a chance that the factor fails: (ε, δ)-DP bounds Pr[outcome] by "
            "e<sup>ε</sup> × Pr[outcome without the record] + δ). Whatever anyone later does with the synthetic "
            "data (train a model, publish it, combine it with other data) keeps this guarantee."
        )
    parts.append(f'<p class="{"warn" if not_dp else "guarantee"}">{words}</p>')
    if not not_dp and mechs:
        parts.append(f'<p class="note">{NOT_COVERED}</p>')
    if priv.guarantee and not not_dp:  # a reference run's statement is in the warning above already
        parts.append(f'<p class="note">Formal statement: {esc(priv.guarantee)}</p>')
    if priv.caveat:
        parts.append(f'<p class="warn">Caveat: {esc(priv.caveat)}</p>')
    if not priv.complete:
        parts.append(
            '<p class="warn">The run did not complete: the guarantee covers the releases made so far '
            "(resume the run to finish it).</p>"
        )
    acct = priv.accountant
    # one row where the ledger's spend is the accountant's figure (the usual case), two where they differ
    same = (
        acct is not None
        and acct.epsilon_at_delta is not None
        and round_up(acct.epsilon_at_delta, 6) == round_up(eps, 6)
    )
    rows: list[list[Any]] = [
        ["method", priv.method or None],
        ["epsilon spent (the accountant's epsilon at delta)" if same else "epsilon spent", round_up(eps, 6)],
        ["epsilon target", None if priv.epsilon_target is None else round_up(priv.epsilon_target, 6)],
        ["delta", round_up(delta, 6)],
        ["adjacency", adjacency],
    ]
    if acct is not None:
        rows.append(["accountant", acct.name])
        if acct.epsilon_at_delta is not None and not same:
            rows.append(["accountant's epsilon at delta", round_up(acct.epsilon_at_delta, 6)])
        if acct.gdp_crosscheck is not None:
            rows.append(["GDP cross-check epsilon", round_up(acct.gdp_crosscheck.epsilon_at_delta, 6)])
        if acct.parts:  # accounted apart and added: each release's own (epsilon, delta)
            rows.append(["composition", acct.composition])
            for part in acct.parts:
                at = f"at delta {round_up(float(part.get('delta', 0)), 2)}"
                rows.append([f"epsilon charged to {part.get('release')}, {at}", round_up(float(part["epsilon"]), 6)])
                if "epsilon_of_the_chosen_plan" in part:  # below its charge: information, not the claim
                    chosen = round_up(float(part["epsilon_of_the_chosen_plan"]), 6)
                    rows.append([f"epsilon the plan of {part.get('release')} reaches ({at}), for information", chosen])
    parts.append(table(["", "value"], [r for r in rows if r[1] is not None]))
    if mechs:
        parts.append("<h3>Mechanisms (the only steps that read private data)</h3>")
        stated = [m.fields() for m in mechs]
        keys = [k for k in MECHANISM_COLUMNS if any(k in m for m in stated)]
        keys += sorted({k for m in stated for k in m} - set(keys))
        parts.append(table([k.replace("_", " ") for k in keys], [[m.get(k) for k in keys] for m in stated]))
    if priv.post_processing:
        parts.append(
            "<h3>Post-processing (no extra privacy cost)</h3><ul>"
            + "".join(f"<li>{esc(i)}</li>" for i in priv.post_processing)
            + "</ul>"
        )
    domain = priv.domain
    if domain is not None and (domain.checks or domain.note):
        parts.append("<h3>Input domain (public checks every private record passes)</h3>")
        if domain.checks:
            parts.append("<ul>" + "".join(f"<li>{esc(i)}</li>" for i in domain.checks) + "</ul>")
        if domain.note:
            parts.append(f'<p class="note">{esc(domain.note)}</p>')
    if priv.composition:
        parts.append(f'<p class="note">Composition: {esc(priv.composition)}</p>')
    if priv.released_exactly:
        parts.append(f'<p class="warn">Written exactly, without noise: {esc(priv.released_exactly)}.</p>')
    if priv.never_written:
        parts.append(f'<p class="note">Never written to disk or logs: {esc(priv.never_written)}.</p>')
    parts.append("</section>")
    return "".join(parts)


def membership_section(result: Any, current_sha256: str | None = None, placebo_sha256: str | None = None) -> str:
    """The membership audit (``dpsynth audit membership``, membership.json) when it was run: evidence about
    the guarantee above, so it follows it.  Empty when there is none; a warning when it cannot be read or
    measured another synthetic set than the run's current one (``current_sha256``; ``placebo_sha256``: the
    ``--against`` run's)."""
    head = '<section id="membership"><h2>Membership audit</h2>'
    if result is None:
        return ""
    try:
        attacks = result["attacks"]
        placebo = bool(result.get("placebo"))
        fprs = list(next(iter(attacks.values()))["tpr_bound_at_fpr"])
        rows = [
            [name, fmt(a["auc"], 3), f"{fmt(a['auc_95'][0], 3)} – {fmt(a['auc_95'][1], 3)}"]
            + [_tpr_cell(a, f, placebo) for f in fprs]
            for name, a in attacks.items()
        ]
        scored = (
            f"{esc(result['non_members'])} pool records the run never read, scored by their nearness to the "
            f"{esc(result['synthetic'])} synthetic samples ({esc(result['embedding_model'])})."
        )
        intro = (
            f"A placebo: this run read no private record, so there is no guarantee to test. "
            f"{esc(result['members'])} records of the private draw of {esc(result['dataset'])} against {scored} "
            "Its AUCs are what the draw alone gives; a run of the same configuration that read the draw leaks "
            "membership only as far as its AUCs exceed these."
            if placebo
            else f"{esc(result['members'])} private records of {esc(result['dataset'])} (members) against {scored} "
            f"At ε = {esc(round_up(float(result['epsilon']), 3))}, δ = {esc(round_up(float(result['delta']), 3))} "
            "no attack of this design "
            f"(a member against a non-member) can exceed AUC {esc(round_up(result['auc_bound'], 3))} "
            f"({esc(round_up(result['auc_bound_add_remove'], 3))} for one record added or removed)."
        )
        nc = result["near_copies"]
        copies = (
            f"Near copies (cosine ≥ {esc(nc['threshold'])}): {esc(nc['members'])} members, "
            f"{esc(nc['non_members'])} non-members."
        )
        comparison = _against(result.get("against"), placebo_sha256)
        stale = current_sha256 is not None and result.get("synthetic_sha256") not in (None, current_sha256)
        bound = "" if placebo else " (95% interval; DP allows, this design)"
        headers = ["attack", "AUC", "95% interval", *[f"TPR at FPR {f}{bound}" for f in fprs]]
    except (KeyError, TypeError, IndexError, StopIteration, AttributeError, ValueError):
        unreadable = "membership.json cannot be read; run dpsynth audit membership again."
        return f'{head}<p class="warn">{unreadable}</p></section>'
    warn = (
        '<p class="warn">This audit measured an earlier synthetic set of this run (the file changed since, e.g. '
        "by dpsynth sample): run dpsynth audit membership again.</p>"
        if stale
        else ""
    )
    return (
        f"{head}{warn}<p>{intro}</p>{table(headers, rows)}"
        f"<p>{copies}</p><p><strong>{esc(result.get('verdict', ''))}</strong></p>{comparison}"
        '<p class="note">Evidence, not proof: a stronger attack might find more (dpsynth audit membership).</p>'
        "</section>"
    )


def _tpr_cell(attack: dict[str, Any], fpr: str, placebo: bool) -> str:
    """A TPR at a low FPR with its Clopper-Pearson interval (when the audit wrote one) and the design's DP bound,
    small values kept (a bound of 0.0027 is not 0)."""
    from dpsynth.audit.membership import rate_text

    tpr = attack["tpr_at_fpr"].get(fpr)
    if tpr is None:
        return "n/a"
    ci = (attack.get("tpr_95") or {}).get(fpr)
    shown = rate_text(float(tpr)) + (f" ({rate_text(float(ci[0]))} – {rate_text(float(ci[1]))})" if ci else "")
    return shown if placebo else f"{shown}; ≤ {rate_text(float(attack['tpr_bound_at_fpr'][fpr]), bound=True)}"


def _against(against: Any, current_sha256: str | None) -> str:
    """The run against a zero-shot run of the same config (``--against``): the AUC differences, paired.  A
    damaged block is a warning of its own; the audit above stays."""
    if not against:
        return ""
    try:
        rows = [
            [
                name,
                fmt(a["auc_placebo"], 3),
                f"{float(a['auc_difference']):+.3f}",
                f"{float(a['difference_95'][0]):+.3f} – {float(a['difference_95'][1]):+.3f}",
            ]
            for name, a in against["attacks"].items()
        ]
        intro = (
            f"Against {esc(shown_path(against['run']))} ({esc(against['method'])}, which read no private record): "
            "the same members and non-members, attacked on its set; what the draw gives both largely cancels in the "
            "difference."
        )
        verdict = esc(against["verdict"])
        stale = current_sha256 is not None and against.get("synthetic_sha256") not in (None, current_sha256)
    except (KeyError, TypeError, IndexError, AttributeError, ValueError, ArithmeticError):
        return '<p class="warn">The comparison with the --against run cannot be read; run the audit again.</p>'
    warn = (
        '<p class="warn">The --against run\'s synthetic set changed since this audit: run it again.</p>'
        if stale
        else ""
    )
    headers = ["attack", "AUC there", "difference", "95% interval (paired)"]
    return f"{warn}<p>{intro}</p>{table(headers, rows)}<p><strong>{verdict}</strong></p>"
