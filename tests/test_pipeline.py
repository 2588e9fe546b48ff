"""End-to-end pipeline with a fake generator and embedder: outputs, ledger, privacy report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import dpsynth
from dpsynth.privacy.accountant import GaussianPlan
from dpsynth.privacy.voting import top_q_sensitivity

from .conftest import FakeEmbedder, FakeGenerator, fake_run_config


def test_wasp_end_to_end(private_csv: Path, tmp_path: Path) -> None:
    cfg = fake_run_config(private_csv, tmp_path / "run")
    gens = {"a": FakeGenerator("a", 1), "b": FakeGenerator("b", 2)}
    res = dpsynth.synthesize(cfg, generators=gens, embedder=FakeEmbedder(), progress=False)
    assert len(res) == 60
    rows = [json.loads(x) for x in (tmp_path / "run" / "synthetic.jsonl").read_text().splitlines()]
    assert {"text", "label", "generator", "round"} <= set(rows[0])
    assert {r["round"] for r in rows} == {0, 1, 2, 3}
    assert {r["label"] for r in rows} == {"0", "1"}
    rep = json.loads((tmp_path / "run" / "privacy.json").read_text())
    assert rep["delta"] == 1e-5
    assert rep["epsilon"] == pytest.approx(4.0, rel=1e-3)
    assert rep["epsilon"] <= 4.0 + 1e-9
    mech = rep["mechanisms"][0]
    assert mech["count"] == 3
    assert mech["sensitivity_l2"] == pytest.approx(top_q_sensitivity(4, True))
    plan = GaussianPlan.calibrate(4.0, 1e-5, 3, top_q_sensitivity(4, True))
    assert mech["sigma"] == pytest.approx(plan.sigma, rel=1e-6)
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
