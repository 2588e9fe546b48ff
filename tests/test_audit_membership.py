"""``dpsynth audit membership``: the DP bound on any membership test, the attack, and what it refuses."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from dpsynth.audit.attack_stats import design_bound, dp_auc_bound, dp_tpr_bound, nearest_similarity, roc_auc, tpr_at_fpr
from dpsynth.audit.membership import membership_audit, verdict
from dpsynth.datasets import EMBEDDED_DATASETS, EMBEDDED_IMDB
from dpsynth.errors import ConfigError, DataError

from .conftest import FakeEmbedder

IMDB = EMBEDDED_DATASETS[EMBEDDED_IMDB]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DPSYNTH_CACHE_DIR", str(tmp_path / "cache"))  # the embedding cache of public texts


def _run(tmp: Path, texts: list[str], labels: list[str], **cfg: Any) -> Path:
    """A finished run's public files as the audit reads them: config.yaml, synthetic.jsonl, privacy.json."""
    run = tmp / "run"
    run.mkdir(parents=True)
    data = {"private": EMBEDDED_IMDB, "n_private": 30, "seed": 3, "labels": {"0": "negative", "1": "positive"}}
    config = {"method": "wasp", "output_format": "jsonl", **cfg, "data": {**data, **cfg.get("data", {})}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "synthetic.jsonl").write_text(
        "".join(
            json.dumps({"text": t, "label": int(lab) if str(lab).isdigit() else lab}) + "\n"
            for t, lab in zip(texts, labels, strict=True)
        )
    )
    (run / "privacy.json").write_text(json.dumps({"epsilon": 4.0, "delta": 1e-5}))
    return run


def test_the_dp_bound_on_any_membership_test() -> None:
    """Kairouz et al.'s region: eps = 0 allows nothing beyond chance, eps = inf everything, and the bound
    grows with epsilon; at FPR 10% and eps = 1 a test finds at most e * 0.1 + delta of the members."""
    assert dp_auc_bound(0.0, 0.0) == pytest.approx(0.5, abs=1e-6)
    assert dp_auc_bound(math.inf, 1e-5) == 1.0
    bounds = [dp_auc_bound(e, 1e-5) for e in (0.5, 1, 2, 4, 8)]
    assert bounds == sorted(bounds) and 0.5 < bounds[0] < bounds[-1] < 1.0
    assert dp_auc_bound(1.0, 0.0) == pytest.approx(0.5 + (math.e - 1) / (2 * (math.e + 1)), abs=1e-4)  # closed form
    assert dp_tpr_bound(1.0, 1e-5, 0.1) == pytest.approx(math.e * 0.1 + 1e-5)
    assert dp_tpr_bound(1.0, 0.0, 0.9) == pytest.approx(1 - math.exp(-1) * 0.1)  # the other side binds
    assert dp_tpr_bound(0.0, 0.0, 0.3) == pytest.approx(0.3)


def test_auc_and_tpr_at_a_low_fpr() -> None:
    members, outsiders = np.array([0.9, 0.8, 0.7, 0.2]), np.array([0.6, 0.5, 0.1, 0.05])
    assert roc_auc(members, outsiders) == pytest.approx(14 / 16)
    assert roc_auc(outsiders, outsiders) == 0.5  # ties count half
    assert tpr_at_fpr(members, outsiders, 0.25) == 0.75  # threshold 0.5: one non-member above, 3 members
    assert tpr_at_fpr(members, outsiders, 0.0) == 0.75  # threshold 0.6: no non-member above
    sims = nearest_similarity(np.eye(3), np.array([[1.0, 0, 0], [0, 1, 0]]), ["a", "b", "a"], ["b", "b"])
    assert sims.tolist() == [-1.0, 1.0, -1.0]  # no sample of label a: -1


