"""Post-processing of noisy votes and prompt/clean-up helpers (public data only)."""

from __future__ import annotations

import math
import random
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dpsynth.privacy.voting import _vote_histograms
from dpsynth.prompts import (
    PromptBuilder,
    clean_output,
    copies_example,
    cut_to_sentence,
    drop_meta_talk,
    strip_frame,
)
from dpsynth.selection import (
    allocate,
    allocate_classes,
    class_count_estimates,
    class_vote_signals,
    example_pools,
    generator_weights,
    pool_keywords,
    pooled_class_counts,
    pooled_class_shares,
    rebase_budgets,
    spread_out,
    top_indices,
    vote_signal,
)


@given(total=st.integers(0, 500), shares=st.lists(st.floats(0, 10), min_size=1, max_size=6), floor=st.integers(0, 5))
def test_allocate_sums_to_total_and_respects_floor(total, shares, floor) -> None:
    keys = {f"k{i}": s for i, s in enumerate(shares)}
    out = allocate(total, keys, floor=floor)
    assert sum(out.values()) == total
    eff_floor = min(floor, total // len(keys))
    assert all(v >= eff_floor for v in out.values())


def test_allocate_follows_shares() -> None:
    assert allocate(10, {"a": 0.7, "b": 0.3}) == {"a": 7, "b": 3}
    assert allocate(10, {"a": 0.0, "b": 0.0}) == {"a": 5, "b": 5}


def test_generator_weights_favour_voted_generator_and_survive_negative_noise() -> None:
    near = np.array([5.0, 4.0, 6.0, 0.1, -0.2, 0.0])
    gens = ["a", "a", "a", "b", "b", "b"]
    w = generator_weights(near, ["a", "b"], gens, sigma=1.0, tau=1.0)
    assert w["a"] > w["b"] and sum(w.values()) == pytest.approx(1.0)
    # all-negative noisy votes: no division by ~0, no sign flip, still a distribution
    w2 = generator_weights(np.array([-3.0, -2.0, -5.0, -4.0]), ["a", "b"], ["a", "a", "b", "b"], sigma=3.0, tau=1.0)
    assert all(np.isfinite(list(w2.values()))) and sum(w2.values()) == pytest.approx(1.0)
    assert w2["a"] > w2["b"]


def test_class_shares_from_one_vote_clip_and_mix_with_uniform() -> None:
    near = np.array([10.0, 10.0, -50.0, 0.0])
    est = class_count_estimates(near, None, ["0", "0", "1", "1"], ["0", "1"], q=1, sigma=1.0)
    assert est["0"] == (20.0, 2.0) and est["1"] == (-50.0, 2.0)  # W = 1 for Q = 1; variance n sigma^2
    s = pooled_class_shares([est], ["0", "1"], uniform_mix=0.2)
    assert s["0"] == pytest.approx(0.9) and s["1"] == pytest.approx(0.1)
    assert pooled_class_shares([], ["0", "1"], 0.2) == {"0": 0.5, "1": 0.5}  # nothing released yet


@pytest.mark.parametrize("use_far", [True, False])
def test_class_count_estimates_recover_the_private_counts_without_noise(use_far: bool) -> None:
    """Each private record puts exactly W_c on its class's bins: near (and far) mass / W_c is M_c, also for
    a class with fewer synthetic samples than Q (W_c then sums only n_c weights)."""
    rng = np.random.default_rng(0)
    priv_y = np.array(["a"] * 7 + ["b"] * 3 + ["c"] * 5)
    syn_y = np.array(["a"] * 40 + ["b"] * 2 + ["c"] * 9)
    near, far = _vote_histograms(rng.normal(size=(15, 6)), priv_y, rng.normal(size=(51, 6)), syn_y, 4, use_far)
    est = class_count_estimates(near, far, list(syn_y), ["a", "b", "c", "d"], q=4, sigma=0.0)
    assert {c: m for c, (m, _) in est.items()} == pytest.approx({"a": 7.0, "b": 3.0, "c": 5.0})
    assert "d" not in est  # no synthetic sample of "d": no vote, no estimate
    assert pooled_class_shares([est], ["a", "b", "c"], 0.0) == pytest.approx({"a": 7 / 15, "b": 0.2, "c": 1 / 3})


def test_pooled_class_shares_stay_near_the_truth_when_the_last_vote_is_swamped_by_noise() -> None:
    """Regression (the N = 1,000 run generated its last round 90% / 10% from one noisy vote over 800
    samples): pooling every released vote by inverse variance keeps the shares near the private ones,
    where the last vote alone does not.  Simulated at the default run's noise (epsilon 4, M = 100 of
    two equal classes, Q = 8, near + far, sigma 3.53), populations 200, 400, 600, 800."""
    rng = np.random.default_rng(1)
    sigma, w, labels = 3.53, sum(2.0**-r for r in range(8)), ["0", "1"]
    last_alone, pooled = [], []
    for _ in range(300):
        rounds = []
        for n in (200, 400, 600, 800):
            y = ["0"] * (n // 2) + ["1"] * (n // 2)
            true = np.full(n, 50 * w / (n // 2))  # each class's mass M_c W spread over its samples
            near, far = true + rng.normal(0, sigma, n), true + rng.normal(0, sigma, n)
            rounds.append(class_count_estimates(near, far, y, labels, q=8, sigma=sigma))
            alone = pooled_class_shares([class_count_estimates(near, None, y, labels, q=8, sigma=sigma)], labels, 0.2)
        last_alone.append(abs(alone["0"] - 0.5))
        pooled.append(abs(pooled_class_shares(rounds, labels, 0.2)["0"] - 0.5))
    assert np.mean(pooled) < 0.05 and max(pooled) < 0.25
    assert np.mean(last_alone) > 3 * np.mean(pooled)


def test_vote_signal_is_the_mean_vote_per_sample_over_the_noise() -> None:
    """With the true class counts, the signal is exactly the exact vote's mean bin over sigma: every
    private record hands out W_c = sum 2^-r over min(Q, n_c) bins of its class."""
    rng = np.random.default_rng(2)
    priv_y = np.array(["a"] * 30 + ["b"] * 10)
    syn_y = np.array(["a"] * 50 + ["b"] * 5)  # class b has fewer samples than Q
    near, _ = _vote_histograms(rng.normal(size=(40, 6)), priv_y, rng.normal(size=(55, 6)), syn_y, 8, False)
    sig = vote_signal({"a": 30.0, "b": 10.0}, list(syn_y), q=8, sigma=2.0)
    assert sig == pytest.approx(near.mean() / 2.0)
    assert vote_signal({"a": 30.0, "b": 10.0}, list(syn_y), q=8, sigma=0.0) is None  # epsilon = inf
    # a negative or missing class estimate adds nothing (it cannot hand out negative votes)
    assert vote_signal({"a": 30.0, "b": -4.0}, list(syn_y), q=8, sigma=2.0) == vote_signal(
        {"a": 30.0}, list(syn_y), q=8, sigma=2.0
    )


def test_class_vote_signals_are_each_class_mean_vote_over_the_noise() -> None:
    """Class by class, the signal is the exact vote's mean bin of that class over sigma; their mean
    weighted by class size is vote_signal.  A class rare among the private records but not among the
    samples (the zero-shot round's even split) is the weak one, which the overall mean hides."""
    rng = np.random.default_rng(4)
    priv_y = np.array(["a"] * 36 + ["b"] * 4)
    syn_y = np.array(["a"] * 30 + ["b"] * 30)
    near, _ = _vote_histograms(rng.normal(size=(40, 6)), priv_y, rng.normal(size=(60, 6)), syn_y, 8, False)
    per = class_vote_signals({"a": 36.0, "b": 4.0}, list(syn_y), q=8, sigma=2.0)
    for c in ("a", "b"):
        assert per[c] == pytest.approx(near[syn_y == c].mean() / 2.0)
    assert per["b"] == pytest.approx(per["a"] / 9)
    overall = vote_signal({"a": 36.0, "b": 4.0}, list(syn_y), q=8, sigma=2.0)
    assert overall == pytest.approx((per["a"] + per["b"]) / 2) and overall > 4 * per["b"]
    assert class_vote_signals({"a": 36.0, "b": -3.0}, list(syn_y), q=8, sigma=2.0)["b"] == 0.0
    assert class_vote_signals({"a": 36.0}, list(syn_y), q=8, sigma=2.0)["b"] == 0.0  # no estimate
    assert class_vote_signals({"a": 36.0, "b": 4.0}, list(syn_y), q=8, sigma=0.0) == {}  # epsilon = inf


def test_vote_signal_from_released_votes_falls_as_the_population_grows() -> None:
    """The default run's noise (M = 100, sigma 3.53, near + far), votes over 200, 400, 600 and 800
    samples: estimated from the noisy votes alone (pooled class counts), the signal is right on average
    over 50 simulated runs, and a vote over 4x the samples has a quarter of the signal per sample, since
    the private records hand out the same votes."""
    rng = np.random.default_rng(3)
    sigma, w, labels, sizes = 3.53, sum(2.0**-r for r in range(8)), ["0", "1"], (200, 400, 600, 800)
    signals = np.zeros((50, len(sizes)))
    for run in range(50):
        rounds = []
        for j, n in enumerate(sizes):
            y = ["0"] * (n // 2) + ["1"] * (n // 2)
            true = np.full(n, 50 * w / (n // 2))
            near, far = true + rng.normal(0, sigma, n), true + rng.normal(0, sigma, n)
            rounds.append(class_count_estimates(near, far, y, labels, q=8, sigma=sigma))
            signals[run, j] = vote_signal(pooled_class_counts(rounds, labels), y, q=8, sigma=sigma)
    truth = np.asarray([100 * w / n / sigma for n in sizes])  # 0.28 ... 0.07
    assert signals.mean(axis=0) == pytest.approx(truth, rel=0.06)
    assert np.median(signals[:, 0] / signals[:, -1]) == pytest.approx(4.0, rel=0.1)


def test_rebase_budgets_end_a_round_at_its_planned_total() -> None:
    """Regression: extending a round made 180 / 20 under budgets now 105 / 105 topped class "1" up by 85
    when 10 more samples were asked for."""
    made = {"a": {"0": 180, "1": 20}}
    assert rebase_budgets({"a": {"0": 105, "1": 105}}, made) == {"a": {"0": 180, "1": 30}}
    # samples that already fit the budgets change nothing; nothing made is ever planned away
    assert rebase_budgets({"a": {"0": 5, "1": 5}, "b": {"0": 5, "1": 5}}, {"a": {"0": 2}}) == {
        "a": {"0": 5, "1": 5},
        "b": {"0": 5, "1": 5},
    }
    assert rebase_budgets({"a": {"0": 3, "1": 3}}, {"a": {"0": 9}}) == {"a": {"0": 9, "1": 0}}


@given(
    budgets=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40)), min_size=1, max_size=3),
    made=st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60)), min_size=3, max_size=3),
)
def test_rebase_budgets_properties(budgets, made) -> None:
    b = {f"g{i}": {"0": x, "1": y} for i, (x, y) in enumerate(budgets)}
    have = {f"g{i}": {"0": made[i][0], "1": made[i][1]} for i in range(len(budgets))}
    out = rebase_budgets(b, have)
    planned, held = sum(x + y for x, y in budgets), sum(sum(h.values()) for h in have.values())
    assert sum(sum(v.values()) for v in out.values()) == max(planned, held)
    for g in b:
        for c in ("0", "1"):
            assert have[g][c] <= out[g][c] <= max(b[g][c], have[g][c])


def test_top_indices() -> None:
    scores = np.array([0.1, 5.0, 3.0, 9.0])
    assert top_indices(scores, np.array([0, 1, 2]), 2) == [1, 2]
    assert top_indices(scores, np.array([], dtype=int), 2) == []


@pytest.mark.parametrize(
    "raw,expected",
    [
        ('Sure! Here is a review:\n"A fine film with a strong cast."', "A fine film with a strong cast."),
        ("1. A fine film with a strong cast. 2. Another one here", "A fine film with a strong cast."),
        ("Write one new negative movie review like the good ones", None),
        ("bad bad bad bad bad bad bad bad bad bad bad bad bad", None),
        ("short", None),
    ],
)
def test_clean_output(raw, expected) -> None:
    assert clean_output(raw, 10, 2000) == expected


NEWS = ["computer graphics", "hockey", "medicine", "gun politics"]


@pytest.mark.parametrize(
    "raw,task,labels,expected",
    [
        # frames that echo the prompts' wording are removed
        ("Movie review: A fine film with a strong cast.", "movie review", ["negative", "positive"], "A fine film"),
        ("Review: A fine film with a strong cast.", "movie review", ["negative", "positive"], "A fine film"),
        ("Positive: A fine film with a strong cast.", "movie review", ["negative", "positive"], "A fine film"),
        ("**Positive Movie Review:** A fine film here.", "movie review", ["negative", "positive"], "A fine film"),
        ("Good hockey newsgroup post: The season opened late.", "newsgroup post", NEWS, "The season opened"),
        ("Good gun politics newsgroup posts: Gun laws again.", "newsgroup post", NEWS, "Gun laws again"),
        ("Newsgroup Post: New medicines and their benefits.", "newsgroup post", NEWS, "New medicines"),
        ("Gun Politics: The future of gun control is near.", "newsgroup post", NEWS, "The future of gun"),
        # frames a real record could carry are kept
        ("Subject: Hockey week recap, with the scores.", "newsgroup post", NEWS, "Subject: Hockey week"),
        ("The Matrix: a dystopian epic about choice.", "movie review", ["negative", "positive"], "The Matrix:"),
        ("Rating: 5 stars. I watched this movie twice.", "movie review", ["negative", "positive"], "Rating: 5"),
        ("I loved it: the cast, the plot, the music.", "movie review", ["negative", "positive"], "I loved it:"),
    ],
)
def test_clean_output_strips_prompt_frames(raw, task, labels, expected) -> None:
    out = clean_output(raw, 10, 2000, task, labels)
    assert out is not None and out.startswith(expected), out


def test_strip_frame_keeps_a_text_that_is_only_a_frame() -> None:
    assert strip_frame("Movie review:", "movie review") == "Movie review:"


def test_copies_example() -> None:
    ex = ["the acting was wooden and the plot made no sense at all to anyone"]
    assert copies_example("Honestly the acting was wooden and the plot made no sense at all.", ex)
    assert not copies_example("A warm, funny film with a great soundtrack and a lovely cast.", ex)


def test_prompt_builder_formats() -> None:
    rng = random.Random(0)
    chat = PromptBuilder("movie review", "chat", max_tokens=32, temperature=1.0, top_p=0.9, example_chars=50, rng=rng)
    r = chat.contrastive("positive", ["good one"], ["bad one"])
    assert r.is_chat and "good one" in r.messages[0].content and "bad one" in r.messages[0].content
    comp = PromptBuilder(
        "movie review", "completion", max_tokens=32, temperature=1.0, top_p=0.9, example_chars=50, rng=rng
    )
    z = comp.zero_shot("negative")
    assert not z.is_chat and z.prompt.endswith('"') and '"' in z.stop
    q = comp.contrastive("negative", ['he said "wow"'], [])
    assert "he said 'wow'" in q.prompt  # quotes inside examples cannot close the open quote


def test_parse_judgement_names_the_first_declared_label() -> None:
    from dpsynth.prompts import parse_judgement

    names = ["negative", "positive"]
    assert parse_judgement("Positive.", names) == "positive"
    assert parse_judgement("  negative\n", names) == "negative"
    assert parse_judgement("The label is: NEGATIVE", names) == "negative"
    assert parse_judgement("neutral", names) is None and parse_judgement("", names) is None
    assert parse_judgement("nonpositive", names) is None  # whole words only
    nested = ["negative", "very negative", "positive"]
    assert parse_judgement("Very negative", nested) == "very negative"
    assert parse_judgement("negative, not very negative", nested) == "negative"


def test_judge_request_is_greedy_and_lists_the_labels() -> None:
    from dpsynth.prompts import judge_request

    r = judge_request("movie review", 'It was "fine" ' + "x" * 500, ["negative", "positive"], 100)
    assert r.temperature == 0.0 and r.max_tokens <= 8 and r.messages is not None
    text = r.messages[0].content
    assert "negative or positive" in text and "movie review" in text and len(text) < 300


def test_label_judge_reads_label_probabilities() -> None:
    from dpsynth.prompts import judge_request, judge_verdict, label_probabilities

    names = ["negative", "positive"]
    req = judge_request("movie review", "A fine film.", names, 300)
    assert req.max_tokens == 1 and req.top_logprobs > 0 and req.messages is not None
    # the question first and the text last: every judge prompt of a run shares one (cached) prefix
    other = judge_request("movie review", "Dull.", names, 300)
    a, b = req.messages[0].content, other.messages[0].content  # type: ignore[index]
    assert a.split('"')[0] == b.split('"')[0] and a.endswith('"A fine film."')
    top = (("positive", math.log(0.45)), ("Positive", math.log(0.37)), (" negative", math.log(0.1)), ("The", -1.0))
    probs = label_probabilities(top, names)
    assert probs["positive"] == pytest.approx(0.82) and probs["negative"] == pytest.approx(0.1)
    assert judge_verdict("positive", top, names) == "positive"
    torn = (("positive", math.log(0.4)), ("negative", math.log(0.35)))
    assert judge_verdict("positive", torn, names) is None  # unsure: the sample is kept
    assert judge_verdict("", (("The", -0.1),), names) is None
    # a token that could start two labels counts for neither; such label sets use a free-text answer
    assert label_probabilities((("very", -0.1),), ["very negative", "very positive"]) == {
        "very negative": 0.0,
        "very positive": 0.0,
    }
    free = judge_request("review", "x y z", ["very negative", "very positive"], 300)
    assert free.top_logprobs == 0 and free.max_tokens > 1
    assert judge_verdict("Very positive.", (), ["very negative", "very positive"]) == "very positive"


def test_example_pools_split_a_small_class_and_keep_a_large_one() -> None:
    near = np.array([5.0, 4.0, 3.0, 2.0, 1.0, 9.0])
    far = np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.0])
    cls = np.arange(5)  # a class of 5 samples, S = 8: good gets the top 3 by near, bad the other 2
    assert example_pools(near, far, cls, 8) == ([0, 1, 2], [3, 4])
    assert example_pools(near, None, cls, 8) == ([0, 1, 2, 3, 4], [])  # no far votes (Aug-PE): top S
    assert example_pools(near, far, np.array([5]), 8) == ([5], [])  # one sample: good only
    assert example_pools(near, far, np.array([], dtype=int), 8) == ([], [])
    big = np.arange(40)
    rng = np.random.default_rng(0)
    n, f = rng.normal(size=40), rng.normal(size=40)
    good, bad = example_pools(n, f, big, 8)  # 2S or more: the top S of each, the bad among the rest
    assert good == [int(i) for i in np.argsort(-n)[:8]]
    rest = [i for i in np.argsort(-f, kind="stable") if i not in good]
    assert bad == [int(i) for i in rest[:8]]


