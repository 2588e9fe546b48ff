"""The persisted privacy spend of a run.

The ledger is written next to the run's outputs and is the single source of
truth for what has been released.  A resumed run loads it, never recomputes
sigma, and refuses any release that would push epsilon past the target: the
budget is a hard cap.  A release is recorded after its noisy result is saved
(``WaspRun`` does: save noisy votes -> record), and a saved noisy result without
a ledger entry is recorded on resume, so a crash can never "un-spend" budget.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dpsynth.errors import PrivacyBudgetError, ResumeError
from dpsynth.io import atomic_write_json
from dpsynth.privacy.accountant import GaussianPlan

_TOLERANCE = 1e-6


@dataclass
class Ledger:
    path: Path
    plan: GaussianPlan | None  # None: a run that reads no private data
    mechanism: str = ""
    releases: list[dict[str, Any]] = field(default_factory=list)

    # -------------------------------------------------------------- persistence
    @classmethod
    def open(cls, path: str | Path, plan: GaussianPlan | None, mechanism: str) -> Ledger:
        """Load the ledger at ``path`` if it exists (resume) or start a new one."""
        path = Path(path)
        if not path.exists():
            led = cls(path, plan, mechanism)
            led.save()
            return led
        raw = json.loads(path.read_text(encoding="utf-8"))
        stored = GaussianPlan(**raw["plan"]) if raw.get("plan") else None
        if (stored is None) != (plan is None) or (
            stored is not None
            and plan is not None
            and (
                abs(stored.epsilon - plan.epsilon) > 1e-12
                or abs(stored.delta - plan.delta) > 1e-15
                or stored.steps != plan.steps
                or abs(stored.sensitivity - plan.sensitivity) > 1e-12
                or stored.accountant != plan.accountant
            )
        ):
            raise ResumeError(
                f"{path}: the run was started with a different privacy plan (epsilon, delta, rounds, q or "
                "accountant); resume with the original config or start a new --out directory"
            )
        # keep the stored noise multiplier: a resumed run never recalibrates
        return cls(path, stored, raw.get("mechanism", mechanism), list(raw.get("releases", [])))

    def save(self) -> None:
        atomic_write_json(
            self.path,
            {
                "plan": asdict(self.plan) if self.plan else None,
                "mechanism": self.mechanism,
                "releases": self.releases,
                "epsilon_spent": self.epsilon_spent(),
            },
        )

    # -------------------------------------------------------------- spending
    @property
    def count(self) -> int:
        return len(self.releases)

    def released(self, key: str) -> bool:
        return any(r["key"] == key for r in self.releases)

    def epsilon_spent(self, releases: int | None = None) -> float:
        if self.plan is None:
            return 0.0
        return self.plan.epsilon_after(self.count if releases is None else releases)

    def check_can_release(self) -> None:
        """Raise unless one more release stays within the target epsilon."""
        if self.plan is None:
            raise PrivacyBudgetError("this run has no privacy budget; it may not read private data")
        if self.count + 1 > self.plan.steps or self.epsilon_spent(self.count + 1) > self.plan.epsilon + _TOLERANCE:
            raise PrivacyBudgetError(
                f"privacy budget exhausted: {self.count} of {self.plan.steps} releases already spent "
                f"epsilon={self.epsilon_spent():.4f} of {self.plan.epsilon}; start a new run to spend more"
            )

    def record(self, key: str) -> None:
        if self.released(key):
            return
        self.check_can_release()
        self.releases.append({"key": key, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        self.save()
