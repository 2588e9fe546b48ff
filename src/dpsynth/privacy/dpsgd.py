"""DP-SGD accounting and the Opacus wiring used by ``lm/training.py`` (dp-finetune, KnowledgeSG, the audit).

The noise plan of a DP fine-tuning run is a composition, on one accountant, of

* optionally one Gaussian count of the labels (L2 sensitivity 1 under add/remove: one record
  changes one bin by 1), i.e. a subsampled Gaussian with sample rate 1 and one step; and
* ``steps`` Poisson-subsampled Gaussian steps of DP-SGD (sample rate q = B/N, per-sample
  clipping norm C, noise multiplier z: noise std z*C on the summed clipped gradients).

Both are entries ``(noise_multiplier, sample_rate, steps)`` of an Opacus accountant history
(PRV by default, RDP optional), so epsilon is Opacus' own number.  Calibration is a bisection
on that accountant.  Per-sample clipping, noise and Poisson sampling are Opacus'
(``GradSampleModule``, ``DPOptimizer``, ``DPDataLoader``); nothing here clips or adds noise by hand.
"""

from __future__ import annotations

import functools
import logging
import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from dpsynth.errors import ConfigError
from dpsynth.privacy.accountant import (
    GaussianPlan,
    calibrate_noise_multiplier,
    discrete_epsilon,
    pld_epsilon,
    smallest_passing,
)
from dpsynth.privacy.mechanisms import secure_poisson_mask, secure_rng, secure_standard_normal_torch
from dpsynth.privacy.rounding import round_up

DpSgdAccountant = Literal["prv", "rdp"]
# PRV is a numerical upper bound; this is its default epsilon error (Opacus' own default)
PRV_EPS_ERROR = 0.01
# below this noise multiplier the PRV accountant is slow and memory-hungry (minutes, >20 GB at 0.05)
PRV_MIN_NOISE = 0.3


def import_opacus() -> None:
    """Import Opacus without its side effect: ``opacus.utils.module_utils`` calls ``logging.basicConfig``,
    which would print every INFO record of every library (dpsynth's included) to stderr."""
    root = logging.getLogger()
    before = list(root.handlers)
    import opacus  # noqa: F401
    import opacus.utils.module_utils  # noqa: F401

    for h in list(root.handlers):
        if h not in before:
            root.removeHandler(h)
    # Opacus warns when the first Poisson batch is empty: that tells which batch sampled no record, a fact of
    # the subsampling over the private records that the accountant assumes hidden (and its advice, "use more
    # data, increase epsilon", is wrong: an empty batch is normal at a small sample rate)
    loader_log = logging.getLogger("opacus.data_loader")
    if not any(isinstance(f, _NoBatchSizes) for f in loader_log.filters):
        loader_log.addFilter(_NoBatchSizes())