@given(
    st.lists(st.floats(-50, 50), min_size=0, max_size=40),
    st.integers(1, 16),
    st.randoms(use_true_random=False),
)
def test_example_pools_never_overlap(near_list: list[float], s: int, r: random.Random) -> None:
    near = np.asarray(near_list, dtype=float)
    far = np.asarray([r.uniform(-50, 50) for _ in near_list])
    cand = np.asarray(sorted(r.sample(range(len(near)), r.randint(0, len(near)))), dtype=int)
    good, bad = example_pools(near, far, cand, s)
    assert not set(good) & set(bad)
    assert set(good) | set(bad) <= set(cand.tolist())
    assert len(good) == min(s, math.ceil(len(cand) / 2)) and len(bad) == min(s, len(cand) - len(good))
    assert all(near[g] >= near[i] for g in good for i in set(cand.tolist()) - set(good))  # good = the top by near


def test_spread_pool_skips_near_duplicates_of_the_top_sample() -> None:
    """The top of the vote is three copies of one text and two distinct ones: the top S = 3 by votes are
    the copies; spread out over the top 2 x 3, the pool keeps the best copy and the two distinct texts."""
    emb = np.array([[1.0, 0.0], [1.0, 0.01], [1.0, -0.01], [0.0, 1.0], [-1.0, 0.0], [0.7, 0.7]])
    near = np.array([9.0, 8.0, 7.0, 6.0, 5.0, -1.0])
    cand = np.arange(6)
    assert example_pools(near, None, cand, 3) == ([0, 1, 2], [])
    assert example_pools(near, None, cand, 3, emb=emb, spread=2) == ([0, 4, 3], [])
    assert example_pools(near, None, cand, 3, emb=emb, spread=1) == ([0, 1, 2], [])  # 1: as before
    assert example_pools(near, None, cand, 3, spread=2) == ([0, 1, 2], [])  # no embeddings: as before
    assert spread_out([5, 0], emb, 3) == [5, 0]  # fewer candidates than S: all of them, in rank order


