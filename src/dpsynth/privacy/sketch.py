"""PEARL's private releases (Liew et al., ICLR 2022): with ``private_tables.py`` (the records' handle),
every line of PEARL that reads private data.

PEARL reads the private table once and releases noisy statistics; the generator is then
trained on the release only (post-processing, no further privacy cost).  The releases:

``counts``  (always)
    The number of records of each class, n_c (the total n when unlabelled).  Adding or
    removing one record changes one count by 1: L2 sensitivity 1.  n is private under
    add/remove adjacency (docs/privacy.md), so it is released like everything else; it normalises
    the sketch, sets the class proportions of the output and picks m (``choose_m``).

``sketch``  (always)
    The empirical characteristic function (ECF) of each class at m public random
    frequencies t_1..t_m.  Record x (already encoded into [0, 1]^D by a public schema)
    has the random-Fourier-feature vector

        f(x) = (cos(t_1.x), ..., cos(t_m.x), sin(t_1.x), ..., sin(t_m.x)) / sqrt(m),

    whose L2 norm is *exactly* 1 (cos^2 + sin^2 = 1 per frequency).  The paper releases
    the ECF *mean* (1/n) sum_j f(x_j) with sensitivity 2 sqrt(k)/n, which holds under
    replace-one adjacency with a public n.  Here n is private, so we release the per-class
    *sums* (the add/remove-safe formulation)

        V = (S_1, ..., S_C),   S_c = sum_{j: y_j = c} f(x_j).

    Adding or removing one record (x, y) changes exactly S_y by f(x), so
    ||V(D) - V(D')||_2 = ||f(x)||_2 = 1 for every add/remove-adjacent pair: the declared L2
    sensitivity is 1 (``SKETCH_SENSITIVITY``), whatever m, D or the data.  The ECF of class c
    is then S_c / n_c-hat with the released count (post-processing).

``schema.kinds`` / ``schema.bounds`` / ``schema.categories`` (only when the user does not
declare the schema; "never infer bounds from private data for free")
    kinds: per column, counts of values that are integers / other numbers / text; each
    record adds 1 to one of the three counts of each of the d columns -> sensitivity sqrt(d).
    bounds: per numeric column, a histogram on a fixed public geometric grid (octaves
    +-2^k and a zero bin); each record adds 1 to one bin of each column -> sqrt(d).
    categories: per categorical column, the Gaussian sparse histogram with a threshold
    (the set of observed values is private: only values whose noisy count clears
    tau = 1 + sigma * Phi^-1(1 - delta_sel / d) are released).  The dense part has
    sensitivity sqrt(d); a value held by one record only is released with probability at
    most delta_sel / d per column, which is added to delta (explicit delta split).

Budget: all releases are Gaussian mechanisms.  A composition of Gaussian mechanisms with
noise multipliers z_i (sigma_i / Delta_i) is exactly a Gaussian mechanism with
1/z^2 = sum_i 1/z_i^2 (mu-GDP composition is exact for Gaussians).  ``plan_budget`` gives
release i the noise multiplier z_i = z_R * sqrt(1 / (R w_i)) for its share w_i of mu^2
(sum w_i = 1), where z_R is the shared accountant's calibration of R *equal* releases
(``GaussianPlan.calibrate``); the releases compose to the same privacy curve, and the plan
checks that the accountant's epsilon of the heterogeneous composition (``events.epsilon_of``,
the function the ledger uses) fits the target.  Each release is then one ``Event`` of the run's
ledger with its *own* noise multiplier, so an interrupted run is charged exactly for the
releases it drew.  ``composed_epsilon`` is an independent cross-check with dp-accounting's PLD
over a ``ComposedDpEvent``.

Missing values: a numeric column's missing or non-numeric value (NaN after parsing) adds
nothing to that column's bounds histogram; each record still adds at most 1 per column, so the
sensitivities above hold whatever the data holds.

Pre-noise statistics exist only inside the ``release_*`` functions (and the module-private
``_sketch_vector`` that tests use to check the sensitivity); they are never returned,
written or logged.  Noise comes from ``mechanisms.secure_rng`` (ChaCha20 keyed from the OS CSPRNG).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dpsynth.errors import ConfigError
from dpsynth.privacy.accountant import AccountantName, GaussianPlan, gdp_epsilon
from dpsynth.privacy.events import Event, epsilon_of
from dpsynth.privacy.mechanisms import add_gaussian_noise, secure_rng

# ---------------------------------------------------------------------- public frequency draw


def random_frequencies(dim: int, m: int, bandwidth: float, spread: float, seed: int | None) -> np.ndarray:
    """m frequencies t_j = g_j / h_j with g_j ~ N(0, I_dim) and bandwidths h_j log-uniform in
    [bandwidth / spread, bandwidth * spread] (a scale mixture of Gaussian kernels).

    Data-independent: drawn from a public seed, released with the sketch.  Returns an
    (m, dim + 1) array: columns 0..dim-1 are t_j, the last column is the public h_j that the
    adversarial re-weighting conditions on.
    """
    if dim < 1 or m < 1:
        raise ValueError("dim and m must be >= 1")
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((m, dim))
    u = rng.uniform(-1.0, 1.0, size=m) if spread > 1 else np.zeros(m)
    h = bandwidth * np.power(spread, u)
    return np.concatenate([g / h[:, None], h[:, None]], axis=1)


def fourier_features(x: np.ndarray, freqs: np.ndarray) -> np.ndarray:
    """f(x) = (cos(T x), sin(T x)) / sqrt(m) per row; each row has L2 norm exactly 1."""
    t = freqs[:, :-1]
    proj = np.asarray(x, dtype=np.float64) @ t.T
    m = t.shape[0]
    return np.concatenate([np.cos(proj), np.sin(proj)], axis=1) / math.sqrt(m)


SKETCH_SENSITIVITY = 1.0  # add/remove: ||f(x)||_2 = 1 (module docstring)
COUNTS_SENSITIVITY = 1.0  # add/remove: one class count moves by 1


def choose_m(noisy_counts: np.ndarray, sigma: float, ratio: float, m_min: int, m_max: int) -> int:
    """The number of frequencies from the released counts (post-processing): the largest m with
    per-component ECF noise sigma * sqrt(m) / n_bar <= ratio, clamped to [m_min, m_max].

    The ECF estimate S_c / n_c has noise of standard deviation sigma * sqrt(m) / n_c in each of
    its 2m components (unit-modulus scale) while the signal is at most 1; more frequencies carry
    more information but more noise.  n_bar is the mean of the (clipped) noisy class counts.
    """
    if sigma <= 0:
        return m_max
    n_bar = float(np.mean(np.clip(noisy_counts, 1.0, None)))
    m = math.floor((ratio * n_bar / sigma) ** 2)
    return int(min(max(m, m_min), m_max))


# ---------------------------------------------------------------------- the sketch release


@dataclass(frozen=True)
class NoisySketch:
    """A released (noised) PEARL sketch: safe to persist, log and train on.

    ``sums[c]`` is the noisy S_c (length 2m), ``counts[c]`` the released noisy class count,
    ``freqs`` the public frequencies (m, D + 1), ``sigma`` / ``count_sigma`` their noise.
    """

    freqs: np.ndarray
    sums: np.ndarray
    counts: np.ndarray
    sigma: float
    count_sigma: float
    classes: tuple[str, ...]

    sensitivity = SKETCH_SENSITIVITY

    @property
    def m(self) -> int:
        return int(self.freqs.shape[0])

    @property
    def dim(self) -> int:
        return int(self.freqs.shape[1] - 1)

    def class_shares(self) -> np.ndarray:
        """Class proportions from the noisy counts (negatives clipped; uniform if nothing is left)."""
        c = np.clip(self.counts, 0.0, None)
        return c / c.sum() if c.sum() > 0 else np.full(len(c), 1.0 / len(c))

    def ecf(self, min_count: float = 1.0) -> np.ndarray:
        """Per-class ECF estimate (C, 2m) in unit-modulus scale: Phi_c(t_j) = (cos part, sin part).

        S_c / max(n_c, min_count) * sqrt(m); each frequency's modulus is projected onto the unit
        disc, which every characteristic function satisfies (post-processing).
        """
        m = self.m
        n = np.maximum(self.counts, min_count)[:, None]
        phi = self.sums / n * math.sqrt(m)
        re, im = phi[:, :m], phi[:, m:]
        mod = np.maximum(np.sqrt(re**2 + im**2), 1.0)
        return np.concatenate([re / mod, im / mod], axis=1)

    def to_npz(self) -> dict[str, Any]:
        return {
            "freqs": self.freqs,
            "sums": self.sums,
            "counts": self.counts,
            "sigma": np.float64(self.sigma),
            "count_sigma": np.float64(self.count_sigma),
            "classes": np.array(self.classes, dtype=str),
        }

    @classmethod
    def from_npz(cls, z: Any) -> NoisySketch:
        return cls(
            np.asarray(z["freqs"], dtype=np.float64),
            np.asarray(z["sums"], dtype=np.float64),
            np.asarray(z["counts"], dtype=np.float64),
            float(z["sigma"]),
            float(z["count_sigma"]),
            tuple(str(c) for c in z["classes"]),
        )

    def __repr__(self) -> str:
        return f"NoisySketch(m={self.m}, dim={self.dim}, classes={len(self.classes)}, sigma={self.sigma:.4g})"


def _sketch_vector(x: np.ndarray, y: np.ndarray, n_classes: int, freqs: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """The pre-noise released vector V = (S_1, ..., S_C), flattened.

    Module-private: only ``release_sketch`` (and the sensitivity tests) call it.  Chunked so
    memory stays O(chunk * m) for any number of records.
    """
    m = freqs.shape[0]
    sums = np.zeros((n_classes, 2 * m), dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    for start in range(0, len(x), chunk):
        np.add.at(sums, y[start : start + chunk], fourier_features(x[start : start + chunk], freqs))
    return sums.ravel()


def release_counts(
    y: np.ndarray, n_classes: int, *, noise_multiplier: float, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Noisy class counts (sensitivity 1 under add/remove)."""
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=n_classes).astype(np.float64)
    noisy = add_gaussian_noise(counts, noise_multiplier * COUNTS_SENSITIVITY, rng or secure_rng())
    del counts
    return noisy


