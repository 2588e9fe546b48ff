"""llama.cpp in-process through the ``xllamacpp`` wheel (no build, no subprocess).

``xllamacpp.Server`` runs llama.cpp's own server in this process: a model, a KV
cache shared by ``n_parallel`` slots and a main loop doing continuous batching.
``handle_completions`` / ``handle_chat_completions`` take and return
OpenAI-shaped dicts; they block until the completion is done and release the
GIL meanwhile, so the slots are only used when requests are submitted from
several threads at once.  ``LlamaCppGenerator`` keeps one worker thread per slot.

The same server always listens on loopback HTTP as well (an ephemeral port).
For the in-process generator that port is locked with a random API key, which
the direct calls bypass; ``serve_http`` instead exposes it on purpose (tests of
the HTTP backend, or sharing one model between processes).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import secrets
import signal
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from dpsynth.config import GeneratorConfig
from dpsynth.errors import GeneratorError
from dpsynth.generators.base import Completion, GenerationRequest, ProgressCallback
from dpsynth.generators.models import resolve_model
from dpsynth.generators.openai_http import parse_response, request_body
from dpsynth.generators.pool import AnswerStreak, run_batch


def _threads(n_threads: int) -> int:
    return n_threads if n_threads > 0 else (os.cpu_count() or 1)


def start_server(
    model_path: str | Path,
    *,
    n_parallel: int = 4,
    n_ctx: int = 4096,
    n_threads: int = 0,
    api_key: str | None = None,
    label: str | None = None,
) -> Any:
    """Load a GGUF into an in-process ``xllamacpp.Server`` (also listening on 127.0.0.1, free port).

    Raises ``GeneratorError`` naming ``label`` (default: the path) if the model does not load.
    """
    try:
        import xllamacpp
    except ImportError:
        raise GeneratorError(
            "the llamacpp backend needs the xllamacpp package; install it with `pip install xllamacpp`"
        ) from None
    path = Path(model_path)
    label = label or str(path)
    params = xllamacpp.CommonParams()
    params.model.path = str(path)
    params.n_parallel = n_parallel
    params.n_ctx = n_ctx
    # One KV cache shared by all slots: any slot may use up to n_ctx tokens, so a
    # long prompt does not fail just because the context is split n_parallel ways.
    params.kv_unified = True
    params.cont_batching = True
    params.cache_prompt = True
    threads = _threads(n_threads)
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.verbosity = -1  # silences llama.cpp's and ggml's logs
    params.hostnames = ["127.0.0.1"]
    params.port = 0  # the OS picks a free port: no race between choosing and binding
    if api_key:
        params.api_keys = [api_key]
    with _signals_held():
        try:
            server = xllamacpp.Server(params)
        except Exception as exc:
            hint = "" if path.is_file() else " (file not found)"
            raise GeneratorError(
                f"llama.cpp could not load the model {label}{hint}: {exc}; check that it is a valid GGUF file"
            ) from None
        # One token through the task loop: the loop has started once it answers.  A server destroyed before
        # its loop starts never stops: the destructor's stop signal comes first, the loop then waits for
        # tasks forever and the destructor joins it forever (a Ctrl-C just after the model loaded hung the
        # process for good, deaf to further signals).
        with contextlib.suppress(Exception):  # an error answer came through the loop too
            server.handle_completions({"prompt": "a", "max_tokens": 1})
    return server


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, then deliver them to the handlers they had.

    Where a signal handler can be set (the main thread); elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    # a handler installed from C reads as None and could not be put back: that signal is not held
    kinds = [k for k in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(k) is not None]
    before = {k: signal.signal(k, lambda signum, frame: held.append(signum)) for k in kinds}
    try:
        yield
    finally:
        # every step runs even when an earlier one raises: a restored Ctrl-C handler raises KeyboardInterrupt
        # as its signal is delivered, and a SIGTERM held beside it must still reach its own handler
        _each(
            [functools.partial(signal.signal, k, handler) for k, handler in before.items()]
            + [functools.partial(signal.raise_signal, signum) for signum in dict.fromkeys(held)]
        )


def _each(calls: Sequence[Callable[[], object]]) -> None:
    """Call each in turn, going on past an exception; the last exception raised propagates (earlier ones
    are its ``__context__``)."""
    if calls:
        try:
            calls[0]()
        finally:
            _each(calls[1:])


class LocalServer:
    """An in-process llama.cpp server serving the OpenAI API on loopback; ``close()`` stops it."""

    def __init__(self, server: Any) -> None:
        self._server: Any = server
        self.address: str = server.listening_address  # e.g. http://127.0.0.1:41235
        self.base_url: str = self.address + "/v1"

    @property
    def server(self) -> Any:
        if self._server is None:
            raise GeneratorError("the llama.cpp server was closed")
        return self._server

    def close(self) -> None:
        # The C++ destructor stops the main loop and the HTTP listener; it runs when
        # the last reference goes, which is this one.
        self._server = None

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._server is None else self.address
        return f"LocalServer({state})"


def serve_http(
    model_path: str | Path,
    n_parallel: int = 4,
    n_ctx: int = 4096,
    n_threads: int = 0,
    api_key: str | None = None,
) -> tuple[LocalServer, str]:
    """Start llama.cpp's OpenAI-compatible HTTP server in-process on 127.0.0.1 (free port).

    Returns ``(server, base_url)`` with ``base_url`` like ``http://127.0.0.1:PORT/v1``;
    the model is loaded and the server ready when this returns.  ``server.close()``
    stops it.  With ``api_key`` set, requests must send ``Authorization: Bearer KEY``.
    """
    srv = LocalServer(
        start_server(model_path, n_parallel=n_parallel, n_ctx=n_ctx, n_threads=n_threads, api_key=api_key)
    )
    return srv, srv.base_url


# Generators not closed yet.  A server still alive when the interpreter finalises is destroyed at an
# arbitrary point of the teardown, and its destructor joins llama.cpp's loop and HTTP threads then: the
# process can hang instead of exiting.  Every dpsynth path closes its generators (api.PromptingMethod);
# this atexit hook is the safety net for any other (an application that forgets close()).
_OPEN: weakref.WeakSet[LlamaCppGenerator] = weakref.WeakSet()


@atexit.register
def _close_open_generators() -> None:
    for gen in list(_OPEN):
        gen.close()


class LlamaCppGenerator:
    """A GGUF model served by llama.cpp in this process, ``n_parallel`` requests at a time."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self.model_path = resolve_model(cfg.model, cfg.name)
        self._api_key = secrets.token_urlsafe(24)  # locks the loopback port that xllamacpp always opens
        self._server: Any = start_server(
            self.model_path,
            n_parallel=cfg.n_parallel,
            n_ctx=cfg.n_ctx,
            n_threads=cfg.n_threads,
            api_key=self._api_key,
            label=f"{cfg.model} (generators[{cfg.name}].model)",
        )
        self._pool = ThreadPoolExecutor(max_workers=cfg.n_parallel, thread_name_prefix=f"llamacpp-{cfg.name}")
        self._lock = threading.Lock()
        self._extra = cfg.sampler_fields()
        self._streak = AnswerStreak()
        _OPEN.add(self)

    def complete_one(self, req: GenerationRequest) -> Completion:
        """One blocking request (releases the GIL while llama.cpp works)."""
        server = self._server
        if server is None:
            return Completion(text="", error="generator closed")
        try:
            body = {**request_body(req), **self._extra}
            if req.n > self.cfg.n_parallel:  # llama.cpp runs the n completions in parallel slots
                body["n"] = self.cfg.n_parallel
            handle = server.handle_chat_completions if req.is_chat else server.handle_completions
            data = handle(body)
        except Exception as exc:
            return Completion(text="", error=f"llama.cpp: {type(exc).__name__}: {exc}"[:500])
        done = parse_response(data, req.is_chat, req.n)
        if body.get("n", 1) > 1 and done.error is None:
            done = replace(done, completion_tokens=self._tokens_of_choices(server, data, req))
        return done

    def _tokens_of_choices(self, server: Any, data: dict[str, Any], req: GenerationRequest) -> int:
        """Tokens generated over all n choices of one request.

        llama.cpp's ``usage`` covers only the first choice of an n > 1 request (xllamacpp 2026.10), so
        throughput and token budgets would count a quarter of the work at n = 4.  A choice stopped by
        length generated ``max_tokens``; one stopped by the model generated its text's tokens plus the
        end token (a stop string's own tokens are not counted).  Texts are tokenized by the same server
        (its ``/tokenize``, on the locked loopback port); if that fails, ``usage``'s count stands.
        """
        total = 0
        try:
            with httpx.Client(base_url=server.listening_address, timeout=30.0) as http:
                for choice in data["choices"]:
                    if choice.get("finish_reason") == "length":
                        total += req.max_tokens
                        continue
                    text = (choice.get("message") or {}).get("content") if req.is_chat else choice.get("text")
                    r = http.post(
                        "/tokenize",
                        json={"content": text or ""},
                        headers={"Authorization": f"Bearer {self._api_key}"},
                    )
                    r.raise_for_status()
                    total += len(r.json()["tokens"]) + 1
        except (httpx.HTTPError, KeyError, TypeError, ValueError, AttributeError):
            usage = data.get("usage")
            return int(usage.get("completion_tokens") or 0) if isinstance(usage, dict) else 0
        return total

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        on_completion: ProgressCallback | None = None,
    ) -> list[Completion]:
        if self._server is None:
            raise GeneratorError(f"generators[{self.name}]: generate() called after close()")
        return run_batch(self.name, self._pool, self.complete_one, requests, on_completion, self._streak)

    def close(self) -> None:
        """Stop the worker threads, then the server; safe to call twice, and from the atexit hook."""
        with self._lock:
            if self._server is None:
                return
            try:
                self._pool.shutdown(wait=True, cancel_futures=True)
            finally:
                self._server = None  # the C++ destructor stops the loop and frees the model
                _OPEN.discard(self)

    def __enter__(self) -> LlamaCppGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"LlamaCppGenerator(name={self.name!r}, model={str(self.model_path)!r}, n_parallel={self.cfg.n_parallel})"
        )
