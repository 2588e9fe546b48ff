"""Fidelity of a synthetic set to real held-out data, in sentence-embedding space.

* :func:`frechet_distance` - FID: Fréchet distance between the Gaussians fitted to the two sets.
* :func:`precision_recall` - k-NN manifold precision and recall (Kynkäänniemi et al., NeurIPS 2019).
* :func:`mauve_score` - MAUVE (Pillutla et al., 2021) on precomputed features, via ``mauve-text`` (the
  ``eval`` extra); if ``mauve-text`` or its ``faiss`` dependency cannot be imported, the same algorithm
  with scikit-learn's k-means (the result says which backend ran).
* :func:`text_stats` - length and vocabulary statistics; :func:`label_distribution`.
* :func:`readings` - what FID, MAUVE and precision/recall say, in plain words, from the
  thresholds below.

Every function takes arrays that are already embedded: embed each text once and share the arrays.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

_WORD = re.compile(r"\w+(?:'\w+)*")


# ---------------------------------------------------------------- FID
def _gaussian(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    mu = x.mean(axis=0)
    cov = np.cov(x, rowvar=False) if len(x) > 1 else np.zeros((x.shape[1], x.shape[1]))
    return mu, np.atleast_2d(cov)


def single_threaded_blas() -> Any:
    """Context manager: BLAS on one thread.  Multi-threaded OpenBLAS is pathologically slow for the
    small eigendecompositions here on a busy machine (a 384x384 ``eigh``: 1-4 s instead of 0.03 s
    on 2 shared cores), and the chunked matrix products are no slower on one thread."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(x: np.ndarray, y: np.ndarray) -> float:
    """FID between samples x (n, d) and y (m, d): |mu_x - mu_y|^2 + tr(S_x + S_y - 2 (S_x S_y)^(1/2)).

    tr((S_x S_y)^(1/2)) is computed as the sum of square roots of the eigenvalues of the symmetric
    PSD matrix S_x^(1/2) S_y S_x^(1/2) (same spectrum, no complex round-off as with ``sqrtm``).
    Small negative round-off is clipped to 0.  Sample covariances (ddof=1); n or m < d is allowed
    but biased upwards, so compare FIDs only at equal sample sizes.
    """
    _check_pair(x, y)
    with single_threaded_blas():
        mu1, s1 = _gaussian(x)
        mu2, s2 = _gaussian(y)
        r = _psd_sqrt(s1)
        m = r @ s2 @ r
        eig = np.linalg.eigvalsh((m + m.T) / 2)
    tr_covmean = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    diff = mu1 - mu2
    fid = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)
    return max(fid, 0.0)


# ---------------------------------------------------------------- precision / recall
def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0)


def knn_radii(x: np.ndarray, k: int = 3, chunk: int = 1024) -> np.ndarray:
    """Squared distance from each row of x to its k-th nearest *other* row of x."""
    x = np.asarray(x, dtype=np.float32)
    n = len(x)
    if n <= k:
        raise ValueError(f"k-NN radii need more than k={k} samples, got {n}")
    out = np.empty(n, dtype=np.float32)
    for s in range(0, n, chunk):
        d = _sq_dists(x[s : s + chunk], x)
        # the row's own distance (0) is the 0-th smallest, so the k-th other neighbour is at index k
        out[s : s + chunk] = np.partition(d, k, axis=1)[:, k]
    return out


def _coverage(points: np.ndarray, centres: np.ndarray, radii: np.ndarray, chunk: int = 1024) -> float:
    """Fraction of points inside at least one ball (centre_j, radius_j) (squared radii)."""
    points = np.asarray(points, dtype=np.float32)
    centres = np.asarray(centres, dtype=np.float32)
    inside = 0
    for s in range(0, len(points), chunk):
        d = _sq_dists(points[s : s + chunk], centres)
        inside += int((d <= radii[None, :] * (1 + 1e-6) + 1e-9).any(axis=1).sum())
    return inside / len(points)


