"""The config sections of the methods: ``wasp`` (WASP, Aug-PE, zero-shot), ``finetune`` (dp-finetune and
KnowledgeSG's client), ``pearl`` and ``knowledgesg``.  ``dpsynth.config.Config`` holds one of each; import
them from there.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator

from dpsynth.config_base import StrictModel, device_name
from dpsynth.generators.models import canonical_model

log = logging.getLogger("dpsynth")

MAX_CHARS_PER_TOKEN = 16  # far above any tokenizer's average (about 4 characters per token in English)


class WaspConfig(StrictModel):
    """Algorithm knobs (docs/wasp.md).  Aug-PE and zero-shot are presets of these."""

    rounds: int = Field(4, ge=1, le=100, description="T: number of DP voting rounds.")
    population: int | None = Field(
        None,
        ge=2,
        description=(
            "Samples generated in the seed round and the T voting rounds; the rest of n_synthetic is generated "
            "after the last vote from its released results (post-processing: no privacy cost, and a resume of "
            "that phase needs no private data). None: all of n_synthetic within the rounds."
        ),
    )
    vote_on: Literal["all", "latest"] = Field(
        "all",
        description=(
            "Which samples each vote ranks: all (every sample made so far, WASP's setting; the aug-pe preset keeps "
            "it too) or latest (the previous round's only, as the reference Aug-PE code does). The same privacy "
            "cost either way; latest gives each sample more votes, so late votes rank as well as the first "
            "(docs/wasp.md, step 6)."
        ),
    )
    writers: bool = Field(
        False,
        description=(
            "Open every generation prompt with a writer drawn at random from a fixed public list of everyday "
            "people ('You are a retired nurse.'), so that samples vary in voice and subject. Public text only: "
            "no privacy cost (docs/wasp.md, step 7)."
        ),
    )
    q: int = Field(8, ge=1, le=64, description="Q: nearest (and farthest) neighbours voted per private sample.")
    use_far: bool = Field(True, description="Vote for the Q farthest too (contrastive bad examples).")
    contrastive: bool = Field(True, description="Prompt with good and bad examples (False: good only).")
    weighting: bool = Field(True, description="Reweight generators by votes (False: equal budgets).")
    variation: Literal["contrastive", "rephrase", "keywords"] = Field(
        "contrastive",
        description=(
            "How rounds after the first prompt: contrastive (good and poor examples), rephrase (Aug-PE: a variation "
            "of one top-voted sample), keywords (zero-shot prompts naming words typical of the top-voted samples)."
        ),
    )
    keywords_against: Literal["population", "other_classes"] = Field(
        "population",
        description=(
            "variation = keywords: how a class's words are chosen from its good pool. population: words frequent "
            "in the pool and rare in the whole voted population (TF-IDF); other_classes: words the pool uses more "
            "often than the other classes' samples (log-odds), so that the words name what separates the classes. "
            "Synthetic text only: no privacy cost (docs/wasp.md, step 7)."
        ),
    )
    top_s: int = Field(8, ge=1, description="S: size of the good and bad pools per class.")
    l_examples: int = Field(4, ge=1, description="L: examples per side in each prompt.")
    pool_spread: int = Field(
        1,
        ge=1,
        le=16,
        description=(
            "1: the good pool is the top S by votes.  K > 1: S samples spread out in embedding space among "
            "the top K x S (more varied examples across a round's prompts; no privacy cost)."
        ),
    )
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
    temperature: float = Field(1.0, ge=0, description="Sampling temperature of the generators (0: greedy).")
    top_p: float = Field(0.9, gt=0, le=1, description="Nucleus sampling: the smallest token set of this mass.")
    min_chars: int = Field(40, ge=1, description="Drop outputs shorter than this.")
    max_chars: int = Field(2000, ge=10, description="Drop (truncate-free) outputs longer than this.")
    whole_sentences: bool = Field(
        True,
        description=(
            "Cut a sample that stops mid-sentence at the token limit after its last full sentence (a sample the "
            "model ended is kept as written; one whose full sentences are shorter than min_chars is kept whole)."
        ),
    )
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
    label_judge: str | None = Field(
        None,
        description=(
            "Name of a chat generator (one of `generators`) that reads each new sample and the public label "
            "names and says which label fits; a sample judged to be another label is dropped and re-asked. "
            "Post-processing with a public model: no privacy cost. Default: the generator running the embedded "
            "qwen2.5-coder-0.5b-instruct as a chat model, where the generators hold one, else none. `null` "
            "(`--label-judge null`) runs without one."
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _removed_fields(cls, data: Any) -> Any:
        """Accept ``near_dup_threshold``, a field nothing ever read, so that the config.yaml of every earlier
        run (which lists it, as null) still loads and resumes; a value set in it is named in a warning, since
        it never dropped anything.  The screen drops exact duplicates (``wasp_screen.OutputScreen``)."""
        if isinstance(data, dict) and "near_dup_threshold" in data:
            data = dict(data)
            if data.pop("near_dup_threshold") is not None:
                log.warning("wasp.near_dup_threshold was removed (it never had an effect); it is ignored")
        return data

    @model_validator(mode="after")
    def _lengths_can_be_met(self) -> WaspConfig:
        """Refuse length limits no sample can meet: every sample would be dropped after the models loaded and
        (for the DP methods) after the first vote spent budget."""
        if self.min_chars >= self.max_chars:
            raise ValueError(
                f"min_chars ({self.min_chars}) must be below max_chars ({self.max_chars}): no sample could be kept"
            )
        if self.min_chars > MAX_CHARS_PER_TOKEN * self.max_new_tokens:
            raise ValueError(
                f"min_chars ({self.min_chars}) is more than {MAX_CHARS_PER_TOKEN} characters per token of "
                f"max_new_tokens ({self.max_new_tokens}): no sample could be that long; raise max_new_tokens or "
                "lower min_chars"
            )
        return self

    @property
    def max_tokens(self) -> int:
        """Former name of ``max_new_tokens``."""
        return self.max_new_tokens

    @max_tokens.setter
    def max_tokens(self, value: int) -> None:
        self.max_new_tokens = value


class FinetuneConfig(StrictModel):
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
    device: str = Field(default="auto", description="cpu, cuda, cuda:N, mps or auto (cuda when available).")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto",
        description="Precision of generation from the fine-tuned model (auto: bf16 autocast where the CPU/GPU "
        "supports it, else fp32), and of the non-DP training of knowledgesg's local fine-tune and the canary "
        "audit's epsilon = inf reference. DP-SGD always trains in fp32, whatever this says.",
    )
    epochs: float = Field(default=2.0, gt=0, le=1000, description="Passes over the private set (steps = epochs / q).")
    batch_size: int = Field(
        default=8, ge=1, description="Expected (Poisson) batch size B; sample rate q = B / (noisy record count)."
    )
    sample_rate: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description=(
            "Fix DP-SGD's Poisson sample rate q in advance (batch_size is then unused; steps = epochs / q). "
            "None: q = batch_size / the noisy record count, chosen after the count is released; the count and "
            "DP-SGD are then accounted apart and added, which costs DP-SGD a few percent more noise "
            "(docs/dp-finetune.md)."
        ),
    )
    physical_batch_size: int | None = Field(
        default=None, ge=1, description="Largest batch run at once (memory cap); None: no cap."
    )
    optimizer: Literal["adamw", "sgd"] = Field(
        default="adamw",
        description=(
            "Optimizer of the LoRA weights. adamw scales every coordinate's step to about the learning rate, "
            "noise included; sgd steps in proportion to the noisy gradient, so set learning_rate on its "
            "scale (0.005-0.5)."
        ),
    )
    momentum: float = Field(default=0.0, ge=0, lt=1, description="sgd only: heavy-ball momentum (0: plain SGD).")
    learning_rate: float = Field(default=2e-3, gt=0, le=10.0, description="Learning rate of the LoRA weights.")
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
        default_factory=lambda: ["q_proj", "v_proj"],
        description="Modules that get LoRA adapters (default q_proj, v_proj: the attention's query and value).",
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
    whole_sentences: bool = Field(
        default=True,
        description=(
            "Cut a sample that stops mid-sentence (at max_new_tokens) after its last full sentence, unless that "
            "leaves fewer than 40 characters (then it is kept whole)."
        ),
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

    _device = field_validator("device")(device_name)

    @field_validator("target_modules", mode="before")
    @classmethod
    def _comma_list(cls, v: Any) -> Any:
        """``--target-modules q_proj,v_proj`` (as --labels and --generators are written) is the list."""
        return [t.strip() for t in v.split(",") if t.strip()] if isinstance(v, str) else v

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
        if self.optimizer == "adamw" and self.learning_rate > 1.0:
            raise ValueError("learning_rate: at most 1 with optimizer adamw (larger steps are for sgd)")
        if self.momentum and self.optimizer != "sgd":
            raise ValueError("momentum: applies to optimizer sgd only (set finetune.optimizer: sgd)")
        return self


class PearlConfig(StrictModel):
    """PEARL (Liew et al., ICLR 2022): one-shot DP characteristic-function sketch.  Owned by methods/pearl/.

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


class KnowledgeSGConfig(StrictModel):
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
