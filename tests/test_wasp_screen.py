"""WASP's output screen: which generated texts become samples, and how each rejection is counted."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from dpsynth.generators.base import Completion, GenerationRequest
from dpsynth.methods.wasp_screen import OutputScreen, normalize, rejections

from .conftest import fake_run_config

LONG = "This film kept me watching until the very end, and the acting was superb throughout."


class Judge:
    """Answers each judge request with a fixed verdict per text, and counts its calls."""

    def __init__(self, verdicts: dict[str, str]) -> None:
        self.verdicts = verdicts
        self.calls = 0

    def generate(self, requests: Sequence[GenerationRequest], on_completion=None) -> list[Completion]:
        self.calls += 1
        prompts = [" ".join(m.content for m in r.messages or ()) for r in requests]  # the judge is a chat model
        answers = [next((v for k, v in self.verdicts.items() if k in p), "no idea") for p in prompts]
        out = [Completion(a, 1, 5) for a in answers]  # 1 completion token, 5 prompt tokens each
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
