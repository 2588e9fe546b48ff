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

from dpsynth.privacy.accountant import gdp_epsilon, pld_epsilon

Accountant = Literal["pld", "gdp", "prv", "rdp"]
ACCOUNTANTS: tuple[str, ...] = ("pld", "gdp", "prv", "rdp")


@dataclass(frozen=True)
class Event:
    """``steps`` Gaussian releases at noise multiplier z, each on a Poisson sample at ``sample_rate``.

    ``mechanism`` and ``reads`` describe the release for the privacy report.  A float Gaussian release is
    accounted by ``noise_multiplier``, ``sample_rate`` and ``steps``; a discrete one (``grid_bits`` > 0) also
    by ``sensitivity`` (its sigma in grid steps is z x sensitivity x 2^grid_bits) and ``moves``.
    """

    key: str
    noise_multiplier: float
    sample_rate: float = 1.0
    steps: int = 1
    sensitivity: float = 1.0
    mechanism: str = ""
    reads: str = ""
    # A discrete Gaussian on the grid 2^-grid_bits (0: the float Gaussian).  Its accounting needs how far
    # one record moves each coordinate it touches (``moves``, in the statistic's units; their L2 norm is
    # the sensitivity): the loss of the release is the sum of those coordinates' losses.
    grid_bits: int = 0
    moves: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "moves", tuple(float(m) for m in self.moves))  # a list from ledger.json
        if self.grid_bits and not self.moves:
            raise ValueError(f"event {self.key}: a discrete Gaussian release needs its coordinate moves")
        if any(not math.ldexp(m, self.grid_bits).is_integer() or m <= 0 for m in self.moves if self.grid_bits):
            raise ValueError(f"event {self.key}: each move must be a positive multiple of 2^-{self.grid_bits}")

    @property
    def sigma(self) -> float:
        return self.noise_multiplier * self.sensitivity

    @property
    def discrete(self) -> tuple[float, tuple[int, ...], int] | None:
        """(sigma in grid steps, each coordinate's move in grid steps, steps) of a discrete release, else None."""
        if not self.grid_bits:
            return None
        scale = math.ldexp(1.0, self.grid_bits)
        return self.sigma * scale, tuple(int(round(m * scale)) for m in self.moves), self.steps

    def with_steps(self, steps: int) -> Event:
        return Event(**{**asdict(self), "steps": steps})

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not self.grid_bits:  # a float Gaussian event is written as before discrete events existed
            d.pop("grid_bits")
            d.pop("moves")
        else:
            d["moves"] = list(self.moves)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Event:
        return cls(**d)

    def same_spend(self, other: Event) -> bool:
        """Same accounting values (the descriptions may be reworded between versions).

        The sensitivity counts too: the mechanism draws noise sigma = z x sensitivity from the stored event,
        so a resume whose config changed the sensitivity (WASP's far votes, q, the method) at the same z
        would add too little noise for the epsilon the ledger records."""
        return (
            self.key == other.key
            and math.isclose(self.noise_multiplier, other.noise_multiplier, rel_tol=1e-12, abs_tol=1e-15)
            and math.isclose(self.sample_rate, other.sample_rate, rel_tol=1e-12)
            and math.isclose(self.sensitivity, other.sensitivity, rel_tol=1e-9)
            and self.steps == other.steps
            and self.grid_bits == other.grid_bits
            and len(self.moves) == len(other.moves)
            and all(math.isclose(a, b, rel_tol=1e-12) for a, b in zip(self.moves, other.moves, strict=True))
        )


def history(events: Iterable[Event]) -> tuple[tuple[float, float, int], ...]:
    """The float-Gaussian events as an accountant history ((z, q, steps), ...): equal mechanisms merged,
    order kept.  Discrete ones are in ``discrete_history``."""
    merged: dict[tuple[float, float], int] = {}
    for e in events:
        if e.steps > 0 and not e.grid_bits:
            k = (float(e.noise_multiplier), float(e.sample_rate))
            merged[k] = merged.get(k, 0) + int(e.steps)
    return tuple((z, q, t) for (z, q), t in merged.items())


def discrete_history(events: Iterable[Event]) -> tuple[tuple[float, tuple[int, ...], int], ...]:
    """The discrete-Gaussian events as ((sigma in grid steps, moves in grid steps, steps), ...), merged."""
    merged: dict[tuple[float, tuple[int, ...]], int] = {}
    for e in events:
        d = e.discrete
        if d is not None and e.steps > 0:
            if e.sample_rate < 1:
                raise ValueError(f"event {e.key}: a subsampled discrete Gaussian is not supported")
            merged[d[:2]] = merged.get(d[:2], 0) + d[2]
    return tuple((s, m, t) for (s, m), t in merged.items())


def epsilon_of(events: Sequence[Event], delta: float, accountant: Accountant = "pld") -> float:
    """Epsilon at ``delta`` of the composition of ``events`` (0 for none, inf if any has no noise)."""
    discrete = discrete_history(events)
    if discrete and accountant != "pld":
        raise ValueError(f"discrete Gaussian releases are accounted by the pld accountant, not {accountant}")
    return _epsilon(history(events), float(delta), accountant, discrete)


@functools.lru_cache(maxsize=4096)
def _epsilon(
    hist: tuple[tuple[float, float, int], ...],
    delta: float,
    accountant: Accountant,
    discrete: tuple[tuple[float, tuple[int, ...], int], ...] = (),
) -> float:
    if any(s <= 0 for s, _, _ in discrete) or any(z <= 0 for z, _, _ in hist):
        return math.inf
    if discrete:
        return pld_epsilon(hist, delta, discrete=discrete)
    if not hist:
        return 0.0
    if accountant in ("prv", "rdp"):
        from dpsynth.privacy.dpsgd import history_epsilon

        return history_epsilon(list(hist), delta, accountant)
    if accountant == "gdp":
        if any(q < 1 for _, q, _ in hist):
            raise ValueError("the gdp accountant is exact for unsampled Gaussian releases only")
        return gdp_epsilon(math.sqrt(sum(t / z**2 for z, _, t in hist)), delta)
    return pld_epsilon(hist, delta)


def gdp_mu_of(events: Sequence[Event]) -> float | None:
    """mu of the exact Gaussian-DP composition (None when some event is subsampled).  A discrete event
    counts as the float Gaussian at its sigma: a cross-check of the discrete accounting, not a bound."""
    hist = history(events) + tuple((e.noise_multiplier, 1.0, e.steps) for e in events if e.grid_bits and e.steps)
    if any(q < 1 for _, q, _ in hist) or any(z <= 0 for z, _, _ in hist):
        return None
    return math.sqrt(sum(t / z**2 for z, _, t in hist))
