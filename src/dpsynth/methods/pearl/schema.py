"""PEARL's public schema: the column model, the user's declared spec, and the DP derivation of the rest.

What the user declares in ``pearl.data_schema`` is public and costs nothing.  Every fact left out
(a column's kind, a numeric column's bounds, a categorical column's values) is derived from the
private data by one Gaussian release per kind of fact (``schema.kinds`` -> ``schema.bounds`` ->
``schema.categories``, each adaptive on the previous), drawn by ``draw_schema_release`` and put into
the schema by ``apply_schema_release``.  The mechanisms themselves are in ``privacy/sketch.py``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dpsynth.cells import category_key
from dpsynth.config_base import load_yaml, norm_label
from dpsynth.errors import ConfigError, ResumeError
from dpsynth.privacy import sketch as sk

log = logging.getLogger("dpsynth")

KINDS = ("integer", "float", "categorical")
SCHEMA_RELEASES = ("schema.kinds", "schema.bounds", "schema.categories")
CATEGORY_PLACEHOLDER = ""  # the one value of a categorical column none of whose values could be released


@dataclass
class ColumnSpec:
    """One column: its kind, bounds (numeric) or categories, and where each fact came from."""

    name: str
    kind: str | None = None  # None: derive with DP
    lo: float | None = None
    hi: float | None = None
    categories: list[str] | None = None
    derived: list[str] = field(default_factory=list)  # which facts were derived with DP

    @property
    def numeric(self) -> bool:
        return self.kind in ("integer", "float")

    def complete(self) -> bool:
        if self.kind is None:
            return False
        if self.numeric:
            return self.lo is not None and self.hi is not None
        return bool(self.categories)

    def as_spec(self) -> dict[str, Any]:
        """This column in the ``pearl.data_schema`` input format."""
        d: dict[str, Any] = {"type": self.kind}
        if self.numeric:
            d.update(min=self.lo, max=self.hi)
        else:
            d["categories"] = self.categories
        return d


@dataclass
class Schema:
    """The public description of the data that the encoding, the generator and the output use."""

    columns: list[ColumnSpec]  # feature columns (array mode: one spec shared by all cells)
    order: list[str]  # output column order (the label in its original place)
    label_column: str | None
    classes: list[str]  # public label keys; [""] when unlabelled
    array_shape: tuple[int, ...] | None = None
    array_dtype: str | None = None

    @property
    def is_array(self) -> bool:
        return self.array_shape is not None

    @property
    def labelled(self) -> bool:
        return self.label_column is not None

    def as_spec(self) -> dict[str, Any]:
        """The complete schema in the ``pearl.data_schema`` input format (reusable as is)."""
        out: dict[str, Any] = {}
        if self.is_array:
            c = self.columns[0]
            out["array"] = {"min": c.lo, "max": c.hi}
        else:
            out["columns"] = {c.name: c.as_spec() for c in self.columns}
        if self.labelled:
            out["labels"] = list(self.classes)
        return out

    def to_json(self, releases: dict[str, Any]) -> dict[str, Any]:
        """schema.json: the schema (public or DP-derived: safe to write), which facts were derived, the releases."""
        return {
            "data_schema": self.as_spec(),
            "derived_with_dp": {c.name: list(c.derived) for c in self.columns if c.derived},
            "releases": releases,
            "reuse": "pass data_schema as pearl.data_schema to spend nothing on the schema next time",
        }


def load_schema_spec(spec: Mapping[str, Any] | str | None) -> dict[str, Any]:
    """The user's (public) schema from the config mapping or a JSON/YAML file, normalised."""
    if spec is None:
        return {}
    if isinstance(spec, str):
        p = Path(spec).expanduser()
        if not p.is_file():
            raise ConfigError(f"pearl.data_schema: {p} is not a file; give a JSON/YAML schema file or a mapping")
        try:
            loaded = load_yaml(p.read_text(encoding="utf-8"))
        except Exception as exc:  # noqa: BLE001 - YAML and decoding errors alike
            raise ConfigError(
                f"pearl.data_schema: {p} is not valid JSON/YAML ({type(exc).__name__}); fix the file"
            ) from None
        spec = loaded
    if not isinstance(spec, Mapping):
        raise ConfigError("pearl.data_schema: must be a mapping with 'columns' (tables) or 'array' (arrays)")
    unknown = set(spec) - {"columns", "array", "labels"}
    if unknown:
        raise ConfigError(f"pearl.data_schema: unknown key(s) {sorted(unknown)}; allowed: columns, array, labels")
    cols = spec.get("columns") or {}
    if not isinstance(cols, Mapping):
        raise ConfigError("pearl.data_schema.columns: must map column names to {type, min, max, categories}")
    out: dict[str, Any] = {"columns": {}}
    for name, c in cols.items():
        out["columns"][str(name)] = _column_spec(str(name), c or {}, f"pearl.data_schema.columns.{name}")
    if spec.get("array") is not None:
        out["array"] = _column_spec("array", spec["array"], "pearl.data_schema.array", array=True)
    if spec.get("labels") is not None:
        labels = spec["labels"]
        if isinstance(labels, Mapping):
            labels = list(labels)
        if not isinstance(labels, list) or len(labels) < 2:
            raise ConfigError("pearl.data_schema.labels: give a list of at least two label values")
        out["labels"] = [norm_label(v) for v in labels]  # as the records' values are read, and data.labels
        twice = sorted({v for v in out["labels"] if out["labels"].count(v) > 1})
        if twice or not all(out["labels"]):
            raise ConfigError(
                "pearl.data_schema.labels: "
                + (f"label {twice[0]!r} is declared twice" if twice else "a label value is empty")
                + "; declare each label once, as a value"
            )
    return out


