"""Render bench/results/quality.json as the Markdown table in docs/quality.md (stdout).

    python bench/quality_table.py
"""

from __future__ import annotations

import json
from pathlib import Path

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


def main() -> None:
    data = json.loads((Path(__file__).resolve().parent / "results" / "quality.json").read_text())
    print("| row | seed | epsilon | N | accuracy | FID | MAUVE | wall s | tokens | paper (acc. %) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in data["rows"]:
        paper = PAPER.get(r["row"].split(":")[0], "")
        eps = "inf (not DP)" if r["epsilon"] == float("inf") else fmt(r["epsilon"], 0)
        print(
            f"| {r['row']} | {r['seed']} | {eps} | {r['n_synthetic']} | {fmt(r['accuracy_mean'])} | {fmt(r['fid'])} | "
            f"{fmt(r['mauve'])} | {fmt(r['wall_seconds'], 0)} | {fmt(r['tokens'])} | {paper} |"
        )


if __name__ == "__main__":
    main()
