"""PEARL's privacy report (privacy.json) and the names of its releases."""

from __future__ import annotations

from typing import Any

from dpsynth.config import Config
from dpsynth.methods.pearl.schema import Schema
from dpsynth.privacy import sketch as sk
from dpsynth.privacy.ledger import Ledger
from dpsynth.privacy.report import guarantee_text, privacy_report
from dpsynth.run import RELEASE_FILES  # every release is saved to its own file (RunDir.release)

ADJACENCY = "add/remove one private record (one row or one array record, its label included)"


def mechanism_name(release: str) -> str:
    return f"Gaussian: {release}"


def pearl_report(
    config: Config,
    budget: sk.BudgetPlan,
    schema: Schema,
    domain: list[str],
    ledger: Ledger,
    released: dict[str, Any],
    sketch: sk.NoisySketch,
) -> dict[str, Any]:
    """privacy.json of a PEARL run: every release with its sensitivity argument, the schema's origin, the sketch."""
    b = budget
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
            if k in ("columns", "threshold", "delta_selection", "note", "placeholder_columns") and v not in ("", None)
        )
        details[mechanism_name(r.name)] = d
    derived = [c.name for c in schema.columns if c.derived]
    placeholders = released.get("schema.categories", {}).get("placeholder_columns", [])
    extra: dict[str, Any] = {
        "adjacency": ADJACENCY,
        "schema": {
            "derived_with_dp": derived,
            "declared": [c.name for c in schema.columns if not c.derived],
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
            if config.pearl.n_frequencies
            else (
                f"largest m with sigma*sqrt(m)/mean noisy count <= {config.pearl.noise_ratio}, "
                f"in [16, {config.pearl.max_frequencies}] (post-processing of the counts)"
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
            "labels": schema.classes if schema.labelled else None,
            "label_column": schema.label_column,
            "columns": schema.order if not schema.is_array else None,
            "array_shape": list(schema.array_shape) if schema.array_shape else None,
            "frequencies": "drawn from the public seed, released in sketch.npz",
            "n_synthetic": config.n_synthetic,
        },
        post_processing=[
            "generator training (adversarial frequency re-weighting) uses only sketch.npz",
            "class proportions of the output from the noisy counts",
            "output decoding with the (declared or DP-derived) schema",
        ],
        never_written="private records, encoded private arrays, pre-noise sums, counts and histograms",
        domain=domain,
        details=details,
        delta_total=b.delta_total,
        extra=extra,
    )
    report["guarantee"] = guarantee_text(report["epsilon"], b.delta_total, ADJACENCY)
    return report
