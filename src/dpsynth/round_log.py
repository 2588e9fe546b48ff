"""rounds.json: the per-round summary a prompting run writes, and the check that reads it back.

The file holds figures of the released votes only (budgets, weights and vote masses, outcome counts, tokens,
times): public in a DP run, whose votes are noised; in an epsilon = inf run (not DP) the votes, and so these
figures, are exact statistics of the private data.  A resume reads the last entry's token counts and each round's
``complete`` flag; the HTML report draws its charts and tables from the rest.  Reading it back checks
every field a reader uses, so that a damaged file is one clear error instead of a traceback deep in a
resume or the report.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, StrictBool, StrictInt, TypeAdapter, ValidationError

from dpsynth.errors import ResumeError
from dpsynth.io import from_json_word

# a float, or the word strict JSON holds an infinite or NaN float as (``io.strict_json``: an epsilon = inf run)
JsonFloat = Annotated[float, BeforeValidator(from_json_word)]


class RoundEntry(BaseModel):
    """The fields of one rounds.json entry that a resume or the report reads, with their types (strict: a
    string where a count belongs is damage, not a value to coerce).  Unknown fields are kept: the file is a
    summary that later versions may extend."""

    model_config = ConfigDict(extra="allow", strict=True)

    round: StrictInt
    complete: StrictBool = True
    expansion: StrictBool = False
    budgets: dict[str, dict[str, StrictInt]] | None = None
    weights: dict[str, JsonFloat] | None = None
    class_shares: dict[str, JsonFloat] | None = None
    vote_mass: dict[str, JsonFloat] | None = None
    vote_signal: JsonFloat | None = None
    class_vote_signal: dict[str, JsonFloat] | None = None
    keywords: dict[str, list[str]] | None = None
    accepted: dict[str, StrictInt] | None = None
    epsilon_spent: JsonFloat | None = None
    seconds: JsonFloat | None = None
    completion_tokens: dict[str, StrictInt] | None = None
    judge_prompt_tokens: StrictInt | None = None
    outcomes: dict[str, dict[str, StrictInt]] | None = None


_ROUNDS = TypeAdapter(list[RoundEntry])


def load_round_log(path: Path) -> list[dict[str, Any]]:
    """The entries of rounds.json at ``path`` as written, [] before the first round is saved.

    A damaged file is an error that says how to recover: it only summarises the rounds, and a resume
    without it redoes nothing that the journal, the votes and the ledger hold (only the recorded
    outcomes, tokens and times are lost)."""
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        _ROUNDS.validate_python(data)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValidationError):
        raise ResumeError(
            f"{path}: damaged (not a list of rounds); it only summarises the rounds: move it aside and "
            "`dpsynth run --resume` continues without it"
        ) from None
    assert isinstance(data, list)
    return data


def check_journal(journal: Path, have: Mapping[tuple[int, str], int], round_log: list[dict[str, Any]]) -> None:
    """Refuse a journal with fewer samples than rounds.json counted (``have``: samples per (round, generator)
    in the journal).  A chunk is appended to the journal before its round entry is saved, so an intact
    journal never holds fewer; fewer means it was cut, replaced or deleted, and going on would rebuild the
    output (and a `dpsynth sample`) without them."""
    for entry in round_log:
        t = int(entry.get("round", 0))
        for g, n in (entry.get("accepted") or {}).items():
            if have.get((t, g), 0) < int(n):
                raise ResumeError(
                    f"{journal}: holds {have.get((t, g), 0)} sample(s) of round {t} from generator {g!r}, but "
                    f"rounds.json counted {int(n)}: the journal was cut, replaced or deleted, and going on would "
                    "rebuild the output without them (the output file is left as it is); restore the journal, "
                    "or start a new --out"
                )
