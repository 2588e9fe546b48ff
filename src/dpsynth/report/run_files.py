"""Reading a run directory for the report: privacy.json, config.yaml (the private file's folders hidden),
the synthetic output, each tolerant of what an interrupted or older run left behind."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from dpsynth.errors import DataError
from dpsynth.privacy.report import PrivacyReport
from dpsynth.report.markup import shown_path
from dpsynth.run import RunDir


class UnusableJson(DataError):
    """A JSON file of the run that is there but cannot be used.  ``why`` says so in a few words for the
    report's warnings; ``damaged`` is False where the file could not be opened (permissions: the user's to
    fix, and the file may well be whole)."""

    def __init__(self, path: Path, why: str, damaged: bool) -> None:
        hint = "the run directory is damaged or still being written" if damaged else "check its permissions"
        super().__init__(f"{path}: {why}; {hint}" if damaged else f"{path}: cannot be read ({why}); {hint}")
        self.why = why
        self.damaged = damaged


def read_json(path: Path) -> Any:
    """The file's JSON, or None when there is no such file; ``UnusableJson`` when it is there but unreadable,
    not JSON, or ``null`` (which no version writes)."""
    if not path.exists():
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except IsADirectoryError:
        raise UnusableJson(path, "a folder, not a JSON file", damaged=True) from None
    except OSError as exc:
        raise UnusableJson(path, exc.strerror or type(exc).__name__, damaged=False) from None
    except UnicodeDecodeError:
        text = ""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError:
        raise UnusableJson(path, "not valid JSON", damaged=True) from None
    if raw is None:
        raise UnusableJson(path, "JSON null, not an object", damaged=True)
    return raw


def read_privacy(raw: Any) -> tuple[PrivacyReport | None, str]:
    """privacy.json as the typed report (an earlier version's too), or None and why it cannot be read."""
    if raw is None:
        return None, ""
    try:
        return PrivacyReport.read(raw), ""
    except ValueError as exc:
        return None, str(exc)


def read_config(run_dir: Path) -> tuple[dict[str, Any], str | None]:
    p = RunDir(run_dir).config
    if not p.exists():
        return {}, None
    import yaml

    from dpsynth.config_base import dump_yaml, load_yaml

    try:
        text = p.read_text(encoding="utf-8")
        cfg = load_yaml(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}, None
    if not isinstance(cfg, dict):
        return {}, text
    from dpsynth.config import SECTION_USERS
    from dpsynth.methods.registry import METHODS

    shown = copy.deepcopy(cfg)
    # the sections of other methods (a WASP run's finetune, pearl, knowledgesg defaults) say nothing of this
    # run; a method this version does not know keeps every section
    method = cfg.get("method")
    for section, users in SECTION_USERS.items():
        if method in METHODS and method not in users and section != "data":
            shown.pop(section, None)
    # a preset (aug-pe's Q = 1, near votes only, ...) overrides the stored wasp values: show what the run used
    preset = METHODS[method].preset if method in METHODS else None
    if preset and isinstance(shown.get("wasp"), dict):
        shown["wasp"].update(preset)
    data = shown.get("data")
    private = data.get("private") if isinstance(data, dict) else None
    if isinstance(data, dict) and isinstance(private, str):
        data["private"] = shown_path(private)  # config.yaml keeps the absolute path, for --resume
    if shown != cfg:
        text = dump_yaml(shown, sort_keys=False, allow_unicode=True)
    return cfg, text


def read_synthetic(run_dir: Path) -> list[dict[str, Any]]:
    from dpsynth.data import read_table
    from dpsynth.evaluate.inputs import find_run_output

    out = find_run_output(run_dir)
    if out is None:
        return []
    # for display only, so no column is held to the input checks: a lone surrogate (a JSON "\ud800") is shown
    # as U+FFFD, a list as its text, where a run's input would be refused
    df = read_table(out, columns=())
    return [{str(k): v for k, v in r.items()} for r in df.to_dict(orient="records")]


def normalise_records(records: list[dict[str, Any]], cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """Give every record a ``label`` (from the config's label column if the output has no ``label``)
    and a ``text`` (for non-text outputs, e.g. tabular rows: ``column: value`` lines)."""
    if not records:
        return records
    data = cfg.get("data") if isinstance(cfg.get("data"), dict) else {}
    key = "label" if "label" in records[0] else str((data or {}).get("label_column") or "")
    out = []
    for r in records:
        r = dict(r)
        r["label"] = str(r.get(key, "")) if key else ""
        if "text" not in r:
            skip = {"label", key, "label_name", "generator", "round"}
            r["text"] = "\n".join(f"{k}: {v}" for k, v in r.items() if k not in skip)
        out.append(r)
    return out
