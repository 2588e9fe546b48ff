"""``dpsynth report RUN_DIR``: one self-contained HTML file a person reads.

Sections: the headline figure of the evaluation with its reference points and readings (when
``dpsynth evaluate`` ran; a reader looks there first), privacy guarantee (plain words + mechanism
table, from privacy.json), generation rounds (generator weights, noisy vote mass, accepted samples,
epsilon per round, from rounds.json when the method writes it; one compact table per measure),
class balance, repetition (openings and names the synthetic records repeat), evaluation
(evaluation.json, including per-round FID), example synthetic samples per class (cleaned of markdown
and prompt echoes for reading, the raw text kept alongside), and the resolved config.  Wide tables scroll
inside their own box, so the page never scrolls sideways.

Only run outputs are read: synthetic records, the privacy report, per-round summaries of the votes
(noised in a DP run; an epsilon = inf run's are exact, and the page says so), the config.  Everything
taken from a file is HTML-escaped; charts are inline SVG; the page loads nothing from anywhere (no
scripts, no external styles, fonts or images).

This module reads the run directory and lays out the page; the privacy section is in ``guarantee.py``,
the headline and evaluation sections in ``evaluation.py``, the generation rounds in ``rounds.py``, the
repetition counts in ``repetition.py``, the HTML building blocks in ``markup.py``, the cleaning of sample
text in ``text.py`` and the charts in ``plots.py``.
"""

from __future__ import annotations

import logging
import math
import random
import shlex
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dpsynth.data import is_in_memory_source
from dpsynth.errors import ConfigError, DataError, ResumeError
from dpsynth.io import atomic_write_text
from dpsynth.methods.registry import names_where
from dpsynth.privacy.report import PrivacyReport
from dpsynth.privacy.rounding import round_up
from dpsynth.report import plots
from dpsynth.report.evaluation import DAMAGED, check_evaluation, evaluation_section, headline_section
from dpsynth.report.guarantee import membership_section, privacy_section
from dpsynth.report.markup import CSS, esc, fmt, safe_text, table
from dpsynth.report.repetition import repetition_section
from dpsynth.report.rounds import rounds_section, vote_adjective
from dpsynth.report.run_files import (
    UnusableJson,
    normalise_records,
    read_config,
    read_json,
    read_privacy,
    read_synthetic,
)
from dpsynth.report.text import clean_for_display, clip
from dpsynth.run import RunDir

log = logging.getLogger("dpsynth")

REPORT_FILE = "report.html"
SAMPLES_PER_CLASS = 5
SAMPLE_CHARS = 700


def run_task(cfg: dict[str, Any]) -> str | None:
    """The task the run used, from config.yaml ``data.task``.

    Runs on the embedded IMDb data that predate the resolved config left ``data.task`` at its
    default "text", while the task they generated for (and prompted with) was "movie review"."""
    from dpsynth.data import EMBEDDED_IMDB, IMDB_TASK
    from dpsynth.evaluate.inputs import run_data_config

    data = run_data_config(cfg)
    task = data.get("task")
    if data.get("private") == EMBEDDED_IMDB and task in (None, "", "text"):
        return IMDB_TASK
    return str(task) if task not in (None, "") else None


# ---------------------------------------------------------------- sections
def _declared_labels(cfg: dict[str, Any], priv: PrivacyReport | None) -> dict[str, str]:
    """The labels the run was configured with (value -> name); empty when neither file says."""
    from dpsynth.data import EMBEDDED_IMDB, IMDB_LABELS
    from dpsynth.evaluate.inputs import run_data_config

    labels = (cfg.get("data") or {}).get("labels") if isinstance(cfg.get("data"), dict) else None
    if not labels and priv is not None:
        labels = priv.public_inputs.get("labels")
    if not labels and run_data_config(cfg).get("private") == EMBEDDED_IMDB:
        labels = IMDB_LABELS  # a hand-written or older config: the embedded data's public label names
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}


