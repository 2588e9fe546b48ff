"""The privacy side of a WASP run: its noise plan, its planned releases (one vote per round) and ledger.

Kept apart from the round loop (methods/wasp.py) so that what a run may spend is readable in one place.
The vote itself is ``privacy.voting.noisy_top_q_vote``; the loop draws it through ``Ledger.release``.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Collection, Sequence
from typing import Protocol, TypeVar

from dpsynth.config import Config, WaspConfig
from dpsynth.errors import ConfigError, ResumeError
from dpsynth.privacy.accountant import GaussianPlan
from dpsynth.privacy.events import Event
from dpsynth.privacy.ledger import Ledger
from dpsynth.privacy.voting import MIN_GRID_STEPS, top_q_moves, top_q_sensitivity
from dpsynth.run import RunDir

log = logging.getLogger("dpsynth")


class _Voted(Protocol):
    @property
    def round(self) -> int: ...
    @property
    def label(self) -> str: ...


S = TypeVar("S", bound=_Voted)


def vote_population(samples: Sequence[S], t: int, w: WaspConfig, labels: Sequence[str]) -> list[S]:
    """The synthetic samples vote t ranks (``wasp.vote_on``): every sample made before round t, or only the
    latest round's, which gives each of them as many votes as the first vote gave (docs/wasp.md, step 6).

    With ``latest``, a round the clean-up left empty is skipped for the last round that kept samples (the
    run would otherwise stop, and every resume with it), and a class missing from the round is named: its
    next prompts have no examples and are zero-shot.  Public samples only: which ones are ranked does not
    change the vote's sensitivity or noise."""
    earlier = [s for s in samples if s.round < t]
    if w.vote_on == "all" or not earlier:
        return earlier
    last = max(s.round for s in earlier)
    if last < t - 1:
        log.warning("round %d: round %d kept no sample; this vote ranks round %d's", t, t - 1, last)
    population = [s for s in earlier if s.round == last]
    missing = sorted(set(labels) - {s.label for s in population})
    if missing:
        log.warning("round %d: round %d kept no sample of class %s; its next prompts show no example", t, last, missing)
    return population


def mechanism_name(w: WaspConfig, grid_bits: int = 0) -> str:
    side = "near+far" if w.use_far else "near"
    noise = f"discrete Gaussian mechanism on the grid 2^-{grid_bits}" if grid_bits else "Gaussian mechanism"
    return f"Top-{w.q} vote histograms ({side}), {noise}"


VOTE_READS = "private embeddings and labels (Top-Q vote)"


def privacy_plan(config: Config, run_dir: RunDir | None = None) -> GaussianPlan | None:
    """The noise plan of the whole run, or None for a run that reads no private data.

    Under the PLD accountant the votes get the exact discrete Gaussian (privacy/voting.py); under GDP, whose
    formula holds for the float Gaussian only, and in a run whose ledger planned float votes before discrete
    ones existed (``run_dir``: a resume keeps the noise its ledger records), the float Gaussian."""
    if not config.uses_private_data:
        return None
    w = config.effective_wasp()
    p = config.privacy
    if p.accountant == "pld" and not _planned_float_votes(run_dir):
        return _calibrate_discrete(p.epsilon, p.delta, w.rounds, top_q_moves(w.q, w.use_far), w.q - 1, MIN_GRID_STEPS)
    return _calibrate(p.epsilon, p.delta, w.rounds, top_q_sensitivity(w.q, w.use_far), p.accountant)


# check_run calibrates before the run directory exists and WaspRun again inside it: the second is a cache hit
_calibrate = functools.lru_cache(maxsize=32)(GaussianPlan.calibrate)
_calibrate_discrete = functools.lru_cache(maxsize=32)(GaussianPlan.calibrate_discrete)


def _planned_float_votes(run_dir: RunDir | None) -> bool:
    """Does the run in ``run_dir`` have a ledger that planned float-Gaussian votes (an older version's run)?"""
    if run_dir is None or not run_dir.ledger.exists():
        return False
    try:
        planned = json.loads(run_dir.ledger.read_text(encoding="utf-8")).get("planned", [])
        return any(str(e["key"]).startswith("round_") and not e.get("grid_bits") for e in planned)
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return False  # Ledger.open names what is wrong with the file


