"""The one-file export format: a world model's weights and its facts in a single .safetensors file.

Written by `latentwm export` (train/export.py) from any checkpoint (full or sharded), read by `load_world_model`,
so `latentwm eval` / `plan` run on one device without the run folder, the optimizer state or DCP.

Layout: the weights under their state-dict names; the metadata (strings only, a safetensors rule) holds
- "format": EXPORT_FORMAT;
- "state": JSON of the checkpoint's facts (config, data_stats, encoder, cache_info, step, ...), a tensor among them
  written as {"__tensor__": "state/<i>"} and stored as that tensor;
- "weights": "ema" or "model", which weights these are;
- "digest": `state_file.state_digest` of weights + facts. safetensors checks the header against the file size
  (a truncated file is refused) but not the data, so a flipped byte would load silently without it.
safetensors never unpickles: a crafted file cannot run code, it can only fail these checks.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from latentwm.engine.state_file import CheckpointError, state_digest
from latentwm.io.files import atomic_write

EXPORT_FORMAT = "latentwm-export/1"
_STATE_PREFIX = "state/"


def is_export(path: str | os.PathLike) -> bool:
    return Path(path).suffix == ".safetensors"


def _to_json(obj, tensors: dict, where: str):
    """obj with every tensor moved into `tensors` (replaced by a reference); anything JSON cannot hold is refused
    naming its key."""
    if isinstance(obj, torch.Tensor):
        name = f"{_STATE_PREFIX}{len(tensors)}"
        tensors[name] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": name}
    if isinstance(obj, dict):
        bad = [k for k in obj if not isinstance(k, str)]
        if bad:
            raise CheckpointError(f"cannot export {where}: key {bad[0]!r} is not a string")
        return {k: _to_json(v, tensors, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_json(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    raise CheckpointError(
        f"cannot export {where} of type {type(obj).__name__}: an export holds tensors, numbers, "
        "strings, lists and dicts"
    )


def _from_json(obj, tensors: dict, path: Path):
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            if obj["__tensor__"] not in tensors:
                raise CheckpointError(
                    f"{path}: damaged export: its facts reference tensor {obj['__tensor__']!r}, "
                    "which the file does not hold"
                )
            return tensors[obj["__tensor__"]]
        return {k: _from_json(v, tensors, path) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_from_json(v, tensors, path) for v in obj]
    return obj


def _digest(weights: dict, state: dict) -> str:
    """state_digest with the weights in name order: safetensors stores (and returns) tensors sorted by name."""
    return state_digest({"weights": dict(sorted(weights.items())), "state": state})


def write_export(path: str | os.PathLike, weights: dict[str, torch.Tensor], state: dict, which: str) -> Path:
    """Atomically write `weights` (a state dict) and the plain facts `state` to `path` (.safetensors): a temporary
    file in the same folder, fsynced, renamed over any old one. which: "ema" or "model"."""
    from safetensors.torch import save

    path = Path(path)
    if not is_export(path):
        raise CheckpointError(f"export path {path} must end in .safetensors")
    clash = [k for k in weights if k.startswith(_STATE_PREFIX)]
    if clash:
        raise CheckpointError(f"cannot export: weight name {clash[0]!r} collides with the facts' prefix")
    tensors: dict[str, torch.Tensor] = {}
    facts = _to_json(state, tensors, "state")
    weights = {k: v.detach().cpu().contiguous().clone() for k, v in weights.items()}  # no shared storage
    meta = {
        "format": EXPORT_FORMAT,
        "state": json.dumps(facts),
        "weights": which,
        "digest": _digest(weights, _from_json(facts, tensors, path)),
    }
    return atomic_write(path, save({**weights, **tensors}, metadata=meta))


def read_export(path: str | os.PathLike, device="cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """(weights, facts) of an export; facts["weights"] says "ema" or "model". Raises CheckpointError (one line,
    naming the file) for a file that is missing, truncated, not an export, or whose contents fail the digest."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            if meta.get("format") != EXPORT_FORMAT:
                raise CheckpointError(
                    f"{path}: not a latentwm export (metadata format {meta.get('format')!r}, "
                    f"expected {EXPORT_FORMAT!r}); write one with `latentwm export`"
                )
            everything = {k: f.get_tensor(k) for k in f.keys()}
        facts = json.loads(meta["state"])
        which, digest = str(meta["weights"]), str(meta["digest"])
    except CheckpointError:
        raise
    except (OSError, SafetensorError, ValueError, KeyError) as e:
        raise CheckpointError(f"{path}: unreadable export ({type(e).__name__}: {str(e)[:200]})") from e
    tensors = {k: v for k, v in everything.items() if k.startswith(_STATE_PREFIX)}
    weights = {k: v for k, v in everything.items() if not k.startswith(_STATE_PREFIX)}
    state = _from_json(facts, tensors, path)
    if not isinstance(state, dict) or "config" not in state:
        raise CheckpointError(f"{path}: damaged export: its facts hold no config")
    if _digest(weights, state) != digest:
        raise CheckpointError(f"{path}: export does not match its digest (corrupt)")
    weights = {k: v.to(device) for k, v in weights.items()}
    return weights, {**state, "weights": which}


__all__ = ["EXPORT_FORMAT", "is_export", "read_export", "write_export"]
