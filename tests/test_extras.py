"""The base install (no extras) runs the README demo, evaluate and report; a feature that needs an extra
says which one in one line (pyproject.toml's optional-dependencies, dpsynth/extras.py).

The subprocess tests hide the extras' packages with ``sys.modules[name] = None`` (an import of them
then fails as if they were not installed, and ``importlib.util.find_spec`` finds nothing), so they
run in the full install that CI uses.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import dpsynth
from dpsynth import extras
from dpsynth.extras import MissingExtraError, require

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
SRC = Path(dpsynth.__file__).resolve().parent.parent  # the dpsynth this test session imports
# every import name the finetune, server and eval extras bring (with what they pull in: starlette, faiss)
BLOCKED = ("peft", "opacus", "gguf", "fastapi", "starlette", "uvicorn", "mauve", "faiss", "matplotlib")
PRELUDE = f"import sys\nfor _name in {BLOCKED!r}:\n    sys.modules[_name] = None\n"


def _run(tmp_path: Path, body: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``body`` in a fresh interpreter where the extras' packages cannot be imported."""
    script = tmp_path / f"script_{abs(hash(body)) % 10**8}.py"
    script.write_text(PRELUDE + textwrap.dedent(body), encoding="utf-8")
    path = os.pathsep.join(p for p in (str(SRC), str(TESTS), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "NO_COLOR": "1"}
    env.pop("DPSYNTH_TOKEN", None)
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300
    )


CLI = "from dpsynth.cli import main\nmain()\n"


# ---------------------------------------------------------------- the helper
def test_require_names_the_extra_and_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opacus", None)
    with pytest.raises(MissingExtraError) as err:
        require("dp-finetune", "finetune", ["opacus"])
    assert str(err.value) == (
        "dp-finetune needs the finetune extra: pip install 'dpsynth[finetune]' "
        "(from a checkout: pip install -e '.[finetune]'; missing: opacus)"
    )
    assert err.value.extra == "finetune" and err.value.missing == ["opacus"]
    monkeypatch.setitem(sys.modules, "mauve", None)
    assert extras.missing("eval", ["mauve"]) == ["mauve-text"]  # the distribution's name, not the module's
    require("anything", "finetune", [])  # nothing asked, nothing missing


def test_extras_match_pyproject() -> None:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]

    def names(reqs: list[str]) -> set[str]:
        return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in reqs}

    optional = project["optional-dependencies"]
    base = names(project["dependencies"])
    for extra, packages in extras.EXTRAS.items():
        assert names(optional[extra]) == set(packages.values()), extra
        assert not base & set(packages.values()), f"{extra}: also in the base dependencies"
    assert optional["all"] == [f"dpsynth[{','.join(extras.EXTRAS)}]"]
    # the README demo's stack stays in the base set
    assert {"sentence-transformers", "xllamacpp", "transformers", "scikit-learn", "datasets"} <= base


# ---------------------------------------------------------------- in-process: MAUVE and the report's charts
def test_mauve_backend_mauve_text_without_it_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from dpsynth.evaluate.fidelity import mauve_score

    monkeypatch.setitem(sys.modules, "mauve", None)
    x = np.random.default_rng(0).normal(size=(40, 8))
    with pytest.raises(MissingExtraError, match=r"MAUVE with backend mauve-text needs the eval extra: .*mauve-text"):
        mauve_score(x, x, backend="mauve-text")
    assert mauve_score(x, x, kmeans_num_redo=1)["backend"] == "fallback-sklearn-kmeans"


def test_charts_without_matplotlib_leave_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    from dpsynth.report import plots

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert not plots.available()
    note = plots.line_chart("x", "FID <per> round", [0, 1], {"a": [1.0, 2.0]})
    assert note is not None and "<svg" not in note
    assert "Chart omitted (FID &lt;per&gt; round)" in note and "dpsynth[eval]" in note


# ---------------------------------------------------------------- subprocesses: the base install
def test_base_imports_without_extras(tmp_path: Path) -> None:
    proc = _run(
        tmp_path,
        f"""
        import json

        import dpsynth, dpsynth.api, dpsynth.cli, dpsynth.evaluate, dpsynth.report, dpsynth.audit
        import dpsynth.lm, dpsynth.methods.dp_finetune, dpsynth.methods.knowledgesg, dpsynth.privacy.dpsgd
        from dpsynth import extras
        loaded = [m for m in {BLOCKED!r} if sys.modules.get(m) is not None]
        print(json.dumps({{"loaded": loaded, "missing": {{e: extras.missing(e) for e in extras.EXTRAS}}}}))
        """,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["loaded"] == []
    assert out["missing"] == {
        "finetune": ["peft", "opacus", "gguf"],
        "server": ["fastapi", "uvicorn", "gguf"],
        "eval": ["mauve-text", "matplotlib"],
    }


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["server", "--help"]], ids=" ".join)
def test_help_without_extras(tmp_path: Path, args: list[str]) -> None:
    proc = _run(tmp_path, CLI, *args)
    assert proc.returncode == 0, proc.stderr
    assert "Usage" in proc.stdout and proc.stderr == ""


