"""Where and how a causal LM runs: the device, bf16 autocast (weights, clipping and noise stay fp32)."""

from __future__ import annotations

import contextlib
from typing import Any

from dpsynth.errors import ConfigError, DpsynthError


def pick_device(
    device: str, *, field: str = "finetune.device", mps: bool = False, error: type[DpsynthError] = ConfigError
) -> str:
    """``auto`` -> cuda when available (then Apple's mps if ``mps``), else cpu; a CUDA device without CUDA is
    an ``error`` naming ``field``."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        backend = getattr(torch.backends, "mps", None)
        if mps and backend is not None and backend.is_available():
            return "mps"
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise error(f"{field}: {device} asked for but CUDA is not available; use cpu or auto")
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


@contextlib.contextmanager
def strict_fp32() -> Any:
    """IEEE fp32 matmuls and convolutions on CUDA for the block (TF32 off), whatever another library in the
    process set: TF32 rounds inputs to a 10-bit mantissa, and DP-SGD's per-sample gradients must not depend
    on how a batch is laid out (``lm.train``).  A no-op on a CPU.  torch 2.9+ has a second switch
    (``fp32_precision``; transformers sets it) and refuses a mix of the two, so the one it has is used."""
    import torch

    if hasattr(torch.backends, "fp32_precision"):
        switches = [torch.backends.cuda.matmul, torch.backends.cudnn.conv]  # type: ignore[attr-defined]
        saved = [b.fp32_precision for b in switches]
        for b in switches:
            b.fp32_precision = "ieee"
        try:
            yield
        finally:
            for b, v in zip(switches, saved, strict=True):
                b.fp32_precision = v
        return
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
