"""Privacy spend as values: every method describes what it releases as a list of ``Event``.

An event is ``steps`` runs of a Gaussian mechanism with noise multiplier z = sigma / (L2 sensitivity),
each on a Poisson sample of the records at ``sample_rate`` (1.0: every record).  That one shape covers
WASP's votes (T events, q = 1), PEARL's schema, count and sketch releases (one event each, each with
its own z) and DP-fine-tuning (a label count, then DP-SGD steps at q = B/N).  Epsilon of a list of
events is one function (``epsilon_of``) whatever the method, so the ledger, the hard cap and the
privacy report are shared too.  The accountants are maintained libraries: dp-accounting's PLD (and the
exact Gaussian-DP formula as a cross-check) for the prompting and sketch methods, Opacus' PRV or RDP
for DP-SGD, as its users expect.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

Accountant = Literal["pld", "gdp", "prv", "rdp"]
ACCOUNTANTS: tuple[str, ...] = ("pld", "gdp", "prv", "rdp")
PLD_INTERVAL = 1e-4  # dp-accounting's value discretisation: pessimistic, tight to ~1e-3 in epsilon


@dataclass(frozen=True)
class Event:
    """``steps`` Gaussian releases at noise multiplier z, each on a Poisson sample at ``sample_rate``.

    ``mechanism``, ``reads`` and ``sensitivity`` describe the release for the privacy report; only
    ``noise_multiplier``, ``sample_rate`` and ``steps`` enter the accounting.
    """

    key: str
    noise_multiplier: float
    sample_rate: float = 1.0
    steps: int = 1
    sensitivity: float = 1.0
    mechanism: str = ""
    reads: str = ""

    @property
    def sigma(self) -> float:
        return self.noise_multiplier * self.sensitivity

    def with_steps(self, steps: int) -> Event:
        return Event(**{**asdict(self), "steps": steps})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Event:
        return cls(**d)

    def same_spend(self, other: Event) -> bool:
        """Same accounting values (the descriptions may be reworded between versions)."""
        return (
            self.key == other.key
            and math.isclose(self.noise_multiplier, other.noise_multiplier, rel_tol=1e-12, abs_tol=1e-15)
            and math.isclose(self.sample_rate, other.sample_rate, rel_tol=1e-12)
            and self.steps == other.steps
        )


def history(events: Iterable[Event]) -> tuple[tuple[float, float, int], ...]:
    """Events as an accountant history ((z, q, steps), ...): equal mechanisms merged, order kept."""
    merged: dict[tuple[float, float], int] = {}
    for e in events:
        if e.steps > 0:
            k = (float(e.noise_multiplier), float(e.sample_rate))
            merged[k] = merged.get(k, 0) + int(e.steps)
    return tuple((z, q, t) for (z, q), t in merged.items())


def epsilon_of(events: Sequence[Event], delta: float, accountant: Accountant = "pld") -> float:
    """Epsilon at ``delta`` of the composition of ``events`` (0 for none, inf if any has no noise)."""
    return _epsilon(history(events), float(delta), accountant)


@functools.lru_cache(maxsize=4096)
def _epsilon(hist: tuple[tuple[float, float, int], ...], delta: float, accountant: Accountant) -> float:
    if not hist:
        return 0.0
    if any(z <= 0 for z, _, _ in hist):
        return math.inf
    if accountant in ("prv", "rdp"):
        from dpsynth.privacy.dpsgd import history_epsilon

        return history_epsilon(list(hist), delta, accountant)
    if accountant == "gdp":
        if any(q < 1 for _, q, _ in hist):
            raise ValueError("the gdp accountant is exact for unsampled Gaussian releases only")
        from dpsynth.privacy.accountant import gdp_epsilon

        return gdp_epsilon(math.sqrt(sum(t / z**2 for z, _, t in hist)), delta)
    return pld_epsilon(hist, delta)


def pld_epsilon(hist: Sequence[tuple[float, float, int]], delta: float, interval: float | None = None) -> float:
    """dp-accounting's PLD accountant over (z, q, steps) entries (Poisson-subsampled where q < 1).

    The discretisation interval is ``PLD_INTERVAL`` unless the releases are so weakly noised that epsilon
    is large: the loss distribution then spans a range that grows like 1/z^2, and a fixed interval made a
    calibration at epsilon 50 take half a minute and at 1,000 many minutes.  For unsampled releases the
    exact Gaussian-DP epsilon gives the scale, and the interval grows with it above epsilon 10 (1e-3 at
    100).  The PLD stays pessimistic, so epsilon is still an upper bound; only its last digits move.
    """
    import dp_accounting
    from dp_accounting.pld import pld_privacy_accountant

    if interval is None:
        interval = PLD_INTERVAL
        if hist and all(q >= 1 for _, q, _ in hist) and all(z > 0 for z, _, _ in hist):
            from dpsynth.privacy.accountant import gdp_epsilon

            scale = gdp_epsilon(math.sqrt(sum(t / z**2 for z, _, t in hist)), delta)
            interval = PLD_INTERVAL * max(1.0, scale / 10) if math.isfinite(scale) else PLD_INTERVAL * 1e4
    acc = pld_privacy_accountant.PLDAccountant(value_discretization_interval=interval)
    for z, q, t in hist:
        if t <= 0:
            continue
        ev: Any = dp_accounting.GaussianDpEvent(z)
        if q < 1:
            ev = dp_accounting.PoissonSampledDpEvent(q, ev)
        acc.compose(ev, int(t))
    return float(acc.get_epsilon(delta))


def gdp_mu_of(events: Sequence[Event]) -> float | None:
    """mu of the exact Gaussian-DP composition (None when some event is subsampled)."""
    hist = history(events)
    if any(q < 1 for _, q, _ in hist) or any(z <= 0 for z, _, _ in hist):
        return None
    return math.sqrt(sum(t / z**2 for z, _, t in hist))
