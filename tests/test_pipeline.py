"""End-to-end pipeline with a fake generator and embedder: outputs, ledger, privacy report."""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import dpsynth
from dpsynth.generators.base import Completion
from dpsynth.privacy.accountant import GaussianPlan
from dpsynth.privacy.voting import MIN_GRID_STEPS, top_q_moves, top_q_sensitivity

from .conftest import WORDS, FakeEmbedder, FakeGenerator, fake_run_config, smollm2_run_config


def test_wasp_end_to_end(private_csv: Path, tmp_path: Path) -> None:
    cfg = fake_run_config(private_csv, tmp_path / "run")
    gens = {"a": FakeGenerator("a", 1), "b": FakeGenerator("b", 2)}
    res = dpsynth.synthesize(cfg, generators=gens, embedder=FakeEmbedder(), progress=False)
    assert len(res) == 60
    rows = [json.loads(x) for x in (tmp_path / "run" / "synthetic.jsonl").read_text().splitlines()]
    assert {"text", "label", "generator", "round"} <= set(rows[0])
    assert {r["round"] for r in rows} == {0, 1, 2, 3}
    assert {r["label"] for r in rows} == {0, 1}  # integer labels come back as integers
    rep = json.loads((tmp_path / "run" / "privacy.json").read_text())
    assert rep["delta"] == 1e-5
    assert rep["epsilon"] == pytest.approx(4.0, rel=1e-3)
    assert rep["epsilon"] <= 4.0 + 1e-9
    mech = rep["mechanisms"][0]
    assert mech["count"] == 3
    assert mech["sensitivity_l2"] == pytest.approx(top_q_sensitivity(4, True))
    plan = GaussianPlan.calibrate_discrete(4.0, 1e-5, 3, top_q_moves(4, True), 3, MIN_GRID_STEPS)
    assert mech["sigma"] == pytest.approx(plan.sigma, rel=1e-6)
    float_plan = GaussianPlan.calibrate(4.0, 1e-5, 3, top_q_sensitivity(4, True))
    assert float_plan.sigma <= plan.sigma <= 1.01 * float_plan.sigma  # the discrete vote's price: little noise
    assert f"discrete Gaussian mechanism on the grid 2^-{plan.grid_bits}" in mech["name"]
    assert plan.grid_bits >= 3 and math.ldexp(plan.sigma, plan.grid_bits) >= MIN_GRID_STEPS
    for t in (1, 2, 3):  # the released votes lie on the noise's grid: exact discrete noise, no float low bits
        with np.load(tmp_path / "run" / "votes" / f"round_{t}.npz") as z:
            for side in ("near", "far"):
                steps = np.ldexp(z[side], plan.grid_bits)
                assert np.array_equal(steps, np.rint(steps)), (t, side)
    # rounds after the seed round prompt with examples (contrastive)
    assert any("poor" in p.lower() for p in gens["a"].prompts)
    assert (tmp_path / "run" / "config.yaml").exists()
    assert (tmp_path / "run" / "run.log").exists()


def test_zero_shot_reads_no_private_data(tmp_path: Path) -> None:
    cfg = fake_run_config(Path("/does/not/matter.csv"), tmp_path / "zs", method="zero-shot")
    gens = {"a": FakeGenerator("a"), "b": FakeGenerator("b")}
    res = dpsynth.synthesize(cfg, generators=gens, embedder=FakeEmbedder(), progress=False)
    assert len(res) == 60
    assert res.privacy["epsilon"] == 0 and res.privacy["mechanisms"] == []
    assert {r["round"] for r in res.records} == {0}


def test_aug_pe_is_a_preset(private_csv: Path, tmp_path: Path) -> None:
    cfg = fake_run_config(private_csv, tmp_path / "ape", method="aug-pe", generators=[dict(name="a", model="x")])
    gens = {"a": FakeGenerator("a")}
    res = dpsynth.synthesize(cfg, generators=gens, embedder=FakeEmbedder(), progress=False)
    assert res.privacy["mechanisms"][0]["sensitivity_l2"] == pytest.approx(1.0)
    assert any("rephrase" in p.lower() for p in gens["a"].prompts)
    assert not any("poor" in p.lower() for p in gens["a"].prompts)


NAMES = {"0": "negative", "1": "positive"}


@pytest.mark.parametrize("against", ["population", "other_classes"])
def test_keyword_variation_prompts_with_words_of_the_voted_samples(
    private_csv: Path, tmp_path: Path, against: str
) -> None:
    wasp = dict(rounds=3, q=4, variation="keywords", keywords_against=against)
    cfg = fake_run_config(private_csv, tmp_path / "kw", wasp=wasp)
    gens = {"a": FakeGenerator("a", 1), "b": FakeGenerator("b", 2)}
    res = dpsynth.synthesize(cfg, generators=gens, embedder=FakeEmbedder(), progress=False)
    assert len(res) == 60 and res.privacy["mechanisms"][0]["count"] == 3
    rounds = json.loads((tmp_path / "kw" / "rounds.json").read_text())
    words = rounds[1]["keywords"]
    assert set(words) == {"0", "1"} and all(words.values())
    vocabulary = {w.lower() for w in WORDS} | {"take"}  # what the fake generator writes ("A positive take: ...")
    assert all(w.lower() in vocabulary for ws in words.values() for w in ws)
    later = [p for p in gens["a"].prompts + gens["b"].prompts if re.search(r"mentions|about|touching on", p)]
    assert len(later) >= 45 and not any("good examples" in p.lower() or "poor" in p.lower() for p in later)
    # each prompt names 1-2 words of its own class, from one round's words
    of_class = {name: [set(r["keywords"][c]) for r in rounds if "keywords" in r] for c, name in NAMES.items()}
    for p in later:
        named = re.search(r"(?:mentions|about|touching on) (.+?)\.(?:\s|$)", p)
        assert named, p
        said = set(re.split(r", | and ", named.group(1)))
        label = "positive" if "positive" in p else "negative"
        assert 1 <= len(said) <= 2 and any(said <= ws for ws in of_class[label]), p


