"""Private records as tokens: the control code (or chat template) prefix, the text, eos; the per-record loss."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dpsynth.config import FinetuneConfig
from dpsynth.errors import ConfigError


@dataclass(frozen=True)
class Encoded:
    ids: list[list[int]]  # control code + text + eos, at most max_length
    n_prefix: list[int]  # control-code tokens of each (not in the loss)
    n_truncated: int
    truncated_idx: list[int]


class RecordFormat:
    """How a (label, text) record becomes tokens: a label-dependent prefix (not in the loss) + the text + eos.

    * plain (the paper): ``control_code`` with its trailing whitespace moved to the text, so the text
      tokenises as it would in running prose (``label: positive | text:`` + `` Great film``);
    * chat (instruct models): the tokenizer's chat template with ``instruction`` as the user turn,
      the text is the assistant's reply and the end-of-turn token its eos.  A small instruct model
      writes on-topic text from step 0 this way; with the plain code it starts from unrelated text.

    Generation prompts are exactly the training prefixes, so sampling is conditioned on the label.
    """

    def __init__(self, tok: Any, ft: FinetuneConfig, task: str = "text") -> None:
        self.tok = tok
        self.ft = ft
        self.task = task
        has_template = bool(getattr(tok, "chat_template", None))
        if ft.prompt_format == "chat" and not has_template:
            raise ConfigError(
                f"finetune.prompt_format: chat needs a tokenizer with a chat template and {ft.model} has none; "
                "use plain or auto"
            )
        self.mode = "chat" if ft.prompt_format == "chat" or (ft.prompt_format == "auto" and has_template) else "plain"
        code = ft.control_code.format(label="{label}", task=task)
        self._sep = " " if code != code.rstrip() else ""
        self._cache: dict[str, list[int]] = {}

    def prefix_text(self, label_name: str) -> str:
        if self.mode == "chat":
            msg = self.ft.instruction.format(label=label_name, task=self.task).strip()
            text = self.tok.apply_chat_template(
                [{"role": "user", "content": msg}], add_generation_prompt=True, tokenize=False
            )
            return str(text)
        return self.ft.control_code.format(label=label_name, task=self.task).rstrip()

    def prefix(self, label_name: str) -> list[int]:
        if label_name not in self._cache:
            text = self.prefix_text(label_name)
            special = self.mode == "plain"  # the chat template already holds its special tokens
            self._cache[label_name] = list(self.tok(text, add_special_tokens=special)["input_ids"])
        return self._cache[label_name]

    def body(self, texts: Sequence[str]) -> list[list[int]]:
        lead = self._sep if self.mode == "plain" else ""
        # split_special_tokens: a record that holds the text "<eos>" or "<|im_end|>" is text, not a control
        # token (it would end the sequence or open a chat turn in the middle of training)
        # verbose=False: transformers would log a record longer than model_max_length with its exact token
        # count (encode cuts it to max_length anyway), and the length of a private record is private
        enc = self.tok(
            [lead + t.strip() for t in texts], add_special_tokens=False, split_special_tokens=True, verbose=False
        )
        return [list(x) for x in enc["input_ids"]]

    def check_room(self, label_names: Sequence[str], max_length: int) -> None:
        """Refuse a max_length that leaves no text after some declared label's prompt.  Asked of every
        declared label before any record is read: asked only of the labels the records carry, the answer
        (does the run start?) would depend on whether one record with that label is in the data."""
        for name in label_names:
            pre = self.prefix(name)
            if max_length - len(pre) - 1 < 1:
                raise ConfigError(
                    f"finetune.max_length: {max_length} tokens leave no room for text after the prompt of label "
                    f"{name!r} ({len(pre)} tokens); raise max_length or shorten finetune.control_code / instruction"
                )

    def encode(self, texts: Sequence[str], label_names: Sequence[str], max_length: int) -> Encoded:
        """``prefix + text + eos`` per record; texts longer than the budget are cut (the eos is kept)."""
        ids, n_prefix, truncated = [], [], []
        eos = self.tok.eos_token_id
        for i, (name, text_ids) in enumerate(zip(label_names, self.body(texts), strict=True)):
            pre = self.prefix(name)
            room = max_length - len(pre) - 1  # >= 1: check_room ran on every declared label first
            if room < 1:
                self.check_room([name], max_length)
            if len(text_ids) > room:
                truncated.append(i)
                text_ids = text_ids[:room]
            ids.append([*pre, *text_ids, eos])
            n_prefix.append(len(pre))
        return Encoded(ids, n_prefix, len(truncated), truncated)


class RecordDataset:
    """Fixed-shape (input_ids, labels) pairs padded to the longest record (Opacus builds empty batches
    from the first item's shape); ``collate`` trims each batch to its own longest record."""

    def __init__(self, enc: Encoded, pad_id: int) -> None:
        import torch

        width = max(len(x) for x in enc.ids)
        self.input_ids = torch.full((len(enc.ids), width), pad_id, dtype=torch.long)
        self.labels = torch.full((len(enc.ids), width), -100, dtype=torch.long)
        for i, (ids, npre) in enumerate(zip(enc.ids, enc.n_prefix, strict=True)):
            t = torch.tensor(ids, dtype=torch.long)
            self.input_ids[i, : len(ids)] = t
            self.labels[i, npre : len(ids)] = t[npre:]
        self.lengths = [len(x) for x in enc.ids]

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        return self.input_ids[i], self.labels[i]


def collate(batch: list[tuple[Any, Any]]) -> tuple[Any, Any]:
    import torch

    ids = torch.stack([b[0] for b in batch])
    labels = torch.stack([b[1] for b in batch])
    real = (labels != -100).any(0).nonzero()
    width = int(real.max()) + 1 if len(real) else 1
    return ids[:, :width], labels[:, :width]


def per_sample_loss(logits: Any, labels: Any) -> Any:
    """Mean next-token loss of each record over its own text tokens: shape [batch].

    The batch loss is the *mean of these* (never a token-level mean over the batch, which would
    make one record's gradient depend on the other records' lengths and void the clipping bound).
    """
    import torch

    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    tok_loss = torch.nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1), reduction="none", ignore_index=-100
    ).view(shift_labels.shape)
    mask = (shift_labels != -100).float()
    return (tok_loss * mask).sum(1) / mask.sum(1).clamp(min=1.0)
