"""DP-SGD overhead: seconds per epoch with DP (Opacus) vs without, same model, data and batch size.

SmolLM2-135M + LoRA (r=8 on q_proj, v_proj), 100 IMDb reviews at max_length 128, batch size 8:
one epoch is N/B = 12-13 steps.  Non-private: AdamW on shuffled batches of exactly B, no clipping,
no noise.  DP: Opacus per-sample gradients (hooks), per-sample clipping, Gaussian noise, Poisson
batches of expected size B (so the tokens per epoch differ a little; both are reported, and the
per-1,000-token time is the fair comparison).

    OMP_NUM_THREADS=1 python bench/bench_dpsgd.py [--m 100] [--max-length 128] [--batch-size 8] [--epochs 1]

Writes bench/results/dpsgd_overhead.json.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402
from dpsynth.config import FinetuneConfig  # noqa: E402
from dpsynth.data import IMDB_LABELS, imdb_private  # noqa: E402
from dpsynth.lm import (  # noqa: E402
    RecordDataset,
    RecordFormat,
    add_lora,
    load_causal_lm,
    pick_bf16,
    pick_device,
    train,
)
from dpsynth.privacy.dpsgd import make_plan, paper_delta, steps_for  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--m", type=int, default=100)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--name", default="dpsgd_overhead")
    args = ap.parse_args()
    import torch

    ft = FinetuneConfig(
        max_length=args.max_length,
        batch_size=args.batch_size,
        epochs=args.epochs,
        precision=args.precision,
        device=args.device,
        checkpoint_every=10**6,
    )
    device = pick_device(ft.device)
    bf16 = pick_bf16(ft.precision, device)
    t0 = time.perf_counter()
    tok, base = load_causal_lm(ft.model)
    load_s = time.perf_counter() - t0
    df = imdb_private(args.m, 0)
    names = [IMDB_LABELS[str(v)] for v in df["label"]]
    enc = RecordFormat(tok, ft, "movie review").encode(list(df["text"]), names, ft.max_length)
    dataset = RecordDataset(enc, tok.pad_token_id)
    n = len(dataset)
    steps = steps_for(ft.epochs, ft.batch_size / n)
    plan = make_plan(
        epsilon=4.0,
        delta=paper_delta(n),
        delta_source="1/(N ln N)",
        n_records=n,
        batch_size=ft.batch_size,
        epochs=ft.epochs,
        max_grad_norm=ft.max_grad_norm,
        accountant="prv",
        label_count_share=None,
    )
    tokens = {"dp": 0, "non_dp": 0}
    results = {}
    for mode in ("non_dp", "dp"):
        model = add_lora(copy.deepcopy(base), ft)
        # count the tokens each mode actually trains on (Poisson batches vary in size)
        hook_tokens = [0]

        def count(_m: object, args_: tuple, kwargs: dict, hook_tokens: list[int] = hook_tokens) -> None:
            ids = kwargs.get("input_ids") if kwargs else None
            if ids is None and args_:
                ids = args_[0]
            if ids is not None:
                hook_tokens[0] += int(ids.numel())

        h = model.register_forward_pre_hook(count, with_kwargs=True)
        t = time.perf_counter()
        res = train(
            model,
            dataset,
            ft=ft,
            plan=plan if mode == "dp" else None,
            steps=steps,
            device=device,
            bf16=bf16,
            seed=0,
        )
        secs = time.perf_counter() - t
        h.remove()
        tokens[mode] = hook_tokens[0]
        results[mode] = {
            "seconds": secs,
            "steps": res.steps_done,
            "seconds_per_epoch": secs / ft.epochs,
            "tokens": hook_tokens[0],
            "seconds_per_1k_tokens": 1000 * secs / max(1, hook_tokens[0]),
        }
        print(mode, results[mode], file=sys.stderr, flush=True)
        del model
    payload = {
        "command": "OMP_NUM_THREADS=1 python bench/bench_dpsgd.py " + " ".join(sys.argv[1:]),
        "model": ft.model,
        "device": device,
        "bf16_autocast": bf16,  # the no-DP row's; DP-SGD runs in fp32 whatever the precision (lm.train)
        "torch_threads": torch.get_num_threads(),
        "n_records": n,
        "max_length": ft.max_length,
        "batch_size": ft.batch_size,
        "epochs": ft.epochs,
        "steps": steps,
        "lora": {"r": ft.lora_r, "target_modules": ft.target_modules},
        "noise_multiplier_at_eps4": plan.noise_multiplier,
        "load_seconds": load_s,
        **results,
        "overhead_per_epoch": results["dp"]["seconds_per_epoch"] / results["non_dp"]["seconds_per_epoch"],
        "overhead_per_token": results["dp"]["seconds_per_1k_tokens"] / results["non_dp"]["seconds_per_1k_tokens"],
        "note": "shared 2-core machine; other jobs were running, so absolute times are noisy",
    }
    write_result(args.name, payload)


if __name__ == "__main__":
    main()
