"""HTML report: structure, self-containment, escaping, runs without rounds.json, CLI."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import dpsynth
from dpsynth.errors import DataError
from dpsynth.evaluate import evaluate
from dpsynth.report import build_report, write_report
from dpsynth.report.markup import fmt, table

from .conftest import FakeEmbedder, FakeGenerator, fake_run_config

EVIL = '<script>alert("x")</script> & <img src=http://evil.example/x.png>'
# What small instruction models write around a review: a prompt echo, markdown, a code fence.
JUNK = (
    "Sure! Here is a positive movie review:\n\n## A **great** film\n\n```\nI *loved* it, the `music` was great.\n```\n"
)
LONG_GENERATOR = "qwen2.5-0.5b-instruct-q4_k_m"
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Page(HTMLParser):
    """Collects tags, attributes, ids and text, and checks that elements nest properly."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    @property
    def ids(self) -> set[str]:
        return {a["id"] for _, a in self.tags if a.get("id")}


def parse(page: str) -> Page:
    p = Page()
    p.feed(page)
    p.close()
    assert not p.errors, p.errors[:5]
    assert p.stack == [], p.stack
    return p


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fake-generator WASP run with an evil synthetic sample appended, evaluated with a fake embedder."""
    base = tmp_path_factory.mktemp("reportrun")
    rows = [
        {
            "review": f"SENTINEL{i:04d}XYZ " + ("great loved film" if i % 2 else "awful boring plot"),
            "sentiment": str(i % 2),
        }
        for i in range(40)
    ]
    pd.DataFrame(rows).to_csv(base / "private.csv", index=False)
    cfg = fake_run_config(
        base / "private.csv",
        base / "run",
        generators=[
            dict(name="a", model="x"),
            dict(name="b<i>", model="y", prompt_format="completion"),
            dict(name=LONG_GENERATOR, model="z"),  # a real model name: table columns cannot wrap it
        ],
    )
    dpsynth.synthesize(
        cfg,
        generators={
            "a": FakeGenerator("a", 1),
            "b<i>": FakeGenerator("b<i>", 2),
            LONG_GENERATOR: FakeGenerator(LONG_GENERATOR, 3),
        },
        embedder=FakeEmbedder(),
        progress=False,
    )
    run = base / "run"
    with open(run / "synthetic.jsonl", "a", encoding="utf-8") as f:
        rec = {"text": EVIL, "label": "1", "label_name": "positive", "generator": "a", "round": 3}
        f.write(json.dumps(rec) + "\n")
        f.write(json.dumps({**rec, "text": JUNK}) + "\n")
    test = pd.DataFrame(
        [
            {"text": ("great loved film music" if i % 2 else "awful boring plot dull"), "label": str(i % 2)}
            for i in range(60)
        ]
    )
    evaluate(run, test, embedder=FakeEmbedder(), cache_dir=base / "cache", mauve=False)
    return run


def _check_self_contained(p: Page, page: str) -> None:
    for tag, attrs in p.tags:
        assert tag not in ("script", "link", "iframe", "object", "embed", "img"), tag
        for name in ("src", "href", "xlink:href", "action", "poster", "data"):
            v = attrs.get(name)
            if v is not None:
                assert v.startswith("#"), f"<{tag} {name}={v!r}> is not an in-page reference"
    low = page.replace(html.escape(EVIL), "").lower()  # the evil sample's escaped *text* may mention a URL
    assert not re.search(r"url\(\s*['\"]?(?!#)", low), "url() must point inside the page"
    for needle in ("<script", "@import", "http://", "https://", "<!doctype svg", "<?xml"):
        if needle in ("http://", "https://"):
            # only XML namespace declarations may mention a URL
            rest = low.replace('xmlns="http://www.w3.org/2000/svg"', "").replace(
                'xmlns:xlink="http://www.w3.org/1999/xlink"', ""
            )
            assert needle not in rest, needle
        else:
            assert needle not in low, needle


def test_report_sections_and_self_contained(run_dir: Path) -> None:
    path = write_report(run_dir, samples_per_class=1000)  # every sample, so the evil one is shown
    assert path == run_dir / "report.html"
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    p = parse(page)
    assert {"privacy", "rounds", "classes", "evaluation", "samples", "config"} <= p.ids
    _check_self_contained(p, page)
    text = " ".join(p.text)
    assert "differential privacy" in text.lower() and "ε = 4" in text
    # the guarantee covers the released statistics and what is made from them, not every file of the folder:
    # the page says what it does not cover (wall times, the evaluation on the owner's test data, the config)
    assert "everything else written to the run directory" not in text
    assert "Not covered: wall times" in text and "the headline, the test shares of the classes" in text
    assert "the privacy guarantee does not cover them" in text  # said again in the Evaluation section
    assert "Top-4 vote histograms" in text  # mechanism table from privacy.json
    assert "Generator weights per round" in page and "Noisy vote mass per round" in page
    assert "FID of rounds ≤ t" in page  # per-round FID chart from evaluation.json
    assert "logreg" in text and "precision" in text
    assert "Generator outputs and why some were dropped" in text  # rounds.json outcomes per generator
    # the rounds as compact tables, one per measure (not 1 + 3 x generators + 3 columns in one table), and
    # every table inside a box that scrolls it horizontally, so no table widens the page
    assert "weight a" not in text and "Generator weights (share of the next round's budget)" in text
    assert "Noisy vote mass" in text and "Class shares, vote strength, privacy spent and time" in text
    signals = [r["vote_signal"] for r in json.loads((run_dir / "rounds.json").read_text()) if r["round"] > 0]
    assert "votes per sample / noise sd" in text and len(signals) == 3
    assert all(fmt(s) in text for s in signals), signals  # each voted round's value in the table
    for r in json.loads((run_dir / "rounds.json").read_text())[1:]:  # ... with its weakest class
        low = min(r["class_vote_signal"], key=lambda c: r["class_vote_signal"][c])
        name = {"0": "negative", "1": "positive"}[low]
        assert f"{fmt(r['vote_signal'])} ({name}: {fmt(r['class_vote_signal'][low])})" in text
    assert page.count('<div class="tablewrap"><table') == page.count("<table") > 5
    heads = re.findall(r"<thead><tr>(.*?)</tr></thead>", page)
    assert max(h.count("<th>") for h in heads) <= 9
    assert "label consistency" in text  # evaluation.json: train on real, test on synthetic
    assert "distinct openings" in text and "commonest opening share" in text  # beside the test set's
    svgs = [t for t, _ in p.tags if t == "svg"]
    assert len(svgs) >= 5
    # private records never appear; the evil synthetic sample appears only escaped
    assert "SENTINEL" not in page
    assert EVIL in text  # shown to the reader as text...
    assert "<script>alert" not in page and "&lt;script&gt;alert" in page  # ...never as markup
    # a generator named "b<i>" shows as text, never as an element (tables and SVG charts alike)
    assert "b&lt;i&gt;" in page and "i" not in {t for t, _ in p.tags}


def test_report_lists_the_keywords_of_a_keyword_run(run_dir: Path, tmp_path: Path) -> None:
    assert "keywords variation" not in write_report(run_dir).read_text(encoding="utf-8")  # contrastive run
    kw = tmp_path / "kw"
    shutil.copytree(run_dir, kw)
    rounds = json.loads((kw / "rounds.json").read_text(encoding="utf-8"))
    rounds[1]["keywords"] = {"0": ["boring", "<b>plot"], "1": ["loved", "music"]}  # as wasp.variation keywords
    (kw / "rounds.json").write_text(json.dumps(rounds), encoding="utf-8")
    page = write_report(kw).read_text(encoding="utf-8")
    text = " ".join(parse(page).text)
    assert "Words the prompts named (keywords variation)" in text
    assert "loved, music" in text and "boring, &lt;b&gt;plot" in page  # words are text, never markup


def test_report_for_run_without_rounds_or_evaluation(run_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    for name in ("rounds.json", "evaluation.json", "report.html", "config.yaml"):
        (other / name).unlink(missing_ok=True)
    page = build_report(other)
    p = parse(page)
    _check_self_contained(p, page)
    text = " ".join(p.text)
    assert "rounds.json is missing, so the per-round summary cannot be shown" in text  # WASP always writes one
    assert "Not evaluated yet" in text
    assert {"privacy", "rounds", "classes", "evaluation", "samples"} <= p.ids
    priv = json.loads((other / "privacy.json").read_text())
    (other / "privacy.json").write_text(json.dumps({**priv, "method": "dp-finetune"}))  # writes none
    assert "writes no per-round summary" in build_report(other)


def test_report_zero_shot_and_incomplete(run_dir: Path, tmp_path: Path) -> None:
    zs = tmp_path / "zs"
    shutil.copytree(run_dir, zs)
    priv = json.loads((zs / "privacy.json").read_text())
    priv.update(epsilon=0.0, mechanisms=[], method="zero-shot")
    (zs / "privacy.json").write_text(json.dumps(priv))
    assert "never read any private data" in build_report(zs) and "Not covered" not in build_report(zs)
    priv.update(epsilon=1.5, complete=False, mechanisms=[{"name": "DP-SGD", "steps": 10, "sampling_rate": 0.01}])
    (zs / "privacy.json").write_text(json.dumps(priv))
    page = build_report(zs)
    assert "did not complete" in page and "sampling rate" in page and "DP-SGD" in page
    (zs / "privacy.json").unlink()
    assert "No privacy guarantee can be stated" in build_report(zs)


def test_report_privacy_section_reads_the_unified_and_older_privacy_json(run_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "priv"
    shutil.copytree(run_dir, other)
    priv = json.loads((other / "privacy.json").read_text())
    priv.update(
        accountant={"name": "dp-accounting PLD", "epsilon_at_delta": 3.9997},
        domain={"checks": ["every record has a non-empty text"], "note": "stated over records passing the checks"},
        composition="runs on the same private data add up",
    )
    (other / "privacy.json").write_text(json.dumps(priv))
    text = " ".join(parse(build_report(other)).text)
    assert "accountant's epsilon at delta" in text and "3.9997" in text
    assert "every record has a non-empty text" in text and "Composition: runs on the same private data" in text
    # differentially_private: false says NOT DP, whatever epsilon reads
    priv.update(differentially_private=False, epsilon=4.0)
    (other / "privacy.json").write_text(json.dumps(priv))
    assert "NOT differentially private" in " ".join(parse(build_report(other)).text)
    # an older, looser file: mechanisms as names, the accountant as a string, no domain
    old = {"epsilon": 2.0, "delta": 1e-5, "method": "wasp", "mechanisms": ["gaussian"], "accountant": "rdp"}
    (other / "privacy.json").write_text(json.dumps(old))
    text = " ".join(parse(build_report(other)).text)
    assert "ε = 2, δ = 1e-05" in text and "rdp" in text


def test_privacy_parameters_are_rounded_up_never_down(run_dir: Path, tmp_path: Path) -> None:
    """Regression: a run that spent epsilon 2.69472 read "ε = 2.69" in the guarantee sentence and the header
    (rounded to nearest: a stronger guarantee than the one spent), and privacy.json's guarantee used
    :.4g.  Epsilon and delta shown to a person are rounded up."""
    other = tmp_path / "up"
    shutil.copytree(run_dir, other)
    priv = json.loads((other / "privacy.json").read_text())
    priv.update(epsilon=2.69472, delta=1.25e-5, epsilon_target=2.6947201)
    priv["accountant"]["epsilon_at_delta"] = 2.69472
    (other / "privacy.json").write_text(json.dumps(priv))
    page = build_report(other)
    assert "ε = 2.7" in _header(page)
    text = " ".join(parse(page).text)
    assert "(ε = 2.7, δ = 1.3e-05)" in text and "at most δ = 1.3e-05" in text
    assert "2.69 " not in text and "2.69," not in text and "1.2e-05" not in text
    assert "2.69472" in text and "2.69473" in text  # the table's 6 figures, the target rounded up too


def test_shares_written_as_text_align_with_the_numbers_and_names_stay_left() -> None:
    """Percentage and ratio columns ("12.3%", "512 (90%)") were left-aligned beside right-aligned numbers; a
    label column stays left even where a label reads like a share ("50%")."""
    rows = [["12.3%", "512 (90%)", "0.71 +- 0.02", 7, "1", "50%"], ["4.0%", "3 (1%)", "0.70 +- 0.01", 8, "2", "neg"]]
    cells = re.findall(r"<td( class=\"num\")?>", table(["a"] * 6, rows))
    assert [bool(c) for c in cells[:6]] == [True, True, True, True, False, False]
    assert [bool(c) for c in cells[6:]] == [True, True, True, True, False, False]


def test_round_up_never_rounds_down() -> None:
    """The helper behind every epsilon and delta shown: up at ``digits`` significant figures, float noise
    (1e-05 is 1.0000000000000000818e-05 in binary) not taken for a value above the decimal."""
    import random

    from dpsynth.privacy.report import guarantee_text
    from dpsynth.privacy.rounding import round_up

    assert round_up(2.69472, 3) == "2.7" and round_up(2.69472, 4) == "2.695" and round_up(2.6949, 3) == "2.7"
    assert round_up(4.0, 3) == "4" and round_up(1e-5, 2) == "1e-05" and round_up(1.25e-5, 2) == "1.3e-05"
    assert round_up(9.9996, 4) == "10" and round_up(float("inf"), 3) == "inf" and round_up(0.0, 3) == "0"
    rng = random.Random(0)
    for _ in range(2000):
        x, d = 10 ** rng.uniform(-8, 4), rng.randint(1, 6)
        shown = float(round_up(x, d))
        assert x <= shown <= x * (1 + 10 ** (1 - d)) and f"{shown:.{d}g}" == round_up(x, d), (x, d)
    assert guarantee_text(2.69472, 1.25e-5).startswith("(2.695, 1.25e-05)-DP")
    assert guarantee_text(2.694712, 1.000001e-5).startswith("(2.695, 1.001e-05)-DP")


def test_run_log_epsilon_reads_rounded_up(run_dir: Path) -> None:
    """Regression (audit): run.log wrote the epsilon spent with %.4f, rounded to nearest, so 3.998129 read
    3.9981, a guarantee stronger than the one spent; every epsilon a person reads is rounded up."""
    spent = json.loads((run_dir / "privacy.json").read_text())["epsilon"]
    log = (run_dir / "run.log").read_text()
    last_round = re.findall(r"epsilon spent by the run so far ([0-9.]+)", log)[-1]
    finished = re.findall(r"run finished: .*; epsilon=([0-9.]+)", log)[-1]
    assert spent <= float(last_round) <= spent * (1 + 1e-4) and float(finished) == float(last_round), (spent, log)


def test_an_over_budget_plan_reads_over_budget(tmp_path: Path) -> None:
    """Regression (audit): the ledger's refusal wrote the planned epsilon with .4f, so a plan at 4.00003
    against a budget of 4 read "need epsilon 4.0000, above privacy.epsilon = 4"."""
    from dpsynth.errors import PrivacyBudgetError
    from dpsynth.privacy.events import Event, epsilon_of
    from dpsynth.privacy.ledger import Ledger

    lo, hi = 0.5, 2.0  # noise multipliers around epsilon 4 for one release at delta 1e-5
    for _ in range(60):
        z = (lo + hi) / 2
        eps = epsilon_of([Event("r", z)], 1e-5, "pld")
        if 4.00001 < eps < 4.00004:
            break
        lo, hi = (lo, z) if eps < 4.00001 else (z, hi)
    assert 4.00001 < eps < 4.00004
    with pytest.raises(PrivacyBudgetError, match=r"need epsilon ([0-9.]+),") as exc:
        Ledger.open(tmp_path / "ledger.json", epsilon=4.0, delta=1e-5, accountant="pld", planned=[Event("r", z)])
    shown = float(re.search(r"need epsilon ([0-9.]+),", str(exc.value)).group(1))  # type: ignore[union-attr]
    assert shown >= eps > 4.0, str(exc.value)


def test_budget_plans_never_exceed_their_target_and_bounds_read_rounded_up() -> None:
    """Regression: PEARL's plans were accepted up to 1e-7 above the target (2.0000000149 for epsilon 2), which
    the rounded-up report then showed as "ε = 2.01", an overspent budget; and the membership audit's upper
    bounds (AUC, TPR) were rounded to nearest (0.73449 read 0.734, a tighter bound than DP gives)."""
    from dpsynth.audit.membership import rate_text
    from dpsynth.privacy import sketch as sk
    from dpsynth.privacy.events import Event, epsilon_of
    from dpsynth.privacy.rounding import round_up

    for eps, acc in [(2.0, "pld"), (0.5, "gdp"), (3.0, "gdp"), (1.0, "pld")]:
        shares = [("schema", "", 1.0, "", 0.1), ("counts", "", 1.0, "", 0.1), ("sketch", "", 4.0, "", 0.8)]
        plan = sk.plan_budget(eps, 1e-5, shares, accountant=acc)
        spent = epsilon_of([Event(r.name, r.noise_multiplier) for r in plan.releases], plan.plan.delta, acc)
        assert spent <= eps and round_up(spent, 3) == f"{eps:g}", (eps, acc, spent)
    assert rate_text(0.4449, bound=True) == "0.45" and rate_text(0.4449) == "0.44"
    assert rate_text(0.0123, bound=True) == "0.013" and rate_text(0.5, bound=True) == "0.50"


def test_report_reads_privacy_json_through_the_typed_report(run_dir: Path, tmp_path: Path) -> None:
    from dpsynth.privacy.report import PrivacyReport, validate_report

    rep = PrivacyReport.load(run_dir / "privacy.json")  # the current shape, as written
    assert rep.method == "wasp" and rep.differentially_private and rep.accountant is not None
    assert rep.mechanisms and all(m.count is not None for m in rep.mechanisms) and rep.domain is not None
    # an older file is upgraded to the typed report: names kept, nothing invented
    old = PrivacyReport.read(
        {
            "epsilon": 2.0,
            "delta": 1e-5,
            "mechanisms": ["gaussian", {"name": "DP-SGD", "steps": 3}],
            "accountant": "rdp",
            "domain": {"checks": "one check"},
            "post_processing": "sampling",
        }
    )
    assert old.accountant is not None and old.accountant.name == "rdp" and old.accountant.epsilon_at_delta is None
    assert [m.fields() for m in old.mechanisms] == [{"name": "gaussian"}, {"name": "DP-SGD", "steps": 3}]
    assert old.domain is not None and old.domain.checks == ["one check"] and old.post_processing == ["sampling"]
    assert old.differentially_private and old.complete and old.public_inputs == {} and old.method == ""
    # such a file is read, never written: the writers' check still wants every field
    with pytest.raises(ValueError, match="does not state reads"):
        validate_report(old.model_dump(exclude_unset=True) | {"mechanisms": [{"name": "x", "sigma": 1.0}]})
    # a file that states no epsilon cannot be read as a report: the page says so and still renders
    for bad in ({"delta": 1e-5, "method": "wasp"}, [1, 2]):
        with pytest.raises(ValueError):
            PrivacyReport.read(bad)
        broken = tmp_path / f"broken{type(bad).__name__}"
        shutil.copytree(run_dir, broken)
        (broken / "privacy.json").write_text(json.dumps(bad))
        text = " ".join(parse(build_report(broken)).text)
        assert "cannot be read as a privacy report" in text and "No privacy guarantee can be stated" in text


def test_report_tabular_non_private_run(tmp_path: Path) -> None:
    """Other methods (e.g. PEARL on tables) write rows without text and may be non-private references."""
    run = tmp_path / "tab"
    run.mkdir()
    rows = [{"age": 30 + i, "income": ">50K" if i % 2 else "<=50K"} for i in range(6)]
    (run / "synthetic.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "config.yaml").write_text("method: pearl\ndata:\n  label_column: income\n")
    priv = {"epsilon": float("inf"), "delta": 1e-5, "method": "pearl", "mechanisms": [], "guarantee": "NOT DP"}
    (run / "privacy.json").write_text(json.dumps(priv))  # json writes Infinity
    page = build_report(run)
    p = parse(page)
    _check_self_contained(p, page)
    text = " ".join(p.text)
    assert "NOT differentially private" in text
    assert "&gt;50K" in page and "age: 31" in text and "<=50K" in text


@pytest.mark.parametrize(
    "raw, shown",
    [
        (JUNK, "A great film\n\nI loved it, the music was great."),
        ("Here's a negative review of the movie: The plot was dull.", "The plot was dull."),
        ("Positive movie review: Loved it, __truly__.", "Loved it, truly."),
        ("Review:\nGreat film", "Great film"),
        ("## Review:\n\nGreat film", "Great film"),  # an echo written as a heading
        ('"A whole review in quotes."', "A whole review in quotes."),
        (
            "# Verdict\n* acting: fine\n- plot: thin\n> quoted line\n---\nSee [the trailer](#t).",
            ("Verdict\n• acting: fine\n- plot: thin\nquoted line\n\nSee the trailer."),
        ),
        # left alone: inner snake_case, arithmetic, a mid-text colon, a lone '#1', plain text
        ("my_var_name is 2 * 3 * 4; the review: fine. #1 film", "my_var_name is 2 * 3 * 4; the review: fine. #1 film"),
        ("Just a plain review.", "Just a plain review."),
        ("**", "**"),  # nothing would be left: the raw text stands
    ],
)
def test_clean_for_display(raw: str, shown: str) -> None:
    from dpsynth.report.html import clean_for_display

    assert clean_for_display(raw, task="movie review", labels=["negative", "positive"]) == shown


# Texts that made a pattern re-scan the rest of the text from every mark: quadratic time.
ADVERSARIAL = ["__a ", "**a ", "**a \n", "__a\n", "[", "[a](", "![a]", "a \t", "`a ", "*a ", "_a ", "- ", "#"]


def test_clean_for_display_takes_linear_time() -> None:
    """Regression: clean_for_display("__a " * 32768) (128 KB) took 68 s, and the report cleaned each sample
    before clipping it.  Every 200 KB text below must clean in under 5 s (it takes milliseconds); the check
    runs in a child process with a deadline, so the quadratic version fails in seconds instead of hanging."""
    import sys

    import dpsynth.report.text as text_module

    code = f"""
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("text", {str(text_module.__file__)!r})
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
for piece in {ADVERSARIAL!r}:
    raw = ("x " + piece * (200_000 // len(piece)))[:200_000]
    t = time.perf_counter()
    mod.clean_for_display(raw, "movie review", ["negative", "positive"])
    took = time.perf_counter() - t
    assert took < 5, (piece, took)
    print(repr(piece), round(took, 3))
"""
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"cleaning 200 KB texts took over 30 s: {exc.stdout!r}") from None
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("\n") == len(ADVERSARIAL)
    # what they clean to is still right
    from dpsynth.report.text import clean_for_display

    assert clean_for_display("a **b c** d __e__ [f](g) " * 3) == "a b c d e f " * 2 + "a b c d e f"


def test_sample_cards_show_clean_text_and_keep_the_raw_text(run_dir: Path) -> None:
    page = build_report(run_dir, samples_per_class=1000)
    cards = re.findall(r'<div class="sample">(.*?)</div>\s*(?=<div class="sample">|<h3>|</section>)', page, re.S)
    junk = [c for c in cards if "A great film" in c]
    assert len(junk) == 1, "the junk sample's card"
    shown, _, raw = junk[0].partition("<details>")
    assert "I loved it, the music was great." in shown
    for marker in ("**", "##", "```", "`", "Here is a", "Sure!"):
        assert marker not in html.unescape(shown), marker
    # the raw text stays available, escaped, in a <details> of the same card
    assert "<summary>raw text</summary>" in raw and html.escape(JUNK.strip(), quote=True) in raw
    # a text that needed no cleaning has no raw copy; the synthetic data itself is unchanged
    assert not any("<details>" in c for c in cards if "A great film" not in c and "alert(" not in c)
    assert JUNK in (run_dir / "synthetic.jsonl").read_text(encoding="utf-8").replace("\\n", "\n")


def test_report_leads_with_the_headline_and_its_references(run_dir: Path, tmp_path: Path) -> None:
    page = build_report(run_dir)
    ev = json.loads((run_dir / "evaluation.json").read_text())
    # right after the header, before every other section
    assert page.index('id="headline"') < page.index('id="privacy"') < page.index('id="evaluation"')
    m = re.search(r'<section id="headline">(.*?)</section>', page, re.S)
    assert m
    head = " ".join(" ".join(parse(m.group(1)).text).split())
    acc = ev["utility"]["logreg"]["accuracy"]["mean"]
    assert f"accuracy {acc:.3f}" in head and "trained on the" in head and "synthetic records" in head
    assert "always answering the most common test label" in head  # the majority-class reference
    assert re.search(r"most common test label \('[01]', (negative|positive)\)", head), head  # with its name
    assert "FID" in head and "precision" in head  # the readings in plain words
    assert '<a href="#headline">' in page

    # references of a run on embedded:imdb, and a spread over draws where draws differ
    other = tmp_path / "refs"
    shutil.copytree(run_dir, other)
    ev["headline"]["references"] = [
        {
            "name": "real",
            "label": "100 real records from the embedded IMDb pool",
            "value": 0.689,
            "std": 0.03,
            "values": [0.66, 0.69, 0.72],
            "draws": 3,
        },
        {"name": "zero-shot", "label": "zero-shot synthetic set (100 records, runs/zs)", "value": 0.634},
        *ev["headline"]["references"],
    ]
    ev["readings"]["mauve"] = "MAUVE 0.74: the synthetic texts' distribution moderately overlaps the real one"
    ev["notes"] = ["no --test given: the run used data.private = embedded:imdb, so its test split is the test set"]
    (other / "evaluation.json").write_text(json.dumps(ev))
    m = re.search(r'<section id="headline">(.*?)</section>', build_report(other), re.S)
    assert m
    head = " ".join(" ".join(parse(m.group(1)).text).split())
    assert "100 real records from the embedded IMDb pool" in head and "0.689 ± 0.030 (3 draws)" in head
    assert "zero-shot synthetic set" in head and "0.634" in head and "0.500" in head
    assert "moderately overlaps the real one" in head and "no --test given" in head

    # an evaluation.json written before the headline existed: the logreg accuracy, readings recomputed
    for key in ("headline", "readings", "notes"):
        ev.pop(key)
    (other / "evaluation.json").write_text(json.dumps(ev))
    m = re.search(r'<section id="headline">(.*?)</section>', build_report(other), re.S)
    assert m
    head = " ".join(" ".join(parse(m.group(1)).text).split())
    assert f"accuracy {acc:.3f}" in head and "no fixed scale" in head
    # not evaluated: no headline section, and the hint names the test data to give
    (other / "evaluation.json").unlink()
    page = build_report(other)
    assert 'id="headline"' not in page and "--test HELD_OUT_FILE" in page


@pytest.mark.parametrize(
    "evaluation",
    [
        {"fidelity": [1, 2]},
        {"utility": [1], "synthetic": {"n": 3}},
        {"per_round": [{"n": 3}]},
        {"test": "x", "synthetic": {"n": 1}},
        {"test": {"shares": {"0": "x"}}},
        {"per_round": [{"round": "x"}]},
        {"per_round": [{"round": 1, "fid": "x"}]},
        {"fidelity": {"fid": 1.0, "n_synthetic": "many"}},
        {"fidelity": {"label_consistency": {"by_generator": [1]}}},
        {"utility": {"logreg": {"accuracy": {"mean": 0.5, "values": 3}}}},
        {"headline": {"value": 0.5, "references": [5]}},
        {"text_stats": {"synthetic": 5}},
        {"notes": "x"},
        [1, 2],
        "{not json",
    ],
)
def test_report_names_a_damaged_evaluation_json(run_dir: Path, tmp_path: Path, evaluation: Any) -> None:
    """Regression: evaluation.json of valid JSON but another shape crashed the report in a traceback (and a file
    that is not JSON ended it with an error).  Now its section says the file is damaged; the page renders."""
    other = tmp_path / "ev"
    shutil.copytree(run_dir, other)
    raw = evaluation if isinstance(evaluation, str) else json.dumps(evaluation)
    (other / "evaluation.json").write_text(raw, encoding="utf-8")
    page = build_report(other)
    text = " ".join(parse(page).text)
    assert "evaluation.json is damaged" in text and "differential privacy" in text.lower()
    assert 'id="headline"' not in page  # nor a headline read from it


def test_evaluation_sections_never_fail_on_a_shape_the_check_passes(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever part of a real evaluation.json is replaced by whatever value, the check turns it away or every
    section that reads it renders: the shape is checked in one place, and nowhere else can fail."""
    import random

    from dpsynth.report import plots
    from dpsynth.report.evaluation import check_evaluation, evaluation_section, headline_section
    from dpsynth.report.html import _class_section, _stale_evaluation

    class Axes:  # the charts' own code runs (its float() of every value), matplotlib's drawing does not
        def __getattr__(self, name: str) -> Any:
            return lambda *a, **k: None

    monkeypatch.setattr(plots, "_render", lambda salt, title, draw, *a: draw(Axes()) or "")

    good = json.loads((run_dir / "evaluation.json").read_text())
    assert check_evaluation(good) == (good, "")
    junk: list[Any] = [None, "x", 5, 2.5, float("nan"), True, [], [1, "a"], {}, {"a": [1]}, [{"round": "r"}]]
    rng = random.Random(0)
    for _ in range(300):
        ev = json.loads(json.dumps(good))
        node, path = ev, []
        while isinstance(node, (dict, list)) and node and (not path or rng.random() < 0.7):
            key = rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))
            path.append(key)
            parent, node = node, node[key]
        parent[path[-1]] = rng.choice(junk)
        checked, why = check_evaluation(ev)
        if checked is None:
            assert why.startswith("evaluation.json is damaged"), why
            continue
        try:
            headline_section(checked)
            evaluation_section(checked, run_dir)
            _class_section([{"label": "0", "text": "t"}], {"0": "neg"}, None, checked, {"0": "neg"})
            _stale_evaluation(checked, 3, run_dir)
        except Exception as exc:  # noqa: BLE001 - the failure names the path that got through
            raise AssertionError(f"{path} = {parent[path[-1]]!r}: {type(exc).__name__}: {exc}") from exc


