"""Post-processing growth: wasp.population (an expansion phase after the last vote) and `dpsynth sample`.

Both generate from the last released vote only, so they must spend nothing, draw no vote, embed no new
sample for a vote and never read the private data.
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest

import dpsynth
from dpsynth.api import extend
from dpsynth.cli import main
from dpsynth.errors import ConfigError, ResumeError
from dpsynth.generators.base import Completion
from dpsynth.report import build_report

from .conftest import WORDS, Crash, CrashingGenerator, FakeEmbedder, FakeGenerator, fake_run_config, smollm2_run_config


def _ledger(run: Path) -> dict:
    return json.loads((run / "ledger.json").read_text())


_SEEDS = itertools.count(1, 2)


def _gens() -> dict[str, FakeGenerator]:
    """Generators with seeds no earlier call used: the same seeds would write again the texts a run already
    holds, the screen would drop them as duplicates, and a call that asks for a few new samples could come
    up short (it did, about once in twelve, depending on the noisy vote's examples)."""
    seed = next(_SEEDS)
    return {"a": FakeGenerator("a", seed), "b": FakeGenerator("b", seed + 1)}


def test_population_spends_the_votes_on_the_rounds_and_expands_after(private_csv: Path, tmp_path: Path) -> None:
    full = dpsynth.synthesize(
        fake_run_config(private_csv, tmp_path / "full"), generators=_gens(), embedder=FakeEmbedder(), progress=False
    )
    run = tmp_path / "exp"
    emb = FakeEmbedder()
    gens = _gens()
    cfg = fake_run_config(private_csv, run, n_synthetic=100, wasp=dict(rounds=3, q=4, population=40))
    res = dpsynth.synthesize(cfg, generators=gens, embedder=emb, progress=False)
    assert len(res) == 100
    by_round: dict[int, int] = {}
    for r in res.records:
        by_round[r["round"]] = by_round.get(r["round"], 0) + 1
    assert by_round == {0: 10, 1: 10, 2: 10, 3: 10, 4: 60}  # 40 in the rounds, 60 expanded
    # the same three votes and the same epsilon as a run without expansion
    assert res.privacy["epsilon"] == pytest.approx(full.privacy["epsilon"])
    assert [r["key"] for r in _ledger(run)["releases"]] == ["round_1", "round_2", "round_3"]
    assert any("after the last vote" in p for p in res.privacy["post_processing"])
    # no expansion sample is embedded: the last vote covered rounds 0-2 (30 samples), 40 private records
    embedded = [t for call in emb.calls for t in call]
    assert len(embedded) == 40 + 30
    rounds = json.loads((run / "rounds.json").read_text())
    last = next(r for r in rounds if r["round"] == 4)
    assert last["expansion"] is True and last["complete"] is True
    # expansion prompts show the good and bad examples of the last vote (contrastive)
    assert sum("poor" in p.lower() for p in gens["a"].prompts + gens["b"].prompts) > 40
    assert "round 4 (expansion)" in build_report(run)  # the report names the phase


def test_population_larger_than_n_or_too_small_is_refused(private_csv: Path, tmp_path: Path) -> None:
    for pop, field in ((200, "larger than n_synthetic"), (6, "fewer than one sample per class")):
        cfg = fake_run_config(private_csv, tmp_path / f"bad{pop}", wasp=dict(rounds=3, q=4, population=pop))
        with pytest.raises(ConfigError, match=field):
            dpsynth.synthesize(cfg, generators=_gens(), embedder=FakeEmbedder(), progress=False)
        assert not (tmp_path / f"bad{pop}").exists()


def test_sample_adds_records_without_spending_or_reading_private_data(private_csv: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    res = dpsynth.synthesize(
        fake_run_config(private_csv, run), generators=_gens(), embedder=FakeEmbedder(), progress=False
    )
    ledger_before = _ledger(run)["releases"]
    votes_before = {p.name: p.read_bytes() for p in (run / "votes").iterdir()}
    private_csv.unlink()  # the private data is gone: post-processing must not need it
    emb = FakeEmbedder()
    more = extend(run, 25, generators=_gens(), embedder=emb, progress=False)
    assert len(more) == 85 and not more.already_complete
    assert more.records[:60] == res.records  # the first 60 are kept as they were
    assert {r["round"] for r in more.records[60:]} == {4}
    assert _ledger(run)["releases"] == ledger_before
    assert {p.name: p.read_bytes() for p in (run / "votes").iterdir()} == votes_before
    assert more.privacy["epsilon"] == pytest.approx(res.privacy["epsilon"])
    assert more.privacy["public_inputs"]["n_synthetic"] == 85
    assert emb.calls == []  # nothing embedded, private or synthetic
    lines = (run / "synthetic.jsonl").read_text().splitlines()
    assert len(lines) == 85
    # a second call grows the same expansion round; resuming the grown run is a no-op
    fresh = _gens()  # seeds no call used: the same seeds would repeat themselves
    again = extend(run, 5, generators=fresh, embedder=FakeEmbedder(), progress=False)
    assert len(again) == 90 and sum(r["round"] == 4 for r in again.records) == 30
    done = dpsynth.synthesize(dpsynth.Config(out=str(run)), resume=True, progress=False)
    assert done.already_complete and len(done) == 90


def test_sample_grows_a_lopsided_expansion_by_what_is_asked(private_csv: Path, tmp_path: Path) -> None:
    """Regression: a run whose expansion was made under other class shares (before they pooled every vote)
    was topped up class by class, so asking for 5 more added every sample the now-short class lacked."""
    run = tmp_path / "run"
    dpsynth.synthesize(fake_run_config(private_csv, run), generators=_gens(), embedder=FakeEmbedder(), progress=False)
    extend(run, 24, generators=_gens(), embedder=FakeEmbedder(), progress=False)
    journal = run / "samples.journal.jsonl"
    rows = [json.loads(x) for x in journal.read_text().splitlines()]
    for r in rows:
        if r["round"] == 4:
            r["label"] = "0"  # as if the expansion had been made 24 / 0
    journal.write_text("".join(json.dumps(r) + "\n" for r in rows))
    fresh = _gens()
    more = extend(run, 5, generators=fresh, embedder=FakeEmbedder(), progress=False)
    expansion = [r for r in more.records if r["round"] == 4]
    assert len(more) == 89 and len(expansion) == 29
    assert sum(str(r["label"]) == "1" for r in expansion) == 5  # the 5 new ones go to the short class


def test_sample_refuses_what_it_cannot_extend(private_csv: Path, tmp_path: Path) -> None:
    with pytest.raises(ResumeError, match="nothing does not exist"):
        extend(tmp_path / "nothing", 5)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ResumeError, match="afile is a file"):
        extend(tmp_path / "afile", 5)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ResumeError, match="holds no run"):
        extend(tmp_path / "empty", 5)
    # regression: a config.yaml edited into an invalid config said "error: ::: unknown field; dpsynth init
    # writes a file listing every field", naming neither the run nor its config.yaml (sample and resume alike)
    (tmp_path / "edited").mkdir()
    (tmp_path / "edited" / "config.yaml").write_text("::: not yaml\n", encoding="utf-8")
    named = f"{tmp_path / 'edited' / 'config.yaml'}: ::: unknown field.*; restore the file, or start a new --out"
    with pytest.raises(ResumeError, match=named):
        extend(tmp_path / "edited", 5)
    with pytest.raises(ResumeError, match=named):
        dpsynth.synthesize(dpsynth.Config(out=str(tmp_path / "edited")), resume=True, progress=False)
    run = tmp_path / "run"
    cfg = fake_run_config(private_csv, run)
    gens = {"a": CrashingGenerator("a", 1, crash_at=3), "b": FakeGenerator("b", 2)}
    with pytest.raises(Crash):
        dpsynth.synthesize(cfg, generators=gens, embedder=FakeEmbedder(), progress=False)
    with pytest.raises(ResumeError, match="not finished"):
        extend(run, 5, generators=_gens(), embedder=FakeEmbedder(), progress=False)
    dpsynth.synthesize(cfg, resume=True, generators=_gens(), embedder=FakeEmbedder(), progress=False)
    for bad in (0, -3, True):
        with pytest.raises(ConfigError, match="positive number"):
            extend(run, bad, generators=_gens(), embedder=FakeEmbedder(), progress=False)  # type: ignore[arg-type]
    # regression: 10**20 overflowed the class quotas ("0 added; ... fewer than asked, outputs were rejected")
    # and left config.yaml asking for it, so no later `sample` added anything
    config_before = (run / "config.yaml").read_bytes()
    with pytest.raises(ConfigError, match="above the most a run holds"):
        extend(run, 10**20, generators=_gens(), embedder=FakeEmbedder(), progress=False)
    assert (run / "config.yaml").read_bytes() == config_before
    with pytest.raises(ConfigError, match="n_synthetic"):
        dpsynth.Config(n_synthetic=10**20)
    pearl = tmp_path / "pearl"
    pearl.mkdir()
    (pearl / "config.yaml").write_text("method: pearl\n")
    with pytest.raises(ConfigError, match="extends wasp, aug-pe and zero-shot"):
        extend(pearl, 5)