def test_a_release_that_copies_its_members_is_caught_and_one_that_does_not_is_not(tmp_path: Path) -> None:
    members = IMDB.private(30, 3)
    test = IMDB.test()
    # leaky: the 30 private reviews themselves among 30 reviews the pool never held (the test split)
    texts = [*members["text"], *test["text"][:30]]
    labels = [*members["label"], *test["label"][:30]]
    leaky = membership_audit(_run(tmp_path / "a", texts, labels), embedder=FakeEmbedder(), non_members=30)
    best = leaky["attacks"]["nearest"]
    assert best["auc"] == 1.0 and best["auc_95"][0] > leaky["auc_bound"]
    assert leaky["auc_bound"] == pytest.approx(dp_auc_bound(8.0, (1 + math.exp(4)) * 1e-5))  # a substitution
    assert leaky["auc_bound_add_remove"] == pytest.approx(dp_auc_bound(4.0, 1e-5))
    assert best["tpr_at_fpr"]["0.01"] is None  # 30 non-members cannot measure FPR 1%
    assert best["tpr_at_fpr"]["0.1"] == 1.0 and best["tpr_bound_at_fpr_add_remove"]["0.01"] == pytest.approx(
        min(1, math.exp(4) * 0.01 + 1e-5)
    )
    # the bound the table shows is this design's (a substitution), as for the AUC
    d = (1 + math.exp(4)) * 1e-5
    assert best["tpr_bound_at_fpr"]["0.1"] == pytest.approx(min(1, math.exp(8) * 0.1 + d, 1 - math.exp(-8) * (0.9 - d)))
    assert best["tpr_95"]["0.1"][0] > 0.88 and best["tpr_95"]["0.1"][1] == 1.0  # 30 of 30: Clopper-Pearson
    assert leaky["near_copies"] == {"threshold": 0.95, "members": 30, "non_members": 0}
    assert set(leaky["attacks"]) == {"nearest", "nearest_same_label", "nearest_calibrated"}
    assert leaky["attacks"]["nearest_calibrated"]["auc"] > 0.95  # typicality taken out, the copies stay found
    assert "contradicted" in leaky["verdict"]
    assert (leaky["members"], leaky["non_members"], leaky["synthetic"], leaky["dataset"]) == (
        30,
        30,
        60,
        "embedded:imdb",
    )
    # unrelated to the members: 60 test reviews only
    clean = membership_audit(
        _run(tmp_path / "b", list(test["text"][100:160]), list(test["label"][100:160])), embedder=FakeEmbedder()
    )
    assert clean["non_members"] == 1000  # the default: a narrow interval
    for attack in clean["attacks"].values():
        lo, hi = attack["auc_95"]
        assert lo < 0.5 < hi and abs(attack["auc"] - 0.5) < 0.15
        assert attack["tpr_at_fpr"]["0.001"] is not None  # 1,000 non-members measure FPR 0.1%
    assert clean["near_copies"]["members"] == 0 and "no membership signal" in clean["verdict"]
    # nothing per record leaves the audit: no text, no per-candidate score
    dumped = json.dumps(clean)
    assert not any(t[:40] in dumped for t in members["text"])
    # the report shows the audit after the guarantee, verdict included
    from dpsynth.report import build_report

    run = tmp_path / "a" / "run"
    (run / "membership.json").write_text(json.dumps(leaky))
    page = build_report(run)
    assert "Membership audit" in page and "privacy claim is contradicted" in page
    assert page.index('id="privacy"') < page.index('id="membership"')
    for damaged in ("{}", "not json", json.dumps({**leaky, "attacks": {"nearest": {**best, "tpr_at_fpr": []}}})):
        (run / "membership.json").write_text(damaged)
        assert "membership.json cannot be read" in build_report(run)  # a warning, never a failed report
    (run / "membership.json").write_text(json.dumps(leaky))
    with (run / "synthetic.jsonl").open("a") as f:  # the set grew after the audit (dpsynth sample)
        f.write(json.dumps({"text": "one more review", "label": 1}) + "\n")
    assert "This audit measured an earlier synthetic set" in build_report(run)