def _column_spec(name: str, c: Any, where: str, array: bool = False) -> ColumnSpec:
    if not isinstance(c, Mapping):
        raise ConfigError(f"{where}: must be a mapping like {{type: float, min: 0, max: 1}}")
    allowed = {"type", "min", "max", "categories"} if not array else {"type", "min", "max"}
    unknown = set(c) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {', '.join(sorted(allowed))}")
    kind = c.get("type")
    if kind is not None:
        kind = {"int": "integer", "number": "float", "numeric": "float", "category": "categorical"}.get(
            str(kind), str(kind)
        )
        if kind not in KINDS or (array and kind == "categorical"):
            raise ConfigError(f"{where}.type: {c.get('type')!r} is not one of integer, float, categorical")
    spec = ColumnSpec(name, kind)
    for key in ("min", "max"):
        if c.get(key) is None:
            continue
        try:
            v = float(c[key])
        except (TypeError, ValueError):
            raise ConfigError(f"{where}.{key}: must be a number") from None
        if not math.isfinite(v):
            raise ConfigError(f"{where}.{key}: must be finite")
        if key == "min":
            spec.lo = v
        else:
            spec.hi = v
    if spec.lo is not None and spec.hi is not None and not spec.lo < spec.hi:
        raise ConfigError(f"{where}: min must be below max")
    if spec.lo is not None and spec.hi is not None and not math.isfinite(spec.hi - spec.lo):
        # the encoding divides by max - min: an infinite span made every output value inf
        raise ConfigError(f"{where}: max - min overflows a float; give narrower bounds")
    if spec.kind == "integer" and spec.lo is not None and spec.hi is not None and math.ceil(spec.lo) > spec.hi:
        raise ConfigError(f"{where}: no integer lies between min and max; widen them or make the column a float")
    if (spec.lo is not None or spec.hi is not None) and spec.kind == "categorical":
        raise ConfigError(f"{where}: a categorical column has categories, not min/max")
    if c.get("categories") is not None:
        cats = c["categories"]
        if not isinstance(cats, list) or not cats:
            raise ConfigError(f"{where}.categories: give a non-empty list")
        cats = [str(v) for v in cats]
        if len({category_key(v) for v in cats}) != len(cats):
            raise ConfigError(f"{where}.categories: values must be unique (1 and 1.0 are one value)")
        if spec.kind is None:
            spec.kind = "categorical"
        elif spec.kind != "categorical":
            raise ConfigError(f"{where}: categories are only for type categorical")
        spec.categories = cats
    if spec.kind is None and not array and (spec.lo is not None or spec.hi is not None):
        raise ConfigError(f"{where}: give the type (integer or float) with min/max")
    return spec


