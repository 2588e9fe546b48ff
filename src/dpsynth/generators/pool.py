"""Worker threads for requests to a remote server, which a close ends at once.

``concurrent.futures.ThreadPoolExecutor`` does not fit requests that a server may hold for minutes: Python
joins its worker threads when the interpreter exits, so after Ctrl-C a request to a server that never
answers kept the process alive for up to the request's timeout; and its ``shutdown`` leaves a running
future pending, so a caller waiting on it waited just as long.  ``RequestPool`` runs the same ``submit`` /
``shutdown`` contract on daemon threads, and its ``shutdown`` fails every unfinished future with
"generator closed" straight away.  A worker whose call returns after that drops the result.
"""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol, TypeVar

from dpsynth.errors import GeneratorError

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