def test_members_are_the_runs_own_draw(tmp_path: Path) -> None:
    """The audit rebuilds exactly the records the run read: the pool rows data.n_private and data.seed draw."""
    idx = IMDB.private_index(30, 3)
    assert IMDB.private(30, 3)["text"].tolist() == IMDB.split()[0].loc[idx, "text"].tolist()
    # a release holding only the draw of another seed is no leak of this run's members
    other = IMDB.private(30, 4)
    res = membership_audit(_run(tmp_path, list(other["text"]), list(other["label"])), embedder=FakeEmbedder())
    assert res["near_copies"]["members"] == len(set(idx) & set(IMDB.private_index(30, 4)))


def test_a_leak_on_the_topic_task_and_the_former_name_of_n_private(tmp_path: Path) -> None:
    news = EMBEDDED_DATASETS["embedded:newsgroups"]
    members = news.private(25, 1)
    data = {"private": "embedded:newsgroups", "seed": 1, "labels": dict(news.labels)}
    run = _run(tmp_path, list(members["text"]), list(members["label"]), data=data)
    raw = yaml.safe_load((run / "config.yaml").read_text())
    raw["data"].pop("n_private")
    raw["data"]["m_private"] = 25  # a config.yaml written before the rename
    (run / "config.yaml").write_text(yaml.safe_dump(raw))
    res = membership_audit(run, embedder=FakeEmbedder(), non_members=200)
    assert res["members"] == 25 and res["attacks"]["nearest_same_label"]["auc"] == 1.0
    assert res["near_copies"]["members"] == 25


def test_a_zero_shot_run_is_a_placebo_and_only_that(tmp_path: Path) -> None:
    """A run that read no private record has no members; audited with placebo=True it shows the AUC the
    draw alone gives (here a set of test reviews: around 0.5), which a run that read the draw must exceed."""
    test = IMDB.test()
    run = _run(tmp_path / "zs", list(test["text"][:60]), list(test["label"][:60]), method="zero-shot")
    with pytest.raises(ConfigError, match="reads no private record.*--placebo"):
        membership_audit(run, embedder=FakeEmbedder())
    res = membership_audit(run, embedder=FakeEmbedder(), placebo=True, non_members=200)
    assert res["placebo"] and res["verdict"].startswith("placebo (this run read no private record)")
    wasp = _run(tmp_path / "w", list(test["text"][:60]), list(test["label"][:60]))
    with pytest.raises(ConfigError, match="--placebo audits a run that read no private record"):
        membership_audit(wasp, embedder=FakeEmbedder(), placebo=True)