def _label_names(declared: Mapping[str, str], records: list[dict[str, Any]]) -> dict[str, str]:
    names = dict(declared)
    for r in records:
        if r.get("label_name") and str(r.get("label")) not in names:
            names[str(r.get("label"))] = str(r["label_name"])
    return names


def _class_section(
    records: list[dict[str, Any]],
    labels: Mapping[str, str],
    rounds: list[dict[str, Any]] | None,
    evaluation: dict[str, Any] | None,
    declared: Mapping[str, str],
    noised: bool | None = True,
) -> str:
    parts = ['<section id="classes"><h2>Class balance</h2>']
    if not records:
        parts.append('<p class="note">No synthetic records found.</p></section>')
        return "".join(parts)
    counts = Counter(str(r.get("label", "")) for r in records)
    keys = sorted(set(counts) | set(declared))  # a declared class without records is a row of zeros, not absent
    parts.append(_label_mismatch_note(counts, declared))
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
            f"Class shares per round (from the {vote_adjective(noised)}per-class vote mass)",
            [int(r.get("round", 0)) for r in shares],
            {labels.get(k, k): [(r.get("class_shares") or {}).get(k) for r in shares] for k in keys},
            ylabel="share of next round's budget",
            ylim=(0.0, 1.0),
        )
        if svg:
            parts.append(svg)
    parts.append("</section>")
    return "".join(parts)


def _label_mismatch_note(counts: Counter[str], declared: Mapping[str, str]) -> str:
    """Say when the records and the run's declared labels disagree: a class with no record is one a classifier
    trained on the set can never predict, and a label nobody declared means the output was edited or mixed."""
    if not declared:
        return ""
    notes = []
    missing = sorted(k for k in declared if not counts[k])
    extra = sorted(k for k in counts if k not in declared)
    if missing:
        names = ", ".join(f"{k} ({declared[k]})" if declared[k] != k else k for k in missing)
        notes.append(
            f"No synthetic record has the declared label(s) {names}: a classifier trained on this set can never "
            "predict them."
        )
    if extra:
        n = sum(counts[k] for k in extra)
        notes.append(
            f"{fmt(n)} record(s) carry label(s) the run does not declare ({', '.join(extra)}): the output file was "
            "edited, or mixes another run's records."
        )
    return "".join(f'<p class="warn">{esc(t)}</p>' for t in notes)