@given(
    st.lists(st.floats(-50, 50), min_size=0, max_size=40),
    st.integers(1, 8),
    st.integers(1, 4),
    st.randoms(use_true_random=False),
)
def test_spread_pools_never_overlap_and_come_from_the_shortlist(
    near_list: list[float], s: int, k: int, r: random.Random
) -> None:
    near = np.asarray(near_list, dtype=float)
    far = np.asarray([r.uniform(-50, 50) for _ in near_list])
    emb = np.asarray([[r.uniform(-1, 1) for _ in range(4)] for _ in near_list]).reshape(len(near_list), 4)
    cand = np.asarray(sorted(r.sample(range(len(near)), r.randint(0, len(near)))), dtype=int)
    good, bad = example_pools(near, far, cand, s, emb=emb, spread=k)
    assert not set(good) & set(bad) and set(good) | set(bad) <= set(cand.tolist())
    half = math.ceil(len(cand) / 2)
    assert len(good) == min(s, half) and len(bad) == min(s, len(cand) - len(good))
    shortlist = set(top_indices(near, cand, min(s * k, half)))
    assert set(good) <= shortlist
    if good:
        assert good[0] == top_indices(near, cand, 1)[0]  # the best-voted sample always leads


def test_allocate_classes_spreads_the_rounding_over_generators() -> None:
    """Regression: each generator's budget was split over the classes on its own, so every remainder went
    to the same classes: budgets 7, 7, 6 over 4 even classes gave 6, 6, 5 and 3 samples per class."""
    even = {c: 0.25 for c in "wxyz"}
    old = [allocate(n, even) for n in (7, 7, 6)]
    assert [sum(r[c] for r in old) for c in "wxyz"] == [6, 6, 5, 3]  # what the old rule did
    grid = allocate_classes({"a": 7, "b": 7, "c": 6}, even)
    assert [sum(grid[g].values()) for g in "abc"] == [7, 7, 6]
    assert [sum(grid[g][c] for g in "abc") for c in "wxyz"] == [5, 5, 5, 5]


