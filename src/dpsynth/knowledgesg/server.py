"""``dpsynth server start``: the KnowledgeSG server as a real HTTP service (FastAPI + uvicorn).

It holds the public base model and a stronger "professional" generator.  Clients (authenticated by a
bearer token whose SHA-256 is in the server config) upload a DP LoRA adapter, create a job, poll it and
download the synthetic dataset.  Jobs run one at a time in a worker thread and their state is on disk,
so a restarted server continues them.  The OpenAPI schema is at ``/openapi.json``.

A network service is an attack surface, so: every route but ``/v1/health`` (and the OpenAPI schema and
pages) needs a token, checked from the headers before any body is received; a client only
ever sees its own adapters and jobs (ids are random and looked up under its own folder); uploads are
size-limited while they stream, checksum-verified, parsed as safetensors only and shape-checked
(knowledgesg/adapter.py); malformed requests get a 4xx with one clear line, and an unexpected failure a
bare 500 without a traceback.

This module is the service (authentication, the job worker, the routes); ``server_config.py`` is its YAML
file, and ``serving.py`` runs it in the foreground with uvicorn and handles the signals that stop it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import threading
import time
from collections import Counter
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from dpsynth.errors import ConfigError
from dpsynth.knowledgesg.adapter import AdapterError, adapter_rank, read_adapter
from dpsynth.knowledgesg.jobs import (
    JobConflict,
    JobStore,
    TooManyJobs,
    UnknownAdapter,
    token_hash,
    valid_id,
)
from dpsynth.knowledgesg.protocol import API, CHECKSUM_HEADER, AdapterReceipt, JobSpec, JobStatus, ServerInfo
from dpsynth.knowledgesg.server_config import ServerConfig

log = logging.getLogger("dpsynth.server")


class RequestRecorder:
    """ASGI middleware: tee every request body into a file (for the audit that no private text arrives)."""

    def __init__(self, app: Any, path: Path) -> None:
        self.app = app
        self.path = path
        self._lock = threading.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        head = f"\n== {scope['method']} {scope['path']}?{scope.get('query_string', b'').decode('latin-1')}\n"
        with self._lock, self.path.open("ab") as f:
            f.write(head.encode("utf-8"))

        async def recording_receive() -> Any:
            message = await receive()
            if message.get("type") == "http.request" and message.get("body"):
                with self._lock, self.path.open("ab") as f:
                    f.write(message["body"])
            return message

        await self.app(scope, recording_receive, send)


UNAUTHORIZED = "missing or invalid bearer token (Authorization: Bearer TOKEN)"
JSON_BODY_LIMIT = 64 * 1024  # a JobSpec is well under 2 KB; the limit leaves room, not memory, to spare
TOO_LARGE = f"request body larger than {JSON_BODY_LIMIT // 1024} KB (only the adapter upload may be larger)"
INTERRUPTED = "interrupted (the server stopped); continues when it starts again"
MAX_CRASHES = 3  # starts that found a job "running" (the process died in it) before it is marked failed


class _BearerAuth:
    """ASGI middleware: check the bearer token in the request headers before any route runs.

    A token check in a route dependency alone comes too late: FastAPI reads and parses a JSON body before
    it solves the dependencies, so anyone could make the server receive and parse a body of any size (and
    get a 422 that tells them about the schema).  Here the headers decide: a request without a valid token
    gets a 401 and its body is never received.  ``open_paths`` (health and the OpenAPI schema and pages)
    never read a body.

    An authenticated client is trusted with its token, not with the server's memory: apart from the
    adapter upload (``streamed_paths``, size-limited while it streams), a request body is a small JSON
    document, so more than ``JSON_BODY_LIMIT`` bytes gets a 413 as soon as the count passes it, from the
    Content-Length header when there is one, before FastAPI buffers and parses it.
    """

    def __init__(self, app: Any, service: Service, open_paths: frozenset[str], streamed_paths: frozenset[str]) -> None:
        self.app = app
        self.service = service
        self.open_paths = open_paths
        self.streamed_paths = streamed_paths

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        authorization = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), None)
        if self.service.client_for(authorization) is None:
            await _error(send, 401, UNAUTHORIZED, [(b"www-authenticate", b"Bearer")])
            return
        if scope["path"] in self.streamed_paths:  # the adapter upload limits its own stream
            await self.app(scope, receive, send)
            return
        # every other request is a small JSON document: read at most JSON_BODY_LIMIT bytes, then replay it
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and (not declared.isdigit() or int(declared) > JSON_BODY_LIMIT):
            await _error(send, 413, TOO_LARGE)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            size += len(message.get("body", b""))
            if size > JSON_BODY_LIMIT:
                await _error(send, 413, TOO_LARGE)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replayed() -> Any:
            return replay.pop() if replay else await receive()

        await self.app(scope, replayed, send)


UPLOAD_IDLE_S = 60.0  # an upload that sends nothing for this long is dropped (408), freeing its place


async def _read_body(request: Request, limit: int, limit_mb: float, deadline_s: float) -> bytes:
    """The request body, refused (413) as soon as it passes ``limit`` bytes, whatever Content-Length said, and
    dropped (408) when no byte arrives for ``UPLOAD_IDLE_S`` or the whole body has not arrived after
    ``deadline_s``: a connection that died without a word, or one that sends a byte now and then, would
    otherwise hold its client's only upload place (and one of the server's few) for good."""
    buf = bytearray()
    chunks = request.stream().__aiter__()
    end = time.monotonic() + deadline_s
    while True:
        wait = min(UPLOAD_IDLE_S, end - time.monotonic())
        try:
            if wait <= 0:
                raise TimeoutError
            chunk = await asyncio.wait_for(chunks.__anext__(), wait)
        except StopAsyncIteration:
            return bytes(buf)
        except TimeoutError:
            why = f"sent nothing for {UPLOAD_IDLE_S:g} s" if wait == UPLOAD_IDLE_S else f"took over {deadline_s:g} s"
            raise HTTPException(408, f"the upload {why}; send it again") from None
        buf += chunk
        if len(buf) > limit:
            raise HTTPException(413, f"adapter larger than the server's limit of {limit_mb:g} MB")


async def _error(send: Any, status: int, text: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    """Answer from the middleware, before any route runs: one JSON line, as the routes' errors are."""
    body = json.dumps({"error": text}).encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode("ascii"))]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
    await send({"type": "http.response.body", "body": body})


