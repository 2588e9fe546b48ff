"""``dpsynth`` command line: run, init, privacy sigma/epsilon.

Any config field can be set with a flag: ``--privacy.epsilon 2`` (dotted path)
or, where the leaf name is unambiguous, ``--epsilon 2``.  Values are parsed as
YAML, so ``--labels 0=negative,1=positive`` and ``--generators '[...]'`` work.
User mistakes print one line (``error: ...``) and exit with status 2.
"""

from __future__ import annotations

import json
import shlex
import sys
import textwrap
import typing
from typing import Any, NoReturn

import typer
import yaml
from pydantic import BaseModel

from dpsynth.config import (
    Config,
    Method,
    NumberOverflowError,
    default_generators,
    load_config,
    load_yaml,
    section_misfits,
)
from dpsynth.errors import ConfigError, DpsynthError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Differentially private synthetic data.")


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
privacy_app = typer.Typer(no_args_is_help=True, help="Privacy accounting: noise <-> epsilon.")
app.add_typer(privacy_app, name="privacy")
from dpsynth.audit.cli import audit_app  # noqa: E402

app.add_typer(audit_app, name="audit")
from dpsynth.knowledgesg.cli import client_app, server_app  # noqa: E402

app.add_typer(server_app, name="server")
app.add_typer(client_app, name="client")

_SECTIONS = {"data", "privacy", "wasp", "finetune", "pearl", "knowledgesg"}


def _leaf_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, f in model.model_fields.items():
        ann = f.annotation
        if name in _SECTIONS and isinstance(ann, type) and issubclass(ann, BaseModel):
            out += _leaf_paths(ann, f"{prefix}{name}.")
        else:
            out.append(prefix + name)
    return out


def _named_paths() -> dict[str, list[str]]:
    """Every name a leaf is accepted under (its field name and former names, e.g. max_tokens) -> its paths."""
    from dpsynth.config import field_aliases

    names: dict[str, list[str]] = {}
    for p in _leaf_paths(Config):
        section, _, leaf = p.rpartition(".")
        names.setdefault(leaf, []).append(p)
        for alias, name in field_aliases(section).items():
            if name == leaf:
                names.setdefault(alias, []).append(p)
    return names


def _flag_map() -> dict[str, str]:
    """--flag-name -> dotted config path, for every leaf (short form only where unambiguous).

    A field's former names (``wasp.max_tokens`` for ``wasp.max_new_tokens``, ``m_private`` for
    ``data.n_private``) are flags too.  A short name shared by sections that no method reads together
    (``--max-new-tokens``: wasp and finetune) is resolved by the method, see ``_by_method_flags``."""
    from dpsynth.config import field_aliases

    paths = _leaf_paths(Config)
    m: dict[str, str] = {p: p for p in paths}
    for section in ("", *sorted(_SECTIONS)):
        prefix = f"{section}." if section else ""
        for alias, name in field_aliases(section).items():
            m.setdefault(prefix + alias, prefix + name)
    for leaf, ps in _named_paths().items():
        if len(ps) == 1:
            m.setdefault(leaf, ps[0])
    m["private"] = "data.private"
    m["q"] = "wasp.q"
    m["rounds"] = "wasp.rounds"
    return m


def _by_method_flags() -> dict[str, list[str]]:
    """Short flags shared by sections that no method reads together -> their paths (the method picks one).

    ``--max-new-tokens``, ``--temperature`` and ``--top-p`` are settings of both wasp (the prompting methods)
    and finetune (dp-finetune, knowledgesg): the one of the run's --method is meant."""
    from dpsynth.config import SECTION_USERS

    flags = _flag_map()
    out: dict[str, list[str]] = {}
    for leaf, ps in _named_paths().items():
        if leaf in flags or len(ps) < 2 or any("." not in p for p in ps):
            continue
        users = [set(SECTION_USERS.get(p.split(".", 1)[0], ())) for p in ps]
        if all(not (a & b) for i, a in enumerate(users) for b in users[i + 1 :]):
            out[leaf] = ps
    return out


def _flag_value(args: list[str], name: str) -> str | None:
    """The value given to ``--name`` in ``args`` (either ``--name V`` or ``--name=V``), or None."""
    for i, a in enumerate(args):
        if a == f"--{name}" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
    return None


