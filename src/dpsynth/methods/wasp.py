"""WASP (Zou et al., ICML 2025), with Aug-PE (Xie et al., ICML 2024) and zero-shot as presets.

The loop reads like the algorithm in docs/wasp.md:

    seed round:      every generator writes G/K zero-shot samples, classes even
    for t in 1..T:   embed accumulated samples (cached)
                     noisy Top-Q vote         <- the only step reading private data
                     generator weights, class shares, good/bad pools (post-processing)
                     contrastive (or rephrase) generation of G new samples
    expansion:       with wasp.population < n_synthetic, the rest of n_synthetic is generated
                     from round T's released vote (post-processing: no new release)

Resumability: accepted samples go to an append-only journal after every chunk;
a round's noisy vote is saved before the ledger records it and is reused on
resume, so a killed run never re-spends budget and keeps what it generated.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from dpsynth.config import Config
from dpsynth.embeddings import Embedder, EmbeddingCache
from dpsynth.errors import ConfigError, GeneratorError, ResumeError
from dpsynth.generators.base import Completion, GenerationRequest, Generator, TokenCounter
from dpsynth.io import append_jsonl, read_jsonl_tolerant, repair_jsonl_tail
from dpsynth.methods.wasp_plan import (  # noqa: F401 - re-exported: the plan is part of the method's API
    VOTE_READS,
    check_run,
    check_vote_sensitivity,
    mechanism_name,
    open_ledger,
    privacy_events,
    privacy_plan,
    rounds_released,
    vote_population,
    votes_released,
)
from dpsynth.methods.wasp_screen import OutputScreen, check_shortfall, failures, rejections
from dpsynth.privacy.private_data import PrivateData
from dpsynth.privacy.rounding import round_up
from dpsynth.privacy.voting import NoisyVotes, noisy_top_q_vote
from dpsynth.progress import ProgressReporter
from dpsynth.prompts import PromptBuilder
from dpsynth.round_log import check_journal
from dpsynth.run import RunDir, run_rng
from dpsynth.selection import (
    WEAK_VOTE,
    ClassCounts,
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
    vote_signal,
)

log = logging.getLogger("dpsynth")

CHUNK = 32  # requests per generate() call: enough to fill llama.cpp slots, small enough to journal often
MAX_ATTEMPT_FACTOR = 3  # a (generator, class) quota gives up after 3x its size in requests
KEYWORDS_PER_CLASS = 30  # wasp.variation = keywords: words kept per class from its good pool ...
KEYWORDS_PER_PROMPT = 2  # ... and named in each prompt, drawn at random


@dataclass
class Sample:
    id: int
    text: str
    label: str
    generator: str
    round: int

    def as_row(self, label_names: Mapping[str, str]) -> dict[str, Any]:
        return {
            "text": self.text,
            "label": self.label,
            "label_name": label_names[self.label],
            "generator": self.generator,
            "round": self.round,
        }


@dataclass
class RoundPlan:
    """Post-processed decisions for one round: safe to persist (no private data)."""

    round: int
    budgets: dict[str, dict[str, int]]  # generator -> label -> count
    weights: dict[str, float] = field(default_factory=dict)
    class_shares: dict[str, float] = field(default_factory=dict)
    good: dict[str, list[int]] = field(default_factory=dict)  # label -> sample ids
    bad: dict[str, list[int]] = field(default_factory=dict)
    vote_mass: dict[str, float] = field(default_factory=dict)  # generator -> noisy near mass
    keywords: dict[str, list[str]] = field(default_factory=dict)  # label -> words (variation = keywords)
    vote_signal: float | None = None  # votes an average sample got over the noise sd (selection.vote_signal)
    class_vote_signal: dict[str, float] = field(default_factory=dict)  # the same, class by class


class WaspRun:
    def __init__(
        self,
        config: Config,
        run_dir: RunDir,
        generators: Mapping[str, Generator],
        embedder: Embedder,
        private: PrivateData | None,
        progress: ProgressReporter,
    ) -> None:
        self.config = config
        self.w = config.effective_wasp()
        self.rundir = run_dir
        self.generators = generators
        self.embedder = embedder
        self.progress = progress
        self.labels = list((config.data.labels or {}).keys())
        self.label_names = dict(config.data.labels or {})
        self.rounds_total = 0 if not config.uses_private_data else self.w.rounds
        # samples made in the rounds (seed round included); the rest of n_synthetic is the expansion phase
        self.population = min(self.w.population or config.n_synthetic, config.n_synthetic)
        check_run(config, generators, run_dir)
        self.events = privacy_events(config, run_dir)
        if self.events and self.events[0].noise_multiplier == 0:
            log.warning("epsilon = inf: the votes are released WITHOUT noise; this run is NOT differentially private")
        self.ledger = open_ledger(config, run_dir, self.events)
        self.cache = EmbeddingCache(run_dir.embeddings, embedder.name)
        repair_jsonl_tail(run_dir.journal)  # a run killed mid-append: drop the fragment before appending again
        self.samples: list[Sample] = [Sample(**r) for r in read_jsonl_tolerant(run_dir.journal)]
        self.rng = run_rng(config.seed, len(self.samples))
        self.screen = OutputScreen(config, generators, (s.text for s in self.samples))
        self._class_counts: list[ClassCounts] = []  # per released vote, for the class shares
        self._warned_weak_vote = False
        self.tokens = {g: TokenCounter() for g in generators}
        self.round_log: list[dict[str, Any]] = run_dir.load_rounds()
        check_journal(run_dir.journal, Counter((s.round, s.generator) for s in self.samples), self.round_log)
        # rounds.json counts tokens from the start of the run: a resumed run continues the last count
        last: dict[str, Any] = max(self.round_log, key=lambda r: r["round"], default={})
        self._tokens_base: dict[str, int] = dict(last.get("completion_tokens") or {})
        self._judge_tokens_base = int(last.get("judge_prompt_tokens") or 0)
        # Private data: embedded once, kept in memory only (never cached to disk).
        self._private_emb: np.ndarray | None = None
        self._private_labels: np.ndarray | None = None
        if config.uses_private_data and private is not None:
            self._private_emb, self._private_labels = private.embed(embedder)
        elif config.uses_private_data and not votes_released(self.ledger, run_dir):
            raise ConfigError("data.private: this method needs private data")

    # ------------------------------------------------------------------ budget
    def round_sizes(self) -> list[int]:
        """Samples per round 0..T: ``population`` split evenly (the last round takes the remainder)."""
        n, t = self.population, self.rounds_total
        g = n // (t + 1)
        sizes = [g] * (t + 1)
        sizes[-1] += n - g * (t + 1)
        return sizes

    @property
    def expansion_size(self) -> int:
        """Samples generated after the rounds from the last plan (post-processing)."""
        return self.config.n_synthetic - self.population

    # ------------------------------------------------------------------ the loop
    def run(self) -> list[Sample]:
        self._run_started, self._samples0 = time.monotonic(), len(self.samples)
        self._class_counts = []  # rebuilt from the released votes, round by round
        self._warned_weak_vote = False
        self.progress.run_bar(self.config.n_synthetic, len(self.samples))
        sizes = self.round_sizes()
        gens = list(self.generators)
        uniform_classes = {c: 1.0 / len(self.labels) for c in self.labels}
        seed_budgets = allocate_classes(allocate(sizes[0], {g: 1.0 for g in gens}), uniform_classes)
        plan = RoundPlan(0, seed_budgets)
        population: list[Sample] = []
        self._generate_round(plan)
        for t in range(1, self.rounds_total + 1):
            votes, population = self._vote(t)
            plan = self._plan_round(t, votes, population, sizes[t])
            self._generate_round(plan, population)
        if self.expansion_size > 0:
            self._generate_round(self._expansion_plan(plan, population), population, expansion=True)
        self.cache.save()
        return self.samples

    def _expansion_plan(self, last: RoundPlan, population: list[Sample]) -> RoundPlan:
        """Round T+1: the last round's plan (weights, class shares, good/bad pools from round T's released
        vote, or the seed round's for zero-shot) re-allocated to the expansion size.  It reads nothing
        private, so it spends nothing and can grow later (``dpsynth sample``)."""
        size = self.expansion_size
        gens = list(last.budgets)
        weights = last.weights or {g: 1.0 / len(gens) for g in gens}
        shares = last.class_shares or {c: 1.0 / len(self.labels) for c in self.labels}
        floor = math.ceil(self.w.min_share * size) if len(gens) > 1 and last.weights else 0
        per_gen = allocate(size, weights, floor=floor)
        return RoundPlan(
            self.rounds_total + 1,
            allocate_classes(per_gen, shares),
            weights=last.weights,
            class_shares=last.class_shares,
            good=last.good,
            bad=last.bad,
            vote_mass=last.vote_mass,
            keywords=last.keywords,
        )

    def _vote(self, t: int) -> tuple[NoisyVotes, list[Sample]]:
        """Embed the population and release round t's noisy vote, or reuse the one released before a crash.

        ``Ledger.release`` draws it at most once: a vote the ledger records but whose file is gone stops
        the run instead of being drawn again."""
        key = f"round_{t}"
        event = self.ledger.event(key)
        assert event is not None
        population = vote_population(self.samples, t, self.w, self.labels)

        def draw() -> dict[str, Any]:
            if not population:
                raise GeneratorError("every generator returned unusable text in earlier rounds; nothing to vote on")
            check_vote_sensitivity(self.w, event, t)  # Ledger.plan checks it too
            emb = self.cache.embed(self.embedder, [s.text for s in population])
            self.cache.save()
            assert self._private_emb is not None and self._private_labels is not None
            votes = noisy_top_q_vote(
                self._private_emb,
                self._private_labels,
                emb,
                np.asarray([s.label for s in population]),
                q=self.w.q,
                use_far=self.w.use_far,
                sigma=event.sigma,  # the ledger's stored noise: a resumed run never recalibrates
                grid_bits=event.grid_bits,
            )
            log.info("round %d: releasing a noisy vote over %d samples", t, len(population))
            return {
                "ids": np.asarray([s.id for s in population]),
                "near": votes.near,
                "far": votes.far if votes.far is not None else np.zeros(0),
                "sigma": np.asarray(votes.sigma),
                "sensitivity": np.asarray(votes.sensitivity),
            }

        data = self.ledger.release(key, self.rundir.votes(t), draw)
        by_id = {s.id: s for s in self.samples}
        ids = [int(i) for i in np.asarray(data["ids"]).tolist()]
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise ResumeError(
                f"{self.rundir.journal}: {len(missing)} sample(s) voted on in {key} are missing from the journal; "
                "the run cannot continue consistently (restore the journal or start a new --out)"
            )
        far = np.asarray(data["far"])
        votes = NoisyVotes(
            np.asarray(data["near"]), far if far.size else None, float(data["sigma"]), float(data["sensitivity"])
        )
        spent = self.ledger.epsilon_spent()  # on a resume: the run's total so far, later rounds' votes included
        log.info("round %d: vote over %d samples; epsilon spent by the run so far %s", t, len(ids), round_up(spent, 5))
        return votes, [by_id[i] for i in ids]

    def _plan_round(self, t: int, votes: NoisyVotes, population: list[Sample], size: int) -> RoundPlan:
        gens = list(self.generators)
        sample_gens = [s.generator for s in population]
        sample_labels = [s.label for s in population]
        if self.w.weighting and len(gens) > 1:
            weights = generator_weights(votes.near, gens, sample_gens, sigma=votes.sigma, tau=self.w.tau)
        else:
            weights = {g: 1.0 / len(gens) for g in gens}
        floor = math.ceil(self.w.min_share * size) if len(gens) > 1 else 0
        per_gen = allocate(size, weights, floor=floor)
        # the class shares pool every vote released so far: run() plans rounds 1..t in order, resumed or not
        self._class_counts.append(
            class_count_estimates(votes.near, votes.far, sample_labels, self.labels, q=self.w.q, sigma=votes.sigma)
        )
        shares = pooled_class_shares(self._class_counts, self.labels, self.w.class_uniform_mix)
        counts = pooled_class_counts(self._class_counts, self.labels)
        signal = vote_signal(counts, sample_labels, q=self.w.q, sigma=votes.sigma)
        by_class = class_vote_signals(counts, sample_labels, q=self.w.q, sigma=votes.sigma)
        self._report_signal(t, signal, by_class, len(population))
        labels_arr = np.asarray(sample_labels)
        good, bad = {}, {}
        far = votes.far if self.w.contrastive else None  # a bad pool only where prompts show one
        # in the run's cache (the vote embedded them): spreading reads no private data; a resume rebuilds the pools
        emb = self.cache.embed(self.embedder, [s.text for s in population]) if self.w.pool_spread > 1 else None
        for c in self.labels:
            good_idx, bad_idx = example_pools(
                votes.near, far, np.flatnonzero(labels_arr == c), self.w.top_s, emb=emb, spread=self.w.pool_spread
            )
            good[c] = [population[i].id for i in good_idx]
            if far is not None:
                bad[c] = [population[i].id for i in bad_idx]
        gens_arr = np.asarray(sample_gens)
        mass = {g: float(votes.near[gens_arr == g].sum()) for g in gens}
        keywords: dict[str, list[str]] = {}
        if self.w.variation == "keywords":  # from synthetic text the released vote chose: post-processing
            texts = {s.id: s.text for s in population}
            keywords = pool_keywords(
                {c: [texts[i] for i in ids] for c, ids in good.items()},
                [s.text for s in population],
                KEYWORDS_PER_CLASS,
                exclude=[*self.label_names.values(), self.config.data.task],
                # the class each prompt asked for: public, chosen by the pipeline, never a private label
                background_labels=sample_labels if self.w.keywords_against == "other_classes" else None,
            )
        return RoundPlan(
            t,
            allocate_classes(per_gen, shares),
            weights=weights,
            class_shares=shares,
            good=good,
            bad=bad,
            vote_mass=mass,
            keywords=keywords,
            vote_signal=signal,
            class_vote_signal={c: round(v, 4) for c, v in by_class.items()},
        )

    def _report_signal(self, t: int, signal: float | None, by_class: Mapping[str, float], n: int) -> None:
        """Log how far round t's vote can rank its population, and warn once per invocation (a resume
        re-plans the rounds, so it may warn again) when the noise swamps it for any class: that class's
        good and bad examples are then picked mostly by the noise (far votes have the same arithmetic as
        near votes).  Per class, since the pools are: a class rare among the private records can be
        swamped while the mean looks healthy (selection.class_vote_signals)."""
        if signal is None:
            return
        per = ", ".join(f"{self.label_names.get(c, c)!r} {v:.2f}" for c, v in sorted(by_class.items()))
        log.info("round %d: an average sample got %.2f noise standard deviations of votes (%s)", t, signal, per)
        weak = sorted((v, self.label_names.get(c, c)) for c, v in by_class.items() if v < WEAK_VOTE)
        if weak and not self._warned_weak_vote:
            self._warned_weak_vote = True
            which = "" if len(weak) == len(by_class) else ", but " + " and ".join(f"{k!r} {v:.2f}" for v, k in weak)
            log.warning(
                "round %d: the vote over %d samples gives an average sample %.2f of the noise's standard deviation "
                "in votes%s, so the good and bad examples of %s are chosen mostly by the noise; wasp.vote_on: "
                "latest (each vote ranks the previous round only, at the same privacy cost), a smaller "
                "wasp.population (the rest generated after the last vote, at no privacy cost), fewer wasp.rounds "
                "or a larger epsilon strengthen it",
                t,
                n,
                signal,
                which and which + (" per sample of that class" if len(weak) == 1 else " per sample of those classes"),
                "its classes" if not which else ("that class" if len(weak) == 1 else "those classes"),
            )

    # ------------------------------------------------------------------ generation
    def _request(
        self, g: str, label: str, plan: RoundPlan, by_id: Mapping[int, Sample]
    ) -> tuple[GenerationRequest, list[str]]:
        """A prompt for one new sample of ``label``, and the examples it shows (to reject copies)."""
        builder = self._builders[g]
        name = self.label_names[label]
        good = [by_id[i].text for i in plan.good.get(label, [])]
        if self.w.variation == "keywords" and plan.round > 0:  # never examples, even where no word was found
            words = plan.keywords.get(label, [])
            if not words:
                return builder.zero_shot(name), []
            return builder.keywords(name, self.rng.sample(words, min(KEYWORDS_PER_PROMPT, len(words)))), []
        if plan.round == 0 or not good:
            return builder.zero_shot(name), []
        if self.w.variation == "rephrase":
            example = self.rng.choice(good)
            return builder.rephrase(name, example), [example]
        k = min(self.w.l_examples, len(good))
        chosen_good = self.rng.sample(good, k)
        bad_pool = [by_id[i].text for i in plan.bad.get(label, [])] if self.w.contrastive else []
        chosen_bad = self.rng.sample(bad_pool, min(self.w.l_examples, len(bad_pool))) if bad_pool else []
        return builder.contrastive(name, chosen_good, chosen_bad), chosen_good + chosen_bad

    @property
    def _builders(self) -> dict[str, PromptBuilder]:
        """One prompt builder per generator, in its prompt format (chat for injected generators)."""
        if not hasattr(self, "_builder_cache"):
            formats = {gc.name: gc.prompt_format for gc in self.config.generators}
            self._builder_cache = {
                g: PromptBuilder(
                    self.config.data.task,
                    formats.get(g, "chat"),
                    max_tokens=self.w.max_new_tokens,
                    temperature=self.w.temperature,
                    top_p=self.w.top_p,
                    example_chars=self.w.example_chars,
                    rng=self.rng,
                    n=self.w.samples_per_prompt,
                    writers=self.w.writers,
                )
                for g in self.generators
            }
        return self._builder_cache

    def _deficit(self, plan: RoundPlan) -> dict[str, int]:
        want: Counter[str] = Counter()
        for per_class in plan.budgets.values():
            want.update(per_class)
        got = Counter(s.label for s in self.samples if s.round == plan.round)
        return {c: max(want[c] - got[c], 0) for c in self.labels}

    def _fill(self, g: str, plan: RoundPlan, by_id: Mapping[int, Sample], quota: dict[str, int]) -> None:
        """Ask generator ``g`` for ``quota[c]`` accepted samples of each class c (bounded attempts)."""
        gen = self.generators[g]
        need = dict(quota)
        limit = {c: MAX_ATTEMPT_FACTOR * n for c, n in quota.items()}
        attempts = {c: 0 for c in need}
        per_prompt = self.w.samples_per_prompt
        while any(need[c] > 0 and attempts[c] < limit[c] for c in need):
            batch: list[tuple[str, GenerationRequest, list[str]]] = []
            for c in need:
                k = min(need[c], limit[c] - attempts[c], CHUNK)
                batch.extend((c, *self._request(g, c, plan, by_id)) for _ in range(max(-(-k // per_prompt), 0)))
            self.rng.shuffle(batch)
            batch = batch[: max(CHUNK // per_prompt, 1)]

            def tick(comp: Completion, g: str = g) -> None:
                self.tokens[g].add(comp)

            completions = gen.generate([r for _, r, _ in batch], on_completion=tick)
            if len(completions) != len(batch):
                raise GeneratorError(f"generators[{g}]: returned {len(completions)} results for {len(batch)}")
            for (c, _, _), comp in zip(batch, completions, strict=True):
                attempts[c] += max(len(comp.texts), 1)  # a backend that ignores n returns one text
            outcome = self._outcomes.setdefault(g, Counter())
            outputs = [(c, examples, comp) for (c, _, examples), comp in zip(batch, completions, strict=True)]
            candidates = self.screen.candidates(outputs, need, outcome)
            accepted = []
            for c, text in self.screen.judged(candidates, outcome):
                outcome["accepted"] += 1
                self.screen.accept(text)
                s = Sample(len(self.samples), text, c, g, plan.round)
                self.samples.append(s)
                accepted.append(s)
                need[c] -= 1
            append_jsonl(self.rundir.journal, [s.__dict__ for s in accepted])
            self._save_round(plan, complete=False)
            self._show_progress(g, plan.round)

    def _show_progress(self, g: str, t: int) -> None:
        """The round's bar (tokens/s, epsilon, rejections) and the run's (samples/s, ETA): counts and rates only."""
        done = sum(1 for s in self.samples if s.round == t)
        elapsed = max(time.monotonic() - self._round_started, 1e-6)
        toks = sum(tc.completion_tokens for tc in self.tokens.values()) - self._round_tokens0
        spent = round_up(self.ledger.epsilon_spent(), 3)  # rounded up: never less than spent
        eps = f"ε spent {spent}" + (f"/{self.ledger.epsilon:g}" if self.events else "")
        rejected = rejections(self._outcomes.values(), judged=self.w.label_judge is not None)
        self.progress.update_run(len(self.samples), self.config.n_synthetic, self._run_rate())  # first: the
        self.progress.update(  # phase's update writes the plain line, with the run's counters beside it
            f"{self._round_label} · {g}",
            done,
            self._round_total,
            " · ".join([f"{toks / elapsed:.0f} tok/s", eps, *rejected]),
        )

    def _run_rate(self) -> str:
        """Samples per second since this process started the run, and the ETA of the whole run from it."""
        made = len(self.samples) - self._samples0
        elapsed = time.monotonic() - self._run_started
        if made <= 0 or elapsed <= 0:
            return "ETA …"
        rate = made / elapsed
        left = max(self.config.n_synthetic - len(self.samples), 0) / rate
        eta = f"{left / 60:.0f} min" if left >= 90 else f"{left:.0f} s"
        return f"{rate:.2f} samples/s · ETA {eta}"

    def _generate_round(self, plan: RoundPlan, population: Sequence[Sample] = (), *, expansion: bool = False) -> None:
        t = plan.round
        prior = next((r for r in self.round_log if r["round"] == t), None)
        if expansion and prior is not None:
            # the expansion only ever grows (dpsynth sample): fill what its budgets still lack
            prior = {**prior, "complete": False}
        if prior is not None and prior.get("complete", True):  # entries without the key predate partial saves
            # Finished before an interruption: its samples are in the journal and its rounds.json entry says
            # what happened then (budgets, outcomes, epsilon at the time); redoing it would overwrite that.
            log.info("round %d: already complete; kept as recorded", t)
            return
        by_id = {s.id: s for s in population}
        made = {g: Counter(s.label for s in self.samples if s.round == t and s.generator == g) for g in plan.budgets}
        if any(made.values()):  # resumed or extended: end at the planned total whatever the split made so far
            plan = replace(plan, budgets=rebase_budgets(plan.budgets, made))
        total = sum(sum(b.values()) for b in plan.budgets.values())
        self._round_label = "expansion (no privacy cost)" if expansion else f"round {t}/{self.rounds_total}"
        self._expansion = expansion
        self._round_total = total
        self._round_started = time.monotonic()
        self._round_tokens0 = sum(tc.completion_tokens for tc in self.tokens.values())
        # a round continued after an interruption adds to what its first attempt recorded
        self._outcomes: dict[str, Counter[str]] = {
            g: Counter(c) for g, c in ((prior or {}).get("outcomes") or {}).items()
        }
        self._seconds_before = float((prior or {}).get("seconds") or 0.0)
        self._failed_before = failures(self._outcomes.values())
        self.progress.start(self._round_label, total, sum(1 for s in self.samples if s.round == t))  # resumed
        for g, per_class in plan.budgets.items():
            self._fill(g, plan, by_id, {c: max(n - made[g][c], 0) for c, n in per_class.items()})
            if failed := self.tokens[g].all_failed(g):
                raise GeneratorError(failed)
        # Outputs dropped by clean-up leave a class short: the best-weighted generators fill the gap.
        order = sorted(plan.budgets, key=lambda g: -plan.weights.get(g, 0.0))
        for g in order:
            deficit = self._deficit(plan)
            if not any(deficit.values()):
                break
            self._fill(g, plan, by_id, deficit)
        deficit = self._deficit(plan)
        if any(deficit.values()):  # a class left with no sample stops the run: the round stays unfinished
            got = Counter(s.label for s in self.samples if s.round == t)
            check_shortfall(t, deficit, got, self.label_names, self._outcomes.values(), self._failed_before)
        self._save_round(plan, complete=True)
        log.info("round %d done: %d samples accepted", t, sum(1 for s in self.samples if s.round == t))

    def _save_round(self, plan: RoundPlan, *, complete: bool) -> None:
        """Write round ``plan.round``'s rounds.json entry: after every journalled chunk (complete=False,
        so an interrupted round keeps its counts) and when the round ends (complete=True)."""
        t = plan.round
        entry = {
            "round": t,
            "budgets": plan.budgets,
            "weights": plan.weights,
            "class_shares": plan.class_shares,
            "vote_mass": plan.vote_mass,
            **({"vote_signal": round(plan.vote_signal, 4)} if plan.vote_signal is not None else {}),
            **({"class_vote_signal": plan.class_vote_signal} if plan.class_vote_signal else {}),
            **({"keywords": plan.keywords} if plan.keywords else {}),
            "accepted": dict(Counter(s.generator for s in self.samples if s.round == t)),
            "epsilon_spent": self.ledger.epsilon_spent(),
            "seconds": round(self._seconds_before + time.monotonic() - self._round_started, 2),
            # since the run started (a resumed run continues the recorded count)
            "completion_tokens": {
                g: self._tokens_base.get(g, 0) + tc.completion_tokens for g, tc in self.tokens.items()
            },
            **(
                {"judge_prompt_tokens": self._judge_tokens_base + self.screen.judge_tokens.prompt_tokens}
                if self.w.label_judge
                else {}
            ),
            # per generator: accepted / unusable (clean-up) / duplicate / copies_example / wrong_label,
            # judge_unsure and judge_failed (label judge) / surplus outputs / request_failed
            "outcomes": {g: dict(c) for g, c in self._outcomes.items()},
            "complete": complete,
            **({"expansion": True} if self._expansion else {}),
        }
        self.round_log = [r for r in self.round_log if r["round"] != t] + [entry]
        self.rundir.save_rounds(self.round_log)
