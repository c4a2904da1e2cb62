"""Sharded checkpoints with torch.distributed.checkpoint (DCP): FSDP2's model, EMA and optimizer state, each rank
writing and reading only its own shards.

Why: a full-state checkpoint under FSDP2 gathers every parameter, EMA weight and Adam moment on rank 0 — at 1B+
parameters that is slow (one process serializes everything) and needs the whole state in one process's memory.
With DCP every rank writes the shards it holds, in parallel (`dcp/__<rank>_<i>.distcp`), and rank 0 a small
`dcp/.metadata` mapping every tensor's global shape to its pieces; loading reads the pieces each rank needs for *its*
layout, so a checkpoint saved at world size 2 loads at world size 1 (or 4) — DCP reshards.

The step directory around `dcp/` (state.pt with the plain state, rng_rank{r}.pt, manifest.json) and its atomic
publication are checkpoint.py's; state.pt records `"dcp": [names]`, the entries that live in `dcp/`.
The same functions load into an unsharded model (one process, no process group): DCP then reads every piece.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.distributed.checkpoint.api import CheckpointException

from latentwm.engine.state_file import CheckpointError

DCP_DIR = "dcp"


@contextlib.contextmanager
def _quiet_single_process():
    """DCP warns on every single-process save/load ("assuming the intent is to ... in a single process"); here one
    process is intended (a world of one, export, load_world_model), so the warning would only be noise."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        yield


def sharded_state(
    models: dict[str, nn.Module], opt: torch.optim.Optimizer | None = None, opt_model: str = "model"
) -> dict:
    """{name: model state dict (DTensor shards under FSDP2, no gather)} for each of `models`, plus "optimizer" (the
    optimizer of `models[opt_model]`, keyed by parameter names so it reshards): what `dcp.save` writes. A
    collective under FSDP2: every rank calls it."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    out = {name: get_model_state_dict(m) for name, m in models.items()}
    if opt is not None:
        out["optimizer"] = get_optimizer_state_dict(models[opt_model], opt)
    return out


def save_sharded(state: dict, directory: Path) -> None:
    """Write `state` (from `sharded_state`) into `directory` (created): every rank its own shards, collectively."""
    import torch.distributed as tdist
    import torch.distributed.checkpoint as dcp

    alone = not (tdist.is_available() and tdist.is_initialized())
    with _quiet_single_process():
        dcp.save(state, checkpoint_id=str(directory), no_dist=alone)


def load_sharded(
    path: str | Path,
    models: dict[str, nn.Module],
    opt: torch.optim.Optimizer | None = None,
    opt_model: str = "model",
    no_dist: bool = False,
) -> None:
    """Load the entries `models` (and "optimizer" when `opt` is given) of the checkpoint at `path` (a step directory
    holding dcp/) into the live objects, whatever their sharding (FSDP2 at any world size, or a plain module).

    Every rank calls it under FSDP2. Raises CheckpointError naming the directory when the DCP data is missing or
    unreadable, or does not fit these objects (another model size). no_dist: this process alone reads (no
    collective even when a process group exists)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    where = Path(path) / DCP_DIR
    if not (where / ".metadata").is_file():
        raise CheckpointError(f"checkpoint {path}: sharded state {where}/.metadata is missing")
    # templates in this process's layout: DCP fills them in place, reading only the pieces each rank needs
    target = {name: get_model_state_dict(m) for name, m in models.items()}
    if opt is not None:
        target["optimizer"] = get_optimizer_state_dict(models[opt_model], opt)
    try:
        with _quiet_single_process():
            dcp.load(target, checkpoint_id=str(where), no_dist=no_dist)
    except (Exception, CheckpointException) as e:  # the latter is a BaseException wrapping each rank's failure
        raise CheckpointError(f"checkpoint {path}: cannot read its sharded state ({_first_failure(e)})") from e
    for name, m in models.items():
        set_model_state_dict(m, target[name])
    if opt is not None:
        set_optimizer_state_dict(models[opt_model], opt, target["optimizer"])


def _first_failure(e: BaseException) -> str:
    """One line on why DCP failed: the first rank's own exception, not the wrapper's traceback dump."""
    if isinstance(e, CheckpointException) and e.failures:
        e = next(iter(e.failures.values()))[0]
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300] if text else ''}"


def load_sharded_weights(path: str | Path, model: nn.Module, name: str = "ema") -> None:
    """One set of weights (`name`: "ema" or "model") of a sharded checkpoint into `model` (one device, no process
    group): what `load_world_model` and `latentwm export` use."""
    load_sharded(path, {name: model}, no_dist=True)


__all__ = ["DCP_DIR", "load_sharded", "load_sharded_weights", "save_sharded", "sharded_state"]
