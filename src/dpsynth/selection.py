"""Post-processing of the noisy vote: generator weights, class shares, good/bad pools.

Everything here reads only released (noised) votes and public data, so it costs
no privacy (post-processing).  Formulas follow docs/wasp.md steps 4-6; the
normalisation avoids the reference code's division by a noisy sum that can be
near zero or negative.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from typing import TypeVar

import numpy as np

K = TypeVar("K", bound=Hashable)


def generator_weights(
    near: np.ndarray,
    generators: Sequence[str],
    sample_generators: Sequence[str],
    *,
    sigma: float,
    tau: float,
) -> dict[str, float]:
    """p = softmax(score / tau) with score_k = (votes per sample of k) / (votes per sample overall).

    The denominator is floored at 3 noise standard deviations of the overall mean
    (sigma / sqrt(n), public), so it is never ~0 or negative.

    A generator with no sample in the vote has no score of its own; it gets the lowest score of the
    others.  A fixed 0 would beat them all when their noisy votes are negative, handing the next round
    to the one generator the vote says nothing about; the mean of the others would still rank it above
    a generator the vote did measure.  The allocation's floor (``allocate``) keeps it in the next round,
    where it earns a score of its own.  No generator with samples: every weight is equal.
    """
    gens = np.asarray(sample_generators)
    n = len(near)
    overall = float(near.sum()) / max(n, 1)
    denom = max(overall, 3.0 * sigma / math.sqrt(max(n, 1)), 1e-12)
    scored = {g: float(near[gens == g].sum()) / int((gens == g).sum()) / denom for g in generators if (gens == g).any()}
    lowest = min(scored.values(), default=0.0)
    s = np.asarray([scored.get(g, lowest) for g in generators]) / tau
    p = np.exp(s - s.max())
    p /= p.sum()
    return {g: float(w) for g, w in zip(generators, p, strict=True)}


def allocate(total: int, shares: Mapping[K, float], floor: int = 0) -> dict[K, int]:
    """Split ``total`` by ``shares``: floor(total * p), remainder by largest fractional part.

    Every key gets at least ``floor`` (if the total allows) so that no generator or
    class starves permanently.  The one largest-remainder split of the package: WASP's
    per-generator and per-class budgets, PEARL's and dp-finetune's output class quotas.
    """
    keys = list(shares)
    if total <= 0 or not keys:
        return {k: 0 for k in keys}
    floor = min(floor, total // len(keys))
    rest = total - floor * len(keys)
    p = np.asarray([max(shares[k], 0.0) for k in keys], dtype=np.float64)
    p = p / p.sum() if p.sum() > 0 else np.full(len(keys), 1.0 / len(keys))
    raw = p * rest
    base = np.floor(raw).astype(int)
    order = np.argsort(-(raw - base), kind="stable")
    for i in order[: rest - int(base.sum())]:
        base[i] += 1
    return {k: int(b) + floor for k, b in zip(keys, base, strict=True)}


def allocate_classes(per_generator: Mapping[str, int], shares: Mapping[str, float]) -> dict[str, dict[str, int]]:
    """Split each generator's budget over the classes so that the *class totals* follow ``shares``.

    Rounding each generator's budget on its own gives every remainder to the same classes (ties go to
    the first): with 3 generators of 7, 7 and 6 samples and 4 even classes that is 6, 6, 5 and 3 samples
    per class instead of 5 each, round after round.  Here the rounding error is carried from one
    generator to the next (cumulative rounding), so each class total is within one sample of
    ``sum(budgets) * share`` and each generator's row still sums to its budget.
    """
    classes = list(shares)
    p = np.asarray([max(shares[c], 0.0) for c in classes], dtype=np.float64)
    p = p / p.sum() if p.sum() > 0 else np.full(len(classes), 1.0 / max(len(classes), 1))
    ideal = np.zeros(len(classes))
    given = np.zeros(len(classes))
    out: dict[str, dict[str, int]] = {}
    for g, n in per_generator.items():
        ideal += n * p
        due = np.clip(ideal - given, 0.0, None)  # what each class is owed so far (sums to about n)
        row = allocate(n, {c: float(d) for c, d in zip(classes, due, strict=True)} if due.sum() > 0 else dict(shares))
        given += np.asarray([row[c] for c in classes])
        out[g] = row
    return out


ClassCounts = dict[str, tuple[float, float]]  # label -> (estimated private records, variance of the estimate)


def class_count_estimates(
    near: np.ndarray,
    far: np.ndarray | None,
    sample_labels: Sequence[str],
    labels: Sequence[str],
    *,
    q: int,
    sigma: float,
) -> ClassCounts:
    """How many private records each class has, estimated from one released vote, with its variance.

    Every private record of class c puts exactly W_c = sum_{r < min(Q, n_c)} 2^-r on the near bins of
    the n_c synthetic samples of class c, and the same on their far bins, so the noisy near mass of the
    class is M_c W_c + N(0, n_c sigma^2), and likewise the far mass with independent noise.  Their
    mean over W_c estimates M_c without bias with variance n_c sigma^2 / (2 W_c^2) (twice that without
    far votes).  A class with no synthetic sample received no vote and gets no estimate.

    Why not the near mass alone, as one round's vote shows it: its noise grows with the population
    (the vote covers every sample made so far), so by the last rounds of a large run it swamps the
    signal.  At N = 1,000, M = 100, epsilon 4 the last round's two class masses were 177 and -25 (true
    about 100 each, noise sd 71), and the round was generated 90% / 10% (docs/quality.md).
    Post-processing of the release and of public counts: it costs no privacy."""
    lab = np.asarray(sample_labels)
    out: ClassCounts = {}
    for c in labels:
        mask = lab == c
        n = int(mask.sum())
        if n == 0:
            continue
        w = float(sum(2.0**-r for r in range(min(q, n))))
        mass, halves = float(near[mask].sum()), 1
        if far is not None:
            mass, halves = mass + float(far[mask].sum()), 2
        out[c] = (mass / (halves * w), n * sigma**2 / (halves * w * w))
    return out


def pooled_class_counts(rounds: Sequence[ClassCounts], labels: Sequence[str]) -> dict[str, float]:
    """Per class, the inverse-variance mean of the rounds' count estimates (:func:`class_count_estimates`;
    the rounds' noises are independent and the private counts do not change); NaN for a class no round
    could estimate.  Noisy, may be negative: post-processing of the released votes only."""
    counts: dict[str, float] = {}
    for c in labels:
        est = [r[c] for r in rounds if c in r]
        if not est:
            counts[c] = math.nan
            continue
        exact = [m for m, v in est if v <= 0]  # sigma = 0 (epsilon = inf): the vote is the count
        if exact:
            counts[c] = float(np.mean(exact))
            continue
        prec = np.asarray([1.0 / v for _, v in est])
        counts[c] = float(np.dot(prec, [m for m, _ in est]) / prec.sum())
    return counts


def pooled_class_shares(rounds: Sequence[ClassCounts], labels: Sequence[str], uniform_mix: float) -> dict[str, float]:
    """Per-class share from every vote released so far: :func:`pooled_class_counts`, clipped at 0,
    normalised, then mixed with uniform.

    A class no round could estimate, or estimates that are all <= 0, fall back to uniform.  Never from
    raw private label counts (docs/privacy.md, failure modes)."""
    uniform = np.full(len(labels), 1.0 / len(labels))
    counts = pooled_class_counts(rounds, labels)
    mass = np.asarray([max(counts[c], 0.0) if np.isfinite(counts[c]) else np.nan for c in labels])
    p = uniform if np.isnan(mass).any() or mass.sum() <= 0 else mass / mass.sum()
    p = (1 - uniform_mix) * p + uniform_mix * uniform
    return {c: float(x) for c, x in zip(labels, p, strict=True)}


def class_vote_signals(
    counts: Mapping[str, float], sample_labels: Sequence[str], *, q: int, sigma: float
) -> dict[str, float]:
    """:func:`vote_signal` class by class (an empty dict without noise): the near votes an average sample
    of class c receives, M_c W_c / n_c, over sigma.  The good and bad pools are chosen per class, so a
    class can be ranked by noise while the mean looks healthy: a class rare among the private records
    (M_c small) whose samples are many (the zero-shot round splits its samples evenly, and a vote over
    every sample keeps counting them) gets proportionally fewer votes per sample.  A missing or
    negative class estimate reads as 0 (it cannot hand out negative votes)."""
    if sigma <= 0:
        return {}
    out = {}
    for c, n in Counter(sample_labels).items():
        m = counts.get(c, math.nan)
        m = max(m, 0.0) if math.isfinite(m) else 0.0
        out[c] = m * sum(2.0**-r for r in range(min(q, n))) / n / sigma
    return out


# votes per sample / noise sd below which a vote hardly ranks: the run warns of it, and so does the report
WEAK_VOTE = 0.25


def vote_signal(counts: Mapping[str, float], sample_labels: Sequence[str], *, q: int, sigma: float) -> float | None:
    """How far one vote can rank its population: the near-vote mass an average sample receives, over the
    noise's standard deviation (None without noise).

    Every private record of class c hands out W_c = sum_{r < min(Q, n_c)} 2^-r near votes among the n_c
    samples of its class, so a vote over n samples gives the average sample sum_c M_c W_c / n, whatever
    the population holds, while the noise on each bin stays sigma.  The vote covers every sample made so
    far (docs/wasp.md, step 1), so the ratio falls round after round and with N: in the benchmark's runs
    (M = 100, epsilon 4, sigma 3.5) it was about 0.9 over 60 samples and 0.24 over 240, and the released
    top 8 per class shared 0.7 and 0.3 of its samples with the exact vote's top 8 (docs/quality.md).
    M_c comes from ``counts`` (:func:`pooled_class_counts`, negative estimates read as 0), so this reads
    the released votes and public counts only: post-processing, no privacy cost.  Per class:
    :func:`class_vote_signals`, whose mean weighted by n_c this is."""
    if sigma <= 0 or not sample_labels:
        return None
    n_c = Counter(sample_labels)
    per = class_vote_signals(counts, sample_labels, q=q, sigma=sigma)
    return sum(per[c] * n for c, n in n_c.items()) / len(sample_labels)


def rebase_budgets(
    budgets: Mapping[str, Mapping[str, int]], have: Mapping[str, Mapping[str, int]]
) -> dict[str, dict[str, int]]:
    """Budgets (generator -> class -> count) for a round that already holds samples (``have``, same shape).

    Topping each (generator, class) up to its budget can overshoot the round's total when the samples
    already made follow another split: a round resumed or extended under other class shares (runs
    made before the shares were pooled across votes).  Here the round still ends at its planned total:
    the samples it lacks go where the budgets exceed what is there, in proportion to that excess, and
    nothing already made is counted twice.  Budgets the samples already fit come back unchanged."""
    keys = [(g, c) for g, per in budgets.items() for c in per]
    held = {k: int(have.get(k[0], {}).get(k[1], 0)) for k in keys}
    excess = {k: max(int(budgets[k[0]][k[1]]) - held[k], 0) for k in keys}
    room = max(sum(int(budgets[g][c]) for g, c in keys) - sum(held.values()), 0)
    if sum(excess.values()) > room:
        excess = allocate(room, {k: float(v) for k, v in excess.items()}) if room else dict.fromkeys(keys, 0)
    out: dict[str, dict[str, int]] = {g: {} for g in budgets}
    for g, c in keys:
        out[g][c] = held[(g, c)] + excess[(g, c)]
    return out


def example_pools(
    near: np.ndarray,
    far: np.ndarray | None,
    candidates: np.ndarray,
    s: int,
    *,
    emb: np.ndarray | None = None,
    spread: int = 1,
) -> tuple[list[int], list[int]]:
    """One class's good and bad pools: indices into the voted population, never overlapping.

    Good: the most near votes; bad: the most far votes among the rest.  When the class has fewer than 2S
    samples (a small N, or many classes: at N = 100 with 4 classes a class has about 5 samples in the
    first vote), taking the top S of each would put the same samples in both pools, and a contrastive
    prompt would show one text as a good and as a poor example.  So the good pool takes at most half of
    the class (rounded up) and the bad pool comes from the other half.  Without far votes (Aug-PE), the
    good pool is the top S as before.

    ``spread`` > 1 (``wasp.pool_spread``) with the population's embeddings ``emb``: the good pool is S
    samples spread out in embedding space (:func:`spread_out`) among the top ``spread`` x S by near
    votes, instead of the top S.  Every sample of a round is written from L of the same S examples, and
    the top of the vote tends to be a few near-identical texts (docs/quality.md: the contrastive rounds
    are less diverse than the zero-shot round on both embedded datasets); spreading the pool keeps the
    vote's choice of region and lets the prompts cover more of it.  Post-processing of the released
    vote and of synthetic text: no privacy cost.
    """
    half = len(candidates) if far is None else math.ceil(len(candidates) / 2)
    if emb is not None and spread > 1:
        good = spread_out(top_indices(near, candidates, min(s * spread, half)), emb, s)
    else:
        good = top_indices(near, candidates, min(s, half))
    if far is None:
        return good, []
    rest = np.setdiff1d(candidates, np.asarray(good, dtype=candidates.dtype), assume_unique=True)
    # setdiff1d sorts: the stable ranking below breaks ties by population order, as for the good pool
    return good, top_indices(far, rest, s)


def spread_out(ranked: Sequence[int], emb: np.ndarray, s: int) -> list[int]:
    """``s`` of ``ranked`` (indices into ``emb``, best first), chosen greedily to be far apart.

    Farthest-point selection under cosine similarity: the best-ranked sample first, then each time the
    candidate whose closest chosen sample is least similar (ties go to the better-ranked).  A greedy
    2-approximation of the most spread-out subset (Gonzalez, 1985)."""
    if len(ranked) <= s:
        return list(ranked)
    x = np.asarray(emb, dtype=np.float64)[np.asarray(ranked)]
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    chosen = [0]
    closest = x @ x[0]  # each candidate's highest cosine to the chosen ones
    closest[0] = np.inf
    while len(chosen) < s:
        nxt = int(np.argmin(closest))  # argmin returns the first minimum: the better-ranked on ties
        chosen.append(nxt)
        closest = np.maximum(closest, x @ x[nxt])
        closest[chosen] = np.inf
    return [int(ranked[i]) for i in chosen]


def top_indices(scores: np.ndarray, candidates: np.ndarray, s: int) -> list[int]:
    """The ``s`` candidates with the largest noisy scores, best first."""
    if candidates.size == 0:
        return []
    order = np.argsort(-scores[candidates], kind="stable")[:s]
    return [int(i) for i in candidates[order]]


KEYWORD_PRIOR = 0.1  # keywords against other classes: the prior's weight, as a share of the background's texts


def pool_keywords(
    pools: Mapping[str, Sequence[str]],
    background: Sequence[str],
    k: int,
    exclude: Sequence[str] = (),
    background_labels: Sequence[Hashable] | None = None,
) -> dict[str, list[str]]:
    """The ``k`` words most characteristic of each class's good pool, best first (``wasp.variation:
    keywords``).

    Without ``background_labels`` (``wasp.keywords_against: population``), a word's score in a class is its
    summed TF-IDF weight over the pool's texts, with document frequencies from ``background`` (the whole
    voted population, every class): words frequent in the voted samples of one class and rare elsewhere
    come first.  Words every generator writes whatever the class ("latest", "world") can still rank high.

    With ``background_labels`` (the class of each ``background`` text; ``keywords_against:
    other_classes``), a word's score is how much more often the class's pool uses it than the background
    texts of the other classes: the z-score of the log-odds ratio with an informative prior (the binomial
    form of Monroe, Colaresi and Quinn, "Fightin' Words", Political Analysis 16(4), 2008, eq. 22), counting
    the share of texts that use the word, each share smoothed by a Beta prior worth a tenth of the
    background's texts (at least one) at the word's share of the whole background (add-one smoothed).
    Words all classes use score near zero; only words the pool uses more than the other classes are kept.

    English stop words (other languages keep theirs), words of under three letters and the words of
    ``exclude`` (the label names and the task, which every prompt states anyway) are left out.  The vote's
    signal then reaches the prompts as topics, not as texts to imitate (docs/wasp.md step 7).  Reads
    synthetic text chosen by a released vote and the labels its prompts asked for: post-processing, no
    privacy cost.
    """
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer  # only this variation needs them

    # words of 3 to 24 letters: longer "words" are runs of text in scripts written without spaces
    pattern = r"(?u)\b[^\W\d_][^\W\d_'-]{2,23}\b"
    word = re.compile(pattern)
    skip = {w.lower() for phrase in exclude for w in re.findall(r"[^\W\d_]+", phrase)}  # "rec.autos", "sci-fi"
    if background_labels is not None and len(background_labels) != len(background):
        raise ValueError(f"pool_keywords: {len(background_labels)} labels for {len(background)} background texts")
    vec: CountVectorizer = (
        TfidfVectorizer(stop_words="english", token_pattern=pattern)
        if background_labels is None
        else CountVectorizer(stop_words="english", token_pattern=pattern, binary=True)
    )
    try:
        seen = vec.fit_transform(background)
    except ValueError:  # no usable word in the whole population
        return {c: [] for c in pools}
    vocab = vec.get_feature_names_out()
    if background_labels is not None:
        # labels compared as text: int labels against the pools' str keys must not make every text "other"
        classes = np.asarray([str(b) for b in background_labels], dtype=object)
        # each word's share of background texts that use it, smoothed away from 0 and 1
        rate = (np.asarray(seen.sum(axis=0), dtype=np.float64).ravel() + 1.0) / (len(background) + 2.0)
        strength = max(1.0, KEYWORD_PRIOR * len(background))
    out: dict[str, list[str]] = {}
    for c, texts in pools.items():
        if not texts:
            out[c] = []
            continue
        in_pool = np.asarray(vec.transform(texts).sum(axis=0), dtype=np.float64).ravel()
        if background_labels is None:
            score, used = in_pool, in_pool
        else:
            others = np.flatnonzero(classes != str(c))
            in_others = np.asarray(seen[others].sum(axis=0), dtype=np.float64).ravel()
            score, used = _log_odds_z(in_pool, len(texts), in_others, len(others), rate, strength), in_pool
        order = np.argsort(-score, kind="stable")
        best = [str(vocab[i]) for i in order if score[i] > 0 and used[i] > 0 and vocab[i] not in skip][:k]
        out[c] = _as_written(best, texts, word)
    return out


def _log_odds_z(
    y: np.ndarray, n: int, y_rest: np.ndarray, n_rest: int, rate: np.ndarray, strength: float
) -> np.ndarray:
    """Per word, the z-score of the log-odds that a text uses it: ``y`` of ``n`` texts against ``y_rest`` of
    ``n_rest``, each smoothed by a Beta prior worth ``strength`` texts at the background ``rate`` (the
    binomial form of Monroe, Colaresi and Quinn 2008, eqs. 16, 18 and 22).  Positive where the ``n`` texts
    use the word more often; shrunk towards zero where either count is small.  Without enough prior, a word
    the other texts never use would get a huge variance and a small z, the opposite of what is wanted."""
    a, b = strength * rate, strength * (1.0 - rate)

    def log_odds(used: np.ndarray, total: int) -> tuple[np.ndarray, np.ndarray]:
        odds = np.log(used + a) - np.log(total - used + b)
        return odds, 1.0 / (used + a) + 1.0 / (total - used + b)

    (lo, var), (lo_rest, var_rest) = log_odds(y, n), log_odds(y_rest, n_rest)
    return (lo - lo_rest) / np.sqrt(var + var_rest)


def _as_written(best: list[str], texts: Sequence[str], word: re.Pattern[str]) -> list[str]:
    """Each of ``best`` (lower case) as ``texts`` write it most often ("NASA", not the vectorizer's "nasa");
    ties go to the lower-case form."""
    forms = Counter(w for t in texts for w in word.findall(t) if w.lower() in best)
    written: dict[str, str] = {}
    for form, _ in sorted(forms.items(), key=lambda fc: (-fc[1], fc[0] != fc[0].lower())):
        written.setdefault(form.lower(), form)
    return [written.get(w, w) for w in best]
