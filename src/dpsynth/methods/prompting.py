"""The runner of the prompting methods, WASP and its presets Aug-PE and zero-shot (docs/wasp.md).

``api.make_method`` builds it (registry path ``dpsynth.methods.prompting:PromptingMethod``) with the
config's defaults resolved (``methods.base.resolve_defaults``) and, on a resume, whether the votes are
already released (then it reads no private data).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from dpsynth.config import Config
from dpsynth.embeddings import Embedder, SentenceTransformerEmbedder, check_embedding_model
from dpsynth.errors import ConfigError
from dpsynth.generators.base import Generator
from dpsynth.methods.base import load_run_private
from dpsynth.methods.wasp import WaspRun, check_run
from dpsynth.privacy.private_data import PRIVATE_TEXT_DOMAIN, PrivateData
from dpsynth.privacy.report import privacy_report
from dpsynth.progress import ProgressReporter
from dpsynth.run import RunDir

log = logging.getLogger("dpsynth")


class PromptingMethod:
    """WASP and its presets (Aug-PE, zero-shot): generators + embedder + DP vote."""

    def __init__(
        self,
        config: Config,
        private: Any,
        generators: Mapping[str, Generator] | None,
        embedder: Embedder | None,
    ) -> None:
        self.config = config
        self._private_source = private
        self._injected = generators
        self.embedder = embedder
        self.data: PrivateData | None = None
        self.gens: dict[str, Generator] = {}
        self._owned: list[Generator] = []
        # False for a resume after the last vote (expansion, ``extend``): post-processing reads no private data
        self.reads_private = config.uses_private_data
        self.resume_dir: RunDir | None = None  # the run being resumed (api.make_method sets it)

    def prepare(self, load_models: bool = True) -> None:
        """Load and check the private data, check the run (label judge, noise plan), load the models.

        Any failure closes the generators built so far: an in-process llama.cpp server left running
        would keep the process from exiting.
        """
        try:
            self._prepare(load_models)
        except BaseException:
            self.close()
            raise

    def _prepare(self, load_models: bool) -> None:
        config = self.config
        if self.reads_private:
            self.data = load_run_private(config, self._private_source)
        if self._injected is not None:
            _check_injected(self._injected)
        # what WaspRun would refuse inside the run directory, refused before it exists
        names = list(self._injected) if self._injected is not None else [gc.name for gc in config.generators]
        check_run(config, names, self.resume_dir)
        if self._injected is None:  # a wrong model path or URL fails in a second, not after a model loads
            _check_generators(config, everything=not load_models)
        if not load_models:
            if self.reads_private:
                check_embedding_model(config.embedding_model)
            return
        if self.embedder is None:
            embedder = SentenceTransformerEmbedder(config.embedding_model, config.embedding_batch_size)
            if self.reads_private:
                embedder.load()  # a bad embedding_model fails now, not after the run directory exists
            self.embedder = embedder
        if self._injected is not None:
            self.gens = dict(self._injected)
            return
        from dpsynth.generators import build_generator

        for gc in config.generators:
            self.gens[gc.name] = build_generator(gc)
            self._owned.append(self.gens[gc.name])

    def run(self, run_dir: RunDir, reporter: ProgressReporter) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        config = self.config
        embedder = self.embedder or SentenceTransformerEmbedder(config.embedding_model, config.embedding_batch_size)
        runner = WaspRun(config, run_dir, self.gens, embedder, self.data, reporter)
        self.data = None  # the runner keeps only private embeddings, in memory
        samples = runner.run()
        assert config.data.labels is not None
        rows = [s.as_row(config.data.labels) for s in samples]
        # what the expansion made, not what it was asked for: a generator that keeps repeating itself leaves it short
        expansion = sum(1 for s in samples if s.round == runner.rounds_total + 1)
        # epsilon = inf draws no noise: the vote histograms in votes/ and rounds.json are the exact ones, so the
        # report must not call them noisy nor list them among what is never written
        private = math.isfinite(runner.ledger.epsilon)
        votes = "the noisy votes only" if private else "the exact votes (released without noise)"
        wasp = config.effective_wasp()
        keywords = " and the keywords of those pools" if wasp.variation == "keywords" else ""
        report = privacy_report(
            runner.ledger,
            method=config.method,
            public_inputs={
                "labels": config.data.labels,
                "task": config.data.task,
                "generators": list(self.gens),
                "embedding_model": config.embedding_model,
                "n_synthetic": config.n_synthetic,
            },
            post_processing=[
                f"generator weights, class shares and good/bad example pools{keywords} from {votes}",
                "all prompts contain only public text (task, label names) and synthetic samples",
                *(["writer names in prompts from dpsynth's fixed public list"] if wasp.writers else []),
                *(
                    [f"a label judge ({wasp.label_judge}) reads each new sample and the label names, nothing private"]
                    if wasp.label_judge
                    else []
                ),
                *(
                    [
                        f"{expansion} of the {len(rows)} samples (round {runner.rounds_total + 1}) were generated "
                        "after the last vote from its released results only"
                    ]
                    if expansion > 0
                    else []
                ),
            ],
            never_written="private texts, private embeddings" + (", pre-noise vote histograms" if private else ""),
            released_exactly=(
                ""
                if private
                else "the vote histograms of every round, computed from the private embeddings and labels "
                f"without noise (votes/round_*.npz, and the vote masses, weights, class shares{keywords} in "
                "rounds.json)"
            ),
            domain=PRIVATE_TEXT_DOMAIN if runner.ledger.planned else (),
        )
        return rows, report

    def close(self) -> None:
        """Close every generator this method built, even when one of them fails to close."""
        owned, self._owned = self._owned, []
        for g in owned:
            try:
                g.close()
            except Exception as exc:  # noqa: BLE001 - the others must still be closed
                log.warning("closing generator %s failed: %s: %s", getattr(g, "name", "?"), type(exc).__name__, exc)


def _check_generators(config: Config, everything: bool) -> None:
    """Before the embedding model loads: an openai entry's URL and key, a llama.cpp model given as a file or
    near an embedded name.  ``everything`` (``--check``): every entry as ``build_generator`` will resolve it."""
    from dpsynth.generators import check_generator
    from dpsynth.generators.models import is_embedded, near_embedded_name

    for gc in config.generators:
        named_a_file = not is_embedded(gc.model) and (_looks_like_path(gc.model) or near_embedded_name(gc.model))
        if everything or gc.backend == "openai" or (gc.backend == "llamacpp" and named_a_file):
            check_generator(gc)


def _looks_like_path(model: str) -> bool:
    """A model given as a file (``/models/x.gguf``, ``x.gguf``).  Other names not near an embedded one are
    left to the backend (tests and plug-ins build generators of their own under any name)."""
    return model.lower().endswith(".gguf") or "/" in model or "\\" in model


def _check_injected(generators: Any) -> None:
    """``synthesize(generators=...)`` checked before the run directory exists: an empty mapping failed later
    with "every generator returned unusable text", an object without ``generate`` with an AttributeError."""
    if not isinstance(generators, Mapping) or not generators:
        raise ConfigError("generators=: give a non-empty mapping of name -> generator (an object with generate)")
    for name, g in generators.items():
        if not callable(getattr(g, "generate", None)):  # the one method a run calls on an injected generator
            raise ConfigError(
                f"generators=: {name!r} is a {type(g).__name__}, not a generator; it needs "
                "generate(requests, on_completion=None) returning one Completion per request"
            )
