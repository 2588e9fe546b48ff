"""``dpsynth audit canaries`` (the canary audit of DP fine-tuning) and ``dpsynth audit membership`` (membership
inference against a finished run's synthetic set), from the command line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer

from dpsynth.errors import ConfigError

audit_app = typer.Typer(
    pretty_exceptions_show_locals=False, no_args_is_help=True, help="Empirical privacy audits (evidence, not proof)."
)


def _floats(text: str, flag: str) -> tuple[float, ...]:
    out = []
    for part in text.split(","):
        p = part.strip().lower()
        if not p:
            continue
        try:
            v = math.inf if p in ("inf", "infinity") else float(p)
        except ValueError:
            raise ConfigError(f"{flag}: {part.strip()!r} is not a number; e.g. {flag} inf,8,4") from None
        if not v > 0:
            raise ConfigError(f"{flag}: epsilon must be > 0 (inf: no noise, no clipping)")
        out.append(v)
    if not out:
        raise ConfigError(f"{flag}: give at least one value, e.g. {flag} inf,8,4")
    return tuple(out)


# The keys every result of each audit has (audit/canaries.py, audit/membership.py): how --out recognises a file
# an earlier audit of the same kind wrote, which it may replace.
AUDIT_KEYS = {
    "canaries": frozenset({"settings", "canary_template", "results"}),
    "membership": frozenset({"attacks", "members", "non_members", "verdict"}),
}
MAX_AUDIT_BYTES = 64 * 2**20  # far above any audit's JSON: a larger file is something else


def _is_audit_result(path: Path, kind: str) -> bool:
    """Does ``path`` hold the JSON of an earlier ``dpsynth audit KIND`` (so --out may replace it)?"""
    try:
        if path.stat().st_size > MAX_AUDIT_BYTES:
            return False
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # unreadable, not UTF-8 (UnicodeDecodeError is a ValueError), not JSON
        return False
    return isinstance(raw, dict) and AUDIT_KEYS[kind] <= raw.keys()


def _run_file(path: Path) -> bool:
    """Is ``path`` a file a run directory has or may get (its outputs, ledger, journal, log, reports)?  A run
    directory is a folder with a config.yaml or privacy.json, or the files only a run leaves."""
    from dpsynth.audit.membership import MEMBERSHIP_FILE
    from dpsynth.run import RunDir

    run = RunDir(path.parent)
    if not (run.config.is_file() or run.privacy.is_file() or run.leftovers()):
        return False
    names = {p.name for p in (run.config, run.journal, run.ledger, run.rounds, run.embeddings, run.privacy)}
    names |= {p.name for p in (run.log, run.finetune_plan, run.schema, run.training, run.synthetic_array)}
    names |= {run.output(f).name for f in ("jsonl", "csv", "parquet")}
    names |= {"report.html", "evaluation.json", MEMBERSHIP_FILE} | set(run.written_by_a_run())
    return path.name in names


def _check_out(out: Path | None, command: str) -> None:
    """Refuse an --out that cannot be written before the audit's minutes (or hours) of work, not after, and one
    the result would wrongly replace: any existing file but an earlier result of the same audit (``--out
    RUN/synthetic.jsonl`` replaced the run's synthetic set, ``--out private.csv`` the private data), and a run
    directory's own files (a new synthetic.csv beside synthetic.jsonl, a canary result as membership.json).
    The membership audit's own RUN/membership.json stays allowed."""
    if out is None:
        return
    if out.is_dir():
        raise ConfigError(f"{command}: --out {out} is a folder; give a file name, e.g. --out {out / 'audit.json'}")
    if not out.parent.is_dir():
        raise ConfigError(f"{command}: --out {out}: the folder {out.parent} does not exist; create it first")
    from dpsynth.audit.membership import MEMBERSHIP_FILE

    kind = command.removeprefix("audit ")
    own = kind == "membership" and out.name == MEMBERSHIP_FILE
    if out.exists() and not _is_audit_result(out, kind):
        raise ConfigError(
            f"{command}: --out {out} exists and is not an earlier `dpsynth {command}` result; the result would "
            "replace it. Give a new file name, or remove that file first"
        )
    if _run_file(out) and not own:
        raise ConfigError(
            f"{command}: --out {out} is a file of the run directory {out.parent}; the result would replace it "
            "or be read as it. Give a file name outside the run, e.g. --out audit-{kind}.json"
        )


def _ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        out = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise ConfigError(f"{flag}: give comma-separated whole numbers, e.g. {flag} 1,10,100") from None
    if not out or any(v < 1 for v in out):
        raise ConfigError(f"{flag}: give comma-separated whole numbers >= 1, e.g. {flag} 1,10,100")
    return out


@audit_app.command("canaries", help="Insert canaries, fine-tune per epsilon, report exposure and verbatim leakage.")
def canaries_cmd(
    epsilons: str = typer.Option("inf,8,4", "--epsilons", help="Comma-separated; inf = no noise, no clipping."),
    m_private: int = typer.Option(
        100,
        "--n-private",
        "--m-private",
        help="IMDb reviews in the private set (embedded:imdb; --m-private: former name).",
    ),
    repeats: str = typer.Option("1,10,100", "--repeats", help="Copies of each canary (one canary per value)."),
    digits: int = typer.Option(4, "--digits", help="Secret length; 4 digits = all 10,000 secrets are candidates."),
    candidates: int = typer.Option(10_000, "--candidates", help="Candidate secrets ranked against the true one."),
    samples: int = typer.Option(64, "--samples", help="Ordinary synthetic samples per model (verbatim leakage)."),
    epochs: float = typer.Option(4.0, "--epochs"),
    batch_size: int = typer.Option(8, "--batch-size"),
    learning_rate: float = typer.Option(5e-3, "--learning-rate"),
    max_length: int = typer.Option(32, "--max-length"),
    model: str = typer.Option("smollm2-135m-instruct", "--model", help="As finetune.model."),
    prompt_format: str = typer.Option("plain", "--prompt-format", help="plain (control code), chat or auto."),
    delta: float | None = typer.Option(None, "--delta", help="Default: 1/(N ln N)."),
    out: Path | None = typer.Option(
        None, "--out", help="Write the results as JSON here: a new file, or an earlier result of this audit."
    ),
    show_loss: bool = typer.Option(
        False, "--show-loss", help="Print the training loss (computed on the private set without noise: not DP)."
    ),
) -> None:
    from dpsynth.extras import require

    require("dpsynth audit canaries", "finetune")  # it DP-fine-tunes LoRA adapters (peft, opacus, gguf)
    from dpsynth.audit.canaries import AuditSettings, markdown_table, run_canary_audit
    from dpsynth.config import FinetuneConfig

    if prompt_format not in ("plain", "chat", "auto"):
        raise ConfigError("--prompt-format: use plain, chat or auto")
    if not 1 <= digits <= 18:
        raise ConfigError("--digits: must be between 1 and 18")
    if candidates < 1 or samples < 1 or m_private < 2:
        raise ConfigError("--candidates and --samples must be >= 1 and --n-private >= 2")
    if delta is not None and not 0 < delta < 1:
        raise ConfigError(f"--delta: {delta:g} is not a probability between 0 and 1 (default: 1/(N ln N))")
    _check_out(out, "audit canaries")
    ft = FinetuneConfig(
        prompt_format=prompt_format,
        model=model,
        max_length=max_length,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        max_new_tokens=40,
        generation_batch_size=32,
        checkpoint_every=10**6,
        show_loss=show_loss,
    )
    settings = AuditSettings(
        epsilons=_floats(epsilons, "--epsilons"),
        m_private=m_private,
        digits=digits,
        repeats=_ints(repeats, "--repeats"),
        n_candidates=candidates,
        n_samples=samples,
        delta=delta,
    )
    result = run_canary_audit(settings, ft, log=lambda m: typer.echo(m, err=True))
    typer.echo(markdown_table(result))  # first: hours of work must reach the user whatever happens to --out
    if out is not None:
        from dpsynth.io import atomic_write_json

        try:
            atomic_write_json(out, result)
        except OSError as exc:
            typer.echo(json.dumps(result, indent=2))
            raise ConfigError(
                f"audit canaries: cannot write {out} ({exc.strerror or type(exc).__name__}); the results are "
                "printed above"
            ) from None
        typer.echo(f"wrote {out}", err=True)
    else:
        typer.echo(json.dumps(result["results"], indent=2))


@audit_app.command(
    "membership",
    help=(
        "Membership inference against a finished run on an embedded dataset: can the synthetic set tell its "
        "private records from other records of the pool? AUC and TPR at low FPR beside what the run's epsilon "
        "allows; writes RUN/membership.json (the report shows it)."
    ),
)
def membership_cmd(
    run: Path = typer.Argument(..., help="A finished run directory (its data.private an embedded dataset)."),
    non_members: int | None = typer.Option(
        None,
        "--non-members",
        min=20,
        help="Pool records the run never read (default: 1,000, or as many as the members if more).",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the non-members' draw and of the bootstrap interval."),
    embedding_model: str | None = typer.Option(
        None, "--embedding-model", help="The attacker's embedder (default: all-MiniLM-L6-v2, embedded)."
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Write the JSON here instead of RUN/membership.json: a new file, or an earlier result of this audit.",
    ),
    placebo: bool = typer.Option(
        False,
        "--placebo",
        help="RUN read no private record (a zero-shot run of the same config): the AUC the draw alone gives.",
    ),
    against: Path | None = typer.Option(
        None,
        "--against",
        help=(
            "A zero-shot run of the same config: both sets are attacked with the same candidates and the AUC "
            "differences get a paired interval, in which the draw largely cancels."
        ),
    ),
) -> None:
    from dpsynth.audit.membership import MEMBERSHIP_FILE, membership_audit, summary_lines
    from dpsynth.evaluate.inputs import default_embedder
    from dpsynth.io import atomic_write_json

    _check_out(out, "audit membership")
    embedder = default_embedder(embedding_model) if embedding_model else None
    result = membership_audit(
        run, embedder=embedder, non_members=non_members, seed=seed, placebo=placebo, against=against
    )
    target = out if out is not None else Path(run) / MEMBERSHIP_FILE
    try:
        atomic_write_json(target, result)
    except OSError as exc:
        raise ConfigError(
            f"audit membership: cannot write {target} ({exc.strerror or type(exc).__name__}); give --out FILE"
        ) from None
    for line in summary_lines(result):
        typer.echo(line)
    typer.echo(f"wrote {target}", err=True)
