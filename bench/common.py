"""Helpers shared by the benchmarks: machine facts and JSON output."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from dpsynth.io import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent


def machine() -> dict[str, Any]:
    try:
        import numpy as np
        from threadpoolctl import threadpool_info

        blas = [{"api": i.get("internal_api"), "threads": i.get("num_threads")} for i in threadpool_info()]
        np_version = np.__version__
    except Exception:  # noqa: BLE001
        blas, np_version = [], "unknown"
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np_version,
        "blas": blas,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def code_version(repo: Path = REPO) -> str | None:
    """The code a benchmark runs: ``git describe --always`` of the working tree, with "-dirty-<hash>" when
    src/ has uncommitted changes (the hash of the diff and the untracked files' names and contents, so two
    different uncommitted trees never read as the same code); None when git or the repository is unavailable."""
    try:
        commit = _git(repo, "describe", "--always", "--abbrev=12").strip()
        dirty = _git(repo, "status", "--porcelain", "--", "src").strip()
        if not dirty:
            return commit
        digest = hashlib.sha256(_git(repo, "diff", "HEAD", "--", "src").encode())
        for name in sorted(_git(repo, "ls-files", "--others", "--exclude-standard", "--", "src").split()):
            digest.update(name.encode() + (repo / name).read_bytes())
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{commit}-dirty-{digest.hexdigest()[:8]}"


def run_code(run: Path, code: str | None) -> str | None:
    """The code that made the run in ``run``: each process that works on it notes its ``code_version`` in
    ``<run>.code`` beside it first, so a row records the code that generated the set, not the code that
    evaluated it (None: the run began before this was noted, or by code of no version; "A+B": processes of
    different code made it)."""
    note = run.parent / f"{run.name}.code"
    begun_unnoted = ["unknown"] if run.exists() else []  # a run begun before notes were kept
    codes = note.read_text(encoding="utf-8").split() if note.exists() else begun_unnoted
    if (code or "unknown") not in codes:
        codes.append(code or "unknown")
        note.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(note, "\n".join(codes) + "\n")
    return None if "unknown" in codes else "+".join(codes)


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


def write_result(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    # whole or not at all: a benchmark killed while writing keeps the rows it had (a truncated file would
    # make the next run of the script fail on it, or start over and lose them)
    atomic_write_text(path, json.dumps({"machine": machine(), **payload}, indent=2) + "\n")
    print(json.dumps(payload, indent=2))
    print(f"wrote {path}")
    return path


def read_json(path: Path) -> Any:
    """A results file, or a one-line error naming it when it is not valid JSON (never an empty start that
    would drop the rows it holds when the file is written again)."""
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SystemExit(
            f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); it holds results "
            "that would be lost if it were written again: repair it (e.g. from git) or move it away"
        ) from None


def rewrite_marked(doc: Path, start: str, end: str, text: str) -> None:
    """Replace what lies between the lines ``start`` and ``end`` of a Markdown file with ``text``: the
    tables in docs/ are generated, and the prose around them is kept."""
    whole = doc.read_text(encoding="utf-8")
    if start not in whole or end not in whole:
        raise SystemExit(f"{doc}: add the lines {start!r} and {end!r} where the table goes")
    head, rest = whole.split(start, 1)
    doc.write_text(f"{head}{start}\n{text}\n{end}{rest.split(end, 1)[1]}", encoding="utf-8")
