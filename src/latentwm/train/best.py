"""Best-checkpoint keeping (`train.keep_best`): the weights of the best held-out score so far, beside the step
checkpoints, so a run that overfits late still hands over its best model.

Score: the mean over horizons 1..H of the held-out rollout latent MSE of the weights Trainer.evaluate rolls out
(`rollout.use_ema`: the EMA by default), i.e. mean(res["model_error"]); lower is better. It is computed at every
evaluation: every train.eval_every steps and at the end of the run (the loop core evaluates the last step too).

Files, both written atomically (best.pt first) by rank 0:
- `<out>/checkpoints/best.pt`: a one-file checkpoint (engine/state_file.py) in the format of a step checkpoint's
  state.pt — config, model, EMA, the run's saved facts (data_stats, encoder, ...), "step" (the best step) and
  "best" — without optimizer or scheduler state: it is for using the model, not for resuming.
  `checkpoint.load_world_model(<out>/checkpoints/best.pt)` loads it; `Trainer.load_best()` loads it into a trainer.
- `<out>/best.json`: {"step", "score", "model_error" (per horizon), "rollout" (the settings it was measured with),
  "path"}.
Neither is a step checkpoint: resume, `latest_checkpoint` and `prune` see `step_N` directories only.

Resume: the record {"step", "score", "rollout"} is part of the train state saved in every step checkpoint, so a
resumed run compares against the best as of its checkpoint; evaluations being deterministic, it rewrites the same
best.pt the uninterrupted run writes (a best.pt written after that checkpoint, before a crash, stays until then).
rollout.* may change on resume; the score then measures something else, so the record is dropped and the next
evaluation starts a new one.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from latentwm.engine.checkpoint import plain_state
from latentwm.engine.state_file import CheckpointError, load_state_file, save_state_file
from latentwm.io.files import write_json

BEST_FILE = "best.pt"
BEST_JSON = "best.json"


def held_out_score(res: dict) -> float:
    """The score best-keeping minimizes: mean over horizons of a rollout_errors result's model_error."""
    errs = res["model_error"]
    return float(sum(errs) / len(errs))


def best_path(run: str | os.PathLike) -> Path:
    """`<run>/checkpoints/best.pt`."""
    return Path(run) / "checkpoints" / BEST_FILE


def _write_json(path: Path, data: dict) -> None:
    try:
        write_json(path, data)
    except OSError as e:
        raise CheckpointError(f"could not write {path}: {e}") from e


class BestKeeper:
    """The best score so far (`record`: {"step", "score", "rollout"} or None) and its files under run folder `out`.

    rollout: the rollout settings the scores are measured with (a plain dict); a restored record measured with
    other settings is dropped."""

    def __init__(self, out: str | os.PathLike, rollout: dict):
        self.out = Path(out)
        self.path, self.json = best_path(self.out), self.out / BEST_JSON
        self.rollout = dict(rollout)
        self.record: dict | None = None

    def improves(self, score: float) -> bool:
        """Strictly lower than the best so far (the first finite score always is); NaN / inf never are."""
        return math.isfinite(score) and (self.record is None or score < self.record["score"])

    def accept(self, step: int, score: float) -> dict:
        self.record = {"step": int(step), "score": float(score), "rollout": dict(self.rollout)}
        return self.record

    def restore(self, record: dict | None, log=print) -> None:
        """The record saved in a step checkpoint (None: an older checkpoint, or no evaluation yet)."""
        if record is not None and dict(record.get("rollout", {})) != self.rollout:
            log(
                f"best checkpoint: rollout settings changed since step {record['step']} (score {record['score']:.4g}"
                " measured with others); the next evaluation starts a new best"
            )
            record = None
        self.record = None if record is None else dict(record)

    def write(self, state: dict, model_error: list) -> Path:
        """best.pt from `state` (weights + facts; "step" and "best" are set here), then best.json. Rank 0 only."""
        rec = self.record
        self.path.parent.mkdir(parents=True, exist_ok=True)
        save_state_file(self.path, plain_state({**state, "step": rec["step"], "best": rec}))
        _write_json(
            self.json,
            {**rec, "model_error": [float(e) for e in model_error], "path": os.path.relpath(self.path, self.out)},
        )
        return self.path

    def load(self, map_location="cpu") -> dict:
        """best.pt's state; CheckpointError naming the file when there is none or it is damaged."""
        if not self.path.is_file():
            raise CheckpointError(
                f"{self.path}: no best checkpoint (it is written at evaluations when "
                "train.keep_best is on and the run has an eval set and train.eval_every)"
            )
        state = load_state_file(self.path, map_location)
        if not isinstance(state.get("best"), dict) or "ema" not in state or "model" not in state:
            raise CheckpointError(f"{self.path}: not a best checkpoint (no best record or weights)")
        return state


__all__ = ["BEST_FILE", "BEST_JSON", "BestKeeper", "best_path", "held_out_score"]
