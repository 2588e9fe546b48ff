"""Which seed-paired comparisons of bench/pair_table.py pair sets made before and after whole-sentence cutting?

Rows written before 2026-12-06 record no code version.  The change that shows in their kept sets is
``wasp.whole_sentences``: before it, about half or more of a set's samples stop mid-sentence; after it, few
do.  For each pair of the pair table this prints the share of samples that end without sentence punctuation
on each side and marks the pair MIXED when one side is above ``--cut`` and the other below (docs/quality.md,
the caveat under the pair table).  A pair whose set was not kept (early Aug-PE rows) shows "-".

    python bench/diag_mixed_pairs.py [--cut 0.35]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pair_table as pt

SETS = {"IMDb": pt.RESULTS / "quality_sets", "newsgroups": pt.RESULTS / "quality_sets_newsgroups"}
_ENDS_A_SENTENCE = re.compile(r"[.!?\"')\]]$")


def cut_share(path: Path) -> float | None:
    """The share of a kept set's samples that do not end a sentence (None: the set was not kept)."""
    if not path.exists():
        return None
    texts = [json.loads(line)["text"].rstrip() for line in path.read_text(encoding="utf-8").splitlines() if line]
    return sum(not _ENDS_A_SENTENCE.search(t) for t in texts) / max(len(texts), 1)


def set_name(row: str, eps: float, n: int, m: int, seed: int) -> str:
    return f"{row}-eps{0 if eps == 0 else f'{eps:g}'}-n{n}-m{m}-s{seed}.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cut", type=float, default=0.35, help="share of mid-sentence endings that marks older code")
    args = ap.parse_args()
    n_pairs = n_mixed = 0
    for ds, file in pt.DATASETS.items():
        acc = pt.accuracies(file)
        for row, base, label, ms in [(*p, (100, 1000)) for p in pt.PAIRS] + pt.REMADE_PAIRS:
            for (r, eps, n, m, seed), a in sorted(acc.items(), key=lambda kv: (kv[0][2], kv[0][3], kv[0][4])):
                if r != row or eps != 4.0 or m not in ms:
                    continue
                bk = next((k for k in ((base, 0.0, n, mm, seed) for mm in (m, 100, 1000)) if k in acc), None)
                if bk is None:
                    continue
                cw, cb = cut_share(SETS[ds] / set_name(r, eps, n, m, seed)), cut_share(SETS[ds] / set_name(*bk))
                mixed = cw is not None and cb is not None and (cw > args.cut) != (cb > args.cut)
                n_pairs, n_mixed = n_pairs + 1, n_mixed + mixed
                shown = " / ".join("-" if c is None else f"{c:.2f}" for c in (cw, cb))
                print(
                    f"{ds:10} {label[:48]:48} N={n:<5} M={m:<5} s{seed} mid-sentence {shown:11} "
                    f"{'MIXED' if mixed else '     '} {a['acc'] - acc[bk]['acc']:+.3f}"
                )
    print(f"{n_mixed} of {n_pairs} pairs mix older and newer sets")


if __name__ == "__main__":
    main()
