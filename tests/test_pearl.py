"""PEARL: declared sensitivity, accountant-calibrated sigma, release-only training, schema, errors, end to end."""

from __future__ import annotations

import importlib.util
import inspect
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dpsynth
from dpsynth.config import Config
from dpsynth.errors import ConfigError, DataError, DpsynthError, ResumeError
from dpsynth.methods import pearl as pearl_mod
from dpsynth.methods.pearl import (
    ColumnSpec,
    Layout,
    PearlMethod,
    Schema,
    decode,
    encode_table,
    train_generator,
)
from dpsynth.methods.pearl import method as pearl_method
from dpsynth.methods.pearl.schema import load_schema_spec
from dpsynth.privacy import sketch as sk
from dpsynth.privacy.accountant import GaussianPlan, gdp_delta
from dpsynth.privacy.events import Event, epsilon_of


def _bench_module(name: str) -> Any:
    """A module of bench/ (not a package): loaded from its file."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent.parent / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pearl_tools = _bench_module("pearl_tools")  # benchmark-only PEARL code (epsilon = inf reference, embedding sketch)
FAST = {"n_frequencies": 64, "train_steps": 40, "train_batch": 16, "hidden_dim": 32, "train_threads": 1}


# ------------------------------------------------------------------ sensitivity


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 25),
    d=st.integers(1, 6),
    m=st.integers(1, 40),
    c=st.integers(1, 4),
    seed=st.integers(0, 2**31 - 1),
)
def test_removing_one_record_moves_sketch_by_at_most_sensitivity(n, d, m, c, seed) -> None:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 3, size=(n, d))  # any real vectors, not only the encoded [0, 1]^D
    y = rng.integers(0, c, size=n)
    freqs = sk.random_frequencies(d, m, float(rng.uniform(0.1, 3)), 3.0, seed)
    full = sk._sketch_vector(x, y, c, freqs)
    bound = sk.SKETCH_SENSITIVITY
    for i in range(n):
        keep = np.arange(n) != i
        other = sk._sketch_vector(x[keep], y[keep], c, freqs)
        moved = np.linalg.norm(full - other)
        assert moved <= bound + 1e-9
        assert moved == pytest.approx(bound, rel=1e-9)  # the bound is tight: ||f(x)|| = 1 exactly
        # the counts release: one record moves one count by exactly 1
        counts_moved = np.bincount(y, minlength=c) - np.bincount(y[keep], minlength=c)
        assert np.linalg.norm(counts_moved) == sk.COUNTS_SENSITIVITY


@settings(max_examples=40, deadline=None)
@given(
    cols=st.lists(
        st.lists(
            st.sampled_from(["1", "-7", "2.5", "1e3", "abc", "", " 4 ", "nan", "02139", "0"]), min_size=3, max_size=3
        ),
        min_size=1,
        max_size=5,
    )
)
def test_kind_counts_sensitivity(cols) -> None:
    """Each record adds at most 1 to one kind count per column: removing it moves the counts by <= sqrt(d)."""
    full = sk.release_column_kinds(cols, noise_multiplier=0.0)
    for i in range(3):
        other = sk.release_column_kinds([[v for j, v in enumerate(c) if j != i] for c in cols], noise_multiplier=0.0)
        assert np.linalg.norm(full - other) <= math.sqrt(len(cols)) + 1e-12


@settings(max_examples=60, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False, min_value=-(2.0**39), max_value=2.0**39))
def test_geometric_bin_contains_value(v: float) -> None:
    i = int(sk.geometric_bin(np.array([v]))[0])
    lo, hi = sk.geometric_bin_range(i)
    assert 0 <= i < sk.N_GEO_BINS
    assert lo <= v <= hi


def test_sketch_release_uses_secure_noise_and_declared_sigma() -> None:
    x = np.random.default_rng(0).uniform(size=(50, 3))
    freqs = sk.random_frequencies(3, 16, 1.0, 2.0, 0)
    kw: dict[str, Any] = {"noise_multiplier": 2.0, "counts": np.array([50.0]), "count_sigma": 3.0}
    a = sk.release_sketch(x, np.zeros(50, int), [""], freqs, **kw)
    b = sk.release_sketch(x, np.zeros(50, int), [""], freqs, **kw)
    assert not np.allclose(a.sums, b.sums)  # fresh CSPRNG noise every call, no fixed seed
    assert a.sigma == 2.0 and a.sensitivity == 1.0
    c1 = sk.release_counts(np.zeros(50, int), 1, noise_multiplier=2.0)
    c2 = sk.release_counts(np.zeros(50, int), 1, noise_multiplier=2.0)
    assert c1[0] != c2[0]
    assert "SENTINEL" not in repr(a)


# ------------------------------------------------------------------ accountant


def test_sigma_comes_from_the_shared_accountant() -> None:
    # four equal releases with Delta = 1 reproduce docs/privacy.md's golden sigma (7.461 at epsilon = 1)
    plan = sk.plan_budget(1.0, 1e-5, [(f"r{i}", "", 1.0, "", 1.0) for i in range(4)])
    for r in plan.releases:
        assert r.sigma == pytest.approx(7.461, rel=0.01)
        assert r.noise_multiplier == pytest.approx(GaussianPlan.calibrate(1.0, 1e-5, 4, 1.0).noise_multiplier)
    # one release: exactly the shared GaussianPlan for the declared sensitivity
    one = sk.plan_budget(2.0, 1e-5, [("sketch", "", 1.0, "", 1.0)])
    assert one.releases[0].sigma == pytest.approx(GaussianPlan.calibrate(2.0, 1e-5, 1, 1.0).sigma)


def test_choose_m_from_the_noisy_counts() -> None:
    # largest m with sigma * sqrt(m) / n_bar <= ratio, clamped
    assert sk.choose_m(np.array([100.0, 100.0]), 2.0, 0.5, 16, 1000) == 625
    assert sk.choose_m(np.array([100.0, -5.0]), 2.0, 0.5, 16, 1000) == math.floor((0.5 * 50.5 / 2.0) ** 2)
    assert sk.choose_m(np.array([10.0]), 20.0, 0.5, 16, 1000) == 16
    assert sk.choose_m(np.array([10.0]), 0.0, 0.5, 16, 1000) == 1000


def test_heterogeneous_split_composes_to_the_target() -> None:
    plan = sk.plan_budget(1.0, 1e-5, [("a", "", 2.0, "", 0.1), ("b", "", 3.0, "", 0.1), ("s", "", 1.1, "", 0.8)])
    zs = [r.noise_multiplier for r in plan.releases]
    mu = math.sqrt(sum(1 / z**2 for z in zs))
    assert gdp_delta(1.0, mu) <= 1e-5 * 1.001  # exact GDP cross-check (docs/privacy.md formula)
    check = sk.composed_epsilon(zs, 1e-5)  # dp-accounting PLD over a ComposedDpEvent
    assert check["pld"] == pytest.approx(1.0, rel=0.01)
    assert [r.share for r in plan.releases] == pytest.approx([0.1, 0.1, 0.8])
    # the ledger's composition of the events (what a run is charged) fits the target, for any split
    for eps, shares in [(1.0, [0.1, 0.1, 0.8]), (2.0, [0.2, 0.2, 0.2, 0.1, 0.3]), (10.0, [0.8 / 3] * 3 + [0.1, 0.1])]:
        p = sk.plan_budget(eps, 1e-5, [(str(i), "", 1.0, "", w) for i, w in enumerate(shares)])
        events = [Event(r.name, r.noise_multiplier) for r in p.releases]
        assert eps * 0.999 <= epsilon_of(events, 1e-5) <= eps  # never above: the report rounds epsilon up


# ------------------------------------------------------------------ schema and encoding


ONE = pearl_mod.ONEHOT_SCALE


def _schema(cols: list[ColumnSpec], label: str | None = "y", classes: tuple[str, ...] = ("0", "1")) -> Schema:
    order = [c.name for c in cols] + ([label] if label else [])
    return Schema(cols, order, label, list(classes) if label else [""])


def test_out_of_bound_values_are_clipped() -> None:
    schema = _schema([ColumnSpec("a", "float", 0.0, 10.0), ColumnSpec("n", "integer", 1, 5)])
    df = pd.DataFrame({"a": ["-5", "20", "5"], "n": ["0", "9", "3"]})
    x = encode_table(df, schema)
    assert x[:, 0].tolist() == [0.0, 1.0, 0.5]
    assert x[:, 1].tolist() == [0.0, 1.0, 0.5]
    rows, _ = decode(np.array([[-3.0, 7.0], [0.5, 0.5]]), np.array([0, 1]), schema)
    assert rows[0] == {"a": 0.0, "n": 5, "y": 0}
    assert rows[1]["a"] == 5.0 and rows[1]["n"] == 3 and rows[1]["y"] == 1


def test_categorical_round_trip_and_types() -> None:
    cats = ["red", "green", "blue"]
    schema = _schema(
        [ColumnSpec("c", "categorical", categories=cats), ColumnSpec("k", "categorical", categories=["1", "2"])]
    )
    df = pd.DataFrame({"c": ["blue", "red", "green"], "k": ["2", "1", "2"]})
    x = encode_table(df, schema)
    assert Layout.from_schema(schema).dim == 5
    rows, _ = decode(x, np.array([0, 1, 0]), schema)
    assert [r["c"] for r in rows] == ["blue", "red", "green"]
    assert [r["k"] for r in rows] == [2, 1, 2]  # integer-literal categories come back as ints


def test_values_outside_the_schema_are_handled_per_record(tmp_path: Path) -> None:
    """A value outside the declared categories or a non-numeric entry no longer stops the run (issue item 4):
    the record is encoded without that category / at the middle of the range, and the owner gets a
    one-line console note naming the column and rows, never the value."""
    schema = _schema(
        [ColumnSpec("c", "categorical", categories=["a", "b"]), ColumnSpec("v", "float", 0.0, 10.0)], label=None
    )
    df = pd.DataFrame({"c": ["a", "SECRETVALUE", "b"], "v": ["2", "SECRETTEXT", ""]})
    x = encode_table(df, schema, "private.csv")
    assert x[:, :2].tolist() == [[ONE, 0.0], [0.0, 0.0], [0.0, ONE]]
    assert x[:, 2].tolist() == [0.2, pearl_mod.MISSING_NUMERIC, pearl_mod.MISSING_NUMERIC]
    private = tmp_path / "private.csv"  # rows are the file's lines (here, with a blank line after the header)
    private.write_text("c,v\n\n" + df.to_csv(index=False, header=False))
    notes = pearl_mod.value_notes(df, schema.columns, str(private))
    assert len(notes) == 2 and all("\n" not in n and "SECRET" not in n for n in notes)
    assert "'c'" in notes[0] and "rows 4" in notes[0]
    assert "'v'" in notes[1] and "rows 4, 5" in notes[1]
    gone = pearl_mod.value_notes(df, schema.columns, str(tmp_path / "moved.csv"))  # no file to count lines in
    assert "records 2" in gone[0]  # the second record, numbered from 1 as elsewhere


def test_zero_padded_codes_are_text_and_a_numeric_column_of_them_gets_a_note(tmp_path: Path) -> None:
    """Regression: a zip-code column ("02139") was typed integer by the kinds release, and its output
    dropped the zeros (2139).  A zero-padded integer now counts as text, so such a column comes out
    categorical; where a column is numeric anyway (declared, or mostly plain numbers), the owner's
    console note says its zeros are dropped."""
    assert [sk.value_kind(v) for v in ["02139", " 007 ", "-01", "0", "-0", "10001", "0.5", "00.5"]] == [
        2,
        2,
        2,
        0,
        0,
        0,
        1,
        1,
    ]
    zips = [["02139", "02140", "01002", "10001", "03301"]]
    assert sk.release_column_kinds(zips, noise_multiplier=0.0).tolist() == [[1.0, 0.0, 4.0]]
    schema = _schema([ColumnSpec("zip", "integer", 0.0, 99999.0)], label=None)
    df = pd.DataFrame({"zip": ["10001", "02139", "94110", "007"]})
    (note,) = pearl_mod.value_notes(df, schema.columns, "private.csv")
    assert "'zip'" in note and "leading zeros" in note and "records 2, 4" in note and "02139" not in note
    assert pearl_mod.value_notes(df.iloc[[0, 2]], schema.columns, "private.csv") == []
    # declared in YAML, the codes stay as written (they were read as the numbers 2139 and 10001)
    schema_file = tmp_path / "schema.yaml"
    schema_file.write_text("columns:\n  zip: {categories: [02139, 10001]}\n")
    assert load_schema_spec(str(schema_file))["columns"]["zip"].categories == ["02139", "10001"]


def test_zip_codes_keep_their_zeros_end_to_end(tmp_path: Path) -> None:
    """A zip-code column with the DP schema comes out as the codes as written, not 2139."""
    rng = np.random.default_rng(0)
    n = 200
    p = tmp_path / "zips.csv"
    zips = rng.choice(["02139", "02140", "01002"], n)
    p.write_text("zip,target\n" + "".join(f"{z},{t}\n" for z, t in zip(zips, rng.integers(0, 3, n), strict=True)))
    res = dpsynth.synthesize(_cfg(tmp_path, p, n_synthetic=30, privacy={"epsilon": 8.0, "delta": 1e-5}), progress=False)
    out = pd.read_csv(res.output, dtype=str)
    assert set(out["zip"]) <= {"02139", "02140", "01002"} and len(out) == 30


def _wine_csv(tmp_path: Path, n: int | None = None) -> Path:
    from sklearn.datasets import load_wine

    df = load_wine(as_frame=True).frame
    df = df.astype({"magnesium": "int64", "proline": "int64"})  # integer-valued columns, written as ints
    if n is not None:
        df = df.sample(n=n, random_state=0)
    p = tmp_path / "wine.csv"
    df.to_csv(p, index=False)
    return p


def _cfg(tmp_path: Path, private: Path | str, **kw: Any) -> Config:
    pearl = {**FAST, **kw.pop("pearl", {})}
    return Config(
        method="pearl",
        out=str(tmp_path / "run"),
        output_format="csv",
        n_synthetic=kw.pop("n_synthetic", 60),
        data={"private": str(private), "label_column": "target", "labels": "0,1,2", **kw.pop("data", {})},
        privacy=kw.pop("privacy", {"epsilon": 2.0, "delta": 1e-5}),
        pearl=pearl,
        seed=0,
        **kw,
    )


@pytest.mark.parametrize(
    ("make", "expect", "words"),
    [
        (lambda p: p.write_text(""), DataError, ["empty"]),
        (lambda p: p.write_text("a,target\n"), DataError, ["no records"]),
        (lambda p: p.write_text("a,target\n1,0\n2,7\n"), DataError, ["not in data.labels", "rows 3"]),
        # one extra field on the first record made pandas take the first column as a row index, so one record
        # shifted every other record one column left (the sketch's sensitivity 1 assumes it cannot)
        (lambda p: p.write_text("a,b,target\n1,1,1,1\n" + "2,3,0\n" * 30), DataError, ["line 2 has 4 fields"]),
        (lambda p: p.write_text("a,b,target\n" + "2,3,0\n" * 30 + "1,1,1,1\n"), DataError, ["line 32 has 4"]),
        # a spreadsheet's ';' export: one column named by the whole header, and the budget spent on it
        (lambda p: p.write_text("a;b;target\n" + "2;3;0\n" * 30), DataError, ["';' separators"]),
    ],
)
def test_bad_input_is_a_one_line_error(tmp_path: Path, make, expect, words) -> None:
    p = tmp_path / "bad.csv"
    make(p)
    with pytest.raises(expect) as e:
        dpsynth.synthesize(_cfg(tmp_path, p), progress=False)
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg
    assert not (tmp_path / "run").exists()  # nothing is left behind


def test_trailing_empty_fields_are_dropped_and_every_record_keeps_its_columns(tmp_path: Path) -> None:
    """A spreadsheet export ends every line with a comma: the empty last field is dropped, not taken as a shift
    of every record's columns (the first column had become the row index: `age` held the incomes)."""
    from dpsynth.data import read_table

    p = tmp_path / "trailing.csv"
    p.write_text("age,income\n25,50000,\n30,60000,\n")
    assert read_table(p).to_dict("records") == [{"age": "25", "income": "50000"}, {"age": "30", "income": "60000"}]


