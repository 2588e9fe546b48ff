"""The Python API: ``dpsynth.synthesize(config)``.  The CLI is a thin layer over it."""

from __future__ import annotations

import contextlib
import copy
import importlib
import inspect
import json
import logging
import numbers
import shlex
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast, get_args

from dpsynth.config import (
    GENERATOR_TRANSPORT,
    MAX_N_SYNTHETIC,
    Config,
    load_config,
    set_generator_fields,
    unread_settings,
)
from dpsynth.config_base import dump_yaml
from dpsynth.data import (
    EMBEDDED_PREFIX,
    check_source,
    in_memory_source,
    is_in_memory_source,
    local_source,
    path_exists,
)
from dpsynth.embeddings import Embedder
from dpsynth.errors import ConfigError, DataError, DpsynthError, ResumeError
from dpsynth.generators.base import Generator
from dpsynth.io import atomic_write_json, atomic_write_text, from_strict_json, read_jsonl_tolerant
from dpsynth.methods.base import MethodRunner, preparing_line, resolve_defaults, warn_draw_settings_unused
from dpsynth.methods.registry import METHODS, Method, names_where
from dpsynth.methods.wasp import rounds_released
from dpsynth.output import LabelType, is_integer_label, output_label_type, to_hf_dataset, typed_labels, write_table
from dpsynth.privacy.ledger import missing_ledger
from dpsynth.privacy.report import validate_report
from dpsynth.privacy.rounding import round_up
from dpsynth.progress import ProgressReporter
from dpsynth.run import RunDir, dump_config_yaml
from dpsynth.run_logging import remove_logging, setup_logging

log = logging.getLogger("dpsynth")


@dataclass(frozen=True)
class Checked:
    """What ``synthesize(check_only=True)`` found in order: the resolved config, whether the run would read
    the private records (not for zero-shot, nor when only post-processing is left), and whether a resumed
    run is already complete."""

    config: Config
    reads_private: bool
    already_complete: bool = False


@dataclass
class SynthesisResult:
    """What a run produced.  ``records`` are dicts with text, label, label_name, generator, round.

    ``label`` has the input's type (an int for integer labels, see ``output.output_label_type``)."""

    records: list[dict[str, Any]]
    run_dir: Path
    output: Path
    privacy: dict[str, Any]
    already_complete: bool = False  # a resume of a finished run: nothing was done, the outputs were read back
    labels: dict[str, str] | None = None  # the declared label set (data.labels), for to_dataset's ClassLabel
    added: int | None = None  # ``extend``: the records this call made (fewer than asked when outputs were rejected)

    def __len__(self) -> int:
        return len(self.records)

    def to_pandas(self) -> Any:
        import pandas as pd

        return pd.DataFrame(self.records)

    def to_dataset(self) -> Any:
        """The records as a Hugging Face ``datasets.Dataset``; integer labels 0..K-1 as a ``ClassLabel``."""
        return to_hf_dataset(self.records, self.labels)


# The WASP family (wasp, aug-pe, zero-shot), from the registry: generators, an embedder, rounds of votes
PROMPTING_METHODS = names_where("prompting")
# Methods whose output label is a key of data.labels (pearl writes its columns by its own schema, knowledgesg
# labels each pair with its domain): the prompting methods and dp-finetune
LABELLED_METHODS = names_where("labelled")


def label_type_of(config: Config, private: Any = None) -> LabelType | None:
    """The output's label type (None: the method labels its rows itself), from public facts only: the
    declared labels, data.label_type and the schema the input declares (``output.output_label_type``)."""
    if not METHODS[config.method].labelled or not config.data.labels:
        return None
    d = config.data
    source = private if private is not None else d.private if config.uses_private_data else None
    return output_label_type(d.labels or {}, d.label_type, source, d.label_column)


def pinned_label_type(config: Config, label_type: LabelType | None) -> Config:
    """The config as config.yaml records it, with data.label_type auto replaced by what auto decided: the
    decision may rest on the input's schema (a Parquet column of text), and a resume or `dpsynth sample`
    after the last vote runs without the input, so it must find the decision, not decide again."""
    if label_type is None or config.data.label_type != "auto":
        return config
    return config.model_copy(update={"data": config.data.model_copy(update={"label_type": label_type})})


