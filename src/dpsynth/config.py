"""One pydantic configuration: the YAML file, the CLI flags and the Python API.

``dpsynth init`` writes this model's defaults as commented YAML; ``dpsynth run
--some-field X`` overrides any field by its dotted path; ``dpsynth.synthesize``
takes the same object.  Validation happens here, at the door, with messages
that name the field and the fix (scikit-learn style): ``config_base.py`` holds that machinery
and the YAML reader, ``config_generators.py`` the generators, ``config_sections.py`` the methods'
sections (wasp, finetune, pearl, knowledgesg).
"""

from __future__ import annotations

import copy
import logging
import math
from pathlib import Path
from typing import Any, Literal

import pydantic_core
import yaml
from pydantic import AliasChoices, BaseModel, Field, field_validator, model_validator

from dpsynth.config_base import (  # noqa: F401 - re-exported: dpsynth.config is where callers look
    ConfigValidationError,
    NumberOverflowError,
    StrictModel,
    config_error_from_validation,
    device_name,
    load_yaml,
    mark_text,
    norm_label,
    yaml_problem,
)
from dpsynth.config_generators import (  # noqa: F401 - re-exported: dpsynth.config is where callers look
    BACKEND_FIELDS,
    DRY_SAMPLER,
    EMBEDDED_JUDGE,
    GENERATOR_ALIASES,
    GENERATOR_TRANSPORT,
    QWEN_CODER_GENERATOR,
    Backend,
    GeneratorConfig,
    PromptFormat,
    backend_reads,
    default_generators,
    generator_named,
    is_embedded_judge,
)
from dpsynth.config_sections import FinetuneConfig, KnowledgeSGConfig, PearlConfig, WaspConfig
from dpsynth.errors import ConfigError
from dpsynth.methods.registry import METHODS, Method, names_where, section_users  # noqa: F401 - Method re-exported


class DataConfig(StrictModel):
    """Where the private records are and which columns mean what."""

    private: str = Field(
        "embedded:imdb",
        description=(
            "CSV/TSV/JSONL/JSON/Parquet path, a saved HF dataset folder, or an embedded dataset: embedded:imdb "
            "(IMDb reviews, sentiment) or embedded:newsgroups (20 Newsgroups posts, 4 topics)."
        ),
    )
    text_column: str = "text"
    label_column: str = "label"
    encoding: str = Field("utf-8", description="Text encoding of CSV/JSONL input.")
    labels: dict[str, str] | None = Field(
        None,
        description=(
            "Public label set: label value in the file -> name used in prompts, e.g. "
            "{'0': negative, '1': positive}. Declared, never read from private data."
        ),
    )

    @field_validator("private", "text_column", "label_column")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():  # an empty path would be read as the current folder, an empty name as no column
            raise ValueError("must not be empty")
        return v

    @field_validator("labels", mode="before")
    @classmethod
    def _labels(cls, v: Any) -> Any:
        """Accept 'a,b', 'a=name,b=name', a list, or a mapping; keys are label values as strings."""
        if v is None:
            return None
        if isinstance(v, str):
            v = [p.strip() for p in v.split(",") if p.strip()]
        pairs: list[tuple[str, str]] | None = None
        if isinstance(v, (list, tuple)):
            pairs = []
            for item in v:
                key, eq, name = str(item).partition("=")
                if eq and not name.strip():  # "1=": a name forgotten, not the value meant as its name
                    raise ValueError(
                        f"label {key.strip()!r} has no name after '='; write {key.strip()}=<name>, or "
                        f"{key.strip()} alone to use the value as its name"
                    )
                pairs.append((key.strip(), (name or key).strip()))
        elif isinstance(v, dict):
            # a YAML `1:` or `1: ""` would name the label "None" or "" in every prompt
            blank = [str(k) for k, n in v.items() if n is None or not str(n).strip()]
            if blank:
                raise ValueError(f"label {blank[0]!r} has no name; give each label one, e.g. {{{blank[0]}: positive}}")
            pairs = [(str(k), str(n)) for k, n in v.items()]
        if pairs is None:
            return v
        # keys as the records' values are read (stripped, 1.0 -> 1): a key " pos" or "1.0" never met them
        pairs = [(norm_label(k), n) for k, n in pairs]
        if any(not k for k, _ in pairs):
            raise ValueError("a label value is empty; declare each label as a value (e.g. 0,1 or neg=negative)")
        # a label declared twice would keep one of its names silently; two labels with one name would get
        # the same prompts, so their samples could not differ
        keys, names = [k for k, _ in pairs], [n.strip().lower() for _, n in pairs]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise ValueError(f"label {twice[0]!r} is declared twice; declare each label once")
        same = sorted({n for n in names if names.count(n) > 1})
        if same:
            which = [k for k, n in zip(keys, names, strict=True) if n == same[0]]
            raise ValueError(
                f"labels {', '.join(map(repr, which))} have the same name {same[0]!r}; the prompts name each "
                "label, so give each its own name"
            )
        if len(pairs) < 2:
            raise ValueError("declare at least two labels")
        return dict(pairs)

    task: str = Field("text", description="Public task description used in prompts, e.g. 'movie review'.")
    n_private: int = Field(
        100,
        ge=1,
        validation_alias=AliasChoices("n_private", "m_private"),
        description="embedded datasets only: how many private records to draw (M in the papers; alias m_private).",
    )
    seed: int = Field(0, description="embedded datasets only: seed of the private draw.")
    label_type: Literal["auto", "int", "str"] = Field(
        "auto",
        description=(
            "Type of the output's label column (wasp, aug-pe, zero-shot, dp-finetune). auto: int when every "
            "declared label is an integer (0, 1, ...) "
            "unless the input's schema (Parquet, HF dataset, DataFrame dtype) declares the column as text; "
            "str: always text. Never read from the records themselves."
        ),
    )

    @model_validator(mode="after")
    def _two_columns(self) -> DataConfig:
        # the labels read as text (or the text as labels) would pass every other check; a public setting, so
        # refusing it says nothing about the records
        if self.text_column == self.label_column:
            raise ValueError(
                f"data.text_column and data.label_column are both {self.text_column!r}; name two different columns"
            )
        return self

    @model_validator(mode="after")
    def _label_type(self) -> DataConfig:
        if self.label_type == "int" and self.labels and not all(_is_integer(k) for k in self.labels):
            raise ValueError(
                f"data.label_type: int needs integer labels, but data.labels declares {sorted(self.labels)}; "
                "use str or auto"
            )
        return self

    @property
    def m_private(self) -> int:
        """Former name of ``n_private``."""
        return self.n_private

    @m_private.setter
    def m_private(self, value: int) -> None:
        self.n_private = value