def parse_overrides(args: list[str], method: str | None = None) -> dict[str, Any]:
    """``--FIELD VALUE`` flags -> {dotted path: value}.  ``method`` resolves a flag shared by wasp and finetune
    (``--max-new-tokens``); without it, the ``--method`` among ``args``, else the default method, decides."""
    from dpsynth.config import SECTION_USERS

    flags = _flag_map()
    by_method = _by_method_flags()
    method = method or _flag_value(args, "method") or str(Config.model_fields["method"].default)
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        a = args[i]
        if not a.startswith("--"):
            raise ConfigError(f"unexpected argument {a!r}; flags look like --epsilon 4")
        key, eq, val = a[2:].partition("=")
        key_norm = key.replace("-", "_")
        if key_norm not in flags and key_norm not in by_method:
            import difflib

            close = difflib.get_close_matches(key_norm, [*flags, *by_method], n=1)
            hint = f"did you mean --{close[0].replace('_', '-')}? " if close else ""
            raise ConfigError(f"unknown flag --{key}; {hint}`dpsynth init` writes a file listing every field")
        if not eq:
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                raise ConfigError(f"flag --{key} needs a value")
            val = args[i + 1]
            i += 1
        if key_norm in flags:
            path = flags[key_norm]
        else:  # the section the method reads; none: the first, which section_misfits then refuses by name
            ps = by_method[key_norm]
            path = next((p for p in ps if method in SECTION_USERS.get(p.split(".", 1)[0], ())), ps[0])
        out[path] = val if path in ("data.private", "out", "data.labels") else _parse_value(val, path)
        i += 1
    return out


def _parse_value(val: str, path: str = "value") -> Any:
    """A flag value as YAML (``2`` -> int, ``[..]`` -> list); text that is not YAML stays text.

    A number that overflows a float (``1.0e+400``) is an error, never infinity (config.ConfigLoader);
    a text like ``1e400`` is refused by the field's own validation.
    """
    try:
        return load_yaml(val)
    except NumberOverflowError:
        raise ConfigError(
            f"{path}: the number is too large for a float (it would overflow to infinity); give a smaller "
            "number, or write inf if you mean no limit"
        ) from None
    except yaml.YAMLError:
        return val


