"""Render bench/results/quality.json as the Markdown tables in docs/quality.md (stdout).

The first table aggregates the runs of one cell (row, epsilon, M, N) over seeds: the mean and the
sample standard deviation of the downstream accuracy across seeds (each seed draws its own private
set and its own generation randomness), and the means of FID, MAUVE, wall time and tokens.  The
second lists every run.

    python bench/quality_table.py
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

# Zou et al. (ICML 2025), IMDb, M = 100, epsilon = 4, N = 6,000, BERT accuracy % (wasp.md)
PAPER = {
    "only-private": "50.00",
    "aug-pe": "89.00 (best single PLM)",
    "wasp": "89.52",
    "wasp-q1": "89.05",
    "wasp-no-contrastive": "89.21",
    "wasp-no-weighting": "89.17",
}


def fmt(x: object, nd: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def eps_str(e: float) -> str:
    return "inf (not DP)" if e == float("inf") else fmt(e, 0)


def mean_of(rows: list[dict[str, Any]], key: str) -> float | None:
    vals = [float(r[key]) for r in rows if r.get(key) is not None]
    return statistics.fmean(vals) if vals else None


def paper_for(row: str, eps: float, m: int) -> str:
    return PAPER.get(row.split(":")[0], "") if (eps in (4.0, float("inf")) and m == 100) else ""


def main() -> None:
    data = json.loads((Path(__file__).resolve().parent / "results" / "quality.json").read_text())
    cells: dict[tuple[str, float, int, int], list[dict[str, Any]]] = defaultdict(list)
    for r in data["rows"]:
        cells[(r["row"], r["epsilon"], r["m"], r["n_synthetic"])].append(r)
    print("| row | epsilon | M | N | seeds | accuracy mean +- std | FID | MAUVE | wall s | tokens | paper (acc. %) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for (row, eps, m, n), rs in cells.items():
        accs = [float(r["accuracy_mean"]) for r in rs]
        acc = f"{statistics.fmean(accs):.3f}" + (f" +- {statistics.stdev(accs):.3f}" if len(accs) > 1 else "")
        tokens = mean_of(rs, "tokens")
        print(
            f"| {row} | {eps_str(eps)} | {m} | {n} | {','.join(str(r['seed']) for r in rs)} | {acc} | "
            f"{fmt(mean_of(rs, 'fid'))} | {fmt(mean_of(rs, 'mauve'))} | {fmt(mean_of(rs, 'wall_seconds'), 0)} | "
            f"{'-' if tokens is None else round(tokens)} | {paper_for(row, eps, m)} |"
        )
    print()
    print("Every run:")
    print()
    print("| row | seed | epsilon | M | N | accuracy | FID | MAUVE | wall s | tokens |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in data["rows"]:
        print(
            f"| {r['row']} | {r['seed']} | {eps_str(r['epsilon'])} | {r['m']} | {r['n_synthetic']} | "
            f"{fmt(r['accuracy_mean'])} | {fmt(r['fid'])} | {fmt(r['mauve'])} | {fmt(r['wall_seconds'], 0)} | "
            f"{fmt(r['tokens'])} |"
        )


if __name__ == "__main__":
    main()
