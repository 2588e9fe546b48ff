"""dpsynth: differentially private synthetic data.

>>> import dpsynth
>>> result = dpsynth.synthesize(dpsynth.Config(out="runs/demo"))   # doctest: +SKIP
"""

from dpsynth.api import Checked, SynthesisResult, synthesize
from dpsynth.config import Config, load_config
from dpsynth.errors import DpsynthError

__all__ = ["Checked", "Config", "DpsynthError", "SynthesisResult", "load_config", "synthesize"]
__version__ = "0.1.0"
