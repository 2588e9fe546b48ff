"""The report's generation-rounds section: what rounds.json says of each round (generator weights, vote mass,
accepted samples, keywords, outcomes, epsilon), one compact table per measure.

The votes are called noisy only where privacy.json says the run is differentially private: an epsilon = inf
run releases them exactly (``noised`` False), and a run whose privacy.json is missing or damaged cannot be
said to have noised them (``noised`` None)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dpsynth.privacy.rounding import round_up
from dpsynth.report import plots
from dpsynth.report.markup import esc, fmt, table
from dpsynth.selection import WEAK_VOTE


def _generators_table(cfg: dict[str, Any]) -> str:
    gens = cfg.get("generators")
    if not isinstance(gens, list) or not gens:
        return ""
    rows = [
        [g.get("name"), g.get("backend"), g.get("model"), g.get("prompt_format")] for g in gens if isinstance(g, dict)
    ]
    return "<h3>Generators</h3>" + table(["name", "backend", "model", "prompt format"], rows)


def vote_adjective(noised: bool | None) -> str:
    """'noisy ', 'exact ' or '' before "vote": the word a title may use for the run's votes (``noised``:
    privacy.json says the run is DP, says it is not, or cannot be read)."""
    return {True: "noisy ", False: "exact ", None: ""}[noised]


_VOTE_MASS_TITLE = {
    True: "Noisy vote mass per round (sum of noised near-votes over each generator's samples)",
    False: "Exact vote mass per round (sum of near-votes without noise over each generator's samples)",
    None: "Vote mass per round (sum of near-votes over each generator's samples)",
}


def _votes_note(noised: bool | None) -> str:
    if noised:
        return "Weights and vote masses are computed from the <em>noised</em> vote histograms only (post-processing). "
    if noised is False:
        return (
            "This run is <strong>not</strong> differentially private: weights and vote masses are computed from "
            "the vote histograms <em>without noise</em>, which <code>votes/</code> and <code>rounds.json</code> "
            "hold exactly. "
        )
    return "Weights and vote masses are computed from the vote histograms (privacy.json cannot say whether noised). "


def rounds_section(
    rounds: list[dict[str, Any]] | None,
    cfg: dict[str, Any],
    labels: Mapping[str, str],
    note: str = "",
    noised: bool | None = True,
) -> str:
    parts = ['<section id="rounds"><h2>Generation rounds</h2>', _generators_table(cfg)]
    if note:
        parts.append(f'<p class="note">{esc(note)}</p></section>')
        return "".join(parts)
    if not rounds:
        parts.append(
            '<p class="note">This method writes no per-round summary (<code>rounds.json</code>): there are no '
            "generator weights or vote masses to show.</p></section>"
        )
        return "".join(parts)
    gens = sorted({g for r in rounds for key in ("weights", "vote_mass", "accepted") for g in (r.get(key) or {})})
    xs = [int(r.get("round", i)) for i, r in enumerate(rounds)]
    voted = [r for r in rounds if r.get("weights")]
    parts.append(_weak_vote_warning(voted, labels) if noised else "")
    vx = [int(r.get("round", 0)) for r in voted]
    if voted and len(gens) > 1:  # one generator's weight is 1 in every round: a flat line says nothing
        svg = plots.line_chart(
            "weights",
            f"Generator weights per round (from the {vote_adjective(noised)}vote)",
            vx,
            {g: [(r.get("weights") or {}).get(g) for r in voted] for g in gens},
            ylabel="weight (share of next budget)",
            ylim=(0.0, 1.0),
        )
        if svg:
            parts.append(svg)
    if voted:
        svg = plots.bar_chart(
            "votemass",
            _VOTE_MASS_TITLE[noised],
            [str(x) for x in vx],
            {g: [float((r.get("vote_mass") or {}).get(g) or 0.0) for r in voted] for g in gens},
            xlabel="round",
            ylabel=f"{vote_adjective(noised)}vote mass",
        )
        if svg:
            parts.append(svg)
    if any(r.get("accepted") for r in rounds):
        svg = plots.bar_chart(
            "accepted",
            "Accepted synthetic samples per round",
            [str(x) for x in xs],
            {g: [float((r.get("accepted") or {}).get(g) or 0) for r in rounds] for g in gens},
            xlabel="round",
            ylabel="samples",
            stacked=True,
        )
        if svg:
            parts.append(svg)
    parts.append(_round_tables(rounds, gens, labels, noised))
    parts.append(_keywords_table(rounds, labels))
    parts.append(_outcomes_table(rounds))
    parts.append(
        f'<p class="note">{_votes_note(noised)}Round 0 is the zero-shot seed round and uses no private data. '
        "<em>Votes per sample / noise sd</em>: the near votes an average sample of the round's vote received "
        "(estimated from the released votes) over the noise's standard deviation. A vote over every sample made "
        "so far (<code>wasp.vote_on: all</code>, the default) weakens from round to round; below about 0.25 the "
        "good and bad examples are chosen mostly by the noise.</p></section>"
    )
    return "".join(parts)


# The per-generator measures of rounds.json, each shown as its own small table ({votes}: vote_adjective).
ROUND_MEASURES = (
    ("weights", "Generator weights (share of the next round's budget)"),
    ("vote_mass", "{votes}vote mass"),
    ("accepted", "Accepted samples"),
)


def _weak_vote_warning(voted: list[dict[str, Any]], labels: Mapping[str, str]) -> str:
    """A warning box when a vote was too weak to rank a class's samples: its good and bad examples were then
    chosen mostly by the noise, and the rounds after it add little that the private records taught (the run
    log says it once; a reader of the page must not have to find it there)."""
    weak = []
    for i, r in enumerate(voted):
        per = r.get("class_vote_signal")
        per = per if isinstance(per, dict) and per else {"": r.get("vote_signal")}
        low = [(float(v), labels.get(c, c)) for c, v in per.items() if isinstance(v, (int, float)) and v < WEAK_VOTE]
        if low:
            v, c = min(low)
            weak.append(f"{_round_name(r, i)} ({c + ': ' if c else ''}{v:.2f})")
    if not weak:
        return ""
    return (
        f'<p class="warn">The vote was weak in round{"s" * (len(weak) > 1)} {", ".join(weak)}: below about '
        f"{WEAK_VOTE} votes per sample / noise sd, a class's good and bad examples are chosen mostly by the noise, "
        "so those rounds add little that the private records taught; compare the set with a zero-shot set "
        "(<code>dpsynth evaluate --reference-zero-shot</code>). <code>wasp.vote_on: latest</code>, a smaller "
        "<code>wasp.population</code>, fewer <code>wasp.rounds</code> or a larger epsilon strengthen it.</p>"
    )


def _round_name(r: dict[str, Any], i: int) -> str:
    """'3', or '5 (expansion)' for the samples made after the last vote from its results."""
    return f"{r.get('round', i)}" + (" (expansion)" if r.get("expansion") else "")


def _signal(r: Mapping[str, Any], labels: Mapping[str, str]) -> Any:
    """A voted round's votes per sample over the noise sd, and its weakest class: the good and bad
    examples are chosen class by class, so a class the noise swamps hides behind a healthy mean."""
    mean, per = r.get("vote_signal"), r.get("class_vote_signal")
    if not isinstance(mean, (int, float)) or not isinstance(per, dict) or len(per) < 2:
        return mean
    c = min(per, key=lambda k: float(per[k]))
    return f"{fmt(mean)} ({labels.get(c, c)}: {fmt(float(per[c]))})"


def _round_tables(
    rounds: list[dict[str, Any]], gens: list[str], labels: Mapping[str, str], noised: bool | None = True
) -> str:
    """The rounds as compact tables: one per measure (a row per generator, a column per round), then
    one row per round for class shares, epsilon and time.  One table with a column per generator and
    measure (13 columns for 3 generators) was wider than the page."""
    subs = []
    for key, title in ROUND_MEASURES:
        have = [(_round_name(r, i), r[key]) for i, r in enumerate(rounds) if isinstance(r.get(key), dict) and r[key]]
        if have:  # only the rounds that have the measure (round 0, the zero-shot seed, has no vote)
            rows = [[g] + [values.get(g) for _, values in have] for g in gens]
            heads = ["generator", *(f"round {x}" for x, _ in have)]
            shown = title.format(votes=vote_adjective(noised))
            subs.append(f"<div><h4>{esc(shown[:1].upper() + shown[1:])}</h4>{table(heads, rows)}</div>")
    rows = []
    for r in rounds:
        shares = r.get("class_shares") or {}
        share_txt = (
            ", ".join(f"{labels.get(k, k)} {float(v):.2f}" for k, v in shares.items())
            if isinstance(shares, dict) and shares
            else None
        )
        rows.append(
            [
                _round_name(r, len(rows)),
                share_txt,
                _signal(r, labels),
                _epsilon(r.get("epsilon_spent")),
                r.get("seconds"),
            ]
        )
    subs.append(
        "<div><h4>Class shares, vote strength, privacy spent and time</h4>"
        + table(
            ["round", "class shares", "votes per sample / noise sd (lowest class)", "epsilon spent so far", "seconds"],
            rows,
        )
        + "</div>"
    )
    return '<h3>Per round</h3><div class="subtables">' + "".join(subs) + "</div>"


def _epsilon(x: Any) -> Any:
    """A round's epsilon spent as the privacy section shows epsilon: rounded up, never down."""
    return round_up(float(x), 4) if isinstance(x, (int, float)) and not isinstance(x, bool) else x


