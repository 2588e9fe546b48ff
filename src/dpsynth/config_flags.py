"""The config model as CLI flags and as a commented YAML file, generated from ``dpsynth.config``.

Every config field is a flag: its dotted path (``--privacy.epsilon 2``) or, where the leaf name is
unambiguous, the leaf (``--epsilon 2``); values are YAML.  ``flags_help`` lists them for ``run --help``
and ``commented_default_config`` writes ``dpsynth init``'s file, so neither can drift from what ``run``
accepts.
"""

from __future__ import annotations

import re
import textwrap
import types
import typing
from typing import Any

import yaml
from pydantic import BaseModel

from dpsynth.config import PROMPTING_ONLY_FIELDS, SECTION_USERS, Config, NumberOverflowError, load_yaml
from dpsynth.config_base import SHORT_NAMES, dump_yaml
from dpsynth.errors import ConfigError
from dpsynth.methods.registry import METHODS

_SECTIONS = set(SECTION_USERS)  # the config sections some method reads (methods/registry.py)


def _leaf_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, f in model.model_fields.items():
        ann = f.annotation
        if name in _SECTIONS and isinstance(ann, type) and issubclass(ann, BaseModel):
            out += _leaf_paths(ann, f"{prefix}{name}.")
        else:
            out.append(prefix + name)
    return out


def _named_paths() -> dict[str, list[str]]:
    """Every name a leaf is accepted under (its field name and former names, e.g. max_tokens) -> its paths."""
    from dpsynth.config import field_aliases

    names: dict[str, list[str]] = {}
    for p in _leaf_paths(Config):
        section, _, leaf = p.rpartition(".")
        names.setdefault(leaf, []).append(p)
        for alias, name in field_aliases(section).items():
            if name == leaf:
                names.setdefault(alias, []).append(p)
    return names


def _flag_map() -> dict[str, str]:
    """--flag-name -> dotted config path, for every leaf (short form only where unambiguous).

    A field's former names (``wasp.max_tokens`` for ``wasp.max_new_tokens``, ``m_private`` for
    ``data.n_private``) are flags too.  A short name shared by sections that no method reads together
    (``--max-new-tokens``: wasp and finetune) is resolved by the method, see ``_by_method_flags``."""
    from dpsynth.config import field_aliases

    paths = _leaf_paths(Config)
    m: dict[str, str] = {p: p for p in paths}
    for section in ("", *sorted(_SECTIONS)):
        prefix = f"{section}." if section else ""
        for alias, name in field_aliases(section).items():
            m.setdefault(prefix + alias, prefix + name)
    for leaf, ps in _named_paths().items():
        if len(ps) == 1:
            m.setdefault(leaf, ps[0])
    m["private"] = "data.private"
    m["q"] = "wasp.q"
    m["rounds"] = "wasp.rounds"
    return m


def _by_method_flags() -> dict[str, list[str]]:
    """Short flags shared by sections that no method reads together -> their paths (the method picks one).

    ``--max-new-tokens``, ``--temperature`` and ``--top-p`` are settings of both wasp (the prompting methods)
    and finetune (dp-finetune, knowledgesg): the one of the run's --method is meant."""

    flags = _flag_map()
    out: dict[str, list[str]] = {}
    for leaf, ps in _named_paths().items():
        if leaf in flags or len(ps) < 2 or any("." not in p for p in ps):
            continue
        users = [set(SECTION_USERS.get(p.split(".", 1)[0], ())) for p in ps]
        if all(not (a & b) for i, a in enumerate(users) for b in users[i + 1 :]):
            out[leaf] = ps
    return out


def _flag_value(args: list[str], name: str) -> str | None:
    """The value given to ``--name`` in ``args`` (either ``--name V`` or ``--name=V``), or None."""
    for i, a in enumerate(args):
        if a == f"--{name}" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
    return None


# the run command's own switches (typer options, not config fields): candidates for a misspelt flag only
_SWITCHES = ("resume", "quiet", "check")


