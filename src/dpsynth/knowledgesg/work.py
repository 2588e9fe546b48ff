"""What the server does with one job (KnowledgeSG, Wang et al., EMNLP 2024, Sec. 3):

1. merge the client's DP adapter into a copy of the public base model and sample instructions with the
   client's (public) control code;
2. the professional model keeps or drops each instruction, with a reason;
3. the professional model answers the kept ones.

Each stage appends to a journal in the job folder, batch by batch, so a job interrupted by a server
restart (or stopped between two batches by a stopping server) continues where it stopped.  Nothing
here ever sees a private record: the adapter is DP, the rest is public.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dpsynth.config import FinetuneConfig
from dpsynth.generators.base import ChatMessage, GenerationRequest, Generator
from dpsynth.io import append_jsonl, atomic_write_json, atomic_write_text, read_jsonl_tolerant
from dpsynth.knowledgesg.adapter import merged_copy, read_adapter
from dpsynth.knowledgesg.protocol import JobSpec, parse_instruction
from dpsynth.run import run_rng

log = logging.getLogger("dpsynth.server")

FILTER_PROMPT = (
    "You screen questions for a {domain} question-answering dataset.\n"
    'Question: "{q}"\n'
    "Is this a clear, self-contained {domain} question that an expert can answer? "
    "Reply with KEEP or DROP, then a colon and a short reason."
)
ANSWER_PROMPT = (
    "You are a careful {domain} expert. Answer the question accurately and concisely "
    "(at most a short paragraph).\nQuestion: {q}"
)
_VERDICT = re.compile(r"\b(KEEP|DROP)\b", re.I)
SAMPLE_ATTEMPT_FACTOR = 3  # sampling gives up after 3x the wanted number of raw samples


class JobInterrupted(Exception):
    """The server is stopping: raised between two batches, when everything done so far is in the journals.

    The worker then puts the job back in the queue; the next server start continues it from the journals.
    """


def _never() -> bool:
    return False


class ServerBaseModel:
    """The server's public base model (tokenizer + PyTorch weights), loaded once and never modified."""

    def __init__(self, name: str, device: str = "cpu") -> None:
        from dpsynth.lm import load_causal_lm

        self.name = name
        self.device = device
        self.tok, self.model = load_causal_lm(name)
        self.model.eval()


def judge(text: str) -> tuple[bool, str]:
    """(keep, reason) from the professional model's reply; no verdict found counts as a drop."""
    m = _VERDICT.search(text)
    if not m:
        return False, "no KEEP/DROP verdict in the professional model's reply"
    reason = text[m.end() :].lstrip(" :.-\n").strip()
    return m.group(1).upper() == "KEEP", " ".join(reason.split())[:300] or "(no reason given)"


def _chat(text: str, max_tokens: int, temperature: float, seed: int | None) -> GenerationRequest:
    return GenerationRequest(
        messages=(ChatMessage("user", text),), max_tokens=max_tokens, temperature=temperature, top_p=0.95, seed=seed
    )