def _samples_section(
    records: list[dict[str, Any]], labels: Mapping[str, str], per_class: int, task: str | None = None
) -> str:
    parts = [
        '<section id="samples"><h2>Example synthetic samples</h2>',
        f'<p class="note">Up to {per_class} randomly chosen synthetic records per class (seed 0). These are '
        "generated texts; private records are never shown. For reading, markdown markup and a leading echo of "
        "the prompt are removed from the text shown (the data is unchanged; a card whose text was cleaned has "
        "“raw text” under it, as written).</p>",
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
            # cleaning reads no more than the raw view shows: a card needs a few hundred characters of a text
            # that may be megabytes long
            raw = str(r.get("text", "")).strip()[: 4 * SAMPLE_CHARS + 1]
            text = clean_for_display(raw, task, labels.values())
            src = []
            if r.get("generator") not in (None, ""):
                src.append(f"generator {r['generator']}")
            if r.get("round") not in (None, ""):
                src.append(f"round {r['round']}")
            meta = f'<span class="src">{esc(", ".join(src))}</span>' if src else ""
            keep = ""
            if text != raw:  # what was removed stays one click away
                shown_raw = esc(clip(raw, 4 * SAMPLE_CHARS))
                keep = f"<details><summary>raw text</summary><pre>{shown_raw}</pre></details>"
            parts.append(f'<div class="sample"><p class="text">{esc(clip(text, SAMPLE_CHARS))}</p>{meta}{keep}</div>')
    parts.append("</section>")
    return "".join(parts)


# ---------------------------------------------------------------- page
def _images_section(run_dir: Path, per_class: int = 10) -> str:
    """Synthetic images (array outputs such as PEARL's ``synthetic.npz``), up to ``per_class`` per label."""
    path = RunDir(run_dir).synthetic_array
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


def _membership(rd: Path) -> str:
    """The membership audit's section: an optional file, so a damaged one is a warning, never a failure."""
    from dpsynth.audit.membership import MEMBERSHIP_FILE, output_fingerprint, placebo_fingerprint
    from dpsynth.evaluate.inputs import find_run_output

    try:
        result = read_json(rd / MEMBERSHIP_FILE)
    except UnusableJson as exc:
        if not exc.damaged:  # whole, perhaps, but not ours to read: re-running the audit would not help
            why = f"{MEMBERSHIP_FILE} cannot be read ({exc.why}); check its permissions."
            return f'<section id="membership"><h2>Membership audit</h2><p class="warn">{esc(why)}</p></section>'
        result = "damaged"
    output = find_run_output(rd)
    current = output_fingerprint(output) if output is not None else None
    return membership_section(result, current, placebo_fingerprint(result))


def build_report(run_dir: str | Path, samples_per_class: int = SAMPLES_PER_CLASS) -> str:
    """The report of a run directory as one HTML string."""
    from dpsynth import __version__
    from dpsynth.evaluate.core import EVALUATION_FILE
    from dpsynth.evaluate.inputs import used_embedded_dataset

    rd = Path(run_dir).expanduser()
    if not rd.is_dir():
        raise DataError(f"{rd}: not a directory; give the run directory (the --out of `dpsynth run`)")
    damaged: UnusableJson | None = None
    try:
        raw_priv = read_json(RunDir(rd).privacy)
    except UnusableJson as exc:  # beside the records, the page states no guarantee and says why
        raw_priv, damaged = None, exc
    try:
        rounds = RunDir(rd).load_rounds() or None
        rounds_note = ""
    except ResumeError:  # a damaged summary leaves out its section, not the whole report
        rounds, rounds_note = None, "rounds.json is damaged, so the per-round summary cannot be shown."
    try:
        evaluation, evaluation_note = check_evaluation(read_json(rd / EVALUATION_FILE))
    except UnusableJson as exc:  # like rounds.json, a damaged file leaves out its section, not the report
        unreadable = f"evaluation.json cannot be read ({exc.why}), so the evaluation cannot be shown"
        evaluation, evaluation_note = None, f"{DAMAGED} ({exc.why})" if exc.damaged else unreadable
    cfg, cfg_text = read_config(rd)
    stopped = RunDir(rd).stopped_sample()
    if stopped:
        raise DataError(f"{stopped}, then make the report")
    records = read_synthetic(rd)
    if damaged is not None and not records:
        raise damaged
    if raw_priv is None and not records:
        if (rd / "config.yaml").is_file():  # a run that was stopped (or is still going) before its outputs
            data = cfg.get("data")
            again = " --private FILE" if isinstance(data, dict) and is_in_memory_source(data.get("private")) else ""
            raise DataError(
                f"{rd}: the run is not finished; if it is no longer running, finish it with "
                f"`dpsynth run --resume --out {shlex.quote(str(rd))}{again}`, then make the report"
            )
        raise DataError(
            f"{rd}: holds neither privacy.json nor synthetic.jsonl/.csv/.parquet; give a run directory written by "
            "`dpsynth run`"
        )
    priv, priv_problem = read_privacy(raw_priv)
    priv_problem = damaged.why if damaged is not None else priv_problem
    method = (priv.method if priv else "") or cfg.get("method") or "unknown method"
    if rounds is None and not rounds_note and method in names_where("prompting"):  # they always write one
        rounds_note = "rounds.json is missing, so the per-round summary cannot be shown."
    _warn_of_gaps(
        rd, raw_priv is None and damaged is None, priv_problem, rounds_note, evaluation_note, cfg_text is None
    )
    # the votes are called noisy only when privacy.json says the run is DP (epsilon = inf releases them exactly)
    noised = None if priv is None else priv.differentially_private and math.isfinite(priv.epsilon)
    records = normalise_records(records, cfg)
    declared = _declared_labels(cfg, priv)
    labels = _label_names(declared, records)
    task = run_task(cfg)
    if task is None and priv is not None and priv.public_inputs.get("task"):
        task = str(priv.public_inputs["task"])  # no config.yaml: the task privacy.json lists among the public inputs
    title = f"dpsynth report — {rd.resolve().name}"  # "." has no name of its own
    meta = [f"method <strong>{esc(method)}</strong>", f"{esc(fmt(len(records)))} synthetic records"]
    if task:
        meta.append(f"task: {esc(task)}")
    if priv is not None:
        meta.append(f"ε = {esc(round_up(priv.epsilon, 3))}")  # rounded up: never a stronger claim
    meta.append(f"report generated {esc(time.strftime('%Y-%m-%d %H:%M %Z'))} by dpsynth {esc(__version__)}")
    headline = headline_section(evaluation)
    nav = "".join(
        f'<a href="#{a}">{t}</a>'
        for a, t in (
            *((("headline", "Headline"),) if headline else ()),
            ("privacy", "Privacy"),
            *((("membership", "Membership"),) if (rd / "membership.json").exists() else ()),
            ("rounds", "Rounds"),
            ("classes", "Classes"),
            ("repetition", "Repetition"),
            ("evaluation", "Evaluation"),
            ("samples", "Samples"),
            ("config", "Config"),
        )
    )
    body = [
        f'<header><h1>{esc(title)}</h1><p class="meta">{" · ".join(meta)}</p>',
        # the path as given, not resolved: a shared report need not show where the run lay on its author's disk
        f'<p class="meta">run directory: <code>{esc(run_dir)}</code></p><nav>{nav}</nav></header>',
        _stale_evaluation(evaluation, len(records), rd),
        headline,
        privacy_section(priv, priv_problem),
        _membership(rd),
        rounds_section(rounds, cfg, labels, rounds_note, noised),
        _class_section(records, labels, rounds, evaluation, declared, noised),
        repetition_section(records, labels, task, _test_text_stats(evaluation)),
        evaluation_section(evaluation, rd, used_embedded_dataset(cfg) is not None, evaluation_note),
        _samples_section(records, labels, samples_per_class, task),
        _images_section(rd),
        '<section id="config"><h2>Configuration</h2>',
    ]
    if cfg_text:
        body.append(f"<details><summary>config.yaml (resolved)</summary><pre>{esc(cfg_text)}</pre></details>")
        preset = _preset_of(method)
        if preset:
            body.append(
                f'<p class="note">{esc(method)} fixes {esc(", ".join(f"wasp.{k}" for k in preset))}: the values '
                "shown are the ones the run used, whatever config.yaml stores.</p>"
            )
    else:
        why = "config.yaml cannot be read (damaged)" if (rd / "config.yaml").exists() else "No config.yaml here"
        body.append(f'<p class="note">{why}.</p>')
    body.append("</section>")
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">{GENERATOR_META}'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body><main>\n"
        + "\n".join(body)
        + "\n</main></body></html>\n"
    )
    return safe_text(page)  # esc() already did; this also covers text a chart or a future section did not escape


