"""privacy.json: the guarantee, the adjacency, every mechanism that touched private data.

One builder for every method, from the run's ledger: the mechanisms are the ledger's planned events
grouped by mechanism, their counts what was released, epsilon the ledger's composition of them.
Anything not listed under ``mechanisms`` never read private data.  The report also lists what dpsynth
treats as public (declared by the user, not read from the data), because spending privacy on "public"
facts that are in fact private is a classic failure, and the input domain the guarantee is stated over
(records that fail a per-record check are refused before any mechanism runs).
"""

from __future__ import annotations

import importlib.metadata as md
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dpsynth.privacy.accountant import gdp_epsilon
from dpsynth.privacy.events import Event, discrete_history, epsilon_of, gdp_mu_of, history, pld_epsilon
from dpsynth.privacy.ledger import COMPOSITION_NOTE, Ledger
from dpsynth.privacy.rounding import round_up

ADJACENCY = "add/remove one private record (one (text, label) pair)"
NOT_PRIVATE = (
    "NONE: epsilon = inf, the votes were released without noise. This output is NOT differentially private "
    "and must be handled like the private data; it is a research baseline (the non-private ceiling)."
)
SECURE_NUMPY = "ChaCha20 (randomgen) keyed with 256 bits from the OS CSPRNG (secrets), fresh per release"
DISCRETE_SAMPLER = "an exact discrete Gaussian sampler on rationals (Canonne, Kamath and Steinke 2020)"
SPLIT_COMPOSITION = (
    "basic composition: the last release's parameters were chosen from the releases before it, so each release "
    "is accounted alone at its share of delta (parts): the ones before it at their own epsilon, the last at the "
    "epsilon left to it, fixed in advance, which its chosen plan stays within; the epsilons and deltas add up, "
    "which holds for mechanisms chosen adaptively with their (epsilon, delta) fixed in advance"
)
DOMAIN_NOTE = (
    "The guarantee is stated over datasets whose records all pass these per-record checks (the input domain, "
    "which is public). Input that fails one is refused before any mechanism reads the data, with an error "
    "shown on the console only (never written to the run directory); an output therefore also tells that "
    "every record passed them."
)


# the fields every mechanism entry has since privacy.json took its one shape (validate_report checks them)
MECHANISM_FIELDS = ("reads", "sensitivity_l2", "sigma", "noise_multiplier", "count", "planned_count")


class MechanismEntry(BaseModel):
    """One mechanism that read private data: what it read, its sensitivity and noise, how often it ran.

    ``mechanism_entries`` writes every field (``validate_report`` checks); an older privacy.json may name
    fewer, and the report shows those it has (``fields``).
    """

    model_config = ConfigDict(extra="allow")
    name: str
    reads: str | None = None
    sensitivity_l2: float | None = Field(None, ge=0)
    sigma: float | list[float] | None = None
    noise_multiplier: float | list[float] | None = None
    count: int | None = Field(None, ge=0)
    planned_count: int | None = Field(None, ge=0)

    def fields(self) -> dict[str, Any]:
        """The fields this entry states (its method's own facts included), in the file's order."""
        return self.model_dump(exclude_unset=True)


class CrossCheck(BaseModel):
    model_config = ConfigDict(extra="allow")
    epsilon_at_delta: float


class AccountantSection(BaseModel):
    """The accountant; ``epsilon_at_delta`` is always written (an older file may have named it only)."""

    model_config = ConfigDict(extra="allow")
    name: str
    epsilon_at_delta: float | None = Field(None, ge=0)
    gdp_crosscheck: CrossCheck | None = None
    composition: str | None = None  # set when the releases were accounted apart and added (SPLIT_COMPOSITION)
    parts: list[dict[str, Any]] = Field(default_factory=list)  # then: {"release", "delta", "epsilon"} each


class DomainSection(BaseModel):
    """The input domain: the public per-record checks every private record passed."""

    model_config = ConfigDict(extra="allow")
    checks: list[str] = Field(default_factory=list)
    note: str | None = None


class PrivacyReport(BaseModel):
    """The one shape of privacy.json, for every method (the HTML report and the tests read it).

    ``load`` / ``read`` also read the privacy.json of an earlier dpsynth version (``_upgrade``).
    """

    model_config = ConfigDict(extra="allow")
    guarantee: str
    differentially_private: bool
    epsilon: float = Field(ge=0)
    delta: float = Field(ge=0, lt=1)
    adjacency: str
    method: str
    complete: bool
    mechanisms: list[MechanismEntry]
    accountant: AccountantSection | None
    public_inputs: dict[str, Any]
    epsilon_target: float | None = None
    domain: DomainSection | None = None
    composition: str | None = None
    caveat: str | None = None
    post_processing: list[str] = Field(default_factory=list)
    never_written: str | None = None
    released_exactly: str | None = None

    @classmethod
    def load(cls, path: str | Path) -> PrivacyReport:
        """privacy.json at ``path``, of this or an earlier version (``read``); OSError / ValueError otherwise."""
        return cls.read(json.loads(Path(path).read_text(encoding="utf-8")))

    @classmethod
    def read(cls, raw: Any) -> PrivacyReport:
        """The report parsed from privacy.json's JSON: the current shape, else an earlier version's upgraded
        to it; a ValueError (one line) when it is neither."""
        try:
            return cls.model_validate(raw)
        except ValidationError:
            pass
        try:
            return cls.model_validate(_upgrade(raw))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(x) for x in err["loc"]) or "privacy.json"
            raise ValueError(f"{where}: {err['msg']}") from None


