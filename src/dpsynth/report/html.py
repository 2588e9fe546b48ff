"""``dpsynth report RUN_DIR``: one self-contained HTML file a person reads.

Sections: the headline figure of the evaluation with its reference points and readings (when
``dpsynth evaluate`` ran; a reader looks there first), privacy guarantee (plain words + mechanism
table, from privacy.json), generation rounds (generator weights, noisy vote mass, accepted samples,
epsilon per round, from rounds.json when the method writes it; one compact table per measure),
class balance, evaluation (evaluation.json, including per-round FID), example synthetic samples per
class (cleaned of markdown and prompt echoes for reading, the raw text kept alongside), and the
resolved config.  Wide tables scroll inside their own box, so the page never scrolls sideways.

Only public run outputs are read: synthetic records, the privacy report, per-round summaries of
noised votes, the config.  Everything taken from a file is HTML-escaped; charts are inline SVG;
the page loads nothing from anywhere (no scripts, no external styles, fonts or images).
"""

from __future__ import annotations

import html
import json
import math
import random
import re
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dpsynth.errors import DataError
from dpsynth.io import atomic_write_text
from dpsynth.report import plots

REPORT_FILE = "report.html"
SAMPLES_PER_CLASS = 5
SAMPLE_CHARS = 700

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;color:#1d2330;
background:#fafbfc;line-height:1.5}
main{max-width:980px;margin:0 auto;padding:1.5rem 1.25rem 3rem}
header{border-bottom:1px solid #dde2ea;margin-bottom:1rem}
h1{font-size:1.6rem;margin:.2rem 0}h2{font-size:1.25rem;margin:2rem 0 .6rem;border-bottom:1px solid #e4e8ef;
padding-bottom:.2rem}h3{font-size:1.02rem;margin:1.2rem 0 .4rem}
.meta{color:#5a6478;font-size:.9rem}
nav a{margin-right:.9rem;font-size:.92rem;color:#2456a6;text-decoration:none}
.tablewrap{max-width:100%;overflow-x:auto;margin:.5rem 0 1rem}
table{border-collapse:collapse;margin:0;font-size:.88rem;background:#fff}
.subtables{display:flex;flex-wrap:wrap;gap:0 1.5rem;align-items:flex-start}
.subtables>div{max-width:100%;min-width:0}
h4{font-size:.92rem;margin:.7rem 0 .2rem;font-weight:600}
th,td{border:1px solid #dde2ea;padding:.3rem .55rem;text-align:left;vertical-align:top}
th{background:#f0f3f8;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.headline{background:#eef3fb;border-left:4px solid #2456a6;padding:.6rem 1rem;margin:.6rem 0}
.headline .figure{font-size:1.45rem;margin:.1rem 0}.headline p{margin:.3rem 0}
.headline ul{margin:.4rem 0;padding-left:1.2rem}.refs td:last-child{white-space:nowrap}
.guarantee{background:#eef6ee;border-left:4px solid #3c8d3c;padding:.7rem 1rem;margin:.6rem 0}
.warn{background:#fff6e5;border-left:4px solid #d08a00;padding:.5rem 1rem;margin:.6rem 0}
.note{color:#5a6478;font-size:.9rem}
.sample{background:#fff;border:1px solid #dde2ea;border-radius:4px;padding:.5rem .75rem;margin:.4rem 0;
white-space:pre-wrap;word-wrap:break-word;font-size:.9rem}
.sample .text{margin:0}
.sample .src{display:block;color:#5a6478;font-size:.78rem;margin-top:.25rem}
.sample details{font-size:.78rem;color:#5a6478;margin-top:.2rem}
.sample details pre{white-space:pre-wrap;margin:.3rem 0 0;font-size:.8rem}
svg.chart{width:100%;max-width:680px;height:auto;display:block;margin:.5rem 0 1rem}
pre{background:#fff;border:1px solid #dde2ea;padding:.75rem;overflow-x:auto;font-size:.82rem}
code{font-size:.9em;overflow-wrap:anywhere}
"""


def esc(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def fmt(x: Any, digits: int = 4) -> str:
    """A number for a table cell: ints with separators, floats to ``digits`` significant figures."""
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if math.isnan(x):
            return "—"
        if x == 0:
            return "0"
        if abs(x) >= 1 or abs(x) < 1e-3:
            return f"{x:.{digits}g}"
        return f"{x:.{digits}f}".rstrip("0").rstrip(".")
    return str(x)


def _cell(x: Any) -> str:
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return f'<td class="num">{esc(fmt(x))}</td>'
    if isinstance(x, (dict, list)):
        return f"<td><code>{esc(json.dumps(x, default=str))}</code></td>"
    return f"<td>{esc(fmt(x))}</td>"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows)
    c = f' class="{esc(cls)}"' if cls else ""
    # the wrapper scrolls a table wider than the page inside itself, so the page never widens
    return f'<div class="tablewrap"><table{c}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


# ---------------------------------------------------------------- inputs
def _read_json(path: Path) -> Any:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        raise DataError(f"{path}: not valid JSON; the run directory is damaged or still being written") from None


def _read_config(run_dir: Path) -> tuple[dict[str, Any], str | None]:
    p = run_dir / "config.yaml"
    if not p.exists():
        return {}, None
    import yaml

    try:
        text = p.read_text(encoding="utf-8")
        cfg = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}, None
    return (cfg if isinstance(cfg, dict) else {}), text


def _read_synthetic(run_dir: Path) -> list[dict[str, Any]]:
    from dpsynth.data import read_table
    from dpsynth.evaluate.core import find_run_output

    out = find_run_output(run_dir)
    if out is None:
        return []
    df = read_table(out)
    return [{str(k): v for k, v in r.items()} for r in df.to_dict(orient="records")]


def _normalise_records(records: list[dict[str, Any]], cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """Give every record a ``label`` (from the config's label column if the output has no ``label``)
    and a ``text`` (for non-text outputs, e.g. tabular rows: ``column: value`` lines)."""
    if not records:
        return records
    data = cfg.get("data") if isinstance(cfg.get("data"), dict) else {}
    key = "label" if "label" in records[0] else str((data or {}).get("label_column") or "")
    out = []
    for r in records:
        r = dict(r)
        r["label"] = str(r.get(key, "")) if key else ""
        if "text" not in r:
            skip = {"label", key, "label_name", "generator", "round"}
            r["text"] = "\n".join(f"{k}: {v}" for k, v in r.items() if k not in skip)
        out.append(r)
    return out


def run_task(cfg: dict[str, Any]) -> str | None:
    """The task the run used, from config.yaml ``data.task``.

    Runs on the embedded IMDb data that predate the resolved config left ``data.task`` at its
    default "text", while the task they generated for (and prompted with) was "movie review"."""
    from dpsynth.data import EMBEDDED_IMDB, IMDB_TASK
    from dpsynth.evaluate.core import run_data_config

    data = run_data_config(cfg)
    task = data.get("task")
    if data.get("private") == EMBEDDED_IMDB and task in (None, "", "text"):
        return IMDB_TASK
    return str(task) if task not in (None, "") else None


# ---------------------------------------------------------------- sections
def _privacy_section(priv: dict[str, Any] | None) -> str:
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


def _generators_table(cfg: dict[str, Any]) -> str:
    gens = cfg.get("generators")
    if not isinstance(gens, list) or not gens:
        return ""
    rows = [
        [g.get("name"), g.get("backend"), g.get("model"), g.get("prompt_format")] for g in gens if isinstance(g, dict)
    ]
    return "<h3>Generators</h3>" + table(["name", "backend", "model", "prompt format"], rows)


def _rounds_section(rounds: list[dict[str, Any]] | None, cfg: dict[str, Any], labels: Mapping[str, str]) -> str:
    parts = ['<section id="rounds"><h2>Generation rounds</h2>', _generators_table(cfg)]
    if not rounds:
        parts.append(
            '<p class="note">This method writes no per-round summary (<code>rounds.json</code>): there are no '
            "generator weights or vote masses to show.</p></section>"
        )
        return "".join(parts)
    gens = sorted({g for r in rounds for key in ("weights", "vote_mass", "accepted") for g in (r.get(key) or {})})
    xs = [int(r.get("round", i)) for i, r in enumerate(rounds)]
    voted = [r for r in rounds if r.get("weights")]
    if voted:
        vx = [int(r.get("round", 0)) for r in voted]
        svg = plots.line_chart(
            "weights",
            "Generator weights per round (from the noisy vote)",
            vx,
            {g: [(r.get("weights") or {}).get(g) for r in voted] for g in gens},
            ylabel="weight (share of next budget)",
            ylim=(0.0, 1.0),
        )
        if svg:
            parts.append(svg)
        svg = plots.bar_chart(
            "votemass",
            "Noisy vote mass per round (sum of noised near-votes over each generator's samples)",
            [str(x) for x in vx],
            {g: [float((r.get("vote_mass") or {}).get(g) or 0.0) for r in voted] for g in gens},
            xlabel="round",
            ylabel="noisy vote mass",
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
    parts.append(_round_tables(rounds, gens, labels))
    parts.append(_outcomes_table(rounds))
    parts.append(
        '<p class="note">Weights and vote masses are computed from the <em>noised</em> vote histograms only '
        "(post-processing). Round 0 is the zero-shot seed round and uses no private data.</p></section>"
    )
    return "".join(parts)


# The per-generator measures of rounds.json, each shown as its own small table.
ROUND_MEASURES = (
    ("weights", "Generator weights (share of the next round's budget)"),
    ("vote_mass", "Noisy vote mass"),
    ("accepted", "Accepted samples"),
)


def _round_name(r: dict[str, Any], i: int) -> str:
    """'3', or '5 (expansion)' for the samples made after the last vote from its results."""
    return f"{r.get('round', i)}" + (" (expansion)" if r.get("expansion") else "")


def _round_tables(rounds: list[dict[str, Any]], gens: list[str], labels: Mapping[str, str]) -> str:
    """The rounds as compact tables: one per measure (a row per generator, a column per round), then
    one row per round for class shares, epsilon and time.  One table with a column per generator and
    measure (13 columns for 3 generators) was wider than the page."""
    subs = []
    for key, title in ROUND_MEASURES:
        have = [(_round_name(r, i), r[key]) for i, r in enumerate(rounds) if isinstance(r.get(key), dict) and r[key]]
        if have:  # only the rounds that have the measure (round 0, the zero-shot seed, has no vote)
            rows = [[g] + [values.get(g) for _, values in have] for g in gens]
            heads = ["generator", *(f"round {x}" for x, _ in have)]
            subs.append(f"<div><h4>{esc(title)}</h4>{table(heads, rows)}</div>")
    rows = []
    for r in rounds:
        shares = r.get("class_shares") or {}
        share_txt = (
            ", ".join(f"{labels.get(k, k)} {float(v):.2f}" for k, v in shares.items())
            if isinstance(shares, dict) and shares
            else None
        )
        rows.append([_round_name(r, len(rows)), share_txt, r.get("epsilon_spent"), r.get("seconds")])
    subs.append(
        "<div><h4>Class shares, privacy spent and time</h4>"
        + table(["round", "class shares", "epsilon spent", "seconds"], rows)
        + "</div>"
    )
    return '<h3>Per round</h3><div class="subtables">' + "".join(subs) + "</div>"


# What happened to each generator output (rounds.json "outcomes"), in the order a reader asks about it.
OUTCOMES = {
    "accepted": "accepted",
    "unusable": "unusable (empty, too short or long, chatter)",
    "duplicate": "duplicate",
    "copies_example": "copies a prompt example",
    "wrong_label": "wrong label (label judge)",
    "judge_unsure": "judge unsure (kept)",
    "surplus": "surplus (quota already met)",
}


def _outcomes_table(rounds: list[dict[str, Any]]) -> str:
    """Per round and generator: how many outputs were accepted and why the others were not."""
    rows = []
    for r in rounds:
        for g, counts in (r.get("outcomes") or {}).items():
            if isinstance(counts, dict):
                rows.append([r.get("round"), g] + [counts.get(k, 0) for k in OUTCOMES])
    if not rows:
        return ""
    headers = ["round", "generator", *OUTCOMES.values()]
    return "<h3>Generator outputs and why some were dropped</h3>" + table(headers, rows)


def _label_names(cfg: dict[str, Any], priv: dict[str, Any] | None, records: list[dict[str, Any]]) -> dict[str, str]:
    from dpsynth.data import EMBEDDED_IMDB, IMDB_LABELS
    from dpsynth.evaluate.core import run_data_config

    names: dict[str, str] = {}
    labels = (cfg.get("data") or {}).get("labels") if isinstance(cfg.get("data"), dict) else None
    if not labels and priv and isinstance(priv.get("public_inputs"), dict):
        labels = priv["public_inputs"].get("labels")
    if not labels and run_data_config(cfg).get("private") == EMBEDDED_IMDB:
        labels = IMDB_LABELS  # a hand-written or older config: the embedded data's public label names
    if isinstance(labels, dict):
        names.update({str(k): str(v) for k, v in labels.items()})
    for r in records:
        if r.get("label_name") and str(r.get("label")) not in names:
            names[str(r.get("label"))] = str(r["label_name"])
    return names


def _class_section(
    records: list[dict[str, Any]],
    labels: Mapping[str, str],
    rounds: list[dict[str, Any]] | None,
    evaluation: dict[str, Any] | None,
) -> str:
    parts = ['<section id="classes"><h2>Class balance</h2>']
    if not records:
        parts.append('<p class="note">No synthetic records found.</p></section>')
        return "".join(parts)
    counts = Counter(str(r.get("label", "")) for r in records)
    keys = sorted(counts)
    total = sum(counts.values())
    test_shares = ((evaluation or {}).get("test") or {}).get("shares") or {}
    series: dict[str, list[float]] = {"synthetic": [counts[k] / total for k in keys]}
    if test_shares:
        series["test (real held-out)"] = [float(test_shares.get(k, 0.0)) for k in keys]
    svg = plots.bar_chart(
        "classes", "Label shares", [labels.get(k, k) for k in keys], series, ylabel="share of records"
    )
    if svg:
        parts.append(svg)
    rows = [
        [k, labels.get(k, ""), counts[k], counts[k] / total] + ([test_shares.get(k)] if test_shares else [])
        for k in keys
    ]
    headers = ["label", "name", "synthetic records", "share"] + (["test share"] if test_shares else [])
    parts.append(table(headers, rows))
    if any("generator" in r for r in records):
        gens = sorted({str(r.get("generator", "")) for r in records})
        by = Counter((str(r.get("generator", "")), str(r.get("label", ""))) for r in records)
        parts.append("<h3>Records per generator and label</h3>")
        parts.append(
            table(
                ["generator"] + [labels.get(k, k) for k in keys] + ["total"],
                [[g] + [by[(g, k)] for k in keys] + [sum(by[(g, k)] for k in keys)] for g in gens],
            )
        )
    shares = [r for r in (rounds or []) if r.get("class_shares")]
    if shares:
        svg = plots.line_chart(
            "classshares",
            "Class shares per round (from the noisy per-class vote mass)",
            [int(r.get("round", 0)) for r in shares],
            {labels.get(k, k): [(r.get("class_shares") or {}).get(k) for r in shares] for k in keys},
            ylabel="share of next round's budget",
            ylim=(0.0, 1.0),
        )
        if svg:
            parts.append(svg)
    parts.append("</section>")
    return "".join(parts)


def _num(x: Any) -> float | None:
    """``x`` as a float if it is a finite number (evaluation.json may hold null or a string)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


def _headline_of(ev: dict[str, Any]) -> dict[str, Any] | None:
    """evaluation.json's headline; for files written before it existed, the default classifier's accuracy
    (without reference points, which only the newer evaluation computes)."""
    head = ev.get("headline")
    if isinstance(head, dict) and _num(head.get("value")) is not None:
        return head
    acc = _num((((ev.get("utility") or {}).get("logreg") or {}).get("accuracy") or {}).get("mean"))
    if acc is None:
        return None
    tst = ev.get("test") or {}
    return {
        "metric": "accuracy",
        "value": acc,
        "description": (
            "logistic regression on frozen sentence embeddings, trained on the synthetic records, tested on "
            f"{fmt(tst.get('n'))} real held-out records ({tst.get('source')})"
        ),
        "references": [],
    }


def _acc(x: float | None) -> str:
    """An accuracy as the headline shows it: three decimals, so 1.0 reads 1.000 and 0.7 reads 0.700."""
    return "—" if x is None else f"{x:.3f}"


def _headline_section(ev: dict[str, Any] | None) -> str:
    """The headline figure at the top of the page: what it is, what to compare it with, what the
    fidelity metrics say in words.  Empty when the run was not evaluated."""
    from dpsynth.evaluate.downstream import spread
    from dpsynth.evaluate.fidelity import readings as fidelity_readings

    head = _headline_of(ev) if ev else None
    if ev is None or head is None:
        return ""
    value = _num(head.get("value"))
    parts = [
        '<section id="headline"><h2>Headline</h2><div class="headline">',
        f'<p class="figure">{esc(head.get("metric") or "accuracy")} <strong>{esc(_acc(value))}</strong></p>',
        f"<p>{esc(head.get('description') or head.get('text') or '')}</p>",
    ]
    rows = []
    for ref in head.get("references") or []:
        v = _num(ref.get("value")) if isinstance(ref, dict) else None
        if v is None:
            continue
        sp = spread(ref, digits=3, what="draws", pm="±") if ref.get("draws") else ""
        rows.append([ref.get("label") or ref.get("name"), f"{_acc(v)} {sp}".strip()])
    if rows:
        parts.append(table(["for comparison: the same classifier trained on", "accuracy"], rows, cls="refs"))
    readings = ev.get("readings")
    if not isinstance(readings, dict) or not readings:
        fid = ev.get("fidelity")
        readings = fidelity_readings(fid) if isinstance(fid, dict) else {}
    items = [readings[k] for k in ("mauve", "precision_recall", "fid") if isinstance(readings.get(k), str)]
    if items:
        parts.append('<ul class="readings">' + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>")
    for note in ev.get("notes") or []:
        parts.append(f'<p class="note">{esc(note)}</p>')
    parts.append("</div></section>")
    return "".join(parts)


def _with_spread(summary: dict[str, Any], deterministic: bool) -> str:
    """A mean with its spread over seeds, only where seeds change something: a deterministic classifier
    has none, and float round-off (older evaluation.json files stored std 1.36e-16) is never shown as one."""
    from dpsynth.evaluate.downstream import spread

    mean = summary.get("mean")
    sp = "" if deterministic else spread(summary, pm="±")
    return f"{fmt(mean)} {sp}".strip() if isinstance(mean, (int, float)) else fmt(mean)


def _evaluation_section(ev: dict[str, Any] | None, run_dir: Path, embedded_imdb: bool = False) -> str:
    parts = ['<section id="evaluation"><h2>Evaluation</h2>']
    if not ev:
        test = "" if embedded_imdb else " --test HELD_OUT_FILE"
        why = (
            " (the run used an embedded dataset, so its test split is the default)"
            if embedded_imdb
            else " (your real held-out data: CSV, JSONL or Parquet)"
        )
        parts.append(
            f'<p class="note">Not evaluated yet. Run <code>dpsynth evaluate --synthetic {esc(run_dir)}{test}</code>'
            f"{why}, then <code>dpsynth report</code> again.</p></section>"
        )
        return "".join(parts)
    syn, tst = ev.get("synthetic") or {}, ev.get("test") or {}
    parts.append(
        f'<p class="note">{esc(fmt(syn.get("n")))} synthetic records evaluated against '
        f"{esc(fmt(tst.get('n')))} real held-out records from <code>{esc(tst.get('source'))}</code>; "
        f"embeddings: {esc(ev.get('embedding_model'))}.</p>"
    )
    util = ev.get("utility") or {}
    if util:
        parts.append("<h3>Downstream utility (train on synthetic, test on real)</h3>")
        rows = []
        for name, u in util.items():
            acc, f1 = u.get("accuracy") or {}, u.get("macro_f1") or {}
            rows.append(
                [
                    name,
                    _with_spread(acc, bool(u.get("deterministic"))),
                    _with_spread(f1, bool(u.get("deterministic"))),
                    "1 (deterministic)" if u.get("deterministic") else len(u.get("seeds") or []),
                    u.get("classifier"),
                ]
            )
        parts.append(table(["classifier", "accuracy", "macro-F1", "runs", "details"], rows))
    fid = ev.get("fidelity")
    if fid:
        parts.append("<h3>Fidelity in embedding space (synthetic vs real held-out)</h3>")
        ref = fid.get("fid_real_reference")
        rows = [
            ["FID (lower is closer)", fid.get("fid")],
            *(
                [[f"FID of a real sample of the same size ({fmt(ref.get('n'))} records)", ref.get("fid")]]
                if isinstance(ref, dict)
                else []
            ),
            [f"precision (k={fid.get('k')}; share of synthetic inside the real manifold)", fid.get("precision")],
            [f"recall (k={fid.get('k')}; share of real inside the synthetic manifold)", fid.get("recall")],
        ]
        if "mauve" in fid:
            rows.append([f"MAUVE (higher is closer; {fid.get('mauve_backend')})", fid.get("mauve")])
        lc = fid.get("label_consistency")
        if isinstance(lc, dict):
            rows.append(
                [
                    "label consistency (share of synthetic samples a classifier trained on the real test data "
                    f"gives their own label; real test data scores {fmt(lc.get('real_reference'))})",
                    lc.get("score"),
                ]
            )
            for g, v in (lc.get("by_generator") or {}).items():
                if isinstance(v, dict):
                    rows.append([f"label consistency of {g} ({v.get('n')} samples)", v.get("score")])
        parts.append(table(["metric", "value"], rows))
    ts = ev.get("text_stats")
    if ts:
        keys = ["mean_words", "median_words", "distinct_1", "distinct_2", "vocabulary_size"]
        s, t = ts.get("synthetic") or {}, ts.get("test") or {}
        parts.append("<h3>Length and vocabulary</h3>")
        parts.append(
            table(["statistic", "synthetic", "test"], [[k.replace("_", " "), s.get(k), t.get(k)] for k in keys])
        )
    per = ev.get("per_round")
    if per:
        parts.append("<h3>Per round (samples of rounds ≤ t)</h3>")
        xs = [int(r["round"]) for r in per]
        svg = plots.line_chart(
            "fid", "FID of rounds ≤ t vs real held-out data", xs, {"FID": [r.get("fid") for r in per]}, ylabel="FID"
        )
        if svg:
            parts.append(svg)
        has_acc = any("logreg_accuracy" in r for r in per)
        if has_acc:
            svg = plots.line_chart(
                "acc",
                "Logistic-regression accuracy, trained on rounds ≤ t",
                xs,
                {"accuracy": [r.get("logreg_accuracy") for r in per]},
                ylabel="accuracy",
            )
            if svg:
                parts.append(svg)
        parts.append(
            table(
                ["round", "samples", "FID"] + (["logreg accuracy"] if has_acc else []),
                [
                    [r.get("round"), r.get("n"), r.get("fid")] + ([r.get("logreg_accuracy")] if has_acc else [])
                    for r in per
                ],
            )
        )
    for w in ev.get("warnings") or []:
        parts.append(f'<p class="warn">{esc(w)}</p>')
    parts.append("</section>")
    return "".join(parts)


# ---------------------------------------------------------------- sample text for reading
# Small instruction models wrap a review in markdown and echo the prompt ("Sure! Here is a positive movie
# review:").  The cards show the text cleaned for reading; the data and the raw text stay as they are.
_FENCE = re.compile(r"^[ \t]*(?:```|~~~)[^\n]*$", re.M)
_RULE = re.compile(r"^[ \t]*([-*_])(?:[ \t]*\1){2,}[ \t]*$", re.M)
_HEADING = re.compile(r"^[ \t]{0,3}#{1,6}[ \t]+", re.M)
_QUOTE = re.compile(r"^[ \t]{0,3}>[ \t]?", re.M)
_STAR_BULLET = re.compile(r"^([ \t]*)[*+][ \t]+", re.M)
_STRONG = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1", re.S)
_EMPH_STAR = re.compile(r"(?<![\w*])\*(?=[^\s*])([^*\n]+?)(?<=[^\s*])\*(?![\w*])")
_EMPH_UNDER = re.compile(r"(?<![\w_])_(?=[^\s_])([^_\n]+?)(?<=[^\s_])_(?![\w_])")
_CODE = re.compile(r"`+([^`\n]+?)`+")
_LINK = re.compile(r"!?\[([^\]\n]+)\]\([^)\s]*\)")
_LEFTOVER = re.compile(r"\*{2,}|`{3,}|(?<!\S)#{2,}(?!\S)")
_POLITE = r"(?:(?:sure|okay|ok|certainly|of course|absolutely)\b[!.,]*\s*)?"
_HERE_IS = re.compile(_POLITE + r"here(?:'s|\u2019s|\s+is|\s+are)\b[^\n:]{0,100}:[ \t]*\n*", re.I)


def clean_for_display(text: str, task: str | None = None, labels: Iterable[str] = ()) -> str:
    """``text`` for a person to read: markdown markup and a leading prompt echo removed.

    Removes code fences, headings, emphasis, inline code, links (their words stay), rules and quote
    marks, and a leading echo of the request: "Sure! Here is a positive movie review:", or a first
    "<label> <task>:" / "Review:" line.  Only the start of the text is treated as an echo, and a text
    that would be left empty is returned as it was.  For display only: the data is never changed.
    """
    raw = text
    t = text.replace("\r\n", "\n").strip()
    t = _HERE_IS.sub("", t, count=1) if _HERE_IS.match(t) else t
    words = [w for w in (task or "", "review", "text") if w]
    names = "|".join(re.escape(str(x)) for x in labels if str(x))
    label_part = rf"(?:(?:{names})[ \t]+)?" if names else ""
    echo = re.compile(
        rf"(?:(?:a|an)[ \t]+)?{label_part}(?:{'|'.join(re.escape(w) for w in words)})[ \t]*:[ \t]*\n*", re.I
    )
    if echo.match(t):
        t = echo.sub("", t, count=1)
    t = _FENCE.sub("", t)
    t = _RULE.sub("", t)
    t = _HEADING.sub("", t)
    t = _QUOTE.sub("", t)
    t = _STAR_BULLET.sub("\\1\u2022 ", t)
    t = _LINK.sub(r"\1", t)
    t = _CODE.sub(r"\1", t)
    t = _STRONG.sub(r"\2", t)
    t = _EMPH_STAR.sub(r"\1", t)
    t = _EMPH_UNDER.sub(r"\1", t)
    t = _LEFTOVER.sub("", t)
    t = re.sub(r"[ \t]+\n", "\n", t)
    t = re.sub(r"\n{3,}", "\n\n", t).strip()
    if len(t) >= 2 and t[0] == t[-1] == '"' and '"' not in t[1:-1]:
        t = t[1:-1].strip()
    return t or raw.strip() or raw


def _samples_section(
    records: list[dict[str, Any]], labels: Mapping[str, str], per_class: int, task: str | None = None
) -> str:
    parts = [
        '<section id="samples"><h2>Example synthetic samples</h2>',
        f'<p class="note">Up to {per_class} randomly chosen synthetic records per class (seed 0). These are '
        "generated texts; private records are never shown. For reading, markdown markup and a leading echo of "
        "the prompt are removed from the text shown (the data is unchanged; “raw text” shows it as written).</p>",
    ]
    by: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by.setdefault(str(r.get("label", "")), []).append(r)
    if not by:
        parts.append('<p class="note">No synthetic records found.</p>')
    for k in sorted(by):
        rng = random.Random(0)
        pick = rng.sample(by[k], min(per_class, len(by[k])))
        title = f"{labels[k]} (label {k})" if k in labels else (f"label {k}" if k else "all records (no label column)")
        parts.append(f"<h3>{esc(title)}</h3>")
        for r in pick:
            raw = str(r.get("text", ""))
            text = clean_for_display(raw, task, labels.values())
            src = []
            if r.get("generator") not in (None, ""):
                src.append(f"generator {r['generator']}")
            if r.get("round") not in (None, ""):
                src.append(f"round {r['round']}")
            meta = f'<span class="src">{esc(", ".join(src))}</span>' if src else ""
            keep = ""
            if text != raw.strip():  # what was removed stays one click away
                shown_raw = esc(_clip(raw.strip(), 4 * SAMPLE_CHARS))
                keep = f"<details><summary>raw text</summary><pre>{shown_raw}</pre></details>"
            parts.append(f'<div class="sample"><p class="text">{esc(_clip(text, SAMPLE_CHARS))}</p>{meta}{keep}</div>')
    parts.append("</section>")
    return "".join(parts)


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n].rstrip() + " …"


# ---------------------------------------------------------------- page
def _images_section(run_dir: Path, per_class: int = 10) -> str:
    """Synthetic images (array outputs such as PEARL's ``synthetic.npz``), up to ``per_class`` per label."""
    path = run_dir / "synthetic.npz"
    if not path.exists():
        return ""
    import numpy as np

    from dpsynth.report import plots

    try:
        data = np.load(path, allow_pickle=False)
        x = data["x"]
        y = data["label"] if "label" in data.files else None
    except Exception:  # noqa: BLE001 - a report never fails on an optional section
        return ""
    if x.ndim != 3:
        return ""
    if y is not None:
        idx = [i for lab in sorted(set(y.tolist())) for i in np.flatnonzero(y == lab)[:per_class].tolist()]
    else:
        idx = list(range(min(len(x), 5 * per_class)))
    svg = plots.image_grid("images", "Synthetic images", x[idx], None if y is None else y[idx], columns=per_class)
    if not svg:
        return ""
    return (
        '<section id="images"><h2>Synthetic images</h2><p class="note">Synthetic records only, '
        f"up to {per_class} per class.</p>{svg}</section>"
    )


def build_report(run_dir: str | Path, samples_per_class: int = SAMPLES_PER_CLASS) -> str:
    """The report of a run directory as one HTML string."""
    from dpsynth import __version__
    from dpsynth.evaluate.core import EVALUATION_FILE, used_embedded_dataset

    rd = Path(run_dir).expanduser()
    if not rd.is_dir():
        raise DataError(f"{rd}: not a directory; give the run directory (the --out of `dpsynth run`)")
    priv = _read_json(rd / "privacy.json")
    rounds = _read_json(rd / "rounds.json")
    evaluation = _read_json(rd / EVALUATION_FILE)
    cfg, cfg_text = _read_config(rd)
    records = _read_synthetic(rd)
    if priv is None and not records:
        raise DataError(
            f"{rd}: holds neither privacy.json nor synthetic.jsonl/.csv/.parquet; give a run directory written by "
            "`dpsynth run`"
        )
    if rounds is not None and not isinstance(rounds, list):
        rounds = None
    if priv is not None and not isinstance(priv, dict):
        priv = None
    if evaluation is not None and not isinstance(evaluation, dict):
        evaluation = None
    records = _normalise_records(records, cfg)
    labels = _label_names(cfg, priv, records)
    method = (priv or {}).get("method") or cfg.get("method") or "unknown method"
    task = run_task(cfg)
    public = (priv or {}).get("public_inputs")
    if task is None and isinstance(public, dict) and public.get("task"):
        task = str(public["task"])  # no config.yaml: the task privacy.json lists among the public inputs
    title = f"dpsynth report — {rd.name}"
    meta = [f"method <strong>{esc(method)}</strong>", f"{esc(fmt(len(records)))} synthetic records"]
    if task:
        meta.append(f"task: {esc(task)}")
    if priv and isinstance(priv.get("epsilon"), (int, float)):
        meta.append(f"ε = {esc(fmt(float(priv['epsilon']), 3))}")
    meta.append(f"generated {esc(time.strftime('%Y-%m-%d %H:%M %Z'))} by dpsynth {esc(__version__)}")
    headline = _headline_section(evaluation)
    nav = "".join(
        f'<a href="#{a}">{t}</a>'
        for a, t in (
            *((("headline", "Headline"),) if headline else ()),
            ("privacy", "Privacy"),
            ("rounds", "Rounds"),
            ("classes", "Classes"),
            ("evaluation", "Evaluation"),
            ("samples", "Samples"),
            ("config", "Config"),
        )
    )
    body = [
        f'<header><h1>{esc(title)}</h1><p class="meta">{" · ".join(meta)}</p>',
        f'<p class="meta">run directory: <code>{esc(rd.resolve())}</code></p><nav>{nav}</nav></header>',
        headline,
        _privacy_section(priv),
        _rounds_section(rounds, cfg, labels),
        _class_section(records, labels, rounds, evaluation),
        _evaluation_section(evaluation, rd, used_embedded_dataset(cfg) is not None),
        _samples_section(records, labels, samples_per_class, task),
        _images_section(rd),
        '<section id="config"><h2>Configuration</h2>',
    ]
    if cfg_text:
        body.append(f"<details><summary>config.yaml (resolved)</summary><pre>{esc(cfg_text)}</pre></details>")
    else:
        body.append('<p class="note">No config.yaml in this run directory.</p>')
    body.append("</section>")
    if not plots.available():
        body.append('<p class="note">Charts omitted: install matplotlib to include them.</p>')
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head>\n<body><main>\n"
        + "\n".join(body)
        + "\n</main></body></html>\n"
    )


def write_report(
    run_dir: str | Path, out: str | Path | None = None, samples_per_class: int = SAMPLES_PER_CLASS
) -> Path:
    """Write ``RUN_DIR/report.html`` (or ``out``) atomically; returns the path."""
    page = build_report(run_dir, samples_per_class)
    path = Path(out).expanduser() if out else Path(run_dir).expanduser() / REPORT_FILE
    atomic_write_text(path, page)
    return path
