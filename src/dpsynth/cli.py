"""``dpsynth`` command line: run, init, privacy sigma/epsilon.

Any config field can be set with a flag: ``--privacy.epsilon 2`` (dotted path)
or, where the leaf name is unambiguous, ``--epsilon 2``.  Values are parsed as
YAML, so ``--labels 0=negative,1=positive`` and ``--generators '[...]'`` work.
User mistakes print one line (``error: ...``) and exit with status 2.
"""

from __future__ import annotations

import json
import logging
import math
import shlex
import signal
import sys
import threading
import typing
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer
from rich.markup import escape

from dpsynth.config import Config, Method, load_config
from dpsynth.config_flags import (  # noqa: F401 - parse_overrides is part of the CLI's API
    commented_default_config,
    flags_help,
    parse_overrides,
)
from dpsynth.errors import ConfigError, DpsynthError, GeneratorError
from dpsynth.privacy.rounding import round_up
from dpsynth.run_args import (
    check_relative_to_config,
    check_resumed_method,
    method_hint,
    refuse_unread_flags,
    resumed_generators,
)

if TYPE_CHECKING:
    from dpsynth.api import Checked

# A traceback never shows local variables: a bug's frames hold private records (typer 0.12, which pyproject
# allows, showed them by default).  Every Typer app says so, whichever one a caller runs.
app = typer.Typer(
    pretty_exceptions_show_locals=False,
    add_completion=False,
    no_args_is_help=True,
    help="Differentially private synthetic data.",
)


def _version(value: bool) -> None:
    if value:
        import importlib.metadata as md

        typer.echo(f"dpsynth {md.version('dpsynth')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Differentially private synthetic data."""


privacy_app = typer.Typer(
    pretty_exceptions_show_locals=False, no_args_is_help=True, help="Privacy accounting: noise <-> epsilon."
)
app.add_typer(privacy_app, name="privacy")
from dpsynth.audit.cli import audit_app  # noqa: E402

app.add_typer(audit_app, name="audit")
from dpsynth.knowledgesg.cli import client_app, server_app  # noqa: E402

app.add_typer(server_app, name="server")
app.add_typer(client_app, name="client")


def _run_help() -> str:
    return (
        "dpsynth run [CONFIG.yaml] [--FIELD VALUE ...]. CONFIG is optional; any field below can be given as a "
        "flag (values are YAML: --labels 0=negative,1=positive, --generators '[...]'), e.g. --epsilon 2 "
        "--n-synthetic 500. A flag of a section the chosen --method does not read is refused."
    )


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    help=_run_help(),
    epilog="\b\n" + escape(flags_help()).replace("\n\n", "\n\n\b\n"),  # escape: [a, b] is no rich markup
)
def run(
    ctx: typer.Context,
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out without re-spending budget."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress display."),
    check: bool = typer.Option(
        False,
        "--check",
        help="Check the config, the private data, model paths and --out, then stop: nothing "
        "written, no model weights loaded, no budget spent (dp-finetune reads the model's tokenizer and "
        "layer shapes to check record lengths, context and LoRA layers).",
    ),
) -> None:
    run_from_args(list(ctx.args), resume=resume, quiet=quiet, check=check)


def _checked_line(checked: Checked, resume: bool) -> str:
    """What --check found in order: public settings only, never a count or a value of the records."""
    from dpsynth.methods.registry import METHODS

    cfg = checked.config
    out = shlex.quote(str(cfg.out))
    if checked.already_complete:
        return f"checked: the run in {out} is already complete; --resume has nothing to do"
    labels = ", ".join(k if k == v else f"{k}={v}" for k, v in (cfg.data.labels or {}).items())
    parts = [f"method {cfg.method}"]
    parts += [f"labels {labels}", f"task {cfg.data.task!r}"] if labels else []
    if METHODS[cfg.method].prompting:
        parts += [f"generators {', '.join(g.name for g in cfg.generators)}"]
        parts += [f"label judge {cfg.wasp.label_judge or 'none (--label-judge NAME adds one)'}"]
    eps = cfg.privacy.epsilon
    if cfg.uses_private_data:  # the run's own warning, said before the run as well
        parts += [f"epsilon {round_up(eps, 6)}" + (" (NOT differentially private)" if math.isinf(eps) else "")]
    data = "the private data (file, columns, labels)" if checked.reads_private else "data.private (not needed)"
    return (
        f"checked: {'; '.join(parts)}. The config, {data}, the model paths and --out {out} pass the checks; "
        f"nothing was written to --out and no model weights were loaded. The same command without --check "
        f"{'continues the run' if resume else 'starts the run'}."
    )


