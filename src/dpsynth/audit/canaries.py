"""Canary audit of DP fine-tuning ("the secret sharer", Carlini et al. 2019; used by Yue et al. 2023).

Insert canaries, records ``<name>'s secret code is <digits>`` repeated 1, 10 and 100 times, into the
private set, fine-tune exactly as ``--method dp-finetune`` does, then measure

* **exposure**: the rank of the true secret among candidate secrets under the model's likelihood
  of ``control code + canary prefix + secret`` (ties count half: mid-rank); exposure =
  log2(#candidates) - log2(rank).  A model
  that memorised the canary ranks it first (exposure = log2(#candidates), 13.3 for 10,000); a model
  that did not ranks it at random (expected exposure ~ 1.4);
* **verbatim leakage**: how often the secret appears as a digit run in (a) ordinary synthetic samples
  (prompted by the label's control code, as the method generates) and (b) samples prompted with the
  canary's own prefix, with the same rate for random secrets that were never inserted as a control.

Epsilon = inf trains without clipping and without noise (plain AdamW, same schedule).  This is
evidence, not proof: DP bounds the exposure of one record; a canary repeated k times is protected
only at group level (k * epsilon).

Scoring is batched: candidates share the prefix, whose key/value cache is computed once and
repeated over the batch; candidates that share all but their last token are run once (so the full
space of 4-digit secrets, 10,000 candidates, costs 1,000 short sequences).
"""

from __future__ import annotations

import copy
import inspect
import math
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from dpsynth.config import FinetuneConfig
from dpsynth.errors import ConfigError

CANARY_NAMES = ("Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi")
CANARY_TEMPLATE = "{name}'s secret code is "


@dataclass(frozen=True)
class Canary:
    name: str
    prefix: str  # text before the secret
    secret: str
    repeats: int
    label: str  # label value the canary records carry

    @property
    def text(self) -> str:
        return self.prefix + self.secret


def make_canaries(repeats: Sequence[int], digits: int, label: str) -> list[Canary]:
    """One canary per repetition count, each with its own name and a secret from the OS CSPRNG."""
    if len(repeats) > len(CANARY_NAMES):
        raise ConfigError(f"--repeats: at most {len(CANARY_NAMES)} canaries")
    out = []
    for name, r in zip(CANARY_NAMES, repeats, strict=False):
        secret = "".join(str(secrets.randbelow(10)) for _ in range(digits))
        out.append(Canary(name, CANARY_TEMPLATE.format(name=name), secret, int(r), label))
    return out


def candidate_secrets(secret: str, n: int, rng: np.random.Generator) -> list[str]:
    """``n`` other secrets of the same length: all of them when the space is that small, else random."""
    digits = len(secret)
    space = 10**digits
    if space - 1 <= n:
        return [f"{i:0{digits}d}" for i in range(space) if f"{i:0{digits}d}" != secret]
    seen = {secret}
    out: list[str] = []
    while len(out) < n:
        for v in rng.integers(0, space, size=2 * (n - len(out)), dtype=np.int64):
            s = f"{int(v):0{digits}d}"
            if s not in seen:
                seen.add(s)
                out.append(s)
                if len(out) == n:
                    break
    return out


