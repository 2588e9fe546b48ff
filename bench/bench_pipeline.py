"""Pipeline throughput vs the raw backend, and the embedding cache.

1. Throughput: the same in-process llama.cpp server (SmolLM2, 4 slots) serves
   (a) raw ``handle_chat_completions`` calls from 4 threads and (b) a dpsynth
   zero-shot run of the same size (prompt building, clean-up, dedup, journal,
   progress).  Ratio = pipeline tokens/s / raw tokens/s, measured in one process,
   runs alternated.  Target >= 0.9 (the pipeline must not starve the generator).
2. Embedding cache: a WASP run with T = 2 counts the texts sent to the embedder;
   each synthetic text must be embedded once, and a resumed (complete) run embeds
   no synthetic text again.

    python bench/bench_pipeline.py [--n 32] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dpsynth  # noqa: E402
from common import write_result  # noqa: E402
from dpsynth.config import Config, GeneratorConfig  # noqa: E402
from dpsynth.embeddings import SentenceTransformerEmbedder  # noqa: E402
from dpsynth.generators.llamacpp import LlamaCppGenerator  # noqa: E402
from dpsynth.generators.openai_http import request_body  # noqa: E402
from dpsynth.prompts import PromptBuilder  # noqa: E402


class CountingEmbedder:
    def __init__(self) -> None:
        self.inner = SentenceTransformerEmbedder()
        self.name = self.inner.name
        self.texts = 0

    def encode(self, texts: list[str]) -> np.ndarray:
        self.texts += len(texts)
        return self.inner.encode(texts)


def raw_run(gen: LlamaCppGenerator, n: int, max_tokens: int, seed: int) -> tuple[int, float]:
    builder = PromptBuilder(
        "movie review",
        "chat",
        max_tokens=max_tokens,
        temperature=1.0,
        top_p=0.9,
        example_chars=300,
        rng=random.Random(seed),
    )
    # the same sampler fields the generator adds (DRY for llama.cpp), so both sides do the same work
    bodies = [
        {
            **request_body(builder.zero_shot(random.Random(seed + i).choice(["positive", "negative"]))),
            **gen.cfg.sampler_fields(),
        }
        for i in range(n)
    ]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(gen.cfg.n_parallel) as ex:
        out = list(ex.map(gen._server.handle_chat_completions, bodies))
    dt = time.perf_counter() - t0
    return sum(int(o.get("usage", {}).get("completion_tokens", 0)) for o in out), dt


def pipeline_run(gen: LlamaCppGenerator, n: int, max_tokens: int, out: Path) -> tuple[int, float]:
    cfg = Config(
        method="zero-shot",
        n_synthetic=n,
        out=str(out),
        wasp={"max_tokens": max_tokens},
        generators=[GeneratorConfig(name="smol", model="smollm2-135m-instruct")],
    )
    t0 = time.perf_counter()
    dpsynth.synthesize(cfg, generators={"smol": gen}, embedder=CountingEmbedder(), progress=False)
    dt = time.perf_counter() - t0
    rounds = json.loads((out / "rounds.json").read_text())
    return int(rounds[-1]["completion_tokens"]["smol"]), dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=64)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="dpsynth-bench-"))
    gen = LlamaCppGenerator(GeneratorConfig(name="smol", model="smollm2-135m-instruct", n_parallel=4))
    runs = []
    try:
        raw_run(gen, 4, 8, 999)  # warm-up
        for rep in range(args.reps):
            for kind in ["raw", "pipeline"] if rep % 2 == 0 else ["pipeline", "raw"]:
                if kind == "raw":
                    toks, dt = raw_run(gen, args.n, args.max_tokens, rep)
                else:
                    toks, dt = pipeline_run(gen, args.n, args.max_tokens, tmp / f"zs{rep}")
                runs.append(
                    {"rep": rep, "kind": kind, "tokens": toks, "seconds": round(dt, 2), "tok_s": round(toks / dt, 1)}
                )
                print(runs[-1], flush=True)
        # embedding cache
        emb = CountingEmbedder()
        cfg = Config(
            method="wasp",
            n_synthetic=30,
            out=str(tmp / "wasp"),
            wasp={"rounds": 2, "max_tokens": 48},
            generators=[GeneratorConfig(name="smol", model="smollm2-135m-instruct")],
            data={"m_private": 20},
        )
        t0 = time.perf_counter()
        dpsynth.synthesize(cfg, generators={"smol": gen}, embedder=emb, progress=False)
        wasp_s = time.perf_counter() - t0
        samples = [json.loads(x) for x in (tmp / "wasp" / "synthetic.jsonl").read_text().splitlines()]
        voted = sum(1 for s in samples if s["round"] < 2)  # rounds 0..T-1 are voted on
        emb_resume = CountingEmbedder()
        dpsynth.synthesize(cfg, generators={"smol": gen}, embedder=emb_resume, progress=False, resume=True)
    finally:
        gen.close()

    def total(kind: str) -> float:
        rs = [r for r in runs if r["kind"] == kind]
        return sum(r["tokens"] for r in rs) / sum(r["seconds"] for r in rs)

    write_result(
        "pipeline",
        {
            "command": f"python bench/bench_pipeline.py --n {args.n} --reps {args.reps}",
            "model": "SmolLM2-135M-Instruct Q4_1, llama.cpp (xllamacpp), 4 slots, 2 threads",
            "requests_per_run": args.n,
            "raw_tok_s": round(total("raw"), 1),
            "pipeline_tok_s": round(total("pipeline"), 1),
            "ratio": round(total("pipeline") / total("raw"), 3),
            "target_ratio": 0.9,
            "note": "pipeline seconds include prompt building, clean-up, dedup, journal writes and the run directory",
            "runs": runs,
            "embedding_cache": {
                "wasp_run_seconds": round(wasp_s, 1),
                "private_records": 20,
                "synthetic_texts_voted_on": voted,
                "texts_sent_to_embedder": emb.texts,
                "expected_if_each_embedded_once": voted + 20,
                "texts_embedded_on_resume_of_complete_run": emb_resume.texts,
                "expected_on_resume": 20,
            },
        },
    )


if __name__ == "__main__":
    main()