def _test_text_stats(evaluation: dict[str, Any] | None) -> dict[str, Any] | None:
    """The test set's text statistics in evaluation.json, or None (no evaluation, or another shape)."""
    ts = (evaluation or {}).get("text_stats")
    test = ts.get("test") if isinstance(ts, dict) else None
    return test if isinstance(test, dict) else None


def _preset_of(method: str) -> dict[str, Any]:
    from dpsynth.methods.registry import METHODS

    spec = METHODS.get(method)
    return dict(spec.preset) if spec is not None and spec.preset else {}


def _warn_of_gaps(
    rd: Path, no_privacy: bool, privacy_problem: str, rounds_note: str, evaluation_note: str, no_config: bool
) -> None:
    """Say on the console what the page leaves out: a report written without a word (exit 0) could be shared
    before anyone opens it and sees that, say, it states no privacy guarantee."""
    gaps = [
        "privacy.json is missing, so the report states no privacy guarantee" if no_privacy else "",
        f"privacy.json cannot be read ({privacy_problem}), so the report states no privacy guarantee"
        if privacy_problem
        else "",
        rounds_note,
        evaluation_note,
        ("config.yaml cannot be read (damaged)" if (rd / "config.yaml").exists() else "config.yaml is missing")
        if no_config
        else "",
    ]
    for gap in filter(None, gaps):
        log.warning("report of %s: %s", rd, gap.rstrip("."))


