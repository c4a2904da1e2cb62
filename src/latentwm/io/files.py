"""Files the project writes, written one way: atomically (a temporary file beside the target, fsynced, renamed into
place, the folder fsynced) so a crash or a full disk leaves the old file or the new one, never half of one; and
JSON read back with an error that names the file, in the error type of the caller's concept (CacheError,
CheckpointError, ...), so the CLI prints one line instead of a JSONDecodeError traceback without a path."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from latentwm.config.base import ConfigError, LatentwmError


def read_json(
    path: str | os.PathLike,
    what: str = "JSON file",
    error: type[LatentwmError] = ConfigError,
    *,
    missing_ok: bool = False,
    expect: type | None = dict,
) -> Any:
    """The parsed contents of `path`. Malformed JSON (or not UTF-8, or not an `expect` instance: a dict unless
    told otherwise, None to accept anything) raises `error` naming the file and `what` it should hold. A missing
    file: None when missing_ok, else the OSError (which names the path)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if missing_ok:
            return None
        raise
    try:
        data = json.loads(raw)
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise error(f"{path}: malformed {what} ({e}); restore or delete it") from e
    if expect is not None and not isinstance(data, expect):
        raise error(
            f"{path}: malformed {what} (a JSON {type(data).__name__}, expected a JSON "
            f"{'object' if expect is dict else expect.__name__}); restore or delete it"
        )
    return data


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename inside `path` durable (best effort: some filesystems cannot open or fsync a folder)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temporary_name(path: Path) -> Path:
    """A name beside `path` no other writer uses (pid + random suffix), hidden, ending in .tmp."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Write `path` through a temporary file: the body writes the yielded path (any writer: np.savez, torch.save,
    a safetensors save), which is then fsynced and renamed into place. On any error the temporary file is removed,
    the old `path` is untouched, and the error propagates."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write `data` (str: UTF-8) to `path` atomically; returns the path."""
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data.encode() if isinstance(data, str) else data)
    return Path(path)


def write_json(path: str | os.PathLike, obj, indent: int = 1) -> Path:
    """Write `obj` as JSON atomically."""
    return atomic_write(path, json.dumps(obj, indent=indent))
