"""The benchmark scripts' bookkeeping (bench/, not a package): results files, resumed rows, provenance and
the tables built from them.  No model is loaded: generation and evaluation are stubbed where a script
would call them."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))  # the scripts import their shared helpers as "common"


def _bench(name: str, folder: Path = BENCH) -> Any:
    """A script of bench/ loaded from its file (a fresh module each time)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", folder / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"rows": rows}), encoding="utf-8")


# ------------------------------------------------------------------ results files (common.py, quality.py)


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs RLIMIT_FSIZE (POSIX)")
def test_write_result_keeps_the_old_file_when_a_write_fails(tmp_path: Path) -> None:
    """A write that stops part way (here the file-size limit; a kill or a full disk alike) leaves the results
    file as it was: the rows finished before are never lost to a truncated JSON file."""
    old = json.dumps({"rows": [{"row": "done", "i": i} for i in range(10)]})
    (tmp_path / "quality.json").write_text(old)
    script = textwrap.dedent(
        f"""
        import resource, signal, sys
        from pathlib import Path
        sys.path.insert(0, {str(BENCH)!r})
        import common
        common.RESULTS = Path({str(tmp_path)!r})
        common.machine = lambda: {{}}
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) part way
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        try:
            common.write_result("quality", {{"rows": [{{"row": "x" * 100, "i": i}} for i in range(1000)]}})
        except OSError:
            sys.exit(3)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert (tmp_path / "quality.json").read_text() == old
    assert [p.name for p in tmp_path.iterdir()] == ["quality.json"]  # no temporary file left behind


def _quality(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, dict[str, list[Any]]]:
    """bench/quality.py with its results and kept sets under tmp_path, and no model: the embedder, the
    evaluation and the results writer are stubs; dpsynth.synthesize is the real one."""
    q = _bench("quality")
    calls: dict[str, list[Any]] = {"evaluate": [], "write": []}
    monkeypatch.setattr(q, "RESULTS", tmp_path / "results" / "quality.json")
    monkeypatch.setattr(q, "SETS", tmp_path / "results" / "quality_sets")
    monkeypatch.setattr(q, "default_embedder", lambda: None)

    def evaluate(syn: Any, *a: Any, **k: Any) -> dict[str, Any]:
        calls["evaluate"].append(syn)
        return {"utility": {"logreg": {"accuracy": {"mean": 0.5, "std": 0.0}}}, "synthetic": {"n": 100}}

    monkeypatch.setattr(q, "evaluate", evaluate)
    monkeypatch.setattr(q, "write_result", lambda name, payload: calls["write"].append(payload))
    return q, calls


def test_quality_refuses_a_damaged_results_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A results file cut short is a one-line error naming it, before any run: not a traceback, and not a
    fresh start that would overwrite the rows it holds."""
    q, calls = _quality(tmp_path, monkeypatch)
    damaged = tmp_path / "results" / "quality.json"
    damaged.parent.mkdir(parents=True)
    damaged.write_text('{"rows": [{"row": "wasp", "epsilon": 4.0, "se')
    monkeypatch.setattr(sys, "argv", ["quality.py", "--rows", "wasp", "--out", str(tmp_path / "runs")])
    with pytest.raises(SystemExit) as exc:
        q.main()
    assert str(damaged) in str(exc.value) and "not valid JSON" in str(exc.value)
    assert damaged.read_text() == '{"rows": [{"row": "wasp", "epsilon": 4.0, "se'
    assert calls == {"evaluate": [], "write": []}


def _finished_run(q: Any, run: Path, row: str, eps: float, n: int) -> None:
    """A finished run directory as dpsynth leaves it, made with the settings of ``row`` at ``eps`` and ``n``."""
    from dpsynth.run import dump_config_yaml

    run.mkdir(parents=True)
    (run / "config.yaml").write_text(dump_config_yaml(q.row_config(row, eps, 0, n, 100, run)))
    (run / "privacy.json").write_text(json.dumps({"epsilon": eps}))
    (run / "synthetic.jsonl").write_text('{"text": "stale a", "label": "0"}\n{"text": "stale b", "label": "1"}\n')


def test_quality_refuses_a_finished_run_made_with_other_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A finished run in the row's directory made with other settings (epsilon 1, no judge, N = 2) is refused
    with the settings that differ, never evaluated and kept under the row's name."""
    q, calls = _quality(tmp_path, monkeypatch)
    root = tmp_path / "runs"
    run = root / "wasp+judge-eps4-n100-m100-s0"
    _finished_run(q, run, "wasp", 1.0, 2)
    monkeypatch.setattr(sys, "argv", ["quality.py", "--rows", "wasp+judge", "--out", str(root)])
    with pytest.raises(SystemExit) as exc:
        q.main()
    assert str(run) in str(exc.value) and "privacy.epsilon" in str(exc.value) and "wasp.label_judge" in str(exc.value)
    assert calls == {"evaluate": [], "write": []}
    assert not (tmp_path / "results" / "quality_sets").exists()


def test_quality_row_of_a_finished_run_records_its_code_and_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A finished run made with the row's settings is evaluated without generating again, and its row says
    which code made the run (not the code evaluating it now) and which settings."""
    q, calls = _quality(tmp_path, monkeypatch)
    monkeypatch.setattr(q, "code_version", lambda: "def456")  # the code of this process
    root = tmp_path / "runs"
    run = root / "wasp+judge-eps4-n100-m100-s0"
    _finished_run(q, run, "wasp+judge", 4.0, 100)
    (root / f"{run.name}.code").write_text("abc123-dirty-0a1b2c3d\n")  # noted by the process that made it
    monkeypatch.setattr(sys, "argv", ["quality.py", "--rows", "wasp+judge", "--out", str(root)])
    q.main()
    assert calls["evaluate"] == [run]
    row = calls["write"][-1]["rows"][-1]
    assert row["code"] == "abc123-dirty-0a1b2c3d+def456"  # made by one code, finished (resumed) by another
    assert row["config_hash"] == q.config_hash(q.row_config("wasp+judge", 4.0, 0, 100, 100, run))
    # a run made before runs were noted: its code is unknown, not this process's
    common = _bench("common")
    old = root / "old-run"
    old.mkdir()
    assert common.run_code(old, "def456") is None and common.run_code(old, "def456") is None
    assert common.run_code(root / "new-run", "def456") == "def456"  # a run this process begins


def test_config_hash_ignores_seeds_and_paths_only() -> None:
    q = _bench("quality")
    h = q.config_hash
    base = h(q.row_config("wasp+judge", 4.0, 0, 100, 100, Path("/a")))
    assert base == h(q.row_config("wasp+judge", 4.0, 2, 100, 100, Path("/b")))
    assert base != h(q.row_config("wasp+judge", 1.0, 0, 100, 100, Path("/a")))
    assert base != h(q.row_config("wasp", 4.0, 0, 100, 100, Path("/a")))
    assert base != h(q.row_config("wasp+judge", 4.0, 0, 300, 100, Path("/a")))


def test_frozen_finetune_row_differs_from_dp_finetune_only_in_its_learning_rate() -> None:
    """dp-finetune-frozen is dp-finetune's baseline: the same budget, data, prompts and schedule, a learning
    rate too small to move the adapter.  Any other difference would make the pair compare two settings."""
    q = _bench("quality")
    ft = q.row_config("dp-finetune", 4.0, 1, 100, 100, Path("/a")).model_dump()
    frozen = q.row_config("dp-finetune-frozen", 4.0, 1, 100, 100, Path("/a")).model_dump()
    assert frozen["method"] == "dp-finetune" and frozen["finetune"].pop("learning_rate") == 1e-12
    assert ft["finetune"].pop("learning_rate") > 1e-6
    assert frozen == ft
    with pytest.raises(ValueError, match="apply to rows of the WASP pipeline"):
        q.row_config("dp-finetune-frozen+judge", 4.0, 1, 100, 100, Path("/a"))
    slow = q.row_config("dp-finetune-lr0.0005", 4.0, 1, 100, 100, Path("/a")).model_dump()
    assert slow["finetune"].pop("learning_rate") == 0.0005 and slow == frozen  # only the learning rate differs
    sgd = q.row_config("dp-finetune-sgd0.005", 4.0, 1, 100, 100, Path("/a")).model_dump()
    assert sgd["finetune"].pop("optimizer") == "sgd" and frozen["finetune"].pop("optimizer") == "adamw"
    assert sgd["finetune"].pop("learning_rate") == 0.005 and sgd == frozen


def test_code_version_marks_uncommitted_changes_under_src(tmp_path: Path) -> None:
    common = _bench("common")
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "c"], check=True)
    clean = common.code_version(tmp_path)
    assert clean and not clean.endswith("-dirty")
    (tmp_path / "notes.txt").write_text("outside src/\n")
    assert common.code_version(tmp_path) == clean
    (tmp_path / "src" / "a.py").write_text("x = 2\n")
    first = common.code_version(tmp_path)
    assert first is not None and first.startswith(f"{clean}-dirty-")
    (tmp_path / "src" / "a.py").write_text("x = 3\n")  # another uncommitted tree: another code
    assert common.code_version(tmp_path) not in (first, None)
    assert common.code_version(tmp_path / "none") is None


# ------------------------------------------------------------------ pair_table.py


def _row(row: str, eps: float, seed: int, acc: float, code: str | None = None, **more: Any) -> dict[str, Any]:
    r = {"row": row, "epsilon": eps, "seed": seed, "n": 100, "m": 100, "accuracy_mean": acc, **more}
    return r if code is None else {**r, "code": code}


@pytest.mark.parametrize(
    ("wasp_code", "zero_code", "mixed"),
    [(None, None, False), ("a1", "a1", False), ("a1", "b2", True), ("a1", None, True), (None, "b2", True)],
)
def test_pair_table_marks_pairs_from_different_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wasp_code: str | None, zero_code: str | None, mixed: bool
) -> None:
    """A pair whose two runs carry different code versions (or only one records it) is marked; rows of before
    the field, paired with each other, give the table as it always was."""
    pt = _bench("pair_table")
    monkeypatch.setattr(pt, "RESULTS", tmp_path)
    rows = [
        _row("zero-shot+judge", 0.0, 0, 0.70),
        _row("wasp+judge", 4.0, 0, 0.72),
        _row("zero-shot+judge", 0.0, 1, 0.71, zero_code),
        _row("wasp+judge", 4.0, 1, 0.70, wasp_code),
    ]
    _write_rows(tmp_path / "quality.json", rows)
    _write_rows(tmp_path / "quality_newsgroups.json", [])
    lines = pt.table().splitlines()
    if mixed:
        assert lines[2].endswith("| +0.005* (1 of 2 ahead: +0.020 / -0.010*) | - |")
        assert lines[-1] == pt.LEGEND and lines[-2] == ""
    else:
        assert lines[2].endswith("| +0.005 (1 of 2 ahead: +0.020 / -0.010) | - |")
        assert len(lines) == 3


# ------------------------------------------------------------------ quality_table.py


def test_quality_table_keeps_a_short_run_in_its_cell(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A run that released fewer samples than it asked for (99 of 100) stays in its cell's mean, and the cell
    says so; rows of real records (their N is how many they train on) are not short."""
    folder = tmp_path / "bench"
    folder.mkdir()
    shutil.copy(BENCH / "quality_table.py", folder)
    stats = {"fid": 0.5, "mauve": 0.2, "label_consistency": 0.9, "wall_seconds": 10.0, "tokens": 100}
    rows = [
        _row("wasp+judge", 4.0, 0, 0.70, n_synthetic=100, **stats),
        _row("wasp+judge", 4.0, 1, 0.73, n_synthetic=99, **stats),
        _row("wasp+judge", 4.0, 2, 0.76, n_synthetic=100, **stats),
        _row("only-private", float("inf"), 0, 0.80, n_synthetic=100, **stats),
        {**_row("only-private", float("inf"), 0, 0.82, n_synthetic=300, **stats), "m": 300},
    ]
    _write_rows(folder / "results" / "quality.json", rows)
    _bench("quality_table", folder).print_tables("imdb")
    out = capsys.readouterr().out
    assert "| wasp+judge |  |  | 0.730 +- 0.030 (3) (one run released 99) |  |  |" in out
    assert "| wasp+judge | 4 | 100 | 100 | 0,1,2 | 0.730 +- 0.030 (one run released 99) |" in out
    assert "| wasp+judge | 1 | 4 | 100 | 99 of 100 | 0.730 |" in out
    assert "| only-private |  |  |  | 0.800 (1) | 50.00 |" in out
    assert "| only-private | inf (not DP) | 300 | 300 | 0 | 0.820 |" in out
    assert "released 300" not in out and "of 100" not in out.replace("99 of 100", "")


# ------------------------------------------------------------------ repeat_table.py


def _repeat_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, draw0_code: str | None, *argv: str
) -> dict[str, Any]:
    """bench/repeat_table.py on one group: draw 0 (quality.json, its code as given) and draws 1, 2 (code "new")."""
    rt = _bench("repeat_table")
    monkeypatch.setattr(rt, "RESULTS", tmp_path)
    written: list[dict[str, Any]] = []
    monkeypatch.setattr(rt, "write_result", lambda name, payload: written.append(payload))
    _write_rows(tmp_path / "quality.json", [_row("wasp+judge", 4.0, 0, 0.60, draw0_code)])
    repeats = [_row("wasp+judge", 4.0, 0, acc, "new", repeat=d) for d, acc in ((1, 0.70), (2, 0.72))]
    _write_rows(tmp_path / "quality_repeats.json", repeats)
    monkeypatch.setattr(sys, "argv", ["repeat_table.py", *argv])
    rt.main()
    (group,) = written[-1]["groups"]
    return group


