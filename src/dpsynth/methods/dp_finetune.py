"""DP fine-tuning of a causal LM, then sampling (Yue et al., ACL 2023, "a simple and practical recipe").

    control code    each private record becomes ``label: NAME | text: TEXT<eos>`` (config.finetune.control_code)
    DP-SGD          LoRA adapters (peft) trained with Opacus: per-sample clipping to C, Poisson sampling at
                    q = B/N, Gaussian noise z*C; z calibrated so the run is (epsilon, delta)-DP (PRV accountant)
    class shares    a noisy label count (Gaussian, composed with DP-SGD on the same accountant) or uniform
    generation      sample from the fine-tuned model prompted with each label's control code (post-processing)

Run directory (everything is public or DP; no private text, no pre-noise statistic)::

    finetune/plan.json         the privacy plan (noise multipliers, sample rate, steps, delta and its source)
    finetune/label_counts.json the noisy label counts (dp-count only)
    finetune/checkpoint.pt     LoRA weights + optimizer state + steps done (+ accountant history), atomic
    ledger.json                steps done and epsilon spent (the checkpoint is the source of truth)
    adapter/                   the DP LoRA adapter (adapter_model.safetensors + adapter_config.json)
    samples.journal.jsonl      generated rows, appended per batch (resume keeps them)

A killed run resumes from its last checkpoint: updates after it were never written anywhere, so
they were never released; the resumed run continues the same plan to the planned number of steps.
The training loss shown in the progress display is computed on private batches and is *not* DP:
it is shown to the operator only and never written to the run directory or the log.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import random
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpsynth.config import Config, FinetuneConfig
from dpsynth.data import PrivateData, load_private
from dpsynth.errors import ConfigError, DataError, GeneratorError, ResumeError
from dpsynth.io import append_jsonl, atomic_write_bytes, atomic_write_json, read_jsonl_tolerant
from dpsynth.privacy.dpsgd import (
    DpSgdPlan,
    history_epsilon,
    make_plan,
    make_private,
    paper_delta,
    pld_history_epsilon,
    report_entries,
)
from dpsynth.privacy.report import ADJACENCY
from dpsynth.run import ProgressReporter, RunDir

log = logging.getLogger("dpsynth")

GENERATOR_NAME = "dp-finetune"
MAX_ATTEMPT_FACTOR = 3  # a class gives up after 3x its quota in generation attempts


# ---------------------------------------------------------------- model loading
def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"finetune.device: {device} asked for but CUDA is not available; use cpu or auto")
    return device


def pick_bf16(precision: str, device: str) -> bool:
    """Whether to run forward/backward under bf16 autocast (weights, clipping and noise stay fp32)."""
    import torch

    if precision != "auto":
        return precision == "bf16"
    if device.startswith("cuda"):
        return bool(torch.cuda.is_bf16_supported())
    try:  # oneDNN's check: AVX512-BF16 or AMX; bf16 is ~2x faster there, emulated (slow) elsewhere
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast(device: str, bf16: bool) -> Any:
    import torch

    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16)


def model_source(model: str) -> tuple[str, dict[str, Any]]:
    """(folder or hub id, from_pretrained kwargs): a GGUF file or embedded name goes through ``gguf_file``."""
    from dpsynth.generators.models import EMBEDDED_MODELS, resolve_model

    name = model.strip()
    if name.lower() in EMBEDDED_MODELS or name.lower().endswith(".gguf"):
        try:
            path = resolve_model(name, "finetune")
        except GeneratorError as exc:
            raise GeneratorError(str(exc).replace("generators[finetune].model", "finetune.model")) from None
        return str(path.parent), {"gguf_file": path.name}
    p = Path(name).expanduser()
    return (str(p) if p.exists() else name), {}


def load_causal_lm(model: str) -> tuple[Any, Any]:
    """(tokenizer, fp32 model on CPU) from an embedded name, GGUF path, HF folder or hub id."""
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise GeneratorError("finetune.model: dp-finetune needs `pip install transformers gguf`") from None
    from transformers.utils import logging as hf_logging

    source, kwargs = model_source(model)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # GGUF de-quantisation draws progress bars per load
    gguf_utils: Any = None
    if "gguf_file" in kwargs:  # the GGUF converter draws its own tqdm bar; silence it for this load only
        try:
            import functools

            import transformers.modeling_gguf_pytorch_utils as gguf_utils

            gguf_tqdm = gguf_utils.tqdm
            gguf_utils.tqdm = functools.partial(gguf_tqdm, disable=True)
        except (ImportError, AttributeError):
            gguf_utils = None
    try:
        tok = AutoTokenizer.from_pretrained(source, **kwargs)
        try:
            lm = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, **kwargs)
        except TypeError:  # transformers < 4.56 calls it torch_dtype
            lm = AutoModelForCausalLM.from_pretrained(source, torch_dtype=torch.float32, **kwargs)
    except (OSError, ValueError, ImportError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GeneratorError(f"finetune.model: transformers could not load {model}: {first[:300]}") from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()
        if gguf_utils is not None:
            gguf_utils.tqdm = gguf_tqdm
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    if tok.eos_token_id is None:
        raise GeneratorError(f"finetune.model: {model} has no end-of-sequence token; use a causal LM with one")
    return tok, lm


def add_lora(model: Any, ft: FinetuneConfig) -> Any:
    """Wrap ``model`` with trainable LoRA adapters (in place); everything else is frozen."""
    from peft import LoraConfig, get_peft_model

    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [t for t in ft.target_modules if t not in names]
    if missing:
        raise ConfigError(
            f"finetune.target_modules: {missing} not found in {ft.model}; linear layers there include e.g. "
            f"{sorted(n for n in names if n.endswith('proj'))[:8]}"
        )
    cfg = LoraConfig(
        r=ft.lora_r,
        lora_alpha=ft.lora_alpha,
        lora_dropout=ft.lora_dropout,
        target_modules=list(ft.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():  # peft calls a transformers method deprecated in 5.x
        warnings.simplefilter("ignore", FutureWarning)
        return get_peft_model(model, cfg)


# ---------------------------------------------------------------- records -> tokens
@dataclass(frozen=True)
class Encoded:
    ids: list[list[int]]  # control code + text + eos, at most max_length
    n_prefix: list[int]  # control-code tokens of each (not in the loss)
    n_truncated: int
    truncated_idx: list[int]


class RecordFormat:
    """How a (label, text) record becomes tokens: a label-dependent prefix (not in the loss) + the text + eos.

    * plain (the paper): ``control_code`` with its trailing whitespace moved to the text, so the text
      tokenises as it would in running prose (``label: positive | text:`` + `` Great film``);
    * chat (instruct models): the tokenizer's chat template with ``instruction`` as the user turn,
      the text is the assistant's reply and the end-of-turn token its eos.  A small instruct model
      writes on-topic text from step 0 this way; with the plain code it starts from unrelated text.

    Generation prompts are exactly the training prefixes, so sampling is conditioned on the label.
    """

    def __init__(self, tok: Any, ft: FinetuneConfig, task: str = "text") -> None:
        self.tok = tok
        self.ft = ft
        self.task = task
        has_template = bool(getattr(tok, "chat_template", None))
        if ft.prompt_format == "chat" and not has_template:
            raise ConfigError(
                f"finetune.prompt_format: chat needs a tokenizer with a chat template and {ft.model} has none; "
                "use plain or auto"
            )
        self.mode = "chat" if ft.prompt_format == "chat" or (ft.prompt_format == "auto" and has_template) else "plain"
        code = ft.control_code.format(label="{label}", task=task)
        self._sep = " " if code != code.rstrip() else ""
        self._cache: dict[str, list[int]] = {}

    def prefix_text(self, label_name: str) -> str:
        if self.mode == "chat":
            msg = self.ft.instruction.format(label=label_name, task=self.task).strip()
            text = self.tok.apply_chat_template(
                [{"role": "user", "content": msg}], add_generation_prompt=True, tokenize=False
            )
            return str(text)
        return self.ft.control_code.format(label=label_name, task=self.task).rstrip()

    def prefix(self, label_name: str) -> list[int]:
        if label_name not in self._cache:
            text = self.prefix_text(label_name)
            special = self.mode == "plain"  # the chat template already holds its special tokens
            self._cache[label_name] = list(self.tok(text, add_special_tokens=special)["input_ids"])
        return self._cache[label_name]

    def body(self, texts: Sequence[str]) -> list[list[int]]:
        lead = self._sep if self.mode == "plain" else ""
        return [list(x) for x in self.tok([lead + t.strip() for t in texts], add_special_tokens=False)["input_ids"]]

    def encode(self, texts: Sequence[str], label_names: Sequence[str], max_length: int) -> Encoded:
        """``prefix + text + eos`` per record; texts longer than the budget are cut (the eos is kept)."""
        ids, n_prefix, truncated = [], [], []
        eos = self.tok.eos_token_id
        for i, (name, text_ids) in enumerate(zip(label_names, self.body(texts), strict=True)):
            pre = self.prefix(name)
            room = max_length - len(pre) - 1
            if room < 1:
                raise ConfigError(
                    f"finetune.max_length: {max_length} tokens leave no room for text after the prompt "
                    f"({len(pre)} tokens); raise max_length or shorten finetune.control_code / instruction"
                )
            if len(text_ids) > room:
                truncated.append(i)
                text_ids = text_ids[:room]
            ids.append([*pre, *text_ids, eos])
            n_prefix.append(len(pre))
        return Encoded(ids, n_prefix, len(truncated), truncated)


class RecordDataset:
    """Fixed-shape (input_ids, labels) pairs padded to the longest record (Opacus builds empty batches
    from the first item's shape); ``collate`` trims each batch to its own longest record."""

    def __init__(self, enc: Encoded, pad_id: int) -> None:
        import torch

        width = max(len(x) for x in enc.ids)
        self.input_ids = torch.full((len(enc.ids), width), pad_id, dtype=torch.long)
        self.labels = torch.full((len(enc.ids), width), -100, dtype=torch.long)
        for i, (ids, npre) in enumerate(zip(enc.ids, enc.n_prefix, strict=True)):
            t = torch.tensor(ids, dtype=torch.long)
            self.input_ids[i, : len(ids)] = t
            self.labels[i, npre : len(ids)] = t[npre:]
        self.lengths = [len(x) for x in enc.ids]

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        return self.input_ids[i], self.labels[i]


def collate(batch: list[tuple[Any, Any]]) -> tuple[Any, Any]:
    import torch

    ids = torch.stack([b[0] for b in batch])
    labels = torch.stack([b[1] for b in batch])
    real = (labels != -100).any(0).nonzero()
    width = int(real.max()) + 1 if len(real) else 1
    return ids[:, :width], labels[:, :width]


def per_sample_loss(logits: Any, labels: Any) -> Any:
    """Mean next-token loss of each record over its own text tokens: shape [batch].

    The batch loss is the *mean of these* (never a token-level mean over the batch, which would
    make one record's gradient depend on the other records' lengths and void the clipping bound).
    """
    import torch

    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    tok_loss = torch.nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1), reduction="none", ignore_index=-100
    ).view(shift_labels.shape)
    mask = (shift_labels != -100).float()
    return (tok_loss * mask).sum(1) / mask.sum(1).clamp(min=1.0)


