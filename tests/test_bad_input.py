"""Every user mistake gives a one-line ``DpsynthError`` naming the field or file and the fix.

Each case writes its inputs into ``tmp_path`` (also the working directory) and returns the
attempt to run.  For mistakes caught by validation the test then checks that nothing under
``tmp_path`` was created, changed or removed by the attempt: no run directory is left
behind and an existing run is untouched.  No message may contain private record text or
label values (the rows of conftest's ``private_csv`` carry ``SENTINEL`` markers, and the bad
label value below is a ``SENTINEL`` string too).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import dpsynth
from dpsynth.config import Config, GeneratorConfig, load_config
from dpsynth.errors import ConfigError, DataError, DpsynthError, GeneratorError, ResumeError
from dpsynth.run import dump_config_yaml

from .conftest import FakeEmbedder, FakeGenerator

SENTINEL = "SENTINEL"
LABELS = {"0": "negative", "1": "positive"}
Action = Callable[[], object]


@pytest.fixture(autouse=True)
def _restore_dpsynth_logger() -> Any:
    """A run points the 'dpsynth' logger at its run.log and stops propagation; undo that afterwards
    so later tests (e.g. caplog-based ones) see the logger as they would on their own."""
    logger = logging.getLogger("dpsynth")
    handlers, propagate, level = list(logger.handlers), logger.propagate, logger.level
    yield
    for h in list(logger.handlers):
        if h not in handlers:
            logger.removeHandler(h)
            h.close()
    logger.propagate, logger.level = propagate, level


# ---------------------------------------------------------------- helpers
def _raw(private: Path | str, out: Path, **over: Any) -> dict[str, Any]:
    """A valid config (as a dict) for the conftest CSV; ``over`` replaces fields or merges sections."""
    raw: dict[str, Any] = dict(
        method="wasp",
        n_synthetic=20,
        out=str(out),
        data=dict(private=str(private), text_column="review", label_column="sentiment", labels=dict(LABELS)),
        privacy=dict(epsilon=4.0, delta=1e-5),
        wasp=dict(rounds=1, q=2),
        generators=[dict(name="a", model="x"), dict(name="b", model="y")],
        seed=0,
    )
    for k, v in over.items():
        raw[k] = {**raw[k], **v} if isinstance(v, dict) and isinstance(raw.get(k), dict) else v
    return raw


def _synth(
    tmp: Path,
    private: Path | str,
    *,
    resume: bool = False,
    gens: dict | None = None,
    out: Path | str | None = None,
    **over: Any,
) -> Any:
    """Validate the config and run the pipeline with fakes, into ``out`` (default ``tmp/run``)."""
    cfg = Config.model_validate(_raw(private, Path(out) if out is not None else tmp / "run", **over))
    gens = gens if gens is not None else {"a": FakeGenerator("a"), "b": FakeGenerator("b")}
    return dpsynth.synthesize(cfg, generators=gens, embedder=FakeEmbedder(), progress=False, resume=resume)


def _later(tmp: Path, private: Path | str, **kw: Any) -> Action:
    """The attempt to run, once the case has written its inputs."""
    return functools.partial(_synth, tmp, private, **kw)


def _rows(csv: Path) -> pd.DataFrame:
    return pd.read_csv(csv, dtype=str, keep_default_na=False)


def _csv(tmp: Path, df: pd.DataFrame, name: str = "edited.csv") -> Path:
    p = tmp / name
    df.to_csv(p, index=False)
    return p


def _bytes(tmp: Path, name: str, data: bytes) -> Path:
    p = tmp / name
    p.write_bytes(data)
    return p


def _latin1_csv(tmp: Path, csv: Path) -> Path:
    """The conftest CSV with one non-ASCII character in record index 3 (line 5), saved as latin-1."""
    text = csv.read_text(encoding="utf-8").replace("SENTINEL0003XYZ", "SENTINEL0003XYZ caf\u00e9")
    return _bytes(tmp, "latin.csv", text.encode("latin-1"))


def _snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root``, with a hash of each file's content."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root) + "/"] = ""
        for f in filenames:
            p = Path(dirpath, f)
            out[os.path.relpath(p, root)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# ---------------------------------------------------------------- cases: files
def empty_file(tmp: Path, csv: Path) -> Action:
    return _later(tmp, _bytes(tmp, "zero.csv", b""))


def empty_jsonl(tmp: Path, csv: Path) -> Action:
    return _later(tmp, _bytes(tmp, "zero.jsonl", b""))


def empty_json_list(tmp: Path, csv: Path) -> Action:
    return _later(tmp, _bytes(tmp, "none.json", b"[]"))


def header_only(tmp: Path, csv: Path) -> Action:
    return _later(tmp, _bytes(tmp, "header.csv", b"review,sentiment\n"))


def folder_not_dataset(tmp: Path, csv: Path) -> Action:
    folder = tmp / "somefolder"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a dataset")
    return _later(tmp, folder)


def garbage_parquet(tmp: Path, csv: Path) -> Action:
    return _later(tmp, _bytes(tmp, "garbage.parquet", b"PAR1" + bytes(range(256)) * 3 + SENTINEL.encode()))


def missing_file(tmp: Path, csv: Path) -> Action:
    return _later(tmp, tmp / "absent.csv")


def unsupported_suffix(tmp: Path, csv: Path) -> Action:
    return _later(tmp, _bytes(tmp, "records.xlsx", b"PK\x03\x04" + SENTINEL.encode()))


def latin1_csv(tmp: Path, csv: Path) -> Action:
    return _later(tmp, _latin1_csv(tmp, csv))


def latin1_jsonl(tmp: Path, csv: Path) -> Action:
    p = tmp / "utf8.jsonl"
    _rows(csv).to_json(p, orient="records", lines=True, force_ascii=False)
    text = p.read_text(encoding="utf-8").replace("SENTINEL0002XYZ", "SENTINEL0002XYZ na\u00efve")
    return _later(tmp, _bytes(tmp, "latin.jsonl", text.encode("latin-1")))


def utf16_csv(tmp: Path, csv: Path) -> Action:
    """Excel's "Unicode text": UTF-16 with a byte-order mark; the advice names utf-16, not latin-1."""
    return _later(tmp, _bytes(tmp, "utf16.csv", csv.read_text(encoding="utf-8").encode("utf-16")))


def utf16_csv_read_as_latin1(tmp: Path, csv: Path) -> Action:
    """Following latin-1 advice on a UTF-16 file decoded it, with a NUL byte in every other character."""
    return _later(
        tmp, _bytes(tmp, "utf16.csv", csv.read_text(encoding="utf-8").encode("utf-16")), data=dict(encoding="latin-1")
    )


def empty_private_path(tmp: Path, csv: Path) -> Action:
    return _later(tmp, "")  # was read as the current folder: "is a folder but not a saved Hugging Face dataset"


def broken_jsonl(tmp: Path, csv: Path) -> Action:
    lines = '{"review": "SENTINEL0001XYZ fine", "sentiment": "0"}\n{"review": "SENTINEL0002XYZ, "sentiment": 1}\n'
    return _later(tmp, _bytes(tmp, "broken.jsonl", lines.encode()))


def extra_field_after_a_long_value(tmp: Path, csv: Path) -> Action:
    """Regression: past the csv module's 131,072-character field limit the extra-field check gave up, and
    pandas dropped the record's third field without a word."""
    lines = csv.read_text(encoding="utf-8").split("\n")
    lines[3] = lines[3].replace("SENTINEL0002XYZ", "SENTINEL0002XYZ " + "x" * 200_000) + ",SENTINEL extra"
    return _later(tmp, _bytes(tmp, "long.csv", "\n".join(lines).encode()))


def quote_left_open(tmp: Path, csv: Path) -> Action:
    """Regression: a quote left open on line 3 ran the record on into line 4, and the error named line 4 alone,
    where nothing is wrong."""
    lines = csv.read_text(encoding="utf-8").split("\n")
    lines[2] = '"' + lines[2]  # the value's quote opened, never closed: the next line's opening quote closes it
    text, label = lines[3].rsplit(",", 1)
    lines[3] = f'"{text.replace(" ", ", ", 1)}",{label}'  # a quoted value with a comma, as it should be
    return _later(tmp, _bytes(tmp, "open.csv", "\n".join(lines).encode()))


