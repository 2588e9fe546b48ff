"""Training LoRA weights: DP-SGD through Opacus with a plan, or without one (no DP) on public texts."""

from __future__ import annotations

import contextlib
import random
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpsynth.config import FinetuneConfig
from dpsynth.lm.device import autocast, pick_bf16, pick_device, strict_fp32
from dpsynth.lm.loading import add_lora, load_causal_lm, save_adapter
from dpsynth.lm.records import RecordDataset, RecordFormat, collate, per_sample_loss
from dpsynth.privacy.dpsgd import DpSgdPlan, make_private
from dpsynth.progress import ProgressReporter


@dataclass
class TrainResult:
    steps_done: int
    seconds: float
    last_loss: float | None


def _lora_params(model: Any) -> list[Any]:
    return [p for p in model.parameters() if p.requires_grad]


def make_optimizer(params: list[Any], ft: FinetuneConfig) -> Any:
    """The LoRA weights' optimizer.

    AdamW (the default, as in Yue et al. 2023) divides each coordinate's step by its running gradient
    scale, so under DP-SGD's noise every weight moves by about the learning rate per step whatever the
    signal; SGD moves them in proportion to the noisy mean gradient, so a small signal makes small steps.
    """
    import torch

    if ft.optimizer == "sgd":
        return torch.optim.SGD(params, lr=ft.learning_rate, momentum=ft.momentum)
    return torch.optim.AdamW(params, lr=ft.learning_rate, weight_decay=0.0)


def train(
    peft_model: Any,
    dataset: RecordDataset,
    *,
    ft: FinetuneConfig,
    plan: DpSgdPlan | None,
    steps: int,
    device: str,
    bf16: bool,
    start_step: int = 0,
    optimizer_state: dict[str, Any] | None = None,
    on_step: Callable[[int, float | None], None] | None = None,
    checkpoint: Callable[[int, Any], None] | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
) -> TrainResult:
    """Train the LoRA weights for ``steps - start_step`` more steps.

    With a ``plan``: DP-SGD through Opacus (per-sample clipping, Poisson sampling at plan.sample_rate,
    noise plan.noise_multiplier * C), in fp32: ``bf16`` autocast applies to training without a plan only.
    Without (the canary audit's epsilon = infinity): no DP, the
    optimizer on shuffled batches of ``batch_size``, no clipping, no noise.  ``checkpoint(step, optimizer)`` is
    called every ``ft.checkpoint_every`` steps and after the last one.
    """
    import torch

    peft_model.to(device)
    peft_model.train()
    params = _lora_params(peft_model)
    opt = make_optimizer(params, ft)
    if optimizer_state is not None:
        opt.load_state_dict(optimizer_state)
    step = start_step
    last_loss: float | None = None
    t0 = time.perf_counter()
    if step >= steps:
        return TrainResult(step, 0.0, None)

    if plan is None:
        gen = torch.Generator().manual_seed(seed if seed is not None else random.randrange(2**31))
        bs = batch_size or ft.batch_size
        while step < steps:
            order = torch.randperm(len(dataset), generator=gen).tolist()
            for k in range(0, len(order) - bs + 1, bs):
                ids, labels = collate([dataset[i] for i in order[k : k + bs]])
                ids, labels = ids.to(device), labels.to(device)
                with autocast(device, bf16):
                    logits = peft_model(input_ids=ids).logits  # right padding: causal attention ignores it
                loss = per_sample_loss(logits, labels).mean()
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                step += 1
                last_loss = float(loss.detach())
                if on_step:
                    on_step(step, last_loss)
                if checkpoint and (step % ft.checkpoint_every == 0 or step == steps):
                    checkpoint(step, opt)
                if step >= steps:
                    break
        return TrainResult(step, time.perf_counter() - t0, last_loss)

    # Opacus' hooks on a frozen base warn that "no inputs require gradients": expected with LoRA
    warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
    priv = make_private(peft_model, opt, dataset, collate, plan)
    module, dp_opt = priv.module, priv.optimizer
    batches: Iterator[tuple[Any, Any]]
    if ft.physical_batch_size is not None:
        from opacus.utils.batch_memory_manager import BatchMemoryManager

        def _split() -> Iterator[tuple[Any, Any]]:
            while True:
                with BatchMemoryManager(
                    data_loader=priv.loader, max_physical_batch_size=ft.physical_batch_size, optimizer=dp_opt
                ) as mem_loader:
                    yield from mem_loader

        batches = _split()
    else:

        def _loop() -> Iterator[tuple[Any, Any]]:
            while True:
                yield from priv.loader

        batches = _loop()
    with strict_fp32():  # no TF32 matmuls on a GPU either (see the comment in the loop)
        lengths_loss: list[float] = []
        while step < steps:
            ids, labels = next(batches)
            ids, labels = ids.to(device), labels.to(device)
            if ids.shape[0] == 0:
                # an empty Poisson batch is still a DP-SGD step: the update is pure noise
                for p in params:
                    p.grad_sample = torch.zeros((0, *p.shape), device=p.device, dtype=p.dtype)
            else:
                # fp32 whatever ``bf16`` says: bf16 kernels round differently for different batch shapes, so one
                # record joining a Poisson batch would move the other records' gradients too (0.6% relative), and
                # one record could move the sum of clipped gradients by more than C, the sensitivity accounted
                logits = module(input_ids=ids).logits
                loss_vec = per_sample_loss(logits, labels)
                loss_vec.mean().backward()
                lengths_loss.append(float(loss_vec.detach().mean()))
                grad_samples_to_fp32(params)
            dp_opt.step()
            dp_opt.zero_grad(set_to_none=True)
            if dp_opt._is_last_step_skipped:  # BatchMemoryManager: a physical part of a logical batch
                continue
            step += 1
            last_loss = sum(lengths_loss) / len(lengths_loss) if lengths_loss else None
            lengths_loss.clear()
            if on_step:
                on_step(step, last_loss)
            if checkpoint and (step % ft.checkpoint_every == 0 or step == steps):
                checkpoint(step, dp_opt.original_optimizer)
    # detach Opacus' hooks so the model can be used (and wrapped again) normally
    with contextlib.suppress(Exception):
        module._close()
    return TrainResult(step, time.perf_counter() - t0, last_loss)


