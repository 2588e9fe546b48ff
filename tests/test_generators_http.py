"""Unit tests of the OpenAI-compatible HTTP backend against a scripted fake server (no model)."""

from __future__ import annotations

import json
import logging
import os
import random
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from dpsynth.config import GeneratorConfig, load_config
from dpsynth.errors import GeneratorError
from dpsynth.generators import build_generator
from dpsynth.generators.base import ChatMessage, Completion, GenerationRequest, TokenCounter, timeout_hint
from dpsynth.generators.openai_http import OpenAIHttpGenerator, parse_response, retry_after_seconds

from .conftest import trickle_server

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SECRET = "sk-test-SECRET-5f1d2c3b4a"
KEY_ENV = "DPSYNTH_TEST_API_KEY"


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict -> JSON; str/bytes sent raw
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


def ok_chat(text: str = "A fine film.", ct: int = 4, pt: int = 9) -> Reply:
    return Reply(
        body={
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
            "usage": {"completion_tokens": ct, "prompt_tokens": pt},
        }
    )


def ok_text(text: str = "A fine film.", ct: int = 4, pt: int = 9) -> Reply:
    return Reply(
        body={"choices": [{"index": 0, "text": text}], "usage": {"completion_tokens": ct, "prompt_tokens": pt}}
    )


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class _QuietServer(ThreadingHTTPServer):
    """A client that gives up on a kept-alive connection (the tests' timeouts do) resets it; socketserver
    printed a traceback for each into the test log.  Other errors still print."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)


class FakeServer:
    """An OpenAI-ish server on 127.0.0.1 whose replies are scripted per test."""

    def __init__(self, close_connections: bool = False) -> None:
        self.seen: list[Seen] = []
        self.script: Callable[[Seen, int], Reply] = lambda s, n: (
            ok_chat() if s.path.endswith("/chat/completions") else ok_text()
        )
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {}
                seen = Seen(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with fake._lock:
                    fake.seen.append(seen)
                    n = len(fake.seen)
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    reply = fake.script(seen, n)
                    if reply.delay:
                        time.sleep(reply.delay)
                    if isinstance(reply.body, (dict, list)):
                        data = json.dumps(reply.body).encode()
                    elif isinstance(reply.body, str):
                        data = reply.body.encode()
                    else:
                        data = reply.body or b""
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    if close_connections:  # every request opens a connection: an outage refuses them
                        self.send_header("Connection", "close")
                        self.close_connection = True
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # from the client, or a script's: drop it
                    self.close_connection = True
                finally:
                    with fake._lock:
                        fake.in_flight -= 1

            do_GET = do_POST  # GET /v1/models: the probe before a run (scripted like any request)

        self._handler = Handler
        self._listen(0)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def _listen(self, port: int) -> None:
        self.httpd = _QuietServer(("127.0.0.1", port), self._handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def outage(self, seconds: float | None) -> threading.Event:
        """Stop listening now and listen again on the same port after ``seconds`` (a server restarting; None:
        stay down), from another thread, so that a scripted reply may start it.  The event is set once the
        port is closed."""
        port = self.httpd.server_address[1]
        closed = threading.Event()

        def restart() -> None:
            self.close()
            closed.set()
            if seconds is not None:
                time.sleep(seconds)
                self._listen(port)

        threading.Thread(target=restart, daemon=True).start()
        return closed


@pytest.fixture
def server() -> Iterator[FakeServer]:
    s = FakeServer()
    yield s
    s.close()


@pytest.fixture
def key_env(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(KEY_ENV, SECRET)
    return KEY_ENV


def make(url: str | None, **kw: Any) -> OpenAIHttpGenerator:
    backoff = kw.pop("backoff_base_s", 0.01)
    max_total = kw.pop("max_total_s", None)
    cfg = GeneratorConfig(name="remote", backend="openai", model="my-model", base_url=url, **kw)
    return OpenAIHttpGenerator(cfg, backoff_base_s=backoff, max_total_s=max_total)


CHAT = GenerationRequest(
    messages=(ChatMessage("system", "You write reviews."), ChatMessage("user", "Write one.")),
    max_tokens=17,
    temperature=0.7,
    top_p=0.8,
    stop=("\n\n",),
    seed=3,
)
PROMPT = GenerationRequest(prompt='Review: "', max_tokens=12, stop=('"',))


def test_chat_and_completion_requests(server: FakeServer, key_env: str) -> None:
    server.script = lambda s, n: ok_chat("chat text") if s.path.endswith("chat/completions") else ok_text("raw")
    with make(server.url, api_key_env=key_env) as g:
        out = g.generate([CHAT, PROMPT])
    assert out == [
        Completion(text="chat text", completion_tokens=4, prompt_tokens=9),
        Completion(text="raw", completion_tokens=4, prompt_tokens=9),
    ]
    by_path = {s.path: s for s in server.seen}
    chat, comp = by_path["/v1/chat/completions"], by_path["/v1/completions"]
    assert chat.headers["authorization"] == f"Bearer {SECRET}"
    assert chat.body == {
        "model": "my-model",
        "messages": [
            {"role": "system", "content": "You write reviews."},
            {"role": "user", "content": "Write one."},
        ],
        "max_tokens": 17,
        "temperature": 0.7,
        "top_p": 0.8,
        "stop": ["\n\n"],
        "seed": 3,
    }
    assert comp.body["prompt"] == 'Review: "' and comp.body["stop"] == ['"'] and "seed" not in comp.body
    assert "messages" not in comp.body


def test_no_authorization_header_without_key(server: FakeServer) -> None:
    with make(server.url) as g:
        assert g.generate([CHAT])[0].text
    assert "authorization" not in server.seen[0].headers


def test_order_concurrency_and_callbacks(server: FakeServer) -> None:
    def script(s: Seen, n: int) -> Reply:
        r = ok_text(f"echo {s.body['prompt']}")
        r.delay = 0.15
        return r

    server.script = script
    seen: list[Completion] = []
    reqs = [GenerationRequest(prompt=f"p{i}") for i in range(12)]
    t0 = time.monotonic()
    with make(server.url, concurrency=4) as g:
        out = g.generate(reqs, on_completion=seen.append)
    elapsed = time.monotonic() - t0
    assert [c.text for c in out] == [f"echo p{i}" for i in range(12)]
    assert len(seen) == 12 and sorted(c.text for c in seen) == sorted(c.text for c in out)
    assert server.max_in_flight == 4
    assert elapsed < 12 * 0.15  # really concurrent


def test_retry_after_on_429_is_honoured(server: FakeServer) -> None:
    server.script = lambda s, n: Reply(429, {"error": "slow down"}, {"Retry-After": "1"}) if n == 1 else ok_chat()
    t0 = time.monotonic()
    with make(server.url, backoff_base_s=0.001) as g:
        c = g.complete_one(CHAT)
    assert c.text == "A fine film." and c.error is None
    assert len(server.seen) == 2
    assert time.monotonic() - t0 >= 0.95


def test_500_and_503_retried_with_backoff(server: FakeServer) -> None:
    server.script = lambda s, n: Reply(500 if n == 1 else 503, {"error": {"message": "boom"}}) if n < 3 else ok_chat()
    with make(server.url, max_retries=4) as g:
        c = g.complete_one(CHAT)
    assert c.error is None and len(server.seen) == 3


def test_retries_exhausted_gives_error_completion(server: FakeServer) -> None:
    server.script = lambda s, n: Reply(503, {"error": {"message": "overloaded"}}, {"Retry-After": "0"})
    with make(server.url, max_retries=2) as g:
        c = g.complete_one(CHAT)
    assert c.text == "" and c.error is not None
    assert "HTTP 503" in c.error and "overloaded" in c.error and "2 retries" in c.error
    assert len(server.seen) == 3


def test_400_is_not_retried(server: FakeServer) -> None:
    server.script = lambda s, n: Reply(400, {"error": {"message": "max_tokens too large", "code": 400}})
    with make(server.url, max_retries=5) as g:
        c = g.complete_one(CHAT)
    assert len(server.seen) == 1
    assert c.error is not None and "HTTP 400" in c.error and "max_tokens too large" in c.error


def test_timeout_is_retried_then_given_up(server: FakeServer) -> None:
    server.script = lambda s, n: Reply(delay=1.0, body=ok_chat().body)
    t0 = time.monotonic()
    with make(server.url, timeout_s=0.2, max_retries=1) as g:
        c = g.complete_one(CHAT)
    assert c.error is not None and "timed out" in c.error
    assert len(server.seen) == 2
    assert time.monotonic() - t0 < 3


def test_a_key_given_as_api_key_env_is_refused_without_showing_it() -> None:
    """api_key_env names a variable; a key pasted there would be written to the shared config.yaml."""
    with pytest.raises(ValueError, match="must name an environment variable") as exc:
        GeneratorConfig(name="r", backend="openai", model="m", base_url="http://h/v1", api_key_env="sk-SECRET-123")
    assert "SECRET" not in str(exc.value)
    ok = GeneratorConfig(name="r", backend="openai", model="m", base_url="http://h/v1", api_key_env="VLLM_KEY_2")
    assert ok.api_key_env == "VLLM_KEY_2"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://user:S3CRETPW@127.0.0.1:8000/v1", "holds a credential"),
        ("http://S3CRETPW@h/v1", "holds a credential"),
        ("https://h/v1?api-key=S3CRETPW", r"has a \?query"),
        ("https://h/v1?format=S3CRETPW", r"has a \?query"),
        ("https://h/v1#S3CRETPW", "#fragment"),
    ],
)
def test_a_credential_or_query_in_base_url_is_refused_without_showing_it(url: str, why: str, tmp_path: Path) -> None:
    """Regression: a password or key inside base_url was written to config.yaml and run.log and printed in
    every HTTP error (the key given through api_key_env is never shown); a ?query ended up in the middle of
    the endpoint's URL (``.../v1?x/chat/completions``)."""
    with pytest.raises(ValueError, match=why) as exc:
        GeneratorConfig(name="r", backend="openai", model="m", base_url=url)
    assert "S3CRETPW" not in str(exc.value) and "api_key_env" in str(exc.value)
    cfg = tmp_path / "c.yaml"  # the same through a config file, as the CLI reads it
    cfg.write_text(f"generators: [{{name: r, backend: openai, model: m, base_url: '{url}'}}]\n")
    with pytest.raises(ValueError, match=why) as exc:
        load_config(cfg)
    assert "S3CRETPW" not in str(exc.value)
    for plain in ("http://h:8000/v1", "https://api.openai.com/v1", "http://[::1]:8000/v1/"):
        assert GeneratorConfig(name="r", backend="openai", model="m", base_url=plain).base_url == plain


