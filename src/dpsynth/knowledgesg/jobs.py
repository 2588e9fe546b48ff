"""Server-side job state on disk, one folder per client and job, so jobs survive a restart.

Layout under ``state_dir``::

    adapters/<client>/<adapter_id>.safetensors     uploaded DP adapters (checked before they are stored)
    jobs/<client>/<job_id>/job.json                spec + status (atomic rewrite on every change)
    jobs/<client>/<job_id>/instructions.jsonl      sampled instructions (append-only journal)
    jobs/<client>/<job_id>/judged.jsonl            professional model's keep/drop, reason and response
    jobs/<client>/<job_id>/dataset.jsonl           the result (instruction, response)
    jobs/<client>/<job_id>/report.json             counts, drop reasons, models, timings
    jobs/<client>/keys/<idempotency key>           job id of a create request that may be retried

Every lookup goes through the authenticated client's folder, so one client can never name another's
job or adapter; ids are checked against a strict pattern before they touch the filesystem.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dpsynth.io import atomic_write_bytes, atomic_write_json
from dpsynth.knowledgesg.protocol import JobSpec, JobStatus

_ID = re.compile(r"^[0-9a-f]{32}$")
ACTIVE = ("queued", "running")  # job states that still need their adapter and count against the quota


def new_id() -> str:
    return secrets.token_hex(16)


def valid_id(value: str) -> bool:
    return bool(_ID.match(value))


CLIENT_ID_RULE = "1 to 64 letters, digits, - and _"


def valid_client_id(value: str) -> bool:
    """The one rule for client ids, shared by the server config and ``dpsynth server token``.

    A client id names a folder under ``state_dir`` and a key in server.yaml, so it must be safe as both;
    the token command checks it too, so it never prints a config line the server would then refuse.
    """
    return 0 < len(value) <= 64 and value.replace("-", "").replace("_", "").isalnum()


def token_hash(token: str) -> str:
    """SHA-256 (hex) of a client token: what server.yaml stores (here, not in server.py, so that
    ``dpsynth server token`` runs without the server extra)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class JobConflict(Exception):
    """An idempotency key already names a job with other settings."""


class TooManyJobs(Exception):
    """The client already has its maximum of queued and running jobs."""


class UnknownAdapter(Exception):
    """A job names an adapter this client has not uploaded (or one the store has since dropped)."""


class JobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        for folder in (root / "adapters", root / "jobs"):
            # clients' adapters and the datasets made for them: the server's user alone reads them, whatever
            # the umask gives the files inside
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            folder.chmod(0o700)
        self._lock = threading.Lock()

    # ------------------------------------------------------------ adapters
    def adapter_path(self, client: str, adapter_id: str) -> Path:
        return self.root / "adapters" / client / f"{adapter_id}.safetensors"

    def save_adapter(self, client: str, data: bytes, keep: int | None = None) -> str:
        """Store an uploaded adapter; with ``keep``, the client's oldest adapters beyond ``keep`` are removed.

        Why: every upload is a file on the server's disk, and a client that uploads in a loop (or a resume
        that re-uploads) would otherwise fill it.  Only adapters no queued or running job names are removed,
        under the lock that job creation takes, so a job never loses its adapter between its creation and
        its run; a client whose saved adapter was removed re-uploads it on resume (the server answers 404).
        """
        with self._lock:
            adapter_id = new_id()
            path = self.adapter_path(client, adapter_id)
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, data)
            if keep is not None:
                self._drop_old_adapters(client, keep, spare=adapter_id)
            return adapter_id

    def _drop_old_adapters(self, client: str, keep: int, spare: str) -> None:
        in_use = {j["spec"]["adapter_id"] for j in self.jobs_of(client) if j["status"]["state"] in ACTIVE}
        files = [f for f in self.adapter_path(client, spare).parent.glob("*.safetensors") if valid_id(f.stem)]
        files.sort(key=lambda f: (f.stat().st_mtime_ns, f.name))  # oldest first
        excess = len(files) - keep
        for f in files:
            if excess <= 0:
                break
            if f.stem != spare and f.stem not in in_use:
                f.unlink(missing_ok=True)
                excess -= 1

    def adapters_of(self, client: str) -> list[str]:
        folder = self.root / "adapters" / client
        return sorted(f.stem for f in folder.glob("*.safetensors") if valid_id(f.stem)) if folder.is_dir() else []

    def has_adapter(self, client: str, adapter_id: str) -> bool:
        return valid_id(adapter_id) and self.adapter_path(client, adapter_id).is_file()

    # ------------------------------------------------------------ jobs
    def job_dir(self, client: str, job_id: str) -> Path:
        return self.root / "jobs" / client / job_id

    def create(
        self, client: str, spec: JobSpec, max_active: int | None = None, keep: int | None = None
    ) -> tuple[dict[str, Any], bool]:
        """A new queued job, or (on a retried create with the same idempotency key) the existing one.

        A key already used for a job with other settings is a ``JobConflict`` (a client bug would otherwise
        get the old job's data silently); a new job beyond ``max_active`` queued or running jobs of the
        client is ``TooManyJobs``, checked under the store's lock so simultaneous creates cannot pass it; an
        adapter the client has not uploaded is ``UnknownAdapter``, checked under the same lock as the removal
        of old adapters (``save_adapter``), so a job never names a removed one.  With ``keep``, the client's
        oldest finished jobs beyond ``keep`` are removed: every job is a folder on the server's disk."""
        with self._lock:
            keyfile = self.root / "jobs" / client / "keys" / (spec.idempotency_key or "")
            existing = self.job_for_key(client, spec.idempotency_key) if spec.idempotency_key else None
            job = self.get(client, existing) if existing else None
            if job is not None:
                try:
                    same = JobSpec.model_validate(job["spec"]) == spec
                except ValidationError:  # written by another version of the job format
                    same = False
                if not same:
                    raise JobConflict(job["status"]["job_id"])
                return job, False
            if not self.has_adapter(client, spec.adapter_id):
                raise UnknownAdapter(spec.adapter_id)
            if max_active is not None and self.active_count(client) >= max_active:
                raise TooManyJobs(max_active)
            job_id = new_id()
            now = time.time()
            status = JobStatus(job_id=job_id, state="queued", stage="queued", created=now, updated=now)
            job = {"client": client, "spec": spec.model_dump(), "status": status.model_dump()}
            d = self.job_dir(client, job_id)
            d.mkdir(parents=True)
            atomic_write_json(d / "job.json", job)
            if spec.idempotency_key:
                keyfile.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(keyfile, job_id.encode("ascii"))
            if keep is not None:
                self._drop_old_jobs(client, keep)
            return job, True

    def _drop_old_jobs(self, client: str, keep: int) -> None:
        """Remove the client's oldest done or failed jobs (and the idempotency keys naming them) beyond
        ``keep``; queued and running jobs are never removed."""
        jobs = sorted(self.jobs_of(client), key=lambda j: j["status"]["created"])
        finished = [j["status"]["job_id"] for j in jobs if j["status"]["state"] not in ACTIVE]
        gone = set(finished[: max(0, len(jobs) - keep)])
        keys = self.root / "jobs" / client / "keys"
        for key in keys.iterdir() if gone and keys.is_dir() else ():
            if key.is_file() and key.read_text(encoding="ascii").strip() in gone:
                key.unlink(missing_ok=True)
        for job_id in gone:
            shutil.rmtree(self.job_dir(client, job_id), ignore_errors=True)

    def job_for_key(self, client: str, key: str) -> str | None:
        keyfile = self.root / "jobs" / client / "keys" / key
        return keyfile.read_text(encoding="ascii").strip() if keyfile.is_file() else None

    def get(self, client: str, job_id: str) -> dict[str, Any] | None:
        if not valid_id(job_id):
            return None
        path = self.job_dir(client, job_id) / "job.json"
        if not path.is_file():
            return None
        return dict(json.loads(path.read_text(encoding="utf-8")))

    def count_crash(self, client: str, job_id: str) -> int:
        """One more start that found the job "running" (the process died during it); returns the count.  Kept
        beside the status, not in it: the status is what clients read, in a fixed schema."""
        with self._lock:
            job = self.get(client, job_id)
            assert job is not None
            job["crashes"] = int(job.get("crashes", 0)) + 1
            atomic_write_json(self.job_dir(client, job_id) / "job.json", job)
            return int(job["crashes"])

    def update(self, client: str, job_id: str, **status: Any) -> dict[str, Any]:
        with self._lock:
            job = self.get(client, job_id)
            assert job is not None
            job["status"].update(status, updated=time.time())
            atomic_write_json(self.job_dir(client, job_id) / "job.json", job)
            return job

    def jobs_of(self, client: str) -> list[dict[str, Any]]:
        base = self.root / "jobs" / client
        if not base.is_dir():
            return []
        jobs = [self.get(client, d.name) for d in base.iterdir() if d.is_dir() and valid_id(d.name)]
        return sorted((j for j in jobs if j is not None), key=lambda j: j["status"]["created"])

    def clients(self) -> list[str]:
        return sorted(d.name for d in (self.root / "jobs").iterdir() if d.is_dir())

    def pending(self) -> list[dict[str, Any]]:
        """Queued jobs and jobs a restart interrupted ("running"), oldest first."""
        jobs = [j for c in self.clients() for j in self.jobs_of(c) if j["status"]["state"] in ACTIVE]
        return sorted(jobs, key=lambda j: j["status"]["created"])

    def active_count(self, client: str) -> int:
        return sum(1 for j in self.jobs_of(client) if j["status"]["state"] in ACTIVE)