# ---------------------------------------------------------------- training
@dataclass
class TrainResult:
    steps_done: int
    seconds: float
    last_loss: float | None


def _lora_params(model: Any) -> list[Any]:
    return [p for p in model.parameters() if p.requires_grad]


# peft looks for a config.json next to the weights to see whether the vocabulary changed; a GGUF has none
_NO_CONFIG_WARNING = "Could not find a config file"


def lora_state(model: Any) -> dict[str, Any]:
    from peft import get_peft_model_state_dict

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_NO_CONFIG_WARNING)
        state = get_peft_model_state_dict(model)
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def load_lora_state(model: Any, state: dict[str, Any]) -> None:
    from peft import set_peft_model_state_dict

    res = set_peft_model_state_dict(model, state)
    unexpected = getattr(res, "unexpected_keys", [])
    if unexpected:
        raise ResumeError(f"checkpoint: LoRA weights do not fit this model ({len(unexpected)} unexpected keys)")


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
    noise plan.noise_multiplier * C).  Without (the canary audit's epsilon = infinity): plain AdamW on
    shuffled batches of ``batch_size``, no clipping, no noise.  ``checkpoint(step, optimizer)`` is
    called every ``ft.checkpoint_every`` steps and after the last one.
    """
    import torch

    peft_model.to(device)
    peft_model.train()
    params = _lora_params(peft_model)
    opt = torch.optim.AdamW(params, lr=ft.learning_rate, weight_decay=0.0)
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
    priv = make_private(peft_model, opt, dataset, collate, plan, device)
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
    lengths_loss: list[float] = []
    while step < steps:
        ids, labels = next(batches)
        ids, labels = ids.to(device), labels.to(device)
        if ids.shape[0] == 0:
            # an empty Poisson batch is still a DP-SGD step: the update is pure noise
            for p in params:
                p.grad_sample = torch.zeros((0, *p.shape), device=p.device, dtype=p.dtype)
        else:
            with autocast(device, bf16):
                logits = module(input_ids=ids).logits
            loss_vec = per_sample_loss(logits, labels)
            loss_vec.mean().backward()
            lengths_loss.append(float(loss_vec.detach().mean()))
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


# ---------------------------------------------------------------- generation
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

    Same record layout as the DP training (control code for ``label``), plain AdamW, no clipping or
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


def save_adapter(model: Any, target: Path) -> None:
    """A peft model's LoRA adapter (safetensors), written to a temporary folder and renamed into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".adapter-", dir=target.parent))
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_NO_CONFIG_WARNING)
            model.save_pretrained(str(tmp), safe_serialization=True)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def allocate(n: int, shares: dict[str, float]) -> dict[str, int]:
    """Largest-remainder split of ``n`` over classes, at least one per class."""
    keys = list(shares)
    total = sum(shares.values())
    raw = {k: n * shares[k] / total for k in keys}
    base = {k: max(1, int(raw[k])) for k in keys}
    rest = n - sum(base.values())
    for k in sorted(keys, key=lambda k: raw[k] - int(raw[k]), reverse=True):
        if rest <= 0:
            break
        base[k] += 1
        rest -= 1
    while sum(base.values()) > n:  # the at-least-one floor overshot: take from the largest
        big = max(base, key=lambda k: base[k])
        base[big] -= 1
    return base


