"""Sampling from a (fine-tuned) causal LM, continuing a prompt of token ids."""

from __future__ import annotations

from typing import Any

from dpsynth.config import FinetuneConfig
from dpsynth.lm.device import autocast
from dpsynth.prompts import cut_to_sentence

WHOLE_SENTENCE_MIN_CHARS = 40  # a cut that would leave less keeps the sample whole


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
    whole_sentences: bool = False,
) -> list[str]:
    """``n`` samples continuing ``prompt`` (token ids); empty strings for empty completions.

    ``whole_sentences``: a sample that reached the token limit without its end token is cut after its
    last full sentence when that leaves at least ``WHOLE_SENTENCE_MIN_CHARS`` characters
    (``dpsynth.prompts.cut_to_sentence``); a sample the model ended is kept as written.
    """
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
            truncated = tok.eos_token_id not in row
            if not truncated:
                row = row[: row.index(tok.eos_token_id)]
            text = tok.decode(row, skip_special_tokens=True).strip()
            out.append(cut_to_sentence(text, WHOLE_SENTENCE_MIN_CHARS) if whole_sentences and truncated else text)
    return out
