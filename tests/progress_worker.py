"""Subprocess body for the piped-progress test: ``dpsynth run`` (the real console entry point, stderr a
pipe) with slow fake generators, a fake label judge and a fake embedder.  argv: the run's flags."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dpsynth.generators  # noqa: E402
import dpsynth.methods.prompting  # noqa: E402
from dpsynth.cli import main  # noqa: E402
from dpsynth.progress import ProgressReporter  # noqa: E402
from tests.conftest import FakeEmbedder  # noqa: E402
from tests.test_pipeline import _FakeJudge, _Mislabeller  # noqa: E402


class SlowMislabeller(_Mislabeller):
    def generate(self, requests, on_completion=None):  # type: ignore[no-untyped-def]
        time.sleep(0.03 * len(requests))
        return super().generate(requests, on_completion)


class FakeSentenceEmbedder(FakeEmbedder):
    def __init__(self, *args: object) -> None:
        super().__init__()

    def load(self) -> None:
        pass


def build(gc):  # type: ignore[no-untyped-def]
    return _FakeJudge(gc.name, 2) if gc.name == "j" else SlowMislabeller(gc.name, 1)


dpsynth.generators.build_generator = build  # type: ignore[assignment]
dpsynth.methods.prompting.SentenceTransformerEmbedder = FakeSentenceEmbedder  # type: ignore[assignment,misc]
ProgressReporter.LINE_INTERVAL = float(os.environ.get("PROGRESS_INTERVAL", "1.0"))
main(sys.argv[1:])
