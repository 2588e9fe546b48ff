"""Gaussian noise from a cryptographically secure generator.

Predictable noise voids the guarantee (docs/privacy.md, failure modes).  Seeding an ordinary
generator (PCG64, Mersenne Twister) from ``secrets`` is not enough: an adversary who knows every
record but one can subtract the exact statistics on the bins that record did not touch, read the raw
noise there, and in principle recover such a generator's state and predict the rest.  So every
random bit of the noise comes from ChaCha20 (randomgen's ``ChaCha``, 20 rounds, the stream cipher
of the Linux kernel's own CSPRNG) keyed with 256 bits from the OS CSPRNG, fresh on every call.  There
is deliberately no seed parameter in the public path.

Floating-point Gaussian samplers still have subtle low-bit effects (Mironov, CCS 2012, for the
Laplace mechanism).  Where the released statistic lies on a dyadic grid (WASP's Top-Q vote: multiples of
2^-(Q-1)), ``add_discrete_gaussian_noise`` adds the exact discrete Gaussian of Canonne, Kamath and
Steinke (NeurIPS 2020) instead: integer arithmetic and exact Bernoulli trials on rationals, so every
output value is reachable with exactly its probability.  The other releases (counts, sketches, DP-SGD)
still use the float sampler: docs/privacy.md.
"""

from __future__ import annotations

import math
import secrets
from fractions import Fraction
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


def add_noise(
    values: np.ndarray, sigma: float, grid_bits: int = 0, rng: np.random.Generator | None = None
) -> np.ndarray:
    """``values`` plus Gaussian noise of scale ``sigma``: the exact discrete Gaussian on the grid 2^-grid_bits
    (``add_discrete_gaussian_noise``), or the float one when ``grid_bits`` is 0 (a ledger event's convention)."""
    if grid_bits:
        return add_discrete_gaussian_noise(values, sigma, grid_bits, rng)
    return add_gaussian_noise(values, sigma, rng)


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


def add_discrete_gaussian_noise(
    values: np.ndarray, sigma: float, grid_bits: int, rng: np.random.Generator | None = None
) -> np.ndarray:
    """``values`` (multiples of 2^-grid_bits) plus discrete Gaussian noise on that grid, scale ``sigma``.

    The values are scaled to integers, each gets an exact draw of the discrete Gaussian N_Z(0, s^2) with
    s = sigma * 2^grid_bits, and the sum is scaled back: every step is exact in float64 (integers below 2^53,
    a power-of-two scale), so no low-order bit depends on anything but the draw.  Values off the grid are
    refused: rounding them would move the statistic by up to half a step, outside the sensitivity analysis.
    """
    if sigma < 0:
        raise ValueError("sigma must be >= 0")
    scale = math.ldexp(1.0, grid_bits)
    steps = np.asarray(values, dtype=np.float64) * scale
    if not np.array_equal(steps, np.rint(steps)) or np.abs(steps).max(initial=0.0) >= 2.0**52:
        raise ValueError(f"values must be multiples of 2^-{grid_bits} below 2^{52 - grid_bits}")
    rng = rng or secure_rng()
    noise = discrete_gaussian(sigma * scale, int(steps.size), rng).reshape(steps.shape)
    return (steps + noise) / scale


def discrete_gaussian(sigma: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` independent draws of the discrete Gaussian N_Z(0, sigma^2): P(x) proportional to
    exp(-x^2 / (2 sigma^2)) on the integers, sampled exactly (Canonne, Kamath, Steinke 2020, Algorithm 3:
    a discrete Laplace proposal with scale t = floor(sigma) + 1, accepted with probability
    exp(-(|y| - sigma^2/t)^2 / (2 sigma^2))).  sigma^2 is the float sigma's exact rational square; every
    random bit comes from ``rng`` (ChaCha20 in the public path), read in blocks (``_Bytes``)."""
    if sigma == 0:
        return np.zeros(size, dtype=np.float64)
    var = Fraction(sigma) ** 2
    t = math.floor(sigma) + 1
    shift = var / t
    src = _Bytes(rng)
    out = np.empty(size, dtype=np.float64)
    for i in range(size):
        while True:
            y = _discrete_laplace(t, src)
            if _bernoulli_exp((abs(y) - shift) ** 2 / (2 * var), src):
                out[i] = y
                break
    return out


def _discrete_laplace(t: int, src: _Bytes) -> int:
    """P(x) proportional to exp(-|x| / t) on the integers (CKS 2020, Algorithm 2)."""
    while True:
        u = src.below(t)
        if not _bernoulli_exp(Fraction(u, t), src):
            continue
        v = 0
        while _bernoulli_exp(_ONE, src):
            v += 1
        x = u + t * v
        negative = src.below(2) == 1
        if negative and x == 0:
            continue  # zero would otherwise come twice as often
        return -x if negative else x


_ONE = Fraction(1)


def _bernoulli_exp(gamma: Fraction, src: _Bytes) -> bool:
    """True with probability exp(-gamma), gamma >= 0 rational (CKS 2020, Algorithm 1)."""
    while gamma > 1:  # exp(-gamma) = exp(-1)^floor(gamma) * exp(-(gamma - floor(gamma)))
        if not _bernoulli_exp(_ONE, src):
            return False
        gamma -= 1
    num, den = gamma.numerator, gamma.denominator
    k = 1
    while src.below(den * k) < num:  # a Bernoulli(gamma / k) trial
        k += 1
    return k % 2 == 1


class _Bytes:
    """Uniform integers from a generator's random bytes, drawn 64 KiB at a time: one numpy call per block
    instead of one per integer, which made the calls, not the arithmetic, most of a draw's cost."""

    BLOCK = 1 << 16

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._buf = b""
        self._pos = 0

    def _take(self, n: int) -> bytes:
        if self._pos + n > len(self._buf):
            self._buf = self._buf[self._pos :] + self._rng.bytes(max(self.BLOCK, n))
            self._pos = 0
        out = self._buf[self._pos : self._pos + n]
        self._pos += n
        return out

    def below(self, n: int) -> int:
        """A uniform integer in [0, n), any size n >= 1, by rejection from whole bytes (no modulo bias)."""
        bits = (n - 1).bit_length()
        if bits == 0:
            return 0
        nbytes = (bits + 7) // 8
        while True:
            r = int.from_bytes(self._take(nbytes), "little") >> (8 * nbytes - bits)
            if r < n:
                return r
