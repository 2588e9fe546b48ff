"""The whole run's bar of dp-finetune and PEARL (issue 20): steps + batches, an ETA timed per phase,
the run folder first, plain lines on a non-terminal stream, a resumed run starting at the work done."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest

from dpsynth.progress import ProgressReporter
from dpsynth.run_phases import RunPhases, format_eta

LINE = re.compile(
    r"^\[dpsynth\] (?P<phase>.+?): (?P<done>\d+)/(?P<total>\d+).* \| (?P<run>run \(.+?\)) (?P<rd>\d+)/(?P<rt>\d+)"
)


def _run_lines(err: str) -> list[re.Match[str]]:
    return [m for m in map(LINE.match, err.splitlines()) if m]


# ---------------------------------------------------------------- RunPhases alone
def test_eta_is_timed_per_phase_and_names_a_phase_not_timed_yet() -> None:
    now = [100.0]
    buf = io.StringIO()
    with ProgressReporter(stream=buf, clock=lambda: now[0]) as rep:
        phases = [("DP-SGD", 10, 4), ("sampling", 5, 0)]
        run = RunPhases(rep, phases, description="run (steps + batches)", clock=lambda: now[0])
        assert (run.done, run.total) == (4, 15)  # a resumed run starts at the steps already made
        assert run.eta() == "ETA …"  # nothing timed in this process yet
        run.begin("DP-SGD")
        now[0] += 12.0
        run.update("DP-SGD", 6)  # 2 steps in 12 s: 4 left, 24 s
        assert run.eta() == "ETA 24 s + sampling"
        now[0] += 24.0
        run.update("DP-SGD", 10)
        assert run.eta() == "ETA …"  # training done, sampling not timed: no guess
        run.begin("sampling")
        now[0] += 60.0
        run.update("sampling", 1)  # one batch in 60 s: 4 left
        assert run.eta() == f"ETA {format_eta(240.0)}" == "ETA 4 min"
        rep.start("generating", 5)
        now[0] += ProgressReporter.LINE_INTERVAL
        rep.update("generating", 1, 5, "")
    assert buf.getvalue().splitlines()[-1] == "[dpsynth] generating: 1/5 | run (steps + batches) 11/15 ETA 4 min"


def test_a_phase_that_times_its_own_loop_leaves_its_set_up_out_of_the_eta() -> None:
    """Regression: PEARL's first training line said "ETA 3-6 min" for 150 steps of a few ms: the 1-2 s of
    importing torch and building the generator after ``begin`` counted once per step left."""
    now = [0.0]
    with ProgressReporter(enabled=False) as rep:
        run = RunPhases(rep, [("training", 150, 0), ("sampling", 1, 0)], clock=lambda: now[0])
        run.begin("training")
        now[0] += 2.0  # set-up: imports, the generator built
        run.update("training", 1, seconds=0.01)  # the loop's own time for its first step
        assert run.eta() == "ETA 1 s + sampling"
        now[0] += 1.0
        run.update("training", 101, seconds=1.01)
        assert run.eta() == "ETA 0 s + sampling"
        run.update("training", 150)  # no seconds: the last measured time stands
        assert run.eta() == "ETA …"


def test_a_phase_first_seen_mid_way_is_timed_from_there() -> None:
    """KnowledgeSG's server job: the clock starts at the first status, whatever the server did before."""
    now = [0.0]
    with ProgressReporter(enabled=False) as rep:
        run = RunPhases(rep, [("server job", 100, 0)], clock=lambda: now[0])
        run.update("server job", 40)  # 40 kept while this process was away
        now[0] += 10.0
        run.update("server job", 50)
        assert run.eta() == "ETA 50 s" and run.done == 50
        run.update("server job", 100)
        assert run.eta() == "ETA 0 s"


# ---------------------------------------------------------------- dp-finetune on a tiny model
@pytest.fixture
def every_update_is_a_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ProgressReporter, "LINE_INTERVAL", 0.0)


def _finetune_config(private: Path, out: Path, lm: Path) -> Any:
    pytest.importorskip("opacus")
    pytest.importorskip("peft")
    from .test_dp_finetune import _config

    # epochs 1 and a precise count (half the budget): about 10 steps and both labels sampled whatever the
    # noise (at the default share a low noisy count can plan a single step, and a one-step run never shows
    # a timed training ETA)
    return _config(private, out, lm, epochs=1.0, label_count_epsilon_share=0.5)


