"""The private-data boundary: only ``dpsynth/privacy`` reads private records (docs/privacy.md, "Who reads
private records").

The check reads the source (``ast``), it runs nothing.  Outside ``dpsynth/privacy``, a module

1. never reads a private-data handle's record attributes (the underscore ``__slots__`` of ``PrivateData``
   and of PEARL's ``PrivateRecords``, e.g. ``_texts``);
2. imports from a handle's module only its public API (``HANDLE_API``): the type, the loaders that return
   a handle or hand records on unread, the domain checks, the console notes; never ``load_private``, an
   underscore name, or the module itself;
3. never calls a function that draws or loads private records (``RECORD_READERS``);
4. under ``dpsynth/methods``, never reads a file or table itself (``FILE_READERS``): a method's private
   input comes through ``dpsynth/privacy``.

``EXCEPTIONS`` names the few modules allowed to break a rule, each with its reason; an exception no
longer needed fails the test, so the list cannot go stale.  The checker itself is tested on small
sources that break each rule, so this test can fail.

The handle's own tests (its ``repr``, the embedding of one record) and a crash's traceback (no local
variables shown) run code.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import numpy as np
import pytest

from dpsynth.privacy.private_data import PrivateData, load_private

from .conftest import FakeEmbedder

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "dpsynth"
PRIVACY = "dpsynth.privacy"
# the handles, by module: the class that holds the records, and what other modules may import from there
HANDLES = {"dpsynth.privacy.private_data": "PrivateData", "dpsynth.privacy.private_tables": "PrivateRecords"}
HANDLE_API = {
    "dpsynth.privacy.private_data": frozenset(
        {"PrivateData", "PRIVATE_TEXT_DOMAIN", "load_run_private", "load_qa_pairs"}
        | {"notify_owner", "warn_if_delta_large", "is_private_source", "private_text_keys", "text_key"}
    ),
    "dpsynth.privacy.private_tables": frozenset(
        {"PrivateRecords", "load_private_table", "is_array_source", "DOMAIN_NOT_EMPTY", "DOMAIN_LABEL"}
        | {"DOMAIN_FINITE_ARRAY", "DOMAIN_SAME_KEYS"}
    ),
}
# functions (or methods, by name) that return private records as plain values
RECORD_READERS = frozenset({"load_private", "imdb_private", "medmcqa_private", "private", "private_index"})
# readers of files and tables: a method module that calls one reads its input itself
FILE_READERS = frozenset(
    {"read_table", "np.load", "numpy.load", "pd.read_csv", "pd.read_json", "pd.read_parquet", "load_from_disk"}
)

EXCEPTIONS: dict[str, str] = {
    "dpsynth.datasets": (
        "defines the embedded datasets, public corpora, and the draw (``EmbeddedDataset.private``) that "
        "privacy/private_data.py takes as a run's private set"
    ),
    "dpsynth.evaluate.references": (
        "draws the run's private set again only to leave it out of the real-data reference: evaluation on "
        "the data owner's side, never part of a release"
    ),
    "dpsynth.audit.membership": (
        "the membership audit rebuilds a run's draw from an embedded dataset (public records standing in for "
        "private ones; it refuses any other source) to attack the release; it writes only rates and counts"
    ),
    "dpsynth.audit.canaries": (
        "the canary audit is its own data owner: it draws a private set, plants canaries and trains on it "
        "in-process to measure leakage; nothing it reads is released"
    ),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def handle_attributes() -> frozenset[str]:
    """The handles' underscore ``__slots__``, read from the source: the attributes that hold the records."""
    out: set[str] = set()
    for module, cls in HANDLES.items():
        path = SRC / (module.replace(".", "/") + ".py")
        slots = [
            ast.literal_eval(stmt.value)
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.ClassDef) and node.name == cls
            for stmt in node.body
            if isinstance(stmt, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "__slots__" for t in stmt.targets)
        ]
        assert len(slots) == 1, f"{path}: {cls} has no __slots__"
        out |= {a for a in slots[0] if a.startswith("_")}
    return frozenset(out)


def _called(func: ast.expr) -> str:
    """The called name as written: ``f``, ``np.load``, or the last attribute (``ds.private`` -> ``private``)."""
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return f"{func.value.id}.{func.attr}" if isinstance(func.value, ast.Name) else func.attr
    return ""


