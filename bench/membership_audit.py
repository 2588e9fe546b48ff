"""Membership inference against the benchmark's kept synthetic sets: does any of them give its private
records away, with and without the privacy noise?

Every set in bench/results/quality_sets[_newsgroups]/ was released by a run on an embedded dataset whose
private draw is known from the set's name (``<row>-eps<E>-n<N>-m<M>-s<S>.jsonl``: M records, data seed S;
bench/quality.py).  For each set this script rebuilds a minimal run directory (config.yaml, the set,
privacy.json with the row's epsilon and delta 1e-5) and runs ``dpsynth audit membership`` on it
(dpsynth.audit.membership): M members against M pool records the run never read, nearest-synthetic-
sample attacks in MiniLM space, AUC with a bootstrap interval beside the largest AUC the row's epsilon
allows.  Rows at epsilon inf (votes released without noise) show what the attack finds without DP; zero-shot sets,
which read no private record, are audited as if they had read the seed's draw: a placebo that shows how
far the AUC moves with the draw alone.  With ``--against-zero-shot`` every set of a run that read the
draw is also attacked next to the zero-shot set of the same seed, N, generators and judge (``--against``;
``placebo_for``): the same candidates on both sets and a paired interval of the AUC difference, in which
the draw largely cancels.

Analysis only: the "private" records here are public pool records of the embedded datasets.

    python bench/membership_audit.py [--dataset imdb|newsgroups] [--sets 'wasp*-n100-m100-s*'] [--name NAME]
                                     [--against-zero-shot]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from dpsynth.audit.membership import membership_audit  # noqa: E402
from dpsynth.datasets import EMBEDDED_DATASETS  # noqa: E402
from dpsynth.evaluate.inputs import default_embedder  # noqa: E402
from dpsynth.io import atomic_write_json  # noqa: E402

NAME = re.compile(r"^(?P<row>.+)-eps(?P<eps>[^-]+)-n(?P<n>\d+)-m(?P<m>\d+)-s(?P<s>\d+)\.jsonl$")
DEFAULT_SETS = (
    "wasp*-n100-m100-s*,aug-pe-qwen2.5-0.5b+judge-*-m100-s*,*-n300-m1000-s*,*-n100-m1000-s*,zero-shot*-m100-s*"
)


def _run_dir(tmp: Path, set_path: Path, source: str, m: int, seed: int, eps: float, method: str = "") -> Path:
    run = tmp / (set_path.stem + ("-placebo" if method == "zero-shot" else ""))
    if run.exists():
        return run
    run.mkdir(parents=True)
    labels = dict(EMBEDDED_DATASETS[source].labels)
    method = method or ("aug-pe" if set_path.name.startswith("aug-pe") else "wasp")
    config: dict[str, Any] = {
        "method": method,
        "output_format": "jsonl",
        "data": {"private": source, "n_private": m, "seed": seed},
    }
    config["data"]["labels"] = labels
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    shutil.copyfile(set_path, run / "synthetic.jsonl")
    (run / "privacy.json").write_text(json.dumps({"epsilon": "inf" if eps == float("inf") else eps, "delta": 1e-5}))
    return run


def placebo_for(folder: Path, row: str, n: int, seed: int) -> Path | None:
    """The zero-shot set of the same seed and N with the row's generators, token limit, writers and judge
    (``wasp-t128+judge`` -> ``zero-shot-t128+judge``; the keyword and pool variants change only the prompts
    of later rounds, so their placebo is the plain one).  Aug-PE rows (one 0.5B generator, no zero-shot set
    of its own) get the WASP generators' zero-shot + judge set: the draw cancels less exactly there."""
    if row.startswith("aug-pe") and row.endswith("+judge"):
        row = "wasp+judge"
    if not row.startswith("wasp"):
        return None
    mods = [m for m in ("-big", "-t128", "-w") if m in row]
    zs = "zero-shot" + "".join(mods) + ("+judge" if row.endswith("+judge") else "")
    found = sorted(folder.glob(f"{zs}-eps0-n{n}-m*-s{seed}.jsonl"))
    return found[0] if found else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="imdb", choices=["imdb", "newsgroups"])
    ap.add_argument("--sets", default=DEFAULT_SETS, help="Comma-separated globs over the kept sets' file names.")
    ap.add_argument("--name", default=None)
    ap.add_argument("--against-zero-shot", action="store_true", help="Also compare each private set with its placebo.")
    args = ap.parse_args()
    folder = ROOT / "bench" / "results" / ("quality_sets" if args.dataset == "imdb" else "quality_sets_newsgroups")
    source = f"embedded:{args.dataset}"
    paths = sorted({p for g in args.sets.split(",") for p in folder.glob(g.strip())})
    embedder = default_embedder()
    out_path = (
        ROOT
        / "bench"
        / "results"
        / f"{args.name or 'membership_audit' + ('' if args.dataset == 'imdb' else '_newsgroups')}.json"
    )
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for p in paths:
            hit = NAME.match(p.name)
            if hit is None:
                continue
            # a zero-shot set read no private record: audited as if it had read the seed's draw (at epsilon
            # 4), it is the placebo that shows how far the AUC moves with the draw alone
            placebo = hit["eps"] == "0"
            eps = 4.0 if placebo else float(hit["eps"])
            m, seed = int(hit["m"]), int(hit["s"])
            zs = (
                placebo_for(folder, hit["row"], int(hit["n"]), seed) if args.against_zero_shot and not placebo else None
            )
            against = _run_dir(Path(tmp), zs, source, m, seed, 0.0, "zero-shot") if zs is not None else None
            res = membership_audit(_run_dir(Path(tmp), p, source, m, seed, eps), embedder=embedder, against=against)
            row = {
                "set": p.name,
                "row": hit["row"],
                "placebo": placebo,
                "epsilon": hit["eps"],
                "n": int(hit["n"]),
                "m": m,
                "seed": seed,
                "auc_bound": res["auc_bound"],
                "near_copies": res["near_copies"],
                "attacks": {
                    k: {kk: a[kk] for kk in ("auc", "auc_95", "tpr_at_fpr")} for k, a in res["attacks"].items()
                },
                "verdict": res["verdict"],
            }
            if "against" in res:
                row["against"] = {
                    "set": zs.name if zs is not None else None,
                    "attacks": {
                        k: {kk: a[kk] for kk in ("auc_placebo", "auc_difference", "difference_95")}
                        for k, a in res["against"]["attacks"].items()
                    },
                    "verdict": res["against"]["verdict"],
                }
            results.append(row)
            a, nc = res["attacks"]["nearest"], res["near_copies"]
            print(
                f"{p.name}: AUC {a['auc']:.3f} ({a['auc_95'][0]:.3f}-{a['auc_95'][1]:.3f}), "
                f"bound {res['auc_bound']:.3f}, near copies {nc['members']}/{nc['non_members']}"
                + (f"; {res['against']['verdict']}" if "against" in res else ""),
                flush=True,
            )
            atomic_write_json(
                out_path,
                {
                    "command": " ".join(["python", "bench/membership_audit.py", *sys.argv[1:]]),
                    "dataset": source,
                    "embedding_model": embedder.name,
                    "results": results,
                },
            )
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