def test_server_settings_without_backend_openai_say_so() -> None:
    """Regression: base_url given without `backend: openai` passed, and the run then failed looking the server's
    model id up as a local GGUF file ("does not exist; give a GGUF path"), naming neither base_url nor backend."""
    with pytest.raises(ValueError, match="base_url is read by the openai backend only.*add backend: openai"):
        GeneratorConfig(name="v", model="meta-llama/Llama-3.1-8B-Instruct", base_url="http://127.0.0.1:8000/v1")
    with pytest.raises(ValueError, match="api_key_env is read by the openai backend only"):
        GeneratorConfig(name="v", backend="transformers", model="m", api_key_env="KEY")


def test_a_batch_that_timed_out_names_the_flag_that_lengthens_the_limit(server: FakeServer) -> None:
    """A slow backend failed the run with "timed out" and no way to resume with a longer limit."""
    server.script = lambda s, n: Reply(delay=1.0, body=ok_chat().body)
    with make(server.url, timeout_s=0.2, max_retries=0) as g, pytest.raises(GeneratorError) as exc:
        g.generate([CHAT, CHAT])
    assert "timed out" in str(exc.value)
    assert (
        "--generators.remote.timeout-s SECONDS, or --generators.timeout-s SECONDS for every generator, "
        "which a resumed run may change" in str(exc.value)
    )
    counter = TokenCounter()
    counter.add(Completion("", error="HTTP 404"))
    assert counter.all_failed("a") == "generators[a]: every request failed (['HTTP 404']); check the backend"


