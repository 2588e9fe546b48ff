"""The embeddings ``evaluate`` scores with: public test texts through an on-disk cache, synthetic texts
through the run's own cache where it matches."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dpsynth.embeddings import EMBEDDED_MINILM, Embedder, EmbeddingCache, SentenceTransformerEmbedder
from dpsynth.privacy.private_data import text_key
from dpsynth.run import RunDir

if TYPE_CHECKING:
    from dpsynth.evaluate.inputs import LabelledTexts

log = logging.getLogger("dpsynth")

# the max_seq_length a run embeds with (api.py builds SentenceTransformerEmbedder with its default)
_RUN_MAX_SEQ_LENGTH = 256


def eval_cache_dir() -> Path:
    base = os.environ.get("DPSYNTH_CACHE_DIR") or "~/.cache/dpsynth"
    return Path(base).expanduser() / "eval"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:80] or "model"


def embed_test(
    texts: Sequence[str],
    embedder: Embedder,
    cache_dir: str | Path | None = None,
    private_keys: frozenset[str] = frozenset(),
) -> np.ndarray:
    """Embed public test texts through the on-disk cache (one .npz per model and max_seq_length).

    ``private_keys``: the ``text_key`` of the run's private texts.  A test set may share a few texts with
    the private records (evaluate notes it and goes on); those are embedded in memory and never enter the
    cache, which outlives the evaluation and is shared by every evaluation on the machine: an embedding of
    a private record is private data, and the cache's text hashes would tell that the text was evaluated.
    """
    seq = getattr(embedder, "max_seq_length", None)
    base = Path(cache_dir).expanduser() if cache_dir is not None else eval_cache_dir()
    path = base / f"{_slug(embedder.name)}{f'-seq{seq}' if seq else ''}.npz"
    cache = EmbeddingCache(path, embedder.name)
    texts = list(texts)
    private = [i for i, t in enumerate(texts) if text_key(t) in private_keys] if private_keys else []
    if private:
        public = sorted(set(range(len(texts))) - set(private))
        x_private = np.asarray(embedder.encode([texts[i] for i in private]), dtype=np.float32)
        emb = np.empty((len(texts), x_private.shape[1]), dtype=np.float32)
        emb[private] = x_private
        if public:
            emb[public] = cache.embed(embedder, [texts[i] for i in public])
    else:
        emb = cache.embed(embedder, texts)
    dropped = cache.drop([texts[i] for i in private])  # cached by a version before this rule
    if cache.misses or dropped:
        try:
            cache.save()
        except OSError as exc:  # a read-only home must not break evaluation
            log.warning("could not write the test embedding cache %s (%s)", path, exc.strerror)
    return emb


class _ThroughCache:
    """An Embedder that answers from a read-only cache first (the run's own ``embeddings.npz``)."""

    def __init__(self, embedder: Embedder, cache: EmbeddingCache) -> None:
        self.name = embedder.name
        self._embedder = embedder
        self.cache = cache

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.cache.embed(self._embedder, texts)


def embed_synthetic(
    data: LabelledTexts, embedder: Embedder, cache_path: str | Path | None = None
) -> tuple[np.ndarray, dict[str, int]]:
    """Synthetic embeddings.  Looks up, in order: ``cache_path`` (an .npz cache this function also
    updates), the run directory's own ``embeddings.npz`` (read-only, only when the run used the
    same model and max_seq_length), then embeds.  Returns (embeddings, hit counts)."""
    source: Embedder = embedder
    run_cache = None
    seq = getattr(embedder, "max_seq_length", _RUN_MAX_SEQ_LENGTH)
    run_embeddings = None if data.run_dir is None else RunDir(data.run_dir).embeddings
    if run_embeddings is not None and run_embeddings.exists() and seq == _RUN_MAX_SEQ_LENGTH:
        try:
            run_cache = EmbeddingCache(run_embeddings, embedder.name)
        except Exception:  # noqa: BLE001 - a damaged cache only costs time
            run_cache = None
        if run_cache is not None:
            source = _ThroughCache(embedder, run_cache)  # never saved: the run directory's cache is the run's
    if cache_path is not None:
        own = EmbeddingCache(cache_path, embedder.name)
        emb = own.embed(source, list(data.texts))
        if own.misses:
            own.save()
        own_hits = own.hits
    else:
        emb = source.encode(list(data.texts))
        own_hits = 0
    return emb, {"synthetic_from_cache": own_hits, "synthetic_from_run_cache": run_cache.hits if run_cache else 0}


def default_embedder(model: str = EMBEDDED_MINILM) -> Embedder:
    return SentenceTransformerEmbedder(model)
