"""The releases of a dp-finetune run (a noisy record count, then DP-SGD): their ledger keys, their events,
and the run's privacy.json.  Apart from the training code, so that what the run claims sits in one place."""

from __future__ import annotations

from typing import Any

from dpsynth.config import Config
from dpsynth.privacy.dpsgd import COUNT_MOVES, DpSgdPlan, calibrate_count_noise, calibrate_discrete_count
from dpsynth.privacy.events import Event
from dpsynth.privacy.ledger import Ledger
from dpsynth.privacy.report import privacy_report
from dpsynth.run import IN_RUN_DIR

COUNT_KEY = "counts"
DPSGD_KEY = "dpsgd"
DPSGD_MECHANISM = "DP-SGD (Opacus): per-sample clipping, Poisson sampling, Gaussian noise"
COUNT_MECHANISM = "record count, Gaussian mechanism"
DISCRETE_COUNT_MECHANISM = "record count, discrete Gaussian mechanism on the grid 2^-{bits}"
# privacy.json's caveat for a run started by a dpsynth that did not split delta yet (its plan was chosen from the
# noisy count and composed jointly with it); the reasoning is in docs/dp-finetune.md, "Planned from the
# noisy count".  A run started now accounts the two apart (delta_split) and has no caveat.
ADAPTIVE_PLAN_CAVEAT = (
    "the DP-SGD sample rate q = B / N_hat, its steps and its noise multiplier were chosen from the released noisy "
    "count, and the two were composed jointly, as if the plan had been fixed in advance. The accountants' "
    "composition theorems are proven for mechanisms fixed in advance, and for parameters chosen from an earlier "
    "release (fully adaptive composition, Rogers et al. 2016) this epsilon is not covered by a theorem. This run "
    "was started by an earlier dpsynth; a run started now accounts the count and DP-SGD apart and adds them "
    "(basic composition, which holds under adaptive choice), or set finetune.sample_rate to fix q in advance."
)
ADAPTIVE_PLAN_NOTE = (
    "the DP-SGD sample rate q = B / N_hat and its steps come from the noisy count; DP-SGD alone is "
    "(epsilon_dpsgd, delta_dpsgd)-DP for every value the count could take, so the count's and DP-SGD's "
    "epsilons and deltas add up (basic composition, valid for mechanisms chosen adaptively; accountant.parts)"
)


def delta_split(config: Config) -> dict[str, float]:
    """The run's split of delta between the count and DP-SGD (Ledger's ``delta_split``): apart when the plan
    is chosen from the count (``finetune.sample_rate`` unset), none (joint composition) when q is fixed in
    advance.  The count gets the same share of delta as of epsilon."""
    ft = config.finetune
    if ft.sample_rate is not None:
        return {}
    share = ft.label_count_epsilon_share
    return {COUNT_KEY: share, DPSGD_KEY: 1.0 - share}


def count_event(config: Config, delta_share: float | None = None, discrete: bool | None = None) -> Event:
    """The noisy record count: alone it is (share * epsilon, delta_share * delta)-DP (sensitivity 1 under
    add/remove).  ``delta_share``: the ledger's split (1 when composed jointly); default: a new run's.
    ``discrete`` (default: when accounted apart, delta_share < 1): the exact discrete Gaussian
    (``calibrate_discrete_count``); a resume passes what its ledger planned (a float count before 2026-12-07)."""
    ft = config.finetune
    if delta_share is None:
        delta_share = delta_split(config).get(COUNT_KEY, 1.0)
    if discrete is None:
        discrete = delta_share < 1.0
    epsilon, delta = ft.label_count_epsilon_share * config.privacy.epsilon, config.privacy.delta * delta_share
    z, bits = calibrate_discrete_count(epsilon, delta) if discrete else (calibrate_count_noise(epsilon, delta), 0)
    per_label = ft.label_proportions == "dp-count"
    return Event(
        COUNT_KEY,
        z,
        sensitivity=1.0,
        mechanism=DISCRETE_COUNT_MECHANISM.format(bits=bits) if bits else COUNT_MECHANISM,
        reads="the private labels (one count per declared label)" if per_label else "the number of private records",
        grid_bits=bits,
        moves=COUNT_MOVES if bits else (),
    )


def dpsgd_event(plan: DpSgdPlan) -> Event:
    return Event(
        DPSGD_KEY,
        plan.noise_multiplier,
        sample_rate=plan.sample_rate,
        steps=plan.steps,
        sensitivity=plan.max_grad_norm,
        mechanism=DPSGD_MECHANISM,
        reads="private texts and labels (control code + text) through LoRA gradients",
    )


def finetune_report(
    config: Config,
    ledger: Ledger,
    plan: DpSgdPlan,
    shares: dict[str, float],
    prompt_mode: str | None,
    domain: list[str],
) -> dict[str, Any]:
    """privacy.json of a dp-finetune (or KnowledgeSG client) run.  ``prompt_mode``: the record format's
    ("chat" or "control-code"; None before the model loaded: the configured one)."""
    ft = config.finetune
    adaptive = ft.sample_rate is None  # q = B / N_hat, chosen from the count
    torch_rng = (
        "gradient noise and Poisson sampling: ChaCha20 (randomgen) keyed with 256 bits from the OS CSPRNG "
        "(secrets), fresh per run and per resume"
    )
    return privacy_report(
        ledger,
        method=config.method,
        public_inputs={
            "labels": config.data.labels,
            "prompt_format": prompt_mode or ft.prompt_format,
            "control_code": ft.instruction if prompt_mode == "chat" else ft.control_code,
            "task": config.data.task,
            "base_model": ft.model,
            "n_synthetic": config.n_synthetic,
            "lora": {"r": ft.lora_r, "alpha": ft.lora_alpha, "target_modules": list(ft.target_modules)},
            "training": {
                "epochs": ft.epochs,
                **({"batch_size": ft.batch_size} if ft.sample_rate is None else {"sample_rate": ft.sample_rate}),
                "optimizer": ft.optimizer + (f" (momentum {ft.momentum})" if ft.momentum else ""),
                "learning_rate": ft.learning_rate,
                "max_length": ft.max_length,
            },
        },
        caveat=ADAPTIVE_PLAN_CAVEAT if adaptive and not ledger.delta_split else "",
        post_processing=[
            (
                ADAPTIVE_PLAN_NOTE
                if ledger.delta_split
                else "the DP-SGD sample rate q = B / N_hat and its steps come from the noisy count (see caveat)"
            )
            if adaptive
            else "DP-SGD's average gradient divides the noisy sum by q times the noisy count",
            "synthetic texts are samples from the DP fine-tuned model (LoRA adapter in adapter/)",
            "class shares of the output: "
            + ("the noisy label count" if ft.label_proportions == "dp-count" else "uniform"),
            "generation prompts are the control code (or chat instruction) with public label names only",
        ],
        never_written="private texts, raw counts, training losses",
        domain=domain,
        details={
            DPSGD_MECHANISM: {
                "max_grad_norm": plan.max_grad_norm,
                "expected_batch_size": plan.expected_batch_size,
                "steps": ledger.steps_done(DPSGD_KEY),
                "planned_steps": plan.steps,
                "clipping": "per-sample gradient norms computed and clipped in fp32",
                "noise_rng": torch_rng,
            },
        },
        extra={
            "class_shares": shares,
            "released_artifacts": [
                f"{IN_RUN_DIR.adapter.as_posix()}/ (DP)",
                f"{IN_RUN_DIR.checkpoint.as_posix()} (DP iterate)",
                "synthetic output",
            ],
        },
    )