def precision_recall(
    real: np.ndarray,
    fake: np.ndarray,
    k: int = 3,
    real_radii: np.ndarray | None = None,
) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN manifolds, k = 3.

    precision: fraction of fake samples inside the real manifold (the union of balls around each
    real sample reaching its k-th nearest real neighbour); recall: fraction of real samples inside
    the fake manifold.  ``real_radii`` (from :func:`knn_radii`) may be passed to reuse them.
    Both sets enter with all their samples; recall grows with the number of fake samples, so
    compare methods at equal synthetic set sizes.
    """
    _check_pair(real, fake)
    with single_threaded_blas():
        rr = knn_radii(real, k) if real_radii is None else real_radii
        fr = knn_radii(fake, k)
        return _coverage(fake, real, rr), _coverage(real, fake, fr)


# ---------------------------------------------------------------- MAUVE
def mauve_score(
    p_features: np.ndarray,
    q_features: np.ndarray,
    *,
    seed: int = 25,
    num_buckets: int | str = "auto",
    backend: str = "auto",
    **kwargs: Any,
) -> dict[str, Any]:
    """MAUVE between P (synthetic) and Q (real) on precomputed features.

    ``backend="auto"`` uses ``mauve.compute_mauve`` from ``mauve-text`` (PCA to 90 % variance,
    faiss k-means with n/10 buckets, 5 restarts, scaling factor 5), and falls back to
    :func:`mauve_fallback` (identical algorithm, scikit-learn k-means) when ``mauve-text`` or
    ``faiss`` is not importable.  ``backend="mauve-text"`` insists on it: without it, a
    ``MissingExtraError`` naming the ``eval`` extra.  Returns ``{"mauve", "mauve_star", "num_buckets", "backend"}``.
    """
    _check_pair(p_features, q_features)
    p = np.asarray(p_features, dtype=np.float32)
    q = np.asarray(q_features, dtype=np.float32)
    if backend in ("auto", "mauve-text"):
        try:
            import mauve  # mauve-text; imports faiss at module import
        except ImportError as exc:
            if backend == "mauve-text":
                from dpsynth.extras import MissingExtraError

                dist = {"mauve": "mauve-text", "faiss": "faiss-cpu"}.get(str(exc.name).split(".")[0], "mauve-text")
                raise MissingExtraError("MAUVE with backend mauve-text", "eval", [dist]) from None
        else:
            with _without_faiss_size_warning():
                out = mauve.compute_mauve(
                    p_features=p, q_features=q, seed=seed, num_buckets=num_buckets, verbose=False, **kwargs
                )
            return {
                "mauve": float(out.mauve),
                "mauve_star": float(out.mauve_star),
                "num_buckets": int(out.num_buckets),
                "backend": "mauve-text",
            }
    if backend not in ("auto", "mauve-text", "fallback"):
        raise ValueError(f"unknown MAUVE backend {backend!r}; use auto, mauve-text or fallback")
    return mauve_fallback(p, q, seed=seed, num_buckets=num_buckets, **kwargs)


# faiss's k-means writes this to the process's stderr (from C++, past sys.stderr) whenever a set has fewer than
# 39 points per bucket, i.e. for every set under a few thousand records; the evaluation states the sample size
# beside MAUVE itself (``read_mauve``), so the line only alarms a user who did nothing wrong.
_FAISS_SIZE_WARNING = re.compile(r"^WARNING clustering \d+ points to \d+ centroids: please provide at least")


@contextlib.contextmanager
def _without_faiss_size_warning() -> Iterator[None]:
    """File descriptor 2 into a temporary file for the block; afterwards every line but faiss's size warning
    goes to stderr as it would have."""
    fd = 2  # where C++ writes, whatever sys.stderr is (a notebook's or pytest's stream)
    try:
        saved = os.dup(fd)
    except OSError:  # no file descriptor 2 (a daemon): nothing reaches a console to filter
        yield
        return
    sys.stderr.flush()
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            kept = [
                line
                for line in tmp.read().decode("utf-8", "replace").splitlines(keepends=True)
                if not _FAISS_SIZE_WARNING.match(line)
            ]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def mauve_fallback(
    p: np.ndarray,
    q: np.ndarray,
    *,
    seed: int = 25,
    num_buckets: int | str = "auto",
    kmeans_explained_var: float = 0.9,
    kmeans_num_redo: int = 5,
    kmeans_max_iter: int = 500,
    divergence_curve_discretization_size: int = 25,
    mauve_scaling_factor: float = 5.0,
) -> dict[str, Any]:
    """MAUVE as in ``mauve-text`` 0.4 (l2-normalise, PCA to 90 % variance, k-means, divergence
    curve), with scikit-learn's KMeans instead of faiss.  Cluster assignments (and so the score's
    last digits) differ from faiss's; the definition is the same."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import normalize

    if num_buckets == "auto":
        buckets = max(2, int(round(min(len(p), len(q)) / 10)))
    elif isinstance(num_buckets, int):
        buckets = num_buckets
    else:
        raise ValueError('num_buckets must be an integer or "auto"')
    data = normalize(np.vstack([q, p]).astype(np.float64), norm="l2", axis=1)
    pca = PCA(n_components=None, whiten=False, random_state=seed + 1).fit(data)
    idx = int(np.argmax(np.cumsum(pca.explained_variance_ratio_) >= kmeans_explained_var))
    data = pca.transform(data)[:, : idx + 1].astype(np.float32)
    km = KMeans(n_clusters=buckets, n_init=kmeans_num_redo, max_iter=kmeans_max_iter, random_state=seed + 2).fit(data)
    labels = km.labels_
    q_counts = np.bincount(labels[: len(q)], minlength=buckets).astype(np.float64)
    p_counts = np.bincount(labels[len(q) :], minlength=buckets).astype(np.float64)
    weights = np.linspace(1e-6, 1 - 1e-6, divergence_curve_discretization_size)
    score = _mauve_from_hist(p_counts / p_counts.sum(), q_counts / q_counts.sum(), weights, mauve_scaling_factor)
    star = _mauve_from_hist(
        (p_counts + 0.5) / (p_counts + 0.5).sum(),
        (q_counts + 0.5) / (q_counts + 0.5).sum(),
        weights,
        mauve_scaling_factor,
    )
    return {"mauve": score, "mauve_star": star, "num_buckets": buckets, "backend": "fallback-sklearn-kmeans"}


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    if np.logical_and(p != 0, q == 0).any():
        return math.inf
    m = np.logical_and(p != 0, q != 0)
    return float(np.sum(p[m] * np.log(p[m] / q[m])))


