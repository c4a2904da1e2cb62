"""Checkpoint files: the one loader every checkpoint file goes through, fsynced writes, and one-file checkpoints.

`load_file` reads with `torch.load(weights_only=True)` only (unpickling a crafted file runs arbitrary code) and
turns every failure into a CheckpointError naming the file.

A one-file checkpoint (`checkpoints/best.pt`, train/best.py) is a step checkpoint's `state.pt` in a single file,
written atomically (a temporary file in the same folder, fsynced, renamed over the old one): there is no manifest
beside it, so it carries its own `digest` — a SHA-256 over every tensor's bytes, shape and dtype and every plain
value, key by key — and `load_state_file` refuses a file whose contents no longer match it. torch.load alone would
not notice: a flipped byte inside a tensor's data loads silently (PyTorch's zip reader skips the CRC check).
"""

from __future__ import annotations

import errno
import hashlib
import os
import pickle  # only for its exception type: files are loaded with torch.load(weights_only=True)
import re
from pathlib import Path

import torch

from latentwm.config.base import LatentwmError
from latentwm.io.files import atomic_path


class CheckpointError(LatentwmError, RuntimeError):
    """A checkpoint is missing, incomplete or corrupt; the message names the directory."""


def load_file(path: Path, map_location="cpu"):
    """torch.load with weights_only=True: a file holding anything but tensors and plain data is refused, never
    unpickled (unpickling a crafted file runs arbitrary code)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        why = f" (it references {found.group(1)})" if found else ""
        raise CheckpointError(
            f"{path}: holds objects other than tensors and plain data (numbers, strings, lists, "
            f"dicts){why}; refusing to unpickle it, which could run code. Checkpoints written "
            "before latentwm loaded them with weights_only=True cannot be loaded"
        ) from e
    except (RuntimeError, EOFError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable checkpoint file ({e})") from e


def save_file(obj, path: Path) -> None:
    with open(path, "wb") as f:
        try:
            torch.save(obj, f)
        except RuntimeError as e:  # torch's zip writer reports a failed write (disk full) as "unexpected pos ..."
            if "unexpected pos" not in str(e) and "PytorchStreamWriter failed" not in str(e):
                raise
            raise OSError(errno.ENOSPC, f"writing {path} failed ({str(e).splitlines()[0][:120]}): disk full?") from e
        f.flush()
        os.fsync(f.fileno())


def state_digest(state: dict) -> str:
    """SHA-256 of a plain state (what `checkpoint.plain_state` returns), independent of how it is serialized."""
    h = hashlib.sha256()

    def walk(obj, key: str) -> None:
        if isinstance(obj, torch.Tensor):
            t = obj.detach().cpu().contiguous().reshape(-1)
            h.update(f"{key}:{t.dtype}:{tuple(obj.shape)}:".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(obj, dict):
            h.update(f"{key}:{type(obj).__name__}{len(obj)}:".encode())
            for k, v in obj.items():
                walk(v, f"{key}/{k!r}")
        elif isinstance(obj, (list, tuple)):
            h.update(f"{key}:{type(obj).__name__}{len(obj)}:".encode())
            for i, v in enumerate(obj):
                walk(v, f"{key}/{i}")
        else:
            h.update(f"{key}={obj!r};".encode())

    walk({k: v for k, v in state.items() if k != "digest"}, "")
    return h.hexdigest()


def save_state_file(path: str | os.PathLike, state: dict) -> Path:
    """Write a plain state (tensors and plain data only) with its digest to `path`, atomically: readers see the old
    file or the new one, never a part. A failed write (disk full) removes its temporary file and raises
    CheckpointError; the file already there is untouched. Temporary files of `path` left by a crashed writer are
    removed first: callers hold the run's lock (io/lock.py), so no other process writes `path` meanwhile."""
    path = Path(path)
    for old in path.parent.glob(f".{path.name}.*.tmp"):  # a crashed writer's (callers hold the run's lock)
        old.unlink(missing_ok=True)
    try:
        with atomic_path(path) as tmp:
            save_file({**state, "digest": state_digest(state)}, tmp)
    except OSError as e:
        raise CheckpointError(
            f"could not write {path}: {e}. The partial file was removed; the previous "
            f"{path.name}, if any, is intact (free disk space?)"
        ) from e
    return path


def load_state_file(path: str | os.PathLike, map_location="cpu") -> dict:
    """The state saved by `save_state_file` (its "digest" checked and removed; "path" added). Raises CheckpointError
    naming the file when it is missing, unreadable, or its contents do not match its digest."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    state = load_file(path, map_location)
    if not isinstance(state, dict) or "digest" not in state:
        raise CheckpointError(
            f"{path}: not a one-file checkpoint (no digest); step checkpoints are directories (checkpoints/step_N)"
        )
    if state.pop("digest") != state_digest(state):
        raise CheckpointError(
            f"{path}: contents do not match the digest saved with them (corrupt); delete it or restore it from a copy"
        )
    state["path"] = path
    return state


__all__ = [
    "CheckpointError",
    "load_file",
    "load_state_file",
    "save_file",
    "save_state_file",
    "state_digest",
]
