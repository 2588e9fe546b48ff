"""Loading a causal LM (embedded name, GGUF file, Hugging Face folder or hub id) and its LoRA adapters."""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

from dpsynth.config import FinetuneConfig
from dpsynth.errors import ConfigError, GeneratorError, ResumeError
from dpsynth.extras import require
from dpsynth.quiet import quiet_model_loading

# peft looks for a config.json next to the weights to see whether the vocabulary changed; a GGUF has none
_NO_CONFIG_WARNING = "Could not find a config file"


def model_source(model: str, field: str = "finetune.model") -> tuple[str, dict[str, Any]]:
    """(folder or hub id, from_pretrained kwargs): a GGUF file or embedded name goes through ``gguf_file``.

    A file or folder that exists is used as it is, even when named like an embedded model.  A missing path,
    or a folder with no config.json, is refused here in one line naming ``field`` (transformers would call
    the one a malformed repo id, the other a tokenizer it cannot build); an ``org/name`` hub id goes to the
    hub loader as it is (its own offline or not-found error), never taken for a misspelt embedded name.
    """
    from dpsynth.generators.models import (
        EMBEDDED_MODELS,
        is_embedded,
        is_hub_id,
        looks_like_path,
        names_a_path,
        near_embedded_name,
        resolve_model,
    )

    name = model.strip()
    p = Path(name).expanduser()
    give = f"give a model folder, a .gguf file, a hub id (org/name) or one of: {', '.join(EMBEDDED_MODELS)}"
    gguf_name = name.lower().endswith(".gguf")
    if names_a_path(name) and p.is_dir() and not is_embedded(name):
        if not (p / "config.json").is_file():
            raise GeneratorError(f"{field}: {p} holds no config.json, so it is no Hugging Face model folder; {give}")
        return str(p), {}
    if not names_a_path(name) and not gguf_name and not is_embedded(name):
        if is_hub_id(name):
            return name, {}
        if looks_like_path(name):
            raise GeneratorError(f"{field}: {p} does not exist; {give}")
    if names_a_path(name) or is_embedded(name) or gguf_name or near_embedded_name(name):
        try:
            path = resolve_model(name, "?")  # a GGUF file; "does not exist" (with "did you mean") otherwise
        except GeneratorError as exc:
            raise GeneratorError(str(exc).replace("generators[?].model", field)) from None
        return str(path.parent), {"gguf_file": path.name}
    return name, {}


def one_line(exc: BaseException, width: int = 300) -> str:
    """A library's (often multi-line) message as one line: its lines joined, not cut at the first one,
    which often ends in "one of:" before the list that explains it."""
    return " ".join(str(exc).split())[:width] or type(exc).__name__


def load_tokenizer(model: str) -> tuple[Any, Any]:
    """(tokenizer, transformers config) without the weights: what ``--check`` needs to test the context
    length, the private records' lengths and the LoRA layers (``lora_skeleton``) without loading the model."""
    try:
        from transformers import AutoConfig, AutoTokenizer
    except ImportError:
        raise GeneratorError("finetune.model: dp-finetune needs `pip install transformers`") from None
    source, kwargs = model_source(model)
    if "gguf_file" in kwargs:
        require(f"reading the GGUF model {model} with transformers", "finetune", ["gguf"])
    try:
        tok = AutoTokenizer.from_pretrained(source, **kwargs)
        config = AutoConfig.from_pretrained(source, **kwargs)
    except (OSError, ValueError, ImportError, KeyError) as exc:
        raise GeneratorError(f"finetune.model: transformers could not load {model}: {one_line(exc)}") from None
    return _with_pad(tok, model), config


def lora_skeleton(config: Any, ft: FinetuneConfig) -> Any:
    """The model's layers on PyTorch's meta device (shapes, no memory, no weights), wrapped with LoRA as a
    run wraps them: ``add_lora`` checks finetune.target_modules against it, and ``trainable_bytes`` gives
    the adapter's size, both in seconds."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        try:
            skeleton = AutoModelForCausalLM.from_config(config)
        except (ValueError, KeyError, ImportError) as exc:  # e.g. an encoder (BERT): no causal-LM class
            raise GeneratorError(f"finetune.model: not a causal language model ({one_line(exc, 200)})") from None
        return add_lora(skeleton, ft)


def trainable_bytes(model: Any) -> int:
    """The size of the trainable weights (the LoRA adapter that is saved and sent) in bytes."""
    return sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)


def _with_pad(tok: Any, model: str) -> Any:
    """The tokenizer with a padding token (batches need one), refusing a model that cannot end a sample."""
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    if tok.eos_token_id is None:
        raise GeneratorError(f"finetune.model: {model} has no end-of-sequence token; use a causal LM with one")
    return tok


def load_causal_lm(model: str) -> tuple[Any, Any]:
    """(tokenizer, fp32 model on CPU) from an embedded name, GGUF path, HF folder or hub id."""
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise GeneratorError("finetune.model: dp-finetune needs `pip install transformers`") from None
    source, kwargs = model_source(model)
    if "gguf_file" in kwargs:  # transformers de-quantises GGUF weights with the gguf package
        require(f"loading the GGUF model {model} into PyTorch", "finetune", ["gguf"])
    try:
        with quiet_model_loading(gguf="gguf_file" in kwargs):  # GGUF de-quantisation draws bars per load
            tok = AutoTokenizer.from_pretrained(source, **kwargs)
            try:
                lm = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, **kwargs)
            except TypeError:  # transformers < 4.56 calls it torch_dtype
                lm = AutoModelForCausalLM.from_pretrained(source, torch_dtype=torch.float32, **kwargs)
    except (OSError, ValueError, ImportError, KeyError) as exc:
        raise GeneratorError(f"finetune.model: transformers could not load {model}: {one_line(exc)}") from None
    return _with_pad(tok, model), lm


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