def make_method(
    config: Config,
    private: Any = None,
    generators: Mapping[str, Generator] | None = None,
    embedder: Embedder | None = None,
    resume_dir: RunDir | None = None,
) -> MethodRunner:
    """The runner of ``config.method``, imported by its registry path (methods/registry.py) only now."""
    spec = METHODS.get(config.method)
    if spec is None:
        raise ConfigError(f"method: {config.method!r} is not available in this version")
    module, _, name = spec.runner.partition(":")
    runner = getattr(importlib.import_module(module), name)
    if spec.prompting:
        method = runner(resolve_defaults(config), private, generators, embedder)
        method.resume_dir = resume_dir
        if resume_dir is not None and config.uses_private_data:
            method.reads_private = not rounds_released(method.config, resume_dir)
        return cast(MethodRunner, method)
    method = runner(config, private)
    if resume_dir is not None and hasattr(method, "resume_dir"):  # dp-finetune: is DP-SGD done?
        method.resume_dir = resume_dir
    return cast(MethodRunner, method)


def _moved_away(config: Config) -> bool:
    """Does the run read a private file (not an embedded set, a hub dataset or records passed in memory) that
    is not there any more?  A resume then needs its new place (``--private``)."""
    source = config.data.private
    if not config.uses_private_data or not isinstance(source, str) or is_in_memory_source(source):
        return False
    if source.startswith(EMBEDDED_PREFIX) or not Path(source).expanduser().is_absolute():
        return False  # config.yaml records a file that existed as its absolute path (local_source)
    return not path_exists(Path(source).expanduser())


def _dp_finetune_trained(config: Config, run_dir: RunDir) -> bool:
    from dpsynth.methods.dp_finetune import training_done  # imported only for such a run

    return training_done(config, run_dir)


def default_out(method: str) -> str:
    """The run directory used when ``out`` is not given: runs/<method>-<date>-<time>."""
    return f"runs/{method}-{time.strftime('%Y%m%d-%H%M%S')}"


def recorded_config(config: Config, private: Any) -> Config:
    """The config as config.yaml records it: the method's resolved config and the private source used.

    A path passed as ``private`` is recorded as data.private (absolute, ``data.local_source``, so that a resume
    finds it from any folder); in-memory records (a DataFrame or a Dataset)
    as a marker such as ``in-memory:DataFrame``, which a resume refuses to re-read and asks for again.
    """
    if private is None:
        return config
    source = local_source(str(private)) if isinstance(private, (str, Path)) else in_memory_source(private)
    return config.model_copy(update={"data": config.data.model_copy(update={"private": source})})


def _is_array_source(source: Any) -> bool:
    """An array, or a mapping of arrays ({"x": images, "label": labels}), as PEARL takes them in memory."""
    import numpy as np

    return isinstance(source, np.ndarray) or (
        isinstance(source, Mapping) and all(isinstance(v, np.ndarray) for v in source.values())
    )


def synthesize(
    config: Config | Mapping[str, Any] | str | Path | None = None,
    *,
    private: Any = None,
    generators: Mapping[str, Generator] | None = None,
    embedder: Embedder | None = None,
    resume: bool = False,
    progress: bool = True,
    as_dataset: bool = False,
    check_only: bool = False,
) -> Any:
    """Run the configured method and return a ``SynthesisResult`` (or a HF Dataset with ``as_dataset``).

    ``private`` may be a path, a pandas DataFrame or a ``datasets.Dataset`` and
    overrides ``config.data.private``.  ``generators`` (name -> generator) and ``embedder`` inject
    custom backends (e.g. an existing client); by default they are built from the config.  Injected
    generators replace ``config.generators`` by name, so the label judge (``wasp.label_judge``, on by
    default) must be one of them or set to None.

    ``resume=True`` continues the run in ``config.out`` from its own config.yaml: fields set in
    ``config`` must agree with it (``out`` may differ); records passed as a DataFrame/Dataset must be
    passed again.  Resuming a finished run does nothing and returns its outputs (``already_complete``).
    An exception raised once the run directory exists carries it as ``exc.dpsynth_run_dir``.

    ``check_only=True`` (``dpsynth run --check``) makes every check a run makes before its models load (the
    config, the private data's file, columns and labels, model paths, the run directory, a KnowledgeSG
    server; for dp-finetune and KnowledgeSG also the records' lengths in tokens, the model's context, the LoRA
    target modules and the adapter's size, from the model's tokenizer and layer shapes) and returns a
    ``Checked`` (the resolved config): nothing is written to ``out``, no model weights are loaded, no budget
    is spent (an embedded model is assembled into its cache if it never was, as a run would).

    ``config`` may also be a mapping of the fields (``{"method": "aug-pe", "out": ...}``); a setting the
    method does not read (another method's section) is logged as a warning, as the CLI notes it.
    """
    return _synthesize(config, private, generators, embedder, resume, progress, as_dataset, check_only)