@given(
    budgets=st.lists(st.integers(0, 40), min_size=1, max_size=6),
    shares=st.lists(st.floats(0, 10), min_size=1, max_size=8),
)
def test_allocate_classes_keeps_rows_and_class_totals(budgets: list[int], shares: list[float]) -> None:
    per_gen = {f"g{i}": n for i, n in enumerate(budgets)}
    sh = {f"c{j}": v for j, v in enumerate(shares)}
    grid = allocate_classes(per_gen, sh)
    assert all(sum(grid[g].values()) == n and min(grid[g].values()) >= 0 for g, n in per_gen.items())
    p = np.asarray(shares) / sum(shares) if sum(shares) > 0 else np.full(len(shares), 1 / len(shares))
    totals = np.asarray([sum(grid[g][c] for g in per_gen) for c in sh])
    assert np.all(np.abs(totals - sum(budgets) * p) < 1 + 1e-9), (totals, sum(budgets) * p)


@pytest.mark.parametrize(
    "text,expected",
    [
        # stopped mid-sentence: cut after the last full sentence
        ("The film was great. The acting was superb and the", "The film was great."),
        ('He said "wow." Then the', 'He said "wow."'),
        ("Was it good? Yes... maybe the plot", "Was it good? Yes..."),
        ("Rated 3.5 out of 5. But the ending", "Rated 3.5 out of 5."),
        ("Written by J. Doe. It was a", "Written by J. Doe."),
        # already complete: unchanged
        ("I loved it! Really.", "I loved it! Really."),
        ("A fine film (really!)", "A fine film (really!)"),
        # an abbreviation or a decimal point does not end a sentence; no full sentence: kept whole
        ("Mr. Smith and Dr. Who went to see the", "Mr. Smith and Dr. Who went to see the"),
        ("It cost 3.5 million and the", "It cost 3.5 million and the"),
        ("Prof. Lee filmed it in the U.S. in Sept. and the", "Prof. Lee filmed it in the U.S. in Sept. and the"),
        ("Shown at 9 p.m. on Channel 4 and the", "Shown at 9 p.m. on Channel 4 and the"),
        ('A great "Gen. Patton and the', 'A great "Gen. Patton and the'),
        ("A Ph.D. student and an anti-U.S. rebel meet the", "A Ph.D. student and an anti-U.S. rebel meet the"),
        # ... but a dotted acronym or a month before a capitalised word ends its sentence
        ("It was shot in the U.S. Then the", "It was shot in the U.S."),
        ("She has a Ph.D. The film was a", "She has a Ph.D."),
        ("She has a Ph.D. \u201cThe film\u201d was a", "She has a Ph.D."),
        ("Shot in the U.S. (The sequel was", "Shot in the U.S."),
        # a dotted word that ends the text ends its sentence: a complete sample stays whole
        ("The film was great. She has a Ph.D.", "The film was great. She has a Ph.D."),
        ("It was shot in the U.S.", "It was shot in the U.S."),
        ("It opened in Sept. The film was a", "It opened in Sept."),
        ("We went to Mars. Then the", "We went to Mars."),  # "Mars." is not "Mar."
        ("One long sentence without an end", "One long sentence without an end"),
    ],
)
def test_cut_to_sentence(text, expected) -> None:
    assert cut_to_sentence(text) == expected