# ---------------------------------------------------------------- the method
class DpFinetuneMethod:
    """``MethodRunner`` for ``--method dp-finetune`` (see api.MethodRunner)."""

    def __init__(self, config: Config, private: Any = None) -> None:
        self.config = config
        self._private_source = private
        self.data: PrivateData | None = None
        self.tok: Any = None
        self.model: Any = None
        self.plan: DpSgdPlan | None = None
        self.encoded: Encoded | None = None
        self.fmt: RecordFormat | None = None
        self.device = "cpu"
        self.bf16 = False

    # -------------------------------------------------------------- prepare
    def prepare(self) -> None:
        from dpsynth.api import resolve_defaults

        # resolve_defaults fills the embedded dataset's labels and checks they are declared; its
        # round-count check is WASP's, so it runs on a copy that does not claim to read private data.
        cfg = resolve_defaults(self.config.model_copy(update={"method": "zero-shot"}))
        self.config = cfg.model_copy(update={"method": self.config.method})
        config = self.config
        ft = config.finetune
        d = config.data
        assert d.labels is not None
        self.data = load_private(
            self._private_source if self._private_source is not None else d.private,
            d.text_column,
            d.label_column,
            d.labels,
            d.encoding,
            m_private=d.m_private,
            seed=d.seed,
        )
        n = len(self.data)
        if ft.batch_size > n:
            raise ConfigError(
                f"finetune.batch_size: {ft.batch_size} is larger than the {n} private records; "
                f"use a batch size of at most {max(1, n // 4)} (q = B/N well below 1)"
            )
        self.plan = self._plan(n)
        self.device = pick_device(ft.device)
        self.tok, self.model = load_causal_lm(ft.model)
        max_pos = getattr(self.model.config, "max_position_embeddings", None)
        if max_pos and ft.max_length + ft.max_new_tokens > max_pos:
            raise ConfigError(
                f"finetune.max_length: {ft.max_length} + max_new_tokens {ft.max_new_tokens} exceeds the model's "
                f"context of {max_pos} tokens; lower them"
            )
        names = [d.labels[v] for v in self.data.labels]
        self.fmt = RecordFormat(self.tok, ft, d.task)
        self.encoded = self.fmt.encode(self.data.texts, names, ft.max_length)
        if self.encoded.n_truncated and not ft.truncate:
            idx = self.encoded.truncated_idx
            more = f" and {len(idx) - 5} more" if len(idx) > 5 else ""
            raise DataError(
                f"{self.encoded.n_truncated} private record(s) are longer than finetune.max_length={ft.max_length} "
                f"tokens with the control code (record indices {', '.join(map(str, idx[:5]))}{more}); raise "
                "finetune.max_length or set finetune.truncate: true to cut them"
            )
        self.model = add_lora(self.model, ft)
        self.bf16 = pick_bf16(ft.precision, self.device)

    def _stored_plan(self) -> DpSgdPlan | None:
        if not self.config.out:
            return None
        p = Path(self.config.out).expanduser() / "finetune" / "plan.json"
        if not p.exists():
            return None
        return DpSgdPlan.from_dict(json.loads(p.read_text(encoding="utf-8")))

    def _plan(self, n: int) -> DpSgdPlan:
        config, ft = self.config, self.config.finetune
        stored = self._stored_plan()  # only on --resume (a fresh run refuses an existing directory)
        explicit = "delta" in config.privacy.model_fields_set
        if stored is not None:
            explicit = stored.delta_source == "privacy.delta"
        if explicit:
            delta, source = config.privacy.delta, "privacy.delta"
        else:
            delta, source = paper_delta(n), "1/(N ln N)"
        if delta >= 1.0 / n:
            raise ConfigError(
                f"privacy.delta: {delta:g} is not below 1/N for these {n} private records; use a smaller delta"
            )
        share = ft.label_count_epsilon_share if ft.label_proportions == "dp-count" else None
        if stored is not None:
            fresh = DpSgdPlan(
                epsilon=config.privacy.epsilon,
                delta=delta,
                delta_source=source,
                sample_rate=ft.batch_size / n,
                steps=max(1, round(ft.epochs / (ft.batch_size / n))),
                noise_multiplier=stored.noise_multiplier,
                max_grad_norm=ft.max_grad_norm,
                accountant=ft.accountant,
                expected_batch_size=float(ft.batch_size),
                label_count_noise_multiplier=0.0 if share else None,
            )
            if not stored.same_schedule(fresh):
                raise ResumeError(
                    f"out: {config.out} was started with a different privacy plan (epsilon, delta, batch size, "
                    "epochs, clip norm, accountant or label proportions); resume with the original config"
                )
            return stored  # a resumed run never recalibrates
        return make_plan(
            epsilon=config.privacy.epsilon,
            delta=delta,
            delta_source=source,
            n_records=n,
            batch_size=ft.batch_size,
            epochs=ft.epochs,
            max_grad_norm=ft.max_grad_norm,
            accountant=ft.accountant,
            label_count_share=share,
        )

    # -------------------------------------------------------------- run
    def run(self, run_dir: RunDir, reporter: ProgressReporter) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        ledger, shares = self.train_adapter(run_dir, reporter)
        # generation: post-processing of the DP adapter and the DP class shares
        rows = self._generate(run_dir, reporter, shares)
        return rows, self._report(ledger, shares)

    def train_adapter(self, run_dir: RunDir, reporter: ProgressReporter) -> tuple[_FinetuneLedger, dict[str, float]]:
        """Every private-data step of the method: the class shares, DP-SGD, and the adapter saved to
        ``run_dir/adapter`` (safetensors).  KnowledgeSG's client stops here and uploads the adapter."""
        assert self.plan is not None and self.data is not None and self.encoded is not None
        config, ft, plan = self.config, self.config.finetune, self.plan
        labels = config.data.labels
        assert labels is not None
        ft_dir = run_dir.path / "finetune"
        ft_dir.mkdir(parents=True, exist_ok=True)
        plan_path = ft_dir / "plan.json"
        if not plan_path.exists():
            atomic_write_json(plan_path, plan.to_dict())
        ledger = _FinetuneLedger(run_dir.ledger, plan)

        # 1. class shares (the only release before training)
        shares = self._class_shares(ft_dir, ledger)

        # 2. DP-SGD
        ckpt_path = ft_dir / "checkpoint.pt"
        start, opt_state = 0, None
        if ckpt_path.exists():
            start, opt_state = self._load_checkpoint(ckpt_path)
            log.info("resuming DP-SGD from step %d of %d", start, plan.steps)
        if ledger.steps_done > start:
            raise ResumeError(
                f"{ckpt_path}: the ledger records {ledger.steps_done} DP-SGD steps but the checkpoint holds "
                f"{start}; the checkpoint is missing or older, and continuing would re-spend budget"
            )
        dataset = RecordDataset(self.encoded, self.tok.pad_token_id)
        self.data, self.encoded = None, None  # only the token tensors are kept, in memory
        reporter.start("DP-SGD", total=plan.steps)

        last_eps = [0.0, -math.inf]  # (value, when): PRV takes ~0.3 s, so refresh it at most every 5 s

        def on_step(step: int, loss: float | None) -> None:
            if step == plan.steps or time.monotonic() - last_eps[1] > 5:
                last_eps[:] = [ledger.epsilon_at(step), time.monotonic()]
            shown = f"loss {loss:.3f} " if loss is not None else ""
            reporter.update("DP-SGD", step, plan.steps, f"{shown}eps {last_eps[0]:.3f}/{plan.epsilon:g}")

        def save(step: int, optimizer: Any) -> None:
            self._save_checkpoint(ckpt_path, step, optimizer)
            ledger.record_steps(step)  # after the checkpoint: the ledger never runs ahead of it

        res = train(
            self.model,
            dataset,
            ft=ft,
            plan=plan,
            steps=plan.steps,
            device=self.device,
            bf16=self.bf16,
            start_step=start,
            optimizer_state=opt_state,
            on_step=on_step,
            checkpoint=save,
        )
        del dataset
        if start < plan.steps:
            log.info("DP-SGD: %d steps in %.1f s", res.steps_done - start, res.seconds)
        ledger.record_steps(plan.steps)
        self._save_adapter(run_dir.path / "adapter")
        return ledger, shares

    # -------------------------------------------------------------- pieces
    def _class_shares(self, ft_dir: Path, ledger: _FinetuneLedger) -> dict[str, float]:
        labels = self.config.data.labels
        assert labels is not None and self.data is not None
        if self.config.finetune.label_proportions == "uniform":
            return {k: 1.0 / len(labels) for k in labels}
        path = ft_dir / "label_counts.json"
        if path.exists():
            noisy = json.loads(path.read_text(encoding="utf-8"))["noisy_counts"]
        else:
            import numpy as np

            from dpsynth.privacy.mechanisms import add_gaussian_noise

            assert self.plan is not None and self.plan.label_count_noise_multiplier is not None
            raw = np.array([sum(1 for v in self.data.labels if v == k) for k in labels], dtype=np.float64)
            noisy_arr = add_gaussian_noise(raw, self.plan.label_count_noise_multiplier)
            del raw  # the pre-noise counts are never written or returned
            noisy = {k: float(x) for k, x in zip(labels, noisy_arr, strict=True)}
            atomic_write_json(path, {"noisy_counts": noisy, "sigma": self.plan.label_count_noise_multiplier})
        ledger.record_count()
        clipped = {k: max(0.0, float(noisy[k])) for k in labels}
        total = sum(clipped.values())
        if total <= 0:
            return {k: 1.0 / len(labels) for k in labels}
        return {k: v / total for k, v in clipped.items()}

    def _save_checkpoint(self, path: Path, step: int, optimizer: Any) -> None:
        import torch

        assert self.plan is not None
        state = {
            "step": step,
            "lora": lora_state(self.model),
            "optimizer": optimizer.state_dict(),
            "accountant_history": [list(h) for h in self.plan.history(step)],
            "plan": self.plan.to_dict(),
        }
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(path, buf.getvalue())

    def _load_checkpoint(self, path: Path) -> tuple[int, dict[str, Any]]:
        import torch

        assert self.plan is not None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - a damaged file is a user-facing resume problem
            raise ResumeError(f"{path}: cannot be read ({type(exc).__name__}); start a new --out directory") from None
        if DpSgdPlan.from_dict(state["plan"]) != self.plan:
            raise ResumeError(f"{path}: the checkpoint belongs to a different privacy plan; start a new --out")
        load_lora_state(self.model, state["lora"])
        return int(state["step"]), state["optimizer"]

    def _save_adapter(self, target: Path) -> None:
        """The DP LoRA adapter (safetensors)."""
        save_adapter(self.model, target)

    def _generate(self, run_dir: RunDir, reporter: ProgressReporter, shares: dict[str, float]) -> list[dict[str, Any]]:
        config, ft = self.config, self.config.finetune
        labels = config.data.labels
        assert labels is not None
        quota = allocate(config.n_synthetic, shares)
        rows = read_jsonl_tolerant(run_dir.journal)
        have = {k: sum(1 for r in rows if r["label"] == k) for k in labels}
        total = sum(quota.values())
        reporter.start("generating", total=total)
        done = sum(min(have[k], quota[k]) for k in labels)
        model = self.model
        if hasattr(model, "merge_and_unload"):  # plain weights: faster sampling (the adapter is saved)
            model = model.merge_and_unload()
            self.model = model
        for c, k in enumerate(labels):
            assert self.fmt is not None
            prompt = self.fmt.prefix(labels[k])
            attempts = 0
            while have[k] < quota[k] and attempts < MAX_ATTEMPT_FACTOR * quota[k]:
                want = min(ft.generation_batch_size, quota[k] - have[k])
                seed = None if config.seed is None else config.seed * 1_000_003 + c * 10_007 + attempts
                texts = generate(model, self.tok, prompt, want, ft=ft, device=self.device, bf16=self.bf16, seed=seed)
                attempts += want
                new = [
                    {"text": t, "label": k, "label_name": labels[k], "generator": GENERATOR_NAME, "round": 0}
                    for t in texts
                    if t
                ][: quota[k] - have[k]]
                append_jsonl(run_dir.journal, new)
                rows.extend(new)
                have[k] += len(new)
                done += len(new)
                reporter.update("generating", done, total, f"{labels[k]} {have[k]}/{quota[k]}")
            if have[k] < quota[k]:
                log.warning("class %s: %d of %d samples after %d attempts", labels[k], have[k], quota[k], attempts)
        out: list[dict[str, Any]] = []
        for k in labels:
            out.extend([r for r in rows if r["label"] == k][: quota[k]])
        return out

    def _report(self, ledger: _FinetuneLedger, shares: dict[str, float]) -> dict[str, Any]:
        assert self.plan is not None
        plan, config, ft = self.plan, self.config, self.config.finetune
        spent = ledger.epsilon_spent()
        delta_note = (
            "delta = 1/(N ln N) as in Yue et al. (ACL 2023); it depends on the number N of private records, "
            "which (like the sample rate q = B/N) is treated as public. Set privacy.delta to fix delta "
            "independently of N."
            if plan.delta_source == "1/(N ln N)"
            else "delta = privacy.delta (set by the user)"
        )
        return {
            "guarantee": f"({spent:.4g}, {plan.delta:.4g})-DP with respect to {ADJACENCY}",
            "epsilon": spent,
            "delta": plan.delta,
            "delta_source": plan.delta_source,
            "delta_note": delta_note,
            "epsilon_target": plan.epsilon,
            "adjacency": ADJACENCY,
            "method": config.method,
            "complete": ledger.steps_done == plan.steps,
            "mechanisms": report_entries(plan, ledger.steps_done, ledger.count_released),
            "accountant": {
                "name": "Opacus PRV accountant" if plan.accountant == "prv" else "Opacus RDP accountant",
                "epsilon_at_delta": spent,
                "history": [list(h) for h in plan.history(ledger.steps_done, ledger.count_released)],
                "pld_crosscheck": {
                    "name": "dp-accounting PLD (same composition)",
                    "epsilon_at_delta": pld_epsilon(plan.history(ledger.steps_done, ledger.count_released), plan.delta),
                },
            },
            "post_processing": [
                "synthetic texts are samples from the DP fine-tuned model (LoRA adapter in adapter/)",
                "class shares of the output: "
                + ("the noisy label count" if ft.label_proportions == "dp-count" else "uniform (no private data)"),
                "generation prompts are the control code (or chat instruction) with public label names only",
            ],
            "class_shares": shares,
            "public_inputs": {
                "labels": config.data.labels,
                "prompt_format": self.fmt.mode if self.fmt else ft.prompt_format,
                "control_code": ft.instruction if self.fmt and self.fmt.mode == "chat" else ft.control_code,
                "task": config.data.task,
                "base_model": ft.model,
                "n_synthetic": config.n_synthetic,
                "lora": {"r": ft.lora_r, "alpha": ft.lora_alpha, "target_modules": list(ft.target_modules)},
                "training": {
                    "epochs": ft.epochs,
                    "batch_size": ft.batch_size,
                    "learning_rate": ft.learning_rate,
                    "max_length": ft.max_length,
                },
            },
            "released_artifacts": ["adapter/ (DP)", "finetune/checkpoint.pt (DP iterate)", "synthetic output"],
            "never_written": "private texts, raw label counts, training losses (shown on screen only)",
        }

    def close(self) -> None:
        self.model = None
        self.data = None
        self.encoded = None
        with contextlib.suppress(Exception):
            import torch

            if self.device.startswith("cuda"):
                torch.cuda.empty_cache()


