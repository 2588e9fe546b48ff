"""Gaussian noise from a cryptographically secure generator.

Predictable noise voids the guarantee (docs/privacy.md, failure modes).  Seeding an ordinary
generator (PCG64, Mersenne Twister) from ``secrets`` is not enough: an adversary who knows every
record but one can subtract the exact statistics on the bins that record did not touch, read the raw
noise there, and in principle recover such a generator's state and predict the rest.  So every
random bit of the noise comes from ChaCha20 (randomgen's ``ChaCha``, 20 rounds, the stream cipher
of the Linux kernel's own CSPRNG) keyed with 256 bits from the OS CSPRNG, fresh on every call.  There
is deliberately no seed parameter in the public path.

Floating-point Gaussian samplers still have subtle low-bit effects (Mironov, CCS 2012, for the
Laplace mechanism); a discrete Gaussian (Canonne, Kamath, Steinke, NeurIPS 2020) would remove them
and is not used: docs/privacy.md says so.
"""

from __future__ import annotations

import secrets
from typing import Any

import numpy as np
from randomgen import ChaCha

CHACHA_ROUNDS = 20  # the standard ChaCha20: fewer rounds trade security for speed


def secure_rng() -> np.random.Generator:
    """A numpy generator on ChaCha20 keyed with 256 bits from the OS CSPRNG (docs/privacy.md)."""
    return np.random.Generator(ChaCha(key=secrets.randbits(256), rounds=CHACHA_ROUNDS))


def add_gaussian_noise(values: np.ndarray, sigma: float, rng: np.random.Generator | None = None) -> np.ndarray:
    """Return ``values + N(0, sigma^2 I)`` as a new float64 array (the input is not modified)."""
    if sigma < 0:
        raise ValueError("sigma must be >= 0")
    rng = rng or secure_rng()
    return np.asarray(values, dtype=np.float64) + rng.normal(0.0, sigma, size=np.shape(values))


def secure_standard_normal_torch(reference: Any, rng: np.random.Generator) -> Any:
    """N(0, 1) noise shaped and placed like the torch tensor ``reference``, its bits from ``rng``.

    DP-SGD's gradient noise, drawn here rather than by torch's own generators (Mersenne Twister on
    the CPU, Philox on a GPU: neither is a CSPRNG).  Drawn in float32 on the host (half the bits and the
    copy of float64; Apple's GPU has no float64), then cast to the gradient's dtype on its device.
    """
    import torch

    noise = rng.standard_normal(tuple(reference.shape), dtype=np.float32)
    return torch.from_numpy(noise).to(device=reference.device, dtype=reference.dtype)


def secure_poisson_mask(n: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of the records a Poisson-sampled batch takes (each independently with probability ``rate``)."""
    return np.flatnonzero(rng.random(n) < rate)