def test_output_formats_and_dataset(private_csv: Path, tmp_path: Path) -> None:
    for fmt in ("csv", "parquet"):
        cfg = fake_run_config(private_csv, tmp_path / fmt, output_format=fmt)
        res = dpsynth.synthesize(
            cfg,
            generators={"a": FakeGenerator("a"), "b": FakeGenerator("b")},
            embedder=FakeEmbedder(),
            progress=False,
        )
        assert res.output.suffix == f".{fmt}" and res.output.exists()
    ds = res.to_dataset()
    assert ds.num_rows == 60 and "text" in ds.column_names


def test_hf_dataset_input(private_csv: Path, tmp_path: Path) -> None:
    import datasets
    import pandas as pd

    ds = datasets.Dataset.from_pandas(pd.read_csv(private_csv, dtype=str))
    cfg = fake_run_config(Path("unused"), tmp_path / "hf")
    out = dpsynth.synthesize(
        cfg,
        private=ds,
        generators={"a": FakeGenerator("a"), "b": FakeGenerator("b")},
        embedder=FakeEmbedder(),
        progress=False,
        as_dataset=True,
    )
    assert isinstance(out, datasets.Dataset) and out.num_rows == 60


def _not_json(word: str) -> None:
    raise AssertionError(f"{word} is not JSON")


def test_epsilon_inf_is_an_exact_vote_and_says_not_private(private_csv: Path, tmp_path: Path) -> None:
    """epsilon = inf (the papers' non-private ceiling): votes are exact and privacy.json says NOT DP."""
    import numpy as np

    cfg = fake_run_config(private_csv, tmp_path / "inf", privacy=dict(epsilon="inf", delta=1e-5))
    gens = {"a": FakeGenerator("a", 1), "b": FakeGenerator("b", 2)}
    res = dpsynth.synthesize(cfg, generators=gens, embedder=FakeEmbedder(), progress=False)
    rep = res.privacy
    assert rep["differentially_private"] is False and rep["guarantee"].startswith("NONE")
    assert rep["epsilon"] == float("inf") and rep["accountant"] is None
    assert rep["mechanisms"][0]["sigma"] == 0.0 and rep["mechanisms"][0]["count"] == 3
    # regression: the files held ``Infinity``, which is not JSON (jq and JavaScript refuse the whole file)
    for name in ("privacy.json", "ledger.json"):
        on_disk = json.loads((tmp_path / "inf" / name).read_text(), parse_constant=_not_json)
        assert "inf" in json.dumps(on_disk)
    assert json.loads((tmp_path / "inf" / "privacy.json").read_text())["epsilon"] == "inf"
    # regression: resuming the finished run returned epsilon as the file's word "inf", a string
    again = dpsynth.synthesize(cfg, generators=gens, embedder=FakeEmbedder(), resume=True, progress=False)
    assert again.already_complete and again.privacy == rep
    from dpsynth.io import from_strict_json

    written = {"epsilon": "inf", "mechanisms": [{"sigma": "nan"}], "public_inputs": {"labels": {"0": "nan"}}}
    assert from_strict_json(written, {"public_inputs"}) == {
        "epsilon": math.inf,
        "mechanisms": [{"sigma": pytest.approx(math.nan, nan_ok=True)}],
        "public_inputs": {"labels": {"0": "nan"}},  # a user's label called "nan" stays a label
    }
    # regression: privacy.json and the page said "never written: ... pre-noise vote histograms" and "from the
    # noisy votes only" of this run, whose saved votes ARE the exact histograms
    assert "pre-noise" not in rep["never_written"] and "noisy" not in " ".join(rep["post_processing"])
    assert "votes/" in rep["released_exactly"] and "rounds.json" in rep["released_exactly"]
    assert "keywords" not in rep["released_exactly"]  # none drawn: contrastive examples
    kw = fake_run_config(
        private_csv,
        tmp_path / "kw",
        privacy=dict(epsilon="inf", delta=1e-5),
        wasp=dict(variation="keywords", writers=True),
    )
    rep_kw = dpsynth.synthesize(kw, generators=dict(gens), embedder=FakeEmbedder(), progress=False).privacy
    assert "class shares and the keywords of those pools in rounds.json" in rep_kw["released_exactly"]
    assert "example pools and the keywords of those pools from the exact votes" in " ".join(rep_kw["post_processing"])
    assert any(p.startswith("writer names in prompts") for p in rep_kw["post_processing"])
    from dpsynth.report import build_report

    page = build_report(tmp_path / "inf").lower()
    assert "written exactly, without noise: the vote histograms" in page and "pre-noise" not in page
    assert "noisy" not in page and "noised" not in page, re.findall(r".{60}nois(?:y|ed).{60}", page)[:3]
    assert "exact vote mass per round" in page and "without noise</em>" in page
    assert page.count("none: epsilon = inf") == 1  # regression: the warning and a "formal statement" repeated it
    m = len(__import__("pandas").read_csv(private_csv))
    q = cfg.wasp.q
    for t in (1, 2, 3):
        near = np.load(tmp_path / "inf" / "votes" / f"round_{t}.npz")["near"]
        # every private record spreads exactly 1 + 1/2 + ... + 2^-(q-1) over its class's samples, no noise
        assert near.sum() == pytest.approx(m * sum(2.0**-r for r in range(q)))
        assert np.all(near >= 0) and np.allclose(near * 2 ** (q - 1), np.round(near * 2 ** (q - 1)))
    # the resumed run continues the same non-private plan; a DP config cannot take it over
    again = dpsynth.synthesize(cfg, generators=gens, embedder=FakeEmbedder(), progress=False, resume=True)
    assert again.privacy["mechanisms"][0]["count"] == 3
    with pytest.raises(dpsynth.errors.ResumeError):
        dp = fake_run_config(private_csv, tmp_path / "inf", privacy=dict(epsilon=4.0, delta=1e-5))
        dpsynth.synthesize(dp, generators=gens, embedder=FakeEmbedder(), progress=False, resume=True)


