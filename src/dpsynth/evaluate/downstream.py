"""Downstream utility: train a classifier on synthetic data, test it on real held-out data.

Two classifiers:

* ``logreg`` (default, fast): scikit-learn ``LogisticRegression(max_iter=2000)`` on frozen,
  L2-normalised sentence embeddings (all-MiniLM-L6-v2).  lbfgs is deterministic, so a seed
  changes nothing: it is fitted once and reported as one value, never with a spread (repeating
  it over seeds only ever showed float round-off, e.g. "+- 1.36e-16", as if it were variation).
* ``finetune``: the MiniLM encoder itself fine-tuned with a linear head on mean-pooled token
  states (torch, AdamW, linear warm-up and decay) for a fixed number of epochs chosen in advance
  (:class:`ClassifierFinetuneConfig`); the model after the last epoch is tested.  The test set is never
  used to choose an epoch or anything else.  Repeated over seeds (head init, dropout, batch order).

Both report accuracy and macro-F1 as mean, sample std (ddof=1; 0 for a single value) and the
per-run values; :func:`spread` says whether a spread is worth showing at all.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from dpsynth.embeddings import EMBEDDED_MINILM

log = logging.getLogger("dpsynth")

LOGREG = "logreg"
FINETUNE = "finetune"
CLASSIFIERS = (LOGREG, FINETUNE)


# Values closer than this are the same number: accuracies move in steps of 1/n_test, so anything
# smaller is float round-off of the mean and std, not a difference between runs.
SAME = 1e-9


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """{"mean", "std" (ddof=1; 0 for one value), "values"}.

    Values that agree to within :data:`SAME` give std 0 and their common value as the mean,
    exactly: averaging identical floats can land one ulp off and turn the std into ~1e-16, which
    a reader takes for a spread."""
    v = [float(x) for x in values]
    if not v:
        return {"mean": math.nan, "std": 0.0, "values": v}
    if max(v) - min(v) <= SAME:
        return {"mean": v[0], "std": 0.0, "values": v}
    return {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)), "values": v}


def spread(summary: dict[str, Any] | None, digits: int = 4, pm: str = "+-", what: str = "seeds") -> str:
    """The spread of a :func:`summarize` result as text for a reader, or "" when there is none.

    "" for a single run (a deterministic classifier), "(same in all 3 seeds)" when every run gave
    the same value, "+- 0.0123 (3 seeds)" otherwise, and "+- <0.0001 (3 seeds)" when the runs
    differ by less than the printed precision: a spread is shown only where seeds changed the
    result, and float noise is never printed as one.  Tolerates evaluation.json files of older
    versions (a std of 1e-16 over three identical values)."""
    if not summary:
        return ""
    values = [float(x) for x in summary.get("values") or [] if isinstance(x, (int, float))]
    if len(values) < 2:
        return ""
    if max(values) - min(values) <= SAME:
        return f"(same in all {len(values)} {what})"
    std = summary.get("std")
    std = float(std) if isinstance(std, (int, float)) else float(np.std(values, ddof=1))
    unit = 10.0**-digits
    shown = f"<{unit:.{digits}f}" if std < unit / 2 else f"{std:.{digits}f}"
    return f"{pm} {shown} ({len(values)} {what})"


def scores(y_true: Sequence[str], y_pred: Sequence[str]) -> tuple[float, float]:
    """(accuracy, macro-F1); macro-F1 averages over every label seen in y_true or y_pred."""
    from sklearn.metrics import accuracy_score, f1_score

    return float(accuracy_score(y_true, y_pred)), float(f1_score(y_true, y_pred, average="macro"))


# ---------------------------------------------------------------- logistic regression
def logreg_utility(
    train_x: np.ndarray,
    train_y: Sequence[str],
    test_x: np.ndarray,
    test_y: Sequence[str],
    max_iter: int = 2000,
) -> dict[str, Any]:
    """LogisticRegression(max_iter=2000) on frozen embeddings, fitted once: lbfgs is deterministic,
    so there is no seed to vary and one value (``runs``: 1) is the whole result."""
    from sklearn.linear_model import LogisticRegression

    from dpsynth.evaluate.fidelity import single_threaded_blas

    t0 = time.perf_counter()
    clf = LogisticRegression(max_iter=max_iter)
    with single_threaded_blas():
        clf.fit(np.asarray(train_x, dtype=np.float32), list(train_y))
        pred = clf.predict(np.asarray(test_x, dtype=np.float32))
    acc, f1 = scores(list(test_y), [str(p) for p in pred])
    return {
        "classifier": f"LogisticRegression(max_iter={max_iter}) on frozen sentence embeddings",
        "deterministic": True,
        "runs": 1,
        "accuracy": summarize([acc]),
        "macro_f1": summarize([f1]),
        "n_train": len(train_y),
        "n_test": len(test_y),
        "seconds": round(time.perf_counter() - t0, 3),
    }


# ---------------------------------------------------------------- fine-tuned encoder
@dataclass(frozen=True)
class ClassifierFinetuneConfig:
    """Fixed fine-tuning recipe, chosen before looking at any test result."""

    model: str = EMBEDDED_MINILM
    epochs: int = 3
    # A floor on optimizer steps: 3 epochs of 100 samples at batch 32 are 12 steps, which left the encoder
    # near a one-class predictor (accuracy 0.568, macro-F1 0.447 on a 400-review dev split of the pool, never
    # the test split; 100 steps: 0.652 / 0.614).  Small sets get more epochs; 6,000 samples (564 steps) do not.
    min_steps: int = 100
    lr: float = 5e-5  # encoder
    head_lr: float = 1e-3  # the freshly initialised linear head
    batch_size: int = 32
    max_length: int = 256
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    dropout: float = 0.1  # on the pooled representation, before the head
    eval_batch_size: int = 64
    threads: int | None = None  # torch CPU threads while fine-tuning (None: torch's default)

    def epochs_for(self, n_train: int) -> int:
        """The epochs trained on ``n_train`` texts: ``epochs``, raised until ``min_steps`` steps are reached."""
        steps_per_epoch = max(1, math.ceil(n_train / self.batch_size))
        return max(self.epochs, math.ceil(self.min_steps / steps_per_epoch))


def finetune_utility(
    train_texts: Sequence[str],
    train_y: Sequence[str],
    test_texts: Sequence[str],
    test_y: Sequence[str],
    seeds: Sequence[int] = (0, 1, 2),
    config: ClassifierFinetuneConfig | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Fine-tune the encoder + linear head on the training set for ``config.epochs`` epochs per seed,
    then test once.  Returns the same shape as :func:`logreg_utility`."""
    import torch

    cfg = config or ClassifierFinetuneConfig()
    if cfg.threads is None:
        return _finetune(train_texts, train_y, test_texts, test_y, seeds, cfg, progress)
    before = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _finetune(train_texts, train_y, test_texts, test_y, seeds, cfg, progress)
    finally:
        torch.set_num_threads(before)