def test_a_sample_after_an_interrupted_sample_says_how_to_finish_it(private_csv: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    dpsynth.synthesize(fake_run_config(private_csv, run), generators=_gens(), embedder=FakeEmbedder(), progress=False)
    with pytest.raises(Crash):  # the backend fails during the 20 new samples, after a's were journalled
        extend(
            run,
            20,
            generators={"a": FakeGenerator("a", 1), "b": CrashingGenerator("b", 2, crash_at=1)},
            embedder=FakeEmbedder(),
            progress=False,
        )
    with pytest.raises(ResumeError, match=r"an earlier `dpsynth sample` stopped before its 20 new samples") as exc:
        extend(run, 5, generators=_gens(), embedder=FakeEmbedder(), progress=False)
    assert f"dpsynth run --resume --out {run}" in str(exc.value)
    # evaluate and report do not take the part written so far for the run (UX audit: they scored it silently)
    from dpsynth.errors import DataError
    from dpsynth.evaluate import evaluate

    out = run / "synthetic.jsonl"  # regression: the run's file escaped the check that its folder met
    for make in (
        lambda: build_report(run),
        lambda: evaluate(run, out, embedder=FakeEmbedder()),
        lambda: evaluate(out, private_csv, embedder=FakeEmbedder()),
    ):
        # regression: "was stopped" of a sample that may still run (the lock is another process's to hold)
        with pytest.raises(
            DataError, match=r"`dpsynth sample` asked for 80 samples and the run finished with 60 "
        ) as e:
            make()
        assert (
            f"still running, or was stopped); if it no longer runs, finish it with `dpsynth run --resume --out {run}`"
            in str(e.value)
        )
    private_csv.unlink()  # what the message promises: finishing it needs no private data
    done = dpsynth.synthesize(
        dpsynth.Config(out=str(run)), resume=True, generators=_gens(), embedder=FakeEmbedder(), progress=False
    )
    assert len(done) == 80
    assert len(extend(run, 5, generators=_gens(), embedder=FakeEmbedder(), progress=False)) == 85


def test_a_sample_that_fails_before_making_anything_leaves_the_run_finished(private_csv: Path, tmp_path: Path) -> None:
    """Regression: config.yaml was enlarged before anything could fail, so a generator that could not start
    left a finished run unfinished, and every later `sample` was refused until a resume with working
    generators (or a hand edit)."""
    run = tmp_path / "run"
    dpsynth.synthesize(fake_run_config(private_csv, run), generators=_gens(), embedder=FakeEmbedder(), progress=False)
    config = (run / "config.yaml").read_bytes()
    with pytest.raises(Crash):
        extend(
            run,
            20,
            generators={"a": CrashingGenerator("a", 1, crash_at=1), "b": FakeGenerator("b", 2)},
            embedder=FakeEmbedder(),
            progress=False,
        )
    assert (run / "config.yaml").read_bytes() == config
    more = extend(run, 5, generators=_gens(), embedder=FakeEmbedder(), progress=False)
    assert len(more) == 65 and more.added == 5


class _SameText(FakeGenerator):
    """Writes one text per class, again and again: every output after the first is a duplicate."""

    def generate(self, requests, on_completion=None):  # type: ignore[no-untyped-def]
        out = []
        for c in super().generate(requests):
            mood = "positive" if c.text.startswith("A positive") else "negative"
            same = Completion(f"A {mood} take: the very same words every time", 16, 40)
            if on_completion:
                on_completion(same)
            out.append(same)
        return out


def test_sample_reports_what_it_made_not_what_it_asked_for(
    capsys: pytest.CaptureFixture[str], private_csv: Path, tmp_path: Path
) -> None:
    """Regression: when outputs were rejected (duplicates here), `sample` printed "25 added" and privacy.json
    said "25 of the 64 samples were generated after the last vote"; 4 were."""
    run = tmp_path / "run"
    dpsynth.synthesize(fake_run_config(private_csv, run), generators=_gens(), embedder=FakeEmbedder(), progress=False)
    gens = {"a": _SameText("a", 3), "b": _SameText("b", 4)}
    more = extend(run, 25, generators=gens, embedder=FakeEmbedder(), progress=False)
    assert more.added == len(more) - 60 == 2  # one new text per class; the rest were duplicates
    assert any(p.startswith("2 of the 62 samples") for p in more.privacy["post_processing"])
    assert json.loads((run / "privacy.json").read_text())["post_processing"] == more.privacy["post_processing"]


@pytest.mark.parametrize("cut", ["deleted", "tail"])
def test_a_journal_with_fewer_samples_than_rounds_json_counted_is_refused(
    cut: str, private_csv: Path, tmp_path: Path
) -> None:
    """Regression: `sample` (and a resume) rebuilt the output from the journal alone: with the journal
    deleted or its last round cut, synthetic.jsonl was replaced by the new samples only, or lost a round,
    while privacy.json counted them all."""
    run = tmp_path / "run"
    dpsynth.synthesize(fake_run_config(private_csv, run), generators=_gens(), embedder=FakeEmbedder(), progress=False)
    journal, output = run / "samples.journal.jsonl", run / "synthetic.jsonl"
    if cut == "deleted":
        journal.unlink()
    else:
        rows = [json.loads(x) for x in journal.read_text().splitlines()]
        journal.write_text("".join(json.dumps(r) + "\n" for r in rows if r["round"] != 3))
    kept, config = output.read_bytes(), (run / "config.yaml").read_bytes()
    with pytest.raises(ResumeError, match="rounds.json counted .*: the journal was cut, replaced or deleted"):
        extend(run, 10, generators=_gens(), embedder=FakeEmbedder(), progress=False)
    assert output.read_bytes() == kept and (run / "config.yaml").read_bytes() == config


def test_sample_keeps_the_label_type_when_the_input_is_gone(tmp_path: Path) -> None:
    """Regression: a Parquet input whose label column is text made labels "0"/"1"; `sample` without the
    file (it need not be there) decided the type again, from nothing, and rewrote every label as an int."""
    import pandas as pd

    src = tmp_path / "private.parquet"
    rows = [{"review": f"a {'good' if i % 2 else 'bad'} film {i}", "sentiment": str(i % 2)} for i in range(40)]
    pd.DataFrame(rows).to_parquet(src)
    run = tmp_path / "run"
    first = dpsynth.synthesize(fake_run_config(src, run), generators=_gens(), embedder=FakeEmbedder(), progress=False)
    assert {type(r["label"]) for r in first.records} == {str}
    src.unlink()
    more = extend(run, 10, generators=_gens(), embedder=FakeEmbedder(), progress=False)
    assert {type(r["label"]) for r in more.records} == {str}
    written = [json.loads(x) for x in (run / "synthetic.jsonl").read_text().splitlines()]
    assert {type(r["label"]) for r in written} == {str}
    # the recorded decision does not stand in the way of a resume that says auto
    done = dpsynth.synthesize(dpsynth.Config(out=str(run), data={"label_type": "auto"}), resume=True, progress=False)
    assert done.already_complete


def test_a_run_killed_in_the_expansion_resumes_without_the_private_data(private_csv: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = fake_run_config(private_csv, run, n_synthetic=80, wasp=dict(rounds=3, q=4, population=40))
    # generator a is called once per round: its 5th call is the expansion
    gens = {"a": CrashingGenerator("a", 1, crash_at=5), "b": FakeGenerator("b", 2)}
    with pytest.raises(Crash):
        dpsynth.synthesize(cfg, generators=gens, embedder=FakeEmbedder(), progress=False)
    assert [r["key"] for r in _ledger(run)["releases"]] == ["round_1", "round_2", "round_3"]
    private_csv.unlink()
    res = dpsynth.synthesize(
        dpsynth.Config(out=str(run)), resume=True, generators=_gens(), embedder=FakeEmbedder(), progress=False
    )
    assert len(res) == 80 and sum(r["round"] == 4 for r in res.records) == 40


def test_a_run_killed_before_its_last_vote_still_needs_the_private_data(private_csv: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = fake_run_config(private_csv, run)
    gens = {"a": CrashingGenerator("a", 1, crash_at=3), "b": FakeGenerator("b", 2)}
    with pytest.raises(Crash):
        dpsynth.synthesize(cfg, generators=gens, embedder=FakeEmbedder(), progress=False)
    private_csv.unlink()
    with pytest.raises(dpsynth.errors.DataError):
        dpsynth.synthesize(
            dpsynth.Config(out=str(run)), resume=True, generators=_gens(), embedder=FakeEmbedder(), progress=False
        )


def test_zero_shot_sample(tmp_path: Path) -> None:
    run = tmp_path / "zs"
    cfg = fake_run_config(Path("/does/not/matter.csv"), run, method="zero-shot", n_synthetic=20)
    dpsynth.synthesize(cfg, generators=_gens(), embedder=FakeEmbedder(), progress=False)
    more = extend(run, 10, generators=_gens(), embedder=FakeEmbedder(), progress=False)
    assert len(more) == 30 and more.privacy["epsilon"] == 0
    assert sorted({r["round"] for r in more.records}) == [0, 1]


@pytest.mark.parametrize(
    ("gen", "n", "words"),
    [
        (FakeGenerator, "12", ["wrote 72 synthetic records", "(12 added)", "unchanged"]),
        # outputs rejected as duplicates: it says how many it made, not how many were asked for
        (_SameText, "25", ["wrote 62 synthetic records", "(2 added; 23 fewer than asked"]),
    ],
)
def test_cli_sample(
    gen: type[FakeGenerator],
    n: str,
    words: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    private_csv: Path,
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    dpsynth.synthesize(fake_run_config(private_csv, run), generators=_gens(), embedder=FakeEmbedder(), progress=False)
    monkeypatch.setattr("dpsynth.generators.build_generator", lambda gc: gen(gc.name))
    monkeypatch.setattr("dpsynth.methods.prompting.SentenceTransformerEmbedder", lambda *a: FakeEmbedder())
    main(["sample", "--run", str(run), "--n", n, "--quiet"])
    out = capsys.readouterr().out
    assert all(w in out for w in words), out
    with pytest.raises(SystemExit) as exc:
        main(["sample", "--run", str(run), "--n", "0"])
    assert exc.value.code == 2
    capsys.readouterr()
    main(["run", "--resume", "--out", str(run)])  # finished: said once, on stdout (it was on stderr too)
    captured = capsys.readouterr()
    assert (captured.out + captured.err).count("already complete") == 1 and "already complete" in captured.out


@pytest.mark.slow
@pytest.mark.model
def test_real_models_wasp_with_expansion_then_sample(tmp_path: Path) -> None:
    """SmolLM2 (llama.cpp) and MiniLM on the embedded IMDb draw: a run whose last quarter is expanded,
    then `sample` adds more without the private data being read (the vote files and ledger stay)."""
    run = tmp_path / "run"
    cfg = smollm2_run_config(run, population=8)
    res = dpsynth.synthesize(cfg, progress=False)
    assert len(res) >= 10  # a small model may leave a sample or two short
    assert {r["round"] for r in res.records} <= {0, 1, 2} and any(r["round"] == 2 for r in res.records)
    releases = _ledger(run)["releases"]
    assert [r["key"] for r in releases] == ["round_1"]
    more = extend(run, 4, progress=False)
    assert len(more) >= len(res) + 2
    assert _ledger(run)["releases"] == releases
    assert more.privacy["epsilon"] == pytest.approx(res.privacy["epsilon"])


class _SeededGenerator(FakeGenerator):
    """Like llama.cpp with a request seed: the same prompt and seed give the same text."""

    def generate(self, requests, on_completion=None):  # type: ignore[no-untyped-def]
        out = []
        for r in requests:
            text = r.prompt if r.prompt is not None else "\n".join(m.content for m in r.messages or ())
            mood = "positive" if "positive" in text else "negative"
            self.prompts.append(text)
            rng = random.Random(f"{text}|{r.seed}")
            c = Completion(f"A {mood} take: " + " ".join(rng.choice(WORDS) for _ in range(12)), 16, 40)
            if on_completion:
                on_completion(c)
            out.append(c)
        return out


def test_a_second_sample_call_draws_new_requests(tmp_path: Path) -> None:
    """Each call used to restart the run's random draws from the seed, so a second `sample` asked a seeded
    backend the same prompts with the same request seeds, got back the texts it already had, and rejected
    them as duplicates until its attempts ran out."""
    run = tmp_path / "zs"
    gens = {"a": _SeededGenerator("a"), "b": _SeededGenerator("b")}
    cfg = fake_run_config(Path("/does/not/matter.csv"), run, method="zero-shot", n_synthetic=10)
    dpsynth.synthesize(cfg, generators=gens, embedder=FakeEmbedder(), progress=False)
    first = extend(run, 10, generators=gens, embedder=FakeEmbedder(), progress=False)
    assert len(first) == 20
    gens = {"a": _SeededGenerator("a"), "b": _SeededGenerator("b")}  # the same backends, counting afresh
    second = extend(run, 10, generators=gens, embedder=FakeEmbedder(), progress=False)
    assert len(second) == 30
    assert len({r["text"] for r in second.records}) == 30
    assert [len(g.prompts) for g in gens.values()] == [5, 5]  # no request repeated, none wasted


def test_sample_on_an_older_config_warns_of_settings_it_predates(
    caplog: pytest.LogCaptureFixture, private_csv: Path, tmp_path: Path
) -> None:
    """Regression: `sample` rewrote config.yaml in full before resuming, so a setting the file predates took
    today's default without the warning a resume gives, and the file no longer showed it was older."""
    import yaml

    run = tmp_path / "run"
    dpsynth.synthesize(fake_run_config(private_csv, run), generators=_gens(), embedder=FakeEmbedder(), progress=False)
    raw = yaml.safe_load((run / "config.yaml").read_text())
    del raw["wasp"]["whole_sentences"]
    (run / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    with caplog.at_level("WARNING", logger="dpsynth"):
        extend(run, 6, generators=_gens(), embedder=FakeEmbedder(), progress=False)
    assert "predates the setting(s) wasp.whole_sentences" in caplog.text
    grown = yaml.safe_load((run / "config.yaml").read_text())
    assert grown["n_synthetic"] == 66 and grown["wasp"]["population"] == 60
    assert "whole_sentences" not in grown["wasp"]


def test_a_config_an_older_version_accepted_still_resumes_as_it_ran(private_csv: Path, tmp_path: Path) -> None:
    """Regression: this version refuses base_url on a non-openai generator and gives a list holding the judge's
    model the judge; a run whose config.yaml had the first (accepted and ignored before) could no longer be
    resumed or sampled, and one written before the judge existed would have been judged from then on."""
    import yaml

    run = tmp_path / "run"
    dpsynth.synthesize(fake_run_config(private_csv, run), generators=_gens(), embedder=FakeEmbedder(), progress=False)
    raw = yaml.safe_load((run / "config.yaml").read_text())
    raw["generators"][0]["base_url"] = "http://127.0.0.1:9/v1"  # on a llamacpp generator: never read
    raw["generators"][1]["model"] = "qwen2.5-0.5b-instruct"  # the judge's model, by its former name
    del raw["wasp"]["label_judge"]  # written before the judge existed
    (run / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    more = extend(run, 6, generators=_gens(), embedder=FakeEmbedder(), progress=False)
    assert len(more) == 66
    grown = yaml.safe_load((run / "config.yaml").read_text())
    assert grown["wasp"]["label_judge"] is None and "base_url" not in grown["generators"][0]


def test_a_sample_after_a_short_sample_adds_only_what_it_asks(private_csv: Path, tmp_path: Path) -> None:
    """Regression: config.yaml grew from its own n_synthetic, so after a call that came up short (25 asked,
    2 made) the next `sample --n 5` made up the earlier 23 as well and added 28."""
    import yaml

    run = tmp_path / "run"
    dpsynth.synthesize(fake_run_config(private_csv, run), generators=_gens(), embedder=FakeEmbedder(), progress=False)
    same = {"a": _SameText("a", 3), "b": _SameText("b", 4)}
    assert extend(run, 25, generators=same, embedder=FakeEmbedder(), progress=False).added == 2
    more = extend(run, 5, generators=_gens(), embedder=FakeEmbedder(), progress=False)
    assert more.added == 5 and len(more) == 67
    assert yaml.safe_load((run / "config.yaml").read_text())["n_synthetic"] == 67
    assert more.privacy["public_inputs"]["n_synthetic"] == 67
    same = {"a": _SameText("a", 3), "b": _SameText("b", 4)}  # nothing new: config.yaml and privacy.json say 77
    assert extend(run, 10, generators=same, embedder=FakeEmbedder(), progress=False).added == 0
    # asking again for what came up short grows to the 77 privacy.json records: a call like any other
    again = extend(run, 10, generators=_gens(), embedder=FakeEmbedder(), progress=False)
    assert again.added == 10 and len(again) == 77 and not again.already_complete


def test_sample_refuses_a_run_whose_privacy_json_has_no_n_synthetic(private_csv: Path, tmp_path: Path) -> None:
    """Regression: without it (an older run) every call added nothing, grew config.yaml again and was said
    to have had its outputs rejected.  The refusal says how to write privacy.json again, which works."""
    run = tmp_path / "run"
    dpsynth.synthesize(fake_run_config(private_csv, run), generators=_gens(), embedder=FakeEmbedder(), progress=False)
    report = json.loads((run / "privacy.json").read_text())
    del report["public_inputs"]["n_synthetic"]
    (run / "privacy.json").write_text(json.dumps(report))
    config = (run / "config.yaml").read_bytes()
    with pytest.raises(ResumeError, match="does not record n_synthetic") as exc:
        extend(run, 5, generators=_gens(), embedder=FakeEmbedder(), progress=False)
    assert f"dpsynth run --resume --out {run}" in str(exc.value)
    assert (run / "config.yaml").read_bytes() == config
    (run / "privacy.json").unlink()  # what the message says
    dpsynth.synthesize(dpsynth.Config(out=str(run)), resume=True, generators=_gens(), embedder=FakeEmbedder())
    assert extend(run, 5, generators=_gens(), embedder=FakeEmbedder(), progress=False).added == 5


def test_sample_reads_the_run_only_once_it_holds_it(
    private_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: extend read config.yaml before it took the run's lock, so a `sample` that finished in
    between (25 added) was undone: this call wrote n_synthetic 65 over 85, and added nothing."""
    import yaml

    from dpsynth.run import RunDir

    run = tmp_path / "run"
    dpsynth.synthesize(fake_run_config(private_csv, run), generators=_gens(), embedder=FakeEmbedder(), progress=False)
    real, other = RunDir.in_use, []

    def another_sample_first(self: RunDir):  # type: ignore[no-untyped-def]
        if not other:  # another process's `sample` finishes just before this one takes the lock
            other.append(None)
            other[0] = extend(run, 25, generators=_gens(), embedder=FakeEmbedder(), progress=False)
        return real(self)

    monkeypatch.setattr(RunDir, "in_use", another_sample_first)
    more = extend(run, 5, generators=_gens(), embedder=FakeEmbedder(), progress=False)
    assert other[0].added == 25 and more.added == 5 and len(more) == 90
    assert yaml.safe_load((run / "config.yaml").read_text())["n_synthetic"] == 90
    assert len((run / "synthetic.jsonl").read_text().splitlines()) == 90


def test_sample_on_a_run_in_progress_says_it_is_in_use(private_csv: Path, tmp_path: Path) -> None:
    """Regression: a run another process was still making was called "not finished; finish it first"."""
    from filelock import FileLock

    run = tmp_path / "run"
    with pytest.raises(Crash):
        gens = {"a": CrashingGenerator("a", 1, crash_at=3), "b": FakeGenerator("b", 2)}
        dpsynth.synthesize(fake_run_config(private_csv, run), generators=gens, embedder=FakeEmbedder(), progress=False)
    other = FileLock(run / ".dpsynth.lock", timeout=0)  # another process holds it: the run goes on there
    with other, pytest.raises(ResumeError, match="in use by another dpsynth process"):
        extend(run, 5, generators=_gens(), embedder=FakeEmbedder(), progress=False)


def test_sample_says_what_it_adds_and_takes_any_integer(
    capsys: pytest.CaptureFixture[str], private_csv: Path, tmp_path: Path
) -> None:
    """`dpsynth sample` opened with "resuming the run in", refused numpy's integers, and is the Python API's
    `dpsynth.extend`; with as_dataset it returns a Dataset of every record."""
    import numpy as np

    assert dpsynth.extend is extend and "extend" in dpsynth.__all__
    run = tmp_path / "run"
    dpsynth.synthesize(fake_run_config(private_csv, run), generators=_gens(), embedder=FakeEmbedder(), progress=False)
    capsys.readouterr()
    more = dpsynth.extend(run, np.int64(5), generators=_gens(), embedder=FakeEmbedder())
    assert more.added == 5 and len(more) == 65
    err = capsys.readouterr().err
    assert err.splitlines()[0] == f"[dpsynth] adding 5 samples to the run in {run} (no privacy cost)", err
    pytest.importorskip("datasets")
    ds = dpsynth.extend(run, 3, generators=_gens(), embedder=FakeEmbedder(), progress=False, as_dataset=True)
    assert len(ds) == 68 and "text" in ds.column_names


def test_a_missing_vote_file_is_refused_before_the_private_data_is_read(
    private_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: with a vote the ledger records but whose votes/round_T.npz is gone, `sample` (and a resume)
    loaded and embedded every private record, and only then did the ledger refuse to draw that vote again."""
    import dpsynth.methods.prompting as prompting

    run = tmp_path / "run"
    dpsynth.synthesize(fake_run_config(private_csv, run), generators=_gens(), embedder=FakeEmbedder(), progress=False)
    ledger = (run / "ledger.json").read_bytes()
    last = sorted((run / "votes").glob("round_*.npz"))[-1]
    last.unlink()

    def trap(*args: object, **kwargs: object) -> None:
        raise AssertionError("the private data was read")

    monkeypatch.setattr(prompting, "load_run_private", trap)
    with pytest.raises(ResumeError, match=r"ledger records release 'round_\d+' but its saved result is missing") as exc:
        extend(run, 3, generators=_gens(), embedder=FakeEmbedder(), progress=False)
    assert last.name in str(exc.value)
    assert (run / "ledger.json").read_bytes() == ledger  # nothing spent, nothing recorded