def test_repeat_table_leaves_out_a_draw_of_other_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Draw 0 recorded other code than draws 1 and 2: the same-seed spread is that of draws 1 and 2, and the
    table names the draw left out (--keep-mixed keeps it)."""
    group = _repeat_table(tmp_path, monkeypatch, "old")
    assert group["same_seed"]["mean"] == pytest.approx(0.71) and group["same_seed"]["range"] == pytest.approx(0.02)
    assert group["left_out"] == {"0": 0.60}
    assert "| 1, 2 | 0.700 / 0.720 | code new; left out: draw 0 (old) | 0.710 |" in capsys.readouterr().out
    group = _repeat_table(tmp_path, monkeypatch, "old", "--keep-mixed")
    assert group["same_seed"]["mean"] == pytest.approx(0.6733, abs=1e-4) and group["left_out"] == {}


def test_repeat_table_labels_draws_without_provenance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Draw 0 written before rows recorded their code: kept, and the table says it records none."""
    group = _repeat_table(tmp_path, monkeypatch, None)
    assert group["same_seed"]["mean"] == pytest.approx(0.6733, abs=1e-4)
    assert group["sources"] == {"0": "quality.json", "1": "quality_repeats.json", "2": "quality_repeats.json"}
    assert "| 0, 1, 2 | 0.600 / 0.700 / 0.720 | code new; not recorded for draw 0 |" in capsys.readouterr().out


