"""DP fine-tuning of a causal LM, then sampling (Yue et al., ACL 2023, "a simple and practical recipe").

    control code    each private record becomes ``label: NAME | text: TEXT<eos>`` (config.finetune.control_code)
    noisy count     a Gaussian count of the records per label (or in total), composed with DP-SGD on the
                    same accountant: the output's class shares and N_hat, since N itself is private
    DP-SGD          LoRA adapters (peft) trained with Opacus: per-sample clipping to C (norms in fp32),
                    Poisson sampling at q = B/N_hat, Gaussian noise z*C; z calibrated so the whole run is
                    (epsilon, delta)-DP (PRV accountant)
    generation      sample from the fine-tuned model prompted with each label's control code (post-processing)

Run directory (everything is public or DP; no private text, no pre-noise statistic)::

    finetune/plan.json         the DP-SGD plan (noise multiplier, sample rate, steps), fixed after the count
    finetune/label_counts.json the noisy counts
    finetune/checkpoint.pt     LoRA weights + optimizer state + steps done (+ accountant history), atomic
    ledger.json                the releases and epsilon spent (privacy/ledger.py; the checkpoint holds the steps)
    adapter/                   the DP LoRA adapter (adapter_model.safetensors + adapter_config.json)
    samples.journal.jsonl      generated rows, appended per batch (resume keeps them)

A killed run resumes from its last checkpoint: updates after it were never written anywhere, so
they were never released; the resumed run continues the same plan to the planned number of steps.
The training loss is computed on private batches and is *not* DP: it is shown only with
``finetune.show_loss`` (console only) and never written to the run directory or the log.
"""

from __future__ import annotations