def _is_integer(label: str) -> bool:
    """'0', '-3' are integer labels; '01', '1.5', 'pos' are not (see output.is_integer_label)."""
    try:
        return str(int(label)) == label
    except ValueError:
        return False


class PrivacyConfig(StrictModel):
    epsilon: float = Field(
        4.0,
        description=(
            "Total epsilon for the whole run. 'inf' (wasp and aug-pe only) releases the votes without noise: "
            "a research baseline that is NOT differentially private."
        ),
    )
    delta: float = Field(
        1e-5, description="Total delta, for every method; well below 1/M (a console note says when it is not)."
    )
    accountant: Literal["pld", "gdp"] = Field("pld", description="pld: dp-accounting PLD; gdp: exact GDP formula.")

    @field_validator("epsilon")
    @classmethod
    def _eps(cls, v: float) -> float:
        if math.isnan(v) or not v > 0:
            # the method is not known here: the hint fits a zero-shot user (who sets no epsilon) and the others
            raise ValueError(
                "must be a number > 0, e.g. 4; with --method zero-shot, which reads no private data, leave it out"
            )
        return v

    @property
    def is_private(self) -> bool:
        """False for epsilon = inf: the non-private ceiling that papers report beside the DP results."""
        return math.isfinite(self.epsilon)

    @field_validator("delta")
    @classmethod
    def _delta(cls, v: float) -> float:
        if not 0 < v < 1:
            raise ValueError("must be in (0, 1), and well below 1/M (the number of private records), e.g. --delta 1e-5")
        return v


# Which methods read each config section (a flag of another method's section is refused, see section_misfits),
# from the registry: {"data": (every method), "privacy": (all but zero-shot), "wasp": (wasp, aug-pe, zero-shot),
# "finetune": (dp-finetune, knowledgesg), "pearl": (pearl,), "knowledgesg": (knowledgesg,)}
SECTION_USERS: dict[str, tuple[str, ...]] = section_users()


# Top-level fields only the prompting methods (wasp, aug-pe, zero-shot) read.
PROMPTING_ONLY_FIELDS = ("generators", "embedding_model", "embedding_batch_size")


