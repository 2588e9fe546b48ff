"""PEARL (Liew, Takahashi, Ueno, ICLR 2022): one private sketch, then a generator trained freely.

The data flow is one way::

    private table / array --(public schema: encode into [0,1]^D)--> privacy/sketch.py
        --(Gaussian mechanism, once)--> NoisySketch --> train_generator --> sample --> decode

* ``PearlMethod.prepare`` loads and validates the private data and plans the budget, before the
  run directory exists.
* ``PearlMethod.run`` derives what the user did not declare of the schema with DP (kinds,
  bounds, categories), releases the counts and the characteristic-function sketch (each release
  one ledger event with its own noise, drawn through ``Ledger.release`` into its own file), then
  *drops every reference to the private data* and trains the generator with
  ``train_generator(sketch, layout, ...)``, a function that receives only the release and public
  facts.
* The generator is trained to minimise the characteristic-function distance (CFD) to the noisy
  sketch while a critic re-weights the frequencies to where the two differ most (the paper's
  adversarial re-weighting, Sec. 3.3): the critic is a Gaussian frequency distribution
  omega_a(t | h) = N(0, diag(e^{2a}) / h^2) relative to the public draw omega_0(t | h) = N(0, I / h^2);
  because the frequencies are fixed by the release, omega_a acts through importance weights
  w_j = omega_a(t_j) / omega_0(t_j) (self-normalised), and min_G max_a sum_j w_j |Phi_data(t_j) -
  Phi_G(t_j)|^2 is the objective.  Two stabilisers (docs/pearl.md): |a_d| <= max_log_scale, and
  the weights are mixed with uniform ones (uniform_mix).

``select_by_sketch`` applies the same sketch to text *embeddings*: it picks the generated
candidates whose empirical characteristic function best matches a private embedding sketch (a
cheap baseline next to WASP; ``embedding_sketch`` makes the release).
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from dpsynth.config import Config
from dpsynth.data import notify_owner, read_table, warn_if_delta_large
from dpsynth.errors import ConfigError, DataError, DpsynthError, ResumeError
from dpsynth.io import atomic_write_bytes, atomic_write_json
from dpsynth.privacy import sketch as sk
from dpsynth.privacy.events import Event
from dpsynth.privacy.ledger import Ledger
from dpsynth.privacy.report import privacy_report
from dpsynth.run import ProgressReporter, RunDir

log = logging.getLogger("dpsynth")

KINDS = ("integer", "float", "categorical")
ADJACENCY = "add/remove one private record (one row or one array record, its label included)"
# The checks that still refuse input, in prepare (console only, before the run directory exists): the
# guarantee is stated over inputs that pass them (privacy.json "domain").  Everything else about a
# value is handled record by record (clipped, imputed, or encoded as no category: encode_table).
DOMAIN_NOT_EMPTY = "the private set holds at least one record"
DOMAIN_LABEL = "every record's label (data.label_column) is one of the declared data.labels"
DOMAIN_FINITE_ARRAY = "array input: every value of every record is finite (no NaN or infinity)"
_ARRAY_SUFFIXES = (".npy", ".npz")


# ===================================================================== schema


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
            import yaml

            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
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
        out["labels"] = [str(v) for v in labels]
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
    if (spec.lo is not None or spec.hi is not None) and spec.kind == "categorical":
        raise ConfigError(f"{where}: a categorical column has categories, not min/max")
    if c.get("categories") is not None:
        cats = c["categories"]
        if not isinstance(cats, list) or not cats:
            raise ConfigError(f"{where}.categories: give a non-empty list")
        cats = [str(v) for v in cats]
        if len(set(cats)) != len(cats):
            raise ConfigError(f"{where}.categories: values must be unique")
        if spec.kind is None:
            spec.kind = "categorical"
        elif spec.kind != "categorical":
            raise ConfigError(f"{where}: categories are only for type categorical")
        spec.categories = cats
    if spec.kind is None and not array and (spec.lo is not None or spec.hi is not None):
        raise ConfigError(f"{where}: give the type (integer or float) with min/max")
    return spec


# ===================================================================== loading


@dataclass
class _Private:
    """The loaded private data.  Lives only in memory, only until the sketch is released."""

    table: Any = None  # pandas DataFrame of strings (table mode)
    array: np.ndarray | None = None  # (n, D) float64 (array mode)
    labels: np.ndarray | None = None  # class index per record
    where: str = "dataset"

    def __len__(self) -> int:
        return int(len(self.table) if self.table is not None else len(self.array if self.array is not None else []))

    def __repr__(self) -> str:  # never print private values
        return f"_Private(<{len(self)} records>)"


def _rows_text(where: str, idx: Sequence[int] | np.ndarray) -> str:
    suffix = Path(where).suffix.lower()
    word, offset = ("rows", 2) if suffix in (".csv", ".tsv", ".txt") else ("record indices", 0)
    more = f" and {len(idx) - 5} more" if len(idx) > 5 else ""
    return f"{word} " + ", ".join(str(int(i) + offset) for i in idx[:5]) + more


def _norm_label(v: Any) -> str:
    s = str(v).strip()
    if s.endswith(".0") and s[:-2].lstrip("-").isdigit():
        s = s[:-2]
    return s


def _is_array_source(source: Any) -> bool:
    if isinstance(source, (np.ndarray, Mapping)):
        return True
    if isinstance(source, (str, Path)):
        return Path(str(source)).suffix.lower() in _ARRAY_SUFFIXES
    return False


# ===================================================================== encoding (public transforms)


@dataclass(frozen=True)
class Layout:
    """Where each column sits in the encoded vector in [0, 1]^D (numeric) / {0, 1/sqrt 2}^k (one-hot)."""

    dim: int
    numeric_idx: tuple[int, ...]
    cat_groups: tuple[tuple[int, int], ...]  # (start, size)
    n_classes: int

    def segments(self) -> list[tuple[int, int, bool]]:
        """Contiguous (start, end, is_numeric) runs of the encoded vector, in order."""
        groups = {start: size for start, size in self.cat_groups}
        out: list[tuple[int, int, bool]] = []
        pos = 0
        while pos < self.dim:
            if pos in groups:
                out.append((pos, pos + groups[pos], False))
                pos += groups[pos]
                continue
            end = pos
            while end < self.dim and end not in groups:
                end += 1
            out.append((pos, end, True))
            pos = end
        return out

    @classmethod
    def from_schema(cls, schema: Schema) -> Layout:
        if schema.is_array:
            d = int(np.prod(schema.array_shape or (1,)))
            return cls(d, tuple(range(d)), (), len(schema.classes))
        pos, num, groups = 0, [], []
        for c in schema.columns:
            if c.numeric:
                num.append(pos)
                pos += 1
            else:
                k = len(c.categories or [])
                groups.append((pos, k))
                pos += k
        return cls(pos, tuple(num), tuple(groups), len(schema.classes))


ONEHOT_SCALE = 1.0 / math.sqrt(2.0)  # two categories are at distance 1, like the ends of a numeric range


def _scale01(v: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Clip to [lo, hi] (documented: out-of-bound values are clipped) and map to [0, 1]."""
    return (np.clip(v, lo, hi) - lo) / (hi - lo)


