"""A real process killed after round 2 resumes without re-spending; sentinels never leak."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

import dpsynth
from dpsynth.config import Config
from dpsynth.errors import ConfigError, DataError, DpsynthError, ResumeError
from dpsynth.io import read_jsonl_tolerant
from dpsynth.methods import wasp_plan
from dpsynth.privacy.accountant import GaussianPlan
from dpsynth.privacy.ledger import Ledger
from dpsynth.privacy.voting import MIN_GRID_STEPS, top_q_moves, top_q_sensitivity
from dpsynth.report import build_report

from .conftest import Crash, CrashingGenerator, FakeEmbedder, FakeGenerator, fake_run_config

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_killed_run_resumes_on_the_same_ledger(private_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    worker = [sys.executable, str(ROOT / "tests" / "resume_worker.py"), str(private_csv), str(out)]
    proc = subprocess.Popen([*worker, "new"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ledger = out / "ledger.json"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if ledger.exists():
                try:
                    if len(json.loads(ledger.read_text())["releases"]) >= 2:
                        break
                except json.JSONDecodeError:
                    pass
            if proc.poll() is not None:
                pytest.fail(f"worker ended early: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.05)
        else:
            pytest.fail("worker never reached round 2")
        time.sleep(0.3)  # let it generate part of round 2
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    before = [json.loads(x) for x in (out / "samples.journal.jsonl").read_text().splitlines() if x.strip()]
    released = json.loads(ledger.read_text())["releases"]
    assert len(released) in (2, 3) and not (out / "synthetic.jsonl").exists()
    vote2 = (out / "votes" / "round_2.npz").read_bytes()

    done = subprocess.run([*worker, "resume"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    final = [json.loads(x) for x in (out / "synthetic.jsonl").read_text().splitlines()]
    assert len(final) == 200
    final_texts = {r["text"] for r in final}
    assert all(s["text"] in final_texts for s in before), "samples generated before the kill were lost"
    assert (out / "votes" / "round_2.npz").read_bytes() == vote2, "round 2 was voted again"
    led = json.loads(ledger.read_text())
    assert [r["key"] for r in led["releases"]] == ["round_1", "round_2", "round_3", "round_4"]
    report = json.loads((out / "privacy.json").read_text())
    plan = GaussianPlan.calibrate_discrete(2.0, 1e-5, 4, top_q_moves(4, True), 3, MIN_GRID_STEPS)
    assert report["mechanisms"][0]["count"] == 4
    assert report["mechanisms"][0]["sigma"] == pytest.approx(plan.sigma)
    assert report["epsilon"] == pytest.approx(2.0, rel=1e-3) and report["epsilon"] <= 2.0

    # a third attempt cannot spend more: the run is complete and the ledger full
    again = subprocess.run([*worker, "resume"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0
    assert len(json.loads(ledger.read_text())["releases"]) == 4


@pytest.mark.parametrize("variation", ["contrastive", "keywords"])
def test_sentinels_never_leave_the_vote(private_csv: Path, tmp_path: Path, caplog, capsys, variation: str) -> None:
    caplog.set_level(logging.DEBUG)
    # a sentinel word of letters only as well, which the keyword variation's word pattern would pick up
    rows = pd.read_csv(private_csv, dtype=str)
    rows["review"] = rows["review"].str.replace("XYZ ", "XYZ Qprivmarkq qprivmarkq ", regex=False)
    private_csv = tmp_path / "private_words.csv"
    rows.to_csv(private_csv, index=False)
    out = tmp_path / "leak"
    cfg = fake_run_config(private_csv, out, n_synthetic=80, wasp=dict(rounds=3, q=4, variation=variation))
    gens = {"a": FakeGenerator("a"), "b": FakeGenerator("b")}
    emb = FakeEmbedder()
    dpsynth.synthesize(cfg, generators=gens, embedder=emb, progress=True)
    # the private set really was read (by the embedder, one record per call: PrivateData.embed)
    private_texts = set(rows["review"])
    private_calls = [c for c in emb.calls if all(t in private_texts for t in c)]
    assert len(private_calls) == len(rows) and "Qprivmarkq" in " ".join(t for c in private_calls for t in c)
    if variation == "keywords":  # the variation really ran: its words are in rounds.json
        assert json.loads((out / "rounds.json").read_text())[1]["keywords"]
    prompts = gens["a"].prompts + gens["b"].prompts
    assert prompts and not any("SENTINEL" in p or "privmark" in p.lower() for p in prompts)
    for f in out.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            assert b"SENTINEL" not in data and b"privmark" not in data.lower(), f"sentinel in {f.name}"
    assert "SENTINEL" not in caplog.text and "privmark" not in caplog.text.lower()
    captured = capsys.readouterr()
    assert "SENTINEL" not in captured.out + captured.err and "privmark" not in (captured.out + captured.err).lower()
    # private embeddings are not cached with the synthetic ones
    cached = sum(len(c) for c in emb.calls if c not in private_calls)
    assert cached == len(
        {
            json.loads(x)["text"]
            for x in (out / "samples.journal.jsonl").read_text().splitlines()
            if json.loads(x)["round"] < 3
        }
    )

    # an error raised mid-run names no private text either
    cfg2 = cfg.model_copy(update={"out": str(tmp_path / "leak2")})
    with pytest.raises(DpsynthError) as ei:
        dpsynth.synthesize(
            cfg2,
            generators={"a": FakeGenerator("a", fail=True), "b": FakeGenerator("b")},
            embedder=FakeEmbedder(),
            progress=False,
        )
    assert "SENTINEL" not in str(ei.value)


# ---------------------------------------------------------------- resume: what is stored, what may change
def _gens(crash_a: int | None = None, crash_b: int | None = None) -> dict[str, FakeGenerator]:
    return {"a": CrashingGenerator("a", 1, crash_at=crash_a), "b": CrashingGenerator("b", 2, crash_at=crash_b)}


def _run(cfg: Config, gens: dict[str, FakeGenerator], **kw: object) -> dpsynth.SynthesisResult:
    return dpsynth.synthesize(cfg, generators=gens, embedder=FakeEmbedder(), progress=False, **kw)


def _journal(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "samples.journal.jsonl").read_text(encoding="utf-8").splitlines()]


def test_a_run_started_with_a_relative_path_resumes_from_another_folder(
    private_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """config.yaml used to keep data.private as typed ("good.csv"): from another folder the resume could not
    find it, and naming it from there ("in/good.csv") was refused as another value."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "good.csv").write_bytes(private_csv.read_bytes())
    monkeypatch.chdir(tmp_path / "in")
    cfg = fake_run_config(Path("good.csv"), Path("kt"))
    with pytest.raises(Crash):
        _run(cfg, _gens(crash_b=3))
    stored = yaml.safe_load((tmp_path / "in" / "kt" / "config.yaml").read_text())
    assert stored["data"]["private"] == os.path.realpath(tmp_path / "in" / "good.csv")
    monkeypatch.chdir(tmp_path)
    again = Config.model_validate({"out": "in/kt", "data": {"private": "in/good.csv"}})
    res = _run(again, _gens(), resume=True)
    assert len(res) == 60
    assert not res.already_complete and _run(Config(out="in/kt"), _gens(), resume=True).already_complete


