"""Where the wall time of a default WASP run goes, beside zero-shot and the raw llama.cpp ceiling.

One process, one machine state, three measurements:

1. **Raw decode ceiling** of each embedded generator: its in-process llama.cpp server answering
   zero-shot prompts from ``n_parallel`` threads (max_tokens as in the run), completion tokens per
   second of wall time.  Prefill of those short prompts is included.
2. **The default run** (``dpsynth.synthesize`` on the embedded defaults, label judge on) at
   ``--n``, instrumented: model loading, generation per generator (prefill and decode slot time
   from llama.cpp's own timings), the label judge, embedding, the vote, and what was thrown away
   (rounds.json outcomes).
3. **Zero-shot** with the same generators and judge at the same N.

Ratios are what to read (the machine is shared): pipeline accepted-token rate over the ceiling for
the same token mix, WASP wall time over zero-shot wall time.

--dataset newsgroups profiles the same run on the topic task (embedded:newsgroups: private posts, its
four labels and task in the prompts, the ceiling's zero-shot prompts too); the result goes to
profile_wasp_newsgroups.json unless --out is given.

The file is rewritten after each method.  --continue keeps the runs already in the --out file and adds
this process's methods (a comparison too long for one sitting); every run keeps the ceiling its own
process measured, so two processes on machines in different states can be told apart.  The wall-time ratio
of WASP over zero-shot is taken as measured when one process ran both; across two processes, zero-shot's
wall time is first rescaled to the WASP process's ceilings (``wasp_over_zero_shot_wall_basis`` says which).

    python bench/profile_wasp.py --n 300 [--dataset imdb|newsgroups] [--methods wasp,zero-shot] [--out profile_wasp]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dpsynth  # noqa: E402
from common import RESULTS, read_json, write_result  # noqa: E402
from dpsynth.config import Config  # noqa: E402
from dpsynth.data import EMBEDDED_DATASETS, EmbeddedDataset  # noqa: E402
from dpsynth.embeddings import SentenceTransformerEmbedder  # noqa: E402
from dpsynth.generators import build_generator  # noqa: E402
from dpsynth.generators.base import TokenCounter  # noqa: E402
from dpsynth.methods import wasp  # noqa: E402


class Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()

    def wrap(self, name: str, fn: Any) -> Any:
        def inner(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.seconds[name] += time.perf_counter() - t0
                self.calls[name] += 1

        return inner


def ceiling(gen: Any, n: int, max_tokens: int, dataset: EmbeddedDataset) -> dict[str, Any]:
    """Completion tokens per second of the raw server on zero-shot prompts (n_parallel threads)."""
    import random

    from dpsynth.generators.openai_http import request_body
    from dpsynth.prompts import PromptBuilder

    cfg = gen.cfg
    b = PromptBuilder(
        dataset.task,
        cfg.prompt_format,
        max_tokens=max_tokens,
        temperature=1.0,
        top_p=0.9,
        example_chars=300,
        rng=random.Random(0),
    )
    names = list(dataset.labels.values())
    reqs = [b.zero_shot(names[i % len(names)]) for i in range(n)]
    bodies = [{**request_body(r), **cfg.sampler_fields()} for r in reqs]
    handle = gen._server.handle_chat_completions if cfg.prompt_format == "chat" else gen._server.handle_completions
    t0 = time.perf_counter()
    with ThreadPoolExecutor(cfg.n_parallel) as ex:
        out = list(ex.map(handle, bodies))
    dt = time.perf_counter() - t0
    toks = sum(int(o.get("usage", {}).get("completion_tokens", 0)) for o in out)
    return {"requests": n, "completion_tokens": toks, "seconds": round(dt, 2), "tok_s": round(toks / dt, 1)}


def tokens_dict(tc: TokenCounter) -> dict[str, Any]:
    return {
        "completions": tc.completions,
        "completion_tokens": tc.completion_tokens,
        "prompt_tokens": tc.prompt_tokens,
        "cached_prompt_tokens": tc.cached_tokens,
        "prefill_slot_s": round(tc.prompt_ms / 1000, 1),
        "decode_slot_s": round(tc.predicted_ms / 1000, 1),
    }


def profile_run(
    method: str,
    n: int,
    m: int,
    seed: int,
    gens: dict[str, Any],
    embedder: Any,
    per_prompt: int,
    dataset: EmbeddedDataset = EMBEDDED_DATASETS["embedded:imdb"],
) -> dict[str, Any]:
    timer = Timer()
    out = Path(tempfile.mkdtemp(prefix=f"profile-{method}-")) / "run"
    cfg = Config(
        method=method,
        n_synthetic=n,
        out=str(out),
        data={"private": dataset.source, "m_private": m, "seed": seed},
        wasp={"samples_per_prompt": per_prompt},
        seed=seed,
    )
    captured: dict[str, Any] = {}
    orig_init = wasp.WaspRun.__init__

    def init(self: Any, *a: Any, **k: Any) -> None:
        orig_init(self, *a, **k)
        captured["run"] = self
        self._fill = timer.wrap("fill", self._fill)  # generation + judge, per (generator, round)
        self._judged = timer.wrap("judge", self._judged)

    wasp.WaspRun.__init__ = init  # type: ignore[method-assign]
    vote, encode = wasp.noisy_top_q_vote, embedder.encode
    wasp.noisy_top_q_vote = timer.wrap("vote", vote)
    embedder.encode = timer.wrap("embed", encode)
    t0 = time.perf_counter()
    try:
        res = dpsynth.synthesize(cfg, generators=gens, embedder=embedder, progress=False)
    finally:
        wasp.WaspRun.__init__ = orig_init  # type: ignore[method-assign]
        wasp.noisy_top_q_vote = vote
        embedder.encode = encode
    wall = time.perf_counter() - t0
    run = captured["run"]
    rounds = json.loads((out / "rounds.json").read_text())
    outcomes: dict[str, Counter[str]] = defaultdict(Counter)
    for r in rounds:
        for g, c in (r.get("outcomes") or {}).items():
            outcomes[g].update(c)
    accepted = Counter(r["generator"] for r in res.records)
    per_gen = {}
    for g, tc in run.tokens.items():
        requests = sum(outcomes[g].values()) - outcomes[g]["judge_unsure"]  # judge_unsure also counts accepted
        mean_tok = tc.completion_tokens / max(tc.completions, 1)
        per_gen[g] = {
            **tokens_dict(tc),
            "accepted": accepted[g],
            "outcomes": dict(outcomes[g]),
            "requests": requests,
            "accepted_share_of_requests": round(accepted[g] / max(requests, 1), 3),
            "mean_completion_tokens": round(mean_tok, 1),
            "accepted_completion_tokens_est": round(accepted[g] * mean_tok),
        }
    gen_wall = timer.seconds["fill"] - timer.seconds["judge"]
    parts = {
        "generation (prefill + decode, all generators)": gen_wall,
        "label judge": timer.seconds["judge"],
        "embedding (private once + synthetic, cached)": timer.seconds["embed"],
        "vote": timer.seconds["vote"],
    }
    parts["other (prompt building, clean-up, journal, report)"] = wall - sum(parts.values())
    return {
        "method": method,
        "dataset": dataset.source,
        "n_synthetic": n,
        "m_private": m,
        "seed": seed,
        "records": len(res.records),
        "samples_per_prompt": per_prompt,
        "run_dir": str(out),
        "wall_s": round(wall, 1),
        "s_per_sample": round(wall / max(len(res.records), 1), 3),
        "parts_s": {k: round(v, 1) for k, v in parts.items()},
        "parts_share": {k: round(v / wall, 3) for k, v in parts.items()},
        "generators": per_gen,
        "judge_tokens": tokens_dict(run.judge_tokens),
        "epsilon": res.privacy["epsilon"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--dataset",
        choices=[name.removeprefix("embedded:") for name in EMBEDDED_DATASETS],
        default="imdb",
        help="embedded dataset of the runs: imdb (sentiment, default) or newsgroups (4 topics)",
    )
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--m", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default="wasp,zero-shot")
    ap.add_argument("--ceiling-requests", type=int, default=16)
    ap.add_argument("--samples-per-prompt", type=int, default=1, help="wasp.samples_per_prompt of every run")
    ap.add_argument("--out", default=None, help="result name (default profile_wasp, profile_wasp_newsgroups)")
    ap.add_argument(
        "--continue",
        dest="cont",
        action="store_true",
        help="keep the runs already in the --out file (same dataset, N, M, seed) and add this process's "
        "methods: a comparison too long for one sitting, in consecutive processes; each run keeps the "
        "ceiling its own process measured, so a change of machine state shows",
    )
    args = ap.parse_args()
    dataset = EMBEDDED_DATASETS[f"embedded:{args.dataset}"]
    out = args.out or ("profile_wasp" if args.dataset == "imdb" else f"profile_wasp_{args.dataset}")
    methods = args.methods.split(",")
    earlier = previous_runs(out, dataset, args, methods) if args.cont else []  # refused before any model loads
    cfg = Config()
    t0 = time.perf_counter()
    gens = {gc.name: build_generator(gc) for gc in cfg.generators}
    embedder = SentenceTransformerEmbedder(cfg.embedding_model, cfg.embedding_batch_size)
    embedder.encode(["warm up"])
    load_s = time.perf_counter() - t0
    command = "python bench/profile_wasp.py " + " ".join(sys.argv[1:])
    process = uuid.uuid4().hex[:12]  # which runs one process measured (one machine state, one set of ceilings)
    try:
        ceilings = {g: ceiling(gen, args.ceiling_requests, cfg.wasp.max_tokens, dataset) for g, gen in gens.items()}
        runs: list[dict[str, Any]] = []
        for m in methods:
            run = profile_run(m, args.n, args.m, args.seed, gens, embedder, args.samples_per_prompt, dataset)
            runs.append(
                {**run, "command": command, "process": process, "ceiling": ceilings, "model_load_s": round(load_s, 1)}
            )
            # written after every method, so a long comparison that is stopped keeps what it measured
            write_result(out, summarize(command, dataset, earlier + runs, [r["method"] for r in earlier] + methods))
    finally:
        for g in gens.values():
            g.close()


def previous_runs(
    out: str, dataset: EmbeddedDataset, args: argparse.Namespace, methods: list[str]
) -> list[dict[str, Any]]:
    """The runs of an earlier --out file to continue, refused unless they measured the same setting."""
    path = RESULTS / f"{out}.json"
    if not path.exists():
        sys.exit(f"--continue: {path} does not exist")
    prev = read_json(path)
    # files written before runs carried their own process's ceiling and command
    runs = [
        {"command": prev["command"], "ceiling": prev.get("ceiling"), "model_load_s": prev.get("model_load_s"), **r}
        for r in prev["runs"]
    ]
    want = (dataset.source, args.n, args.m, args.seed, args.samples_per_prompt)
    for r in runs:
        # files from before the dataset option and samples per prompt were recorded profiled IMDb, 1 per prompt
        got = (
            r.get("dataset", "embedded:imdb"),
            r.get("n_synthetic"),
            r.get("m_private"),
            r.get("seed"),
            r.get("samples_per_prompt", 1),
        )
        if got != want:
            sys.exit(f"--continue: {path} measured {got}, this command {want}")
        if r["method"] in methods:
            sys.exit(f"--continue: {path} already has a {r['method']} run; continue with the other methods")
    return runs


def ideal_s(run: dict[str, Any], ceilings: dict[str, Any]) -> float:
    """The seconds the run's accepted tokens would take at the given raw ceilings (tok/s per generator)."""
    return sum(v["accepted_completion_tokens_est"] / ceilings[g]["tok_s"] for g, v in run["generators"].items())


