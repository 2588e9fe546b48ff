"""What every synthesis method shares: the ``MethodRunner`` protocol and the text methods' resolved defaults.

``api.make_method`` builds the runner of the configured method; ``api.synthesize`` calls ``prepare``
(before the run directory exists), ``run`` and ``close``.  A method imports this module, never the API,
so the API can import every method.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from dpsynth.config import Config
from dpsynth.data import EMBEDDED_MEDMCQA, EMBEDDED_PREFIX, embedded_dataset
from dpsynth.errors import ConfigError
from dpsynth.privacy.private_data import load_run_private  # noqa: F401 - re-exported: the methods load here
from dpsynth.progress import ProgressReporter
from dpsynth.run import RunDir

log = logging.getLogger("dpsynth")


_DRAW_FLAGS = {"n_private": "--n-private", "seed": "--data.seed"}  # the draw from an embedded dataset


def warn_draw_settings_unused(config: Config) -> None:
    """--n-private and --data.seed choose the draw from an embedded dataset; on a file they would do nothing,
    silently (a file is read whole).  Said once, when a new run starts: config facts only."""
    data = config.data
    changed = [flag for f, flag in _DRAW_FLAGS.items() if getattr(data, f) != type(data).model_fields[f].default]
    source = str(data.private)
    if changed and config.uses_private_data and not source.startswith(EMBEDDED_PREFIX):
        log.warning(
            "%s to embedded datasets only (the draw of private records); all records of %s are read; to use "
            "fewer, give a file that holds only those",
            " and ".join(changed) + (" apply" if len(changed) > 1 else " applies"),
            source,
        )


def resolve_labels(config: Config) -> Config:
    """Fill the embedded dataset's public label set and task, and check labels are declared (every labelled
    method: the prompting methods and dp-finetune).  A user's own records left without a task are warned
    about (the prompts would ask for "a billing text"): a config fact, nothing read from the records."""
    data = config.data
    # KnowledgeSG's inner dp-finetune names its QA pool (labels: the domain), which brings no labels or task;
    # a text method given that pool without labels is told what it is (embedded_dataset's error)
    qa_pool = data.private == EMBEDDED_MEDMCQA and data.labels is not None
    embedded = None if qa_pool else embedded_dataset(data.private)
    if embedded is not None and data.labels is not None and set(data.labels) != set(embedded.labels):
        embedded = None  # label keys of the user's own (a zero-shot run left at the default source): not its task
    if embedded is not None:
        updates: dict[str, Any] = {}
        if data.labels is None:
            updates["labels"] = dict(embedded.labels)
        if data.task == "text":
            updates["task"] = embedded.task
        if updates:
            config = config.model_copy(update={"data": data.model_copy(update=updates)})
    if not config.data.labels:
        raise ConfigError(
            "data.labels: declare the public label set, e.g. --labels 'negative,positive' or "
            "--labels '0=negative,1=positive'; dpsynth never reads it from private data (the set of labels "
            "observed is itself private)"
        )
    if embedded is None and "task" not in data.model_fields_set:
        # The prompts name the task ("Write a billing text."): left at its default, a user's own records get
        # generic samples, with no error to say why.  A warning, not a refusal: "text" may be what they want.
        log.warning(
            "data.task is not set, so the prompts ask for a '%s %s'; say what the records are with --task "
            "(e.g. --task 'support ticket', task: in the YAML file)",
            next(iter(config.data.labels.values())),
            data.task,
        )
    n_classes = len(config.data.labels)
    if config.n_synthetic < n_classes:
        raise ConfigError(f"n_synthetic: {config.n_synthetic} is smaller than the {n_classes} classes")
    return config


def resolve_defaults(config: Config) -> Config:
    """``resolve_labels``, then the prompting methods' own checks: the rounds' population and size."""
    config = resolve_labels(config)
    assert config.data.labels is not None
    n_classes = len(config.data.labels)
    w = config.effective_wasp()
    if w.population is not None and w.population > config.n_synthetic:
        raise ConfigError(
            f"wasp.population: {w.population} is larger than n_synthetic ({config.n_synthetic}); the rounds "
            "make at most n_synthetic samples (null: all of them)"
        )
    in_rounds = w.population or config.n_synthetic
    if config.uses_private_data and in_rounds // (w.rounds + 1) < n_classes:
        field = "wasp.population" if w.population else "n_synthetic"
        raise ConfigError(
            f"{field}: {in_rounds} gives fewer than one sample per class per round with "
            f"{w.rounds} voted round{'s' * (w.rounds != 1)} and the first, unvoted one; raise {field} or lower "
            "wasp.rounds"
        )
    return config


class MethodRunner(Protocol):
    """What each synthesis method provides to ``synthesize``.

    ``prepare`` loads and validates inputs and builds models *before* the run
    directory exists (a mistake leaves nothing behind); ``run`` does the work in
    the run directory and returns the output rows and the privacy report.
    ``config`` is the config with the method's defaults resolved (labels and task
    of an embedded dataset): what config.yaml records once ``prepare`` succeeded.
    ``close`` releases every backend the method built, whatever failed before.
    ``prepare(load_models=False)`` is ``dpsynth run --check``: every check that needs no model weights
    (config, private data, model paths, server; a tokenizer or layer shapes where a check needs them), then
    stop.  A run calls ``prepare()``: a plug-in method may leave the parameter out, and ``--check`` then says
    it cannot check that method.
    """

    config: Config

    def prepare(self, load_models: bool = True) -> None: ...

    def run(self, run_dir: RunDir, reporter: ProgressReporter) -> tuple[list[dict[str, Any]], dict[str, Any]]: ...

    def close(self) -> None: ...


def preparing_line(method: MethodRunner) -> str:
    """The console line before ``prepare``, which is silent for up to a minute: checks, the noise plan
    (bisecting the accountant takes longest at small epsilon), model loading."""
    steps = ["checking the inputs"]
    if method.config.uses_private_data:
        steps.append("planning the noise")
    if method.config.method != "pearl":  # PEARL trains its generator from scratch: no model to load
        steps.append("loading the models")
    return f"preparing: {', '.join(steps)} (this can take a minute)"
