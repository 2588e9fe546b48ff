"""How a resumed run's config is compared with the one it started with (``RunDir.check``).

A resume must run the same settings, except those that say where the run lives or how its backends are
reached (``RESUMABLE_DIFFS`` and the generators' ``GENERATOR_TRANSPORT``); settings added to dpsynth after
the run's config.yaml was written are found so the resume can say which defaults it takes.
"""

from __future__ import annotations

from typing import Any

from dpsynth.config import GENERATOR_TRANSPORT, SECTION_USERS, field_names

# settings a resume may change: where the run lives, how the KnowledgeSG client reaches its server (a moved
# server must not force a new run and a second spend: uploading the saved DP adapter is post-processing)
KSG_TRANSPORT = ("server", "token_env", "request_timeout_s", "max_retries", "poll_interval_s", "job_timeout_s")
RESUMABLE_DIFFS = {"out"} | {f"knowledgesg.{k}" for k in KSG_TRANSPORT}
# Settings added after some runs were made, whose value here is what every earlier version did: a config.yaml
# that predates them needs no "may differ" warning on resume
AS_BEFORE: dict[str, Any] = {"finetune.optimizer": "adamw", "finetune.momentum": 0.0}
_SECTIONS = set(SECTION_USERS)  # the config sections (methods/registry.py)


def fetch_free(dump: dict[str, Any]) -> dict[str, Any]:
    """A config dump without the generators' GENERATOR_TRANSPORT settings, which a resume may change."""
    gens = [{k: v for k, v in g.items() if k not in GENERATOR_TRANSPORT} for g in dump.get("generators", [])]
    return {**dump, "generators": gens}


def diff_paths(a: Any, b: Any, prefix: str = "") -> set[str]:
    """Dotted paths where ``a`` and ``b`` differ; lists of one length item by item (``generators.1.n_ctx``)."""
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and a != b:
        a, b = dict(enumerate(a)), dict(enumerate(b))
    if isinstance(a, dict) and isinstance(b, dict):
        out: set[str] = set()
        for k in set(a) | set(b):
            out |= diff_paths(a.get(k), b.get(k), f"{prefix}{k}." if prefix or k != "" else str(k))
        return {d.rstrip(".") for d in out}
    return set() if a == b else {prefix.rstrip(".") or "config"}


def absent_paths(stored: dict[str, Any], current: dict[str, Any], method: str, section: str = "") -> set[str]:
    """Dotted paths of the fields in ``current`` that ``stored`` lacks: settings added to dpsynth after a
    stored config.yaml was written (it records every field, so an absent key means an older version).
    A field stored under a former name (``wasp.max_tokens``) is present; sections the run's method does
    not read are not looked into."""
    names = field_names(section)
    out: set[str] = set()
    for k, v in current.items():
        if not section and k in _SECTIONS and method not in SECTION_USERS[k]:
            continue
        here = [n for n in names.get(k, (k,)) if n in stored]
        if not here:
            out.add(f"{section}.{k}" if section else k)
        elif not section and k in _SECTIONS and isinstance(v, dict) and isinstance(stored[here[0]], dict):
            out |= absent_paths(stored[here[0]], v, method, k)
    return out


def dotted(raw: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        raw = raw[part]
    return raw


def as_its_version_ran(raw: dict[str, Any]) -> dict[str, Any]:
    """A stored config.yaml read the way the version that wrote it ran it, where that version accepted what
    this one refuses or fills in:

    * ``base_url`` / ``api_key_env`` on a generator that is not ``backend: openai`` were accepted and never
      read; this version refuses them (a forgotten backend), which would block the run's resume;
    * a ``wasp`` section without ``label_judge`` predates the judge: that run had none, while this version
      gives a list holding the judge's model the judge."""
    for g in raw.get("generators") or ():
        if isinstance(g, dict) and g.get("backend", "llamacpp") != "openai":
            g.pop("base_url", None)
            g.pop("api_key_env", None)
    wasp = raw.get("wasp")
    if isinstance(wasp, dict) and "label_judge" not in wasp:
        wasp["label_judge"] = None
    return raw
