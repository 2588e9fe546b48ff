"""Hugging Face transformers on a GPU (or CPU): batched ``generate`` with left padding.

For users with a GPU and a model folder or hub id.  ``transformers`` and ``torch``
are imported only when this backend is built.  Requests are grouped by their
sampling settings and run ``batch_size`` at a time; chat requests go through the
tokenizer's chat template.  The model may also be a GGUF file or one of the
embedded names (transformers dequantises it; needs the ``gguf`` package).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dpsynth.config import GeneratorConfig
from dpsynth.errors import GeneratorError
from dpsynth.generators.base import EMPTY_COMPLETION, Completion, GenerationRequest, ProgressCallback
from dpsynth.lm.device import pick_device
from dpsynth.lm.loading import model_source, one_line
from dpsynth.quiet import quiet_model_loading


class TransformersGenerator:
    """A causal LM from a local folder, a hub id or a GGUF file, run with ``model.generate``."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        self.name = cfg.name
        self.cfg = cfg
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError:
            raise GeneratorError(
                f"generators[{cfg.name}].backend: transformers needs `pip install transformers accelerate`"
            ) from None
        self._torch = torch
        self.device = pick_device(cfg.device, field=f"generators[{cfg.name}].device", mps=True, error=GeneratorError)
        source, kwargs = self._source(cfg)
        if self.device.startswith("cuda"):
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            dtype = torch.float32
        try:
            with quiet_model_loading(gguf="gguf_file" in kwargs):  # no "Loading weights" bar on the console
                tok = AutoTokenizer.from_pretrained(source, **kwargs)
                model: Any
                try:
                    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
                except TypeError:  # transformers < 4.56 calls it torch_dtype
                    model = AutoModelForCausalLM.from_pretrained(source, torch_dtype=dtype, **kwargs)
        except (OSError, ValueError, ImportError) as exc:
            raise GeneratorError(
                f"generators[{cfg.name}].model: transformers could not load {cfg.model}: {one_line(exc)}"
            ) from None
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
        self.tokenizer: Any = tok
        self.model: Any = model.to(self.device).eval()

    @staticmethod
    def _source(cfg: GeneratorConfig) -> tuple[str, dict[str, Any]]:
        """Folder or hub id as is; a GGUF file (or embedded name) via ``gguf_file``; a missing path refused."""
        return model_source(cfg.model, f"generators[{cfg.name}].model")

    def _prompt_text(self, req: GenerationRequest) -> str:
        if req.messages is None:
            return req.prompt or ""
        msgs = [{"role": m.role, "content": m.content} for m in req.messages]
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            return str(text)
        # no template: plain transcript
        return "\n".join(f"{m['role']}: {m['content']}" for m in msgs) + "\nassistant:"

    def _run(self, reqs: list[GenerationRequest]) -> list[Completion]:
        torch = self._torch
        first = reqs[0]
        texts = [self._prompt_text(r) for r in reqs]
        # the chat template already holds the special tokens
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not first.is_chat).to(
            self.device
        )
        gen_kwargs: dict[str, Any] = {
            "max_new_tokens": first.max_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if first.temperature > 0:
            gen_kwargs.update(do_sample=True, temperature=first.temperature, top_p=first.top_p)
        else:
            gen_kwargs.update(do_sample=False)
        if first.stop:
            gen_kwargs.update(stop_strings=list(first.stop), tokenizer=self.tokenizer)
        if first.seed is not None:
            torch.manual_seed(first.seed)
        with torch.inference_mode():
            out = self.model.generate(**enc, **gen_kwargs)
        n_in = enc["input_ids"].shape[1]
        new = out[:, n_in:]
        ends = {t for t in (self.tokenizer.eos_token_id, self.tokenizer.pad_token_id) if t is not None}
        results = []
        for i, r in enumerate(reqs):
            ids = new[i].tolist()
            n = len(ids)
            for j, t in enumerate(ids):
                if t in ends:
                    n = j
                    break
            text = self.tokenizer.decode(ids[:n], skip_special_tokens=True)
            truncated = n >= first.max_tokens  # no end token within the limit
            for s in r.stop:  # generate() keeps the stop string itself; OpenAI servers drop it
                k = text.find(s)
                if k >= 0:
                    text = text[:k]
                    truncated = False
            prompt_tokens = int(enc["attention_mask"][i].sum())
            if text.strip():
                results.append(
                    Completion(text=text, completion_tokens=n, prompt_tokens=prompt_tokens, truncated=(truncated,))
                )
            else:
                results.append(
                    Completion(text="", completion_tokens=n, prompt_tokens=prompt_tokens, error=EMPTY_COMPLETION)
                )
        return results

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        on_completion: ProgressCallback | None = None,
    ) -> list[Completion]:
        if not requests:
            return []
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, r in enumerate(requests):
            key = (r.is_chat, r.max_tokens, r.temperature, r.top_p, r.stop, r.seed)
            groups.setdefault(key, []).append(i)
        results: list[Completion | None] = [None] * len(requests)
        bs = self.cfg.batch_size
        for idx in groups.values():
            for k in range(0, len(idx), bs):
                chunk = idx[k : k + bs]
                try:
                    outs = self._run([requests[i] for i in chunk])
                except (RuntimeError, ValueError) as exc:  # OOM, bad input: fail this batch only
                    outs = [Completion(text="", error=f"transformers: {one_line(exc)}")] * len(chunk)
                    if self.device.startswith("cuda"):
                        self._torch.cuda.empty_cache()
                for i, c in zip(chunk, outs, strict=True):
                    results[i] = c
                    if on_completion is not None:
                        on_completion(c)
        out = [c if c is not None else Completion(text="", error="not run") for c in results]
        if all(c.error for c in out):
            raise GeneratorError(f"generators[{self.name}]: all {len(out)} requests failed, e.g. {out[0].error}")
        return out

    def close(self) -> None:
        self.model = None
        if self.device.startswith("cuda"):
            self._torch.cuda.empty_cache()

    def __repr__(self) -> str:
        return f"TransformersGenerator(name={self.name!r}, model={self.cfg.model!r}, device={self.device!r})"