def _mauve_from_hist(p: np.ndarray, q: np.ndarray, weights: np.ndarray, c: float) -> float:
    curve = [[0.0, math.inf]]
    for w in np.sort(weights):
        r = w * p + (1 - w) * q
        curve.append([_kl(q, r), _kl(p, r)])
    curve.append([math.inf, 0.0])
    from sklearn.metrics import auc

    xy = np.exp(-c * np.asarray(curve))
    x, y = xy[:, 0], xy[:, 1]
    i1, i2 = np.argsort(x), np.argsort(y)
    return float(0.5 * (auc(x[i1], y[i1]) + auc(y[i2], x[i2])))


# ---------------------------------------------------------------- text statistics
def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters, digits, underscores, inner apostrophes)."""
    return _WORD.findall(text.lower())


OPENING_WORDS = 5


def text_stats(texts: Sequence[str], labels: Sequence[str] | None = None) -> dict[str, float | int]:
    """Mean / median words per text, distinct-1 / distinct-2 (unique n-grams over all n-grams in
    the whole set), vocabulary size (distinct lower-cased words), and how often texts begin alike:
    distinct openings (distinct first five words over texts, per class, mean over classes) and the
    commonest opening's share of its class (largest over classes).  Repeated openings mark a set written
    from few ideas (docs/quality.md, "Repetition"); the test set's figure is the level real text of the
    task reaches, which differs by task (forum posts of one thread share their subject line)."""
    toks = [words(t) for t in texts]
    by_class: dict[str, list[list[str]]] = {}
    for i, t in enumerate(toks):
        by_class.setdefault(str(labels[i]) if labels is not None else "", []).append(t)
    distinct, commonest = [], []
    for group in by_class.values():
        opens = Counter(" ".join(t[:OPENING_WORDS]) for t in group)
        distinct.append(len(opens) / len(group))
        commonest.append(opens.most_common(1)[0][1] / len(group))
    lengths = np.array([len(t) for t in toks], dtype=np.float64)
    uni: Counter[str] = Counter()
    bi: Counter[tuple[str, str]] = Counter()
    for t in toks:
        uni.update(t)
        bi.update(zip(t, t[1:], strict=False))
    n_uni, n_bi = sum(uni.values()), sum(bi.values())
    return {
        "n": len(texts),
        "mean_words": float(lengths.mean()) if len(lengths) else 0.0,
        "median_words": float(np.median(lengths)) if len(lengths) else 0.0,
        "distinct_1": len(uni) / n_uni if n_uni else 0.0,
        "distinct_2": len(bi) / n_bi if n_bi else 0.0,
        "vocabulary_size": len(uni),
        "distinct_openings": float(np.mean(distinct)) if distinct else 0.0,
        "commonest_opening_share": max(commonest) if commonest else 0.0,
    }


def label_consistency(
    x_syn: np.ndarray,
    syn_labels: Sequence[str],
    x_test: np.ndarray,
    test_labels: Sequence[str],
    groups: Sequence[str] | None = None,
    folds: int = 5,
) -> dict[str, Any]:
    """Does the synthetic text carry the label it was generated for?  Train on real, test on synthetic.

    A judge (logistic regression on the real test embeddings) labels every synthetic sample; the score is
    the share it agrees with.  A small generator asked for a "positive review" that writes a lukewarm or
    negative one lowers it, and such samples teach the downstream classifier the wrong boundary, which
    accuracy alone does not show.  The judge errs on real text too, so it is reported beside the judge's own
    ``folds``-fold cross-validated accuracy on the real test set: a synthetic set that scores as high is as
    consistent as real data.  ``groups`` (the generator of each sample) gives a score per generator.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    y_test = np.asarray([str(v) for v in test_labels])
    y_syn = np.asarray([str(v) for v in syn_labels])
    xt = np.asarray(x_test, dtype=np.float32)
    with single_threaded_blas():
        judge = LogisticRegression(max_iter=2000).fit(xt, y_test)
        agree = judge.predict(np.asarray(x_syn, dtype=np.float32)) == y_syn
        n_folds = min(folds, int(np.min(np.unique(y_test, return_counts=True)[1])))
        real = (
            float(cross_val_score(LogisticRegression(max_iter=2000), xt, y_test, cv=n_folds).mean())
            if n_folds >= 2
            else None
        )
    out: dict[str, Any] = {
        "score": float(agree.mean()),
        "judge": "LogisticRegression on the real test embeddings (train on real, test on synthetic)",
        "real_reference": real,
        "by_label": {c: float(agree[y_syn == c].mean()) for c in sorted(set(y_syn.tolist()))},
    }
    if groups is not None:
        g = np.asarray([str(v) for v in groups])
        out["by_generator"] = {
            k: {"n": int((g == k).sum()), "score": float(agree[g == k].mean())} for k in sorted(set(g.tolist()))
        }
    return out


