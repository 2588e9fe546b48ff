"""The report's privacy section: the guarantee in plain words, the mechanisms, the input domain (privacy.json)."""

from __future__ import annotations

import math
from typing import Any

from dpsynth.report.markup import esc, fmt, table


def privacy_section(priv: dict[str, Any] | None) -> str:
    parts = ['<section id="privacy"><h2>Privacy guarantee</h2>']
    if not priv:
        parts.append(
            '<p class="warn">This run directory has no <code>privacy.json</code>: the run did not finish, or it '
            "was not written by dpsynth. No privacy guarantee can be stated.</p></section>"
        )
        return "".join(parts)
    eps = priv.get("epsilon")
    delta = priv.get("delta")
    raw_mechs = priv.get("mechanisms")
    mechs = [m for m in raw_mechs if isinstance(m, dict)] if isinstance(raw_mechs, list) else []
    adjacency = priv.get("adjacency") or "add/remove one private record"
    not_dp = priv.get("differentially_private") is False or (
        isinstance(eps, (int, float)) and not math.isfinite(eps)
    )
    if not_dp:
        shown = "∞" if not isinstance(eps, (int, float)) or not math.isfinite(eps) else fmt(float(eps), 3)
        words = (
            f"<strong>This run is NOT differentially private</strong> (ε = {esc(shown)}): it is a reference run "
            f"without the privacy guarantee. {esc(priv.get('guarantee') or '')}"
        )
    elif isinstance(eps, (int, float)) and eps == 0 and not mechs:
        words = (
            "This run never read any private data, so its output has no privacy cost (ε = 0): the synthetic "
            "records depend only on public inputs (task, label names, the generators)."
        )
    elif isinstance(eps, (int, float)) and isinstance(delta, (int, float)):
        factor = math.exp(eps) if eps < 700 else math.inf
        words = (
            f"This run satisfies <strong>(ε = {esc(fmt(float(eps), 3))}, δ = {esc(fmt(float(delta), 2))})"
            f"-differential privacy</strong> with respect to {esc(adjacency)}. In plain words: adding or "
            f"removing any one private record changes the probability of any outcome of this run — the "
            f"synthetic records and everything else written to the run directory — by at most a factor of "
            f"e<sup>ε</sup> ≈ {esc(fmt(factor, 3))}, plus a probability of at most δ = {esc(fmt(float(delta), 2))} "
            "that this bound does not hold. Whatever anyone later does with the synthetic data (train a model, "
            "publish it, combine it with other data) keeps this guarantee."
        )
    else:
        words = esc(priv.get("guarantee") or "The privacy report does not state epsilon and delta.")
    parts.append(f'<p class="{"warn" if not_dp else "guarantee"}">{words}</p>')
    if priv.get("guarantee"):
        parts.append(f'<p class="note">Formal statement: {esc(priv["guarantee"])}</p>')
    if priv.get("complete") is False:
        parts.append(
            '<p class="warn">The run did not complete: the guarantee covers the releases made so far '
            "(resume the run to finish it).</p>"
        )
    target = priv.get("epsilon_target")
    rows: list[list[Any]] = [
        ["method", priv.get("method")],
        ["epsilon spent", fmt(eps, 6) if isinstance(eps, (int, float)) else eps],
        ["epsilon target", target],
        ["delta", delta],
        ["adjacency", adjacency],
    ]
    acct = priv.get("accountant")
    if isinstance(acct, dict):
        rows.append(["accountant", acct.get("name")])
        at = acct.get("epsilon_at_delta")
        if isinstance(at, (int, float)):
            rows.append(["accountant's epsilon at delta", fmt(float(at), 6)])
        cross = acct.get("gdp_crosscheck")
        if isinstance(cross, dict) and "epsilon_at_delta" in cross:
            ce = cross.get("epsilon_at_delta")
            rows.append(["GDP cross-check epsilon", fmt(ce, 6) if isinstance(ce, (int, float)) else ce])
    elif acct is not None:
        rows.append(["accountant", acct])
    parts.append(table(["", "value"], [r for r in rows if r[1] is not None]))
    if mechs:
        parts.append("<h3>Mechanisms (the only steps that read private data)</h3>")
        known = ["name", "reads", "sensitivity_l2", "sigma", "noise_multiplier", "count", "planned_count"]
        keys = [k for k in known if any(k in m for m in mechs)]
        keys += sorted({k for m in mechs for k in m} - set(keys))
        parts.append(table([k.replace("_", " ") for k in keys], [[m.get(k) for k in keys] for m in mechs]))
    pp = priv.get("post_processing")
    if pp:
        items = pp if isinstance(pp, list) else [pp]
        parts.append(
            "<h3>Post-processing (no extra privacy cost)</h3><ul>"
            + "".join(f"<li>{esc(i)}</li>" for i in items)
            + "</ul>"
        )
    domain = priv.get("domain")
    if isinstance(domain, dict) and (domain.get("checks") or domain.get("note")):
        checks = domain.get("checks")
        items = checks if isinstance(checks, list) else [checks] if checks else []
        parts.append("<h3>Input domain (public checks every private record passes)</h3>")
        if items:
            parts.append("<ul>" + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>")
        if domain.get("note"):
            parts.append(f'<p class="note">{esc(domain["note"])}</p>')
    if priv.get("composition"):
        parts.append(f'<p class="note">Composition: {esc(priv["composition"])}</p>')
    if priv.get("never_written"):
        parts.append(f'<p class="note">Never written to disk or logs: {esc(priv["never_written"])}.</p>')
    parts.append("</section>")
    return "".join(parts)