def test_the_header_check_that_refuses_a_file_is_per_record(tmp_path: Path) -> None:
    """Regression: two column names each found as a value of their own column in two different records refused
    the file, so one added record could decide whether a run happened; now one record must hold both."""
    from dpsynth.data import header_problem

    base = {"smoker": ["smoker", "non-smoker"] * 20, "diabetic": ["yes", "no"] * 20, "target": ["0", "1"] * 20}
    frame = pd.DataFrame(base)
    assert header_problem(list(frame.columns), frame, strict=False) is None
    plus = pd.concat([frame, pd.DataFrame([{"smoker": "non-smoker", "diabetic": "diabetic", "target": "0"}])])
    assert header_problem(list(plus.columns), plus, strict=False) is None  # two names, two records: a header
    both = pd.concat([frame, pd.DataFrame([{"smoker": "smoker", "diabetic": "diabetic", "target": "0"}])])
    assert header_problem(list(both.columns), both, strict=False) == "column names are also values of their own columns"
    assert header_problem(list(plus.columns), plus) is not None  # an error message still hides names on any hint
    from dpsynth.methods.pearl.encoding import typed_values

    # a category that is an integer too long for int() (over 4,300 digits) crashed decode after the budget
    assert typed_values(["1", "9" * 5000]) == ["1", "9" * 5000] and typed_values(["1", "22"]) == [1, 22]