def label_distribution(labels: Iterable[str]) -> dict[str, dict[str, float | int]]:
    """{"counts": {label: n}, "shares": {label: n / total}}, labels sorted."""
    c = Counter(labels)
    total = sum(c.values())
    keys = sorted(c)
    return {
        "counts": {k: int(c[k]) for k in keys},
        "shares": {k: c[k] / total for k in keys} if total else {},
    }


# ---------------------------------------------------------------- readings in plain words
# The cut-offs below turn numbers into words for a reader.  They are this project's conventions, not
# standards of the metrics' papers, set against what sets of 100 texts scored on the embedded IMDb data
# (MiniLM embeddings, against the 2,000 test reviews; docs/quality.md): 100 real reviews MAUVE 0.99 and
# FID 0.43; zero-shot sets of small instruction models MAUVE 0.46-0.82 and FID 0.56-0.59; Aug-PE with
# Gemma-3-270M, whose texts often do not read like reviews, MAUVE 0.13-0.15 and FID 0.67-0.69.
#
# MAUVE (0..1; how much the two distributions overlap): the first threshold a score reaches picks the word.
MAUVE_WORDS: tuple[tuple[float, str], ...] = (
    (0.9, "closely"),
    (0.6, "moderately"),
    (0.3, "only partly"),
    (0.0, "hardly"),
)
# Precision (share of synthetic texts inside the real manifold) and recall (share of real texts inside
# the synthetic manifold): at least PR_HIGH reads "most", below PR_LOW "little", in between "part".
PR_HIGH = 0.8
PR_LOW = 0.5
# FID has no fixed scale: it depends on the embedding model and shrinks as the samples grow (20,000 real
# reviews: 0.02).  It is read only against a real sample of the synthetic set's own size: up to FID_CLOSE
# times that sample's FID reads "about as close as real data", up to FID_FAR times "further", beyond "far"
# (zero-shot above: 1.3 times, Aug-PE with Gemma-3-270M: 1.6 times).
FID_CLOSE = 1.1
FID_FAR = 1.5