@pytest.mark.parametrize(
    "damage",
    [
        "{",
        '{"a": 1}',
        "[1, 2]",
        # well-formed rounds whose other fields have the wrong type (a resume reads them)
        '[{"round": 0, "completion_tokens": "many"}]',
        '[{"round": 0, "complete": "yes"}]',
        '[{"round": 0, "outcomes": {"g": 3}}]',
        '[{"round": 0, "seconds": "1 min"}]',
    ],
)
def test_a_damaged_rounds_json_is_named_and_the_run_resumes_without_it(
    private_csv: Path, tmp_path: Path, damage: str
) -> None:
    out = tmp_path / "run"
    cfg = fake_run_config(private_csv, out)
    with pytest.raises(Crash):
        _run(cfg, _gens(crash_b=3))  # killed in round 2
    (out / "rounds.json").write_text(damage)
    with pytest.raises(ResumeError, match=r"rounds.json: damaged .*move it aside"):
        _run(cfg, _gens(), resume=True)
    (out / "rounds.json").rename(tmp_path / "rounds.json.bad")  # what the message says to do
    ledger = json.loads((out / "ledger.json").read_text())["releases"]
    res = _run(cfg, _gens(), resume=True)
    assert len(res) == 60
    assert json.loads((out / "ledger.json").read_text())["releases"][: len(ledger)] == ledger  # nothing re-spent
    assert res.privacy["epsilon"] <= 4.0
    (out / "rounds.json").write_text(damage)  # the report of a finished run leaves out only the rounds
    page = build_report(out)
    assert "rounds.json is damaged, so the per-round summary cannot be shown" in page and "60 synthetic records" in page