def test_a_file_without_a_header_row_is_not_published(tmp_path: Path) -> None:
    """Regression: PEARL took a headerless CSV's first record as its column names and published them in
    the synthetic records, schema.json and privacy.json, under the DP claim."""
    from dpsynth.data import header_problem

    p = tmp_path / "noheader.csv"
    p.write_text("SECRETNAME,47,0\n" + "".join(f"name{i},{20 + i},{i % 3}\n" for i in range(40)))
    with pytest.raises(DataError, match="looks like a record, not a header") as e:
        dpsynth.synthesize(_cfg(tmp_path, p), progress=False)
    assert "SECRET" not in str(e.value) and "47" not in str(e.value)
    assert not (tmp_path / "run").exists()
    # the rules, one by one; positions as names (pandas' header for unnamed columns) are a header
    frame = pd.DataFrame({"flu": ["cold", "flu"], "M": ["F", "M"]})
    own = "column names are also values of their own columns"
    assert header_problem(list(frame.columns), frame, strict=False) == own
    smoker = pd.DataFrame({"smoker": ["smoker", "non-smoker"], "age": ["30", "40"]})  # one such name: a header
    assert header_problem(list(smoker.columns), smoker, strict=False) is None
    assert header_problem(list(smoker.columns), smoker) == own  # an error message hides the names rather
    sentence = ["a sentence of well over seven words, as records are", "x"]
    assert header_problem(sentence, strict=False) == "a column name reads like text"
    assert header_problem(["How often do you exercise each week?", "x"], strict=False) is None  # a question
    assert header_problem(["age", "2.5"]) == "a column name is a number"
    assert header_problem(["region", "2019", "2020"]) == "a column name is a number"  # documented: rename y2019
    assert header_problem(["0", "1", "2"]) is None and header_problem(["1", "2"]) is None
    assert header_problem(["0", "1", "2", "label"]) is None  # pd.DataFrame(X) with a label column added
    assert header_problem(["hello", "0"]) == "a column name is a number"  # one "position": a record's label
    wine = pd.read_csv(_wine_csv(tmp_path), dtype=str)
    assert header_problem(list(wine.columns), wine) is None


def test_the_file_type_is_the_last_suffix_as_read_table_reads_it(tmp_path: Path) -> None:
    """Regression: PEARL took a file as CSV or JSON when any suffix said so, while read_table goes by the last
    one: a Parquet file ``sales.csv.parquet`` with year columns was refused as a headerless CSV ("its first
    line looks like a record"), and privacy.json listed the CSV header and JSON key checks for files that
    had neither."""
    from dpsynth.privacy.private_tables import DOMAIN_HEADER, DOMAIN_SAME_KEYS, load_private_table

    cfg = Config(method="pearl", privacy={"epsilon": 1.0, "delta": 1e-5}, data={"private": "x"})
    years = pd.DataFrame({"2019": ["1", "2", "3"], "2020": ["4", "5", "6"]})
    pq = tmp_path / "sales.csv.parquet"
    years.to_parquet(pq)
    _, schema, domain = load_private_table(pq, cfg, {}, None)
    assert schema.order == ["2019", "2020"]
    assert DOMAIN_HEADER not in domain and DOMAIN_SAME_KEYS not in domain
    csv = tmp_path / "export.json.csv"  # a CSV: its header is checked, it has no JSON keys
    csv.write_text("a,b\n1,x\n2,y\n", encoding="utf-8")
    _, _, domain = load_private_table(csv, cfg, {}, None)
    assert DOMAIN_HEADER in domain and DOMAIN_SAME_KEYS not in domain
    jl = tmp_path / "records.csv.jsonl"
    jl.write_text('{"a": 1, "b": "x"}\n{"a": 2, "b": "y"}\n', encoding="utf-8")
    _, _, domain = load_private_table(jl, cfg, {}, None)
    assert DOMAIN_HEADER not in domain and DOMAIN_SAME_KEYS in domain


def test_schema_errors(tmp_path: Path) -> None:
    p = _wine_csv(tmp_path, 30)
    with pytest.raises(DataError, match="no column 'missing'"):
        dpsynth.synthesize(
            _cfg(tmp_path, p, pearl={"data_schema": {"columns": {"missing": {"type": "float"}}}}), progress=False
        )
    with pytest.raises(ConfigError, match="pearl.data_schema.columns.alcohol.type"):
        dpsynth.synthesize(
            _cfg(tmp_path, p, pearl={"data_schema": {"columns": {"alcohol": {"type": "date"}}}}), progress=False
        )
    with pytest.raises(ConfigError, match="data.labels"):
        dpsynth.synthesize(_cfg(tmp_path, p, data={"labels": None}), progress=False)
    with pytest.raises(DataError, match="pearl synthesises tables and arrays"):
        dpsynth.synthesize(_cfg(tmp_path, "embedded:imdb"), progress=False)
    with pytest.raises(ConfigError, match="schema_budget"):
        Config(method="pearl", pearl={"schema_budget": 0.5, "count_budget": 0.5})
    # a non-numeric value in a declared numeric column is no longer an error: it is imputed per record
    # (test_declared_schema_values_are_handled_per_record)


# ------------------------------------------------------------------ the private data never reaches training


def _reachable(obj: Any, seen: set[int] | None = None, depth: int = 0) -> list[Any]:
    """Every object reachable from ``obj`` through attributes, dataclass fields and containers."""
    seen = seen if seen is not None else set()
    if id(obj) in seen or depth > 8:
        return []
    seen.add(id(obj))
    out = [obj]
    if isinstance(obj, (str, bytes, int, float, bool, type(None), np.ndarray)):
        return out
    children: list[Any] = []
    if isinstance(obj, dict):
        children = list(obj.keys()) + list(obj.values())
    elif isinstance(obj, (list, tuple, set, frozenset)):
        children = list(obj)
    elif hasattr(obj, "__dict__"):
        children = list(vars(obj).values())
    elif hasattr(obj, "__dataclass_fields__"):
        children = [getattr(obj, f) for f in obj.__dataclass_fields__]
    for c in children:
        out += _reachable(c, seen, depth + 1)
    return out


