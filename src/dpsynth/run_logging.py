"""The log of a run: run.log in its directory, and warnings on the console where nobody else prints them.

Kept apart from the run directory's bookkeeping (run.py) because the KnowledgeSG server logs the same way
to its own file."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

LOGGER_NAME = "dpsynth"


def setup_logging(log_path: Path, verbose: bool = False) -> list[logging.Handler]:
    """Log to run.log (always) and to stderr (warnings, or everything with verbose).

    Returns the handlers so the caller can remove them when the run ends; the
    logger still propagates, so applications and pytest's caplog see the records.
    """
    logger = logging.getLogger(LOGGER_NAME)
    fh = logging.FileHandler(log_path, encoding="utf-8")
    fh._dpsynth_previous_level = logger.level  # type: ignore[attr-defined]  # restored by remove_logging
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handlers: list[logging.Handler] = [fh]
    if not logging.getLogger().handlers:  # nobody else prints warnings: do it ourselves
        sh = logging.StreamHandler(sys.stderr)
        sh.setLevel(logging.INFO if verbose else logging.WARNING)
        sh.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        handlers.append(sh)
    for h in handlers:
        logger.addHandler(h)
    return handlers


def remove_logging(handlers: list[logging.Handler]) -> None:
    logger = logging.getLogger(LOGGER_NAME)
    for h in handlers:
        if hasattr(h, "_dpsynth_previous_level"):
            logger.setLevel(h._dpsynth_previous_level)
        logger.removeHandler(h)
        h.close()
