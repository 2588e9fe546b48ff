"""Prompt templates: zero-shot, contrastive (WASP) and rephrase (Aug-PE).

Prompts are built only from public inputs (label names, task description) and
from *synthetic* samples chosen by the noisy vote.  Private text never reaches
this module.  Chat templates are for instruct models; completion templates (an
open quote the model closes) are for base models, whose chat output is empty
(the embedded Gemma-3-270M is such a base model).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence

from dpsynth.generators.base import ChatMessage, GenerationRequest

# Several phrasings rotate to keep diversity (docs/wasp.md step 7).
ZERO_SHOT_CHAT = (
    "Write a {label} {task}. Reply with the {task} only.",
    "Write a short {label} {task}. Reply with the {task} only.",
    "Write one {label} {task} with concrete details. Reply with the {task} only.",
)
ZERO_SHOT_COMPLETION = (
    'The following is a {label} {task}.\n{Task}: "',
    'Here is a {label} {task} written by a user.\n{Task}: "',
    'A {label} {task}:\n"',
)
CONTRASTIVE_CHAT = (
    "Here are some {label} {task}s that are poor examples:\n{bad}\n\n"
    "Here are some {label} {task}s that are good examples:\n{good}\n\n"
    "Write one new {label} {task} that is like the good examples and unlike the poor ones, "
    "about a different subject and in your own words (copy no sentence). Reply with the {task} only.",
    "Poor {label} {task}s (avoid writing like these):\n{bad}\n\n"
    "Good {label} {task}s (write like these):\n{good}\n\n"
    "Now write a new {label} {task} in the style of the good ones, about something else and in your own "
    "words (copy no sentence). Reply with the {task} only.",
)
GOOD_ONLY_CHAT = (
    "Here are some good {label} {task}s:\n{good}\n\n"
    "Write one new {label} {task} like these, about something else and in your own words (copy no "
    "sentence). Reply with the {task} only.",
)
CONTRASTIVE_COMPLETION = ('Poor {label} {task}s:\n{bad}\n\nExcellent {label} {task}s:\n{good}\n{Task}: "',)
GOOD_ONLY_COMPLETION = ('Excellent {label} {task}s:\n{good}\n{Task}: "',)
# wasp.variation = keywords: zero-shot prompts that name a few words of the voted samples (the vote steers
# topics while nothing is shown to imitate; docs/wasp.md step 7)
KEYWORDS_CHAT = (
    "Write a {label} {task} that mentions {words}. Reply with the {task} only.",
    "Write a short {label} {task} about {words}. Reply with the {task} only.",
    "Write one {label} {task} with concrete details, touching on {words}. Reply with the {task} only.",
)
KEYWORDS_COMPLETION = (
    'The following is a {label} {task} about {words}.\n{Task}: "',
    'Here is a {label} {task} written by a user. It mentions {words}.\n{Task}: "',
)
REPHRASE_CHAT = (
    "Rephrase this {label} {task} in a different style, keeping its sentiment and topic:\n\n{example}\n\n"
    "Reply with the rephrased {task} only.",
)
REPHRASE_COMPLETION = (
    'A {label} {task}:\n{Task}: "{example}"\n\nThe same {task}, rephrased in a different style:\n{Task}: "',
)


# wasp.writers: who writes each sample.  Zero-shot samples of small generators resemble each other more
# than real records do (docs/quality.md, "Where does WASP's set lose?"); naming a different writer in
# each prompt is a task-independent way to spread them (persona prompting, as in Ge et al., "Scaling
# Synthetic Data Creation with 1,000,000,000 Personas", 2024).  Everyday people, no profession tied to
# a task, so the list fits any domain.
WRITERS = (
    "a retired nurse",
    "a college student",
    "a busy parent of three",
    "a software engineer",
    "a high-school teacher",
    "a teenager",
    "a small-business owner",
    "a grandmother",
    "a lawyer",
    "a farmer",
    "a journalist",
    "a car mechanic",
    "a graduate student",
    "a restaurant cook",
    "a musician",
    "an accountant",
    "a truck driver",
    "a librarian",
    "a retired soldier",
    "a painter",
    "a shop assistant",
    "a night-shift security guard",
    "a pharmacist",
    "a plumber",
)


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0] + " ..."
    return text


def _quoted(text: str, limit: int) -> str:
    return _clip(text, limit).replace('"', "'")


def _numbered(examples: Sequence[str], limit: int) -> str:
    return "\n".join(f"{i}. {_clip(e, limit)}" for i, e in enumerate(examples, 1))


def _upper_first(task: str) -> str:
    """``task`` with its first letter upper-case; ``str.capitalize`` would lower the rest ("IMDb" -> "Imdb")."""
    return task[:1].upper() + task[1:]


def _completion_list(examples: Sequence[str], task: str, limit: int) -> str:
    return "\n".join(f'{_upper_first(task)}: "{_quoted(e, limit)}"' for e in examples)


class PromptBuilder:
    """Turns (label name, examples) into a ``GenerationRequest`` for one generator."""

    def __init__(
        self,
        task: str,
        prompt_format: str,
        *,
        max_tokens: int,
        temperature: float,
        top_p: float,
        example_chars: int,
        rng: random.Random,
        n: int = 1,
        writers: bool = False,
    ) -> None:
        self.n = n  # completions per prompt
        self.writers = writers  # open each prompt with a writer from WRITERS
        self.task = task
        self.chat = prompt_format == "chat"
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.example_chars = example_chars
        self.rng = rng

    def _request(self, template: str, **fields: str) -> GenerationRequest:
        text = template.format(task=self.task, Task=_upper_first(self.task), **fields)
        if self.writers:
            who = self.rng.choice(WRITERS)
            text = f"You are {who}. {text}" if self.chat else f"Written by {who}.\n{text}"
        common = dict(
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.rng.randrange(2**31),
            n=self.n,
        )
        if self.chat:
            return GenerationRequest(messages=(ChatMessage("user", text),), **common)  # type: ignore[arg-type]
        return GenerationRequest(prompt=text, stop=('"', "\n\n"), **common)  # type: ignore[arg-type]

    def zero_shot(self, label: str) -> GenerationRequest:
        pool = ZERO_SHOT_CHAT if self.chat else ZERO_SHOT_COMPLETION
        return self._request(self.rng.choice(pool), label=label)

    def contrastive(self, label: str, good: Sequence[str], bad: Sequence[str]) -> GenerationRequest:
        lim = self.example_chars
        if self.chat:
            pool = CONTRASTIVE_CHAT if bad else GOOD_ONLY_CHAT
            return self._request(self.rng.choice(pool), label=label, good=_numbered(good, lim), bad=_numbered(bad, lim))
        pool = CONTRASTIVE_COMPLETION if bad else GOOD_ONLY_COMPLETION
        return self._request(
            self.rng.choice(pool),
            label=label,
            good=_completion_list(good, self.task, lim),
            bad=_completion_list(bad, self.task, lim),
        )

    def keywords(self, label: str, words: Sequence[str]) -> GenerationRequest:
        """A zero-shot prompt that names ``words`` ("X", "X and Y", "X, Y and Z")."""
        if not words:
            raise ValueError("keywords: name at least one word (without words, ask zero_shot)")
        listed = " and ".join([", ".join(words[:-1]), words[-1]]) if len(words) > 1 else words[0]
        return self._request(
            self.rng.choice(KEYWORDS_CHAT if self.chat else KEYWORDS_COMPLETION), label=label, words=listed
        )

    def rephrase(self, label: str, example: str) -> GenerationRequest:
        lim = self.example_chars
        if self.chat:
            return self._request(self.rng.choice(REPHRASE_CHAT), label=label, example=_clip(example, lim))
        return self._request(self.rng.choice(REPHRASE_COMPLETION), label=label, example=_quoted(example, lim))


# Label check by a public judge model (wasp.label_judge): the judge reads one synthetic sample and the
# public label names, never private text.  Small generators asked for a "positive review" often write a
# neutral or negative one (bench/results/diag_quality.json); the WASP reference code counters the same
# failure with ZeroGen-style self-debiasing (Ye et al., EMNLP 2022) at decoding time.
# The question comes first and the text last, so that every judge request of a run shares one prompt
# prefix, which llama.cpp keeps in the slot's KV cache: only the text itself is prefilled.
JUDGE_CHAT = 'Which label fits this {task} best: {choices}? Answer with the label only.\n\n{Task}: "{text}"'
JUDGE_TOP_LOGPROBS = 10
# a label judged by probability must hold this share of the probability the labels get, else "unsure"
JUDGE_MIN_SHARE = 0.6


# The part of a label its first answer token is read as: its first run of letters or digits ("sci" of
# "sci.med", "non" of "non-toxic", "very" of "very positive").  A judge behind an HTTP server gives no
# tokenizer to ask, and BPE tokenizers split words at dots and hyphens, so this is the longest start the
# first token can be counted on to tell apart.
_FIRST_PIECE = re.compile(r"[^\W_]+")


def _first_pieces_distinct(label_names: Sequence[str]) -> bool:
    """True when no label's first piece (``_FIRST_PIECE``) is a prefix of another's, so that one answer
    token can name one label only.  "sci.med" and "sci.space" share "sci", a whole first token: read by
    probability, the judge's most likely answer would name neither, and they get a free-text answer."""
    firsts = []
    for name in label_names:
        m = _FIRST_PIECE.match(name.strip().lower())
        if m is None:  # "+1", "-1": no letters to tell the first token by
            return False
        firsts.append(m.group())
    return all(a == b or not b.startswith(a) for a in firsts for b in firsts) and len(set(firsts)) == len(firsts)


