"""Checking and applying an uploaded LoRA adapter on the server.

An adapter arrives as bytes from the network, so it is treated as hostile: parsed with
``safetensors`` only (a JSON header and raw tensors: no pickle, no code), every tensor name must
be ``<module>.lora_A.weight`` / ``.lora_B.weight`` of a Linear module the client declared, every
shape must fit the server's base model, and every value must be finite.  Applying it is the LoRA
merge W <- W + (alpha / r) B A (Hu et al., ICLR 2022), which is what peft's merge does for the
adapters the client trains (plain LoRA, no rsLoRA/DoRA).
"""

from __future__ import annotations

import copy
import re
import struct
from typing import Any

from dpsynth.errors import DpsynthError
from dpsynth.knowledgesg.protocol import LoraSpec

MAX_HEADER_BYTES = 16 * 1024 * 1024
_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>[A-Za-z0-9_.]+)\.lora_(?P<ab>[AB])\.weight$")


class AdapterError(DpsynthError):
    """The uploaded adapter cannot be used with this server's base model (a 4xx for the client)."""


def _linear_modules(base: Any) -> dict[str, Any]:
    import torch

    return {n: m for n, m in base.named_modules() if isinstance(m, torch.nn.Linear)}


def read_adapter(data: bytes, base: Any, lora: LoraSpec | None = None) -> dict[str, tuple[Any, Any]]:
    """Parse and check an adapter against ``base``; return {module name: (A, B)} as float32 tensors.

    Raises AdapterError with a message the client can act on.
    """
    import torch
    from safetensors.torch import load

    if len(data) < 8:
        raise AdapterError("adapter: the upload is not a safetensors file (shorter than its 8-byte header size)")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > min(MAX_HEADER_BYTES, len(data) - 8):
        raise AdapterError(
            "adapter: the upload is not a safetensors file (bad header length); send the "
            "adapter_model.safetensors that peft's save_pretrained writes"
        )
    try:
        tensors = load(data)
    except Exception as exc:  # noqa: BLE001 - any parse failure is the client's malformed upload
        raise AdapterError(f"adapter: not a readable safetensors file ({type(exc).__name__})") from None
    if not tensors:
        raise AdapterError("adapter: the file holds no tensors")
    linear = _linear_modules(base)
    pairs: dict[str, dict[str, Any]] = {}
    for key, t in tensors.items():
        m = _KEY.match(key)
        if not m:
            raise AdapterError(
                f"adapter: unexpected tensor {key[:120]!r}; only LoRA weights (<module>.lora_A.weight, "
                "<module>.lora_B.weight) are accepted"
            )
        module = m.group("module")
        if module not in linear:
            raise AdapterError(
                f"adapter: tensor {key[:120]!r} names a module this server's base model does not have; "
                "the adapter was trained on another base model"
            )
        if lora is not None and module.rsplit(".", 1)[-1] not in lora.target_modules:
            raise AdapterError(f"adapter: module {module!r} is not in the declared lora.target_modules")
        if t.dtype not in (torch.float32, torch.float16, torch.bfloat16) or t.dim() != 2:
            raise AdapterError(f"adapter: tensor {key[:120]!r} must be a 2-d float tensor")
        pairs.setdefault(module, {})[m.group("ab")] = t
    out: dict[str, tuple[Any, Any]] = {}
    ranks = set()
    for module, ab in sorted(pairs.items()):
        if set(ab) != {"A", "B"}:
            raise AdapterError(f"adapter: module {module!r} has lora_{''.join(ab)} but not both lora_A and lora_B")
        a, b = ab["A"].float(), ab["B"].float()
        lin = linear[module]
        r = a.shape[0]
        if r < 1:  # a rank-0 adapter changes nothing and divides alpha by 0: every job naming it would fail
            raise AdapterError(f"adapter: module {module!r} has rank 0; upload a trained LoRA adapter (rank >= 1)")
        if a.shape != (r, lin.in_features) or b.shape != (lin.out_features, r):
            raise AdapterError(
                f"adapter: module {module!r} has shapes A{tuple(a.shape)} B{tuple(b.shape)} but this server's "
                f"base model needs A(r, {lin.in_features}) B({lin.out_features}, r); the adapter was trained on "
                "another base model"
            )
        if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
            raise AdapterError(f"adapter: module {module!r} holds NaN or infinite values")
        ranks.add(r)
        out[module] = (a, b)
    if len(ranks) != 1:
        raise AdapterError(f"adapter: modules have different ranks {sorted(ranks)}")
    if lora is not None:
        if ranks != {lora.r}:
            raise AdapterError(f"adapter: rank {ranks.pop()} does not match the declared lora.r = {lora.r}")
        covered = {m.rsplit(".", 1)[-1] for m in out}
        missing = [t for t in lora.target_modules if t not in covered]
        if missing:
            raise AdapterError(f"adapter: no weights for declared target module(s) {missing}")
    return out


def adapter_rank(weights: dict[str, tuple[Any, Any]]) -> int:
    return int(next(iter(weights.values()))[0].shape[0])


def merged_copy(base: Any, weights: dict[str, tuple[Any, Any]], alpha: int) -> Any:
    """A copy of ``base`` with the adapter merged in; ``base`` itself is never modified (jobs stay isolated)."""
    import torch

    model = copy.deepcopy(base)
    linear = _linear_modules(model)
    scale = alpha / adapter_rank(weights)
    with torch.no_grad():
        for module, (a, b) in weights.items():
            w = linear[module].weight
            w.add_((scale * (b @ a)).to(w.dtype))
    model.eval()
    return model