def _finetune(
    train_texts: Sequence[str],
    train_y: Sequence[str],
    test_texts: Sequence[str],
    test_y: Sequence[str],
    seeds: Sequence[int],
    cfg: ClassifierFinetuneConfig,
    progress: Callable[[str], None] | None,
) -> dict[str, Any]:
    import torch
    from transformers import AutoModel, AutoTokenizer

    from dpsynth.embeddings import resolve_embedding_model
    from dpsynth.quiet import quiet_model_loading

    t0 = time.perf_counter()
    path = resolve_embedding_model(cfg.model)
    tok = AutoTokenizer.from_pretrained(path)
    classes = sorted(set(train_y))
    index = {c: i for i, c in enumerate(classes)}
    y_train = torch.tensor([index[y] for y in train_y], dtype=torch.long)
    train_enc = tok(list(train_texts), truncation=True, max_length=cfg.max_length)["input_ids"]
    test_enc = tok(list(test_texts), truncation=True, max_length=cfg.max_length)["input_ids"]
    test_order = np.argsort([len(ids) for ids in test_enc], kind="stable")  # length-sorted batches
    accs, f1s = [], []
    for seed in seeds:
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        with quiet_model_loading():  # no "Loading weights" bar per seed
            encoder = AutoModel.from_pretrained(path)
        head = torch.nn.Linear(encoder.config.hidden_size, len(classes))
        drop = torch.nn.Dropout(cfg.dropout)
        steps_per_epoch = math.ceil(len(train_enc) / cfg.batch_size)
        epochs = cfg.epochs_for(len(train_enc))
        total = steps_per_epoch * epochs
        warm = max(1, int(cfg.warmup_ratio * total))
        no_decay = [p for n, p in encoder.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
        decay = [p for n, p in encoder.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
        opt = torch.optim.AdamW(
            [
                {"params": decay, "lr": cfg.lr, "weight_decay": cfg.weight_decay},
                {"params": no_decay, "lr": cfg.lr, "weight_decay": 0.0},
                {"params": head.parameters(), "lr": cfg.head_lr, "weight_decay": 0.0},
            ]
        )
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _warmup_linear_decay(warm, total))
        encoder.train()
        for epoch in range(epochs):
            perm = torch.randperm(len(train_enc), generator=gen).tolist()
            run_loss = 0.0
            for b in range(0, len(perm), cfg.batch_size):
                idx = perm[b : b + cfg.batch_size]
                batch = _pad(tok, [train_enc[i] for i in idx])
                logits = head(drop(_mean_pool(encoder, batch)))
                loss = torch.nn.functional.cross_entropy(logits, y_train[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(list(encoder.parameters()) + list(head.parameters()), 1.0)
                opt.step()
                sched.step()
                run_loss += loss.item() * len(idx)
            if progress:
                progress(f"finetune seed {seed}: epoch {epoch + 1}/{epochs} loss {run_loss / len(perm):.4f}")
        encoder.eval()
        pred_idx = np.empty(len(test_enc), dtype=np.int64)
        with torch.inference_mode():
            for b in range(0, len(test_order), cfg.eval_batch_size):
                idx = test_order[b : b + cfg.eval_batch_size].tolist()
                batch = _pad(tok, [test_enc[i] for i in idx])
                pred_idx[idx] = head(_mean_pool(encoder, batch)).argmax(-1).numpy()
        acc, f1 = scores(list(test_y), [classes[i] for i in pred_idx])
        accs.append(acc)
        f1s.append(f1)
        if progress:
            progress(f"finetune seed {seed}: accuracy {acc:.4f} macro-F1 {f1:.4f}")
    return {
        "classifier": (
            f"{cfg.model} encoder + linear head, fine-tuned {epochs} epochs ("
            + (f"{cfg.epochs}, raised to reach {cfg.min_steps} steps; " if epochs > cfg.epochs else "")
            + "fixed in advance), tested after the last epoch"
        ),
        "epochs_run": epochs,
        "seeds": list(seeds),
        "deterministic": False,
        "runs": len(accs),
        "accuracy": summarize(accs),
        "macro_f1": summarize(f1s),
        "n_train": len(train_y),
        "n_test": len(test_y),
        "config": asdict(cfg),
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _warmup_linear_decay(warm: int, total: int) -> Callable[[int], float]:
    """LR factor: linear warm-up over ``warm`` steps, then linear decay to 0 at ``total``."""

    def factor(step: int) -> float:
        return min((step + 1) / warm, max(0.0, (total - step) / max(1, total - warm)))

    return factor


def _pad(tok: Any, ids: list[list[int]]) -> dict[str, Any]:
    return dict(tok.pad({"input_ids": ids}, padding=True, return_tensors="pt"))


def _mean_pool(encoder: Any, batch: dict[str, Any]) -> Any:
    out = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(out.dtype)
    return (out * mask).sum(1) / mask.sum(1).clamp(min=1.0)