def test_total_time_is_bounded(server: FakeServer) -> None:
    server.script = lambda s, n: Reply(429, {}, {"Retry-After": "100"})
    t0 = time.monotonic()
    with make(server.url, max_retries=10, max_total_s=2.0) as g:
        c = g.complete_one(CHAT)
    assert time.monotonic() - t0 < 1.5
    assert c.error is not None and "HTTP 429" in c.error and "time limit" in c.error
    assert len(server.seen) == 1


@pytest.mark.parametrize(
    "reply, expect",
    [
        (Reply(body="<html>not json</html>"), "not JSON"),
        (Reply(body={"object": "list"}), "object"),
        (Reply(body={"choices": []}), "no choices"),
        (Reply(body={"choices": [{"message": {"content": ""}}]}), "empty completion"),
        (Reply(body={"choices": [{"message": {"content": None}}]}), "empty completion"),
        (Reply(body=[1, 2]), "unexpected response"),
        (Reply(body={"error": {"message": "model not loaded", "code": 404}}), "model not loaded"),
    ],
)
def test_junk_responses_give_error_completions(server: FakeServer, reply: Reply, expect: str) -> None:
    server.script = lambda s, n: reply
    with make(server.url) as g:
        c = g.complete_one(CHAT)
    assert c.text == "" and c.error is not None and expect in c.error
    assert len(server.seen) == 1  # a 200 with junk is not retried


def test_one_bad_request_does_not_fail_the_batch(server: FakeServer, caplog: pytest.LogCaptureFixture) -> None:
    server.script = lambda s, n: Reply(400, {"error": "bad"}) if s.body.get("prompt") == "bad" else ok_text("good")
    with make(server.url) as g, caplog.at_level(logging.INFO, logger="dpsynth"):
        out = g.generate([GenerationRequest(prompt="ok"), GenerationRequest(prompt="bad")])
    assert out[0].text == "good" and out[0].error is None
    assert out[1].text == "" and out[1].error is not None
    # regression: a request that failed after its retries was said nowhere (a run counted it as a dropped
    # sample, and run.log had not a line of it)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == [f"generators[remote]: 1 of 2 requests failed, e.g. {out[1].error}"], warned
    # a model that wrote nothing answered: its output is screened like any other, not warned of as failed
    caplog.clear()
    server.script = lambda s, n: ok_text("   ") if s.body.get("prompt") == "bad" else ok_text("good")
    with make(server.url) as g, caplog.at_level(logging.INFO, logger="dpsynth"):
        out = g.generate([GenerationRequest(prompt="ok"), GenerationRequest(prompt="bad")])
    assert out[1].error == "empty completion" and not out[1].failed and out[0].failed is False
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_more_choices_than_asked_for_are_not_read(server: FakeServer) -> None:
    many = {"choices": [{"index": i, "text": f"text {i}"} for i in range(5)]}
    server.script = lambda s, n: Reply(body=many)
    with make(server.url) as g:
        (out,) = g.generate([GenerationRequest(prompt="two please", n=2)])
    assert out.texts == ("text 0", "text 1")


