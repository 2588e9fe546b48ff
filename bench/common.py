"""Helpers shared by the benchmarks: machine facts and JSON output."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


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


def write_result(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2) + "\n")
    print(json.dumps(payload, indent=2))
    print(f"wrote {path}")
    return path


def rewrite_marked(doc: Path, start: str, end: str, text: str) -> None:
    """Replace what lies between the lines ``start`` and ``end`` of a Markdown file with ``text``: the
    tables in docs/ are generated, and the prose around them is kept."""
    whole = doc.read_text(encoding="utf-8")
    if start not in whole or end not in whole:
        raise SystemExit(f"{doc}: add the lines {start!r} and {end!r} where the table goes")
    head, rest = whole.split(start, 1)
    doc.write_text(f"{head}{start}\n{text}\n{end}{rest.split(end, 1)[1]}", encoding="utf-8")
