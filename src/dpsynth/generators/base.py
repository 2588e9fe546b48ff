"""The one protocol every generator backend implements.

WASP only ever *prompts* generators, so the protocol is small: a batch of
requests in, a batch of completions out.  Backends are free to run requests
concurrently (llama.cpp slots, HTTP concurrency); they must return results in
request order and never raise for a single bad completion: an empty text is
returned instead and the pipeline's clean-up step drops it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt.  Exactly one of ``messages`` (chat) or ``prompt`` (completion) is set."""

    messages: tuple[ChatMessage, ...] | None = None
    prompt: str | None = None
    max_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 0.9
    stop: tuple[str, ...] = ()
    seed: int | None = None
    # > 0: also return the k most likely first tokens with their log-probabilities (chat requests only;
    # llama.cpp, vLLM and OpenAI support it).  The label judge reads a label's probability from them.
    top_logprobs: int = 0
    # completions wanted from this one prompt (OpenAI's ``n``; llama.cpp, vLLM and OpenAI support it): the
    # prompt is prefilled once for all of them.  A backend that ignores it returns one.
    n: int = 1

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError("n must be >= 1")
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("GenerationRequest needs exactly one of messages or prompt")
        if self.top_logprobs and self.messages is None:
            raise ValueError("top_logprobs is supported for chat requests only")

    @property
    def is_chat(self) -> bool:
        return self.messages is not None


# Errors that mean the model answered without usable text, not that the request failed
EMPTY_COMPLETION = "empty completion"
FILTERED = "stopped by the server's content filter"


@dataclass(frozen=True)
class Completion:
    text: str
    completion_tokens: int = 0
    prompt_tokens: int = 0
    error: str | None = None  # set when the backend gave up on this request
    # llama.cpp's own timings (0 where a backend does not report them): where a request's time went
    cached_tokens: int = 0  # prompt tokens reused from the slot's KV cache (no prefill needed)
    # the first generated token's alternatives as (token, logprob), when the request asked for them
    top_logprobs: tuple[tuple[str, float], ...] = ()
    # the other completions of a request with n > 1 (``text`` is the first)
    extra_texts: tuple[str, ...] = ()
    # per text of ``texts``: True if generation stopped at max_tokens (mid-text), False if the model ended
    # it; empty where a backend does not say.  The clean-up cuts only truncated texts to whole sentences.
    truncated: tuple[bool, ...] = ()

    @property
    def texts(self) -> tuple[str, ...]:
        """Every completion of the request: ``text`` first, then ``extra_texts``."""
        return (self.text, *self.extra_texts)

    @property
    def failed(self) -> bool:
        """The request itself failed (connection, HTTP status, timeout, a backend exception): no answer came
        back.  An answer without text (``EMPTY_COMPLETION``, a content filter's stop) is not a failure: it is
        screened like any other output."""
        return self.error is not None and self.error not in (EMPTY_COMPLETION, FILTERED)

    def was_truncated(self, i: int) -> bool | None:
        """Whether ``texts[i]`` stopped at the token limit; None when the backend did not say."""
        return self.truncated[i] if i < len(self.truncated) else None

    prompt_ms: float = 0.0  # prefill
    predicted_ms: float = 0.0  # decode


ProgressCallback = Callable[[Completion], None]


@runtime_checkable
class Generator(Protocol):
    """A prompted text generator (local model, HTTP endpoint, or a fake in tests)."""

    name: str

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        on_completion: ProgressCallback | None = None,
    ) -> list[Completion]:
        """Return one completion per request, in order; call ``on_completion`` as each finishes."""
        ...

    def close(self) -> None:
        """Release model memory, threads and sockets."""
        ...


@dataclass
class TokenCounter:
    """Accumulates tokens and wall time for progress display and benchmarks."""

    completion_tokens: int = 0  # over every text of a request (n > 1 included)
    prompt_tokens: int = 0
    completions: int = 0  # texts returned (a request with n > 1 gives several), or 1 per failed request
    failures: int = 0  # failed requests
    errors: list[str] = field(default_factory=list)
    cached_tokens: int = 0
    prompt_ms: float = 0.0
    predicted_ms: float = 0.0

    def add(self, c: Completion) -> None:
        self.completion_tokens += c.completion_tokens
        self.prompt_tokens += c.prompt_tokens
        self.cached_tokens += c.cached_tokens
        self.prompt_ms += c.prompt_ms
        self.predicted_ms += c.predicted_ms
        self.completions += len(c.texts)
        if c.error:
            self.failures += 1
            if len(self.errors) < 5:
                self.errors.append(c.error)

    def all_failed(self, name: str) -> str | None:
        """The one-line error for a generator whose every request in a round failed, else None."""
        if not self.completions or self.failures != self.completions:
            return None
        return f"generators[{name}]: every request failed ({self.errors[:1]}); check the backend" + timeout_hint(
            name, self.errors
        )


def timeout_hint(name: str, errors: Sequence[str | None]) -> str:
    """For errors that are timeouts: the flag that lengthens the limit, which a resumed run may change
    (config.GENERATOR_TRANSPORT), so that a slow backend does not cost the run."""
    # a reply still arriving at the limit is a server that trickles: a longer limit only lengthens the wait
    if not any(e and "timed out" in e and "still arriving" not in e for e in errors):
        return ""
    return (
        f" (or give it longer: --generators.{name}.timeout-s SECONDS, or --generators.timeout-s SECONDS for "
        "every generator, which a resumed run may change)"
    )
