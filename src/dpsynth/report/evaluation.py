"""The report's headline (the evaluation's figure with its references) and evaluation sections (evaluation.json)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dpsynth.report import plots
from dpsynth.report.markup import esc, fmt, table

# ---------------------------------------------------------------- the shape the report reads
# evaluation.json is checked once, here, against every container and number the sections below read, so that a
# file of valid JSON but another shape ({"fidelity": [1, 2]}, {"per_round": [{"n": 3}]}) is one "damaged" note
# instead of a traceback deep in a section.  Values the sections only format as text stay Any.
Number = Annotated[float, Field(strict=True)]  # int or float, never a string or a boolean
Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]  # read with int(): NaN and inf fail there


class _Shape(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Summary(_Shape):  # a mean over seeds or draws (evaluate.downstream.summarize)
    values: list[Any] | None = None


class _Headline(_Shape):
    references: list[_Summary] | None = None  # each a reference point: value, label, draws


class _Classifier(_Shape):
    accuracy: _Summary | None = None
    macro_f1: _Summary | None = None
    seeds: list[Any] | None = None


class _LabelConsistency(_Shape):
    by_generator: dict[str, Any] | None = None


class _Fidelity(_Shape):
    n_synthetic: Finite | None = None
    n_test: Finite | None = None
    fid_real_reference: dict[str, Any] | None = None
    label_consistency: _LabelConsistency | None = None


class _Split(_Shape):
    shares: dict[str, Number] | None = None


class _TextStats(_Shape):
    synthetic: dict[str, Any] | None = None
    test: dict[str, Any] | None = None


class _Round(_Shape):
    round: Finite
    fid: Number | None = None
    fid_equal_n: Number | None = None
    logreg_accuracy: Number | None = None


class _Evaluation(_Shape):
    headline: _Headline | None = None
    readings: dict[str, Any] | None = None
    notes: list[Any] | None = None
    warnings: list[Any] | None = None
    synthetic: _Split | None = None
    test: _Split | None = None
    utility: dict[str, _Classifier] | None = None
    fidelity: _Fidelity | None = None
    text_stats: _TextStats | None = None
    per_round: list[_Round] | None = None


DAMAGED = "evaluation.json is damaged, so the evaluation cannot be shown"


def check_evaluation(raw: Any) -> tuple[dict[str, Any] | None, str]:
    """evaluation.json as the sections read it, or None and why not (a note the page shows in its place).

    ``raw`` None: there is no file.  The file's own dict is returned, unchanged: the check only proves that
    every ``.get``, ``int()`` and ``float()`` below meets the type it expects."""
    if raw is None:
        return None, ""
    if not isinstance(raw, dict):
        return None, f"{DAMAGED} (a JSON {type(raw).__name__}, not an object)"
    try:
        _Evaluation.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err["loc"])
        return None, f"{DAMAGED} ({where}: {err['msg']})"
    return raw, ""


def _standard_error(accs: list[float | None], n_test: float | None) -> float | None:
    """The binomial standard error of an accuracy near these on ``n_test`` test records."""
    vals = [a for a in accs if a is not None]
    if not vals or not n_test or n_test < 1:
        return None
    p = sum(vals) / len(vals)
    return math.sqrt(max(p * (1 - p), 1e-6) / n_test)


def _noise_words(accs: list[float | None], n_test: float | None) -> str:
    se = _standard_error(accs, n_test)
    return "" if se is None else f" (± {2 * se:.3f} is test-set noise, {int(n_test or 0):,} records)"


def _accuracy_range(accs: list[float | None], n_test: float | None) -> tuple[float, float] | None:
    """A y-range at least 4 standard errors wide (or 0.05 without a test size): matplotlib zooms onto the
    points, and differences of 0.002 between rounds filled the whole chart like a trend."""
    vals = [a for a in accs if a is not None]
    if not vals:
        return None
    se = _standard_error(accs, n_test) or 0.0125
    lo, hi = min(vals), max(vals)
    half = max((hi - lo) / 2 + se, 2 * se)
    mid = (lo + hi) / 2
    return max(0.0, mid - half), min(1.0, mid + half)


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


def headline_section(ev: dict[str, Any] | None) -> str:
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
    n_test = _num((ev.get("test") or {}).get("n"))
    se = _standard_error([value], n_test) if head.get("metric") in (None, "accuracy") else None
    if se is not None:  # a figure without its noise reads as exact: 0.735 against 0.742 is no difference here
        parts.append(
            f'<p class="note">± {2 * se:.3f} is the test set\'s own noise ({int(n_test or 0):,} records, two '
            "standard errors): accuracies closer than that are not told apart by this test.</p>"
        )
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


def evaluation_section(ev: dict[str, Any] | None, run_dir: Path, embedded_imdb: bool = False, problem: str = "") -> str:
    """The section; ``problem``: why evaluation.json cannot be read (``check_evaluation``)."""
    parts = ['<section id="evaluation"><h2>Evaluation</h2>']
    if problem:
        parts.append(
            f'<p class="warn">{esc(problem)}. Run <code>dpsynth evaluate {esc(run_dir)}</code> again, '
            "then <code>dpsynth report</code>.</p></section>"
        )
        return "".join(parts)
    if not ev:
        test = "" if embedded_imdb else " --test HELD_OUT_FILE"
        why = (
            " (the run used an embedded dataset, so its test split is the default)"
            if embedded_imdb
            else " (your real held-out data: CSV, JSONL or Parquet)"
        )
        parts.append(
            f'<p class="note">Not evaluated yet. Run <code>dpsynth evaluate {esc(run_dir)}{test}</code>'
            f"{why}, then <code>dpsynth report</code> again.</p></section>"
        )
        return "".join(parts)
    syn, tst = ev.get("synthetic") or {}, ev.get("test") or {}
    parts.append(
        f'<p class="note">{esc(fmt(syn.get("n")))} synthetic records evaluated against '
        f"{esc(fmt(tst.get('n')))} real held-out records from <code>{esc(tst.get('source'))}</code>; "
        f"embeddings: {esc(ev.get('embedding_model'))}. These figures read the held-out records without "
        "noise: the privacy guarantee does not cover them (share them only if those records are public).</p>"
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
            # per class: a class whose samples often read as another is where the labels fail (the score
            # alone hides a 0.85 / 1.00 split); per generator only where there are several
            by_label = lc.get("by_label")
            for c, v in by_label.items() if isinstance(by_label, dict) else ():
                if _num(v) is not None:
                    rows.append([f"label consistency of the samples labelled {c}", v])
            by_gen = lc.get("by_generator") or {}
            for g, v in by_gen.items() if len(by_gen) > 1 else ():
                if isinstance(v, dict):
                    rows.append([f"label consistency of {g} ({v.get('n')} samples)", v.get("score")])
        parts.append(table(["metric", "value"], rows))
    ts = ev.get("text_stats")
    if ts:
        keys = ["mean_words", "median_words", "distinct_1", "distinct_2", "vocabulary_size"]
        keys += ["distinct_openings", "commonest_opening_share"]
        s, t = ts.get("synthetic") or {}, ts.get("test") or {}
        parts.append("<h3>Length, vocabulary and openings</h3>")
        parts.append(
            table(
                ["statistic", "synthetic", "test"],
                [[k.replace("_", " "), s.get(k), t.get(k)] for k in keys if k in s or k in t],
            )
        )
    per = ev.get("per_round")
    if per:
        parts.append("<h3>Per round (samples of rounds ≤ t)</h3>")
        xs = [int(r["round"]) for r in per]
        # at equal sizes only: FID falls with the number of samples alone, so the cumulative sets' own FIDs
        # would read as progress round after round (an evaluation.json of an older version has only those)
        n_eq = next((r.get("n_equal") for r in per if r.get("fid_equal_n") is not None), None)
        if n_eq is not None:
            title = f"FID of rounds ≤ t vs real held-out data, each on {n_eq} random samples (equal sizes)"
            series = {"FID": [r.get("fid_equal_n") for r in per]}
        else:
            title = "FID of rounds ≤ t vs real held-out data (growing sets: FID falls with size alone)"
            series = {"FID": [r.get("fid") for r in per]}
        svg = plots.line_chart("fid", title, xs, series, ylabel="FID")
        if svg:
            parts.append(svg)
        has_acc = any("logreg_accuracy" in r for r in per)
        if has_acc:
            accs = [_num(r.get("logreg_accuracy")) for r in per]
            n_test = _num((ev.get("test") or {}).get("n"))
            svg = plots.line_chart(
                "acc",
                "Logistic-regression accuracy, trained on rounds ≤ t" + _noise_words(accs, n_test),
                xs,
                {"accuracy": accs},
                ylabel="accuracy",
                ylim=_accuracy_range(accs, n_test),
            )
            if svg:
                parts.append(svg)
        # both FIDs, named for what they are: the growing set's own FID falls with its size alone
        eq = [f"FID on {n_eq} samples (equal sizes)"] if n_eq is not None else []
        parts.append(
            table(
                ["round", "samples", *eq, "FID of all its samples (falls with size alone)"]
                + (["logreg accuracy"] if has_acc else []),
                [
                    [r.get("round"), r.get("n"), *([r.get("fid_equal_n")] if eq else []), r.get("fid")]
                    + ([r.get("logreg_accuracy")] if has_acc else [])
                    for r in per
                ],
            )
        )
    for w in ev.get("warnings") or []:
        parts.append(f'<p class="warn">{esc(w)}</p>')
    parts.append("</section>")
    return "".join(parts)