def run_job(
    job_dir: Path,
    spec: JobSpec,
    adapter: bytes,
    base: ServerBaseModel,
    professional: Generator,
    on_progress: Callable[[str, dict[str, int]], None],
    should_stop: Callable[[], bool] = _never,
) -> dict[str, Any]:
    """Run (or continue) one job in ``job_dir``; returns the report.  Raises on unusable input.

    ``should_stop`` is asked before every batch (the safe points: the journals hold every finished batch);
    when it says yes, ``JobInterrupted`` is raised, so a stopping server never waits for a whole job.
    """
    t0 = time.time()
    if should_stop():
        raise JobInterrupted
    instructions = _sample(job_dir, spec, adapter, base, on_progress, should_stop)
    judged = _judge_and_answer(job_dir, spec, instructions, professional, on_progress, should_stop)
    kept = [j for j in judged if j["keep"] and j.get("response")][: spec.n_samples]
    rows = [{"instruction": j["instruction"], "response": j["response"]} for j in kept]
    atomic_write_text(job_dir / "dataset.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    reasons = Counter(j["reason"][:80] for j in judged if not j["keep"])
    report = {
        "n_requested": spec.n_samples,
        "n_returned": len(rows),
        "n_sampled": len(instructions),
        "n_judged": len(judged),
        "n_dropped": sum(1 for j in judged if not j["keep"]),
        "top_drop_reasons": reasons.most_common(10),
        # questions whose requests to the professional model failed twice: neither kept nor dropped (a later
        # attempt of the job asks them again); a job that reached its count left the rest unasked
        "n_failed": len(set(instructions) - {j["instruction"] for j in judged}) if len(kept) < spec.n_samples else 0,
        "base_model": base.name,
        "professional_model": professional.name,
        "filter": spec.filter,
        "seconds": round(time.time() - t0, 1),
        "note": "instructions are samples of the client's DP adapter; responses are the professional model's",
    }
    atomic_write_json(job_dir / "report.json", report)
    return report


def _sample(
    job_dir: Path,
    spec: JobSpec,
    adapter: bytes,
    base: ServerBaseModel,
    on_progress: Callable[[str, dict[str, int]], None],
    should_stop: Callable[[], bool] = _never,
) -> list[str]:
    from dpsynth.lm import RecordFormat, generate

    journal = job_dir / "instructions.jsonl"
    have = [r["instruction"] for r in read_jsonl_tolerant(journal)]
    want = math.ceil(spec.n_samples * spec.oversample)
    if len(have) >= want:
        return have[:want]
    weights = read_adapter(adapter, base.model, spec.lora)
    model = merged_copy(base.model, weights, spec.lora.alpha)
    ft = FinetuneConfig(
        model=base.name,
        prompt_format=spec.prompt.prompt_format,
        control_code=spec.prompt.control_code,
        instruction=spec.prompt.instruction,
        max_new_tokens=spec.max_new_tokens,
        whole_sentences=spec.whole_sentences,
        temperature=spec.temperature,
        top_p=spec.top_p,
        generation_batch_size=8,
    )
    fmt = RecordFormat(base.tok, ft, spec.prompt.task)
    prompt = fmt.prefix(spec.prompt.label)
    seen = {" ".join(h.lower().split()) for h in have}
    attempts = len(have)
    rng = run_rng(spec.seed, len(have))  # a resumed job must not replay the batches it sampled before
    while len(have) < want and attempts < SAMPLE_ATTEMPT_FACTOR * want:
        if should_stop():
            raise JobInterrupted
        k = min(8, want - len(have))
        seed = rng.getrandbits(63)
        texts = generate(
            model,
            base.tok,
            prompt,
            k,
            ft=ft,
            device=base.device,
            bf16=False,
            seed=seed,
            whole_sentences=ft.whole_sentences,
        )
        attempts += k
        new = []
        for t in texts:
            q = parse_instruction(t)
            if q is None or " ".join(q.lower().split()) in seen:
                continue
            seen.add(" ".join(q.lower().split()))
            new.append({"instruction": q})
        new = new[: want - len(have)]
        append_jsonl(journal, new)
        have.extend(r["instruction"] for r in new)
        on_progress("sampling", {"sampled": len(have), "wanted": want})
    del model
    return have


def _judge_and_answer(
    job_dir: Path,
    spec: JobSpec,
    instructions: list[str],
    professional: Generator,
    on_progress: Callable[[str, dict[str, int]], None],
    should_stop: Callable[[], bool] = _never,
) -> list[dict[str, Any]]:
    journal = job_dir / "judged.jsonl"
    judged = read_jsonl_tolerant(journal)
    done = {j["instruction"] for j in judged}
    todo = [q for q in instructions if q not in done]
    # A question whose request failed (no answer came back: a server restarting, a timeout) is not journalled,
    # which would make its "not kept" final; it is asked once more at the end, and is left for a later
    # attempt of the job if that fails too.
    tries: Counter[str] = Counter()
    chunk = 8
    k = 0
    while k < len(todo):
        if sum(1 for j in judged if j["keep"]) >= spec.n_samples:
            break
        if should_stop():
            raise JobInterrupted
        batch = todo[k : k + chunk]
        seed = None if spec.seed is None else spec.seed + k
        k += chunk
        if spec.filter:
            verdicts = professional.generate(
                [_chat(FILTER_PROMPT.format(domain=spec.domain, q=q), 48, 0.0, seed) for q in batch]
            )
            decisions = [judge(v.text) if not v.error else (False, "professional model error") for v in verdicts]
        else:
            verdicts, decisions = [], [(True, "filter disabled")] * len(batch)
        keep_idx = [i for i, (keep, _) in enumerate(decisions) if keep]
        answers = professional.generate(
            [
                _chat(ANSWER_PROMPT.format(domain=spec.domain, q=batch[i]), spec.answer_max_tokens, 0.7, seed)
                for i in keep_idx
            ]
        )
        responses = dict(zip(keep_idx, answers, strict=True))
        rows = []
        for i, q in enumerate(batch):
            if (verdicts and verdicts[i].failed) or (i in responses and responses[i].failed):
                tries[q] += 1
                if tries[q] < 2:
                    todo.append(q)
                continue
            keep, reason = decisions[i]
            response = responses[i].text.strip() if i in responses and not responses[i].error else ""
            if keep and not response:
                keep, reason = False, "the professional model gave no answer"
            rows.append({"instruction": q, "keep": keep, "reason": reason, "response": response})
        append_jsonl(journal, rows)
        judged.extend(rows)
        on_progress(
            "filtering and answering",
            {
                "sampled": len(instructions),
                "judged": len(judged),
                "kept": sum(1 for j in judged if j["keep"]),
                "wanted": spec.n_samples,
            },
        )
    if left := sum(1 for q, n in tries.items() if n >= 2):
        log.warning("%d questions left unjudged: the professional model's requests failed twice", left)
    return judged
