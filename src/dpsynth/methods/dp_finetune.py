"""DP fine-tuning of a causal LM, then sampling (Yue et al., ACL 2023, "a simple and practical recipe").

    control code    each private record becomes ``label: NAME | text: TEXT<eos>`` (config.finetune.control_code)
    noisy count     a Gaussian count of the records per label (or in total), composed with DP-SGD on the
                    same accountant: the output's class shares and N_hat, since N itself is private
    DP-SGD          LoRA adapters (peft) trained with Opacus: per-sample clipping to C (norms in fp32),
                    Poisson sampling at q = B/N_hat, noise z*C; z calibrated so the run is (epsilon, delta)-DP
    generation      sample from the fine-tuned model prompted with each label's control code (post-processing)

Run directory (everything is public or DP; no private text, no pre-noise statistic)::

    finetune/plan.json         the DP-SGD plan (noise multiplier, sample rate, steps), fixed after the count
    finetune/label_counts.json the noisy counts
    finetune/checkpoint.pt     LoRA weights + optimizer state + steps done (+ accountant history), atomic
    ledger.json                the releases and epsilon spent (privacy/ledger.py; the checkpoint holds the steps)
    adapter/                   the DP LoRA adapter (adapter_model.safetensors + adapter_config.json)
    samples.journal.jsonl      generated rows, appended per batch (resume keeps them)

A killed run resumes from its last checkpoint: updates after it were never written anywhere, so
they were never released; the resumed run continues the same plan to the planned number of steps.
The training loss is computed on private batches and is *not* DP: it is shown only with
``finetune.show_loss`` (console only) and never written to the run directory or the log.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dpsynth.config import Config
from dpsynth.errors import ConfigError, DataError, ResumeError
from dpsynth.extras import require
from dpsynth.io import append_jsonl, atomic_write_bytes, atomic_write_json, read_jsonl_tolerant
from dpsynth.lm import (
    Encoded,
    RecordDataset,
    RecordFormat,
    add_lora,
    generate,
    load_causal_lm,
    load_lora_state,
    load_tokenizer,
    lora_skeleton,
    lora_state,
    pick_bf16,
    pick_device,
    save_adapter,
    train,
    trainable_bytes,
)
from dpsynth.methods.base import load_run_private, resolve_labels
from dpsynth.methods.dp_finetune_privacy import (
    COUNT_KEY,
    DPSGD_KEY,
    count_event,
    delta_split,
    dpsgd_event,
    finetune_report,
)
from dpsynth.privacy.dpsgd import (
    DpSgdPlan,
    check_count_apart_fits,
    check_prefix_fits,
    expected_batch_size,
    make_plan,
)
from dpsynth.privacy.events import Event
from dpsynth.privacy.ledger import Ledger
from dpsynth.privacy.private_data import PRIVATE_TEXT_DOMAIN, PrivateData, notify_owner
from dpsynth.privacy.rounding import round_up
from dpsynth.progress import ProgressReporter
from dpsynth.run import RunDir, run_rng
from dpsynth.run_phases import RunPhases
from dpsynth.selection import allocate

log = logging.getLogger("dpsynth")

GENERATOR_NAME = "dp-finetune"
MAX_ATTEMPT_FACTOR = 3  # a class gives up after 3x its quota in generation attempts


# ---------------------------------------------------------------- the method


class DpFinetuneMethod:
    """``MethodRunner`` for ``--method dp-finetune`` (see methods/base.py).

    Privacy plan, in release order (privacy/ledger.py): a noisy count of the records (per label for
    ``label_proportions: dp-count``, the total for ``uniform``), then DP-SGD at sample rate
    q = B / N_hat, where N_hat is that noisy count.  The number of records is private under add/remove
    adjacency, so it never sets the sample rate or the number of steps itself; the DP-SGD noise is
    calibrated after the count, for what the count left of the budget.
    """

    def __init__(self, config: Config, private: Any = None) -> None:
        require("dp-finetune", "finetune")  # peft, opacus, gguf: before anything is read or loaded
        self.config = config
        self._private_source = private
        self.data: PrivateData | None = None
        self.tok: Any = None
        self.model: Any = None
        self.plan: DpSgdPlan | None = None  # known once the count is released (train_adapter)
        self.count_event: Event | None = None
        self.encoded: Encoded | None = None
        self.fmt: RecordFormat | None = None
        self.device = "cpu"
        self.bf16 = False
        self.adapter_bytes = 0  # the LoRA adapter's size, known once prepare built its layers
        self.run_phases: RunPhases | None = None  # the whole run's bar, set once DP-SGD's steps are known
        # a resumed run (set by ``make_method``): once DP-SGD is done, the rest needs no private records
        self.resume_dir: RunDir | None = None
        self.reads_private = True

    # -------------------------------------------------------------- prepare
    def prepare(self, load_models: bool = True) -> None:
        # the embedded dataset's labels and task, and a declared label set (WASP's round checks are not ours)
        self.config = resolve_labels(self.config)
        config = self.config
        ft = config.finetune
        d = config.data
        assert d.labels is not None
        # data-independent: the count's noise (the DP-SGD noise follows from the released count)
        self.count_event = count_event(config)
        if ft.precision == "bf16":
            log.warning(
                "finetune.precision bf16: DP-SGD trains in fp32 whatever this says (bf16 rounding depends on the "
                "batch, which would break its sensitivity); bf16 applies to generation"
            )
        # a budget the accountant cannot split (a tiny epsilon) is refused here, by --check too, not after a load
        split, z = delta_split(config), self.count_event.noise_multiplier
        if split:  # accounted apart from DP-SGD (the plan is chosen from the count)
            check_count_apart_fits(
                z,
                config.privacy.epsilon,
                config.privacy.delta,
                split[COUNT_KEY],
                ft.accountant,
                self.count_event.grid_bits,
            )
        else:
            check_prefix_fits([(z, 1.0, 1)], config.privacy.epsilon, config.privacy.delta, ft.accountant)
        # finishing a trained run (sampling from the saved DP adapter) is post-processing: the records
        # may be gone by then, as for a WASP run past its last vote
        self.reads_private = self.resume_dir is None or not training_done(config, self.resume_dir)
        if self.reads_private:
            self.data = load_run_private(config, self._private_source)
        self.device = pick_device(ft.device)  # --check too: a CUDA device on a machine without CUDA
        if load_models:
            self.tok, self.model = load_causal_lm(ft.model)
            max_pos = getattr(self.model.config, "max_position_embeddings", None)
        else:  # --check: the tokenizer and the model's config, not its weights, so the checks below run too
            self.tok, hf_config = load_tokenizer(ft.model)
            max_pos = getattr(hf_config, "max_position_embeddings", None)
        if max_pos and ft.max_length + ft.max_new_tokens > max_pos:
            raise ConfigError(
                f"finetune.max_length: {ft.max_length} + max_new_tokens {ft.max_new_tokens} exceeds the model's "
                f"context of {max_pos} tokens; lower them"
            )
        fmt = self.fmt = RecordFormat(self.tok, ft, d.task)
        names = d.labels
        fmt.check_room(list(names.values()), ft.max_length)  # every declared label, whatever the records hold

        def encode(texts: tuple[str, ...], values: tuple[str, ...]) -> Encoded:
            return fmt.encode(texts, [names[v] for v in values], ft.max_length)

        # applied inside the handle: no record is held here
        self.encoded = self.data.encode(encode) if self.data is not None else None
        if self.encoded is not None and self.encoded.n_truncated and not ft.truncate:
            # a per-record domain check (privacy.json lists it); raised before the run directory exists,
            # so the message reaches the console only
            idx = self.encoded.truncated_idx
            more = f" and {len(idx) - 5} more" if len(idx) > 5 else ""
            raise DataError(
                f"{self.encoded.n_truncated} private record(s) are longer than finetune.max_length={ft.max_length} "
                f"tokens with the control code (records {', '.join(str(i + 1) for i in idx[:5])}{more}); raise "
                "finetune.max_length or set finetune.truncate: true to cut them"
            )
        if not load_models:  # the LoRA layers on a weightless copy: target_modules and the adapter's size
            self.adapter_bytes = trainable_bytes(lora_skeleton(hf_config, ft))
            return
        self.model = add_lora(self.model, ft)
        self.adapter_bytes = trainable_bytes(self.model)
        self.bf16 = pick_bf16(ft.precision, self.device)

    def domain(self) -> list[str]:
        """Per-record checks that refuse the input (privacy.json ``domain``)."""
        checks = list(PRIVATE_TEXT_DOMAIN)
        if not self.config.finetune.truncate:
            checks.append(
                f"finetune.truncate is false: every record fits finetune.max_length = "
                f"{self.config.finetune.max_length} tokens with its control code"
            )
        return checks

    # -------------------------------------------------------------- run
    def run(self, run_dir: RunDir, reporter: ProgressReporter) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        ledger, shares = self.train_adapter(run_dir, reporter, later=lambda s: [self._sampling_phase(run_dir, s)])
        # generation: post-processing of the DP adapter and the DP class shares
        rows = self._generate(run_dir, reporter, shares)
        return rows, self.report(ledger, shares)

    def train_adapter(
        self,
        run_dir: RunDir,
        reporter: ProgressReporter,
        later: Callable[[dict[str, float]], list[tuple[str, int, int]]] | None = None,
        units: str = "steps + batches",
    ) -> tuple[Ledger, dict[str, float]]:
        """Every private-data step of the method: the noisy count, DP-SGD, and the adapter saved to
        ``run_dir/adapter`` (safetensors).  KnowledgeSG's client stops here and uploads the adapter.

        ``later(shares)``: the phases after DP-SGD (name, units, units done) for the whole run's bar,
        whose units ``units`` names (``RunPhases``)."""
        assert self.count_event is not None and (self.encoded is not None or not self.reads_private)
        config, ft = self.config, self.config.finetune
        run_dir.finetune.mkdir(parents=True, exist_ok=True)
        ledger = Ledger.open(
            run_dir.ledger,
            epsilon=config.privacy.epsilon,
            delta=config.privacy.delta,
            accountant=ft.accountant,
            resume=run_dir.resuming,
            delta_split=delta_split(config),
        )
        split = delta_split(config)
        if split and not ledger.delta_split and not ledger.releases and not run_dir.label_counts.exists():
            ledger.adopt_split(split)  # an earlier dpsynth's joint ledger, nothing drawn yet: account apart
        # a run resumed from a ledger that composes jointly (an earlier dpsynth) keeps its count's noise, and one
        # that planned a float count (before the discrete count, 2026-12-07) keeps it float
        stored = ledger.event(COUNT_KEY)
        discrete = None if stored is None else stored.grid_bits > 0
        self.count_event = count_event(config, ledger.delta_split.get(COUNT_KEY, 1.0), discrete)
        ledger.plan([self.count_event])

        # 1. the noisy count: class shares of the output and the sample rate of DP-SGD
        noisy = self._release_count(run_dir.label_counts, ledger)
        shares = class_shares_from(noisy, list(config.data.labels or {}), ft.label_proportions)
        plan = self.plan = self._dpsgd_plan(ledger, noisy)
        plan_path = run_dir.finetune_plan
        if not plan_path.exists():
            atomic_write_json(plan_path, plan.to_dict())

        # 2. DP-SGD
        ckpt_path = run_dir.checkpoint
        start, opt_state = 0, None
        if ckpt_path.exists():
            start, opt_state = self._load_checkpoint(ckpt_path)
            log.info("resuming DP-SGD from step %d of %d", start, plan.steps)
        ledger.record_steps(DPSGD_KEY, start)  # refuses a checkpoint older than the ledger (re-spend)
        if start < plan.steps and self.encoded is None:  # training_done said it was: never train on nothing
            raise ResumeError(f"{ckpt_path}: DP-SGD is not finished; resume with the private records")
        dataset = RecordDataset(self.encoded, self.tok.pad_token_id) if self.encoded is not None else None
        self.data, self.encoded = None, None  # only the token tensors are kept, in memory
        phases = self.run_phases = RunPhases(
            reporter, [("DP-SGD", plan.steps, start), *(later(shares) if later else [])], description=f"run ({units})"
        )
        reporter.start("DP-SGD", total=plan.steps, done=start)
        phases.begin("DP-SGD")

        last_eps = [0.0, -math.inf]  # (value, when): PRV takes ~0.3 s, so refresh it at most every 5 s
        if ft.show_loss:
            reporter.message("finetune.show_loss: the loss shown is computed on private batches without noise (not DP)")

        sgd = dpsgd_event(plan)
        before = [e for e in ledger.spent_events() if e.key != DPSGD_KEY]
        if ledger.delta_split and start < plan.steps:  # else "eps 4/4" after step 1 reads as a budget run out
            reporter.message(
                f"privacy: DP-SGD is charged its whole share, epsilon {round_up(ledger.epsilon_left(), 4)}, from its "
                "first step (its plan was chosen from the noisy count); the bar shows the run's charge"
            )

        def on_step(step: int, loss: float | None) -> None:
            if step == plan.steps or time.monotonic() - last_eps[1] > 5:
                spent = [*before, sgd.with_steps(step)]
                last_eps[:] = [ledger.compose(spent), time.monotonic()]
            shown = f"loss {loss:.3f} " if ft.show_loss and loss is not None else ""
            phases.update("DP-SGD", step)  # first: the phase's update writes the line with the run's beside it
            reporter.update("DP-SGD", step, plan.steps, f"{shown}eps {round_up(last_eps[0], 4)}/{ledger.epsilon:g}")

        def save(step: int, optimizer: Any) -> None:
            self._save_checkpoint(ckpt_path, step, optimizer)
            ledger.record_steps(DPSGD_KEY, step)  # after the checkpoint: the ledger never runs ahead of it

        if start < plan.steps:
            assert dataset is not None
            res = train(
                self.model,
                dataset,
                ft=ft,
                plan=plan,
                steps=plan.steps,
                device=self.device,
                bf16=self.bf16,
                start_step=start,
                optimizer_state=opt_state,
                on_step=on_step,
                checkpoint=save,
            )
            log.info("DP-SGD: %d steps in %.1f s", res.steps_done - start, res.seconds)
        del dataset
        self._save_adapter(run_dir.adapter)
        return ledger, shares

    # -------------------------------------------------------------- pieces
    def _release_count(self, path: Path, ledger: Ledger) -> dict[str, float]:
        """The noisy count per label (dp-count) or of all records (uniform), drawn once (Ledger.release)."""
        labels = list(self.config.data.labels or {})
        event = ledger.event(COUNT_KEY)
        assert event is not None
        data = self.data
        per_label = self.config.finetune.label_proportions == "dp-count"

        def draw() -> dict[str, Any]:  # not called once the count is released (a trained run's resume)
            assert data is not None
            # the handle counts and adds the noise: the pre-noise counts never leave it
            if per_label:
                noisy, keys = data.noisy_label_counts(labels, event.sigma, event.grid_bits), labels
            else:
                noisy, keys = data.noisy_total(event.sigma, event.grid_bits), ["total"]
            return {"noisy_counts": {k: float(x) for k, x in zip(keys, noisy, strict=True)}, "sigma": event.sigma}

        out: dict[str, float] = ledger.release(COUNT_KEY, path, draw)["noisy_counts"]
        return out

    def _dpsgd_plan(self, ledger: Ledger, noisy: dict[str, float]) -> DpSgdPlan:
        """DP-SGD at q = B / N_hat (or a fixed sample_rate) for the budget left; a resume reuses the stored event."""
        config, ft = self.config, self.config.finetune
        assert self.count_event is not None
        n_hat = max(0.0, sum(max(0.0, v) for v in noisy.values()))
        if n_hat < ft.batch_size and ft.sample_rate is None:
            notify_owner(
                f"finetune.batch_size: {ft.batch_size} is not below the noisy record count ({n_hat:.0f}); every "
                "DP-SGD step uses all records (sample rate 1)"
            )
        stored = ledger.event(DPSGD_KEY)
        if stored is None:
            plan = make_plan(
                epsilon=config.privacy.epsilon,
                delta=config.privacy.delta,
                delta_source="privacy.delta",
                n_records=max(ft.batch_size if ft.sample_rate is None else 1, round(n_hat)),
                batch_size=ft.batch_size,
                sample_rate=ft.sample_rate,
                epochs=ft.epochs,
                max_grad_norm=ft.max_grad_norm,
                accountant=ledger.accountant,  # type: ignore[arg-type]
                count_noise_multiplier=self.count_event.noise_multiplier,
                count_delta_share=ledger.delta_split.get(COUNT_KEY),
                count_grid_bits=self.count_event.grid_bits,
            )
            if plan.accountant != ledger.accountant:
                ledger.use_accountant(plan.accountant)
            ledger.plan([dpsgd_event(plan)])
            return plan
        return DpSgdPlan(
            epsilon=ledger.epsilon,
            delta=ledger.delta,
            delta_source="privacy.delta",
            sample_rate=stored.sample_rate,
            steps=stored.steps,
            noise_multiplier=stored.noise_multiplier,
            max_grad_norm=stored.sensitivity,
            accountant=ledger.accountant,  # type: ignore[arg-type]
            expected_batch_size=expected_batch_size(ft.sample_rate, ft.batch_size, max(1.0, round(n_hat))),
            label_count_noise_multiplier=self.count_event.noise_multiplier,
            count_delta_share=ledger.delta_split.get(COUNT_KEY),
            label_count_grid_bits=self.count_event.grid_bits,
        )

    def _save_checkpoint(self, path: Path, step: int, optimizer: Any) -> None:
        import torch

        assert self.plan is not None
        state = {
            "step": step,
            "lora": lora_state(self.model),
            "optimizer": optimizer.state_dict(),
            "accountant_history": [list(h) for h in self.plan.history(step)],
            "plan": self.plan.to_dict(),
        }
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(path, buf.getvalue())

    def _load_checkpoint(self, path: Path) -> tuple[int, dict[str, Any]]:
        import torch

        assert self.plan is not None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - a damaged file is a user-facing resume problem
            raise ResumeError(f"{path}: cannot be read ({type(exc).__name__}); start a new --out directory") from None
        if not dpsgd_event(DpSgdPlan.from_dict(state["plan"])).same_spend(dpsgd_event(self.plan)):
            raise ResumeError(f"{path}: the checkpoint belongs to a different privacy plan; start a new --out")
        load_lora_state(self.model, state["lora"])
        return int(state["step"]), state["optimizer"]

    def _save_adapter(self, target: Path) -> None:
        """The DP LoRA adapter (safetensors)."""
        save_adapter(self.model, target)

    def _sampling_phase(self, run_dir: RunDir, shares: dict[str, float]) -> tuple[str, int, int]:
        """Sampling for the whole run's bar: generation batches in all, and those the journal already holds."""
        quota = allocate(self.config.n_synthetic, shares, floor=1)
        rows = read_jsonl_tolerant(run_dir.journal)
        have = {k: sum(1 for r in rows if r["label"] == k) for k in quota}
        return "sampling", self._batches(quota, quota), self._batches(quota, have)

    def _batches(self, quota: dict[str, int], have: dict[str, int]) -> int:
        """Generation batches that make ``have`` samples of each class's ``quota`` (counts only)."""
        b = self.config.finetune.generation_batch_size
        return sum(math.ceil(min(have.get(k, 0), q) / b) for k, q in quota.items())

    def _generate(self, run_dir: RunDir, reporter: ProgressReporter, shares: dict[str, float]) -> list[dict[str, Any]]:
        config, ft = self.config, self.config.finetune
        labels = config.data.labels
        assert labels is not None
        quota = allocate(config.n_synthetic, shares, floor=1)
        rows = read_jsonl_tolerant(run_dir.journal)
        have = {k: sum(1 for r in rows if r["label"] == k) for k in labels}
        rng = run_rng(config.seed, len(rows))  # a resumed call must not replay journaled batches
        total = sum(quota.values())
        done = sum(min(have[k], quota[k]) for k in labels)  # a resumed call starts at the journal's samples
        reporter.start("generating", total=total, done=done)
        if self.run_phases is not None:
            self.run_phases.begin("sampling")
        model = self.model
        if hasattr(model, "merge_and_unload"):  # plain weights: faster sampling (the adapter is saved)
            model = model.merge_and_unload()
            self.model = model
        for k in labels:
            assert self.fmt is not None
            prompt = self.fmt.prefix(labels[k])
            attempts = 0
            while have[k] < quota[k] and attempts < MAX_ATTEMPT_FACTOR * quota[k]:
                want = min(ft.generation_batch_size, quota[k] - have[k])
                seed = rng.getrandbits(63)
                texts = generate(
                    model,
                    self.tok,
                    prompt,
                    want,
                    ft=ft,
                    device=self.device,
                    bf16=self.bf16,
                    seed=seed,
                    whole_sentences=ft.whole_sentences,
                )
                attempts += want
                new = [
                    {"text": t, "label": k, "label_name": labels[k], "generator": GENERATOR_NAME, "round": 0}
                    for t in texts
                    if t
                ][: quota[k] - have[k]]
                append_jsonl(run_dir.journal, new)
                rows.extend(new)
                have[k] += len(new)
                done += len(new)
                if self.run_phases is not None:  # first: the phase's update writes the line
                    self.run_phases.update("sampling", self._batches(quota, have))
                reporter.update("generating", done, total, f"{labels[k]} {have[k]}/{quota[k]}")
            if have[k] < quota[k]:
                log.warning("class %s: %d of %d samples after %d attempts", labels[k], have[k], quota[k], attempts)
        if self.run_phases is not None:  # sampling is over, even for a class that gave up
            self.run_phases.update("sampling", self._batches(quota, quota))
        out: list[dict[str, Any]] = []
        for k in labels:
            out.extend([r for r in rows if r["label"] == k][: quota[k]])
        return out

    def report(self, ledger: Ledger, shares: dict[str, float]) -> dict[str, Any]:
        """privacy.json of the run (methods/dp_finetune_privacy.py); the KnowledgeSG client's too."""
        assert self.plan is not None
        return finetune_report(
            self.config, ledger, self.plan, shares, self.fmt.mode if self.fmt else None, self.domain()
        )

    def close(self) -> None:
        self.model = None
        self.data = None
        self.encoded = None
        with contextlib.suppress(Exception):
            import torch

            if self.device.startswith("cuda"):
                torch.cuda.empty_cache()


