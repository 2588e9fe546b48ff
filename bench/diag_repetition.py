"""How repetitive is each kept synthetic set, and does repetition go with accuracy?  An offline check.

For every row of bench/results/quality.json and quality_newsgroups.json whose synthetic set is kept
(bench/results/quality_sets*/), this counts what the report's repetition section counts
(src/dpsynth/report/repetition.py): per class, the share of distinct five-word openings and the share of
records holding the commonest opening and the commonest capitalised name.  The same is counted on three
random draws of 1,000 real test texts per dataset, as the level real text reaches.  Then, per dataset, it
fits accuracy ~ label consistency + distinct openings over the sets (least squares on standardised
values) and reports each slope, beside the plain correlation of accuracy with distinct openings.

Analysis only: it reads released synthetic sets and public test splits, never a private set.  Cheap (no
model, no embedding): about a minute on 2 cores.

    python bench/diag_repetition.py [--name diag_repetition]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402
from dpsynth.data import EMBEDDED_DATASETS  # noqa: E402
from dpsynth.report.repetition import names, opening  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TASKS = {"imdb": "movie review", "newsgroups": "newsgroup post"}


def repetition(records: list[dict[str, Any]], task: str, labels: list[str]) -> dict[str, float]:
    """The report's counts over one set: the lowest and mean per-class share of distinct openings, and the
    largest per-class share of records holding the class's commonest opening or name."""
    by: dict[str, list[str]] = defaultdict(list)
    for r in records:
        by[str(r.get("label", ""))].append(str(r.get("text", "")))
    distinct, top_opening, top_name = [], [], []
    for texts in by.values():
        opens = Counter(opening(t, task, labels) for t in texts)
        found: Counter[str] = Counter()
        for t in texts:
            found.update(names(t))
        distinct.append(len(opens) / len(texts))
        top_opening.append(opens.most_common(1)[0][1] / len(texts))
        top_name.append((found.most_common(1)[0][1] if found else 0) / len(texts))
    return {
        "distinct_openings_min": min(distinct),
        "distinct_openings_mean": float(np.mean(distinct)),
        "top_opening_share": max(top_opening),
        "top_name_share": max(top_name),
    }


def set_name(row: dict[str, Any]) -> str:
    """The kept set's file stem, as bench/quality.py names it."""
    return f"{row['row'].replace(':', '-')}-eps{row['epsilon']:g}-n{row['n']}-m{row['m']}-s{row['seed']}"


def fit(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy against label consistency and distinct openings, standardised: the slopes say how many
    standard deviations of accuracy one standard deviation of each goes with, the other held fixed."""
    use = [r for r in rows if r.get("label_consistency") is not None]
    if len(use) < 5:
        return {"n_sets": len(use)}
    y = np.array([r["accuracy"] for r in use])
    x = np.array([[r["label_consistency"], r["distinct_openings_mean"]] for r in use])

    def z(a: np.ndarray) -> np.ndarray:
        return (a - a.mean(0)) / a.std(0)

    coef, *_ = np.linalg.lstsq(np.c_[np.ones(len(y)), z(x)], z(y), rcond=None)
    return {
        "n_sets": len(use),
        "r_accuracy_distinct_openings": float(np.corrcoef(y, x[:, 1])[0, 1]),
        "r_accuracy_label_consistency": float(np.corrcoef(y, x[:, 0])[0, 1]),
        "slope_label_consistency": float(coef[1]),
        "slope_distinct_openings": float(coef[2]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", default="diag_repetition")
    args = ap.parse_args()
    out: dict[str, Any] = {"command": "python bench/diag_repetition.py", "datasets": {}}
    for dataset, table, sets in (
        ("imdb", "quality.json", "quality_sets"),
        ("newsgroups", "quality_newsgroups.json", "quality_sets_newsgroups"),
    ):
        source = EMBEDDED_DATASETS[f"embedded:{dataset}"]
        task = TASKS[dataset]
        labels: list[str] = []
        test = source.test()
        real = [
            repetition(
                [{"text": r.text, "label": r.label} for r in test.sample(1000, random_state=s).itertuples()],
                task,
                labels,
            )
            for s in range(3)
        ]
        rows, seen = [], set()
        for row in json.loads((RESULTS / table).read_text(encoding="utf-8"))["rows"]:
            path = RESULTS / sets / f"{set_name(row)}.jsonl"
            if path.name in seen or not path.exists() or row.get("repeat"):
                continue
            seen.add(path.name)
            records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            rows.append(
                {
                    "set": path.stem,
                    "method": row["row"],
                    "n": row["n"],
                    "m": row["m"],
                    "accuracy": row["accuracy_mean"],
                    "label_consistency": row.get("label_consistency"),
                    **repetition(records, task, labels),
                }
            )
        by_method: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in rows:
            if r["n"] >= 300:
                by_method[f"{r['method']} N={r['n']} M={r['m']}"].append(r)
        out["datasets"][dataset] = {
            "real_test_draws_of_1000": real,
            "sets": rows,
            "fit_all_sets": fit(rows),
            "fit_n_at_least_300": fit([r for r in rows if r["n"] >= 300]),
            "mean_by_method_n_at_least_300": {
                k: {
                    "sets": len(v),
                    "distinct_openings_mean": float(np.mean([r["distinct_openings_mean"] for r in v])),
                    "top_opening_share": float(np.mean([r["top_opening_share"] for r in v])),
                    "top_name_share": float(np.mean([r["top_name_share"] for r in v])),
                    "accuracy": float(np.mean([r["accuracy"] for r in v])),
                }
                for k, v in sorted(by_method.items())
            },
        }
        d = out["datasets"][dataset]
        print(dataset, "real:", [round(r["distinct_openings_mean"], 3) for r in real], flush=True)
        print("  fit all:", d["fit_all_sets"], flush=True)
        print("  fit N>=300:", d["fit_n_at_least_300"], flush=True)
        for k, v in d["mean_by_method_n_at_least_300"].items():
            print(f"  {k}: {v}", flush=True)
    print(write_result(args.name, out))


if __name__ == "__main__":
    main()