def test_a_run_without_its_ledger_is_refused_before_any_model_loads(
    private_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ledger.json what the run spent is unknown: a resume must stop, and say so before it loads the
    generators (which took about 17 s with the embedded models before the ledger was looked for)."""
    out = tmp_path / "run"
    cfg = fake_run_config(private_csv, out)
    with pytest.raises(Crash):
        _run(cfg, _gens(crash_b=3))  # killed in round 2, after votes were released
    (out / "ledger.json").rename(tmp_path / "ledger.json.moved")

    def no_models(*args: object, **kw: object) -> None:
        raise AssertionError("models were loaded before the missing ledger was noticed")

    with monkeypatch.context() as m:
        m.setattr(dpsynth.api, "make_method", no_models)
        with pytest.raises(ResumeError, match=r"ledger.json: the run's privacy ledger is missing"):
            _run(cfg, _gens(), resume=True)
    assert not (out / "ledger.json").exists() and not (out / "synthetic.jsonl").exists()
    (tmp_path / "ledger.json.moved").rename(out / "ledger.json")  # restored, as the message says: it resumes
    assert len(_run(cfg, _gens(), resume=True)) == 60


def test_a_run_killed_before_its_ledger_was_written_starts_again_on_resume(
    private_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Killed between config.yaml and the ledger's first write, a run has spent and written nothing: --resume
    starts it again on the stored config instead of refusing it for a missing ledger forever."""
    out = tmp_path / "run"
    cfg = fake_run_config(private_csv, out)

    def killed(*args: object, **kw: object) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(dpsynth.privacy.ledger.Ledger, "open", killed)
        with pytest.raises(KeyboardInterrupt):
            _run(cfg, _gens())
    assert (out / "config.yaml").exists() and not (out / "ledger.json").exists()
    with caplog.at_level(logging.WARNING, logger="dpsynth"):
        res = _run(cfg, _gens(), resume=True)
    assert len(res) == 60 and res.privacy["epsilon"] <= 4.0
    assert "stopped before it spent anything" in caplog.text
    assert json.loads((out / "ledger.json").read_text())["releases"]


@pytest.mark.parametrize("edit", [{"wasp": {"use_far": True}}, {"method": "aug-pe", "generators": "one"}])
def test_a_resume_after_config_yaml_changed_the_votes_sensitivity_is_refused(
    private_csv: Path, tmp_path: Path, edit: dict[str, Any]
) -> None:
    """Regression: the ledger compared only the noise multiplier, which depends on epsilon, delta and the
    rounds alone.  Editing config.yaml (wasp.use_far, or aug-pe -> wasp) changed the votes' sensitivity at the
    same z: the later votes drew sigma = z x the old sensitivity, too little noise (epsilon 4.7-5.2 spent,
    4.0 reported)."""
    out = tmp_path / "run"
    start = {"wasp": {"rounds": 3, "q": 4, "use_far": False}}
    if edit.get("method"):
        start = {"method": "aug-pe", "generators": [{"name": "a", "model": "x"}]}
    cfg = fake_run_config(private_csv, out, **start)
    with pytest.raises(Crash):
        _run(cfg, {"a": CrashingGenerator("a", 1, crash_at=3)} if edit.get("method") else _gens(crash_a=3))
    released = json.loads((out / "ledger.json").read_text())["releases"]
    assert released
    raw = yaml.safe_load((out / "config.yaml").read_text())
    if edit.get("method"):
        raw["method"] = "wasp"
        raw["generators"] = [{"name": "a", "model": "x"}, {"name": "b", "model": "y"}]
    else:
        raw["wasp"]["use_far"] = True
    (out / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(ResumeError, match="other noise or sensitivity"):
        _run(Config(out=str(out)), _gens(), resume=True)
    assert json.loads((out / "ledger.json").read_text())["releases"] == released


def test_a_run_directory_in_use_by_another_process_is_refused(private_csv: Path, tmp_path: Path) -> None:
    """Regression: two resumes of one run at a time each read the ledger once and drew every vote it did not
    record yet: six noisy votes for the three the ledger counts (epsilon 6 spent, 4 reported), and one journal
    with duplicate ids.  A second process is now refused while the first holds the folder."""
    from filelock import FileLock

    out = tmp_path / "run"
    cfg = fake_run_config(private_csv, out)
    with pytest.raises(Crash):
        _run(cfg, _gens(crash_b=3))
    released = json.loads((out / "ledger.json").read_text())["releases"]
    journal = (out / "samples.journal.jsonl").read_bytes()
    other = FileLock(out / ".dpsynth.lock", timeout=0)  # another open of the lock file: what another process holds
    with other, pytest.raises(ResumeError, match="in use by another dpsynth process"):
        _run(cfg, _gens(), resume=True)
    (tmp_path / "new").mkdir()
    in_use = pytest.raises(ResumeError, match="in use by another dpsynth process")
    with FileLock(tmp_path / "new" / ".dpsynth.lock", timeout=0), in_use:  # nor a new run in a folder in use
        _run(fake_run_config(private_csv, tmp_path / "new"), _gens())
    assert not (tmp_path / "new" / "config.yaml").exists()
    assert json.loads((out / "ledger.json").read_text())["releases"] == released
    assert (out / "samples.journal.jsonl").read_bytes() == journal
    res = _run(cfg, _gens(), resume=True)  # released: it resumes
    assert len(res) == 60
    with other, pytest.raises(ResumeError, match="in use by another dpsynth process"):  # `sample` holds it too
        dpsynth.api.extend(out, 4, generators=_gens(), embedder=FakeEmbedder(), progress=False)
    assert dpsynth.api.extend(out, 4, generators=_gens(), embedder=FakeEmbedder(), progress=False).added > 0


def test_a_resume_given_another_private_file_as_an_argument_is_refused(private_csv: Path, tmp_path: Path) -> None:
    """Regression: ``synthesize(resume=True, private=OTHER_FILE)`` finished a run's later rounds on other records
    without a word (config.yaml still named the first file); --private and data.private were refused."""
    out = tmp_path / "run"
    cfg = fake_run_config(private_csv, out)
    with pytest.raises(Crash):
        _run(cfg, _gens(crash_b=3))
    other = tmp_path / "other.csv"
    pd.read_csv(private_csv, dtype=str).iloc[:20].to_csv(other, index=False)
    with pytest.raises(ResumeError, match="other values of data.private"):
        _run(Config(out=str(out)), _gens(), resume=True, private=str(other))
    assert len(_run(Config(out=str(out)), _gens(), resume=True, private=private_csv)) == 60  # the same file


def test_a_damaged_embedding_cache_is_embedded_again(private_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = fake_run_config(private_csv, out)
    with pytest.raises(Crash):
        _run(cfg, _gens(crash_b=3))
    cache = out / "embeddings.npz"
    cache.write_bytes(cache.read_bytes()[:100])  # torn
    assert len(_run(cfg, _gens(), resume=True)) == 60


def test_a_moved_private_file_is_named_again_on_resume_and_the_report_hides_its_folders(
    private_csv: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "good.csv").write_bytes(private_csv.read_bytes())
    cfg = fake_run_config(project / "good.csv", project / "run")
    with pytest.raises(Crash):
        _run(cfg, _gens(crash_b=3))
    moved = tmp_path / "moved"
    project.rename(moved)  # the project, its data and its run, moved together
    other = tmp_path / "other.csv"
    other.write_bytes(private_csv.read_bytes())
    with pytest.raises(DpsynthError, match="does not exist any more.*--private NEWPATH"):
        _run(Config(out=str(moved / "run")), _gens(), resume=True)
    # a new place inside the run directory (meant to be shared) is refused: config.yaml would name it
    (moved / "run" / "good.csv").write_bytes(private_csv.read_bytes())
    inside = Config.model_validate({"out": str(moved / "run"), "data": {"private": str(moved / "run" / "good.csv")}})
    with pytest.raises(ConfigError, match="is inside the run directory"):
        _run(inside, _gens(), resume=True)
    (moved / "run" / "good.csv").unlink()
    again = Config.model_validate({"out": str(moved / "run"), "data": {"private": str(moved / "good.csv")}})
    with caplog.at_level(logging.WARNING, logger="dpsynth"):
        res = _run(again, _gens(), resume=True)
    assert len(res) == 60 and any("no longer exists; the run continues on" in m for m in caplog.messages)
    # regression: config.yaml kept the old path, so `evaluate --test` of the moved private file could not be
    # told apart from held-out data (a warning only) and scored the private records into evaluation.json
    stored = yaml.safe_load((moved / "run" / "config.yaml").read_text())
    assert stored["data"]["private"] == str(moved / "good.csv")
    from dpsynth.evaluate.inputs import LabelledTexts, refuse_private_data

    syn = LabelledTexts(texts=["a"], labels=["0"], source=str(moved / "run"), run_dir=moved / "run")
    with pytest.raises(ConfigError, match="this is the run's private data"):
        refuse_private_data(str(moved / "good.csv"), "--test", syn, "give held-out records")
    # a path that still exists is another source: refused, as before
    (moved / "good.csv").rename(moved / "kept.csv")
    (project).mkdir()
    (project / "good.csv").write_bytes(private_csv.read_bytes())
    run2 = tmp_path / "run2"
    with pytest.raises(Crash):
        _run(fake_run_config(project / "good.csv", run2), _gens(crash_b=3))
    with pytest.raises(ResumeError, match="other values of data.private"):
        _run(Config.model_validate({"out": str(run2), "data": {"private": str(other)}}), _gens(), resume=True)
    html = build_report(moved / "run")
    assert ".../good.csv" in html and str(moved / "good.csv") not in html  # the run folder is shown, as before


def test_a_new_run_leaves_an_unset_private_source_unset(tmp_path: Path) -> None:
    """A method whose default data is not IMDb (KnowledgeSG: MedMCQA) tells by data.private being unset."""
    from dpsynth.run import RunDir

    cfg = Config.model_validate({"method": "knowledgesg", "out": str(tmp_path / "ks")})
    checked = RunDir(tmp_path / "ks").check(cfg, False)
    assert "private" not in checked.data.model_fields_set


def test_resume_uses_the_stored_config_and_checks_explicit_fields(private_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = fake_run_config(private_csv, out)  # many non-default fields
    with pytest.raises(Crash):
        _run(cfg, _gens(crash_a=2))
    changed = fake_run_config(private_csv, out, privacy=dict(epsilon=2.0, delta=1e-5))
    with pytest.raises(ResumeError) as info:
        _run(changed, _gens(), resume=True)
    msg = str(info.value)
    assert "privacy.epsilon" in msg and "\n" not in msg
    assert "data" not in msg.replace("config.yaml", "") and "generators" not in msg  # only what changed
    moved = tmp_path / "moved"
    out.rename(moved)
    res = _run(Config(out=str(moved)), _gens(), resume=True)  # only out: the stored config is the base
    assert len(res) == 60 and res.privacy["epsilon"] <= 4.0 + 1e-9


def test_resuming_a_run_from_an_older_version_names_the_settings_it_lacks(
    private_csv: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "run"
    with pytest.raises(Crash):
        _run(fake_run_config(private_csv, out), _gens(crash_a=2))
    with caplog.at_level(logging.WARNING, logger="dpsynth"):
        assert len(_run(Config(out=str(out)), _gens(), resume=True)) == 60  # this version's own config.yaml
    assert "predates" not in caplog.text

    old = tmp_path / "old"
    with pytest.raises(Crash):
        _run(fake_run_config(private_csv, old), _gens(crash_a=2))
    stored = yaml.safe_load((old / "config.yaml").read_text(encoding="utf-8"))
    del stored["wasp"]["whole_sentences"], stored["wasp"]["top_p"]  # as a version before those settings wrote it
    del stored["finetune"]["whole_sentences"]  # a section this method does not read: not worth a warning
    stored["wasp"]["max_tokens"] = stored["wasp"].pop("max_new_tokens")  # a former name is the same setting
    (old / "config.yaml").write_text(yaml.safe_dump(stored), encoding="utf-8")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dpsynth"):
        res = _run(Config(out=str(old), wasp=dict(top_p=0.9)), _gens(), resume=True)
    assert len(res) == 60
    warned = [r.getMessage() for r in caplog.records if "predates" in r.getMessage()]
    assert len(warned) == 1 and "wasp.whole_sentences = True" in warned[0]
    assert "top_p" not in warned[0]  # set explicitly on resume: the user chose it
    assert "max_new_tokens" not in warned[0] and "finetune" not in warned[0]


def test_a_resumed_keyword_round_rebuilds_the_same_words(private_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "kw"
    cfg = fake_run_config(private_csv, out, wasp=dict(rounds=3, q=4, variation="keywords"))
    with pytest.raises(Crash):  # b's third call: round 2, after a's chunk of it was journalled
        _run(cfg, _gens(crash_b=3))
    before = {r["round"]: r for r in json.loads((out / "rounds.json").read_text())}
    assert before[2]["complete"] is False and before[2]["keywords"]
    assert len(_run(Config(out=str(out)), _gens(), resume=True)) == 60
    after = {r["round"]: r for r in json.loads((out / "rounds.json").read_text())}
    assert after[2]["complete"] is True and after[2]["keywords"] == before[2]["keywords"]  # re-planned, the same
    assert after[3]["keywords"]


def test_a_resumed_latest_vote_ranks_the_whole_previous_round(private_csv: Path, tmp_path: Path) -> None:
    """wasp.vote_on: latest, killed in round 2: after the resume, vote 3 covers every round-2 sample, those
    made before the kill and after it."""
    out = tmp_path / "latest"
    cfg = fake_run_config(private_csv, out, wasp=dict(rounds=3, q=4, vote_on="latest"))
    with pytest.raises(Crash):  # b's third call: round 2, after a's chunk of it was journalled
        _run(cfg, _gens(crash_b=3))
    early = {json.loads(x)["id"] for x in (out / "samples.journal.jsonl").open() if json.loads(x)["round"] == 2}
    assert early and not (out / "votes" / "round_3.npz").exists()
    assert len(_run(Config(out=str(out)), _gens(), resume=True)) == 60
    round2 = {json.loads(x)["id"] for x in (out / "samples.journal.jsonl").open() if json.loads(x)["round"] == 2}
    assert early < round2 and set(np.load(out / "votes" / "round_3.npz")["ids"].tolist()) == round2


def test_config_yaml_records_what_the_run_used(private_csv: Path, tmp_path: Path) -> None:
    # the embedded dataset's public labels and task, resolved (zero-shot reads no private record)
    zs = Config(method="zero-shot", out=str(tmp_path / "zs"), n_synthetic=10, generators=[dict(name="a", model="x")])
    dpsynth.synthesize(zs, generators={"a": FakeGenerator("a")}, embedder=FakeEmbedder(), progress=False)
    stored = yaml.safe_load((tmp_path / "zs" / "config.yaml").read_text(encoding="utf-8"))
    assert stored["data"]["labels"] == {"0": "negative", "1": "positive"}
    assert stored["data"]["task"] == "movie review" and stored["data"]["private"] == "embedded:imdb"

    # a DataFrame: recorded as such, never as a path; a resume needs the records again
    df = pd.read_csv(private_csv, dtype=str)
    out = tmp_path / "df"
    cfg = Config(
        out=str(out),
        n_synthetic=60,
        data=dict(text_column="review", label_column="sentiment", labels={"0": "negative", "1": "positive"}),
        wasp=dict(rounds=3, q=4),
        generators=[dict(name="a", model="x"), dict(name="b", model="y")],
    )
    with pytest.raises(Crash):
        _run(cfg, _gens(crash_b=2), private=df)
    stored = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
    assert stored["data"]["private"] == "in-memory:DataFrame"
    assert stored["data"]["labels"] == {"0": "negative", "1": "positive"} and stored["data"]["task"] == "text"
    with pytest.raises(ResumeError, match=r"^data\.private: in-memory:DataFrame .*private="):
        _run(Config(out=str(out)), _gens(), resume=True)
    assert len(_run(Config(out=str(out)), _gens(), resume=True, private=df)) == 60


def test_torn_journal_tail_is_dropped_on_resume(private_csv: Path, tmp_path: Path) -> None:
    """A process killed mid-append leaves half a line: the next attempts drop it, never append after it."""
    out = tmp_path / "torn"
    cfg = fake_run_config(private_csv, out)
    journal = out / "samples.journal.jsonl"
    with pytest.raises(Crash):
        _run(cfg, _gens(crash_a=2))  # dies in round 1
    with journal.open("a", encoding="utf-8") as f:
        f.write('{"id": 15, "text": "A positive take: half a sam')  # killed mid-append
    with pytest.raises(Crash):
        _run(cfg, _gens(crash_a=2), resume=True)  # appends round 1, dies in round 2
    rows = _journal(out)  # every line is whole JSON again
    with journal.open("a", encoding="utf-8") as f:
        f.write('{"id": 99, "te')
    res = _run(cfg, _gens(), resume=True)
    assert len(res) == 60
    final = _journal(out)
    assert final[: len(rows)] == rows and [r["id"] for r in final] == list(range(len(final)))


def test_repair_jsonl_tail_keeps_a_whole_last_record(tmp_path: Path) -> None:
    from dpsynth.io import repair_jsonl_tail

    p = tmp_path / "j.jsonl"
    p.write_text('{"id": 0}\n{"id": 1}', encoding="utf-8")  # whole, only the newline is missing
    assert [r["id"] for r in read_jsonl_tolerant(p)] == [0, 1]
    assert repair_jsonl_tail(p) and p.read_text(encoding="utf-8") == '{"id": 0}\n{"id": 1}\n'
    p.write_text('{"id": 0}\n{"id": 1}\n{"id": 2, "te', encoding="utf-8")
    assert repair_jsonl_tail(p) and p.read_text(encoding="utf-8") == '{"id": 0}\n{"id": 1}\n'
    assert not repair_jsonl_tail(p) and not repair_jsonl_tail(tmp_path / "absent.jsonl")
    # a journal damaged by the old behaviour (fragment glued to the next record) is still readable
    p.write_text('{"id": 0}\n{"id": 1, "te{"id": 1, "text": "x"}\n{"id": 2}\n', encoding="utf-8")
    assert read_jsonl_tolerant(p) == [{"id": 0}, {"id": 1, "text": "x"}, {"id": 2}]
    # json.dumps(ensure_ascii=False) leaves U+2028 and U+0085 in a record: not line ends (they were, and a
    # journal holding one could not be resumed)
    p.write_text('{"id": 0, "text": "a\u2028b"}\n{"id": 1, "text": "c\x85d"}\n{"id": 2}\n', encoding="utf-8")
    assert [r["id"] for r in read_jsonl_tolerant(p)] == [0, 1, 2]
    p.write_text('{"id": 0}\nnot json\n{"id": 2}\n', encoding="utf-8")
    with pytest.raises(ResumeError, match="line 2"):
        read_jsonl_tolerant(p)


def test_check_failing_after_validation_leaves_out_reusable(private_csv: Path, tmp_path: Path) -> None:
    """An epsilon so large that no noise is needed is found when the noise is calibrated: before the run
    directory exists, so the corrected command works with the same --out and without --resume."""
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="no noise"):
        _run(fake_run_config(private_csv, out, privacy=dict(epsilon=1e9, delta=1e-5)), _gens())
    assert not out.exists()
    assert len(_run(fake_run_config(private_csv, out), _gens())) == 60


def _digest(root: Path) -> dict[str, str]:
    files = (p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


class _Mute(CrashingGenerator):
    """Writes one usable positive sample in ten requests: every round ends short of positive samples (a class
    left with none at all would stop the run)."""

    positive_asks = 0

    def generate(self, requests, on_completion=None):  # type: ignore[no-untyped-def]
        out = super().generate(requests, on_completion)
        for i, r in enumerate(requests):
            text = r.prompt if r.prompt is not None else "\n".join(m.content for m in r.messages or ())
            if "positive" in text:
                self.positive_asks += 1
                if self.positive_asks % 10:
                    out[i] = dataclasses.replace(out[i], text="meh")
        return out


def test_resuming_a_finished_run_does_nothing(private_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "done"
    cfg = fake_run_config(private_csv, out)
    first = _run(cfg, {"a": _Mute("a", 1), "b": _Mute("b", 2)})  # finished, short of positive samples
    assert 0 < len(first) < 60
    before = _digest(out)
    gens = _gens(crash_a=1, crash_b=1)  # any request would raise
    res = _run(cfg, gens, resume=True)
    assert res.already_complete and res.records == first.records and res.privacy == first.privacy
    assert gens["a"].calls == 0 and gens["b"].calls == 0
    assert _digest(out) == before  # nothing rewritten


def test_resume_keeps_finished_rounds_and_merges_the_interrupted_one(private_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "rounds"
    cfg = fake_run_config(private_csv, out)
    with pytest.raises(Crash):
        _run(cfg, _gens(crash_b=3))  # b dies in round 2, after a's samples of round 2
    before = json.loads((out / "rounds.json").read_text(encoding="utf-8"))
    finished = {r["round"]: r for r in before if r.get("complete", True)}
    assert sorted(finished) == [0, 1]
    _run(cfg, _gens(), resume=True)
    after = {r["round"]: r for r in json.loads((out / "rounds.json").read_text(encoding="utf-8"))}
    for t, entry in finished.items():
        assert after[t] == entry, f"round {t} was rewritten on resume"
    rows = _journal(out)
    for t, entry in after.items():
        accepted = sum(o.get("accepted", 0) for o in entry["outcomes"].values())
        assert accepted == sum(1 for r in rows if r["round"] == t), f"round {t} lost outcomes"
        assert entry["complete"] is True
    for g in ("a", "b"):  # token counts run from the start of the run, across the interruption
        counts = [after[t]["completion_tokens"][g] for t in sorted(after)]
        assert counts == sorted(counts), counts


def test_resumed_rounds_pool_the_class_shares_of_every_vote(private_csv: Path, tmp_path: Path) -> None:
    """A run killed in a late round plans the rest, on resume, from all released votes, as an uninterrupted
    run does: every round's class shares in rounds.json equal the pooled estimate recomputed from the
    vote files (post-processing only) and the journal's labels."""
    import numpy as np

    from dpsynth.selection import class_count_estimates, pooled_class_shares

    out = tmp_path / "pooled"
    cfg = fake_run_config(private_csv, out)
    with pytest.raises(Crash):
        _run(cfg, _gens(crash_b=3))  # b dies in round 2: round 1's plan was made before, the rest after
    killed_in = max(r["round"] for r in _journal(out))
    assert killed_in >= 2
    _run(cfg, _gens(), resume=True)
    labels = {r["id"]: r["label"] for r in _journal(out)}
    rounds = {r["round"]: r for r in json.loads((out / "rounds.json").read_text(encoding="utf-8"))}
    estimates = []
    for t in range(1, 4):
        v = np.load(out / "votes" / f"round_{t}.npz")
        estimates.append(
            class_count_estimates(
                v["near"], v["far"], [labels[int(i)] for i in v["ids"]], ["0", "1"], q=4, sigma=float(v["sigma"])
            )
        )
        assert rounds[t]["class_shares"] == pytest.approx(pooled_class_shares(estimates, ["0", "1"], 0.2))


def test_atomic_writes_get_the_permissions_of_a_plain_open(tmp_path: Path) -> None:
    """mkstemp's 0600 made report.html, synthetic.jsonl and evaluation.json readable by their writer alone,
    while run.log (a plain open) followed the umask."""
    import stat

    from dpsynth.io import atomic_write_text

    mask = os.umask(0o022)
    os.umask(mask)
    atomic_write_text(tmp_path / "report.html", "<p>x</p>")
    (tmp_path / "plain.txt").write_text("x")
    mode = stat.S_IMODE((tmp_path / "report.html").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == 0o666 & ~mask
    # the umask in force when the file is written, not when dpsynth was imported
    os.umask(0o077)
    try:
        atomic_write_text(tmp_path / "strict.json", "{}")
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "strict.json").stat().st_mode) == 0o600
    # a file the user made private stays private when it is replaced
    os.chmod(tmp_path / "report.html", 0o600)
    atomic_write_text(tmp_path / "report.html", "<p>y</p>")
    assert stat.S_IMODE((tmp_path / "report.html").stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.txt", "report.html", "strict.json"]  # no temp left


def test_a_resume_removes_old_temporary_files_a_killed_write_left(private_csv: Path, tmp_path: Path) -> None:
    """A process killed inside an atomic write leaves its ``.<name>.<hex>.tmp``, which nothing removed; the
    next run of the folder removes old ones, and leaves a fresh one (another process may be writing it)."""
    out = tmp_path / "run"
    cfg = fake_run_config(private_csv, out)
    with pytest.raises(Crash):
        _run(cfg, _gens(crash_b=3))
    stale, fresh = out / ".privacy.json.0a1b2c3d4e5f.tmp", out / ".evaluation.json.0a1b2c3d4e5f.tmp"
    (out / "votes").mkdir(exist_ok=True)
    stale_below = out / "votes" / ".round_1.json.0a1b2c3d4e5f.tmp"
    for p in (stale, fresh, stale_below):
        p.write_text("{")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    os.utime(stale_below, (old, old))
    assert len(_run(cfg, _gens(), resume=True)) == 60
    assert not stale.exists() and not stale_below.exists() and fresh.exists()


def test_a_setting_added_as_what_earlier_versions_did_is_not_warned_of_on_resume(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A dp-finetune config.yaml written before finetune.optimizer existed warned that "optimizer = 'adamw'"
    may differ, though AdamW is what every earlier version trained with; a setting that may differ still warns."""
    from dpsynth.run import RunDir

    run = tmp_path / "ft"
    run.mkdir()
    raw = Config.model_validate({"method": "dp-finetune", "out": str(run)}).model_dump(mode="json")
    del raw["finetune"]["optimizer"], raw["finetune"]["momentum"], raw["finetune"]["whole_sentences"]
    (run / "config.yaml").write_text(yaml.safe_dump(raw))
    with caplog.at_level(logging.WARNING, logger="dpsynth"):
        RunDir(run).check(Config(out=str(run)), True)
    assert "predates the setting(s) finetune.whole_sentences;" in caplog.text and "optimizer" not in caplog.text


def test_a_run_whose_ledger_planned_float_votes_resumes_with_float_votes(
    private_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run begun before the votes' noise became a discrete Gaussian planned float-Gaussian votes; its resume
    keeps them (the stored events decide the noise), where a new plan would be refused as other noise."""
    run = tmp_path / "run"
    cfg = fake_run_config(private_csv, run)
    gens = {"a": CrashingGenerator("a", 1, crash_at=3), "b": FakeGenerator("b", 2)}
    with pytest.raises(Crash):
        dpsynth.synthesize(cfg, generators=gens, embedder=FakeEmbedder(), progress=False)
    ledger = json.loads((run / "ledger.json").read_text())
    assert ledger["releases"] and all(e["grid_bits"] for e in ledger["planned"])
    legacy = GaussianPlan.calibrate(4.0, 1e-5, 3, top_q_sensitivity(4, True))
    ledger["format"] = 2  # as the previous version wrote it
    for e in ledger["planned"]:
        del e["grid_bits"], e["moves"]
        e["noise_multiplier"] = legacy.noise_multiplier
        e["mechanism"] = "Top-4 vote histograms (near+far), Gaussian mechanism"
    (run / "ledger.json").write_text(json.dumps(ledger))
    released = {r["key"] for r in ledger["releases"]}
    assert len(released) < 3  # a vote is left to draw after the resume
    gens = {"a": FakeGenerator("a", 1), "b": FakeGenerator("b", 2)}

    def no_discrete_plan(*args: object) -> None:
        raise AssertionError("a resume whose ledger planned float votes calibrated a discrete plan")

    monkeypatch.setattr(wasp_plan, "_calibrate_discrete", no_discrete_plan)  # up to a minute of wasted work
    res = dpsynth.synthesize(cfg, resume=True, generators=gens, embedder=FakeEmbedder(), progress=False)
    mech = res.privacy["mechanisms"][0]
    assert mech["name"].endswith(", Gaussian mechanism") and mech["sigma"] == pytest.approx(legacy.sigma)
    assert res.privacy["epsilon"] <= 4.0 + 1e-9
    for t in (1, 2, 3):
        if f"round_{t}" not in released:  # drawn after the resume: the float noise the ledger planned
            with np.load(run / "votes" / f"round_{t}.npz") as z:
                assert not np.array_equal(np.ldexp(z["near"], 10), np.rint(np.ldexp(z["near"], 10)))
    assert "grid_bits" not in json.loads((run / "ledger.json").read_text())["planned"][0]
    ledger = json.loads((run / "ledger.json").read_text())
    (run / "ledger.json").write_text(json.dumps({**ledger, "format": 5}))  # a later version's ledger
    with pytest.raises(ResumeError, match="written by a newer dpsynth"):
        Ledger.open(run / "ledger.json", epsilon=4.0, delta=1e-5, accountant="pld", resume=True)


def test_a_resume_after_the_private_file_moved_names_the_flag_that_finds_it(
    private_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run stopped before its last vote, whose private file then moved: the resume said only "file does not
    exist; check --private / data.private"; it now names the command that continues on the file's new place."""
    out = tmp_path / "run"
    with pytest.raises(Crash):
        _run(fake_run_config(private_csv, out), _gens(crash_a=3))
    moved = private_csv.rename(tmp_path / "moved.csv")
    with pytest.raises(DataError, match="does not exist any more") as err:
        _run(Config(out=str(out)), _gens(), resume=True)
    assert f"dpsynth run --resume --out {out} --private NEWPATH" in str(err.value)
    assert "SENTINEL" not in str(err.value)
    res = _run(Config(out=str(out)), _gens(), resume=True, private=str(moved))
    assert len(res.records) == 60


def test_a_resume_of_a_folder_without_config_yaml_does_not_suggest_a_refused_command(tmp_path: Path) -> None:
    """--resume on a folder holding a run's files but no config.yaml said "drop --resume to start one", which
    was refused in turn (a new run would adopt its ledger); it now says what would work."""
    from dpsynth.run import RunDir

    out = tmp_path / "run"
    out.mkdir()
    (out / "ledger.json").write_text("{}")
    with pytest.raises(ResumeError, match=r"holds files a run writes \(ledger.json\) but no config.yaml") as err:
        RunDir(out, resuming=True).check(Config(out=str(out)), resume=True)
    assert "drop --resume" not in str(err.value)
    with pytest.raises(ResumeError, match="does not exist.*drop --resume to start a run"):  # a missing folder
        RunDir(tmp_path / "none", resuming=True).check(Config(out=str(tmp_path / "none")), resume=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ResumeError, match="holds no run to resume; drop --resume to start one"):
        RunDir(tmp_path / "empty", resuming=True).check(Config(out=str(tmp_path / "empty")), resume=True)
