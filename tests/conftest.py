"""Shared fixtures.  The fake generator and embedder live here, never in the package."""

from __future__ import annotations

import hashlib
import os
import random
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from dpsynth.config import Config  # noqa: E402
from dpsynth.generators.base import Completion, GenerationRequest  # noqa: E402

WORDS = [
    *("great", "awful", "film", "plot", "actor", "boring", "loved"),
    *("hated", "music", "scene", "ending", "story", "dull", "brilliant"),
]


def fake_run_config(private: Path, out: Path, **overrides: object) -> Config:
    """The WASP config the fake-generator tests share: two fake generators ("a" chat, "b" completion),
    a movie-review CSV with columns review/sentiment, eps = 4, 3 rounds, Q = 4.  ``overrides``
    replace top-level fields."""
    base: dict[str, object] = dict(
        method="wasp",
        n_synthetic=60,
        out=str(out),
        data=dict(
            private=str(private),
            text_column="review",
            label_column="sentiment",
            labels={"0": "negative", "1": "positive"},
            task="movie review",
        ),
        privacy=dict(epsilon=4.0, delta=1e-5),
        wasp=dict(rounds=3, q=4),
        generators=[dict(name="a", model="x"), dict(name="b", model="y", prompt_format="completion")],
        seed=0,
    )
    base.update(overrides)
    return Config.model_validate(base)


class FakeGenerator:
    """Writes short reviews whose words depend on the label named in the prompt; records every prompt."""

    def __init__(self, name: str = "fake", seed: int = 0, fail: bool = False) -> None:
        self.name = name
        self.prompts: list[str] = []
        self.rng = random.Random(seed)
        self.fail = fail
        self._lock = threading.Lock()

    def generate(self, requests: Sequence[GenerationRequest], on_completion=None) -> list[Completion]:
        out = []
        for r in requests:
            text = r.prompt if r.prompt is not None else "\n".join(m.content for m in r.messages or ())
            with self._lock:
                self.prompts.append(text)
            if self.fail:
                c = Completion("", error="backend down")
            else:
                mood = "positive" if "positive" in text else "negative"
                words = [self.rng.choice(WORDS) for _ in range(12)]
                c = Completion(f"A {mood} take: " + " ".join(words) + f" #{self.rng.randrange(10**9)}", 16, 40)
            if on_completion:
                on_completion(c)
            out.append(c)
        return out

    def close(self) -> None:
        pass


class Crash(Exception):
    """Stands for a process killed mid-run (CrashingGenerator raises it)."""


class CrashingGenerator(FakeGenerator):
    """A FakeGenerator whose ``crash_at``-th generate() call raises ``Crash`` (None: never)."""

    def __init__(self, name: str = "fake", seed: int = 0, crash_at: int | None = None) -> None:
        super().__init__(name, seed)
        self.crash_at = crash_at
        self.calls = 0

    def generate(self, requests: Sequence[GenerationRequest], on_completion=None) -> list[Completion]:
        self.calls += 1
        if self.crash_at is not None and self.calls >= self.crash_at:
            raise Crash(f"{self.name}: killed at call {self.calls}")
        return super().generate(requests, on_completion)


class FakeEmbedder:
    """Deterministic hashed bag-of-words embeddings (64-d, normalised)."""

    name = "fake-embedder"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def encode(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        out = np.zeros((len(texts), 64), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                h = int(hashlib.md5(w.encode()).hexdigest(), 16)
                out[i, h % 64] += 1.0
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)
        return out


@pytest.fixture
def private_csv(tmp_path: Path) -> Path:
    rng = random.Random(1)
    rows = []
    for i in range(40):
        lab = "1" if i % 2 else "0"
        words = [rng.choice(WORDS) for _ in range(15)]
        rows.append({"review": f"SENTINEL{i:04d}XYZ " + " ".join(words), "sentiment": lab})
    p = tmp_path / "private.csv"
    pd.DataFrame(rows).to_csv(p, index=False)
    return p