def encode_table(df: Any, schema: Schema, where: str = "dataset") -> np.ndarray:
    """Encode a table of strings by the schema, record by record; no value stops the run.

    Each record's encoding depends on that record only (a per-record map, so the sketch's
    sensitivity argument holds whatever the data holds), and no value is refused: a check that
    stopped the run would make the output's existence depend on one record.  Numeric values outside
    [min, max] are clipped; an empty, non-numeric or non-finite value in a numeric column is missing
    and encoded at the middle of the range (0.5, a public value); a value outside a column's
    categories (declared, or too rare to be released) is encoded as no category (all-zero).
    ``value_notes`` tells the data owner, on the console, where that happened.
    """
    layout = Layout.from_schema(schema)
    x = np.zeros((len(df), layout.dim), dtype=np.float64)
    pos = 0
    for c in schema.columns:
        col = df[c.name].astype(str).to_numpy()
        if c.numeric:
            v = _parse_numeric(col)
            assert c.lo is not None and c.hi is not None
            x[:, pos] = np.where(np.isnan(v), MISSING_NUMERIC, _scale01(np.nan_to_num(v), c.lo, c.hi))
            pos += 1
        else:
            idx = _category_index(col, c.categories or [])
            ok = idx >= 0
            x[np.flatnonzero(ok), pos + idx[ok]] = ONEHOT_SCALE
            pos += len(c.categories or [])
    return x


MISSING_NUMERIC = 0.5  # encoded value of a missing numeric entry: the middle of [min, max], public


def _category_index(col: np.ndarray, cats: Sequence[str]) -> np.ndarray:
    """Index of each (stripped) value in ``cats``, -1 when it is not one of them."""
    index = {v: i for i, v in enumerate(cats)}
    return np.array([index.get(str(s).strip(), -1) for s in col], dtype=np.int64)


def _parse_numeric(col: np.ndarray) -> np.ndarray:
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


def value_notes(df: Any, columns: Sequence[ColumnSpec], where: str) -> list[str]:
    """Console notes for the data owner: which rows of which column were imputed or left without a category.

    One line per column, naming the rows (they are the owner's own data), never a value.  For the
    console only (``data.notify_owner``): never logged or written, because the rows are private.
    """
    notes = []
    for c in columns:
        col = df[c.name].astype(str).to_numpy()
        if c.numeric:
            bad = np.flatnonzero(np.isnan(_parse_numeric(col)))
            if bad.size:
                notes.append(
                    f"{where}: {bad.size} record(s) have an empty or non-numeric {c.name!r} in a numeric column "
                    f"({_rows_text(where, bad)}); they are treated as missing and encoded at the middle of "
                    "[min, max]. Fill them, or declare the column categorical in pearl.data_schema"
                )
        elif c.categories and "categories" not in c.derived:
            bad = np.flatnonzero(_category_index(col, c.categories) < 0)
            if bad.size:
                notes.append(
                    f"{where}: {bad.size} record(s) have a {c.name!r} value not in the declared categories "
                    f"({_rows_text(where, bad)}); they are encoded as no category of that column. Add the "
                    "category to pearl.data_schema or fix the rows"
                )
    return notes


def _typed(values: Sequence[str]) -> list[Any]:
    """Category strings as output values: ints when every category is an integer literal (dtype kept)."""
    if all(sk.value_kind(v) == 0 and str(int(v)) == v for v in values):
        return [int(v) for v in values]
    return list(values)


def decode(enc: np.ndarray, y: np.ndarray, schema: Schema) -> tuple[list[dict[str, Any]], np.ndarray | None]:
    """Encoded synthetic records -> output rows (and the array for array data), dtypes as declared."""
    labels = _typed(schema.classes) if schema.labelled else []
    if schema.is_array:
        c = schema.columns[0]
        assert c.lo is not None and c.hi is not None
        vals = c.lo + np.clip(enc, 0, 1) * (c.hi - c.lo)
        dtype = np.dtype(schema.array_dtype or "float64")
        if dtype.kind in "iub":
            vals = np.clip(np.rint(vals), c.lo, c.hi)
        arr = vals.astype(dtype).reshape((len(enc), *(schema.array_shape or ())))
        flat = arr.reshape(len(enc), -1)
        rows = []
        for i in range(len(enc)):
            r: dict[str, Any] = {f"px_{k}": flat[i, k].item() for k in range(flat.shape[1])}
            if schema.label_column is not None:
                r[schema.label_column] = labels[int(y[i])]
            rows.append(r)
        return rows, arr
    out_cols: dict[str, list[Any]] = {}
    pos = 0
    for c in schema.columns:
        if c.numeric:
            assert c.lo is not None and c.hi is not None
            v = c.lo + np.clip(enc[:, pos], 0, 1) * (c.hi - c.lo)
            if c.kind == "integer":
                lo_i, hi_i = math.ceil(c.lo), math.floor(c.hi)
                out_cols[c.name] = [int(t) for t in np.clip(np.rint(v), lo_i, max(lo_i, hi_i))]
            else:
                out_cols[c.name] = [float(f"{t:.6g}") for t in v]
            pos += 1
        else:
            k = len(c.categories or [])
            typed = _typed(c.categories or [])
            out_cols[c.name] = [typed[int(j)] for j in np.argmax(enc[:, pos : pos + k], axis=1)]
            pos += k
    if schema.label_column is not None:
        out_cols[schema.label_column] = [labels[int(j)] for j in y]
    rows = [{name: out_cols[name][i] for name in schema.order} for i in range(len(enc))]
    return rows, None


