"""Optional dependencies: which pip extra brings which package, and the one-line error when one is missing.

The base install runs WASP, Aug-PE, zero-shot and PEARL (llama.cpp and OpenAI-compatible generators,
sentence-transformers embeddings), ``dpsynth evaluate`` and ``dpsynth report``.  The rest is in extras::

    finetune  peft, opacus, gguf      dp-finetune, the KnowledgeSG client, ``dpsynth audit canaries``
    server    fastapi, uvicorn, gguf  ``dpsynth server start`` (the KnowledgeSG server)
    eval      mauve-text, matplotlib  MAUVE's reference implementation (faiss k-means; without it evaluate
                                      uses the same algorithm with scikit-learn's k-means) and the report's charts
    all       all three

A feature that needs an extra calls :func:`require` where it starts, before any model is loaded or
run directory created, so a missing package is one line naming the extra, not a traceback halfway in.
Availability is checked with ``importlib.util.find_spec``: nothing is imported here.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable

from dpsynth.errors import ConfigError

# extra -> {import name: distribution name}; pyproject.toml's optional-dependencies list the same packages
EXTRAS: dict[str, dict[str, str]] = {
    "finetune": {"peft": "peft", "opacus": "opacus", "gguf": "gguf"},
    "server": {"fastapi": "fastapi", "uvicorn": "uvicorn", "gguf": "gguf"},
    "eval": {"mauve": "mauve-text", "matplotlib": "matplotlib"},
}


class MissingExtraError(ConfigError):
    """A feature needs an optional dependency that is not installed (``pip install 'dpsynth[EXTRA]'``)."""

    def __init__(self, feature: str, extra: str, missing: list[str]) -> None:
        self.feature, self.extra, self.missing = feature, extra, missing
        super().__init__(
            f"{feature} needs the {extra} extra: pip install 'dpsynth[{extra}]' (from a checkout: pip install -e "
            f"'.[{extra}]'; missing: {', '.join(missing)})"
        )


def installed(module: str) -> bool:
    """True if ``module`` (an import name) can be found, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a module without a spec
        return False


def missing(extra: str, modules: Iterable[str] | None = None) -> list[str]:
    """The distributions of ``extra`` (or of its ``modules`` only) that are not installed."""
    packages = EXTRAS[extra]
    names = packages if modules is None else list(modules)
    return [packages[m] for m in names if not installed(m)]


def require(feature: str, extra: str, modules: Iterable[str] | None = None) -> None:
    """Raise :class:`MissingExtraError` unless every package of ``extra`` (or its ``modules``) is installed.

    ``feature`` names what the user asked for, as the message's subject: "dp-finetune",
    "dpsynth server start".
    """
    absent = missing(extra, modules)
    if absent:
        raise MissingExtraError(feature, extra, absent)