def judge_request(task: str, text: str, label_names: Sequence[str], example_chars: int) -> GenerationRequest:
    """A greedy request asking which declared label fits ``text``.

    Labels whose first pieces differ (``_first_pieces_distinct``) are judged from the probabilities of
    the first answer token (one token decoded, 10 alternatives returned): a calibrated verdict, and
    "unsure" where the judge is torn.  Other label sets get a few-token free-text answer."""
    choices = ", ".join(label_names[:-1]) + f" or {label_names[-1]}" if len(label_names) > 1 else label_names[0]
    prompt = JUDGE_CHAT.format(task=task, Task=_upper_first(task), text=_quoted(text, example_chars), choices=choices)
    common = dict(messages=(ChatMessage("user", prompt),), temperature=0.0, top_p=1.0, seed=0)
    if _first_pieces_distinct(label_names):
        return GenerationRequest(max_tokens=1, top_logprobs=JUDGE_TOP_LOGPROBS, **common)  # type: ignore[arg-type]
    longest = max(len(n.split()) for n in label_names)
    return GenerationRequest(max_tokens=4 + 2 * longest, **common)  # type: ignore[arg-type]


def _token_mass(top: Sequence[tuple[str, float]], label_names: Sequence[str]) -> tuple[dict[str, float], float]:
    """Probability of each label from the first answer token's alternatives, and the probability of the
    tokens that could start several labels (which name none of them)."""
    probs = {n: 0.0 for n in label_names}
    ambiguous = 0.0
    for token, logprob in top:
        t = token.strip().lower()
        if not t:
            continue
        hits = [n for n in label_names if n.lower().startswith(t)]
        if len(hits) == 1:
            probs[hits[0]] += math.exp(logprob)
        elif hits:
            ambiguous += math.exp(logprob)
    return probs, ambiguous