def extra_field_after_a_form_feed(tmp: Path, csv: Path) -> Action:
    """Regression: the check split lines where pandas does not (a form feed, U+2028), so it counted other
    fields than pandas read: a record with four fields was read as two, shifted."""
    text = 'review,sentiment\nSENTINEL0000XYZ\x0c"y,z,w",0\n' + csv.read_text(encoding="utf-8").split("\n", 1)[1]
    return _later(tmp, _bytes(tmp, "ff.csv", text.encode()))


def unknown_encoding(tmp: Path, csv: Path) -> Action:
    return _later(tmp, csv, data=dict(encoding="utf-9"))


def encoding_not_for_text(tmp: Path, csv: Path) -> Action:
    """Regression: rot13 / base64 are codecs, but not of text: ``bytes.decode`` raised a LookupError."""
    return _later(tmp, csv, data=dict(encoding="rot13"))


def encoding_that_names_no_byte(tmp: Path, csv: Path) -> Action:
    """Regression: punycode's UnicodeError (no byte position; its message quotes a character) escaped."""
    return _later(tmp, csv, data=dict(encoding="punycode"))


def _jsonl_with(tmp: Path, name: str, value: str) -> Path:
    """Four good records, then one whose sentiment is ``value`` (raw JSON) on line 5."""
    good = "".join(f'{{"review": "SENTINEL{i:04d}XYZ fine", "sentiment": "{i % 2}"}}\n' for i in range(4))
    return _bytes(tmp, name, (good + f'{{"review": "SENTINEL0004XYZ", "sentiment": {value}}}\n').encode())


def jsonl_number_too_long(tmp: Path, csv: Path) -> Action:
    """Regression: an integer of 5,000 digits ended the run in "ValueError: Exceeds the limit (4300 digits)"."""
    return _later(tmp, _jsonl_with(tmp, "long.jsonl", "1" * 5000))


def jsonl_nested_too_deep(tmp: Path, csv: Path) -> Action:
    """Regression: lists nested 100,000 deep ended the run in a RecursionError."""
    return _later(tmp, _jsonl_with(tmp, "deep.jsonl", "[" * 100_000 + "]" * 100_000))


def json_number_too_long(tmp: Path, csv: Path) -> Action:
    good = [{"review": f"SENTINEL{i:04d}XYZ", "sentiment": str(i % 2)} for i in range(4)]
    text = json.dumps(good)[:-1] + ', {"review": "SENTINEL", "sentiment": ' + "7" * 5000 + "}]"
    return _later(tmp, _bytes(tmp, "long.json", text.encode()))


def duplicate_csv_column(tmp: Path, csv: Path) -> Action:
    """`review,review,sentiment`: pandas would read the first and call the second review.1."""
    df = _rows(csv)
    df.insert(1, "review_2", df["review"])
    text = df.to_csv(index=False).replace("review_2", "review", 1)
    return _later(tmp, _bytes(tmp, "dups.csv", text.encode()))


def headerless_csv(tmp: Path, csv: Path) -> Action:
    """A CSV saved without its header row: its first record is read as the column names."""
    return _later(tmp, _bytes(tmp, "noheader.csv", _rows(csv).to_csv(index=False, header=False).encode()))


def headerless_csv_repeated_cell(tmp: Path, csv: Path) -> Action:
    """The same, with a first record whose two cells are equal: the repeated "column name" is a record's text."""
    body = _rows(csv).to_csv(index=False, header=False)
    return _later(tmp, _bytes(tmp, "dupcell.csv", f"SENTINEL0000XYZ said so,SENTINEL0000XYZ said so\n{body}".encode()))


