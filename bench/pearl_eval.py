"""PEARL downstream utility on sklearn data: the paper's kind of table (Liew et al. 2022, Tables 1-2).

Train a classifier on synthetic data, test on real held-out data (fixed stratified split,
random_state=0, 25% test), at epsilon in {0.2, 1, 10, inf} (delta = 1e-5), mean +- std over seeds.

Rows per dataset:
  * ``pearl``        PEARL with a declared (public) schema: digits' documented pixel range [0, 16];
                     breast_cancer / wine bounds from the published summary table in sklearn's DESCR.
  * ``pearl-dpschema`` PEARL with no schema: types and bounds derived with DP from 20% of the budget
                     (the tool's default when the user declares nothing).
  * ``histogram``    baseline: independent DP per-column histograms per class (16 bins over the
                     declared bounds, integer columns one bin per value), one Gaussian release with
                     sensitivity sqrt(d + 1) calibrated on the same shared accountant.
  * ``real``         the ceiling: the classifier trained on the real training split.

epsilon = inf is PEARL / the baseline without noise (``pearl_tools.NonPrivatePearl``).

    python bench/pearl_eval.py                       # everything (tens of minutes on 2 busy cores)
    python bench/pearl_eval.py --datasets wine --seeds 0 --eps 1   # a quick look
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402
from dpsynth.config import Config  # noqa: E402
from dpsynth.errors import DpsynthError  # noqa: E402
from dpsynth.methods.pearl import PearlMethod  # noqa: E402
from dpsynth.privacy.accountant import GaussianPlan  # noqa: E402
from dpsynth.privacy.mechanisms import add_gaussian_noise  # noqa: E402
from dpsynth.progress import ProgressReporter  # noqa: E402
from dpsynth.run import RunDir  # noqa: E402
from pearl_tools import NonPrivatePearl  # noqa: E402

DELTA = 1e-5
LABEL = "target"


# ---------------------------------------------------------------- data
def load(name: str) -> dict[str, Any]:
    """Features, labels, the fixed split and the declared (public) schema of one sklearn dataset."""
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    if name == "digits":
        d = datasets.load_digits()
        x = d.data.astype(np.int64)
        names = [f"px_{i}" for i in range(64)]
        bounds = {n: (0.0, 16.0) for n in names}  # DESCR: "integer pixels in the range 0..16"
        kinds = dict.fromkeys(names, "integer")
    else:
        d = datasets.load_breast_cancer() if name == "breast_cancer" else datasets.load_wine()
        x = d.data
        names = [str(n) for n in d.feature_names]
        bounds = dict(zip(names, descr_bounds(d.DESCR, len(names)), strict=True))
        kinds = dict.fromkeys(names, "float")
    y = d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    return {
        "name": name,
        "names": names,
        "bounds": bounds,
        "kinds": kinds,
        "labels": [str(c) for c in sorted(set(y.tolist()))],
        "xtr": xtr,
        "ytr": ytr,
        "xte": xte,
        "yte": yte,
    }


def descr_bounds(descr: str, n: int) -> list[tuple[float, float]]:
    """(Min, Max) of each feature from the summary table published in the dataset's DESCR, in order."""
    rows = []
    for line in descr.splitlines():
        m = re.match(r"^\s*[A-Za-z].*?:\s+(-?[\d.]+)\s+(-?[\d.]+)", line)
        if m and not line.strip().startswith(":"):
            rows.append((float(m.group(1)), float(m.group(2))))
    if len(rows) < n:
        raise RuntimeError("could not read the summary table from DESCR")
    return rows[:n]