def parse_overrides(args: list[str], method: str | None = None) -> dict[str, Any]:
    """``--FIELD VALUE`` flags -> {dotted path: value}.  ``method`` resolves a flag shared by wasp and finetune
    (``--max-new-tokens``); without it, the ``--method`` among ``args``, else the default method, decides."""

    flags = _flag_map()
    by_method = _by_method_flags()
    method = method or _flag_value(args, "method") or str(Config.model_fields["method"].default)
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        a = args[i]
        if not a.startswith("--"):
            if a.lower().endswith((".yaml", ".yml")):
                raise ConfigError(f"unexpected argument {a!r}; a config file comes first: `dpsynth run {a} --FLAG ...`")
            raise ConfigError(f"unexpected argument {a!r}; flags look like --epsilon 4")
        key, eq, val = a[2:].partition("=")
        if key.startswith("generators."):  # --generators.n-threads 1, --generators.NAME.base-url URL
            if not eq:
                if i + 1 >= len(args) or args[i + 1].startswith("--"):
                    raise ConfigError(f"flag --{key} needs a value")
                val = args[i + 1]
                i += 1
            path, value = _generator_override(key, val)
            if path in out:
                raise ConfigError(f"--{key} is given twice among the flags; keep one")
            out[path] = value
            i += 1
            continue
        key_norm = key.replace("-", "_")
        if key_norm == "config":
            raise ConfigError(
                "--config: the config file is the first argument, not a flag: `dpsynth run FILE --FLAG ...`"
            )
        if key_norm not in flags and key_norm not in by_method:
            import difflib

            known = [*flags, *by_method, *_SWITCHES]
            starting = sorted(f for f in known if f.startswith(key_norm))  # --eps: epsilon, not epochs
            close = starting[:1] if len(starting) == 1 else difflib.get_close_matches(key_norm, known, n=1)
            if SHORT_NAMES.get(key_norm) in known:  # --lr
                close = [SHORT_NAMES[key_norm]]
            hint = f"did you mean --{close[0].replace('_', '-')}? " if close else ""
            raise ConfigError(f"unknown flag --{key}; {hint}`dpsynth init` writes a file listing every field")
        if not eq:
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                raise ConfigError(f"flag --{key} needs a value")
            val = args[i + 1]
            i += 1
        if key_norm in flags:
            path = flags[key_norm]
        else:  # the section the method reads; none: the first, which section_misfits then refuses by name
            ps = by_method[key_norm]
            path = next((p for p in ps if method in SECTION_USERS.get(p.split(".", 1)[0], ())), ps[0])
        if path in out:  # as a YAML file may not name a key twice: the run would silently take the last one
            raise ConfigError(f"--{key}: {path} is given twice among the flags; keep one")
        if _as_text(path, val):
            out[path] = None if _means_none(path, val) else val
        elif path == "generators" and _NAME_LIST.match(val.strip()):
            out[path] = generators_by_name(val)
        else:
            out[path] = _parse_value(val, path, strict=_structured(path))
        i += 1
    return out


def _generator_override(key: str, val: str) -> tuple[str, Any]:
    """``--generators.FIELD V`` (every generator) or ``--generators.NAME.FIELD V`` (the one called NAME; names
    may hold dots and hyphens: qwen2.5-coder-0.5b) -> (``generators.*.FIELD`` or ``generators.NAME.FIELD``,
    the value), so that a per-generator setting (n_threads, base_url, timeout_s) needs no YAML list.
    ``load_config`` applies it to the list the run uses (the file's, --generators or the method's default)."""
    from dpsynth.config import GENERATOR_ALIASES, GeneratorConfig

    rest = key.removeprefix("generators.")
    name, _, field = rest.rpartition(".")
    name = GENERATOR_ALIASES.get(name, name)  # a former name is the same generator: given twice if both appear
    field = field.replace("-", "_")
    fields = GeneratorConfig.model_fields
    if field not in fields or field == "name":
        import difflib

        close = difflib.get_close_matches(field, [f for f in fields if f != "name"], n=1)
        hint = (
            f"did you mean --generators.{(name + '.') if name else ''}{close[0].replace('_', '-')}? " if close else ""
        )
        raise ConfigError(
            f"unknown flag --{key}: {field!r} is not a generator setting; {hint}settings: "
            + ", ".join(f for f in fields if f != "name")
        )
    path = f"generators.{name or '*'}.{field}"
    kinds = _annotation_kinds(fields[field].annotation)
    if kinds == {str}:
        return path, None if val.strip().lower() in _NONE_WORDS and _optional(fields[field].annotation) else val
    return path, _parse_value(val, path, strict=dict in kinds)


def _annotation_kinds(ann: Any) -> set[Any]:
    """The types a field takes (``str | None`` -> {str}; ``list[str]`` -> {list})."""
    union = typing.get_origin(ann) in (typing.Union, types.UnionType)
    return {typing.get_origin(a) or a for a in (typing.get_args(ann) if union else (ann,))} - {type(None)}


def _optional(ann: Any) -> bool:
    return typing.get_origin(ann) in (typing.Union, types.UnionType) and type(None) in typing.get_args(ann)


_NONE_WORDS = ("null", "none", "~", "")
_NAME_LIST = re.compile(r"^[\w.\-/~:]+(?:\s*,\s*[\w.\-/~:]+)*$")  # names, GGUF paths, hub ids