def label_probabilities(top: Sequence[tuple[str, float]], label_names: Sequence[str]) -> dict[str, float]:
    """Probability of each label from the first answer token's alternatives ("Positive", " positive" and
    "pos" all count for "positive"; a token that could start several labels counts for none)."""
    return _token_mass(top, label_names)[0]


def judge_verdict(answer: str, top: Sequence[tuple[str, float]], label_names: Sequence[str]) -> str | None:
    """The label the judge gives, or None when it names none or is torn (then the sample is kept).

    A token that could start several labels ("sci" for "sci.med" and "sci.space") names none, but it is
    an answer the judge gave: its probability counts in the total the share is taken of, so that a judge
    sure of "sci" is unsure of the label rather than sure of the unlikely other one ("rec.autos")."""
    if top:
        probs, ambiguous = _token_mass(top, label_names)
        total = sum(probs.values()) + ambiguous
        best = max(probs, key=lambda n: probs[n])
        return best if probs[best] > 0 and probs[best] / total >= JUDGE_MIN_SHARE else None
    return parse_judgement(answer, label_names)


def parse_judgement(answer: str, label_names: Sequence[str]) -> str | None:
    """The label name the judge's answer names first (the longest when names nest, e.g. "very negative"
    before "negative"), or None when it names none."""
    low = " ".join(answer.lower().split())
    best: tuple[int, int, str] | None = None
    for name in label_names:
        m = re.search(rf"(?<![a-z0-9]){re.escape(name.lower())}(?![a-z0-9])", low)
        if m and (best is None or (m.start(), -len(name)) < (best[0], best[1])):
            best = (m.start(), -len(name), name)
    return best[2] if best else None