def parse_numeric(col: np.ndarray) -> np.ndarray:
    """Floats of a column of strings; NaN where a value is empty, non-numeric or not finite (missing)."""
    out = np.full(len(col), np.nan, dtype=np.float64)
    for i, s in enumerate(col):
        try:
            v = float(s)
        except ValueError:
            continue
        if math.isfinite(v):
            out[i] = v
    return out


# ===================================================================== DP derivation of the undeclared facts


def schema_release_plan(schema: Schema) -> list[tuple[str, str, float, str]]:
    """The schema releases the undeclared facts need: (name, what it reads, L2 sensitivity, why), in order."""
    cols = schema.columns
    need_kinds = [c.name for c in cols if c.kind is None and not schema.is_array]
    maybe_numeric = [
        c.name for c in cols if (c.kind is None or c.numeric) and not (c.lo is not None and c.hi is not None)
    ]
    maybe_cat = [c.name for c in cols if (c.kind is None or c.kind == "categorical") and not c.categories]
    if schema.is_array:
        maybe_cat = []
    out: list[tuple[str, str, float, str]] = []
    if need_kinds:
        d = len(need_kinds)
        why = f"add/remove: one record adds 1 to one of 3 kind counts in each of d={d} columns -> sqrt(d)"
        out.append(("schema.kinds", f"value kinds (integer/float/text) of {d} column(s)", math.sqrt(d), why))
    if maybe_numeric and schema.is_array:
        reads = "per-record minimum and maximum of the array (geometric histograms)"
        why = "add/remove: one record adds 1 to one bin of the min and of the max histogram -> sqrt(2)"
        out.append(("schema.bounds", reads, math.sqrt(2.0), why))
    elif maybe_numeric:
        d = len(maybe_numeric)
        reads = f"histograms on a public geometric grid of up to {d} numeric column(s)"
        why = f"add/remove: one record adds 1 to one bin of each of d<={d} columns -> sqrt(d)"
        out.append(("schema.bounds", reads, math.sqrt(d), why))
    if maybe_cat:
        d = len(maybe_cat)
        reads = f"sparse value histograms of up to {d} categorical column(s), thresholded"
        why = (
            f"add/remove: one record adds 1 to one value count in each of d<={d} columns -> sqrt(d); "
            "values held by a single record pass the threshold w.p. <= delta_sel/d per column"
        )
        out.append(("schema.categories", reads, math.sqrt(d), why))
    return out


def draw_schema_release(
    key: str,
    schema: Schema,
    table: Any,
    array: np.ndarray | None,
    *,
    noise_multiplier: float,
    delta_selection: float,
    max_categories: int,
) -> dict[str, Any]:
    """One schema release: the DP facts it derives (post-processed from the noisy statistics inside).

    ``table`` (a DataFrame of strings) or ``array`` (n, D) is the private data; only the release leaves.
    """
    z = noise_multiplier
    if key == "schema.kinds":
        todo = [c for c in schema.columns if c.kind is None]
        noisy = sk.release_column_kinds([table[c.name].astype(str).tolist() for c in todo], noise_multiplier=z)
        kinds = {
            c.name: "categorical" if nt > ni + nf else ("integer" if ni >= nf else "float")
            for c, (ni, nf, nt) in zip(todo, noisy, strict=True)
        }
        return {"kinds": kinds, **release_info(len(todo), z)}
    if key == "schema.bounds":
        if schema.is_array:
            assert array is not None
            (lo, lo_hi, lo_ok), (hi_lo, hi, hi_ok) = sk.release_bounds(
                [array.min(axis=1), array.max(axis=1)], noise_multiplier=z
            )
            if not lo < hi:  # a guessed bound crossed the other: the span of both released bins
                lo, hi = min(lo, hi_lo), max(hi, lo_hi)
            guessed = [] if lo_ok and hi_ok else ["array"]
            return {"bounds": {"array": [lo, hi]}, "guessed_bounds": guessed, **release_info(2, z)}
        todo = [c for c in schema.columns if c.numeric and (c.lo is None or c.hi is None)]
        vals = [parse_numeric(table[c.name].astype(str).to_numpy()) for c in todo]
        b = sk.release_bounds(vals, noise_multiplier=z)
        return {
            "bounds": {c.name: [lo, hi] for c, (lo, hi, _) in zip(todo, b, strict=True)},
            "guessed_bounds": [c.name for c, (_, _, ok) in zip(todo, b, strict=True) if not ok],
            **release_info(len(todo), z),
        }
    todo = [c for c in schema.columns if c.kind == "categorical" and not c.categories]
    cats = sk.release_categories(
        [table[c.name].astype(str).str.strip().tolist() for c in todo],
        noise_multiplier=z,
        delta_sel=delta_selection,
        max_categories=max_categories,
    )
    info = release_info(len(todo), z)
    info["threshold"] = sk.category_threshold(info["sigma"], delta_selection, len(todo)) if todo else None
    info["delta_selection"] = delta_selection
    return {"categories": {c.name: cs for c, cs in zip(todo, cats, strict=True)}, **info}