# ===================================================================== training (release only)


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 2000
    batch: int = 128
    gen_lr: float = 1e-3
    critic_lr: float = 5e-3
    adversarial: bool = True
    uniform_mix: float = 0.5
    max_log_scale: float = 1.0
    hidden: int = 256
    latent: int = 32
    seed: int = 0
    threads: int = 0  # torch intra-op threads while training; 0 = torch's default

    @classmethod
    def from_config(cls, config: Config) -> TrainSettings:
        p = config.pearl
        return cls(
            p.train_steps,
            p.train_batch,
            p.gen_lr,
            p.critic_lr,
            p.adversarial,
            p.uniform_mix,
            p.max_log_scale,
            p.hidden_dim,
            p.latent_dim,
            config.seed if config.seed is not None else 0,
            p.train_threads,
        )


def _make_generator(layout: Layout, settings: TrainSettings) -> Any:
    import torch
    from torch import nn

    class ConditionalGenerator(nn.Module):
        """z ++ one-hot(class) -> MLP -> sigmoid (numeric) / straight-through Gumbel-softmax (categorical)."""

        def __init__(self) -> None:
            super().__init__()
            h = settings.hidden
            self.net = nn.Sequential(
                nn.Linear(settings.latent + layout.n_classes, h),
                nn.LeakyReLU(0.2),
                nn.Linear(h, h),
                nn.LeakyReLU(0.2),
                nn.Linear(h, layout.dim),
            )
            self.segments = layout.segments()

        def forward(self, z: Any, onehot: Any, tau: float = 0.5) -> Any:
            raw = self.net(torch.cat([z, onehot], dim=1))
            parts = []
            for start, end, numeric in self.segments:
                if numeric:
                    parts.append(torch.sigmoid(raw[:, start:end]))
                else:
                    g = nn.functional.gumbel_softmax(raw[:, start:end], tau=tau, hard=True)
                    parts.append(g * ONEHOT_SCALE)
            return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    return ConditionalGenerator()


