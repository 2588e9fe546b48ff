"""How much of a DP-SGD step is signal?  Per-record clipped gradients of dp-finetune's LoRA weights on the
private draw, against the Gaussian noise each step adds (docs/quality.md, "How much of a DP-SGD step is
signal").

dp-finetune at M = 100 lost to its own no-learning baseline with AdamW at two learning rates and with SGD
(bench/quality.py rows dp-finetune, dp-finetune-lr0.0005, dp-finetune-sgd0.005).  This measures why, with
no run and no privacy spent (the private draw of the benchmark is public IMDb/newsgroups text; nothing here
is released): for each record i, the gradient g_i of its loss (the same per-record loss, record layout and
LoRA weights as training), its norm, and the clipped g_i * min(1, C / |g_i|).  Then, with the plan a run at
these settings uses (noise multiplier z, expected batch B, T steps; from ``dpsynth.privacy.dpsgd``):

  signal per step   |mean clipped gradient|            (what an infinitely large batch would average to)
  noise per step    z C sqrt(d) / B                    (norm of the noise vector in the batch mean)
  noise along it    z C / B                            (its component along the signal's direction)
  after T steps     T |mean| against sqrt(T) z C / B   along the signal, sqrt(T) z C sqrt(d) / B in all

and the same at M = 1,000 and larger B.  Also the mean cosine between two records' clipped gradients,
which says how much the records agree on a direction at all, and per label the norm of the class's mean
clipped gradient minus the overall mean: the part of the signal that is about the label.

    python bench/diag_dpsgd_signal.py [--dataset newsgroups] [--m 100] [--seed 1]

Writes bench/results/diag_dpsgd_signal[_newsgroups].json.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from common import machine, write_result  # noqa: E402
from dpsynth import lm  # noqa: E402
from dpsynth.config import FinetuneConfig  # noqa: E402
from dpsynth.data import EMBEDDED_DATASETS  # noqa: E402
from dpsynth.privacy import dpsgd  # noqa: E402


def clipped_gradients(
    texts: list[str], labels: list[str], task: str, ft: FinetuneConfig, seed: int = 0
) -> tuple[Any, Any]:
    """Per-record flattened LoRA gradients, clipped to C, and the raw norms (one forward/backward each), at the
    LoRA initialisation drawn with ``seed`` (the A matrices are random; B = 0, as at a run's first step)."""
    torch.manual_seed(seed)
    tok, model = lm.load_causal_lm(ft.model)
    model = lm.add_lora(model, ft)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    enc = lm.RecordFormat(tok, ft, task).encode(texts, labels, ft.max_length)
    data = lm.RecordDataset(enc, tok.pad_token_id)
    rows, norms = [], []
    for i in range(len(data)):
        ids, lab = lm.collate([data[i]])
        model.zero_grad(set_to_none=True)
        lm.per_sample_loss(model(input_ids=ids).logits, lab).sum().backward()
        g = torch.cat([p.grad.detach().double().flatten() for p in params])
        n = float(g.norm())
        norms.append(n)
        rows.append((g * min(1.0, ft.max_grad_norm / max(n, 1e-12))).numpy())
    return np.stack(rows), np.array(norms)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="imdb", choices=["imdb", "newsgroups"])
    ap.add_argument("--m", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--epsilon", type=float, default=4.0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    dataset = EMBEDDED_DATASETS[f"embedded:{args.dataset}"]
    records = dataset.private(args.m, args.seed)
    labels = [dataset.labels[str(v)] for v in records["label"]]
    ft = FinetuneConfig()
    t0 = time.time()
    grads, norms = clipped_gradients(list(records["text"]), labels, dataset.task, ft)
    seconds = time.time() - t0
    d = grads.shape[1]
    c = ft.max_grad_norm
    mean = grads.mean(0)
    unit = grads / np.linalg.norm(grads, axis=1, keepdims=True)
    gram = unit @ unit.T
    pair_cos = float((gram.sum() - np.trace(gram)) / (len(gram) * (len(gram) - 1)))
    by_label, apart, chance = {}, {}, {}
    shuffled = np.random.default_rng(0).permutation(labels)  # the same class sizes, labels at random
    for name in sorted(set(labels)):
        idx = [i for i, x in enumerate(labels) if x == name]
        by_label[name] = float(np.linalg.norm(grads[idx].mean(0)))
        # what the class's records ask for beyond what all records ask for: the part that could teach the
        # model the label (the rest is "write text like this data set's"); with as few records per class
        # as here, part of it is sampling noise, whose size the same figure under shuffled labels shows
        apart[name] = float(np.linalg.norm(grads[idx].mean(0) - mean))
        chance[name] = float(np.linalg.norm(grads[shuffled == name].mean(0) - mean))
    plans = []
    for m, b in ((args.m, ft.batch_size), (args.m, 32), (1000, 8), (1000, 64), (10_000, 256)):
        plan = dpsgd.make_plan(
            epsilon=args.epsilon,
            delta=1e-5,
            delta_source="dpsynth default",
            n_records=m,  # a run's noisy count; the true M here (a plan, not a release)
            batch_size=b,
            epochs=ft.epochs,
            max_grad_norm=c,
            accountant=ft.accountant,
            label_count_share=ft.label_count_epsilon_share,
        )
        steps, z = plan.steps, plan.noise_multiplier
        signal = float(np.linalg.norm(mean))  # the same records' direction: an estimate for any M
        along = z * c / b
        plans.append(
            {
                "m": m,
                "batch": b,
                "steps": steps,
                "noise_multiplier": round(z, 4),
                "signal_per_step": round(signal, 5),
                "noise_norm_per_step": round(z * c * math.sqrt(d) / b, 3),
                "noise_along_signal_per_step": round(along, 5),
                "signal_over_noise_along_after_T": round(steps * signal / (math.sqrt(steps) * along), 3),
                "signal_over_noise_norm_after_T": round(
                    steps * signal / (math.sqrt(steps) * z * c * math.sqrt(d) / b), 5
                ),
            }
        )
    payload = {
        "machine": machine(),
        "command": "python bench/diag_dpsgd_signal.py " + " ".join(sys.argv[1:]),
        "dataset": dataset.source,
        "m": args.m,
        "seed": args.seed,
        "model": ft.model,
        "lora_parameters": d,
        "max_grad_norm": c,
        "raw_norm_median": round(float(np.median(norms)), 4),
        "raw_norm_min": round(float(norms.min()), 4),
        "share_clipped": round(float((norms > c).mean()), 3),
        "mean_pairwise_cosine": round(pair_cos, 4),
        "mean_clipped_gradient_norm": round(float(np.linalg.norm(mean)), 5),
        "mean_clipped_gradient_norm_by_label": {k: round(v, 5) for k, v in by_label.items()},
        "label_part_norm": {k: round(v, 5) for k, v in apart.items()},
        "label_part_norm_shuffled_labels": {k: round(v, 5) for k, v in chance.items()},
        "plans": plans,
        "seconds": round(seconds, 1),
    }
    name = "diag_dpsgd_signal" + ("" if args.dataset == "imdb" else f"_{args.dataset}")
    print(write_result(name, payload))
    for p in plans:
        print(p)
    print({k: v for k, v in payload.items() if k not in ("plans", "machine")})


if __name__ == "__main__":
    main()