# ------------------------------------------------------------------ profile_wasp.py


def _profiled(method: str, wall: float, tok_s: float, process: str | None) -> dict[str, Any]:
    gen = {"accepted_completion_tokens_est": 1000}
    run = {
        "method": method,
        "command": "c",
        "wall_s": wall,
        "generators": {"a": gen},
        "ceiling": {"a": {"tok_s": tok_s}},
    }
    return run if process is None else {**run, "process": process}


@pytest.mark.parametrize(
    ("zero_shot", "ratio", "basis"),
    [
        (_profiled("zero-shot", 100.0, 100.0, "p1"), 1.5, "one process"),
        (_profiled("zero-shot", 100.0, 100.0, None), 1.5, "one process"),  # before process ids: same ceilings
        # another process, whose machine decoded at half the speed: its 100 s are 50 s at the wasp process's
        (_profiled("zero-shot", 100.0, 50.0, "p2"), 3.0, "two processes"),
        (_profiled("zero-shot", 100.0, 50.0, None), 3.0, "two processes"),
    ],
)
def test_profile_wasp_wall_ratio_is_taken_within_one_machine_state(
    zero_shot: dict[str, Any], ratio: float, basis: str
) -> None:
    pw = _bench("profile_wasp")
    wasp_run = _profiled("wasp", 150.0, 100.0, "p1" if "process" in zero_shot else None)
    summary = pw.summarize("c", SimpleNamespace(source="embedded:imdb"), [zero_shot, wasp_run], ["zero-shot", "wasp"])
    assert summary["wasp_over_zero_shot_wall"] == ratio
    assert summary["wasp_over_zero_shot_wall_basis"].startswith(basis)


