"""ledger.json: the privacy spend of a run, planned and released, with a hard cap.

Every method plans its releases as ``Event`` values (privacy/events.py) and draws each one through
``Ledger.release``, the only way a noisy result comes into being.  For one release key it

1. returns the saved result when the ledger already lists the key (a resumed run reuses it);
2. records a saved result the ledger does not list yet (the run was killed between saving and
   recording: the release happened, so it counts);
3. refuses when the ledger lists the key but its saved result is gone: drawing again would spend
   the same key twice while the ledger counts it once;
4. otherwise checks the cap, draws, saves the result atomically and then records it.

So a crash can never "un-spend" budget, a second draw under a recorded key cannot happen, and a
resumed run continues the same ledger.  Stepped releases (DP-SGD) record their steps after the
checkpoint that holds them (``record_steps``).  The budget is a hard cap: no release is drawn whose
composition with what was already spent would exceed the target epsilon.  Runs on the same private
data add up (sequential composition); a new run directory is not a new budget for the same data.

Composition.  By default the events compose jointly (the accountant's tight composition of all of them),
which a theorem covers when every event's parameters are fixed before the run reads any private data.  A
run whose last event is *chosen from* the releases before it (dp-finetune: DP-SGD's sample rate, steps and
noise from the noisy record count) splits delta instead (``delta_split``: key -> share of delta, in release
order).  Each event before the last has parameters fixed in advance and is charged its own epsilon at its
share of delta (by dp-accounting's PLD); the last is charged what the budget leaves it, epsilon_left =
target - their sum, a figure fixed before any release, and must be (epsilon_left, its delta)-DP for whatever
plan the releases before it chose (the cap refuses one that is not).  The charges add up to the target once
the last event has begun: the number its chosen plan happens to reach (a little below epsilon_left) depends
on the earlier releases, and no theorem covers a claim made from it.  That is basic composition, and it holds
when each mechanism is chosen adaptively, provided its (epsilon_i, delta_i) is fixed in advance (Dwork,
Rothblum and Vadhan 2010; Rogers, Roth, Ullman and Vadhan 2016): for neighbours D, D', an output set S
and the second mechanism's slice S_c after a first output c, with g(c) = P_D'[S_c | c],

    P_D[S] = E_D[P_D[S_c | c]] <= E_D[min(1, e^eps2 g(c))] + delta2
           <= e^eps1 E_D'[min(1, e^eps2 g(c))] + delta1 + delta2 <= e^(eps1 + eps2) P_D'[S] + delta1 + delta2,

using (eps2, delta2)-DP of the second mechanism for each c, then (eps1, delta1)-DP of the first on the
[0, 1]-valued function min(1, e^eps2 g).
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dpsynth.errors import PrivacyBudgetError, ResumeError
from dpsynth.io import atomic_write_bytes, atomic_write_json
from dpsynth.privacy.events import Accountant, Event, epsilon_of
from dpsynth.privacy.rounding import round_up

FORMAT = 3  # 3: events may be discrete-Gaussian releases (grid_bits, moves), which format 2 readers cannot read
# 4: a ledger that splits delta (delta_split), which a format 3 reader would compose jointly (a lower epsilon
# than the one this run may claim); a ledger without a split is still written as format 3
SPLIT_FORMAT = 4
READABLE_FORMATS = (2, 3, 4)  # a format 2 ledger (float votes only) is read as it is, and its run keeps float noise
_TOLERANCE = 1e-6
COMPOSITION_NOTE = (
    "runs on the same private data add up: their epsilons compose (at least sum), so a new run directory "
    "is not a new budget for the same records"
)

Payload = dict[str, Any]


class Ledger:
    """The planned and released events of one run (see the module docstring)."""

    def __init__(
        self,
        path: Path,
        epsilon: float,
        delta: float,
        accountant: Accountant,
        planned: list[Event],
        delta_split: dict[str, float] | None = None,
    ) -> None:
        if delta_split and (any(not 0 < v < 1 for v in delta_split.values()) or sum(delta_split.values()) > 1 + 1e-12):
            raise ValueError(f"delta_split: shares in (0, 1) adding up to at most 1 expected, got {delta_split}")
        self.path = path
        self.epsilon = epsilon  # the target: a hard cap
        self.delta = delta
        self.requested_accountant = accountant  # what the config asked for (a resume must ask the same)
        self.accountant = accountant  # what composes the events (see use_accountant)
        self.planned = planned
        self.delta_split = dict(delta_split or {})  # empty: joint composition (module docstring)
        self.releases: list[dict[str, Any]] = []  # {"key", "steps", "time"}, in release order
        self.read_only = False  # a query of a run (its state), not the run: never written

    # -------------------------------------------------------------- persistence
    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        epsilon: float,
        delta: float,
        accountant: Accountant,
        planned: Sequence[Event] = (),
        resume: bool = False,
        read_only: bool = False,
        delta_split: dict[str, float] | None = None,
    ) -> Ledger:
        """Start the ledger of a new run, or load a resumed run's and check it has the same target.

        On resume the stored events are kept as they are (never recalibrated); ``planned`` must agree
        with them where both name a key.  ``delta_split`` (module docstring) applies to a new ledger; a
        resumed one keeps the composition it was started with (the caller asks ``ledger.delta_split``).
        ``read_only``: load an existing ledger to ask about the run
        (``--check``, has it released its votes?) without writing it: the run may still be going, and a
        rewrite from this copy could drop a release that process has just recorded.
        """
        path = Path(path)
        if not path.exists():
            if resume or read_only:
                raise missing_ledger(path)
            led = cls(path, epsilon, delta, accountant, [], delta_split)
            led.plan(planned)
            led.save()
            return led
        unreadable = ResumeError(
            f"{path}: cannot be read; the privacy spend of this run is unknown, so it cannot be resumed: restore "
            "ledger.json from a backup, or start a new --out (and count this run's spend as the whole budget)"
        )
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            raise unreadable from None
        if not isinstance(raw, dict) or ("format" not in raw and "releases" not in raw):
            raise unreadable  # valid JSON, but not a ledger (an empty object, a list)
        if raw.get("format") not in READABLE_FORMATS:
            found = raw.get("format", 1)  # format 1 ledgers had no "format" field
            which = "a newer" if isinstance(found, int) and found > max(READABLE_FORMATS) else "an older"
            readable = ", ".join(map(str, READABLE_FORMATS[:-1])) + f" or {READABLE_FORMATS[-1]}"
            raise ResumeError(
                f"{path}: written by {which} dpsynth (ledger format {found}, this version reads {readable}); finish "
                "the run with that version or start a new --out"
            )
        try:  # a ledger that parses but lacks a field (edited, truncated by hand) is unreadable, not a traceback
            target = raw["target"]
            stored = (float(target["epsilon"]), float(target["delta"]), str(target["accountant"]))
            events = [Event.from_dict(e) for e in raw["planned"]]
            releases = [{**r, "key": str(r["key"]), "steps": int(r["steps"])} for r in raw["releases"]]
            split = {str(k): float(v) for k, v in (raw.get("delta_split") or {}).items()}
        except (KeyError, TypeError, ValueError, AttributeError):
            raise unreadable from None
        same = (
            math.isclose(stored[0], epsilon, rel_tol=1e-12)
            if math.isfinite(epsilon) and math.isfinite(stored[0])
            else stored[0] == epsilon
        )
        if not same or not math.isclose(stored[1], delta, rel_tol=1e-9) or stored[2] != accountant:
            raise ResumeError(
                f"{path}: the run was started with a different privacy target (epsilon, delta or accountant); "
                "resume with the original config or start a new --out"
            )
        try:
            led = cls(path, epsilon, delta, accountant, events, split)
        except ValueError:  # a delta split out of range
            raise unreadable from None
        led.accountant = raw.get("accountant_used", accountant)
        led.releases = releases
        led.read_only = read_only
        led.plan(planned)
        led.save()
        return led

    def adopt_split(self, delta_split: dict[str, float]) -> None:
        """A resumed ledger that composes jointly and has released nothing takes ``delta_split``: nothing was
        drawn, so the run may still choose its composition, and the split one is the one with a theorem for a
        plan chosen from an earlier release (module docstring).  Its planned events were calibrated for the
        joint composition and are dropped, for the caller to plan again.  The caller must also know that no
        release was saved before the ledger recorded it (``release`` records such a file on resume): that one
        was drawn with the dropped event's noise."""
        if self.delta_split or self.releases or not delta_split or self.read_only:
            raise ValueError("only a joint ledger that has released nothing, opened to write, can take a delta split")
        accountant = self.accountant  # a switch to RDP made when DP-SGD was planned stays
        Ledger.__init__(self, self.path, self.epsilon, self.delta, self.requested_accountant, [], delta_split)
        self.accountant = accountant
        self.save()

    def save(self) -> None:
        if self.read_only:
            return
        atomic_write_json(
            self.path,
            {
                "format": SPLIT_FORMAT if self.delta_split else FORMAT,
                "target": {"epsilon": self.epsilon, "delta": self.delta, "accountant": self.requested_accountant},
                "accountant_used": self.accountant,
                **({"delta_split": self.delta_split} if self.delta_split else {}),
                "planned": [e.to_dict() for e in self.planned],
                "releases": self.releases,
                "epsilon_spent": self.epsilon_spent(),
                "note": COMPOSITION_NOTE,
            },
        )

    def use_accountant(self, accountant: Accountant) -> None:
        """Compose with another (looser, valid) accountant from now on, e.g. Opacus' RDP where PRV cannot
        evaluate very low noise; the switch is persisted so a resumed run keeps it."""
        if accountant != self.accountant:
            if accountant != "rdp":
                raise ValueError("only a switch to the RDP bound, valid for every event, is allowed")
            self.accountant = accountant
            self.save()

    # -------------------------------------------------------------- planning
    def plan(self, events: Sequence[Event]) -> None:
        """Add events to the plan (the whole plan must fit the target); a key planned before must agree."""
        added = False
        for e in events:
            old = self.event(e.key)
            if self.delta_split and e.key not in self.delta_split:
                raise ValueError(f"release {e.key!r} has no share of delta in this ledger's split")
            if old is None:
                self.planned.append(e)
                added = True
            elif not old.same_spend(e):
                raise ResumeError(
                    f"{self.path}: release {e.key!r} was planned with other noise or sensitivity (noise multiplier "
                    f"{old.noise_multiplier:.6g}, sensitivity {old.sensitivity:.6g}, {_noise(old)} then; "
                    f"{e.noise_multiplier:.6g}, {e.sensitivity:.6g}, {_noise(e)} now): the config, or the private "
                    "file's columns, changed since the run began; resume with the original config and records or "
                    "start a new --out"
                )
        if added:
            total = self.planned_epsilon()
            if total > self.epsilon + _TOLERANCE:
                raise PrivacyBudgetError(
                    f"privacy plan: the planned releases need epsilon {round_up(total, 5)}, above privacy.epsilon = "
                    f"{self.epsilon:g}; {COMPOSITION_NOTE}"
                )
            if self.path.exists():
                self.save()

    def event(self, key: str) -> Event | None:
        return next((e for e in self.planned if e.key == key), None)

    def planned_epsilon(self) -> float:
        return self.compose(self.planned)

    def compose(self, events: Sequence[Event]) -> float:
        """Epsilon of ``events`` under this ledger's composition: joint, or split (``delta_split``, module
        docstring): each event alone at its share of delta, the last one charged at least the budget left to
        it, and the charges added up."""
        if not self.delta_split:
            return epsilon_of(events, self.delta, self.accountant)
        return sum(self._charge(e) for e in events)

    def _alone(self, e: Event) -> float:
        # the releases before the last by dp-accounting's PLD (their charge is their own epsilon, which PLD
        # states tightly, and no later switch of accountant moves it); the last by the run's accountant
        accountant: Accountant = self.accountant if e.key == self.adaptive_key else "pld"
        return epsilon_of([e], self.delta * self.delta_split[e.key], accountant)

    def _charge(self, e: Event) -> float:
        return max(self._alone(e), self.epsilon_left()) if e.key == self.adaptive_key else self._alone(e)

    @property
    def adaptive_key(self) -> str | None:
        """Of a split ledger: the last release, whose parameters may be chosen from the ones before it."""
        return list(self.delta_split)[-1] if self.delta_split else None

    def epsilon_left(self) -> float:
        """Of a split ledger: the epsilon fixed in advance for its last release, the target less the planned
        releases before it (their parameters are fixed in advance, so this figure is too)."""
        return self.epsilon - sum(self._alone(e) for e in self.planned if e.key != self.adaptive_key)

    def parts(self) -> list[dict[str, Any]]:
        """Of a split ledger: what each released event is charged, at its delta (privacy.json lists them);
        the last one with the epsilon its chosen plan reaches alone, for information."""
        out = []
        for e in self.spent_events():
            part: dict[str, Any] = {"release": e.key, "delta": self.delta * self.delta_split[e.key]}
            part["epsilon"] = self._charge(e)
            part["accountant"] = self.accountant if e.key == self.adaptive_key else "pld"
            if e.key == self.adaptive_key:
                part["epsilon_of_the_chosen_plan"] = self._alone(e)
            out.append(part)
        return out

    # -------------------------------------------------------------- spending
    def released(self, key: str) -> bool:
        return any(r["key"] == key for r in self.releases)

    def check_saved(self, key: str, path: Path) -> None:
        """Raise if release ``key`` is recorded but its saved result ``path`` is gone: it cannot be drawn again."""
        if self.released(key) and not path.exists():
            raise ResumeError(
                f"{path}: the ledger records release {key!r} but its saved result is missing; drawing it "
                "again would spend the budget twice. Restore the file or start a new --out"
            )

    def steps_done(self, key: str) -> int:
        return sum(int(r["steps"]) for r in self.releases if r["key"] == key)

    def spent_events(self, extra: Event | None = None) -> list[Event]:
        """The events as released so far (stepped ones with their steps done), plus ``extra``."""
        out = []
        for e in self.planned:
            steps = self.steps_done(e.key) + (extra.steps if extra is not None and extra.key == e.key else 0)
            if steps:
                out.append(e.with_steps(steps))
        return out

    def epsilon_spent(self) -> float:
        return self.compose(self.spent_events())

    @property
    def complete(self) -> bool:
        return all(self.steps_done(e.key) == e.steps for e in self.planned)

    def check_can_release(self, key: str, steps: int = 1) -> None:
        """Raise unless ``steps`` more of planned release ``key`` stay within the plan and the cap."""
        if self.read_only:  # a release that is not recorded would be spent twice on a resume
            raise PrivacyBudgetError(f"privacy: {self.path} was opened to read it; no release can be made")
        e = self.event(key)
        if e is None:
            raise PrivacyBudgetError(
                f"privacy: release {key!r} is not in this run's plan"
                + ("" if self.planned else " (this run reads no private data)")
            )
        done = self.steps_done(key)
        if done + steps > e.steps:
            raise PrivacyBudgetError(f"privacy: release {key!r} already done ({done} of {e.steps} steps)")
        after = self.compose(self.spent_events(e.with_steps(steps)))
        if after > self.epsilon + _TOLERANCE:
            raise PrivacyBudgetError(
                f"privacy budget exhausted: epsilon {round_up(self.epsilon_spent(), 5)} of {self.epsilon:g} spent and "
                f"release {key!r} would bring it to {round_up(after, 5)}; {COMPOSITION_NOTE}"
            )

    def _record(self, key: str, steps: int = 1) -> None:
        self.check_can_release(key, steps)
        self.releases.append({"key": key, "steps": steps, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        self.save()

    def release(self, key: str, path: Path, draw: Callable[[], Payload]) -> Payload:
        """The noisy result of planned one-shot release ``key``, drawn at most once (module docstring).

        ``draw`` runs the mechanism and returns its (noised) result: numpy arrays for an ``.npz`` path,
        JSON values otherwise.  It is called only when nothing was released under ``key`` before.
        """
        if self.released(key):
            self.check_saved(key, path)
            return load_payload(path)
        if path.exists():  # saved, then killed before the ledger caught up: it was released
            self._record(key)
            return load_payload(path)
        self.check_can_release(key)
        payload = draw()
        save_payload(path, payload)
        self._record(key)
        return payload

    def record_steps(self, key: str, steps_total: int) -> None:
        """Record that stepped release ``key`` (DP-SGD) has run ``steps_total`` steps, all saved."""
        done = self.steps_done(key)
        if steps_total < done:
            raise ResumeError(
                f"{self.path}: release {key!r} records {done} steps but only {steps_total} are saved; the "
                "saved state is older than the ledger and continuing would re-spend budget"
            )
        if steps_total > done:
            self._record(key, steps_total - done)


def _noise(e: Event) -> str:
    return f"discrete Gaussian on the grid 2^-{e.grid_bits}" if e.grid_bits else "float Gaussian"


def save_payload(path: Path, payload: Payload) -> None:
    if path.suffix == ".npz":
        buf = io.BytesIO()
        arrays: dict[str, Any] = {k: np.asarray(v) for k, v in payload.items()}
        np.savez(buf, **arrays)
        atomic_write_bytes(path, buf.getvalue())
    else:
        atomic_write_json(path, payload)


def load_payload(path: Path) -> Payload:
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        out: Payload = json.loads(path.read_text(encoding="utf-8"))
        return out
    except Exception as exc:  # noqa: BLE001 - a damaged release file is a resume problem, not a crash
        raise ResumeError(
            f"{path}: a saved release cannot be read ({type(exc).__name__}); it cannot be drawn again without "
            "spending twice: restore the file or start a new --out"
        ) from None


def missing_ledger(path: Path) -> ResumeError:
    """The error for a resumed run without its ledger: what it spent is unknown, so nothing may continue it.
    (``synthesize`` checks this before any model is loaded; ``Ledger.open`` checks it again.)"""
    return ResumeError(
        f"{path}: the run's privacy ledger is missing, so what it already spent is unknown; "
        "it cannot be resumed (restore ledger.json or start a new --out)"
    )