def test_against_a_zero_shot_run_the_draw_cancels(tmp_path: Path) -> None:
    """--against: the same candidates attacked on a run that read nothing.  A set no nearer its members than
    the placebo is level with it, whatever its own AUC; a set holding some members verbatim is beyond it."""
    from dpsynth.report import build_report

    members, test = IMDB.private(30, 3), IMDB.test()
    base_t, base_l = list(test["text"][:60]), list(test["label"][:60])
    zs = _run(tmp_path / "zs", base_t, base_l, method="zero-shot")
    same = _run(tmp_path / "same", base_t, base_l)  # what a run that learnt nothing from its draw releases
    res = membership_audit(same, embedder=FakeEmbedder(), non_members=200, against=zs)
    for a in res["against"]["attacks"].values():
        assert a["auc_difference"] == 0.0 and a["difference_95"] == [0.0, 0.0]
    assert res["against"]["attacks"]["nearest"]["auc_placebo"] == res["attacks"]["nearest"]["auc"]
    assert res["against"]["verdict"].startswith("level with the placebo")
    assert res["against"]["method"] == "zero-shot" and res["against"]["synthetic"] == 60
    leaky = _run(tmp_path / "leaky", [*members["text"][:10], *base_t[10:]], [*members["label"][:10], *base_l[10:]])
    res = membership_audit(leaky, embedder=FakeEmbedder(), non_members=200, against=zs)
    near = res["against"]["attacks"]["nearest"]
    assert near["auc_difference"] > 0.1 and near["difference_verdict_interval"][0] > 0
    assert res["against"]["verdict"].startswith("beyond the placebo")
    from dpsynth.audit.membership import summary_lines

    assert any(line.startswith("beyond the placebo") for line in summary_lines(res))
    (leaky / "membership.json").write_text(json.dumps(res))
    page = build_report(leaky)
    assert "AUC there" in page and "beyond the placebo" in page and "changed since this audit" not in page
    # the report is shared: the --against run's folder is named, not the folders above it (a user name)
    assert res["against"]["run"] == str(zs.resolve()) and str(zs.parent) not in page
    assert f"Against .../{zs.name} (" in page
    for damaged in ({**res["against"], "attacks": {"nearest": {"auc_placebo": 0.5}}}, "x", {"verdict": 1}):
        (leaky / "membership.json").write_text(json.dumps({**res, "against": damaged}))
        page = build_report(leaky)  # the comparison's own warning; the audit above it stays
        assert "comparison with the --against run cannot be read" in page and "95% interval" in page
    huge = {**res["against"], "attacks": {"nearest": {**near, "auc_difference": 10**400}}}
    (leaky / "membership.json").write_text(json.dumps({**res, "against": huge}))
    assert "cannot be read" in build_report(leaky)  # too large for a float: a warning, not a crash
    (leaky / "membership.json").write_text(json.dumps(res))
    with (zs / "synthetic.jsonl").open("a") as f:
        f.write(json.dumps({"text": "one more review", "label": 1}) + "\n")
    assert "The --against run's synthetic set changed since this audit" in build_report(leaky)
    # what --against refuses: a run that read private records, another dataset, together with --placebo
    news = EMBEDDED_DATASETS["embedded:newsgroups"]
    other = _run(tmp_path / "news", base_t, base_l, method="zero-shot", data={"private": "embedded:newsgroups"})
    other_cfg = yaml.safe_load((other / "config.yaml").read_text())
    assert other_cfg["data"]["private"] == news.source
    empty = _run(tmp_path / "empty", [], [], method="zero-shot")
    labelled = _run(tmp_path / "labels", ["a review"] * 2, ["spam", "ham"], method="zero-shot")
    for wrong, words in (
        (same, "which read private records"),
        (other, "not on embedded:imdb"),
        (tmp_path / "nothing", "holds no run"),
        (leaky, "names the audited run itself"),
        (empty, "--against .*empty"),
        (labelled, "none of its samples carries a label"),
    ):
        with pytest.raises((ConfigError, DataError), match=words):
            membership_audit(leaky, embedder=FakeEmbedder(), non_members=200, against=wrong)
    with pytest.raises(ConfigError, match="without --placebo"):
        membership_audit(zs, embedder=FakeEmbedder(), placebo=True, against=zs)


def test_the_verdict_against_the_placebo_on_each_side() -> None:
    """Judged on the Bonferroni interval, which the sentence shows: a 95% interval above 0 whose wider
    interval covers 0 is level, not beyond."""
    from dpsynth.audit.membership import against_verdict

    def one(lo: float, hi: float, diff: float = 0.03) -> dict[str, Any]:
        return {
            "auc_placebo": 0.5,
            "auc_difference": diff,
            "difference_95": [lo + 0.01, hi - 0.01],
            "difference_verdict_interval": [lo, hi],
        }

    assert against_verdict({"nearest": one(0.01, 0.06)}).startswith("beyond the placebo")
    level = against_verdict({"nearest": one(-0.006, 0.07), "calibrated": one(-0.02, 0.05, 0.01)})
    assert level.startswith("level with the placebo") and "-0.006 to +0.070" in level and "over 2 attacks" in level
    assert against_verdict({"nearest": one(-0.09, -0.01, -0.05)}).startswith("below the placebo")


