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
import math
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from dpsynth.privacy.events import Event, epsilon_of, gdp_mu_of, history, pld_epsilon
from dpsynth.privacy.ledger import COMPOSITION_NOTE, Ledger

ADJACENCY = "add/remove one private record (one (text, label) pair)"
NOT_PRIVATE = (
    "NONE: epsilon = inf, the votes were released without noise. This output is NOT differentially private "
    "and must be handled like the private data; it is a research baseline (the non-private ceiling)."
)
SECURE_NUMPY = "numpy PCG64 seeded from the OS CSPRNG (secrets)"
DOMAIN_NOTE = (
    "The guarantee is stated over datasets whose records all pass these per-record checks (the input domain, "
    "which is public). Input that fails one is refused before any mechanism reads the data, with an error "
    "shown on the console only (never written to the run directory); an output therefore also tells that "
    "every record passed them."
)


class MechanismEntry(BaseModel):
    """One mechanism that read private data: what it read, its sensitivity and noise, how often it ran."""

    model_config = ConfigDict(extra="allow")
    name: str
    reads: str
    sensitivity_l2: float = Field(ge=0)
    sigma: float | list[float]
    noise_multiplier: float | list[float]
    count: int = Field(ge=0)
    planned_count: int = Field(ge=0)


class AccountantSection(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    epsilon_at_delta: float = Field(ge=0)


class PrivacyReport(BaseModel):
    """The one shape of privacy.json, for every method (the HTML report and the tests read it)."""

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
    domain: dict[str, Any] | None = None
    composition: str | None = None


def validate_report(report: dict[str, Any]) -> dict[str, Any]:
    """Check ``report`` has the one privacy.json shape (a pydantic ValidationError otherwise); returns it."""
    PrivacyReport.model_validate(report)
    if report["mechanisms"] and report["differentially_private"] and report["accountant"] is None:
        raise ValueError("privacy.json: a DP report that lists mechanisms must name its accountant")
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
        entry["noise_rng"] = SECURE_NUMPY
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
    domain: Sequence[str] = (),
    details: Mapping[str, Mapping[str, Any]] | None = None,
    delta_total: float | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """privacy.json of a run.  ``delta_total`` (default: the ledger's delta) adds delta spent outside the
    Gaussian composition (PEARL's category threshold); ``details`` adds method facts to a mechanism."""
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
        "guarantee": f"({spent:.4g}, {delta:g})-DP with respect to {ADJACENCY}" if private else NOT_PRIVATE,
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


def _accountant_section(ledger: Ledger, spent: float) -> dict[str, Any]:
    events = ledger.spent_events()
    section: dict[str, Any] = {
        "name": accountant_name(ledger.accountant),
        "epsilon_at_delta": spent,
        "history": [list(h) for h in history(events)],
    }
    mu = gdp_mu_of(events)
    if mu is not None:
        section["gdp_crosscheck"] = {
            "mu": mu,
            "epsilon_at_delta": epsilon_of(events, ledger.delta, "gdp") if events else 0.0,
        }
    if ledger.accountant != "pld":
        section["pld_crosscheck"] = {
            "name": "dp-accounting PLD (same composition)",
            "epsilon_at_delta": pld_epsilon(history(events), ledger.delta, interval=1e-3) if events else 0.0,
        }
    return section