def test_cut_to_sentence_keeps_a_sample_whose_sentences_are_too_short() -> None:
    # "Great." alone would fall under min_chars and lose the sample: it is kept whole instead
    text = "Great. The acting was superb and the music"
    assert cut_to_sentence(text, 20) == text


def test_clean_output_cuts_to_whole_sentences_only_when_asked() -> None:
    raw = "A fine film with a strong cast. The second half drags and the"
    assert clean_output(raw, 10, 2000) == raw
    assert clean_output(raw, 10, 2000, whole_sentences=True) == "A fine film with a strong cast."


@pytest.mark.parametrize(
    "text,expected",
    [
        ("A tense, moving drama. Here's the rephrased version, keeping the tone.", "A tense, moving drama."),
        ("Dull and slow. Here is a rewritten version of your review. I'm here to help you.", "Dull and slow."),
        ("Here's the rephrased version, keeping the tone", ""),  # nothing but meta talk: the clean-up drops it
        # a sample ending in an acronym is not merged with the talk after it
        ("Great film, shot in the U.S. Here is the rephrased version.", "Great film, shot in the U.S."),
        # what a real record could say is kept, wherever it stands
        ("The driver crashes on start. Hope this helps! Feel free to ask if you have any questions.", None),
        ("If you have any questions, email me at bob@x.com.", None),
        ("The director's rewritten version of the script was better.", None),
        ("A fine film with a strong cast.", None),
    ],
)
def test_drop_meta_talk(text, expected) -> None:
    assert drop_meta_talk(text) == (text if expected is None else expected)