def test_dp_finetune_shows_the_whole_run_with_an_eta(
    private_csv: Path, tmp_path: Path, tiny_lm: Path, capsys: pytest.CaptureFixture[str], every_update_is_a_line: None
) -> None:
    import dpsynth

    out = tmp_path / "run"
    res = dpsynth.synthesize(_finetune_config(private_csv, out, tiny_lm), progress=True)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert lines[0].startswith("[dpsynth] preparing: ") and lines[1] == f"[dpsynth] run folder: {out}"
    assert "\r" not in err and all(line.startswith("[dpsynth] ") for line in lines), err
    found = _run_lines(err)
    assert {m["run"] for m in found} == {"run (steps + batches)"}
    steps = int(next(m for m in found if m["phase"] == "DP-SGD")["total"])
    total = int(found[0]["rt"])
    assert total == steps + 2  # 2 labels, 4 samples, batches of 4: one batch per label
    training = [line for line, m in zip(lines, map(LINE.match, lines), strict=True) if m and m["phase"] == "DP-SGD"]
    assert any(re.search(r"ETA \d+ s \+ sampling$", line) for line in training), training  # sampling not timed yet
    sampling = [m for m in found if m["phase"] == "generating"]
    assert sampling and all(re.search(r"ETA (\d+ s|…)$", m.string) for m in sampling)  # sampling is timed now
    if len(res.records) == 4:  # the random model wrote every sample (a class may give up after 3x its quota)
        assert lines[-1].startswith("[dpsynth] generating: 4/4 ")
        assert lines[-1].endswith(f"| run (steps + batches) {total}/{total} ETA 0 s")
    assert "SENTINEL" not in err


def test_dp_finetune_resumed_mid_sampling_starts_the_bar_at_the_work_done(
    private_csv: Path,
    tmp_path: Path,
    tiny_lm: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    every_update_is_a_line: None,
) -> None:
    import dpsynth
    from dpsynth.methods import dp_finetune as dpf

    out = tmp_path / "run"
    cfg = _finetune_config(private_csv, out, tiny_lm)
    real, wrote = dpf.append_jsonl, [False]

    def stop_after_the_first_batch(path: Path, rows: Any) -> None:
        if wrote[0]:
            raise KeyboardInterrupt
        real(path, rows)
        wrote[0] = bool(rows)

    monkeypatch.setattr(dpf, "append_jsonl", stop_after_the_first_batch)
    with pytest.raises(KeyboardInterrupt):
        dpsynth.synthesize(cfg, progress=False)
    monkeypatch.undo()
    monkeypatch.setattr(ProgressReporter, "LINE_INTERVAL", 0.0)  # undone with the rest: set again
    capsys.readouterr()
    journalled = len((out / "samples.journal.jsonl").read_text().splitlines())
    dpsynth.synthesize(cfg, resume=True, progress=True)
    err = capsys.readouterr().err
    assert err.startswith("[dpsynth] preparing: ") and f"\n[dpsynth] resuming the run in {out}\n" in err
    first = _run_lines(err)[0]
    steps = int(first["total"])  # DP-SGD is done (its checkpoint) and one label's batch is in the journal
    assert (first["phase"], int(first["rd"]), int(first["rt"])) == ("DP-SGD", steps + 1, steps + 2), err
    # the generating phase's own bar starts at the samples the journal holds (it started at 0)
    generating = next(m for m in _run_lines(err) if m["phase"] == "generating")
    assert journalled > 0 and int(generating["done"]) == journalled, err


def test_a_resumed_wasp_round_starts_its_bar_at_the_samples_it_has(
    private_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], every_update_is_a_line: None
) -> None:
    """Regression: the unfinished round's bar started at 0 ("round 2/3: 0/15" with 8 of them made)."""
    import json

    import dpsynth

    from .conftest import Crash, CrashingGenerator, FakeEmbedder, FakeGenerator, fake_run_config

    cfg = fake_run_config(private_csv, tmp_path / "run")
    with pytest.raises(Crash):  # b's third call: round 2, after a's share of it was journalled
        gens = {"a": FakeGenerator("a", 1), "b": CrashingGenerator("b", 2, crash_at=3)}
        dpsynth.synthesize(cfg, generators=gens, embedder=FakeEmbedder(), progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "samples.journal.jsonl").read_text().splitlines()]
    made = sum(r["round"] == 2 for r in rows)
    assert made > 0
    capsys.readouterr()
    gens = {"a": FakeGenerator("a", 3), "b": FakeGenerator("b", 4)}
    dpsynth.synthesize(cfg, resume=True, generators=gens, embedder=FakeEmbedder(), progress=True)
    err = capsys.readouterr().err
    first = next(line for line in err.splitlines() if line.startswith("[dpsynth] round 2/3"))
    assert first.startswith(f"[dpsynth] round 2/3: {made}/15 | run {len(rows)}/60"), err


