"""One pydantic configuration: the YAML file, the CLI flags and the Python API.

``dpsynth init`` writes this model's defaults as commented YAML; ``dpsynth run
--some-field X`` overrides any field by its dotted path; ``dpsynth.synthesize``
takes the same object.  Validation happens here, at the door, with messages
that name the field and the fix (scikit-learn style).
"""

from __future__ import annotations

import difflib
import math
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from typing_extensions import Self

from dpsynth.errors import ConfigError
from dpsynth.generators.models import QWEN25_CODER, canonical_model

Method = Literal["wasp", "aug-pe", "zero-shot", "dp-finetune", "pearl", "knowledgesg"]
Backend = Literal["llamacpp", "openai", "transformers"]
PromptFormat = Literal["chat", "completion"]


class _Strict(BaseModel):
    """Unknown fields are errors, and so is any invalid value, on construction and on assignment.

    A mistake surfaces as a one-line ``ConfigError`` naming the field (also a ``ValueError``,
    like pydantic's own ``ValidationError``), never as pydantic's multi-line report.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise config_error_from_validation(exc, type(self)) from None

    # Behaves as BaseModel.__init__, so nested models are validated in one pass (full dotted locations)
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> Self:
        try:
            return super().model_validate(obj, *args, **kwargs)
        except ValidationError as exc:
            raise config_error_from_validation(exc, cls) from None

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            super().__setattr__(name, value)
        except ValidationError as exc:
            raise config_error_from_validation(exc, type(self)) from None

    @field_validator("*", mode="before")
    @classmethod
    def _plain_numbers(cls, v: Any, info: ValidationInfo) -> Any:
        """Numeric fields take numbers only: no booleans, no literal that overflows to infinity.

        pydantic would read ``true`` as 1 and ``1e400`` as inf, so ``--epsilon true`` ran with epsilon 1 and
        ``--epsilon 1e400`` silently turned privacy off.  Infinity must be written as such (``inf``, YAML's
        ``.inf`` or ``float('inf')``); ints still become floats.
        """
        kinds = _numeric_kinds(cls.model_fields[info.field_name or ""].annotation) if info.field_name else ()
        if not kinds:
            return v
        if isinstance(v, bool):
            raise ValueError("must be a number, not true/false")
        if float in kinds and _overflows(v):
            raise ValueError(
                "the number is too large for a float (it would overflow to infinity); give a smaller number, "
                "or write inf if you mean no limit"
            )
        return v


def _numeric_kinds(annotation: Any) -> tuple[type, ...]:
    """(int and/or float) when a field is numeric, including ``X | None``; () otherwise (bool is not numeric)."""
    if annotation in (int, float):
        return (annotation,)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return tuple(a for a in typing.get_args(annotation) if a in (int, float))
    return ()


_INF_WORDS = ("inf", "infinity", ".inf")


def _overflows(v: Any) -> bool:
    """True for a finite-looking number (a text like ``1e400`` or a huge int) that a float cannot hold."""
    if isinstance(v, int) and not isinstance(v, bool):
        return abs(v) > sys.float_info.max
    if isinstance(v, str):
        text = v.strip()
        try:
            f = float(text.replace("_", ""))
        except ValueError:
            return False  # not a number: pydantic says so
        return math.isinf(f) and text.lower().lstrip("+-") not in _INF_WORDS
    return False


class NumberOverflowError(yaml.constructor.ConstructorError):
    """A YAML float literal such as ``1.0e+400`` that is finite as written but overflows to infinity."""


class ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` whose floats refuse to overflow: only ``.inf`` (or the text ``inf``) means infinity.

    Used for config files, CLI flag values and a run's config.yaml alike.
    """


def _construct_float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> float:
    value = loader.construct_yaml_float(node)
    literal = str(node.value).strip().lower().lstrip("+-")
    if math.isinf(value) and literal != ".inf":
        raise NumberOverflowError(
            None,
            None,
            "a number is too large for a float (it would overflow to infinity); give a smaller number, or "
            "write .inf if you mean no limit",
            node.start_mark,
        )
    return float(value)


ConfigLoader.add_constructor("tag:yaml.org,2002:float", _construct_float)


