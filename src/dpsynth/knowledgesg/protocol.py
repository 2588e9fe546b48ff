"""The wire format shared by the KnowledgeSG client and server (Wang et al., EMNLP 2024).

Everything here is public: a job spec holds generation parameters and public names (domain, task,
control code), never private text.  The only other thing a client sends is the DP LoRA adapter.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

API = "/v1"
CHECKSUM_HEADER = "X-Content-SHA256"
ADAPTER_FILE = "adapter_model.safetensors"

JobState = Literal["queued", "running", "done", "failed"]

# How one instruction/response pair is written as one training text.  The client trains on it and the
# server parses the instruction back out of the DP model's samples, so both sides use these two functions.
_Q, _A = "Question:", "Answer:"


def format_record(instruction: str, response: str) -> str:
    return f"{_Q} {' '.join(instruction.split())}\n{_A} {response.strip()}"


_PARSE = re.compile(rf"^\s*(?:{_Q})?\s*(.+?)\s*(?:\n\s*{_A}|$)", re.S)


def parse_instruction(sample: str) -> str | None:
    """The instruction part of a sampled record, or None when the sample has none usable."""
    m = _PARSE.match(sample)
    if not m:
        return None
    text = " ".join(m.group(1).split())
    text = text.split(f" {_A}", 1)[0].strip()
    return text if len(text) >= 10 else None


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoraSpec(_Wire):
    r: int = Field(ge=1, le=256)
    alpha: int = Field(ge=1, le=4096)
    target_modules: list[str] = Field(min_length=1, max_length=16)


class PromptSpec(_Wire):
    """How the client laid out its training records (public): the server samples with the same prefix."""

    prompt_format: Literal["auto", "chat", "plain"] = "auto"
    control_code: str = Field("label: {label} | text: ", max_length=500)
    instruction: str = Field("Write a {label} {task}.", max_length=500)
    label: str = Field(min_length=1, max_length=100)
    task: str = Field(min_length=1, max_length=100)


class JobSpec(_Wire):
    """POST /v1/jobs: what the server should do with an uploaded adapter."""

    adapter_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    base_model: str = Field(min_length=1, max_length=300)
    lora: LoraSpec
    prompt: PromptSpec
    domain: str = Field(min_length=1, max_length=100)
    n_samples: int = Field(ge=1, le=100_000)
    oversample: float = Field(2.0, ge=1.0, le=20.0)
    filter: bool = True
    max_new_tokens: int = Field(128, ge=8, le=2048)
    whole_sentences: bool = True  # an instruction cut by max_new_tokens ends with its last full sentence
    answer_max_tokens: int = Field(256, ge=8, le=4096)
    temperature: float = Field(1.0, ge=0, le=5)
    top_p: float = Field(0.95, gt=0, le=1)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)  # what every backend accepts (torch: below 2**64)
    idempotency_key: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_-]{8,64}$", description="A retried create returns the first job."
    )


class AdapterReceipt(_Wire):
    adapter_id: str
    sha256: str
    bytes: int
    tensors: int
    lora_r: int


class JobStatus(_Wire):
    job_id: str
    state: JobState
    stage: str = ""
    progress: dict[str, int] = Field(default_factory=dict)
    error: str | None = None
    created: float
    updated: float


class ServerInfo(_Wire):
    base_model: str
    professional: str
    max_adapter_bytes: int
    max_samples: int
    ready: bool