def test_the_verdict_on_each_side_of_chance() -> None:
    def one(lo: float, hi: float, auc: float) -> dict:
        return {"x": {"auc": auc, "auc_95": [lo, hi], "auc_verdict_interval": [lo, hi]}}

    bound = dp_auc_bound(*design_bound(1.0, 1e-5))
    assert design_bound(1.0, 1e-5) == pytest.approx((2.0, (1 + math.e) * 1e-5))
    assert "contradicted" in verdict(one(0.90, 0.95, 0.92), bound, 1.0)
    assert "contradicted" in verdict(one(0.05, 0.10, 0.07), bound, 1.0)  # DP bounds the flipped test too
    assert "more often than chance" in verdict(one(0.55, 0.65, 0.6), bound, 1.0)
    assert "below chance" in verdict(one(0.34, 0.49, 0.42), bound, 1.0)
    assert "level with chance" in verdict(one(0.45, 0.56, 0.5), bound, 1.0)


def test_the_bounds_hold_for_any_epsilon_and_small_ones_are_not_rounded_to_zero() -> None:
    """Regression: epsilon above about 355 crashed the audit (math.exp overflow in the design's 2 epsilon), and
    the terminal showed a TPR bound of 0.0027 as 0.00."""
    from dpsynth.audit.membership import rate_text

    for eps in (400.0, 800.0, 1e6):
        assert dp_auc_bound(*design_bound(eps, 1e-5)) == pytest.approx(1.0, abs=1e-4)
        assert dp_tpr_bound(*design_bound(eps, 1e-5), 0.001) == 1.0
    assert rate_text(0.0027) == "0.0027" and rate_text(0.25) == "0.25" and rate_text(0.0) == "0.00"


def test_the_verdict_quotes_the_interval_it_judges_on(tmp_path: Path) -> None:
    """Regression: the verdict decided on the Bonferroni interval but quoted the narrower 95% one, so "level
    with chance" could sit beside an interval that excluded 0.5."""
    attacks = {
        name: {"auc": 0.567, "auc_95": [0.507, 0.628], "auc_verdict_interval": [0.496, 0.645]}
        for name in ("nearest", "nearest_same_label", "nearest_calibrated")
    }
    text = verdict(attacks, dp_auc_bound(*design_bound(4.0, 1e-5)), 4.0)
    assert "level with chance" in text and "0.496-0.645" in text and "Bonferroni over 3 attacks" in text
    assert "0.507" not in text


def test_a_placebo_audit_reads_as_a_placebo_in_the_report_and_terminal(tmp_path: Path) -> None:
    """Regression: the report and the terminal presented a --placebo audit as a private run's, at epsilon =
    inf with "members"; and the --against path was stored relative, so the report's stale check depended on
    the folder it was built from."""
    from dpsynth.audit.membership import summary_lines
    from dpsynth.report import build_report

    test = IMDB.test()
    zs = _run(tmp_path / "zs", list(test["text"][:60]), list(test["label"][:60]), method="zero-shot")
    res = membership_audit(zs, embedder=FakeEmbedder(), placebo=True, non_members=200)
    assert Path(res["run"]).is_absolute()
    text = "\n".join(summary_lines(res))
    assert "placebo" in text and "epsilon = inf" not in text and "DP allows" not in text
    (zs / "membership.json").write_text(json.dumps(res))
    section = build_report(zs).split('id="membership"')[1].split("</section>")[0]
    assert "A placebo" in section and "can exceed AUC" not in section and "(members)" not in section
    (zs / "membership.json").write_text("null")
    assert "membership.json cannot be read" in build_report(zs)


def test_the_rank_auc_is_the_pairwise_one() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 40).astype(float), rng.integers(0, 5, 70).astype(float)  # many ties
    pairwise = ((a[:, None] > b[None, :]).sum() + 0.5 * (a[:, None] == b[None, :]).sum()) / (40 * 70)
    assert roc_auc(a, b) == pytest.approx(pairwise)


