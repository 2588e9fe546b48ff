"""Which generated outputs become samples: the checks between a generator's text and WASP's journal.

An output passes, in order:

1. the clean-up (``prompts.clean_output``): chat wrappers, echoed prompts, template slots and trailing
   talk about the rephrasing removed; a text cut by the token limit ends at its last full sentence
   (``wasp.whole_sentences``); too short or too long texts are unusable;
2. the duplicate check, against every accepted sample and the chunk's earlier candidates;
3. the copy check: not a copy of an example its own prompt showed;
4. with ``wasp.label_judge``, the label judge: a generator that reads the text and the public label
   names, and whose answer naming another label rejects the sample.

Every rejection is counted by reason in the round's outcomes (rounds.json, the progress bar, the HTML
report) and the fill loop asks again.  Nothing here reads private data: prompts and the judge see only
synthetic text and public label names, so screening is post-processing and costs no privacy budget.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from dpsynth.config import Config
from dpsynth.errors import GeneratorError
from dpsynth.generators.base import Completion, Generator, TokenCounter
from dpsynth.prompts import clean_output, copies_example, judge_request, judge_verdict

log = logging.getLogger("dpsynth")


def normalize(text: str) -> str:
    """The form duplicates are compared in: case and whitespace do not make a text new."""
    return " ".join(text.lower().split())


class OutputScreen:
    """The clean-up, duplicate, copy and label-judge checks of one WASP run, with the texts accepted so far."""

    def __init__(self, config: Config, generators: Mapping[str, Generator], accepted: Iterable[str]) -> None:
        self.w = config.effective_wasp()
        self.task = config.data.task
        self.label_names = dict(config.data.labels or {})
        self.judge = generators[self.w.label_judge] if self.w.label_judge is not None else None
        self.judge_tokens = TokenCounter()  # the judge's calls, kept apart from the generated samples' tokens
        self._seen = {normalize(t) for t in accepted}

    def candidates(
        self,
        outputs: Sequence[tuple[str, Sequence[str], Completion]],
        need: Mapping[str, int],
        outcome: Counter[str],
    ) -> list[tuple[str, str]]:
        """(class, cleaned text) of the outputs that pass the clean-up, duplicate and copy checks, at most
        ``need[c]`` per class; ``outputs`` holds (class, examples the prompt showed, completion) per request.
        Outputs past a class's need count as ``surplus``: several samples per prompt can overshoot."""
        w, names = self.w, list(self.label_names.values())
        wanted = dict(need)
        kept: list[tuple[str, str]] = []
        in_chunk: set[str] = set()
        for c, examples, comp in outputs:
            if comp.failed:  # no answer came back: the request failed (the backend logged why)
                outcome["request_failed"] += 1
                continue
            for i, raw in enumerate(comp.texts):
                if wanted[c] <= 0:
                    outcome["surplus"] += 1
                    continue
                text = clean_output(
                    raw,
                    min_chars=w.min_chars,
                    max_chars=w.max_chars,
                    task=self.task,
                    label_names=names,
                    whole_sentences=w.whole_sentences,
                    truncated=comp.was_truncated(i),
                )
                if text is None:
                    outcome["unusable"] += 1
                elif normalize(text) in self._seen or normalize(text) in in_chunk:
                    outcome["duplicate"] += 1
                elif copies_example(text, examples):
                    outcome["copies_example"] += 1
                else:
                    kept.append((c, text))
                    in_chunk.add(normalize(text))
                    wanted[c] -= 1
        return kept

    def judged(self, candidates: list[tuple[str, str]], outcome: Counter[str]) -> list[tuple[str, str]]:
        """The candidates the label judge (``wasp.label_judge``) does not assign to another label.

        The judge sees one synthetic text and the public label names per request.  An answer that names
        no label keeps the sample (``judge_unsure``): a confused judge must not starve a class.  A judge
        request that failed gave no answer at all: its sample is dropped (``judge_failed``) and asked again,
        not let through unjudged."""
        if self.judge is None or not candidates:
            return candidates
        names = list(self.label_names.values())
        reqs = [judge_request(self.task, text, names, self.w.example_chars) for _, text in candidates]
        answers = self.judge.generate(reqs, on_completion=self.judge_tokens.add)
        kept = []
        for (c, text), ans in zip(candidates, answers, strict=True):
            if ans.failed:  # no answer at all; an empty answer is an unsure one
                outcome["judge_failed"] += 1
                continue
            said = judge_verdict(ans.text, ans.top_logprobs, names)
            if said is None:
                outcome["judge_unsure"] += 1
                kept.append((c, text))
            elif said != self.label_names[c]:
                outcome["wrong_label"] += 1
            else:
                kept.append((c, text))
        return kept

    def accept(self, text: str) -> None:
        """Record an accepted sample: a later output with the same normalized text is a duplicate."""
        self._seen.add(normalize(text))


