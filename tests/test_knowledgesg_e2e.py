"""KnowledgeSG with real models and two processes on 127.0.0.1: `dpsynth server start` and the client.

* the whole flow: `dpsynth client run` DP-fine-tunes SmolLM2 on private pairs holding sentinel strings,
  uploads the adapter, the server samples, filters and answers with a real GGUF model, the client gets
  the data; no sentinel is in any request body the server received nor in any file it wrote;
* the attack-surface cases against the real server (wrong token, another client's job, truncated upload,
  an adapter for another base model);
* the server killed (SIGKILL) mid-job and restarted: the job continues and a retrying client gets it.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
import yaml
from safetensors.torch import save

from dpsynth.knowledgesg.client import ServerClient
from dpsynth.knowledgesg.protocol import CHECKSUM_HEADER, JobSpec, LoraSpec, PromptSpec
from dpsynth.knowledgesg.server import token_hash
from dpsynth.methods import dp_finetune_privacy as dpf_privacy

pytestmark = [pytest.mark.slow, pytest.mark.model]

TOKENS = {"alice": "alice-secret-token", "bob": "bob-secret-token"}
SENTINELS = [f"SNTL{i}QX{i * 7}ZZ" for i in range(4)]
START_TIMEOUT_S = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, tmp: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.state = tmp / "state"
        self.cfg = tmp / "server.yaml"
        self.cfg.write_text(
            yaml.safe_dump(
                {
                    "host": "127.0.0.1",
                    "port": self.port,
                    "state_dir": str(self.state),
                    "base_model": "smollm2-135m-instruct",
                    # a small professional model keeps the test short; the default is Qwen2.5-0.5B
                    "professional": {"name": "smollm2", "model": "smollm2-135m-instruct", "n_parallel": 2},
                    "clients": {c: {"token_sha256": token_hash(t)} for c, t in TOKENS.items()},
                    "record_requests": True,
                }
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tmp / "server.out"

    def start(self) -> None:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dpsynth", "server", "start", "--config", str(self.cfg)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=5).json()["status"] == "ok":
                    return
            except (httpx.TransportError, ValueError):
                pass
            time.sleep(1.0)
        raise AssertionError("server did not become ready: " + self.log.read_text()[-3000:])

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    s = Server(tmp_path_factory.mktemp("ksg"))
    s.start()
    yield s
    s.stop()


def _h(client: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[client]}", **extra}


def smollm2_adapter(r: int = 4, hidden: int = 576, kv: int = 192, layers: int = 30, seed: int = 0) -> bytes:
    """A LoRA adapter shaped for SmolLM2-135M's q_proj/v_proj (random, small: a stand-in for a trained one)."""
    g = torch.Generator().manual_seed(seed)
    t = {}
    for i in range(layers):
        for name, out in (("q_proj", hidden), ("v_proj", kv)):
            pre = f"base_model.model.model.layers.{i}.self_attn.{name}"
            t[f"{pre}.lora_A.weight"] = 0.01 * torch.randn(r, hidden, generator=g)
            t[f"{pre}.lora_B.weight"] = 0.01 * torch.randn(out, r, generator=g)
    return save(t)


def _spec(adapter_id: str, n: int = 3, **kw: Any) -> JobSpec:
    return JobSpec(
        adapter_id=adapter_id,
        base_model="smollm2-135m-instruct",
        lora=LoraSpec(r=4, alpha=8, target_modules=["q_proj", "v_proj"]),
        prompt=PromptSpec(label="medical", task="question and answer"),
        domain="medical",
        n_samples=n,
        max_new_tokens=48,
        answer_max_tokens=48,
        seed=1,
        **kw,
    )