def release_sketch(
    x: np.ndarray,
    y: np.ndarray,
    classes: Sequence[str],
    freqs: np.ndarray,
    *,
    noise_multiplier: float,
    counts: np.ndarray,
    count_sigma: float,
    rng: np.random.Generator | None = None,
) -> NoisySketch:
    """The Gaussian mechanism on the per-class ECF sums: PEARL's one read of the records' values.

    ``x``: (n, D) private records encoded by the public schema into [0, 1]^D; ``y``: class index
    per record (0 when unlabelled); ``counts``/``count_sigma``: the *already released* noisy
    counts, stored alongside.  ``noise_multiplier`` = sigma / sensitivity from the plan (0 only
    for the non-private epsilon = inf reference runs of the benchmark).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != freqs.shape[1] - 1:
        raise ValueError("x must be (n, D) with D matching the frequencies")
    n_classes = len(classes)
    sigma = noise_multiplier * SKETCH_SENSITIVITY
    v = _sketch_vector(x, y, n_classes, freqs)
    noisy = add_gaussian_noise(v, sigma, rng or secure_rng())
    del v  # the pre-noise vector never leaves this function
    return NoisySketch(
        np.array(freqs, dtype=np.float64),
        noisy.reshape(n_classes, -1),
        np.asarray(counts, dtype=np.float64),
        float(sigma),
        float(count_sigma),
        tuple(classes),
    )


# ---------------------------------------------------------------------- schema releases

_INT = re.compile(r"[+-]?\d+")
_ZERO_PADDED = re.compile(r"[+-]?0\d+")  # 02139, 007: a code written with its zeros, not a quantity
KINDS = ("integer", "float", "text")


def zero_padded(s: str) -> bool:
    """An integer written with leading zeros (02139, -007): a code whose zeros a number would drop."""
    return _ZERO_PADDED.fullmatch(s.strip()) is not None


def value_kind(s: str) -> int:
    """0 integer literal, 1 other finite number, 2 text, -1 missing (empty).

    A zero-padded integer (a zip code "02139", an ID "007") counts as text: read as a number it would
    lose its leading zeros in the output, so a column mostly written that way comes out categorical.
    """
    s = s.strip()
    if not s:
        return -1
    if zero_padded(s):
        return 2
    if _INT.fullmatch(s):
        return 0
    try:
        v = float(s)
    except ValueError:
        return 2
    return 1 if math.isfinite(v) else 2


def release_column_kinds(
    columns: Sequence[Sequence[str]], *, noise_multiplier: float, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Noisy (d, 3) counts of integer / float / text values per column (sensitivity sqrt(d))."""
    d = len(columns)
    counts = np.zeros((d, 3), dtype=np.float64)
    for j, col in enumerate(columns):
        k = np.fromiter((value_kind(str(s)) for s in col), dtype=np.int64, count=len(col))
        counts[j] = np.bincount(k[k >= 0], minlength=3)[:3]
    sigma = noise_multiplier * math.sqrt(d)
    noisy = add_gaussian_noise(counts, sigma, rng or secure_rng())
    del counts
    return noisy


