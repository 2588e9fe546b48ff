"""The method registry (methods/registry.py) and what derives from it.

The expected tables below are the ones that were written out by hand before the registry: deriving them
must not change them.  A toy method registered here runs through ``dpsynth.synthesize`` with no other change.
"""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

import pytest

import dpsynth
from dpsynth import api, config_flags, resume_diff
from dpsynth.config import NON_PRIVATE_OK, SECTION_USERS, Config, Method, WaspConfig
from dpsynth.errors import ConfigError
from dpsynth.methods import registry
from dpsynth.methods.base import resolve_defaults, resolve_labels
from dpsynth.methods.registry import METHODS, MethodSpec, section_users
from dpsynth.progress import ProgressReporter
from dpsynth.run import RunDir

EXPECTED_SECTION_USERS = {
    "data": ("wasp", "aug-pe", "zero-shot", "dp-finetune", "pearl", "knowledgesg"),
    "privacy": ("wasp", "aug-pe", "dp-finetune", "pearl", "knowledgesg"),
    "wasp": ("wasp", "aug-pe", "zero-shot"),
    "finetune": ("dp-finetune", "knowledgesg"),
    "pearl": ("pearl",),
    "knowledgesg": ("knowledgesg",),
}
EXPECTED_NON_PRIVATE_OK = ("wasp", "aug-pe")
EXPECTED_PROMPTING = ("wasp", "aug-pe", "zero-shot")
EXPECTED_LABELLED = ("wasp", "aug-pe", "zero-shot", "dp-finetune")
EXPECTED_SECTIONS = {"data", "privacy", "wasp", "finetune", "pearl", "knowledgesg"}


def test_method_literal_lists_the_registry() -> None:
    assert typing.get_args(Method) == tuple(METHODS)
    assert all(spec.name == name for name, spec in METHODS.items())


def test_the_registry_refuses_entries_that_are_not_the_method_names() -> None:
    specs = list(METHODS.values())
    assert registry._registry(*specs) == METHODS
    for wrong in (specs[:-1], [*specs, specs[0]], specs[::-1]):
        with pytest.raises(RuntimeError, match="must be the names of Method"):
            registry._registry(*wrong)
    assert typing.get_args(Method) == registry.METHOD_NAMES


def test_derived_tables_are_what_they_were() -> None:
    assert SECTION_USERS == EXPECTED_SECTION_USERS
    assert list(SECTION_USERS) == list(EXPECTED_SECTION_USERS)  # the order help and init show them in
    assert NON_PRIVATE_OK == EXPECTED_NON_PRIVATE_OK
    assert api.PROMPTING_METHODS == EXPECTED_PROMPTING
    assert api.LABELLED_METHODS == EXPECTED_LABELLED
    assert config_flags._SECTIONS == EXPECTED_SECTIONS
    assert resume_diff._SECTIONS == EXPECTED_SECTIONS
    reads = {m: Config().model_copy(update={"method": m}).uses_private_data for m in METHODS}
    assert reads == {m: m != "zero-shot" for m in METHODS}


def test_every_section_is_a_config_section() -> None:
    for section in SECTION_USERS:
        ann = Config.model_fields[section].annotation
        assert isinstance(ann, type) and hasattr(ann, "model_fields"), section


def test_presets() -> None:
    aug = Config(method="aug-pe", generators=[dict(name="a", model="x")]).effective_wasp()
    assert (aug.q, aug.use_far, aug.contrastive, aug.weighting, aug.variation) == (1, False, False, False, "rephrase")
    for m in ("wasp", "zero-shot", "dp-finetune", "pearl"):
        assert Config(method=m).effective_wasp() == WaspConfig(**Config(method=m).wasp.model_dump())


def test_runner_paths_name_classes() -> None:
    import importlib

    for spec in METHODS.values():
        module, _, name = spec.runner.partition(":")
        assert isinstance(getattr(importlib.import_module(module), name), type), spec.runner


