"""Subprocess body for the KnowledgeSG shutdown test: ``dpsynth server start`` with stand-in models.

Only the models are stand-ins: the CLI, the signal handling, uvicorn, the job worker and ``run_job`` with
its journals are the real code.  The real models run native threads (llama.cpp's server loop, torch), and
a process whose interpreter exits while one of them is still running, or before llama.cpp was closed,
aborts with "terminate called without an active exception" (status 134).  Python threads do not, so an
exit hook plays the C++ runtime's part: it aborts the same way when the job worker is still alive or the
professional model was never closed.  The stand-in professional also refuses work after ``close()``, as
the real one does.

Usage: ``python tests/knowledgesg_server_worker.py server start --config server.yaml``; the environment
variable ``FAKE_DELAY_S`` sets how long each generation batch takes.
"""

from __future__ import annotations

import atexit
import os
import secrets
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dpsynth import lm  # noqa: E402
from dpsynth.cli import main  # noqa: E402
from dpsynth.errors import GeneratorError  # noqa: E402
from dpsynth.generators.base import Completion, GenerationRequest  # noqa: E402
from dpsynth.knowledgesg import server  # noqa: E402
from tests.test_knowledgesg_unit import TinyLM  # noqa: E402

DELAY_S = float(os.environ.get("FAKE_DELAY_S", "0.3"))
_professionals: list[FakeProfessional] = []


class FakeBase:
    """The public base model: TinyLM's shapes (the adapter is checked and merged for real)."""

    name = "tiny"
    device = "cpu"
    tok = None

    def __init__(self) -> None:
        self.model = TinyLM()


class FakeFormat:
    """Stands in for lm.RecordFormat, which needs a real tokenizer."""

    def __init__(self, tok: Any, ft: Any, task: str = "text") -> None:
        pass

    def prefix(self, label: str) -> list[int]:
        return []


def fake_generate(model: Any, tok: Any, prompt: list[int], n: int, **kw: Any) -> list[str]:
    """The DP model's samples: distinct questions, one batch every DELAY_S seconds."""
    time.sleep(DELAY_S)
    return [f"Question: what does finding {secrets.token_hex(4)} mean in this case?\nAnswer: x" for _ in range(n)]


class FakeProfessional:
    name = "fake-professional"

    def __init__(self) -> None:
        self.closed = False
        _professionals.append(self)

    def generate(self, requests: Sequence[GenerationRequest], on_completion: Any = None) -> list[Completion]:
        if self.closed:
            raise GeneratorError(f"generators[{self.name}]: generate() called after close()")
        time.sleep(DELAY_S)
        return [Completion(text="KEEP: a clear question. The answer is x.") for _ in requests]

    def close(self) -> None:
        self.closed = True


def fake_load(self: server.Service) -> None:
    self.base = FakeBase()
    self.professional = FakeProfessional()


def native_threads_check() -> None:
    """What llama.cpp's and torch's threads do to a process that exits under them."""
    worker_alive = any(t.name == "knowledgesg-worker" and t.is_alive() for t in threading.enumerate())
    if worker_alive or any(not p.closed for p in _professionals):
        sys.stderr.write("terminate called without an active exception\n")
        sys.stderr.flush()
        os._exit(134)


server.Service._load_models = fake_load  # type: ignore[method-assign]
lm.generate = fake_generate
lm.RecordFormat = FakeFormat  # type: ignore[misc, assignment]
atexit.register(native_threads_check)

if __name__ == "__main__":
    main(sys.argv[1:])