def _upgrade(raw: Any) -> dict[str, Any]:
    """An earlier privacy.json in the current shape: what older versions left out filled in from what they
    wrote (mechanisms listed by name, the accountant as a string, checks as one string); epsilon and delta
    must be there.  Nothing is invented: a value they did not state stays unset (or an empty default)."""
    if not isinstance(raw, dict):
        raise ValueError(f"privacy.json: a JSON object is expected, got {type(raw).__name__}")
    eps = raw.get("epsilon")
    out: dict[str, Any] = dict(raw)
    out.setdefault("guarantee", "")
    if not isinstance(raw.get("differentially_private"), bool) and isinstance(eps, (int, float)):
        out["differentially_private"] = math.isfinite(eps)
    out["adjacency"] = raw.get("adjacency") or "add/remove one private record"
    out["method"] = raw.get("method") or ""
    out["complete"] = raw.get("complete") is not False
    mechs = raw.get("mechanisms")
    out["mechanisms"] = [
        {"name": m} if isinstance(m, str) else m
        for m in (mechs if isinstance(mechs, list) else [])
        if isinstance(m, (str, dict))
    ]
    acct = raw.get("accountant")
    out["accountant"] = {"name": acct} if isinstance(acct, str) else acct if isinstance(acct, dict) else None
    if not isinstance(raw.get("public_inputs"), dict):
        out["public_inputs"] = {}
    domain = raw.get("domain")
    if isinstance(domain, dict) and isinstance(domain.get("checks"), str):
        out["domain"] = {**domain, "checks": [domain["checks"]]}
    elif not isinstance(domain, dict):
        out.pop("domain", None)
    pp = raw.get("post_processing")
    if pp is not None:
        out["post_processing"] = [str(i) for i in (pp if isinstance(pp, list) else [pp])]
    return out


def validate_report(report: dict[str, Any]) -> dict[str, Any]:
    """Check ``report`` has the one privacy.json shape (a pydantic ValidationError or ValueError otherwise)
    and every field a writer states today (``MECHANISM_FIELDS``, the accountant's epsilon); returns it."""
    typed = PrivacyReport.model_validate(report)
    if report["mechanisms"] and report["differentially_private"] and report["accountant"] is None:
        raise ValueError("privacy.json: a DP report that lists mechanisms must name its accountant")
    for m in typed.mechanisms:
        missing = [f for f in MECHANISM_FIELDS if f not in m.model_fields_set]
        if missing:
            raise ValueError(f"privacy.json: mechanism {m.name!r} does not state {', '.join(missing)}")
    if typed.accountant is not None and typed.accountant.epsilon_at_delta is None:
        raise ValueError("privacy.json: the accountant must state its epsilon_at_delta")
    return report


def _version(pkg: str) -> str:
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return "unknown"


def accountant_name(accountant: str) -> str:
    return {
        "pld": f"dp-accounting {_version('dp-accounting')} PLD",
        "gdp": "Gaussian DP (exact formula)",
        "prv": f"Opacus {_version('opacus')} PRV accountant",
        "rdp": f"Opacus {_version('opacus')} RDP accountant",
    }.get(accountant, accountant)


