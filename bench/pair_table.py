"""The issue's question at a glance: each private-data configuration minus the zero-shot set it must beat.

For every WASP-pipeline configuration that spent a budget (epsilon 4) and a zero-shot + judge set made with
the same generators, judge, N and seed (zero-shot reads no private record, so one zero-shot set serves
every M), the seed-paired accuracy difference (MiniLM + logistic regression, the dataset's fixed test
split) from bench/results/quality.json and quality_newsgroups.json.  A cell: the mean difference, then
how many seeds were ahead of their baseline, and the differences themselves.  The goal asks for +0.02 at
N = 1,000 and M = 100 on both tasks.

Rows written since bench/quality.py records provenance carry ``code`` (the commit they ran, "-dirty" when
src/ had uncommitted changes).  A cell with a pair whose two runs carry different ``code``, or where only
one of the two carries it, is marked "*" (after its mean and after each such difference) and a legend line
follows the table; rows of before the field ("unknown") paired with each other are not marked.

    python bench/pair_table.py                         # print
    python bench/pair_table.py --doc docs/quality.md   # rewrite the part between its markers
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from common import read_json, rewrite_marked

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
# The same rows against a zero-shot + judge set re-made on 2026-12-06 (row zero-shot-t64+judge: the same
# settings under a new name), for rows whose sets were made after whole-sentence cutting while the first
# baselines were made before it (docs/quality.md, the caveat under the pair table; bench/diag_mixed_pairs.py).
# (row, baseline, label, the M values whose sets were made after it)
REMADE = "zero-shot-t64+judge"
REMADE_PAIRS = [
    ("wasp+judge", REMADE, "WASP + judge (3 small generators), baseline re-made", (1000,)),
    ("wasp-kw+judge", REMADE, "WASP + judge, keyword rounds, baseline re-made", (100, 1000)),
    ("wasp-kw-even+judge", REMADE, "WASP + judge, keyword rounds, even class shares, baseline re-made", (100, 1000)),
    ("wasp-kwc+judge", REMADE, "WASP + judge, class-separating keywords, baseline re-made", (100, 1000)),
]
MIXED = "*"  # a cell with a pair of runs from different code versions
LEGEND = f"{MIXED} paired runs from different code versions (or only one of the two records its code)"
START, END = "<!-- pair table: start (bench/pair_table.py --doc) -->", "<!-- pair table: end -->"


Key = tuple[str, float, int, int, int]  # row, epsilon, N, M, seed


def accuracies(name: str) -> dict[Key, dict[str, Any]]:
    """Each run's accuracy and the code that made it (None for rows written before it was recorded)."""
    return {
        (r["row"], r["epsilon"], r["n"], r["m"], r["seed"]): {"acc": r["accuracy_mean"], "code": r.get("code")}
        for r in read_json(RESULTS / name)["rows"]
    }


def mixed(a: str | None, b: str | None) -> bool:
    """Whether two runs' code versions differ: both recorded and unequal, or only one recorded."""
    return a != b


def paired(acc: dict[Key, dict[str, Any]], row: str, base: str, n: int, m: int) -> list[tuple[float, bool]]:
    """The seed-paired differences, each with whether its two runs came from different code versions."""
    out = []
    for (r, eps, n_, m_, seed), a in sorted(acc.items(), key=lambda kv: kv[0][4]):
        if (r, eps, n_, m_) != (row, 4.0, n, m):
            continue
        b = next((acc[k] for k in ((base, 0.0, n, mm, seed) for mm in (m, 100, 1000)) if k in acc), None)
        if b is not None:
            out.append((a["acc"] - b["acc"], mixed(a["code"], b["code"])))
    return out


def cell(pairs: list[tuple[float, bool]]) -> str:
    if not pairs:
        return ""
    diffs = [d for d, _ in pairs]
    mean = sum(diffs) / len(diffs)
    ahead = sum(d > 0 for d in diffs)
    listed = " / ".join(f"{d:+.3f}{MIXED if m else ''}" for d, m in pairs)
    shown = f"**{mean:+.3f}**" if mean >= 0.02 else f"{mean:+.3f}"  # the goal's margin in bold
    return f"{shown}{MIXED if any(m for _, m in pairs) else ''} ({ahead} of {len(diffs)} ahead: {listed})"


def table() -> str:
    acc = {ds: accuracies(f) for ds, f in DATASETS.items()}
    return render(acc)


def render(acc: dict[str, dict[Key, dict[str, Any]]]) -> str:
    lines = [
        "| configuration (epsilon 4) minus zero-shot + judge, same generators | N | M | " + " | ".join(DATASETS) + " |",
        "|---|---|---|" + "---|" * len(DATASETS),
    ]
    any_mixed = False
    for row, base, label, ms in [(*p, (100, 1000)) for p in PAIRS] + REMADE_PAIRS:
        for n in (100, 300, 1000):
            for m in ms:
                pairs = [paired(acc[ds], row, base, n, m) for ds in DATASETS]
                any_mixed = any_mixed or any(mx for p in pairs for _, mx in p)
                cells = [cell(p) for p in pairs]
                if any(cells):
                    lines.append(f"| {label} | {n:,} | {m:,} | " + " | ".join(c or "-" for c in cells) + " |")
    if any_mixed:
        lines += ["", LEGEND]
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
