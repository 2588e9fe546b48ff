"""DP Top-Q voting (WASP, Zou et al. ICML 2025, Sec. 3; docs/wasp.md, "Round structure" steps 2-3).

Each private sample (x_i, y_i) looks at the synthetic samples *of its own class*
in embedding space.  Its r-th nearest (r = 0..Q-1) gets weight 2^-r in H_near;
its r-th farthest gets 2^-r in H_far.  Aug-PE (Xie et al. ICML 2024) is Q = 1
with near votes only.

Adjacency: add/remove one private record.  That record contributes at most the
vector w = (2^0, ..., 2^-(Q-1)) to H_near (on Q distinct bins) and the same to
H_far, so the released vector moves by at most
    ||w||_2 * sqrt(2) = sqrt(2 * sum_{r<Q} 4^-r) < sqrt(8/3)
(or ||w||_2 without the far half).  The reference code used the L1 sum and an
XOR for 2^(Q-1); both under-noise.  ``tests/test_privacy.py`` checks this bound
with hypothesis by removing single records.

The histograms are multiples of 2^-(Q-1).  Under the PLD accountant the noise is the exact discrete
Gaussian on a grid 2^-b (b >= Q-1, fine enough that sigma spans ``MIN_GRID_STEPS`` steps); the
one record's move is then Q (or 2Q) coordinates of 2^(b-r) steps each, which the accountant composes
coordinate by coordinate (privacy/events.py).  Under the GDP accountant, whose formula is exact for the
continuous Gaussian only, the noise stays the float Gaussian.

The un-noised histograms exist only inside ``noisy_top_q_vote``; they are never
returned, written or logged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dpsynth.privacy.mechanisms import add_noise

# A discrete Gaussian whose scale spans few grid steps is measurably less private than the continuous one
# at the same sigma (bench/diag_discrete_gaussian.py: Q = 1 on the integers, sigma 2.2 steps, epsilon 4.007
# instead of 4.000); from about 100 steps on the two agree to the accountant's own rounding.
MIN_GRID_STEPS = 100.0


def top_q_weights(q: int) -> np.ndarray:
    return np.array([2.0**-r for r in range(q)], dtype=np.float64)


def top_q_moves(q: int, use_far: bool) -> tuple[float, ...]:
    """How far one record moves each coordinate it touches: 2^-r on Q near bins (and Q far bins)."""
    if q < 1:
        raise ValueError("q must be >= 1")
    return tuple(top_q_weights(q).tolist()) * (2 if use_far else 1)


def top_q_sensitivity(q: int, use_far: bool) -> float:
    """Declared L2 sensitivity of the concatenated (H_near[, H_far]) vector under add/remove."""
    if q < 1:
        raise ValueError("q must be >= 1")
    return math.sqrt((2.0 if use_far else 1.0) * sum(4.0**-r for r in range(q)))


@dataclass(frozen=True)
class NoisyVotes:
    """A released (noised) vote: safe to persist, plot and post-process."""

    near: np.ndarray  # one bin per synthetic sample
    far: np.ndarray | None
    sigma: float
    sensitivity: float
    grid_bits: int = 0  # > 0: discrete Gaussian noise on the grid 2^-grid_bits; 0: float Gaussian


def _integer_grid(emb: np.ndarray, bits: int, bound: float) -> np.ndarray:
    """``emb`` / ``bound`` clipped to [-1, 1] and scaled to integers on the grid 2^-bits (float64 values; a
    non-finite coordinate reads 0).  Row by row: each row's result is a function of that row alone."""
    x = np.array(emb, dtype=np.float64)  # a copy, then in place: the class's synthetic block is the memory
    np.nan_to_num(x, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    x /= bound  # a power of 2: exact
    np.clip(x, -1.0, 1.0, out=x)
    x *= 2.0**bits
    return np.rint(x, out=x)


def exact_score_grid(dim: int, synth_emb: np.ndarray) -> tuple[int, float]:
    """(bits, bound) of the grid the vote scores on, from public inputs only (the dimension and the synthetic
    embeddings): every coordinate divided by ``bound`` (a power of 2 at least the largest finite synthetic
    coordinate, and at least 1), clipped to [-1, 1] and rounded to 2^-bits, with bits <= 16 as large as
    keeps every score an integer of magnitude at most 2^53.  A common scale leaves the ranking as it is.

    Why exact: a record's ranking must be a function of that record alone (the sensitivity argument).  In
    float32 BLAS picks its kernel from the matrix shapes, so the number of other records of the class, which
    sets the chunk's row count, changed a record's scores in their last bits, enough to flip near-ties (an
    audit measured one removal in nine exceeding the declared sensitivity on near-duplicate samples).  With
    integer coordinates of magnitude at most 2^bits every product and partial sum of 2<p, s> - ||s||^2 is an
    integer of magnitude at most 3 * dim * 4^bits <= 2^53: exact in float64 in any order, so any kernel (and
    fused multiply-adds) gives the same bits."""
    top = max(float(synth_emb.max()), -float(synth_emb.min())) if synth_emb.size else 1.0  # no copy
    if not math.isfinite(top):  # a NaN or inf coordinate reads 0 (``_integer_grid``)
        finite = np.abs(synth_emb[np.isfinite(synth_emb)])
        top = float(finite.max()) if finite.size else 1.0
    bound = 2.0 ** math.ceil(math.log2(max(top, 1.0)))
    bits = min(16, math.floor((53 - math.log2(3 * max(dim, 1))) / 2))
    return bits, bound


def _vote_histograms(
    private_emb: np.ndarray,
    private_labels: np.ndarray,
    synth_emb: np.ndarray,
    synth_labels: np.ndarray,
    q: int,
    use_far: bool,
    chunk_rows: int = 256,  # float64 scores: the memory float32 had at 512
) -> tuple[np.ndarray, np.ndarray | None]:
    """Pre-noise histograms.  Module-private: call only from ``noisy_top_q_vote`` (and tests, and bench
    diagnostics that rebuild the exact vote of a benchmark run, whose "private" records are public data).

    Ranking uses the score 2<p,s> - ||s||^2 = ||p||^2 - ||p - s||^2 (largest = nearest in L2), computed by
    chunked matrix products so memory stays O(chunk_rows * n_class) beside the class's synthetic block for
    any M and N, exactly (``exact_score_grid``: no record's scores depend on how many others share its
    chunk); ``torch.topk`` selects the Q best and worst per row (several times faster than
    ``np.argpartition`` on 2 cores).
    """
    import torch

    n = synth_emb.shape[0]
    near = np.zeros(n, dtype=np.float64)
    far = np.zeros(n, dtype=np.float64) if use_far else None
    weights = top_q_weights(q)
    bits, bound = exact_score_grid(synth_emb.shape[1], synth_emb)
    for label in np.unique(private_labels):
        cand = np.flatnonzero(synth_labels == label)
        if cand.size == 0:
            continue  # nothing of this class to vote for: the records release nothing
        k = min(q, cand.size)
        s = _integer_grid(synth_emb[cand], bits, bound)  # one class at a time: float64 doubles the memory
        s_sq = np.einsum("ij,ij->i", s, s)
        rows = np.flatnonzero(private_labels == label)
        for start in range(0, rows.size, chunk_rows):
            score = _integer_grid(private_emb[rows[start : start + chunk_rows]], bits, bound) @ s.T
            score *= 2.0
            score -= s_sq[None, :]
            t = torch.from_numpy(score)
            nearest = torch.topk(t, k, dim=1, largest=True, sorted=True).indices.numpy()
            _accumulate(near, cand, nearest, weights[:k])
            if far is not None:
                farthest = torch.topk(t, k, dim=1, largest=False, sorted=True).indices.numpy()
                _accumulate(far, cand, farthest, weights[:k])
    return near, far


def _accumulate(hist: np.ndarray, cand: np.ndarray, ranked: np.ndarray, weights: np.ndarray) -> None:
    # ranked[i, r] is the r-th ranked candidate of private row i; distinct within a row.
    hist += np.bincount(
        cand[ranked].ravel(), weights=np.broadcast_to(weights, ranked.shape).ravel(), minlength=hist.size
    )


def noisy_top_q_vote(
    private_emb: np.ndarray,
    private_labels: np.ndarray,
    synth_emb: np.ndarray,
    synth_labels: np.ndarray,
    *,
    q: int,
    use_far: bool,
    sigma: float,
    grid_bits: int = 0,
    rng: np.random.Generator | None = None,
) -> NoisyVotes:
    """The Gaussian mechanism on the Top-Q histograms: the one place WASP reads private data.

    ``grid_bits`` > 0: the discrete Gaussian on the grid 2^-grid_bits (the ledger event's), else float noise."""
    if grid_bits and grid_bits < q - 1:
        raise ValueError(f"grid 2^-{grid_bits} is coarser than the Top-{q} histograms' 2^-{q - 1}")
    near, far = _vote_histograms(private_emb, private_labels, synth_emb, synth_labels, q, use_far)

    noisy_near = add_noise(near, sigma, grid_bits, rng)
    noisy_far = add_noise(far, sigma, grid_bits, rng) if far is not None else None
    del near, far
    return NoisyVotes(noisy_near, noisy_far, sigma, top_q_sensitivity(q, use_far), grid_bits)