def test_clean_output_removes_meta_talk_the_sentence_cut_uncovers() -> None:
    raw = "A tense, moving drama. Here's the rephrased version! It keeps the"
    assert clean_output(raw, 10, 2000, whole_sentences=True) == "A tense, moving drama."
    assert clean_output("Here is the rephrased version of the review you gave.", 10, 2000) is None


def test_clean_output_keeps_a_sample_the_model_ended_as_written() -> None:
    raw = "Great movie, the cast shines. 10/10 would watch again"
    assert clean_output(raw, 10, 2000, whole_sentences=True, truncated=False) == raw
    assert clean_output(raw, 10, 2000, whole_sentences=True, truncated=True) == "Great movie, the cast shines."


@pytest.mark.parametrize(
    "raw,kept",
    [
        ("[Your Title] The film is exceptional, a wonderful story line and cast.", False),
        ("Subject: [Insert name here] needs help with his graphics card drivers.", False),
        ("**[your title] #5** This new medicine newsgroup offers the latest research.", False),
        ("The [remastered] edition of the film looks better than the original cut.", True),
        ("Call me at [555-0199] if your card has the same problem with the driver.", True),
    ],
)
def test_clean_output_drops_template_slots(raw, kept) -> None:
    assert (clean_output(raw, 10, 2000) is not None) == kept


SPACE = [
    "The shuttle launch was delayed again; NASA engineers found a leak before the launch window.",
    "NASA says the orbit of the probe is stable after the second launch burn.",
]
HOCKEY = ["The goalie saved the game in overtime.", "Playoff hockey: the goalie was brilliant again."]


def test_pool_keywords_rank_the_pool_words_rare_elsewhere_and_keep_their_written_form() -> None:
    words = pool_keywords({"sci": SPACE, "sport": HOCKEY[:1]}, SPACE + HOCKEY, 5, exclude=["space", "newsgroup post"])
    assert words["sci"][0] == "launch"  # three times in the pool, never in the other class
    assert "NASA" in words["sci"] and "nasa" not in words["sci"]  # as the pool writes it
    assert len(words["sci"]) == 5 and not {"the", "was", "a"} & set(words["sci"])  # stop words, short words
    assert words["sport"] and set(words["sport"]) <= {"goalie", "saved", "game", "overtime"}
    excluded = pool_keywords({"h": HOCKEY}, HOCKEY, 10, exclude=["hockey", "goalie post"])
    assert "goalie" not in excluded["h"] and "hockey" not in [w.lower() for w in excluded["h"]]


def test_pool_keywords_against_the_other_classes_drop_the_words_every_class_writes() -> None:
    # every sample, whatever its class, speaks of "latest" "news"; only some words tell the classes apart
    sci = [f"The latest news: {t}" for t in SPACE] + ["The latest news from the NASA launch pad is good."]
    sport = [f"The latest news: {t}" for t in HOCKEY] + ["The latest news: the goalie signed again."]
    background, labels = sci + sport, ["sci"] * 3 + ["sport"] * 3
    pools = {"sci": sci[:2], "sport": sport[:2]}
    tfidf = pool_keywords(pools, background, 30)
    assert {"latest", "news"} <= {w.lower() for w in tfidf["sci"]}  # TF-IDF keeps them: frequent in the pool
    against = pool_keywords(pools, background, 30, background_labels=labels)
    for c, mine in (("sci", {"launch", "NASA", "shuttle"}), ("sport", {"goalie", "hockey", "overtime"})):
        assert not {"latest", "news"} & {w.lower() for w in against[c]}  # as common in the other class
        assert against[c][0] in mine and mine & set(against[c][:3])
    assert against["sci"][0] == "launch"  # the pool's most frequent word the other class never writes
    assert not set(against["sci"]) & set(against["sport"])
    with pytest.raises(ValueError, match="2 labels for 6"):
        pool_keywords(pools, background, 5, background_labels=labels[:2])
    assert pool_keywords(pools, ["12 34"], 3, background_labels=["sci"]) == {"sci": [], "sport": []}
    # only the other classes are the reference: "bright" (the whole class writes it) before "film" (this
    # pool only), which would come first if the class's own texts counted as "other"; int labels, str keys
    one, zero = ["A bright film.", "Bright day.", "Bright sun.", "Bright and bold.", "Bright smile."], ["Dull plot."]
    ints = pool_keywords({"0": zero, "1": one[:1]}, zero + one, 3, background_labels=[0] + [1] * 5)
    assert ints["1"] == ["bright", "film"] and ints["0"] == ["Dull", "plot"]
    # another language's function words are no English stop words, but every class writes them
    de = {
        "sport": ["Der Torwart und die Mannschaft spielten gut.", "Die Mannschaft und der Trainer jubeln."],
        "med": ["Der Arzt und die Patientin sprechen.", "Die Therapie und der Arzt helfen."],
    }
    de_labels = ["sport", "sport", "med", "med"]
    by_class = pool_keywords(de, de["sport"] + de["med"], 5, background_labels=de_labels)
    assert by_class["sport"][0] == "Mannschaft" and by_class["med"][0] == "Arzt"
    assert not {"der", "die", "und"} & {w.lower() for ws in by_class.values() for w in ws}
    tfidf_de = pool_keywords(de, de["sport"] + de["med"], 5)["sport"]
    assert {"der", "die"} <= {w.lower() for w in tfidf_de}  # TF-IDF keeps them (in every text, but frequent)