def test_epsilon_inf_only_for_prompting_methods(tmp_path: Path) -> None:
    from dpsynth.config import Config

    for method in ("dp-finetune", "pearl", "knowledgesg"):
        with pytest.raises(ValueError, match="inf .no noise. is a research baseline"):
            Config.model_validate({"method": method, "privacy": {"epsilon": "inf"}})
    for bad in ("nan", 0, -1):
        with pytest.raises(ValueError, match="must be a number > 0") as info:
            Config.model_validate({"privacy": {"epsilon": bad}})
        assert "use --method zero-shot" not in str(info.value)  # a zero-shot user read it as advice to switch
    assert Config.model_validate({"privacy": {"epsilon": "inf"}}).privacy.is_private is False


class _Mislabeller(FakeGenerator):
    """Writes the other label's review every second request, as small generators often do."""

    def generate(self, requests, on_completion=None):
        out = super().generate(requests, on_completion)
        for i, c in enumerate(out):
            if i % 2 and "label" not in c.text:
                flipped = c.text.replace("negative", "@").replace("positive", "negative").replace("@", "positive")
                out[i] = type(c)(flipped, c.completion_tokens, c.prompt_tokens)
        return out


class _FakeJudge(FakeGenerator):
    """Answers which label the quoted review says it is (and 'unsure' when it cannot tell), with the
    first token's probabilities when asked for them (as llama.cpp does)."""

    def generate(self, requests, on_completion=None):
        from dpsynth.generators.base import Completion

        out = []
        for r in requests:
            text = r.messages[0].content if r.messages else r.prompt or ""
            self.prompts.append(text)
            body = text.split('"')[1] if text.count('"') >= 2 else ""
            ans = "Negative" if "negative take" in body else "Positive" if "positive take" in body else "unsure"
            other = "positive" if ans == "Negative" else "negative"
            top = ((ans, -0.2), (ans.lower(), -2.0), (other, -3.0)) if r.top_logprobs else ()
            out.append(Completion(ans, 1, 20, top_logprobs=top))
            if on_completion:
                on_completion(out[-1])
        return out


def test_label_judge_drops_samples_of_the_wrong_label(private_csv: Path, tmp_path: Path) -> None:
    cfg = fake_run_config(
        private_csv,
        tmp_path / "judge",
        wasp=dict(rounds=3, q=4, label_judge="j"),
        generators=[dict(name="a", model="x"), dict(name="j", model="z")],
    )
    gens = {"a": _Mislabeller("a", 1), "j": _FakeJudge("j", 2)}
    res = dpsynth.synthesize(cfg, generators=gens, embedder=FakeEmbedder(), progress=False)
    assert len(res) == 60
    for r in res.records:  # every kept sample says the label it carries
        assert f"{r['label_name']} take" in r["text"]
    rounds = json.loads((tmp_path / "judge" / "rounds.json").read_text())
    wrong = sum(o.get("wrong_label", 0) for r in rounds for o in r["outcomes"].values())
    assert wrong >= 10  # about half of generator a's outputs were re-asked
    assert all(r["judge_prompt_tokens"] > 0 for r in rounds)
    judge_prompts = [p for p in gens["j"].prompts if "Which label fits" in p]
    assert judge_prompts and not any("SENTINEL" in p for p in judge_prompts)  # synthetic text only
    assert "negative or positive" in judge_prompts[0]
    # privacy.json names the judge among what acts on the synthetic samples alone
    assert any(p.startswith("a label judge (j) reads each new sample") for p in res.privacy["post_processing"])


def test_label_judge_config_errors() -> None:
    from dpsynth.config import Config

    with pytest.raises(ValueError, match="not one of the generators"):
        Config.model_validate({"wasp": {"label_judge": "nope"}})
    with pytest.raises(ValueError, match="completion .base. model"):
        Config.model_validate({"wasp": {"label_judge": "gemma3-270m"}})
    assert Config.model_validate({"wasp": {"label_judge": "qwen2.5-0.5b"}}).wasp.label_judge == "qwen2.5-coder-0.5b"


