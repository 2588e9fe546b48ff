"""The causal-LM + LoRA toolkit: what dp-finetune, KnowledgeSG (client and server) and the canary audit share.

* ``device``: the device and bf16 autocast;
* ``loading``: a causal LM from an embedded name, a GGUF file, a folder or a hub id; LoRA adapters
  (wrap, state, save);
* ``records``: a (label, text) record as tokens, the control code or chat template as its prefix, and
  the per-record loss that keeps DP-SGD's clipping bound per record;
* ``training``: LoRA training, DP-SGD through Opacus (with a ``DpSgdPlan``) or without it (no DP) on public texts;
* ``sampling``: samples continuing a prompt.

Nothing here imports torch, transformers, peft or Opacus until a function needs them.
"""

from dpsynth.lm.device import autocast, pick_bf16, pick_device
from dpsynth.lm.loading import (
    add_lora,
    load_causal_lm,
    load_lora_state,
    load_tokenizer,
    lora_skeleton,
    lora_state,
    model_source,
    save_adapter,
    trainable_bytes,
)
from dpsynth.lm.records import Encoded, RecordDataset, RecordFormat, collate, per_sample_loss
from dpsynth.lm.sampling import generate
from dpsynth.lm.training import TrainResult, finetune_public, grad_samples_to_fp32, train

__all__ = [
    "Encoded",
    "RecordDataset",
    "RecordFormat",
    "TrainResult",
    "add_lora",
    "autocast",
    "collate",
    "finetune_public",
    "generate",
    "grad_samples_to_fp32",
    "load_causal_lm",
    "load_lora_state",
    "load_tokenizer",
    "lora_skeleton",
    "lora_state",
    "model_source",
    "pick_bf16",
    "pick_device",
    "per_sample_loss",
    "save_adapter",
    "train",
    "trainable_bytes",
]