GEO_MIN_EXP = -20  # |v| < 2^-20 -> the zero bin
GEO_MAX_EXP = 40  # |v| >= 2^40 is clipped into the top bin


def geometric_edges() -> np.ndarray:
    """Public bin edges: -2^40 .. -2^-20, 0 (the zero bin spans +-2^-20), 2^-20 .. 2^40 by octaves."""
    pos = 2.0 ** np.arange(GEO_MIN_EXP, GEO_MAX_EXP + 1)
    return np.concatenate([-pos[::-1], pos])


def geometric_bin(values: np.ndarray) -> np.ndarray:
    """Bin index on ``geometric_edges``: bins 0..59 negative octaves, 60 the zero bin, 61..120 positive."""
    v = np.asarray(values, dtype=np.float64)
    n_oct = GEO_MAX_EXP - GEO_MIN_EXP
    a = np.abs(v)
    e = np.frexp(np.where(a > 0, a, 1.0))[1].astype(np.int64) - 1  # exact floor(log2 |v|)
    e = np.clip(e, GEO_MIN_EXP, GEO_MAX_EXP - 1) - GEO_MIN_EXP  # 0..n_oct-1
    idx = np.where(v > 0, n_oct + 1 + e, n_oct - 1 - e)
    return np.where(a < 2.0**GEO_MIN_EXP, n_oct, idx)