# ---------------------------------------------------------------- likelihood scoring
def score_continuations(
    model: Any,
    prefix: list[int],
    continuations: Sequence[Sequence[int]],
    *,
    device: str = "cpu",
    bf16: bool = False,
    batch_size: int = 256,
) -> np.ndarray:
    """log p(continuation | prefix) for each continuation (all the same length), batched.

    The prefix (all but its last token) is run once and its KV cache repeated over each batch;
    continuations sharing all but their last token are run once: one forward of
    ``[prefix[-1]] + cont[:-1]`` gives the log-probabilities of every token of every such continuation.
    """
    import torch

    if not continuations:
        return np.zeros(0)
    length = len(continuations[0])
    if length == 0 or any(len(c) != length for c in continuations):
        raise ValueError("continuations must be non-empty and of equal length")
    if not prefix:
        raise ValueError("prefix must hold at least one token")
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, c in enumerate(continuations):
        groups.setdefault(tuple(c[:-1]), []).append(i)
    keys = list(groups)
    out = np.empty(len(continuations), dtype=np.float64)
    model.eval()
    ctx = (
        torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16)
        if bf16
        else torch.autocast(device_type="cpu", enabled=False)
    )
    with torch.inference_mode(), ctx:
        cache: Any = None
        # transformers 5 names the KV cache `cache` (in and out; `past_key_values` warns and is going), 4.x
        # `past_key_values` only
        cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        if len(prefix) > 1:
            first = model(input_ids=torch.tensor([prefix[:-1]], device=device), use_cache=True)
            cache = getattr(first, "cache", None)
            cache = first.past_key_values if cache is None else cache
        for k in range(0, len(keys), batch_size):
            chunk = keys[k : k + batch_size]
            seqs = torch.tensor([[prefix[-1], *key] for key in chunk], device=device)
            kwargs: dict[str, Any] = {}
            if cache is not None:
                kv = copy.deepcopy(cache)
                kv.batch_repeat_interleave(len(chunk))
                kwargs = {cache_arg: kv, "use_cache": True}
            logits = model(input_ids=seqs, **kwargs).logits
            logp = torch.log_softmax(logits.float(), dim=-1)  # [b, length, V]
            for b, key in enumerate(chunk):
                idx = groups[key]
                partial = 0.0
                if length > 1:
                    tgt = torch.tensor(key, device=device)
                    partial = float(logp[b, : length - 1].gather(1, tgt[:, None]).sum())
                last = torch.tensor([continuations[i][-1] for i in idx], device=device)
                out[idx] = partial + logp[b, length - 1, last].double().cpu().numpy()
    return out


def exposure(true_score: float, candidate_scores: np.ndarray) -> tuple[float, float]:
    """(rank, exposure) of the true secret among itself + candidates (rank 1 = most likely: scores are
    log-likelihoods, higher is likelier).

    Ties take the mid-rank, 1 + #(candidates scored higher) + #(scored equal) / 2: counting only those
    scored higher ranked a secret that a model cannot tell from the others first, "fully memorised" (a
    model that scores all 10,000 secrets alike, or bf16 scores that round several to one value).  Without
    ties it is the plain rank, a whole number (an int)."""
    higher = int(np.sum(candidate_scores > true_score))
    equal = int(np.sum(candidate_scores == true_score))
    rank: float = 1 + higher + equal // 2 if equal % 2 == 0 else 1 + higher + equal / 2
    total = len(candidate_scores) + 1
    return rank, math.log2(total) - math.log2(rank)


def secret_pattern(secret: str) -> re.Pattern[str]:
    return re.compile(r"(?<!\d)" + re.escape(secret) + r"(?!\d)")


def verbatim_rate(samples: Sequence[str], secret: str) -> float:
    if not samples:
        return 0.0
    pat = secret_pattern(secret)
    return sum(1 for s in samples if pat.search(s)) / len(samples)


# ---------------------------------------------------------------- the audit
@dataclass
class AuditSettings:
    epsilons: tuple[float, ...] = (math.inf, 8.0, 4.0)
    m_private: int = 100
    seed: int = 0  # which IMDb reviews are the private set (public choice)
    digits: int = 4
    repeats: tuple[int, ...] = (1, 10, 100)
    n_candidates: int = 10_000
    n_samples: int = 64  # ordinary synthetic samples per model (leakage in synthetic data)
    n_prompted: int = 16  # samples per canary prompted with its prefix
    delta: float | None = None  # None: 1/(N ln N) as in the paper
    score_batch_size: int = 256


def _finetune_for_audit(ft: FinetuneConfig | None) -> FinetuneConfig:
    """Audit defaults: short records and a learning rate that lets the non-private model memorise."""
    if ft is not None:
        return ft
    return FinetuneConfig(
        prompt_format="plain",  # the paper's control code; short records keep the audit affordable on a CPU
        max_length=32,
        epochs=4.0,
        batch_size=8,
        learning_rate=5e-3,
        max_new_tokens=40,
        generation_batch_size=32,
        checkpoint_every=10**6,
    )