def run_from_args(
    args: list[str], *, resume: bool, quiet: bool, method: str | None = None, check: bool = False
) -> None:
    """``[CONFIG] [--FIELD VALUE ...]`` -> a finished run (shared by ``run`` and ``client run``).

    With ``--resume`` the run directory's config.yaml is the base; CONFIG and flags may only repeat its
    values (``out`` excepted), see ``RunDir.check``.
    """
    from dpsynth.api import default_out, synthesize

    global _RUN
    config = args.pop(0) if args and not args[0].startswith("-") else None
    hint = method or method_hint(args, config, resume)
    if resume:
        check_resumed_method(args, method)
    overrides = parse_overrides(args, hint)
    if resume:
        resumed_generators(overrides, config)
    if method is not None:
        if overrides.get("method", method) != method:
            raise ConfigError(f"method: this command runs {method}; use `dpsynth run` for other methods")
        overrides["method"] = method
    cfg = load_config(config, overrides)
    if config is not None and "data.private" not in overrides:
        check_relative_to_config(cfg.data.private, Path(config))
    # a resumed run's method is the stored one (the flags alone validate as the default, wasp)
    refuse_unread_flags(list(overrides), hint if resume and hint else cfg.method)
    # a config file's setting the method does not read is not refused: synthesize warns of it
    if resume and cfg.out is None:
        raise ConfigError("out: --resume needs --out DIR, the run directory to continue")
    if cfg.out is None:  # chosen here, so that a Ctrl-C message can name it
        cfg = cfg.model_copy(update={"out": default_out(cfg.method)})
    _RUN = (f"dpsynth {'client run' if method == 'knowledgesg' else 'run'}", str(cfg.out))
    if check:
        checked = synthesize(cfg, resume=resume, progress=False, check_only=True)
        typer.echo(_checked_line(checked, resume))
        return
    result = synthesize(cfg, resume=resume, progress=not quiet)
    if result.already_complete:
        typer.echo(f"{result.run_dir} is already complete: {len(result)} synthetic records in {result.output}")
        return
    eps = result.privacy["epsilon"]
    typer.echo(f"wrote {len(result)} synthetic records to {result.output}")
    typer.echo(
        f"privacy: {result.privacy['guarantee']} (epsilon spent {round_up(eps, 4)}); "
        f"privacy report: {result.run_dir}/privacy.json"
    )
    if result.privacy.get("caveat"):
        typer.echo(f"caveat: {result.privacy['caveat']}")
    typer.echo(_next_steps(str(result.privacy.get("method") or ""), result.run_dir))


def _next_steps(method: str, run_dir: object) -> str:
    """What to do with the finished run: `dpsynth evaluate` scores labelled text sets, so a PEARL table and
    KnowledgeSG's question-answer pairs are pointed to how their own docs evaluate them."""
    report = f"`dpsynth report {run_dir}` (report.html)"
    if method == "pearl":
        return f"next: {report}; to score the table, see docs/pearl.md, 'Evaluation'"
    if method == "knowledgesg":
        return f"next: {report}; to score the pairs, see docs/knowledgesg.md, 'Results' (bench/knowledgesg_eval.py)"
    return (
        f"next: `dpsynth evaluate {run_dir}` (utility and fidelity; --test FILE for your held-out data), then {report}"
    )


# (command, --out) of the run this process is doing, for the Ctrl-C message
_RUN: tuple[str, str] | None = None
# the command that carries on where a resume would not (``dpsynth_retry`` of the exception that stopped a
# `sample`): click hands a Ctrl-C back as exit code 130, without the exception
_RETRY: str | None = None


