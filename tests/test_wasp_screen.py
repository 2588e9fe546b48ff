"""WASP's output screen: which generated texts become samples, and how each rejection is counted."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import dpsynth
from dpsynth.errors import GeneratorError
from dpsynth.generators.base import Completion, GenerationRequest
from dpsynth.methods.wasp_screen import OutputScreen, normalize, rejections

from .conftest import FakeEmbedder, FakeGenerator, fake_run_config

LONG = "This film kept me watching until the very end, and the acting was superb throughout."


ERRORS = {"FAIL": "HTTP 500", "EMPTY": "empty completion"}  # a failed request; an answer without text


class Judge:
    """Answers each judge request with a fixed verdict per text, and counts its calls."""

    def __init__(self, verdicts: dict[str, str]) -> None:
        self.verdicts = verdicts
        self.calls = 0

    def generate(self, requests: Sequence[GenerationRequest], on_completion=None) -> list[Completion]:
        self.calls += 1
        prompts = [" ".join(m.content for m in r.messages or ()) for r in requests]  # the judge is a chat model
        answers = [next((v for k, v in self.verdicts.items() if k in p), "no idea") for p in prompts]
        # "FAIL": the judge's request failed (an HTTP error after its retries)
        out = [Completion(a, 1, 5) if a not in ("FAIL", "EMPTY") else Completion("", error=ERRORS[a]) for a in answers]
        for c in out if on_completion else ():
            on_completion(c)
        return out

    def close(self) -> None:
        pass


def _screen(tmp_path: Path, judge: Judge | None = None, accepted: Sequence[str] = ()) -> OutputScreen:
    wasp: dict[str, object] = dict(rounds=3, q=4)
    if judge is not None:
        wasp["label_judge"] = "a"
    cfg = fake_run_config(tmp_path / "p.csv", tmp_path / "run", wasp=wasp)
    return OutputScreen(cfg, {"a": judge or Judge({}), "b": Judge({})}, accepted)


def test_each_check_counts_its_rejection_and_need_caps_each_class(tmp_path: Path) -> None:
    screen = _screen(tmp_path, accepted=[LONG])
    other = "A quiet, patient story about two brothers, told with care and a fine sense of place."
    third = "The plot wanders, the jokes fall flat, and the ending arrives long after I stopped caring."
    outputs = [
        ("1", [], Completion(LONG.upper())),  # an accepted sample, up to case: duplicate
        ("1", [], Completion("ok")),  # too short: unusable
        ("1", [other], Completion(other)),  # the prompt's own example: a copy
        ("1", [], Completion(third, extra_texts=("  " + third.lower(),))),  # second is a duplicate in-chunk
        ("0", [], Completion(other, extra_texts=(other + " Truly.",))),  # the class needs one: surplus
    ]
    outcome: Counter[str] = Counter()
    kept = screen.candidates(outputs, {"1": 5, "0": 1}, outcome)
    assert kept == [("1", third), ("0", other)]
    assert outcome == Counter(duplicate=2, unusable=1, copies_example=1, surplus=1)


def test_accept_makes_later_outputs_duplicates(tmp_path: Path) -> None:
    screen = _screen(tmp_path)
    outcome: Counter[str] = Counter()
    assert screen.candidates([("0", [], Completion(LONG))], {"0": 1}, outcome) == [("0", LONG)]
    screen.accept(LONG)
    assert screen.candidates([("0", [], Completion(LONG))], {"0": 1}, outcome) == []
    assert outcome["duplicate"] == 1 and normalize(" A  b\n") == "a b"


def test_judge_rejects_the_other_label_and_keeps_unsure_answers(tmp_path: Path) -> None:
    judge = Judge({"superb": "positive", "flat": "positive"})
    screen = _screen(tmp_path, judge)
    unclear = "Two hours of film, some of it in colour, shown at the festival last spring."
    cands = [("1", LONG), ("0", "The jokes fall flat and the plot wanders for two long hours."), ("0", unclear)]
    outcome: Counter[str] = Counter()
    kept = screen.judged(cands, outcome)
    assert kept == [("1", LONG), ("0", unclear)]
    assert outcome == Counter(wrong_label=1, judge_unsure=1)
    assert judge.calls == 1 and screen.judge_tokens.prompt_tokens == 15  # one batched call, tokens counted
    assert screen.judged([], outcome) == [] and judge.calls == 1


def test_failed_requests_are_counted_apart_and_never_pass_unjudged(tmp_path: Path) -> None:
    """Regression: a generator request that failed was counted as an unusable output, and a judge request
    that failed as an unsure verdict, which let its sample through unjudged."""
    judge = Judge({"superb": "FAIL"})
    screen = _screen(tmp_path, judge)
    outcome: Counter[str] = Counter()
    outputs = [("1", [], Completion("", error="HTTP 500")), ("1", [], Completion(LONG))]
    cands = screen.candidates(outputs, {"1": 2}, outcome)
    assert cands == [("1", LONG)] and outcome == Counter(request_failed=1)
    assert screen.judged(cands, outcome) == []  # dropped, and asked again by the round
    assert outcome == Counter(request_failed=1, judge_failed=1)
    assert rejections([outcome], judged=True) == ["judge re-asked 0/0", "2 requests failed"]
    # an answer without text is an answer: an unusable output, an unsure verdict (kept), never "failed"
    screen = _screen(tmp_path, Judge({"superb": "EMPTY"}))
    outcome = Counter()
    cands = screen.candidates(
        [("1", [], Completion("", error="empty completion")), ("1", [], Completion(LONG))], {"1": 2}, outcome
    )
    assert cands == [("1", LONG)] and screen.judged(cands, outcome) == [("1", LONG)]
    assert outcome == Counter(unusable=1, judge_unsure=1)


def test_no_judge_keeps_every_candidate(tmp_path: Path) -> None:
    screen = _screen(tmp_path)
    assert screen.judge is None
    assert screen.judged([("0", LONG)], Counter()) == [("0", LONG)]


def test_rejections_line_counts_only() -> None:
    a = Counter(accepted=8, wrong_label=2, judge_unsure=1, unusable=3)
    b = Counter(accepted=2, duplicate=1, copies_example=1)
    assert rejections([a, b], judged=True) == ["judge re-asked 2/12 (1 unsure)", "5 dropped"]
    assert rejections([Counter(accepted=4)], judged=False) == []


def test_a_duplicate_that_also_copies_its_example_counts_as_a_duplicate(tmp_path: Path) -> None:
    screen = _screen(tmp_path, accepted=[LONG])
    outcome: Counter[str] = Counter()
    assert screen.candidates([("1", [LONG], Completion(LONG))], {"1": 1}, outcome) == []
    assert outcome == Counter(duplicate=1)


def test_only_outputs_the_token_limit_stopped_are_cut_to_whole_sentences(tmp_path: Path) -> None:
    screen = _screen(tmp_path)
    raw = LONG + " Then the second act began and the"
    outputs = [
        ("1", [], Completion(raw, truncated=(True,))),
        ("0", [], Completion(raw.replace("superb", "poor"), truncated=(False,))),  # the model ended it: kept
    ]
    kept = screen.candidates(outputs, {"1": 1, "0": 1}, Counter())
    assert kept == [("1", LONG), ("0", raw.replace("superb", "poor"))]


class _JunkFor(FakeGenerator):
    """A FakeGenerator whose outputs for prompts naming one of ``labels`` are unusable ("ok"), like a backend
    that fails on those classes; no labels: a plain FakeGenerator."""

    def __init__(self, name: str, *labels: str) -> None:
        super().__init__(name)
        self.labels = labels

    def generate(self, requests: Sequence[GenerationRequest], on_completion=None) -> list[Completion]:
        out = super().generate(requests, on_completion)
        texts = [r.prompt if r.prompt is not None else " ".join(m.content for m in r.messages or ()) for r in requests]
        junk = [any(lab in t for lab in self.labels) for t in texts]
        return [Completion("ok", 1, 5) if j else c for c, j in zip(out, junk, strict=True)]


def test_a_class_with_no_usable_sample_stops_the_run_and_resume_retries_it(private_csv: Path, tmp_path: Path) -> None:
    """It used to finish with that class missing from the released set (and epsilon spent), or, in the
    seed round, mark the round done so that every resume stopped at the vote."""
    run = tmp_path / "run"
    cfg = fake_run_config(private_csv, run, n_synthetic=20, wasp=dict(rounds=1, q=2))
    with pytest.raises(
        GeneratorError, match=r"round 0: no usable sample of 'negative' after retries \(.*unusable \d+.*resuming the"
    ):
        dpsynth.synthesize(cfg, generators={g: _JunkFor(g, "negative") for g in "ab"}, embedder=FakeEmbedder())
    rounds = json.loads((run / "rounds.json").read_text())
    assert [(r["round"], r["complete"]) for r in rounds] == [(0, False)]
    assert not (run / "ledger.json").exists() or json.loads((run / "ledger.json").read_text())["releases"] == []
    res = dpsynth.synthesize(
        cfg, resume=True, generators={g: _JunkFor(g) for g in "ab"}, embedder=FakeEmbedder(), progress=False
    )
    assert len(res) == 20 and {r["label"] for r in res.records} == {0, 1}


def test_zero_shot_with_only_junk_is_an_error_not_an_empty_set(tmp_path: Path) -> None:
    cfg = fake_run_config(Path("/unused.csv"), tmp_path / "zs", method="zero-shot", n_synthetic=4)
    gens = {g: _JunkFor(g, "negative", "positive") for g in "ab"}
    with pytest.raises(GeneratorError, match="no usable sample of 'negative', 'positive'"):
        dpsynth.synthesize(cfg, generators=gens, embedder=FakeEmbedder(), progress=False)


class _AfterFirstPositive(FakeGenerator):
    """Answers its first positive request; after it, as ``state["mode"]`` says, fails the positive ones
    ("down"), writes unusable outputs for them ("junk"), or answers them ("ok").  ``state`` is shared by the
    generators of a run and by a resumed run's new ones."""

    def __init__(self, name: str, state: dict[str, Any]) -> None:
        super().__init__(name)
        self.state = state

    def generate(self, requests: Sequence[GenerationRequest], on_completion=None) -> list[Completion]:
        out = super().generate(requests, None)
        for i, r in enumerate(requests):
            if "positive" in " ".join(m.content for m in r.messages or ()) + (r.prompt or ""):
                self.state["given"] += 1
                if self.state["given"] > 1 and self.state["mode"] == "down":
                    out[i] = Completion("", error="HTTP 502 from http://h/v1 (after 4 retries)")
                elif self.state["given"] > 1 and self.state["mode"] == "junk":
                    out[i] = Completion("ok", 1, 5)
            if on_completion:
                on_completion(out[i])
        return out


