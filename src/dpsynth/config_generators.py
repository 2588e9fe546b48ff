"""The config's generators: one prompted model each (backend, model, prompt format, how it is reached).

Also the embedded generator set (three small local models of different families) and the names it is
known by, so the method presets and the label judge refer to them in one place.  Re-exported by
``dpsynth.config``.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from dpsynth.config_base import StrictModel, device_name
from dpsynth.generators.models import QWEN25_CODER, canonical_model

Backend = Literal["llamacpp", "openai", "transformers"]


PromptFormat = Literal["chat", "completion"]


# llama.cpp's DRY ("don't repeat yourself") sampler penalises continuing any token sequence already in the
# context, the prompt included.  Small models shown L good and L poor examples otherwise copy them: on the
# default demo's round-1 prompts it raised accepted outputs from 6/16 to 15/16 (Gemma-3-270M) and from
# 2/16 to 12/16 (Qwen2.5-Coder-0.5B): bench/diag_copying.py, bench/results/copying.json.
DRY_SAMPLER: dict[str, Any] = {"dry_multiplier": 0.8, "dry_allowed_length": 3, "dry_penalty_last_n": 4096}


class GeneratorConfig(StrictModel):
    """One prompted generator: a backend, a model and a prompt format."""

    name: str = Field(description="Short unique name used in outputs and reports.")
    backend: Backend = Field("llamacpp", description="llamacpp (local GGUF), openai (HTTP), transformers (GPU).")
    model: str = Field(
        description=(
            "llamacpp: GGUF path or an embedded name (smollm2-135m-instruct, gemma3-270m, "
            "qwen2.5-coder-0.5b-instruct, whose former name qwen2.5-0.5b-instruct is accepted, and the larger "
            "qwen2.5-coder-1.5b-instruct of dpsynth[embedded-large]); openai: model id "
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
    timeout_s: float = Field(
        120.0, gt=0, le=86_400, allow_inf_nan=False, description="openai backend: per-request timeout in seconds."
    )
    max_retries: int = Field(
        4, ge=0, le=20, description="openai backend: retries on timeouts, 429 and 5xx, with backoff."
    )
    # transformers
    device: str = Field("auto", description="transformers backend: auto, cpu, cuda, cuda:N or mps.")
    batch_size: int = Field(16, ge=1, description="transformers backend: prompts per forward batch.")

    _device = field_validator("device")(device_name)

    @field_validator("backend", mode="before")
    @classmethod
    def _server_backend(cls, v: Any) -> Any:
        """A serving engine named as the backend: they all speak the OpenAI HTTP API, which ``openai`` is."""
        if isinstance(v, str) and v.strip().lower() in ("vllm", "sglang", "tgi", "ollama", "lmstudio", "llama-server"):
            raise ValueError(
                f"{v!r} is served over the OpenAI-compatible HTTP API: use backend openai with base_url set to "
                "the server (e.g. http://127.0.0.1:8000/v1)"
            )
        return v

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        """The name of a variable, never the key: a key here would be written to config.yaml, which is shared."""
        if v is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v):
            raise ValueError(
                "must name an environment variable (e.g. OPENAI_API_KEY) that holds the key, not the key "
                "itself; export the key under such a name (the value given is not shown)"
            )
        return v

    @field_validator("base_url")
    @classmethod
    def _plain_url(cls, v: str | None) -> str | None:
        """The server's plain URL: a user name, password or key in it would be written to config.yaml and
        run.log and printed in every HTTP error (the key belongs in an environment variable named by
        ``api_key_env``), and a ``?query`` would end up before the endpoint's path (``.../v1?x/chat/...``)."""
        if v is None:
            return v
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(v)
            secret = parts.username is not None or parts.password is not None
        except ValueError as exc:
            raise ValueError(f"not a URL ({exc}); e.g. http://127.0.0.1:8000/v1") from None
        if secret:
            raise ValueError(
                "holds a credential (a user name or password); it would be written to config.yaml and shown in "
                "errors. Give the server's plain URL and export the key in an environment variable named by "
                "api_key_env (the value given is not shown)"
            )
        if parts.query or parts.fragment or v.rstrip().endswith(("?", "#")):
            raise ValueError(
                "has a ?query or #fragment, which would come before the endpoint's path and, if it holds a key, "
                "be written to config.yaml; give the server's plain URL (e.g. http://127.0.0.1:8000/v1) and a "
                "key through api_key_env (the value given is not shown)"
            )
        return v

    @model_validator(mode="after")
    def _server_settings_need_the_openai_backend(self) -> GeneratorConfig:
        """base_url or api_key_env on another backend: the user meant an HTTP server and left out ``backend``
        (the model id would otherwise be looked up as a local file, and the error would not say why)."""
        given = [f for f in ("base_url", "api_key_env") if getattr(self, f) is not None]
        if given and self.backend != "openai":
            raise ValueError(
                f"{' and '.join(given)} {'is' if len(given) == 1 else 'are'} read by the openai backend only, and "
                f"this generator's backend is {self.backend}; add backend: openai to reach a server"
            )
        return self

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