# ------------------------------------------------------------------ each method's validation is its own
def test_generator_checks_apply_to_the_prompting_methods_only() -> None:
    for m in ("wasp", "zero-shot"):
        with pytest.raises(ConfigError, match="generators: at least one generator is needed"):
            Config(method=m, generators=[])
        with pytest.raises(ConfigError, match="is not one of the generators"):
            Config(method=m, generators=[dict(name="a", model="x")], wasp=dict(label_judge="zz"))
    with pytest.raises(ConfigError, match="aug-pe uses exactly one generator"):
        Config(method="aug-pe", generators=[dict(name="a", model="x"), dict(name="b", model="y")])
    # no generators given: aug-pe takes the embedded Qwen alone (it judges too), as a default, not a set field
    ape = Config(method="aug-pe")
    assert [g.name for g in ape.generators] == ["qwen2.5-coder-0.5b"] and ape.wasp.label_judge == "qwen2.5-coder-0.5b"
    assert "generators" not in ape.model_fields_set
    for m in ("dp-finetune", "pearl", "knowledgesg"):  # they use no prompted generator
        assert Config(method=m, generators=[]).generators == []
        Config(method=m, generators=[dict(name="a", model="x", prompt_format="completion")], wasp=dict(label_judge="a"))


def test_epsilon_inf_is_refused_outside_non_private_ok() -> None:
    assert not Config(method="wasp", privacy=dict(epsilon="inf")).privacy.is_private
    with pytest.raises(ConfigError, match="research baseline of wasp and aug-pe only"):
        Config(method="pearl", privacy=dict(epsilon="inf"))


def test_dp_finetune_labels_without_the_round_check() -> None:
    """dp-finetune resolves the labels without pretending to be zero-shot: WASP's round check is not its."""
    small = dict(n_synthetic=4, wasp=dict(rounds=4), data=dict(private="embedded:imdb"))
    cfg = resolve_labels(Config(method="dp-finetune", **small))
    assert cfg.method == "dp-finetune" and cfg.data.labels == {"0": "negative", "1": "positive"}
    with pytest.raises(ConfigError, match="fewer than one sample per class per round with 4 voted rounds and the"):
        resolve_defaults(Config(method="wasp", **small))
    one = dict(small, wasp=dict(rounds=1), n_synthetic=3)  # "1 rounds" before
    with pytest.raises(ConfigError, match="round with 1 voted round and the first, unvoted one"):
        resolve_defaults(Config(method="wasp", **one))


def test_section_users_inverts_the_sections() -> None:
    specs = {"x": MethodSpec("x", ("data", "a"), "m:X"), "y": MethodSpec("y", ("data", "b", "a"), "m:Y")}
    assert section_users(specs) == {"data": ("x", "y"), "a": ("x", "y"), "b": ("y",)}
    assert registry.names_where("prompting", specs) == ()