def _choices(annotation: Any) -> list[str]:
    """The allowed values of a Literal field (also inside X | None), else []."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return [str(a) for a in args]
    return [c for a in args for c in _choices(a)]


def _type_name(annotation: Any) -> str:
    if _choices(annotation):
        return "CHOICE"
    names = {bool: "BOOL", int: "INT", float: "FLOAT", str: "TEXT"}
    for t in (annotation, *typing.get_args(annotation)):
        if t in names:
            return names[t]
    return "YAML"


def flags_help(method: str | None = None) -> str:
    """Every config field as a flag, grouped by section, with its type, default and choices.

    Generated from the Config model, so the help cannot drift from what ``run`` accepts.  The short
    flag is shown where it is unambiguous (the dotted path always works)."""
    from dpsynth.config import SECTION_USERS, field_aliases

    flags = _flag_map()
    short: dict[str, str] = {}
    for flag, path in flags.items():
        section, _, leaf = path.rpartition(".")
        if flag.rpartition(".")[2] in field_aliases(section) and flag.rpartition(".")[2] != leaf:
            continue  # a former name: the help shows the current one
        if path not in short or len(flag) < len(short[path]):
            short[path] = flag
    for leaf, ps in _by_method_flags().items():
        for path in ps:
            if path.rpartition(".")[2] == leaf:
                short[path] = leaf
    cfg = Config()
    blocks: list[str] = []
    groups: list[tuple[str, type[BaseModel], BaseModel]] = [("general", Config, cfg)]
    for name in Config.model_fields:
        if name in _SECTIONS:
            users = SECTION_USERS.get(name, ())
            if method is None or method in users:
                groups.append((name, type(getattr(cfg, name)), getattr(cfg, name)))
    for group, model, values in groups:
        title = group if group == "general" else f"{group} (used by {', '.join(SECTION_USERS.get(group, ()))})"
        rows = [title + ":"]
        for fname, f in model.model_fields.items():
            if group == "general" and fname in _SECTIONS:
                continue
            path = fname if group == "general" else f"{group}.{fname}"
            flag = "--" + short.get(path, path).replace("_", "-")
            default = getattr(values, fname)
            shown = "see docs" if isinstance(default, (list, dict, BaseModel)) and default else repr(default)
            choices = _choices(f.annotation)
            extra = f" one of: {', '.join(choices)}." if choices else ""
            text = f"{flag} {_type_name(f.annotation)} (default {shown}){extra} {f.description or ''}".rstrip()
            rows.extend(textwrap.wrap(text, width=78, initial_indent="  ", subsequent_indent="      "))
        blocks.append("\n".join(rows))
    return "\n\n".join(blocks)


def _run_help() -> str:
    return (
        "dpsynth run [CONFIG.yaml] [--FIELD VALUE ...]. CONFIG is optional; any field below can be given as a "
        "flag (values are YAML: --labels 0=negative,1=positive, --generators '[...]'), e.g. --epsilon 2 "
        "--n-synthetic 500. A flag of a section the chosen --method does not read is refused."
    )


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    help=_run_help(),
    epilog="\b\n" + flags_help().replace("\n\n", "\n\n\b\n"),
)
def run(
    ctx: typer.Context,
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out without re-spending budget."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress display."),
) -> None:
    run_from_args(list(ctx.args), resume=resume, quiet=quiet)


def run_from_args(args: list[str], *, resume: bool, quiet: bool, method: str | None = None) -> None:
    """``[CONFIG] [--FIELD VALUE ...]`` -> a finished run (shared by ``run`` and ``client run``).

    With ``--resume`` the run directory's config.yaml is the base; CONFIG and flags may only repeat its
    values (``out`` excepted), see ``RunDir.check``.
    """
    from dpsynth.api import default_out, synthesize

    global _RUN
    config = args.pop(0) if args and not args[0].startswith("-") else None
    overrides = parse_overrides(args, method or _method_hint(args, config, resume))
    if method is not None:
        if overrides.get("method", method) != method:
            raise ConfigError(f"method: this command runs {method}; use `dpsynth run` for other methods")
        overrides["method"] = method
    cfg = load_config(config, overrides)
    misfits = section_misfits(list(overrides), cfg.method)
    if misfits:  # refused before any model is loaded: the flag would be silently ignored
        path, users = misfits[0]
        raise ConfigError(
            f"--{path.rsplit('.', 1)[-1].replace('_', '-')} ({path}) is a setting of {' and '.join(users)}, not "
            f"of --method {cfg.method}; drop it or choose --method {users[0]}"
        )
    if resume and cfg.out is None:
        raise ConfigError("out: --resume needs --out DIR, the run directory to continue")
    if cfg.out is None:  # chosen here, so that a Ctrl-C message can name it
        cfg = cfg.model_copy(update={"out": default_out(cfg.method)})
    _RUN = (f"dpsynth {'client run' if method == 'knowledgesg' else 'run'}", str(cfg.out))
    result = synthesize(cfg, resume=resume, progress=not quiet)
    if result.already_complete:
        typer.echo(f"{result.run_dir} is already complete: {len(result)} synthetic records in {result.output}")
        return
    eps = result.privacy["epsilon"]
    typer.echo(f"wrote {len(result)} synthetic records to {result.output}")
    typer.echo(
        f"privacy: {result.privacy['guarantee']} (epsilon spent {eps:.4g}); report: {result.run_dir}/privacy.json"
    )


def _method_hint(args: list[str], config: str | None, resume: bool) -> str | None:
    """The method a run will use, as far as it can be told before the config is validated: --method, else
    the config file's, else (with --resume) the stored run's.  It decides flags such as --max-new-tokens."""
    from pathlib import Path

    given = _flag_value(args, "method")
    if given:
        return given
    sources = [Path(config).expanduser()] if config else []
    out = _flag_value(args, "out")
    if resume and out:
        sources.append(Path(out).expanduser() / "config.yaml")
    for src in sources:
        try:
            raw = load_yaml(src.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue  # load_config or the resume reports it
        if isinstance(raw, dict) and isinstance(raw.get("method"), str):
            return str(raw["method"])
    return None


# (command, --out) of the run this process is doing, for the Ctrl-C message
_RUN: tuple[str, str] | None = None


@app.command(help="Write a commented config file: every field, or only those of one --method.")
def init(
    path: str = typer.Argument("dpsynth.yaml"),
    force: bool = typer.Option(False, "--force"),
    method: str | None = typer.Option(
        None, "--method", help="Only the sections this method reads: wasp, aug-pe, zero-shot, dp-finetune, pearl, "
        "knowledgesg."
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


def commented_default_config(method: str | None = None) -> str:
    """The default Config as YAML with each field's description (and choices) as a comment.

    With ``method``: only the sections it reads, its own embedded defaults filled in (the IMDb label set
    and task for the text methods), so the file shows what the run will really use."""
    from dpsynth.config import SECTION_USERS
    from dpsynth.data import IMDB_LABELS, IMDB_TASK

    lines = ["# dpsynth configuration. Every field can also be given as a CLI flag (e.g. --epsilon 2).", ""]
    if method == "aug-pe":  # one generator (the embedded Qwen), no judge
        cfg = Config.model_validate(
            {"method": method, "generators": [default_generators()[-1].model_dump()], "wasp": {"label_judge": None}}
        )
    else:
        cfg = Config() if method is None else Config(method=method)
    if method in ("wasp", "aug-pe", "zero-shot", "dp-finetune"):
        cfg = cfg.model_copy(
            update={"data": cfg.data.model_copy(update={"labels": dict(IMDB_LABELS), "task": IMDB_TASK})}
        )
    dump = cfg.model_dump(mode="json")
    for name, f in Config.model_fields.items():
        if method is not None and name in SECTION_USERS and method not in SECTION_USERS[name]:
            continue
        prompting_only = ("generators", "embedding_model", "embedding_batch_size")
        if method not in (None, "wasp", "aug-pe", "zero-shot") and name in prompting_only:
            continue
        value = dump[name]
        if f.description:
            lines.append(f"# {f.description}")
        if name in _SECTIONS:
            sub = type(getattr(cfg, name))
            lines.append(f"{name}:" if sub.model_fields else f"{name}: {{}}")
            for sname, sf in sub.model_fields.items():
                choices = _choices(sf.annotation)
                listed = f" Choices: {', '.join(choices)}." if choices else ""
                if sf.description or choices:
                    lines.append(f"  # {sf.description or ''}{listed}")
                lines.append("  " + yaml.safe_dump({sname: value[sname]}, default_flow_style=True).strip()[1:-1])
        elif name == "generators":
            lines.append(yaml.safe_dump({name: value}, sort_keys=False).rstrip())
        else:
            lines.append(yaml.safe_dump({name: value}, default_flow_style=True).strip()[1:-1])
        lines.append("")
    return "\n".join(lines)


@privacy_app.command("sigma", help="Noise sigma for T Gaussian releases to reach (epsilon, delta).")
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
    typer.echo(json.dumps(out) if as_json else f"{plan.sigma:.6g}")


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
    eps = epsilon_for(sigma / sensitivity, steps, delta, accountant)
    out = {
        "epsilon": eps,
        "sigma": sigma,
        "delta": delta,
        "steps": steps,
        "sensitivity": sensitivity,
        "accountant": accountant,
    }
    typer.echo(json.dumps(out) if as_json else f"{eps:.6g}")


from dpsynth.evaluate.cli import evaluate_cmd, report_cmd  # noqa: E402

app.command("evaluate")(evaluate_cmd)
app.command("report")(report_cmd)


def _check_numbers(**values: float) -> None:
    """--epsilon, --sigma, --sensitivity > 0 and finite; 0 < --delta < 1; --steps >= 1."""
    import math

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
    if not (Path(run_dir) / "config.yaml").exists():
        return f"interrupted before the run directory {run_dir} was written; nothing to resume, run again"
    return f"interrupted; continue with `{command} --resume --out {shlex.quote(str(run_dir))}`"


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user mistakes print one ``error:`` line and exit 2, never a traceback."""
    global _RUN
    _RUN = None
    click_exc, usage_error, abort, no_args_help = _click_exceptions()
    try:
        rv = app(args=argv, prog_name="dpsynth", standalone_mode=False)
    except DpsynthError as exc:
        _fail(str(exc) or type(exc).__name__)
    except KeyboardInterrupt as exc:
        print(_interrupted(exc), file=sys.stderr)
        sys.exit(130)
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
    except abort:
        print("aborted", file=sys.stderr)
        sys.exit(1)
    # without standalone mode, typer returns (not raises) the exit code of ctx.exit() and of Ctrl-C
    if isinstance(rv, int) and not isinstance(rv, bool) and rv != 0:
        if rv == 130:
            print(_interrupted(), file=sys.stderr)
        sys.exit(rv)


if __name__ == "__main__":
    main()
