"""``PearlMethod``: prepare (load, declare, plan the budget), then run (release, drop the data, train, report)."""

from __future__ import annotations

import functools
import logging
import math
from typing import Any

import numpy as np

from dpsynth.config import Config
from dpsynth.errors import ConfigError, DataError, ResumeError
from dpsynth.io import atomic_write_bytes, atomic_write_json
from dpsynth.methods.pearl.encoding import Layout, decode, encode_table, scale01, typed_values, value_notes
from dpsynth.methods.pearl.generator import TrainedGenerator, TrainSettings, train_generator
from dpsynth.methods.pearl.report import mechanism_name, pearl_report
from dpsynth.methods.pearl.schema import (
    SCHEMA_RELEASES,
    Schema,
    apply_schema_release,
    draw_schema_release,
    load_schema_spec,
    schema_release_plan,
)
from dpsynth.privacy import sketch as sk
from dpsynth.privacy.events import Event
from dpsynth.privacy.ledger import Ledger
from dpsynth.privacy.private_data import notify_owner, warn_if_delta_large
from dpsynth.privacy.private_tables import PrivateRecords, load_private_table
from dpsynth.privacy.rounding import round_up
from dpsynth.progress import ProgressReporter
from dpsynth.run import RunDir
from dpsynth.run_phases import RunPhases

log = logging.getLogger("dpsynth")


def default_bandwidth(dim: int) -> float:
    """h0 = 0.3 sqrt(D): about the typical distance between records encoded in [0, 1]^D (public rule)."""
    return 0.3 * math.sqrt(dim)