def test_training_gets_only_the_release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the trainer's interface: the sketch and public facts, nothing else
    assert list(inspect.signature(train_generator).parameters) == ["sketch", "layout", "settings", "progress"]
    p = tmp_path / "priv.csv"
    rng = np.random.default_rng(0)
    pd.DataFrame(
        {
            "v": rng.uniform(0, 10, 40).round(3),
            "colour": rng.choice(["SENTINELRED", "SENTINELBLUE"], 40),
            "target": rng.integers(0, 3, 40),
        }
    ).to_csv(p, index=False)
    seen: dict[str, Any] = {}
    real = pearl_method.train_generator

    def spy(*args: Any, **kwargs: Any) -> Any:
        method = seen["method"]
        seen["private_at_training"] = method._private
        seen["args"] = _reachable((args, kwargs))
        return real(*args, **kwargs)

    real_prepare = PearlMethod.prepare

    def prepare(self: PearlMethod) -> None:
        real_prepare(self)
        seen["method"] = self
        assert self._private is not None
        table = self._private._table  # the handle's records: a test may look, src may not
        seen["private_arrays"] = [table[c].to_numpy() for c in table.columns]
        seen["private_arrays"].append(self._private._labels)

    monkeypatch.setattr(pearl_method, "train_generator", spy)
    monkeypatch.setattr(PearlMethod, "prepare", prepare)
    cfg = _cfg(
        tmp_path,
        p,
        pearl={"data_schema": {"columns": {"colour": {"categories": ["SENTINELRED", "SENTINELBLUE"]}}}},
    )
    res = dpsynth.synthesize(cfg, progress=False)
    assert seen["private_at_training"] is None  # the method dropped the private data before training
    objs = seen["args"]
    assert not any(isinstance(o, (pd.DataFrame, pd.Series, pearl_mod.PrivateRecords)) for o in objs)
    arrays = [o for o in objs if isinstance(o, np.ndarray)]
    assert {type(o).__name__ for o in objs} >= {"NoisySketch", "Layout", "TrainSettings"}
    for a in arrays:
        for priv in seen["private_arrays"]:
            assert not np.shares_memory(a, priv)
    # leak scan: public categories appear in the output, but no private row does
    text = "".join(
        f.read_text(errors="ignore") for f in res.run_dir.iterdir() if f.suffix in (".json", ".log", ".yaml")
    )
    assert "SENTINEL" not in text.replace("SENTINELRED", "").replace("SENTINELBLUE", "")


# ------------------------------------------------------------------ end to end


def test_end_to_end_wine_csv_with_dp_schema(tmp_path: Path) -> None:
    p = _wine_csv(tmp_path)
    # the dtypes below are a DP release (schema.kinds, 13 columns, 178 records): at epsilon 2 its noise (sigma 28)
    # typed one of the columns wrong in about 1 run in 600; at epsilon 8 (sigma 8.4) that is > 12 sigma away
    eps8 = {"epsilon": 8.0, "delta": 1e-5}
    res = dpsynth.synthesize(_cfg(tmp_path, p, n_synthetic=90, privacy=eps8), progress=False)
    out = res.run_dir / "synthetic.csv"
    syn, real = pd.read_csv(out), pd.read_csv(p)
    assert list(syn.columns) == list(real.columns) and len(syn) == 90
    assert syn.dtypes.to_dict() == real.dtypes.to_dict()  # magnesium/proline int64, the rest float64
    assert set(syn["target"]) <= {0, 1, 2}
    priv = json.loads((res.run_dir / "privacy.json").read_text())
    assert priv["epsilon"] <= 8.0 + 1e-6 and priv["delta"] == pytest.approx(1e-5)
    names = [m["name"] for m in priv["mechanisms"]]
    # kinds unknown: bounds and categories are both reserved; wine has no categorical column, so the
    # categories' share is counted as spent without a release (conservative)
    assert names == [
        "Gaussian: schema.kinds",
        "Gaussian: schema.bounds",
        "Gaussian: schema.categories",
        "Gaussian: counts",
        "Gaussian: sketch",
    ]
    assert priv["mechanisms"][2]["columns"] == 0 and "counted as spent" in priv["mechanisms"][2]["note"]
    assert all(
        m["sigma"] > 0 and m["sensitivity_l2"] > 0 and "add/remove" in m["adjacency"] for m in priv["mechanisms"]
    )
    # the ledger composes the planned events with their own noise multipliers (no separate composition check)
    assert priv["accountant"]["gdp_crosscheck"]["epsilon_at_delta"] == pytest.approx(priv["epsilon"], rel=0.02)
    assert set(priv["schema"]["derived_with_dp"]) == set(real.columns) - {"target"}
    ledger = json.loads((res.run_dir / "ledger.json").read_text())
    planned = [Event.from_dict(e) for e in ledger["planned"]]
    assert len({e.noise_multiplier for e in planned}) == 3  # schema shares, counts, sketch: each its own noise
    assert ledger["target"]["delta"] == pytest.approx(0.9e-5)  # the Gaussian part; the threshold's is apart
    assert ledger["epsilon_spent"] == pytest.approx(epsilon_of(planned, ledger["target"]["delta"]))
    assert ledger["epsilon_spent"] == pytest.approx(priv["epsilon"])
    assert priv["complete"] and [m["count"] for m in priv["mechanisms"]] == [1] * 5
    # the derived schema is saved (a DP release) and can be reused as a declared schema
    saved = json.loads((res.run_dir / "schema.json").read_text())["data_schema"]
    assert saved["columns"]["proline"]["type"] == "integer"
    assert pearl_mod.load_schema_spec(saved)["columns"]["proline"].complete()  # reusable as pearl.data_schema
    # resume re-trains from the saved release and never re-spends
    sketch_before = (res.run_dir / "sketch.npz").read_bytes()
    again = dpsynth.synthesize(_cfg(tmp_path, p, n_synthetic=90, privacy=eps8), resume=True, progress=False)
    assert (res.run_dir / "sketch.npz").read_bytes() == sketch_before
    assert again.privacy["epsilon"] == pytest.approx(priv["epsilon"])
    assert len(json.loads((res.run_dir / "ledger.json").read_text())["releases"]) == 5