def test_pool_keywords_of_an_empty_pool_or_a_population_without_words() -> None:
    assert pool_keywords({"a": [], "b": HOCKEY}, HOCKEY, 3)["a"] == []
    assert pool_keywords({"a": ["12 34"]}, ["12 34", "!!"], 3) == {"a": []}


def test_keyword_prompts_name_the_words_and_show_no_example() -> None:
    rng = random.Random(0)
    common = dict(max_tokens=64, temperature=1.0, top_p=0.9, example_chars=300, rng=rng)
    chat = PromptBuilder("newsgroup post", "chat", **common).keywords("space", ["NASA", "orbit", "launch"])
    assert chat.messages is not None
    text = chat.messages[0].content
    assert "NASA, orbit and launch" in text and "space newsgroup post" in text
    completion = PromptBuilder("newsgroup post", "completion", **common).keywords("space", ["orbit"])
    assert completion.prompt is not None and "orbit" in completion.prompt and completion.prompt.endswith('"')


@pytest.mark.parametrize("chat", [True, False])
def test_writers_open_every_prompt_with_a_public_writer(chat: bool) -> None:
    """wasp.writers: every kind of prompt names one writer of the fixed list, drawn with the run's RNG
    (so a seeded run repeats its prompts); off, the prompts are unchanged."""
    from dpsynth.prompts import WRITERS

    def builder(writers: bool) -> PromptBuilder:
        fmt = "chat" if chat else "completion"
        return PromptBuilder(
            "movie review",
            fmt,
            max_tokens=8,
            temperature=1.0,
            top_p=1.0,
            example_chars=50,
            rng=random.Random(0),
            writers=writers,
        )

    def text(r) -> str:
        return r.messages[0].content if chat else r.prompt

    on = builder(True)
    reqs = [on.zero_shot("positive") for _ in range(300)]
    reqs += [on.contrastive("positive", ["good one"], ["bad one"]), on.keywords("positive", ["plot"])]
    reqs.append(on.rephrase("positive", "A fine film."))
    opening = re.compile(r"You are (.+?)\. " if chat else r"Written by (.+?)\.\n")
    named = [opening.match(text(r)) for r in reqs]
    assert all(m is not None and m.group(1) in WRITERS for m in named)
    assert {m.group(1) for m in named if m} == set(WRITERS)  # all 24 drawn over 300 prompts
    again = builder(True)
    assert [text(again.zero_shot("positive")) for _ in range(5)] == [text(r) for r in reqs[:5]]
    off = builder(False)
    assert not any(w in text(off.zero_shot("positive")) for w in WRITERS)


def test_generator_weights_give_a_generator_without_samples_no_more_than_the_lowest_score() -> None:
    # "c" wrote nothing in the voted population; "a" and "b" got negative noisy votes.  A score of 0 for
    # "c" beat both and handed it half of the next round on no evidence (0.49 before the fix).
    w = generator_weights(np.array([-5.0, -3.0, -4.0, -2.0]), ["a", "b", "c"], ["a", "a", "b", "b"], sigma=3.5, tau=1)
    assert w["c"] <= min(w["a"], w["b"]) and w["b"] == max(w.values())
    assert sum(w.values()) == pytest.approx(1.0)
    # positive votes: still no better than the lowest scored generator
    w = generator_weights(np.array([5.0, 3.0, 4.0, 2.0]), ["a", "b", "c"], ["a", "a", "b", "b"], sigma=1.0, tau=1)
    assert w["c"] == pytest.approx(min(w["a"], w["b"]))
    # nobody has samples: equal weights
    assert generator_weights(np.array([]), ["a", "b"], [], sigma=1.0, tau=1.0) == {"a": 0.5, "b": 0.5}


def test_label_judge_does_not_read_labels_sharing_a_first_piece_from_one_token() -> None:
    from dpsynth.prompts import judge_request, judge_verdict

    names = ["sci.med", "sci.space", "rec.autos"]
    # "sci" starts two labels: one answer token cannot name either, so the judge answers in free text
    req = judge_request("newsgroup post", "The shuttle launch was delayed again.", names, 300)
    assert req.top_logprobs == 0 and req.max_tokens > 1
    assert judge_verdict("sci.space", (), names) == "sci.space"
    for shared in (["comp.os", "comp.graphics"], ["non-toxic", "non-hate"], ["+1", "-1"], ["pos", "positive"]):
        assert judge_request("post", "x", shared, 300).max_tokens > 1, shared
    assert judge_request("post", "x", ["comp.graphics", "talk.politics", "sci.med"], 300).max_tokens == 1
    # were they read by probability, the ambiguous "sci" counts towards the total: unsure, not the tail
    top = [("sci", -0.01), (" sci", -5.0), ("rec", -6.0)]
    assert judge_verdict("sci", top, names) is None  # was "rec.autos" (0.0025 of the probability)
    assert judge_verdict("rec", [("rec", -0.1), ("sci", -3.0)], names) == "rec.autos"


