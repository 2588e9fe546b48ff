"""The label judge, before and after: free-text answer vs the first token's label probabilities.

Real IMDb test reviews (known labels), cut to the length the judge sees (``example_chars``), are judged
by the embedded Qwen2.5 judge with (a) the earlier request (question after the text, a few tokens of
free text, parsed for a label name) and (b) the current one (question first so that its prefix is
reused from the KV cache, one token, the label read from its top log-probabilities, "unsure" below
a 0.6 share).  Both run on the same server, interleaved in chunks.  Reported: accuracy on the
samples judged, the unsure rate, wall time, prompt and cached tokens.

    python bench/diag_judge.py [--n 200] [--out judge]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402
from dpsynth.config import GeneratorConfig, WaspConfig  # noqa: E402
from dpsynth.data import imdb_test  # noqa: E402
from dpsynth.generators import build_generator  # noqa: E402
from dpsynth.generators.base import ChatMessage, GenerationRequest, TokenCounter  # noqa: E402
from dpsynth.prompts import (  # noqa: E402
    _quoted,
    judge_request,
    judge_verdict,
    label_probabilities,
    parse_judgement,
)

CONTENT_FREE = ("N/A", "[text]", "...")

# the request used before this benchmark: text first, question after, free text
OLD = 'Here is a {task}:\n\n"{text}"\n\nWhich of these labels fits it best: {choices}? Answer with the label only.'


def old_request(task: str, text: str, names: list[str], chars: int) -> GenerationRequest:
    prompt = OLD.format(task=task, text=_quoted(text, chars), choices=" or ".join(names))
    longest = max(len(n.split()) for n in names)
    return GenerationRequest(
        messages=(ChatMessage("user", prompt),), max_tokens=4 + 2 * longest, temperature=0.0, top_p=1.0, seed=0
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--chunk", type=int, default=20)
    ap.add_argument("--out", default="judge")
    args = ap.parse_args()
    names = ["negative", "positive"]
    test = imdb_test()
    half = args.n // 2
    rows = (
        test[test["label"] == "0"].head(half).assign(name="negative"),
        test[test["label"] == "1"].head(half).assign(name="positive"),
    )
    items = [(t, n) for df in rows for t, n in zip(df["text"], df["name"], strict=True)]
    items = [items[i] for i in sorted(range(len(items)), key=lambda i: (i % half, i))]  # alternate classes
    chars = WaspConfig().example_chars
    gen = build_generator(GeneratorConfig(name="judge", model="qwen2.5-0.5b-instruct", prompt_format="chat"))
    probs: list[tuple[dict[str, float], str]] = []
    stats: dict[str, dict[str, Any]] = {
        k: {"seconds": 0.0, "said": [], "tokens": TokenCounter()} for k in ("free_text", "top_logprobs")
    }
    try:
        for k in range(0, len(items), args.chunk):
            chunk = items[k : k + args.chunk]
            for kind in ("free_text", "top_logprobs") if (k // args.chunk) % 2 == 0 else ("top_logprobs", "free_text"):
                make = old_request if kind == "free_text" else judge_request
                reqs = [make("movie review", t, names, chars) for t, _ in chunk]
                t0 = time.perf_counter()
                out = gen.generate(reqs, on_completion=stats[kind]["tokens"].add)
                stats[kind]["seconds"] += time.perf_counter() - t0
                for c, (_, truth) in zip(out, chunk, strict=True):
                    said = (
                        parse_judgement(c.text, names)
                        if kind == "free_text"
                        else judge_verdict(c.text, c.top_logprobs, names)
                    )
                    stats[kind]["said"].append((said, truth))
                    if kind == "top_logprobs":
                        probs.append((label_probabilities(c.top_logprobs, names), truth))
        # content-free inputs (Zhao et al., "Calibrate Before Use", ICML 2021): the judge's prior
        free = gen.generate([judge_request("movie review", t, names, chars) for t in CONTENT_FREE])
        priors = [label_probabilities(c.top_logprobs, names) for c in free]
    finally:
        gen.close()
    result: dict[str, Any] = {}
    for kind, st in stats.items():
        said = st["said"]
        judged = [(s, t) for s, t in said if s is not None]
        tc: TokenCounter = st["tokens"]
        result[kind] = {
            "n": len(said),
            "unsure": len(said) - len(judged),
            "accuracy_on_judged": round(sum(s == t for s, t in judged) / max(len(judged), 1), 3),
            "wrong": sum(s != t for s, t in judged),
            "wrong_on_negative": sum(s != t for s, t in judged if t == "negative"),
            "wrong_on_positive": sum(s != t for s, t in judged if t == "positive"),
            "seconds": round(st["seconds"], 1),
            "prompt_tokens": tc.prompt_tokens,
            "cached_prompt_tokens": tc.cached_tokens,
            "completion_tokens": tc.completion_tokens,
        }
    result["speedup"] = round(result["free_text"]["seconds"] / max(result["top_logprobs"]["seconds"], 1e-9), 2)
    prior = {n: sum(p[n] for p in priors) / len(priors) for n in names}
    result["content_free_prior"] = {n: round(v, 4) for n, v in prior.items()}
    for share in (0.5, 0.6, 0.7):
        for calibrated in (False, True):
            said_c = []
            for p, truth in probs:
                q = {n: p[n] / max(prior[n], 1e-6) for n in names} if calibrated else dict(p)
                total = sum(q.values())
                best = max(q, key=lambda n: q[n])
                said_c.append((best if total > 0 and q[best] / total >= share else None, truth))
            judged = [(s_, t) for s_, t in said_c if s_ is not None]
            result[f"share{share}_{'calibrated' if calibrated else 'raw'}"] = {
                "unsure": len(said_c) - len(judged),
                "accuracy_on_judged": round(sum(a == b for a, b in judged) / max(len(judged), 1), 3),
                "wrong_on_negative": sum(a != b for a, b in judged if b == "negative"),
                "wrong_on_positive": sum(a != b for a, b in judged if b == "positive"),
            }
    write_result(
        args.out,
        {
            "command": "python bench/diag_judge.py " + " ".join(sys.argv[1:]),
            "data": f"{len(items)} IMDb test reviews (balanced), cut to {chars} characters",
            "judge": "qwen2.5-0.5b-instruct (embedded GGUF), llama.cpp, 4 slots",
            **result,
        },
    )


if __name__ == "__main__":
    main()