def _synthesize(
    config: Config | Mapping[str, Any] | str | Path | None,
    private: Any,
    generators: Mapping[str, Generator] | None,
    embedder: Embedder | None,
    resume: bool,
    progress: bool,
    as_dataset: bool,
    check_only: bool,
    adding: int | None = None,
) -> Any:
    """``synthesize``; ``adding`` (``extend``): the samples that call adds to the finished run in ``config.out``,
    whose config.yaml it grew, so the run goes on even when privacy.json records the n_synthetic it has now."""
    where = f"{config}: " if isinstance(config, (str, Path)) else ""
    if config is None or isinstance(config, (str, Path)):
        config = load_config(config)
    elif isinstance(config, Mapping):
        config = Config.model_validate(dict(config))
    elif not isinstance(config, Config):
        raise ConfigError(f"config: a Config, a mapping of fields or a YAML file's path, not {type(config).__name__}")
    elif config.method in get_args(Method):
        # changed in Python: an assignment (cfg.privacy.epsilon = inf) checks its field, not the whole config
        # (a method registered at run time is set without validation, and is not checked as one shipped)
        Config.model_validate(config.model_dump())
    unread = [] if resume else unread_settings(config)
    if unread:  # a file may keep other methods' sections: not refused (the CLI refuses such a flag), but said
        log.warning(
            "%s%s%s %s set, but method %s does not read %s; ignored",
            where,
            ", ".join(unread[:6]),
            " ..." if len(unread) > 6 else "",
            "is" if len(unread) == 1 else "are",
            config.method,
            "it" if len(unread) == 1 else "them",
        )
    if not (config.method == "pearl" and _is_array_source(private)):  # PEARL also reads arrays in memory
        check_source(private)  # before anything is created, and without printing it
    if config.out is None:
        if resume:
            raise ConfigError("out: resuming needs out, the run directory to continue (--out DIR)")
        config = config.model_copy(update={"out": default_out(config.method)})
    run_dir = RunDir(config.out or "", resuming=resume)
    run_dir.check_writable()  # before any model is loaded
    if resume and isinstance(private, (str, Path)):
        # a file passed again is compared with the run's own, as --private is: the rest of the run must read
        # the records the first part spent budget on (a moved file is accepted, another one refused)
        config = config.model_copy(update={"data": config.data.model_copy(update={"private": str(private)})})
    elif resume and private is not None:
        log.warning(
            "data.private: the resumed run reads the records passed in memory; they must be the records it "
            "started with (the privacy spent so far was on them)"
        )
    config = run_dir.check(config, resume, private_given=private is not None and not isinstance(private, (str, Path)))
    if not resume:
        run_dir.refuse_private_inside(private)  # as check() does for data.private
    if resume and adding is None and run_dir.is_complete(config):
        return Checked(config, False, True) if check_only else _finished(run_dir, config, as_dataset)
    restart = False  # a resume of a run that stopped before it spent anything: it starts again
    if resume and not run_dir.ledger.exists():  # every method opens its ledger first: say so before models load
        if run_dir.leftovers():
            raise missing_ledger(run_dir.ledger)
        # Stopped between config.yaml and the ledger's first write: nothing was released, generated or
        # trained, so starting over on the stored config is the whole resume (and spends nothing twice).
        log.warning("%s: the run stopped before it spent anything; it starts again from its config.yaml", run_dir.path)
        resume = run_dir.resuming = False
        restart = True
    post_processing_only = resume and (
        rounds_released(config, run_dir)
        if config.method in PROMPTING_METHODS
        else config.method == "dp-finetune" and _dp_finetune_trained(config, run_dir)
    )
    if private is None and is_in_memory_source(config.data.private) and not post_processing_only:
        error = ResumeError if resume else DataError
        raise error(
            f"data.private: {config.data.private} stands for records that were passed in memory to "
            "synthesize(private=...); pass the same records again (Python: private=DATA; CLI: --private FILE)"
        )
    if resume and private is None and not post_processing_only and _moved_away(config):
        raise DataError(
            f"data.private: {config.data.private}, the file this run was started on, does not exist any more; if "
            f"it moved, resume with the same records where they are now: `dpsynth run --resume --out {run_dir.path} "
            "--private NEWPATH` (Python: synthesize(..., resume=True, private=NEWPATH))"
        )
    # data.private names what is read, so that the embedded set's defaults (labels, task) apply only to it
    config = recorded_config(config, private)
    if not resume:
        warn_draw_settings_unused(config)
    method: MethodRunner | None = None
    handlers: list[logging.Handler] = []
    held = contextlib.ExitStack()
    try:
        method = make_method(config, private, generators, embedder, run_dir if resume else None)
        # Validate and load everything before the run directory is created: a mistake leaves nothing behind.
        if check_only:
            if "load_models" not in inspect.signature(method.prepare).parameters:
                raise ConfigError(f"--check: method {config.method!r} cannot check without loading its models")
            method.prepare(load_models=False)
        else:  # as a method registered by a plug-in may define it: without load_models
            # checks, the noise plan (up to a minute at small epsilon) and model loading print nothing else
            if adding is None:  # `dpsynth sample` names what it adds first
                ProgressReporter(enabled=progress).message(preparing_line(method))
            method.prepare()
        label_type = label_type_of(method.config, private)  # a mistake here also leaves nothing behind
        if check_only:
            return Checked(method.config, bool(getattr(method, "reads_private", method.config.uses_private_data)))
        held.enter_context(run_dir.in_use())  # one process at a time; checked again below, now that it is held
        if not resume:
            if (run_dir.config.exists() and not restart) or (restart and run_dir.leftovers()):
                raise ResumeError(f"out: {run_dir.path} holds a run that another process has just started")
            run_dir.create(pinned_label_type(method.config, label_type))
        else:
            run_dir.record_resumable(method.config)  # e.g. another --server: kept for the next resume
        handlers = setup_logging(run_dir.log)
        log.info("run started: method=%s n_synthetic=%d resume=%s", config.method, config.n_synthetic, resume)
        with ProgressReporter(enabled=progress) as reporter:
            # where to look (and what --resume needs) before the first progress line
            line = f"{'resuming the run in' if resume else 'run folder:'} {run_dir.path}"
            if adding is not None:  # `dpsynth sample`
                line = f"adding {adding:,} sample{'s' * (adding != 1)} to the run in {run_dir.path} (no privacy cost)"
            reporter.message(line)
            rows, report = method.run(run_dir, reporter)
        rows = typed_labels(rows, label_type)
        output = write_table(rows, run_dir.output(config.output_format), config.output_format)
        atomic_write_json(run_dir.privacy, validate_report(report))
        log.info("run finished: %d records -> %s; epsilon=%s", len(rows), output, round_up(report["epsilon"], 5))
    except BaseException as exc:
        if run_dir.config.exists():  # the CLI's Ctrl-C message names it: `dpsynth run --resume --out DIR`
            with contextlib.suppress(AttributeError):  # an exception type without a __dict__
                exc.dpsynth_run_dir = run_dir.path  # type: ignore[attr-defined]
        if handlers and isinstance(exc, DpsynthError):  # before the run directory exists there is no log
            log.info("run stopped with an error: %s", exc)  # the CLI prints it once
        raise
    finally:
        try:
            if method is not None:
                method.close()
        finally:
            remove_logging(handlers)
            held.close()
    result = SynthesisResult(rows, run_dir.path, output, report, labels=method.config.data.labels)
    return result.to_dataset() if as_dataset else result