import contextlib
import io
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
from dpsynth.data import PRIVATE_TEXT_DOMAIN, PrivateData, load_private, notify_owner, warn_if_delta_large
from dpsynth.errors import ConfigError, DataError, GeneratorError, ResumeError
from dpsynth.io import append_jsonl, atomic_write_bytes, atomic_write_json, read_jsonl_tolerant
from dpsynth.privacy.dpsgd import DpSgdPlan, calibrate_count_noise, history_epsilon, make_plan, make_private
from dpsynth.privacy.events import Event, epsilon_of
from dpsynth.privacy.ledger import Ledger
from dpsynth.privacy.report import privacy_report
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
    autocast that is bf16, whose 8-bit mantissa let clipped norms reach 1.005 C, above the sensitivity
    the accountant assumes.  In fp32 the clipped norms stay within C (up to 1e-6 relative)."""
    import torch

    for p in params:
        gs = getattr(p, "grad_sample", None)
        if isinstance(gs, list):
            p.grad_sample = [g.to(torch.float32) for g in gs]
        elif gs is not None and gs.dtype != torch.float32:
            p.grad_sample = gs.to(torch.float32)


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
COUNT_KEY = "counts"
DPSGD_KEY = "dpsgd"
DPSGD_MECHANISM = "DP-SGD (Opacus): per-sample clipping, Poisson sampling, Gaussian noise"
COUNT_MECHANISM = "record count, Gaussian mechanism"


class DpFinetuneMethod:
    """``MethodRunner`` for ``--method dp-finetune`` (see api.MethodRunner).

    Privacy plan, in release order (privacy/ledger.py): a noisy count of the records (per label for
    ``label_proportions: dp-count``, the total for ``uniform``), then DP-SGD at sample rate
    q = B / N_hat, where N_hat is that noisy count.  The number of records is private under add/remove
    adjacency, so it never sets the sample rate or the number of steps itself; the DP-SGD noise is
    calibrated after the count, for what the count left of the budget.
    """

    def __init__(self, config: Config, private: Any = None) -> None:
        self.config = config
        self._private_source = private
        self.data: PrivateData | None = None
        self.tok: Any = None
        self.model: Any = None
        self.plan: DpSgdPlan | None = None  # known once the count is released (train_adapter)
        self.count_event: Event | None = None
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
        # data-independent: the count's noise (the DP-SGD noise follows from the released count)
        self.count_event = count_event(config)
        self.data = load_private(
            self._private_source if self._private_source is not None else d.private,
            d.text_column,
            d.label_column,
            d.labels,
            d.encoding,
            m_private=d.m_private,
            seed=d.seed,
        )
        warn_if_delta_large(config.privacy.delta, len(self.data))
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
            # a per-record domain check (privacy.json lists it); raised before the run directory exists,
            # so the message reaches the console only
            idx = self.encoded.truncated_idx
            more = f" and {len(idx) - 5} more" if len(idx) > 5 else ""
            raise DataError(
                f"{self.encoded.n_truncated} private record(s) are longer than finetune.max_length={ft.max_length} "
                f"tokens with the control code (record indices {', '.join(map(str, idx[:5]))}{more}); raise "
                "finetune.max_length or set finetune.truncate: true to cut them"
            )
        self.model = add_lora(self.model, ft)
        self.bf16 = pick_bf16(ft.precision, self.device)

    def domain(self) -> list[str]:
        """Per-record checks that refuse the input (privacy.json ``domain``)."""
        checks = list(PRIVATE_TEXT_DOMAIN)
        if not self.config.finetune.truncate:
            checks.append(
                f"finetune.truncate is false: every record fits finetune.max_length = "
                f"{self.config.finetune.max_length} tokens with its control code"
            )
        return checks

    # -------------------------------------------------------------- run
    def run(self, run_dir: RunDir, reporter: ProgressReporter) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        ledger, shares = self.train_adapter(run_dir, reporter)
        # generation: post-processing of the DP adapter and the DP class shares
        rows = self._generate(run_dir, reporter, shares)
        return rows, self._report(ledger, shares)

    def train_adapter(self, run_dir: RunDir, reporter: ProgressReporter) -> tuple[Ledger, dict[str, float]]:
        """Every private-data step of the method: the noisy count, DP-SGD, and the adapter saved to
        ``run_dir/adapter`` (safetensors).  KnowledgeSG's client stops here and uploads the adapter."""
        assert self.data is not None and self.encoded is not None and self.count_event is not None
        config, ft = self.config, self.config.finetune
        ft_dir = run_dir.path / "finetune"
        ft_dir.mkdir(parents=True, exist_ok=True)
        ledger = Ledger.open(
            run_dir.ledger,
            epsilon=config.privacy.epsilon,
            delta=config.privacy.delta,
            accountant=ft.accountant,
            planned=[self.count_event],
            resume=run_dir.resuming,
        )

        # 1. the noisy count: class shares of the output and the sample rate of DP-SGD
        noisy = self._release_count(ft_dir, ledger)
        shares = class_shares_from(noisy, list(config.data.labels or {}), ft.label_proportions)
        plan = self.plan = self._dpsgd_plan(ledger, noisy)
        plan_path = ft_dir / "plan.json"
        if not plan_path.exists():
            atomic_write_json(plan_path, plan.to_dict())

        # 2. DP-SGD
        ckpt_path = ft_dir / "checkpoint.pt"
        start, opt_state = 0, None
        if ckpt_path.exists():
            start, opt_state = self._load_checkpoint(ckpt_path)
            log.info("resuming DP-SGD from step %d of %d", start, plan.steps)
        ledger.record_steps(DPSGD_KEY, start)  # refuses a checkpoint older than the ledger (re-spend)
        dataset = RecordDataset(self.encoded, self.tok.pad_token_id)
        self.data, self.encoded = None, None  # only the token tensors are kept, in memory
        reporter.start("DP-SGD", total=plan.steps)

        last_eps = [0.0, -math.inf]  # (value, when): PRV takes ~0.3 s, so refresh it at most every 5 s
        if ft.show_loss:
            reporter.message("finetune.show_loss: the loss shown is computed on private batches without noise (not DP)")

        sgd = dpsgd_event(plan)
        before = [e for e in ledger.spent_events() if e.key != DPSGD_KEY]

        def on_step(step: int, loss: float | None) -> None:
            if step == plan.steps or time.monotonic() - last_eps[1] > 5:
                spent = [*before, sgd.with_steps(step)]
                last_eps[:] = [epsilon_of(spent, ledger.delta, ledger.accountant), time.monotonic()]
            shown = f"loss {loss:.3f} " if ft.show_loss and loss is not None else ""
            reporter.update("DP-SGD", step, plan.steps, f"{shown}eps {last_eps[0]:.3f}/{ledger.epsilon:g}")

        def save(step: int, optimizer: Any) -> None:
            self._save_checkpoint(ckpt_path, step, optimizer)
            ledger.record_steps(DPSGD_KEY, step)  # after the checkpoint: the ledger never runs ahead of it

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
        self._save_adapter(run_dir.path / "adapter")
        return ledger, shares

    # -------------------------------------------------------------- pieces
    def _release_count(self, ft_dir: Path, ledger: Ledger) -> dict[str, float]:
        """The noisy count per label (dp-count) or of all records (uniform), drawn once (Ledger.release)."""
        labels = list(self.config.data.labels or {})
        event = ledger.event(COUNT_KEY)
        assert event is not None and self.data is not None
        data = self.data
        per_label = self.config.finetune.label_proportions == "dp-count"

        def draw() -> dict[str, Any]:
            import numpy as np

            from dpsynth.privacy.mechanisms import add_gaussian_noise

            if per_label:
                raw = np.array([sum(1 for v in data.labels if v == k) for k in labels], dtype=np.float64)
                keys = labels
            else:
                raw, keys = np.array([float(len(data))]), ["total"]
            noisy = add_gaussian_noise(raw, event.sigma)
            del raw  # the pre-noise counts are never written or returned
            return {"noisy_counts": {k: float(x) for k, x in zip(keys, noisy, strict=True)}, "sigma": event.sigma}

        out: dict[str, float] = ledger.release(COUNT_KEY, ft_dir / "label_counts.json", draw)["noisy_counts"]
        return out

    def _dpsgd_plan(self, ledger: Ledger, noisy: dict[str, float]) -> DpSgdPlan:
        """DP-SGD at q = B / N_hat for the budget the count left; a resumed run reuses the stored event."""
        config, ft = self.config, self.config.finetune
        assert self.count_event is not None
        n_hat = max(0.0, sum(max(0.0, v) for v in noisy.values()))
        if n_hat < ft.batch_size:
            notify_owner(
                f"finetune.batch_size: {ft.batch_size} is not below the noisy record count ({n_hat:.0f}); every "
                "DP-SGD step uses all records (sample rate 1)"
            )
        stored = ledger.event(DPSGD_KEY)
        if stored is None:
            plan = make_plan(
                epsilon=config.privacy.epsilon,
                delta=config.privacy.delta,
                delta_source="privacy.delta",
                n_records=max(ft.batch_size, round(n_hat)),
                batch_size=ft.batch_size,
                epochs=ft.epochs,
                max_grad_norm=ft.max_grad_norm,
                accountant=ledger.accountant,  # type: ignore[arg-type]
                count_noise_multiplier=self.count_event.noise_multiplier,
            )
            if plan.accountant != ledger.accountant:
                ledger.use_accountant(plan.accountant)
            ledger.plan([dpsgd_event(plan)])
            return plan
        return DpSgdPlan(
            epsilon=ledger.epsilon,
            delta=ledger.delta,
            delta_source="privacy.delta",
            sample_rate=stored.sample_rate,
            steps=stored.steps,
            noise_multiplier=stored.noise_multiplier,
            max_grad_norm=stored.sensitivity,
            accountant=ledger.accountant,  # type: ignore[arg-type]
            expected_batch_size=float(ft.batch_size),
            label_count_noise_multiplier=self.count_event.noise_multiplier,
        )

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
        if not dpsgd_event(DpSgdPlan.from_dict(state["plan"])).same_spend(dpsgd_event(self.plan)):
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

    def _report(self, ledger: Ledger, shares: dict[str, float]) -> dict[str, Any]:
        assert self.plan is not None
        plan, config, ft = self.plan, self.config, self.config.finetune
        torch_rng = "torch.Generator seeded from the OS CSPRNG (secrets), fresh per run and per resume"
        return privacy_report(
            ledger,
            method=config.method,
            public_inputs={
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
            post_processing=[
                "the DP-SGD sample rate q = B / N_hat and its number of steps come from the noisy count, not the "
                "number of private records",
                "synthetic texts are samples from the DP fine-tuned model (LoRA adapter in adapter/)",
                "class shares of the output: "
                + ("the noisy label count" if ft.label_proportions == "dp-count" else "uniform"),
                "generation prompts are the control code (or chat instruction) with public label names only",
            ],
            never_written="private texts, raw counts, training losses",
            domain=self.domain(),
            details={
                DPSGD_MECHANISM: {
                    "max_grad_norm": plan.max_grad_norm,
                    "expected_batch_size": plan.expected_batch_size,
                    "steps": ledger.steps_done(DPSGD_KEY),
                    "planned_steps": plan.steps,
                    "clipping": "per-sample gradient norms computed and clipped in fp32",
                    "noise_rng": torch_rng,
                },
            },
            extra={
                "class_shares": shares,
                "released_artifacts": ["adapter/ (DP)", "finetune/checkpoint.pt (DP iterate)", "synthetic output"],
            },
        )

    def close(self) -> None:
        self.model = None
        self.data = None
        self.encoded = None
        with contextlib.suppress(Exception):
            import torch

            if self.device.startswith("cuda"):
                torch.cuda.empty_cache()


def count_event(config: Config) -> Event:
    """The noisy record count: alone it is (share * epsilon, delta)-DP (sensitivity 1 under add/remove)."""
    ft = config.finetune
    z = calibrate_count_noise(ft.label_count_epsilon_share * config.privacy.epsilon, config.privacy.delta)
    per_label = ft.label_proportions == "dp-count"
    return Event(
        COUNT_KEY,
        z,
        sensitivity=1.0,
        mechanism=COUNT_MECHANISM,
        reads="the private labels (one count per declared label)" if per_label else "the number of private records",
    )


def dpsgd_event(plan: DpSgdPlan) -> Event:
    return Event(
        DPSGD_KEY,
        plan.noise_multiplier,
        sample_rate=plan.sample_rate,
        steps=plan.steps,
        sensitivity=plan.max_grad_norm,
        mechanism=DPSGD_MECHANISM,
        reads="private texts and labels (control code + text) through LoRA gradients",
    )


def class_shares_from(noisy: dict[str, float], labels: list[str], proportions: str) -> dict[str, float]:
    """Output class shares: the clipped noisy label counts (dp-count), else uniform."""
    if proportions != "dp-count":
        return {k: 1.0 / len(labels) for k in labels}
    clipped = {k: max(0.0, float(noisy.get(k, 0.0))) for k in labels}
    total = sum(clipped.values())
    if total <= 0:
        return {k: 1.0 / len(labels) for k in labels}
    return {k: v / total for k, v in clipped.items()}


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