def geometric_bin_range(i: int) -> tuple[float, float]:
    n_oct = GEO_MAX_EXP - GEO_MIN_EXP
    if i == n_oct:
        return -(2.0**GEO_MIN_EXP), 2.0**GEO_MIN_EXP
    if i > n_oct:
        e = i - n_oct - 1 + GEO_MIN_EXP
        return 2.0**e, 2.0 ** (e + 1)
    e = n_oct - 1 - i + GEO_MIN_EXP
    return -(2.0 ** (e + 1)), -(2.0**e)


N_GEO_BINS = 2 * (GEO_MAX_EXP - GEO_MIN_EXP) + 1


def release_bounds(
    columns: Sequence[np.ndarray],
    *,
    noise_multiplier: float,
    rng: np.random.Generator | None = None,
    false_bin_rate: float = 0.05,
) -> list[tuple[float, float, bool]]:
    """DP bounds per numeric column from a noisy histogram on the public geometric grid, each with whether
    any bin cleared the threshold (False: the bounds are the argmax bin of noise, a guess to be warned of).

    Each record adds 1 to one bin of each of the d columns: sensitivity sqrt(d).  A bin counts
    as occupied when its noisy count clears sigma * Phi^-1(1 - false_bin_rate / (d * bins)), so
    that with probability >= 1 - false_bin_rate no empty bin anywhere looks occupied; the
    bounds are the outer edges of the lowest and highest occupied bins (the argmax bin when none
    clears the threshold).  Values outside are clipped at encoding time.  A missing value (NaN or
    infinite: an empty or non-numeric entry of a numeric column) adds to no bin, a per-record rule
    that keeps the sensitivity at sqrt(d).
    """
    from scipy.stats import norm

    d = len(columns)
    if d == 0:
        return []
    hist = np.zeros((d, N_GEO_BINS), dtype=np.float64)
    for j, col in enumerate(columns):
        v = np.asarray(col, dtype=np.float64)
        hist[j] = np.bincount(geometric_bin(v[np.isfinite(v)]), minlength=N_GEO_BINS)
    sigma = noise_multiplier * math.sqrt(d)
    noisy = add_gaussian_noise(hist, sigma, rng or secure_rng())
    del hist
    tau = sigma * float(norm.isf(false_bin_rate / (d * N_GEO_BINS))) if sigma > 0 else 0.5
    out = []
    for j in range(d):
        occ = np.flatnonzero(noisy[j] > tau)
        cleared = bool(occ.size)
        if not cleared:
            occ = np.array([int(np.argmax(noisy[j]))])
        lo = geometric_bin_range(int(occ[0]))[0]
        hi = geometric_bin_range(int(occ[-1]))[1]
        # a column of non-negative values keeps 0 as its floor (the zero bin reaches down to -2^-20)
        if int(occ[0]) == (N_GEO_BINS - 1) // 2:
            lo = 0.0
        out.append((float(lo), float(hi), cleared))
    return out


