"""Worker threads for requests to a remote server, which a close ends at once.

``concurrent.futures.ThreadPoolExecutor`` does not fit requests that a server may hold for minutes: Python
joins its worker threads when the interpreter exits, so after Ctrl-C a request to a server that never
answers kept the process alive for up to the request's timeout; and its ``shutdown`` leaves a running
future pending, so a caller waiting on it waited just as long.  ``RequestPool`` runs the same ``submit`` /
``shutdown`` contract on daemon threads, and its ``shutdown`` fails every unfinished future with
"generator closed" straight away.  A worker whose call returns after that drops the result.

``run_batch`` runs one batch of requests on such a pool (or a ``ThreadPoolExecutor``) and decides, with the
generator's ``AnswerStreak``, whether its failures stop the run.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any, Protocol, TypeVar

from dpsynth.errors import GeneratorError
from dpsynth.generators.base import EMPTY_COMPLETION, Completion, GenerationRequest, ProgressCallback, timeout_hint

log = logging.getLogger(__name__)

T = TypeVar("T")
_Job = tuple[Future[Any], Callable[[], Any]]


class Submits(Protocol):
    """What ``run_batch`` needs of a pool: ``RequestPool`` here, ``ThreadPoolExecutor`` for the local server."""

    def submit(self, fn: Callable[..., T], /, *args: Any) -> Future[T]: ...


class RequestPool:
    """``workers`` daemon threads taking calls from one queue (``submit``), ended by ``shutdown``."""

    def __init__(self, workers: int, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._unfinished: set[Future[Any]] = set()
        self._lock = threading.Lock()
        self._shut = False
        self._workers = max(1, workers)
        for i in range(self._workers):
            threading.Thread(target=self._work, name=f"{name}_{i}", daemon=True).start()

    def submit(self, fn: Callable[..., T], /, *args: Any) -> Future[T]:
        fut: Future[T] = Future()
        with self._lock:
            if self._shut:
                raise RuntimeError("cannot submit to a pool after shutdown")
            self._unfinished.add(fut)
        self._jobs.put((fut, functools.partial(fn, *args)))
        return fut

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            fut, call = job
            with self._lock:  # shutdown may have failed it already, or the caller cancelled it
                if fut not in self._unfinished:
                    continue
                if not fut.set_running_or_notify_cancel():
                    self._unfinished.discard(fut)
                    continue
            try:
                result, error = call(), None
            except BaseException as exc:  # handed to the caller, as ThreadPoolExecutor does
                result, error = None, exc
            with self._lock:  # claim it; set it outside the lock, where its done-callbacks may call submit
                if fut not in self._unfinished:  # ended by shutdown while it ran: nothing after close
                    continue
                self._unfinished.discard(fut)
            if error is None:
                fut.set_result(result)
            else:
                fut.set_exception(error)

    def shutdown(self) -> None:
        """Fail every unfinished call now (waiting or running) and stop the workers; does not wait."""
        with self._lock:
            if self._shut:
                return
            self._shut = True
            left, self._unfinished = self._unfinished, set()  # claimed: no worker sets them now
        for fut in left:
            if fut.running() or fut.set_running_or_notify_cancel():  # False: the caller cancelled it
                fut.set_exception(GeneratorError("generator closed"))
        for _ in range(self._workers):
            self._jobs.put(None)


# A generator that has answered before stops the run only after this many requests in a row without an
# answer (each already retried by its backend), or this long without one.
STOP_AFTER_FAILURES = 8
STOP_AFTER_S = 300.0


class AnswerStreak:
    """A generator's requests in a row without an answer, counted across batches.

    Why across batches: a batch whose every request failed used to stop the run at once, and near the end of
    a round a batch can be a single request, so one transient failure (after its retries) stopped a run that
    a larger batch would have carried.  Now a generator that has answered before stops the run after
    ``STOP_AFTER_FAILURES`` requests in a row without an answer or ``STOP_AFTER_S`` seconds without one (a
    server that is down, or that hangs: each request ends only at its time limit); a generator that never
    answered stops at its first batch without an answer, since a setting is wrong.  "No answer" is any
    ``Completion.error``: a failed request, and an answer without text too (every answer of a base model
    prompted as a chat model is empty)."""

    def __init__(self) -> None:
        self.answered = False
        self.failures = 0
        self._last_answer = 0.0
        self._since = 0.0  # the streak's start: its batch's start, or the last answer if that came later

    def add(self, c: Completion, batch_started: float) -> None:
        if c.error is None:
            self.answered, self.failures, self._last_answer = True, 0, time.monotonic()
            return
        if self.failures == 0:
            self._since = max(batch_started, self._last_answer)
        self.failures += 1

    def stops(self) -> bool:
        """Whether the failures so far stop the run (asked after a batch in which every request failed)."""
        long = time.monotonic() - self._since >= STOP_AFTER_S
        return not self.answered or self.failures >= STOP_AFTER_FAILURES or long


def run_batch(
    name: str,
    pool: Submits,
    one: Callable[[GenerationRequest], Completion],
    requests: Sequence[GenerationRequest],
    on_completion: ProgressCallback | None,
    streak: AnswerStreak | None = None,
) -> list[Completion]:
    """Run every request on ``pool``; call ``on_completion`` in this thread as each ends; keep order.

    Raises ``GeneratorError`` when every request of a non-empty batch failed and ``streak`` (the generator's,
    across its batches; a fresh one without it) says that stops the run.
    """
    if not requests:
        return []
    streak = streak if streak is not None else AnswerStreak()
    started = time.monotonic()
    futures: dict[Future[Completion], int] = {pool.submit(one, r): i for i, r in enumerate(requests)}
    results: list[Completion | None] = [None] * len(requests)
    pending: set[Future[Completion]] = set(futures)
    try:
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                try:
                    c = fut.result()
                except Exception as exc:  # a bug in `one`: keep the rest of the batch
                    c = Completion(text="", error=f"{type(exc).__name__}: {exc}"[:300])
                results[futures[fut]] = c
                streak.add(c, started)
                if on_completion is not None:
                    on_completion(c)
    finally:
        for fut in pending:
            fut.cancel()
    out = [c if c is not None else Completion(text="", error="not run") for c in results]
    failed = [" ".join(str(c.error).split()) for c in out if c.failed]
    if failed and len(failed) < len(out):  # the caller goes on without them: say so once per batch
        log.warning("generators[%s]: %d of %d requests failed, e.g. %s", name, len(failed), len(out), failed[0])
    if not all(c.error for c in out):
        return out
    first = out[0].error
    if not streak.stops():
        log.warning(
            "generators[%s]: all %d requests of a batch failed, e.g. %s; going on (a run stops after %d requests "
            "in a row or %.0f s without an answer)",
            name,
            len(out),
            " ".join(str(first).split()),
            STOP_AFTER_FAILURES,
            STOP_AFTER_S,
        )
        return out
    hint = ""
    if first == EMPTY_COMPLETION:
        hint = " (a base model needs prompt_format: completion, an instruct model chat)"
    hint = hint or timeout_hint(name, [c.error for c in out])
    many = f"the last {streak.failures} requests" if streak.failures > len(out) else f"all {len(out)} requests"
    raise GeneratorError(f"generators[{name}]: {many} failed, e.g. {first}{hint}")
