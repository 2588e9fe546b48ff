"""privacy.json: the guarantee, the adjacency, every mechanism that touched private data.

Anything not listed under ``mechanisms`` never read private data.  The report
also lists what dpsynth treats as public (declared by the user, not read from
the data), because spending privacy on "public" facts that are in fact private
is a classic failure (privacy.md).
"""

from __future__ import annotations

import importlib.metadata as md
from typing import Any

from dpsynth.privacy.accountant import epsilon_for, gdp_mu
from dpsynth.privacy.ledger import Ledger

ADJACENCY = "add/remove one private record (one (text, label) pair)"
NOT_PRIVATE = (
    "NONE: epsilon = inf, the votes were released without noise. This output is NOT differentially private "
    "and must be handled like the private data; it is a research baseline (the non-private ceiling)."
)


def _version(pkg: str) -> str:
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return "unknown"


def privacy_report(
    ledger: Ledger,
    *,
    method: str,
    reads: str,
    public_inputs: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    plan = ledger.plan
    if plan is None:
        return {
            "guarantee": "no private data was read: the output is independent of any private record",
            "epsilon": 0.0,
            "delta": 0.0,
            "adjacency": ADJACENCY,
            "method": method,
            "mechanisms": [],
            "accountant": None,
            "public_inputs": public_inputs,
            **(extra or {}),
        }
    spent = ledger.epsilon_spent()
    count = ledger.count
    if not plan.is_private:
        return {
            "guarantee": NOT_PRIVATE,
            "epsilon": spent,
            "delta": plan.delta,
            "epsilon_target": plan.epsilon,
            "differentially_private": False,
            "adjacency": ADJACENCY,
            "method": method,
            "complete": count == plan.steps,
            "mechanisms": [
                {
                    "name": ledger.mechanism.replace("Gaussian mechanism", "released WITHOUT noise"),
                    "reads": reads,
                    "sensitivity_l2": plan.sensitivity,
                    "sigma": 0.0,
                    "noise_multiplier": 0.0,
                    "count": count,
                    "planned_count": plan.steps,
                }
            ],
            "accountant": None,
            "public_inputs": public_inputs,
            **(extra or {}),
        }
    mu = gdp_mu(count, plan.noise_multiplier) if count else 0.0
    accountant_name = (
        f"dp-accounting {_version('dp-accounting')} PLD" if plan.accountant == "pld" else "Gaussian DP (exact formula)"
    )
    return {
        "guarantee": f"({spent:.4g}, {plan.delta:g})-DP with respect to {ADJACENCY}",
        "differentially_private": True,
        "epsilon": spent,
        "delta": plan.delta,
        "epsilon_target": plan.epsilon,
        "adjacency": ADJACENCY,
        "method": method,
        "complete": count == plan.steps,
        "mechanisms": [
            {
                "name": ledger.mechanism,
                "reads": reads,
                "sensitivity_l2": plan.sensitivity,
                "sigma": plan.sigma,
                "noise_multiplier": plan.noise_multiplier,
                "count": count,
                "planned_count": plan.steps,
                "noise_rng": "numpy PCG64 seeded from the OS CSPRNG (secrets)",
            }
        ],
        "accountant": {
            "name": accountant_name,
            "epsilon_at_delta": spent,
            "gdp_crosscheck": {
                "mu": mu,
                "epsilon_at_delta": epsilon_for(plan.noise_multiplier, count, plan.delta, "gdp") if count else 0.0,
            },
        },
        "post_processing": [
            "generator weights, class shares and good/bad example pools from the noisy votes only",
            "all prompts contain only public text (task, label names) and synthetic samples",
        ],
        "public_inputs": public_inputs,
        "never_written": "private texts, private embeddings, pre-noise vote histograms",
        **(extra or {}),
    }
