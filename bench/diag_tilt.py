"""Re-weighting a zero-shot + judge set towards the private class means: would it pay?  An offline check.

A use of the private records that keeps every zero-shot sample (so it cannot cost their diversity) and
only changes how much each counts: release each class's sum of unit-norm MiniLM embeddings of the M
private records with Gaussian noise (one release, L2 sensitivity 1 under add/remove, since a record joins
one class's sum), then give the samples of each class weights w_i proportional to exp(lambda . x_i)
(exponential tilting), lambda chosen so the weighted mean of the class matches the released mean, with
an L2 penalty ``reg`` on lambda because the target can lie outside the samples' hull.  The classifier is
logistic regression with those sample weights (what a user would get by resampling the set by them).

Not a DP method as written: the class sizes are taken as known (noisy counts would change little at
M = 1,000), and nothing is accounted.  Sigma is the Gaussian mechanism's at epsilon 4, delta 1e-5.

    python bench/diag_tilt.py   # bench/results/diag_tilt.json
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402
from diag_mix import _read, _set_dir  # noqa: E402
from diag_release import CACHE  # noqa: E402
from dpsynth.data import EMBEDDED_DATASETS  # noqa: E402
from dpsynth.evaluate.inputs import default_embedder, embed_test, load_test  # noqa: E402
from dpsynth.privacy.accountant import calibrate_noise_multiplier  # noqa: E402

SETS = [(n, s, f"zero-shot+judge-eps0-n{n}-m100-s{s}") for n in (300,) for s in (0, 1, 2)]
SETS += [(1000, 0, "zero-shot+judge-n1000-m100-s0")]
REGS = (0.01, 0.1)
DRAWS = 3  # noise draws per setting


def tilt(x: np.ndarray, mu: np.ndarray, reg: float) -> np.ndarray:
    """Weights (mean 1) of the exponential family through x whose mean is closest to mu (dual, L-BFGS)."""

    def dual(lam: np.ndarray) -> tuple[float, np.ndarray]:
        z = x @ lam
        top = z.max()
        e = np.exp(z - top)
        p = e / e.sum()
        return float(top + np.log(e.sum()) - lam @ mu + reg * lam @ lam), x.T @ p - mu + 2 * reg * lam

    lam = minimize(dual, np.zeros(x.shape[1]), jac=True, method="L-BFGS-B").x
    z = x @ lam
    w = np.exp(z - z.max())
    return w / w.mean()


def accuracy(x: np.ndarray, y: np.ndarray, w: np.ndarray | None, test: tuple[np.ndarray, np.ndarray]) -> float:
    clf = LogisticRegression(max_iter=2000).fit(x, y, sample_weight=w)
    return float((clf.predict(test[0]) == test[1]).mean())


def one_set(dataset: str, n: int, seed: int, name: str, emb: Any, test: Any, sigma: float) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    rows = _read(_set_dir(dataset) / f"{name}.jsonl")
    xs = embed_test([str(r["text"]) for r in rows], emb, CACHE)
    ys = np.asarray([str(r["label"]) for r in rows])
    out: dict[str, Any] = {"dataset": dataset, "set": name, "n": len(ys), "seed": seed}
    out["unweighted"] = round(accuracy(xs, ys, None, test), 4)
    for m in (100, 1000):
        real = EMBEDDED_DATASETS[f"embedded:{dataset}"].private(m, seed)
        xr = embed_test([str(t) for t in real["text"]], emb, CACHE)
        xr = xr / np.linalg.norm(xr, axis=1, keepdims=True)
        yr = np.asarray([str(v) for v in real["label"]])
        for noisy in (False, True):
            for reg in REGS:
                accs, ess = [], []
                for _ in range(DRAWS if noisy else 1):
                    w = np.ones(len(ys))
                    for c in np.unique(ys):
                        total = xr[yr == c].sum(0)
                        if noisy:
                            total = total + sigma * rng.standard_normal(total.shape)
                        w[ys == c] = tilt(xs[ys == c], total / max(int((yr == c).sum()), 1), reg)
                    accs.append(accuracy(xs, ys, w, test))
                    ess.append(float(w.sum() ** 2 / (w @ w)))
                key = f"m{m}-{'eps4' if noisy else 'exact'}-reg{reg}"
                out[key] = round(float(np.mean(accs)), 4)
                out[key + "-effective_n"] = round(float(np.mean(ess)))
    print(out, flush=True)
    return out


def main() -> None:
    sigma = calibrate_noise_multiplier(4.0, 1e-5, 1)
    emb = default_embedder()
    out: dict[str, Any] = {
        "sigma_per_unit_sensitivity": round(sigma, 4),
        "regs": list(REGS),
        "draws": DRAWS,
        "sets": [],
    }
    for dataset in ("imdb", "newsgroups"):
        t = load_test(EMBEDDED_DATASETS[f"embedded:{dataset}"].source)
        test = (embed_test(list(t.texts), emb), np.asarray([str(v) for v in t.labels]))
        for n, seed, name in SETS:
            if (_set_dir(dataset) / f"{name}.jsonl").exists():
                out["sets"].append(one_set(dataset, n, seed, name, emb, test, sigma))
    write_result("diag_tilt", out)


if __name__ == "__main__":
    main()
