"""Subprocess body for the kill-and-resume test: a run with a slow fake generator."""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dpsynth  # noqa: E402
from tests.conftest import FakeEmbedder, FakeGenerator, fake_run_config  # noqa: E402


class SlowFake(FakeGenerator):
    def generate(self, requests, on_completion=None):  # type: ignore[no-untyped-def]
        time.sleep(0.02 * len(requests))
        return super().generate(requests, on_completion)


def main() -> None:
    private, out, resume = sys.argv[1], sys.argv[2], sys.argv[3] == "resume"
    cfg = fake_run_config(
        Path(private),
        Path(out),
        n_synthetic=200,
        privacy=dict(epsilon=2.0, delta=1e-5),
        wasp=dict(rounds=4, q=4),
        generators=[dict(name="a", model="x"), dict(name="b", model="y")],
    )
    res = dpsynth.synthesize(
        cfg,
        generators={"a": SlowFake("a", 1), "b": SlowFake("b", 2)},
        embedder=FakeEmbedder(),
        resume=resume,
        progress=False,
    )
    print(f"DONE {len(res)} {res.privacy['epsilon']}")


if __name__ == "__main__":
    main()
