"""``--method knowledgesg`` (``dpsynth client run``): the client side of KnowledgeSG.

Wang et al., "KnowledgeSG: Privacy-Preserving Synthetic Text Generation with Knowledge Distillation from
Server", EMNLP 2024.  The client DP-fine-tunes the base model with LoRA on its private
instruction/response pairs (the dp-finetune method's training, unchanged), uploads *only the adapter*,
and downloads the synthetic pairs the server made: instructions sampled from the DP adapter, filtered
and answered by the server's professional model.  The only private-data mechanism is DP-SGD; the
upload, the server's work and the optional local fine-tune on the returned data are post-processing.

Resumable: the DP-SGD checkpoint (dp_finetune), then ``knowledgesg/client.json`` records the adapter
id, the job id and the idempotency key before each step, so a killed client neither re-trains, nor
re-uploads, nor creates a second job.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dpsynth.config import Config
from dpsynth.data import EMBEDDED_MEDMCQA
from dpsynth.errors import ConfigError, DpsynthError
from dpsynth.extras import require
from dpsynth.io import atomic_write_json
from dpsynth.knowledgesg.client import ServerClient, ServerError
from dpsynth.knowledgesg.protocol import JobSpec, format_record
from dpsynth.privacy.private_data import load_qa_pairs
from dpsynth.privacy.report import DOMAIN_NOTE
from dpsynth.progress import ProgressReporter
from dpsynth.run import IN_RUN_DIR, RunDir

log = logging.getLogger("dpsynth.knowledgesg")

TASK = "question and answer"
READY_WAIT_S = 600.0  # how long to wait for a server that is still loading its models
PREFLIGHT_RETRIES = 2  # a server that does not answer before the run starts: say so in seconds, not minutes
# the server accepts LoRA weights of linear layers only; peft's adapter for these layers carries base weights
NOT_LINEAR = frozenset({"embed_tokens", "lm_head", "wte", "wpe", "embed_in", "embed_out", "word_embeddings"})
# the job format's fields (protocol.JobSpec), by the config setting that fills them (``_spec``)
SPEC_SETTINGS = {
    "base_model": "finetune.model",
    "lora.r": "finetune.lora_r",
    "lora.alpha": "finetune.lora_alpha",
    "lora.target_modules": "finetune.target_modules",
    "prompt.control_code": "finetune.control_code",
    "prompt.instruction": "finetune.instruction",
    "prompt.label": "knowledgesg.domain",
    "domain": "knowledgesg.domain",
    "n_samples": "n_synthetic",
    "oversample": "knowledgesg.oversample",
    "max_new_tokens": "finetune.max_new_tokens",
    "temperature": "finetune.temperature",
    "top_p": "finetune.top_p",
}


class KnowledgeSGClientMethod:
    """``MethodRunner`` for ``--method knowledgesg`` (see methods/base.py)."""

    def __init__(self, config: Config, private: Any = None) -> None:
        from dpsynth.methods.dp_finetune import DpFinetuneMethod

        require("the KnowledgeSG client (--method knowledgesg)", "finetune")  # it DP-fine-tunes locally
        ks = config.knowledgesg
        if not ks.server:
            raise ConfigError("knowledgesg.server: give the server URL, e.g. --server http://127.0.0.1:8088")
        token = os.environ.get(ks.token_env, "").strip()
        if not token:
            raise ConfigError(
                f"knowledgesg.token_env: the environment variable {ks.token_env} holding this client's token is "
                "not set (the server admin creates tokens with `dpsynth server token CLIENT_ID`)"
            )
        self.config = config
        source = private if private is not None else config.data.private
        if private is None and (source == EMBEDDED_MEDMCQA or "private" not in config.data.model_fields_set):
            # the embedded default for this method is medical QA (MedMCQA), not IMDb
            source = None  # load_qa_pairs draws config.data.n_private pairs from the embedded pool
            where = EMBEDDED_MEDMCQA
        else:
            where = str(source) if isinstance(source, str | Path) else "dataset"
        if where == EMBEDDED_MEDMCQA:  # config.yaml records the records used: a resume draws the same set
            self.config = config = config.model_copy(
                update={"data": config.data.model_copy(update={"private": EMBEDDED_MEDMCQA})}
            )
        # the formatted pairs go unread to dp-finetune's loader (privacy/private_data.py)
        self._records = load_qa_pairs(
            source,
            ks.instruction_column,
            ks.response_column,
            config.data.encoding,
            where,
            ks.domain,
            m_private=config.data.n_private,
            seed=config.data.seed,
        )
        # The DP training is dp-finetune's, on "Question: ...\nAnswer: ..." texts with one public label (the
        # domain) as the control code; uniform label shares, so only the noisy total count is released (it
        # sets the DP-SGD sample rate).
        inner = config.model_copy(
            update={
                "method": "dp-finetune",
                "data": config.data.model_copy(
                    update={
                        "private": where,
                        "text_column": "text",
                        "label_column": "label",
                        "labels": {ks.domain: ks.domain},
                        "task": TASK,
                    }
                ),
                "finetune": config.finetune.model_copy(update={"label_proportions": "uniform"}),
            }
        )
        # built last: synthesize closes only a method that was built, so nothing before may leave it open
        self.client = ServerClient(ks.server, token, timeout_s=ks.request_timeout_s, max_retries=ks.max_retries)
        self.inner = DpFinetuneMethod(inner, self._records)
        self.professional = "?"

    # -------------------------------------------------------------- prepare
    def prepare(self, load_models: bool = True) -> None:
        info = self._server_ready()  # before any private-data work: a dead server must not cost budget
        model = self.config.finetune.model
        if info.base_model != model:
            raise ConfigError(
                f"finetune.model: {model!r} but the server at {self.config.knowledgesg.server} holds "
                f"{info.base_model!r}; fine-tune the server's base model"
            )
        if self.config.n_synthetic > info.max_samples:
            raise ConfigError(f"n_synthetic: the server allows at most {info.max_samples} records per job")
        self.professional = info.professional
        self._check_job_settings()
        self.inner.prepare(load_models)
        self._records = None
        self._check_adapter_size(self.inner.adapter_bytes, info.max_adapter_bytes)

    @staticmethod
    def _check_adapter_size(size: int, limit: int) -> None:
        """The adapter the server would refuse as too large (HTTP 413) must stop the run before DP-SGD too:
        its size is known once the LoRA layers are built (its trainable weights; a weightless copy for
        ``--check``), before any release."""
        if size > limit:
            raise ConfigError(
                f"finetune.lora_r / finetune.target_modules: the adapter would be about {_size(size)} and "
                f"the server accepts at most {_size(limit)}; use a smaller rank or fewer target modules"
            )

    def _check_job_settings(self) -> None:
        """The server's job format (``protocol.JobSpec``) is stricter than the config (e.g. LoRA rank at most
        256, temperature at most 5, a domain of at most 100 characters), and the job is created only after
        DP-SGD: a setting it refuses must stop the run here, before any budget is spent, or fixing it would
        take a new run and a second spend on the same records."""
        bad = sorted(set(self.config.finetune.target_modules) & NOT_LINEAR)
        if bad:
            raise ConfigError(
                f"finetune.target_modules: {bad} are embedding or output layers; the server accepts LoRA on "
                "linear layers only (an adapter of these layers carries base-model weights), e.g. q_proj, v_proj"
            )
        try:
            self._spec({"adapter_id": "0" * 32, "idempotency_key": "settings-check"})
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            raise ConfigError(
                f"{SPEC_SETTINGS.get(loc, loc)}: {err['msg']} for the KnowledgeSG server's jobs; change it before "
                "the run (the job is created after the DP training)"
            ) from None

    def _server_ready(self) -> Any:
        t0 = time.monotonic()
        while True:
            try:
                info = self.client.info(retries=PREFLIGHT_RETRIES)
            except ServerError as exc:
                raise ServerError(f"knowledgesg.server: {exc}") from None
            if info.ready:
                return info
            if time.monotonic() - t0 > READY_WAIT_S:
                raise ServerError(f"knowledgesg.server: {self.client.url} is still loading its models; try later")
            time.sleep(2.0)

    # -------------------------------------------------------------- run
    def run(self, run_dir: RunDir, reporter: ProgressReporter) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        ks = self.config.knowledgesg
        state_path = run_dir.knowledgesg_state
        state_path.parent.mkdir(parents=True, exist_ok=True)
        state: dict[str, Any] = json.loads(state_path.read_text(encoding="utf-8")) if state_path.exists() else {}

        server_job = ("server job", self.config.n_synthetic, 0)  # its samples, counted from the job's first status
        ledger, shares = self.inner.train_adapter(  # the only use of private data
            run_dir, reporter, later=lambda _: [server_job], units="steps + samples"
        )

        if "job_id" in state and self._job_lost(state["job_id"]):
            # a new job from the saved DP adapter: post-processing, no new training and no privacy cost
            for key in ("job_id", "idempotency_key"):
                state.pop(key, None)
            atomic_write_json(state_path, state)
        if "adapter_id" not in state:
            self._upload(run_dir, state)
        if "job_id" not in state:
            state.setdefault("idempotency_key", secrets.token_hex(12))
            atomic_write_json(state_path, state)  # the key is saved first: a retried create returns the same job
            try:
                job = self.client.create_job(self._spec(state))
            except ServerError as exc:
                if exc.status != 404:
                    raise
                # a server that lost the adapter, or another server (--server changed on resume): the saved DP
                # adapter goes up again, with a new key (the old key's job, if any, has no adapter to run)
                log.warning("the server does not hold adapter %s; uploading the saved one", state["adapter_id"])
                self._upload(run_dir, state)
                state["idempotency_key"] = secrets.token_hex(12)
                atomic_write_json(state_path, state)
                job = self.client.create_job(self._spec(state))
            state["job_id"] = job.job_id
            atomic_write_json(state_path, state)
            log.info("server job %s created", job.job_id)
        status = self._wait(state["job_id"], reporter)
        if status.state == "failed":
            raise ServerError(
                f"server job {status.job_id} failed: {status.error}; run again with --resume to create a new job "
                "from the saved DP adapter (no new training, no privacy cost)"
            )
        text = self.client.dataset(state["job_id"], self._spec(state))
        server_report = self.client.report(state["job_id"])
        atomic_write_json(run_dir.server_report, server_report)
        rows = _parse_dataset(text, ks.domain, f"knowledgesg:{self.professional}")
        if len(rows) < self.config.n_synthetic:
            log.warning(
                "the server returned %d of %d records (the rest were filtered out)", len(rows), self.config.n_synthetic
            )
        if ks.local_finetune and rows:
            self._local_finetune(run_dir, rows, reporter)
        report = self.inner.report(ledger, shares)
        plan_note = report.get("post_processing", [])[:1]  # how DP-SGD's plan and average use the noisy count
        report.update(self._report_extra(state, server_report))
        report["post_processing"] = [*plan_note, *report["post_processing"]]
        return rows, report

    def _upload(self, run_dir: RunDir, state: dict[str, Any]) -> None:
        receipt = self.client.upload_adapter(run_dir.adapter_weights.read_bytes())
        state.update(adapter_id=receipt.adapter_id, adapter_sha256=receipt.sha256, adapter_bytes=receipt.bytes)
        atomic_write_json(run_dir.knowledgesg_state, state)
        log.info("uploaded the DP adapter (%d bytes) as %s", receipt.bytes, receipt.adapter_id)

    def _job_lost(self, job_id: str) -> bool:
        """On resume: did an earlier attempt's job fail, or is it gone from the server (its state wiped)?
        Then the run creates a new one from the saved adapter instead of stopping on it at every resume."""
        try:
            state = self.client.status(job_id).state
        except ServerError as exc:
            if exc.status != 404:
                raise
            log.warning("server job %s is not on the server any more; creating a new one", job_id)
            return True
        if state == "failed":
            log.warning("server job %s failed in an earlier attempt; creating a new one", job_id)
        return state == "failed"

    def _spec(self, state: dict[str, Any]) -> JobSpec:
        ft, ks = self.config.finetune, self.config.knowledgesg
        # validated from one mapping, so a refusal names the whole path (lora.r, prompt.label): SPEC_SETTINGS
        return JobSpec.model_validate(
            {
                "adapter_id": state["adapter_id"],
                "base_model": ft.model,
                "lora": {"r": ft.lora_r, "alpha": ft.lora_alpha, "target_modules": list(ft.target_modules)},
                "prompt": {
                    "prompt_format": ft.prompt_format,
                    "control_code": ft.control_code,
                    "instruction": ft.instruction,
                    "label": ks.domain,
                    "task": TASK,
                },
                "domain": ks.domain,
                "n_samples": self.config.n_synthetic,
                "oversample": ks.oversample,
                "filter": ks.filter,
                "max_new_tokens": ft.max_new_tokens,
                "whole_sentences": ft.whole_sentences,
                "temperature": ft.temperature,
                "top_p": ft.top_p,
                # the server takes seeds in 0..2**32-1: any seed maps there, and is checked here, before training
                "seed": None if self.config.seed is None else self.config.seed % 2**32,
                "idempotency_key": state["idempotency_key"],
            }
        )

    def _wait(self, job_id: str, reporter: ProgressReporter) -> Any:
        ks = self.config.knowledgesg
        t0 = time.monotonic()
        reporter.start("server job", total=self.config.n_synthetic)
        while True:
            status = self.client.status(job_id)
            p = status.progress
            kept = min(p.get("kept", 0), self.config.n_synthetic)
            if self.inner.run_phases is not None:  # first: the phase's update writes the line
                over = status.state in ("done", "failed")  # the job may keep fewer than asked for
                self.inner.run_phases.update("server job", self.config.n_synthetic if over else kept)
            reporter.update(
                "server job",
                kept,
                self.config.n_synthetic,
                f"{status.state}: {status.stage} " + " ".join(f"{k}={v}" for k, v in p.items()),
            )
            if status.state in ("done", "failed"):
                return status
            if time.monotonic() - t0 > ks.job_timeout_s:
                raise ServerError(
                    f"server job {job_id} not done after {ks.job_timeout_s:g} s (state {status.state}); "
                    "run again with --resume to keep waiting"
                )
            time.sleep(ks.poll_interval_s)

    def _local_finetune(self, run_dir: RunDir, rows: list[dict[str, Any]], reporter: ProgressReporter) -> None:
        """Non-DP LoRA fine-tune of a fresh copy of the base model on the returned (public) pairs."""
        from dpsynth.lm import finetune_public

        texts = [format_record(r["instruction"], r["response"]) for r in rows]
        finetune_public(
            self.config.finetune,
            texts,
            label=self.config.knowledgesg.domain,
            task=TASK,
            epochs=self.config.knowledgesg.local_epochs,
            out_dir=run_dir.local_adapter,
            reporter=reporter,
            seed=self.config.seed,
        )

    def _report_extra(self, state: dict[str, Any], server_report: dict[str, Any]) -> dict[str, Any]:
        ks = self.config.knowledgesg
        return {
            "method": "knowledgesg",
            "domain": {
                "checks": [
                    f"every record has a non-empty {ks.instruction_column!r} and {ks.response_column!r}",
                    *[c for c in self.inner.domain() if "data.labels" not in c and "non-empty text" not in c],
                ],
                "note": DOMAIN_NOTE,
            },
            "post_processing": [
                f"the DP LoRA adapter ({IN_RUN_DIR.adapter.as_posix()}/) is uploaded to the server; nothing else "
                "derived from private data is",
                "the server samples instructions from the DP adapter with the public control code, its professional "
                f"model ({self.professional}) filters and answers them",
                f"{IN_RUN_DIR.local_adapter.as_posix()}/ (if present): non-DP LoRA fine-tune on the returned "
                "synthetic pairs only",
            ],
            "sent_to_server": {
                "adapter": {
                    "file": IN_RUN_DIR.adapter_weights.as_posix(),
                    "sha256": state.get("adapter_sha256"),
                    "bytes": state.get("adapter_bytes"),
                },
                "job_spec": "public parameters only (base model, LoRA shape, control code, domain, counts)",
                "server": ks.server,
            },
            "server_job": {
                "job_id": state.get("job_id"),
                "report": IN_RUN_DIR.server_report.as_posix(),
                "returned": server_report.get("n_returned"),
            },
        }

    def close(self) -> None:
        self.inner.close()
        self.client.close()


def _parse_dataset(text: str, domain: str, generator: str) -> list[dict[str, Any]]:
    rows = []
    for n, line in enumerate(text.split("\n"), 1):  # not at U+2028 inside a record
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            q, a = str(r["instruction"]).strip(), str(r["response"]).strip()
        except (ValueError, KeyError, TypeError):
            raise DpsynthError(f"server dataset: line {n} is not a JSON object with instruction and response") from None
        if q and a:
            rows.append({"instruction": q, "response": a, "label": domain, "generator": generator, "round": 0})
    return rows


def _size(n_bytes: int) -> str:
    """A size for a message: MB with one decimal, KB below a tenth of a MB (not "0 MB")."""
    return f"{n_bytes / 2**20:.1f} MB" if n_bytes >= 2**20 / 10 else f"{max(1, round(n_bytes / 2**10))} KB"