def test_every_request_failing_raises_one_line(server: FakeServer) -> None:
    server.script = lambda s, n: Reply(404, {"error": {"message": "no such model"}})
    with make(server.url) as g, pytest.raises(GeneratorError) as exc:
        g.generate([CHAT, CHAT, CHAT])
    msg = str(exc.value)
    assert "\n" not in msg and "generators[remote]" in msg and "all 3 requests failed" in msg and "404" in msg


def test_a_batch_without_an_answer_stops_only_a_generator_that_has_stopped_answering(
    server: FakeServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: a batch whose every request failed stopped the run at once.  Near a round's end a batch
    can be one request, so one transient failure (after its retries) stopped a run that a larger batch
    carried.  Now a generator that has answered stops after 8 requests in a row without an answer."""
    failing = False
    server.script = lambda s, n: Reply(400, {"error": "transient"}) if failing else ok_chat()
    with make(server.url) as g, caplog.at_level(logging.INFO, logger="dpsynth"):
        assert all(c.error is None for c in g.generate([CHAT, CHAT]))
        failing = True
        for _ in range(7):  # seven single-request batches in a row fail: the run goes on, warned each time
            (c,) = g.generate([CHAT])
            assert c.failed and "HTTP 400" in (c.error or "")
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warned) == 7 and "all 1 requests of a batch failed" in warned[0] and "going on" in warned[0]
        with pytest.raises(GeneratorError, match=r"generators\[remote\]: the last 8 requests failed, e.g. HTTP 400"):
            g.generate([CHAT])
        failing = False  # an answer ends the streak
        assert g.generate([CHAT])[0].error is None
        failing = True
        assert g.generate([CHAT, CHAT])[0].failed
    # the time without an answer counts from the last answer, not from the start of a long batch
    monkeypatch.setattr("dpsynth.generators.pool.STOP_AFTER_S", 0.4)
    server.seen.clear()  # n counts from here: the first 4 requests are the long batch's
    server.script = lambda s, n: (
        Reply(400, {"error": "x"}, delay=0.7 if n <= 4 else 0)
        if s.path.endswith("/v1/completions")
        else Reply(body=ok_chat().body, delay=0.6)
    )
    with make(server.url) as g:
        out = g.generate([CHAT, CHAT, CHAT, PROMPT])  # 0.7 s; its last request to end failed
        assert out[3].failed and out[0].error is None
        assert g.generate([PROMPT])[0].failed  # 0.1 s after the last answer: goes on
    # ... or after STOP_AFTER_S without an answer (a server that hangs: each request ends at its time limit)
    monkeypatch.setattr("dpsynth.generators.pool.STOP_AFTER_S", 0.2)
    failing = False
    with make(server.url) as g:
        g.generate([CHAT])
        server.script = lambda s, n: Reply(400, {"error": "slow"}, delay=0.3)
        with pytest.raises(GeneratorError, match="all 1 requests failed"):
            g.generate([CHAT])
    # a generator that never answered stops at its first batch without an answer (a wrong setting)
    with make(server.url) as g, pytest.raises(GeneratorError, match="all 2 requests failed"):
        g.generate([CHAT, CHAT])


def test_a_server_that_restarts_is_waited_for_within_the_time_limit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Regression: a refused connection was retried for the backoff's few seconds only (none with
    max_retries 0), so a vLLM or SGLang server restarting mid-run (minutes to load its model) stopped the run.
    A server that answered before is now waited for within each request's time limit."""
    server = FakeServer(close_connections=True)
    try:
        with make(server.url, max_retries=0) as g, caplog.at_level(logging.INFO, logger="dpsynth"):
            assert g.generate([CHAT])[0].error is None
            t0 = time.monotonic()
            assert server.outage(1.0).wait(10)
            out = g.generate([CHAT, CHAT, CHAT])
            assert all(c.error is None for c in out) and time.monotonic() - t0 >= 0.9
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warned) == 2, warned  # once per outage, not per request
        assert "refuses connections; waiting up to 120 s for it to come back" in warned[0]
        assert re.search(r"the server answers again, after \d+(\.\d)? s$", warned[1]), warned
        # the wait is bounded by the request's time limit, and after that by the outage's (no new waits)
        assert server.outage(None).wait(10)
        with make(server.url, max_retries=0, max_total_s=0.6) as g:
            g._streak.answered = True  # as if it had answered before the outage
            t0 = time.monotonic()
            c = g.complete_one(CHAT)
            assert (
                c.failed
                and "; waited 0." in (c.error or "")
                and "while the server refused connections" in (c.error or "")
            )
            assert 0.15 <= time.monotonic() - t0 < 5
            time.sleep(0.6)  # the outage is now older than the time limit: a request fails without waiting
            t0 = time.monotonic()
            c = g.complete_one(CHAT)
            assert c.failed and "waited" not in (c.error or "") and time.monotonic() - t0 < 0.3
    finally:
        server.httpd.server_close()