# What happened to each generator output (rounds.json "outcomes"), in the order a reader asks about it.
OUTCOMES = {
    "accepted": "accepted",
    "unusable": "unusable (empty, too short or long, chatter)",
    "duplicate": "duplicate",
    "copies_example": "copies a prompt example",
    "wrong_label": "wrong label (label judge)",
    "judge_unsure": "judge unsure (kept)",
    "surplus": "surplus (quota already met)",
    "request_failed": "request failed (no output; run.log says why)",
    "judge_failed": "label judge's request failed (asked again)",
}


def _keywords_table(rounds: list[dict[str, Any]], labels: Mapping[str, str]) -> str:
    """wasp.variation = keywords: the words each round's prompts drew from, per class (from synthetic
    samples the released vote chose, so public)."""
    rows = [
        [_round_name(r, i), labels.get(c, c), ", ".join(map(str, words))]
        for i, r in enumerate(rounds)
        if isinstance(r.get("keywords"), dict)
        for c, words in r["keywords"].items()
        if isinstance(words, list)
    ]
    if not rows:
        return ""
    return "<h3>Words the prompts named (keywords variation)</h3>" + table(["round", "class", "words"], rows)


def _outcomes_table(rounds: list[dict[str, Any]]) -> str:
    """Per round and generator: how many outputs were accepted and why the others were not."""
    found = [
        (r.get("round"), g, counts)
        for r in rounds
        for g, counts in (r.get("outcomes") or {}).items()
        if isinstance(counts, dict)
    ]
    if not found:
        return ""
    # failed requests only where some failed: a healthy run's table keeps its width
    kinds = [k for k in OUTCOMES if not k.endswith("_failed") or any(c.get(k) for _, _, c in found)]
    rows = [[t, g] + [counts.get(k, 0) for k in kinds] for t, g, counts in found]
    headers = ["round", "generator", *(OUTCOMES[k] for k in kinds)]
    return "<h3>Generator outputs and why some were dropped</h3>" + table(headers, rows)