def generators_by_name(names: str) -> list[dict[str, Any]]:
    """``--generators smollm2-135m,qwen2.5-coder-0.5b``: the embedded defaults of those names, and any other
    name as a model of that name (an embedded model, a GGUF path or a hub id), so that the common choice
    needs no YAML list on the command line."""
    from dpsynth.config import GENERATOR_ALIASES, default_generators

    defaults = {g.name: g.model_dump(exclude_defaults=True) for g in default_generators()}
    defaults |= {old: defaults[new] for old, new in GENERATOR_ALIASES.items()}  # a former name: the generator
    # a path or hub id is named by its last part (``--generators.NAME.FIELD`` flags and logs use the name)
    return [
        defaults.get(n, {"name": n.rstrip("/").rsplit("/", 1)[-1] or n, "model": n})
        for n in (x.strip() for x in names.split(","))
    ]


def _means_none(path: str, val: str) -> bool:
    """``--label-judge null`` (or none, ~, ''): a text field that may be unset is unset, as ``null`` in YAML
    unsets it; taken as text, it asked for a generator named "null".  Paths stay text (a file may be named
    "none")."""
    return path not in ("data.private", "out") and val.strip().lower() in _NONE_WORDS and _nullable(path)


def _nullable(path: str) -> bool:
    model: Any = Config
    *sections, name = path.split(".")
    for section in sections:
        model = model.model_fields[section].annotation
    if name not in model.model_fields:
        return False
    return _optional(model.model_fields[name].annotation)


def _as_text(path: str, val: str) -> bool:
    """Flags taken as written, not as YAML: paths (``yes`` is a file name), text fields (``--task 'product
    review: electronics'`` is a YAML mapping, ``--task 2023`` a number) and a label list such as ``0,None``
    (YAML would read ``None`` or ``1.0`` as something else); a label mapping or list in YAML braces or
    brackets (``{0: negative, 1: positive}``, as ``--help`` shows) is YAML."""
    if path == "data.labels":
        return not val.strip().startswith(("{", "["))
    return path in ("data.private", "out") or _kinds(path) == {str}


def _kinds(path: str) -> set[Any]:
    """The types the field at ``path`` takes."""
    model: Any = Config
    *sections, name = path.split(".")
    for section in sections:
        model = model.model_fields[section].annotation
    return _annotation_kinds(model.model_fields[name].annotation if name in model.model_fields else str)


def _structured(path: str) -> bool:
    """A field whose value is a list or mapping and never text (generators, data.labels): a YAML typo there
    must be named as one, not passed on as text for the field to call 'not a valid list'."""
    kinds = _kinds(path)
    return path == "data.labels" or (bool(kinds) and kinds <= {list, dict, tuple})


def _parse_value(val: str, path: str = "value", strict: bool = False) -> Any:
    """A flag value as YAML (``2`` -> int, ``[..]`` -> list); text that is not YAML stays text.

    A number that overflows a float (``1.0e+400``) is an error, never infinity (config_base.ConfigLoader);
    a text like ``1e400`` is refused by the field's own validation.
    """
    try:
        return load_yaml(val)
    except NumberOverflowError:
        raise ConfigError(
            f"{path}: the number is too large for a float (it would overflow to infinity); give a smaller "
            "number, or write inf if you mean no limit"
        ) from None
    except yaml.YAMLError as exc:
        if strict:  # a label mapping with a typo must not become labels such as "[a" and "b"
            raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())[:120]})") from None
        return val