def test_a_request_cut_by_a_server_stopping_is_tried_again() -> None:
    """A request in flight when the server stops is cut (no answer, the connection closed), not refused:
    it is tried once more, not counted against max_retries, and then waits for the server like the rest."""
    server = FakeServer(close_connections=True)

    def script(s: Seen, n: int) -> Reply:
        if n == 2:
            assert server.outage(0.5).wait(5)  # closed before this request is cut
            raise ConnectionResetError  # the handler ends without a reply: the client sees the cut
        return ok_chat(f"answer {n}")

    server.script = script
    try:
        with make(server.url, max_retries=0) as g:
            assert g.generate([CHAT])[0].error is None
            c = g.complete_one(CHAT)
        assert c.error is None and c.text.startswith("answer ")
        server.seen.clear()
        server.script = lambda s, n: (_ for _ in ()).throw(ConnectionResetError())
        with make(server.url, max_retries=0) as g:  # one that never answered: no try beyond max_retries
            c = g.complete_one(CHAT)
        assert c.failed and "(after 0 retries)" in (c.error or "") and len(server.seen) == 1
        server.seen.clear()
        with make(server.url, max_retries=0) as g:  # a server that cuts every request: 3 more tries, bounded
            g._streak.answered = True
            c = g.complete_one(CHAT)
        assert c.failed and len(server.seen) == 4
    finally:
        server.httpd.server_close()


def test_infinite_numbers_in_a_reply_are_junk_not_a_crash(server: FakeServer) -> None:
    """Python's JSON reads Infinity; int() of it raised OverflowError out of the request ("a bug in one")."""
    server.script = lambda s, n: Reply(200, '{"error": {"code": Infinity, "message": "odd"}}')
    with make(server.url) as g:
        assert g.complete_one(CHAT).error == "inf: odd"
    body = '{"choices": [{"message": {"content": "fine"}}], "usage": {"completion_tokens": Infinity}}'
    server.script = lambda s, n: Reply(200, body)
    with make(server.url) as g:
        c = g.complete_one(CHAT)
    assert c.text == "fine" and c.completion_tokens == 0


def test_a_wasp_run_goes_on_through_a_server_restart(private_csv: Path, tmp_path: Path) -> None:
    """The same at the scale of a run: WASP with one generator behind a server that restarts mid-round
    (max_retries 0: no retry would have waited) finishes with every sample."""
    import dpsynth

    from .conftest import WORDS, FakeEmbedder, FakeGenerator, fake_run_config

    server = FakeServer(close_connections=True)
    rng = random.Random(0)

    def review(s: Seen, n: int) -> Reply:
        if n == 12:
            server.outage(1.0)
        mood = "positive" if "positive" in json.dumps(s.body) else "negative"
        return ok_chat(f"A {mood} take: " + " ".join(rng.choice(WORDS) for _ in range(12)) + f" #{n}")

    server.script = review
    cfg = fake_run_config(private_csv, tmp_path / "run")
    try:
        remote = OpenAIHttpGenerator(
            GeneratorConfig(name="a", backend="openai", model="m", base_url=server.url, max_retries=0)
        )
        gens = {"a": remote, "b": FakeGenerator("b", 2)}
        res = dpsynth.synthesize(cfg, generators=gens, embedder=FakeEmbedder(), progress=False)
    finally:
        server.httpd.server_close()
    assert len(res) == 60 and sum(r["generator"] == "a" for r in res.records) > 0
    log = (tmp_path / "run" / "run.log").read_text()
    assert "refuses connections" in log and "answers again" in log


def test_an_error_a_gateway_sends_with_http_200_is_retried_as_its_code_says(server: FakeServer) -> None:
    """Regression: gateways (OpenRouter, LiteLLM) answer 200 with an upstream 429 or 5xx in the body; it was
    not retried.  Its code now decides, as an HTTP status would; another code is not retried."""
    busy = {"error": {"code": 503, "message": "upstream overloaded"}}
    server.script = lambda s, n: Reply(200, busy) if n <= 2 else ok_chat("back")
    with make(server.url) as g:
        c = g.complete_one(CHAT)
    assert c.text == "back" and c.error is None and len(server.seen) == 3
    server.seen.clear()
    server.script = lambda s, n: Reply(200, {"error": {"code": "503", "message": "still overloaded"}})
    with make(server.url, max_retries=1) as g:
        c = g.complete_one(CHAT)
    assert len(server.seen) == 2 and c.error is not None
    assert c.error.startswith("503: still overloaded (HTTP 200 carrying an error) from http://127.0.0.1:")
    assert c.error.endswith("(after 1 retry)")
    server.seen.clear()
    server.script = lambda s, n: Reply(200, {"error": {"code": 400, "message": "bad request"}})
    with make(server.url) as g:
        c = g.complete_one(CHAT)
    assert len(server.seen) == 1 and c.error == "400: bad request"


def test_connection_refused_is_retried_then_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with make(f"http://127.0.0.1:{port}/v1", max_retries=2) as g:
        c = g.complete_one(CHAT)
    assert c.error is not None and "connection error" in c.error and "2 retries" in c.error
    # regression: mid-run, the error named neither the server nor what to check
    assert f"from http://127.0.0.1:{port}/v1/chat/completions" in c.error and "still running at base_url" in c.error