def test_attack_surface_on_the_real_server(server: Server) -> None:
    url = server.url
    # the server's folder and log are its operator's only (regression: 0755 and 0644 under the usual umask)
    assert server.state.stat().st_mode & 0o077 == 0 and (server.state / "server.log").stat().st_mode & 0o077 == 0
    assert httpx.get(f"{url}/v1/info", headers={"Authorization": "Bearer nope"}, timeout=10).status_code == 401
    good = smollm2_adapter()
    digest = hashlib.sha256(good).hexdigest()
    cut = httpx.post(
        f"{url}/v1/adapters", content=good[:100_000], headers=_h("alice", **{CHECKSUM_HEADER: digest}), timeout=60
    )
    assert cut.status_code == 400 and "truncated" in cut.json()["error"]
    other = smollm2_adapter(hidden=896, kv=128, layers=24)  # Qwen2.5-0.5B's shapes
    r = httpx.post(
        f"{url}/v1/adapters",
        content=other,
        headers=_h("alice", **{CHECKSUM_HEADER: hashlib.sha256(other).hexdigest()}),
        timeout=60,
    )
    assert r.status_code == 422 and "another base model" in r.json()["error"]
    with ServerClient(url, TOKENS["alice"], max_retries=2) as alice:
        receipt = alice.upload_adapter(good)
        job = alice.create_job(_spec(receipt.adapter_id, n=1, filter=False))
    r = httpx.get(f"{url}/v1/jobs/{job.job_id}", headers=_h("bob"), timeout=10)
    assert r.status_code == 404  # bob cannot see alice's job
    r = httpx.get(f"{url}/v1/jobs/{job.job_id}/dataset", headers=_h("bob"), timeout=10)
    assert r.status_code == 404


def test_server_killed_mid_job_resumes_and_client_retries(server: Server) -> None:
    with ServerClient(server.url, TOKENS["alice"], max_retries=2) as alice:
        receipt = alice.upload_adapter(smollm2_adapter(seed=3))
        job = alice.create_job(_spec(receipt.adapter_id, n=4, filter=True))
        deadline = time.monotonic() + 300
        while alice.status(job.job_id).state != "running":  # the earlier test's job may run first
            assert time.monotonic() < deadline
            time.sleep(0.5)
    server.kill()
    assert server.proc is not None and server.proc.returncode == -signal.SIGKILL
    server.start()
    with ServerClient(server.url, TOKENS["alice"], max_retries=30, backoff_s=0.5) as alice:
        deadline = time.monotonic() + 600
        while (st := alice.status(job.job_id)).state not in ("done", "failed"):
            assert time.monotonic() < deadline, st
            time.sleep(1.0)
        assert st.state == "done", st.error
        rows = [json.loads(x) for x in alice.dataset(job.job_id).splitlines() if x.strip()]
        assert len(rows) <= 4 and all(r["instruction"] and r["response"] for r in rows)
        report = alice.report(job.job_id)  # the real professional model judged every instruction it saw
        assert report["n_returned"] == len(rows) and report["n_judged"] >= 1
        assert report["n_judged"] == report["n_dropped"] + len(rows) or len(rows) == 4
        assert report["n_failed"] == 0  # no request to the real professional model failed
    assert "resumed after a restart" in (server.state / "server.log").read_text()