def violations(source: str, module: str) -> list[str]:
    """Every place in ``source`` (the text of ``module``) that breaks a rule of the boundary."""
    if module == PRIVACY or module.startswith(PRIVACY + "."):
        return []
    raw = handle_attributes()
    out: list[str] = []
    for node in ast.walk(ast.parse(source)):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Attribute) and node.attr in raw:
            out.append(f"{module}:{line}: reads the handle's records (.{node.attr})")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in HANDLES:
                    out.append(f"{module}:{line}: imports {alias.name} whole; import the handle's API by name")
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if f"{node.module}.{alias.name}" in HANDLES:
                    out.append(f"{module}:{line}: imports {node.module}.{alias.name} whole; import the API by name")
                elif node.module in HANDLE_API and alias.name not in HANDLE_API[node.module]:
                    out.append(f"{module}:{line}: imports {alias.name} from {node.module}")
        elif isinstance(node, ast.Call):
            name = _called(node.func)
            if name.rpartition(".")[2] in RECORD_READERS:
                out.append(f"{module}:{line}: calls {name}(), which returns private records")
            elif (name in FILE_READERS or name.rpartition(".")[2] in FILE_READERS) and module.startswith(
                "dpsynth.methods."
            ):
                out.append(f"{module}:{line}: a method reads a file itself ({name}())")
    return out


def _package_violations() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        v = violations(path.read_text(encoding="utf-8"), module)
        if v:
            found[module] = v
    return found


def test_only_the_privacy_package_reads_private_records() -> None:
    found = _package_violations()
    unexpected = [line for module, lines in found.items() if module not in EXCEPTIONS for line in lines]
    assert not unexpected, "private records read outside dpsynth/privacy:\n" + "\n".join(unexpected)
    stale = sorted(set(EXCEPTIONS) - set(found))
    assert not stale, f"exceptions that no module needs any more (remove them): {stale}"
    assert all(len(reason) > 40 for reason in EXCEPTIONS.values())  # each exception says why


def test_the_handles_hold_their_records_in_slots() -> None:
    assert handle_attributes() == {"_texts", "_labels", "_table", "_array"}


# ---------------------------------------------------------------- the checker can fail
BREAKS = [
    ("def f(d):\n    return list(d._texts)\n", "reads the handle's records (._texts)"),
    ("def f(d):\n    return d._labels[0]\n", "reads the handle's records (._labels)"),
    ("from dpsynth.privacy.private_data import load_private\n", "imports load_private"),
    ("from dpsynth.privacy.private_data import PrivateData, _rows\n", "imports _rows"),
    ("def f(p):\n    return p._table.columns\n", "reads the handle's records (._table)"),
    ("from dpsynth.privacy.private_tables import _class_index\n", "imports _class_index"),
    ("from dpsynth.privacy import private_data\n", "imports dpsynth.privacy.private_data whole"),
    ("import dpsynth.privacy.private_data\n", "imports dpsynth.privacy.private_data whole"),
    ("from dpsynth.data import imdb_private\nrows = imdb_private(10, 0)\n", "calls imdb_private()"),
    ("def f(self):\n    return self.ds.private(100, 0)\n", "calls private()"),
    ("def f(ds):\n    return ds.private(100, 0)\n", "calls ds.private()"),
    ("from dpsynth.data import read_table\ndf = read_table('priv.csv')\n", "a method reads a file itself"),
    ("import numpy as np\nx = np.load('priv.npy')\n", "a method reads a file itself"),
]


@pytest.mark.parametrize(("source", "message"), BREAKS)
def test_the_checker_flags_a_module_that_reads_private_records(source: str, message: str) -> None:
    found = violations(textwrap.dedent(source), "dpsynth.methods.leaky")
    assert len(found) == 1 and message in found[0], found
    assert violations(textwrap.dedent(source), "dpsynth.privacy.leaky") == []  # privacy/ may


def test_the_checker_passes_a_method_that_uses_the_handle() -> None:
    source = """
        from dpsynth.privacy.private_data import PrivateData, load_run_private

        def vote_inputs(config, embedder):
            data: PrivateData = load_run_private(config)
            emb, labels = data.embed(embedder)
            n = len(data)
            enc = data.encode(lambda texts, values: [len(t) for t in texts])
            return emb, labels, n, enc, data.noisy_total(1.0)
    """
    assert violations(textwrap.dedent(source), "dpsynth.methods.good") == []


# ---------------------------------------------------------------- the handle at run time
SENTINEL = "SENTINEL-7f3a private review text"


def test_the_handle_never_prints_a_record() -> None:
    data = PrivateData([SENTINEL, "another private text"], ["pos", "SENTINEL-label"])
    shown = [
        repr(data),
        str(data),
        format(data),
        f"{data}",
        f"{data!r}",
        f"{data!s}",
        f"{data:>40}",
        str([data]),
        repr({"data": data}),
        "%s %r" % (data, data),  # noqa: UP031 - the old operator is one more way to print
    ]
    for text in shown:
        assert "SENTINEL" not in text and "private text" not in text, text
    assert repr(data) == "PrivateData(<2 records>)" and len(data) == 2
    assert not hasattr(data, "__dict__") and not hasattr(data, "texts") and not hasattr(data, "labels")