@dataclass
class TrainedGenerator:
    """The trained generator with what sampling needs; holds no private data (only the release's shares)."""

    module: Any
    layout: Layout
    settings: TrainSettings
    class_shares: np.ndarray
    history: list[dict[str, float]]

    def sample(self, n: int, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """n encoded records with class indices in the noisy class proportions (largest remainder)."""
        import torch

        per_class = _largest_remainder(self.class_shares, n)
        y = np.repeat(np.arange(len(per_class)), per_class)
        with torch.random.fork_rng(), torch.no_grad():
            torch.manual_seed(self.settings.seed + 1 if seed is None else seed)
            z = torch.randn(n, self.settings.latent)
            onehot = torch.nn.functional.one_hot(torch.as_tensor(y), self.layout.n_classes).float()
            self.module.eval()
            x = self.module(z, onehot).double().numpy()
        return x, y


def _largest_remainder(shares: np.ndarray, n: int) -> np.ndarray:
    raw = np.asarray(shares, dtype=np.float64) * n
    base = np.floor(raw).astype(np.int64)
    rest = n - int(base.sum())
    if rest > 0:
        base[np.argsort(-(raw - base), kind="stable")[:rest]] += 1
    return base


def train_generator(
    sketch: sk.NoisySketch,
    layout: Layout,
    settings: TrainSettings,
    progress: Callable[[int, int, float], None] | None = None,
) -> TrainedGenerator:
    """Train the generator on the released sketch only (post-processing: no privacy cost).

    Receives the ``NoisySketch`` and public facts (``layout``, ``settings``); it cannot reach
    the private data because it is never given it (``tests/test_pearl.py`` checks this).
    Objective per step, with B samples per class and per-class ECF targets Phi_c from the
    sketch: sum_j w_j sum_c pi_c |Phi_c(t_j) - Phi_G,c(t_j)|^2, where |Phi_G,c|^2 uses the
    unbiased estimate (B |mean|^2 - 1) / (B - 1) (each feature has modulus 1), pi_c are the
    noisy class shares, and w_j the critic's importance weights (uniform when not adversarial).
    """
    import torch

    if sketch.dim != layout.dim or len(sketch.classes) != layout.n_classes:
        raise ValueError("the sketch does not match the layout")
    threads = torch.get_num_threads()
    if settings.threads > 0:
        torch.set_num_threads(settings.threads)
    try:
        return _train(sketch, layout, settings, progress)
    finally:
        torch.set_num_threads(threads)


def _train(
    sketch: sk.NoisySketch,
    layout: Layout,
    settings: TrainSettings,
    progress: Callable[[int, int, float], None] | None,
) -> TrainedGenerator:
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(settings.seed)
        gen = _make_generator(layout, settings)
        freqs = torch.as_tensor(sketch.freqs[:, :-1], dtype=torch.float32)  # (m, D)
        bw = torch.as_tensor(sketch.freqs[:, -1:], dtype=torch.float32)  # (m, 1)
        g2 = (freqs * bw) ** 2  # standardised frequencies, squared: (m, D)
        target = torch.as_tensor(sketch.ecf(), dtype=torch.float32)  # (C, 2m)
        m, C, B = sketch.m, layout.n_classes, settings.batch
        t_re, t_im = target[:, :m], target[:, m:]
        t_mod2 = t_re**2 + t_im**2
        shares = torch.as_tensor(sketch.class_shares(), dtype=torch.float32)
        log_scale = torch.zeros(layout.dim, requires_grad=True)
        opt_g = torch.optim.Adam(gen.parameters(), lr=settings.gen_lr, betas=(0.5, 0.9))
        opt_c = torch.optim.Adam([log_scale], lr=settings.critic_lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt_g, settings.steps, eta_min=settings.gen_lr * 0.1)
        labels = torch.arange(C).repeat_interleave(B)
        onehot = torch.nn.functional.one_hot(labels, C).float()
        history: list[dict[str, float]] = []

        def weights() -> Any:
            if not settings.adversarial:
                return torch.ones(m)
            a = log_scale
            # log omega_a(t_j | h_j) - log omega_0(t_j | h_j), up to a constant that softmax removes
            logw = -0.5 * (g2 @ (torch.exp(-2 * a) - 1.0))
            w = torch.softmax(logw, dim=0) * m
            return (1 - settings.uniform_mix) * w + settings.uniform_mix

        def per_frequency_distance() -> Any:
            z = torch.randn(C * B, settings.latent)
            x = gen(z, onehot)
            proj = x @ freqs.T  # (C*B, m)
            mc = torch.cos(proj).view(C, B, m).mean(1)
            ms = torch.sin(proj).view(C, B, m).mean(1)
            mod2 = (B * (mc**2 + ms**2) - 1.0) / (B - 1)
            resid = mod2 - 2 * (mc * t_re + ms * t_im) + t_mod2  # (C, m), unbiased |Phi_c - Phi_G,c|^2
            return (shares[:, None] * resid).sum(0)  # (m,)

        gen.train()
        t0 = time.monotonic()
        for step in range(settings.steps):
            r = per_frequency_distance()
            w = weights().detach()
            loss = (w * r).mean()
            opt_g.zero_grad()
            loss.backward()
            opt_g.step()
            sched.step()
            if settings.adversarial:
                crit = -(weights() * r.detach()).mean()  # the critic ascends the weighted distance
                opt_c.zero_grad()
                crit.backward()
                opt_c.step()
                with torch.no_grad():
                    log_scale.clamp_(-settings.max_log_scale, settings.max_log_scale)
            if step % 100 == 0 or step == settings.steps - 1:
                history.append({"step": step, "cfd2": float(r.mean().detach()), "weighted": float(loss.detach())})
                if progress is not None:
                    progress(step + 1, settings.steps, time.monotonic() - t0)
    return TrainedGenerator(gen, layout, settings, sketch.class_shares(), history)


# ===================================================================== the method


def default_bandwidth(dim: int) -> float:
    """h0 = 0.3 sqrt(D): about the typical distance between records encoded in [0, 1]^D (public rule)."""
    return 0.3 * math.sqrt(dim)


class PearlMethod:
    """``dpsynth run --method pearl``: tables (CSV/JSONL/Parquet/DataFrame) or arrays (.npy/.npz)."""

    def __init__(self, config: Config, private: Any = None, *, non_private: bool = False) -> None:
        # non_private: the benchmark's epsilon = inf reference (no noise; the report says so).  The
        # CLI and make_method never set it.
        self.config = config
        self._source = private if private is not None else config.data.private
        self.non_private = non_private
        self._private: _Private | None = None
        self.schema: Schema | None = None
        self.budget: sk.BudgetPlan | None = None
        self.generator: TrainedGenerator | None = None
        self.sketch: sk.NoisySketch | None = None
        self.events: list[Event] = []  # the planned releases (ledger events), set by prepare
        self.domain: list[str] = []  # the per-record checks that still refuse input (privacy.json)

    # ----------------------------------------------------------------- prepare
    def prepare(self) -> None:
        cfg = self.config
        if isinstance(self._source, str) and self._source.startswith("embedded:"):
            raise DataError(
                f"data.private: {self._source} is a text set; pearl synthesises tables and arrays: pass "
                "--private FILE (CSV/JSONL/Parquet, .npy/.npz)"
            )
        spec = load_schema_spec(cfg.pearl.data_schema)
        declared_labels = list(cfg.data.labels) if cfg.data.labels else spec.get("labels")
        if cfg.data.labels and spec.get("labels") and list(cfg.data.labels) != spec["labels"]:
            raise ConfigError("data.labels and pearl.data_schema.labels differ; declare the label set once")
        if _is_array_source(self._source):
            self._prepare_array(spec, declared_labels)
        else:
            self._prepare_table(spec, declared_labels)
        assert self._private is not None and self.schema is not None
        if not self.non_private:
            # M is private: a delta that is large for it is a console note, never a stop (data.py)
            warn_if_delta_large(cfg.privacy.delta, len(self._private))
        self.budget = self._plan()
        self.events = self.privacy_events()

    def _label_set(self, declared: list[str] | None, label_present: bool) -> tuple[str | None, list[str]]:
        col = self.config.data.label_column
        if label_present:
            if not declared:
                raise ConfigError(
                    f"data.labels: the data has a label column {col!r}; declare the public label set, e.g. "
                    "--labels '0,1,2' (dpsynth never reads it from private data: the set of labels observed is "
                    "itself private)"
                )
            return col, list(declared)
        if declared:
            raise DataError(
                f"{self._where()}: no label column {col!r} (data.label_column) although data.labels is declared; "
                "pass --label-column NAME or drop --labels for unlabelled data"
            )
        return None, [""]

    def _where(self) -> str:
        return str(self._source) if isinstance(self._source, (str, Path)) else "dataset"

    def _prepare_table(self, spec: dict[str, Any], declared: list[str] | None) -> None:
        where = self._where()
        df = read_table(self._source, self.config.data.encoding)
        if len(df.columns) == 0 or len(df) == 0:
            raise DataError(f"{where}: has no records; it needs a header row and at least one record")
        cols = [str(c) for c in df.columns]
        df.columns = cols
        label_col, classes = self._label_set(declared, self.config.data.label_column in cols)
        declared_cols: dict[str, ColumnSpec] = spec.get("columns", {})
        missing = [c for c in declared_cols if c not in cols]
        if missing:
            raise DataError(
                f"{where}: no column {missing[0]!r} (pearl.data_schema.columns); the file has columns: "
                f"{', '.join(cols[:20])}; fix the schema or the file"
            )
        features = [c for c in cols if c != label_col]
        if not features:
            raise DataError(f"{where}: has no feature column besides the label {label_col!r}")
        specs = [replace(declared_cols[c]) if c in declared_cols else ColumnSpec(c) for c in features]
        if label_col is not None:
            y = np.array([_norm_label(v) for v in df[label_col].tolist()], dtype=object)
            index = {v: i for i, v in enumerate(classes)}
            yi = np.array([index.get(v, -1) for v in y], dtype=np.int64)
            bad = np.flatnonzero(yi < 0)
            if bad.size:
                raise DataError(
                    f"{where}: {bad.size} record(s) have a {label_col!r} not in data.labels {sorted(classes)} "
                    f"({_rows_text(where, bad)}); fix the rows or declare the label"
                )
        else:
            yi = np.zeros(len(df), dtype=np.int64)
        # values the declared schema does not cover are handled per record (encode_table); the owner
        # learns where on the console, before the run directory (and its log) exists
        for note in value_notes(df, [c for c in specs if c.complete()], where):
            notify_owner(note)
        self._private = _Private(table=df[features].copy(), labels=yi, where=where)
        self.schema = Schema(specs, cols, label_col, classes)
        self.domain = [DOMAIN_NOT_EMPTY] + ([DOMAIN_LABEL] if label_col is not None else [])

    def _prepare_array(self, spec: dict[str, Any], declared: list[str] | None) -> None:
        where = self._where()
        src = self._source
        key, label_key = self.config.pearl.array_key, self.config.data.label_column
        y_raw = None
        try:
            if isinstance(src, np.ndarray):
                x = src
            elif isinstance(src, Mapping):
                if key not in src:
                    raise DataError(f"dataset: no array {key!r} (pearl.array_key); it has {sorted(src)}")
                x = np.asarray(src[key])
                y_raw = src.get(label_key)
            else:
                p = Path(str(src)).expanduser()
                if not p.exists():
                    raise DataError(f"{p}: file does not exist; check --private / data.private")
                if p.stat().st_size == 0:
                    raise DataError(f"{p}: file is empty (0 bytes); save the array with numpy.save / savez")
                if p.suffix.lower() == ".npy":
                    x = np.load(p, allow_pickle=False)
                else:
                    with np.load(p, allow_pickle=False) as z:
                        if key not in z.files:
                            raise DataError(f"{p}: no array {key!r} (pearl.array_key); the file has {sorted(z.files)}")
                        x = z[key]
                        y_raw = z[label_key] if label_key in z.files else None
        except DpsynthError:
            raise
        except Exception as exc:  # noqa: BLE001 - numpy's load errors are long
            raise DataError(
                f"{where}: not a readable .npy/.npz array ({type(exc).__name__}); save it with numpy"
            ) from None
        x = np.asarray(x)
        if x.ndim < 2 or x.shape[0] == 0:
            raise DataError(f"{where}: needs an array of shape (records, ...) with at least one record")
        if x.dtype.kind not in "biuf":
            raise DataError(f"{where}: array dtype {x.dtype} is not numeric")
        flat = x.reshape(len(x), -1).astype(np.float64)
        if not np.isfinite(flat).all():
            raise DataError(f"{where}: the array holds NaN or infinite values; clean them first")
        label_col, classes = self._label_set(declared, y_raw is not None)
        if y_raw is not None:
            y = np.asarray(y_raw).reshape(-1)
            if len(y) != len(x):
                raise DataError(f"{where}: {len(y)} labels for {len(x)} records")
            index = {v: i for i, v in enumerate(classes)}
            yi = np.array([index.get(_norm_label(v), -1) for v in y.tolist()], dtype=np.int64)
            bad = np.flatnonzero(yi < 0)
            if bad.size:
                raise DataError(
                    f"{where}: {bad.size} record(s) have a label not in data.labels {sorted(classes)} "
                    f"({_rows_text(where, bad)}); fix them or declare the label"
                )
        else:
            yi = np.zeros(len(x), dtype=np.int64)
        cspec: ColumnSpec = spec.get("array") or ColumnSpec("array")
        cspec = replace(cspec, name="array", kind="integer" if x.dtype.kind in "biu" else "float")
        if (cspec.lo is None or cspec.hi is None) and x.dtype.kind in "bu" and x.dtype.itemsize == 1:
            # the dtype's own range is public (bool -> [0, 1], uint8 -> [0, 255]): nothing derived
            info_hi = 1.0 if x.dtype.kind == "b" else 255.0
            cspec.lo = 0.0 if cspec.lo is None else cspec.lo
            cspec.hi = info_hi if cspec.hi is None else cspec.hi
        self._private = _Private(array=flat, labels=yi, where=where)
        self.domain = [DOMAIN_NOT_EMPTY, DOMAIN_FINITE_ARRAY] + ([DOMAIN_LABEL] if y_raw is not None else [])
        self.schema = Schema(
            [cspec], [], label_col, classes, array_shape=tuple(int(s) for s in x.shape[1:]), array_dtype=str(x.dtype)
        )

    # ----------------------------------------------------------------- budget
    def _plan(self) -> sk.BudgetPlan:
        assert self.schema is not None
        p = self.config.pearl
        cols = self.schema.columns
        need_kinds = [c.name for c in cols if c.kind is None and not self.schema.is_array]
        maybe_numeric = [
            c.name for c in cols if (c.kind is None or c.numeric) and not (c.lo is not None and c.hi is not None)
        ]
        maybe_cat = [c.name for c in cols if (c.kind is None or c.kind == "categorical") and not c.categories]
        if self.schema.is_array:
            maybe_cat = []
        releases: list[tuple[str, str, float, str, float]] = []
        schema_rel = []
        if need_kinds:
            d = len(need_kinds)
            schema_rel.append(
                (
                    "schema.kinds",
                    f"value kinds (integer/float/text) of {d} column(s)",
                    math.sqrt(d),
                    f"add/remove: one record adds 1 to one of 3 kind counts in each of d={d} columns -> sqrt(d)",
                )
            )
        if maybe_numeric:
            if self.schema.is_array:
                schema_rel.append(
                    (
                        "schema.bounds",
                        "per-record minimum and maximum of the array (geometric histograms)",
                        math.sqrt(2.0),
                        "add/remove: one record adds 1 to one bin of the min and of the max histogram -> sqrt(2)",
                    )
                )
            else:
                d = len(maybe_numeric)
                schema_rel.append(
                    (
                        "schema.bounds",
                        f"histograms on a public geometric grid of up to {d} numeric column(s)",
                        math.sqrt(d),
                        f"add/remove: one record adds 1 to one bin of each of d<={d} columns -> sqrt(d)",
                    )
                )
        delta_sel = 0.0
        if maybe_cat:
            d = len(maybe_cat)
            schema_rel.append(
                (
                    "schema.categories",
                    f"sparse value histograms of up to {d} categorical column(s), thresholded",
                    math.sqrt(d),
                    f"add/remove: one record adds 1 to one value count in each of d<={d} columns -> sqrt(d); "
                    "values held by a single record pass the threshold w.p. <= delta_sel/d per column",
                )
            )
            delta_sel = p.category_delta_share * self.config.privacy.delta
        share = p.schema_budget / len(schema_rel) if schema_rel else 0.0
        for name, reads, sens, why in schema_rel:
            releases.append((name, reads, sens, why, share))
        releases.append(
            (
                "counts",
                "number of records per class (the total when unlabelled)",
                sk.COUNTS_SENSITIVITY,
                "add/remove: one record changes one class count by 1 -> 1",
                p.count_budget,
            )
        )
        releases.append(
            (
                "sketch",
                "per-class sums of random Fourier features (empirical characteristic function) at m frequencies",
                sk.SKETCH_SENSITIVITY,
                "add/remove: one record changes its class's sum by f(x) = (cos t.x, sin t.x)/sqrt(m), whose L2 norm "
                "is exactly 1 -> 1 (independent of m, D and the data)",
                1.0 - p.count_budget - (p.schema_budget if schema_rel else 0.0),
            )
        )
        return sk.plan_budget(
            self.config.privacy.epsilon,
            self.config.privacy.delta,
            releases,
            accountant=self.config.privacy.accountant,
            delta_selection=delta_sel,
        )

    def privacy_events(self) -> list[Event]:
        """The run's releases as ledger events: one per release, each with its own noise multiplier.

        The ledger composes exactly the events that were drawn, so a run stopped after some releases
        is charged for those (with their own noise), not for as many equal releases.  The benchmark's
        non-private reference has noise multiplier 0 (epsilon = inf, stated in the report).
        """
        assert self.budget is not None
        return [
            Event(
                r.name,
                0.0 if self.non_private else r.noise_multiplier,
                sensitivity=r.sensitivity,
                mechanism=mechanism_name(r.name),
                reads=r.reads,
            )
            for r in self.budget.releases
        ]

    def open_ledger(self, run_dir: RunDir) -> Ledger:
        """The run's ledger at the Gaussian part of delta (the category threshold's delta is reported apart)."""
        assert self.budget is not None
        p = self.config.privacy
        return Ledger.open(
            run_dir.ledger,
            epsilon=math.inf if self.non_private else p.epsilon,
            delta=self.budget.delta_gaussian,
            accountant=p.accountant,
            planned=self.events,
            resume=run_dir.resuming,
        )

    # ----------------------------------------------------------------- run
    def run(self, run_dir: RunDir, reporter: ProgressReporter) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Draw every release through the ledger (each saved and recorded as soon as it is drawn), then train.

        A resumed run gets the saved results back from ``Ledger.release`` and never draws a recorded key
        again; one whose saved file is gone stops with a ``ResumeError``.
        """
        assert self.budget is not None and self.schema is not None
        ledger = self.open_ledger(run_dir)
        released = self._schema_releases(ledger, run_dir, reporter)
        atomic_write_json(run_dir.path / "schema.json", self.schema.to_json(released))
        layout = Layout.from_schema(self.schema)
        saved_counts = ledger.release(
            "counts", run_dir.path / RELEASE_FILES["counts"], lambda: self._draw_counts(ledger)
        )
        counts = np.asarray(saved_counts["counts"], dtype=np.float64)
        saved = ledger.release(
            "sketch", run_dir.path / RELEASE_FILES["sketch"], lambda: self._draw_sketch(ledger, layout, counts)
        )
        sketch = sk.NoisySketch.from_npz(saved)
        log.info("pearl: releases done, epsilon spent %.4f", ledger.epsilon_spent())
        self._private = None  # from here on only the release exists: training is post-processing
        self.sketch = sketch
        settings = TrainSettings.from_config(self.config)
        reporter.start("pearl: training the generator on the sketch", settings.steps)

        def progress(done: int, total: int, secs: float) -> None:
            reporter.update("pearl: training", done, total, f"{done / max(secs, 1e-9):.0f} steps/s")

        self.generator = train_generator(sketch, layout, settings, progress)
        enc, yy = self.generator.sample(self.config.n_synthetic)
        rows, arr = decode(enc, yy, self.schema)
        if arr is not None:
            import io

            buf = io.BytesIO()
            payload: dict[str, Any] = {"x": arr}
            if self.schema.label_column is not None:
                payload[self.schema.label_column] = np.array(_typed(self.schema.classes))[yy]
            np.savez(buf, **payload)
            atomic_write_bytes(run_dir.path / "synthetic.npz", buf.getvalue())
        atomic_write_json(run_dir.path / "training.json", self.generator.history)
        log.info("pearl: trained %d steps on the sketch (m=%d, D=%d)", settings.steps, sketch.m, sketch.dim)
        return rows, self._report(ledger, released, sketch)

    def _private_data(self) -> _Private:
        if self._private is None:  # prepare loads it on every start, resume included
            raise ResumeError("pearl: the private data is not loaded; a release cannot be drawn")
        return self._private

    def _draw_counts(self, ledger: Ledger) -> dict[str, Any]:
        assert self.schema is not None
        p = self._private_data()
        assert p.labels is not None
        e = ledger.event("counts")
        assert e is not None
        counts = sk.release_counts(p.labels, len(self.schema.classes), noise_multiplier=e.noise_multiplier)
        return {"counts": counts.tolist(), "sigma": e.sigma}

    def _draw_sketch(self, ledger: Ledger, layout: Layout, counts: np.ndarray) -> dict[str, Any]:
        """The sketch release; m is chosen from the released counts before it is drawn (post-processing)."""
        assert self.schema is not None
        p = self.config.pearl
        e, ec = ledger.event("sketch"), ledger.event("counts")
        assert e is not None and ec is not None
        x, y = self._encode_private()
        m = p.n_frequencies or sk.choose_m(counts, e.sigma, p.noise_ratio, 16, p.max_frequencies)
        bw = p.bandwidth or default_bandwidth(layout.dim)
        seed = self.config.seed if self.config.seed is not None else 0
        freqs = sk.random_frequencies(layout.dim, m, bw, p.bandwidth_spread, seed)
        sketch = sk.release_sketch(
            x, y, self.schema.classes, freqs, noise_multiplier=e.noise_multiplier, counts=counts, count_sigma=ec.sigma
        )
        del x, y
        return sketch.to_npz()

    def _encode_private(self) -> tuple[np.ndarray, np.ndarray]:
        """The private records in [0, 1]^D by the (now complete) schema, record by record (``encode_table``)."""
        assert self.schema is not None
        p = self._private_data()
        assert p.labels is not None
        if p.array is not None:
            c = self.schema.columns[0]
            assert c.lo is not None and c.hi is not None
            return _scale01(p.array, c.lo, c.hi), p.labels
        # columns completed with DP were not checked in prepare: tell the owner (console only) now
        for note in value_notes(p.table, [c for c in self.schema.columns if c.derived], p.where):
            notify_owner(note)
        return encode_table(p.table, self.schema, p.where), p.labels

    # ----------------------------------------------------------------- schema releases
    def _schema_releases(self, ledger: Ledger, run_dir: RunDir, reporter: ProgressReporter) -> dict[str, Any]:
        """The planned schema releases, in order kinds -> bounds -> categories (each adaptive on the previous).

        Each is drawn through ``Ledger.release`` into its own file, so it is recorded the moment it
        exists; on resume the saved facts are applied again in the same order (never redrawn).
        Returns what each release did, for schema.json and the report.
        """
        planned = {e.key for e in self.events}
        out: dict[str, Any] = {}
        for key in SCHEMA_RELEASES:
            if key not in planned:
                continue
            if not ledger.released(key):
                reporter.message(f"pearl: deriving the undeclared schema with DP ({key}, accounted)")
            payload = ledger.release(
                key, run_dir.path / RELEASE_FILES[key], functools.partial(self._draw_schema, key, ledger)
            )
            out[key] = self._apply_schema(key, payload)
        return out

    def _draw_schema(self, key: str, ledger: Ledger) -> dict[str, Any]:
        """One schema release: the DP facts it derives (post-processed from the noisy statistics inside)."""
        assert self.schema is not None and self.budget is not None
        p, schema = self._private_data(), self.schema
        e = ledger.event(key)
        assert e is not None
        z = e.noise_multiplier
        if key == "schema.kinds":
            todo = [c for c in schema.columns if c.kind is None]
            noisy = sk.release_column_kinds([p.table[c.name].astype(str).tolist() for c in todo], noise_multiplier=z)
            kinds = {
                c.name: "categorical" if nt > ni + nf else ("integer" if ni >= nf else "float")
                for c, (ni, nf, nt) in zip(todo, noisy, strict=True)
            }
            return {"kinds": kinds, **_release_info(len(todo), z)}
        if key == "schema.bounds":
            if schema.is_array:
                assert p.array is not None
                b = sk.release_bounds([p.array.min(axis=1), p.array.max(axis=1)], noise_multiplier=z)
                return {"bounds": {"array": [b[0][0], b[1][1]]}, **_release_info(2, z)}
            todo = [c for c in schema.columns if c.numeric and (c.lo is None or c.hi is None)]
            vals = [_parse_numeric(p.table[c.name].astype(str).to_numpy()) for c in todo]
            b = sk.release_bounds(vals, noise_multiplier=z)
            return {"bounds": {c.name: list(lh) for c, lh in zip(todo, b, strict=True)}, **_release_info(len(todo), z)}
        todo = [c for c in schema.columns if c.kind == "categorical" and not c.categories]
        cats = sk.release_categories(
            [p.table[c.name].astype(str).str.strip().tolist() for c in todo],
            noise_multiplier=z,
            delta_sel=self.budget.delta_selection,
            max_categories=self.config.pearl.max_categories,
        )
        info = _release_info(len(todo), z)
        info["threshold"] = (
            sk.category_threshold(info["sigma"], self.budget.delta_selection, len(todo)) if todo else None
        )
        info["delta_selection"] = self.budget.delta_selection
        return {"categories": {c.name: cs for c, cs in zip(todo, cats, strict=True)}, **info}

    def _apply_schema(self, key: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Put a schema release's facts into the schema (deterministic: a resume applies the saved ones)."""
        assert self.schema is not None
        by_name = {c.name: c for c in self.schema.columns}
        info = {k: v for k, v in payload.items() if k not in ("kinds", "bounds", "categories")}
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
                "numeric), or raise privacy.epsilon",
                name,
            )
        if empty:
            info["placeholder_columns"] = empty
        return info

    # ----------------------------------------------------------------- report
    def _report(self, ledger: Ledger, released: dict[str, Any], sketch: sk.NoisySketch) -> dict[str, Any]:
        assert self.budget is not None and self.schema is not None
        b = self.budget
        details: dict[str, dict[str, Any]] = {}
        for r in b.releases:
            d: dict[str, Any] = {
                "adjacency": ADJACENCY,
                "sensitivity_derivation": r.sensitivity_derivation,
                "share_of_mu2": r.share,
            }
            info = released.get(r.name, {})
            if info.get("columns"):  # the release read fewer columns than reserved: its own sensitivity and sigma
                d["sensitivity_l2"], d["sigma"] = info["sensitivity_l2"], info["sigma"]
            d.update(
                (k, v)
                for k, v in info.items()
                if k in ("columns", "threshold", "delta_selection", "note", "placeholder_columns")
                and v not in ("", None)
            )
            details[mechanism_name(r.name)] = d
        derived = [c.name for c in self.schema.columns if c.derived]
        placeholders = released.get("schema.categories", {}).get("placeholder_columns", [])
        extra: dict[str, Any] = {
            "adjacency": ADJACENCY,
            "schema": {
                "derived_with_dp": derived,
                "declared": [c.name for c in self.schema.columns if not c.derived],
                "note": (
                    "facts not declared in pearl.data_schema were derived with DP from pearl.schema_budget "
                    "(the derived schema is in schema.json; reuse it as pearl.data_schema to spend nothing on it)"
                    if derived
                    else "the whole schema was declared (public): no budget spent on it"
                ),
                "clipping": "numeric values outside [min, max] are clipped to the bound before encoding",
                "missing": (
                    "an empty or non-numeric value in a numeric column is encoded at the middle of [min, max]; a "
                    "value outside a column's categories is encoded as no category (per-record rules, no stop)"
                ),
                **(
                    {
                        "placeholder_columns": placeholders,
                        "placeholder_note": "no category of these columns cleared the threshold; they are output "
                        "with one empty placeholder value",
                    }
                    if placeholders
                    else {}
                ),
            },
            "sketch": {
                "m": sketch.m,
                "dim": sketch.dim,
                "m_rule": "pearl.n_frequencies"
                if self.config.pearl.n_frequencies
                else (
                    f"largest m with sigma*sqrt(m)/mean noisy count <= {self.config.pearl.noise_ratio}, "
                    f"in [16, {self.config.pearl.max_frequencies}] (post-processing of the counts)"
                ),
                "count_sigma": sketch.count_sigma,
                "classes": list(sketch.classes),
                "released_to": "sketch.npz (noisy sums, noisy counts, public frequencies)",
            },
            "releases_saved_to": {k: v for k, v in RELEASE_FILES.items() if ledger.event(k) is not None},
        }
        if b.delta_selection > 0:
            extra["delta_split"] = {"gaussian": b.delta_gaussian, "category_threshold": b.delta_selection}
        report = privacy_report(
            ledger,
            method="pearl",
            public_inputs={
                "labels": self.schema.classes if self.schema.labelled else None,
                "label_column": self.schema.label_column,
                "columns": self.schema.order if not self.schema.is_array else None,
                "array_shape": list(self.schema.array_shape) if self.schema.array_shape else None,
                "frequencies": "drawn from the public seed, released in sketch.npz",
                "n_synthetic": self.config.n_synthetic,
            },
            post_processing=[
                "generator training (adversarial frequency re-weighting) uses only sketch.npz",
                "class proportions of the output from the noisy counts",
                "output decoding with the (declared or DP-derived) schema",
            ],
            never_written="private records, encoded private arrays, pre-noise sums, counts and histograms",
            domain=self.domain,
            details=details,
            delta_total=b.delta_total,
            extra=extra,
        )
        if self.non_private:
            report["guarantee"] = "NOT differentially private: benchmark reference run without noise (epsilon = inf)"
            for m in report["mechanisms"]:
                m["name"] = m["name"].replace("Gaussian: ", "") + " (released WITHOUT noise)"
        else:
            report["guarantee"] = f"({report['epsilon']:.4g}, {b.delta_total:g})-DP with respect to {ADJACENCY}"
        return report

    def close(self) -> None:
        self._private = None