# Generator settings about how samples are fetched rather than what is asked for (threads, server address,
# time limits, device): a resumed run may change them (a backend that timed out resumes with a longer
# timeout_s, a moved vLLM server with its new base_url, which must serve the same model).  They are not
# wholly neutral: on the transformers backend device and batch_size can change numerics and a seeded run's
# draws.  Either way the samples are post-processing of the released votes: no privacy is at stake.
# n_parallel and n_ctx are not among them: they set the context each llama.cpp slot has, which can cut a prompt.
GENERATOR_TRANSPORT = (
    "n_threads", "base_url", "api_key_env", "concurrency", "timeout_s", "max_retries", "device", "batch_size"
)  # fmt: skip


# The settings only one backend reads (the rest, name to extra_body, are every backend's)
BACKEND_FIELDS: dict[str, frozenset[str]] = {
    "llamacpp": frozenset({"n_parallel", "n_ctx", "n_threads"}),
    "openai": frozenset({"base_url", "api_key_env", "concurrency", "timeout_s", "max_retries"}),
    "transformers": frozenset({"device", "batch_size"}),
}


def backend_reads(backend: str, field: str) -> bool:
    """Whether a generator of ``backend`` reads ``field`` (a field no backend claims, every backend reads)."""
    only = [b for b, fields in BACKEND_FIELDS.items() if field in fields]
    return not only or backend in only


QWEN_CODER_GENERATOR = "qwen2.5-coder-0.5b"  # the embedded Qwen2.5-Coder-0.5B-Instruct's generator name


EMBEDDED_JUDGE = QWEN_CODER_GENERATOR  # the label judge of the embedded generator set (WaspConfig.label_judge)


def is_embedded_judge(g: GeneratorConfig) -> bool:
    """The embedded judge's model, run the way the judge runs it (llama.cpp, chat), under any name."""
    return g.backend == "llamacpp" and g.prompt_format == "chat" and g.model == QWEN25_CODER


# Former names of the embedded generators.  A run's config.yaml keeps the names it started with (they key its
# journal and rounds.json), so only a reference to a generator that is not in the list is translated:
# ``wasp.label_judge: qwen2.5-0.5b`` with the current default generators means qwen2.5-coder-0.5b.
GENERATOR_ALIASES: dict[str, str] = {"qwen2.5-0.5b": QWEN_CODER_GENERATOR}


def default_generators() -> list[GeneratorConfig]:
    """Three local generators of different families (WASP needs diversity, docs/wasp.md)."""
    return [
        GeneratorConfig(name="smollm2-135m", model="smollm2-135m-instruct", prompt_format="chat"),
        GeneratorConfig(name="gemma3-270m", model="gemma3-270m", prompt_format="completion"),
        GeneratorConfig(name=QWEN_CODER_GENERATOR, model=QWEN25_CODER, prompt_format="chat"),
    ]


def generator_named(name: str, generators: list[GeneratorConfig]) -> GeneratorConfig | None:
    """The generator called ``name``, or by a former name of it (``GENERATOR_ALIASES``), or None."""
    by_name = {g.name: g for g in generators}
    return by_name.get(name) or by_name.get(GENERATOR_ALIASES.get(name, ""))