# ---------------------------------------------------------------- downstream
def downstream(xs: np.ndarray, ys: np.ndarray, xte: np.ndarray, yte: np.ndarray) -> dict[str, float]:
    """Accuracy on real test data of LogisticRegression and HistGradientBoosting trained on (xs, ys)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out = {}
    classes = np.unique(ys)
    for key, model in (
        ("lr", make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))),
        ("gbdt", HistGradientBoostingClassifier(max_iter=100, random_state=0)),
    ):
        if len(classes) < 2:
            out[key] = float(np.mean(yte == classes[0]))
            continue
        model.fit(xs, ys)
        out[key] = float(model.score(xte, yte))
    return out


# ---------------------------------------------------------------- PEARL
def run_pearl(ds: dict[str, Any], eps: float, seed: int, dp_schema: bool, args: argparse.Namespace) -> dict[str, Any]:
    digits = ds["name"] == "digits"
    pearl: dict[str, Any] = {
        "n_frequencies": args.m,
        "train_steps": args.steps,
        "train_threads": args.threads,
        "noise_ratio": args.noise_ratio,
    }
    if digits:
        private: Any = {"x": ds["xtr"].reshape(-1, 8, 8), "label": ds["ytr"]}
        if not dp_schema:
            pearl["data_schema"] = {"array": {"min": 0, "max": 16}}
    else:
        private = pd.DataFrame(ds["xtr"], columns=ds["names"])
        private[LABEL] = ds["ytr"]
        if not dp_schema:
            pearl["data_schema"] = {
                "columns": {n: {"type": ds["kinds"][n], "min": lo, "max": hi} for n, (lo, hi) in ds["bounds"].items()}
            }
    cfg = Config(
        method="pearl",
        n_synthetic=len(ds["xtr"]),
        data={"labels": ds["labels"], "label_column": "label" if digits else LABEL},
        privacy={"epsilon": eps if math.isfinite(eps) else 1.0, "delta": DELTA},
        pearl=pearl,
        seed=seed,
    )
    method = (PearlMethod if math.isfinite(eps) else NonPrivatePearl)(cfg, private)
    t0 = time.monotonic()
    method.prepare()
    with tempfile.TemporaryDirectory() as tmp:
        rd = RunDir(Path(tmp) / "run")
        rd.create(cfg)
        rows, report = method.run(rd, ProgressReporter(enabled=False))
        if digits:
            z = np.load(rd.path / "synthetic.npz")
            xs, ys = z["x"].reshape(len(z["x"]), -1).astype(np.float64), z["label"].astype(np.int64)
        else:
            df = pd.DataFrame(rows)
            # a column the DP schema could not derive is output with one empty placeholder value (and one
            # voted categorical holds number strings): non-numbers count as missing, imputed with 0
            feats = df[ds["names"]].apply(pd.to_numeric, errors="coerce").fillna(0.0)
            xs, ys = feats.to_numpy(dtype=np.float64), df[LABEL].to_numpy(dtype=np.int64)
    secs = time.monotonic() - t0
    out = downstream(xs, ys, ds["xte"], ds["yte"])
    out.update(seconds=secs, epsilon_reported=report["epsilon"], sigma_sketch=report["mechanisms"][-1]["sigma"])
    out["placeholder_columns"] = report.get("schema", {}).get("placeholder_columns", [])
    if digits and seed == 0 and args.grid and not dp_schema:
        save_grid(xs, ys, eps, dp_schema)
    return out


def save_grid(xs: np.ndarray, ys: np.ndarray, eps: float, dp_schema: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(10, 10, figsize=(5, 5))
    for c in range(10):
        idx = np.flatnonzero(ys == c)[:10]
        for k in range(10):
            ax = axes[c, k]
            ax.axis("off")
            if k < len(idx):
                ax.imshow(xs[idx[k]].reshape(8, 8), cmap="gray_r", vmin=0, vmax=16)
    tag = "inf" if not math.isfinite(eps) else f"{eps:g}"
    fig.suptitle(f"PEARL synthetic digits, epsilon = {tag}", fontsize=9)
    docs = Path(__file__).resolve().parent.parent / "docs"
    docs.mkdir(exist_ok=True)
    fig.savefig(docs / f"pearl_digits_eps{tag}{'_dpschema' if dp_schema else ''}.png", dpi=80)
    plt.close(fig)


# ---------------------------------------------------------------- baseline
def run_histogram(ds: dict[str, Any], eps: float, seed: int, bins: int = 16) -> dict[str, Any]:
    """Independent DP per-column histograms per class: a naive-Bayes-style generator."""
    t0 = time.monotonic()
    xtr, ytr = ds["xtr"], ds["ytr"]
    names, n_cls = ds["names"], len(ds["labels"])
    edges, centers = [], []
    for n in names:
        lo, hi = ds["bounds"][n]
        if ds["kinds"][n] == "integer" and hi - lo <= 32:
            e = np.arange(lo - 0.5, hi + 1.0)
        else:
            e = np.linspace(lo, hi, bins + 1)
        edges.append(e)
        centers.append(e)
    d = len(names)
    hist = [np.zeros((n_cls, len(e) - 1)) for e in edges]
    for j in range(d):
        idx = np.clip(
            np.searchsorted(edges[j], np.clip(xtr[:, j], edges[j][0], edges[j][-1]), side="right") - 1,
            0,
            len(edges[j]) - 2,
        )
        np.add.at(hist[j], (ytr, idx), 1.0)
    counts = np.bincount(ytr, minlength=n_cls).astype(np.float64)
    # one Gaussian release of (counts, all histograms): a record adds 1 to its class count and to one
    # bin of each of the d columns of its class -> L2 sensitivity sqrt(d + 1)
    sens = math.sqrt(d + 1)
    sigma = GaussianPlan.calibrate(eps, DELTA, 1, sens).sigma if math.isfinite(eps) else 0.0
    counts = add_gaussian_noise(counts, sigma)
    hist = [add_gaussian_noise(h, sigma) for h in hist]
    rng = np.random.default_rng(seed)
    shares = np.clip(counts, 0, None)
    shares = shares / shares.sum() if shares.sum() > 0 else np.full(n_cls, 1.0 / n_cls)
    n = len(xtr)
    ys = rng.choice(n_cls, size=n, p=shares)
    xs = np.zeros((n, d))
    for j in range(d):
        e = edges[j]
        for c in range(n_cls):
            rows = np.flatnonzero(ys == c)
            p = np.clip(hist[j][c], 0, None)
            p = p / p.sum() if p.sum() > 0 else np.full(len(p), 1.0 / len(p))
            b = rng.choice(len(p), size=len(rows), p=p)
            if ds["kinds"][names[j]] == "integer" and len(e) - 1 <= 33:
                xs[rows, j] = e[b] + 0.5
            else:
                xs[rows, j] = rng.uniform(e[b], e[b + 1])
    out = downstream(xs, ys, ds["xte"], ds["yte"])
    out.update(seconds=time.monotonic() - t0, sigma=sigma)
    return out


# ---------------------------------------------------------------- report
METHOD_NAMES = {
    "pearl": "PEARL (declared schema)",
    "pearl-dpschema": "PEARL (schema derived with DP)",
    "histogram": "DP per-column histograms (declared schema)",
    "real": "real data (ceiling)",
}


def markdown(table: dict[str, Any], clf: str = "lr") -> str:
    """The results as a Markdown table: mean +- std of test accuracy per dataset, method and epsilon."""
    eps_keys = ["0.2", "1", "10", "inf"]
    lines = [
        "| dataset | method | " + " | ".join(f"eps = {e}" for e in eps_keys) + " |",
        "|---|---|" + "---|" * len(eps_keys),
    ]
    for ds, methods in table.items():
        for method, cells in methods.items():
            if method == "real":
                r = cells[clf]["mean"]
                lines.append(f"| {ds} | {METHOD_NAMES[method]} | " + " | ".join(f"{r:.3f}" for _ in eps_keys) + " |")
                continue
            row = []
            for e in eps_keys:
                c = cells.get(e)
                if c is None:
                    row.append("-")
                elif clf not in c:
                    row.append(f"failed {c['failed']}/{c['failed']}")
                else:
                    txt = f"{c[clf]['mean']:.3f} ± {c[clf]['std']:.3f}"
                    if c.get("failed"):
                        txt += f" ({c['failed']} failed)"
                    row.append(txt)
            lines.append(f"| {ds} | {METHOD_NAMES.get(method, method)} | " + " | ".join(row) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- main
def _eps(e: float) -> float | str:
    """Strict JSON has no Infinity: epsilon = inf is written as the string "inf"."""
    return e if math.isfinite(e) else "inf"


def summarise(values: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "n": len(values)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="digits,breast_cancer,wine")
    ap.add_argument("--eps", default="0.2,1,10,inf")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--methods", default="pearl,pearl-dpschema,histogram,real")
    ap.add_argument("--m", type=int, default=None, help="n_frequencies (default: the config default)")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--noise-ratio", type=float, default=Config().pearl.noise_ratio, help="pearl.noise_ratio (auto m)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--grid", action="store_true", help="save PNG grids of synthetic digits under docs/")
    ap.add_argument("--name", default="pearl_eval")
    ap.add_argument("--markdown", metavar="JSON", help="only print the Markdown tables of a results file")
    args = ap.parse_args()
    if args.markdown:
        import json

        table = json.loads(Path(args.markdown).read_text())["table"]
        for clf in ("lr", "gbdt"):
            print(f"\n{clf}:\n" + markdown(table, clf))
        return
    if args.m is None:
        args.m = Config().pearl.n_frequencies
    eps_list = [float(e) for e in args.eps.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = args.methods.split(",")
    results: list[dict[str, Any]] = []
    table: dict[str, Any] = {}
    for name in args.datasets.split(","):
        ds = load(name)
        if "real" in methods:
            acc = downstream(ds["xtr"].astype(np.float64), ds["ytr"], ds["xte"], ds["yte"])
            results.append({"dataset": name, "method": "real", "epsilon": None, "seed": None, **acc})
            table.setdefault(name, {})["real"] = {k: summarise([acc[k]]) for k in ("lr", "gbdt")}
            print(f"{name} real: {acc}", flush=True)
        for method in [m for m in methods if m != "real"]:
            for eps in eps_list:
                if method == "pearl-dpschema" and not math.isfinite(eps):
                    continue  # without noise the derived schema is the exact one: same as a declared schema
                per_seed = []
                failed = []
                for seed in seeds:
                    try:
                        if method == "histogram":
                            r = run_histogram(ds, eps, seed)
                        else:
                            r = run_pearl(ds, eps, seed, method == "pearl-dpschema", args)
                    except DpsynthError as exc:  # e.g. a DP-derived schema unusable at this budget
                        failed.append(str(exc))
                        results.append(
                            {"dataset": name, "method": method, "epsilon": eps, "seed": seed, "error": str(exc)}
                        )
                        print(f"{name} {method} eps={eps:g} seed={seed}: FAILED {exc}", flush=True)
                        continue
                    rec = {"dataset": name, "method": method, "epsilon": _eps(eps), "seed": seed, **r}
                    rec["epsilon_reported"] = _eps(rec.get("epsilon_reported", eps))
                    results.append(rec)
                    per_seed.append(r)
                    print(
                        f"{name} {method} eps={eps:g} seed={seed}: lr={r['lr']:.3f} gbdt={r['gbdt']:.3f} "
                        f"({r['seconds']:.1f}s)",
                        flush=True,
                    )
                key = "inf" if not math.isfinite(eps) else f"{eps:g}"
                cell: dict[str, Any] = {
                    k: summarise([r[k] for r in per_seed]) for k in ("lr", "gbdt", "seconds") if per_seed
                }
                cell["failed"] = len(failed)
                table.setdefault(name, {}).setdefault(method, {})[key] = cell
    settings = {
        "delta": DELTA,
        "split": "train_test_split(test_size=0.25, random_state=0, stratify=y)",
        "n_frequencies": args.m,
        "noise_ratio": args.noise_ratio,
        "train_steps": args.steps,
        "seeds": seeds,
        "classifiers": {
            "lr": "StandardScaler + LogisticRegression(max_iter=3000)",
            "gbdt": "HistGradientBoostingClassifier(max_iter=100)",
        },
        "pearl_defaults": Config().pearl.model_dump(),
        "command": "python " + " ".join(sys.argv),
    }
    write_result(args.name, {"settings": settings, "table": table, "runs": results})
    for clf in ("lr", "gbdt"):
        print(f"\n{clf}:\n" + markdown(table, clf))


if __name__ == "__main__":
    main()
