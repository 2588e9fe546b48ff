"""Why contrastive rounds were slow: small models copy the prompt's examples.  DRY off vs on.

Takes a finished run directory (its round-0 samples are the examples), builds 16 contrastive prompts per
generator exactly as WASP does (4 good + 4 poor examples, 300 characters each), and counts outputs that
are usable / verbatim duplicates / copies of an example (8-word overlap) / unusable, with and without
llama.cpp's DRY sampler (config.DRY_SAMPLER).  Writes bench/results/copying.json.

    python bench/diag_copying.py RUN_DIR
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402
from dpsynth.config import DRY_SAMPLER, Config  # noqa: E402
from dpsynth.generators.llamacpp import LlamaCppGenerator  # noqa: E402
from dpsynth.generators.openai_http import parse_response, request_body  # noqa: E402
from dpsynth.prompts import PromptBuilder, clean_output, copies_example  # noqa: E402

NAMES = {"0": "negative", "1": "positive"}


def trial(gen: LlamaCppGenerator, fmt: str, r0: list[dict], extra: dict) -> dict:
    rng = random.Random(0)
    b = PromptBuilder("movie review", fmt, max_tokens=64, temperature=1.0, top_p=0.9, example_chars=300, rng=rng)
    seen = {" ".join(r["text"].lower().split()) for r in r0}
    reqs, exs = [], []
    for _ in range(16):
        lab = rng.choice(sorted(NAMES))
        pool = [r["text"] for r in r0 if r["label"] == lab]
        good, bad = rng.sample(pool, min(4, len(pool))), rng.sample(pool, min(4, len(pool)))
        reqs.append(b.contrastive(NAMES[lab], good, bad))
        exs.append(good + bad)

    def one(req):  # type: ignore[no-untyped-def]
        body = {**request_body(req), **extra}
        server = gen._server
        data = server.handle_chat_completions(body) if req.is_chat else server.handle_completions(body)
        return parse_response(data, req.is_chat)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(gen.cfg.n_parallel) as ex:
        comps = list(ex.map(one, reqs))
    why: Counter[str] = Counter()
    for c, e in zip(comps, exs, strict=True):
        txt = clean_output(c.text, 40, 2000)
        if txt is None:
            why["unusable"] += 1
        elif " ".join(txt.lower().split()) in seen:
            why["duplicate"] += 1
        elif copies_example(txt, e):
            why["copies_example"] += 1
        else:
            why["accepted"] += 1
    return {"seconds": round(time.perf_counter() - t0, 1), "outcomes": dict(why), "requests": len(reqs)}


def main() -> None:
    run = Path(sys.argv[1])
    rows = [json.loads(line) for line in (run / "samples.journal.jsonl").read_text().splitlines() if line.strip()]
    r0 = [r for r in rows if r["round"] == 0]
    out = {}
    for gc in Config().generators:
        gen = LlamaCppGenerator(gc.model_copy(update={"extra_body": {}}))
        out[gc.name] = {
            "dry_off": trial(gen, gc.prompt_format, r0, {}),
            "dry_on": trial(gen, gc.prompt_format, r0, DRY_SAMPLER),
        }
        gen.close()
        print(gc.name, out[gc.name], flush=True)
    write_result(
        "copying", {"examples_from": "round-0 samples of a default run", "dry_sampler": DRY_SAMPLER, "generators": out}
    )


if __name__ == "__main__":
    main()