def rejections(outcomes: Iterable[Counter[str]], *, judged: bool) -> list[str]:
    """A round's rejected outputs so far, each re-asked, for the progress bar: by the label judge (another
    label; 'unsure' answers keep the sample) and by the clean-up (unusable, duplicate, a copy of a prompt
    example).  Counts only: never a text."""
    n: Counter[str] = Counter()
    for outcome in outcomes:
        n.update(outcome)
    parts = []
    if judged:
        judged_n = n["accepted"] + n["wrong_label"]  # every candidate that passed the clean-up was judged
        unsure = f" ({n['judge_unsure']} unsure)" if n["judge_unsure"] else ""
        parts.append(f"judge re-asked {n['wrong_label']}/{judged_n}{unsure}")
    dropped = n["unusable"] + n["duplicate"] + n["copies_example"]
    if dropped:
        parts.append(f"{dropped} dropped")
    failed = n["request_failed"] + n["judge_failed"]
    if failed:
        parts.append(f"{failed} requests failed")
    return parts


def failures(outcomes: Iterable[Counter[str]]) -> int:
    """Requests that failed (to a generator or the judge) in a round's outcome counts."""
    return sum(o["request_failed"] + o["judge_failed"] for o in outcomes)


def check_shortfall(
    t: int,
    deficit: Mapping[str, int],
    got: Mapping[str, int],
    names: Mapping[str, str],
    outcomes: Iterable[Counter[str]],
    failed_before: int = 0,
) -> None:
    """After a round's retries: warn of the samples it lacks, class by class, and stop the run when a
    class it was asked for got none at all.

    A set that lacks a class cannot train a classifier of it, and a vote cannot rank a class it has no
    sample of, so such a round must not count as done; the caller keeps it unfinished, and
    ``dpsynth run --resume`` retries it once the generators are fixed.  So is a round short after at least
    as many failed requests (since ``failed_before``, the count when this attempt began) as samples it lacks.
    Counts only: never a text."""
    short = {c: n for c, n in deficit.items() if n > 0}
    if not short:
        return
    n: Counter[str] = Counter()
    for outcome in outcomes:
        n.update(outcome)
    reasons = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in n.most_common() if k != "accepted") or "none"
    empty = [names.get(c, c) for c in short if got.get(c, 0) == 0]
    if empty:
        raise GeneratorError(
            f"round {t}: no usable sample of {', '.join(map(repr, empty))} after retries (the outputs rejected "
            f"this round: {reasons}); every output for {'that class' if len(empty) == 1 else 'those classes'} "
            "was rejected. Check the generators (run.log); the round stays unfinished, and resuming "
            "the run retries it"
        )
    per_class = ", ".join(f"{names.get(c, c)} {k}" for c, k in short.items())
    failed = n["request_failed"] + n["judge_failed"] - failed_before  # in this attempt at the round
    if failed >= sum(short.values()):
        # requests that failed (a server restarting, timeouts) no longer stop a run at once (generators/pool.py
        # AnswerStreak), so they may be why the round is short: finishing it short would make that final.
        # Only this attempt's, and only as many as it lacks: else a class the generators cannot fill (the
        # warning below) would stop every resume for good after one failure in the round's history
        raise GeneratorError(
            f"round {t}: {sum(short.values())} samples short ({per_class}) after {failed} requests failed "
            "(run.log says why); the round stays unfinished, and resuming the run continues it"
        )
    log.warning(
        "round %d: %d samples short after retries (%s; outputs rejected: %s)",
        t,
        sum(short.values()),
        per_class,
        reasons,
    )
