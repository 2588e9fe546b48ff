"""The KnowledgeSG server's YAML file (``dpsynth server start --config server.yaml``): where it listens, its
models, its clients' token hashes and the limits that bound each client's memory, disk and jobs.

Its own module so that the file can be read and checked without the server's web stack.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, field_validator

from dpsynth.config import QWEN_CODER_GENERATOR, GeneratorConfig
from dpsynth.config_base import StrictModel, config_error_from_validation, load_yaml
from dpsynth.errors import ConfigError
from dpsynth.generators.models import QWEN25_CODER, canonical_model
from dpsynth.knowledgesg.jobs import CLIENT_ID_RULE, valid_client_id


class ClientEntry(StrictModel):
    token_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 (hex) of the client's token.")


def default_professional() -> GeneratorConfig:
    return GeneratorConfig(name=QWEN_CODER_GENERATOR, model=QWEN25_CODER, prompt_format="chat", n_parallel=4)


class ServerConfig(StrictModel):
    """The server's YAML file (``dpsynth server start --config server.yaml``)."""

    host: str = Field("127.0.0.1", description="Interface to listen on (loopback by default).")
    port: int = Field(8088, ge=0, le=65535, description="TCP port (0: any free port).")
    state_dir: str = Field("dpsynth-server", description="Adapters, jobs and results live here.")
    base_model: str = Field("smollm2-135m-instruct", description="The public base model clients fine-tune.")
    professional: GeneratorConfig = Field(
        default_factory=default_professional,
        description="The stronger model that filters and answers (llama.cpp GGUF or an OpenAI-compatible endpoint).",
    )
    clients: dict[str, ClientEntry] = Field(default_factory=dict, description="client id -> token hash.")
    max_adapter_mb: float = Field(64.0, gt=0, le=4096, description="Largest adapter upload accepted.")
    max_adapters_per_client: int = Field(
        8,
        ge=1,
        description="Adapters kept per client; an upload beyond it removes the client's oldest adapter that no "
        "queued or running job names (a resumed client uploads its adapter again).",
    )
    max_concurrent_uploads: int = Field(
        4,
        ge=1,
        description="Uploads received at once (each is held in memory up to max_adapter_mb until checked); one "
        "per client. Beyond it the server answers 'retry shortly' (the client retries).",
    )
    upload_timeout_s: float = Field(
        900.0,
        gt=0,
        description="An adapter upload must arrive whole within this many seconds (a trickle frees its place).",
    )
    max_samples: int = Field(5000, ge=1, description="Largest n_samples a job may ask for.")
    max_active_jobs_per_client: int = Field(4, ge=1, description="Queued + running jobs per client.")
    max_jobs_per_client: int = Field(
        50,
        ge=1,
        description="Jobs kept per client (their data and reports); a new job beyond it removes the client's "
        "oldest finished job (a client that comes back for it makes it again from its saved adapter).",
    )
    ssl_certfile: str | None = Field(None, description="TLS certificate (PEM); use TLS beyond loopback.")
    ssl_keyfile: str | None = Field(None, description="TLS private key (PEM).")
    record_requests: bool = Field(
        False, description="Audit: append every request body received to state_dir/requests.log."
    )
    shutdown_timeout_s: float = Field(
        300.0,
        gt=0,
        le=86400,
        description="On Ctrl-C/SIGTERM, how long to wait for the running job's current batch; after that the "
        "server exits without it (the job continues from its journal on the next start).",
    )

    @field_validator("base_model")
    @classmethod
    def _current_model_name(cls, v: str) -> str:
        return canonical_model(v)  # an embedded model's former name (qwen2.5-0.5b-instruct) -> its current one

    @field_validator("clients")
    @classmethod
    def _ids(cls, v: dict[str, ClientEntry]) -> dict[str, ClientEntry]:
        for cid in v:
            if not valid_client_id(cid):
                raise ValueError(f"client id {cid[:64]!r}: use {CLIENT_ID_RULE} only")
        return v


def load_server_config(path: str | Path, overrides: dict[str, Any] | None = None) -> ServerConfig:
    from pydantic import ValidationError

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such server config file (see README, KnowledgeSG)")
    try:
        raw = load_yaml(p.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: not valid YAML ({type(exc).__name__})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of fields")
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return ServerConfig.model_validate(raw)
    except ValidationError as exc:
        raise config_error_from_validation(exc, ServerConfig) from None