class _NoBatchSizes(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "batch is empty" not in record.getMessage()


def paper_delta(n: int) -> float:
    """delta = 1 / (N ln N), Yue et al. (ACL 2023); N = number of private records."""
    if n < 2:
        raise ConfigError("data: DP fine-tuning needs at least 2 private records")
    return 1.0 / (n * math.log(n))


def history_epsilon(history: list[tuple[float, float, int]], delta: float, accountant: DpSgdAccountant) -> float:
    """Epsilon at ``delta`` of an Opacus accountant history [(noise_multiplier, sample_rate, steps), ...]."""
    key = tuple((float(z), float(q), int(t)) for z, q, t in history if t > 0)
    if not key:
        return 0.0
    return _history_epsilon(key, float(delta), accountant)


@functools.lru_cache(maxsize=4096)
def _history_epsilon(history: tuple[tuple[float, float, int], ...], delta: float, accountant: DpSgdAccountant) -> float:
    if any(z <= 0 for z, _, _ in history):
        return math.inf
    import_opacus()
    from opacus.accountants import create_accountant

    acc = create_accountant(accountant)
    acc.history = list(history)
    with warnings.catch_warnings():
        # PRV evaluates log(1 - q), which is -inf for the sample-rate-1 count mechanism; harmless
        warnings.simplefilter("ignore", RuntimeWarning)
        # RDP: "optimal order is the smallest alpha" at large epsilon; the bound is still valid
        warnings.filterwarnings("ignore", message="Optimal order", category=UserWarning)
        if accountant == "prv":
            return float(acc.get_epsilon(delta, eps_error=PRV_EPS_ERROR))
        return float(acc.get_epsilon(delta))


@dataclass(frozen=True)
class DpSgdPlan:
    """The whole privacy plan of a DP fine-tuning run (persisted; a resumed run never recalibrates)."""

    epsilon: float  # target (hard cap)
    delta: float
    delta_source: str  # "privacy.delta" or "1/(N ln N)"
    sample_rate: float
    steps: int
    noise_multiplier: float
    max_grad_norm: float
    accountant: DpSgdAccountant
    expected_batch_size: float
    label_count_noise_multiplier: float | None = None  # None: uniform class shares, nothing released
    extra: dict[str, Any] = field(default_factory=dict)
    # the count's share of delta when the count and DP-SGD are accounted apart and added (the plan was
    # chosen from the count: Ledger's delta_split); None: composed jointly
    count_delta_share: float | None = None
    # > 0: the count is a discrete Gaussian on the grid 2^-bits (a count accounted apart); 0: the float Gaussian
    label_count_grid_bits: int = 0

    def __post_init__(self) -> None:
        if self.label_count_grid_bits and self.count_delta_share is None:
            raise ValueError("a discrete count is accounted apart from DP-SGD (count_delta_share)")

    def history(self, steps_done: int, count_released: bool = True) -> list[tuple[float, float, int]]:
        h: list[tuple[float, float, int]] = []
        if self.label_count_noise_multiplier is not None and count_released:
            h.append((self.label_count_noise_multiplier, 1.0, 1))
        if steps_done:
            h.append((self.noise_multiplier, self.sample_rate, steps_done))
        return h

    def epsilon_after(self, steps_done: int, count_released: bool = True) -> float:
        share = self.count_delta_share
        if share is None:
            return history_epsilon(self.history(steps_done, count_released), self.delta, self.accountant)
        # as the ledger charges a split (privacy/ledger.py): the count alone by PLD, DP-SGD at least the budget
        # the count left it
        assert self.label_count_noise_multiplier is not None
        count_alone = count_epsilon_apart(
            self.label_count_noise_multiplier, self.delta * share, self.label_count_grid_bits
        )
        count = count_alone if count_released else 0.0
        if not steps_done:
            return count
        sgd = history_epsilon(self.history(steps_done, False), self.delta * (1 - share), self.accountant)
        return count + max(sgd, self.epsilon - count_alone)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DpSgdPlan:
        return cls(**d)

    def same_schedule(self, other: DpSgdPlan) -> bool:
        """True if ``other`` asks for the same budget and schedule (the noise is taken from self)."""
        return (
            math.isclose(self.epsilon, other.epsilon, rel_tol=1e-12)
            and math.isclose(self.delta, other.delta, rel_tol=1e-9)
            and math.isclose(self.sample_rate, other.sample_rate, rel_tol=1e-12)
            and self.steps == other.steps
            and math.isclose(self.max_grad_norm, other.max_grad_norm, rel_tol=1e-12)
            and self.extra.get("requested_accountant", self.accountant) == other.accountant
            and (self.label_count_noise_multiplier is None) == (other.label_count_noise_multiplier is None)
        )


def expected_batch_size(sample_rate: float | None, batch_size: int, n_hat: float) -> float:
    """The batch size the noisy gradient sum is divided by: B, or q times the noisy count for a fixed q."""
    return float(batch_size) if sample_rate is None else max(1.0, sample_rate * n_hat)


def steps_for(epochs: float, sample_rate: float) -> int:
    """DP-SGD steps for ``epochs`` passes at sample rate q: round(epochs / q), at least 1."""
    return max(1, round(epochs / sample_rate))


# one record moves one count (the total, or its label's) by 1 under add/remove
COUNT_MOVES = (1.0,)


def calibrate_count_noise(epsilon: float, delta: float) -> float:
    """Noise multiplier of one sensitivity-1 Gaussian release that is (epsilon, delta)-DP alone (PLD)."""
    return calibrate_noise_multiplier(epsilon, delta, 1, "pld")


def calibrate_discrete_count(epsilon: float, delta: float) -> tuple[float, int]:
    """(noise multiplier, grid bits) of one count release, (epsilon, delta)-DP alone, with the exact discrete
    Gaussian on the grid 2^-bits (``mechanisms.discrete_gaussian``; 1 bit, half counts, unless the noise is below
    half a count).  Each of its output bits depends on the draw alone, where a float Gaussian added to an integer
    leaves the sum's low-order bits to floating-point rounding, which can tell neighbouring inputs apart (Mironov
    2012, for the Laplace mechanism).  Its accounting needs dp-accounting's PLD, so only a count accounted apart
    from DP-SGD is discrete; one composed with DP-SGD by Opacus (a fixed sample rate) stays float."""
    plan = GaussianPlan.calibrate_discrete(epsilon, delta, 1, COUNT_MOVES, base_bits=1, min_grid_steps=1.0)
    return plan.noise_multiplier, plan.grid_bits


def calibrate_dpsgd(
    epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: DpSgdAccountant = "prv",
    prefix: list[tuple[float, float, int]] | None = None,
    rtol: float = 1e-3,
) -> float:
    """Smallest noise multiplier z (up to ``rtol``) such that ``prefix`` + ``steps`` DP-SGD steps are
    (epsilon, delta)-DP under the Opacus accountant.  The returned z always satisfies the budget."""
    key = tuple((float(z), float(q), int(t)) for z, q, t in (prefix or []))
    return _calibrate_dpsgd(float(epsilon), float(delta), float(sample_rate), int(steps), accountant, key, rtol)


@functools.lru_cache(maxsize=256)
def _calibrate_dpsgd(
    epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: DpSgdAccountant,
    prefix_key: tuple[tuple[float, float, int], ...],
    rtol: float,
) -> float:
    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise ConfigError("privacy.epsilon: must be a finite number > 0")
    if not 0 < delta < 1:
        raise ConfigError("privacy.delta: must be in (0, 1)")
    if not 0 < sample_rate <= 1:
        raise ConfigError("finetune.batch_size: the sample rate B/N must be in (0, 1]")
    prefix = list(prefix_key)

    def eps(z: float, acc: DpSgdAccountant = accountant) -> float:
        return history_epsilon([*prefix, (z, sample_rate, steps)], delta, acc)

    check_prefix_fits(prefix, epsilon, delta, accountant)

    # 1. RDP (cheap at any noise level) brackets the answer from above: its epsilon is the looser one.
    #    PRV is never evaluated at tiny noise multipliers, where it takes minutes.  At a small budget RDP's
    #    bound can exceed epsilon however large z is (about 0.10 at delta 1e-5), where PRV still fits: there
    #    dp-accounting's PLD (the tighter bound) brackets instead.
    def bracket_eps(z: float) -> float:
        return eps(z, "rdp") if rdp_brackets else pld_history_epsilon([*prefix, (z, sample_rate, steps)], delta)

    # RDP cannot certify a budget below its own floor (about 0.10 at delta 1e-5, whatever the noise), with or
    # without a count before DP-SGD: a count accounted apart leaves DP-SGD such a budget at epsilon 0.1
    rdp_floor = history_epsilon([*prefix, (1e4, sample_rate, steps)], delta, "rdp")
    rdp_brackets = accountant == "rdp" or rdp_floor < epsilon
    hi = 1.0
    while bracket_eps(hi) > epsilon:
        hi *= 2
        if hi > 1e4:
            raise ConfigError(
                f"privacy.epsilon: {epsilon:g} cannot be reached with {steps} steps at sample rate "
                f"{sample_rate:.4g}; raise epsilon or lower finetune.epochs"
            )
    lo = hi / 2
    while lo > 0.3 and bracket_eps(lo) <= epsilon:
        hi, lo = lo, lo / 2
    if accountant == "rdp":
        return smallest_passing(lambda z: eps(z, "rdp") <= epsilon, lo, hi, rtol)
    z_rdp = smallest_passing(lambda z: bracket_eps(z) <= epsilon, lo, hi, 1e-2)
    if z_rdp < PRV_MIN_NOISE:  # see make_plan: PRV is not evaluated at such low noise
        return z_rdp
    # 2. dp-accounting's PLD (fast; within ~0.5% of PRV) narrows it down, 3. PRV decides in a 1% bracket
    z_pld = smallest_passing(
        lambda z: pld_history_epsilon([*prefix, (z, sample_rate, steps)], delta) <= epsilon, 0.6 * z_rdp, z_rdp, 2e-3
    )
    hi = z_pld * 1.003
    while eps(hi) > epsilon:
        hi *= 1.01
    lo = hi * 0.994
    while eps(lo) <= epsilon:
        hi, lo = lo, lo * 0.99
    return smallest_passing(lambda z: eps(z) <= epsilon, lo, hi, max(rtol, 6e-3))


def check_prefix_fits(
    prefix: list[tuple[float, float, int]], epsilon: float, delta: float, accountant: DpSgdAccountant
) -> None:
    """Refuse, before anything is spent, a budget whose releases before DP-SGD (the count) leave it next to
    nothing (under 1% of epsilon).

    Two causes, told apart: the share given to the count, or the accountant's own bound.  PRV is an upper
    bound with a numerical error of ``PRV_EPS_ERROR`` and RDP is loose for one Gaussian release (about 0.10
    at delta 1e-5), so at a tiny epsilon the count alone is charged the whole budget whatever its noise.
    """
    used = history_epsilon(prefix, delta, accountant)
    if epsilon - used > 0.01 * epsilon:  # DP-SGD needs some of the budget (1% leaves it noise in the hundreds)
        return
    if pld_history_epsilon(prefix, delta) > epsilon / 2:
        raise ConfigError(
            "finetune.label_count_epsilon_share: the label count alone uses the whole budget; lower the share "
            "or use finetune.label_proportions: uniform"
        )
    why, fix = (
        (f"its numerical error alone is {PRV_EPS_ERROR:g}", "")
        if accountant == "prv"
        else ("its bound is loose for one release", ", or set finetune.accountant: prv (the tighter bound)")
    )
    raise ConfigError(
        f"privacy.epsilon: {epsilon:g} is below what the {accountant} accountant can certify for a DP fine-tune: "
        f"it charges the record count alone epsilon {used:.4g} ({why}). Raise privacy.epsilon{fix}; below "
        "about 0.1, DP-SGD adds so much noise that the model learns little"
    )


def pld_history_epsilon(history: list[tuple[float, float, int]], delta: float) -> float:
    """Epsilon of the same history with dp-accounting's PLD accountant (cross-check and fast bracketing)."""
    return pld_epsilon(history, delta, interval=1e-3)


def count_epsilon_apart(count_z: float, delta: float, grid_bits: int = 0) -> float:
    """The noisy count's epsilon alone at ``delta`` (its share), as a split ledger charges it: dp-accounting's
    PLD, tight for one unsampled Gaussian, whatever DP-SGD's accountant (PRV's numerical error, 0.01, would be
    charged to the count in full, and a switch to RDP would change the figure after the count was drawn).
    ``grid_bits`` > 0: the discrete Gaussian on that grid (``calibrate_discrete_count``)."""
    if grid_bits:
        return discrete_epsilon(count_z, COUNT_MOVES, grid_bits, 1, delta)
    return pld_epsilon([(count_z, 1.0, 1)], delta)


def check_count_apart_fits(
    count_z: float, epsilon: float, delta: float, share: float, accountant: DpSgdAccountant, grid_bits: int = 0
) -> float:
    """What a count accounted apart (at ``share`` of delta) leaves DP-SGD, fixed before the count is drawn;
    refused (before anything is spent) when it is next to nothing or below what ``accountant`` can certify
    for DP-SGD alone at the rest of delta (PRV: its numerical error; RDP: about 0.10 at delta 1e-5)."""
    left = epsilon - count_epsilon_apart(count_z, delta * share, grid_bits)
    if left <= 0.01 * epsilon:
        raise ConfigError(
            "finetune.label_count_epsilon_share: the label count alone uses the whole budget; lower the share "
            "or use finetune.label_proportions: uniform"
        )
    floor = 2 * PRV_EPS_ERROR if accountant == "prv" else history_epsilon([(1e4, 1.0, 1)], delta * (1 - share), "rdp")
    if left <= floor:
        why = (
            f"twice its numerical error of {PRV_EPS_ERROR:g}"
            if accountant == "prv"
            else "its bound is loose for small epsilon; finetune.accountant: prv is tighter"
        )
        need = floor / (1 - share) * 1.02  # the count takes share * epsilon of a larger budget too
        raise ConfigError(
            f"privacy.epsilon: {epsilon:g} leaves DP-SGD epsilon {left:.4g} after the record count, not above the "
            f"{floor:.3g} the {accountant} accountant needs to certify anything ({why}). Raise privacy.epsilon (to "
            f"{round_up(need, 2)} or more), or set "
            "finetune.sample_rate (the count and DP-SGD are then composed jointly); below about 0.1, DP-SGD adds "
            "so much noise that the model learns little"
        )
    return left


def make_plan(
    *,
    epsilon: float,
    delta: float,
    delta_source: str,
    n_records: int,
    batch_size: int,
    epochs: float,
    max_grad_norm: float,
    accountant: DpSgdAccountant,
    label_count_share: float | None = None,
    count_noise_multiplier: float | None = None,
    sample_rate: float | None = None,
    count_delta_share: float | None = None,
    count_grid_bits: int = 0,
) -> DpSgdPlan:
    """Calibrate the plan: a count's noise (given, or for ``label_count_share * epsilon`` alone; none
    without either), then the DP-SGD noise so that the composition of both is (epsilon, delta)-DP.

    ``sample_rate`` fixes q in advance (``finetune.sample_rate``): q, the steps and the noise then depend
    on public inputs only, and ``n_records`` (the noisy count) only scales the average of the noisy
    gradient sum (``expected_batch_size``), which is post-processing.  Without it q = B / ``n_records``.

    ``count_delta_share`` (with a count): the plan is chosen from the count, so the two are not composed
    jointly (a theorem covers that only for parameters fixed in advance) but apart and added: DP-SGD alone
    gets (epsilon - the count's epsilon at share * delta, (1 - share) * delta), whatever the count
    (basic composition under adaptive choice; privacy/ledger.py's docstring has the proof).  Such a count is a
    discrete Gaussian (``calibrate_discrete_count``): given, its grid is ``count_grid_bits``."""
    if sample_rate is None and batch_size > n_records:
        raise ConfigError(
            f"finetune.batch_size: {batch_size} is larger than the {n_records} private records; use a "
            f"batch size below {n_records} (e.g. {max(1, n_records // 4)})"
        )
    q = sample_rate if sample_rate is not None else batch_size / n_records
    steps = steps_for(epochs, q)
    count_z, bits = count_noise_multiplier, count_grid_bits
    if count_z is None and label_count_share:
        if count_delta_share is None:
            count_z = calibrate_count_noise(label_count_share * epsilon, delta)
        else:
            count_z, bits = calibrate_discrete_count(label_count_share * epsilon, delta * count_delta_share)
    prefix = [(count_z, 1.0, 1)] if count_z is not None else []
    apart = count_delta_share if count_z is not None else None
    left = epsilon
    if count_z is not None and apart is not None:
        left = check_count_apart_fits(count_z, epsilon, delta, apart, accountant, bits)

    def calibrate(acc: DpSgdAccountant) -> float:
        if apart is None:
            return calibrate_dpsgd(epsilon, delta, q, steps, acc, prefix)
        return calibrate_dpsgd(left, delta * (1 - apart), q, steps, acc)

    z = calibrate(accountant)
    extra: dict[str, Any] = {}
    if accountant == "prv" and z < PRV_MIN_NOISE:
        # Very weak privacy (epsilon in the tens): the PRV accountant's grid grows without bound below
        # this noise level (tens of GB at z = 0.05); RDP is a valid, looser bound and cheap there.
        extra = {"requested_accountant": "prv", "why_rdp": f"noise multiplier below {PRV_MIN_NOISE}"}
        accountant = "rdp"
        z = calibrate("rdp")
    return DpSgdPlan(
        epsilon=epsilon,
        delta=delta,
        delta_source=delta_source,
        sample_rate=q,
        steps=steps,
        noise_multiplier=z,
        max_grad_norm=max_grad_norm,
        accountant=accountant,
        expected_batch_size=expected_batch_size(sample_rate, batch_size, n_records),
        label_count_noise_multiplier=count_z,
        extra=extra,
        count_delta_share=apart,
        label_count_grid_bits=bits if count_z is not None else 0,
    )


# ---------------------------------------------------------------- Opacus wiring
def secure_poisson_sampler(num_samples: int, sample_rate: float) -> Any:
    """Opacus' Poisson batch sampler (each record in a batch independently with probability q, 1/q batches
    per pass) whose coins come from ChaCha20 keyed from the OS CSPRNG (``mechanisms.secure_rng``) instead of
    torch's Mersenne Twister, which Opacus uses unless ``secure_mode`` (it needs the unmaintained
    ``torchcsprng``).  A subclass, so Opacus' ``BatchMemoryManager`` treats it as its own."""
    from opacus.utils.uniform_sampler import UniformWithReplacementSampler

    class SecurePoissonSampler(UniformWithReplacementSampler):
        def __iter__(self) -> Any:
            for _ in range(self.steps):
                yield secure_poisson_mask(self.num_samples, self.sample_rate, rng).tolist()

    rng = secure_rng()
    return SecurePoissonSampler(num_samples=num_samples, sample_rate=sample_rate)


# Each per-sample gradient is clipped to C (1 - CLIP_MARGIN) while the noise is calibrated for C.  Float sums
# depend on how the batch is laid out: one record joining a Poisson batch moves the other records' fp32
# gradients in their last bits (measured: the sum of 40 clipped gradients moves by C (1 - 3e-6) when one record
# leaves, where exact arithmetic gives C (1 - 1e-5) from Opacus' 1e-6 in the clip factor's denominator, a
# margin that shrinks as gradient norms grow).  The margin keeps one record's move of the sum within C for
# such drift; it costs 0.01% of the signal.
CLIP_MARGIN = 1e-4


def secure_dp_optimizer(optimizer: Any, plan: DpSgdPlan) -> Any:
    """Opacus' ``DPOptimizer`` (clipping, mean reduction) whose Gaussian noise comes from ChaCha20 keyed
    from the OS CSPRNG (``mechanisms.secure_rng``) rather than a torch generator (not a CSPRNG), clipping
    at C (1 - ``CLIP_MARGIN``) and noising for C."""
    from opacus.optimizers import DPOptimizer
    from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed

    class SecureNoiseDPOptimizer(DPOptimizer):
        def add_noise(self) -> None:  # Opacus' add_noise with the noise source swapped, its scale the plan's C
            std = self.noise_multiplier * plan.max_grad_norm
            for p in self.params:
                _check_processed_flag(p.summed_grad)
                p.grad = (p.summed_grad + std * secure_standard_normal_torch(p.summed_grad, rng)).view_as(p)
                _mark_as_processed(p.summed_grad)

    rng = secure_rng()
    return SecureNoiseDPOptimizer(
        optimizer,
        noise_multiplier=plan.noise_multiplier,
        max_grad_norm=plan.max_grad_norm * (1 - CLIP_MARGIN),
        expected_batch_size=int(round(plan.expected_batch_size)),
        loss_reduction="mean",
    )


@dataclass
class PrivateTraining:
    """The Opacus objects of one DP-SGD run: wrapped model, DP optimizer, Poisson data loader."""

    module: Any  # opacus.GradSampleModule
    optimizer: Any  # opacus.optimizers.DPOptimizer
    loader: Any  # a torch DataLoader over secure_poisson_sampler batches
    plan: DpSgdPlan


def make_private(
    model: Any,
    optimizer: Any,
    dataset: Any,
    collate_fn: Any,
    plan: DpSgdPlan,
) -> PrivateTraining:
    """Wrap ``model``/``optimizer`` with Opacus and build a Poisson-sampling loader with sample rate q.

    Built from Opacus' parts rather than ``PrivacyEngine.make_private`` because the engine derives
    q from ``1/len(loader)`` (= 1/ceil(N/B)), while the plan's q is exactly B/N, and because its noise
    and sampling come from torch generators, not a CSPRNG; the parts are the same (``GradSampleModule``
    hooks, ``DPOptimizer`` with ``loss_reduction='mean'``, ``DPDataLoader``'s collate function), and
    accounting is done from the persisted plan (``DpSgdPlan.history``).
    """
    import_opacus()
    from opacus import GradSampleModule
    from opacus.data_loader import DPDataLoader
    from torch.utils.data import DataLoader

    module = GradSampleModule(model, batch_first=True, loss_reduction="mean")
    dp_opt = secure_dp_optimizer(optimizer, plan)
    # Opacus' loader for its collate function (it turns an empty Poisson batch into empty tensors), with
    # the batches drawn by the secure sampler (as Opacus' BatchMemoryManager rebuilds a loader)
    opacus_loader = DPDataLoader(dataset, sample_rate=plan.sample_rate, collate_fn=collate_fn)
    loader = DataLoader(
        dataset,
        batch_sampler=secure_poisson_sampler(len(dataset), plan.sample_rate),
        collate_fn=opacus_loader.collate_fn,
    )
    return PrivateTraining(module, dp_opt, loader, plan)
