"""Composition of T Gaussian releases: sigma <-> epsilon.

The primary accountant is Google's ``dp-accounting`` privacy-loss-distribution
(PLD) accountant.  T Gaussian mechanisms with L2 sensitivity Delta and noise sigma
are also exactly mu-GDP with mu = sqrt(T) * Delta / sigma (Dong, Roth, Su 2019,
Cor. 3.3), with
    delta(eps) = Phi(-eps/mu + mu/2) - e^eps * Phi(-eps/mu - mu/2),
which we use as an independent cross-check and as the "gdp" accountant.
Calibration is a root-find on the accountant (no classical sqrt(2 ln 1.25/delta)
formula, which is invalid for epsilon > 1).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from scipy.optimize import brentq
from scipy.stats import norm

from dpsynth.errors import ConfigError

PLD_INTERVAL = 1e-4  # dp-accounting's value discretisation: pessimistic, tight to ~1e-3 in epsilon

AccountantName = Literal["pld", "gdp"]


def gdp_mu(steps: int, noise_multiplier: float) -> float:
    return math.sqrt(steps) / noise_multiplier


def gdp_delta(epsilon: float, mu: float) -> float:
    # e^eps * Phi(.) in log space: it overflows for small mu and large eps otherwise
    second = math.exp(epsilon + float(norm.logcdf(-epsilon / mu - mu / 2)))
    return float(norm.cdf(-epsilon / mu + mu / 2)) - second


def gdp_epsilon(mu: float, delta: float) -> float:
    """Smallest epsilon with delta(epsilon) <= delta for mu-GDP."""
    if gdp_delta(0.0, mu) <= delta:
        return 0.0
    hi = 1.0
    while gdp_delta(hi, mu) > delta:
        hi *= 2
        if hi > 1e6:
            return math.inf
    return float(brentq(lambda e: gdp_delta(e, mu) - delta, 0.0, hi, xtol=1e-10))


def pld_epsilon(
    hist: Sequence[tuple[float, float, int]],
    delta: float,
    interval: float | None = None,
    discrete: Sequence[tuple[float, tuple[int, ...], int]] = (),
) -> float:
    """dp-accounting's PLD accountant over (z, q, steps) entries (Poisson-subsampled where q < 1), and over
    discrete-Gaussian releases (sigma in grid steps, each moved coordinate's move in grid steps, steps).

    The discretisation interval is ``PLD_INTERVAL`` unless the releases are so weakly noised that epsilon
    is large: the loss distribution then spans a range that grows like 1/z^2, and a fixed interval made a
    calibration at epsilon 50 take half a minute and at 1,000 many minutes.  For unsampled releases the
    exact Gaussian-DP epsilon gives the scale, and the interval grows with it above epsilon 10 (1e-3 at
    100).  The PLD stays pessimistic, so epsilon is still an upper bound; only its last digits move.
    """
    import dp_accounting
    from dp_accounting.pld import pld_privacy_accountant

    hist = [h for h in hist if h[2] > 0]
    discrete = [d for d in discrete if d[2] > 0]
    if not hist and not discrete:
        return 0.0
    if interval is None:
        interval = PLD_INTERVAL
        if all(q >= 1 for _, q, _ in hist) and all(z > 0 for z, _, _ in hist):
            # a discrete release counts as the float Gaussian at its sigma for the scale
            mu2 = sum(t / z**2 for z, _, t in hist) + sum(t * sum(m * m for m in ms) / s**2 for s, ms, t in discrete)
            scale = gdp_epsilon(math.sqrt(mu2), delta)
            interval = PLD_INTERVAL * max(1.0, scale / 10) if math.isfinite(scale) else PLD_INTERVAL * 1e4
    if discrete:
        return _discrete_pld_epsilon(tuple(hist), tuple(discrete), delta, interval)
    acc = pld_privacy_accountant.PLDAccountant(value_discretization_interval=interval)
    for z, q, t in hist:
        ev: Any = dp_accounting.GaussianDpEvent(z)
        if q < 1:
            ev = dp_accounting.PoissonSampledDpEvent(q, ev)
        acc.compose(ev, int(t))
    return float(acc.get_epsilon(delta))


def _discrete_pld_epsilon(
    hist: tuple[tuple[float, float, int], ...],
    discrete: tuple[tuple[float, tuple[int, ...], int], ...],
    delta: float,
    interval: float,
) -> float:
    """The PLD composition with discrete-Gaussian releases, built from loss distributions directly (the
    accountant's events have no discrete Gaussian).  One release moves several coordinates, each noised on
    its own, so its loss is the sum of the coordinates' losses: dp-accounting's discrete-Gaussian loss
    distribution of each (integer sensitivity, pessimistic), composed; a record that moves fewer coordinates
    (a class with fewer than Q candidates) is dominated by this composition."""
    from dp_accounting.pld import privacy_loss_distribution as pld

    total = None
    for z, q, t in hist:
        one = pld.from_gaussian_mechanism(
            z, sampling_prob=q, value_discretization_interval=interval, pessimistic_estimate=True
        )
        total = _compose(total, one.self_compose(t))
    for sigma, moves, t in discrete:
        total = _compose(total, _discrete_release(sigma, moves, interval).self_compose(t))
    assert total is not None
    return float(total.get_epsilon_for_delta(delta))


@functools.lru_cache(maxsize=64)
def _discrete_release(sigma: float, moves: tuple[int, ...], interval: float) -> Any:
    from dp_accounting.pld import privacy_loss_distribution as pld

    total = None
    for m in moves:
        one = pld.from_discrete_gaussian_mechanism(
            sigma, sensitivity=m, value_discretization_interval=interval, pessimistic_estimate=True
        )
        total = _compose(total, one)
    return total


def _compose(a: Any, b: Any) -> Any:
    return b if a is None else a.compose(b)


@functools.lru_cache(maxsize=1024)
def epsilon_for(noise_multiplier: float, steps: int, delta: float, accountant: AccountantName = "pld") -> float:
    """Epsilon at ``delta`` after ``steps`` Gaussian releases with sigma/Delta = noise_multiplier."""
    if steps == 0:
        return 0.0
    if noise_multiplier <= 0:
        return math.inf
    if accountant == "gdp":
        return gdp_epsilon(gdp_mu(steps, noise_multiplier), delta)
    return pld_epsilon(((noise_multiplier, 1.0, steps),), delta)


def calibrate_noise_multiplier(
    epsilon: float, delta: float, steps: int, accountant: AccountantName = "pld", rtol: float = 1e-4
) -> float:
    """Smallest noise multiplier z = sigma/Delta such that ``steps`` releases are (epsilon, delta)-DP."""
    if epsilon <= 0:
        raise ConfigError("privacy.epsilon: must be > 0")
    if not 0 < delta < 1:
        raise ConfigError("privacy.delta: must be in (0, 1)")
    if steps < 1:
        raise ConfigError("rounds: at least one release is needed to calibrate noise")

    # GDP is exact for composed Gaussians, so it gives the answer cheaply; the PLD
    # (pessimistic discretisation) is then bisected in a narrow bracket around it.
    mu = _gdp_mu_for(epsilon, delta)
    z_gdp = math.sqrt(steps) / mu
    if accountant == "gdp":
        return z_gdp

    def ok(z: float) -> bool:
        return epsilon_for(z, steps, delta, accountant) <= epsilon

    lo, hi = z_gdp * 0.97, z_gdp * 1.03
    while not ok(hi):
        lo, hi = hi, hi * 1.1
    if ok(lo):
        return lo
    return smallest_passing(ok, lo, hi, rtol)


def smallest_passing(ok: Callable[[float], bool], lo: float, hi: float, rtol: float) -> float:
    """The one calibration search of the package (Gaussian releases here, DP-SGD in ``dpsgd.py``): the
    smallest noise multiplier z in [lo, hi], up to ``rtol``, with ``ok(z)`` (epsilon within budget), given
    ``ok(hi)`` and that ``ok`` is monotone in z.  It returns the upper end, so the z returned always
    satisfies the budget; bisection rather than a root finder because epsilon(z) from a discretised
    accountant is a step function."""
    while (hi - lo) / hi > rtol:
        mid = (lo + hi) / 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


def _gdp_mu_for(epsilon: float, delta: float) -> float:
    """The largest mu with delta_mu(epsilon) <= delta (delta_mu grows with mu)."""
    lo, hi = 1e-6, 1.0
    while gdp_delta(epsilon, hi) < delta:
        hi *= 2
        if hi > 1e4:
            raise ConfigError(f"privacy: epsilon={epsilon}, delta={delta} needs no noise; check the values")
    return float(brentq(lambda m: gdp_delta(epsilon, m) - delta, lo, hi, xtol=1e-12))


@dataclass(frozen=True)
class GaussianPlan:
    """The noise plan of a run: T releases of one Gaussian mechanism."""

    epsilon: float
    delta: float
    steps: int
    sensitivity: float
    noise_multiplier: float
    accountant: AccountantName
    grid_bits: int = 0  # > 0: discrete Gaussian releases on the grid 2^-grid_bits (``calibrate_discrete``)
    moves: tuple[float, ...] = ()  # a discrete release's coordinate moves (L2 norm: the sensitivity)

    @property
    def sigma(self) -> float:
        return self.noise_multiplier * self.sensitivity

    def epsilon_after(self, releases: int) -> float:
        if self.grid_bits and self.noise_multiplier > 0:
            return discrete_epsilon(self.noise_multiplier, self.moves, self.grid_bits, releases, self.delta)
        return epsilon_for(self.noise_multiplier, releases, self.delta, self.accountant)

    @classmethod
    def calibrate(
        cls, epsilon: float, delta: float, steps: int, sensitivity: float, accountant: AccountantName = "pld"
    ) -> GaussianPlan:
        """epsilon = inf gives noise multiplier 0: the releases are exact (a non-private baseline)."""
        z = 0.0 if math.isinf(epsilon) else calibrate_noise_multiplier(epsilon, delta, steps, accountant)
        return cls(epsilon, delta, steps, sensitivity, z, accountant)

    @classmethod
    def calibrate_discrete(
        cls, epsilon: float, delta: float, steps: int, moves: tuple[float, ...], base_bits: int, min_grid_steps: float
    ) -> GaussianPlan:
        """The plan of ``steps`` discrete-Gaussian releases that each move coordinates by ``moves``, on the grid
        2^-b: the statistic's own grid 2^-base_bits, refined until sigma spans ``min_grid_steps`` steps.

        The float Gaussian's noise multiplier is the starting point; the discrete loss distribution, whose
        pessimistic discretisation composes once per coordinate, needs up to a few tenths of a percent more
        (bench/diag_discrete_gaussian.py), found by the same bisection to within 0.1%, rounded up."""
        moves = tuple(float(m) for m in moves)
        sensitivity = math.sqrt(sum(m * m for m in moves))
        base = cls.calibrate(epsilon, delta, steps, sensitivity, "pld")
        if not base.is_private:
            return base
        # at least one bit: grid_bits 0 means the float Gaussian (Aug-PE's integer counts at a large sigma
        # would otherwise get float noise, and their ledger would read as a float run's on resume)
        bits = max(base_bits, 1, math.ceil(math.log2(min_grid_steps / base.sigma)))

        def ok(z: float) -> bool:
            return discrete_epsilon(z, moves, bits, steps, delta) <= epsilon

        lo, hi = base.noise_multiplier, base.noise_multiplier * 1.005
        while not ok(hi):
            lo, hi = hi, hi * 1.02
        z = lo if ok(lo) else smallest_passing(ok, lo, hi, 1e-3)
        return cls(epsilon, delta, steps, sensitivity, z, "pld", bits, moves)

    @property
    def is_private(self) -> bool:
        return self.noise_multiplier > 0


@functools.lru_cache(maxsize=256)
def discrete_epsilon(z: float, moves: tuple[float, ...], bits: int, releases: int, delta: float) -> float:
    """Epsilon of ``releases`` discrete releases at noise multiplier z (see ``calibrate_discrete``)."""
    if releases == 0:
        return 0.0
    scale = math.ldexp(1.0, bits)
    sigma = z * math.sqrt(sum(m * m for m in moves)) * scale
    return pld_epsilon((), delta, discrete=((sigma, tuple(int(round(m * scale)) for m in moves), releases),))