def category_threshold(sigma: float, delta_sel: float, d: int) -> float:
    """tau = 1 + sigma * Phi^-1(1 - delta_sel / d): a value held by one record passes w.p. <= delta_sel/d."""
    from scipy.stats import norm

    return 1.0 + sigma * float(norm.isf(delta_sel / d))


def release_categories(
    columns: Sequence[Sequence[str]],
    *,
    noise_multiplier: float,
    delta_sel: float,
    max_categories: int,
    rng: np.random.Generator | None = None,
) -> list[list[str]]:
    """The Gaussian sparse histogram with a threshold: DP sets of categories per column.

    Only values whose noisy count clears ``category_threshold`` are released (at most
    ``max_categories`` per column, the largest noisy counts, then sorted); the counts stay inside.
    """
    d = len(columns)
    if d == 0:
        return []
    rng = rng or secure_rng()
    sigma = noise_multiplier * math.sqrt(d)
    tau = category_threshold(sigma, delta_sel, d)
    out = []
    for col in columns:
        values, counts = np.unique(np.asarray([str(s) for s in col], dtype=object), return_counts=True)
        noisy = add_gaussian_noise(counts.astype(np.float64), sigma, rng)
        keep = np.flatnonzero(noisy > tau)
        keep = keep[np.argsort(-noisy[keep])][:max_categories]
        out.append(sorted(str(values[i]) for i in keep))
        del counts, noisy
    return out


# ---------------------------------------------------------------------- budget


@dataclass(frozen=True)
class Release:
    """One planned Gaussian release: its share of mu^2, sensitivity and noise."""

    name: str
    reads: str
    sensitivity: float
    sensitivity_derivation: str
    share: float
    noise_multiplier: float

    @property
    def sigma(self) -> float:
        return self.noise_multiplier * self.sensitivity