# A chat model's opening line before the sample ("Sure! Here's a positive review:").  Whole phrases, not
# first words: "Sure enough, the Bruins lost" and "New Jersey beat the Rangers" open real records.
_PREAMBLE = re.compile(
    r"(?:here is|here's|here are|rephrased\b|title:"
    r"|(?:sure|certainly|of course|okay|ok|alright|absolutely)(?:[!,.:]|\s+(?:thing|here)\b|\s*[-\u2013\u2014]\s))"
)
_PREAMBLE_WORDS = 20  # pre-ambles are short; a long first line is the record itself, even ending in ':'
# Small instruct models sometimes echo the instruction back; such outputs are dropped.
_ECHOES = (
    "write one new",
    "write a new",
    "reply with",
    "good examples",
    "poor examples",
    "like the good",
    "unlike the poor",
    "rephrase this",
    "in the style of the good",
    "avoid writing like",
    # refusals and assistant chatter are not samples of the task
    "i'm sorry",
    "i am sorry",
    "i can't assist",
    "i cannot assist",
    "as an ai",
    "language model",
    "helpful ai",
    "write like these",
    "your suggestion",
    "here is a new",
    "here's a new",
)
# A template slot ("[Your Title]", "[Insert name]"): the model wrote a form to fill in, not a record.
# 1.8% of the benchmark's kept samples had one, 10% of one newsgroups WASP run at 128 tokens.
_PLACEHOLDER = re.compile(r"\[\s*(?:your|insert)\b[^\]]{0,40}\]", re.IGNORECASE)
# List markers: small numbers only ("2001. A Space Odyssey" is a title, not item 2001).  A sentence may
# end in a small number too ("on May 5. It was great"), so an inline one is a marker only in a list
# (``_first_item``); a line that opens with one is a marker wherever it stands.
_LEADING_ENUM = re.compile(r"^\s*(?:(\d{1,2})[.)]|[-*•])\s+")
_INLINE_ENUM = re.compile(r"\s(\d{1,2})[.)]\s+(?=\S)")
_LINE_ENUM = re.compile(r"\s*\d{1,2}[.)]\s")


def _is_preamble(line: str) -> bool:
    """True for a chat model's opening line ("Sure! Here is a review:"), false for a record's first line."""
    low = line.strip().lower()
    return len(low.split()) <= _PREAMBLE_WORDS and (low.endswith(":") or _PREAMBLE.match(low) is not None)


def _first_item(text: str, lead: int | None) -> str:
    """``text`` up to the list it starts or continues: item ``lead`` + 1 when the text opened with the
    marker ``lead`` ("1. A fine film. 2. Another" -> "A fine film."), else the list where an inline "1."
    is followed by a "2.", or a marker that opens a sentence of its own ("Loved it. 2. Terrible plot").
    A small number that ends a sentence ("on May 5. It was", "a 9. The acting") follows a word, not a
    sentence's end, and is kept."""
    marks = [(m.start(), m.end(), int(m.group(1))) for m in _INLINE_ENUM.finditer(text)]
    for i, (at, end, n) in enumerate(marks):
        opens = text[:at].rstrip().endswith((".", "!", "?", ":", ";")) and text[end : end + 1].isupper()
        if opens or (n == lead + 1 if lead is not None else n == 1 and any(k == 2 for _, _, k in marks[i:])):
            return text[:at]
    return text


# A leading "<a few words>:" frame, e.g. "Movie review:" or "Good hockey newsgroup post:".
_FRAME = re.compile(r"^[\s*_\[(]*([^:\n.!?\"]{1,80}?)[\s*_\])]*:[\s*_\])]*")
_FRAME_WORDS = 8
# Words the prompts put around a task name in their frames ('Good {label} {task}s', 'A {label} {task}:').
_FRAME_FILLER = frozenset({"a", "an", "the", "new", "good", "poor", "excellent", "one", "my", "another"})