def _one_line_error(proc: subprocess.CompletedProcess[str], message: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [f"error: {message}"], proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_dp_finetune_without_the_extra_is_one_line(tmp_path: Path, private_csv: Path) -> None:
    out = tmp_path / "ft"
    data = ["--private", str(private_csv), "--text-column", "review", "--label-column", "sentiment"]
    proc = _run(tmp_path, CLI, "run", "--method", "dp-finetune", *data, "--labels", "0=neg,1=pos", "--out", str(out))
    _one_line_error(
        proc,
        "dp-finetune needs the finetune extra: pip install 'dpsynth[finetune]' "
        "(from a checkout: pip install -e '.[finetune]'; missing: peft, opacus, gguf)",
    )
    assert not out.exists()  # refused before the run directory


def test_knowledgesg_client_without_the_extra_is_one_line(tmp_path: Path) -> None:
    out = tmp_path / "ks"
    proc = _run(tmp_path, CLI, "client", "run", "--server", "http://127.0.0.1:9", "--out", str(out))
    _one_line_error(
        proc,
        "the KnowledgeSG client (--method knowledgesg) needs the finetune extra: pip install 'dpsynth[finetune]' "
        "(from a checkout: pip install -e '.[finetune]'; missing: peft, opacus, gguf)",
    )
    assert not out.exists()


def test_server_start_without_the_extra_is_one_line_and_token_still_works(tmp_path: Path) -> None:
    proc = _run(tmp_path, CLI, "server", "start", "--config", str(tmp_path / "server.yaml"))
    _one_line_error(
        proc,
        "dpsynth server start needs the server extra: pip install 'dpsynth[server]' "
        "(from a checkout: pip install -e '.[server]'; missing: fastapi, uvicorn, gguf)",
    )
    token = _run(tmp_path, CLI, "server", "token", "alice")  # a hash and a line of YAML: no server needed
    assert token.returncode == 0, token.stderr
    assert re.search(r"alice: \{token_sha256: [0-9a-f]{64}\}", token.stdout)


def test_audit_canaries_without_the_extra_is_one_line(tmp_path: Path) -> None:
    proc = _run(tmp_path, CLI, "audit", "canaries", "--out", str(tmp_path / "audit.json"))
    _one_line_error(
        proc,
        "dpsynth audit canaries needs the finetune extra: pip install 'dpsynth[finetune]' "
        "(from a checkout: pip install -e '.[finetune]'; missing: peft, opacus, gguf)",
    )


def test_wasp_evaluate_report_without_extras(tmp_path: Path, private_csv: Path) -> None:
    """The README demo's path (WASP, here with fake generators and embedder), then evaluate and report."""
    run = tmp_path / "run"
    proc = _run(
        tmp_path,
        """
        import json
        from pathlib import Path

        import dpsynth
        from conftest import FakeEmbedder, FakeGenerator, fake_run_config
        from dpsynth.evaluate import evaluate
        from dpsynth.report import write_report

        private, run = Path(sys.argv[1]), Path(sys.argv[2])
        gens = {"a": FakeGenerator("a", 1), "b": FakeGenerator("b", 2)}
        cfg = fake_run_config(private, run)
        res = dpsynth.synthesize(cfg, generators=gens, embedder=FakeEmbedder(), progress=False)
        # real held-out records (never the private records, in any form: evaluate refuses them)
        held_out = private.with_name("held_out.csv")
        rows = private.read_text(encoding="utf-8").rstrip("\\n")
        held_out.write_text(rows.replace("\\n", "\\nheld-out review ") + "\\n", encoding="utf-8")
        ev = evaluate(
            run, held_out, test_text_column="review", test_label_column="sentiment", embedder=FakeEmbedder(),
            cache_dir=run.parent / "cache", seeds=[0],
        )
        page = write_report(run).read_text(encoding="utf-8")
        print(json.dumps({
            "n": len(res), "epsilon": res.privacy["epsilon"], "accuracy": ev["headline"]["value"],
            "mauve": ev["fidelity"]["mauve"], "backend": ev["fidelity"]["mauve_backend"], "notes": ev["notes"],
            "svg": page.count("<svg"), "omitted": page.count("Chart omitted"),
        }))
        """,
        str(private_csv),
        str(run),
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["n"] == 60 and 0 < out["epsilon"] <= 4.0 + 1e-9
    assert 0.0 <= out["accuracy"] <= 1.0
    # MAUVE without mauve-text: the same algorithm on scikit-learn's k-means, and a note that says so
    assert 0.0 <= out["mauve"] <= 1.0 and out["backend"] == "fallback-sklearn-kmeans"
    assert any("mauve-text is not installed" in n and "dpsynth[eval]" in n for n in out["notes"])
    # the report renders, with a note where each chart would be
    assert out["svg"] == 0 and out["omitted"] >= 2
