"""Atomic file writes.

A run killed at any instant must leave every file either old or new, never
half-written: write to a temporary file in the same directory, fsync, then
``os.replace`` (atomic on POSIX and Windows).
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import secrets
import stat
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``path`` whole or not at all.  A new file gets the permissions a plain ``open`` gives (mode
    0666 less the process's umask, applied by the kernel at creation: mkstemp's 0600 made a report meant to
    be shared readable by its writer alone); a file that is replaced keeps its own."""
    path = Path(path)
    if path.is_dir():  # os.replace would name the temporary file in its error
        raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = _create_temp(path)
    except OSError as exc:  # the error names the file the user asked for, not the temporary one
        raise type(exc)(exc.errno, exc.strerror, str(path)) from None
    try:
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno is not None:
            raise type(exc)(exc.errno, exc.strerror, str(path)) from None
        raise


def _create_temp(path: Path) -> tuple[int, str]:
    """A new, exclusive temporary file beside ``path`` (same file system, so ``os.replace`` is atomic)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{path.parent}: no free temporary file name for {path.name}")


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def strict_json(obj: Any) -> Any:
    """``obj`` with every infinite or NaN float written as the string "inf", "-inf" or "nan".

    Python's json writes ``Infinity`` and ``NaN``, which are not JSON: jq, JavaScript and most other readers
    refuse the whole file (privacy.json of an ``--epsilon inf`` run).  Python reads the strings back with
    ``float()`` and pydantic's float fields accept them, so dpsynth's own readers see the same values.
    """
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


JSON_WORDS = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def from_json_word(value: Any) -> Any:
    """A float field's value as read back: the words ``strict_json`` writes become floats again; anything
    else is left for the field's own validation (a reader that knows the field is a number may call it)."""
    return JSON_WORDS.get(value, value) if isinstance(value, str) else value


def from_strict_json(obj: Any, verbatim: Collection[str] = ()) -> Any:
    """``strict_json`` undone: every ``"inf"``, ``"-inf"`` and ``"nan"`` word a float again, so a file read
    back holds what was written (privacy.json of an ``--epsilon inf`` run: epsilon a float, not a string).
    The values under a key in ``verbatim`` are the user's own text (a label may be called "nan") and stay
    as written."""
    if isinstance(obj, dict):
        return {k: v if k in verbatim else from_strict_json(v, verbatim) for k, v in obj.items()}
    if isinstance(obj, list):
        return [from_strict_json(v, verbatim) for v in obj]
    return from_json_word(obj)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """``obj`` as indented, strict JSON (``strict_json``), written atomically."""
    text = json.dumps(strict_json(obj), indent=2, sort_keys=False, default=str, allow_nan=False)
    atomic_write_text(path, text + "\n")


def append_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Append rows and fsync: a crash loses at most the last, partial line (see read_jsonl_tolerant).

    A torn tail left by an earlier crash is repaired first (``repair_jsonl_tail``): appending after a
    fragment would glue it to the next record and make the journal unreadable.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if not payload:
        return
    repair_jsonl_tail(path)
    with open(path, "a", encoding="utf-8") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())


def repair_jsonl_tail(path: str | Path) -> bool:
    """Make a journal end with a complete line; True if it had to be repaired.

    A process killed mid-append leaves a last line without its newline.  If that line is a whole JSON
    object it is kept (the newline is added), as ``read_jsonl_tolerant`` keeps it; otherwise it is a
    fragment and is cut off.  Each repair is one ``ftruncate`` or one one-byte append, fsynced: a crash
    during the repair leaves the file either as it was or repaired, and never loses a complete line.
    """
    path = Path(path)
    try:
        f = open(path, "r+b")  # noqa: SIM115 - closed below; "r+" so a missing file is not created
    except FileNotFoundError:
        return False
    with f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return False
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return False
        f.seek(0)
        data = f.read()
        cut = data.rfind(b"\n") + 1  # 0 when the whole file is one torn line
        if _json_object(data[cut:]) is not None:
            f.seek(0, os.SEEK_END)
            f.write(b"\n")
        else:
            f.truncate(cut)
        f.flush()
        os.fsync(f.fileno())
    return True


def _json_object(raw: bytes | str) -> dict[str, Any] | None:
    try:
        obj = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def read_jsonl_tolerant(path: str | Path) -> list[dict[str, Any]]:
    """Read an append-only JSONL journal, ignoring a torn final line left by a crash.

    A line in the middle that is a fragment glued to a whole record (what appending after a torn tail
    produced before ``append_jsonl`` repaired tails) yields that record; any other damaged line is a
    one-line ``ResumeError`` naming the file and line (never its content).
    """
    from dpsynth.errors import ResumeError

    path = Path(path)
    if not path.exists():
        return []
    rows: list[dict[str, Any]] = []
    # "\n" only: str.splitlines() also splits at U+2028, U+0085 and the like, which json.dumps(ensure_ascii=False)
    # leaves inside a record's strings
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        obj = _json_object(line)
        if obj is None and i < len(lines) - 1:
            obj = _glued_record(line)
            if obj is None:
                raise ResumeError(
                    f"{path}: line {i + 1} is damaged (not a JSON object); remove that line to resume, or "
                    "start a new --out"
                )
        if obj is None:
            break  # torn last write
        rows.append(obj)
    return rows


def _glued_record(line: str) -> dict[str, Any] | None:
    """The whole record at the end of ``fragment + record`` (a torn write followed by an append), if any."""
    start = line.find("{", 1)
    while start != -1:
        obj = _json_object(line[start:])
        if obj is not None:
            return obj
        start = line.find("{", start + 1)
    return None