def read_mauve(mauve: float, n_min: int | None = None, min_samples: int = 100) -> str:
    """MAUVE in words; flagged unreliable below ``min_samples`` texts on the smaller side."""
    word = next((w for t, w in MAUVE_WORDS if mauve >= t), MAUVE_WORDS[-1][1])
    out = f"MAUVE {mauve:.2f}: the synthetic texts' distribution {word} overlaps the real one"
    if n_min is not None and n_min < min_samples:
        out += f" (from fewer than {min_samples} texts per side: unreliable)"
    return out


def read_precision_recall(precision: float, recall: float, n_synthetic: int, n_real: int) -> str:
    """Precision and recall in words: realism of the synthetic texts, coverage of the real ones."""
    if precision >= PR_HIGH:
        p = f"most synthetic texts ({precision:.0%}) lie among real ones"
    elif precision >= PR_LOW:
        p = f"{precision:.0%} of the synthetic texts lie among real ones, the rest apart from them"
    else:
        p = f"most synthetic texts lie apart from real ones (only {precision:.0%} among them)"
    if recall >= PR_HIGH:
        r = f"they cover most of the real texts' variety ({recall:.0%})"
    elif recall >= PR_LOW:
        r = f"they cover part of the real texts' variety ({recall:.0%})"
    else:
        r = f"they cover little of the real texts' variety ({recall:.0%})"
    out = f"precision {precision:.2f}, recall {recall:.2f}: {p}; {r}"
    if recall < PR_HIGH and n_synthetic < n_real:
        out += "; recall grows with the number of synthetic texts, so compare it at equal sizes"
    return out


def read_fid(fid: float, real_fid: float | None = None) -> str:
    """FID in words, against the FID of a real sample of the same size when there is one."""
    if real_fid is None or not real_fid > 0:
        return (
            f"FID {fid:.3f}: lower is closer, but it has no fixed scale (it depends on the embedding model and "
            "shrinks with more samples); compare it only between sets of the same size"
        )
    ratio = fid / real_fid
    ref = f"a real sample of the same size ({real_fid:.3f})"
    if ratio <= FID_CLOSE:
        return f"FID {fid:.3f}: about as close to the real test data as {ref}"
    if ratio <= FID_FAR:
        return f"FID {fid:.3f}: further from the real test data than {ref}"
    return f"FID {fid:.3f}: far from the real test data, {ratio:.2f} times the FID of {ref}"


def readings(fid_res: dict[str, Any], min_samples: int = 100) -> dict[str, str]:
    """Plain-words readings of an evaluation's fidelity block (keys: fid, mauve, precision_recall)."""
    out: dict[str, str] = {}
    n_syn, n_real = int(fid_res.get("n_synthetic") or 0), int(fid_res.get("n_test") or 0)
    fid = _finite(fid_res.get("fid"))
    if fid is not None:
        ref = fid_res.get("fid_real_reference")
        out["fid"] = read_fid(fid, _finite(ref.get("fid")) if isinstance(ref, dict) else None)
    mauve = _finite(fid_res.get("mauve"))
    if mauve is not None:
        out["mauve"] = read_mauve(mauve, min(n_syn, n_real) or None, min_samples)
    p, r = _finite(fid_res.get("precision")), _finite(fid_res.get("recall"))
    if p is not None and r is not None:
        out["precision_recall"] = read_precision_recall(p, r, n_syn, n_real)
    return out


def _finite(x: Any) -> float | None:
    """``x`` as a float when it is a finite number (JSON null, NaN and strings give None)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


def _check_pair(x: np.ndarray, y: np.ndarray) -> None:
    if np.ndim(x) != 2 or np.ndim(y) != 2:
        raise ValueError("embeddings must be 2-d arrays (n, d)")
    if np.shape(x)[1] != np.shape(y)[1]:
        raise ValueError(f"embedding dimensions differ: {np.shape(x)[1]} vs {np.shape(y)[1]}")
    if len(x) == 0 or len(y) == 0:
        raise ValueError("cannot compare an empty embedding set")
