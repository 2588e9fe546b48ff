"""Where a user probably meant ``--out`` to point when ``--resume`` finds no run there.

A resume names one folder, and the likely mistakes are near it: a folder inside a run (its ``votes/``), the
folder that holds the run, or a typo of the run's name.  The error message "drop --resume to start one" would
send each of them to start a new run in the wrong place, inside another run's files in the first case.
"""

from __future__ import annotations

import difflib
from pathlib import Path

# files only a run directory holds beside its config.yaml (a user's folder with a config.yaml is not a run)
_RUN_FILES = ("ledger.json", "samples.journal.jsonl", "privacy.json")


def is_run(folder: Path) -> bool:
    try:
        return (folder / "config.yaml").is_file() and any((folder / f).exists() for f in _RUN_FILES)
    except OSError:  # unreadable: not one we can name
        return False


def _subfolders(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir())
    except OSError:
        return []


def did_you_mean(out: Path) -> str:
    """ "; did you mean --out X?" (with why) for the run nearest ``out``, or "" when none is near."""
    out = out.absolute()
    for parent in list(out.parents)[:4]:
        if is_run(parent):
            return f"; {out} is inside the run {parent}: did you mean --out {parent}?"
    if out.is_dir():
        held = [p for p in _subfolders(out) if is_run(p)]
        if held:
            names = ", ".join(p.name for p in held[:3]) + (" ..." if len(held) > 3 else "")
            return f"; it holds the run folder(s) {names}: did you mean --out {held[0]}?"
        return ""
    runs = {p.name: p for p in _subfolders(out.parent) if is_run(p)}
    close = difflib.get_close_matches(out.name, list(runs), n=1, cutoff=0.6)
    return f"; did you mean --out {runs[close[0]]}?" if close else ""