def test_embedded_generators_come_with_the_label_judge() -> None:
    from dpsynth.config import EMBEDDED_JUDGE, Config, WaspConfig

    assert Config().wasp.label_judge == EMBEDDED_JUDGE  # the demo's defaults
    assert Config.model_validate({"wasp": {"q": 4}}).wasp.label_judge == EMBEDDED_JUDGE
    assert Config.model_validate({"wasp": {"label_judge": None}}).wasp.label_judge is None  # turned off
    assert Config(wasp=WaspConfig(label_judge=None)).wasp.label_judge is None
    own = Config.model_validate({"generators": [{"name": "a", "model": "x"}]})
    assert own.wasp.label_judge is None  # a user's own generators: opt in
    saved = Config.model_validate(own.model_dump())  # what a resumed run reads back
    assert saved.wasp.label_judge is None
    # regression: a list holding the judge's model (the README's four generators, `init`'s list uncommented)
    # turned the judge off without a word
    listed = [g.model_dump() for g in Config().generators] + [{"name": "big", "model": "qwen2.5-coder-1.5b-instruct"}]
    assert Config.model_validate({"generators": listed}).wasp.label_judge == EMBEDDED_JUDGE
    renamed = Config.model_validate({"generators": [{"name": "q", "model": "qwen2.5-coder-0.5b-instruct"}]})
    assert renamed.wasp.label_judge == "q" and "label_judge" not in renamed.wasp.model_fields_set
    as_base = [{"name": "q", "model": "qwen2.5-coder-0.5b-instruct", "prompt_format": "completion"}]
    assert Config.model_validate({"generators": as_base}).wasp.label_judge is None  # not how the judge runs
    resumed = Config.model_validate({"generators": listed, "wasp": {"label_judge": None}})  # a saved run's
    assert resumed.wasp.label_judge is None


def test_label_judge_missing_from_injected_generators_is_a_clear_error(private_csv: Path, tmp_path: Path) -> None:
    from dpsynth.errors import ConfigError

    cfg = fake_run_config(
        private_csv,
        tmp_path / "nojudge",
        wasp=dict(rounds=3, q=4, label_judge="j"),
        generators=[dict(name="a", model="x"), dict(name="j", model="z")],
    )
    with pytest.raises(ConfigError, match="label_judge: 'j' is not one of this run's generators"):
        dpsynth.synthesize(cfg, generators={"a": FakeGenerator("a")}, embedder=FakeEmbedder(), progress=False)


def test_several_samples_per_prompt(private_csv: Path, tmp_path: Path) -> None:
    """wasp.samples_per_prompt = 4: each prompt (and its examples) serves up to 4 samples (OpenAI's n)."""
    cfg = fake_run_config(private_csv, tmp_path / "n4", wasp=dict(rounds=3, q=4, samples_per_prompt=4))
    gens = {"a": FakeGenerator("a"), "b": FakeGenerator("b")}
    res = dpsynth.synthesize(cfg, generators=gens, embedder=FakeEmbedder(), progress=False)
    assert len(res) == 60
    prompts = len(gens["a"].prompts) + len(gens["b"].prompts)
    assert prompts <= 30  # one request per (generator, class, round) and 4 samples each, vs 60+ with n = 1

    # a backend that ignores n (one text per request) still fills the quota
    class One(FakeGenerator):
        def generate(self, requests, on_completion=None):
            return [type(c)(c.text, c.completion_tokens, c.prompt_tokens) for c in super().generate(requests)]

    cfg2 = fake_run_config(private_csv, tmp_path / "n4one", wasp=dict(rounds=3, q=4, samples_per_prompt=4))
    res2 = dpsynth.synthesize(cfg2, generators={"a": One("a"), "b": One("b")}, embedder=FakeEmbedder(), progress=False)
    assert len(res2) == 60