@app.command(
    help=(
        "N more samples for a finished wasp, aug-pe or zero-shot run, from its last released vote: "
        "post-processing, so epsilon does not change and the private data is not read. "
        "--generators.FIELD VALUE (or --generators.NAME.FIELD) changes how samples are fetched "
        "(n_threads, base_url, timeout_s, ...), kept in config.yaml."
    ),
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def sample(
    ctx: typer.Context,
    run_dir: str = typer.Option(..., "--run", help="The folder of a finished run."),
    n: int = typer.Option(..., "--n", min=1, help="How many samples to add."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress display."),
) -> None:
    from dpsynth.api import extend

    global _RUN, _RETRY
    settings = parse_overrides(list(ctx.args))
    if other := [k for k in settings if not k.startswith("generators.")]:
        raise ConfigError(f"{other[0]}: `dpsynth sample` takes --run, --n, --quiet and --generators.FIELD VALUE")
    _RUN = ("dpsynth run", run_dir)  # an interrupted sample finishes as a resume ...
    try:
        result = extend(run_dir, n, progress=not quiet, generator_settings=settings)
    except BaseException as exc:  # ... unless it made nothing and put the run back: then the sample again
        _RETRY = getattr(exc, "dpsynth_retry", None)
        raise
    added = result.added if result.added is not None else n
    short = f"; {n - added} fewer than asked, outputs were rejected (see above)" if added < n else ""
    typer.echo(f"wrote {len(result)} synthetic records to {result.output} ({added} added{short})")
    typer.echo(
        f"privacy: {result.privacy['guarantee']} (epsilon spent {round_up(result.privacy['epsilon'], 4)}, unchanged); "
        f"privacy report: {result.run_dir}/privacy.json"
    )


@client_app.command(
    "run",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    help=(
        "dpsynth client run [CONFIG.yaml] --server URL --private FILE [--FIELD VALUE ...]: DP-fine-tune, upload "
        "the adapter, wait for the server job, download the synthetic pairs (= dpsynth run --method knowledgesg)."
    ),
)
def client_run(
    ctx: typer.Context,
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out (no retraining, no re-upload)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress display."),
    check: bool = typer.Option(
        False,
        "--check",
        help="Check the config, the private data, model paths and --out, then stop: nothing "
        "written, no model weights loaded, no budget spent (dp-finetune reads the model's tokenizer and "
        "layer shapes to check record lengths, context and LoRA layers).",
    ),
) -> None:
    run_from_args(list(ctx.args), resume=resume, quiet=quiet, method="knowledgesg", check=check)


@app.command(help="Write a commented config file: every field, or only those of one --method.")
def init(
    path: str = typer.Argument("dpsynth.yaml"),
    force: bool = typer.Option(False, "--force"),
    method: str | None = typer.Option(
        None, "--method", help=f"Only the sections this method reads: {', '.join(typing.get_args(Method))}."
    ),
) -> None:
    from pathlib import Path

    from dpsynth.io import atomic_write_text

    if method is not None and method not in typing.get_args(Method):
        Config(method=method)  # a one-line error with a did-you-mean
    p = Path(path)
    if p.exists() and not force:
        raise ConfigError(f"{p} already exists; pass --force to overwrite it")
    atomic_write_text(p, commented_default_config(method))
    typer.echo(f"wrote {p}; edit it, then run `dpsynth run {p}`")


@privacy_app.command(
    "sigma",
    help="Noise sigma for T (float) Gaussian releases to reach (epsilon, delta); a run's discrete-Gaussian "
    "votes need a few tenths of a percent more (its privacy.json states theirs).",
)
def privacy_sigma(
    epsilon: float = typer.Option(..., "--epsilon"),
    delta: float = typer.Option(..., "--delta"),
    steps: int = typer.Option(..., "--steps", help="Number of releases T."),
    sensitivity: float = typer.Option(1.0, "--sensitivity", help="L2 sensitivity of one release."),
    accountant: str = typer.Option("pld", "--accountant", help="pld or gdp."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    from dpsynth.privacy.accountant import GaussianPlan

    _check_accountant(accountant)
    _check_numbers(epsilon=epsilon, delta=delta, steps=steps, sensitivity=sensitivity)
    plan = GaussianPlan.calibrate(epsilon, delta, steps, sensitivity, accountant)  # type: ignore[arg-type]
    out = {
        "sigma": plan.sigma,
        "noise_multiplier": plan.noise_multiplier,
        "epsilon": plan.epsilon_after(steps),
        "delta": delta,
        "steps": steps,
        "sensitivity": sensitivity,
        "accountant": accountant,
    }
    typer.echo(json.dumps(out) if as_json else round_up(plan.sigma, 6))  # up: more noise, never less


MIN_NOISE_MULTIPLIER, MAX_NOISE_MULTIPLIER = 1e-3, 1e12


@privacy_app.command("epsilon", help="Epsilon after T Gaussian releases with noise sigma.")
def privacy_epsilon(
    sigma: float = typer.Option(..., "--sigma"),
    delta: float = typer.Option(..., "--delta"),
    steps: int = typer.Option(..., "--steps"),
    sensitivity: float = typer.Option(1.0, "--sensitivity"),
    accountant: str = typer.Option("pld", "--accountant"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    from dpsynth.privacy.accountant import epsilon_for

    _check_accountant(accountant)
    _check_numbers(sigma=sigma, delta=delta, steps=steps, sensitivity=sensitivity)
    z = sigma / sensitivity if sensitivity > 0 else math.inf
    # below 1e-3 the loss distribution's grid needs hundreds of GB (epsilon is in the millions there);
    # above 1e12 epsilon is 0 to every digit shown, and sigma**2 overflows before 1e155
    if not MIN_NOISE_MULTIPLIER <= z <= MAX_NOISE_MULTIPLIER:
        raise ConfigError(
            f"--sigma / --sensitivity = {z:.3g}: give a noise multiplier between {MIN_NOISE_MULTIPLIER:g} "
            f"(epsilon in the millions) and {MAX_NOISE_MULTIPLIER:g} (epsilon 0)"
        )
    try:
        eps = epsilon_for(z, steps, delta, accountant)
    except (ArithmeticError, MemoryError) as exc:  # a corner the bounds above missed: one line, not a traceback
        raise ConfigError(f"the accountant cannot evaluate this setting ({type(exc).__name__})") from None
    out = {
        "epsilon": eps,
        "sigma": sigma,
        "delta": delta,
        "steps": steps,
        "sensitivity": sensitivity,
        "accountant": accountant,
    }
    typer.echo(json.dumps(out) if as_json else round_up(eps, 6))


from dpsynth.evaluate.cli import evaluate_cmd, report_cmd  # noqa: E402

app.command("evaluate")(evaluate_cmd)
app.command("report")(report_cmd)


def _check_numbers(**values: float) -> None:
    """--epsilon, --sigma, --sensitivity > 0 and finite; 0 < --delta < 1; --steps >= 1."""
    for name, v in values.items():
        flag = f"--{name}"
        if name == "delta":
            if not 0 < v < 1:
                raise ConfigError(f"{flag}: must be in (0, 1), e.g. 1e-5; got {v:g}")
        elif name == "steps":
            if v < 1:
                raise ConfigError(f"{flag}: at least one release is needed; got {v:g}")
        elif not (v > 0 and math.isfinite(v)):
            raise ConfigError(f"{flag}: must be a finite number > 0; got {v:g}")


def _check_accountant(name: str) -> None:
    if name not in ("pld", "gdp"):
        raise ConfigError(f"--accountant: {name!r} is not one of pld, gdp")


_ExcTypes = tuple[type[BaseException], ...]


def _click_exceptions() -> tuple[_ExcTypes, _ExcTypes, _ExcTypes, _ExcTypes]:
    """(ClickException, UsageError, Abort, NoArgsIsHelpError) classes of the click that typer runs on.

    Recent typer vendors its own click (``typer._click``); older typer uses ``click``.
    """
    import importlib

    try:
        ce = importlib.import_module("typer._click.exceptions")  # typer >= 0.2x
        abort = importlib.import_module("typer.exceptions").Abort
    except (ImportError, AttributeError):  # pragma: no cover - typer on top of click
        ce = importlib.import_module("click.exceptions")
        abort = ce.Abort
    no_args = getattr(ce, "NoArgsIsHelpError", None)
    return (ce.ClickException,), (ce.UsageError,), (abort,), (no_args,) if no_args else ()


def _fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: MESSAGE`` on one line to stderr and exit."""
    print("error: " + (" ".join(message.split()) or "unknown error"), file=sys.stderr)
    sys.exit(code)


def _interrupted(exc: BaseException | None = None) -> str:
    """What Ctrl-C prints: the resume command with the real run directory, once that directory exists."""
    from pathlib import Path

    if _RUN is None:
        return "interrupted"
    command, out = _RUN
    run_dir = getattr(exc, "dpsynth_run_dir", None) or Path(out).expanduser()
    from dpsynth.run import RunDir

    if not RunDir(run_dir).config.exists():
        return f"interrupted before the run directory {run_dir} was written; nothing to resume, run again"
    return f"interrupted; continue with `{_continuation(exc, run_dir)}`"


def _continuation(exc: BaseException | None, run_dir: object) -> str:
    """The command that carries on after ``exc``: the resume of the run kept on disk, or, where a `dpsynth
    sample` stopped before making anything and put the run back as it was, that `sample` again (a resume
    would find the run finished and do nothing)."""
    assert _RUN is not None
    retry = getattr(exc, "dpsynth_retry", None) or _RETRY
    return retry if isinstance(retry, str) else f"{_RUN[0]} --resume --out {shlex.quote(str(run_dir))}"


def _with_resume(exc: DpsynthError) -> str:
    """The error, and for a generator that failed mid-run the command that continues the run kept on disk."""
    message = str(exc) or type(exc).__name__
    run_dir = getattr(exc, "dpsynth_run_dir", None)
    if _RUN is None or run_dir is None or not isinstance(exc, GeneratorError) or "--resume" in message:
        return message
    return f"{message}; the run is kept: once that is fixed, `{_continuation(exc, run_dir)}`"


def _os_error(exc: OSError) -> str:
    """A file-system error (a full disk, a name too long, no permission) as one line, and, when a run
    directory was already written, the command that continues it once the cause is fixed."""
    from dpsynth.errors import shown_path

    where = f"{shown_path(exc.filename)}: " if exc.filename is not None else ""
    message = f"{where}{exc.strerror or exc}"
    if _RUN is None:
        return message
    from pathlib import Path

    from dpsynth.run import RunDir

    run_dir = getattr(exc, "dpsynth_run_dir", None) or Path(_RUN[1]).expanduser()
    try:
        kept = RunDir(run_dir).config.exists()
    except (OSError, ValueError):
        kept = False
    if not kept:
        return message
    return f"{message}; the run is kept: once that is fixed, `{_continuation(exc, run_dir)}`"


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a job scheduler's stop), handled like Ctrl-C: the same clean stop, and the run says
    how to resume instead of vanishing without a word."""


_TERMINATED = False  # typer turns the interrupt into exit code 130: the code for SIGTERM is set from this


def _terminate(signum: int, frame: object) -> None:
    global _TERMINATED
    _TERMINATED = True
    raise Terminated


def _exit_interrupted(exc: KeyboardInterrupt) -> NoReturn:
    print(_interrupted(exc), file=sys.stderr)
    sys.exit(128 + signal.SIGTERM if _TERMINATED else 130)


class _LevelPrefix(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name; keeps exc_info
        return f"{record.levelname.lower()}: {record.getMessage()}"


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user mistakes print one ``error:`` line and exit 2, never a traceback."""
    global _RUN, _RETRY, _TERMINATED
    _RUN, _RETRY, _TERMINATED = None, None, False
    if logging.lastResort is not None:  # a warning before the run's log exists: "warning: ...", like "error: ..."
        logging.lastResort.setFormatter(_LevelPrefix())
    click_exc, usage_error, abort, no_args_help = _click_exceptions()
    # a SIGTERM the caller chose to ignore stays ignored
    on_main_thread = threading.current_thread() is threading.main_thread()
    on_main_thread = on_main_thread and signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN
    previous = signal.signal(signal.SIGTERM, _terminate) if on_main_thread else None
    try:
        rv = app(args=argv, prog_name="dpsynth", standalone_mode=False)
    except DpsynthError as exc:
        _fail(_with_resume(exc))
    except OSError as exc:
        if exc.errno is None:  # not from the operating system: a bug, keep its traceback
            raise
        _fail(_os_error(exc), 1)
    except KeyboardInterrupt as exc:
        _exit_interrupted(exc)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except no_args_help as exc:  # bare `dpsynth` / `dpsynth privacy`: show the help
        exc.show()  # type: ignore[attr-defined]
        sys.exit(0)
    except usage_error as exc:
        ctx = getattr(exc, "ctx", None)
        where = f"; see `{ctx.command_path} --help`" if ctx is not None else ""
        _fail(exc.format_message().rstrip(".") + where, exc.exit_code)  # type: ignore[attr-defined]
    except click_exc as exc:
        _fail(exc.format_message(), exc.exit_code)  # type: ignore[attr-defined]
    except abort as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):  # typer before 0.2x: Ctrl-C comes back as click's Abort
            _exit_interrupted(exc.__cause__)
        print("aborted", file=sys.stderr)
        sys.exit(1)
    finally:
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
    # without standalone mode, typer returns (not raises) the exit code of ctx.exit() and of Ctrl-C
    if isinstance(rv, int) and not isinstance(rv, bool) and rv != 0:
        if rv == 130:
            print(_interrupted(), file=sys.stderr)
            rv = 128 + signal.SIGTERM if _TERMINATED else rv
        sys.exit(rv)


if __name__ == "__main__":
    main()