def extend(
    run: str | Path,
    n: int,
    *,
    generators: Mapping[str, Generator] | None = None,
    embedder: Embedder | None = None,
    progress: bool = True,
    as_dataset: bool = False,
    generator_settings: Mapping[str, Any] | None = None,
) -> Any:
    """``n`` more samples for the finished WASP, Aug-PE or zero-shot run in ``run``, at no privacy cost
    (the Python form of ``dpsynth sample --run RUN --n N``).

    ``generator_settings`` ({"generators.*.timeout_s": 600}, {"generators.NAME.base_url": URL}) changes how
    the run's generators are reached (config.GENERATOR_TRANSPORT only), recorded in config.yaml first.

    The new samples come from the run's last released vote (its weights, class shares and example pools),
    like the expansion phase of ``wasp.population``: post-processing, so epsilon stays what it was and the
    private data is not needed.  config.yaml records the larger n_synthetic (the records the run holds plus
    ``n``, so an earlier call's shortfall is not made up) and pins wasp.population to the rounds' size before
    any sample is made, so an interrupted call finishes with ``dpsynth run --resume --out RUN``; a call that
    fails before making one puts config.yaml back.  Returns what ``synthesize`` returns: a
    ``SynthesisResult`` of every record, whose ``added`` counts the records this call made (fewer than ``n``
    when outputs were rejected); with ``as_dataset=True`` a Dataset of every record, without that count
    (``result.to_dataset()`` gives both).
    """
    run_dir = RunDir(run, resuming=True)
    if not run_dir.config.exists():  # before the lock, which would create the folder
        what = (
            "does not exist"
            if not run_dir.path.exists()
            else "is a file"
            if not run_dir.path.is_dir()
            else "holds no run (no config.yaml)"
        )
        raise ResumeError(f"run: {run_dir.path} {what}; pass the folder of a finished run")
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ConfigError(f"n: {n!r} is not a positive number of samples")
    # held before anything is read: a `sample` or resume that held the run until now has changed it
    with run_dir.in_use():  # from the checks to the end of the resume that makes the samples
        stored = run_dir.stored_config()
        if stored.method not in PROMPTING_METHODS:
            raise ConfigError(
                f"run: {run_dir.path} is a {stored.method} run; `sample` extends wasp, aug-pe and zero-shot runs"
            )
        _check_finished(run_dir, stored)
        if generator_settings:
            stored = _set_transport(run_dir, generator_settings)
        return _extend_held(run_dir, stored, int(n), generators, embedder, progress, as_dataset)


