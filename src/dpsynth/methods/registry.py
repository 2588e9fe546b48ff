"""The synthesis methods, as plain data: which config sections each reads, what it may do, where it runs.

``dpsynth.config`` derives from ``METHODS`` what used to be listed by hand: the sections each method reads
(``SECTION_USERS``, and so the CLI's flag groups and ``dpsynth init --method``), the methods allowed a
noise-free baseline (``NON_PRIVATE_OK``), whether a run reads private data, the Aug-PE preset of the WASP
settings and each method's own validation.  ``api.make_method`` imports a method's runner by its
``"module:Class"`` path only when that method runs, so this module (and ``dpsynth.config``, which imports
it) never loads a method's heavy dependencies (torch, peft).

A new method is one module (or package) whose runner follows ``methods.base.MethodRunner``, its config
section (``config_sections.py``, a field of ``Config``), its name in ``Method`` and one entry in ``METHODS``.
This module imports nothing of dpsynth: a check receives the ``Config`` and reads its fields.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

if TYPE_CHECKING:
    from dpsynth.config import Config

# The registered methods' names in registry order: the type of ``Config.method`` (pydantic's choices and its
# did-you-mean, the CLI's ``--method`` choices, mypy).  mypy needs the names spelled out once; every
# ``MethodSpec.name`` is typed by it and ``_registry`` refuses, at import, a name without exactly one entry.
Method = Literal["wasp", "aug-pe", "zero-shot", "dp-finetune", "pearl", "knowledgesg"]
METHOD_NAMES: tuple[Method, ...] = get_args(Method)

Check = Callable[["Config"], None]  # raises ValueError("field: what is wrong; the fix"), as pydantic validators do


def check_generators(config: Config) -> None:
    """The prompting methods' generators: at least one, with unique names."""
    names = [g.name for g in config.generators]
    if not names:
        raise ValueError("generators: at least one generator is needed")
    if len(set(names)) != len(names):
        raise ValueError(f"generators: names must be unique, got {names}")


def check_label_judge(config: Config) -> None:
    """The prompting methods' label judge, if any: one of the generators, and a chat model."""
    names = [g.name for g in config.generators]
    judge = config.wasp.label_judge
    if judge is not None:
        by_name = {g.name: g for g in config.generators}
        if judge not in by_name:
            raise ValueError(f"wasp.label_judge: {judge!r} is not one of the generators {names}")
        if by_name[judge].prompt_format != "chat":
            raise ValueError(
                f"wasp.label_judge: {judge!r} is a completion (base) model; the judge must be a chat model"
            )


def check_one_generator(config: Config) -> None:
    """Aug-PE varies samples of one generator."""
    if len(config.generators) != 1:
        raise ValueError("generators: aug-pe uses exactly one generator; keep one entry or use --method wasp")


@dataclass(frozen=True)
class MethodSpec:
    """One synthesis method.

    ``sections``: the config sections it reads (a flag of another section is refused for it).
    ``runner``: ``"module:Class"``, a ``MethodRunner`` built as ``Class(config, private)``; a ``prompting``
    method's runner is built as ``Class(config, private, generators, embedder)`` after
    ``methods.base.resolve_defaults``.
    ``reads_private``: False for a method that never reads the private data (zero-shot).
    ``non_private_ok``: epsilon = inf (no noise) is allowed, as a research baseline.
    ``prompting``: the WASP family: prompted generators, an embedder, rounds of votes a resume can be past,
    and runs ``dpsynth sample`` extends.
    ``labelled``: the output's label is a key of ``data.labels`` (typed by ``data.label_type``).
    ``preset``: fields of the wasp section this method fixes (``Config.effective_wasp``).
    ``unread``: fields of the wasp section this method never reads (zero-shot has no votes, so nothing of
    them); like the preset's fields, a flag setting one is refused and a file setting one is warned of.
    ``checks``: this method's own validation, run by ``Config`` for this method only.
    """

    name: Method
    sections: tuple[str, ...]
    runner: str
    reads_private: bool = True
    non_private_ok: bool = False
    prompting: bool = False
    labelled: bool = False
    preset: Mapping[str, Any] = field(default_factory=dict)
    unread: tuple[str, ...] = ()
    checks: tuple[Check, ...] = ()

    def ignores(self, wasp_field: str) -> bool:
        """Whether a value the user sets for ``wasp.<wasp_field>`` is one this method never uses."""
        return wasp_field in self.preset or wasp_field in self.unread


