"""dpsynth: differentially private synthetic data.

>>> import dpsynth
>>> result = dpsynth.synthesize(dpsynth.Config(out="runs/demo"))   # doctest: +SKIP
>>> more = dpsynth.extend("runs/demo", 500)   # doctest: +SKIP

``extend`` is ``dpsynth sample``: more samples for a finished run, epsilon unchanged.
"""

from dpsynth.api import Checked, SynthesisResult, extend, synthesize
from dpsynth.config import Config, load_config
from dpsynth.errors import (
    ConfigError,
    DataError,
    DpsynthError,
    GeneratorError,
    PrivacyBudgetError,
    ResumeError,
)

__all__ = [
    "Checked",
    "Config",
    "ConfigError",
    "DataError",
    "DpsynthError",
    "GeneratorError",
    "PrivacyBudgetError",
    "ResumeError",
    "SynthesisResult",
    "extend",
    "load_config",
    "synthesize",
]
__version__ = "0.1.0"