def load_yaml(text: str) -> Any:
    """Parse YAML text with ``ConfigLoader`` (raises ``yaml.YAMLError``, ``NumberOverflowError`` included)."""
    return yaml.load(text, Loader=ConfigLoader)


# llama.cpp's DRY ("don't repeat yourself") sampler penalises continuing any token sequence already in the
# context, the prompt included.  Small models shown L good and L poor examples otherwise copy them: on the
# default demo's round-1 prompts it raised accepted outputs from 6/16 to 15/16 (Gemma-3-270M) and from
# 2/16 to 12/16 (Qwen2.5-Coder-0.5B): bench/diag_copying.py, bench/results/copying.json.
DRY_SAMPLER: dict[str, Any] = {"dry_multiplier": 0.8, "dry_allowed_length": 3, "dry_penalty_last_n": 4096}


class GeneratorConfig(_Strict):
    """One prompted generator: a backend, a model and a prompt format."""

    name: str = Field(description="Short unique name used in outputs and reports.")
    backend: Backend = Field("llamacpp", description="llamacpp (local GGUF), openai (HTTP), transformers (GPU).")
    model: str = Field(
        description=(
            "llamacpp: GGUF path or an embedded name (smollm2-135m-instruct, gemma3-270m, "
            "qwen2.5-coder-0.5b-instruct; its former name qwen2.5-0.5b-instruct is accepted); openai: model id "
            "on the server; transformers: folder or hub id."
        )
    )
    prompt_format: PromptFormat = Field("chat", description="chat for instruct models, completion for base models.")
    extra_body: dict[str, Any] | None = Field(
        None,
        description=(
            "Extra sampler fields merged into every request body (backend-specific, e.g. vLLM's "
            "repetition_penalty). None: llamacpp uses DRY_SAMPLER (the prompt's examples are not copied); "
            "openai sends nothing extra."
        ),
    )
    # llama.cpp
    n_parallel: int = Field(4, ge=1, le=64, description="llama.cpp slots (continuous batching).")
    n_ctx: int = Field(4096, ge=256, description="llama.cpp total context, shared by the slots.")
    n_threads: int = Field(0, ge=0, description="CPU threads for llama.cpp; 0 = all cores.")
    # HTTP
    base_url: str | None = Field(None, description="openai backend: e.g. http://127.0.0.1:8000/v1")
    api_key_env: str | None = Field(None, description="Name of the environment variable holding the API key.")
    concurrency: int = Field(8, ge=1, le=512, description="openai backend: requests in flight.")
    timeout_s: float = Field(120.0, gt=0, description="Per-request timeout in seconds.")
    max_retries: int = Field(4, ge=0, le=20, description="Retries on timeouts, 429 and 5xx, with backoff.")
    # transformers
    device: str = Field("auto", description="transformers backend: cpu, cuda, auto.")
    batch_size: int = Field(16, ge=1, description="transformers backend: prompts per forward batch.")

    @model_validator(mode="after")
    def _current_model_name(self) -> GeneratorConfig:
        """An embedded model given by its former name (qwen2.5-0.5b-instruct) is recorded by its current one.

        Not for the openai backend, whose ``model`` is whatever id the server serves under."""
        if self.backend != "openai":
            self.__dict__["model"] = canonical_model(self.model)
        return self

    def sampler_fields(self) -> dict[str, Any]:
        """The extra request-body fields this generator sends (see extra_body)."""
        if self.extra_body is not None:
            return dict(self.extra_body)
        return dict(DRY_SAMPLER) if self.backend == "llamacpp" else {}


QWEN_CODER_GENERATOR = "qwen2.5-coder-0.5b"  # the embedded Qwen2.5-Coder-0.5B-Instruct's generator name
EMBEDDED_JUDGE = QWEN_CODER_GENERATOR  # the label judge of the embedded generator set (WaspConfig.label_judge)
# Former names of the embedded generators.  A run's config.yaml keeps the names it started with (they key its
# journal and rounds.json), so only a reference to a generator that is not in the list is translated:
# ``wasp.label_judge: qwen2.5-0.5b`` with the current default generators means qwen2.5-coder-0.5b.
GENERATOR_ALIASES: dict[str, str] = {"qwen2.5-0.5b": QWEN_CODER_GENERATOR}


