"""A run's command-line arguments, read before its config is validated.

Which method the run will use (it decides flags such as ``--max-new-tokens``), whether ``--resume`` is
asked to change it, a relative ``data.private`` that lies beside the config file rather than in the current
folder, and the refusal of a flag the method does not read.  Each check names the fix in one line, before
any model is loaded or anything is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dpsynth.config import load_yaml, section_misfits
from dpsynth.config_flags import _flag_value
from dpsynth.errors import ConfigError
from dpsynth.methods.registry import METHODS


def resumed_generators(overrides: dict[str, Any], config: str | None) -> None:
    """``--resume --out DIR --generators.timeout-s 600``: the per-generator setting applies to the stored run's
    generators (not the method's default list, which a resume would refuse as another set), so a run whose
    backend timed out resumes with a longer limit.  Sets ``overrides["generators"]`` to the stored list."""
    out = overrides.get("out")
    if config or "generators" in overrides or not isinstance(out, str):
        return
    if not any(k.startswith("generators.") for k in overrides):
        return
    from dpsynth.run import RunDir

    try:
        raw = load_yaml(RunDir(out).config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return  # the resume reports it
    if isinstance(raw, dict) and isinstance(raw.get("generators"), list):
        overrides["generators"] = raw["generators"]


def method_hint(args: list[str], config: str | None, resume: bool) -> str | None:
    """The method a run will use, as far as it can be told before the config is validated: --method, else
    the config file's, else (with --resume) the stored run's.  It decides flags such as --max-new-tokens."""
    given = _flag_value(args, "method")
    if given:
        return given
    sources = [Path(config).expanduser()] if config else []
    out = _flag_value(args, "out")
    if resume and out:
        from dpsynth.run import RunDir

        sources.append(RunDir(out).config)
    for src in sources:
        try:
            raw = load_yaml(src.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue  # load_config or the resume reports it
        if isinstance(raw, dict) and isinstance(raw.get("method"), str):
            return str(raw["method"])
    return None


def check_resumed_method(args: list[str], command_method: str | None) -> None:
    """``--resume --method aug-pe`` on a run that started as wasp: say so first (the config then failed on a
    rule of the other method, such as aug-pe's one generator, which named neither the run nor the fix)."""
    given = command_method or _flag_value(args, "method")
    out = _flag_value(args, "out")
    if not given or not out:
        return
    from dpsynth.run import RunDir

    try:
        raw = load_yaml(RunDir(out).config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return  # the resume itself reports a missing or damaged config.yaml
    stored = raw.get("method", "wasp") if isinstance(raw, dict) else None
    if isinstance(stored, str) and stored != given:
        raise ConfigError(
            f"method: the run in {out} started as {stored}; --resume continues it as {stored} (drop --method "
            f"{given}, or start a new run with another --out)"
        )


def _yaml_word(value: object) -> str:
    """A value as the YAML file and the flags write it (``false``, not Python's ``False``)."""
    return str(value).lower() if isinstance(value, bool) or value is None else str(value)


def check_relative_to_config(private: object, config: Path) -> None:
    """A relative data.private is read from the current folder, as every path of a run is; when it is not
    there but is beside the config file, say so, rather than only "file does not exist"."""
    if not isinstance(private, str) or ":" in private or Path(private).is_absolute() or Path(private).exists():
        return
    beside = config.expanduser().parent / private
    if beside.exists():
        raise ConfigError(
            f"data.private: {private} does not exist in the current folder (relative paths in a config file are "
            f"read from where dpsynth runs, not from the file's folder); write {beside}"
        )


def refuse_unread_flags(paths: list[str], method: str) -> None:
    """Refuse a flag ``method`` does not read (another method's section, a setting its preset fixes): it would
    be stored in config.yaml and silently ignored.  A config file's such setting is warned of instead."""
    misfits = section_misfits(paths, method)
    if not misfits:
        return
    path, users = misfits[0]
    flag = f"--{path.rsplit('.', 1)[-1].replace('_', '-')} ({path})"
    if path.startswith("generators."):  # --generators.n-threads, --generators.NAME.n-threads
        flag = "--" + path.replace(".*.", ".").replace("_", "-")
    preset = METHODS[method].preset if method in METHODS else {}
    if path.startswith("wasp.") and path[5:] in preset:
        raise ConfigError(
            f"{flag}: --method {method} fixes it to {_yaml_word(preset[path[5:]])}; drop it, or choose "
            f"--method {users[0]} to set it"
        )
    raise ConfigError(
        f"{flag} is a setting of {' and '.join(users)}, not of --method {method}; drop it or choose --method {users[0]}"
    )