@pytest.mark.parametrize(
    "raw",
    [
        "After waiting for years I finally saw this film on May 5. It was great and the cast was wonderful.",
        "I would give this film a 9. The acting was superb and the story kept me hooked until the end.",
        "Our team scored 3 goals in period 2. The goalie then stopped every shot in the third period.",
        "Windows 3.1 crashes when I run the driver setup from disk 2. Has anyone seen this bug before?",
    ],
)
def test_clean_output_keeps_a_sentence_that_ends_in_a_small_number(raw: str) -> None:
    # "on May 5. It was great" was cut as if a list began at "5." ("... on May") or rejected as too short
    assert clean_output(raw, 40, 2000, whole_sentences=True, truncated=False) == raw


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("1. A fine film with a strong cast. 2. Another one here", "A fine film with a strong cast."),
        ("4. A fine film with a strong cast.\n5. Another one here", "A fine film with a strong cast."),
        ("A fine film with a strong cast.\n3. Another one here", "A fine film with a strong cast."),
        ("A fine film with a strong cast. 1. Another one 2. And one more", "A fine film with a strong cast."),
        ("1. I saw it on May 5. It was great fun. 2. Another one", "I saw it on May 5. It was great fun."),
        # a marker that opens a sentence of its own is a list item, whatever its number
        ("Great film, loved the acting. 2. Terrible plot and bad pacing.", "Great film, loved the acting."),
        ("Great film, loved the acting! 6. Terrible plot and bad pacing.", "Great film, loved the acting!"),
        ("1. Great film with superb acting. 3. Bad plot though.", "Great film with superb acting."),
    ],
)
def test_clean_output_still_cuts_a_list_after_its_first_item(raw: str, expected: str) -> None:
    assert clean_output(raw, 10, 2000) == expected


@pytest.mark.parametrize(
    "raw,expected",
    [
        # a record's own first line is kept, whatever word it opens with
        (
            "New Jersey beat the Rangers 4-1 last night in overtime.\nThe goalie made 40 saves.",
            "New Jersey beat the Rangers 4-1 last night in overtime. The goalie made 40 saves.",
        ),
        (
            "Sure enough, the Bruins lost again last night.\nTheir defence was a mess from the start.",
            "Sure enough, the Bruins lost again last night. Their defence was a mess from the start.",
        ),
        (
            "Okay so my car broke down again on the highway today\nThe mechanic says it is the alternator.",
            "Okay so my car broke down again on the highway today The mechanic says it is the alternator.",
        ),
        (
            "2001. A Space Odyssey is still the best science fiction film I have ever seen.",
            "2001. A Space Odyssey is still the best science fiction film I have ever seen.",
        ),
        # chat pre-ambles are still dropped
        ('Sure! Here is a review:\n"A fine film with a strong cast."', "A fine film with a strong cast."),
        ("Okay, here's a new one.\nA fine film with a strong cast.", "A fine film with a strong cast."),
        ("Certainly! I can do that.\nA fine film with a strong cast.", "A fine film with a strong cast."),
        ("Here is the post\nA fine film with a strong cast.", "A fine film with a strong cast."),
        ("Positive movie review:\nA fine film with a strong cast.", "A fine film with a strong cast."),
        ("12) A fine film with a strong cast.", "A fine film with a strong cast."),
        ("Sure thing! Here you go\nA fine film with a strong cast.", "A fine film with a strong cast."),
        ("Okay here's one\nA fine film with a strong cast.", "A fine film with a strong cast."),
        ("Sure - here's a positive review\nA fine film with a strong cast.", "A fine film with a strong cast."),
    ],
)
def test_clean_output_drops_only_real_preambles(raw: str, expected: str) -> None:
    assert clean_output(raw, 10, 2000, task="newsgroup post", label_names=["hockey", "autos"]) == expected


def test_prompts_keep_the_case_of_the_task() -> None:
    from dpsynth.prompts import judge_request

    rng = random.Random(0)
    comp = PromptBuilder(
        "IMDb movie review", "completion", max_tokens=32, temperature=1.0, top_p=0.9, example_chars=50, rng=rng
    )
    zs = [comp.zero_shot("positive").prompt or "" for _ in range(10)]
    assert any(z.endswith('IMDb movie review: "') for z in zs) and not any("Imdb" in z for z in zs)  # was "Imdb"
    c = comp.contrastive("positive", ["good one"], ["bad one"]).prompt
    assert c is not None and 'IMDb movie review: "good one"' in c and "Imdb" not in c
    j = judge_request("IMDb movie review", "A fine film.", ["negative", "positive"], 300)
    assert j.messages is not None and 'IMDb movie review: "A fine film."' in j.messages[0].content


def test_clean_output_removes_control_characters_and_lone_surrogates() -> None:
    """Regression: a NUL in a sample made the run's CSV output unreadable by `dpsynth evaluate`, and a lone
    surrogate (an emoji split across tokens by a server) crashed the journal write with UnicodeEncodeError."""
    got = clean_output("A fine film\x00 with a strong cast and a \ud800 twist at the very end.", 10, 2000)
    assert got == "A fine film with a strong cast and a \ufffd twist at the very end."
    assert got.encode("utf-8")
    assert clean_output("A fine film\x1b[0m with a\x7fstrong cast, all told.", 10, 2000) == (
        "A fine film [0m with a strong cast, all told."
    )