class Service:
    """The state behind the routes: config, job store, models and the worker thread."""

    def __init__(self, cfg: ServerConfig) -> None:
        self.cfg = cfg
        self.store = JobStore(Path(cfg.state_dir).expanduser())
        self._hashes = {cid: c.token_sha256 for cid, c in cfg.clients.items()}
        self.base: Any = None
        self.professional: Any = None
        self.load_error: str | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._force = threading.Event()
        self._deadline: float | None = None
        self._announced = False  # "stopping: waiting for ..." is logged once
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        t = threading.Thread(target=self._worker, name="knowledgesg-worker", daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self, timeout: float | None = None) -> bool:
        """Stop the worker at its next safe point, wait for it, then close the models.

        The order matters.  The professional model (llama.cpp) and torch run native threads: closing the
        professional while the worker still uses it fails the job, and a worker still inside native code
        when the interpreter exits aborts the process ("terminate called without an active exception").
        So the worker is joined first, and the models are closed only once it is gone.

        Returns True when that is done (calling it again is cheap).  Returns False, closing nothing, when
        the worker is still busy ``timeout`` seconds after the first call (all calls share that deadline)
        or once ``force()`` was called: the caller must then exit without interpreter teardown; the job's
        journals are on disk and the next start continues it.
        """
        self._stop.set()
        self._wake.set()
        if timeout is not None:
            deadline = time.monotonic() + timeout
            self._deadline = deadline if self._deadline is None else min(self._deadline, deadline)
        busy = [t for t in self._threads if t.is_alive()]
        for t in busy:  # an idle worker ends at once: only a busy one is worth a word
            if not self._force.is_set():
                t.join(0.5 if self._deadline is None else max(0.0, min(0.5, self._deadline - time.monotonic())))
        busy = [t for t in busy if t.is_alive()]
        if busy and not self._force.is_set() and not self._announced:
            self._announced = True
            log.info(
                "stopping: waiting for the job worker to reach a safe point (at most %s; Ctrl-C again to exit "
                "at once; an unfinished job continues on the next start)",
                "no limit" if self._deadline is None else f"{max(0.0, self._deadline - time.monotonic()):.0f} s",
            )
        for t in busy:
            while t.is_alive() and not self._force.is_set():
                if self._deadline is not None and time.monotonic() >= self._deadline:
                    break
                t.join(0.1)
        if any(t.is_alive() for t in self._threads):
            return False
        professional, self.professional = self.professional, None
        if professional is not None and hasattr(professional, "close"):
            professional.close()
        return True

    def force(self) -> None:
        """Stop waiting for the worker (a second Ctrl-C): ``stop()`` returns False at once."""
        self._stop.set()
        self._force.set()
        self._wake.set()

    @property
    def ready(self) -> bool:
        return self.base is not None

    def _load_models(self) -> None:
        from dpsynth.generators import build_generator
        from dpsynth.knowledgesg.work import ServerBaseModel

        t0 = time.time()
        self.base = ServerBaseModel(self.cfg.base_model)
        log.info("base model %s loaded in %.1f s", self.cfg.base_model, time.time() - t0)
        if self._stop.is_set():  # stopping already: do not start llama.cpp only to close it again
            return
        self.professional = build_generator(self.cfg.professional)
        log.info("professional model %s ready", self.cfg.professional.name)

    def _worker(self) -> None:
        try:
            self._load_models()
        except Exception as exc:  # noqa: BLE001 - shown by /v1/health and the log, the server stays up
            # /v1/health answers without a token: the type only there, the message (paths) in server.log
            self.load_error = f"could not load the models ({type(exc).__name__}); see server.log"
            log.error("could not load the models: %s", f"{type(exc).__name__}: {exc}"[:500])
            return
        stuck: set[tuple[str, str]] = set()  # jobs that could not even be marked failed (a full disk)
        while not self._stop.is_set():
            pending = [j for j in self.store.pending() if (j["client"], j["status"]["job_id"]) not in stuck]
            if not pending:
                self._wake.wait(timeout=1.0)
                self._wake.clear()
                continue
            job = pending[0]
            try:
                self._run(job)
            except Exception as exc:  # noqa: BLE001 - one job must never stop the worker for every client
                # outside the job's own handling: a job.json this version cannot read, a disk full while
                # recording the job's state
                key = (job["client"], job["status"]["job_id"])
                log.exception("job %s/%s could not be run", *key)
                try:
                    self.store.update(
                        *key, state="failed", stage="failed", error=f"{type(exc).__name__} (see server log)"
                    )
                except Exception:  # noqa: BLE001 - skipped until a restart; the others go on
                    stuck.add(key)
                    self._wake.wait(timeout=1.0)

    def _run(self, job: dict[str, Any]) -> None:
        from dpsynth.knowledgesg.work import JobInterrupted, run_job

        client, job_id = job["client"], job["status"]["job_id"]
        spec = JobSpec.model_validate(job["spec"])
        # "running" on disk: the server was killed during the job; INTERRUPTED: it was stopped cleanly
        killed = job["status"]["state"] == "running"
        resumed = killed or job["status"]["stage"] == INTERRUPTED
        if killed and self.store.count_crash(client, job_id) >= MAX_CRASHES:
            # a job that takes the whole process down would otherwise do so at every start, first in line
            log.error("job %s/%s: the server stopped during it %d times; marked failed", client, job_id, MAX_CRASHES)
            self.store.update(
                client, job_id, state="failed", stage="failed", error="the server stopped during this job repeatedly"
            )
            return
        log.info("job %s/%s %s", client, job_id, "resumed after a restart" if resumed else "started")
        self.store.update(client, job_id, state="running", stage="starting")

        def progress(stage: str, counts: dict[str, int]) -> None:
            self.store.update(client, job_id, stage=stage, progress=counts)

        try:
            data = self.store.adapter_path(client, spec.adapter_id).read_bytes()
            report = run_job(
                self.store.job_dir(client, job_id),
                spec,
                data,
                self.base,
                self.professional,
                progress,
                should_stop=self._stop.is_set,
            )
        except JobInterrupted:
            self.store.update(client, job_id, state="queued", stage=INTERRUPTED)
            log.info("job %s/%s interrupted by the server stopping; it continues on the next start", client, job_id)
            return
        except Exception as exc:  # noqa: BLE001 - a failed job is reported to its client, the server goes on
            msg = str(exc) if isinstance(exc, AdapterError | ConfigError) else f"{type(exc).__name__} (see server log)"
            log.exception("job %s/%s failed", client, job_id)
            self.store.update(client, job_id, state="failed", stage="failed", error=msg[:500])
            return
        self.store.update(client, job_id, state="done", stage="done", progress={"returned": report["n_returned"]})
        log.info("job %s/%s done: %d records", client, job_id, report["n_returned"])

    # ------------------------------------------------------------ auth
    def client_for(self, authorization: str | None) -> str | None:
        scheme, _, token = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():  # the scheme is case-insensitive (RFC 7235)
            return None
        h = token_hash(token.strip())
        found = None
        for cid, expected in self._hashes.items():  # compare with every entry: timing does not tell which
            if hmac.compare_digest(h, expected):
                found = cid
        return found

    def info(self) -> ServerInfo:
        return ServerInfo(
            base_model=self.cfg.base_model,
            professional=self.cfg.professional.name,
            max_adapter_bytes=int(self.cfg.max_adapter_mb * 1024 * 1024),
            max_samples=self.cfg.max_samples,
            ready=self.ready,
        )