def section_misfits(paths: list[str], method: str) -> list[tuple[str, tuple[str, ...]]]:
    """The config paths in ``paths`` that ``method`` does not read (a section of other methods, or a
    prompting-only field such as --generators for PEARL), with the methods that do."""
    out = []
    prompting = names_where("prompting")
    for p in paths:
        section, _, name = p.partition(".")
        users = SECTION_USERS.get(section)
        if "." in p and users is not None and method not in users:
            out.append((p, users))
        elif section in PROMPTING_ONLY_FIELDS and method in METHODS and method not in prompting:
            out.append((p, prompting))
        elif section == "wasp" and method in METHODS and METHODS[method].ignores(name):
            # aug-pe fixes q, zero-shot has no votes: the value would be stored in config.yaml and never used
            out.append((p, tuple(m for m in users or () if not METHODS[m].ignores(name))))
    return out


# Methods whose vote can be released without noise (epsilon = inf), as the WASP and Aug-PE papers report
# beside their DP rows.  DP-SGD, the PEARL sketch and KnowledgeSG always add noise.  From the registry.
NON_PRIVATE_OK: tuple[str, ...] = names_where("non_private_ok")


# far beyond any run (a billion samples is years of generation on one machine), below where the class
# quotas' floating-point arithmetic stops being exact: 1e20 overflowed into "0 added" and a config.yaml
# that no later `sample` could grow
MAX_N_SYNTHETIC = 10**9


