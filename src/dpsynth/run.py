"""The run directory: resolved config, journal of samples, votes, ledger, log, outputs.

Layout (everything here is public or DP: no private text, no pre-noise statistic)::

    config.yaml           the resolved config (what `--resume` continues)
    samples.journal.jsonl append-only journal of accepted synthetic samples
    votes/round_T.npz     released (noised) votes of round T
    ledger.json           privacy spend (privacy/ledger.py)
    rounds.json           per-round summary: weights, budgets, class shares, tokens (round_log.py)
    embeddings.npz        embedding cache of synthetic texts
    synthetic.jsonl       final output (or .csv / .parquet), written atomically
    privacy.json          the privacy report
    run.log               the log

and each method's own files, named here too (a method never joins a name onto the run directory;
tests/test_structure.py checks)::

    finetune/plan.json, finetune/label_counts.json, finetune/checkpoint.pt, adapter/   dp-finetune
    knowledgesg/client.json, knowledgesg/server_report.json, local_adapter/           KnowledgeSG client
    schema.json, schema_*.json, counts.json, sketch.npz, training.json, synthetic.npz PEARL
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import random
import secrets
import shlex
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from dpsynth.config import GENERATOR_TRANSPORT, Config, explicit_fields, load_yaml, set_dotted
from dpsynth.config_base import dump_yaml
from dpsynth.data import is_in_memory_source, local_source
from dpsynth.errors import ConfigError, DpsynthError, ResumeError
from dpsynth.io import atomic_write_json, atomic_write_text
from dpsynth.knowledgesg.protocol import ADAPTER_FILE
from dpsynth.methods.registry import names_where
from dpsynth.privacy.report import PrivacyReport
from dpsynth.resume_diff import (
    AS_BEFORE,
    RESUMABLE_DIFFS,
    absent_paths,
    as_its_version_ran,
    diff_paths,
    dotted,
    fetch_free,
)
from dpsynth.round_log import load_round_log
from dpsynth.run_hints import did_you_mean
from dpsynth.run_logging import LOGGER_NAME

# PEARL's releases, each saved to its own file (Ledger.release), so the ledger records each as soon as it is drawn
RELEASE_FILES = {
    "schema.kinds": "schema_kinds.json",
    "schema.bounds": "schema_bounds.json",
    "schema.categories": "schema_categories.json",
    "counts": "counts.json",
    "sketch": "sketch.npz",
}


LOCK_FILE = ".dpsynth.lock"  # RunDir.in_use: holds no data
STALE_TEMP_S = 60.0  # RunDir._remove_stale_temp_files: an atomic write lasts far less


class RunDir:
    def __init__(self, path: str | Path, resuming: bool = False) -> None:
        self.path = Path(path).expanduser()
        # a resumed run must find its ledger (privacy/ledger.py): set by ``synthesize``
        self.resuming = resuming

    # paths
    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def journal(self) -> Path:
        return self.path / "samples.journal.jsonl"

    @property
    def ledger(self) -> Path:
        return self.path / "ledger.json"

    @property
    def rounds(self) -> Path:
        return self.path / "rounds.json"

    @property
    def embeddings(self) -> Path:
        return self.path / "embeddings.npz"

    @property
    def privacy(self) -> Path:
        return self.path / "privacy.json"

    @property
    def log(self) -> Path:
        return self.path / "run.log"

    def votes(self, round_: int) -> Path:
        return self.path / "votes" / f"round_{round_}.npz"

    def output(self, fmt: str) -> Path:
        return self.path / f"synthetic.{fmt}"

    # dp-finetune (KnowledgeSG's client trains the same adapter)
    @property
    def finetune(self) -> Path:
        """The folder of the DP-SGD plan, the noisy counts and the checkpoint."""
        return self.path / "finetune"

    @property
    def finetune_plan(self) -> Path:
        return self.finetune / "plan.json"

    @property
    def label_counts(self) -> Path:
        return self.finetune / "label_counts.json"

    @property
    def checkpoint(self) -> Path:
        return self.finetune / "checkpoint.pt"

    @property
    def adapter(self) -> Path:
        """The folder of the DP LoRA adapter (safetensors + adapter_config.json)."""
        return self.path / "adapter"

    @property
    def adapter_weights(self) -> Path:
        return self.adapter / ADAPTER_FILE

    # KnowledgeSG's client
    @property
    def knowledgesg_state(self) -> Path:
        """The client's progress (adapter id, job id, idempotency key): what a resume continues."""
        return self.path / "knowledgesg" / "client.json"

    @property
    def server_report(self) -> Path:
        return self.path / "knowledgesg" / "server_report.json"

    @property
    def local_adapter(self) -> Path:
        return self.path / "local_adapter"

    # PEARL
    @property
    def schema(self) -> Path:
        return self.path / "schema.json"

    def release(self, key: str) -> Path:
        """The file of PEARL's release ``key`` (``RELEASE_FILES``)."""
        return self.path / RELEASE_FILES[key]

    @property
    def training(self) -> Path:
        """PEARL's training history of the generator (post-processing of the sketch)."""
        return self.path / "training.json"

    @property
    def synthetic_array(self) -> Path:
        """PEARL's output as an array (``synthetic.npz``), when the private data is one."""
        return self.path / "synthetic.npz"

    def leftovers(self) -> list[str]:
        """Files a method continues from (its ledger, journal, votes, releases, training plan, job), relative
        to this folder: in a folder without config.yaml they are another run's, never to be adopted by a new
        one.  Names only a run writes, so that an unrelated folder (with a privacy.json, say) is not refused."""
        paths = [self.ledger, self.journal, self.votes(0).parent, self.finetune_plan, self.knowledgesg_state]
        paths += [self.release(k) for k in RELEASE_FILES]
        return [str(p.relative_to(self.path)) for p in paths if p.exists()]

    def written_by_a_run(self) -> list[str]:
        """Files and folders in this folder that a run writes (outputs, logs, reports), relative to it: a new
        run would replace them, whoever made them (a user's own synthetic.csv, say, or their private data
        saved under that name)."""
        paths = [self.log, self.rounds, self.embeddings, self.privacy, self.schema, self.training]
        paths += [self.output(f) for f in ("jsonl", "csv", "parquet")] + [self.synthetic_array]
        paths += [self.finetune, self.adapter, self.local_adapter, self.knowledgesg_state.parent]
        paths += [self.path / "report.html", self.path / "evaluation.json"]
        return [str(p.relative_to(self.path)) for p in paths if p.exists()]

    # lifecycle
    def check_writable(self) -> None:
        """Refuse (one line, before any model is loaded) an --out that cannot hold a run directory.

        It must be a folder this process can write in, or a path that can be created: not a regular file,
        not below one, not inside a read-only or virtual file system such as /proc.  A probe file (or
        folder) is created and removed at once, because permission bits do not tell (root passes every
        ``os.access`` check, yet cannot create anything in /proc).
        """
        p = self.path
        if p.exists() and not p.is_dir():
            raise ConfigError(f"out: {p} is a file, not a folder; give a folder for the run (--out DIR)")
        parent = p
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise ConfigError(
                f"out: {p} is below {parent}, which is a file, not a folder; give a folder for the run (--out DIR)"
            )
        try:
            if parent == p:
                fd, probe = tempfile.mkstemp(prefix=".dpsynth-probe-", dir=p)
                os.close(fd)
                os.unlink(probe)
            else:  # what create() will do: make folders below the nearest existing one
                shutil.rmtree(tempfile.mkdtemp(prefix=".dpsynth-probe-", dir=parent))
        except OSError as exc:
            where = p if parent == p else parent
            raise ConfigError(
                f"out: cannot write the run directory {p}: {where} does not accept new files "
                f"({exc.strerror or type(exc).__name__}); choose a writable folder with --out DIR"
            ) from None

    def check(self, config: Config, resume: bool, *, private_given: bool = False) -> Config:
        """Check (without writing) that a run can start or resume here.  Returns the config to use.

        On resume the run's own config.yaml is the base: the fields set explicitly in ``config`` (CLI flags,
        a config file, or fields passed to ``Config(...)``; see ``explicit_fields``) must agree with it,
        except ``out`` (a moved run directory) and ``data.private`` when the records are passed again
        (``private_given``, or a run started from in-memory records).  Fields left unset take the stored
        values, so ``dpsynth run --resume --out DIR`` continues any run, whatever flags started it.
        """
        exists = self.config.exists()
        if resume:
            if not exists:
                left = self.leftovers() + self.written_by_a_run() if self.path.is_dir() else []
                if left:  # dropping --resume would be refused too (a new run would adopt or replace them)
                    raise ResumeError(
                        f"out: {self.path} holds files a run writes ({', '.join(left)}) but no config.yaml, so it "
                        "cannot be resumed: restore its config.yaml if it is a run, or choose another --out for a "
                        "new run"
                    )
                hint = did_you_mean(self.path)  # a mistyped path is a likelier mistake than a new run
                if not self.path.exists():
                    raise ResumeError(
                        f"out: {self.path} does not exist, so there is no run to resume{hint or ''}"
                        + ("" if hint else f"; check the path (from {Path.cwd()}), or drop --resume to start a run")
                    )
                raise ResumeError(f"out: {self.path} holds no run to resume" + (hint or "; drop --resume to start one"))
            stored_raw = self.stored_raw()
            if isinstance(stored_raw.get("data"), dict) and "private" in stored_raw["data"]:
                # a relative path recorded by an older version: the same file when it exists from here
                stored_raw["data"]["private"] = local_source(stored_raw["data"]["private"])
            stored = self.stored_config(stored_raw)
            given = explicit_fields(config)
            if given.get("data.label_type") == "auto":
                given.pop("data.label_type")  # auto asks for the decision the run made and recorded at its start
            if private_given:
                given.pop("data.private", None)  # synthesize(private=...) overrides it anyway
            elif "data.private" in given:
                given["data.private"] = local_source(given["data.private"])
            merged_raw = copy.deepcopy(stored_raw)
            for key, value in given.items():
                set_dotted(merged_raw, key, value)
            merged = Config.model_validate(merged_raw)
            diffs = diff_paths(fetch_free(stored.model_dump()), fetch_free(merged.model_dump())) - RESUMABLE_DIFFS
            if is_in_memory_source(stored.data.private):
                diffs.discard("data.private")  # the records are passed again, as a file this time
            elif "data.private" in diffs and _moved(stored.data.private, merged.data.private):
                self.refuse_private_inside(merged.data.private)  # config.yaml will name it (record_resumable)
                diffs.discard("data.private")
                logging.getLogger(LOGGER_NAME).warning(
                    "data.private: %s no longer exists; the run continues on %s, which must hold the same "
                    "records (the privacy spent so far was on them)",
                    stored.data.private,
                    merged.data.private,
                )
            if diffs:
                may = ""
                if any(d.startswith("generators") for d in diffs):
                    may = f" (of the generators a resume may change only {', '.join(GENERATOR_TRANSPORT)})"
                if "n_synthetic" in diffs and merged.n_synthetic > stored.n_synthetic:
                    extra = merged.n_synthetic - stored.n_synthetic
                    may += (
                        f" (n_synthetic {stored.n_synthetic} at its start: `dpsynth sample --run {self.path} --n "
                        f"{extra}` adds {extra} samples after the run finishes, at no privacy cost)"
                    )
                raise ResumeError(
                    f"out: {self.path} was started with other values of {', '.join(sorted(diffs))} (see its "
                    f"config.yaml){may}; resume without those flags/fields or with the stored values, or choose "
                    "a new --out for a new run"
                )
            now = merged.model_dump(mode="json")
            newer = sorted(
                k
                for k in absent_paths(stored_raw, now, merged.method) - set(given)
                if not (k in AS_BEFORE and dotted(now, k) == AS_BEFORE[k])
            )
            if newer:
                logging.getLogger(LOGGER_NAME).warning(
                    "%s: config.yaml predates the setting(s) %s; the resumed part of the run uses %s, which "
                    "may differ from what its first part did (start a new --out for a run made one way)",
                    self.path,
                    ", ".join(newer),
                    ", ".join(f"{k} = {dotted(now, k)!r}" for k in newer),
                )
            return merged.model_copy(update={"out": str(self.path)})
        finished: Config | None = None
        with contextlib.suppress(DpsynthError):  # a damaged config.yaml: the message below without the method
            finished = Config.model_validate(self.stored_raw()) if exists else None
        if finished is not None and self.is_complete(finished):
            more = ""
            if finished.method in names_where("prompting"):
                more = f"; `dpsynth sample --run {self.path} --n N` adds N samples to it (no privacy cost)"
            raise ResumeError(
                f"out: {self.path} already holds a finished run (--resume would do nothing){more}; "
                "choose another --out for a new run"
            )
        if exists:
            raise ResumeError(
                f"out: {self.path} already holds a run; pass --resume to continue it or choose another --out"
            )
        left = self.leftovers()
        if left:
            raise ResumeError(
                f"out: {self.path} holds files of an earlier run ({', '.join(left)}) but not its config.yaml; a new "
                "run would take them (samples, votes, releases, ledger) as its own, and without config.yaml it "
                "cannot be resumed: choose another --out, or remove those files"
            )
        taken = self.written_by_a_run()
        if taken:
            raise ResumeError(
                f"out: {self.path} holds {', '.join(taken)}, which a run writes: a new run would replace "
                "them; choose another --out (a new or empty folder)"
            )
        private = local_source(config.data.private)  # so that --resume finds it from anywhere
        self.refuse_private_inside(private)
        if private == config.data.private:  # left as set: a method may tell whether the user set it
            return config
        return config.model_copy(update={"data": config.data.model_copy(update={"private": private})})

    def refuse_private_inside(self, private: Any) -> None:
        """Refuse private records kept inside this run directory, which is meant to be shared (it holds no
        private data): ``private`` is data.private as ``local_source`` resolves it, or a path passed to
        ``synthesize(private=...)``."""
        if isinstance(private, (str, Path)):
            path = Path(local_source(str(private)))
            if path.is_absolute() and _inside(path, self.path):
                raise ConfigError(
                    f"data.private: {path} is inside the run directory {self.path}, which is meant to be shared "
                    "(it holds no private data); keep the private records outside it, or choose another --out"
                )

    def record_resumable(self, config: Config) -> None:
        """Write the settings this resume changed (``RESUMABLE_DIFFS``, the generators' ``GENERATOR_TRANSPORT``)
        into config.yaml, so that a later plain ``--resume`` keeps them: a client that moved to another server
        must not go back to the old one."""
        raw, new = self.stored_raw(), config.model_dump(mode="json")
        old = Config.model_validate(raw).model_dump(mode="json")  # a setting config.yaml predates: its default
        changed = [k for k in sorted(RESUMABLE_DIFFS - {"out"}) if dotted(old, k) != dotted(new, k)]
        if _moved(old["data"]["private"], new["data"]["private"]):  # evaluate's held-out check reads it
            changed.append("data.private")
        for key in changed:
            set_dotted(raw, key, dotted(new, key))
        gens = raw.get("generators")
        if isinstance(gens, list) and len(gens) == len(new["generators"]):
            for i, (was, now) in enumerate(zip(old["generators"], new["generators"], strict=True)):
                moved = {k: now[k] for k in GENERATOR_TRANSPORT if was[k] != now[k]}
                if moved and isinstance(gens[i], dict):
                    gens[i].update(moved)
                    changed.append(f"generators.{i}")
        if changed:
            atomic_write_text(self.config, dump_config_yaml(Config.model_validate(raw)))

    def stored_raw(self) -> dict[str, Any]:
        """The run's config.yaml as a mapping (a damaged file is a one-line ResumeError)."""
        try:
            raw = load_yaml(self.config.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ResumeError(
                f"{self.config}: cannot be read ({type(exc).__name__}); the run cannot be resumed, start a new --out"
            ) from None
        if not isinstance(raw, dict):
            raise ResumeError(f"{self.config}: is not a config mapping; the run cannot be resumed, start a new --out")
        return as_its_version_ran(raw)

    def stored_config(self, raw: dict[str, Any] | None = None) -> Config:
        """The run's config.yaml (or ``raw``, read from it) as a Config.  Why not ``Config.model_validate``: a
        file edited by hand or damaged said only what was wrong ("::: unknown field"), not in which file."""
        try:
            return Config.model_validate(self.stored_raw() if raw is None else raw)
        except ConfigError as exc:
            raise ResumeError(f"{self.config}: {exc}; restore the file, or start a new --out") from None

    def is_complete(self, config: Config) -> bool:
        """True when the run finished: its output and privacy.json (written last) both exist, for this
        n_synthetic (``dpsynth sample`` raises it in config.yaml, making a finished run unfinished)."""
        if not (self.privacy.exists() and self.output(config.output_format).exists()):
            return False
        made = self.finished_n_synthetic()  # None: not recorded, or unreadable (the resume path reports it)
        return made is None or made == config.n_synthetic

    def stopped_sample(self) -> str | None:
        """What to say when a ``dpsynth sample`` on this finished run was stopped before it finished: its
        config.yaml asks for more samples than privacy.json says were made (None: not so, or unreadable).
        ``evaluate`` and ``report`` would otherwise score or show the part written so far as the run."""
        made = self.finished_n_synthetic() if self.privacy.exists() else None
        try:
            wanted = self.stored_raw().get("n_synthetic")
        except DpsynthError:
            return None
        if made is None or not isinstance(wanted, int) or isinstance(wanted, bool) or wanted <= made:
            return None
        return (  # the lock is not asked: a sample still running and one stopped read alike from here
            f"{self.path}: `dpsynth sample` asked for {wanted} samples and the run finished with {made} (that "
            f"sample is still running, or was stopped); if it no longer runs, finish it with `dpsynth run "
            f"--resume --out {shlex.quote(str(self.path))}`"
        )

    def finished_n_synthetic(self) -> int | None:
        """The n_synthetic of the last finished call (privacy.json's record), None when none is readable."""
        try:
            made = PrivacyReport.load(self.privacy).public_inputs.get("n_synthetic")
        except (OSError, ValueError):
            return None
        return made if isinstance(made, int) and not isinstance(made, bool) else None

    @contextlib.contextmanager
    def in_use(self) -> Iterator[None]:
        """Hold this run directory for this process while it writes the run (a run, a resume, ``dpsynth
        sample``); a second process is refused at once.

        Why: each process reads the ledger once and draws a release it finds unrecorded, so two resumes of one
        run at a time both drew every remaining vote (twice the noisy releases the ledger records: epsilon 6
        spent, 4 reported) and appended to one journal.  The lock is an OS lock on ``.dpsynth.lock``
        (``filelock``): it ends with the process, so a killed run never leaves the folder locked.  Re-entrant
        within a process (``sample`` holds it, then resumes the run).
        """
        from filelock import FileLock, Timeout

        self.path.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.path / LOCK_FILE, timeout=0, is_singleton=True)
        try:
            lock.acquire()
        except Timeout:
            raise ResumeError(
                f"out: {self.path} is in use by another dpsynth process (a run, a resume or `dpsynth sample`); "
                "wait for it to finish or stop it, then try again"
            ) from None
        try:
            self._remove_stale_temp_files()
            yield
        finally:
            lock.release()

    def _remove_stale_temp_files(self) -> None:
        """Temporary files of atomic writes a killed process left (``.privacy.json.<hex>.tmp``): they hold only
        what the run released, but nothing else would ever remove them.  Only old ones: a process that does
        not hold the run (``dpsynth evaluate``, ``report``) may be writing one now."""
        now = time.time()
        for tmp in [*self.path.glob(".*.tmp"), *self.path.glob("*/.*.tmp")]:
            with contextlib.suppress(OSError):
                if now - tmp.stat().st_mtime > STALE_TEMP_S:
                    tmp.unlink()

    def create(self, config: Config) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.config, dump_config_yaml(config))
        except OSError as exc:  # check_writable passed, so something changed in between
            raise ConfigError(
                f"out: cannot create the run directory {self.path} ({exc.strerror or type(exc).__name__}); "
                "choose a writable folder with --out DIR"
            ) from None

    def save_rounds(self, rounds: list[dict[str, Any]]) -> None:
        atomic_write_json(self.rounds, rounds)

    def load_rounds(self) -> list[dict[str, Any]]:
        """rounds.json's entries, [] before the first round is saved (``round_log.load_round_log``)."""
        return load_round_log(self.rounds)


