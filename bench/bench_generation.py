"""Generation throughput: raw xllamacpp calls vs ``LlamaCppGenerator.generate``.

Both paths share one in-process llama.cpp server (same model, same slots, same
threads), so the ratio measures only dpsynth's overhead (payload building,
thread pool, parsing, callbacks).  Raw = ``server.handle_completions`` called
from ``n_parallel`` threads, the way llama.cpp's own HTTP server feeds its
slots.  Runs alternate raw / generator (order flipped each repetition) because
a shared 2-core machine is noisy; the JSON keeps every run.

    python bench/bench_generation.py                      # SmolLM2, 1/4/8 slots
    python bench/bench_generation.py --models smollm2-135m-instruct,gemma3-270m --slots 4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dpsynth.config import GeneratorConfig
from dpsynth.generators.base import GenerationRequest, TokenCounter
from dpsynth.generators.llamacpp import LlamaCppGenerator
from dpsynth.generators.openai_http import request_body

PROMPT = 'The following is a positive movie review.\nReview: "'


def requests_for(n: int, max_tokens: int, rep: int) -> list[GenerationRequest]:
    return [
        GenerationRequest(prompt=PROMPT, max_tokens=max_tokens, temperature=1.0, top_p=0.9, seed=1000 * rep + i)
        for i in range(n)
    ]


def run_raw(server: Any, reqs: list[GenerationRequest], workers: int) -> tuple[int, float]:
    bodies = [request_body(r) for r in reqs]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as ex:
        out = list(ex.map(server.handle_completions, bodies))
    dt = time.perf_counter() - t0
    return sum(int(o.get("usage", {}).get("completion_tokens", 0)) for o in out), dt


def run_generator(gen: LlamaCppGenerator, reqs: list[GenerationRequest]) -> tuple[int, float]:
    counter = TokenCounter()
    t0 = time.perf_counter()
    gen.generate(reqs, on_completion=counter.add)
    dt = time.perf_counter() - t0
    return counter.completion_tokens, dt


class _InstantServer:
    """Answers like xllamacpp at once: isolates dpsynth's own per-request cost."""

    RESPONSE = {
        "choices": [{"text": " A wonderful film, full of heart.", "index": 0, "finish_reason": "length"}],
        "usage": {"completion_tokens": 64, "prompt_tokens": 12, "total_tokens": 76},
    }

    def handle_completions(self, body: dict[str, Any]) -> dict[str, Any]:
        json.loads(json.dumps(body))  # the real call serialises the request and parses the answer
        return json.loads(json.dumps(self.RESPONSE))


def overhead_per_request_us(gen: LlamaCppGenerator, n: int = 2000) -> dict[str, float]:
    """Wall time per request of the generator path vs a raw thread pool, with an instant server."""
    real = gen._server
    fake = _InstantServer()
    gen._server = fake
    try:
        reqs = requests_for(n, 64, 0)
        t0 = time.perf_counter()
        gen.generate(reqs, on_completion=TokenCounter().add)
        t_gen = time.perf_counter() - t0
        t_raw = run_raw(fake, reqs, gen.cfg.n_parallel)[1]
    finally:
        gen._server = real
    return {"generator_us": round(1e6 * t_gen / n, 1), "raw_us": round(1e6 * t_raw / n, 1)}


def machine_info() -> dict[str, Any]:
    import xllamacpp

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu or platform.processor(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "xllamacpp": getattr(xllamacpp, "__version__", "?"),
        "llama_system_info": xllamacpp.get_system_info().strip(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }


def bench_one(model: str, slots: int, n_requests: int, max_tokens: int, reps: int, threads: int) -> dict[str, Any]:
    cfg = GeneratorConfig(
        name=model, model=model, prompt_format="completion", n_parallel=slots, n_ctx=4096, n_threads=threads
    )
    t0 = time.perf_counter()
    gen = LlamaCppGenerator(cfg)
    load_s = time.perf_counter() - t0
    server = gen._server
    runs: list[dict[str, Any]] = []
    try:
        run_raw(server, requests_for(slots, 8, 99), slots)  # warm-up
        for rep in range(reps):
            order = ["raw", "generator"] if rep % 2 == 0 else ["generator", "raw"]
            for kind in order:
                reqs = requests_for(n_requests, max_tokens, rep)
                load_before = os.getloadavg()[0]
                if kind == "raw":
                    toks, dt = run_raw(server, reqs, slots)
                else:
                    toks, dt = run_generator(gen, reqs)
                runs.append(
                    {
                        "rep": rep,
                        "kind": kind,
                        "tokens": toks,
                        "seconds": round(dt, 3),
                        "tok_s": round(toks / dt, 1),
                        "loadavg_1m_before": round(load_before, 2),
                    }
                )
                print(f"  {model} slots={slots} rep={rep} {kind:9s} {toks / dt:7.1f} tok/s", flush=True)
        overhead = overhead_per_request_us(gen)
    finally:
        gen.close()
    raw = [r["tok_s"] for r in runs if r["kind"] == "raw"]
    gen_ = [r["tok_s"] for r in runs if r["kind"] == "generator"]
    paired = [g / r for r, g in zip(raw, gen_, strict=True) if r > 0]

    def total(kind: str) -> float:
        rs = [r for r in runs if r["kind"] == kind]
        return sum(r["tokens"] for r in rs) / sum(r["seconds"] for r in rs)

    return {
        "model": model,
        "slots": slots,
        "threads": threads or os.cpu_count(),
        "requests": n_requests,
        "max_tokens": max_tokens,
        "load_s": round(load_s, 2),
        "raw_tok_s_median": round(statistics.median(raw), 1),
        "raw_tok_s_best": round(max(raw), 1),
        "generator_tok_s_median": round(statistics.median(gen_), 1),
        "generator_tok_s_best": round(max(gen_), 1),
        "raw_tok_s_overall": round(total("raw"), 1),
        "generator_tok_s_overall": round(total("generator"), 1),
        "ratio_overall": round(total("generator") / total("raw"), 3),
        "ratio_median": round(statistics.median(gen_) / statistics.median(raw), 3),
        "ratio_best": round(max(gen_) / max(raw), 3),
        "ratio_paired_median": round(statistics.median(paired), 3),
        "overhead_per_request_us_instant_server": overhead,
        "runs": runs,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="smollm2-135m-instruct")
    ap.add_argument("--slots", default="1,4,8")
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=0, help="llama.cpp threads; 0 = all cores (the default config)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "generation.json"))
    args = ap.parse_args()

    results = []
    for model in args.models.split(","):
        for slots in (int(s) for s in args.slots.split(",")):
            results.append(bench_one(model.strip(), slots, args.requests, args.max_tokens, args.reps, args.threads))
    report = {
        "benchmark": "generation throughput, raw xllamacpp handle_completions vs LlamaCppGenerator.generate",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "target_ratio": 0.9,
        "machine": machine_info(),
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "note": (
            "same in-process server for both paths; runs alternate raw/generator; "
            "the machine is shared, so compare ratios, and prefer best/paired figures over single runs"
        ),
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out}")
    for r in results:
        print(
            f"{r['model']:24s} slots={r['slots']}: raw {r['raw_tok_s_best']:6.1f} tok/s, "
            f"generator {r['generator_tok_s_best']:6.1f} tok/s (best); "
            f"ratio best {r['ratio_best']:.3f}, median {r['ratio_median']:.3f}, "
            f"paired {r['ratio_paired_median']:.3f}, overall {r['ratio_overall']:.3f}"
        )


if __name__ == "__main__":
    main()