SCHEMA_RELEASES = ("schema.kinds", "schema.bounds", "schema.categories")
# every release is saved to its own file, so the ledger records each one as soon as it is drawn
RELEASE_FILES = {
    "schema.kinds": "schema_kinds.json",
    "schema.bounds": "schema_bounds.json",
    "schema.categories": "schema_categories.json",
    "counts": "counts.json",
    "sketch": "sketch.npz",
}
CATEGORY_PLACEHOLDER = ""  # the one value of a categorical column none of whose values could be released


def mechanism_name(release: str) -> str:
    return f"Gaussian: {release}"


def _release_info(d: int, z: float) -> dict[str, Any]:
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


# ===================================================================== text embeddings (WASP baseline)


def embedding_sketch(
    embeddings: np.ndarray,
    *,
    epsilon: float,
    delta: float,
    labels: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
    n_frequencies: int = 512,
    bandwidth: float = 1.0,
    spread: float = 2.0,
    seed: int = 0,
    count_budget: float = 0.1,
    accountant: str = "pld",
) -> tuple[sk.NoisySketch, sk.BudgetPlan]:
    """Release a DP characteristic-function sketch of private text embeddings (one Gaussian release).

    ``embeddings``: (n, d) private embeddings (e.g. unit-norm sentence embeddings, for which the
    default bandwidth 1 matches typical distances); ``labels``/``classes``: optional public class
    set for per-class sketches.  The sensitivity is the same as for tables (features have norm
    1 whatever the input scale); the class counts are a second release (``count_budget`` of mu^2).
    Returns the sketch and its budget plan (for the report).
    """
    e = np.asarray(embeddings, dtype=np.float64)
    if classes is None:
        classes, y = [""], np.zeros(len(e), dtype=np.int64)
    else:
        if labels is None or len(labels) != len(e):
            raise ValueError("labels must give one class per embedding")
        index = {c: i for i, c in enumerate(classes)}
        if any(v not in index for v in labels):
            raise DataError("embedding_sketch: a label is not in the declared classes")
        y = np.array([index[v] for v in labels], dtype=np.int64)
    plan = sk.plan_budget(
        epsilon,
        delta,
        [
            ("counts", "records per class", sk.COUNTS_SENSITIVITY, "add/remove: one count moves by 1", count_budget),
            (
                "sketch",
                "per-class random Fourier features of private embeddings",
                1.0,
                "add/remove: ||f(x)||=1",
                1.0 - count_budget,
            ),
        ],
        accountant=accountant,  # type: ignore[arg-type]
    )
    z_counts, z_sketch = plan.releases[0].noise_multiplier, plan.releases[1].noise_multiplier
    counts = sk.release_counts(y, len(classes), noise_multiplier=z_counts)
    freqs = sk.random_frequencies(e.shape[1], n_frequencies, bandwidth, spread, seed)
    s = sk.release_sketch(e, y, list(classes), freqs, noise_multiplier=z_sketch, counts=counts, count_sigma=z_counts)
    return s, plan