# the run directory's paths relative to it (``IN_RUN_DIR.adapter`` is ``adapter``): for the reports that name them
IN_RUN_DIR = RunDir(".")


def run_rng(seed: int | None, made: int) -> random.Random:
    """The randomness of a run's generation requests: templates, the examples shown, sampling seeds.

    A fresh run starts from ``seed``.  A resumed or extended run, which holds ``made`` samples already,
    starts from (seed, made): restarting from ``seed`` would replay the previous call's draws, so a
    seeded backend would write the same texts again (WASP's duplicate check then discards them at the
    cost of the tokens; DP fine-tuning's sampling would release them twice).  An unseeded run draws its
    start from the OS's secure source.  A call that kept nothing (``made`` unchanged) replays its draws,
    which is harmless: none of their texts is in the journal to be written twice."""
    if seed is None:
        return random.Random(secrets.randbits(64))
    return random.Random(seed if made == 0 else f"{seed}:{made}")


def _inside(path: Path, folder: Path) -> bool:
    """Is ``path`` (absolute, links resolved) ``folder`` or below it, once links are resolved?"""
    try:
        return Path(path).is_relative_to(Path(os.path.realpath(folder.expanduser())))
    except (OSError, ValueError):
        return False


def dump_config_yaml(config: Config) -> str:
    return dump_yaml(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def _moved(stored: Any, given: Any) -> bool:
    """A private file or folder moved with its project: the recorded path is gone, the given one exists.

    Like ``out`` for a moved run directory, the new place is then accepted; any other difference is refused,
    since a path that still exists and another that is given name two sources."""
    if not (isinstance(stored, str) and isinstance(given, str)):
        return False
    return os.path.isabs(stored) and not Path(stored).exists() and Path(given).exists()