def test_errors_a_user_can_fix_name_the_fix(server: FakeServer, key_env: str) -> None:
    """Regression: a 401 mid-run, a 429 past its retries and a Retry-After past the time limit said what the
    server said and not what to change (the start-up probe did, a run's requests did not)."""
    server.script = lambda s, n: Reply(401, {"error": "bad key"})
    with make(server.url, api_key_env=key_env) as g:
        assert f"; check the key in ${key_env}" in (g.complete_one(CHAT).error or "")
    with make(server.url) as g:
        assert "no key was sent: name its variable in api_key_env" in (g.complete_one(CHAT).error or "")
    server.script = lambda s, n: Reply(429, {"error": "slow down"}, {"Retry-After": "0"})
    with make(server.url, max_retries=1) as g:
        assert "lower --generators.remote.concurrency" in (g.complete_one(CHAT).error or "")
    server.script = lambda s, n: Reply(503, {"error": "later"}, {"Retry-After": "3600"})
    with make(server.url, timeout_s=2, max_retries=1) as g:
        error = g.complete_one(CHAT).error or ""
    assert "retrying after 3,600 s would pass the request's time limit of 34 s (timeout_s x" in error, error


def test_api_key_never_leaks(server: FakeServer, key_env: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    # a server that echoes the key back in its error body
    server.script = lambda s, n: Reply(
        401 if n % 2 else 500, {"error": {"message": f"invalid key {s.headers.get('authorization')}"}}
    )
    with make(server.url, api_key_env=key_env, max_retries=1) as g:
        assert SECRET not in repr(g) and SECRET not in str(g)
        c = g.complete_one(CHAT)
        assert c.error is not None and "invalid key" in c.error and SECRET not in c.error
        server.script = lambda s, n: Reply(500, {"error": {"message": f"oops {SECRET}"}})
        with pytest.raises(GeneratorError) as exc:
            g.generate([CHAT, PROMPT])
        assert SECRET not in str(exc.value) and SECRET not in repr(exc.value)
    assert server.seen[0].headers["authorization"] == f"Bearer {SECRET}"
    assert all(SECRET not in r.getMessage() for r in caplog.records)
    assert any("retry" in r.getMessage() for r in caplog.records)


def test_missing_base_url_and_missing_key_are_user_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(GeneratorError, match=r"generators\[remote\]\.base_url"):
        make(None)
    with pytest.raises(GeneratorError, match=r"generators\[remote\]\.base_url"):
        make("localhost:8000/v1")
    monkeypatch.delenv("DPSYNTH_NOPE", raising=False)
    with pytest.raises(GeneratorError, match=r"generators\[remote\]\.api_key_env: .*DPSYNTH_NOPE"):
        make("http://127.0.0.1:1/v1", api_key_env="DPSYNTH_NOPE")


def test_build_generator_dispatches_to_http(server: FakeServer) -> None:
    cfg = GeneratorConfig(name="r", backend="openai", model="m", base_url=server.url + "/")
    g = build_generator(cfg)
    try:
        assert isinstance(g, OpenAIHttpGenerator)
        assert g.generate([PROMPT])[0].text == "A fine film."
        assert server.seen[0].path == "/v1/completions"
    finally:
        g.close()
    with pytest.raises(GeneratorError, match="after close"):
        g.generate([PROMPT])


def test_empty_batch() -> None:
    with make("http://127.0.0.1:1/v1") as g:
        assert g.generate([]) == []


def test_retry_after_parsing() -> None:
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds("0.5") == 0.5
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    later = retry_after_seconds(formatdate(time.time() + 30, usegmt=True))
    assert later is not None and 25 < later <= 31
    assert retry_after_seconds(formatdate(time.time() - 30, usegmt=True)) == 0.0


def test_parse_response_usage_and_fallbacks() -> None:
    c = parse_response({"choices": [{"text": "hi"}], "usage": {"completion_tokens": "2"}}, is_chat=True)
    assert c == Completion(text="hi", completion_tokens=2, prompt_tokens=0)
    c = parse_response({"choices": [{"message": {"content": "yo"}}], "usage": None}, is_chat=True)
    assert c.text == "yo" and c.completion_tokens == 0


def test_token_counter_counts_every_text_of_a_request() -> None:
    """A request with n > 1 returns several texts: the counter's mean tokens per completion divides by
    texts, not requests (bench/profile_wasp.py reads it); a failed request still counts once."""
    tc = TokenCounter()
    tc.add(Completion(text="a", extra_texts=("b", "c"), completion_tokens=30))
    tc.add(Completion(text="", error="timeout"))
    assert (tc.completions, tc.failures, tc.completion_tokens) == (4, 1, 30)


def test_parse_response_tells_which_texts_the_token_limit_stopped() -> None:
    """finish_reason per choice -> Completion.truncated, aligned with texts (empty choices dropped)."""
    choices = [
        {"text": "A full review.", "finish_reason": "stop"},
        {"text": "   ", "finish_reason": "length"},  # empty: dropped with its flag
        {"text": "A review cut by the", "finish_reason": "length"},
    ]
    c = parse_response({"choices": choices}, is_chat=False, n=3)
    assert c.texts == ("A full review.", "A review cut by the")
    assert c.truncated == (False, True)
    assert [c.was_truncated(i) for i in range(3)] == [False, True, None]
    # a server that does not send finish_reason: unknown, for every text
    c = parse_response({"choices": [{"text": "a", "finish_reason": "stop"}, {"text": "b"}]}, is_chat=False, n=2)
    assert c.truncated == () and c.was_truncated(0) is None


# ---------------------------------------------------------------- regressions of a backend audit
@pytest.mark.parametrize("value", ["sk-AUDIT\n123", "sk-AUDIT é123", "sk AUDIT"])
def test_an_api_key_no_header_can_carry_is_refused_without_showing_it(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: a key with a line break reached stderr and run.log inside h11's "Illegal header value"
    error (escaped, so the mask missed it); a non-ASCII one passed --check, then gave a 133-line traceback."""
    monkeypatch.setenv(KEY_ENV, value)
    with pytest.raises(GeneratorError, match=f"\\${KEY_ENV} holds a character an HTTP header cannot carry") as info:
        make("http://127.0.0.1:9/v1", api_key_env=KEY_ENV)
    assert "AUDIT" not in str(info.value)


def test_the_first_choice_with_text_leads_and_error_null_is_no_error() -> None:
    """Regression: with n > 1 an empty first choice threw the good ones away ("empty completion"), and a good
    reply carrying "error": null was rejected."""
    data = {
        "choices": [
            {"message": {"content": None}, "finish_reason": "stop"},
            {"message": {"content": "one"}, "finish_reason": "stop"},
            {"message": {"content": "two"}, "finish_reason": "length"},
        ],
        "error": None,
    }
    c = parse_response(data, is_chat=True, n=3)
    assert (c.error, c.text, c.extra_texts, c.truncated) == (None, "one", ("two",), (False, True))
    # regression: a server returning more choices than asked for handed back samples nobody asked for, which
    # a WASP round counted as attempts and threw away as surplus (its class could end with none)
    many = {"choices": [{"message": {"content": f"text {i}"}, "finish_reason": "stop"} for i in range(5)]}
    assert parse_response(many, is_chat=True, n=2).texts == ("text 0", "text 1")
    assert parse_response(many, is_chat=True).texts == ("text 0",)
    filtered = parse_response({"choices": [{"message": {"content": ""}, "finish_reason": "content_filter"}]}, True)
    assert filtered.error == "stopped by the server's content filter"
    cut = parse_response({"choices": [{"message": {"content": "Half a"}, "finish_reason": "content_filter"}]}, True)
    assert cut.truncated == (True,)  # cut off mid-sentence: cleaned as a text that hit the token limit
    assert "keys: object, id" in (parse_response({"object": "list", "id": "x"}, True).error or "")


def test_a_trickling_reply_is_named_and_not_met_with_a_longer_limit() -> None:
    """Regression: with no retries the time limit still added 30 s of waits between tries (a reply arriving
    a byte at a time held a 3 s request 33 s), the error said "timed out after 3 s", and its hint was to give
    the request longer, which only lengthens such a wait."""
    assert make("http://h/v1", timeout_s=3, max_retries=0).max_total_s == 3
    assert make("http://h/v1", timeout_s=3, max_retries=1).max_total_s == 36  # 2 tries and a wait of <= 30 s
    with trickle_server() as base:
        g = make(f"{base}/v1", timeout_s=1, max_retries=0)  # the limit a user's config gives: timeout_s
        t0 = time.monotonic()
        c = g.complete_one(CHAT)
        took = time.monotonic() - t0
        g.close()
    assert c.error is not None and c.error.startswith("timed out after 1") and "still arriving" in c.error, c.error
    assert 0.9 < took < 3
    assert timeout_hint("remote", [c.error]) == ""
    assert "--generators.remote.timeout-s" in timeout_hint("remote", ["timed out after 0.4 s"])


def test_a_trickling_reply_ends_at_the_time_limit_and_close_ends_requests_in_flight() -> None:
    """Regression: httpx's timeout is per read, so a server sending a byte now and then held a request past
    max_total_s for as long as it kept sending; and close() (Ctrl-C) waited for requests in flight."""
    with trickle_server() as base:
        url = f"{base}/v1"
        g = make(url, timeout_s=1, max_retries=0, max_total_s=1.5)
        t0 = time.monotonic()
        c = g.complete_one(CHAT)
        assert c.error is not None and "timed out" in c.error and time.monotonic() - t0 < 4
        g.close()
        g = make(url, timeout_s=6, max_retries=0, max_total_s=30)
        done: list[Completion] = []
        worker = threading.Thread(target=lambda: done.append(g.complete_one(CHAT)), daemon=True)
        worker.start()
        time.sleep(0.5)
        t0 = time.monotonic()
        g.close()
        assert time.monotonic() - t0 < 3  # not the 6 s a read may take, nor the 30 s limit
        worker.join(5)
        assert done and done[0].error


def test_a_reply_far_larger_than_asked_for_is_refused(server: FakeServer) -> None:
    """Regression: a 40 MB reply to max_tokens=32 was read whole (eight at once with concurrency 8)."""
    server.script = lambda s, n: ok_chat("x" * (2 << 20))
    with make(server.url, max_retries=0) as g:
        c = g.complete_one(CHAT)
    assert c.error is not None and "a reply larger than 1,048,576 bytes" in c.error


def test_a_redirect_names_where_it_points(server: FakeServer) -> None:
    server.script = lambda s, n: Reply(status=307, body={}, headers={"Location": "https://elsewhere.example/v1"})
    with make(server.url, max_retries=0) as g:
        c = g.complete_one(CHAT)
    assert c.error is not None and "HTTP 307" in c.error and "https://elsewhere.example/v1" in c.error
    with pytest.raises(Exception, match="timeout_s"):
        GeneratorConfig(name="r", backend="openai", model="m", base_url=server.url, timeout_s=float("inf"))


def test_request_pool_runs_done_callbacks_outside_its_lock_and_fails_the_rest_on_shutdown() -> None:
    """A done-callback may submit again (it ran under the pool's lock, which deadlocked the worker); after
    shutdown every unfinished call has failed with "generator closed", none is left pending."""
    import threading

    from dpsynth.generators.pool import RequestPool

    pool = RequestPool(2, "t")
    chained = threading.Event()
    first = pool.submit(lambda: 1)
    first.add_done_callback(lambda _f: pool.submit(chained.set))
    assert first.result(timeout=5) == 1 and chained.wait(5)
    gate = threading.Event()
    held = [pool.submit(gate.wait, 30) for _ in range(4)]  # 2 running, 2 waiting
    pool.shutdown()
    for fut in held:
        with pytest.raises(GeneratorError, match="generator closed"):
            fut.result(timeout=1)
    gate.set()
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(lambda: 2)


# ---------------------------------------------------------------- the probe before a run
def _probe_cfg(url: str, **kw: Any) -> GeneratorConfig:
    return GeneratorConfig(name="remote", backend="openai", model="my-model", base_url=url, **kw)


def test_an_openai_server_is_probed_before_a_run_starts(
    server: FakeServer, key_env: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`dpsynth run --check` read an openai entry's URL and key without contacting the server, so a server that
    was down or a wrong port passed the check (and a run found out later).  GET base_url/models now answers
    that in seconds: refused only when no request could succeed (no answer, HTTP 401/403)."""
    from dpsynth.generators import check_generator, openai_http

    models = {"object": "list", "data": [{"id": "my-model", "object": "model"}]}
    server.script = lambda s, n: Reply(body=models) if s.path == "/v1/models" else ok_text()
    check_generator(_probe_cfg(server.url, api_key_env=key_env))
    assert server.seen[-1].path == "/v1/models" and server.seen[-1].headers["authorization"] == f"Bearer {SECRET}"
    assert "note:" not in capsys.readouterr().err
    # a server that serves other models: a note, not a refusal (llama.cpp answers under any name)
    server.script = lambda s, n: Reply(body={"data": [{"id": f"m{i}"} for i in range(7)]})
    check_generator(_probe_cfg(server.url))
    err = capsys.readouterr().err
    assert "'my-model' is not among the models" in err and "m0, m1, m2, m3, m4 and 2 more" in err
    # one that does not list models, or answers with something else: nothing to say
    for reply in (Reply(status=404, body={"error": "no such route"}), Reply(body="<html>")):
        server.script = lambda s, n, r=reply: r  # type: ignore[misc]
        check_generator(_probe_cfg(server.url))
    assert capsys.readouterr().err == ""
    # a 404 from a base_url without /v1 (vLLM at http://host:8000): a note that names the likely fix
    server.script = lambda s, n: Reply(status=404, body={"error": "no such route"})
    check_generator(_probe_cfg(server.url.removesuffix("/v1")))
    assert f"usually need base_url {server.url}" in capsys.readouterr().err
    # a refused key: one line naming the variable, never the key
    server.script = lambda s, n: Reply(status=401, body={"error": f"bad key {SECRET}"})
    with pytest.raises(GeneratorError, match=rf"refused the request \(HTTP 401\): check \${key_env}$") as err_info:
        check_generator(_probe_cfg(server.url, api_key_env=key_env))
    assert SECRET not in str(err_info.value)
    # nothing listening on the port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    with pytest.raises(GeneratorError, match=r"^generators\[remote\]\.base_url: .* does not answer \(ConnectError\)"):
        check_generator(_probe_cfg(dead))
    # a server that sends its headers a byte at a time is cut at the probe's limit, not held for hours
    monkeypatch.setattr(openai_http, "PROBE_S", 1.0)
    with trickle_server(headers=True) as url:
        start = time.monotonic()
        with pytest.raises(GeneratorError, match="no answer within 1 s"):
            check_generator(_probe_cfg(url + "/v1"))
        assert time.monotonic() - start < 5


def test_run_check_refuses_a_server_that_does_not_answer(capsys: pytest.CaptureFixture[str]) -> None:
    from dpsynth.cli import main

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    gens = f"[{{name: remote, backend: openai, model: m, base_url: '{dead}'}}]"
    with pytest.raises(SystemExit) as info:
        main(["run", "--check", "--method", "zero-shot", "--generators", gens, "--n-synthetic", "4"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "generators[remote].base_url" in err and "does not answer" in err and "Traceback" not in err