def grad_samples_to_fp32(params: Sequence[Any]) -> None:
    """Upcast Opacus' per-sample gradients to fp32 before it clips them.

    Opacus computes per-sample norms and clip factors in the per-sample gradients' dtype; under bf16
    autocast that was bf16, whose 8-bit mantissa let clipped norms reach 1.005 C, above the sensitivity
    the accountant assumes.  DP-SGD now runs without autocast, so this is a guard for weights or hooks
    of another dtype, not the fix."""
    import torch

    for p in params:
        gs = getattr(p, "grad_sample", None)
        if isinstance(gs, list):
            p.grad_sample = [g.to(torch.float32) for g in gs]
        elif gs is not None and gs.dtype != torch.float32:
            p.grad_sample = gs.to(torch.float32)


def finetune_public(
    ft: FinetuneConfig,
    texts: Sequence[str],
    *,
    label: str,
    task: str,
    epochs: float,
    out_dir: Path,
    reporter: ProgressReporter | None = None,
    seed: int | None = None,
) -> Path:
    """Non-DP LoRA fine-tune of a fresh ``ft.model`` on *public* texts (e.g. synthetic data: post-processing).

    Same record layout and optimizer as the DP training (control code for ``label``), no clipping or
    noise.  The adapter is saved (safetensors) to ``out_dir``.
    """
    tok, model = load_causal_lm(ft.model)
    fmt = RecordFormat(tok, ft, task)
    enc = fmt.encode(list(texts), [label] * len(texts), ft.max_length)
    model = add_lora(model, ft)
    device = pick_device(ft.device)
    bs = max(1, min(ft.batch_size, len(texts)))
    steps = max(1, round(epochs * len(texts) / bs))
    if reporter:
        reporter.start("local fine-tune", total=steps)

    def on_step(step: int, loss: float | None) -> None:
        if reporter:
            reporter.update("local fine-tune", step, steps, f"loss {loss:.3f}" if loss is not None else "")

    dataset = RecordDataset(enc, tok.pad_token_id)
    train(
        model,
        dataset,
        ft=ft,
        plan=None,
        steps=steps,
        device=device,
        bf16=pick_bf16(ft.precision, device),
        on_step=on_step,
        batch_size=bs,
        seed=seed,
    )
    save_adapter(model, out_dir)
    return out_dir