@dataclass(frozen=True)
class BudgetPlan:
    """The plan of a PEARL run: one Gaussian release per entry, each with its own noise multiplier.

    ``plan`` is the shared accountant's calibration of R equal releases the split starts from; its
    delta is the Gaussian part of privacy.delta (what the ledger composes at).
    """

    plan: GaussianPlan
    releases: tuple[Release, ...]
    delta_selection: float  # delta spent by the category threshold (0 without category discovery)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def delta_gaussian(self) -> float:
        return self.plan.delta

    @property
    def delta_total(self) -> float:
        return self.plan.delta + self.delta_selection

    def get(self, name: str) -> Release:
        for r in self.releases:
            if r.name == name:
                return r
        raise KeyError(name)


def plan_budget(
    epsilon: float,
    delta: float,
    releases: Sequence[tuple[str, str, float, str, float]],
    *,
    accountant: AccountantName = "pld",
    delta_selection: float = 0.0,
) -> BudgetPlan:
    """Noise for ``releases`` = (name, reads, sensitivity, derivation, share): one noise multiplier each.

    Shares are fractions of mu^2 (they are normalised to sum to 1).  The shared accountant
    calibrates R equal releases to (epsilon, delta - delta_selection); release i then gets
    noise multiplier z_R * sqrt(1 / (R * share_i)), which composes to exactly the same
    Gaussian privacy curve: sum_i share_i R / z_R^2 = R / z_R^2.  The accountant's epsilon of
    the heterogeneous composition is then checked against the target (the ledger refuses a plan
    above it): the PLD discretisation of unequal events can differ from the equal ones' in the
    last digits, and if it does the noise is raised by 0.001% steps until it fits.
    """
    if not releases:
        raise ValueError("at least one release")
    if not 0 <= delta_selection < delta:
        raise ConfigError("pearl.category_delta_share: the category threshold must leave part of privacy.delta")
    total = sum(r[4] for r in releases)
    if total <= 0 or any(r[4] <= 0 for r in releases):
        raise ValueError("shares must be > 0")
    r_count = len(releases)
    plan = GaussianPlan.calibrate(epsilon, delta - delta_selection, r_count, 1.0, accountant)
    weights = [r[4] / total for r in releases]
    zs = [plan.noise_multiplier / math.sqrt(r_count * w) for w in weights]
    if math.isfinite(epsilon):
        for _ in range(5000):  # at most +5%: never reached in practice (tests/test_pearl.py)
            got = epsilon_of([Event(r[0], z) for r, z in zip(releases, zs, strict=True)], plan.delta, accountant)
            if got <= epsilon:  # not above it at all: the report rounds epsilon up (2.0000000149 read "2.001")
                break
            zs = [z * (1 + 1e-5) for z in zs]
        else:
            raise ValueError("could not fit the heterogeneous plan to the target epsilon")
    out = [
        Release(name, reads, sens, why, w, z)
        for (name, reads, sens, why, _), w, z in zip(releases, weights, zs, strict=True)
    ]
    return BudgetPlan(plan, tuple(out), delta_selection)


def composed_epsilon(noise_multipliers: Sequence[float], delta: float) -> dict[str, float]:
    """Epsilon of the heterogeneous composition: dp-accounting PLD over a ComposedDpEvent, and exact GDP."""
    import dp_accounting
    from dp_accounting.pld import pld_privacy_accountant

    event = dp_accounting.ComposedDpEvent([dp_accounting.GaussianDpEvent(z) for z in noise_multipliers])
    acc = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-4)
    acc.compose(event)
    mu = math.sqrt(sum(1.0 / z**2 for z in noise_multipliers))
    return {"pld": float(acc.get_epsilon(delta)), "gdp": gdp_epsilon(mu, delta), "mu": mu}