def pld_epsilon(history: list[tuple[float, float, int]], delta: float) -> float:
    """Independent cross-check of an Opacus accountant history with dp-accounting's PLD accountant."""
    return pld_history_epsilon(history, delta)


class _FinetuneLedger:
    """ledger.json of a dp-finetune run: the plan, the label count release and the DP-SGD steps done."""

    def __init__(self, path: Path, plan: DpSgdPlan) -> None:
        self.path = path
        self.plan = plan
        self.steps_done = 0
        self.count_released = False
        if path.exists():
            raw = json.loads(path.read_text(encoding="utf-8"))
            if raw.get("plan") != plan.to_dict():
                raise ResumeError(f"{path}: the run was started with a different privacy plan; use a new --out")
            self.steps_done = int(raw.get("steps_done", 0))
            self.count_released = bool(raw.get("label_count_released", False))
        self._cache: dict[tuple[int, bool], float] = {}
        self.save()

    def epsilon_at(self, steps: int) -> float:
        key = (steps, self.count_released)
        if key not in self._cache:
            self._cache[key] = self.plan.epsilon_after(steps, self.count_released)
        return self._cache[key]

    def epsilon_spent(self) -> float:
        return self.epsilon_at(self.steps_done)

    def record_count(self) -> None:
        if not self.count_released:
            self.count_released = True
            self.save()

    def record_steps(self, steps: int) -> None:
        if steps > self.plan.steps:
            from dpsynth.errors import PrivacyBudgetError

            raise PrivacyBudgetError(
                f"privacy budget: {steps} DP-SGD steps exceed the planned {self.plan.steps}; start a new run"
            )
        if steps != self.steps_done:
            self.steps_done = max(self.steps_done, steps)
            self.save()

    def save(self) -> None:
        eps = self.epsilon_spent()
        if eps > self.plan.epsilon * (1 + 1e-9) + 1e-9:
            from dpsynth.errors import PrivacyBudgetError

            raise PrivacyBudgetError(f"privacy budget: epsilon {eps:.4f} would exceed {self.plan.epsilon:g}")
        atomic_write_json(
            self.path,
            {
                "plan": self.plan.to_dict(),
                "mechanism": "DP-SGD (+ label count)",
                "label_count_released": self.count_released,
                "steps_done": self.steps_done,
                "epsilon_spent": eps,
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        )


__all__ = [
    "DpFinetuneMethod",
    "RecordDataset",
    "add_lora",
    "RecordFormat",
    "generate",
    "history_epsilon",
    "load_causal_lm",
    "per_sample_loss",
    "train",
]
