"""Render bench/results/quality.json as the Markdown tables in docs/quality.md (stdout).

The first table is the comparison at M = 100: one line per method, one column per epsilon (1, 2, 4 and
inf), each cell the mean +- sample std of the downstream accuracy over seeds (each seed draws its own
private set and its own generation randomness) and the number of seeds.  The second aggregates every cell
(row, epsilon, M, N) over seeds with the means of FID, MAUVE, label consistency, wall time and tokens.  The
third lists every run.

    python bench/quality_table.py                      # print
    python bench/quality_table.py --doc docs/quality.md  # rewrite the part between the table markers
    python bench/quality_table.py --dataset newsgroups --doc docs/quality.md  # the topic task's tables
                                                       # (quality_newsgroups.json, its own markers; no paper column)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from common import read_json, rewrite_marked

# Zou et al. (ICML 2025), IMDb, M = 100, epsilon = 4, N = 6,000, BERT accuracy % (the paper's headline table)
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
    return PAPER.get(row.split(":")[0], "") if (eps == 4.0 and m == 100) else ""


# Table order: baselines, Aug-PE per generator, WASP and its ablations, the judged rows, other methods.
ORDER = [
    "real-ceiling",
    "only-private",
    "zero-shot",
    "aug-pe:gemma3-270m",
    "aug-pe:smollm2-135m",
    "aug-pe:qwen2.5-0.5b",
    "wasp",
    "wasp-no-weighting",
    "wasp-no-contrastive",
    "wasp-q1",
    "zero-shot+judge",
    "aug-pe:qwen2.5-0.5b+judge",
    "wasp+judge",
    "wasp-kw+judge",
    "pearl-select",
    "dp-finetune",
]


def order_key(row: str) -> tuple[int, str]:
    return (ORDER.index(row) if row in ORDER else len(ORDER), row)


REAL = ("only-private", "real-ceiling")  # rows that train on real records: their N is how many, not --n


def asked(r: dict[str, Any]) -> int:
    """The N a run asked for (bench/quality.py --n); for the rows of real records, the records they train on."""
    return int(r["n_synthetic"] if r["row"] in REAL else r["n"])


def mean_sd(rs: list[dict[str, Any]]) -> str:
    accs = [float(r["accuracy_mean"]) for r in rs]
    return f"{statistics.fmean(accs):.3f}" + (f" +- {statistics.stdev(accs):.3f}" if len(accs) > 1 else "")


def short_note(rs: list[dict[str, Any]]) -> str:
    """A note such as " (one run released 99)" when runs of a cell released other than the N they asked for."""
    short = [r["n_synthetic"] for r in rs if r["n_synthetic"] != asked(r)]
    if not short:
        return ""
    released = ", ".join(str(x) for x in short)
    return f" (one run released {released})" if len(short) == 1 else f" ({len(short)} runs released {released})"


def acc_cell(rs: list[dict[str, Any]]) -> str:
    accs = [float(r["accuracy_mean"]) for r in rs]
    if not accs:
        return ""
    return f"{mean_sd(rs)} ({len(accs)}){short_note(rs)}"


START, END = "<!-- quality tables: start (bench/quality_table.py --doc) -->", "<!-- quality tables: end -->"
MARKERS = {
    "imdb": (START, END),
    "newsgroups": (
        "<!-- quality tables newsgroups: start (bench/quality_table.py --dataset newsgroups --doc) -->",
        "<!-- quality tables newsgroups: end -->",
    ),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--doc", help="Markdown file whose text between the table markers is replaced")
    ap.add_argument(
        "--dataset", choices=list(MARKERS), default="imdb", help="whose results (bench/quality.py --dataset)"
    )
    args = ap.parse_args()
    if not args.doc:
        print_tables(args.dataset)
        return
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        print_tables(args.dataset)
    start, end = MARKERS[args.dataset]
    rewrite_marked(Path(args.doc), start, end, f"\n{buf.getvalue()}")
    print(f"wrote the tables into {args.doc}")


def released(r: dict[str, Any]) -> str:
    """A run's N: what it released, and what it asked for when that was more."""
    return str(r["n_synthetic"]) if r["n_synthetic"] == asked(r) else f"{r['n_synthetic']} of {asked(r)}"