def test_a_stream_without_isatty_is_not_a_terminal() -> None:
    """Regression: a stream without ``isatty`` (a logging adapter, some notebooks' stderr) raised an
    AttributeError before anything ran; a closed one a ValueError."""

    class Writer:
        def __init__(self) -> None:
            self.text = ""

        def write(self, text: str) -> None:
            self.text += text

        def flush(self) -> None:
            pass

    w = Writer()
    with ProgressReporter(stream=w) as rep:
        assert not rep.interactive
        rep.message("hello")
    assert w.text == "[dpsynth] hello\n"
    closed = io.StringIO()
    closed.close()
    assert not ProgressReporter(stream=closed).interactive


# ---------------------------------------------------------------- PEARL from the command line
def test_pearl_cli_shows_the_whole_run_with_an_eta(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], every_update_is_a_line: None
) -> None:
    pytest.importorskip("torch")
    from dpsynth.cli import main

    from .test_pearl import _wine_csv

    p = _wine_csv(tmp_path, 80)
    out = tmp_path / "pearl-run"
    argv = ["run", "--method", "pearl", "--private", str(p), "--label-column", "target", "--labels", "0,1,2"]
    argv += ["--epsilon", "1", "--out", str(out), "--output-format", "csv", "--n-synthetic", "30"]
    argv += ["--n-frequencies", "64", "--train-steps", "150", "--train-batch", "16", "--hidden-dim", "32"]
    main(argv)
    captured = capsys.readouterr()
    assert "wrote 30 synthetic records" in captured.out
    lines = captured.err.splitlines()
    assert lines[0].startswith("[dpsynth] preparing: ") and lines[1] == f"[dpsynth] run folder: {out}"
    assert "\r" not in captured.err and all(line.startswith("[dpsynth] ") for line in lines), captured.err
    found = _run_lines(captured.err)
    assert found and {m["run"] for m in found} == {"run (steps + sampling)"} and found[0]["rt"] == "151"
    training = [m.string for m in found if m["phase"] == "pearl: training"]
    assert [int(m["rd"]) for m in found if m["phase"] == "pearl: training"] == [1, 101, 150]  # every 100 steps
    # timed by the training loop itself (a loaded machine may still make it minutes): never "…"
    assert all(re.search(r"ETA \d+ (s|min) \+ sampling$", line) for line in training[:-1]), training
    assert lines[-1] == "[dpsynth] pearl: sampling: 30/30 | run (steps + sampling) 151/151 ETA 0 s"


def test_pearl_piped_lines_stay_rate_limited(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The default interval: a line when a phase starts or completes, else at most one per LINE_INTERVAL."""
    pytest.importorskip("torch")
    import time

    import dpsynth

    from .test_pearl import _cfg, _wine_csv

    t0 = time.monotonic()
    dpsynth.synthesize(_cfg(tmp_path, _wine_csv(tmp_path, 80), pearl={"train_steps": 300}), progress=True)
    seconds = time.monotonic() - t0
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert lines[0].startswith("[dpsynth] preparing: ") and lines[1].startswith("[dpsynth] run folder: ")
    progress = [m.string for m in _run_lines(err)]  # the notes (a schema derived with DP) are not progress
    phases = 2  # training, sampling: a start line and a completion line each
    assert 2 <= len(progress) <= 2 * phases + seconds / ProgressReporter.LINE_INTERVAL + 1, lines
    assert progress[-1].endswith("| run (steps + sampling) 301/301 ETA 0 s")


# ---------------------------------------------------------------- KnowledgeSG's client: DP-SGD, then the server job
def test_knowledgesg_server_job_moves_the_run_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    """The job's kept samples count on the run bar; a job that is over (fewer kept than asked) completes it."""
    from types import SimpleNamespace

    from dpsynth.config import Config
    from dpsynth.methods.knowledgesg import KnowledgeSGClientMethod

    monkeypatch.setattr(ProgressReporter, "LINE_INTERVAL", 0.0)
    statuses = iter([("running", {"kept": 4}), ("done", {"kept": 8})])

    class FakeClient:
        def status(self, job_id: str) -> Any:
            state, progress = next(statuses)
            return SimpleNamespace(job_id=job_id, state=state, stage="sampling", progress=progress)

    m = object.__new__(KnowledgeSGClientMethod)  # the client side only: no server, no model
    m.config = Config(method="knowledgesg", n_synthetic=10, knowledgesg={"server": "http://x", "poll_interval_s": 0.01})
    m.client = FakeClient()
    buf = io.StringIO()
    with ProgressReporter(stream=buf) as rep:
        run = RunPhases(rep, [("DP-SGD", 5, 5), ("server job", 10, 0)], description="run (steps + samples)")
        m.inner = SimpleNamespace(run_phases=run)
        assert m._wait("j1", rep).state == "done"
    lines = buf.getvalue().splitlines()
    assert lines[-2] == "[dpsynth] server job: 4/10 running: sampling kept=4 | run (steps + samples) 9/15 ETA …"
    assert lines[-1] == "[dpsynth] server job: 8/10 done: sampling kept=8 | run (steps + samples) 15/15 ETA 0 s"