class PearlMethod:
    """``dpsynth run --method pearl``: tables (CSV/JSONL/Parquet/DataFrame) or arrays (.npy/.npz)."""

    def __init__(self, config: Config, private: Any = None) -> None:
        self.config = config
        self._source = private if private is not None else config.data.private
        self._private: PrivateRecords | None = None
        self.schema: Schema | None = None
        self.budget: sk.BudgetPlan | None = None
        self.generator: TrainedGenerator | None = None
        self.sketch: sk.NoisySketch | None = None
        self.events: list[Event] = []  # the planned releases (ledger events), set by prepare
        self.domain: list[str] = []  # the per-record checks that still refuse input (privacy.json)

    # ----------------------------------------------------------------- prepare
    def prepare(self, load_models: bool = True) -> None:  # no model to load: the check is the whole prepare
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
        self._private, self.schema, self.domain = load_private_table(self._source, cfg, spec, declared_labels)
        # M is private: a delta that is large for it is a console note, never a stop (privacy/private_data.py)
        warn_if_delta_large(cfg.privacy.delta, len(self._private))
        self.budget = self._plan()
        self.events = self.privacy_events()

    # ----------------------------------------------------------------- budget
    def _plan(self) -> sk.BudgetPlan:
        assert self.schema is not None
        p = self.config.pearl
        schema_rel = schema_release_plan(self.schema)
        delta_sel = 0.0
        if any(name == "schema.categories" for name, *_ in schema_rel):
            delta_sel = p.category_delta_share * self.config.privacy.delta
        releases: list[tuple[str, str, float, str, float]] = []
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
        is charged for those (with their own noise), not for as many equal releases.
        """
        assert self.budget is not None
        return [
            Event(
                r.name,
                r.noise_multiplier,
                sensitivity=r.sensitivity,
                mechanism=mechanism_name(r.name),
                reads=r.reads,
            )
            for r in self.budget.releases
        ]

    def open_ledger(self, run_dir: RunDir, epsilon: float | None = None) -> Ledger:
        """The run's ledger at the Gaussian part of delta (the category threshold's delta is reported apart).

        Its hard cap is ``epsilon``, privacy.epsilon unless given.
        """
        assert self.budget is not None
        p = self.config.privacy
        return Ledger.open(
            run_dir.ledger,
            epsilon=p.epsilon if epsilon is None else epsilon,
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
        settings = TrainSettings.from_config(self.config)
        # the whole run's bar: training steps, then sampling as one unit (the releases before are quick, and
        # a resumed run trains again from its saved releases, so it starts at 0 too)
        phases = RunPhases(
            reporter, [("training", settings.steps, 0), ("sampling", 1, 0)], description="run (steps + sampling)"
        )
        ledger = self.open_ledger(run_dir)
        released = self._schema_releases(ledger, run_dir, reporter)
        atomic_write_json(run_dir.schema, self.schema.to_json(released))
        layout = Layout.from_schema(self.schema)
        saved_counts = ledger.release("counts", run_dir.release("counts"), lambda: self._draw_counts(ledger))
        counts = np.asarray(saved_counts["counts"], dtype=np.float64)
        saved = ledger.release("sketch", run_dir.release("sketch"), lambda: self._draw_sketch(ledger, layout, counts))
        sketch = sk.NoisySketch.from_npz(saved)
        log.info("pearl: releases done, epsilon spent %s", round_up(ledger.epsilon_spent(), 5))
        self._private = None  # from here on only the release exists: training is post-processing
        self.sketch = sketch
        reporter.start("pearl: training the generator on the sketch", settings.steps)
        phases.begin("training")

        def progress(done: int, total: int, secs: float) -> None:
            # first: the phase's update writes the line with the run's beside it; the loop's own time, so that
            # importing torch and building the generator do not count once per step left
            phases.update("training", done, seconds=secs)
            reporter.update("pearl: training", done, total, f"{done / max(secs, 1e-9):.0f} steps/s")

        self.generator = train_generator(sketch, layout, settings, progress)
        reporter.start("pearl: sampling", self.config.n_synthetic)
        phases.begin("sampling")
        enc, yy = self.generator.sample(self.config.n_synthetic)
        rows, arr = decode(enc, yy, self.schema)
        phases.update("sampling", 1)
        reporter.update("pearl: sampling", self.config.n_synthetic, self.config.n_synthetic, "")
        if arr is not None:
            import io

            buf = io.BytesIO()
            payload: dict[str, Any] = {"x": arr}
            if self.schema.label_column is not None:
                payload[self.schema.label_column] = np.array(typed_values(self.schema.classes))[yy]
            np.savez(buf, **payload)
            atomic_write_bytes(run_dir.synthetic_array, buf.getvalue())
        atomic_write_json(run_dir.training, self.generator.history)
        log.info("pearl: trained %d steps on the sketch (m=%d, D=%d)", settings.steps, sketch.m, sketch.dim)
        return rows, self.report(ledger, released, sketch)

    def _private_data(self) -> PrivateRecords:
        if self._private is None:  # prepare loads it on every start, resume included
            raise ResumeError("pearl: the private data is not loaded; a release cannot be drawn")
        return self._private

    def _draw_counts(self, ledger: Ledger) -> dict[str, Any]:
        assert self.schema is not None
        p = self._private_data()
        e = ledger.event("counts")
        assert e is not None
        counts = p.release_counts(len(self.schema.classes), noise_multiplier=e.noise_multiplier)
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
        schema = self.schema
        assert schema is not None
        p = self._private_data()

        def encode(table: Any, array: np.ndarray | None) -> np.ndarray:  # applied inside the handle
            if array is not None:
                c = schema.columns[0]
                assert c.lo is not None and c.hi is not None
                return scale01(array, c.lo, c.hi)
            # columns completed with DP were not checked in prepare: tell the owner (console only) now
            for note in value_notes(
                table, [c for c in schema.columns if c.derived], p.where, self.config.data.encoding
            ):
                notify_owner(note)
            return encode_table(table, schema, p.where)

        return p.encode(encode)

    def _schema_releases(self, ledger: Ledger, run_dir: RunDir, reporter: ProgressReporter) -> dict[str, Any]:
        """The planned schema releases, in order kinds -> bounds -> categories (each adaptive on the previous).

        Each is drawn through ``Ledger.release`` into its own file, so it is recorded the moment it
        exists; on resume the saved facts are applied again in the same order (never redrawn).
        Returns what each release did, for schema.json and the report.
        """
        assert self.schema is not None
        planned = {e.key for e in self.events}
        out: dict[str, Any] = {}
        for key in SCHEMA_RELEASES:
            if key not in planned:
                continue
            if not ledger.released(key):
                reporter.message(f"pearl: deriving the undeclared schema with DP ({key}, accounted)")
            payload = ledger.release(key, run_dir.release(key), functools.partial(self._draw_schema, key, ledger))
            out[key] = apply_schema_release(self.schema, payload)
        return out

    def _draw_schema(self, key: str, ledger: Ledger) -> dict[str, Any]:
        """One schema release, drawn from the private data (``draw_schema_release``)."""
        schema, budget = self.schema, self.budget
        assert schema is not None and budget is not None
        p = self._private_data()
        e = ledger.event(key)
        assert e is not None
        return p.apply(
            lambda table, array: draw_schema_release(
                key,
                schema,
                table,
                array,
                noise_multiplier=e.noise_multiplier,
                delta_selection=budget.delta_selection,
                max_categories=self.config.pearl.max_categories,
            )
        )

    # ----------------------------------------------------------------- report
    def report(self, ledger: Ledger, released: dict[str, Any], sketch: sk.NoisySketch) -> dict[str, Any]:
        """privacy.json of the run (``pearl_report``)."""
        assert self.budget is not None and self.schema is not None
        return pearl_report(self.config, self.budget, self.schema, self.domain, ledger, released, sketch)

    def close(self) -> None:
        self._private = None