def _set_transport(run_dir: RunDir, settings: Mapping[str, Any]) -> Config:
    """Write how the generators are reached (timeouts, threads, server) into the run's config.yaml."""
    for key in settings:
        if not key.startswith("generators.") or key.rpartition(".")[2] not in GENERATOR_TRANSPORT:
            raise ConfigError(
                f"{key}: a finished run may change only how its generators are reached: "
                + ", ".join(GENERATOR_TRANSPORT)
            )
    raw = run_dir.stored_raw()
    set_generator_fields(raw, dict(settings))
    config = Config.model_validate(raw)
    atomic_write_text(run_dir.config, dump_yaml(raw, sort_keys=False, allow_unicode=True))
    return config


def _check_finished(run_dir: RunDir, stored: Config) -> None:
    """Refuse to extend a run that is not finished, or whose privacy.json cannot say when it is."""
    made = run_dir.finished_n_synthetic()
    if made is None and run_dir.privacy.exists():  # is_complete would take any n_synthetic as finished
        raise ResumeError(
            f"run: {run_dir.privacy} does not record n_synthetic (an older dpsynth wrote it) or cannot be read, so "
            f"`sample` could not tell when its samples are made; delete it (ledger.json keeps what was spent) and "
            f"`dpsynth run --resume --out {run_dir.path}` writes it again (no privacy cost), then `dpsynth sample`"
        )
    if run_dir.is_complete(stored):
        return
    if made is not None and made < stored.n_synthetic:  # the run finished; a later `sample` did not
        raise ResumeError(
            f"run: {run_dir.path}: an earlier `dpsynth sample` stopped before its {stored.n_synthetic - made} "
            f"new samples were all made; `dpsynth run --resume --out {run_dir.path}` makes the rest (no privacy "
            "cost, no private data needed), then `dpsynth sample` adds more"
        )
    raise ResumeError(
        f"run: {run_dir.path} is not finished; finish it first with `dpsynth run --resume --out {run_dir.path}`"
    )