def duplicate_parquet_column(tmp: Path, csv: Path) -> Action:
    """Regression: pyarrow's "Multiple matches for FieldRef.Name(review) in review: string ..." was shown."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    df = _rows(csv)
    cols = [pa.array(df["review"]), pa.array(df["sentiment"]), pa.array(df["review"])]
    path = tmp / "dups.parquet"
    pq.write_table(pa.table(cols, names=["review", "sentiment", "review"]), path)
    return _later(tmp, path)


def jsonl_key_of_one_record(tmp: Path, csv: Path) -> Action:
    """Regression: a wrong text column listed the union of the records' keys, so a key only one private record
    has (here a name) was shown; such keys are counted, not named."""
    lines = [
        '{"review": "fine", "sentiment": "0"}',
        '{"review": "good", "sentiment": "1", "SENTINEL0002XYZ Jane Doe": "x"}',
        '{"review": "ok", "sentiment": "0"}',
    ]
    path = _bytes(tmp, "onekey.jsonl", "\n".join(lines).encode())
    return _later(tmp, path, data={"text_column": "body"})


def duplicate_unread_jsonl_key(tmp: Path, csv: Path) -> Action:
    """A key the run does not read, twice in one record: refused without naming it (it may be the record's own)."""
    lines = ['{"review": "fine", "sentiment": "0", "SENTINEL0001XYZ": 1, "SENTINEL0001XYZ": 2}']
    return _later(tmp, _bytes(tmp, "dupother.jsonl", "\n".join(lines).encode()))


def duplicate_jsonl_key(tmp: Path, csv: Path) -> Action:
    lines = [
        '{"review": "SENTINEL0001XYZ fine", "sentiment": "0"}',
        '{"review": "SENTINEL0002XYZ good", "sentiment": "1"}',
        '{"review": "SENTINEL0003XYZ one", "sentiment": "0", "review": "SENTINEL0003XYZ two"}',
    ]
    return _later(tmp, _bytes(tmp, "dupkeys.jsonl", "\n".join(lines).encode()))


def nan_placeholder_texts(tmp: Path, csv: Path) -> Action:
    """A spreadsheet's NaN / null in the text column: missing values, not records."""
    df = _rows(csv)
    df.loc[[2, 6], "review"] = ["NaN", " null "]
    return _later(tmp, _csv(tmp, df))


# ---------------------------------------------------------------- cases: records
def bad_text_column(tmp: Path, csv: Path) -> Action:
    return _later(tmp, csv, data=dict(text_column="reveiw"))


def bad_label_column(tmp: Path, csv: Path) -> Action:
    return _later(tmp, csv, data=dict(label_column="label"))


def semicolon_csv(tmp: Path, csv: Path) -> Action:
    """A spreadsheet's export with ';' reads as one column named after the whole header: say why."""
    rows = _rows(csv)
    path = tmp / "semi.csv"
    rows.to_csv(path, sep=";", index=False)
    return _later(tmp, path)


def semicolon_dataframe(tmp: Path, csv: Path) -> Action:
    """The same read into a DataFrame by the user: no file to rename; the fix is the reader's separator."""
    path = tmp / "semi.csv"
    _rows(csv).to_csv(path, sep=";", index=False)
    cfg = Config.model_validate(_raw(csv, tmp / "run"))
    gens = {"a": FakeGenerator("a"), "b": FakeGenerator("b")}
    records = pd.read_csv(path)
    return lambda: dpsynth.synthesize(cfg, private=records, generators=gens, embedder=FakeEmbedder(), progress=False)


def dataframe_columns_equal_as_text(tmp: Path, csv: Path) -> Action:
    """Columns 0 and "0" of a DataFrame are one name once read as text (as the config names columns)."""
    cfg = Config.model_validate(_raw(csv, tmp / "run", data=dict(text_column="0", label_column="sentiment")))
    records = _rows(csv).rename(columns={"review": "0"}).assign(**{"extra": "x"}).rename(columns={"extra": 0})
    gens = {"a": FakeGenerator("a"), "b": FakeGenerator("b")}
    return lambda: dpsynth.synthesize(cfg, private=records, generators=gens, embedder=FakeEmbedder(), progress=False)


def spaced_header(tmp: Path, csv: Path) -> Action:
    """A header written "review, sentiment": the second column's name is " sentiment", which looks alike."""
    path = tmp / "spaced.csv"
    path.write_text(csv.read_text(encoding="utf-8").replace("review,sentiment", "review, sentiment", 1), "utf-8")
    return _later(tmp, path)


def spaced_setting(tmp: Path, csv: Path) -> Action:
    """The other way round: a clean header and " sentiment" in the config; the file is fine."""
    return _later(tmp, csv, data=dict(label_column=" sentiment"))


def comma_tsv(tmp: Path, csv: Path) -> Action:
    path = tmp / "records.tsv"
    path.write_bytes(csv.read_bytes())
    return _later(tmp, path)


def empty_texts(tmp: Path, csv: Path) -> Action:
    df = _rows(csv)
    df.loc[[3, 7], "review"] = ["", "   "]
    return _later(tmp, _csv(tmp, df))


def null_texts_jsonl(tmp: Path, csv: Path) -> Action:
    df = _rows(csv).astype(object)
    df.loc[5, "review"] = None  # JSON null is an empty text, not the text "None"
    p = tmp / "nulls.jsonl"
    df.to_json(p, orient="records", lines=True)
    return _later(tmp, p)


def empty_text_after_blank_lines(tmp: Path, csv: Path) -> Action:
    """Regression: rows were counted as if every record took one line, so after a blank line or a quoted
    text spanning two lines the message named the wrong row (record 3 here starts on line 7, not 5)."""
    df = _rows(csv)
    df.loc[1, "review"] = "SENTINEL0001XYZ first line\nsecond line"  # quoted, over two lines
    df.loc[3, "review"] = ""
    text = df.to_csv(index=False).replace("\n", "\n\n", 1)  # a blank line after the header
    return _later(tmp, _bytes(tmp, "gaps.csv", text.encode()))


def empty_text_after_blank_jsonl_lines(tmp: Path, csv: Path) -> Action:
    df = _rows(csv).astype(object)
    df.loc[2, "review"] = None
    text = df.to_json(orient="records", lines=True)
    return _later(tmp, _bytes(tmp, "gaps.jsonl", ("\n" + text.replace("\n", "\n\n", 1)).encode()))


def undeclared_label(tmp: Path, csv: Path) -> Action:
    df = _rows(csv)
    df.loc[4, "sentiment"] = "SENTINEL_LABEL"
    return _later(tmp, _csv(tmp, df))


def empty_label(tmp: Path, csv: Path) -> Action:
    df = _rows(csv)
    df.loc[[2, 6], "sentiment"] = ["", "NaN"]  # blank, and what a spreadsheet writes for a missing cell
    return _later(tmp, _csv(tmp, df))


def declared_placeholder_label_in_another_case(tmp: Path, csv: Path) -> Action:
    """Regression: with "None" declared, a label written "none" was reported as an empty label (placeholders
    matched in any case, declared labels exactly); it is a label that is not declared."""
    df = _rows(csv)
    df.loc[4, "sentiment"] = "none"
    return _later(tmp, _csv(tmp, df), data=dict(labels={**LABELS, "None": "no opinion"}))


def labels_not_declared(tmp: Path, csv: Path) -> Action:
    return _later(tmp, csv, data=dict(labels=None))


# ---------------------------------------------------------------- cases: config
def epsilon_zero(tmp: Path, csv: Path) -> Action:
    return _later(tmp, csv, privacy=dict(epsilon=0))


def epsilon_negative(tmp: Path, csv: Path) -> Action:
    return _later(tmp, csv, privacy=dict(epsilon=-1.0))


def epsilon_overflows(tmp: Path, csv: Path) -> Action:
    return _later(tmp, csv, privacy=dict(epsilon="1e400"))  # would be inf: privacy silently off


def epsilon_boolean(tmp: Path, csv: Path) -> Action:
    return _later(tmp, csv, privacy=dict(epsilon=True))  # would be 1.0


def epsilon_needs_no_noise(tmp: Path, csv: Path) -> Action:
    return _later(tmp, csv, privacy=dict(epsilon=1e9))  # found when the noise is calibrated


def delta_one(tmp: Path, csv: Path) -> Action:
    return _later(tmp, csv, privacy=dict(delta=1.0))


def n_below_classes(tmp: Path, csv: Path) -> Action:
    return _later(tmp, csv, n_synthetic=1)


def unknown_output_format(tmp: Path, csv: Path) -> Action:
    return _later(tmp, csv, output_format="xlsx")


def unknown_method(tmp: Path, csv: Path) -> Action:
    return _later(tmp, csv, method="gan")


def duplicate_generator_names(tmp: Path, csv: Path) -> Action:
    return _later(tmp, csv, generators=[dict(name="a", model="x"), dict(name="a", model="y")])


def aug_pe_two_generators(tmp: Path, csv: Path) -> Action:
    return _later(tmp, csv, method="aug-pe")


def _yaml(tmp: Path, text: str) -> Action:
    p = tmp / "cfg.yaml"
    p.write_text(text, encoding="utf-8")
    gens = {"a": FakeGenerator("a")}
    return lambda: dpsynth.synthesize(p, generators=gens, embedder=FakeEmbedder(), progress=False)


def yaml_not_mapping(tmp: Path, csv: Path) -> Action:
    return _yaml(tmp, "- method: wasp\n- epsilon: 2\n")


def yaml_invalid(tmp: Path, csv: Path) -> Action:
    return _yaml(tmp, "method: wasp\nprivacy: {epsilon: 2\n")


def yaml_unknown_field(tmp: Path, csv: Path) -> Action:
    return _yaml(tmp, "method: wasp\nprivacy:\n  epsilom: 2\n")


def yaml_key_twice(tmp: Path, csv: Path) -> Action:
    # plain YAML keeps the last value: this config would have run at epsilon 50
    return _yaml(tmp, "method: wasp\nprivacy:\n  epsilon: 1\n  delta: 1.0e-5\n  epsilon: 50\n")


def yaml_keys_equal_once_read(tmp: Path, csv: Path) -> Action:
    # YAML reads 0 and false as one key: the message shows both as written, not "'0' given twice"
    return _yaml(tmp, "method: wasp\ndata:\n  labels:\n    0: negative\n    false: positive\n")


def label_declared_twice(tmp: Path, csv: Path) -> Action:
    return _later(tmp, csv, data=dict(labels="0=negative,1=positive,0=bad"))


def labels_with_one_name(tmp: Path, csv: Path) -> Action:
    return _later(tmp, csv, data=dict(labels={"0": "negative", "1": "Negative"}))


def label_without_a_name(tmp: Path, csv: Path) -> Action:
    return _later(tmp, csv, data=dict(labels="0=negative,1="))


def label_named_null(tmp: Path, csv: Path) -> Action:
    return _later(tmp, csv, data=dict(labels={"0": "negative", "1": None}))


def text_column_is_the_label_column(tmp: Path, csv: Path) -> Action:
    return _later(tmp, csv, data=dict(text_column="sentiment", label_column="sentiment"))


def llamacpp_model_not_gguf(tmp: Path, csv: Path) -> Action:
    def attempt() -> None:
        from dpsynth.generators import check_generator

        check_generator(GeneratorConfig(name="g", backend="llamacpp", model=str(csv)))  # --check's test

    return attempt


def _records_in_memory(csv: Path, kind: str) -> Any:
    rows = _rows(csv)
    if kind == "list":
        return rows.to_dict("records")
    if kind == "dict":
        return rows.to_dict("list")
    datasets = pytest.importorskip("datasets")
    return datasets.DatasetDict({"train": datasets.Dataset.from_pandas(rows)})


def _in_memory(kind: str) -> Callable[[Path, Path], Action]:
    def setup(tmp: Path, csv: Path) -> Action:
        cfg = Config.model_validate(_raw(csv, tmp / "run"))
        records = _records_in_memory(csv, kind)  # the error used to print them: the private text
        gens = {"a": FakeGenerator("a"), "b": FakeGenerator("b")}
        return lambda: dpsynth.synthesize(
            cfg, private=records, generators=gens, embedder=FakeEmbedder(), progress=False
        )

    setup.__name__ = f"private_as_a_{kind}"
    return setup


def data_file_as_config(tmp: Path, csv: Path) -> Action:
    return lambda: dpsynth.synthesize(csv, progress=False)  # `dpsynth run private.csv`


def missing_config_file(tmp: Path, csv: Path) -> Action:
    return lambda: dpsynth.synthesize(tmp / "nothere.yaml", progress=False)


def config_as_a_mapping(tmp: Path, csv: Path) -> Action:
    """Regression: a dict of fields (as Config takes them) failed with an AttributeError on ``.method``."""
    (tmp / "afile").write_text("x", encoding="utf-8")
    return lambda: dpsynth.synthesize(_raw(csv, tmp / "afile"), progress=False)


def run_folder_as_config(tmp: Path, csv: Path) -> Action:
    """Regression: a run's folder passed as the config file was told to `dpsynth init` a file there."""
    run = tmp / "run"
    run.mkdir()
    (run / "config.yaml").write_text(dump_config_yaml(Config(out=str(run))), encoding="utf-8")
    return lambda: dpsynth.synthesize(run, progress=False)


# ---------------------------------------------------------------- cases: run directory
def resume_without_run(tmp: Path, csv: Path) -> Action:
    return _later(tmp, csv, resume=True)


def run_dir_taken(tmp: Path, csv: Path) -> Action:
    run = tmp / "run"
    run.mkdir()
    (run / "config.yaml").write_text(dump_config_yaml(Config(out=str(run))), encoding="utf-8")
    (run / "samples.journal.jsonl").write_text('{"text": "earlier work"}\n', encoding="utf-8")
    return _later(tmp, csv)


def finished_run_taken(tmp: Path, csv: Path) -> Action:
    """A new run in a finished run's folder: --resume would do nothing, `dpsynth sample` adds samples."""
    _synth(tmp, csv)
    return _later(tmp, csv)


def out_holds_the_private_file_as_output(tmp: Path, csv: Path) -> Action:
    """Regression: `--private d/synthetic.csv --out d --output-format csv` wrote the synthetic records over
    the private file (and any user's synthetic.jsonl in --out was replaced the same way)."""
    run = tmp / "run"
    run.mkdir()
    mine = run / "synthetic.csv"
    mine.write_bytes(csv.read_bytes())
    return _later(tmp, mine, output_format="csv")


def private_inside_out(tmp: Path, csv: Path) -> Action:
    """Regression: the private file could live inside the run directory, which is meant to be shared."""
    (tmp / "run" / "data").mkdir(parents=True)
    inside = tmp / "run" / "data" / "records.csv"
    inside.write_bytes(csv.read_bytes())
    return _later(tmp, inside)


def private_argument_inside_out(tmp: Path, csv: Path) -> Action:
    """Regression: ``synthesize(private=PATH)`` skipped that refusal (only data.private was checked)."""
    (tmp / "run" / "data").mkdir(parents=True)
    inside = tmp / "run" / "data" / "records.csv"
    inside.write_bytes(csv.read_bytes())
    cfg = Config.model_validate(_raw(csv, tmp / "run"))
    gens = {"a": FakeGenerator("a"), "b": FakeGenerator("b")}
    return functools.partial(
        dpsynth.synthesize, cfg, private=inside, generators=gens, embedder=FakeEmbedder(), progress=False
    )


def another_runs_files(tmp: Path, csv: Path) -> Action:
    """Regression: a folder holding an earlier run's files but not its config.yaml (deleted, or lost) was
    taken as new: the run adopted the earlier run's journal, votes, PEARL sketch and ledger as its own and
    published them under the new config's data.private."""
    run = tmp / "run"
    (run / "votes").mkdir(parents=True)
    (run / "votes" / "round_0.npz").write_bytes(b"earlier votes")
    (run / "ledger.json").write_text("{}", encoding="utf-8")
    (run / "sketch.npz").write_bytes(b"earlier sketch")
    (run / "run.log").write_text("an earlier log\n", encoding="utf-8")  # a log alone would not matter
    return _later(tmp, csv)


def lengths_no_sample_meets(tmp: Path, csv: Path) -> Action:
    """min_chars at or above max_chars: every sample would be dropped after the first vote spent budget."""
    return _later(tmp, csv, wasp=dict(rounds=1, q=2, min_chars=500, max_chars=400))


def min_chars_beyond_the_token_limit(tmp: Path, csv: Path) -> Action:
    return _later(tmp, csv, wasp=dict(rounds=1, q=2, min_chars=1500, max_new_tokens=64))


def out_is_a_file(tmp: Path, csv: Path) -> Action:
    _bytes(tmp, "afile", b"not a folder")
    return _later(tmp, csv, out=tmp / "afile")


def out_below_a_file(tmp: Path, csv: Path) -> Action:
    _bytes(tmp, "afile", b"not a folder")
    return _later(tmp, csv, out=tmp / "afile" / "run")


def out_in_proc(tmp: Path, csv: Path) -> Action:
    if not Path("/proc/self").is_dir():
        pytest.skip("no /proc on this system")
    return _later(tmp, csv, out="/proc/dpsynth-test/run")


# ---------------------------------------------------------------- cases: generators
def all_requests_fail(tmp: Path, csv: Path) -> Action:
    gens = {"a": FakeGenerator("a", fail=True), "b": FakeGenerator("b", fail=True)}
    return _later(tmp, csv, gens=gens)


def llamacpp_missing_model(tmp: Path, csv: Path) -> Action:
    try:
        from dpsynth.generators import build_generator  # type: ignore[attr-defined]
    except ImportError:
        pytest.skip("dpsynth.generators.build_generator does not exist yet (no generator backends)")

    def attempt() -> None:
        gen = build_generator(GeneratorConfig(name="g", backend="llamacpp", model=str(tmp / "nope.gguf")))
        gen.close()

    return attempt


@dataclass(frozen=True)
class Case:
    setup: Callable[[Path, Path], Action]  # writes the inputs, returns the attempt
    error: type[DpsynthError]
    names: tuple[str, ...]  # the message must contain each: field, file, flag, fix
    validation: bool = True  # caught before anything is written


CASES = [
    # files
    Case(empty_file, DataError, ("zero.csv", "empty", "a header row")),
    Case(empty_jsonl, DataError, ("zero.jsonl", "empty", "it needs at least one record")),  # no header in JSONL
    Case(empty_json_list, DataError, ("none.json", "holds no records")),
    Case(header_only, DataError, ("header.csv", "no records")),
    Case(folder_not_dataset, DataError, ("somefolder", "Hugging Face dataset")),
    Case(garbage_parquet, DataError, ("garbage.parquet", "Parquet")),
    Case(missing_file, DataError, ("absent.csv", "--private")),
    Case(unsupported_suffix, DataError, ("records.xlsx", ".csv")),
    Case(latin1_csv, DataError, ("latin.csv", "byte", "line 5", "--encoding")),
    Case(latin1_jsonl, DataError, ("latin.jsonl", "byte", "line 3", "--encoding")),
    Case(broken_jsonl, DataError, ("broken.jsonl", "line 2", "JSON")),
    Case(extra_field_after_a_long_value, DataError, ("long.csv", "line 4 has 3 fields", "names 2 columns")),
    Case(quote_left_open, DataError, ("open.csv", "record on lines 3-4 has 3 fields", "quote opened on line 3")),
    Case(extra_field_after_a_form_feed, DataError, ("ff.csv", "line 2 has 4 fields", "names 2 columns")),
    Case(utf16_csv, DataError, ("utf16.csv", "byte 0", "utf-16", "--encoding")),
    Case(utf16_csv_read_as_latin1, DataError, ("utf16.csv", "NUL", "utf-16", "--encoding")),
    Case(empty_private_path, ConfigError, ("data.private", "must not be empty")),
    Case(unknown_encoding, DataError, ("data.encoding", "utf-9", "--encoding")),
    Case(encoding_not_for_text, DataError, ("data.encoding", "'rot13' is not a text encoding", "utf-8")),
    Case(encoding_that_names_no_byte, DataError, ("private.csv", "cannot be decoded as punycode", "--encoding")),
    Case(jsonl_number_too_long, DataError, ("long.jsonl", "line 5", "number too long", "4,300 digits", "string")),
    Case(jsonl_nested_too_deep, DataError, ("deep.jsonl", "line 5", "nested too deeply")),
    Case(json_number_too_long, DataError, ("long.json", "number too long", "as a string")),
    Case(duplicate_csv_column, DataError, ("dups.csv", "column 1", "more than once", "line 1", "column 2")),
    Case(headerless_csv, DataError, ("noheader.csv", "'review'", "looks like a record", "a header row")),
    Case(headerless_csv_repeated_cell, DataError, ("dupcell.csv", "column 2", "more than once", "line 1")),
    Case(duplicate_parquet_column, DataError, ("dups.parquet", "column 'review' appears more than once")),
    Case(duplicate_jsonl_key, DataError, ("dupkeys.jsonl", "'review'", "twice", "line 3")),
    Case(duplicate_unread_jsonl_key, DataError, ("dupother.jsonl", "has a key twice", "line 1")),
    Case(jsonl_key_of_one_record, DataError, ("no column 'body'", "review, sentiment (and 1 key(s)", "not named")),
    # records
    Case(
        bad_text_column,
        DataError,
        ("private.csv", "'reveiw'", "data.text_column", "--text-column", "review, sentiment"),
    ),
    Case(
        bad_label_column,
        DataError,
        ("private.csv", "'label'", "data.label_column", "--label-column", "review, sentiment"),
    ),
    Case(semicolon_csv, DataError, ("semi.csv", "'review'", "review;sentiment", "';'-separated", "commas")),
    Case(semicolon_dataframe, DataError, ("'review'", "';'-separated: read the file with sep=';'")),
    Case(dataframe_columns_equal_as_text, DataError, ("dataset", "column '0' appears more than once")),
    Case(spaced_header, DataError, ("spaced.csv", "'sentiment'", "is ' sentiment', with spaces", "header")),
    Case(spaced_setting, DataError, ("' sentiment'", "is 'sentiment': remove the spaces", "data.label_column")),
    Case(comma_tsv, DataError, ("records.tsv", "'review'", "','-separated", "name the file .csv")),
    Case(empty_texts, DataError, ("edited.csv", "'review'", "2 record(s)", "rows 5, 9")),
    Case(empty_text_after_blank_lines, DataError, ("gaps.csv", "'review'", "1 record(s)", "rows 7")),
    Case(empty_text_after_blank_jsonl_lines, DataError, ("gaps.jsonl", "'review'", "1 record(s)", "lines 5")),
    Case(null_texts_jsonl, DataError, ("nulls.jsonl", "'review'", "lines 6")),
    Case(nan_placeholder_texts, DataError, ("edited.csv", "'review'", "2 record(s)", "rows 4, 8")),
    Case(undeclared_label, DataError, ("edited.csv", "'sentiment'", "data.labels", "rows 6")),
    Case(empty_label, DataError, ("edited.csv", "2 record(s) have an empty 'sentiment'", "rows 4, 8")),
    Case(
        declared_placeholder_label_in_another_case,
        DataError,
        ("edited.csv", "1 record(s) have a 'sentiment' not in data.labels ['0', '1', 'None']", "rows 6"),
    ),
    Case(labels_not_declared, ConfigError, ("data.labels", "--labels")),
    # config
    Case(epsilon_zero, ConfigError, ("privacy.epsilon", "> 0")),
    Case(epsilon_negative, ConfigError, ("privacy.epsilon", "> 0")),
    Case(delta_one, ConfigError, ("privacy.delta", "(0, 1)")),
    Case(epsilon_overflows, ConfigError, ("privacy.epsilon", "too large", "inf")),
    Case(epsilon_boolean, ConfigError, ("privacy.epsilon", "not true/false")),
    Case(epsilon_needs_no_noise, ConfigError, ("epsilon", "no noise")),
    Case(n_below_classes, ConfigError, ("n_synthetic", "2 classes")),
    Case(unknown_output_format, ConfigError, ("output_format", "jsonl")),
    Case(unknown_method, ConfigError, ("method", "wasp")),
    Case(duplicate_generator_names, ConfigError, ("generators", "unique")),
    Case(aug_pe_two_generators, ConfigError, ("generators", "aug-pe", "one generator")),
    Case(yaml_not_mapping, ConfigError, ("cfg.yaml", "mapping")),
    Case(yaml_invalid, ConfigError, ("cfg.yaml", "YAML", "line 3")),
    Case(yaml_unknown_field, ConfigError, ("privacy.epsilom", "unknown field", "'epsilon'")),
    Case(yaml_key_twice, ConfigError, ("cfg.yaml", "'epsilon' is given twice", "line 5", "line 3")),
    Case(yaml_keys_equal_once_read, ConfigError, ("cfg.yaml", "'0' (line 4) and 'false' are the same key", "line 5")),
    Case(lengths_no_sample_meets, ConfigError, ("wasp", "min_chars (500)", "max_chars (400)")),
    Case(min_chars_beyond_the_token_limit, ConfigError, ("min_chars (1500)", "max_new_tokens (64)")),
    Case(label_declared_twice, ConfigError, ("data.labels", "'0' is declared twice")),
    Case(labels_with_one_name, ConfigError, ("data.labels", "same name 'negative'")),
    Case(label_without_a_name, ConfigError, ("data.labels", "label '1' has no name", "1=<name>")),
    Case(label_named_null, ConfigError, ("data.labels", "label '1' has no name")),
    Case(text_column_is_the_label_column, ConfigError, ("text_column", "label_column", "both 'sentiment'")),
    Case(_in_memory("list"), DataError, ("private: a list", "DataFrame")),
    Case(_in_memory("dict"), DataError, ("private: a dict", "DataFrame")),
    Case(_in_memory("datasetdict"), DataError, ("private: a DatasetDict", "dataset_dict['train']")),
    Case(data_file_as_config, ConfigError, ("private.csv", "looks like a data file", "--private")),
    Case(missing_config_file, ConfigError, ("nothere.yaml", "dpsynth init")),
    Case(config_as_a_mapping, ConfigError, ("out:", "afile", "is a file")),
    Case(run_folder_as_config, ConfigError, ("run", "the folder of a run", "--resume --out", "Config(out=")),
    # run directory
    Case(resume_without_run, ResumeError, ("run", "no run to resume", "--resume")),
    Case(run_dir_taken, ResumeError, ("run", "already holds a run", "--resume", "--out")),
    Case(finished_run_taken, ResumeError, ("run", "already holds a finished run", "dpsynth sample --run", "--out")),
    Case(out_holds_the_private_file_as_output, ResumeError, ("run", "holds synthetic.csv", "another --out")),
    Case(private_inside_out, ConfigError, ("data.private", "records.csv", "inside the run directory", "--out")),
    Case(private_argument_inside_out, ConfigError, ("records.csv", "inside the run directory", "--out")),
    Case(another_runs_files, ResumeError, ("run", "ledger.json, votes, sketch.npz", "config.yaml", "another --out")),
    Case(out_is_a_file, ConfigError, ("out:", "afile", "is a file", "--out")),
    Case(out_below_a_file, ConfigError, ("out:", "afile", "which is a file", "--out")),
    Case(out_in_proc, ConfigError, ("out:", "/proc", "--out")),
    # generators
    Case(all_requests_fail, GeneratorError, ("generators[", "failed"), validation=False),
    Case(llamacpp_missing_model, GeneratorError, ("nope.gguf",)),
    Case(llamacpp_model_not_gguf, GeneratorError, ("generators[g].model", "private.csv", "not a GGUF model file")),
]


@pytest.mark.parametrize("case", CASES, ids=[c.setup.__name__ for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, private_csv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # a default run directory (runs/...) would land here
    attempt = case.setup(tmp_path, private_csv)
    before = _snapshot(tmp_path)

    with pytest.raises(DpsynthError) as info:
        attempt()

    exc = info.value
    msg = str(exc)
    assert isinstance(exc, case.error), f"{type(exc).__name__}: {msg}"
    assert msg and "\n" not in msg and "\r" not in msg, f"not one line: {msg!r}"
    for name in case.names:
        assert name in msg, f"{name!r} missing from: {msg}"
    assert SENTINEL not in msg.upper(), f"private text in: {msg}"
    assert "Traceback" not in msg and "errors.pydantic.dev" not in msg
    if case.validation:
        after = _snapshot(tmp_path)
        assert sorted(set(after) - set(before)) == [], "validation failure left files behind"
        assert after == before, "validation failure changed or removed files"


def test_config_errors_are_one_line_in_the_python_api() -> None:
    """Building a Config directly gives the same one-line ConfigError as a YAML file or a flag."""
    with pytest.raises(ConfigError) as info:
        Config(privacy={"epsilon": 0}, generators=[{"name": "a", "modle": "x"}])
    msg = str(info.value)
    assert "\n" not in msg
    assert "privacy.epsilon" in msg and "generators.0.model" in msg and "'model'" in msg
    assert isinstance(info.value, ValueError)  # as pydantic's ValidationError is

    cfg = Config()
    with pytest.raises(ConfigError, match="delta"):
        cfg.privacy.delta = 2.0
    with pytest.raises(ConfigError, match="n_synthetic"):
        load_config(None, {"n_synthetic": "many"})


def test_good_input_still_runs(tmp_path: Path, private_csv: Path) -> None:
    """The baseline every case above breaks in one way: it runs and writes its run directory."""
    res = _synth(tmp_path, private_csv)
    assert len(res) == 20 and (tmp_path / "run" / "synthetic.jsonl").exists()


def test_suggested_fixes_work(tmp_path: Path, private_csv: Path) -> None:
    """--encoding latin-1 reads the latin-1 file; a spreadsheet's UTF-8 BOM does not hide a column."""
    latin = _latin1_csv(tmp_path, private_csv)
    assert len(_synth(tmp_path / "a", latin, data=dict(encoding="latin-1"))) == 20
    bom = _bytes(tmp_path, "bom.csv", b"\xef\xbb\xbf" + private_csv.read_bytes())
    assert len(_synth(tmp_path / "b", bom)) == 20


# ---------------------------------------------------------------- checks on the private data do not stop a run
def _one_record_class(tmp: Path, csv: Path) -> Path:
    df = _rows(csv)
    df["sentiment"] = "0"
    df.loc[9, "sentiment"] = "1"
    return _csv(tmp, df)


def _numeric_texts(tmp: Path, csv: Path) -> Path:
    df = _rows(csv)
    df.insert(0, "id", [str(1000 + i) for i in range(len(df))])  # to be named as the text column
    return _csv(tmp, df)


def _empty_class(tmp: Path, csv: Path) -> Path:
    df = _rows(csv)
    df["sentiment"] = "0"
    return _csv(tmp, df)


@pytest.mark.parametrize(
    ("setup", "extra", "note"),
    [
        (_one_record_class, {}, "fewer than 2 private records"),
        (_empty_class, {}, "fewer than 2 private records"),
        (lambda tmp, csv: csv, {"privacy": dict(delta=0.05)}, "not below 1/M"),  # 40 records: 1/M = 0.025
        (_numeric_texts, {"data": dict(text_column="id")}, "every 'id' is a number, not text"),
    ],
    ids=["one-record-class", "empty-class", "delta-above-1/M", "numeric-text-column"],
)
def test_checks_on_private_data_are_console_notes_not_stops(
    setup: Callable[[Path, Path], Path],
    extra: dict[str, Any],
    note: str,
    tmp_path: Path,
    private_csv: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Regression: refusing these made the run's existence (and so its output) depend on one record.

    The run goes on; the note reaches the data owner's console and nothing else; privacy.json states
    the per-record domain checks its guarantee is conditional on."""
    private = setup(tmp_path, private_csv)
    res = _synth(tmp_path, private, **extra)
    assert note in capsys.readouterr().err
    assert note not in (res.run_dir / "run.log").read_text()
    checks = res.privacy["domain"]["checks"]
    assert any("non-empty text" in c for c in checks) and any("data.labels" in c for c in checks)
    assert any("at least one record" in c for c in checks)
    assert not any("fewer than 2" in c or "1/M" in c or "number" in c for c in checks)
    assert res.privacy["complete"] and res.privacy["epsilon"] <= 4.0


# ---------------------------------------------------------------- backends are never left running
class _Tracked(FakeGenerator):
    """A generator built from the config (so synthesize owns it) that records its close()."""

    def __init__(self, name: str, closed: list[str], *, fail_close: bool = False, fail: bool = False) -> None:
        super().__init__(name, fail=fail)
        self.closed = closed
        self.fail_close = fail_close

    def close(self) -> None:
        self.closed.append(self.name)
        if self.fail_close:
            raise RuntimeError("close failed")


def _build_tracked(monkeypatch: pytest.MonkeyPatch, make: Callable[[str], FakeGenerator]) -> list[str]:
    built: list[str] = []

    def build(gc: GeneratorConfig) -> FakeGenerator:
        built.append(gc.name)
        return make(gc.name)

    monkeypatch.setattr("dpsynth.generators.build_generator", build)
    return built


def test_bad_out_is_refused_before_any_model_is_loaded(
    tmp_path: Path, private_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[str] = []
    built = _build_tracked(monkeypatch, lambda name: _Tracked(name, closed))
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    for out in (tmp_path / "afile", tmp_path / "afile" / "run"):
        cfg = Config.model_validate(_raw(private_csv, out))
        with pytest.raises(ConfigError, match="^out: .*afile"):
            dpsynth.synthesize(cfg, embedder=FakeEmbedder(), progress=False)
    assert built == []  # the check comes before the (slow) models are loaded


def test_a_missing_model_file_is_refused_before_the_embedding_model_loads(
    tmp_path: Path, private_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mistyped GGUF path was found only when the generators were built, after the embedding model had
    loaded (about 9 s here, minutes on a cold disk); it is checked with the other settings now."""
    from dpsynth.embeddings import SentenceTransformerEmbedder

    def no_load(self: object) -> None:
        raise AssertionError("the embedding model was loaded before the model path was checked")

    monkeypatch.setattr(SentenceTransformerEmbedder, "load", no_load)
    gens = [dict(name="a", model=str(tmp_path / "nope.gguf")), dict(name="b", model=str(tmp_path / "nope.gguf"))]
    cfg = Config.model_validate(_raw(private_csv, tmp_path / "run", generators=gens))
    with pytest.raises(GeneratorError, match=r"^generators\[a\]\.model: .*nope.gguf does not exist"):
        dpsynth.synthesize(cfg, progress=False)
    assert not (tmp_path / "run").exists()
    # a typo of an embedded model's name: the same, with the name it is near
    gens[0]["model"] = "qwen2.5-coder-0.5b-instrct"
    cfg = Config.model_validate(_raw(private_csv, tmp_path / "run", generators=gens))
    with pytest.raises(GeneratorError, match=r"did you mean qwen2.5-coder-0.5b-instruct\?"):
        dpsynth.synthesize(cfg, progress=False)


def test_every_failure_path_closes_the_generators(
    tmp_path: Path, private_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Generators synthesize built are closed whatever fails after them: a second generator that does not
    load, a failure during the run, even a generator whose close() itself fails."""
    closed: list[str] = []

    def b_does_not_load(name: str) -> FakeGenerator:
        if name == "b":
            raise GeneratorError("generators[b].model: does not load")
        return _Tracked(name, closed)

    _build_tracked(monkeypatch, b_does_not_load)
    cfg = Config.model_validate(_raw(private_csv, tmp_path / "one"))
    with pytest.raises(GeneratorError):
        dpsynth.synthesize(cfg, embedder=FakeEmbedder(), progress=False)
    assert closed == ["a"]

    closed.clear()
    _build_tracked(monkeypatch, lambda name: _Tracked(name, closed, fail_close=name == "a", fail=name == "b"))
    cfg = Config.model_validate(_raw(private_csv, tmp_path / "two"))
    with pytest.raises(GeneratorError, match=r"generators\[b\]"):  # the run's error, not close()'s
        dpsynth.synthesize(cfg, embedder=FakeEmbedder(), progress=False)
    assert sorted(closed) == ["a", "b"]


def test_missing_value_placeholders_are_read_as_missing(tmp_path: Path) -> None:
    from dpsynth.data import read_table

    p = tmp_path / "t.csv"
    p.write_text(
        "text,label\nNaN,0\n null ,1\nN/A,0\n#N/A,1\nNone,0\n<NA>,1\nNancy,NA\nnone of it,null\nnan bread,0\n",
        encoding="utf-8",
    )
    df = read_table(p)
    assert df["text"].tolist() == ["", "", "", "", "", "", "Nancy", "none of it", "nan bread"]
    assert df["label"].tolist() == ["0", "1", "0", "1", "0", "1", "", "", "0"]
    # the same rule for JSONL strings and for a DataFrame passed in
    j = tmp_path / "t.jsonl"
    j.write_text('{"text": "NULL", "label": null}\n{"text": "ok", "label": "nan"}\n', encoding="utf-8")
    assert read_table(j).to_dict("records") == [{"text": "", "label": ""}, {"text": "ok", "label": ""}]
    assert read_table(pd.DataFrame({"text": ["NA", "x"]}))["text"].tolist() == ["", "x"]
    with pytest.raises(DataError, match="column 'text' appears more than once"):
        read_table(pd.DataFrame([["a", "b"]], columns=["text", "text"]))


def test_records_in_memory_with_numbered_columns_are_read(tmp_path: Path) -> None:
    """Regression: ``pd.DataFrame([(text, label), ...])`` names its columns 0 and 1; with ``--text-column 0``
    the run said "no column '0' ... the file has columns: 0, 1" (PEARL read the names as text, the text
    methods did not)."""
    from dpsynth.data import read_table
    from dpsynth.privacy.private_data import load_private

    rows = [("good film", "pos"), ("bad film", "neg"), ("fine film", "pos"), ("dull film", "neg")]
    frame = pd.DataFrame(rows)
    data = load_private(frame, "0", "1", {"pos": "p", "neg": "n"})
    assert data.encode(lambda texts, labels: list(zip(texts, labels, strict=True))) == rows
    assert list(frame.columns) == [0, 1]  # the caller's frame is left as it was
    assert list(read_table(frame).columns) == ["0", "1"]


def test_values_are_read_as_written_whatever_one_record_holds(tmp_path: Path) -> None:
    """Regression: a null in a JSON, Parquet or HF dataset column of integers made pandas read the whole column as
    floats ("1.0"), so one record decided how every value of a column reads (PEARL derives a column's type
    from them); and a JSON string holding U+2028 was split as if it ended the line."""
    from dpsynth.data import read_table

    j = tmp_path / "t.jsonl"
    j.write_text('{"k": 1, "t": "a\u2028b"}\n{"k": null, "t": "c"}\n{"k": 3, "t": "d\u2029e"}\n', encoding="utf-8")
    assert read_table(j).to_dict("list") == {"k": ["1", "", "3"], "t": ["a\u2028b", "c", "d\u2029e"]}
    for name, text in [("rows.json", '[{"k": 1}, {"k": null}]'), ("cols.json", '{"k": [1, null]}')]:
        (tmp_path / name).write_text(text, encoding="utf-8")
        assert read_table(tmp_path / name)["k"].tolist() == ["1", ""], name
    pq = tmp_path / "t.parquet"
    pd.DataFrame({"k": pd.array([1, None, 3], dtype="Int64"), "f": [1.5, None, 2.0]}).to_parquet(pq)
    # a float column's 2.0 reads "2", as an integer column's 2: a column's dtype comes from all its values
    assert read_table(pq).to_dict("list") == {"k": ["1", "", "3"], "f": ["1.5", "", "2"]}
    import datasets

    ds = datasets.Dataset.from_dict({"k": [1, None, 3], "t": ["a", "b", None]})
    assert read_table(ds).to_dict("list") == {"k": ["1", "", "3"], "t": ["a", "b", ""]}
    assert read_table(ds.select([2, 1]))["k"].tolist() == ["3", ""]  # the selection, not the whole table
    ds.save_to_disk(str(tmp_path / "hf"))
    assert read_table(tmp_path / "hf")["k"].tolist() == ["1", "", "3"]


def test_a_label_declared_like_a_placeholder_is_a_label(tmp_path: Path) -> None:
    """ "None" / "NA" as a class ("no issue", "not applicable") is common in support and triage data; they
    used to be read as missing, so every record of that class was refused as undeclared.  A declared label
    is now data in the label column, and only there; other placeholders stay missing."""
    from dpsynth.data import read_table
    from dpsynth.evaluate.inputs import load_test
    from dpsynth.privacy.private_data import load_private

    p = tmp_path / "tickets.csv"
    rows = ["refund please,billing", "card charged twice,billing", "thanks all good,None", "just saying hi, None "]
    p.write_text("text,label\n" + "\n".join(rows) + "\nNone,billing\n", encoding="utf-8")
    labels = {"billing": "billing", "None": "no issue"}
    with pytest.raises(DataError, match="1 record"):  # the text "None" is still a missing text
        load_private(p, "text", "label", labels)
    p.write_text("text,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    data = load_private(p, "text", "label", labels)
    assert data.encode(lambda texts, labs: sorted(labs)) == ["None", "None", "billing", "billing"]
    assert read_table(p)["label"].tolist() == ["billing", "billing", "", ""]  # undeclared: placeholders
    t = tmp_path / "test.jsonl"
    t.write_text('{"text": "a", "label": "None"}\n{"text": "b", "label": "billing"}\n', encoding="utf-8")
    assert load_test(t, labels={"None", "billing"}).labels == ["None", "billing"]
    with pytest.raises(DataError, match="empty 'label'"):  # without the synthetic set's labels: missing
        load_test(t)


def test_values_that_are_not_text_are_refused_in_the_columns_read(tmp_path: Path) -> None:
    """Regression: a list or mapping in a JSON/Parquet/HF text column was read as its Python repr
    ("{'a': 'x'}") and embedded and voted on as a text, and bytes that are not UTF-8 (a Parquet binary
    column) ended the run in a traceback.  Now a one-line error naming the column and record, never the
    value; a column the run does not read may hold them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dpsynth.data import read_table

    j = tmp_path / "t.jsonl"
    j.write_text(
        '{"text": "fine", "label": 0, "tags": [1, 2]}\n\n{"text": {"a": "SENTINEL"}, "label": 1, "tags": []}\n',
        encoding="utf-8",
    )
    with pytest.raises(DataError, match=r"column 'text' holds a list or a mapping, not text \(record 2\)") as e:
        read_table(j, columns={"text", "label"})
    assert SENTINEL not in str(e.value)
    ok = tmp_path / "ok.jsonl"
    ok.write_text('{"text": "a", "label": 0, "tags": [1]}\n{"text": "b", "label": 1, "tags": []}\n', encoding="utf-8")
    assert read_table(ok, columns={"text", "label"})["text"].tolist() == ["a", "b"]  # the unread list column is kept
    with pytest.raises(DataError, match="column 'tags'"):
        read_table(ok)  # PEARL reads every column
    p = tmp_path / "b.parquet"
    pq.write_table(pa.table({"text": pa.array([b"fine", b"SENTINEL \xff", b"ok"]), "label": ["0", "1", "0"]}), p)
    with pytest.raises(DataError, match=r"column 'text' holds bytes that are not UTF-8 text \(record 2\)") as e:
        read_table(p, columns={"text", "label"})
    assert SENTINEL not in str(e.value)
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"text": pa.array([b"caf\xc3\xa9", b"b"]), "label": ["0", "1"]}), good)
    assert read_table(good)["text"].tolist() == ["caf\u00e9", "b"]  # UTF-8 bytes are text, not "b'...'"
    frame = pd.DataFrame({"review": [["SENTINEL"], "b"], "sentiment": ["0", "1"], "tags": [[1], []]})
    cfg = Config.model_validate(_raw("in memory", tmp_path / "run"))
    with pytest.raises(DataError, match=r"dataset: column 'review' holds a list or a mapping") as e:
        dpsynth.synthesize(cfg, private=frame, embedder=FakeEmbedder(), progress=False)
    assert SENTINEL not in str(e.value) and not (tmp_path / "run").exists()


def test_a_lone_surrogate_is_refused_in_a_column_read_and_replaced_elsewhere(tmp_path: Path) -> None:
    """Regression: a JSON "\\ud800" escape (a lone surrogate, which no UTF-8 can hold) ended read_table in a
    UnicodeEncodeError traceback from pandas' string storage (a run's private file, the report's synthetic
    set).  Now a column read refuses it by column and record, never the value; another column gets U+FFFD."""
    from dpsynth.data import read_table

    j = tmp_path / "s.jsonl"
    j.write_text(
        '{"text": "fine", "label": 0, "note": "x"}\n{"text": "SENTINEL \\ud800", "label": 1, "note": "y \\udcff"}\n',
        encoding="utf-8",
    )
    with pytest.raises(DataError, match=r"column 'text' holds text that is not valid Unicode .*\(record 2\)") as e:
        read_table(j, columns={"text", "label"})
    assert SENTINEL not in str(e.value)
    kept = read_table(j, columns={"label"})
    assert kept["text"].tolist() == ["fine", "SENTINEL \ufffd"] and kept["note"].tolist() == ["x", "y \ufffd"]
    assert read_table(j, columns=())["text"].tolist()[1] == "SENTINEL \ufffd"


def test_rows_are_the_lines_where_records_start(tmp_path: Path) -> None:
    """Rows and lines in messages count what the file holds: blank and whitespace-only lines, quoted
    texts over several lines, CRLF endings, a BOM; another encoding is read as the run reads the file."""
    from dpsynth.data import read_table, where_records

    p = tmp_path / "gaps.csv"
    p.write_bytes('\ufefftext,label\r\nok,0\r\n   \r\n"two\r\nlines",1\r\nBAD,1\r\n'.encode())
    assert len(read_table(p)) == 3  # the whitespace-only line is no record, for pandas either
    assert where_records(p, [0, 1, 2]) == "rows 2, 4, 6"
    old_mac = tmp_path / "cr.csv"  # CR alone ends lines (old Mac files): pandas reads it, rows count alike
    old_mac.write_bytes(b'text,label\rok,0\r\r"two\rlines",1\rBAD,1\r')
    assert len(read_table(old_mac)) == 3
    assert where_records(old_mac, [0, 1, 2]) == "rows 2, 4, 6"
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text,label\n\ncaf\u00e9,0\n".encode("latin-1"))
    assert where_records(latin, [0], "latin-1") == "rows 3"
    # no file to count lines in: the records' numbers, 1-based like "column 'text' holds ... (record 2)"
    assert where_records(tmp_path / "gone.csv", [0, 1]) == "records 1, 2"
    assert where_records("embedded:imdb", [4]) == "records 5"
    assert where_records(pd.DataFrame({"text": ["a"]}), [0]) == "records 1"
    assert where_records(p, [0, 7]) == "records 1, 8"  # the file changed since it was read: numbers, not rows


def test_check_only_makes_the_checks_and_loads_writes_nothing(
    tmp_path: Path, private_csv: Path, tiny_lm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`dpsynth run --check`: the checks a run makes before its models load, for each kind of method, then
    stop with the resolved config: no run directory, no generator built, no embedding or language model."""
    from dpsynth.embeddings import SentenceTransformerEmbedder
    from dpsynth.methods import dp_finetune

    def loaded(*a: object, **k: object) -> None:
        raise AssertionError("a model was loaded by a check")

    monkeypatch.setattr("dpsynth.generators.build_generator", loaded)
    monkeypatch.setattr(SentenceTransformerEmbedder, "load", loaded)
    monkeypatch.setattr(dp_finetune, "load_causal_lm", loaded)
    gens = [dict(name="a", model="smollm2-135m-instruct"), dict(name="b", model="gemma3-270m")]
    raw = _raw(private_csv, tmp_path / "run", generators=gens)
    checked = dpsynth.synthesize(Config.model_validate(raw), check_only=True)
    assert isinstance(checked, dpsynth.Checked) and checked.reads_private and not checked.already_complete
    assert checked.config.data.labels == LABELS and checked.config.method == "wasp"
    finetune = dict(raw, method="dp-finetune", generators=[], wasp={}, finetune=dict(model=str(tiny_lm)))
    assert dpsynth.synthesize(Config.model_validate(finetune), check_only=True).config.method == "dp-finetune"
    # the fine-tuned model's context and the records' lengths, from its tokenizer and config alone
    too_long = dict(finetune, finetune=dict(model=str(tiny_lm), max_length=240, max_new_tokens=32))
    with pytest.raises(ConfigError, match="exceeds the model's context of 256 tokens"):
        dpsynth.synthesize(Config.model_validate(too_long), check_only=True)
    no_room = dict(finetune, finetune=dict(model=str(tiny_lm), max_length=12))
    with pytest.raises(ConfigError, match="leave no room for text after the prompt"):
        dpsynth.synthesize(Config.model_validate(no_room), check_only=True)
    cut = dict(finetune, finetune=dict(model=str(tiny_lm), max_length=34, truncate=False))
    with pytest.raises(DataError, match=r"longer than finetune.max_length=34 .*\(records [1-9]"):
        dpsynth.synthesize(Config.model_validate(cut), check_only=True)
    zero_shot = dpsynth.synthesize(Config.model_validate(dict(raw, method="zero-shot")), check_only=True)
    assert not zero_shot.reads_private
    assert not (tmp_path / "run").exists()
    # what a run refuses, a check refuses: a wrong column (for each method that reads it), a model that is
    # not there (a generator's, the fine-tuned model's, the embedding model's), an openai entry without a URL
    for method in ("wasp", "dp-finetune"):
        bad = dict(finetune if method == "dp-finetune" else raw, data=dict(raw["data"], text_column="reveiw"))
        with pytest.raises(DataError, match="no column 'reveiw'"):
            dpsynth.synthesize(Config.model_validate(bad), check_only=True)
    typo = dict(finetune, finetune=dict(model="smollm2-135m-instruckt"))
    with pytest.raises(GeneratorError, match=r"^finetune.model: .*did you mean smollm2-135m-instruct\?"):
        dpsynth.synthesize(Config.model_validate(typo), check_only=True)
    with pytest.raises(ConfigError, match="^embedding_model: .*no-such-folder does not exist"):
        dpsynth.synthesize(Config.model_validate(dict(raw, embedding_model="./no-such-folder")), check_only=True)
    openai = dict(raw, generators=[dict(name="a", backend="openai", model="m"), gens[1]])
    with pytest.raises(GeneratorError, match=r"^generators\[a\]\.base_url: the openai backend needs"):
        dpsynth.synthesize(Config.model_validate(openai), check_only=True)
    missing = _raw(private_csv, tmp_path / "run", generators=[dict(name="a", model="x"), dict(name="b", model="y")])
    with pytest.raises(GeneratorError, match=r"generators\[a\]\.model: x does not exist"):
        dpsynth.synthesize(Config.model_validate(missing), check_only=True)
    assert not (tmp_path / "run").exists()


def test_the_file_type_message_names_every_accepted_suffix(tmp_path: Path) -> None:
    """A .txt file is read as CSV, so the refusal of another type must list it (it listed .csv, .tsv,
    .jsonl, .json and .parquet only); a gzipped table is told to decompress."""
    from dpsynth.data import read_table

    txt = tmp_path / "records.txt"
    txt.write_text("text,label\nhello,a\n")
    assert read_table(txt).to_dict("records") == [{"text": "hello", "label": "a"}]
    (tmp_path / "r.xlsx").write_bytes(b"PK")
    with pytest.raises(DataError, match=r"\.txt \(comma-separated\).*\.ndjson.*\.pq$"):
        read_table(tmp_path / "r.xlsx")
    (tmp_path / "r.csv.gz").write_bytes(b"\x1f\x8b")
    with pytest.raises(DataError, match=r"'\.csv\.gz'.*decompress it first"):
        read_table(tmp_path / "r.csv.gz")
