"""How far apart do two runs of one seed land?  The run-to-run spread that every seed-paired comparison rests on.

bench/quality.py --repeat R generates the same row, seed, N and M again as draw R (llama.cpp batches the
requests of its parallel slots as they arrive, and a WASP run draws fresh privacy noise from a secure RNG,
so a seed fixes neither the texts nor the votes).  This script sets each group of draws (draw 0 from
quality[_DATASET].json, draws 1.. from quality[_DATASET]_repeats.json) beside the spread across seeds 0, 1,
2 of the same row: if runs of one seed scatter as much as different seeds do, a three-seed mean
difference of a few hundredths between two rows cannot be told from chance.

    python bench/repeat_table.py                        # prints a Markdown table, writes repeat_spread.json
    python bench/repeat_table.py --doc docs/quality.md  # and rewrites the table between its markers there
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from common import rewrite_marked, write_result

RESULTS = Path(__file__).parent / "results"
START, END = "<!-- repeat table: start (bench/repeat_table.py --doc) -->", "<!-- repeat table: end -->"
DATASETS = {"IMDb": "quality", "newsgroups": "quality_newsgroups"}


def _rows(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text(encoding="utf-8"))["rows"] if path.exists() else []


def spread(values: list[float]) -> dict[str, float]:
    return {
        "mean": round(statistics.fmean(values), 4),
        "sd": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
        "range": round(max(values) - min(values), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--doc", type=Path, help="rewrite the table between its markers in this Markdown file")
    args = ap.parse_args()
    groups = []
    for task, stem in DATASETS.items():
        first = _rows(RESULTS / f"{stem}.json")
        repeats = _rows(RESULTS / f"{stem}_repeats.json")
        draws: dict[tuple[Any, ...], dict[int, float]] = defaultdict(dict)
        for r in first + repeats:
            key = (r["row"], r["epsilon"], r["n"], r["m"], r["seed"])
            draws[key][int(r.get("repeat", 0))] = r["accuracy_mean"]
        for key in sorted({(r["row"], r["epsilon"], r["n"], r["m"], r["seed"]) for r in repeats}):
            row, eps, n, m, seed = key
            accs = [draws[key][d] for d in sorted(draws[key])]
            seeds = [draws[(row, eps, n, m, s)][0] for s in (0, 1, 2) if 0 in draws.get((row, eps, n, m, s), {})]
            groups.append(
                {
                    "task": task,
                    "row": row,
                    "epsilon": eps,
                    "n": n,
                    "m": m,
                    "seed": seed,
                    "draws": {str(d): draws[key][d] for d in sorted(draws[key])},
                    "same_seed": spread(accs),
                    "seeds_0_1_2_first_draw": spread(seeds) if len(seeds) > 1 else None,
                }
            )
    lines = [
        "| task | row | N | M | seed | draws | accuracy per draw (0 first) | mean | sd | range | sd over seeds 0-2 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for g in groups:
        s, x = g["same_seed"], g["seeds_0_1_2_first_draw"]
        each = " / ".join(f"{v:.3f}" for v in g["draws"].values())
        across = f"{x['sd']:.3f}" if x else "-"
        lines.append(
            f"| {g['task']} | {g['row']} | {g['n']:,} | {g['m']:,} | {g['seed']} | {len(g['draws'])} | {each} "
            f"| {s['mean']:.3f} | {s['sd']:.3f} | {s['range']:.3f} | {across} |"
        )
    write_result("repeat_spread", {"command": "python bench/repeat_table.py", "groups": groups})
    print("\n".join(lines))
    if args.doc is not None:
        rewrite_marked(args.doc, START, END, "\n".join(lines))
        print(f"rewrote the repeat table in {args.doc}")


if __name__ == "__main__":
    main()