def default_generators() -> list[GeneratorConfig]:
    """Three local generators of different families (WASP needs diversity, wasp.md)."""
    return [
        GeneratorConfig(name="smollm2-135m", model="smollm2-135m-instruct", prompt_format="chat"),
        GeneratorConfig(name="gemma3-270m", model="gemma3-270m", prompt_format="completion"),
        GeneratorConfig(name=QWEN_CODER_GENERATOR, model=QWEN25_CODER, prompt_format="chat"),
    ]


def generator_named(name: str, generators: list[GeneratorConfig]) -> GeneratorConfig | None:
    """The generator called ``name``, or by a former name of it (``GENERATOR_ALIASES``), or None."""
    by_name = {g.name: g for g in generators}
    return by_name.get(name) or by_name.get(GENERATOR_ALIASES.get(name, ""))


class DataConfig(_Strict):
    """Where the private records are and which columns mean what."""

    private: str = Field(
        "embedded:imdb",
        description="CSV/JSONL/Parquet path, a saved HF dataset folder, or embedded:imdb (100 IMDb reviews).",
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

    @field_validator("labels", mode="before")
    @classmethod
    def _labels(cls, v: Any) -> Any:
        """Accept 'a,b', 'a=name,b=name', a list, or a mapping; keys are label values as strings."""
        if v is None:
            return None
        if isinstance(v, str):
            v = [p.strip() for p in v.split(",") if p.strip()]
        if isinstance(v, (list, tuple)):
            out: dict[str, str] = {}
            for item in v:
                key, _, name = str(item).partition("=")
                out[key.strip()] = (name or key).strip()
            v = out
        if isinstance(v, dict):
            v = {str(k): str(n) for k, n in v.items()}
            if len(v) < 2:
                raise ValueError("declare at least two labels")
        return v

    task: str = Field("text", description="Public task description used in prompts, e.g. 'movie review'.")
    n_private: int = Field(
        100,
        ge=1,
        validation_alias=AliasChoices("n_private", "m_private"),
        description="embedded:imdb only: how many private reviews to draw (M in the papers; alias m_private).",
    )
    seed: int = Field(0, description="embedded:imdb only: seed of the private draw.")
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
    """'0', '-3' are integer labels; '01', '1.5', 'pos' are not (see data.is_integer_label)."""
    try:
        return str(int(label)) == label
    except ValueError:
        return False


class PrivacyConfig(_Strict):
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
            raise ValueError("must be > 0, e.g. --epsilon 4 (use --method zero-shot for a run without private data)")
        return v

    @property
    def is_private(self) -> bool:
        """False for epsilon = inf: the non-private ceiling that papers report beside the DP results."""
        return math.isfinite(self.epsilon)

    @field_validator("delta")
    @classmethod
    def _delta(cls, v: float) -> float:
        if not 0 < v < 1:
            raise ValueError("must be in (0, 1) and below 1/M, e.g. --delta 1e-5")
        return v


class WaspConfig(_Strict):
    """Algorithm knobs (wasp.md).  Aug-PE and zero-shot are presets of these."""

    rounds: int = Field(4, ge=1, le=100, description="T: number of DP voting rounds.")
    q: int = Field(8, ge=1, le=64, description="Q: nearest (and farthest) neighbours voted per private sample.")
    use_far: bool = Field(True, description="Vote for the Q farthest too (contrastive bad examples).")
    contrastive: bool = Field(True, description="Prompt with good and bad examples (False: good only).")
    weighting: bool = Field(True, description="Reweight generators by votes (False: equal budgets).")
    variation: Literal["contrastive", "rephrase"] = Field(
        "contrastive", description="rephrase = Aug-PE's variation of one top-voted sample."
    )
    top_s: int = Field(8, ge=1, description="S: size of the good and bad pools per class.")
    l_examples: int = Field(4, ge=1, description="L: examples per side in each prompt.")
    tau: float = Field(1.0, gt=0, description="Softmax temperature of the generator weights.")
    min_share: float = Field(0.01, ge=0, lt=1, description="Floor on each generator's share of a round.")
    class_uniform_mix: float = Field(0.2, ge=0, le=1, description="Mix of the uniform prior into noisy class shares.")
    max_new_tokens: int = Field(
        64,
        ge=8,
        le=2048,
        validation_alias=AliasChoices("max_new_tokens", "max_tokens"),
        description="Tokens generated per sample, at most (alias max_tokens).",
    )
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(0.9, gt=0, le=1)
    min_chars: int = Field(40, ge=1, description="Drop outputs shorter than this.")
    max_chars: int = Field(2000, ge=10, description="Drop (truncate-free) outputs longer than this.")
    example_chars: int = Field(300, ge=20, description="Truncate examples shown in prompts to this length.")
    samples_per_prompt: int = Field(
        1,
        ge=1,
        le=16,
        description=(
            "Completions drawn from each prompt (OpenAI's n; llama.cpp, vLLM and OpenAI support it): a "
            "contrastive prompt with its examples is prefilled once for all of them."
        ),
    )
    near_dup_threshold: float | None = Field(None, ge=0, le=1, description="Drop near-duplicates above this cosine.")
    label_judge: str | None = Field(
        None,
        description=(
            "Name of a chat generator (one of `generators`) that reads each new sample and the public label "
            "names and says which label fits; a sample judged to be another label is dropped and re-asked. "
            "Post-processing with a public model: no privacy cost."
        ),
    )

    @property
    def max_tokens(self) -> int:
        """Former name of ``max_new_tokens``."""
        return self.max_new_tokens

    @max_tokens.setter
    def max_tokens(self, value: int) -> None:
        self.max_new_tokens = value


class FinetuneConfig(_Strict):
    """DP fine-tuning of a causal LM (Yue et al., ACL 2023).  Owned by methods/dp_finetune.py.

    LoRA adapters (peft) trained with DP-SGD (Opacus: per-sample clipping, Poisson sampling,
    Gaussian noise calibrated to privacy.epsilon); then sampling conditioned on a control code.
    The number of private records is not public: a noisy count (accounted) sets the sample rate.
    """

    model: str = Field(
        default="smollm2-135m-instruct",
        description=(
            "Causal LM to fine-tune: an embedded GGUF name (smollm2-135m-instruct), a .gguf path "
            "(dequantised by transformers), a local Hugging Face folder or a hub id."
        ),
    )
    device: str = Field(default="auto", description="cpu, cuda, cuda:N or auto (cuda when available).")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto", description="auto: bf16 autocast where the CPU/GPU supports it, else fp32."
    )
    epochs: float = Field(default=2.0, gt=0, le=1000, description="Passes over the private set (steps = epochs / q).")
    batch_size: int = Field(
        default=8, ge=1, description="Expected (Poisson) batch size B; sample rate q = B / (noisy record count)."
    )
    physical_batch_size: int | None = Field(
        default=None, ge=1, description="Largest batch run at once (memory cap); None: no cap."
    )
    learning_rate: float = Field(default=2e-3, gt=0, le=1.0, description="AdamW learning rate of the LoRA weights.")
    max_grad_norm: float = Field(default=1.0, gt=0, description="C: per-sample gradient clipping norm.")
    max_length: int = Field(
        default=128, ge=8, le=8192, description="Tokens per training record, control code included."
    )
    truncate: bool = Field(
        default=True, description="Truncate longer records to max_length (False: refuse them with an error)."
    )
    lora_r: int = Field(default=8, ge=1, le=1024, description="LoRA rank.")
    lora_alpha: int = Field(default=16, ge=1, description="LoRA scaling alpha.")
    lora_dropout: float = Field(default=0.0, ge=0, lt=1, description="LoRA dropout.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "v_proj"], description="Modules that get LoRA adapters."
    )
    accountant: Literal["prv", "rdp"] = Field(default="prv", description="Opacus accountant for DP-SGD.")
    prompt_format: Literal["auto", "chat", "plain"] = Field(
        default="auto",
        description=(
            "How a record is laid out: plain = control_code + text (the paper); chat = the model's chat "
            "template with the instruction as the user turn and the text as the reply; auto = chat when the "
            "tokenizer has a chat template (instruct models), else plain."
        ),
    )
    control_code: str = Field(
        default="label: {label} | text: ",
        description="plain: prefix of each record and generation prompt; {label} = label name, {task} = data.task.",
    )
    instruction: str = Field(
        default="Write a {label} {task}.",
        description="chat: the user turn before each record (the control code); {label}, {task} as above.",
    )
    label_proportions: Literal["dp-count", "uniform"] = Field(
        default="dp-count",
        description="Class shares of the output: a noisy (DP, accounted) label count, or uniform (free).",
    )
    label_count_epsilon_share: float = Field(
        default=0.1,
        gt=0,
        lt=1,
        description=(
            "Share of epsilon the noisy count is calibrated for alone: per label (dp-count) or the total "
            "(uniform); it sets the sample rate, since the number of private records is not public."
        ),
    )
    checkpoint_every: int = Field(default=5, ge=1, description="Save a resumable checkpoint every K steps.")
    show_loss: bool = Field(
        default=False,
        description=(
            "Show the training loss in the progress display. It is computed on private batches WITHOUT noise "
            "(not DP): console only, never written; off by default."
        ),
    )
    max_new_tokens: int = Field(
        default=96,
        ge=4,
        le=4096,
        validation_alias=AliasChoices("max_new_tokens", "max_tokens"),
        description="Generation: tokens per synthetic record, at most (alias max_tokens).",
    )
    temperature: float = Field(default=1.0, ge=0, description="Generation temperature (0: greedy).")
    top_p: float = Field(default=0.95, gt=0, le=1, description="Generation nucleus sampling.")
    generation_batch_size: int = Field(default=16, ge=1, description="Prompts per generate() call.")

    @field_validator("control_code", "instruction")
    @classmethod
    def _control_code(cls, v: str) -> str:
        if "{label}" not in v:
            raise ValueError("must contain {label}, e.g. 'label: {label} | text: '")
        try:
            v.format(label="x", task="y")
        except (KeyError, IndexError, ValueError):
            raise ValueError(
                "may contain only the {label} and {task} placeholders (write {{ and }} for braces)"
            ) from None
        if not v.format(label="x", task="y").strip():
            raise ValueError("must not be blank")
        return v

    @field_validator("model")
    @classmethod
    def _current_model_name(cls, v: str) -> str:
        return canonical_model(v)  # an embedded model's former name (qwen2.5-0.5b-instruct) -> its current one

    @field_validator("target_modules")
    @classmethod
    def _targets(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("name at least one module, e.g. [q_proj, v_proj]")
        return v

    @model_validator(mode="after")
    def _physical(self) -> FinetuneConfig:
        if self.physical_batch_size is not None and self.physical_batch_size > self.batch_size:
            raise ValueError("physical_batch_size: must not exceed batch_size")
        return self


class PearlConfig(_Strict):
    """PEARL (Liew et al., ICLR 2022): one-shot DP characteristic-function sketch.  Owned by methods/pearl.py.

    Only ``data_schema`` (public facts) and the noise split touch privacy; every other knob shapes the
    training on the released sketch, which is post-processing (docs/pearl.md).
    """

    data_schema: dict[str, Any] | str | None = Field(
        None,
        description=(
            "Public schema: a mapping or a JSON/YAML file with columns: {name: {type: integer|float|"
            "categorical, min, max, categories}} (arrays: array: {min, max}). What it leaves out is "
            "derived with DP from schema_budget (docs/pearl.md)."
        ),
    )
    n_frequencies: int | None = Field(
        None,
        ge=8,
        le=100_000,
        description="m: random frequencies of the sketch; default: chosen from the noisy counts (noise_ratio).",
    )
    max_frequencies: int = Field(1000, ge=8, le=100_000, description="Upper bound on the automatic m.")
    noise_ratio: float = Field(
        0.5, gt=0, description="Automatic m: largest m with noise sigma*sqrt(m)/n per ECF component <= this."
    )
    bandwidth: float | None = Field(
        None, gt=0, description="Kernel bandwidth h0 in the encoded [0,1]^D space; default 0.3*sqrt(D)."
    )
    bandwidth_spread: float = Field(
        3.0, ge=1, description="Frequency bandwidths are log-uniform in [h0/spread, h0*spread]."
    )
    count_budget: float = Field(
        0.1, gt=0, lt=1, description="Share of the Gaussian budget (of mu^2) spent on the noisy class counts."
    )
    schema_budget: float = Field(
        0.2, gt=0, lt=0.9, description="Share of the Gaussian budget (of mu^2) spent deriving an undeclared schema."
    )
    category_delta_share: float = Field(
        0.1, gt=0, lt=1, description="Share of privacy.delta spent by the threshold of DP category discovery."
    )
    max_categories: int = Field(100, ge=1, description="Most categories kept per DP-derived categorical column.")
    train_steps: int = Field(2000, ge=1, description="Generator training steps (free: post-processing).")
    train_batch: int = Field(128, ge=2, le=100_000, description="Generated samples per class per step.")
    gen_lr: float = Field(1e-3, gt=0, description="Generator learning rate (Adam).")
    critic_lr: float = Field(5e-3, gt=0, description="Learning rate of the adversarial frequency re-weighting.")
    adversarial: bool = Field(True, description="Adversarial re-weighting of the frequencies (False: plain ECF match).")
    uniform_mix: float = Field(
        0.5, ge=0, le=1, description="Mix of uniform weights into the adversarial frequency weights."
    )
    max_log_scale: float = Field(
        1.0, ge=0, le=5, description="Bound on the critic's per-dimension log frequency scale."
    )
    hidden_dim: int = Field(256, ge=8, le=8192, description="Generator MLP width.")
    latent_dim: int = Field(32, ge=1, le=4096, description="Generator noise dimension.")
    array_key: str = Field("x", description=".npz input: name of the array holding the records.")
    train_threads: int = Field(
        0, ge=0, le=256, description="torch threads while training; 0 = torch's default (1 is best on busy CPUs)."
    )

    @model_validator(mode="after")
    def _shares(self) -> PearlConfig:
        if self.schema_budget + self.count_budget >= 0.9:
            raise ValueError("pearl: schema_budget + count_budget must leave the sketch at least 10% of the budget")
        return self


class KnowledgeSGConfig(_Strict):
    """KnowledgeSG client (Wang et al., EMNLP 2024).  Owned by methods/knowledgesg.py.

    The client DP-fine-tunes ``finetune.model`` on its private instruction/response pairs (the
    ``finetune`` section), uploads only the LoRA adapter to ``server``, and downloads the synthetic
    dataset the server's professional model filtered and answered.  ``n_synthetic`` pairs are asked for.
    """

    server: str | None = Field(None, description="Server URL, e.g. http://127.0.0.1:8088 (dpsynth server start).")
    token_env: str = Field(
        "DPSYNTH_TOKEN", description="Environment variable holding this client's bearer token (never logged)."
    )
    instruction_column: str = Field("instruction", description="Column with the private instructions/questions.")
    response_column: str = Field("response", description="Column with the private responses/answers.")
    domain: str = Field(
        "medical", min_length=1, description="Public domain name used in the control code and the server's prompts."
    )
    oversample: float = Field(
        2.0, ge=1.0, le=20.0, description="The server samples oversample * n_synthetic instructions before filtering."
    )
    filter: bool = Field(True, description="Let the professional model drop off-domain or unanswerable instructions.")
    poll_interval_s: float = Field(2.0, gt=0, le=300, description="Seconds between job status requests.")
    job_timeout_s: float = Field(7200.0, gt=0, description="Give up waiting for the server job after this long.")
    request_timeout_s: float = Field(120.0, gt=0, description="Timeout of one HTTP request (uploads included).")
    max_retries: int = Field(
        8, ge=0, le=100, description="Retries (with backoff) of one request on connection errors, 429 and 5xx."
    )
    local_finetune: bool = Field(
        False,
        description="Fine-tune the local model on the returned data (non-DP LoRA; post-processing, no privacy cost).",
    )
    local_epochs: float = Field(2.0, gt=0, le=100, description="local_finetune: passes over the synthetic data.")


# Which methods read each config section (a flag of another method's section is refused, see section_fits)
SECTION_USERS: dict[str, tuple[str, ...]] = {
    "data": ("wasp", "aug-pe", "zero-shot", "dp-finetune", "pearl", "knowledgesg"),
    "privacy": ("wasp", "aug-pe", "dp-finetune", "pearl", "knowledgesg"),
    "wasp": ("wasp", "aug-pe", "zero-shot"),
    "finetune": ("dp-finetune", "knowledgesg"),
    "pearl": ("pearl",),
    "knowledgesg": ("knowledgesg",),
}


def section_misfits(paths: list[str], method: str) -> list[tuple[str, tuple[str, ...]]]:
    """The dotted config paths in ``paths`` whose section ``method`` does not read, with the methods that do."""
    out = []
    for p in paths:
        section = p.split(".", 1)[0]
        users = SECTION_USERS.get(section)
        if "." in p and users is not None and method not in users:
            out.append((p, users))
    return out


# Methods whose vote can be released without noise (epsilon = inf), as the WASP and Aug-PE papers report
# beside their DP rows.  DP-SGD, the PEARL sketch and KnowledgeSG always add noise.
NON_PRIVATE_OK = ("wasp", "aug-pe")


class Config(_Strict):
    """A whole dpsynth run."""

    method: Method = "wasp"
    n_synthetic: int = Field(
        100, ge=1, description="N: total synthetic samples (the default is sized for a ~10 minute demo on 2 CPU cores)."
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
    embedding_batch_size: int = Field(64, ge=1)
    seed: int | None = Field(None, description="Seed for prompt sampling (never for DP noise, which is secure).")

    @model_validator(mode="after")
    def _embedded_judge(self) -> Config:
        """With the embedded generators (no ``generators`` given) Qwen2.5-Coder-0.5B also judges labels.

        On IMDb it raised WASP from 0.638 +- 0.035 to 0.713 +- 0.019 (3 seeds, docs/quality.md) at no privacy
        cost.  A config that lists its own generators, or sets ``wasp.label_judge`` (null included), is left
        as it is; a saved run's config.yaml lists both, so a resumed run keeps what it started with.

        The judge is filled in as a default, not as a field the user set: ``model_fields_set`` (what a
        resume compares with the stored run, see run.RunDir.check) does not list it."""
        if "generators" in self.model_fields_set or "label_judge" in self.wasp.model_fields_set:
            return self
        if self.wasp.label_judge != EMBEDDED_JUDGE:
            wasp = self.wasp.model_copy()  # never change a WaspConfig the caller passed in
            wasp.__dict__["label_judge"] = EMBEDDED_JUDGE  # bypasses assignment validation and fields_set
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
        if not names:
            raise ValueError("generators: at least one generator is needed")
        if len(set(names)) != len(names):
            raise ValueError(f"generators: names must be unique, got {names}")
        if self.method == "aug-pe" and len(self.generators) != 1:
            raise ValueError("generators: aug-pe uses exactly one generator; keep one entry or use --method wasp")
        judge = self.wasp.label_judge
        if judge is not None:
            by_name = {g.name: g for g in self.generators}
            if judge not in by_name:
                raise ValueError(f"wasp.label_judge: {judge!r} is not one of the generators {names}")
            if by_name[judge].prompt_format != "chat":
                raise ValueError(
                    f"wasp.label_judge: {judge!r} is a completion (base) model; the judge must be a chat model"
                )
        if not self.privacy.is_private and self.method not in NON_PRIVATE_OK:
            raise ValueError(
                f"privacy.epsilon: inf (no noise) is a research baseline of {' and '.join(NON_PRIVATE_OK)} only; "
                f"give {self.method} a finite epsilon, e.g. --epsilon 4"
            )
        return self

    def effective_wasp(self) -> WaspConfig:
        """The algorithm settings after applying the method preset (wasp.md, Baselines)."""
        w = self.wasp.model_copy()
        if self.method == "aug-pe":
            w = w.model_copy(update=dict(q=1, use_far=False, contrastive=False, weighting=False, variation="rephrase"))
        return w

    @property
    def uses_private_data(self) -> bool:
        return self.method != "zero-shot"


class ConfigValidationError(ConfigError, ValueError):
    """An invalid config value (a ``ConfigError``; also a ``ValueError`` as pydantic's errors are)."""


def config_error_from_validation(exc: ValidationError, model: type[BaseModel] | None = None) -> ConfigError:
    """Turn pydantic's multi-line report into one line naming each field and the fix.

    The offending input value is never echoed (it could be anything the user pasted).
    """
    parts = []
    unknown = False
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        kind = err["type"]
        clash = _alias_clash(model, err["loc"]) if kind == "extra_forbidden" else None
        if clash is not None:  # wasp: {max_tokens: 48, max_new_tokens: 64}
            msg = f"is another name of {clash}, which is given too; keep one of them"
        elif kind == "extra_forbidden":
            msg = "unknown field" + _suggest(model, err["loc"])
            unknown = True
        elif kind == "missing":
            msg = "required field is missing"
        elif kind == "literal_error" and isinstance(err.get("input"), str):
            expected = re.findall(r"'([^']*)'", str((err.get("ctx") or {}).get("expected", "")))
            close = difflib.get_close_matches(err["input"], expected, n=1, cutoff=0.5)
            msg = f"must be one of {', '.join(expected)}" + (f" (did you mean {close[0]!r}?)" if close else "")
        else:
            msg = " ".join(err["msg"].removeprefix("Value error, ").split())
        # model-level checks already name their field ("generators: ...")
        parts.append(f"{loc}: {msg}" if loc and not msg.startswith(f"{loc}.") else msg)
    if unknown:
        parts.append("`dpsynth init` writes a file listing every field")
    return ConfigValidationError("; ".join(parts) or "config: invalid")


def _model_at(model: type[BaseModel] | None, loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model that holds the field at ``loc`` (walking sections and lists of models), or None."""
    for part in loc[:-1]:
        if model is None:
            return None
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None) if field is not None else None
        args = getattr(ann, "__args__", ())  # list[GeneratorConfig], X | None
        candidates = [ann, *args]
        model = next((a for a in candidates if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return model


def _alias_clash(model: type[BaseModel] | None, loc: tuple[int | str, ...]) -> str | None:
    """The field whose other name ``loc`` is, when pydantic calls it unknown because both names were given."""
    model = _model_at(model, loc)
    if model is None or not loc:
        return None
    for name, f in model.model_fields.items():
        if isinstance(f.validation_alias, AliasChoices) and str(loc[-1]) in f.validation_alias.choices:
            return name
    return None


def _suggest(model: type[BaseModel] | None, loc: tuple[int | str, ...]) -> str:
    """' (did you mean X?)' for a misspelt field at ``loc``, or ''."""
    model = _model_at(model, loc)
    if model is None or not loc:
        return ""
    if len(loc) == 1 and model.__name__ == "Config":  # Config(epsilon=2): the field lives in a section
        fields_of = {name: getattr(model.model_fields[name].annotation, "model_fields", {}) for name in SECTION_USERS}
        sections = [name for name, fields in fields_of.items() if str(loc[-1]) in fields]
        if len(sections) == 1:
            return f" (did you mean {sections[0]}.{loc[-1]}? e.g. {sections[0]}={{'{loc[-1]}': ...}})"
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read a YAML config (or the defaults) and apply dotted overrides like {'privacy.epsilon': 2}."""
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            what = "is a folder, not a file" if p.is_dir() else "does not exist"
            raise ConfigError(f"config file {p} {what}; create one with `dpsynth init {p}`")
        try:
            loaded = load_yaml(p.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config file {p} is not UTF-8 text (byte {exc.start}); save it as UTF-8 YAML") from None
        except NumberOverflowError as exc:
            raise ConfigError(f"config file {p}: {_mark_text(exc)}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {p} is not valid YAML: {_yaml_problem(exc)}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping of fields, not {type(loaded).__name__}")
        raw = loaded
    for key, value in (overrides or {}).items():
        _set_dotted(raw, key, value)
    return Config.model_validate(raw)  # raises a one-line ConfigError


def _mark_text(exc: yaml.MarkedYAMLError) -> str:
    """'line L, column C: PROBLEM' on one line."""
    mark = exc.problem_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return " ".join(f"{where}{exc.problem}".split())


def _yaml_problem(exc: Exception) -> str:
    """'PROBLEM at line L, column C; fix the syntax' from a YAML error, on one line."""
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or type(exc).__name__
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return " ".join(f"{problem}{where}; fix the syntax or start again from `dpsynth init`".split())


def _set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
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
    for name, f in (model.model_fields.items() if model is not None else ()):
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