def training_done(config: Config, run_dir: RunDir) -> bool:
    """Has the run in ``run_dir`` recorded every planned DP-SGD step, with its checkpoint saved?  Then what
    is left (saving the adapter, sampling) is post-processing.  Asked of a read-only copy of the ledger."""
    if not run_dir.ledger.exists() or not run_dir.checkpoint.exists():
        return False
    p, ft = config.privacy, config.finetune
    ledger = Ledger.open(run_dir.ledger, epsilon=p.epsilon, delta=p.delta, accountant=ft.accountant, read_only=True)
    event = ledger.event(DPSGD_KEY)
    return event is not None and ledger.steps_done(DPSGD_KEY) >= event.steps


def class_shares_from(noisy: dict[str, float], labels: list[str], proportions: str) -> dict[str, float]:
    """Output class shares: the clipped noisy label counts (dp-count), else uniform."""
    if proportions != "dp-count":
        return {k: 1.0 / len(labels) for k in labels}
    clipped = {k: max(0.0, float(noisy.get(k, 0.0))) for k in labels}
    total = sum(clipped.values())
    if total <= 0:
        return {k: 1.0 / len(labels) for k in labels}
    return {k: v / total for k, v in clipped.items()}


__all__ = ["DpFinetuneMethod", "class_shares_from", "count_event", "dpsgd_event"]
