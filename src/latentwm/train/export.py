"""`latentwm export`: a checkpoint (full or sharded DCP, any world size) → one consolidated .safetensors file.

A sharded checkpoint is read shard by shard into one unsharded model on this process's CPU (DCP reshards to a world
of one); only the chosen weights (EMA by default) are exported, not the optimizer, so the file is a third of the
training state. The facts eval and planning need (config, latent statistics, encoder identity, cache facts, step)
travel in its metadata (engine/export_file.py), and `load_world_model` loads it like a checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from latentwm.config import ExportConfig
from latentwm.engine.checkpoint import load_world_model
from latentwm.engine.export_file import write_export

# Training-only state a one-device user never needs: optimizer/scheduler (the model's only in a full checkpoint),
# RNG, loss history, the DCP marker, and where it was loaded from.
_TRAINING_ONLY = {"model", "ema", "optimizer", "scheduler", "rng", "history", "dcp", "path", "weights"}


def export_checkpoint(checkpoint: str | Path, out: str | Path, ema: bool = True) -> Path:
    """Write `out` (.safetensors) from `checkpoint` (run folder, step directory, one-file checkpoint or another
    export); returns its path. Raises CheckpointError naming the checkpoint when it is missing or damaged."""
    model, _, state = load_world_model(checkpoint, ema=ema, device="cpu")
    facts = {k: v for k, v in state.items() if k not in _TRAINING_ONLY}
    facts["source"] = str(state["path"])
    which = state.get("weights") or ("ema" if ema else "model")  # an export re-exported keeps what it holds
    return write_export(out, model.state_dict(), facts, which)


def run_export(cfg: ExportConfig) -> Path:
    """The CLI body: export, then print what was written."""
    path = export_checkpoint(cfg.checkpoint, cfg.out, ema=cfg.ema)
    _, _, state = load_world_model(path)  # read back: the file is verified before the user relies on it
    print(
        f"exported {state['weights']} weights of {state['source']} (step {state.get('step', '?')}) to {path} "
        f"({path.stat().st_size / 1e6:.1f} MB)"
    )
    return path


__all__ = ["export_checkpoint", "run_export"]
