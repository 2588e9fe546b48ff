"""Progress on stderr for long work: live bars on a terminal, plain lines in a log or CI.

Its own module because it is one concept (what the user sees while a run works), used by every method,
the language-model training loop and the API, and independent of the run directory.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any


class ProgressReporter:
    """Progress on stderr: live bars on a terminal, plain lines anywhere else.

    On a terminal (stderr is a TTY) rich draws two bars: the whole run (``run_bar`` / ``update_run``: samples
    so far of N, samples/s and the run's ETA) and the current phase (``start`` / ``update``: a WASP round,
    DP-SGD steps, ...) with its own counters.  Piped to a file or a CI log, a redraw stream would fill it
    with carriage returns, so it writes plain lines instead: one every ``LINE_INTERVAL`` seconds at most
    (the latest phase and run counters on one line), plus one when a phase completes.  ``message`` lines
    (the run folder, notes) are always written.  Nothing shown here may hold private text or a pre-noise
    statistic: callers pass counts, rates and the DP epsilon spent only.
    """

    LINE_INTERVAL = 5.0  # seconds between two plain progress lines

    def __init__(
        self,
        enabled: bool = True,
        *,
        stream: Any = None,
        interactive: bool | None = None,
        clock: Any = time.monotonic,
    ) -> None:
        self.enabled = enabled
        self._stream = stream  # None: sys.stderr at the time of writing (pytest and CliRunner replace it)
        self.interactive = enabled and (_is_terminal(self.stream) if interactive is None else interactive)
        self._clock = clock
        self._progress: Any = None
        self._task: Any = None
        self._run_task: Any = None
        self._last_line = -math.inf
        self._phase: tuple[str, int, int, str] | None = None  # description, done, total, stats
        self._phase_done_shown = False
        self._run: tuple[int, int, str] | None = None  # done, total, stats of the whole run
        self._run_label = "run"  # run_bar's description, which may name its units: "run (steps + batches)"

    @property
    def stream(self) -> Any:
        return self._stream if self._stream is not None else sys.stderr

    def __enter__(self) -> ProgressReporter:
        if self.interactive:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            console = Console(stderr=True) if self._stream is None else Console(file=self._stream, force_terminal=True)
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"),
                TimeElapsedColumn(),
                console=console,
                transient=False,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    # the whole run
    def run_bar(self, total: int, done: int = 0, description: str = "run") -> None:
        """Show the whole run's bar (first, above the phases'), ``done`` of ``total`` already made."""
        self._run, self._run_label = (done, total, ""), description
        if self._progress is not None:
            self._run_task = self._progress.add_task(description, total=total, completed=done, stats="")

    def update_run(self, done: int, total: int, stats: str) -> None:
        """The whole run's counters (samples so far, rate, ETA); plain lines show them beside the phase's."""
        self._run = (done, total, stats)
        if self._progress is not None and self._run_task is not None:
            self._progress.update(self._run_task, completed=done, total=total, stats=stats)

    # the current phase
    def start(self, description: str, total: int, done: int = 0) -> None:
        """A new phase bar; ``done`` is the work a resumed run already has (a checkpoint's steps)."""
        self._phase, self._phase_done_shown = (description, done, total, ""), False
        if self._progress is not None:
            self._task = self._progress.add_task(description, total=total, completed=done, stats="")
        elif self.enabled:
            self._line(force=False)

    def update(self, description: str, done: int, total: int, stats: str) -> None:
        self._phase = (description, done, total, stats)
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=done, total=total, description=description, stats=stats)
        elif self.enabled:
            complete = done >= total and not self._phase_done_shown
            if self._line(force=complete) and complete:
                self._phase_done_shown = True

    def message(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)
        elif self.enabled:
            print(f"[dpsynth] {text}", file=self.stream, flush=True)

    def _line(self, *, force: bool) -> bool:
        """Write the plain progress line if forced or ``LINE_INTERVAL`` has passed; True if written."""
        now = self._clock()
        if not force and now - self._last_line < self.LINE_INTERVAL:
            return False
        self._last_line = now
        parts = []
        if self._phase is not None:
            description, done, total, stats = self._phase
            parts.append(f"{description}: {done}/{total}" + (f" {stats}" if stats else ""))
        if self._run is not None:
            done, total, stats = self._run
            parts.append(f"{self._run_label} {done}/{total}" + (f" {stats}" if stats else ""))
        print("[dpsynth] " + " | ".join(parts), file=self.stream, flush=True)
        return True


def _is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is a terminal; False for a stream without ``isatty`` (a logger's, a notebook's
    replacement of stderr) or a closed one."""
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (OSError, ValueError):  # a closed file
        return False
