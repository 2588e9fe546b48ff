"""KnowledgeSG pieces without real models: wire format, adapter checks, job store, and the HTTP API
served by uvicorn on 127.0.0.1 around a tiny torch model (the real-model, two-process tests are in
test_knowledgesg_e2e.py)."""

from __future__ import annotations

import hashlib
import pickle
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from safetensors.torch import save

from dpsynth.knowledgesg.adapter import AdapterError, merged_copy, read_adapter
from dpsynth.knowledgesg.jobs import JobConflict, JobStore, TooManyJobs, UnknownAdapter, token_hash
from dpsynth.knowledgesg.protocol import (
    CHECKSUM_HEADER,
    JobSpec,
    LoraSpec,
    PromptSpec,
    format_record,
    parse_instruction,
)
from dpsynth.knowledgesg.server import create_app
from dpsynth.knowledgesg.server_config import ServerConfig
from dpsynth.knowledgesg.work import judge

from .conftest import trickle_server


class TinyLM(torch.nn.Module):
    """Linear layers named like a Llama decoder (model.layers.i.self_attn.{q,v}_proj)."""

    def __init__(self, hidden: int = 8, kv: int = 4, layers: int = 2) -> None:
        super().__init__()
        self.model = torch.nn.Module()
        self.model.layers = torch.nn.ModuleList()
        for _ in range(layers):
            layer = torch.nn.Module()
            layer.self_attn = torch.nn.Module()
            layer.self_attn.q_proj = torch.nn.Linear(hidden, hidden, bias=False)
            layer.self_attn.v_proj = torch.nn.Linear(hidden, kv, bias=False)
            self.model.layers.append(layer)


def lora_tensors(hidden: int = 8, kv: int = 4, layers: int = 2, r: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for i in range(layers):
        for name, fan_out in (("q_proj", hidden), ("v_proj", kv)):
            pre = f"base_model.model.model.layers.{i}.self_attn.{name}"
            out[f"{pre}.lora_A.weight"] = torch.randn(r, hidden, generator=g)
            out[f"{pre}.lora_B.weight"] = torch.randn(fan_out, r, generator=g)
    return out


LORA = LoraSpec(r=2, alpha=4, target_modules=["q_proj", "v_proj"])


# ------------------------------------------------------------------ wire format
def test_record_format_round_trip() -> None:
    text = format_record("  What dose of   aspirin is safe?\n", "Usually 75-100 mg daily.")
    assert text == "Question: What dose of aspirin is safe?\nAnswer: Usually 75-100 mg daily."
    assert parse_instruction(text) == "What dose of aspirin is safe?"
    assert parse_instruction("Question: How is type 2 diabetes diagnosed? Answer: HbA1c.") == (
        "How is type 2 diabetes diagnosed?"
    )
    assert parse_instruction("Question: ok") is None  # too short to be an instruction
    assert parse_instruction("") is None


def test_judge_parses_verdicts() -> None:
    assert judge("KEEP: a clear clinical question") == (True, "a clear clinical question")
    assert judge("Drop - not medical")[0] is False
    keep, reason = judge("I think this is fine")
    assert keep is False and "no KEEP/DROP" in reason


# ------------------------------------------------------------------ adapter checks
def test_valid_adapter_is_read_and_merged_exactly() -> None:
    base = TinyLM()
    before = base.model.layers[0].self_attn.q_proj.weight.detach().clone()
    tensors = lora_tensors()
    weights = read_adapter(save(tensors), base, LORA)
    assert len(weights) == 4
    merged = merged_copy(base, weights, alpha=4)
    a = tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]
    b = tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"]
    expected = before + (4 / 2) * (b @ a)  # W + (alpha / r) B A
    assert torch.allclose(merged.model.layers[0].self_attn.q_proj.weight, expected, atol=1e-6)
    assert torch.equal(base.model.layers[0].self_attn.q_proj.weight, before)  # the base is never modified


