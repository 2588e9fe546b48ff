"""Gaussian noise from a cryptographically seeded generator.

A fixed seed for DP noise voids the guarantee (docs/privacy.md, failure modes), so the
generator is seeded from ``secrets`` on every call and there is deliberately no
seed parameter in the public path.
"""

from __future__ import annotations

import secrets

import numpy as np


def secure_rng() -> np.random.Generator:
    """A PCG64 generator seeded with 128 bits from the OS CSPRNG (docs/privacy.md)."""
    return np.random.Generator(np.random.PCG64(secrets.randbits(128)))


def add_gaussian_noise(values: np.ndarray, sigma: float, rng: np.random.Generator | None = None) -> np.ndarray:
    """Return ``values + N(0, sigma^2 I)`` as a new float64 array (the input is not modified)."""
    if sigma < 0:
        raise ValueError("sigma must be >= 0")
    rng = rng or secure_rng()
    return np.asarray(values, dtype=np.float64) + rng.normal(0.0, sigma, size=np.shape(values))