_PROMPTING = "dpsynth.methods.prompting:PromptingMethod"


def _registry(*specs: MethodSpec, names: tuple[str, ...] = METHOD_NAMES) -> dict[str, MethodSpec]:
    """The registry keyed by name; refuses (at import) specs that are not one per name of ``Method``, in order."""
    got = tuple(spec.name for spec in specs)
    if got != names:
        raise RuntimeError(
            f"methods/registry.py: the MethodSpec entries {list(got)} must be the names of Method {list(names)}, "
            "one each, in that order"
        )
    return {spec.name: spec for spec in specs}


METHODS: dict[str, MethodSpec] = _registry(
    MethodSpec(
        "wasp",
        ("data", "privacy", "wasp"),
        _PROMPTING,
        non_private_ok=True,
        prompting=True,
        labelled=True,
        checks=(check_generators, check_label_judge),
    ),
    MethodSpec(
        "aug-pe",
        ("data", "privacy", "wasp"),
        _PROMPTING,
        non_private_ok=True,
        prompting=True,
        labelled=True,
        preset={"q": 1, "use_far": False, "contrastive": False, "weighting": False, "variation": "rephrase"},
        checks=(check_generators, check_one_generator, check_label_judge),
    ),
    MethodSpec(
        "zero-shot",
        ("data", "wasp"),
        _PROMPTING,
        reads_private=False,
        prompting=True,
        labelled=True,
        # what the votes and the prompts built from them would use: zero-shot has neither
        unread=(
            "rounds",
            "vote_on",
            "q",
            "use_far",
            "contrastive",
            "weighting",
            "variation",
            "keywords_against",
            "top_s",
            "l_examples",
            "pool_spread",
            "tau",
            "min_share",
            "class_uniform_mix",
            "example_chars",
        ),
        checks=(check_generators, check_label_judge),
    ),
    MethodSpec(
        "dp-finetune",
        ("data", "privacy", "finetune"),
        "dpsynth.methods.dp_finetune:DpFinetuneMethod",
        labelled=True,
    ),
    MethodSpec("pearl", ("data", "privacy", "pearl"), "dpsynth.methods.pearl:PearlMethod"),
    MethodSpec(
        "knowledgesg",
        ("data", "privacy", "finetune", "knowledgesg"),
        "dpsynth.methods.knowledgesg:KnowledgeSGClientMethod",
    ),
)


def method_spec(name: str) -> MethodSpec:
    """The registered method called ``name`` (a KeyError naming the registered ones otherwise)."""
    try:
        return METHODS[name]
    except KeyError:
        raise KeyError(f"method {name!r} is not registered; registered: {', '.join(METHODS)}") from None


def section_users(methods: Mapping[str, MethodSpec] | None = None) -> dict[str, tuple[str, ...]]:
    """Config section -> the methods that read it, sections in order of first use, methods in registry order."""
    out: dict[str, list[str]] = {}
    for spec in (METHODS if methods is None else methods).values():
        for section in spec.sections:
            out.setdefault(section, []).append(spec.name)
    return {section: tuple(users) for section, users in out.items()}


def names_where(flag: str, methods: Mapping[str, MethodSpec] | None = None) -> tuple[str, ...]:
    """The registered methods whose boolean ``flag`` (``non_private_ok``, ``prompting``, ...) is set."""
    return tuple(n for n, spec in (METHODS if methods is None else methods).items() if getattr(spec, flag))