@pytest.mark.parametrize(
    ("change", "error", "words"),
    [
        (
            {"data": {"private": "my_records.csv"}},
            ConfigError,
            ["not an embedded text dataset", "publishes statistics"],
        ),
        ({"data": {"n_private": 10}}, DataError, ["at least 20 members"]),
        ({"data": {"n_private": None}}, DataError, ["data.n_private and data.seed"]),
        ({"method": "zero-shot"}, ConfigError, ["zero-shot run reads no private record"]),
        ("no privacy.json", DataError, ["no readable privacy.json", "--resume"]),
        ("no config", DataError, ["holds no run"]),
        # a damaged privacy.json: no guarantee to test ("contradicted" against epsilon -1; NaN in the JSON)
        ("epsilon -1", DataError, ["epsilon -1", "damaged"]),
        ("delta NaN", DataError, ["delta nan", "damaged"]),
        # PEARL takes no embedded text set: the advice to rerun on embedded:imdb would fail
        ({"method": "pearl", "data": {"private": "table.csv"}}, ConfigError, ["pearl run cannot be audited"]),
        # nearly the whole newsgroups pool drawn: too few records left as non-members
        ({"data": {"private": "embedded:newsgroups", "n_private": 2300}}, DataError, ["at least 20 non-members"]),
    ],
)
def test_what_the_audit_refuses(tmp_path: Path, change: Any, error: type[Exception], words: list[str]) -> None:
    run = _run(tmp_path, ["a fine film"] * 4, ["1", "0", "1", "0"], **(change if isinstance(change, dict) else {}))
    if change == "no privacy.json":
        (run / "privacy.json").unlink()
    if change == "no config":
        (run / "config.yaml").unlink()
    if change in ("epsilon -1", "delta NaN"):
        bad = {"epsilon": -1.0, "delta": 1e-5} if change == "epsilon -1" else {"epsilon": 4.0, "delta": math.nan}
        (run / "privacy.json").write_text(json.dumps(bad))
    with pytest.raises(error) as e:
        membership_audit(run, embedder=FakeEmbedder())
    assert all(w in str(e.value) for w in words), str(e.value)
    assert not (run / "membership.json").exists()


