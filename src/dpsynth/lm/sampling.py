"""Sampling from a (fine-tuned) causal LM, continuing a prompt of token ids."""

from __future__ import annotations

from typing import Any

from dpsynth.config import FinetuneConfig
from dpsynth.lm.device import autocast


def generate(
    model: Any,
    tok: Any,
    prompt: list[int],
    n: int,
    *,
    ft: FinetuneConfig,
    device: str,
    bf16: bool,
    seed: int | None = None,
    max_new_tokens: int | None = None,
) -> list[str]:
    """``n`` samples continuing ``prompt`` (token ids); empty strings for empty completions."""
    import torch

    model.eval()
    out: list[str] = []
    if seed is not None:
        torch.manual_seed(seed)
    kwargs: dict[str, Any] = {
        "max_new_tokens": max_new_tokens or ft.max_new_tokens,
        "pad_token_id": tok.pad_token_id,
        "eos_token_id": tok.eos_token_id,
    }
    if ft.temperature > 0:
        kwargs.update(do_sample=True, temperature=ft.temperature, top_p=ft.top_p, top_k=0)
    else:
        kwargs.update(do_sample=False)
    for k in range(0, n, ft.generation_batch_size):
        b = min(ft.generation_batch_size, n - k)
        ids = torch.tensor([prompt] * b, dtype=torch.long, device=device)
        with torch.inference_mode(), autocast(device, bf16):
            gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)
        for row in gen[:, len(prompt) :].tolist():
            if tok.eos_token_id in row:
                row = row[: row.index(tok.eos_token_id)]
            out.append(tok.decode(row, skip_special_tokens=True).strip())
    return out