def _stale_evaluation(evaluation: dict[str, Any] | None, n_records: int, rd: Path) -> str:
    """A note when evaluation.json scored another number of synthetic records than the run now holds
    (``dpsynth sample`` added some since): its figures are then of the earlier set."""
    scored = ((evaluation or {}).get("synthetic") or {}).get("n")
    if not isinstance(scored, int) or isinstance(scored, bool) or scored == n_records:
        return ""
    return (
        f'<p class="note">The evaluation below scored {esc(fmt(scored))} synthetic records; the run now holds '
        f"{esc(fmt(n_records))} (records were added since, e.g. by <code>dpsynth sample</code>). Run "
        f"<code>dpsynth evaluate {esc(shlex.quote(str(rd)))}</code> again for figures of the whole set.</p>"
    )


GENERATOR_META = '<meta name="generator" content="dpsynth report">'


def _is_report(path: Path) -> bool:
    """Is ``path`` a page ``write_report`` wrote (so it may be replaced)?  Its head names the generator (or,
    written before that, the title does)."""
    try:
        with path.open("rb") as f:
            head = f.read(4096).decode("utf-8", errors="replace")
    except OSError:
        return False
    return head.startswith("<!DOCTYPE html>") and (GENERATOR_META in head or "<title>dpsynth report" in head)


def write_report(
    run_dir: str | Path, out: str | Path | None = None, samples_per_class: int = SAMPLES_PER_CLASS
) -> Path:
    """Write ``RUN_DIR/report.html`` (or ``out``) atomically; returns the path.

    ``out`` must not be a file of the run directory (or of a folder in it) other than the report
    (``--out run/synthetic.jsonl``
    replaced the synthetic set with the page, and evaluate, report and resume then failed on that run),
    and a folder gets ``report.html`` inside it."""
    run = Path(run_dir).expanduser().resolve()
    path = Path(out).expanduser() if out else Path(run_dir).expanduser() / REPORT_FILE
    if path.is_dir():
        path = path / REPORT_FILE
    inside = path.resolve().is_relative_to(run)
    if inside and path.exists() and path.resolve() != run / REPORT_FILE:
        raise ConfigError(
            f"--out {out}: is a file of the run directory; the report would replace it. Give a new file name, "
            f"e.g. {Path(run_dir) / REPORT_FILE}"
        )
    home = path.resolve().parent
    if path.name == REPORT_FILE and home != run and RunDir(home).config.exists():
        raise ConfigError(
            f"--out {out}: {home} is another run, and {REPORT_FILE} there is that run's report. Give a new file "
            f"name, e.g. {home / f'report-of-{run.name}.html'}"
        )
    if path.exists() and not _is_report(path):  # e.g. the run's private data, named by mistake
        raise ConfigError(
            f"--out {out}: {path} exists and is not a dpsynth report; the report would replace it. Give a new "
            "file name, or remove that file first"
        )
    page = build_report(run_dir, samples_per_class)
    atomic_write_text(path, page)
    return path