def print_tables(dataset: str = "imdb") -> None:
    name = "quality.json" if dataset == "imdb" else f"quality_{dataset}.json"
    data = read_json(Path(__file__).resolve().parent / "results" / name)
    paper = dataset == "imdb"  # the paper's figures are IMDb's
    cells: dict[tuple[str, float, int, int], list[dict[str, Any]]] = defaultdict(list)
    for r in data["rows"]:  # the N a run asked for: one that released fewer stays in its cell, with a note
        cells[(r["row"], r["epsilon"], r["m"], asked(r))].append(r)
    keys = sorted(cells, key=lambda k: (k[2], order_key(k[0]), k[1], k[3]))

    eps_cols = [1.0, 2.0, 4.0, float("inf")]
    print("Accuracy at M = 100, N = 100 by epsilon: mean +- std over seeds (number of seeds).")
    print()
    paper_head = " | paper (acc. %) |" if paper else " |"
    print("| row | " + " | ".join(f"epsilon {eps_str(e)}" for e in eps_cols) + paper_head)
    print("|---|" + "---|" * (len(eps_cols) + paper))
    for row in sorted({k[0] for k in keys if k[2] == 100 and k[3] == 100}, key=order_key):
        by_eps = {k[1]: cells[k] for k in keys if k[0] == row and k[2] == 100 and k[3] == 100}
        if row.startswith("zero-shot"):  # no private data: epsilon 0, valid in every column
            line = [acc_cell(by_eps.get(0.0, []))] * len(eps_cols)
        elif row in ("only-private",):
            line = [""] * (len(eps_cols) - 1) + [acc_cell(by_eps.get(float("inf"), []))]
        else:
            line = [acc_cell(by_eps.get(e, [])) for e in eps_cols]
        print(f"| {row} | " + " | ".join(line) + (f" | {paper_for(row, 4.0, 100)} |" if paper else " |"))
    print()
    print("Every cell (row, epsilon, M, N), averaged over seeds:")
    print()
    print(
        "| row | epsilon | M | N | seeds | accuracy mean +- std | FID | MAUVE | label consistency | wall s | tokens "
        + ("| paper (acc. %) |" if paper else "|")
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|" + "---|" * paper)
    for row, eps, m, n in keys:
        rs = cells[(row, eps, m, n)]
        tokens = mean_of(rs, "tokens")
        print(
            f"| {row} | {eps_str(eps)} | {m} | {n} | {','.join(str(r['seed']) for r in rs)} | "
            f"{mean_sd(rs)}{short_note(rs)} | {fmt(mean_of(rs, 'fid'))} | {fmt(mean_of(rs, 'mauve'))} | "
            f"{fmt(mean_of(rs, 'label_consistency'))} | {fmt(mean_of(rs, 'wall_seconds'), 0)} | "
            f"{'-' if tokens is None else round(tokens)} |" + (f" {paper_for(row, eps, m)} |" if paper else "")
        )
    print()
    print("Every run:")
    print()
    print("| row | seed | epsilon | M | N | accuracy | FID | MAUVE | label consistency | wall s | tokens |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in sorted(data["rows"], key=lambda r: (r["m"], order_key(r["row"]), r["epsilon"], r["seed"])):
        print(
            f"| {r['row']} | {r['seed']} | {eps_str(r['epsilon'])} | {r['m']} | {released(r)} | "
            f"{fmt(r['accuracy_mean'])} | {fmt(r['fid'])} | {fmt(r['mauve'])} | {fmt(r.get('label_consistency'))} | "
            f"{fmt(r['wall_seconds'], 0)} | {fmt(r['tokens'])} |"
        )


if __name__ == "__main__":
    main()
