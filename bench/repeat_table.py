"""How far apart do two runs of one seed land?  The run-to-run spread that every seed-paired comparison rests on.

bench/quality.py --repeat R generates the same row, seed, N and M again as draw R (llama.cpp batches the
requests of its parallel slots as they arrive, and a WASP run draws fresh privacy noise from a secure RNG,
so a seed fixes neither the texts nor the votes).  This script sets each group of draws (draw 0 from
quality[_DATASET].json, draws 1.. from quality[_DATASET]_repeats.json) beside the spread across seeds 0, 1,
2 of the same row: if runs of one seed scatter as much as different seeds do, a three-seed mean
difference of a few hundredths between two rows cannot be told from chance.

A same-seed spread is only one if its draws ran the same code.  Rows that record it (``code``, written by
bench/quality.py since provenance was added) are compared: a draw whose code differs from the group's (the
code most of its draws recorded) is left out of the spread and named in the table (--keep-mixed keeps it).
Rows written before (no ``code``) are kept, and the table says which draws record no code: draw 0 comes
from the first campaign's file, often made by older code than the draws of the repeats file.

    python bench/repeat_table.py                        # prints a Markdown table, writes repeat_spread.json
    python bench/repeat_table.py --doc docs/quality.md  # and rewrites the table between its markers there
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from common import read_json, rewrite_marked, write_result

RESULTS = Path(__file__).parent / "results"
START, END = "<!-- repeat table: start (bench/repeat_table.py --doc) -->", "<!-- repeat table: end -->"
DATASETS = {"IMDb": "quality", "newsgroups": "quality_newsgroups"}


def _rows(path: Path) -> list[dict[str, Any]]:
    return read_json(path)["rows"] if path.exists() else []


def spread(values: list[float]) -> dict[str, float]:
    return {
        "mean": round(statistics.fmean(values), 4),
        "sd": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
        "range": round(max(values) - min(values), 4),
    }


def group_code(codes: dict[int, str | None]) -> str | None:
    """The code of a group of draws: the one most of its draws recorded (a tie: the latest draw's); None when
    none recorded one."""
    known = [c for _, c in sorted(codes.items()) if c is not None]
    if not known:
        return None
    counts = {c: known.count(c) for c in known}
    top = max(counts.values())
    return next(c for c in reversed(known) if counts[c] == top)


def code_note(codes: dict[int, str | None], left_out: list[int]) -> str:
    """The table's word on the code of a group's draws."""
    kept = {d: c for d, c in codes.items() if d not in left_out}
    unknown = [d for d, c in sorted(kept.items()) if c is None]
    known = sorted({c for c in kept.values() if c is not None})
    parts = []
    if known:
        parts.append(f"code {', '.join(known)}")
    if unknown:
        parts.append("not recorded" if len(unknown) == len(kept) else f"not recorded for {_draws(unknown)}")
    if left_out:
        parts.append(f"left out: {_draws(left_out)} ({', '.join(str(codes[d]) for d in left_out)})")
    return "; ".join(parts)


def _draws(ds: list[int]) -> str:
    return ("draw " if len(ds) == 1 else "draws ") + ", ".join(str(d) for d in ds)


def groups_of(task: str, stem: str, keep_mixed: bool = False) -> list[dict[str, Any]]:
    """The groups of draws of one task (those with a repeat), each with its same-seed spread."""
    first = _rows(RESULTS / f"{stem}.json")
    repeats = _rows(RESULTS / f"{stem}_repeats.json")
    draws: dict[tuple[Any, ...], dict[int, float]] = defaultdict(dict)
    codes: dict[tuple[Any, ...], dict[int, str | None]] = defaultdict(dict)
    for r in first + repeats:
        key = (r["row"], r["epsilon"], r["n"], r["m"], r["seed"])
        draws[key][int(r.get("repeat", 0))] = r["accuracy_mean"]
        codes[key][int(r.get("repeat", 0))] = r.get("code")
    groups = []
    for key in sorted({(r["row"], r["epsilon"], r["n"], r["m"], r["seed"]) for r in repeats}):
        row, eps, n, m, seed = key
        ours = group_code(codes[key])
        left_out = (
            []
            if keep_mixed
            else [d for d, c in sorted(codes[key].items()) if c is not None and ours is not None and c != ours]
        )
        kept = [d for d in sorted(draws[key]) if d not in left_out]
        accs = [draws[key][d] for d in kept]
        seeds = [draws[(row, eps, n, m, s)][0] for s in (0, 1, 2) if 0 in draws.get((row, eps, n, m, s), {})]
        groups.append(
            {
                "task": task,
                "row": row,
                "epsilon": eps,
                "n": n,
                "m": m,
                "seed": seed,
                "draws": {str(d): draws[key][d] for d in kept},
                "sources": {str(d): f"{stem}.json" if d == 0 else f"{stem}_repeats.json" for d in sorted(draws[key])},
                "codes": {str(d): c for d, c in sorted(codes[key].items())},
                "left_out": {str(d): draws[key][d] for d in left_out},
                "code_note": code_note(codes[key], left_out),
                "same_seed": spread(accs),
                "seeds_0_1_2_first_draw": spread(seeds) if len(seeds) > 1 else None,
            }
        )
    return groups


def render(groups: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| task | row | N | M | seed | draws | accuracy per draw (0: first campaign's file, 1..: repeats file) "
        "| code of the draws | mean | sd | range | sd over seeds 0-2 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for g in groups:
        s, x = g["same_seed"], g["seeds_0_1_2_first_draw"]
        each = " / ".join(f"{v:.3f}" for v in g["draws"].values())
        across = f"{x['sd']:.3f}" if x else "-"
        lines.append(
            f"| {g['task']} | {g['row']} | {g['n']:,} | {g['m']:,} | {g['seed']} | {', '.join(g['draws'])} | {each} "
            f"| {g['code_note']} | {s['mean']:.3f} | {s['sd']:.3f} | {s['range']:.3f} | {across} |"
        )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--doc", type=Path, help="rewrite the table between its markers in this Markdown file")
    ap.add_argument(
        "--keep-mixed",
        action="store_true",
        help="keep draws whose recorded code differs from the rest of their group in the spread",
    )
    args = ap.parse_args()
    groups = [g for task, stem in DATASETS.items() for g in groups_of(task, stem, args.keep_mixed)]
    lines = render(groups)
    command = "python bench/repeat_table.py" + (" --keep-mixed" if args.keep_mixed else "")
    write_result("repeat_spread", {"command": command, "groups": groups})
    print("\n".join(lines))
    if args.doc is not None:
        rewrite_marked(args.doc, START, END, "\n".join(lines))
        print(f"rewrote the repeat table in {args.doc}")


if __name__ == "__main__":
    main()