def test_report_of_a_run_directory_whose_name_or_records_are_not_utf8(run_dir: Path, tmp_path: Path) -> None:
    """Regression: `dpsynth report $'bad\\xffname'` (a name that is not UTF-8 reaches Python as a surrogate
    escape) and a lone surrogate escape "\\ud800" in synthetic.jsonl ended in a UnicodeEncodeError.  Now they
    show as U+FFFD and the page is written."""
    import os

    bad = tmp_path / os.fsdecode(b"bad\xffname")
    shutil.copytree(run_dir, bad)
    (bad / "report.html").unlink(missing_ok=True)
    assert "bad\ufffdname" in _header(write_report(bad).read_bytes().decode("utf-8"))  # the name alone
    with open(bad / "synthetic.jsonl", "a", encoding="utf-8") as f:
        f.write('{"text": "LONE \\ud800 SURROGATE", "label": "1", "generator": "_g\\udcff", "round": 3}\n')
    path = write_report(bad, samples_per_class=1000)
    page = path.read_bytes().decode("utf-8")  # strict: every byte written is UTF-8
    assert "bad\ufffdname" in _header(page) and "LONE \ufffd SURROGATE" in " ".join(parse(page).text)
    assert "_g\ufffd" in page
    from dpsynth.report.markup import esc, safe_text

    assert esc("bad\udcffname <b>") == "bad\ufffdname &lt;b&gt;" and safe_text("a\ud800b") == "a\ufffdb"
    assert safe_text("caf\u00e9 \U0001f600") == "caf\u00e9 \U0001f600"  # real text is left alone


