"""``dpsynth evaluate`` and ``dpsynth report`` commands (registered in dpsynth.cli)."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

from dpsynth.errors import ConfigError


def evaluate_cmd(
    run: str | None = typer.Argument(
        None, help="Run directory or synthetic file (CSV/JSONL/Parquet): the same as --synthetic.", show_default=False
    ),
    synthetic: str | None = typer.Option(
        None, "--synthetic", help="Run directory or synthetic file (CSV/JSONL/Parquet)."
    ),
    test: str | None = typer.Option(
        None,
        "--test",
        help="Real held-out data to score against (CSV/TSV/JSON/JSONL/Parquet), or an embedded dataset's fixed test "
        "split: embedded:imdb (2,000 IMDb reviews) or embedded:newsgroups (1,531 posts). Required, unless "
        "--synthetic is the run directory of a run on an embedded dataset.",
    ),
    text_column: str = typer.Option("text", "--text-column", help="Text column of the synthetic set."),
    label_column: str = typer.Option("label", "--label-column", help="Label column of the synthetic set."),
    test_text_column: str | None = typer.Option(None, "--test-text-column", help="Text column of the test set."),
    test_label_column: str | None = typer.Option(None, "--test-label-column", help="Label column of the test set."),
    test_encoding: str = typer.Option(
        "utf-8", "--test-encoding", help="Encoding of a CSV/JSONL test file, e.g. latin-1 (default UTF-8)."
    ),
    synthetic_encoding: str = typer.Option(
        "utf-8",
        "--synthetic-encoding",
        help="Encoding of a CSV/JSONL synthetic (and --reference-zero-shot) file made elsewhere (default UTF-8).",
    ),
    classifier: str = typer.Option(
        "logreg",
        "--classifier",
        help="logreg (frozen MiniLM embeddings; always run, it gives the headline), finetune (adds the "
        "fine-tuned MiniLM), or all.",
    ),
    seeds: int = typer.Option(
        3, "--seeds", help="Seeds (0..N-1) of the fine-tuned classifier, for mean +- std (logreg is deterministic)."
    ),
    epochs: int = typer.Option(
        3,
        "--epochs",
        help="Fine-tuning epochs (fixed in advance; raised for small sets to reach 100 optimizer steps; the "
        "last one is tested).",
    ),
    reference_zero_shot: str | None = typer.Option(
        None,
        "--reference-zero-shot",
        help="Zero-shot run directory or file: the headline classifier is also trained on it, for comparison.",
    ),
    no_real_reference: bool = typer.Option(
        False,
        "--no-real-reference",
        help="Skip the real-sample reference (runs on an embedded dataset: the classifier on real pool samples).",
    ),
    no_fidelity: bool = typer.Option(False, "--no-fidelity", help="Skip FID, precision/recall and MAUVE."),
    no_mauve: bool = typer.Option(False, "--no-mauve", help="Skip MAUVE only."),
    embedding_model: str = typer.Option(
        "all-MiniLM-L6-v2",
        "--embedding-model",
        help="Sentence-transformers model for the classifier features, FID and MAUVE: the embedded MiniLM "
        "(default), a local folder or a hub id. Compare scores made with the same model only.",
    ),
    no_write: bool = typer.Option(False, "--no-write", help="Do not write RUN_DIR/evaluation.json."),
    as_json: bool = typer.Option(False, "--json", help="Print the full result as JSON."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress lines on stderr."),
) -> None:
    """Downstream utility (train on synthetic, test on real) and fidelity (FID, precision/recall, MAUVE)."""
    from dpsynth.evaluate.core import evaluate
    from dpsynth.evaluate.downstream import CLASSIFIERS, ClassifierFinetuneConfig

    # `dpsynth evaluate runs/demo`, like `dpsynth report runs/demo`; --synthetic is the older spelling
    if run is not None and synthetic is not None and run != synthetic:
        raise ConfigError(f"give the set to evaluate once: {run!r} and --synthetic {synthetic!r} differ")
    synthetic = run if run is not None else synthetic
    if synthetic is None:
        raise ConfigError("name the run directory or synthetic file to evaluate: dpsynth evaluate RUN_DIR")
    if classifier == "all":
        classifiers: tuple[str, ...] = CLASSIFIERS
    elif classifier in CLASSIFIERS:
        classifiers = (classifier,)
    else:
        raise ConfigError(f"--classifier: {classifier!r} is not one of logreg, finetune, all")
    if seeds < 1:
        raise ConfigError(f"--seeds: at least 1 is needed; got {seeds}")
    if epochs < 1:
        raise ConfigError(f"--epochs: at least 1 is needed; got {epochs}")

    def say(msg: str) -> None:
        if not quiet:
            print(f"[dpsynth] {msg}", file=sys.stderr, flush=True)

    result = evaluate(
        synthetic,
        test,
        text_column=text_column,
        label_column=label_column,
        test_text_column=test_text_column,
        test_label_column=test_label_column,
        test_encoding=test_encoding,
        synthetic_encoding=synthetic_encoding,
        classifiers=classifiers,
        seeds=range(seeds),
        fidelity_metrics=not no_fidelity,
        mauve=not no_mauve,
        reference_zero_shot=reference_zero_shot,
        reference_real=not no_real_reference,
        embedding_model=embedding_model,
        finetune=ClassifierFinetuneConfig(model=embedding_model, epochs=epochs),
        write=not no_write,
        progress=say,
    )
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    typer.echo(format_summary(result))


def format_summary(result: dict[str, Any]) -> str:
    """The human summary: the headline and its reference points first, then the readings, then details."""
    from dpsynth.evaluate.downstream import spread

    lines = format_headline(result)
    readings = result.get("readings") or {}
    for i, key in enumerate(k for k in ("mauve", "precision_recall", "fid") if readings.get(k)):
        lines.append(("reading   " if i == 0 else "          ") + str(readings[key]))
    test_src = result["test"]["source"]
    lines += [
        f"synthetic: {result['synthetic']['n']} records from {result['synthetic']['source']}",
        f"test:      {result['test']['n']} records from {test_src}",
    ]
    for note in result.get("notes") or []:
        lines.append(f"note: {note}")
    for name, u in result.get("utility", {}).items():
        acc, f1 = u["accuracy"], u["macro_f1"]
        acc_s = "" if u.get("deterministic") else spread(acc)
        f1_s = "" if u.get("deterministic") else spread(f1)
        n = len(u.get("seeds") or [])
        runs = "deterministic, fitted once" if u.get("deterministic") else f"{n} seed{'s' if n != 1 else ''}"
        lines.append(
            f"{name:9s} accuracy {acc['mean']:.4f}{' ' + acc_s if acc_s else ''}   macro-F1 {f1['mean']:.4f}"
            f"{' ' + f1_s if f1_s else ''}   ({runs})"
        )
    fid = result.get("fidelity")
    if fid:
        parts = [f"FID {fid['fid']:.4f}"]
        if fid.get("precision") is not None:
            parts.append(f"precision {fid['precision']:.3f} recall {fid['recall']:.3f} (k={fid['k']})")
        if fid.get("mauve") is not None:
            parts.append(f"MAUVE {fid['mauve']:.3f}")
        lines.append("fidelity  " + "   ".join(parts))
        lc = fid.get("label_consistency")
        if lc:
            ref = f" (real test data: {lc['real_reference']:.3f})" if lc.get("real_reference") is not None else ""
            per_gen = "   ".join(f"{g} {v['score']:.3f}" for g, v in (lc.get("by_generator") or {}).items())
            by_gen = f"   by generator: {per_gen}" if per_gen else ""
            lines.append(f"labels    consistent {lc['score']:.3f}{ref}{by_gen}")
    ts = result.get("text_stats", {})
    if ts:
        s, t = ts["synthetic"], ts["test"]
        lines.append(
            f"words     synthetic mean {s['mean_words']:.1f} median {s['median_words']:.0f} distinct-2 "
            f"{s['distinct_2']:.3f} vocab {s['vocabulary_size']} | test mean {t['mean_words']:.1f} "
            f"median {t['median_words']:.0f} distinct-2 {t['distinct_2']:.3f} vocab {t['vocabulary_size']}"
        )
        if "distinct_openings" in s and "distinct_openings" in t:
            lines.append(
                f"openings  synthetic {s['distinct_openings']:.0%} distinct (commonest "
                f"{s['commonest_opening_share']:.1%} of a class) | test {t['distinct_openings']:.0%} distinct "
                f"(commonest {t['commonest_opening_share']:.1%})"
            )
    for w in result.get("warnings", []):
        lines.append(f"warning: {w}")
    if result.get("written_to"):
        lines.append(f"wrote {result['written_to']}")
    return "\n".join(lines)


def format_headline(result: dict[str, Any]) -> list[str]:
    """The headline line and one line per reference point ("for comparison"), as the summary starts."""
    from dpsynth.evaluate.downstream import spread

    head = result.get("headline")
    if not isinstance(head, dict) or not isinstance(head.get("value"), (int, float)):
        return []
    lines = [f"headline  {head.get('text') or head['value']}"]
    refs = [r for r in head.get("references") or [] if isinstance(r, dict) and isinstance(r.get("value"), (int, float))]
    for i, ref in enumerate(refs):
        sp = spread(ref, what="draws") if ref.get("draws") else ""
        value = f"{ref['value']:.4f}" + (f" {sp}" if sp else "")
        lines.append(("  compare " if i == 0 else "          ") + f"{value}  {ref.get('label') or ref.get('name')}")
    return lines


def report_cmd(
    run_dir: str = typer.Argument(..., help="Run directory (with privacy.json)."),
    out: str | None = typer.Option(
        None, "--out", help="Output HTML file, or a folder for report.html (default RUN_DIR/report.html)."
    ),
) -> None:
    """Write a single self-contained HTML report of a run (privacy, rounds, classes, samples, evaluation)."""
    from dpsynth.report import write_report

    path = write_report(run_dir, out)
    typer.echo(f"wrote {path}")