def select_by_sketch(
    candidate_embeddings: np.ndarray,
    noisy_sketch: sk.NoisySketch,
    k: int,
    *,
    label: str | None = None,
) -> np.ndarray:
    """Indices of k candidates whose empirical characteristic function best matches the sketch.

    Greedy kernel herding: at each step add the candidate that most reduces
    ||Phi_target - (1/|S|) sum_{i in S} phi(c_i)||^2 over the sketch's frequencies, where
    Phi_target is the ECF of class ``label`` (or the share-weighted mix of classes when None).
    Pure post-processing of the release: choosing among generated candidates costs no privacy.
    Cost O(k * N * m).
    """
    c = np.asarray(candidate_embeddings, dtype=np.float64)
    n = len(c)
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}]")
    if c.shape[1] != noisy_sketch.dim:
        raise ValueError("candidate embeddings and sketch have different dimensions")
    ecf = noisy_sketch.ecf()
    target = noisy_sketch.class_shares() @ ecf if label is None else ecf[list(noisy_sketch.classes).index(label)]
    feats = sk.fourier_features(c, noisy_sketch.freqs) * math.sqrt(noisy_sketch.m)  # unit modulus per frequency
    chosen = np.zeros(n, dtype=bool)
    order = np.empty(k, dtype=np.int64)
    s = np.zeros_like(target)
    for t in range(k):
        # ||target - (s + f_i)/(t+1)||^2 = const + (2 f_i.(s - (t+1) target) + ||f_i||^2) / (t+1)^2, ||f_i||^2 = m
        score = feats @ (s - (t + 1) * target)
        score[chosen] = np.inf
        i = int(np.argmin(score))
        chosen[i] = True
        order[t] = i
        s += feats[i]
    return order