def run_canary_audit(
    settings: AuditSettings | None = None,
    ft: FinetuneConfig | None = None,
    *,
    private: tuple[list[str], list[str]] | None = None,
    labels: dict[str, str] | None = None,
    task: str = "movie review",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train one model per epsilon on private data + canaries and measure exposure and leakage.

    ``private`` is (texts, label values); by default ``m_private`` IMDb reviews (embedded:imdb).  The audit
    is a test of the training code, not a release: its result holds exact, un-noised facts of ``private``
    (``n_records``, and the sample rate B / N and delta 1 / (N ln N) derived from it) and of the models
    trained on it, so it belongs to the data owner and is not to be shared when ``private`` is real
    private data (the CLI audits the embedded public reviews only).
    """
    from dpsynth.data import IMDB_LABELS, imdb_private
    from dpsynth.lm import (
        RecordDataset,
        RecordFormat,
        add_lora,
        generate,
        load_causal_lm,
        pick_bf16,
        pick_device,
        train,
    )
    from dpsynth.privacy.dpsgd import make_plan, paper_delta, steps_for

    s = settings or AuditSettings()
    ft = _finetune_for_audit(ft)
    if s.digits < 1 or s.n_candidates < 1:
        raise ConfigError("--digits and --candidates must be >= 1")
    labels = labels or dict(IMDB_LABELS)
    if private is None:
        df = imdb_private(s.m_private, s.seed)
        texts, values = list(df["text"]), [str(v) for v in df["label"]]
    else:
        texts, values = list(private[0]), list(private[1])
    canary_label = next(iter(labels))
    canaries = make_canaries(s.repeats, s.digits, canary_label)
    for c in canaries:
        texts += [c.text] * c.repeats
        values += [c.label] * c.repeats
    n = len(texts)
    delta = s.delta if s.delta is not None else paper_delta(n)
    device = pick_device(ft.device)
    bf16 = pick_bf16(ft.precision, device)
    t0 = time.perf_counter()
    tok, base = load_causal_lm(ft.model)
    log(f"loaded {ft.model} in {time.perf_counter() - t0:.1f}s; N = {n} records ({sum(s.repeats)} canary records)")
    names = [labels[v] for v in values]
    fmt = RecordFormat(tok, ft, task)
    enc = fmt.encode(texts, names, ft.max_length)
    dataset = RecordDataset(enc, tok.pad_token_id)
    q = ft.sample_rate if ft.sample_rate is not None else ft.batch_size / n  # finetune.sample_rate fixes q
    steps = steps_for(ft.epochs, q)
    rng = np.random.default_rng(secrets.randbits(64))

    # candidate token sequences per canary (same for every model)
    scoring: list[dict[str, Any]] = []
    for c in canaries:
        head = fmt.prefix(labels[c.label])
        cands = candidate_secrets(c.secret, s.n_candidates, rng)
        full = [head + x for x in fmt.body([c.prefix + x for x in [c.secret, *cands]])]
        lcp = _common_prefix_len(full)
        tails = [x[lcp:] for x in full]
        if len({len(t) for t in tails}) != 1:
            raise ConfigError("the tokenizer splits candidate secrets into different lengths; use --digits <= 10")
        scoring.append({"canary": c, "prefix": full[0][:lcp], "tails": tails, "n_candidates": len(cands)})
    controls = ["".join(str(int(d)) for d in rng.integers(0, 10, s.digits)) for _ in range(100)]
    # the prior: the same ranking under the pretrained model before any training.  A secret the base
    # model already finds likely (e.g. 1234, a year) ranks high without any memorisation.
    t_base = time.perf_counter()
    for sc in scoring:
        scores = score_continuations(
            base.to(device), sc["prefix"], sc["tails"], device=device, bf16=bf16, batch_size=s.score_batch_size
        )
        sc["base_rank"], sc["base_exposure"] = exposure(float(scores[0]), scores[1:])
    log(f"base-model ranks {[sc['base_rank'] for sc in scoring]} ({time.perf_counter() - t_base:.0f}s)")

    results = []
    for eps in s.epsilons:
        t_model = time.perf_counter()
        model = add_lora(copy.deepcopy(base), ft)
        plan = None
        if math.isfinite(eps):
            plan = make_plan(
                epsilon=eps,
                delta=delta,
                delta_source="audit",
                n_records=n,
                batch_size=ft.batch_size,
                sample_rate=ft.sample_rate,
                epochs=ft.epochs,
                max_grad_norm=ft.max_grad_norm,
                accountant=ft.accountant,
                label_count_share=None,
            )
        last = [time.perf_counter()]

        def on_step(step: int, loss: float | None, _eps: float = eps, last: list[float] = last) -> None:
            if time.perf_counter() - last[0] > 30 or step == steps:
                last[0] = time.perf_counter()
                # the loss is computed on the private set without noise: shown only when asked for
                shown = f" loss {loss if loss is None else round(loss, 3)}" if ft.show_loss else ""
                log(f"  eps={_eps:g} step {step}/{steps}{shown}")

        tr = train(model, dataset, ft=ft, plan=plan, steps=steps, device=device, bf16=bf16, on_step=on_step)
        merged = model.merge_and_unload()
        t_score = time.perf_counter()
        per_canary = []
        for sc in scoring:
            c = sc["canary"]
            scores = score_continuations(
                merged, sc["prefix"], sc["tails"], device=device, bf16=bf16, batch_size=s.score_batch_size
            )
            rank, exp_ = exposure(float(scores[0]), scores[1:])
            prompted = generate(
                merged, tok, sc["prefix"], s.n_prompted, ft=ft, device=device, bf16=bf16, max_new_tokens=s.digits + 4
            )
            per_canary.append(
                {
                    "name": c.name,
                    "repeats": c.repeats,
                    "rank": rank,
                    "n_candidates": sc["n_candidates"] + 1,
                    "exposure": exp_,
                    "base_model_rank": sc["base_rank"],
                    "base_model_exposure": sc["base_exposure"],
                    "max_exposure": math.log2(sc["n_candidates"] + 1),
                    "log_likelihood": float(scores[0]),
                    "candidate_log_likelihood_median": float(np.median(scores[1:])),
                    "prompted_verbatim_rate": verbatim_rate(prompted, c.secret),
                }
            )
        score_s = time.perf_counter() - t_score
        t_gen = time.perf_counter()
        samples: list[str] = []
        per_label = max(1, s.n_samples // len(labels))
        for name in labels.values():
            samples += generate(merged, tok, fmt.prefix(name), per_label, ft=ft, device=device, bf16=bf16)
        for pc, c in zip(per_canary, canaries, strict=True):
            pc["sample_verbatim_rate"] = verbatim_rate(samples, c.secret)
        control_rate = float(np.mean([verbatim_rate(samples, x) for x in controls]))
        gen_s = time.perf_counter() - t_gen
        eps_spent = plan.epsilon_after(plan.steps, count_released=False) if plan else math.inf
        results.append(
            {
                "epsilon": eps if math.isfinite(eps) else "inf",
                "epsilon_spent": eps_spent if math.isfinite(eps_spent) else "inf",
                "delta": delta,
                "noise_multiplier": plan.noise_multiplier if plan else 0.0,
                "clipping": plan is not None,
                "sample_rate": q,
                "steps": tr.steps_done,
                "train_seconds": tr.seconds,
                "score_seconds": score_s,
                "generate_seconds": gen_s,
                **({"final_batch_loss": tr.last_loss} if ft.show_loss else {}),
                "n_samples": len(samples),
                "control_sample_verbatim_rate": control_rate,
                "canaries": per_canary,
            }
        )
        row = ", ".join(f"{p['repeats']}x: rank {p['rank']} exp {p['exposure']:.2f}" for p in per_canary)
        log(f"eps={eps:g}: {row} ({time.perf_counter() - t_model:.0f}s)")
        del model, merged
    return {
        "settings": {
            **{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(s).items()},
            "epsilons": [e if math.isfinite(e) else "inf" for e in s.epsilons],
        },
        "finetune": ft.model_dump(mode="json"),
        "n_records": n,
        "canary_template": CANARY_TEMPLATE,
        "prompt_format": fmt.mode,
        "secrets_note": "secrets are drawn from the OS CSPRNG per audit and not stored",
        "results": results,
    }


def _common_prefix_len(seqs: Sequence[Sequence[int]]) -> int:
    first = seqs[0]
    n = min(len(x) for x in seqs)
    for i in range(n):
        t = first[i]
        if any(x[i] != t for x in seqs):
            return i
    return n


def markdown_table(result: dict[str, Any]) -> str:
    """The audit as a Markdown table (one row per epsilon and canary)."""
    lines = [
        "| epsilon | canary repeats | rank (of N) | exposure (max) | base-model rank | verbatim in samples "
        "| verbatim, prompted |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["results"]:
        for c in r["canaries"]:
            lines.append(
                f"| {r['epsilon']} | {c['repeats']} | {c['rank']} (of {c['n_candidates']}) | "
                f"{c['exposure']:.2f} ({c['max_exposure']:.1f}) | {c.get('base_model_rank', '-')} | "
                f"{c['sample_verbatim_rate']:.3f} | "
                f"{c['prompted_verbatim_rate']:.3f} |"
            )
    return "\n".join(lines)