def _troubled(state: dict[str, Any]) -> dict[str, FakeGenerator]:
    return {g: _AfterFirstPositive(g, state) for g in "ab"}


def test_a_class_left_short_is_named_in_the_warning(
    private_csv: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    trouble = {"mode": "junk", "given": 0}  # one usable positive sample in all, then only junk for that class
    cfg = fake_run_config(private_csv, tmp_path / "zs", method="zero-shot", n_synthetic=10)
    with caplog.at_level(logging.WARNING, logger="dpsynth"):
        res = dpsynth.synthesize(cfg, generators=_troubled(trouble), embedder=FakeEmbedder(), progress=False)
    assert len(res) == 6
    assert any("4 samples short after retries (positive 4; outputs rejected: unusable" in m for m in caplog.messages)


def test_a_round_left_short_by_failed_requests_stays_unfinished(private_csv: Path, tmp_path: Path) -> None:
    """Regression: with failed requests no longer stopping a run at once, a round short because its last
    requests failed was finished short (a warning), and a resumed run could not refill it.  It now stops,
    unfinished, and the resumed run completes it."""
    from dpsynth.errors import GeneratorError

    trouble = {"mode": "down", "given": 0}  # fails every positive request after the first
    cfg = fake_run_config(private_csv, tmp_path / "zs", method="zero-shot", n_synthetic=10)
    with pytest.raises(GeneratorError, match=r"round 0: 4 samples short \(positive 4\) after \d+ requests failed"):
        dpsynth.synthesize(cfg, generators=_troubled(trouble), embedder=FakeEmbedder(), progress=False)
    trouble["mode"] = "ok"
    res = dpsynth.synthesize(cfg, generators=_troubled(trouble), embedder=FakeEmbedder(), progress=False, resume=True)
    assert len(res) == 10


def test_a_round_short_for_other_reasons_finishes_after_failures_in_an_earlier_attempt(
    private_csv: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Only the failures of the attempt at hand, and as many as the samples it lacks, keep a round unfinished:
    counted over the round's history, one failure made every resume of a class the generators cannot fill stop
    again, for good (review of the change above)."""
    from dpsynth.errors import GeneratorError

    trouble = {"mode": "down", "given": 0}  # then "junk": positive outputs unusable, no request failing
    cfg = fake_run_config(private_csv, tmp_path / "zs", method="zero-shot", n_synthetic=10)
    with pytest.raises(GeneratorError, match="requests failed"):
        dpsynth.synthesize(cfg, generators=_troubled(trouble), embedder=FakeEmbedder(), progress=False)
    trouble["mode"] = "junk"
    with caplog.at_level(logging.WARNING, logger="dpsynth"):
        res = dpsynth.synthesize(
            cfg, generators=_troubled(trouble), embedder=FakeEmbedder(), progress=False, resume=True
        )
    assert len(res) == 6 and any("4 samples short after retries" in m for m in caplog.messages)


def test_near_dup_threshold_is_removed_but_old_configs_still_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # wasp.near_dup_threshold was documented ("Drop near-duplicates above this cosine") but nothing read it;
    # the screen drops exact duplicates only.  The field is gone from the schema (so `dpsynth init` and the
    # flags no longer offer it), while a config.yaml written before, which lists it, still loads.
    from dpsynth.config import Config, WaspConfig

    assert "near_dup_threshold" not in WaspConfig.model_fields
    assert "near_dup_threshold" not in Config().model_dump()["wasp"]
    with caplog.at_level(logging.WARNING, logger="dpsynth"):
        assert Config.model_validate({"wasp": {"near_dup_threshold": None, "rounds": 2}}).wasp.rounds == 2
        assert not caplog.messages  # every earlier run's config.yaml lists it as null: no noise on resume
        assert WaspConfig.model_validate({"near_dup_threshold": 0.9}) == WaspConfig()
    assert any("near_dup_threshold was removed" in m for m in caplog.messages)