def check_run(config: Config, generators: Collection[str], run_dir: RunDir | None = None) -> GaussianPlan | None:
    """Everything about a run that can fail before it starts: the label judge and the noise plan.

    ``PromptingMethod.prepare`` calls it before the run directory is created, so a mistake found here (an
    epsilon so large that no noise is needed, a judge that is not a generator) leaves nothing behind and
    the corrected command can reuse the same --out.  ``generators``: the names of this run's generators;
    ``run_dir``: the run being resumed, whose ledger may hold an earlier version's float plan (calibrating
    a discrete plan for it would be wasted work: up to a minute at small epsilon).  Returns the plan (None:
    no private data).
    """
    w = config.effective_wasp()
    if w.label_judge is not None and w.label_judge not in generators:
        raise ConfigError(
            f"wasp.label_judge: {w.label_judge!r} is not one of this run's generators "
            f"({', '.join(generators)}); name one of them or set it to null"
        )
    return privacy_plan(config, run_dir)


def privacy_events(config: Config, run_dir: RunDir | None = None) -> list[Event]:
    """The run's releases: one Gaussian vote per round ``round_1`` .. ``round_T`` (none for zero-shot)."""
    plan = privacy_plan(config, run_dir)
    if plan is None:
        return []
    name = mechanism_name(config.effective_wasp(), plan.grid_bits)
    return [
        Event(
            f"round_{t}",
            plan.noise_multiplier,
            sensitivity=plan.sensitivity,
            mechanism=name,
            reads=VOTE_READS,
            grid_bits=plan.grid_bits,
            moves=plan.moves,
        )
        for t in range(1, plan.steps + 1)
    ]


def open_ledger(config: Config, run_dir: RunDir, events: list[Event]) -> Ledger:
    """The run's ledger: the vote rounds against privacy.epsilon, or an empty plan (zero-shot)."""
    p = config.privacy
    eps, delta = (p.epsilon, p.delta) if events else (0.0, 0.0)
    return Ledger.open(
        run_dir.ledger, epsilon=eps, delta=delta, accountant=p.accountant, planned=events, resume=run_dir.resuming
    )


def votes_released(ledger: Ledger, run_dir: RunDir) -> bool:
    """Every planned vote is released and saved: what is left of the run (the expansion phase, or
    ``dpsynth sample``) is post-processing and needs no private data.

    A recorded vote whose file is gone is refused here, before anything reads the private records: the
    ledger would refuse it only once they were loaded and embedded for a vote it cannot draw again."""
    for e in ledger.planned:
        ledger.check_saved(e.key, run_dir.votes(int(e.key.split("_")[1])))
    return ledger.complete


def rounds_released(config: Config, run_dir: RunDir) -> bool:
    """For a resume: has the run in ``run_dir`` released (and saved) every vote it plans?"""
    if not config.uses_private_data or not run_dir.ledger.exists():
        return False
    p = config.privacy
    ledger = Ledger.open(
        run_dir.ledger,
        epsilon=p.epsilon,
        delta=p.delta,
        accountant=p.accountant,
        planned=privacy_events(config, run_dir),
        read_only=True,
    )  # a question, asked before the run (or --check): never a write to a ledger another process may hold
    return votes_released(ledger, run_dir)


def check_vote_sensitivity(w: WaspConfig, event: Event, t: int) -> None:
    """Refuse to draw round ``t``'s vote at a sensitivity other than the one its ledger event was planned
    with: the noise is sigma = z x the event's sensitivity, so a config changed since (wasp.use_far, q, the
    method) would release a vote with less noise than the epsilon the ledger records."""
    sensitivity = top_q_sensitivity(w.q, w.use_far)
    moved = top_q_moves(w.q, w.use_far) if event.grid_bits else event.moves
    if not math.isclose(sensitivity, event.sensitivity, rel_tol=1e-9) or moved != event.moves:
        raise ResumeError(
            f"round {t}: the vote's sensitivity ({sensitivity:.6g}) is not the one the ledger planned "
            f"({event.sensitivity:.6g}), so its noise would not give the recorded epsilon; resume with the "
            "run's own config.yaml or start a new --out"
        )
