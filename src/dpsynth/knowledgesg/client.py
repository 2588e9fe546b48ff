"""HTTP client for the KnowledgeSG server: bounded retries with backoff, token from the environment.

Connection errors, 429 and 5xx are retried (a server restart looks like refused connections for a
while); any other 4xx is the client's mistake and is raised at once with the server's one-line reason.
The token is sent only in the Authorization header and never logged or put in an error message.
Every answer is read with a size cap and a deadline for the whole request: a broken or hostile server
can neither fill the client's memory nor hold it for ever by sending one byte now and then (the
per-read timeout alone would wait for each of them).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import random
import ssl
import threading
import time
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ValidationError

from dpsynth.errors import DpsynthError
from dpsynth.knowledgesg.protocol import API, CHECKSUM_HEADER, AdapterReceipt, JobSpec, JobStatus, ServerInfo

log = logging.getLogger("dpsynth.knowledgesg")
M = TypeVar("M", bound=BaseModel)

MAX_ANSWER_BYTES = 16 * 1024 * 1024  # a JSON answer (status, receipt, report): far above any real one
REQUEST_DEADLINE_S = 900.0  # one request, upload to last byte of the answer (a 64 MB adapter at 1 Mbit/s: 512 s)


def dataset_limit(spec: JobSpec) -> int:
    """The largest dataset answer a job can honestly produce: every sample and answer at its token limit,
    48 bytes per token (a token of up to 4 characters, each JSON-escaped as \\uXXXX with a surrogate pair),
    plus 2 KiB of fields per record and 1 MiB of slack."""
    per_record = (spec.max_new_tokens + spec.answer_max_tokens) * 48 + 2048
    return spec.n_samples * per_record + 1024 * 1024


class ServerError(DpsynthError):
    """The server refused a request or could not be reached after the retries.

    ``status``: the HTTP status of a refusal (e.g. 404: the job or adapter is not on the server), None
    when the server could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ServerClient:
    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout_s: float = 120.0,
        max_retries: int = 8,
        backoff_s: float = 1.0,
        deadline_s: float = REQUEST_DEADLINE_S,
    ) -> None:
        """``timeout_s``: each connect, read or write; ``deadline_s``: one whole request with its answer."""
        self.url = url.rstrip("/")
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.deadline_s = deadline_s
        self._warned = False  # a retry has been shown as a warning
        host = urlsplit(self.url).hostname or ""
        if urlsplit(self.url).scheme == "http" and not _loopback(host):
            log.warning("server %s: plain http to another machine sends the token and the adapter unencrypted", url)
        # trust_env=False keeps proxies from the environment out, so a private CA comes from SSL_CERT_FILE here
        cafile = os.environ.get("SSL_CERT_FILE")
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=cafile) if cafile else True
        settings = dict(base_url=self.url, timeout=timeout_s, headers={"Authorization": f"Bearer {token}"})
        self._new_http = lambda: httpx.Client(**settings, trust_env=False, verify=verify)  # type: ignore[arg-type]
        self._http = self._new_http()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ServerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ transport
    def _request(
        self, method: str, path: str, *, retries: int | None = None, limit: int = MAX_ANSWER_BYTES, **kwargs: Any
    ) -> httpx.Response:
        """``retries``: this request's own bound (None: ``max_retries``); ``limit``: the largest answer read."""
        retries = self.max_retries if retries is None else min(retries, self.max_retries)
        last = ""
        for attempt in range(retries + 1):
            if attempt:
                delay = min(30.0, self.backoff_s * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
                time.sleep(delay)
            try:
                resp = self._send(method, path, limit, **kwargs)
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}"
                self._log_retry(method, path, last, attempt, retries)
                continue
            except _TooSlow:
                last = f"no complete answer within {self.deadline_s:g} s"
                self._log_retry(method, path, last, attempt, retries)
                continue
            if resp.status_code == 429 or resp.status_code >= 500:
                last = f"HTTP {resp.status_code}: {_reason(resp)}"
                retry_after = resp.headers.get("retry-after", "")
                if retry_after.isdigit() and attempt < retries:  # no wait when no retry follows
                    time.sleep(min(float(retry_after), 60.0))
                self._log_retry(method, path, last, attempt, retries)
                continue
            if resp.status_code >= 400:
                raise ServerError(
                    f"server {self.url}: {method} {path} refused (HTTP {resp.status_code}): {_reason(resp)}",
                    status=resp.status_code,
                )
            if resp.status_code >= 300:  # not followed: the token would go to wherever it points
                raise ServerError(
                    f"server {self.url}: {method} {path} answered with a redirect (HTTP {resp.status_code}); give "
                    "the server's own URL (--server), e.g. https:// instead of http://",
                    status=resp.status_code,
                )
            return resp
        raise ServerError(
            f"server {self.url}: {method} {path} failed after {retries} retries ({last}); "
            "check that the server is running (dpsynth server start) and reachable"
        )

    def _send(self, method: str, path: str, limit: int, **kwargs: Any) -> httpx.Response:
        """One request, bounded by the deadline as a whole.  It runs in a worker thread: the answer's body is
        checked against the deadline chunk by chunk, but httpx waits for the status line and headers with
        only the per-read timeout, so a server sending a header byte now and then would hold the request for
        days.  Past the deadline the client drops the connection with its connection pool and goes on."""
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["resp"] = self._send_now(method, path, limit, time.monotonic() + self.deadline_s, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller below
                box["exc"] = exc

        worker = threading.Thread(target=work, name="dpsynth-http", daemon=True)
        worker.start()
        worker.join(self.deadline_s + 0.5)  # the body's own check says it first, when the body is slow
        if worker.is_alive():  # still in the headers: its connection goes with the old pool
            stuck, self._http = self._http, self._new_http()
            threading.Thread(target=stuck.close, daemon=True).start()
            raise _TooSlow
        if "exc" in box:
            raise box["exc"]
        resp: httpx.Response = box["resp"]
        return resp

    def _send_now(self, method: str, path: str, limit: int, deadline: float, **kwargs: Any) -> httpx.Response:
        """One request; its answer read in chunks, refused past ``limit`` bytes (after decompression, so a
        gzip bomb is caught too) or past the deadline."""
        with self._http.stream(method, path, **kwargs) as resp:
            body = bytearray()
            for chunk in resp.iter_bytes():
                body += chunk
                if len(body) > limit:
                    raise ServerError(
                        f"server {self.url}: {method} {path} answered with more than {limit / 2**20:.1f} MiB, more "
                        "than any answer to this request can hold; check --server",
                        status=resp.status_code,
                    )
                if time.monotonic() > deadline:
                    raise _TooSlow
        # the body is decoded already: the encoding headers must not make httpx decode it again
        dropped = ("content-encoding", "content-length")
        headers = [(k, v) for k, v in resp.headers.multi_items() if k.lower() not in dropped]
        return httpx.Response(resp.status_code, headers=headers, content=bytes(body), request=resp.request)

    def _log_retry(self, method: str, path: str, why: str, attempt: int, retries: int) -> None:
        """The client's first retry is a warning (why it waits); later ones, and the blips of a long job's
        polling, go to the run log only."""
        if attempt == retries:
            return  # no retry follows: the error says it
        level = logging.INFO if self._warned else logging.WARNING
        self._warned = True
        log.log(level, "server %s: %s %s: %s; retrying (%d/%d)", self.url, method, path, why, attempt + 1, retries)

    def _answer(self, model: type[M], resp: httpx.Response, what: str) -> M:
        """The JSON body as ``model``; anything else (an HTML page, a proxy's login form, another API) is one
        ServerError saying what answered, never a traceback."""
        try:
            return model.model_validate(resp.json())
        except (ValueError, ValidationError):  # JSONDecodeError is a ValueError
            kind = resp.headers.get("content-type", "no content type").split(";")[0]
            raise ServerError(
                f"server {self.url}: {what} answered with something that is not a dpsynth server's reply ({kind}, "
                f"HTTP {resp.status_code}); check --server: it must be the URL of `dpsynth server start`"
            ) from None

    # ------------------------------------------------------------ API
    def info(self, *, retries: int | None = None) -> ServerInfo:
        """``retries``: fewer than ``max_retries`` for a pre-flight check, where a server that does not
        answer is most often a wrong URL or one not started, and the user should hear so in seconds."""
        return self._answer(ServerInfo, self._request("GET", f"{API}/info", retries=retries), "GET /info")

    def upload_adapter(self, data: bytes) -> AdapterReceipt:
        digest = hashlib.sha256(data).hexdigest()
        resp = self._request(
            "POST",
            f"{API}/adapters",
            content=data,
            headers={CHECKSUM_HEADER: digest, "Content-Type": "application/octet-stream"},
        )
        receipt = self._answer(AdapterReceipt, resp, "the adapter upload")
        if receipt.sha256 != digest:
            raise ServerError(f"server {self.url}: the adapter checksum it stored differs from ours; upload again")
        return receipt

    def create_job(self, spec: JobSpec) -> JobStatus:
        return self._answer(JobStatus, self._request("POST", f"{API}/jobs", json=spec.model_dump()), "creating the job")

    def status(self, job_id: str) -> JobStatus:
        return self._answer(JobStatus, self._request("GET", f"{API}/jobs/{job_id}"), "the job status")

    def dataset(self, job_id: str, spec: JobSpec | None = None) -> str:
        """The finished job's JSONL; ``spec`` (the job's) sets the size cap (``dataset_limit``)."""
        limit = dataset_limit(spec) if spec is not None else MAX_ANSWER_BYTES
        return self._request("GET", f"{API}/jobs/{job_id}/dataset", limit=limit).text

    def report(self, job_id: str) -> dict[str, Any]:
        resp = self._request("GET", f"{API}/jobs/{job_id}/report")
        try:
            body = resp.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ServerError(f"server {self.url}: the job report is not a JSON object; check --server")
        return body


class _TooSlow(Exception):
    """An answer still arriving at the request's deadline (retried like a lost connection)."""


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _reason(resp: httpx.Response) -> str:
    try:
        body = resp.json()
        msg = body.get("error") if isinstance(body, dict) else None
    except ValueError:
        msg = None
    text = " ".join(str(msg or resp.text or resp.reason_phrase).split())[:300]
    # the server's words reach the terminal: no escape sequence or other control character of theirs does
    return "".join(c if c.isprintable() else "?" for c in text)