def _choices(annotation: Any) -> list[str]:
    """The allowed values of a Literal field (also inside X | None), else []."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return [str(a) for a in args]
    return [c for a in args for c in _choices(a)]


def _type_name(annotation: Any) -> str:
    if _choices(annotation):
        return "CHOICE"
    names = {bool: "BOOL", int: "INT", float: "FLOAT", str: "TEXT"}
    for t in (annotation, *typing.get_args(annotation)):
        if t in names:
            return names[t]
    return "YAML"


def flags_help(method: str | None = None) -> str:
    """Every config field as a flag, grouped by section, with its type, default and choices.

    Generated from the Config model, so the help cannot drift from what ``run`` accepts.  The short
    flag is shown where it is unambiguous (the dotted path always works)."""
    from dpsynth.config import field_aliases

    flags = _flag_map()
    short: dict[str, str] = {}
    for flag, path in flags.items():
        section, _, leaf = path.rpartition(".")
        if flag.rpartition(".")[2] in field_aliases(section) and flag.rpartition(".")[2] != leaf:
            continue  # a former name: the help shows the current one
        if path not in short or len(flag) < len(short[path]):
            short[path] = flag
    for leaf, ps in _by_method_flags().items():
        for path in ps:
            if path.rpartition(".")[2] == leaf:
                short[path] = leaf
    cfg = Config()
    blocks: list[str] = []
    groups: list[tuple[str, type[BaseModel], BaseModel]] = [("general", Config, cfg)]
    for name in Config.model_fields:
        if name in _SECTIONS:
            users = SECTION_USERS.get(name, ())
            if method is None or method in users:
                groups.append((name, type(getattr(cfg, name)), getattr(cfg, name)))
    for group, model, values in groups:
        title = group if group == "general" else f"{group} (used by {', '.join(SECTION_USERS.get(group, ()))})"
        rows = [title + ":"]
        for fname, f in model.model_fields.items():
            if group == "general" and fname in _SECTIONS:
                continue
            path = fname if group == "general" else f"{group}.{fname}"
            flag = "--" + short.get(path, path).replace("_", "-")
            default = getattr(values, fname)
            shown = "see docs" if isinstance(default, (list, dict, BaseModel)) and default else repr(default)
            if isinstance(default, list) and default and all(hasattr(x, "name") for x in default):
                shown = ", ".join(x.name for x in default) + "; `dpsynth init` writes them out"
            choices = _choices(f.annotation)
            extra = f" one of: {', '.join(choices)}." if choices else ""
            text = f"{flag} {_type_name(f.annotation)} (default {shown}){extra} {f.description or ''}".rstrip()
            if path == "generators":
                text += (
                    " Per generator: --generators.FIELD VALUE sets FIELD of every generator whose backend "
                    "reads it, --generators.NAME.FIELD VALUE of one, e.g. --generators.n-threads 1; "
                    "--generators.backend openai --generators.base-url URL."
                )
            rows.extend(textwrap.wrap(text, width=78, initial_indent="  ", subsequent_indent="      "))
        blocks.append("\n".join(rows))
    return "\n\n".join(blocks)


def commented_default_config(method: str | None = None) -> str:
    """The default Config as YAML with each field's description (and choices) as a comment.

    With ``method``: only the sections it reads, its own embedded defaults filled in (the IMDb label set
    and task for the text methods), so the file shows what the run will really use."""
    from dpsynth.data import IMDB_LABELS, IMDB_TASK

    lines = ["# dpsynth configuration. Every field can also be given as a CLI flag (e.g. --epsilon 2).", ""]
    cfg = Config() if method is None else Config(method=method)  # aug-pe: the embedded Qwen alone, as judge too
    imdb_filled = method in METHODS and METHODS[method].labelled
    if imdb_filled:
        cfg = cfg.model_copy(
            update={"data": cfg.data.model_copy(update={"labels": dict(IMDB_LABELS), "task": IMDB_TASK})}
        )
    # the file for every method leaves the generators and the judge to the method's defaults, written as
    # comments: pinned, they made `--method aug-pe` (one generator) and `--generators ...` (no judge) fail
    as_comment = {"generators", "label_judge"} if method is None else set()
    dump = cfg.model_dump(mode="json")
    for name, f in Config.model_fields.items():
        if method is not None and name in SECTION_USERS and method not in SECTION_USERS[name]:
            continue
        if method in METHODS and not METHODS[method].prompting and name in PROMPTING_ONLY_FIELDS:
            continue
        value = dump[name]
        if f.description:
            lines.append(f"# {f.description}")
        if name in _SECTIONS:
            sub = type(getattr(cfg, name))
            lines.append(f"{name}:" if sub.model_fields else f"{name}: {{}}")
            for sname, sf in sub.model_fields.items():
                choices = _choices(sf.annotation)
                listed = f" Choices: {', '.join(choices)}." if choices else ""
                if sf.description or choices:
                    lines.append(f"  # {sf.description or ''}{listed}")
                if imdb_filled and name == "data" and sname in ("labels", "task"):
                    lines.append("  # (the embedded IMDb data's: with your own data.private, set your own)")
                line = dump_yaml({sname: value[sname]}, default_flow_style=True).strip()[1:-1]
                lines.append(("  # " if sname in as_comment else "  ") + line)
        elif name == "generators":
            block = dump_yaml({name: value}, sort_keys=False).rstrip()
            if name in as_comment:
                lines.append("# (each method's own default; uncomment to choose)")
                block = "\n".join("# " + line for line in block.splitlines())
            lines.append(block)
        else:
            lines.append(dump_yaml({name: value}, default_flow_style=True).strip()[1:-1])
        lines.append("")
    return "\n".join(lines)