def test_progress_shows_samples_per_second_and_the_run_eta(
    private_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = fake_run_config(private_csv, tmp_path / "eta")
    dpsynth.synthesize(
        cfg, generators={"a": FakeGenerator("a"), "b": FakeGenerator("b")}, embedder=FakeEmbedder(), progress=True
    )
    err = capsys.readouterr().err  # not a terminal: one line per update
    assert "samples/s · ETA" in err and "| run " in err


def test_class_shares_pool_every_released_vote(private_csv: Path, tmp_path: Path, monkeypatch) -> None:
    """Regression: a round's class shares came from that round's vote alone, whose noise grows with the
    population it covers; one unlucky vote decided a whole round's classes (90% / 10% at N = 1,000).
    Here the first vote is even and every later one puts class 1's near mass below zero: the shares of
    later rounds must still weigh the first vote, not swing to the floor of the uniform mix (0.1)."""
    from dpsynth.methods import wasp
    from dpsynth.privacy.voting import NoisyVotes

    calls: list[int] = []

    def fake_vote(priv, priv_y, syn, syn_y, *, q, use_far, sigma, grid_bits=0, rng=None):  # type: ignore[no-untyped-def]
        calls.append(len(syn_y))
        near = np.ones(len(syn_y))
        if len(calls) > 1:
            near[np.asarray(syn_y) == "1"] = -1.0
        return NoisyVotes(near, np.ones(len(syn_y)) if use_far else None, sigma, top_q_sensitivity(q, use_far))

    monkeypatch.setattr(wasp, "noisy_top_q_vote", fake_vote)
    cfg = fake_run_config(private_csv, tmp_path / "run", n_synthetic=80)
    dpsynth.synthesize(
        cfg, generators={"a": FakeGenerator("a"), "b": FakeGenerator("b")}, embedder=FakeEmbedder(), progress=False
    )
    rounds = json.loads((tmp_path / "run" / "rounds.json").read_text())
    shares = {r["round"]: r["class_shares"] for r in rounds if r["round"] > 0}
    assert len(calls) == 3 and shares[1] == pytest.approx({"0": 0.5, "1": 0.5})
    for t in (2, 3):
        assert 0.25 < shares[t]["1"] < 0.5, shares  # pooled with round 1: lower, never the 0.1 floor


@pytest.mark.parametrize("weak", [False, True])
def test_rounds_record_how_strongly_each_vote_ranks(
    private_csv: Path, tmp_path: Path, monkeypatch, caplog, weak: bool
) -> None:
    """rounds.json gives every voted round its votes per sample over the noise sd, recomputable from the
    released votes alone; a run whose votes fall below wasp.WEAK_VOTE is warned once, not every round."""
    from dpsynth.methods import wasp
    from dpsynth.selection import class_count_estimates, class_vote_signals, pooled_class_counts, vote_signal

    monkeypatch.setattr(wasp, "WEAK_VOTE", 1e9 if weak else 0.0)
    out = tmp_path / "run"
    with caplog.at_level("INFO", logger="dpsynth"):
        dpsynth.synthesize(
            fake_run_config(private_csv, out),
            generators={"a": FakeGenerator("a"), "b": FakeGenerator("b")},
            embedder=FakeEmbedder(),
            progress=False,
        )
    rounds = {r["round"]: r for r in json.loads((out / "rounds.json").read_text())}
    assert "vote_signal" not in rounds[0]  # the zero-shot seed round has no vote
    labels = {json.loads(x)["id"]: str(json.loads(x)["label"]) for x in (out / "samples.journal.jsonl").open()}
    counts = []
    for t in (1, 2, 3):
        v = np.load(out / "votes" / f"round_{t}.npz")
        y = [labels[int(i)] for i in v["ids"]]
        counts.append(class_count_estimates(v["near"], v["far"], y, ["0", "1"], q=4, sigma=float(v["sigma"])))
        expected = vote_signal(pooled_class_counts(counts, ["0", "1"]), y, q=4, sigma=float(v["sigma"]))
        assert expected is not None and rounds[t]["vote_signal"] == pytest.approx(expected, abs=1e-4)
        per = class_vote_signals(pooled_class_counts(counts, ["0", "1"]), y, q=4, sigma=float(v["sigma"]))
        assert rounds[t]["class_vote_signal"] == pytest.approx(per, abs=1e-4)
    warned = [r for r in caplog.records if "chosen mostly by the noise" in r.getMessage()]
    assert len(warned) == (1 if weak else 0)
    if weak:
        msg = warned[0].getMessage()
        assert "round 1: the vote over" in msg and "wasp.vote_on: latest" in msg and "wasp.population" in msg
        assert "in votes, so the good and bad examples of its classes are chosen" in msg  # both weak: no "but"
    assert "SENTINEL" not in caplog.text


def test_a_class_the_vote_barely_ranks_is_warned_about_by_name(tmp_path: Path, monkeypatch, caplog) -> None:
    """36 negative and 4 positive private records, and a zero-shot round split evenly: the positive
    samples get about a ninth of the negative ones' votes each.  With the threshold between the two
    classes, and below the mean over all samples, the run still warns, naming the positive class only:
    its good and bad examples are the ones chosen by the noise."""
    from dpsynth import selection
    from dpsynth.methods import wasp

    rng = random.Random(3)
    private = tmp_path / "private.csv"
    rows = [
        {"review": " ".join(rng.choice(WORDS) for _ in range(15)), "sentiment": str(int(i >= 36))} for i in range(40)
    ]
    pd.DataFrame(rows).to_csv(private, index=False)
    seen: list[dict[str, float]] = []

    def first_vote_sets_the_threshold(*args, **kwargs):
        out = selection.class_vote_signals(*args, **kwargs)
        if not seen:  # the geometric mean of the two classes: below their (even-split) mean
            seen.append(out)
            monkeypatch.setattr(wasp, "WEAK_VOTE", math.sqrt(out["0"] * out["1"]))
        return out

    monkeypatch.setattr(wasp, "class_vote_signals", first_vote_sets_the_threshold)
    out = tmp_path / "run"
    cfg = fake_run_config(private, out, privacy=dict(epsilon=50.0, delta=1e-5))
    with caplog.at_level("INFO", logger="dpsynth"):
        dpsynth.synthesize(
            cfg, generators={"a": FakeGenerator("a"), "b": FakeGenerator("b")}, embedder=FakeEmbedder(), progress=False
        )
    first = json.loads((out / "rounds.json").read_text())[1]
    assert first["class_vote_signal"]["1"] < first["class_vote_signal"]["0"] / 3
    assert first["vote_signal"] > wasp.WEAK_VOTE  # the mean alone would not have warned
    warned = [r.getMessage() for r in caplog.records if "chosen mostly by the noise" in r.getMessage()]
    assert len(warned) == 1 and "round 1:" in warned[0]
    assert "in votes, but 'positive' " in warned[0] and "'negative'" not in warned[0]
    assert "per sample of that class, so the good and bad examples of that class are chosen" in warned[0]


@pytest.mark.parametrize("vote_on", ["all", "latest"])
def test_each_vote_ranks_the_samples_vote_on_names(private_csv: Path, tmp_path: Path, vote_on: str) -> None:
    """wasp.vote_on: all votes over every sample made so far, latest over the previous round's only (more
    votes per sample at the same privacy cost: the ledger and the privacy report are the same)."""
    out = tmp_path / "run"
    cfg = fake_run_config(private_csv, out, wasp=dict(rounds=3, q=4, vote_on=vote_on))
    res = dpsynth.synthesize(
        cfg, generators={"a": FakeGenerator("a"), "b": FakeGenerator("b")}, embedder=FakeEmbedder(), progress=False
    )
    assert len(res) == 60
    made = {json.loads(x)["id"]: json.loads(x)["round"] for x in (out / "samples.journal.jsonl").open()}
    for t in (1, 2, 3):
        ids = set(np.load(out / "votes" / f"round_{t}.npz")["ids"].tolist())
        assert ids == {i for i, r in made.items() if (r == t - 1 if vote_on == "latest" else r < t)}
    rounds = {r["round"]: r for r in json.loads((out / "rounds.json").read_text())}
    if vote_on == "latest":  # 15 samples per vote: the ranking does not weaken from round to round
        assert rounds[3]["vote_signal"] > 0.5 * rounds[1]["vote_signal"]
    plan = GaussianPlan.calibrate_discrete(4.0, 1e-5, 3, top_q_moves(4, True), 3, MIN_GRID_STEPS)
    assert res.privacy["mechanisms"][0]["sigma"] == pytest.approx(plan.sigma, rel=1e-6)


def test_a_latest_vote_skips_a_round_the_clean_up_left_empty(caplog) -> None:
    """wasp.vote_on = latest: a round with no kept sample would leave vote t nothing to rank and stop every
    resume of the run; the vote ranks the last round that kept samples instead, and says so.  A class the
    round lacks is named (its next prompts show no example)."""
    from dataclasses import dataclass

    from dpsynth.config import WaspConfig
    from dpsynth.methods.wasp_plan import vote_population

    @dataclass
    class Made:
        round: int
        label: str

    made = [Made(0, "0"), Made(0, "1"), Made(1, "0"), Made(1, "1"), Made(1, "0")]
    latest, every = WaspConfig(vote_on="latest"), WaspConfig()
    with caplog.at_level("WARNING", logger="dpsynth"):
        assert vote_population(made, 2, latest, ["0", "1"]) == made[2:]
        assert not caplog.records
        assert vote_population(made, 3, latest, ["0", "1"]) == made[2:]  # round 2 kept nothing
        assert "round 3: round 2 kept no sample; this vote ranks round 1's" in caplog.text
        caplog.clear()
        assert vote_population(made[:3], 2, latest, ["0", "1"]) == made[2:3]
        assert "kept no sample of class ['1']" in caplog.text
    assert vote_population(made, 3, every, ["0", "1"]) == made
    assert vote_population([], 1, latest, ["0", "1"]) == []  # nothing at all: the run's own error


def _listed(block: str) -> set[str]:
    """The examples a prompt block lists: numbered (chat) or quoted after "Movie review:" (completion)."""
    out = set()
    for line in block.splitlines():
        m = re.match(r"^\d+\. (.*)$", line) or re.match(r'^Movie review: "(.*)"$', line)
        if m:
            out.add(m.group(1))
    return out


def test_good_and_poor_examples_never_share_a_sample(private_csv: Path, tmp_path: Path) -> None:
    """Regression: when a class had fewer than 2S samples in a vote (N = 100, or a task with many classes),
    the top S by near votes and the top S by far votes were largely the same samples, so a contrastive
    prompt showed one text both as a good and as a poor example (at N = 100 on 4 newsgroups: every sample
    of every class in the first vote).  Here each class has 5-8 samples per vote, S = 8."""
    cfg = fake_run_config(private_csv, tmp_path / "run", n_synthetic=40)
    gens = {"a": FakeGenerator("a"), "b": FakeGenerator("b")}
    dpsynth.synthesize(cfg, generators=gens, embedder=FakeEmbedder(), progress=False)
    contrastive = [p for g in gens.values() for p in g.prompts if "poor" in p.lower()]
    assert len(contrastive) >= 10 and any("Movie review:" in p for p in contrastive)  # both prompt formats
    for p in contrastive:
        poor_block, good_block = p.split("\n\n")[:2]
        poor, good = _listed(poor_block), _listed(good_block)
        assert poor and good, p
        assert not poor & good, p


def test_every_round_gives_each_class_its_share(private_csv: Path, tmp_path: Path) -> None:
    """Regression: class budgets were rounded generator by generator, so the same class lost every
    rounding (here 2 generators of 5 samples a round: 6 / 4 instead of 5 / 5, always the same way).
    Each round's class totals must be within one sample of the round's size times its class share."""
    cfg = fake_run_config(private_csv, tmp_path / "run", n_synthetic=40)
    dpsynth.synthesize(
        cfg, generators={"a": FakeGenerator("a"), "b": FakeGenerator("b")}, embedder=FakeEmbedder(), progress=False
    )
    rounds = json.loads((tmp_path / "run" / "rounds.json").read_text())
    assert len(rounds) == 4
    for r in rounds:
        totals = {c: sum(b.get(c, 0) for b in r["budgets"].values()) for c in ("0", "1")}
        shares = r["class_shares"] or {"0": 0.5, "1": 0.5}  # the seed round splits evenly
        size = sum(totals.values())
        assert size == 10 and all(abs(totals[c] - size * shares[c]) < 1 for c in totals), r


def test_spread_pools_use_the_population_embeddings(
    private_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """wasp.pool_spread > 1 hands the voted population's own embeddings, row for row, to the pool choice,
    and the good examples the prompts show come from the spread-out pools."""
    import dpsynth.methods.wasp as wasp_mod

    calls: list[tuple[np.ndarray, int, list[int]]] = []
    real = wasp_mod.example_pools

    def spy(near, far, candidates, s, *, emb=None, spread=1):  # type: ignore[no-untyped-def]
        good, bad = real(near, far, candidates, s, emb=emb, spread=spread)
        calls.append((emb, spread, good))
        return good, bad

    monkeypatch.setattr(wasp_mod, "example_pools", spy)
    cfg = fake_run_config(private_csv, tmp_path / "run", n_synthetic=80)
    cfg = cfg.model_copy(update={"wasp": cfg.wasp.model_copy(update={"pool_spread": 3, "top_s": 2})})
    emb = FakeEmbedder()
    dpsynth.synthesize(cfg, generators={"a": FakeGenerator("a"), "b": FakeGenerator("b")}, embedder=emb, progress=False)
    assert calls and all(spread == 3 and e is not None for e, spread, _ in calls)
    journal = [json.loads(x) for x in (tmp_path / "run" / "samples.journal.jsonl").read_text().splitlines()]
    for e, _, good in calls:
        population = [r["text"] for r in journal[: len(e)]]  # votes cover the samples of earlier rounds, in order
        np.testing.assert_allclose(e, emb.encode(population), atol=1e-6)
        assert len(good) <= 2


class _UnfinishedGenerator(FakeGenerator):
    """A FakeGenerator whose every sample ends without a full stop; ``truncated`` is what it tells the
    pipeline about each (True: stopped by the token limit, False: the model ended it, None: says nothing)."""

    def __init__(self, name: str, seed: int, truncated: bool | None) -> None:
        super().__init__(name, seed)
        self.says = () if truncated is None else (truncated,)

    def generate(self, requests, on_completion=None):  # type: ignore[no-untyped-def]
        out = super().generate(requests)
        cut = [Completion(c.text + ". The second half was", 16, 40, truncated=self.says) for c in out]
        for c in cut:
            if on_completion:
                on_completion(c)
        return cut


@pytest.mark.parametrize(
    "whole,truncated,cut",
    [(True, True, True), (True, None, True), (True, False, False), (False, True, False)],
)
def test_samples_cut_by_the_token_limit_end_with_their_last_full_sentence(
    private_csv: Path, tmp_path: Path, whole: bool, truncated: bool | None, cut: bool
) -> None:
    """wasp.whole_sentences cuts what the token limit stopped (or what no backend vouches for), never a
    sample the model ended itself, and nothing when it is off."""
    wasp = dict(rounds=3, q=4, whole_sentences=whole)
    cfg = fake_run_config(private_csv, tmp_path / "run", wasp=wasp)
    gens = {"a": _UnfinishedGenerator("a", 1, truncated), "b": _UnfinishedGenerator("b", 2, truncated)}
    res = dpsynth.synthesize(cfg, generators=gens, embedder=FakeEmbedder(), progress=False)
    assert len(res) == 60
    assert {r["text"].endswith(".") for r in res.records} == {cut}
    assert {r["text"].endswith("The second half was") for r in res.records} == {not cut}


@pytest.mark.slow
@pytest.mark.model
@pytest.mark.parametrize("against", ["population", "other_classes"])
def test_real_model_keyword_rounds(tmp_path: Path, against: str) -> None:
    """SmolLM2 (llama.cpp) and MiniLM on the embedded IMDb draw: a round prompted with words of the voted
    samples (either way of choosing them) writes usable reviews, and rounds.json records the words."""
    run = tmp_path / "run"
    cfg = smollm2_run_config(run, variation="keywords", keywords_against=against)
    res = dpsynth.synthesize(cfg, progress=False)
    assert len(res) >= 10  # a small model may leave a sample or two short
    rounds = json.loads((run / "rounds.json").read_text())
    words = rounds[1]["keywords"]
    assert set(words) == {"0", "1"} and all(len(ws) >= 3 for ws in words.values())
    # 20 records over 6 samples: a strong vote (about 20 x 1.5 / 6 votes a sample, noise sd about 2)
    assert 0.5 < rounds[1]["vote_signal"] < 10
    per = rounds[1]["class_vote_signal"]  # per class, and the mean weighted by the voted samples per class
    label = {json.loads(x)["id"]: str(json.loads(x)["label"]) for x in (run / "samples.journal.jsonl").open()}
    n_c = Counter(label[int(i)] for i in np.load(run / "votes" / "round_1.npz")["ids"])
    assert set(per) == {"0", "1"} and min(per.values()) <= rounds[1]["vote_signal"] <= max(per.values())
    assert sum(per[c] * n for c, n in n_c.items()) / sum(n_c.values()) == pytest.approx(
        rounds[1]["vote_signal"], abs=1e-3
    )
    assert sum(r["round"] == 1 for r in res.records) >= 4


@pytest.mark.slow
@pytest.mark.model
def test_real_model_votes_on_the_latest_round(tmp_path: Path) -> None:
    """SmolLM2 (llama.cpp) and MiniLM on the embedded IMDb draw, wasp.vote_on = latest over two rounds:
    the second vote ranks the first round's samples only, and both votes rank strongly (few samples each)."""
    run = tmp_path / "run"
    res = dpsynth.synthesize(smollm2_run_config(run, rounds=2, vote_on="latest"), progress=False)
    assert len(res) >= 10  # a small model may leave a sample or two short
    made = {json.loads(x)["id"]: json.loads(x)["round"] for x in (run / "samples.journal.jsonl").open()}
    ids = set(np.load(run / "votes" / "round_2.npz")["ids"].tolist())
    assert ids and ids == {i for i, r in made.items() if r == 1}
    rounds = {r["round"]: r for r in json.loads((run / "rounds.json").read_text())}
    assert rounds[1]["vote_signal"] > 0.5 and rounds[2]["vote_signal"] > 0.5


def test_writers_reach_every_generation_prompt_of_a_run_and_its_extension(private_csv: Path, tmp_path: Path) -> None:
    """wasp.writers from the config: every prompt a generator receives opens with a listed writer, in
    its own format (chat "a", completion "b"), in the rounds and in `dpsynth sample`'s extension; off,
    none does."""
    from dpsynth.api import extend
    from dpsynth.prompts import WRITERS

    out = tmp_path / "run"
    cfg = fake_run_config(private_csv, out, wasp=dict(rounds=2, q=4, writers=True))
    a, b = FakeGenerator("a"), FakeGenerator("b")
    dpsynth.synthesize(cfg, generators={"a": a, "b": b}, embedder=FakeEmbedder(), progress=False)
    extend(out, 10, generators={"a": a, "b": b}, embedder=FakeEmbedder(), progress=False)
    assert len(a.prompts) > 20 and len(b.prompts) > 20
    chat = [re.match(r"You are (.+?)\. Write|You are (.+?)\. (Here|Poor)", t) for t in a.prompts]
    assert all(m is not None and (m.group(1) or m.group(2)) in WRITERS for m in chat), a.prompts[:3]
    assert all(re.match(r"Written by (.+?)\.\n", t) for t in b.prompts)
    cfg_off = fake_run_config(private_csv, tmp_path / "off", wasp=dict(rounds=2, q=4))
    c = FakeGenerator("a")
    dpsynth.synthesize(cfg_off, generators={"a": c, "b": FakeGenerator("b")}, embedder=FakeEmbedder(), progress=False)
    assert not any(t.startswith(("You are", "Written by")) for t in c.prompts)


@pytest.mark.slow
@pytest.mark.model
def test_real_model_writes_as_the_named_writers(tmp_path: Path, monkeypatch) -> None:
    """SmolLM2 (llama.cpp) with wasp.writers: every prompt the generator receives, zero-shot and
    contrastive, opens with a writer of the public list, and the samples are usable reviews."""
    from dpsynth import prompts

    sent: list[str] = []
    request = prompts.PromptBuilder._request

    def recording(self, template, **fields):
        r = request(self, template, **fields)
        sent.append(r.messages[0].content if r.messages else r.prompt or "")
        return r

    monkeypatch.setattr(prompts.PromptBuilder, "_request", recording)
    res = dpsynth.synthesize(smollm2_run_config(tmp_path / "run", writers=True), progress=False)
    assert len(res) >= 10  # a small model may leave a sample or two short
    assert len(sent) >= 12 and any("examples" in t or "Good " in t for t in sent)  # both kinds of prompt
    named = [re.match(r"You are (.+?)\. ", t) for t in sent]
    assert all(m is not None and m.group(1) in prompts.WRITERS for m in named)
    assert len({r["text"] for r in res.records}) == len(res)


@pytest.mark.model
@pytest.mark.slow
def test_aug_pe_runs_on_the_embedded_defaults(tmp_path: Path) -> None:
    """Regression: ``dpsynth run --method aug-pe`` without a generator list failed at once ("aug-pe uses
    exactly one generator"), although the docs show it so and ``dpsynth init --method aug-pe`` wrote one.
    The embedded default is now Qwen2.5-Coder alone, which also judges labels, as in the init file."""
    from dpsynth.cli import main

    out = tmp_path / "ape"
    # 64 tokens, not 32: cut back to whole sentences, 32-token samples fell under min_chars (40) often enough
    # that all six tries of one class were unusable in a CI run (llama.cpp's batches vary with timing)
    flags = ["--n-synthetic", "4", "--rounds", "1", "--n-private", "20", "--max-new-tokens", "64", "--quiet"]
    # A class whose every try the 0.5B judge rejects stops the round ("no usable sample ... resuming the run
    # retries it": two CI runs in ten).  What this test guards is the defaults, so it resumes as a user would;
    # five tries (each resume redoes only the short class) leave about 0.2^5 = 3e-4 of runs failing by chance.
    for attempt in range(5):
        try:
            main(["run", "--method", "aug-pe", "--out", str(out), *flags, *(["--resume"] if attempt else [])])
            break
        except SystemExit as stop:
            assert stop.code == 2 and (out / "config.yaml").exists() and attempt < 4
    stored = yaml.safe_load((out / "config.yaml").read_text())
    assert [g["name"] for g in stored["generators"]] == ["qwen2.5-coder-0.5b"]
    assert stored["wasp"]["label_judge"] == "qwen2.5-coder-0.5b"
    rows = [json.loads(x) for x in (out / "synthetic.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and {r["generator"] for r in rows} == {"qwen2.5-coder-0.5b"}
    assert json.loads((out / "privacy.json").read_text())["epsilon"] <= 4.0


def test_the_errors_a_user_catches_are_exported(tmp_path: Path) -> None:
    """The README names them as ``dpsynth.X``; they lived only in dpsynth.errors."""
    from dpsynth import errors

    for name in ("ConfigError", "DataError", "GeneratorError", "PrivacyBudgetError", "ResumeError"):
        assert getattr(dpsynth, name) is getattr(errors, name) and name in dpsynth.__all__
        assert issubclass(getattr(dpsynth, name), dpsynth.DpsynthError)
    with pytest.raises(dpsynth.ConfigError) as exc:
        dpsynth.synthesize({"privacy": {"epsilon": -1}}, check_only=True)
    assert isinstance(exc.value, ValueError)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(dpsynth.DataError):
        dpsynth.synthesize(
            {"data": {"private": str(empty), "labels": ["a", "b"]}, "out": str(tmp_path / "r")}, check_only=True
        )


@pytest.mark.parametrize("generators", [{}, {"a": object()}, {"a": FakeGenerator("a"), "b": "not a generator"}])
def test_injected_generators_are_checked_before_the_run_directory(
    generators: dict[str, object], private_csv: Path, tmp_path: Path
) -> None:
    """Regression: ``generators={}`` failed after the run directory was written, with "every generator
    returned unusable text", and an object without ``generate`` with an AttributeError."""
    cfg = fake_run_config(private_csv, tmp_path / "run", wasp=dict(rounds=2, q=4))
    with pytest.raises(dpsynth.ConfigError, match="generators=: "):
        dpsynth.synthesize(cfg, generators=generators, embedder=FakeEmbedder(), progress=False)  # type: ignore[arg-type]
    assert not (tmp_path / "run").exists()