def mechanism_entries(ledger: Ledger, details: Mapping[str, Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One entry per mechanism (events grouped by name, in plan order): sensitivity, noise, count."""
    groups: dict[str, list[Event]] = {}
    for e in ledger.planned:
        groups.setdefault(e.mechanism or e.key, []).append(e)
    out = []
    for name, events in groups.items():
        first = events[0]
        zs = {e.noise_multiplier for e in events}
        entry: dict[str, Any] = {
            "name": name,
            "reads": first.reads,
            "sensitivity_l2": first.sensitivity,
            "sigma": first.sigma if len(zs) == 1 else [e.sigma for e in events],
            "noise_multiplier": first.noise_multiplier if len(zs) == 1 else [e.noise_multiplier for e in events],
            "count": sum(ledger.steps_done(e.key) for e in events),
            "planned_count": sum(e.steps for e in events),
        }
        if first.sample_rate < 1:
            entry["sample_rate"] = first.sample_rate
        # a discrete release names its grid in its mechanism's name, and its moves in the accountant's history
        entry["noise_rng"] = SECURE_NUMPY + (f"; {DISCRETE_SAMPLER}" if first.grid_bits else "")
        entry.update((details or {}).get(name, {}))
        out.append(entry)
    return out


def privacy_report(
    ledger: Ledger,
    *,
    method: str,
    public_inputs: dict[str, Any],
    post_processing: Sequence[str] = (),
    never_written: str = "",
    released_exactly: str = "",
    domain: Sequence[str] = (),
    details: Mapping[str, Mapping[str, Any]] | None = None,
    delta_total: float | None = None,
    extra: dict[str, Any] | None = None,
    caveat: str = "",
) -> dict[str, Any]:
    """privacy.json of a run.  ``delta_total`` (default: the ledger's delta) adds delta spent outside the
    Gaussian composition (PEARL's category threshold); ``details`` adds method facts to a mechanism.
    ``released_exactly``: what a run without noise (epsilon = inf) wrote of the private data exactly, and where;
    stated only when the run is not private (``never_written`` must then not name it).  ``caveat``: where
    the guarantee rests on more than the accountant's theorem (a plan chosen from an earlier release); the
    guarantee's one line then points to it, so that no reader of the epsilon misses it."""
    base = {"adjacency": ADJACENCY, "method": method}
    if not ledger.planned:
        return {
            "guarantee": "no private data was read: the output is independent of any private record",
            "differentially_private": True,
            "epsilon": 0.0,
            "delta": 0.0,
            **base,
            "complete": True,
            "mechanisms": [],
            "accountant": None,
            "public_inputs": public_inputs,
            **(extra or {}),
        }
    spent = ledger.epsilon_spent()
    delta = ledger.delta if delta_total is None else delta_total
    mechanisms = mechanism_entries(ledger, details)
    private = math.isfinite(ledger.epsilon)
    report: dict[str, Any] = {
        "guarantee": guarantee_text(spent, delta) if private else NOT_PRIVATE,
        "differentially_private": private,
        "epsilon": spent,
        "delta": delta,
        "epsilon_target": ledger.epsilon,
        **base,
        "complete": ledger.complete,
        "mechanisms": mechanisms,
    }
    if private:
        report["accountant"] = _accountant_section(ledger, spent)
    else:
        for m in mechanisms:
            m["name"] = m["name"].replace("Gaussian mechanism", "released WITHOUT noise")
            m.pop("noise_rng", None)
        report["accountant"] = None
        if released_exactly:  # the mechanisms' outputs are exact statistics of the private data, on disk
            report["released_exactly"] = released_exactly
    if caveat and private:
        report["guarantee"] += " (see caveat)"
        report["caveat"] = caveat
    if post_processing:
        report["post_processing"] = list(post_processing)
    report["public_inputs"] = public_inputs
    if domain:
        report["domain"] = {"checks": list(domain), "note": DOMAIN_NOTE}
    if never_written:
        report["never_written"] = never_written
    report["composition"] = COMPOSITION_NOTE
    report.update(extra or {})
    return report


def guarantee_text(epsilon: float, delta: float, adjacency: str = ADJACENCY) -> str:
    """privacy.json's one-line guarantee; epsilon and delta rounded up (``round_up``), never down."""
    return f"({round_up(epsilon, 4)}, {round_up(delta, 4)})-DP with respect to {adjacency}"


def _accountant_section(ledger: Ledger, spent: float) -> dict[str, Any]:
    events = ledger.spent_events()
    section: dict[str, Any] = {
        "name": accountant_name(ledger.accountant),
        "epsilon_at_delta": spent,
        "history": [list(h) for h in history(events)],
    }
    discrete = discrete_history(events)
    if discrete:  # [sigma in grid steps, each moved coordinate's steps, releases]
        section["discrete_history"] = [[s, list(m), t] for s, m, t in discrete]
    mu = None if ledger.delta_split else gdp_mu_of(events)  # a joint composition: not a cross-check of a split
    if mu is not None:
        section["gdp_crosscheck"] = {
            "mu": mu,
            "epsilon_at_delta": gdp_epsilon(mu, ledger.delta) if events else 0.0,
        }
    if ledger.delta_split:  # accounted apart and added (Ledger's delta_split): each part at its own delta
        section["composition"] = SPLIT_COMPOSITION
        section["parts"] = ledger.parts()
    if ledger.accountant != "pld":
        section["pld_crosscheck"] = {
            "name": "dp-accounting PLD (same composition)",
            "epsilon_at_delta": _pld_crosscheck(ledger, events) if events else 0.0,
        }
    return section


def _pld_crosscheck(ledger: Ledger, events: Sequence[Event]) -> float:
    if not ledger.delta_split:
        return pld_epsilon(history(events), ledger.delta, interval=1e-3, discrete=discrete_history(events))
    # each part as the ledger charges it, its epsilon alone by dp-accounting (the last: at least what was left to it)
    total = 0.0
    for e in events:
        alone = epsilon_of([e], ledger.delta * ledger.delta_split[e.key], "pld")  # a discrete count too
        total += max(alone, ledger.epsilon_left()) if e.key == ledger.adaptive_key else alone
    return total