@pytest.mark.parametrize(
    "case,message",
    [
        ("other_base", "another base model"),
        ("unknown_module", "does not have"),
        ("not_lora", "only LoRA weights"),
        ("missing_b", "not both"),
        ("nan", "NaN"),
        ("pickle", "not a safetensors file"),
        ("truncated", "safetensors"),
        ("empty", "not a safetensors file"),
        ("rank", "rank"),
        ("undeclared_target", "not in the declared"),
    ],
)
def test_bad_adapters_are_refused(case: str, message: str) -> None:
    base = TinyLM()
    t = lora_tensors()
    if case == "other_base":
        t = lora_tensors(hidden=16, kv=4)
    elif case == "unknown_module":
        t["base_model.model.model.layers.9.self_attn.q_proj.lora_A.weight"] = torch.zeros(2, 8)
    elif case == "not_lora":
        t["base_model.model.model.layers.0.self_attn.q_proj.weight"] = torch.zeros(8, 8)
    elif case == "missing_b":
        del t["base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"]
    elif case == "nan":
        t["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"][0, 0] = float("nan")
    elif case == "rank":
        t = lora_tensors(r=3)
    data = save(t)
    if case == "pickle":
        data = pickle.dumps({"x": 1})
    elif case == "truncated":
        data = data[: len(data) // 2]
    elif case == "empty":
        data = b""
    lora = LoraSpec(r=2, alpha=4, target_modules=["q_proj"]) if case == "undeclared_target" else LORA
    with pytest.raises(AdapterError, match=message):
        read_adapter(data, base, lora)


# ------------------------------------------------------------------ job store
def _spec(adapter_id: str, key: str | None = None, **kw: Any) -> JobSpec:
    return JobSpec(
        adapter_id=adapter_id,
        base_model="tiny",
        lora=LORA,
        prompt=PromptSpec(label="medical", task="question and answer"),
        domain="medical",
        n_samples=kw.pop("n_samples", 3),
        idempotency_key=key,
        **kw,
    )


def test_a_question_whose_request_failed_is_asked_again_not_journalled_as_dropped(tmp_path: Path) -> None:
    """Regression: a question whose filter or answer request failed (a server restarting, a timeout) was
    journalled as "not kept", so a continued job never asked it again and the job ended short.  Now it is
    asked once more at the end, and left unjournalled (for the job's next attempt) if that fails too."""
    from dpsynth.generators.base import Completion
    from dpsynth.knowledgesg.work import _judge_and_answer

    class Flaky:
        name = "professional"

        def __init__(self) -> None:
            self.asked: list[str] = []

        def generate(self, requests: Any, on_completion: Any = None) -> list[Completion]:
            out = []
            for r in requests:
                text = r.messages[-1].content
                q = text.split("Question: ")[-1].strip('"').split('"')[0]
                self.asked.append(q)
                first = self.asked.count(q) == 1
                if ("q2" in q and "screen" in text and first) or ("q5" in q and "expert" in text) or "q7" in q:
                    out.append(Completion("", error="HTTP 502 from http://pro/v1 (after 4 retries)"))
                elif "screen" in text:
                    out.append(Completion("KEEP: clear"))
                else:
                    out.append(Completion(f"An answer to {q}."))
            return out

    questions = [f"What is q{i}?" for i in range(9)]
    pro = Flaky()
    judged = _judge_and_answer(tmp_path, _spec("0" * 32, n_samples=20), questions, pro, lambda *a: None)
    by_q = {j["instruction"]: j for j in judged}
    assert by_q["What is q2?"]["keep"] and by_q["What is q2?"]["response"] == "An answer to What is q2?."
    # failed twice: not journalled, so the job's next attempt asks them again
    assert "What is q5?" not in by_q and "What is q7?" not in by_q and len(judged) == 7
    journal = (tmp_path / "judged.jsonl").read_text()
    assert "q5" not in journal and "professional model error" not in journal and "gave no answer" not in journal
    again = _judge_and_answer(tmp_path, _spec("0" * 32, n_samples=20), questions, Flaky(), lambda *a: None)
    assert len(again) == 7 and {j["instruction"] for j in again} == set(by_q)


def test_a_resumed_sampling_job_does_not_replay_its_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A seeded job stopped after its first batch and continued: the continuation draws new sampling seeds
    (restarting from the job's seed would sample the same batch again and throw it away as duplicates)."""
    import random
    from types import SimpleNamespace

    import dpsynth.lm
    from dpsynth.knowledgesg import work

    seeds: list[int] = []

    def fake_generate(model: Any, tok: Any, prompt: str, k: int, *, seed: int, **kw: Any) -> list[str]:
        seeds.append(seed)
        rng = random.Random(seed)
        return [f"Question: What causes condition number {rng.getrandbits(40)} in adults?" for _ in range(k)]

    monkeypatch.setattr(dpsynth.lm, "generate", fake_generate)
    monkeypatch.setattr(dpsynth.lm, "RecordFormat", lambda tok, ft, task: SimpleNamespace(prefix=lambda label: "Q:"))
    monkeypatch.setattr(work, "read_adapter", lambda *a: None)
    monkeypatch.setattr(work, "merged_copy", lambda *a: object())
    base: Any = SimpleNamespace(model=None, tok=None, device="cpu", name="tiny")
    spec = _spec("0" * 32, n_samples=8, oversample=2.0, seed=7)  # 16 instructions, in batches of 8
    stops = iter([False, True])  # the server stops after the first batch
    with pytest.raises(work.JobInterrupted):
        work._sample(tmp_path, spec, b"", base, lambda *a: None, should_stop=lambda: next(stops))
    first = list(seeds)
    assert len(first) == 1
    out = work._sample(tmp_path, spec, b"", base, lambda *a: None)
    assert len(out) == len(set(out)) == 16
    assert seeds[1:] == seeds[1:2] and seeds[1] not in first  # one new batch, with a seed not used before


def test_job_store_isolation_and_idempotency(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    aid = store.save_adapter("alice", b"x")
    for folder in ("adapters", "jobs"):  # clients' adapters and datasets: the server's user alone
        assert (tmp_path / folder).stat().st_mode & 0o077 == 0
    assert store.has_adapter("alice", aid) and not store.has_adapter("bob", aid)
    job, created = store.create("alice", _spec(aid, key="retry-key-1"))
    again, created2 = store.create("alice", _spec(aid, key="retry-key-1"))
    assert created and not created2 and again["status"]["job_id"] == job["status"]["job_id"]
    jid = job["status"]["job_id"]
    # the same key with other settings is a client bug: refused, not answered with the first job's data
    with pytest.raises(JobConflict, match=jid):
        store.create("alice", _spec(aid, key="retry-key-1", n_samples=5))
    # a job written by another version of the job format (a field this one does not know): a conflict, not a 500
    import json

    old_job = tmp_path / "jobs" / "alice" / jid / "job.json"
    stored = json.loads(old_job.read_text())
    old_job.write_text(json.dumps(stored | {"spec": stored["spec"] | {"retired_field": 1}}))
    with pytest.raises(JobConflict):
        store.create("alice", _spec(aid, key="retry-key-1"))
    old_job.write_text(json.dumps(stored))
    # the quota is checked under the store's lock: 8 threads racing for one free slot make one job
    store2 = JobStore(tmp_path / "race")
    aid2 = store2.save_adapter("alice", b"x")
    made: list[bool] = []

    def create() -> None:
        try:
            made.append(store2.create("alice", _spec(aid2), max_active=1)[1])
        except TooManyJobs:
            made.append(False)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(made) == [False] * 7 + [True] and store2.active_count("alice") == 1
    assert store.get("bob", jid) is None  # another client's job id is simply not found
    assert store.get("alice", "../bob") is None and store.get("alice", "x" * 32) is None
    assert [j["status"]["job_id"] for j in store.pending()] == [jid]
    store.update("alice", jid, state="done")
    assert store.pending() == []


def test_old_adapters_are_dropped_but_never_one_a_pending_job_needs(tmp_path: Path) -> None:
    """A client uploading in a loop must not fill the server's disk: beyond ``keep`` adapters, the oldest
    that no queued or running job names is removed; a job for a removed adapter is refused (404 upstream)."""
    store = JobStore(tmp_path)
    ids = []
    for i in range(3):
        ids.append(store.save_adapter("alice", b"a%d" % i, keep=3))
        time.sleep(0.02)  # distinct modification times: the order the adapters came in
    job, _ = store.create("alice", _spec(ids[0]))  # the oldest is needed by a queued job
    ids.append(store.save_adapter("alice", b"a3", keep=3))
    time.sleep(0.02)
    assert store.adapters_of("alice") == sorted([ids[0], ids[2], ids[3]])  # ids[1]: oldest not in use
    ids.append(store.save_adapter("alice", b"a4", keep=3))
    assert store.adapters_of("alice") == sorted([ids[0], ids[3], ids[4]])
    with pytest.raises(UnknownAdapter):
        store.create("alice", _spec(ids[1]))
    store.save_adapter("bob", b"b", keep=1)  # another client's uploads never remove alice's adapters
    assert len(store.adapters_of("alice")) == 3 and len(store.adapters_of("bob")) == 1
    store.update("alice", job["status"]["job_id"], state="done")  # a finished job no longer needs it
    ids.append(store.save_adapter("alice", b"a5", keep=3))
    assert store.adapters_of("alice") == sorted([ids[3], ids[4], ids[5]])
    store.save_adapter("alice", b"a6")  # without keep (a store used on its own), nothing is removed
    assert len(store.adapters_of("alice")) == 4


# ------------------------------------------------------------------ HTTP API (in-process uvicorn, tiny model)
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Base:
    name = "tiny"
    model = TinyLM()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Any:
    import uvicorn

    port = _free_port()
    state = tmp_path_factory.mktemp("server")
    cfg = ServerConfig(
        port=port,
        state_dir=str(state),
        base_model="tiny",
        clients={"alice": {"token_sha256": token_hash("alice-token")}, "bob": {"token_sha256": token_hash("bob-tok")}},
        max_adapter_mb=0.01,
        max_active_jobs_per_client=2,
        record_requests=True,
    )
    app = create_app(cfg, start_worker=False)
    inner = app.app  # the request recorder wraps the FastAPI app
    inner.state.service.base = _Base()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{port}", state
    server.should_exit = True
    thread.join(timeout=10)


def _h(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


def _upload(url: str, data: bytes, token: str = "alice-token", digest: str | None = None) -> httpx.Response:
    digest = digest or hashlib.sha256(data).hexdigest()
    return httpx.post(f"{url}/v1/adapters", content=data, headers=_h(token, **{CHECKSUM_HEADER: digest}), timeout=10)


def test_auth_is_required(api: Any) -> None:
    url, _ = api
    assert httpx.get(f"{url}/v1/health", timeout=10).status_code == 200
    for headers in ({}, _h("wrong"), {"Authorization": "Basic abc"}):
        r = httpx.get(f"{url}/v1/info", headers=headers, timeout=10)
        assert r.status_code == 401 and "bearer token" in r.json()["error"]
    assert httpx.get(f"{url}/v1/info", headers=_h("alice-token"), timeout=10).json()["base_model"] == "tiny"
    # the scheme's case does not matter (RFC 7235: some HTTP libraries send "bearer"); the token's does
    for auth in ("bearer alice-token", "BEARER  alice-token"):
        assert httpx.get(f"{url}/v1/info", headers={"Authorization": auth}, timeout=10).status_code == 200, auth
    for auth in ("Bearer ALICE-TOKEN", "Bearer", "alice-token", "Bearerx alice-token"):
        assert httpx.get(f"{url}/v1/info", headers={"Authorization": auth}, timeout=10).status_code == 401, auth
    assert "/v1/jobs" in httpx.get(f"{url}/openapi.json", timeout=10).json()["paths"]


def test_auth_comes_before_the_body(api: Any) -> None:
    url, _ = api
    for headers in ({}, _h("wrong")):  # malformed JSON without a valid token: 401, not a 422 about the body
        r = httpx.post(
            f"{url}/v1/jobs", content=b"{not json", headers={**headers, "Content-Type": "application/json"}, timeout=10
        )
        assert r.status_code == 401 and "bearer token" in r.json()["error"], r.text
    # a declared 30 MB body without a token is answered at once: the server does not wait for a byte of it
    port = int(url.rsplit(":", 1)[1])
    for path in ("/v1/jobs", "/v1/adapters", "/v1/no-such-route"):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"{CHECKSUM_HEADER}: {'0' * 64}\r\nContent-Length: {30 * 2**20}\r\n\r\n{{".encode()
            )
            head = sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 401"), (path, head[:200])


def _post_scope(path: str, headers: dict[str, str]) -> dict[str, Any]:
    """The ASGI scope of a POST to ``path`` from a loopback client."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8088),
    }


def _asgi_post(app: Any, path: str, headers: dict[str, str], chunks: Any) -> tuple[int, int]:
    """POST straight into the ASGI app; returns (status, bytes of the body the app pulled with receive())."""
    import asyncio

    pulled = 0
    body = iter(chunks)
    finished = False

    async def receive() -> dict[str, Any]:
        nonlocal pulled, finished
        chunk = None if finished else next(body, None)
        if chunk is None:
            if finished:
                return {"type": "http.disconnect"}
            finished = True
            return {"type": "http.request", "body": b"", "more_body": False}
        pulled += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    status: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    scope = _post_scope(path, headers)
    asyncio.run(app(scope, receive, send))
    return status[0], pulled


def test_unauthenticated_bodies_are_never_read(tmp_path: Path) -> None:
    cfg = ServerConfig(
        state_dir=str(tmp_path),
        base_model="tiny",
        clients={"alice": {"token_sha256": token_hash("alice-token")}},
        max_adapter_mb=0.01,
    )
    app = create_app(cfg, start_worker=False)
    app.state.service.base = _Base()
    mb = 2**20

    def big() -> Any:
        return (b"x" * mb for _ in range(30))

    sized = {"Content-Length": str(30 * mb), "Content-Type": "application/json"}
    for path in ("/v1/jobs", "/v1/adapters"):
        for headers in ({}, _h("wrong"), {"Authorization": "Basic abc"}):
            status, pulled = _asgi_post(app, path, {**headers, **sized, CHECKSUM_HEADER: "0" * 64}, big())
            assert (status, pulled) == (401, 0), path
    # with a token, the same counter sees the body: an upload streams until it passes the limit (413) ...
    status, pulled = _asgi_post(app, "/v1/adapters", _h("alice-token", **{CHECKSUM_HEADER: "0" * 64}), big())
    assert status == 413 and 0 < pulled <= 2 * mb
    # ... and malformed JSON is still a 422
    status, pulled = _asgi_post(app, "/v1/jobs", _h("alice-token", **{"Content-Type": "application/json"}), [b"{x"])
    assert (status, pulled) == (422, 2)
    # a JSON route never buffers more than its small limit, even for a client with a token: a declared
    # size above it is refused unread, an undeclared stream as soon as the count passes it
    json_headers = _h("alice-token", **{"Content-Type": "application/json"})
    status, pulled = _asgi_post(app, "/v1/jobs", {**json_headers, "Content-Length": str(30 * mb)}, big())
    assert (status, pulled) == (413, 0)
    status, pulled = _asgi_post(app, "/v1/jobs", json_headers, big())
    assert status == 413 and 0 < pulled <= mb
    status, pulled = _asgi_post(app, "/v1/jobs", {**json_headers, "Content-Length": "abc"}, [b"{}"])
    assert (status, pulled) == (413, 0)


def test_upload_checks(api: Any) -> None:
    url, state = api
    good = save(lora_tensors())
    ok = _upload(url, good)
    assert ok.status_code == 201 and ok.json()["lora_r"] == 2
    truncated = _upload(url, good[: len(good) // 2], digest=hashlib.sha256(good).hexdigest())
    assert truncated.status_code == 400 and "truncated" in truncated.json()["error"]
    other = _upload(url, save(lora_tensors(hidden=16)))
    assert other.status_code == 422 and "another base model" in other.json()["error"]
    pick = _upload(url, pickle.dumps({"weights": 1}))
    assert pick.status_code == 422 and "safetensors" in pick.json()["error"]
    big = _upload(url, b"\0" * 20_000)
    assert big.status_code == 413
    no_sum = httpx.post(f"{url}/v1/adapters", content=good, headers=_h("alice-token"), timeout=10)
    assert no_sum.status_code == 400 and CHECKSUM_HEADER in no_sum.json()["error"]
    # a client uploading in a loop keeps at most max_adapters_per_client (8) files on the server's disk
    for _ in range(10):
        assert _upload(url, good, token="bob-tok").status_code == 201
    assert len(list((state / "adapters" / "bob").glob("*.safetensors"))) == 8


def test_uploads_received_at_once_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each upload is held in memory until its checksum and tensors are checked, so the server receives
    one per client and ``max_concurrent_uploads`` in all at once; the others are told to retry (the client
    retries 429 and 503), and a finished, refused or stalled upload frees its place."""
    import asyncio

    from dpsynth.knowledgesg import server as server_mod

    real_read = server_mod.read_adapter

    def slow_read(*args: Any) -> Any:  # the tensor check of a large adapter takes a while
        time.sleep(0.3)
        return real_read(*args)

    monkeypatch.setattr(server_mod, "read_adapter", slow_read)
    monkeypatch.setattr(server_mod, "UPLOAD_IDLE_S", 0.5)

    cfg = ServerConfig(
        state_dir=str(tmp_path),
        base_model="tiny",
        clients={c: {"token_sha256": token_hash(f"{c}-token")} for c in ("alice", "bob")},
        max_adapter_mb=0.01,
        max_concurrent_uploads=1,
    )
    app = create_app(cfg, start_worker=False)
    app.state.service.base = _Base()
    good = save(lora_tensors())

    async def post(client: str, body: bytes, gate: asyncio.Event | None = None) -> tuple[int, dict[str, str]]:
        parts = [body[: len(body) // 2], body[len(body) // 2 :]]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            if not parts:
                await asyncio.sleep(3600)  # the app never asks again for a finished body
            if len(parts) == 1 and gate is not None:
                await gate.wait()  # hold the second half back: the upload is "in progress"
            return {"type": "http.request", "body": parts.pop(0), "more_body": bool(parts)}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        headers = _h(f"{client}-token", **{CHECKSUM_HEADER: hashlib.sha256(body).hexdigest()})
        scope = _post_scope("/v1/adapters", headers)
        await app(scope, receive, send)
        start = next(m for m in sent if m["type"] == "http.response.start")
        return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}

    async def scenario() -> list[int]:
        gate = asyncio.Event()
        slow = asyncio.create_task(post("alice", good, gate))
        await asyncio.sleep(0.2)  # alice's first upload is now waiting for its second half
        same_client, same_headers = await post("alice", good)
        other_client, other_headers = await post("bob", good)
        assert same_headers.get("retry-after") and other_headers.get("retry-after")
        gate.set()
        first, _ = await slow
        after, _ = await post("bob", good)  # the place is free again
        refused, _ = await post("alice", b"\0" * 20_000)  # over max_adapter_mb: 413, and its place freed
        again, _ = await post("alice", good)
        # received but still being checked: the body is in memory, the place still taken
        checking = asyncio.create_task(post("alice", good))
        await asyncio.sleep(0.1)
        while_checked, _ = await post("alice", good)
        await checking
        # a connection that stops sending is dropped after UPLOAD_IDLE_S and frees the place
        stalled, _ = await post("alice", good, asyncio.Event())
        last, _ = await post("alice", good)
        return [same_client, other_client, first, after, refused, again, while_checked, stalled, last]

    assert asyncio.run(scenario()) == [429, 503, 201, 201, 413, 201, 429, 408, 201]


def test_jobs_are_isolated_and_validated(api: Any) -> None:
    url, _ = api
    aid = _upload(url, save(lora_tensors())).json()["adapter_id"]
    spec = _spec(aid, key="abcdefgh-1").model_dump()
    r = httpx.post(f"{url}/v1/jobs", json=spec, headers=_h("alice-token"), timeout=10)
    assert r.status_code == 202, r.text
    jid = r.json()["job_id"]
    again = httpx.post(f"{url}/v1/jobs", json=spec, headers=_h("alice-token"), timeout=10)
    assert again.json()["job_id"] == jid  # the retried create is the same job
    other = httpx.post(f"{url}/v1/jobs", json=spec | {"n_samples": 2}, headers=_h("alice-token"), timeout=10)
    assert other.status_code == 409 and "idempotency_key" in other.json()["error"]  # same key, other settings
    assert httpx.get(f"{url}/v1/jobs/{jid}", headers=_h("alice-token"), timeout=10).json()["state"] == "queued"
    for path in (f"/v1/jobs/{jid}", f"/v1/jobs/{jid}/dataset", f"/v1/jobs/{jid}/report"):
        r = httpx.get(url + path, headers=_h("bob-tok"), timeout=10)
        assert r.status_code == 404 and "no job" in r.json()["error"]
    assert httpx.get(f"{url}/v1/jobs", headers=_h("bob-tok"), timeout=10).json() == []
    r = httpx.get(f"{url}/v1/jobs/{jid}/dataset", headers=_h("alice-token"), timeout=10)
    assert r.status_code == 409 and "not done" in r.json()["error"]
    # bob cannot use alice's adapter
    r = httpx.post(f"{url}/v1/jobs", json=spec | {"idempotency_key": None}, headers=_h("bob-tok"), timeout=10)
    assert r.status_code == 404 and "upload it first" in r.json()["error"]
    # malformed bodies are 4xx with one line, never a 500
    for body in (b"{not json", b"[]", b'{"adapter_id": "x"}'):
        r = httpx.post(
            f"{url}/v1/jobs",
            content=body,
            headers=_h("alice-token", **{"Content-Type": "application/json"}),
            timeout=10,
        )
        assert r.status_code == 422 and "Traceback" not in r.text, r.text
    wrong_base = spec | {"base_model": "other-model", "idempotency_key": None}
    r = httpx.post(f"{url}/v1/jobs", json=wrong_base, headers=_h("alice-token"), timeout=10)
    assert r.status_code == 422 and "this server holds 'tiny'" in r.json()["error"]
    # quota: alice has one active job, the limit is 2
    httpx.post(f"{url}/v1/jobs", json=spec | {"idempotency_key": None}, headers=_h("alice-token"), timeout=10)
    r = httpx.post(f"{url}/v1/jobs", json=spec | {"idempotency_key": None}, headers=_h("alice-token"), timeout=10)
    assert r.status_code == 429


def test_request_log_records_bodies(api: Any) -> None:
    url, state = api
    httpx.post(f"{url}/v1/jobs", content=b'{"marker": "SENTINEL-XYZ"}', headers=_h("alice-token"), timeout=10)
    assert b"SENTINEL-XYZ" in (state / "requests.log").read_bytes()


# ------------------------------------------------------------------ client: mistakes cost nothing
def _client_cfg(tmp_path: Path, url: str, **kw: Any) -> Any:
    from dpsynth.config import Config

    return Config.model_validate(
        {
            "method": "knowledgesg",
            "out": str(tmp_path / "run"),
            "knowledgesg": {"server": url, "max_retries": 0, "request_timeout_s": 5, **kw},
        }
    )


def _qa_file(tmp_path: Path, rows: list[dict[str, str]]) -> Path:
    import json

    p = tmp_path / "qa.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


QA = [{"instruction": f"What is finding {i} in case SENTINEL-{i}?", "response": f"Answer {i}."} for i in range(6)]


def test_client_errors_before_any_privacy_spend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, api: Any) -> None:
    import dpsynth
    from dpsynth.errors import ConfigError, DataError
    from dpsynth.knowledgesg.client import ServerError

    url, _ = api
    private = _qa_file(tmp_path, QA)
    monkeypatch.delenv("DPSYNTH_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="DPSYNTH_TOKEN"):
        dpsynth.synthesize(_client_cfg(tmp_path, url), private=str(private), progress=False)
    monkeypatch.setenv("DPSYNTH_TOKEN", "wrong-token")
    with pytest.raises(ServerError, match="HTTP 401") as err:
        dpsynth.synthesize(_client_cfg(tmp_path, url), private=str(private), progress=False)
    assert "wrong-token" not in str(err.value)  # the token never appears in messages
    monkeypatch.setenv("DPSYNTH_TOKEN", "alice-token")
    dead = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(ServerError, match="check that the server is running"):
        dpsynth.synthesize(_client_cfg(tmp_path, dead), private=str(private), progress=False)
    # the tiny test server holds "tiny", the client fine-tunes SmolLM2: refused before training
    with pytest.raises(ConfigError, match="holds 'tiny'"):
        dpsynth.synthesize(_client_cfg(tmp_path, url), private=str(private), progress=False)
    missing = _qa_file(tmp_path, [{"question": "q?", "answer": "a"}])
    with pytest.raises(DataError, match="knowledgesg.instruction_column"):
        dpsynth.synthesize(_client_cfg(tmp_path, url), private=str(missing), progress=False)
    empty = _qa_file(tmp_path, [{"instruction": "What is this condition?", "response": " "}])
    with pytest.raises(DataError, match="empty"):
        dpsynth.synthesize(_client_cfg(tmp_path, url), private=str(empty), progress=False)
    assert not (tmp_path / "run").exists()  # nothing was started, nothing was spent


# ------------------------------------------------------------------ `dpsynth server token`
@pytest.mark.parametrize(
    "bad", ["bad id!", "", "x" * 65, "../alice", "a.b"], ids=["space", "empty", "65-chars", "path", "dot"]
)
def test_server_token_refuses_ids_the_server_config_would_refuse(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    from dpsynth.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["server", "token", bad])
    assert exc.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""  # no token and no config line were printed
    assert err.startswith("error: client id ") and err.count("\n") == 1 and "Traceback" not in err
    with pytest.raises(ValueError):  # the same rule: the config refuses it too
        ServerConfig(clients={bad: {"token_sha256": "0" * 64}})


def test_server_token_line_is_accepted_by_the_server_config(capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    from dpsynth.cli import main

    main(["server", "token", "hospital-a_2"])
    lines = capsys.readouterr().out.splitlines()
    token, entry = lines[1].strip(), lines[-1].strip()
    cfg = ServerConfig(clients=yaml.safe_load(entry))
    assert cfg.clients["hospital-a_2"].token_sha256 == token_hash(token)


# ------------------------------------------------------------------ stopping the server (subprocess)
def test_stop_closes_the_models_only_after_the_worker_is_gone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dpsynth.knowledgesg.server import Service

    service = Service(ServerConfig(state_dir=str(tmp_path), clients={"a": {"token_sha256": token_hash("t")}}))
    release = threading.Event()
    monkeypatch.setattr(service, "_worker", lambda: release.wait(30))  # a batch that takes its time
    closed: list[bool] = []

    class Professional:
        name = "p"

        def close(self) -> None:
            closed.append(any(t.is_alive() for t in threading.enumerate() if t.name == "knowledgesg-worker"))

    service.professional = Professional()
    service.start()
    t0 = time.monotonic()
    assert service.stop(timeout=0.3) is False  # still busy: the caller must exit without closing anything
    assert 0.3 <= time.monotonic() - t0 < 5 and closed == []
    service.force()  # a second Ctrl-C: no more waiting
    t0 = time.monotonic()
    assert service.stop(timeout=30) is False and time.monotonic() - t0 < 2 and closed == []
    release.set()  # the batch ends
    deadline = time.monotonic() + 10
    while any(t.name == "knowledgesg-worker" and t.is_alive() for t in threading.enumerate()):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert service.stop(timeout=5) is True and closed == [False]  # closed once, after the worker ended
    assert service.stop() is True and closed == [False]


class _ServerProcess:
    """`dpsynth server start` in a subprocess with stand-in models (tests/knowledgesg_server_worker.py)."""

    def __init__(self, tmp: Path, **config: Any) -> None:
        import yaml

        self.tmp = tmp
        port = _free_port()
        self.url, self.state = f"http://127.0.0.1:{port}", tmp / "state"
        self.cfg = tmp / "server.yaml"
        fields = {"host": "127.0.0.1", "port": port, "state_dir": str(self.state), "base_model": "tiny"}
        clients = {"alice": {"token_sha256": token_hash("alice-token")}}
        self.cfg.write_text(yaml.safe_dump({**fields, "clients": clients, **config}))
        self.proc: Any = None
        self.stderr = tmp / "stderr.txt"

    def start(self, delay_s: float) -> None:
        """Start it with generation batches of ``delay_s`` seconds; return once /v1/health says ok."""
        import os
        import subprocess
        import sys

        worker = Path(__file__).with_name("knowledgesg_server_worker.py")
        with self.stderr.open("wb") as f:
            self.proc = subprocess.Popen(
                [sys.executable, str(worker), "server", "start", "--config", str(self.cfg)],
                stdout=subprocess.DEVNULL,
                stderr=f,
                env={**os.environ, "FAKE_DELAY_S": str(delay_s)},
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.stderr.read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=5).json()["status"] == "ok":
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.kill()
        raise AssertionError("the server did not start: " + self.stderr.read_text()[-3000:])

    def signal(self, sig: int, timeout_s: float = 60) -> tuple[int, str]:
        """Send ``sig``; return the exit status and stderr once the process has ended."""
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout_s)
        finally:
            self.kill()
        return int(self.proc.returncode), self.stderr.read_text()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def create_job(self, n_samples: int) -> str:
        up = _upload(self.url, save(lora_tensors()))
        assert up.status_code == 201, up.text
        spec = _spec(up.json()["adapter_id"], n_samples=n_samples).model_dump()
        r = httpx.post(f"{self.url}/v1/jobs", json=spec, headers=_h("alice-token"), timeout=10)
        assert r.status_code == 202, r.text
        return str(r.json()["job_id"])

    def job_dir(self, job_id: str) -> Path:
        return self.state / "jobs" / "alice" / job_id

    def job_status(self, job_id: str) -> dict[str, Any]:
        import json

        return dict(json.loads((self.job_dir(job_id) / "job.json").read_text())["status"])

    def wait_for(self, job_id: str, until: Any, timeout_s: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while not until(st := self.job_status(job_id)):
            assert time.monotonic() < deadline and st["state"] != "failed", st
            time.sleep(0.05)
        return st


@pytest.mark.slow
def test_sigint_while_a_job_runs_stops_cleanly_and_a_restart_finishes_the_job(tmp_path: Path) -> None:
    import signal

    server = _ServerProcess(tmp_path)
    server.start(delay_s=0.5)
    try:
        jid = server.create_job(n_samples=16)  # 32 instructions: 4 sampling batches, then 4 judging batches
        server.wait_for(jid, lambda st: st["progress"].get("sampled", 0) >= 8)  # mid-sampling
        status, err = server.signal(signal.SIGINT)
    finally:
        server.kill()
    assert status in (0, 130), (status, err[-3000:])
    assert "terminate called" not in err and "Traceback" not in err, err[-3000:]
    st = server.job_status(jid)
    assert st["state"] == "queued" and "interrupted" in st["stage"], st  # back in the queue, not failed
    journal = (server.job_dir(jid) / "instructions.jsonl").read_text().splitlines()
    assert 8 <= len(journal) < 32

    server.start(delay_s=0.01)  # a restarted server continues the job from its journal
    try:
        server.wait_for(jid, lambda st: st["state"] == "done")
        rows = httpx.get(f"{server.url}/v1/jobs/{jid}/dataset", headers=_h("alice-token"), timeout=10).text
        assert len(rows.splitlines()) == 16
        status, err = server.signal(signal.SIGTERM)  # an idle server stops cleanly on SIGTERM too
    finally:
        server.kill()
    assert status == 0 and "terminate called" not in err, (status, err[-3000:])
    assert (server.job_dir(jid) / "instructions.jsonl").read_text().splitlines()[: len(journal)] == journal
    log = (server.state / "server.log").read_text()
    assert "interrupted by the server stopping" in log and "resumed after a restart" in log


@pytest.mark.slow
def test_a_batch_longer_than_shutdown_timeout_ends_the_process_and_the_job_stays_pending(tmp_path: Path) -> None:
    import signal

    server = _ServerProcess(tmp_path, shutdown_timeout_s=1)
    server.start(delay_s=30)  # every batch takes 30 s
    try:
        jid = server.create_job(n_samples=3)
        server.wait_for(jid, lambda st: st["state"] == "running")
        t0 = time.monotonic()
        status, err = server.signal(signal.SIGINT)
    finally:
        server.kill()
    assert status == 130 and time.monotonic() - t0 < 20, (status, err[-3000:])
    assert "terminate called" not in err and "Traceback" not in err and "did not reach a safe point" in err
    assert server.job_status(jid)["state"] == "running"  # as after a crash: the next start resumes it


# ------------------------------------------------------------------ the client's job on resume
@pytest.mark.parametrize(
    "setting, value, name",
    [
        ("finetune", {"lora_r": 512}, "finetune.lora_r"),
        ("finetune", {"temperature": 6.0}, "finetune.temperature"),
        ("knowledgesg", {"domain": "d" * 101}, "knowledgesg.domain"),
        ("finetune", {"target_modules": ["q_proj", "lm_head"]}, "finetune.target_modules"),
    ],
)
def test_settings_the_server_refuses_stop_the_client_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setting: str, value: dict[str, Any], name: str
) -> None:
    """Regression: settings the config accepts but the server's job format refuses (LoRA rank over 256,
    temperature over 5, a long domain, LoRA on the output layer) failed at job creation, after DP-SGD had
    spent the budget; fixing them took a new run and a second spend on the same records."""
    import dpsynth
    from dpsynth.config import Config
    from dpsynth.errors import ConfigError
    from dpsynth.knowledgesg.protocol import ServerInfo
    from dpsynth.methods import knowledgesg

    cfg = Config.model_validate(
        {
            "method": "knowledgesg",
            "out": str(tmp_path / "run"),
            "knowledgesg": {
                "server": "http://127.0.0.1:9",
                "max_retries": 0,
                **(value if setting == "knowledgesg" else {}),
            },
            "finetune": value if setting == "finetune" else {},
        }
    )
    info = ServerInfo(
        base_model=cfg.finetune.model, professional="p", max_adapter_bytes=1 << 20, max_samples=1000, ready=True
    )
    monkeypatch.setattr(knowledgesg.KnowledgeSGClientMethod, "_server_ready", lambda self: info)
    monkeypatch.setenv("DPSYNTH_TOKEN", "alice-token")
    with pytest.raises(ConfigError, match=f"^{name}: "):
        dpsynth.synthesize(cfg, private=str(_qa_file(tmp_path, QA)), progress=False)
    assert not (tmp_path / "run").exists()  # refused before the run directory, the count and DP-SGD


def test_an_adapter_larger_than_the_server_accepts_stops_the_client_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server refuses an adapter over its max_adapter_mb (HTTP 413), which the client met only at the
    upload, after DP-SGD; the size is known once the LoRA model is built, before any release."""
    import dpsynth
    from dpsynth.errors import ConfigError
    from dpsynth.knowledgesg.protocol import ServerInfo
    from dpsynth.methods import knowledgesg

    cfg = _client_cfg(tmp_path, "http://127.0.0.1:9")
    info = ServerInfo(
        base_model=cfg.finetune.model, professional="p", max_adapter_bytes=1000, max_samples=1000, ready=True
    )
    monkeypatch.setattr(knowledgesg.KnowledgeSGClientMethod, "_server_ready", lambda self: info)
    monkeypatch.setenv("DPSYNTH_TOKEN", "alice-token")
    with pytest.raises(ConfigError, match="the adapter would be about 1.8 MB and the server accepts at most 1 KB"):
        dpsynth.synthesize(cfg, private=str(_qa_file(tmp_path, QA)), progress=False)
    assert not (tmp_path / "run").exists()


class _Jobs:
    """A stand-in server client: job "old" is failed, done or unknown; the adapter may be unknown until uploaded."""

    def __init__(self, old: str, adapter_known: bool = True) -> None:
        from dpsynth.knowledgesg.client import ServerError

        self.error, self.old, self.adapter_known, self.calls = ServerError, old, adapter_known, []

    def _job(self, job_id: str, state: str) -> Any:
        from dpsynth.knowledgesg.protocol import JobStatus

        return JobStatus(job_id=job_id, state=state, created=0.0, updated=0.0)  # type: ignore[arg-type]

    def status(self, job_id: str) -> Any:
        self.calls.append(("status", job_id))
        if job_id == "old" and self.old == "unknown":
            raise self.error("HTTP 404: no such job", status=404)
        return self._job(job_id, self.old if job_id == "old" else "done")

    def upload_adapter(self, data: bytes) -> Any:
        from dpsynth.knowledgesg.protocol import AdapterReceipt

        self.calls.append(("upload", len(data)))
        self.adapter_known = True
        return AdapterReceipt(adapter_id="b" * 32, sha256="0" * 64, bytes=len(data), tensors=4, lora_r=8)

    def create_job(self, spec: Any) -> Any:
        self.calls.append(("create", spec.adapter_id, spec.idempotency_key))
        if not self.adapter_known:
            raise self.error("HTTP 404: no such adapter", status=404)
        return self._job("new", "queued")

    def dataset(self, job_id: str, spec: Any = None) -> str:
        return '{"instruction": "q?", "response": "a."}\n'

    def report(self, job_id: str) -> dict[str, Any]:
        return {"n_returned": 1}


@pytest.mark.parametrize(
    "old, adapter_known",
    [("failed", True), ("unknown", True), ("failed", False), ("unknown", False), ("done", True)],
    ids=["failed", "job-lost", "adapter-lost", "another-server", "done"],
)
def test_a_failed_or_lost_job_is_made_again_from_the_saved_adapter(
    tmp_path: Path, old: str, adapter_known: bool
) -> None:
    """Regression: once client.json held a job id, every --resume polled that job only; a failed job, or one
    the server had lost (404), stopped every resume, and the only way on was a new run, i.e. training and
    spending the budget again.  Now a resume makes a new job from the saved DP adapter (uploaded again if the
    server lost it too, or if the resume names another server, which knows neither), and the DP training is
    not repeated.  A finished job is fetched, not made again."""
    import json
    from types import SimpleNamespace

    from dpsynth.config import Config
    from dpsynth.methods.knowledgesg import KnowledgeSGClientMethod
    from dpsynth.progress import ProgressReporter
    from dpsynth.run import RunDir

    run_dir = RunDir(tmp_path / "run")
    run_dir.knowledgesg_state.parent.mkdir(parents=True)
    run_dir.adapter_weights.parent.mkdir(parents=True, exist_ok=True)
    run_dir.adapter_weights.write_bytes(b"dp-adapter")
    state = {"adapter_id": "a" * 32, "job_id": "old", "idempotency_key": "first-key-123"}
    run_dir.knowledgesg_state.write_text(json.dumps(state))
    trained: list[int] = []
    method = KnowledgeSGClientMethod.__new__(KnowledgeSGClientMethod)
    cfg = {"method": "knowledgesg", "n_synthetic": 1, "knowledgesg": {"server": "http://a"}}
    method.config = Config.model_validate(cfg)
    method.client = jobs = _Jobs(old, adapter_known)  # type: ignore[assignment]
    method.professional = "p"
    method.inner = SimpleNamespace(  # type: ignore[assignment]
        train_adapter=lambda *a, **k: (trained.append(1), ("ledger", {}))[1],
        report=lambda ledger, shares: {},
        domain=lambda: [],
        run_phases=None,
    )
    rows, _ = method.run(run_dir, ProgressReporter(enabled=False))
    assert [r["instruction"] for r in rows] == ["q?"] and trained == [1]  # resumed training: no new steps here
    creates = [c for c in jobs.calls if c[0] == "create"]
    uploads = [c for c in jobs.calls if c[0] == "upload"]
    saved = json.loads(run_dir.knowledgesg_state.read_text())
    if old == "done":  # fetched, nothing made again
        assert not creates and not uploads and saved == state
        return
    assert creates and all(c[2] != "first-key-123" for c in creates)  # a new job, not the old one again
    assert len(uploads) == (0 if adapter_known else 1)  # the saved adapter, uploaded again only if unknown
    assert saved["job_id"] == "new" and saved["idempotency_key"] == creates[-1][2] != "first-key-123"
    assert creates[-1][1] == ("a" * 32 if adapter_known else "b" * 32)
    if not adapter_known:  # the retried create after the upload uses a key of its own
        assert creates[0][2] != creates[-1][2]


def test_a_resume_may_name_another_server_but_not_other_job_settings(tmp_path: Path) -> None:
    """How the client reaches its server is post-processing of the saved DP adapter: a server that moved
    must not force a new run (and a second spend); what the job makes stays fixed."""
    from dpsynth.config import Config
    from dpsynth.errors import ResumeError
    from dpsynth.run import RunDir, dump_config_yaml

    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    first = Config.model_validate(
        {"method": "knowledgesg", "out": str(run.path), "knowledgesg": {"server": "http://a"}}
    )
    run.config.write_text(dump_config_yaml(first))
    moved = {"method": "knowledgesg", "out": str(run.path), "knowledgesg": {"server": "http://b", "max_retries": 2}}
    merged = run.check(Config.model_validate(moved), resume=True)
    assert merged.knowledgesg.server == "http://b"
    run.record_resumable(merged)  # what a resume does: the next plain --resume keeps the new server
    plain = run.check(Config.model_validate({"method": "knowledgesg", "out": str(run.path)}), resume=True)
    assert plain.knowledgesg.server == "http://b" and plain.knowledgesg.max_retries == 2
    other = {"method": "knowledgesg", "out": str(run.path), "knowledgesg": {"server": "http://b", "domain": "law"}}
    with pytest.raises(ResumeError, match="knowledgesg.domain"):
        run.check(Config.model_validate(other), resume=True)


def test_health_answers_without_a_token_and_without_the_load_error_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """/v1/health needs no token, so a failed model load shows only its type there; the message, which may
    hold file paths, goes to server.log."""
    from fastapi.testclient import TestClient

    cfg = ServerConfig(state_dir=str(tmp_path), base_model="tiny", clients={})
    app = create_app(cfg, start_worker=False)
    service = app.state.service

    def fail() -> None:
        raise FileNotFoundError("/srv/SECRET-PATH/model.gguf")

    monkeypatch.setattr(service, "_load_models", fail)
    service._worker()  # the load fails: the worker records it and returns, the server stays up
    body = TestClient(app).get("/v1/health").json()
    assert body["status"] == "error" and "FileNotFoundError" in body["error"] and "SECRET" not in body["error"]
    assert "SECRET-PATH" in caplog.text  # the owner still learns what failed


def _closed_port() -> int:
    import socket

    with socket.socket() as s:  # bind, read the port, close: nothing listens there afterwards
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_server_is_said_at_the_first_retry_and_the_preflight_gives_up_in_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: with the server down, `dpsynth client run` waited one to two minutes in silence (eight
    retries with backoff, logged at INFO before the run directory and its log existed).  The first retry is
    now a warning naming the server, and the pre-flight check gives up after PREFLIGHT_RETRIES."""
    import logging
    import time

    import dpsynth
    from dpsynth.knowledgesg.client import ServerClient, ServerError
    from dpsynth.methods import knowledgesg

    url = f"http://127.0.0.1:{_closed_port()}"
    client = ServerClient(url, "t", timeout_s=2, max_retries=8, backoff_s=0.01)
    calls: list[str] = []
    real = client._http.stream
    monkeypatch.setattr(client._http, "stream", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    with (
        caplog.at_level(logging.INFO, logger="dpsynth.knowledgesg"),
        pytest.raises(ServerError, match="after 2 retries"),
    ):
        client.info(retries=2)
    assert len(calls) == 3
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and url in warnings[0].getMessage() and "retrying (1/2)" in warnings[0].getMessage()

    # the run's pre-flight: refused quickly, before the run directory, with the server named
    cfg = _client_cfg(tmp_path, url, max_retries=8)
    monkeypatch.setenv("DPSYNTH_TOKEN", "alice-token")
    monkeypatch.setattr(knowledgesg, "PREFLIGHT_RETRIES", 1)
    t0 = time.monotonic()
    with pytest.raises(ServerError, match=f"^knowledgesg.server: server {url}: GET .* failed after 1 retries"):
        dpsynth.synthesize(cfg, private=str(_qa_file(tmp_path, QA)), progress=False)
    assert time.monotonic() - t0 < 20  # eight retries with backoff take a minute or more
    assert not (tmp_path / "run").exists()


def test_retry_after_is_not_waited_when_no_retry_follows_and_one_warning_per_client(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A 503 with Retry-After: 60 made the last attempt wait its minute too, before the error; and every
    blip of a long job's polling printed a warning.  Now: no wait after the last attempt, one warning."""
    import logging

    import httpx

    from dpsynth.knowledgesg import client as client_mod
    from dpsynth.knowledgesg.client import ServerClient, ServerError

    sleeps: list[float] = []
    monkeypatch.setattr(client_mod.time, "sleep", sleeps.append)
    client = ServerClient("http://127.0.0.1:1", "t", max_retries=8, backoff_s=0.01)
    client._http = httpx.Client(
        base_url="http://127.0.0.1:1",
        transport=httpx.MockTransport(lambda req: httpx.Response(503, headers={"retry-after": "60"}, text="busy")),
    )
    with caplog.at_level(logging.INFO, logger="dpsynth.knowledgesg"):
        for _ in range(2):
            with pytest.raises(ServerError, match="after 2 retries"):
                client.info(retries=2)
    assert [s for s in sleeps if s == 60.0] == [60.0, 60.0] * 2  # after attempts 0 and 1, not after 2
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def test_client_check_asks_the_server_and_reads_the_pairs_but_trains_nothing(
    tmp_path: Path, tiny_lm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`dpsynth client run --check`: the server's answer and the settings it refuses, the private pairs'
    columns, then stop: no model weights loaded, no run directory, no budget."""
    import dpsynth
    from dpsynth.config import Config
    from dpsynth.errors import ConfigError, DataError
    from dpsynth.knowledgesg.protocol import ServerInfo
    from dpsynth.methods import dp_finetune, knowledgesg

    def loaded(*a: object, **k: object) -> None:
        raise AssertionError("a model was loaded by a check")

    monkeypatch.setattr(dp_finetune, "load_causal_lm", loaded)
    cfg = _client_cfg(tmp_path, "http://127.0.0.1:9")
    cfg = cfg.model_copy(update={"finetune": cfg.finetune.model_copy(update={"model": str(tiny_lm)})})
    limit = cfg.n_synthetic
    info = ServerInfo(
        base_model=cfg.finetune.model, professional="p", max_adapter_bytes=1 << 20, max_samples=limit, ready=True
    )
    monkeypatch.setattr(knowledgesg.KnowledgeSGClientMethod, "_server_ready", lambda self: info)
    monkeypatch.setenv("DPSYNTH_TOKEN", "alice-token")
    checked = dpsynth.synthesize(cfg, private=str(_qa_file(tmp_path, QA)), progress=False, check_only=True)
    assert isinstance(checked.config, Config) and checked.config.method == "knowledgesg"
    # the adapter's size and the LoRA layers, from the model's config alone (its layers on the meta device)
    info = info.model_copy(update={"max_adapter_bytes": 1000})
    with pytest.raises(
        ConfigError, match=r"the adapter would be about [1-9]\d* KB and the server accepts at most 1 KB"
    ):
        dpsynth.synthesize(cfg, private=str(_qa_file(tmp_path, QA)), progress=False, check_only=True)
    info = info.model_copy(update={"max_adapter_bytes": 1 << 20})
    typo = cfg.model_copy(update={"finetune": cfg.finetune.model_copy(update={"target_modules": ["q_prj"]})})
    with pytest.raises(ConfigError, match=r"finetune.target_modules: \['q_prj'\] not found"):
        dpsynth.synthesize(typo, private=str(_qa_file(tmp_path, QA)), progress=False, check_only=True)
    bad = tmp_path / "bad.jsonl"  # the pairs are read: a missing column is the run's own error
    bad.write_text('{"question": "q", "answer": "a"}\n')
    with pytest.raises(DataError, match="no column 'instruction'"):
        dpsynth.synthesize(cfg, private=str(bad), progress=False, check_only=True)
    with pytest.raises(ConfigError, match=f"n_synthetic: the server allows at most {limit} "):
        too_many = cfg.model_copy(update={"n_synthetic": limit + 1})
        dpsynth.synthesize(too_many, private=str(_qa_file(tmp_path, QA)), progress=False, check_only=True)
    assert not (tmp_path / "run").exists()


def test_a_rank_0_adapter_is_refused_at_upload() -> None:
    """Regression: accepted (201), then every job naming it failed dividing alpha by rank 0."""
    with pytest.raises(AdapterError, match="rank 0"):
        read_adapter(save(lora_tensors(r=0)), TinyLM())


def test_seeds_outside_what_every_backend_takes_are_refused_by_the_protocol() -> None:
    """A seed of 2**80 was accepted and failed the job in torch.manual_seed, after the client's DP training;
    the client maps any seed into range (methods/knowledgesg.py) and the settings check runs before training."""
    from pydantic import ValidationError

    assert _spec("0" * 32, seed=2**32 - 1).seed == 2**32 - 1
    for bad in (2**32, 2**80, -1):
        with pytest.raises(ValidationError):
            _spec("0" * 32, seed=bad)


def test_one_bad_job_never_stops_the_worker_and_a_crash_loop_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: a job.json this version could not read (an older server's spec field) killed the worker
    thread, and every other client's job stayed queued; a job that took the process down was resumed first
    at every start, for ever."""
    import json

    from dpsynth.knowledgesg import work
    from dpsynth.knowledgesg.server import MAX_CRASHES, Service

    service = Service(ServerConfig(state_dir=str(tmp_path), clients={"a": {"token_sha256": token_hash("t")}}))
    monkeypatch.setattr(service, "_load_models", lambda: None)
    ran: list[int] = []

    def fake_run_job(job_dir: Path, spec: JobSpec, *a: Any, **k: Any) -> dict[str, int]:
        ran.append(spec.n_samples)
        return {"n_returned": spec.n_samples}

    monkeypatch.setattr(work, "run_job", fake_run_job)
    store = service.store
    aid = store.save_adapter("a", b"adapter bytes")
    ids = [store.create("a", _spec(aid, n_samples=n))[0]["status"]["job_id"] for n in (1, 2, 3)]
    old = store.job_dir("a", ids[0]) / "job.json"
    raw = json.loads(old.read_text())
    raw["spec"]["top_k"] = 5  # a field this version's JobSpec forbids
    old.write_text(json.dumps(raw))
    crashed = store.job_dir("a", ids[1]) / "job.json"
    raw = json.loads(crashed.read_text())
    raw["status"]["state"], raw["crashes"] = "running", MAX_CRASHES - 1  # found running: it died once more
    crashed.write_text(json.dumps(raw))
    service.start()
    deadline = time.monotonic() + 20
    while store.get("a", ids[2])["status"]["state"] != "done":
        assert time.monotonic() < deadline, [store.get("a", i)["status"] for i in ids]
        time.sleep(0.05)
    assert service.stop(timeout=10)
    states = [store.get("a", i)["status"] for i in ids]
    assert [s["state"] for s in states] == ["failed", "failed", "done"] and ran == [3]
    assert "ValidationError" in states[0]["error"] and "repeatedly" in states[1]["error"]


def test_junk_redirects_and_escape_codes_from_a_server_are_one_clean_line() -> None:
    """Regression: an HTML page with 200 or a 302 made `dpsynth client run` print a JSONDecodeError traceback,
    and a server's error text reached the terminal with its escape sequences."""
    import httpx

    from dpsynth.knowledgesg.client import ServerClient, ServerError

    def serve(resp: httpx.Response) -> ServerClient:
        client = ServerClient("http://127.0.0.1:1", "t", max_retries=0)
        client._http = httpx.Client(base_url="http://127.0.0.1:1", transport=httpx.MockTransport(lambda req: resp))
        return client

    html = httpx.Response(200, text="<html>login</html>", headers={"content-type": "text/html"})
    with pytest.raises(ServerError, match="not a dpsynth server's reply \\(text/html, HTTP 200\\)"):
        serve(html).info()
    with pytest.raises(ServerError, match="not a dpsynth server's reply"):
        serve(httpx.Response(200, json={"unexpected": 1})).status("0" * 32)
    with pytest.raises(ServerError, match="redirect \\(HTTP 302\\)"):
        serve(httpx.Response(302, headers={"location": "http://elsewhere.example/"})).info()
    with pytest.raises(ServerError) as exc:
        serve(httpx.Response(403, json={"error": "\x1b[2J\x1b[31mFAKE"})).info()
    assert "\x1b" not in str(exc.value) and "FAKE" in str(exc.value)


def test_a_private_ca_from_ssl_cert_file_is_trusted_and_plain_http_elsewhere_is_warned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: the client ignored SSL_CERT_FILE (trust_env=False), so a server with a private CA could not
    be used over https at all, which pushed users to plain http; and plain http to another machine was silent."""
    import http.server
    import logging
    import shutil
    import ssl
    import subprocess

    from dpsynth.knowledgesg.client import ServerClient, ServerError

    if not shutil.which("openssl"):
        pytest.skip("needs the openssl command to make a certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert)]
        + ["-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
        timeout=60,
    )

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"error": "no such route"}'
            self.send_response(404)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"https://127.0.0.1:{srv.server_address[1]}"
    try:
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        with pytest.raises(ServerError, match="ConnectError"):  # not trusted: the certificate check fails
            ServerClient(url, "t", max_retries=0, timeout_s=5).info()
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        with pytest.raises(ServerError, match="HTTP 404"):  # trusted: the request reached the server
            ServerClient(url, "t", max_retries=0, timeout_s=5).info()
    finally:
        srv.shutdown()
        srv.server_close()
    with caplog.at_level(logging.WARNING, logger="dpsynth.knowledgesg"):
        ServerClient("http://127.0.0.1:8000", "t").close()
        assert "unencrypted" not in caplog.text
        ServerClient("http://10.1.2.3:8000", "t").close()
        assert "unencrypted" in caplog.text


def test_a_client_keeps_at_most_max_jobs_and_never_loses_an_active_one(tmp_path: Path) -> None:
    """Regression: every job stayed on the server's disk for ever (folder, data, report, key), so one client
    could fill it; now the oldest finished jobs beyond max_jobs_per_client go, queued and running ones stay."""
    store = JobStore(tmp_path)
    aid = store.save_adapter("a", b"adapter bytes")
    ids = []
    for n in range(4):
        job, _ = store.create("a", _spec(aid, key=f"key-{n:04d}", n_samples=n + 1), keep=3)
        ids.append(job["status"]["job_id"])
        time.sleep(0.01)  # distinct creation times
        if n < 2:
            store.update("a", ids[-1], state="done" if n == 0 else "failed")
    # 4 jobs, keep 3: the oldest finished one (done) went, with its idempotency key
    assert [store.get("a", i) is None for i in ids] == [True, False, False, False]
    assert store.job_for_key("a", "key-0000") is None and store.job_for_key("a", "key-0001") == ids[1]
    for n in range(4, 7):  # only active jobs beyond the failed one: the failed one goes, the active stay
        ids.append(store.create("a", _spec(aid, key=f"key-{n:04d}", n_samples=n + 1), keep=3)[0]["status"]["job_id"])
    assert store.get("a", ids[1]) is None
    assert all(store.get("a", i) is not None for i in ids[2:])  # queued ones are never removed
    assert ServerConfig(state_dir=str(tmp_path)).max_jobs_per_client == 50


def test_an_answer_is_read_with_a_size_cap_and_a_deadline() -> None:
    """Regression: the client read any answer whole into memory (a broken server's endless body, or a gzip
    bomb, filled it), and a server sending one byte now and then held it for ever (each read had its own
    timeout, the request none)."""
    import gzip

    import httpx

    from dpsynth.knowledgesg.client import MAX_ANSWER_BYTES, ServerClient, ServerError, dataset_limit
    from dpsynth.knowledgesg.protocol import JobSpec

    def serve(resp: httpx.Response) -> ServerClient:
        client = ServerClient("http://127.0.0.1:1", "t", max_retries=0)
        client._http = httpx.Client(base_url="http://127.0.0.1:1", transport=httpx.MockTransport(lambda req: resp))
        return client

    spec = JobSpec.model_validate(
        {
            "adapter_id": "0" * 32,
            "base_model": "tiny",
            "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj"]},
            "prompt": {"label": "medicine", "task": "question"},
            "domain": "medicine",
            "n_samples": 10,
            "max_new_tokens": 16,
            "answer_max_tokens": 16,
        }
    )
    limit = dataset_limit(spec)
    assert 1024 * 1024 < limit < 2 * 1024 * 1024
    # a compressed answer is still decoded (the headers no longer claim an encoding for the decoded bytes)
    rows = '{"instruction": "q?", "response": "a."}\n' * 3
    packed = httpx.Response(200, content=gzip.compress(rows.encode()), headers={"content-encoding": "gzip"})
    assert serve(packed).dataset("0" * 32, spec) == rows
    with pytest.raises(ServerError, match=f"more than {limit / 2**20:.1f} MiB"):
        serve(httpx.Response(200, content=b"x" * (limit + 1))).dataset("0" * 32, spec)
    bomb = gzip.compress(b"\0" * (MAX_ANSWER_BYTES + 1))  # 16 KiB on the wire
    with pytest.raises(ServerError, match="more than 16.0 MiB"):
        serve(httpx.Response(200, content=bomb, headers={"content-encoding": "gzip"})).info()

    with trickle_server() as url:
        client = ServerClient(url, "t", max_retries=0, timeout_s=5, deadline_s=1)
        t0 = time.monotonic()
        with pytest.raises(ServerError, match="no complete answer within 1 s"):
            client.info()
        assert time.monotonic() - t0 < 5
    # (regression, audit) nor by sending its headers a byte at a time, which httpx waits for with the
    # per-read timeout only (20 s here, days with the defaults)
    with trickle_server(headers=True) as url:
        client = ServerClient(url, "t", max_retries=1, backoff_s=0.01, timeout_s=5, deadline_s=1)
        t0 = time.monotonic()
        with pytest.raises(ServerError, match="no complete answer within 1 s"):
            client.info()
        assert time.monotonic() - t0 < 5  # both attempts, each cut at its deadline
        client.close()


def test_an_upload_that_trickles_is_dropped_at_the_deadline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: an upload sending a byte just inside UPLOAD_IDLE_S held its client's only upload place,
    and one of the server's max_concurrent_uploads, for as long as it liked; now upload_timeout_s ends it."""
    import asyncio

    from dpsynth.knowledgesg import server as server_mod

    monkeypatch.setattr(server_mod, "UPLOAD_IDLE_S", 0.5)
    cfg = ServerConfig(
        state_dir=str(tmp_path),
        base_model="tiny",
        clients={"alice": {"token_sha256": token_hash("alice-token")}},
        max_adapter_mb=0.01,
        upload_timeout_s=1.0,
    )
    app = create_app(cfg, start_worker=False)
    app.state.service.base = _Base()
    good = save(lora_tensors())

    async def post(body: bytes, trickle: bool) -> tuple[int, str]:
        parts = [body[i : i + 1] for i in range(40)] if trickle else [body]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            if not parts:
                await asyncio.sleep(3600)
            if trickle:
                await asyncio.sleep(0.2)  # well inside the idle limit, every time
            return {"type": "http.request", "body": parts.pop(0), "more_body": bool(parts) or trickle}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        headers = _h("alice-token", **{CHECKSUM_HEADER: hashlib.sha256(body).hexdigest()})
        await app(_post_scope("/v1/adapters", headers), receive, send)
        start = next(m for m in sent if m["type"] == "http.response.start")
        body_text = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body").decode()
        return start["status"], body_text

    async def scenario() -> list[tuple[int, str]]:
        t0 = time.monotonic()
        slow = await post(good, trickle=True)
        assert time.monotonic() - t0 < 3
        return [slow, await post(good, trickle=False)]  # its place is free again

    (slow, why), (after, _) = asyncio.run(scenario())
    assert (slow, after) == (408, 201) and "took over 1 s" in why