def same_process(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether one process measured both runs: the same process id, or (runs written before it was recorded)
    the same measured ceilings, which each process measures once."""
    if a.get("process") and b.get("process"):
        return bool(a["process"] == b["process"])
    return a.get("ceiling") is not None and a.get("ceiling") == b.get("ceiling")


def wall_ratio(wasp_run: dict[str, Any], zero_shot: dict[str, Any]) -> dict[str, Any]:
    """WASP's wall time over zero-shot's, and how it was computed.  Two processes measured the machine in
    different states (their ceilings differ): zero-shot's wall time is rescaled by how much faster or slower
    its accepted tokens would decode at the WASP process's ceilings than at its own (an approximation: all
    of its wall time is scaled as decoding is)."""
    if same_process(wasp_run, zero_shot):
        ratio = wasp_run["wall_s"] / zero_shot["wall_s"]
        return {"wasp_over_zero_shot_wall": round(ratio, 2), "wasp_over_zero_shot_wall_basis": "one process"}
    scale = ideal_s(zero_shot, wasp_run["ceiling"]) / ideal_s(zero_shot, zero_shot["ceiling"])
    return {
        "wasp_over_zero_shot_wall": round(wasp_run["wall_s"] / (zero_shot["wall_s"] * scale), 2),
        "wasp_over_zero_shot_wall_basis": "two processes: zero-shot's wall time rescaled to the wasp process's "
        "ceilings (zero_shot_wall_scale: its accepted tokens' time at those ceilings over at its own)",
        "zero_shot_wall_scale": round(scale, 3),
        "wasp_over_zero_shot_wall_as_measured": round(wasp_run["wall_s"] / zero_shot["wall_s"], 2),
    }


def summarize(command: str, dataset: EmbeddedDataset, runs: list[dict[str, Any]], methods: list[str]) -> dict[str, Any]:
    """The result file: the runs so far, each with the ceiling its process measured, and the ratios the
    targets are about."""
    for r in runs:
        # the time the accepted tokens would take at each generator's raw ceiling, over the real wall time
        ideal = ideal_s(r, r["ceiling"])
        accepted_tokens = sum(v["accepted_completion_tokens_est"] for v in r["generators"].values())
        r["accepted_tok_s"] = round(accepted_tokens / r["wall_s"], 1)
        r["ratio_to_ceiling"] = round(ideal / r["wall_s"], 3)
    summary: dict[str, Any] = {
        "command": command,
        "commands": list(dict.fromkeys(r["command"] for r in runs)),
        "dataset": dataset.source,
        "targets": {
            "wasp_wall_s_at_n_1000": 1200,
            "ratio_to_ceiling": 0.5,
            "wasp_over_zero_shot_wall": 1.5,
        },
        "complete": len(runs) == len(methods),
        "runs": runs,
    }
    by = {r["method"]: r for r in runs}
    if "wasp" in by and "zero-shot" in by:
        summary.update(wall_ratio(by["wasp"], by["zero-shot"]))
    return summary


if __name__ == "__main__":
    main()