def strip_frame(text: str, task: str, label_names: Sequence[str] = ()) -> str:
    """Remove a leading frame that echoes the prompt's wording, e.g. "Good hockey newsgroup post: ...".

    The completion prompts end with '{Task}: "' and list examples as 'Good {label} {task}s', so small
    models often open with such a frame ("Movie review: ...", "Positive: ...").  It is prompt text, not
    a sample of the task: real records do not start with it, and it pulls the embedding of every sample
    that carries it towards the same point.  A frame is removed when it has at most eight words and,
    once the prompts' filler words and the label names are set aside, what remains is empty or the
    task's name (or its last word: "post" for "newsgroup post").  Frames that a real record could carry
    ("Subject: ...", "Title: ...", "The Matrix: ...") are kept.
    """
    m = _FRAME.match(text)
    if not m:
        return text
    head = m.group(1).lower().split()
    if not head or len(head) > _FRAME_WORDS:
        return text
    words = " ".join(w for w in head if w not in _FRAME_FILLER)
    for name in sorted((n.lower() for n in label_names), key=len, reverse=True):
        words = re.sub(rf"(?<![a-z0-9]){re.escape(name)}(?![a-z0-9])", " ", words)
    task_l = task.lower().strip()
    last = task_l.split()[-1] if task_l else ""
    if " ".join(words.split()) in {"", task_l, task_l + "s", last, last + "s"}:  # 'newsgroup posts', 'review'
        return text[m.end() :].lstrip() or text
    return text


# A sentence ends at . ! ? or an ellipsis, optionally followed by closing quotes or brackets, then a space.
_SENTENCE_END = re.compile(r"[.!?\u2026]+[\"'\u201d\u2019)\]]*(?=\s|$)")
# Words whose full stop does not end a sentence.  Titles before a name ("Mr. Smith", "Gen. Patton") never
# end one; the others ("Sept. 12", "approx. 3", "U.S.", "p.m.", "e.g.") do when a capitalised word follows
# ("shot in the U.S. Then the"), since they often close a sentence.  A single letter ("J. Doe") is an
# initial.  Words that end sentences more often than not ("etc.", "Inc.", "No.") are left out: calling a
# real end an abbreviation can merge a sample with talk after it, while the opposite mistake cuts it early.
_TITLES = frozenset({"mr", "mrs", "ms", "dr", "prof", "st", "mt", "ft", "gen", "col", "lt", "sgt", "capt", "gov"})
_ABBREVIATIONS = frozenset(
    {"sen", "rev", "fr", "jr", "sr", "vs", "vol", "approx", "ca", "cf", "fig", "dept", "univ", "ave", "blvd"}
    | {"jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec"}
)
# "u.s", "a.m", "e.g", "ph.d", "anti-u.s": the word before the final dot
_DOTTED = re.compile(r"(?:[a-z]+-)?(?:[a-z]{1,2}\.)+[a-z]{1,2}")


# Assistant talk a chat model appends after the sample, answering the rephrase prompt instead of doing it
# ("Here's the rephrased version."). Only phrases a real record would not carry: "hope this helps",
# "feel free to ask" and "if you have any questions" are common in forum posts and are kept.
_META = (
    "rephrased version",
    "rewritten version of your",
    "here is a rewritten",
    "here's a rewritten",
    "i'm here to help you",
)


def _sentence_ends(text: str) -> list[int]:
    """Offsets just after each sentence end of ``text`` (abbreviations and initials are not ends)."""
    return [m.end() for m in _SENTENCE_END.finditer(text) if not _is_abbreviation(text, m.start())]


def drop_meta_talk(text: str) -> str:
    """Remove the trailing sentences in which a chat model talks about its answer instead of writing it.

    "A tense, moving drama. Here's the rephrased version, keeping the tone." keeps its first sentence.
    Meta talk inside or before the sample is left alone (rare, and cutting there would break the text);
    a text that is nothing but meta talk comes back empty, so the clean-up drops it as too short.
    """
    t = text.rstrip()
    while t:
        ends = [e for e in _sentence_ends(t) if e < len(t.rstrip())]
        start = ends[-1] if ends else 0
        if not any(m in t[start:].lower() for m in _META):
            return t
        t = t[:start].rstrip()
    return t