def test_client_run_end_to_end_and_no_private_text_reaches_the_server(server: Server, tmp_path: Path) -> None:
    records = []
    for i in range(16):
        s = SENTINELS[i % len(SENTINELS)]
        records.append(
            {
                "instruction": f"Patient {s} reports chest pain after exercise, case {i}. What is the first test?",
                "response": f"An ECG first for {s}; then troponin if the ECG is abnormal.",
            }
        )
    private = tmp_path / "private.jsonl"
    private.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "run"
    env = {**os.environ, "DPSYNTH_TOKEN": TOKENS["alice"], "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "dpsynth",
        "client",
        "run",
        "--server",
        server.url,
        "--private",
        str(private),
        "--out",
        str(out),
        "--n-synthetic",
        "3",
        "--epsilon",
        "8",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--max-length",
        "96",
        "--max-new-tokens",
        "48",
        "--filter",
        "false",
        "--local-finetune",
        "true",
        "--local-epochs",
        "1",
        "--seed",
        "0",
        "--quiet",
    ]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "wrote" in res.stdout
    assert "to score the pairs, see docs/knowledgesg.md" in res.stdout and "dpsynth evaluate" not in res.stdout
    rows = [json.loads(x) for x in (out / "synthetic.jsonl").read_text().splitlines() if x.strip()]
    assert len(rows) <= 3 and all(set(r) >= {"instruction", "response", "label", "generator"} for r in rows)
    if rows:  # the local fine-tune on the returned pairs (post-processing) saved its adapter
        assert (out / "local_adapter" / "adapter_model.safetensors").is_file()
    privacy = json.loads((out / "privacy.json").read_text())
    assert privacy["method"] == "knowledgesg"
    # the noisy record count (it sets the sample rate), then DP-SGD
    names = [m["name"] for m in privacy["mechanisms"]]
    assert len(names) == 2 and names[0].startswith("record count") and names[1].startswith("DP-SGD")
    assert privacy["epsilon"] <= 8.0 + 1e-6
    # the sample rate came from that count: the two are accounted apart at their shares of delta and added
    assert "caveat" not in privacy and "caveat:" not in res.stdout
    parts = privacy["accountant"]["parts"]
    assert [p["release"] for p in parts] == ["counts", "dpsgd"]
    assert privacy["epsilon"] == pytest.approx(sum(p["epsilon"] for p in parts), rel=1e-12)
    # regression: KnowledgeSG's own post-processing list replaced the note that q and the steps come from the count
    assert privacy["post_processing"][0].startswith(dpf_privacy.ADAPTIVE_PLAN_NOTE[:40])
    assert any("uploaded to the server" in p for p in privacy["post_processing"])
    adapter = (out / "adapter" / "adapter_model.safetensors").read_bytes()
    assert privacy["sent_to_server"]["adapter"]["sha256"] == hashlib.sha256(adapter).hexdigest()
    # nothing private reached the server: every request body it received, and every file it wrote
    received = (server.state / "requests.log").read_bytes()
    assert b"/v1/adapters" in received and b"/v1/jobs" in received
    for path in server.state.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for s in SENTINELS:
                assert s.encode() not in data, f"sentinel in {path}"
    # and the client's own outputs hold no private text either
    for path in out.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".jsonl", ".log", ".yaml"):
            text = path.read_text(errors="replace")
            assert not any(s in text for s in SENTINELS), path


def test_sigint_mid_job_stops_cleanly_and_a_restart_finishes_the_job(server: Server) -> None:
    """Ctrl-C while the worker is inside torch/llama.cpp: no abort ("terminate called", status 134)."""
    with ServerClient(server.url, TOKENS["alice"], max_retries=2) as alice:
        receipt = alice.upload_adapter(smollm2_adapter(seed=5))
        job = alice.create_job(_spec(receipt.adapter_id, n=4, filter=True))
        deadline = time.monotonic() + 300
        while alice.status(job.job_id).state != "running":  # an earlier test's job may run first
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert server.proc is not None
    seen = server.log.stat().st_size
    server.proc.send_signal(signal.SIGINT)
    server.proc.wait(timeout=300)
    out = server.log.read_bytes()[seen:].decode(errors="replace")
    assert server.proc.returncode in (0, 130), (server.proc.returncode, out[-3000:])
    assert "terminate called" not in out and "Traceback" not in out, out[-3000:]
    on_disk = json.loads((server.state / "jobs" / "alice" / job.job_id / "job.json").read_text())["status"]
    assert on_disk["state"] in ("queued", "done"), on_disk  # back in the queue (or finished), never failed
    server.start()
    with ServerClient(server.url, TOKENS["alice"], max_retries=30, backoff_s=0.5) as alice:
        deadline = time.monotonic() + 600
        while (st := alice.status(job.job_id)).state not in ("done", "failed"):
            assert time.monotonic() < deadline, st
            time.sleep(1.0)
        assert st.state == "done", st.error