class Config(StrictModel):
    """A whole dpsynth run."""

    method: Method = "wasp"
    n_synthetic: int = Field(
        100,
        ge=1,
        le=MAX_N_SYNTHETIC,
        description="N: total synthetic samples (the default is sized for a ~10 minute demo on 2 CPU cores).",
    )
    out: str | None = Field(None, description="Run directory (default: runs/<method>-<time>).")
    output_format: Literal["jsonl", "csv", "parquet"] = "jsonl"
    data: DataConfig = Field(default_factory=DataConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    wasp: WaspConfig = Field(default_factory=WaspConfig)
    generators: list[GeneratorConfig] = Field(default_factory=default_generators)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig, description="dp-finetune settings.")
    pearl: PearlConfig = Field(default_factory=PearlConfig, description="pearl settings.")
    knowledgesg: KnowledgeSGConfig = Field(default_factory=KnowledgeSGConfig, description="knowledgesg client.")
    embedding_model: str = Field(
        "all-MiniLM-L6-v2",
        description="sentence-transformers folder, hub id, or all-MiniLM-L6-v2 (embedded).",
    )
    embedding_batch_size: int = Field(
        64, ge=1, description="Texts per forward pass of the embedding model (memory against speed)."
    )
    seed: int | None = Field(
        None,
        description=(
            "Seed for prompt and sampling draws (never for DP noise, which is secure); a resumed or extended "
            "run continues from it and the number of samples it holds, so it does not repeat earlier draws."
        ),
    )

    @field_validator("out")
    @classmethod
    def _out_not_blank(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():  # an unset $OUT: the run would be written into the current folder
            raise ValueError("is empty; give the run directory, or drop --out for runs/<method>-<time>")
        return v

    @model_validator(mode="after")
    def _embedded_judge(self) -> Config:
        """With the embedded generators (no ``generators`` given) Qwen2.5-Coder-0.5B also judges labels
        (and is aug-pe's one generator).

        On IMDb it raised WASP from 0.638 +- 0.035 to 0.713 +- 0.019 (3 seeds, docs/quality.md) at no privacy
        cost.  A config that lists its own generators keeps that judge where the list holds the same model
        (local, chat), under whatever name; a list without it has no judge.  A config that sets
        ``wasp.label_judge`` (null included) is left as it is; a saved run's config.yaml sets it, so a resumed
        run keeps what it started with.

        The judge is filled in as a default, not as a field the user set: ``model_fields_set`` (what a
        resume compares with the stored run, see run.RunDir.check) does not list it."""
        if "generators" not in self.model_fields_set and self.method == "aug-pe":
            # Aug-PE varies one generator's samples: of the embedded set, Qwen2.5-Coder (the best Aug-PE
            # generator measured, docs/quality.md), which is also the judge
            self.__dict__["generators"] = [g for g in self.generators if g.name == EMBEDDED_JUDGE]
        if "label_judge" in self.wasp.model_fields_set:
            return self
        judge: str | None = EMBEDDED_JUDGE
        if "generators" in self.model_fields_set:  # e.g. the embedded three and the larger Qwen, listed
            judge = next((g.name for g in self.generators if is_embedded_judge(g)), None)
        if judge is not None and self.wasp.label_judge != judge:
            wasp = self.wasp.model_copy()  # never change a WaspConfig the caller passed in
            wasp.__dict__["label_judge"] = judge  # bypasses assignment validation and fields_set
            self.__dict__["wasp"] = wasp
        return self

    @model_validator(mode="after")
    def _check(self) -> Config:
        names = [g.name for g in self.generators]
        judge = self.wasp.label_judge
        if judge is not None and judge not in names:
            named = generator_named(judge, self.generators)
            if named is not None:  # a former generator name (qwen2.5-0.5b): the generator it now stands for
                wasp = self.wasp.model_copy()  # never change a WaspConfig the caller passed in
                wasp.__dict__["label_judge"] = named.name
                self.__dict__["wasp"] = wasp
        for check in METHODS[self.method].checks:  # each method's own validation, for it only
            check(self)
        if not self.privacy.is_private and self.method not in NON_PRIVATE_OK:
            raise ValueError(
                f"privacy.epsilon: inf (no noise) is a research baseline of {' and '.join(NON_PRIVATE_OK)} only; "
                f"give {self.method} a finite epsilon, e.g. --epsilon 4"
            )
        return self

    def effective_wasp(self) -> WaspConfig:
        """The algorithm settings after applying the method preset (docs/wasp.md, Presets)."""
        preset = METHODS[self.method].preset
        return self.wasp.model_copy(update=dict(preset)) if preset else self.wasp.model_copy()

    @property
    def uses_private_data(self) -> bool:
        """False for a method that never reads the private data (zero-shot)."""
        return METHODS[self.method].reads_private


def explicit_fields(config: Config) -> dict[str, Any]:
    """The fields set explicitly in ``config``, as dotted paths (``privacy.epsilon``) -> values.

    Sections (data, privacy, ...) are walked into, so ``privacy: {epsilon: 2}`` sets privacy.epsilon only;
    any other value (a list of generators, the labels mapping) counts as one field.
    """
    out: dict[str, Any] = {}

    def walk(model: BaseModel, prefix: str) -> None:
        for name in model.model_fields_set:
            value = getattr(model, name)
            if isinstance(value, BaseModel) and name in SECTION_USERS:
                walk(value, f"{prefix}{name}.")
            else:
                out[prefix + name] = copy.deepcopy(value)

    walk(config, "")
    return out


def unread_settings(config: Config) -> list[str]:
    """The settings ``config`` sets, to other than their defaults, that its method does not read (another
    method's section, a prompting-only field for PEARL): ignored, which the user should be told."""
    defaults = Config().model_dump()
    changed = []
    for key, value in explicit_fields(config).items():
        default: Any = defaults
        for part in key.split("."):
            default = default.get(part) if isinstance(default, dict) else None
        # compared as dumped (the generators are models here, dicts in the defaults' dump: never equal)
        if pydantic_core.to_jsonable_python(value) != pydantic_core.to_jsonable_python(default):
            changed.append(key)
    unread = [key for key, _ in section_misfits(changed, config.method)]
    if config.finetune.sample_rate is not None and "finetune.batch_size" in changed:
        unread.append("finetune.batch_size")  # a q fixed in advance leaves no use for B
    return unread


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read a YAML config (or the defaults) and apply dotted overrides like {'privacy.epsilon': 2}."""
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path).expanduser()
        if p.is_dir() and (p / "config.yaml").is_file():  # a run's folder: its config.yaml is what resumes
            raise ConfigError(
                f"config file {p} is the folder of a run; continue it with `dpsynth run --resume --out {p}` "
                f"(Python: synthesize(Config(out={str(p)!r}), resume=True))"
            )
        if not p.is_file():
            what = "is a folder, not a file" if p.is_dir() else "does not exist"
            raise ConfigError(f"config file {p} {what}; create one with `dpsynth init {p}`")
        # `dpsynth run data.csv`: the positional argument is the config file, not the private data
        data_hint = (
            f"; {p.name} looks like a data file: pass it with --private {p}"
            if p.suffix.lower() in (".csv", ".tsv", ".jsonl", ".ndjson", ".json", ".parquet", ".gz")
            else ""
        )
        try:
            loaded = load_yaml(p.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"config file {p} is not UTF-8 text (byte {exc.start}); save it as UTF-8 YAML{data_hint}"
            ) from None
        except NumberOverflowError as exc:
            raise ConfigError(f"config file {p}: {mark_text(exc)}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {p} is not valid YAML: {yaml_problem(exc)}{data_hint}") from None
        if loaded is None:  # an empty file (or comments only) is every default: the embedded demo, said so
            logging.getLogger("dpsynth").warning(
                "config file %s sets no field (it is empty or holds only comments): every field not given as a "
                "flag takes its default, the embedded demo's data and models included",
                p,
            )
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping of fields, not {type(loaded).__name__}{data_hint}")
        raw = loaded
    per_generator = {k: v for k, v in (overrides or {}).items() if k.startswith("generators.")}
    for key, value in (overrides or {}).items():
        if key not in per_generator:
            set_dotted(raw, key, value)
    if per_generator:
        set_generator_fields(raw, per_generator)
    return Config.model_validate(raw)  # raises a one-line ConfigError


def set_generator_fields(raw: dict[str, Any], settings: dict[str, Any]) -> None:
    """Apply ``generators.FIELD`` / ``generators.*.FIELD`` (every generator whose backend reads FIELD) and
    ``generators.NAME.FIELD`` settings (the CLI's ``--generators.n-threads 1``) to the generator list the run
    would use: the file's or flags' list, else the method's default, which is then written out with the label
    judge it implies (a listed set otherwise gets the judge only if it holds the judge's model, see
    Config._embedded_judge).
    A backend is set first and every-generator settings before named ones, whatever the order given."""
    if not isinstance(raw.get("generators"), list):
        resolved = Config.model_validate(raw)
        raw["generators"] = [g.model_dump(exclude_defaults=True) | {"name": g.name} for g in resolved.generators]
        wasp = raw.setdefault("wasp", {})
        if isinstance(wasp, dict) and "label_judge" not in wasp and resolved.wasp.label_judge is not None:
            wasp["label_judge"] = resolved.wasp.label_judge
    gens = [g for g in raw["generators"] if isinstance(g, dict)]
    parsed = []
    for key, value in settings.items():
        name, _, field = key.removeprefix("generators.").rpartition(".")
        parsed.append((name if name not in ("", "*") else "*", field, value))
    parsed.sort(key=lambda s: (s[1] != "backend", s[0] != "*"))
    for name, field, value in parsed:
        flag = f"--generators.{'' if name == '*' else name + '.'}{field.replace('_', '-')}"
        called = {name, GENERATOR_ALIASES.get(name)} | {old for old, new in GENERATOR_ALIASES.items() if new == name}
        named = gens if name == "*" else [g for g in gens if g.get("name") in called]
        if not named:
            names = ", ".join(str(g.get("name")) for g in gens) or "none"
            raise ConfigError(f"{flag}: no generator is called {name!r}; the run's generators: {names}")
        targets = [g for g in named if backend_reads(str(g.get("backend", "llamacpp")), field)]
        if not targets:
            only = ", ".join(b for b in BACKEND_FIELDS if field in BACKEND_FIELDS[b])
            which = "none of the run's generators uses" if name == "*" else f"generator {name} does not use"
            raise ConfigError(f"{flag}: {field} is read by the {only} backend only, and {which} it")
        for g in targets:
            g[field] = value


def set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key`` (a dotted path) in the raw mapping ``d``; a field's other names (aliases) are removed from it,
    so that ``wasp.max_new_tokens`` given as a flag replaces ``max_tokens`` read from a file or a run's config."""
    parts = key.split(".")
    for p in parts[:-1]:
        nxt = d.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{key}: cannot set a field inside {p}, which is not a section")
        d = nxt
    section = parts[0] if len(parts) > 1 else ""
    leaf = field_aliases(section).get(parts[-1], parts[-1])
    for name in field_names(section).get(leaf, (leaf,)):
        d.pop(name, None)
    d[leaf] = value


def field_aliases(section: str = "") -> dict[str, str]:
    """Former names of the fields of a config section ('' = the top level) -> their current names."""
    model = _section_model(section)
    out: dict[str, str] = {}
    for name, f in model.model_fields.items() if model is not None else ():
        if isinstance(f.validation_alias, AliasChoices):
            for alias in f.validation_alias.choices:
                if isinstance(alias, str) and alias != name:
                    out[alias] = name
    return out


def field_names(section: str = "") -> dict[str, tuple[str, ...]]:
    """Current field name -> every name it is accepted under (itself first), for fields that have aliases."""
    out: dict[str, list[str]] = {}
    for alias, name in field_aliases(section).items():
        out.setdefault(name, [name]).append(alias)
    return {k: tuple(v) for k, v in out.items()}


def _section_model(section: str) -> type[BaseModel] | None:
    if not section:
        return Config
    ann = Config.model_fields[section].annotation if section in Config.model_fields else None
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