def cut_to_sentence(text: str, min_chars: int = 1) -> str:
    """Cut ``text`` after its last complete sentence, when it stops mid-sentence.

    Generation stops at the token limit wherever it is, so many samples end in half a sentence ("The
    acting was superb and the"); a reader sees a broken record and the embedding of the fragment is noise.
    Text that already ends a sentence is returned as is.  So is text whose complete sentences would
    leave fewer than ``min_chars`` characters (one long sentence cut by the limit): it is kept whole
    rather than lost, since a fragment still carries its label.
    """
    t = text.rstrip()
    ends = _sentence_ends(t)
    if not ends or ends[-1] == len(t):
        return t
    cut = t[: ends[-1]].rstrip()
    return cut if len(cut) >= min_chars else t


def _is_abbreviation(text: str, dot: int) -> bool:
    """True if the full stop at ``dot`` closes an abbreviation or an initial, not a sentence."""
    if text[dot] != ".":
        return False
    word = text[:dot].rsplit(None, 1)[-1].lower().lstrip("\"'(\u201c\u2018[") if text[:dot].strip() else ""
    if (len(word) == 1 and word.isalpha()) or word in _TITLES:
        return True
    if word in _ABBREVIATIONS or _DOTTED.fullmatch(word):
        # "U.S. Then the", "U.S. (The": a capitalised word starts a new sentence; so does the end of the text
        after = text[dot + 1 :].lstrip("\"')]\u201d\u2019\u201c\u2018([* \t\r\n")
        return bool(after) and not after[:1].isupper()
    return False


_CONTROL = re.compile(r"[ \t]*[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]+[ \t]*")  # C0 controls and DEL, not tab or line breaks
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


def clean_output(
    text: str,
    min_chars: int,
    max_chars: int,
    task: str = "review",
    label_names: Sequence[str] = (),
    whole_sentences: bool = False,
    truncated: bool | None = None,
) -> str | None:
    """Strip chat pre-ambles, prompt frames, quotes and list markers; return None for unusable output.

    Drops: too short/long, echoed instructions, template slots ("[Your Title]"), degenerate
    repetition, and trailing meta talk
    ("Here's the rephrased version.", ``drop_meta_talk``).  A list the
    model started ("1. ... 2. ...") is cut after its first item.  ``task`` and ``label_names`` (public)
    let a frame that echoes the prompt ("Movie review: ...") be recognised and removed (``strip_frame``).
    ``whole_sentences`` cuts a sample that stops mid-sentence after its last full sentence
    (``cut_to_sentence``), unless the backend said the model ended it (``truncated`` False): a finished
    sample may end without a full stop ("Great film. 10/10 would watch again") and is kept as written.
    """
    # control characters (a NUL makes the CSV output unreadable) become spaces; a lone surrogate (an emoji
    # split across tokens by a server) cannot be written as UTF-8 and becomes U+FFFD
    t = _CONTROL.sub(" ", _LONE_SURROGATE.sub("\ufffd", text)).strip()
    lines = [ln for ln in t.splitlines() if ln.strip()]
    while len(lines) > 1 and _is_preamble(lines[0]):
        lines = lines[1:]
    later = next((i for i, ln in enumerate(lines[1:], 1) if _LINE_ENUM.match(ln)), len(lines))
    t = " ".join(ln.strip() for ln in lines[:later])  # a line opening "2." starts the next item
    t = strip_frame(t, task, label_names)
    lead = _LEADING_ENUM.match(t)
    t = _first_item(t[lead.end() :] if lead else t, int(lead.group(1)) if lead and lead.group(1) else None)
    t = t.strip().strip('"').strip("“”").strip()
    if whole_sentences and truncated is not False:
        t = cut_to_sentence(t, min_chars)
    t = drop_meta_talk(t)  # after the cut, which can leave meta talk as the last sentence
    if len(t) < min_chars or len(t) > max_chars:
        return None
    low = t.lower()
    if t.endswith(":") or any(e in low for e in _ECHOES) or _PLACEHOLDER.search(t):
        return None
    words = low.split()
    if len(words) >= 12 and len(set(words)) / len(words) < 0.4:
        return None  # degenerate repetition
    return t


def copies_example(text: str, examples: Sequence[str], n: int = 8) -> bool:
    """True if ``text`` shares a run of ``n`` words with a prompt example (a copy, not a new sample)."""
    if not examples:
        return False
    words = text.lower().split()
    grams = {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}
    if not grams:
        return False
    for ex in examples:
        ew = ex.lower().split()
        if any(tuple(ew[i : i + n]) in grams for i in range(len(ew) - n + 1)):
            return True
    return False