def create_app(cfg: ServerConfig, *, start_worker: bool = True) -> Any:
    service = Service(cfg)

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        if start_worker:
            service.start()
        yield
        # uvicorn has stopped accepting requests; the worker finishes its batch in a thread of its own
        await asyncio.to_thread(service.stop, cfg.shutdown_timeout_s)

    app = FastAPI(
        title="dpsynth KnowledgeSG server",
        version="1",
        description="Receives DP LoRA adapters, generates instructions, filters and answers them.",
        lifespan=lifespan,
    )
    app.state.service = service
    uploading: Counter[str] = Counter()  # uploads being received, per client

    # ------------------------------------------------------------ errors: one line, never a traceback
    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors()[:5]:
            loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            parts.append(f"{loc or 'body'}: {' '.join(str(err.get('msg', 'invalid')).split())}")
        return JSONResponse({"error": "; ".join(parts) or "invalid request"}, status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": "internal server error (see the server log)"}, status_code=500)

    # ------------------------------------------------------------ auth
    # first the headers, before any body is received (_BearerAuth); then each route asks for the client id
    open_paths = (f"{API}/health", app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url)
    app.add_middleware(
        _BearerAuth,
        service=service,
        open_paths=frozenset(p for p in open_paths if p),
        streamed_paths=frozenset({f"{API}/adapters"}),
    )

    def client_id(request: Request) -> str:
        cid = service.client_for(request.headers.get("authorization"))
        if cid is None:  # unreachable behind _BearerAuth; kept so that no route depends on the middleware alone
            raise HTTPException(401, UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})
        return cid

    def own_job(job_id: str, cid: str) -> dict[str, Any]:
        job = service.store.get(cid, job_id) if valid_id(job_id) else None
        if job is None:
            raise HTTPException(404, f"no job {job_id[:40]!r} for this client")
        return job

    # ------------------------------------------------------------ routes
    @app.get(f"{API}/health")
    def health() -> dict[str, Any]:
        state = "ok" if service.ready else ("error" if service.load_error else "loading")
        return {"status": state, "error": service.load_error}

    @app.get(f"{API}/info", response_model=ServerInfo)
    def info(cid: str = Depends(client_id)) -> ServerInfo:
        return service.info()

    @app.post(f"{API}/adapters", status_code=201, response_model=AdapterReceipt)
    async def upload_adapter(request: Request, cid: str = Depends(client_id)) -> AdapterReceipt:
        """Body: the raw adapter_model.safetensors; header X-Content-SHA256: its hex digest."""
        expected = (request.headers.get(CHECKSUM_HEADER) or "").lower()
        if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
            raise HTTPException(400, f"header {CHECKSUM_HEADER} must be the SHA-256 hex digest of the body")
        limit = int(cfg.max_adapter_mb * 1024 * 1024)
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            raise HTTPException(413, f"adapter larger than the server's limit of {cfg.max_adapter_mb:g} MB")
        if not service.ready:
            raise HTTPException(
                503, "the server is still loading its models; retry shortly", headers={"Retry-After": "5"}
            )
        if uploading[cid]:
            raise HTTPException(
                429, "another upload from this client is in progress; retry shortly", headers={"Retry-After": "5"}
            )
        if sum(uploading.values()) >= cfg.max_concurrent_uploads:
            raise HTTPException(
                503, "the server is receiving other uploads; retry shortly", headers={"Retry-After": "5"}
            )
        # the place is held until the body is checked and stored or refused: the bytes are in memory till then
        uploading[cid] += 1  # the event loop runs one handler step at a time: no lock needed
        try:
            return await receive_adapter(request, cid, expected, limit)
        finally:
            uploading[cid] -= 1

    async def receive_adapter(request: Request, cid: str, expected: str, limit: int) -> AdapterReceipt:
        data = await _read_body(request, limit, cfg.max_adapter_mb, cfg.upload_timeout_s)
        digest = hashlib.sha256(data).hexdigest()
        if not hmac.compare_digest(digest, expected):
            raise HTTPException(
                400, f"checksum mismatch after {len(data)} bytes: the upload was truncated or corrupted; send it again"
            )
        try:
            weights = await asyncio.to_thread(read_adapter, data, service.base.model)
        except AdapterError as exc:
            raise HTTPException(422, str(exc)) from None
        adapter_id = await asyncio.to_thread(service.store.save_adapter, cid, data, cfg.max_adapters_per_client)
        log.info("client %s uploaded adapter %s (%d bytes)", cid, adapter_id, len(data))
        return AdapterReceipt(
            adapter_id=adapter_id,
            sha256=digest,
            bytes=len(data),
            tensors=2 * len(weights),
            lora_r=adapter_rank(weights),
        )

    @app.post(f"{API}/jobs", status_code=202, response_model=JobStatus)
    def create_job(spec: JobSpec, cid: str = Depends(client_id)) -> JobStatus:
        if spec.base_model != cfg.base_model:
            raise HTTPException(
                422,
                f"base_model {spec.base_model[:100]!r}: this server holds {cfg.base_model!r}; "
                "fine-tune that model (finetune.model) or use another server",
            )
        if spec.n_samples > cfg.max_samples:
            raise HTTPException(422, f"n_samples: at most {cfg.max_samples} per job on this server")
        try:
            job, created = service.store.create(
                cid, spec, max_active=cfg.max_active_jobs_per_client, keep=cfg.max_jobs_per_client
            )
        except JobConflict as exc:
            raise HTTPException(
                409, f"idempotency_key: already used for job {exc} with other settings; use a new key"
            ) from None
        except UnknownAdapter:
            raise HTTPException(404, f"no adapter {spec.adapter_id!r} for this client; upload it first") from None
        except TooManyJobs:
            raise HTTPException(
                429,
                "too many queued or running jobs for this client; wait for one to finish",
                headers={"Retry-After": "30"},
            ) from None
        if created:
            log.info("client %s created job %s (%d samples)", cid, job["status"]["job_id"], spec.n_samples)
        service._wake.set()
        return JobStatus.model_validate(job["status"])

    @app.get(f"{API}/jobs", response_model=list[JobStatus])
    def list_jobs(cid: str = Depends(client_id)) -> list[JobStatus]:
        return [JobStatus.model_validate(j["status"]) for j in service.store.jobs_of(cid)]

    @app.get(f"{API}/jobs/{{job_id}}", response_model=JobStatus)
    def job_status(job_id: str, cid: str = Depends(client_id)) -> JobStatus:
        return JobStatus.model_validate(own_job(job_id, cid)["status"])

    def _finished_file(job_id: str, cid: str, name: str) -> Path:
        job = own_job(job_id, cid)
        if job["status"]["state"] != "done":
            raise HTTPException(409, f"job {job_id} is {job['status']['state']}, not done; poll its status")
        return service.store.job_dir(cid, job_id) / name

    @app.get(f"{API}/jobs/{{job_id}}/dataset", response_class=PlainTextResponse)
    def job_dataset(job_id: str, cid: str = Depends(client_id)) -> PlainTextResponse:
        path = _finished_file(job_id, cid, "dataset.jsonl")
        return PlainTextResponse(path.read_text(encoding="utf-8"), media_type="application/x-ndjson")

    @app.get(f"{API}/jobs/{{job_id}}/report")
    def job_report(job_id: str, cid: str = Depends(client_id)) -> Any:
        return json.loads(_finished_file(job_id, cid, "report.json").read_text(encoding="utf-8"))

    if cfg.record_requests:
        return RequestRecorder(app, service.store.root / "requests.log")
    return app
