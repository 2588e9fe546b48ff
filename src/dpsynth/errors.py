"""User-facing errors.

Every mistake a user can make (bad file, bad field, bad backend) surfaces as a
``DpsynthError`` whose message is one line naming the field or file and the fix.
The CLI prints only that line; a traceback is reserved for bugs in dpsynth.
Messages never contain private text: they name rows and columns, not values.
"""

from __future__ import annotations

from typing import Any


def shown_path(path: Any, width: int = 120) -> str:
    """A path short enough for a one-line error: its start and end, the middle elided."""
    text = str(path)
    return text if len(text) <= width else f"{text[: width // 2]}...{text[-(width // 2 - 3) :]}"


class DpsynthError(Exception):
    """Base class for every error a user can cause and fix."""


class ConfigError(DpsynthError):
    """A configuration field is invalid."""


class DataError(DpsynthError):
    """An input data file is missing, unreadable or inconsistent with the config."""


class GeneratorError(DpsynthError):
    """A generator backend failed (missing model, timeout, junk output)."""


class PrivacyBudgetError(DpsynthError):
    """An action would exceed the configured privacy budget."""


class ResumeError(DpsynthError):
    """A run directory cannot be resumed with the given configuration."""
