"""Does removing prompt frames ("Movie review: ...", "Good hockey newsgroup post: ...") change accuracy?

Small generators often open a sample with a frame that echoes the prompt's wording.  Since this check
was written, the pipeline removes such frames as it cleans each output (``dpsynth.prompts.strip_frame``).
This script measures what that does on sets runs released before the change: for every kept set of both
benchmark datasets that has at least one framed sample, it scores the set as kept and with the frames
removed, like ``dpsynth evaluate`` (logistic regression on MiniLM, the dataset's fixed test split).
The reference ``pe`` sets are left out (their frames are its own prompt's, which this rule does not
know).

Analysis only: it reads released synthetic sets and public test splits, never a private set.

    python bench/diag_frames.py [--name diag_frames]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402
from diag_mix import _read, _set_dir  # noqa: E402
from diag_release import CACHE, accuracy  # noqa: E402
from dpsynth.data import EMBEDDED_DATASETS  # noqa: E402
from dpsynth.evaluate.inputs import default_embedder, embed_test, load_test  # noqa: E402
from dpsynth.prompts import strip_frame  # noqa: E402


def framed_sets(dataset: str, embedder: Any) -> dict[str, Any]:
    ds = EMBEDDED_DATASETS[f"embedded:{dataset}"]
    t = load_test(ds.source)
    test = (embed_test(list(t.texts), embedder), [str(v) for v in t.labels])
    names = list((ds.labels or {}).values())
    out: dict[str, Any] = {}
    for path in sorted(_set_dir(dataset).glob("*.jsonl")):
        if path.stem.startswith("reference-"):
            continue
        rows = _read(path)
        texts = [str(r["text"]) for r in rows]
        stripped = [strip_frame(x, ds.task, names) for x in texts]
        changed = sum(a != b for a, b in zip(texts, stripped, strict=True))
        if not changed:
            continue
        y = [str(r["label"]) for r in rows]
        before = accuracy(embed_test(texts, embedder, CACHE), y, test)
        after = accuracy(embed_test(stripped, embedder, CACHE), y, test)
        out[path.stem] = {
            "n": len(rows),
            "framed": changed,
            "accuracy_kept": round(before, 4),
            "accuracy_stripped": round(after, 4),
            "gain": round(after - before, 4),
        }
        print(dataset, path.stem, out[path.stem], flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", default="diag_frames")
    args = ap.parse_args()
    embedder = default_embedder()
    payload: dict[str, Any] = {
        "command": "python bench/diag_frames.py " + " ".join(sys.argv[1:]),
        "evaluator": "LogisticRegression on MiniLM embeddings, the dataset's fixed test split",
    }
    for dataset in ("imdb", "newsgroups"):
        per_set = framed_sets(dataset, embedder)
        gains = [v["gain"] for v in per_set.values()]
        framed = sum(v["framed"] for v in per_set.values())
        total = sum(v["n"] for v in per_set.values())
        payload[dataset] = {
            "sets": len(gains),
            "framed_share": round(framed / max(total, 1), 4),
            "mean_gain": round(float(np.mean(gains)), 4) if gains else None,
            "sets_improved": sum(g > 0 for g in gains),
            "sets_worse": sum(g < 0 for g in gains),
            "per_set": per_set,
        }
        print(json.dumps({k: v for k, v in payload[dataset].items() if k != "per_set"}), flush=True)
    write_result(args.name, payload)


if __name__ == "__main__":
    main()