def apply_schema_release(schema: Schema, payload: dict[str, Any]) -> dict[str, Any]:
    """Put a schema release's facts into the schema (deterministic: a resume applies the saved ones).

    Returns what the release was (sigma, columns, ...), for schema.json and the report.
    """
    by_name = {c.name: c for c in schema.columns}
    info = {k: v for k, v in payload.items() if k not in ("kinds", "bounds", "categories")}
    # the release names the columns the file had when it was drawn: a resumed run whose file lost, renamed
    # or gained a column cannot use it (a KeyError or numpy's "argmax of an empty sequence" before)
    named = {n for k in ("kinds", "bounds", "categories") for n in payload.get(k, {})}
    unknown = sorted(named - set(by_name))
    untyped = sorted(c.name for c in schema.columns if c.kind is None) if "kinds" in payload else []
    added = [n for n in untyped if n not in payload["kinds"]] if untyped else []
    if unknown or added:
        what = f"names column {unknown[0]!r}, which" if unknown else f"does not cover column {added[0]!r}, which"
        raise ResumeError(
            f"a saved schema release {what} the private data now {'lacks' if unknown else 'has'}: the file changed "
            "since the run began; resume with the records it started with, or start a new --out"
        )
    for name, kind in payload.get("kinds", {}).items():
        by_name[name].kind = kind
        by_name[name].derived.append("type")
    for name, (lo, hi) in payload.get("bounds", {}).items():
        c = by_name[name]
        if c.lo is None:
            c.lo = float(lo)
            c.derived.append("min")
        if c.hi is None:
            c.hi = float(hi)
            c.derived.append("max")
        assert c.lo is not None and c.hi is not None
        if not c.lo < c.hi:  # a derived bound met a declared one: widen the derived side
            if "max" in c.derived:
                c.hi = c.lo + 1.0
            else:
                c.lo = c.hi - 1.0
    guessed = payload.get("guessed_bounds") or []
    if guessed:  # a DP outcome, so it may be logged
        log.warning(
            "pearl: no value range of %s stood out from the noise at this budget; its bounds are a guess (the "
            "most counted bin) and its output may be far off. Declare {min, max} in pearl.data_schema, or raise "
            "privacy.epsilon",
            ", ".join(map(repr, guessed)),
        )
    empty = []
    for name, cats in payload.get("categories", {}).items():
        c = by_name[name]
        c.derived.append("categories")
        if cats:
            c.categories = list(cats)
            continue
        # nothing cleared the threshold (a DP outcome, so it may be logged): the column is kept with one
        # public placeholder value instead of stopping a run that has already spent budget
        c.categories = [CATEGORY_PLACEHOLDER]
        empty.append(name)
        log.warning(
            "pearl: no value of column %r was frequent enough to release at this budget; it is output "
            "empty. Declare its categories in pearl.data_schema (or {type: float, min, max} if it is "
            "numeric), or raise privacy.epsilon. A column of free text never has a frequent value: PEARL "
            "makes tables, --method wasp makes text",
            name,
        )
    if empty:
        info["placeholder_columns"] = empty
    return info


def release_info(d: int, z: float) -> dict[str, Any]:
    """What a schema release over d columns was: sensitivity sqrt(d), sigma = z sqrt(d)."""
    info: dict[str, Any] = {
        "columns": d,
        "sensitivity_l2": math.sqrt(d),
        "sigma": z * math.sqrt(d),
        "noise_multiplier": z,
    }
    if d == 0:
        info["note"] = "reserved, nothing to release (no such column); its share is counted as spent"
    return info
