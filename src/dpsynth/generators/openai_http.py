"""Any OpenAI-compatible server over HTTP: vLLM, SGLang, llama.cpp's server, hosted APIs.

Chat requests go to ``{base_url}/chat/completions``, completion requests to
``{base_url}/completions``.  Up to ``concurrency`` requests are in flight (daemon
threads sharing one ``httpx.Client``, generators/pool.py).  Timeouts, connection errors, 429 and
5xx are retried with exponential backoff and jitter, honouring ``Retry-After``,
up to ``max_retries`` times and within a bounded total time; other 4xx are not
retried.  A request that still fails becomes a ``Completion`` with ``error`` set.  A server that answered
before and then refuses connections (restarting) is waited for, within each request's time limit, and a
batch whose every request failed stops the run only as ``pool.AnswerStreak`` says.

The API key is read from the environment variable named by ``api_key_env`` and
is sent only as ``Authorization: Bearer``; it is kept out of reprs, logs and
error messages (any echo of it by a server is masked).
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import random
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import httpx

from dpsynth.config import GeneratorConfig
from dpsynth.errors import GeneratorError
from dpsynth.generators.base import (
    EMPTY_COMPLETION,
    FILTERED,
    Completion,
    GenerationRequest,
    ProgressCallback,
)
from dpsynth.generators.pool import AnswerStreak, RequestPool, run_batch

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


def request_body(req: GenerationRequest, model: str | None = None) -> dict[str, Any]:
    """The OpenAI request body for one ``GenerationRequest``."""
    body: dict[str, Any] = {}
    if model:
        body["model"] = model
    if req.messages is not None:
        body["messages"] = [{"role": m.role, "content": m.content} for m in req.messages]
    else:
        body["prompt"] = req.prompt
    body["max_tokens"] = req.max_tokens
    body["temperature"] = req.temperature
    body["top_p"] = req.top_p
    if req.stop:
        body["stop"] = list(req.stop)
    if req.seed is not None:
        body["seed"] = req.seed
    if req.n > 1:
        body["n"] = req.n
    if req.top_logprobs:
        body["logprobs"] = True
        body["top_logprobs"] = req.top_logprobs
    return body


def parse_response(data: Any, is_chat: bool, n: int = 1) -> Completion:
    """Turn an OpenAI-shaped response into a ``Completion``; junk gives ``error`` set, never raises.

    Only the first ``n`` choices (the request's ``n``) are read: a server that returns more would otherwise
    hand the caller samples it did not ask for, which it counts as attempts and throws away as surplus."""
    if not isinstance(data, dict):
        return Completion(text="", error=f"unexpected response of type {type(data).__name__}")
    err = data.get("error")
    if err:  # some servers send "error": null beside a good answer
        if isinstance(err, dict):
            msg = str(err.get("message") or err.get("type") or err)
            code = err.get("code")
            return Completion(text="", error=(f"{code}: {msg}" if code else msg)[:300])
        return Completion(text="", error=str(err)[:300])
    if "choices" not in data:
        return Completion(text="", error=f'response has no "choices" (keys: {", ".join(map(str, data))[:200]})')
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return Completion(text="", error="response has no choices")
    choices = choices[: max(n, 1)]
    # the first choice with text leads (an empty first choice of n must not throw the others away)
    usable = [c for c in choices if isinstance(c, dict) and _choice_text(c, is_chat).strip()]
    choice = usable[0] if usable else choices[0]
    text = _choice_text(choice, is_chat)
    others = [(_choice_text(c, is_chat), _stopped_by_length(c)) for c in usable[1:]]
    extra = tuple(t for t, _ in others)
    known = [_stopped_by_length(choice), *(cut for _, cut in others)]
    truncated = tuple(bool(k) for k in known) if all(k is not None for k in known) else ()
    usage = data.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    ct, pt = _int(usage.get("completion_tokens")), _int(usage.get("prompt_tokens"))
    timings = data.get("timings")  # llama.cpp (and its server) report where the time went
    timings = timings if isinstance(timings, dict) else {}
    ok = bool(text.strip())
    filtered = choice.get("finish_reason") == "content_filter"
    return Completion(
        text=text if ok else "",
        extra_texts=extra,
        truncated=truncated,
        completion_tokens=ct,
        prompt_tokens=pt,
        error=None if ok else (FILTERED if filtered else EMPTY_COMPLETION),
        cached_tokens=_int(timings.get("cache_n")),
        prompt_ms=_float(timings.get("prompt_ms")),
        predicted_ms=_float(timings.get("predicted_ms")),
        top_logprobs=_first_top_logprobs(choice),
    )


def _stopped_by_length(choice: dict[str, Any]) -> bool | None:
    """OpenAI's ``finish_reason``: "length" is the token limit, "content_filter" a text the server cut off
    (both end mid-sentence); None when a server does not send it."""
    reason = choice.get("finish_reason")
    return reason in ("length", "content_filter") if isinstance(reason, str) else None


def _choice_text(choice: dict[str, Any], is_chat: bool) -> str:
    text: Any = None
    if is_chat:
        message = choice.get("message")
        text = message.get("content") if isinstance(message, dict) else None
    if text is None:
        text = choice.get("text")
    return text if isinstance(text, str) else ""


def _first_top_logprobs(choice: dict[str, Any]) -> tuple[tuple[str, float], ...]:
    """The first token's alternatives from an OpenAI-style chat choice; () when absent or malformed."""
    lp = choice.get("logprobs")
    content = lp.get("content") if isinstance(lp, dict) else None
    if not isinstance(content, list) or not content or not isinstance(content[0], dict):
        return ()
    out = []
    for alt in content[0].get("top_logprobs") or []:
        if isinstance(alt, dict) and isinstance(alt.get("token"), str):
            x = _float_any(alt.get("logprob"))
            if x is not None:
                out.append((alt["token"], x))
    return tuple(out)


def _float_any(v: Any) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if x == x and x != float("inf") else None


def _float(v: Any) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return 0.0
    return x if x >= 0 and x == x and x != float("inf") else 0.0


def _int(v: Any) -> int:
    try:
        return max(0, int(v))
    except (TypeError, ValueError, OverflowError):  # OverflowError: Infinity, which Python's JSON reads
        return 0


def retry_after_seconds(value: str | None) -> float | None:
    """Parse a ``Retry-After`` header: delta-seconds (int or float) or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def check_settings(cfg: GeneratorConfig) -> str | None:
    """What the backend needs before any request (a URL, the API key's variable set), checked without
    contacting the server, so that a run (and ``--check``) refuses it before any model loads.  Returns the key."""
    if not cfg.base_url:
        raise GeneratorError(
            f"generators[{cfg.name}].base_url: the openai backend needs the server's URL, e.g. http://127.0.0.1:8000/v1"
        )
    if not cfg.base_url.startswith(("http://", "https://")):
        raise GeneratorError(f"generators[{cfg.name}].base_url: {cfg.base_url!r} must start with http:// or https://")
    if not cfg.api_key_env:
        return None
    key = os.environ.get(cfg.api_key_env, "").strip()
    if not key:
        raise GeneratorError(
            f"generators[{cfg.name}].api_key_env: the environment variable {cfg.api_key_env} "
            "is not set or empty; export it or remove api_key_env"
        )
    if not all(33 <= ord(c) <= 126 for c in key):  # else the HTTP library's error quotes the key, escaped
        raise GeneratorError(
            f"generators[{cfg.name}].api_key_env: ${cfg.api_key_env} holds a character an HTTP header cannot "
            "carry (a line break, a space, a letter outside ASCII); check the variable's value"
        )
    return key


PROBE_S = 10.0  # the whole probe (connect, headers, body), whatever the server does
OUTAGE_POLL_S = 5.0  # the longest wait between two tries of a server that refuses connections
CUT_TRIES = 3  # tries, beyond max_retries, of a request whose connection broke, once the server has answered


def probe_server(cfg: GeneratorConfig, key: str | None) -> None:
    """Ask an openai entry's server for its models (``GET base_url/models``) before a run starts, so that a
    server that is down, a wrong port or a refused key fails in seconds, before anything is read or written.

    Refuses only what would fail every request: no answer within ``PROBE_S`` and HTTP 401/403.  Servers that
    do not list models (404, another status, a body that is not the OpenAI shape) pass; a model the list does
    not hold is a console note, not an error (llama.cpp serves its one model under any name; vLLM and SGLang
    refuse other names).  The request runs in a worker thread cut at ``PROBE_S``: httpx's timeouts bound
    each read, and a server that sends one byte at a time could otherwise hold it for hours."""
    base = str(cfg.base_url).rstrip("/")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    got: list[httpx.Response | Exception] = []

    def ask() -> None:
        try:
            got.append(httpx.get(f"{base}/models", headers=headers, timeout=PROBE_S))
        except Exception as exc:  # noqa: BLE001 - any failure to get an answer is told the same way below
            got.append(exc)

    worker = threading.Thread(target=ask, name=f"probe-{cfg.name}", daemon=True)
    worker.start()
    worker.join(PROBE_S + 0.5)
    where = f"generators[{cfg.name}].base_url: {base}"
    if not got or isinstance(got[0], Exception):
        why = f"{type(got[0]).__name__}" if got else f"no answer within {PROBE_S:g} s"
        raise GeneratorError(
            f"{where} does not answer ({why}); start the server (e.g. `vllm serve MODEL --port 8000`, then "
            "base_url http://127.0.0.1:8000/v1) or fix base_url"
        )
    resp = got[0]
    if resp.status_code in (401, 403):
        fix = f"check ${cfg.api_key_env}" if cfg.api_key_env else "set api_key_env to the variable holding the key"
        raise GeneratorError(f"{where} refused the request (HTTP {resp.status_code}): {fix}")
    if resp.status_code == 404 and not base.endswith("/v1"):  # a common slip: vLLM, SGLang, llama.cpp serve /v1
        _note(
            f"generators[{cfg.name}].base_url: {base} has no /models (HTTP 404); OpenAI-compatible servers (vLLM, "
            f"SGLang, llama.cpp) usually need base_url {base}/v1"
        )
    try:
        listed = [str(m["id"]) for m in resp.json()["data"]] if resp.status_code == 200 else []
    except (ValueError, KeyError, TypeError):
        listed = []
    if listed and cfg.model not in listed:
        shown = ", ".join(listed[:5]) + (f" and {len(listed) - 5} more" if len(listed) > 5 else "")
        _note(
            f"generators[{cfg.name}].model: {cfg.model!r} is not among the models {base} lists ({shown}); "
            "vLLM and SGLang refuse other names, llama.cpp serves its one model under any name"
        )


def _note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr, flush=True)


class OpenAIHttpGenerator:
    """Prompts an OpenAI-compatible endpoint; ``base_url`` ends with ``/v1`` for most servers."""

    def __init__(
        self,
        cfg: GeneratorConfig,
        *,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        max_total_s: float | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self._key = check_settings(cfg)
        self.base_url = str(cfg.base_url).rstrip("/")
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        # Bound on the wall time of one request, retries and waits included.
        waits = backoff_max_s if cfg.max_retries else 0.0  # no retry, no wait between tries
        self.max_total_s = max_total_s if max_total_s is not None else cfg.timeout_s * (cfg.max_retries + 1) + waits
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        limits = httpx.Limits(max_connections=cfg.concurrency, max_keepalive_connections=cfg.concurrency)
        self._client = httpx.Client(
            headers=headers, timeout=httpx.Timeout(cfg.timeout_s), limits=limits, transport=transport
        )
        self._pool = RequestPool(cfg.concurrency, f"http-{cfg.name}")
        self._closed = False
        self._lock = threading.Lock()
        self._streak = AnswerStreak()
        self._down_since: float | None = None  # when a server that had answered began refusing connections
        self._last_answer = 0.0

    def __repr__(self) -> str:
        auth = f", api_key_env={self.cfg.api_key_env!r}" if self.cfg.api_key_env else ""
        return f"OpenAIHttpGenerator(name={self.name!r}, base_url={self.base_url!r}, model={self.cfg.model!r}{auth})"

    def _mask(self, text: str) -> str:
        if self._key:
            for form in {self._key, repr(self._key)[1:-1]}:  # as written, and as an error message escapes it
                text = text.replace(form, "***")
        return text

    def _backoff(self, attempt: int) -> float:
        cap = min(self.backoff_max_s, self.backoff_base_s * (2 ** min(attempt, 30)))
        return cap * (0.5 + random.random() / 2)  # exponential with jitter in [cap/2, cap]

    def complete_one(self, req: GenerationRequest) -> Completion:
        """One request with retries; never raises for a server problem."""
        url = f"{self.base_url}/chat/completions" if req.is_chat else f"{self.base_url}/completions"
        body = {**request_body(req, self.cfg.model), **self.cfg.sampler_fields()}
        deadline = time.monotonic() + self.max_total_s
        error = "not sent"
        retries = 0  # the retries max_retries counts; waiting for a restarting server (below) is not one
        polls, first, cuts = 0, 0.0, 0
        while True:
            if self._closed:
                return Completion(text="", error="generator closed")
            wait_s: float | None = None
            refused = again = False
            sent = time.monotonic()
            try:
                resp = self._post(url, body, deadline, _answer_limit(req))
                if self._closed:  # closed while it was in flight: no result after close()
                    return Completion(text="", error="generator closed")
            except httpx.TimeoutException as exc:
                # httpx's limit is per read: a reply arriving a little at a time ends only at the time limit
                arriving = " (the reply was still arriving)" if isinstance(exc, _StillArriving) else ""
                error = f"timed out after {time.monotonic() - sent:.3g} s{arriving}"
            except _TooLarge as exc:
                return Completion(
                    text="",
                    error=f"a reply larger than {exc.limit:,} bytes from {url} (does the server ignore max_tokens?)",
                )
            except httpx.TransportError as exc:
                error = self._mask(f"connection error from {url}: {type(exc).__name__}: {exc}")[:300]
                if isinstance(exc, httpx.ConnectError):
                    error += "; is the server still running at base_url?"
                    refused = self._refused(sent)
                elif cuts < CUT_TRIES and self._streak.answered:
                    # the connection broke mid-request (a server stopping cuts those in flight and resets those
                    # waiting to be accepted; an idle kept-alive connection the server closed): tried again,
                    # not counted, until a server that is down refuses, and the wait above begins
                    cuts += 1
                    again = True
            else:
                self._answered()
                status = resp.status_code
                if status == 200:
                    c = self._parsed(resp, url, req)
                    if not _retryable_error_body(resp):
                        return c
                    status, error = _body_status(resp), f"{c.error} (HTTP 200 carrying an error) from {url}"
                else:
                    detail = self._mask(_error_detail(resp))
                    error = f"HTTP {status} from {url}" + (f": {detail}" if detail else "")
                if 300 <= status < 400:  # not followed: the API key would go wherever it points
                    where = resp.headers.get("location", "")
                    error += f"; it points to {where[:200]}: set base_url to the server's own URL" if where else ""
                if status in (401, 403):
                    key = self.cfg.api_key_env
                    error += (
                        f"; check the key in ${key}" if key else "; no key was sent: name its variable in api_key_env"
                    )
                if status not in RETRY_STATUS and not 500 <= status < 600:
                    return Completion(text="", error=error)
                if status == 429:
                    error += f"; the server limits requests: lower --generators.{self.name}.concurrency"
                wait_s = retry_after_seconds(resp.headers.get("Retry-After"))
            if refused:  # a server that answered before and now refuses: restarting, most likely; poll it
                first = first if polls else sent
                delay = min(self._backoff(polls), OUTAGE_POLL_S)
                polls += 1
            elif again:
                delay = self._backoff(0)
            elif retries == self.cfg.max_retries:
                break
            else:
                delay = wait_s if wait_s is not None else self._backoff(retries)
                retries += 1
            if time.monotonic() + delay >= deadline:
                error += (
                    f"; giving up: retrying after {_seconds(delay)} would pass the request's time limit of "
                    f"{_seconds(self.max_total_s)} (timeout_s x (max_retries + 1), and waits)"
                )
                break
            log.debug("%s: retry in %.2fs after %s", self.name, delay, error)
            time.sleep(delay)
        if self._closed:  # the error came from close() ending the connection, not from the server
            return Completion(text="", error="generator closed")
        n = retries
        waited = f"; waited {_seconds(time.monotonic() - first)} while the server refused connections" if polls else ""
        return Completion(text="", error=f"{error} (after {n} retr{'y' if n == 1 else 'ies'}{waited})")

    def _parsed(self, resp: httpx.Response, url: str, req: GenerationRequest) -> Completion:
        try:
            data = resp.json()
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            return Completion(text="", error=f"HTTP 200 with a body that is not JSON from {url}")
        c = parse_response(data, req.is_chat, req.n)
        if c.error:
            c = Completion(
                text="", completion_tokens=c.completion_tokens, prompt_tokens=c.prompt_tokens, error=self._mask(c.error)
            )
        return c

    def _refused(self, sent: float) -> bool:
        """A refused connection: whether to wait for the server.  Only a server that answered this generator
        before, and for at most ``max_total_s`` from the first refusal on (every request's own time limit
        still holds): a vLLM or SGLang server restarting mid-run takes minutes to load its model, which the
        retries' backoff (seconds) would not wait out; a server that never answered is a wrong setting."""
        now = time.monotonic()
        with self._lock:
            if not self._streak.answered:
                return False
            if self._down_since is None and sent < self._last_answer:
                return True  # tried before another request's answer: the server is back already; try again
            if self._down_since is None:
                self._down_since = now
                log.warning(
                    "generators[%s]: the server at %s refuses connections; waiting up to %s for it to come back "
                    "(Ctrl-C stops the run, --resume continues it)",
                    self.name,
                    self.base_url,
                    _seconds(self.max_total_s),
                )
            return now - self._down_since < self.max_total_s

    def _answered(self) -> None:
        """The server answered (any status): an outage, if any, is over."""
        with self._lock:
            self._last_answer = time.monotonic()
            if self._down_since is not None:
                gone = time.monotonic() - self._down_since
                log.warning("generators[%s]: the server answers again, after %s", self.name, _seconds(gone))
                self._down_since = None

    def _post(self, url: str, body: dict[str, Any], deadline: float, limit: int) -> httpx.Response:
        """One POST whose whole reply must arrive by ``deadline`` (each read has ``timeout_s``, which a server
        trickling a byte at a time would renew for ever) and hold at most ``limit`` bytes once decoded."""
        timeout = min(self.cfg.timeout_s, max(deadline - time.monotonic(), 1e-3))
        with self._client.stream("POST", url, json=body, timeout=timeout) as resp:
            data = bytearray()
            for chunk in resp.iter_bytes():
                if time.monotonic() > deadline or self._closed:
                    # bytes before the limit and more after: a reply trickling in; else simply a late one
                    raise (_StillArriving if data else httpx.ReadTimeout)("the reply came after the time limit")
                data += chunk
                if len(data) > limit:
                    raise _TooLarge(limit)
        dropped = ("content-encoding", "content-length")  # decoded already
        headers = [(k, v) for k, v in resp.headers.multi_items() if k.lower() not in dropped]
        return httpx.Response(resp.status_code, headers=headers, content=bytes(data), request=resp.request)

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        on_completion: ProgressCallback | None = None,
    ) -> list[Completion]:
        if self._closed:
            raise GeneratorError(f"generators[{self.name}]: generate() called after close()")
        return run_batch(self.name, self._pool, self.complete_one, requests, on_completion, self._streak)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            # Close is the Ctrl-C path: it must not wait for a request in flight, which a server that never
            # answers holds for up to timeout_s.  Every unfinished request fails now ("generator closed"), and
            # the pool's daemon threads do not hold the process's exit (generators/pool.py).
            self._client.close()
            self._pool.shutdown()

    def __enter__(self) -> OpenAIHttpGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _StillArriving(httpx.ReadTimeout):
    """The reply was still coming in, a little at a time, when the request's time limit passed."""


class _TooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


def _answer_limit(req: GenerationRequest) -> int:
    """The most bytes an honest reply to ``req`` holds: 64 per token asked for (JSON-escaped text, logprobs
    beside each token), at least 1 MiB."""
    return max(1 << 20, 64 * req.max_tokens * max(req.n, 1) * (1 + req.top_logprobs))


def _seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 10 else f"{s:,.0f} s"


def _body_status(resp: httpx.Response) -> int:
    """The HTTP-like status in a 200 reply's ``{"error": {"code": ...}}``, else 200.  Gateways in front of
    several servers (OpenRouter, LiteLLM) answer 200 and put an upstream 429 or 5xx there."""
    try:
        err = resp.json().get("error")
        code = int(err.get("code") or 0) if isinstance(err, dict) else 200
    except (ValueError, TypeError, AttributeError, OverflowError):
        return 200
    return code if 100 <= code < 600 else 200


def _retryable_error_body(resp: httpx.Response) -> bool:
    code = _body_status(resp)
    return code in RETRY_STATUS or 500 <= code < 600


def _error_detail(resp: httpx.Response) -> str:
    """A short, one-line reason from an error response body."""
    try:
        data = resp.json()
    except ValueError:
        return " ".join(resp.text.split())[:200]
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            return " ".join(str(err.get("message") or err.get("detail") or err).split())[:200]
        return " ".join(str(err).split())[:200]
    return " ".join(str(data).split())[:200]