@pytest.mark.model
@pytest.mark.slow
def test_cli_with_the_real_embedder_writes_membership_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The command a user types, with the embedded MiniLM as the attacker's embedder."""
    from dpsynth.cli import main

    members, test = IMDB.private(30, 3), IMDB.test()
    run = _run(tmp_path, [*members["text"][:15], *test["text"][:45]], [*members["label"][:15], *test["label"][:45]])
    zs = _run(tmp_path / "zs", list(test["text"][:60]), list(test["label"][:60]), method="zero-shot")
    # the default 1,000 non-members take minutes to embed
    main(["audit", "membership", str(run), "--non-members", "60", "--against", str(zs)])
    out = capsys.readouterr().out
    res = json.loads((run / "membership.json").read_text())
    # half the members were released verbatim: found, and MiniLM ranks them first
    assert res["near_copies"]["members"] == 15 and res["near_copies"]["non_members"] == 0
    assert res["attacks"]["nearest"]["auc"] > 0.7 and res["embedding_model"] == "all-MiniLM-L6-v2"
    assert "nearest: AUC" in out and "no attack can exceed AUC" in out
    # against a zero-shot set of test reviews (45 of them in the run's set too), the 15 copies stand out
    assert res["against"]["attacks"]["nearest"]["auc_difference"] > 0.1 and "beyond the placebo" in out


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["audit", "canaries", "--out", "{tmp}"], ["--out", "is a folder"]),
        (["audit", "canaries", "--out", "{tmp}/no/such/a.json"], ["does not exist"]),
        (["audit", "canaries", "--delta", "2"], ["--delta: 2 is not a probability"]),
        (["audit", "membership", "{tmp}", "--out", "{tmp}"], ["--out", "is a folder"]),
    ],
)
def test_audit_flags_are_checked_before_the_work(
    argv: list[str],
    words: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Regression: `audit canaries --out EXISTING_FOLDER` failed after hours of fine-tuning and lost every
    result, and --delta 2 was refused only after the model had loaded, naming privacy.delta."""
    from dpsynth.cli import main

    def never(*a: Any, **k: Any) -> None:
        raise AssertionError("the audit ran before its flags were checked")

    monkeypatch.setattr("dpsynth.extras.require", lambda *a: None)
    monkeypatch.setattr("dpsynth.audit.canaries.run_canary_audit", never)
    monkeypatch.setattr("dpsynth.audit.membership.membership_audit", never)
    with pytest.raises(SystemExit) as exc:
        main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words), err


def test_audit_out_never_replaces_a_file_it_did_not_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression: `audit membership|canaries --out FILE` replaced whatever FILE was: `--out RUN/synthetic.jsonl`
    the run's synthetic set, `--out private.csv` the private data.  Now an existing file is replaced only when
    it is an earlier result of the same audit, and a run directory's own files are refused, before the work."""
    from dpsynth.cli import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("method: wasp\n")
    (run / "synthetic.jsonl").write_text('{"text": "a", "label": "0"}\n')
    (tmp_path / "private.csv").write_text("text,label\nSENTINEL,0\n")
    canary = {"settings": {}, "canary_template": "x", "results": []}
    membership = {"attacks": {}, "members": 3, "non_members": 3, "verdict": "v"}
    (tmp_path / "old_canaries.json").write_text(json.dumps(canary))
    (tmp_path / "old_membership.json").write_text(json.dumps(membership))
    monkeypatch.setattr("dpsynth.extras.require", lambda *a: None)
    monkeypatch.setattr("dpsynth.audit.canaries.run_canary_audit", lambda *a, **k: {**canary, "new": 1})
    monkeypatch.setattr("dpsynth.audit.membership.membership_audit", lambda *a, **k: {**membership, "new": 1})
    monkeypatch.setattr("dpsynth.audit.membership.summary_lines", lambda r: ["done"])
    keep = {p: p.read_bytes() for p in (run / "synthetic.jsonl", run / "config.yaml", tmp_path / "private.csv")}
    refused = [
        (["audit", "membership", str(run), "--out", str(run / "synthetic.jsonl")], "is not an earlier"),
        (["audit", "membership", str(run), "--out", str(tmp_path / "private.csv")], "is not an earlier"),
        (["audit", "canaries", "--out", str(tmp_path / "private.csv")], "is not an earlier"),
        (["audit", "canaries", "--out", str(run / "config.yaml")], "is not an earlier"),
        (["audit", "canaries", "--out", str(tmp_path / "old_membership.json")], "is not an earlier"),  # other kind
        (["audit", "membership", str(run), "--out", str(tmp_path / "old_canaries.json")], "is not an earlier"),
        (["audit", "canaries", "--out", str(run / "membership.json")], "file of the run directory"),  # new names
        (["audit", "membership", str(run), "--out", str(run / "synthetic.csv")], "file of the run directory"),
    ]
    for argv, words in refused:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and words in err, (argv, err)
    assert {p: p.read_bytes() for p in keep} == keep
    assert not (run / "membership.json").exists() and not (run / "synthetic.csv").exists()
    # an earlier result of the same audit is replaced; so is the run's own membership.json, and a new file is made
    main(["audit", "canaries", "--out", str(tmp_path / "old_canaries.json")])
    main(["audit", "membership", str(run), "--out", str(tmp_path / "old_membership.json")])
    main(["audit", "membership", str(run), "--out", str(run / "membership.json")])
    main(["audit", "membership", str(run), "--out", str(run / "membership.json")])
    main(["audit", "canaries", "--out", str(tmp_path / "new.json")])
    for name in ("old_canaries.json", "old_membership.json", "run/membership.json", "new.json"):
        assert json.loads((tmp_path / name).read_text())["new"] == 1, name
