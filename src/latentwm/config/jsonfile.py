"""Reading a JSON file the project wrote (cache.json, an index, plan.json, a probe's metadata, ...): a malformed one
is an error that names the file, in the error type of the caller's concept (CacheError, CheckpointError, ...), so
the CLI prints one line instead of a JSONDecodeError traceback without a path."""

from __future__ import annotations

import json
import os
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


def write_json(path: str | os.PathLike, obj, indent: int = 1) -> Path:
    """Write `obj` as JSON atomically (a temporary file, fsynced, renamed into place): a crash leaves the old file
    or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        fh.write(json.dumps(obj, indent=indent))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


__all__ = ["read_json", "write_json"]