def test_dpsgd_signal_gradients_are_each_records_own_and_clipped(tiny_lm: Path) -> None:
    """diag_dpsgd_signal reads one gradient per record: clipped to C, and the same as a lone record's
    gradient (the per-record loss does not mix records), so its signal and noise figures are of DP-SGD's."""
    torch = pytest.importorskip("torch")
    from dpsynth.config import FinetuneConfig

    diag = _bench("diag_dpsgd_signal")
    texts, labels = ["great film, loved it " * 3, "awful, dull and long " * 3, "fine"], ["pos", "neg", "pos"]
    ft = FinetuneConfig(model=str(tiny_lm), max_length=96, max_grad_norm=1e-3, precision="fp32")
    grads, norms = diag.clipped_gradients(texts, labels, "review", ft)
    assert grads.shape[0] == 3 and (norms > 1e-3).all()
    assert np.allclose(np.linalg.norm(grads, axis=1), 1e-3)  # every record clipped to C here
    loose = FinetuneConfig(model=str(tiny_lm), max_length=96, max_grad_norm=1e6, precision="fp32")
    raw, _ = diag.clipped_gradients(texts, labels, "review", loose)
    alone, _ = diag.clipped_gradients(texts[1:2], labels[1:2], "review", loose)
    assert np.allclose(raw[1], alone[0], atol=1e-6) and torch is not None
