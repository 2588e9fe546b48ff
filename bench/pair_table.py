"""The issue's question at a glance: each private-data configuration minus the zero-shot set it must beat.

For every WASP-pipeline configuration that spent a budget (epsilon 4) and a zero-shot + judge set made with
the same generators, judge, N and seed (zero-shot reads no private record, so one zero-shot set serves
every M), the seed-paired accuracy difference (MiniLM + logistic regression, the dataset's fixed test
split) from bench/results/quality.json and quality_newsgroups.json.  A cell: the mean difference, then
how many seeds were ahead of their baseline, and the differences themselves.  The goal asks for +0.02 at
N = 1,000 and M = 100 on both tasks.

    python bench/pair_table.py                         # print
    python bench/pair_table.py --doc docs/quality.md   # rewrite the part between its markers
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import rewrite_marked

RESULTS = Path(__file__).parent / "results"
DATASETS = {"IMDb": "quality.json", "newsgroups": "quality_newsgroups.json"}
# (row that read private records, its zero-shot baseline, what to call it)
PAIRS = [
    ("wasp+judge", "zero-shot+judge", "WASP + judge (3 small generators)"),
    ("wasp-kw+judge", "zero-shot+judge", "WASP + judge, keyword rounds"),
    ("wasp-kw-even+judge", "zero-shot+judge", "WASP + judge, keyword rounds, even class shares"),
    ("wasp-kwc+judge", "zero-shot+judge", "WASP + judge, class-separating keywords"),
    (
        "aug-pe:qwen2.5-0.5b+judge",
        "zero-shot+judge",
        "Aug-PE + judge (Qwen2.5-Coder-0.5B alone; baseline: the 3 generators)",
    ),
    ("wasp-big+judge", "zero-shot-big+judge", "WASP + judge with the 1.5B as a fourth generator"),
]
START, END = "<!-- pair table: start (bench/pair_table.py --doc) -->", "<!-- pair table: end -->"


def accuracies(name: str) -> dict[tuple[str, float, int, int, int], float]:
    rows = json.loads((RESULTS / name).read_text(encoding="utf-8"))["rows"]
    return {(r["row"], r["epsilon"], r["n"], r["m"], r["seed"]): r["accuracy_mean"] for r in rows}


def paired(acc: dict[tuple[str, float, int, int, int], float], row: str, base: str, n: int, m: int) -> list[float]:
    out = []
    for (r, eps, n_, m_, seed), a in sorted(acc.items(), key=lambda kv: kv[0][4]):
        if (r, eps, n_, m_) != (row, 4.0, n, m):
            continue
        b = next((acc[k] for k in ((base, 0.0, n, mm, seed) for mm in (m, 100, 1000)) if k in acc), None)
        if b is not None:
            out.append(a - b)
    return out


def cell(diffs: list[float]) -> str:
    if not diffs:
        return ""
    mean = sum(diffs) / len(diffs)
    ahead = sum(d > 0 for d in diffs)
    listed = " / ".join(f"{d:+.3f}" for d in diffs)
    shown = f"**{mean:+.3f}**" if mean >= 0.02 else f"{mean:+.3f}"  # the goal's margin in bold
    return f"{shown} ({ahead} of {len(diffs)} ahead: {listed})"


def table() -> str:
    acc = {ds: accuracies(f) for ds, f in DATASETS.items()}
    lines = [
        "| configuration (epsilon 4) minus zero-shot + judge, same generators | N | M | " + " | ".join(DATASETS) + " |",
        "|---|---|---|" + "---|" * len(DATASETS),
    ]
    for row, base, label in PAIRS:
        for n in (100, 300, 1000):
            for m in (100, 1000):
                cells = [cell(paired(acc[ds], row, base, n, m)) for ds in DATASETS]
                if any(cells):
                    lines.append(f"| {label} | {n:,} | {m:,} | " + " | ".join(c or "-" for c in cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--doc", type=Path, help="rewrite the table between its markers in this Markdown file")
    args = ap.parse_args()
    text = table()
    if args.doc is None:
        print(text)
        return
    rewrite_marked(args.doc, START, END, text)
    print(f"rewrote the pair table in {args.doc}")


if __name__ == "__main__":
    main()