@pytest.mark.parametrize("kind", ["line", "bar", "stacked"])
def test_chart_legends_keep_names_that_start_with_an_underscore(kind: str) -> None:
    """Regression: matplotlib leaves labels starting with "_" out of a legend, so a generator or class named
    "_pos" was missing from the charts' legends (the tables had it)."""
    from dpsynth.report import plots

    series = {"_pos": [0.2, 0.4], "neg": [0.8, 0.6], "__dunder": [0.1, 0.1]}
    if kind == "line":
        svg = plots.line_chart("t", "title", [1, 2], series)
    else:
        svg = plots.bar_chart("t", "title", ["1", "2"], series, stacked=kind == "stacked")
    assert svg is not None
    legend = re.search(r'<g id="chart-t-legend_1">(.*?)</svg>', svg, re.S)
    assert legend, "no legend"
    shown = [t.replace("\u200b", "") for t in re.findall(r"<text[^>]*>([^<]*)</text>", legend.group(1))]
    assert {"_pos", "neg", "__dunder"} <= set(shown), shown


def _header(page: str) -> str:
    m = re.search(r"<header>(.*?)</header>", page, re.S)
    assert m, "no <header>"
    return " ".join(parse(m.group(1)).text)


def test_report_header_shows_the_task_the_run_used(run_dir: Path, tmp_path: Path) -> None:
    import yaml

    other = tmp_path / "task"
    shutil.copytree(run_dir, other)
    assert "task: movie review" in _header(build_report(other))  # the fixture's config states it
    cfg = yaml.safe_load((other / "config.yaml").read_text())
    # older runs on the embedded IMDb data left data.task at its default "text"; the run used "movie review"
    cfg["data"].update(task="text", private="embedded:imdb")
    (other / "config.yaml").write_text(yaml.safe_dump(cfg))
    header = _header(build_report(other))
    assert "task: movie review" in header and "task: text" not in header
    cfg["data"].update(private=str(tmp_path / "own.csv"))  # a run on its own data really used "text"
    (other / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert "task: text" in _header(build_report(other))


def test_report_never_shows_float_noise_as_a_spread(run_dir: Path, tmp_path: Path) -> None:
    """An evaluation.json of an older version: logreg "over 3 seeds" with std 1.36e-16 (identical values)."""
    other = tmp_path / "old_eval"
    shutil.copytree(run_dir, other)
    ev = json.loads((other / "evaluation.json").read_text())
    ev["utility"]["logreg"].update(
        seeds=[0, 1, 2], accuracy={"mean": 0.4855, "std": 1.36e-16, "values": [0.4855] * 3}, runs=None
    )
    ev["utility"]["finetune"] = {
        "classifier": "fine-tuned",
        "seeds": [0, 1, 2],
        "deterministic": False,
        "accuracy": {"mean": 0.7, "std": 1.2e-16, "values": [0.7] * 3},
        "macro_f1": {"mean": 0.6, "std": 0.05, "values": [0.55, 0.6, 0.65]},
    }
    (other / "evaluation.json").write_text(json.dumps(ev))
    text = " ".join(parse(build_report(other)).text)
    assert "e-16" not in text and "± 0 " not in text
    assert "0.4855 ±" not in text and "1 (deterministic)" in text  # deterministic: no spread at all
    assert "0.7 (same in all 3 seeds)" in text and "0.6 ± 0.0500 (3 seeds)" in text


def test_report_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a directory"):
        build_report(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither privacy.json nor synthetic"):
        build_report(tmp_path / "empty")
    # a run stopped before its outputs: not "give a run directory written by dpsynth run", which it is
    (tmp_path / "empty" / "config.yaml").write_text("method: wasp\n")
    with pytest.raises(DataError, match=r"not finished; if it is no longer running, .*--resume --out [^ ]*empty`"):
        build_report(tmp_path / "empty")
    (tmp_path / "empty" / "config.yaml").write_text("data:\n  private: in-memory:DataFrame\n")
    with pytest.raises(DataError, match=r"--resume --out [^ ]*empty --private FILE`"):  # the records again
        build_report(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "privacy.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        build_report(tmp_path / "bad")


def test_report_cli(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dpsynth.cli import main

    out = tmp_path / "r.html"
    main(["report", str(run_dir), "--out", str(out)])
    assert out.exists() and f"wrote {out}" in capsys.readouterr().out
    main(["report", str(run_dir), "--out", str(out)])  # an earlier report is replaced
    assert f"wrote {out}" in capsys.readouterr().out
    # regression: any other existing file outside the run (the run's private data, say) was replaced
    private = tmp_path / "private-copy.csv"
    private.write_text("text,label\nsecret,0\n")
    with pytest.raises(SystemExit) as exc:
        main(["report", str(run_dir), "--out", str(private)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "exists and is not a dpsynth report" in err and err.count("\n") == 1, err
    assert private.read_text() == "text,label\nsecret,0\n"
    with pytest.raises(SystemExit) as exc:
        main(["report", str(tmp_path / "nope")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    # --out naming a file of the run (the synthetic set, its config) would replace it with the page
    output = next(run_dir.glob("synthetic.*"))
    before = output.read_bytes()
    nested = run_dir / "extra" / "kept.npz"  # a file in a folder of the run, as a method's checkpoints are
    nested.parent.mkdir(exist_ok=True)
    nested.write_bytes(b"kept")
    for name in (output.name, "config.yaml", "privacy.json", "extra/kept.npz"):
        with pytest.raises(SystemExit) as exc:
            main(["report", str(run_dir), "--out", str(run_dir / name)])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and "is a file of the run directory" in err and err.count("\n") == 1, err
    assert output.read_bytes() == before and nested.read_bytes() == b"kept"
    nested.unlink()
    nested.parent.rmdir()
    # a folder gets report.html inside it
    folder = tmp_path / "reports"
    folder.mkdir()
    main(["report", str(run_dir), "--out", str(folder)])
    assert (folder / "report.html").exists() and f"wrote {folder / 'report.html'}" in capsys.readouterr().out
    # regression: --out naming another run's folder replaced that run's report.html with this run's page
    other = tmp_path / "other_run"
    shutil.copytree(run_dir, other)
    for target in (other, other / "report.html"):
        with pytest.raises(SystemExit) as exc:
            main(["report", str(run_dir), "--out", str(target)])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and f"{other} is another run" in err and "report-of-" in err, err
    main(["report", str(run_dir), "--out", str(other / "compare.html")])  # a new name there is fine
    assert (other / "compare.html").exists()


# Appended to a copy of the report only (the report has no script): layout numbers into a <pre>.
MEASURE_JS = """<script>
var d = document.documentElement, r = {scrollWidth: d.scrollWidth, innerWidth: window.innerWidth};
var h = document.getElementById("headline");
if (h) { var b = h.getBoundingClientRect(); r.headline = {top: b.top, height: b.height, text: h.innerText}; }
var p = document.createElement("pre"); p.id = "measure"; p.textContent = JSON.stringify(r);
document.body.appendChild(p);
</script>"""

CHROMIUM_FLAGS = [  # headless, offline: no background networking that the closed network would refuse
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
]


@pytest.mark.slow
def test_report_renders_in_headless_chromium(run_dir: Path, tmp_path: Path) -> None:
    """The report as a person sees it: Chromium parses it without console errors, every inline SVG plot
    survives into the rendered DOM, and a screenshot shows coloured plots, not a blank page.  CI installs
    Debian's chromium and sets DPSYNTH_REQUIRE_CHROMIUM=1, so there this test cannot skip."""
    import os

    import numpy as np
    from PIL import Image

    chromium = next((c for c in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(c).exists()), None)
    if chromium is None:
        if os.environ.get("DPSYNTH_REQUIRE_CHROMIUM") == "1":
            pytest.fail("DPSYNTH_REQUIRE_CHROMIUM=1 but no /usr/bin/chromium (apt-get install chromium)")
        pytest.skip("no /usr/bin/chromium")
    path = write_report(run_dir, tmp_path / "report.html")
    source = path.read_text(encoding="utf-8")

    def chrome(*args: str, page: Path = path) -> subprocess.CompletedProcess[str]:
        profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
        cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    dom = chrome("--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'id="privacy"' in dom.stdout
    assert dom.stdout.count("<svg") == source.count("<svg") >= 2
    assert "alert(" not in dom.stdout.replace("&lt;script&gt;alert(", "")
    assert "CONSOLE" not in dom.stderr and "Uncaught" not in dom.stderr, dom.stderr[-2000:]

    def coloured_pixels(page: Path) -> int:
        """Saturated pixels of a 1200 x 8000 screenshot (the whole report: most plots sit below the fold)."""
        shot = page.with_suffix(".png")
        proc = chrome(f"--screenshot={shot}", "--window-size=1200,8000", "--hide-scrollbars", page=page)
        assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
        img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
        assert img.shape[:2] == (8000, 1200)
        return int(((img.max(axis=2) - img.min(axis=2)) > 60).sum())

    # Text is grey on white and the plots add saturated colours; links and badges are coloured too, so
    # the same page without its plots is the control.  (A fixed share of the first screen was flaky: the
    # votes' noise is not seeded, so the plots' shapes vary, and their share of it sat at the threshold.)
    bare = tmp_path / "no-plots.html"
    bare.write_text(re.sub(r"<svg\b.*?</svg>", "", source, flags=re.S), encoding="utf-8")
    added = coloured_pixels(path) - coloured_pixels(bare)
    assert added > 20_000, f"the plots add only {added} coloured pixels"

    # Layout at a small laptop's width: nothing widens the page (wide tables scroll inside their own box).
    # The report itself has no script; a measuring copy appends one that writes the numbers into the DOM.
    probe = tmp_path / "probe.html"
    probe.write_text(source.replace("</body>", MEASURE_JS + "</body>"), encoding="utf-8")
    for width in (1000, 700):
        dom = chrome("--dump-dom", f"--window-size={width},900", page=probe)
        m = re.search(r'<pre id="measure">(.*?)</pre>', dom.stdout, re.S)
        assert dom.returncode == 0 and m, dom.stderr[-2000:]
        got = json.loads(html.unescape(m.group(1)))
        assert got["innerWidth"] == width, got
        assert got["scrollWidth"] <= got["innerWidth"], f"the page overflows horizontally at {width}px: {got}"
        # the headline is rendered, and visible without scrolling
        h = got.get("headline")
        assert h and h["height"] > 0 and 0 <= h["top"] < 900 - 60, got
        assert "accuracy" in h["text"] and "most common test label" in h["text"]


def test_report_says_when_the_evaluation_scored_fewer_records_than_the_run_holds(run_dir: Path, tmp_path: Path) -> None:
    """After `dpsynth sample` the headline still said "trained on the 100 synthetic records" of a larger set."""
    from dpsynth.report.run_files import read_synthetic

    run = tmp_path / "sampled"
    shutil.copytree(run_dir, run)
    n = len(read_synthetic(run))
    (run / "evaluation.json").write_text(json.dumps({"synthetic": {"n": n - 6}}))
    page = write_report(run).read_text(encoding="utf-8")
    assert f"The evaluation below scored {n - 6} synthetic records; the run now holds {n}" in page
    (run / "evaluation.json").write_text(json.dumps({"synthetic": {"n": n}}))
    assert "The evaluation below scored" not in write_report(run).read_text(encoding="utf-8")


def test_report_config_shows_the_runs_own_sections_and_names_a_damaged_file(run_dir: Path, tmp_path: Path) -> None:
    """A WASP run's report listed the finetune, pearl and knowledgesg defaults; a damaged config.yaml was
    reported as missing."""
    import yaml

    page = build_report(run_dir)
    shown = re.search(r"<summary>config.yaml \(resolved\)</summary><pre>(.*?)</pre>", page, re.S)
    assert shown is not None
    text = html.unescape(shown.group(1))
    assert "\nwasp:" in text and "\nprivacy:" in text and "\ndata:" in text
    assert "\nfinetune:" not in text and "\npearl:" not in text and "\nknowledgesg:" not in text
    run = tmp_path / "damaged"
    shutil.copytree(run_dir, run)
    (run / "config.yaml").write_text(": : [\n")
    assert "config.yaml cannot be read (damaged)." in build_report(run)
    # a method this version does not know (a newer version's run): every section kept, the path still cut
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    cfg["method"], cfg["data"]["private"] = "future-method", "/home/alice/secret/private.csv"
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    page = build_report(run)
    assert "/home/alice" not in page and ".../private.csv" in page and "finetune:" in page


def test_report_shows_a_declared_class_without_records_and_labels_nobody_declared(
    run_dir: Path, tmp_path: Path
) -> None:
    """A declared class with no synthetic record vanished from the class table, and a label the run never
    declared became an extra row without a word."""
    from dpsynth.report.run_files import read_synthetic

    page = write_report(run_dir).read_text(encoding="utf-8")
    assert "can never predict" not in page and "does not declare" not in page
    run = tmp_path / "edited"
    shutil.copytree(run_dir, run)
    out = run / "synthetic.jsonl"
    kept = [r for r in read_synthetic(run) if str(r["label"]) != "0"]
    kept += [{**kept[0], "label": "maybe", "label_name": "maybe"}] * 2
    out.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
    classes = write_report(run).read_text(encoding="utf-8").split('id="classes"')[1].split("</section>")[0]
    assert "No synthetic record has the declared label(s) 0" in classes
    assert "2 record(s) carry label(s) the run does not declare (maybe)" in classes
    assert "<td>0</td>" in classes  # the missing class is a row of zeros


def test_per_round_table_names_both_fids(run_dir: Path, tmp_path: Path) -> None:
    """The chart plots the equal-size FID; the table under it showed the growing sets' own FID under a plain
    "FID" header, which falls with size alone and read as progress the chart did not show.  Both, named."""
    other = tmp_path / "ev"
    shutil.copytree(run_dir, other)
    per = [
        {"round": t, "n": 20 * (t + 1), "fid": round(0.97 - 0.09 * t, 3), "fid_equal_n": 0.96 + 0.005 * t}
        | {"n_equal": 20}
        for t in range(3)
    ]
    (other / "evaluation.json").write_text(json.dumps({"per_round": per}), encoding="utf-8")
    text = " ".join(" ".join(parse(build_report(other)).text).split())
    assert "FID on 20 samples (equal sizes)" in text and "FID of all its samples (falls with size alone)" in text
    assert "0.965" in text and "0.79" in text  # round 1's equal-size FID and round 2's own


def test_report_command_warns_on_the_console_of_what_the_page_leaves_out(run_dir: Path, tmp_path: Path) -> None:
    """Regression: a report of a run whose privacy.json or rounds.json was damaged exited 0 with only "wrote
    report.html"; the page said that it states no privacy guarantee, the console did not.  (A subprocess: under
    pytest the log goes to pytest's handler, not to the console as it does for a user.)"""

    def report(run: Path, *more: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "dpsynth", "report", str(run), *more]
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"}
        )

    whole = report(run_dir, "--out", str(tmp_path / "whole.html"))
    assert whole.returncode == 0 and whole.stderr == "", whole.stderr  # a whole run: nothing to say
    run = tmp_path / "damaged"
    shutil.copytree(run_dir, run)
    (run / "privacy.json").write_text('{"epsilon": "x"}', encoding="utf-8")
    (run / "rounds.json").write_text("[1, 2]", encoding="utf-8")
    done = report(run)
    assert done.returncode == 0 and f"wrote {run / 'report.html'}" in done.stdout, done.stdout + done.stderr
    err = done.stderr.splitlines()
    assert any(
        line.startswith(f"warning: report of {run}: privacy.json cannot be read") and "no privacy guarantee" in line
        for line in err
    ), err
    assert f"warning: report of {run}: rounds.json is damaged, so the per-round summary cannot be shown" in err, err
    # privacy.json that is not JSON at all, and no config.yaml: the same (the report refused the first)
    (run / "privacy.json").write_text("{bad", encoding="utf-8")
    (run / "config.yaml").unlink()
    done = report(run)
    assert done.returncode == 0, done.stderr
    err = done.stderr.splitlines()
    assert (
        f"warning: report of {run}: privacy.json cannot be read (not valid JSON), so the report states no "
        "privacy guarantee" in err
    ), err
    assert f"warning: report of {run}: config.yaml is missing" in err, err
    page = (run / "report.html").read_text(encoding="utf-8")
    assert "cannot be read as a privacy report (not valid JSON)" in page and "No privacy guarantee" in page
    # regression: a WASP run without its rounds.json made a page saying "this method writes no per-round
    # summary", without a word on the console
    bare = tmp_path / "no-rounds"
    shutil.copytree(run_dir, bare)
    (bare / "rounds.json").unlink()
    done = report(bare)
    assert done.returncode == 0 and done.stderr.splitlines() == [
        f"warning: report of {bare}: rounds.json is missing, so the per-round summary cannot be shown"
    ], done.stderr
    assert "writes no per-round summary" not in (bare / "report.html").read_text(encoding="utf-8")
    # regression: a privacy.json holding `null` was reported as missing
    (run / "privacy.json").write_text("null", encoding="utf-8")
    done = report(run)
    assert done.returncode == 0, done.stderr
    assert (
        f"warning: report of {run}: privacy.json cannot be read (JSON null, not an object), so the report states "
        "no privacy guarantee" in done.stderr.splitlines()
    ), done.stderr


def _deny_reading(path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make ``path`` unreadable (PermissionError, as a file of another user); returns the real read_text."""
    real = Path.read_text

    def denied(self: Path, *args: Any, **kwargs: Any) -> str:
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", denied)
    return real


def test_a_run_file_one_cannot_open_is_not_called_damaged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: a privacy.json or evaluation.json the user may not read was called "not valid JSON; the run
    directory is damaged", which sends them to re-run instead of to the file's permissions."""
    from dpsynth.report.run_files import UnusableJson, read_json

    path = tmp_path / "privacy.json"
    path.write_text('{"epsilon": 1.0}', encoding="utf-8")
    real = _deny_reading(path, monkeypatch)
    with pytest.raises(UnusableJson, match=r"cannot be read \(Permission denied\); check its permissions") as exc:
        read_json(path)
    assert not exc.value.damaged and "not valid JSON" not in str(exc.value)
    monkeypatch.setattr(Path, "read_text", real)
    assert read_json(path) == {"epsilon": 1.0}
    assert read_json(tmp_path / "absent.json") is None
    (tmp_path / "folder.json").mkdir()
    with pytest.raises(UnusableJson, match="a folder, not a JSON file; the run directory is damaged"):
        read_json(tmp_path / "folder.json")


def test_a_membership_audit_one_cannot_open_is_not_called_damaged(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: a membership.json the user may not read said "cannot be read; run dpsynth audit membership
    again", which redoes a whole audit where the file's permissions are the fix."""
    path = run_dir / "membership.json"
    path.write_text("{}", encoding="utf-8")
    real = _deny_reading(path, monkeypatch)
    page = build_report(run_dir)
    assert "membership.json cannot be read (Permission denied); check its permissions." in page
    assert "audit membership again" not in page
    monkeypatch.setattr(Path, "read_text", real)
    assert "membership.json cannot be read; run dpsynth audit membership again." in build_report(run_dir)


def test_a_report_page_has_unique_element_ids(run_dir: Path) -> None:
    """Regression: every inlined chart held matplotlib's figure_1, axes_1, ... ids (svg.hashsalt salts only
    the hashed ones), so a page of 7 charts repeated each 7 times: invalid HTML, and a clip path or
    gradient reference could resolve to another chart's element."""
    page = build_report(run_dir)
    assert page.count("<svg") >= 2
    ids = re.findall(r'\sid="([^"]+)"', page)
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})[:5]
    refs = set(re.findall(r'(?:url\(#|href="#)([^")]+)', page))
    assert refs <= set(ids)  # every reference still finds its element


def test_a_weak_vote_is_a_warning_on_the_page(run_dir: Path, tmp_path: Path) -> None:
    """A vote too weak to rank a class's samples (run log: one warning in round 1) showed on the page only as a
    number in a table; the reader who never opens run.log must see it."""
    run = tmp_path / "weak"
    shutil.copytree(run_dir, run)
    rounds = json.loads((run / "rounds.json").read_text(encoding="utf-8"))
    voted = [r for r in rounds if r.get("weights")]
    assert len(voted) >= 2
    for r in voted:
        r["vote_signal"], r["class_vote_signal"] = 2.0, {"0": 1.5, "1": 2.5}
    (run / "rounds.json").write_text(json.dumps(rounds), encoding="utf-8")
    assert "The vote was weak" not in build_report(run)  # strong votes: no box
    voted[1]["vote_signal"], voted[1]["class_vote_signal"] = 0.4, {"0": 0.12, "1": 0.7}
    (run / "rounds.json").write_text(json.dumps(rounds), encoding="utf-8")
    page = build_report(run)
    box = re.search(r'<p class="warn">The vote was weak in (.*?)</p>', page, re.S)
    assert box, "no warning"
    assert box.group(1).startswith(f"round {voted[1]['round']} (negative: 0.12)") and "zero-shot" in box.group(1)


def test_an_aug_pe_reports_config_shows_the_preset_values_it_ran_with(tmp_path: Path, private_csv: Path) -> None:
    """Regression: the report's "config.yaml (resolved)" of an Aug-PE run showed the stored wasp.q 8, use_far
    true, variation contrastive, while the run used Aug-PE's Q = 1, near votes only, rephrase (and the
    privacy table beside it said Top-1)."""
    import yaml

    cfg = fake_run_config(
        private_csv, tmp_path / "augpe", method="aug-pe", generators=[dict(name="a", model="x")], wasp=dict(rounds=2)
    )
    dpsynth.synthesize(cfg, generators={"a": FakeGenerator("a", 1)}, embedder=FakeEmbedder(), progress=False)
    stored = yaml.safe_load((tmp_path / "augpe" / "config.yaml").read_text())
    assert stored["wasp"]["q"] != 1 and stored["wasp"]["variation"] != "rephrase"  # what the file keeps
    page = build_report(tmp_path / "augpe")
    shown = re.search(r"<summary>config.yaml \(resolved\)</summary><pre>(.*?)</pre>", page, re.S)
    assert shown is not None
    wasp = yaml.safe_load(html.unescape(shown.group(1)))["wasp"]
    assert (wasp["q"], wasp["use_far"], wasp["contrastive"], wasp["weighting"], wasp["variation"]) == (
        1,
        False,
        False,
        False,
        "rephrase",
    )
    assert "aug-pe fixes wasp.q, wasp.use_far" in page


def test_the_per_round_accuracy_chart_does_not_zoom_into_test_set_noise() -> None:
    """Regression: the chart's y-axis zoomed onto the points, so accuracies 0.730-0.735 on 2,000 test reviews
    (one standard error about 0.010) filled the chart like a trend."""
    from dpsynth.report.evaluation import _accuracy_range, _noise_words

    accs: list[float | None] = [0.7295, 0.7345, None, 0.7330]
    lo, hi = _accuracy_range(accs, 2000) or (0.0, 0.0)
    se = (0.732 * 0.268 / 2000) ** 0.5
    assert hi - lo >= 4 * se * 0.99 and lo <= 0.7295 and hi >= 0.7345
    assert _noise_words(accs, 2000) == " (± 0.020 is test-set noise, 2,000 records)"
    far = _accuracy_range([0.55, 0.85], 2000) or (0.0, 0.0)  # a real trend keeps its points inside
    assert far[0] < 0.55 and far[1] > 0.85 and far[1] <= 1.0
    assert _accuracy_range([None], 2000) is None and _noise_words([0.7], None) == ""


def test_label_consistency_is_shown_per_class_and_per_generator_only_among_several(
    run_dir: Path, tmp_path: Path
) -> None:
    """The overall score hid a 0.85 / 1.00 split between the classes (evaluation.json had it); a one-generator
    run repeated its score as that generator's."""
    run = tmp_path / "lc"
    shutil.copytree(run_dir, run)
    ev = json.loads((run / "evaluation.json").read_text(encoding="utf-8"))
    lc = {"score": 0.935, "real_reference": 0.79, "by_label": {"0": 0.852, "1": 0.998, "2": "x"}}
    ev["fidelity"]["label_consistency"] = {**lc, "by_generator": {"a": {"n": 10, "score": 0.935}}}
    (run / "evaluation.json").write_text(json.dumps(ev), encoding="utf-8")
    text = " ".join(parse(build_report(run)).text)
    assert "label consistency of the samples labelled 0" in text and "labelled 1" in text
    assert "labelled 2" not in text and "label consistency of a (" not in text
    ev["fidelity"]["label_consistency"]["by_generator"]["b"] = {"n": 5, "score": 0.9}
    (run / "evaluation.json").write_text(json.dumps(ev), encoding="utf-8")
    assert "label consistency of a (10 samples)" in " ".join(parse(build_report(run)).text)


def test_the_headline_names_the_test_sets_noise(run_dir: Path, tmp_path: Path) -> None:
    """The headline accuracy stood alone, its comparison rows with a spread: 0.735 against 0.742 read as a
    difference, on a test set whose own noise is +- 0.02."""
    run = tmp_path / "head"
    shutil.copytree(run_dir, run)
    ev = json.loads((run / "evaluation.json").read_text(encoding="utf-8"))
    ev["headline"]["value"], ev["test"]["n"] = 0.735, 2000
    (run / "evaluation.json").write_text(json.dumps(ev), encoding="utf-8")
    m = re.search(r'<section id="headline">(.*?)</section>', build_report(run), re.S)
    assert m is not None
    assert "± 0.020 is the test set's own noise (2,000 records" in " ".join(parse(m.group(1)).text)


def test_the_repetition_section_names_a_repeated_opening_and_name(run_dir: Path, tmp_path: Path) -> None:
    """Five random cards per class cannot show that one record in eight of a class tells the same invented
    film's story (an Aug-PE set of 1,000 did): the repetition section counts it and warns, for every opening
    and name over the line, with a name's spellings counted together."""
    run = tmp_path / "repetitive"
    shutil.copytree(run_dir, run)
    words = ["plot", "music", "acting", "story", "camera", "pace", "ending", "cast", "score", "light"]
    varied = [f"Take {i}: the {words[i % 10]} and I liked the {words[i % 7]}." for i in range(60)]
    records = [{"text": t, "label": str(i % 2)} for i, t in enumerate(varied)]
    # class 1: 8 of 40 records open alike after a prompt echo and name one invented film, two more name it
    # with an article or a possessive; 6 name two actors joined by "and"
    records += [
        {"text": f"Sure! Here is a positive movie review:\n\n**Rise and Roll** is a gem, take {i}.", "label": "1"}
        for i in range(8)
    ]
    records += [{"text": "I watched The Rise and Roll tonight.", "label": "1"}]
    records += [{"text": "Rise and Roll's cast shines.", "label": "1"}]
    for r in records[1:12:2]:
        r["text"] += " With Emma Stone and Chris Hemsworth."
    records += [{"text": varied[0], "label": "0"}] * 2  # two exact duplicates of a class-0 record
    (run / "synthetic.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    page = write_report(run).read_text(encoding="utf-8")
    p = parse(page)
    assert "repetition" in p.ids and 'href="#repetition"' in page
    section = html.unescape(page.split('id="repetition"')[1].split("</section>")[0])
    text = " ".join(re.sub(r"<[^>]+>", " ", section).split())
    assert (
        "Class positive (40 records): 8 (20%) begin “rise and roll is a”, 10 (25%) mention “Rise and Roll”, "
        "6 (15%) mention “Chris Hemsworth”, 6 (15%) mention “Emma Stone”." in text
    )
    assert "Emma Stone and Chris" not in text and "Class negative" not in text  # class 0 repeats too little
    assert "<code>dpsynth evaluate RUN_DIR --reference-zero-shot ZERO_SHOT_SET</code>" in section
    rows = {r.split("</td>")[0].split(">")[-1]: r for r in section.split("<tr>")[2:]}
    assert '<td class="num">30 (94%)</td>' in rows["negative"] and '<td class="num">2</td>' in rows["negative"]
    assert "<td>Rise and Roll (10, 25.0%)</td>" in rows["positive"]
    assert '<td class="num">33 (82%)</td>' in rows["positive"]  # 30 varied openings, one shared by 8, two more
    assert "And I" not in section  # the pronoun is no name
    # the evaluation's test set gives the task's own level beside the counts
    ev = json.loads((run / "evaluation.json").read_text())
    real = ev["text_stats"]["test"]["distinct_openings"]
    assert f"This task's real texts, from the evaluation's test set: {real:.0%} of each class's openings" in text


def test_repetition_counts_are_quiet_on_a_varied_set_and_linear_on_long_text() -> None:
    import time

    from dpsynth.report.repetition import name_key, names, opening, repetition_section

    assert names("When I'm with Emma Stone and I watch 'The Lord of the Rings' and Pride and Prejudice") == {
        "Emma Stone",
        "The Lord of the Rings",
        "Pride and Prejudice",
    }
    assert names("And I loved it. What I liked: everything. Plot Summary: The Movie") == set()
    assert names("John Travolta's role in The Night Circus The Night Circus") == {"John Travolta", "The Night Circus"}
    assert names("With Emma Stone. When The Matrix ends. This Is. Dear All, Hi Team") == {"Emma Stone", "The Matrix"}
    assert name_key("The Rise and Roll") == name_key("Rise and Roll")
    assert opening("## Review:\n\nThe **film**, sadly, was dull and long.", "review") == "the film sadly was dull"
    varied = [{"text": f"Record {i} talks about topic {i * 7} in its own way.", "label": "x"} for i in range(50)]
    assert 'class="warn"' not in repetition_section(varied, {"x": "only"})
    assert "No synthetic text" in repetition_section([{"text": " ", "label": "x"}], {})
    start = time.perf_counter()
    for bad in ("A " * 200_000, "Aa of the " * 50_000, "I " * 200_000, "__a " * 50_000, "Aa and " * 50_000):
        names(bad)
        opening(bad)
    assert time.perf_counter() - start < 5


def test_the_header_shows_the_run_directory_as_given_not_where_it_lies(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shared report showed the absolute path of the run on its author's disk (/home/NAME/...)."""
    monkeypatch.chdir(run_dir.parent)
    header = _header(build_report(run_dir.name))
    assert re.search(rf"run directory:\s+{run_dir.name}\b", header) and str(run_dir.parent) not in header
    monkeypatch.chdir(run_dir)
    page = build_report(".")
    assert f"<title>dpsynth report — {run_dir.name}</title>" in page and str(run_dir.parent) not in _header(page)


def test_the_privacy_table_shows_the_spend_once_when_the_accountant_agrees(run_dir: Path, tmp_path: Path) -> None:
    """Three rows read 3.99974 (spent, the accountant's epsilon, the cross-check): the spend is one row when the
    ledger's figure is the accountant's, two when they differ."""
    run = tmp_path / "r"
    shutil.copytree(run_dir, run)
    priv = json.loads((run / "privacy.json").read_text())

    def rows() -> list[str]:
        section = build_report(run).split('id="privacy"')[1].split("</section>")[0]
        return [" ".join(parse(r).text) for r in re.findall(r"<tr>.*?</tr>", section)]

    priv["accountant"] = {"name": "dp-accounting PLD", "epsilon_at_delta": priv["epsilon"]}
    (run / "privacy.json").write_text(json.dumps(priv))
    spent = [r for r in rows() if "epsilon" in r and "target" not in r]
    assert len(spent) == 1 and spent[0].startswith("epsilon spent (the accountant's epsilon at delta)"), spent
    priv["accountant"]["epsilon_at_delta"] = priv["epsilon"] - 0.5
    (run / "privacy.json").write_text(json.dumps(priv))
    spent = [r for r in rows() if "epsilon" in r and "target" not in r]
    assert [r.split()[0:2] for r in spent] == [["epsilon", "spent"], ["accountant's", "epsilon"]], spent


def test_the_outcomes_table_shows_failed_requests_only_where_some_failed() -> None:
    from dpsynth.report.rounds import _outcomes_table

    healthy = _outcomes_table([{"round": 0, "outcomes": {"a": {"accepted": 5, "unusable": 1}}}])
    assert "accepted" in healthy and "request failed" not in healthy and "judge's request failed" not in healthy
    failing = _outcomes_table([{"round": 1, "outcomes": {"a": {"accepted": 4, "request_failed": 2}}}])
    assert "request failed (no output; run.log says why)" in failing and "judge&#x27;s request" not in failing
    assert "judge's request failed" not in failing