def test_categorical_columns_derived_with_threshold(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    p = tmp_path / "cat.csv"
    pd.DataFrame(
        {
            "size": rng.choice(["small", "large"], 400),
            "w": rng.normal(50, 5, 400).round(2),
            "target": rng.integers(0, 3, 400),
        }
    ).to_csv(p, index=False)
    res = dpsynth.synthesize(_cfg(tmp_path, p, pearl={"max_categories": 5}), progress=False)
    priv = res.privacy
    assert [m["name"] for m in priv["mechanisms"]][-1] == "Gaussian: sketch"
    assert "Gaussian: schema.categories" in [m["name"] for m in priv["mechanisms"]]
    assert priv["delta"] == pytest.approx(1e-5) and priv["delta_split"]["category_threshold"] == pytest.approx(1e-6)
    syn = pd.read_csv(res.output)
    assert set(syn["size"]) <= {"small", "large"} and syn["w"].dtype == np.float64


def test_declared_schema_spends_only_on_the_sketch(tmp_path: Path) -> None:
    p = _wine_csv(tmp_path, 60)
    real = pd.read_csv(p)
    cols = {
        c: {"type": "integer" if real[c].dtype.kind == "i" else "float", "min": 0, "max": 2000}
        for c in real.columns
        if c != "target"
    }
    schema_file = tmp_path / "schema.yaml"
    import yaml

    schema_file.write_text(yaml.safe_dump({"columns": cols}))
    res = dpsynth.synthesize(_cfg(tmp_path, p, pearl={"data_schema": str(schema_file)}), progress=False)
    mech = res.privacy["mechanisms"]
    assert [m["name"] for m in mech] == ["Gaussian: counts", "Gaussian: sketch"]
    # two releases on the shared accountant, split 10% / 90% of mu^2 (pearl.count_budget)
    z2 = GaussianPlan.calibrate(2.0, 1e-5, 2, 1.0).noise_multiplier
    # (plan_budget raises the noise by 0.001% steps until the composition is not above the target)
    assert mech[0]["sigma"] == pytest.approx(z2 / math.sqrt(2 * 0.1), rel=1e-4)
    assert mech[1]["sigma"] == pytest.approx(z2 / math.sqrt(2 * 0.9), rel=1e-4)
    assert res.privacy["epsilon"] <= 2.0
    assert mech[1]["sensitivity_l2"] == 1.0 and mech[0]["sensitivity_l2"] == 1.0
    assert res.privacy["schema"]["derived_with_dp"] == []


def test_arrays_npz_per_class(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    p = tmp_path / "digits.npz"
    np.savez(p, x=x[:300].reshape(-1, 8, 8).astype(np.int64), label=y[:300])
    cfg = Config(
        method="pearl",
        out=str(tmp_path / "run"),
        n_synthetic=50,
        data={"private": str(p), "labels": [str(i) for i in range(10)]},
        privacy={"epsilon": 1.0, "delta": 1e-5},
        pearl={**FAST, "data_schema": {"array": {"min": 0, "max": 16}}},
    )
    res = dpsynth.synthesize(cfg, progress=False)
    z = np.load(res.run_dir / "synthetic.npz")
    assert z["x"].shape == (50, 8, 8) and z["x"].dtype == np.int64
    assert z["x"].min() >= 0 and z["x"].max() <= 16
    assert set(z["label"].tolist()) <= set(range(10))
    assert len(res.records) == 50 and "px_63" in res.records[0] and "label" in res.records[0]
    assert res.privacy["sketch"]["classes"] == [str(i) for i in range(10)]


def test_cli_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dpsynth.cli import main

    p = _wine_csv(tmp_path, 80)
    real = pd.read_csv(p)
    schema = tmp_path / "schema.json"  # a declared (public) schema file: nothing is spent on it
    schema.write_text(
        json.dumps(
            {
                "columns": {
                    c: {"type": "integer" if real[c].dtype.kind == "i" else "float", "min": 0, "max": 1700}
                    for c in real.columns
                    if c != "target"
                }
            }
        )
    )
    out = tmp_path / "cli-run"
    argv = ["run", "--method", "pearl", "--private", str(p), "--label-column", "target", "--labels", "0,1,2"]
    argv += ["--data-schema", str(schema)]
    argv += ["--epsilon", "1", "--out", str(out), "--output-format", "csv", "--n-synthetic", "30", "--quiet"]
    argv += ["--n-frequencies", "64", "--train-steps", "20", "--train-batch", "16", "--hidden-dim", "32"]
    with pytest.raises(SystemExit) as e:
        main([*argv[:-2], "--train-steps", "0"])  # a bad value: one line, exit 2
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "train_steps" in err
    main(argv)
    said = capsys.readouterr().out
    assert "wrote 30 synthetic records" in said
    # regression: the closing line sent the user to `dpsynth evaluate`, which refuses a PEARL run
    assert f"next: `dpsynth report {out}` (report.html); to score the table, see docs/pearl.md" in said, said
    assert "dpsynth evaluate" not in said
    priv = json.loads((out / "privacy.json").read_text())
    assert priv["method"] == "pearl"
    assert [m["name"] for m in priv["mechanisms"]] == ["Gaussian: counts", "Gaussian: sketch"]
    assert pd.read_csv(out / "synthetic.csv").dtypes.to_dict() == real.dtypes.to_dict()


# ------------------------------------------------------------------ embeddings (WASP baseline)


def test_select_by_sketch_prefers_the_private_distribution() -> None:
    rng = np.random.default_rng(0)

    def cloud(center: float, n: int) -> np.ndarray:
        e = rng.normal(center, 0.3, size=(n, 8))
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    private = cloud(1.0, 500)
    s, plan = pearl_tools.embedding_sketch(private, epsilon=3.0, delta=1e-5, n_frequencies=64)
    assert plan.releases[1].sigma == pytest.approx(s.sigma) and plan.releases[0].sigma == pytest.approx(s.count_sigma)
    cands = np.concatenate([cloud(1.0, 100), cloud(-1.0, 100)])
    idx = pearl_tools.select_by_sketch(cands, s, 50)
    assert len(set(idx.tolist())) == 50
    assert (idx < 100).mean() > 0.9
    with pytest.raises(ValueError):
        pearl_tools.select_by_sketch(cands, s, 0)


def test_errors_are_dpsynth_errors() -> None:
    assert issubclass(DataError, DpsynthError) and issubclass(ConfigError, DpsynthError)


def test_report_shows_synthetic_images(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    from dpsynth.report import write_report

    x, y = load_digits(return_X_y=True)
    p = tmp_path / "digits.npz"
    np.savez(p, x=x[:200].reshape(-1, 8, 8).astype(np.int64), label=y[:200])
    cfg = Config(
        method="pearl",
        out=str(tmp_path / "run"),
        n_synthetic=40,
        data={"private": str(p), "labels": [str(i) for i in range(10)]},
        privacy={"epsilon": 4.0, "delta": 1e-5},
        pearl={**FAST, "data_schema": {"array": {"min": 0, "max": 16}}},
    )
    res = dpsynth.synthesize(cfg, progress=False)
    html = write_report(res.run_dir).read_text()
    assert '<section id="images">' in html and 'data-chart="images"' in html
    section = html.split('<section id="images">')[1].split("</section>")[0]
    assert 'src="http' not in section and 'href="http' not in section  # self-contained


# ------------------------------------------------------------------ the ledger: every release its own event

RELEASE_FUNCS = {
    "release_column_kinds": "schema.kinds",
    "release_bounds": "schema.bounds",
    "release_categories": "schema.categories",
    "release_counts": "counts",
    "release_sketch": "sketch",
}


REAL_RELEASES = {func: getattr(sk, func) for func in RELEASE_FUNCS}  # before any spy wraps them


class Killed(Exception):
    """Stands in for the process being killed in the middle of a run."""


def _spy_releases(monkeypatch: pytest.MonkeyPatch, kill: set[str] | None = None) -> list[tuple[str, float]]:
    """Record every drawn release as (ledger key, noise multiplier); releases named in ``kill`` raise instead."""
    drawn: list[tuple[str, float]] = []
    kill = kill if kill is not None else set()
    for func, key in RELEASE_FUNCS.items():
        real = REAL_RELEASES[func]

        def spy(*args: Any, _real: Any = real, _key: str = key, **kwargs: Any) -> Any:
            if _key in kill:
                raise Killed(_key)
            drawn.append((_key, float(kwargs["noise_multiplier"])))
            return _real(*args, **kwargs)

        monkeypatch.setattr(sk, func, spy)
    return drawn


def _mixed_frame(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """A float, an integer and a categorical column and a label: every schema release has work to do."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "a": rng.uniform(0, 10, n).round(3),
            "k": rng.integers(1, 50, n),
            "colour": rng.choice(["red", "green", "blue"], n),
            "target": rng.integers(0, 3, n),
        }
    )


def _ledger(run: Path) -> dict[str, Any]:
    out: dict[str, Any] = json.loads((run / "ledger.json").read_text())
    return out


def test_an_interrupted_run_is_charged_for_exactly_the_releases_it_drew(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (issue item 8): the old ledger counted PEARL's R releases as R equal ones, so a run
    stopped after some of them showed a wrong epsilon_spent (2.145 instead of 3.519 with schema_budget 0.8).
    Now each release is an event with its own noise multiplier, recorded as soon as it is drawn."""
    p = tmp_path / "mixed.csv"
    _mixed_frame().to_csv(p, index=False)
    cfg = _cfg(tmp_path, p, pearl={"schema_budget": 0.6})
    drawn = _spy_releases(monkeypatch, kill={"sketch"})
    with pytest.raises(Killed):
        dpsynth.synthesize(cfg, progress=False)
    ledger = _ledger(tmp_path / "run")
    keys = [r["key"] for r in ledger["releases"]]
    assert keys == ["schema.kinds", "schema.bounds", "schema.categories", "counts"]
    assert [k for k, _ in drawn] == keys  # every drawn release is recorded, nothing else is
    zs = [z for _, z in drawn]
    assert len(set(zs)) == 2  # the three schema shares (0.2 each) and the counts (0.1): not R equal releases
    delta_gaussian = 1e-5 * (1 - 0.1)  # privacy.delta minus the category threshold's share
    expected = epsilon_of([Event(k, z) for k, z in drawn], delta_gaussian)
    assert ledger["epsilon_spent"] == pytest.approx(expected, rel=1e-6)
    assert ledger["target"]["delta"] == pytest.approx(delta_gaussian)
    # resume: the four saved releases come back from their files, only the sketch is drawn
    drawn_again = _spy_releases(monkeypatch)
    res = dpsynth.synthesize(cfg, resume=True, progress=False)
    assert [k for k, _ in drawn_again] == ["sketch"]
    ledger = _ledger(tmp_path / "run")
    assert [r["key"] for r in ledger["releases"]] == [*keys, "sketch"]
    planned = [Event.from_dict(e) for e in ledger["planned"]]
    assert ledger["epsilon_spent"] == pytest.approx(epsilon_of(planned, delta_gaussian))
    assert ledger["epsilon_spent"] <= 2.0 + 1e-6 and res.privacy["epsilon"] == pytest.approx(ledger["epsilon_spent"])
    assert res.privacy["complete"] and [m["count"] for m in res.privacy["mechanisms"]] == [1] * 5


def test_a_missing_saved_release_stops_a_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression (issue item 1): a resume whose counts.json was gone drew the counts again while the ledger
    counted them once.  A recorded release whose file is missing now stops the resume; nothing is drawn."""
    p = tmp_path / "mixed.csv"
    _mixed_frame().to_csv(p, index=False)
    cfg = _cfg(tmp_path, p)
    _spy_releases(monkeypatch, kill={"sketch"})
    with pytest.raises(Killed):
        dpsynth.synthesize(cfg, progress=False)
    run = tmp_path / "run"
    before = _ledger(run)["releases"]
    for lost in ("counts.json", "schema_kinds.json"):
        (run / lost).unlink()
        drawn = _spy_releases(monkeypatch)
        with pytest.raises(ResumeError, match="missing") as e:
            dpsynth.synthesize(cfg, resume=True, progress=False)
        assert lost in str(e.value) and "\n" not in str(e.value)
        assert drawn == [] and _ledger(run)["releases"] == before
    # a refusal that stays (a label outside data.labels: a domain check) is raised in prepare, before
    # logging starts, so even on resume it reaches the console only, never run.log
    log_before = (run / "run.log").read_text()
    df = pd.read_csv(p)
    df.loc[10, "target"] = 7
    df.to_csv(p, index=False)
    with pytest.raises(DataError, match="not in data.labels") as e:
        dpsynth.synthesize(cfg, resume=True, progress=False)
    assert "rows 12" in str(e.value) and (run / "run.log").read_text() == log_before


# ------------------------------------------------------------------ data-dependent outcomes never stop a run


def _run_files(run: Path) -> dict[str, bytes]:
    return {str(f.relative_to(run)): f.read_bytes() for f in run.rglob("*") if f.is_file()}


def test_a_bad_value_in_a_dp_typed_numeric_column_is_imputed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression (issue item 2): one non-numeric value in a column the noisy type vote called numeric
    stopped the run with an error naming the private row (copied into run.log) after the schema releases
    were drawn but not recorded.  Now it is missing, imputed per record; the run completes, every drawn
    release is recorded, and no private value or row number reaches the run directory."""
    df = _mixed_frame()
    df["a"] = df["a"].astype(object)
    df.loc[222, "a"] = "SENTINEL_BAD_VALUE"  # CSV row 224 (the header is row 1)
    p = tmp_path / "bad.csv"
    df.to_csv(p, index=False)
    drawn = _spy_releases(monkeypatch)
    res = dpsynth.synthesize(_cfg(tmp_path, p), progress=False)
    run = res.run_dir
    ledger = _ledger(run)
    assert [r["key"] for r in ledger["releases"]] == [k for k, _ in drawn]
    assert len(drawn) == 5 and res.privacy["complete"]
    schema = json.loads((run / "schema.json").read_text())["data_schema"]["columns"]
    assert schema["a"]["type"] == "float"  # the vote called it numeric despite the bad value
    assert pd.read_csv(res.output)["a"].dtype == np.float64
    # the owner is told on the console, naming the rows; nothing of it reaches a file
    err = capsys.readouterr().err
    assert "'a'" in err and "rows 224" in err and "SENTINEL" not in err
    files = _run_files(run)
    assert "run.log" in files and "SENTINEL" not in str(res.privacy)
    for name, data in files.items():
        assert b"SENTINEL" not in data, name
        if name.startswith("synthetic"):
            continue
        if name.endswith(".npz"):
            # binary: the noisy float64 bytes of sketch.npz, decoded as text, held a stray "222" or "224" in
            # about 1 run in 2,000 (simulated); scan what the file holds as text: its array names and strings
            with np.load(run / name) as z:
                text = " ".join([*z.files, *(str(v) for k in z.files if z[k].dtype.kind == "U" for v in z[k].ravel())])
        else:
            text = data.decode("utf-8", errors="ignore")
            text = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}", "", text)  # log times end in ,NNN ms
            # the log names the output file, under pytest's numbered folder (CI once ran in .../pytest-224/)
            text = text.replace(str(tmp_path), "TMP")
        assert not re.search(r"(?<![\d.])22[24](?![\d.])", text), name
        assert not re.search(r"\brows? \d|records? \d|record indices \d", text), name


def test_declared_schema_values_are_handled_per_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue item 4: a value outside the declared categories or a non-numeric value in a declared numeric
    column no longer refuses the input; the label check that stays is listed as a domain check, and the
    console note never reaches run.log.  A delta >= 1/M is a console note too, not a stop."""
    df = _mixed_frame(40)
    df["a"] = df["a"].astype(object)
    df.loc[5, "a"] = "SENTINEL_NA"
    df.loc[7, "colour"] = "SENTINEL_PURPLE"
    p = tmp_path / "declared.csv"
    df.to_csv(p, index=False)
    schema = {
        "columns": {
            "a": {"type": "float", "min": 0, "max": 10},
            "k": {"type": "integer", "min": 1, "max": 50},
            "colour": {"categories": ["red", "green", "blue"]},
        }
    }
    cfg = _cfg(tmp_path, p, pearl={"data_schema": schema}, privacy={"epsilon": 2.0, "delta": 0.05})  # >= 1/40
    res = dpsynth.synthesize(cfg, progress=False)
    err = capsys.readouterr().err
    assert "'a'" in err and "rows 7" in err and "'colour'" in err and "rows 9" in err and "1/M" in err
    assert "SENTINEL" not in err
    assert [m["name"] for m in res.privacy["mechanisms"]] == ["Gaussian: counts", "Gaussian: sketch"]
    assert res.privacy["delta"] == pytest.approx(0.05)
    checks = res.privacy["domain"]["checks"]
    assert pearl_mod.DOMAIN_LABEL in checks and not any("categor" in c for c in checks)
    # the file formats' own per-record checks refuse a whole file too, so the domain names them
    from dpsynth.privacy.private_data import FILE_DOMAIN

    assert set(FILE_DOMAIN) <= set(checks)
    # (regression, audit) one bad JSONL record (invalid, a key twice, not an object, a 5,000-digit number)
    # refuses the whole file as well: the domain says so
    assert any(c.startswith("every JSON/JSONL record is valid JSON and one object") for c in checks)
    for name, data in _run_files(res.run_dir).items():
        assert b"SENTINEL" not in data, name
    log_text = (res.run_dir / "run.log").read_text()
    assert "rows" not in log_text and "1/M" not in log_text
    assert set(pd.read_csv(res.output)["colour"]) <= {"red", "green", "blue"}


def test_no_frequent_category_keeps_the_column_with_a_placeholder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression (issue item 4): "no value of column X was frequent enough to release" stopped the run
    after the budget was spent.  Now the column is output with one public placeholder (empty) value."""
    rng = np.random.default_rng(2)
    n = 120
    p = tmp_path / "ids.csv"
    pd.DataFrame(
        {
            "id": [f"SECRETID{i}" for i in range(n)],  # every value held by one record: none may be released
            "v": rng.uniform(0, 10, n).round(2),
            "target": rng.integers(0, 3, n),
        }
    ).to_csv(p, index=False)
    schema = {"columns": {"id": {"type": "categorical"}, "v": {"type": "float", "min": 0, "max": 10}}}
    drawn = _spy_releases(monkeypatch)
    # each of the 120 single-record values clears the threshold w.p. delta_sel = category_delta_share * delta
    # (the guarantee's own slack): 1.2e-4 per run at delta 1e-5, 1.2e-7 at 1e-8
    tiny_delta = {"epsilon": 2.0, "delta": 1e-8}
    res = dpsynth.synthesize(_cfg(tmp_path, p, pearl={"data_schema": schema}, privacy=tiny_delta), progress=False)
    assert [k for k, _ in drawn] == ["schema.categories", "counts", "sketch"]
    assert [r["key"] for r in _ledger(res.run_dir)["releases"]] == [k for k, _ in drawn]
    syn = pd.read_csv(res.output, keep_default_na=False)
    assert list(syn.columns) == ["id", "v", "target"] and set(syn["id"]) == {""}
    assert res.privacy["schema"]["placeholder_columns"] == ["id"]
    cat = next(m for m in res.privacy["mechanisms"] if m["name"] == "Gaussian: schema.categories")
    assert cat["placeholder_columns"] == ["id"] and cat["count"] == 1
    # `dpsynth evaluate` scores text sets: a PEARL run is refused with that said, not "pass --text-column NAME"
    from dpsynth.evaluate import evaluate

    with pytest.raises(DataError, match="is a PEARL run, whose output is a table; `dpsynth evaluate` scores text"):
        evaluate(res.run_dir, p)
    # a user who gave PEARL a text column is told where text is made
    said = [r.getMessage() for r in caplog.records if "no value of column 'id'" in r.getMessage()]
    assert said and "--method wasp makes text" in said[0], said
    for name, data in _run_files(res.run_dir).items():
        assert b"SECRETID" not in data, name


def test_non_private_benchmark_mode(tmp_path: Path) -> None:
    """bench/pearl_tools.py's NonPrivatePearl (pearl_eval.py's epsilon = inf rows): no noise, and the report
    and the ledger say so."""
    from dpsynth.progress import ProgressReporter
    from dpsynth.run import RunDir

    p = _wine_csv(tmp_path, 40)
    cfg = _cfg(tmp_path, p, privacy={"epsilon": 1.0, "delta": 0.5})
    method = pearl_tools.NonPrivatePearl(cfg)
    method.prepare()
    rd = RunDir(tmp_path / "bench-run")
    rd.create(cfg)
    rows, report = method.run(rd, ProgressReporter(enabled=False))
    assert len(rows) == 60 and report["epsilon"] == math.inf and not report["differentially_private"]
    assert report["guarantee"].startswith("NOT differentially private")
    assert all(m["sigma"] == 0 and m["noise_multiplier"] == 0 for m in report["mechanisms"])
    assert all("WITHOUT noise" in m["name"] for m in report["mechanisms"])
    assert _ledger(rd.path)["epsilon_spent"] == "inf"  # strict JSON (io.strict_json): float("inf") reads it


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_a_key_in_one_json_record_is_not_published_as_a_column(tmp_path: Path, fmt: str) -> None:
    """Regression: a JSON/JSONL table's columns were the union of its records' keys, so a key that one
    record alone carried became a column of the output, of schema.json and of privacy.json (and changed the
    sketch's sensitivity): removing that record removed the column, epsilon = inf.  Records with other keys
    than the first are now refused, by line, without naming the key (a domain check in privacy.json)."""
    records = _mixed_frame(40).to_dict("records")
    p = tmp_path / f"private.{fmt}"

    def write(rows: list[dict[str, Any]]) -> None:
        if fmt == "jsonl":
            p.write_text("".join(json.dumps(r, default=int) + "\n" for r in rows))
        else:
            p.write_text(json.dumps(rows, default=int))

    write([*records[:6], {**records[6], "SENTINEL_KEY": "yes"}, *records[7:]])
    other_keys = r"(line|record) 7 does not have the same keys, in the same order, as (line|record) 1"
    with pytest.raises(DataError, match=other_keys) as e:
        dpsynth.synthesize(_cfg(tmp_path, p), progress=False)
    assert "SENTINEL" not in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "run").exists()  # refused before the run directory exists
    # a record without one of the keys is refused alike (it would decide whether a column exists too)
    write([*records[:6], {k: v for k, v in records[6].items() if k != "colour"}, *records[7:]])
    with pytest.raises(DataError, match="7 does not have the same keys"):
        dpsynth.synthesize(_cfg(tmp_path, p), progress=False)
    # the same keys in another order: the first record would decide the columns' order
    write([*records[:6], dict(reversed(records[6].items())), *records[7:]])
    with pytest.raises(DataError, match="7 does not have the same keys, in the same order"):
        dpsynth.synthesize(_cfg(tmp_path, p), progress=False)
    # every record with the same keys (null for a missing value) runs, and privacy.json states the check;
    # a null in the integer column leaves it integer (pandas would read the column as floats). The column's
    # kind is a DP release: at epsilon 2 over 40 records its noise made 'k' categorical in about 1 run in 20
    # (then nothing cleared the threshold and the column came out empty); at epsilon 8 it is 5.6 sigma (1e-8)
    write([*records[:6], {**records[6], "colour": None, "k": None}, *records[7:]])
    eps8 = {"epsilon": 8.0, "delta": 1e-5}
    res = dpsynth.synthesize(_cfg(tmp_path, p, n_synthetic=20, privacy=eps8), progress=False)
    out = pd.read_csv(res.output)
    assert list(out.columns) == ["a", "k", "colour", "target"] and out["k"].dtype == np.int64
    assert pearl_mod.DOMAIN_SAME_KEYS in res.privacy["domain"]["checks"]


def test_an_in_memory_list_does_not_let_one_record_choose_the_dtype() -> None:
    """Regression: arrays handed to the loader as plain lists took the dtype numpy infers from the values,
    so one record with a 2.5 among integers turned the schema's type (and the output's dtype and rounding)
    from integer into float: a published fact that depends on one record.  A list is now read as float64
    whatever its values; an ndarray keeps its declared dtype."""
    from dpsynth.privacy.private_tables import load_private_table

    cfg = Config(method="pearl", privacy={"epsilon": 1.0, "delta": 1e-5}, data={"private": "x.npz"})
    x = np.random.default_rng(0).integers(0, 5, size=(30, 2, 2)).tolist()
    for rows in (x, [*x[:-1], [[2.5, 1], [0, 1]]]):
        _, schema, _ = load_private_table({"x": rows}, cfg, {}, None)
        assert schema.array_dtype == "float64" and schema.columns[0].kind == "float"
    _, schema, _ = load_private_table({"x": np.asarray(x, dtype=np.int64)}, cfg, {}, None)
    assert schema.array_dtype == "int64" and schema.columns[0].kind == "integer"


def test_one_record_does_not_change_how_the_others_numbers_are_written(tmp_path: Path) -> None:
    """Regression (audit): a DataFrame, a Hugging Face Dataset or a pandas-written Parquet file types a whole
    column from its values, so one record with a 2.5 or a missing value made an integer column float and every
    other record's 30 read "30.0": the kinds release then counted them as floats (integer -> float almost
    surely) and categorical codes were released spelled "1.0".  Each cell's text is now its own."""
    import datasets

    from dpsynth.data import read_table

    base = [{"age": 30 + i, "code": i % 3} for i in range(20)]
    odd = [*base, {"age": 33.5, "code": None}]
    odd_parquet = tmp_path / "odd.parquet"
    pd.DataFrame(odd).to_parquet(odd_parquet)
    readers = (pd.DataFrame, datasets.Dataset.from_list)
    for read in readers:
        before, after = read_table(read(base), "utf-8"), read_table(read(odd), "utf-8")
        assert after[:20].to_dict("records") == before.to_dict("records"), read
        assert before["age"][0] == "30" and before["code"][1] == "1"
    assert read_table(odd_parquet, "utf-8")[:20].to_dict("records") == before.to_dict("records")
    assert read_table(pd.DataFrame({"x": [2.0, 2.5, "2.0"]}), "utf-8")["x"].tolist() == ["2", "2.5", "2.0"]
    cat = [pd.Categorical([30, 31, 32]), pd.Categorical([30, 31, 32, 33.5])]  # a categorical dtype too
    assert [read_table(pd.DataFrame({"c": c}), "utf-8")["c"].tolist()[:3] for c in cat] == [["30", "31", "32"]] * 2
    # categories declared (YAML floats: "1.0") or released by an earlier version in a float's spelling still
    # meet the values, which now read "1"
    from dpsynth.methods.pearl.encoding import _category_index

    values = read_table(pd.DataFrame({"code": [1.0, 2.0, None, 1.0]}), "utf-8")["code"].to_numpy()
    assert _category_index(values, ["1.0", "2.0"]).tolist() == [0, 1, -1, 0]
    assert _category_index(np.array(["2.0", "1", " 2 "]), ["1", "2"]).tolist() == [1, 0, 1]


def test_declared_labels_and_categories_spelled_like_missing_markers_are_values(tmp_path: Path) -> None:
    """Regression: a declared label "None" (or a declared category "NA", Namibia) was read as a missing value:
    the run said the records' 'None' was "not in data.labels ['Mild', 'None', 'Severe']", and a declared
    category NA was encoded as no category at all."""
    rng = np.random.default_rng(3)
    p = tmp_path / "na.csv"
    pd.DataFrame(
        {
            "country": rng.choice(["NA", "ZA", "BW"], 120),
            "w": rng.normal(50, 5, 120).round(2),
            "target": rng.choice(["None", "Mild", "Severe"], 120),
        }
    ).to_csv(p, index=False)
    schema_file = tmp_path / "schema.yaml"
    schema_file.write_text(
        "columns:\n  country: {type: categorical, categories: [NA, ZA, BW]}\n  w: {type: float, min: 0, max: 100}\n"
    )
    cfg = _cfg(tmp_path, p, data={"labels": "None,Mild,Severe"}, pearl={"data_schema": str(schema_file)})
    res = dpsynth.synthesize(cfg, progress=False)
    syn = pd.read_csv(res.output, keep_default_na=False, dtype=str)
    assert set(syn["target"]) <= {"None", "Mild", "Severe"} and set(syn["country"]) <= {"NA", "ZA", "BW"}
    assert (syn["country"] == "NA").any()  # learned from the records, not an empty category


def test_arrays_passed_in_memory_as_the_docs_say(tmp_path: Path) -> None:
    """Regression: `synthesize(private={"x": images, "label": labels})` and a bare ndarray, documented in
    docs/pearl.md, were refused ("a dict is not a source dpsynth reads") before PEARL's loader saw them."""
    rng = np.random.default_rng(0)
    x, y = rng.random((60, 4, 4)).astype(np.float32), rng.integers(0, 2, 60)
    fast = {"train_steps": 20, "n_frequencies": 16}
    cfg = Config(
        method="pearl",
        out=str(tmp_path / "run"),
        n_synthetic=8,
        data={"label_column": "label", "labels": "0,1"},
        privacy={"epsilon": 2.0, "delta": 1e-5},
        pearl=fast,
    )
    res = dpsynth.synthesize(cfg, private={"x": x, "label": y}, progress=False)
    assert len(res.records) == 8 and "in-memory:dict" in (tmp_path / "run" / "config.yaml").read_text()
    bare = Config(method="pearl", out=str(tmp_path / "bare"), n_synthetic=8, privacy={"epsilon": 2.0}, pearl=fast)
    assert len(dpsynth.synthesize(bare, private=x, progress=False).records) == 8
    with pytest.raises(DataError, match="a dict is not a source"):  # the text methods still refuse one
        dpsynth.synthesize(Config(out=str(tmp_path / "wasp")), private={"text": ["a"]}, progress=False)


@pytest.mark.parametrize("change", ["rename", "add"])
def test_a_resume_whose_file_changed_its_columns_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    """Regression: resuming after the schema releases with a column renamed gave KeyError: 'age', with a column
    added numpy's "attempt to get argmax of an empty sequence"."""
    from dpsynth.methods.pearl import method as pearl_method

    rng = np.random.default_rng(5)
    p = tmp_path / "t.csv"
    df = pd.DataFrame({"age": rng.integers(20, 70, 200), "w": rng.normal(50, 5, 200).round(2)})
    df["target"] = rng.integers(0, 3, 200)
    df.to_csv(p, index=False)

    def stop(*args: Any, **kw: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(pearl_method, "train_generator", stop)
    with pytest.raises(KeyboardInterrupt):
        dpsynth.synthesize(_cfg(tmp_path, p), progress=False)
    monkeypatch.undo()
    changed = df.rename(columns={"age": "years"}) if change == "rename" else df.assign(extra=rng.normal(size=200))
    changed.to_csv(p, index=False)
    with pytest.raises(ResumeError, match="changed since the run began"):
        dpsynth.synthesize(_cfg(tmp_path, p), resume=True, progress=False)
    df.to_csv(p, index=False)  # the records it started with: the saved releases go on
    assert len(dpsynth.synthesize(_cfg(tmp_path, p), resume=True, progress=False).records) == 60


def test_bounds_no_bin_of_which_cleared_the_noise_are_flagged_and_never_cross(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: when no histogram bin cleared the threshold the argmax bin of pure noise became the bounds
    without a word (60 images in [0, 1) came out at 1.37e11), and an array's crossed bounds became
    [lo, lo + 1]."""
    import logging

    from dpsynth.methods.pearl import schema as schema_mod
    from dpsynth.methods.pearl.schema import ColumnSpec, Schema, apply_schema_release, draw_schema_release

    ((lo, hi, cleared),) = sk.release_bounds([np.full(60, 0.5)], noise_multiplier=100.0, rng=np.random.default_rng(0))
    assert not cleared and lo < hi
    ((_, _, cleared),) = sk.release_bounds([np.full(5000, 0.5)], noise_multiplier=1.0, rng=np.random.default_rng(0))
    assert cleared
    # an array whose guessed lower bound lies above its upper one: the span of both bins, flagged
    crossed = [(1e6, 2e6, False), (0.25, 0.5, True)]
    monkeypatch.setattr(schema_mod.sk, "release_bounds", lambda cols, noise_multiplier: crossed)
    arr = Schema([ColumnSpec("array", kind="float")], ["array"], None, [""], array_shape=(4,), array_dtype="float32")
    payload = draw_schema_release(
        "schema.bounds", arr, None, np.zeros((3, 4)), noise_multiplier=1.0, delta_selection=1e-6, max_categories=5
    )
    assert payload["bounds"] == {"array": [0.25, 2e6]} and payload["guessed_bounds"] == ["array"]
    with caplog.at_level(logging.WARNING, logger="dpsynth"):
        info = apply_schema_release(arr, payload)
    assert "'array'" in caplog.text and "bounds are a guess" in caplog.text and info["guessed_bounds"] == ["array"]


@pytest.mark.parametrize(
    ("column", "needle"),
    [
        ({"type": "float", "min": -1e308, "max": 1.7e308}, "max - min overflows"),  # every output value was inf
        ({"type": "integer", "min": 0.2, "max": 0.8}, "no integer lies between"),  # decoded as 1, outside them
        ({"type": "float", "min": 2, "max": 1}, "min must be below max"),
    ],
)
def test_declared_bounds_that_cannot_encode_are_refused(column: dict[str, Any], needle: str) -> None:
    from dpsynth.methods.pearl.schema import load_schema_spec

    with pytest.raises(ConfigError, match=needle):
        load_schema_spec({"columns": {"x": column}})


def test_a_dataframe_input_lists_its_cell_check_in_the_domain(tmp_path: Path) -> None:
    """Regression: a DataFrame with one cell of non-UTF-8 bytes is refused (a one-record check), but privacy.json
    listed only "at least one record" for DataFrame input."""
    from dpsynth.privacy.private_data import CELL_DOMAIN

    rng = np.random.default_rng(2)
    df = pd.DataFrame({"w": rng.normal(50, 5, 80).round(2), "target": rng.integers(0, 3, 80).astype(str)})
    schema = {"columns": {"w": {"type": "float", "min": 0, "max": 99}}}
    cfg = _cfg(tmp_path, "unused.csv", pearl={"data_schema": schema})
    res = dpsynth.synthesize(cfg, private=df, progress=False)
    assert CELL_DOMAIN in res.privacy["domain"]["checks"]
    bad = df.astype(object)
    bad.loc[3, "w"] = b"\xff\xfe"
    with pytest.raises(DataError, match="not UTF-8"):
        dpsynth.synthesize(_cfg(tmp_path / "b", "unused.csv"), private=bad, progress=False)
