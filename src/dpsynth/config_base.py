"""The plumbing every config model shares: strict models, one-line errors, and the YAML reader.

``StrictModel`` refuses unknown fields and invalid values on construction and on assignment, and
turns pydantic's multi-line report into one ``ConfigError`` line that names the field and the fix
(``config_error_from_validation``).  ``load_yaml`` reads config files, CLI flag values and a run's
config.yaml alike, refusing float literals that overflow to infinity.  ``dpsynth.config`` (the run's
config) and the KnowledgeSG server's config are built on these.
"""

from __future__ import annotations

import difflib
import math
import re
import sys
import types
import typing
from typing import Any

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator
from typing_extensions import Self

from dpsynth.errors import ConfigError


class StrictModel(BaseModel):
    """Unknown fields are errors, and so is any invalid value, on construction and on assignment.

    A mistake surfaces as a one-line ``ConfigError`` naming the field (also a ``ValueError``,
    like pydantic's own ``ValidationError``), never as pydantic's multi-line report.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise config_error_from_validation(exc, type(self)) from None

    # Behaves as BaseModel.__init__, so nested models are validated in one pass (full dotted locations)
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> Self:
        try:
            return super().model_validate(obj, *args, **kwargs)
        except ValidationError as exc:
            raise config_error_from_validation(exc, cls) from None

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            super().__setattr__(name, value)
        except ValidationError as exc:
            raise config_error_from_validation(exc, type(self)) from None

    @field_validator("*", mode="before")
    @classmethod
    def _plain_numbers(cls, v: Any, info: ValidationInfo) -> Any:
        """Numeric fields take numbers only: no booleans, no literal that overflows to infinity.

        pydantic would read ``true`` as 1 and ``1e400`` as inf, so ``--epsilon true`` ran with epsilon 1 and
        ``--epsilon 1e400`` silently turned privacy off.  Infinity must be written as such (``inf``, YAML's
        ``.inf`` or ``float('inf')``); ints still become floats.
        """
        kinds = _numeric_kinds(cls.model_fields[info.field_name or ""].annotation) if info.field_name else ()
        if not kinds:
            return v
        if isinstance(v, bool):
            raise ValueError("must be a number, not true/false")
        if float in kinds and _overflows(v):
            raise ValueError(
                "the number is too large for a float (it would overflow to infinity); give a smaller number, "
                "or write inf if you mean no limit"
            )
        return v


def _numeric_kinds(annotation: Any) -> tuple[type, ...]:
    """(int and/or float) when a field is numeric, including ``X | None``; () otherwise (bool is not numeric)."""
    if annotation in (int, float):
        return (annotation,)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return tuple(a for a in typing.get_args(annotation) if a in (int, float))
    return ()


_INF_WORDS = ("inf", "infinity", ".inf")


def _overflows(v: Any) -> bool:
    """True for a finite-looking number (a text like ``1e400`` or a huge int) that a float cannot hold."""
    if isinstance(v, int) and not isinstance(v, bool):
        return abs(v) > sys.float_info.max
    if isinstance(v, str):
        text = v.strip()
        try:
            f = float(text.replace("_", ""))
        except ValueError:
            return False  # not a number: pydantic says so
        return math.isinf(f) and text.lower().lstrip("+-") not in _INF_WORDS
    return False


def norm_label(v: Any) -> str:
    """A label value as the key it is declared under: stripped, ``1.0`` (a float column's 1) read as ``1``, and
    a boolean as ``true``/``false`` (JSON, Parquet and YAML booleans print as ``True``, CSV cells and flags
    are as written).  Declared keys and the records' values both go through it, so that they meet."""
    s = str(v).strip()
    if s.endswith(".0") and s[:-2].lstrip("-").isdigit():
        s = s[:-2]
    if s.lower() in ("true", "false"):
        s = s.lower()
    return s


_DEVICE = re.compile(r"cpu|mps|cuda(:\d+)?")


def device_name(v: str) -> str:
    """A ``device`` field, checked when the config loads: a name torch refuses (``gpu``) would pass ``--check``
    and fail only when the model moves there, after a real run has spent privacy budget on its counts.

    ``auto``, ``cpu``, ``mps``, ``cuda`` and ``cuda:N`` in any case (lower-cased) need no torch; any other
    name is accepted as torch accepts it, or lower-cased where torch accepts only that (``XPU``)."""
    text = v.strip()
    if text.lower() == "auto" or _DEVICE.fullmatch(text.lower()):
        return text.lower()
    try:
        import torch
    except ImportError:  # no torch: no backend that takes other names is installed either
        raise ValueError("is not a device; use auto, cpu, cuda, cuda:N or mps") from None
    for candidate in dict.fromkeys((text, text.lower())):
        try:
            torch.device(candidate)
        except (RuntimeError, ValueError, TypeError):
            continue
        return candidate
    raise ValueError("is not a device torch knows; use auto, cpu, cuda, cuda:N or mps")


class NumberOverflowError(yaml.constructor.ConstructorError):
    """A YAML float literal such as ``1.0e+400`` that is finite as written but overflows to infinity."""


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping that names one key twice (``privacy: {epsilon: 1, epsilon: 50}``)."""


class ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` whose floats refuse to overflow (only ``.inf``, or the text ``inf``, means
    infinity) and whose mappings refuse a key given twice.

    Plain YAML keeps the last of two equal keys, so a config that names ``epsilon`` twice would run at
    whichever came last, silently.  Keys brought in by a merge (``<<: *base``) may still be overridden.
    Used for config files, CLI flag values and a run's config.yaml alike.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:  # an unhashable key: SafeLoader names it
                continue
            if first is not key_node:
                line = first.start_mark.line + 1
                a, b = str(first.value), str(key_node.value)
                # YAML reads 0 and false (or 1 and 1.0) as equal keys, which one mapping cannot hold apart
                what = (
                    f"the key {key!r} is given twice in one mapping (first on line {line})"
                    if a == b
                    else f"the keys {a!r} (line {line}) and {b!r} are the same key once read"
                )
                raise DuplicateKeyError(None, None, f"{what}; keep one", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def _construct_float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> float:
    value = loader.construct_yaml_float(node)
    literal = str(node.value).strip().lower().lstrip("+-")
    if math.isinf(value) and literal != ".inf":
        raise NumberOverflowError(
            None,
            None,
            "a number is too large for a float (it would overflow to infinity); give a smaller number, or "
            "write .inf if you mean no limit",
            node.start_mark,
        )
    return float(value)


ConfigLoader.add_constructor("tag:yaml.org,2002:float", _construct_float)

# Plain scalars resolve as in YAML 1.2's core schema, not PyYAML's YAML 1.1: only true/false are booleans
# (1.1 also reads yes/no/on/off, so ``labels: {0: no, 1: yes}`` asked for "True" texts), integers are
# decimal, 0o octal or 0x hex (1.1 reads 010 as 8, 1:30 as 90 and 1_0 as 10), and 1e-6 is a float.
# One departure from 1.2: a zero-padded integer (``02139``, ``007``) is text, as written, because in a
# config it is a code (a zip code category, a label ``01``) whose zeros a number would drop; a number
# field still reads the text ``010`` as ten.
_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL, _INT, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ConfigLoader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:str", re.compile(r"^[-+]?0[0-9]+$"), list("-+0"))
ConfigLoader.add_implicit_resolver(_INT, re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789"))
ConfigLoader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+.0123456789"),
)


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = str(loader.construct_scalar(node))
    if text.startswith(("0o", "0x")):
        return int(text[2:], 8 if text[1] == "o" else 16)
    return int(text, 10)


def _construct_bool(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> bool:
    return str(loader.construct_scalar(node)).lower() == "true"


ConfigLoader.add_constructor(_INT, _construct_int)
ConfigLoader.add_constructor(_BOOL, _construct_bool)


class ConfigDumper(yaml.SafeDumper):
    """``yaml.SafeDumper`` that quotes a text any reader could take for something else: one that resolves
    as YAML 1.1 (``yes``, ``010``: PyYAML's ``safe_load``, other tools) or as ``ConfigLoader`` reads it
    (``1e-6``), so that config.yaml reads back as written whatever reads it."""


ConfigDumper.yaml_implicit_resolvers = {
    first: [*resolvers, *ConfigLoader.yaml_implicit_resolvers.get(first, [])]
    for first, resolvers in yaml.SafeDumper.yaml_implicit_resolvers.items()
}
for _first, _resolvers in ConfigLoader.yaml_implicit_resolvers.items():
    ConfigDumper.yaml_implicit_resolvers.setdefault(_first, list(_resolvers))


def dump_yaml(data: Any, **kwargs: Any) -> str:
    """``yaml.safe_dump`` with ``ConfigDumper``."""
    return yaml.dump(data, Dumper=ConfigDumper, **kwargs)


def load_yaml(text: str) -> Any:
    """Parse YAML text with ``ConfigLoader`` (raises ``yaml.YAMLError``, ``NumberOverflowError`` included)."""
    return yaml.load(text, Loader=ConfigLoader)


# llama.cpp's DRY ("don't repeat yourself") sampler penalises continuing any token sequence already in the
# context, the prompt included.  Small models shown L good and L poor examples otherwise copy them: on the
# default demo's round-1 prompts it raised accepted outputs from 6/16 to 15/16 (Gemma-3-270M) and from
# 2/16 to 12/16 (Qwen2.5-Coder-0.5B): bench/diag_copying.py, bench/results/copying.json.


class ConfigValidationError(ConfigError, ValueError):
    """An invalid config value (a ``ConfigError``; also a ``ValueError`` as pydantic's errors are)."""


def config_error_from_validation(exc: ValidationError, model: type[BaseModel] | None = None) -> ConfigError:
    """Turn pydantic's multi-line report into one line naming each field and the fix.

    The offending input value is never echoed (it could be anything the user pasted).
    """
    parts = []
    unknown = False
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        kind = err["type"]
        clash = _alias_clash(model, err["loc"]) if kind == "extra_forbidden" else None
        if clash is not None:  # wasp: {max_tokens: 48, max_new_tokens: 64}
            msg = f"is another name of {clash}, which is given too; keep one of them"
        elif kind == "extra_forbidden":
            msg = "unknown field" + _suggest(model, err["loc"])
            unknown = True
        elif kind == "missing":
            msg = "required field is missing"
        elif kind == "model_type":  # privacy: 4 -> "a valid dictionary or instance of PrivacyConfig"
            msg = "must be a mapping of fields ({FIELD: VALUE, ...}), not a single value"
        elif kind == "literal_error" and isinstance(err.get("input"), str):
            expected = re.findall(r"'([^']*)'", str((err.get("ctx") or {}).get("expected", "")))
            close = difflib.get_close_matches(err["input"], expected, n=1, cutoff=0.5)
            msg = f"must be one of {', '.join(expected)}" + (f" (did you mean {close[0]!r}?)" if close else "")
        else:
            msg = " ".join(err["msg"].removeprefix("Value error, ").split())
        # model-level checks already name their field ("generators: ...")
        parts.append(f"{loc}: {msg}" if loc and not msg.startswith(f"{loc}.") else msg)
    parts = _merge_list_items(parts)
    if unknown:
        parts.append("`dpsynth init` writes a file listing every field")
    return ConfigValidationError("; ".join(parts) or "config: invalid")


def _merge_list_items(parts: list[str]) -> list[str]:
    """One message for the same error in every item of a list: ``--generators.n-threads abc`` sets the field of
    each generator, and "generators.0.n_threads: ...; generators.1.n_threads: ..." said it three times."""
    starred = [re.sub(r"^(\w+)\.\d+\.", r"\1.*.", p) for p in parts]
    out: list[str] = []
    for part, star in zip(parts, starred, strict=True):
        shown = star if starred.count(star) > 1 else part
        if shown not in out:
            out.append(shown)
    return out


def _model_at(model: type[BaseModel] | None, loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model that holds the field at ``loc`` (walking sections and lists of models), or None."""
    for part in loc[:-1]:
        if model is None:
            return None
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None) if field is not None else None
        args = getattr(ann, "__args__", ())  # list[GeneratorConfig], X | None
        candidates = [ann, *args]
        model = next((a for a in candidates if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return model


def _alias_clash(model: type[BaseModel] | None, loc: tuple[int | str, ...]) -> str | None:
    """The field whose other name ``loc`` is, when pydantic calls it unknown because both names were given."""
    model = _model_at(model, loc)
    if model is None or not loc:
        return None
    for name, f in model.model_fields.items():
        if isinstance(f.validation_alias, AliasChoices) and str(loc[-1]) in f.validation_alias.choices:
            return name
    return None


def _suggest(model: type[BaseModel] | None, loc: tuple[int | str, ...]) -> str:
    """' (did you mean X?)' for a misspelt field at ``loc``, or ''."""
    root = model
    model = _model_at(model, loc)
    if model is None or not loc:
        return ""
    if len(loc) == 1 and model.__name__ == "Config":  # Config(epsilon=2): the field lives in a section
        fields_of = {name: getattr(f.annotation, "model_fields", {}) for name, f in model.model_fields.items()}
        sections = [name for name, fields in fields_of.items() if str(loc[-1]) in fields]
        if len(sections) == 1:
            return f" (did you mean {sections[0]}.{loc[-1]}? e.g. {sections[0]}={{'{loc[-1]}': ...}})"
    name = SHORT_NAMES.get(str(loc[-1]), str(loc[-1]))
    close = [name] if name in model.model_fields else difflib.get_close_matches(name, list(model.model_fields), n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return _in_another_section(root, loc)


# what other tools call these fields, too short for a close match to find
SHORT_NAMES = {"lr": "learning_rate", "bs": "batch_size", "eps": "epsilon", "n": "n_synthetic", "m": "n_private"}


def _in_another_section(root: type[BaseModel] | None, loc: tuple[int | str, ...]) -> str:
    """' (did you mean privacy.epsilon?)' for ``wasp: {epsilon: 4}`` or ``wasp: {epsilonn: 4}``: a field of
    another section of the whole config (or of the config itself), written in the wrong one, or ''."""
    loc = tuple(p for p in loc if not isinstance(p, int))  # generators.0.temperature: a field of the list's items
    if root is None or root.__name__ != "Config" or len(loc) != 2 or not isinstance(loc[0], str):
        return ""
    paths: dict[str, str] = {name: name for name in root.model_fields}
    for section, f in root.model_fields.items():
        for name in getattr(f.annotation, "model_fields", {}):
            if section != loc[0]:
                paths.setdefault(name, f"{section}.{name}")
    close = difflib.get_close_matches(str(loc[-1]), list(paths), n=1)
    return f" (did you mean {paths[close[0]]}? it is not a field of {loc[0]})" if close else ""


def mark_text(exc: yaml.MarkedYAMLError) -> str:
    """'line L, column C: PROBLEM' on one line."""
    mark = exc.problem_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return " ".join(f"{where}{exc.problem}".split())


def yaml_problem(exc: Exception) -> str:
    """'PROBLEM at line L, column C; fix the syntax' from a YAML error, on one line."""
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or type(exc).__name__
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return " ".join(f"{problem}{where}; fix the syntax or start again from `dpsynth init`".split())
