"""The whole run's bar of a method made of phases counted in different units (docs/progress.md).

dp-finetune trains for S DP-SGD steps, then samples in B generation batches; PEARL trains its generator
for S steps, then samples once.  The run bar counts the units of every phase (steps + batches), and
its ETA adds up, phase by phase, the units left times the seconds per unit *measured in this process*
for that phase, so a step and a batch need not cost the same.  A phase not timed yet (sampling while
DP-SGD runs) is named after the estimate rather than guessed: ``ETA 4 min + sampling``.  A resumed
run starts the bar at the units already done and times only what this process does.

Counts and times only, like everything ``ProgressReporter`` shows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dpsynth.progress import ProgressReporter


@dataclass
class _Phase:
    total: int
    done: int
    started: float | None = None  # when this process began the phase (its clock); None: not yet
    done0: int = 0  # units done when it began (a resumed phase keeps what an earlier process did)
    seconds: float | None = None  # the phase's own time for its units, when its loop measures it


def format_eta(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


class RunPhases:
    """The run bar over ``phases`` (name, total units, units already done), in the order they run."""

    def __init__(
        self,
        reporter: ProgressReporter,
        phases: Sequence[tuple[str, int, int]],
        *,
        description: str = "run",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.reporter = reporter
        self._clock = clock
        self._phases = {name: _Phase(max(total, 0), min(max(done, 0), max(total, 0))) for name, total, done in phases}
        reporter.run_bar(self.total, self.done, description)

    @property
    def total(self) -> int:
        return sum(p.total for p in self._phases.values())

    @property
    def done(self) -> int:
        return sum(p.done for p in self._phases.values())

    def begin(self, name: str) -> None:
        """The phase starts now in this process: its seconds per unit are measured from here."""
        p = self._phases[name]
        p.started, p.done0 = self._clock(), p.done

    def update(self, name: str, done: int, total: int | None = None, *, seconds: float | None = None) -> None:
        """``done`` units of phase ``name`` (of ``total`` if it changed); refreshes the run bar and its ETA.

        ``seconds``: the time the phase's own loop measured for the units done in this process, which
        leaves out its set-up (imports, building a model): after one unit the clock since ``begin`` would
        count that set-up once per unit left (PEARL: 150 steps of 10 ms each shown as "ETA 5 min").
        Call it before the phase's own ``reporter.update``: that one writes the plain line, with the run's
        counters beside it."""
        p = self._phases[name]
        if seconds is not None:
            p.seconds = max(seconds, 0.0)
        if total is not None:
            p.total = max(total, 0)
        if p.started is None:  # never begun: the clock starts at the first count seen
            p.done = min(max(done, 0), p.total)
            self.begin(name)
        p.done = min(max(done, 0), p.total)
        self.reporter.update_run(self.done, self.total, self.eta())

    def eta(self) -> str:
        """``ETA 3 min``, ``ETA 3 min + sampling`` (a phase not timed yet), or ``ETA …`` (nothing timed)."""
        now = self._clock()
        left, untimed = 0.0, []
        for name, p in self._phases.items():
            rest = p.total - p.done
            if rest <= 0:
                continue
            spent = p.seconds if p.seconds is not None else (now - p.started if p.started is not None else 0.0)
            if p.started is not None and p.done > p.done0 and spent > 0:
                left += rest * spent / (p.done - p.done0)
            else:
                untimed.append(name)
        if untimed and left <= 0:
            return "ETA …"
        return f"ETA {format_eta(left)}" + "".join(f" + {name}" for name in untimed)


__all__ = ["RunPhases", "format_eta"]