def test_a_loaded_handle_never_prints_a_record(tmp_path: Path) -> None:
    p = tmp_path / "private.csv"
    p.write_text(f"text,label\n{SENTINEL},pos\nsecond SENTINEL,neg\nthird,pos\nfourth,neg\n", encoding="utf-8")
    data = load_private(p, "text", "label", {"pos": "positive", "neg": "negative"})
    assert str(data) == repr(data) == "PrivateData(<4 records>)" and "SENTINEL" not in f"{data}"


@pytest.mark.slow
def test_a_records_embedding_does_not_depend_on_the_other_records() -> None:
    """Regression, with the real MiniLM: removing the longest record changed another record's embedding
    (batched encoding pads and sorts texts together; 1e-7 moves, enough to flip a near-tie in a vote)."""
    from dpsynth.datasets import imdb_private
    from dpsynth.embeddings import SentenceTransformerEmbedder

    texts = [t[:400] for t in imdb_private(70, 0)["text"]]  # short: fast, still one batch of padded texts
    longest = max(range(len(texts)), key=lambda i: len(texts[i]))
    embedder = SentenceTransformerEmbedder()
    full, _ = PrivateData(texts, ["x"] * len(texts)).embed(embedder)
    rest = [t for i, t in enumerate(texts) if i != longest]
    without, _ = PrivateData(rest, ["x"] * len(rest)).embed(embedder)
    assert np.array_equal(np.delete(full, longest, axis=0), without)


def test_the_handle_gives_only_what_a_mechanism_needs() -> None:
    data = PrivateData(["good film", "bad film", "great film"], ["pos", "neg", "pos"])
    embedder = FakeEmbedder()
    emb, labels = data.embed(embedder)
    assert emb.shape == (3, 64) and labels.tolist() == ["pos", "neg", "pos"]
    # one record per call: a batched encode pads and sorts texts together, so one record moved the others'
    # embeddings in their last bits (the vote's sensitivity argument needs each vote to be its record's own)
    assert embedder.calls == [["good film"], ["bad film"], ["great film"]]
    assert data.encode(lambda texts, values: [f"{v}:{len(t)}" for t, v in zip(texts, values, strict=True)]) == [
        "pos:9",
        "neg:8",
        "pos:10",
    ]
    # sigma 0 shows the counts the noise is added to (a real run never has sigma 0 and a count)
    assert data.noisy_label_counts(["neg", "pos", "other"], 0.0).tolist() == [1.0, 2.0, 0.0]
    assert data.noisy_total(0.0).tolist() == [3.0]
    noisy = data.noisy_label_counts(["neg", "pos"], 5.0)
    assert noisy.dtype == np.float64 and noisy.shape == (2,)


# Simulates typer 0.12, whose tracebacks showed every frame's local variables unless told otherwise; an
# unexpected error (a bug, a library's RuntimeError) after the records are read then printed them.
_CRASH = """
import sys
import typer

_init = typer.Typer.__init__


def _old_default(self, *args, pretty_exceptions_show_locals=True, **kwargs):
    _init(self, *args, pretty_exceptions_show_locals=pretty_exceptions_show_locals, **kwargs)


typer.Typer.__init__ = _old_default
import dpsynth.privacy.private_data as handle  # noqa: E402
from dpsynth import cli  # noqa: E402


def _bug(*args, **kwargs):
    raise RuntimeError("simulated bug")


handle.Counter = _bug  # called once the records are in the loader's local variables
cli.main(sys.argv[1:])
"""


def test_a_crash_traceback_shows_no_local_variables(tmp_path: Path) -> None:
    """Regression: typer's rich traceback printed the private records held in local variables."""
    import os
    import subprocess
    import sys

    csv = tmp_path / "private.csv"
    rows = [f"SENTINELQX{i} this film was {'great' if i % 2 else 'dull'}" for i in range(8)]
    csv.write_text("text,label\n" + "".join(f"{t},{'pos' if i % 2 else 'neg'}\n" for i, t in enumerate(rows)))
    script = tmp_path / "crash.py"
    script.write_text(_CRASH)
    args = ["run", "--private", str(csv), "--labels", "neg=negative,pos=positive", "--task", "movie review"]
    proc = subprocess.run(
        [sys.executable, str(script), *args, "--out", str(tmp_path / "run"), "--check"],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"},
        timeout=120,
    )
    assert proc.returncode != 0 and "simulated bug" in proc.stderr, proc.stderr  # it crashed where meant to
    assert "SENTINELQX" not in proc.stderr + proc.stdout, proc.stderr