# ------------------------------------------------------------------ a toy method, registered in the test
class ToyMethod:
    """Writes two public sentences per label and reads nothing private."""

    def __init__(self, config: Config, private: Any = None) -> None:
        self.config = config
        self.closed = False

    def prepare(self) -> None:
        self.config = resolve_labels(self.config)

    def run(self, run_dir: RunDir, reporter: ProgressReporter) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        labels = self.config.data.labels or {}
        rows = [
            {"text": f"a toy {name} sentence number {i}", "label": value, "label_name": name}
            for value, name in labels.items()
            for i in range(self.config.n_synthetic // len(labels))
        ]
        report = {
            "guarantee": "no private data was read: the output is independent of any private record",
            "differentially_private": True,
            "epsilon": 0.0,
            "delta": 0.0,
            "adjacency": "add/remove one private record",
            "method": "toy",
            "complete": True,
            "mechanisms": [],
            "accountant": None,
            "public_inputs": {"labels": labels},
        }
        return rows, report

    def close(self) -> None:
        self.closed = True


TOY = MethodSpec("toy", ("data",), f"{__name__}:ToyMethod", reads_private=False, labelled=True)


def test_a_registered_toy_method_runs_through_synthesize(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(METHODS, "toy", TOY)
    base = Config(n_synthetic=6, out=str(tmp_path / "toy"), data=dict(labels="0=bad,1=good", task="note"))
    # Config.method is the Literal of the shipped methods: a toy method is set without validation
    cfg = base.model_copy(update={"method": "toy"})
    assert not cfg.uses_private_data
    assert isinstance(api.make_method(cfg), ToyMethod)
    result = dpsynth.synthesize(cfg, progress=False)
    assert len(result) == 6
    assert sorted({r["label"] for r in result.records}) == [0, 1]  # labelled: integer labels stay integers
    assert json.loads((result.run_dir / "privacy.json").read_text())["method"] == "toy"
    # its prepare() takes no load_models: a run works (above), --check says it cannot check, no traceback
    with pytest.raises(ConfigError, match="^--check: method 'toy' cannot check without loading its models"):
        dpsynth.synthesize(cfg.model_copy(update={"out": str(tmp_path / "toy2")}), check_only=True)


def test_an_unregistered_method_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = Config().model_copy(update={"method": "nope"})
    with pytest.raises(ConfigError, match="'nope' is not available in this version"):
        api.make_method(cfg)


def test_a_users_own_records_without_a_task_get_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """Left at its default, data.task makes the prompts ask for 'a billing text': generic samples with no
    sign why.  A file or in-memory source without --task is warned about; an embedded dataset (which
    brings its task) and an explicit --task, even 'text', are not."""
    import logging

    def warned(**data: object) -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="dpsynth"):
            resolve_labels(Config(method="wasp", n_synthetic=40, data=data))
        return [r.getMessage() for r in caplog.records if "data.task" in r.getMessage()]

    (msg,) = warned(private="tickets.csv", labels="billing,technical")
    assert "'billing text'" in msg and "--task" in msg
    assert warned(private="in-memory:DataFrame", labels="billing,technical") != []  # records handed in memory
    # a zero-shot run left at the default source with labels of its own: not "movie review" prompts
    (msg,) = warned(labels="billing,technical")
    assert "'billing text'" in msg
    assert warned(private="tickets.csv", labels="billing,technical", task="text") == []
    assert warned(private="tickets.csv", labels="billing,technical", task="support ticket") == []
    assert warned(private="embedded:imdb") == []
    assert warned(private="embedded:imdb", labels="0=negative,1=positive") == []


def test_the_draw_settings_on_a_file_are_said_to_be_ignored(caplog: pytest.LogCaptureFixture) -> None:
    """--n-private 50 on a CSV was silently ignored: every record of a file is read (the draw is the embedded
    datasets' only).  A warning names the flag; an embedded source, the defaults, or a method that reads no
    private records say nothing."""
    import logging

    from dpsynth.methods.base import warn_draw_settings_unused

    def warned(method: str = "wasp", **data: object) -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="dpsynth"):
            warn_draw_settings_unused(Config(method=method, data={"labels": "a,b", "task": "t", **data}))
        return [r.getMessage() for r in caplog.records]

    (msg,) = warned(private="tickets.csv", n_private=50)
    assert msg.startswith("--n-private applies to embedded datasets only") and "tickets.csv" in msg
    (msg,) = warned(private="tickets.csv", n_private=50, seed=3)
    assert msg.startswith("--n-private and --data.seed apply to")
    assert warned(private="tickets.csv") == []
    assert warned(private="embedded:imdb", n_private=50, seed=3) == []
    assert warned(method="zero-shot", private="tickets.csv", n_private=50) == []  # reads no record


def test_labels_of_the_users_own_decide_whether_the_embedded_task_applies(caplog: pytest.LogCaptureFixture) -> None:
    """The embedded set's task fills in when the declared labels are its label keys (renamed or not); labels
    of another set (a zero-shot run left at the default source) keep the user's task; KnowledgeSG's inner
    dp-finetune, whose data.private names the MedMCQA pool, is no labelled text set and is not refused."""
    import logging

    def task(**data: object) -> str:
        return resolve_labels(Config(method="wasp", n_synthetic=40, data=data)).data.task

    assert task(private="embedded:imdb", labels="0=bad,1=good") == "movie review"
    assert task(private="embedded:imdb", labels="0=negative,1=positive") == "movie review"
    with caplog.at_level(logging.WARNING, logger="dpsynth"):
        assert task(private="embedded:imdb", labels="billing,technical") == "text"
    inner = Config(method="dp-finetune", data=dict(private="embedded:medmcqa", labels="medicine,x", task="qa"))
    assert resolve_labels(inner).data.task == "qa"  # it raised: no embedded text set 'embedded:medmcqa'