def _extend_held(
    run_dir: RunDir,
    stored: Config,
    n: int,
    generators: Mapping[str, Generator] | None,
    embedder: Embedder | None,
    progress: bool,
    as_dataset: bool,
) -> Any:
    rows = read_jsonl_tolerant(run_dir.journal)
    before = len(rows)
    population = stored.wasp.population or stored.n_synthetic  # the rounds' size, pinned in config.yaml
    # the expansion round (after the last vote) is the one that grows: to what it holds plus n, so an
    # earlier call that came up short (outputs rejected) is not made up by this one
    expansion = (stored.effective_wasp().rounds if stored.uses_private_data else 0) + 1
    grown = population + sum(1 for r in rows if r.get("round") == expansion) + n
    if grown > MAX_N_SYNTHETIC:
        raise ConfigError(
            f"n: {n:,} more would make {grown:,} samples, above the most a run holds ({MAX_N_SYNTHETIC:,})"
        )
    old_text = run_dir.config.read_text(encoding="utf-8")
    atomic_write_text(run_dir.config, _grown_config_text(run_dir.stored_raw(), stored, grown))
    log.info("sample: n_synthetic %d -> %d (post-processing)", stored.n_synthetic, grown)
    try:
        result = _synthesize(
            Config(out=str(run_dir.path)), None, generators, embedder, True, progress, False, False, adding=n
        )
    except BaseException as exc:
        # Nothing made yet (a generator that cannot start, a damaged journal): the run is still the finished
        # run it was, so config.yaml goes back, and a later `sample` is not told to finish this one first.
        with contextlib.suppress(DpsynthError, OSError):  # the error raised says what went wrong
            if len(read_jsonl_tolerant(run_dir.journal)) == before:
                atomic_write_text(run_dir.config, old_text)
                # `dpsynth run --resume` would have nothing to do: the CLI names this command instead
                with contextlib.suppress(AttributeError):  # an exception type without a __dict__
                    exc.dpsynth_retry = f"dpsynth sample --run {shlex.quote(str(run_dir.path))} --n {n}"  # type: ignore[attr-defined]
        raise
    result.added = len(result) - before
    return result.to_dataset() if as_dataset else result


def _grown_config_text(raw: dict[str, Any], stored: Config, n_synthetic: int) -> str:
    """config.yaml with ``n_synthetic`` and wasp.population pinned to the rounds' size, every other key as it
    was: a setting the file predates stays absent, so the resume warns that it takes today's default."""
    grown_raw = copy.deepcopy(raw)
    grown_raw["n_synthetic"] = n_synthetic
    section = grown_raw.get("wasp")
    grown_raw["wasp"] = {
        **(section if isinstance(section, dict) else {}),
        "population": stored.wasp.population or stored.n_synthetic,
    }
    wasp = stored.wasp.model_copy(update={"population": stored.wasp.population or stored.n_synthetic})
    grown = Config.model_validate({**stored.model_dump(), "n_synthetic": n_synthetic, "wasp": wasp.model_dump()})
    try:
        if Config.model_validate(grown_raw).model_dump() == grown.model_dump():
            return dump_yaml(grown_raw, sort_keys=False, allow_unicode=True)
    except ValueError:  # a section stored under a former name: write the whole config instead
        pass
    return dump_config_yaml(grown)


def _finished(run_dir: RunDir, config: Config, as_dataset: bool) -> Any:
    """A resume of a finished run: change nothing, and return what it wrote (``already_complete``, and the
    log's line; the CLI says so on stdout)."""
    import pandas as pd

    output = run_dir.output(config.output_format)
    try:
        report = from_strict_json(json.loads(run_dir.privacy.read_text(encoding="utf-8")), {"public_inputs"})
        if config.output_format == "jsonl":
            text = output.read_text(encoding="utf-8")
            records = [json.loads(line) for line in text.split("\n") if line.strip()]  # not at U+2028
        elif config.output_format == "csv":  # CSV has no types: the label's comes from the declaration
            # the text columns as text: pandas would read label_name "false" as a bool, "5" as an int
            text_columns = {c: str for c in ("text", "label", "label_name", "generator")}
            frame = pd.read_csv(output, keep_default_na=False, dtype=text_columns)
            rows = [{str(k): v for k, v in r.items()} for r in frame.to_dict("records")]
            records = typed_labels(rows, _csv_label_type(config))
        else:
            records = pd.read_parquet(output).to_dict("records")
    except (OSError, ValueError) as exc:
        raise ResumeError(
            f"out: {run_dir.path} looks finished but {output.name} or privacy.json cannot be read "
            f"({type(exc).__name__}); delete both to finish the run again with --resume"
        ) from None
    log.info("resume: %s is already complete (%d records); nothing to do", run_dir.path, len(records))
    result = SynthesisResult(records, run_dir.path, output, report, already_complete=True, labels=config.data.labels)
    return result.to_dataset() if as_dataset else result


def _csv_label_type(config: Config) -> LabelType | None:
    """The label type of a finished run's CSV output as it can be told without the input: the declaration."""
    labels = config.data.labels or {}
    if not METHODS[config.method].labelled or not labels or config.data.label_type == "str":
        return None
    return "int" if all(is_integer_label(k) for k in labels) else None
