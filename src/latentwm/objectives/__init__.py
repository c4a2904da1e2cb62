"""Training objectives of the dynamics model; `make_objective` picks the one its prediction mode trains with."""

from __future__ import annotations

from latentwm.config import ModelConfig, ObjectiveConfig
from latentwm.objectives.next_frame import NextFrameRegression
from latentwm.objectives.shortcut_forcing import ShortcutForcing, TrainStep


def make_objective(objective: ObjectiveConfig, model: ModelConfig) -> ShortcutForcing | NextFrameRegression:
    """Shortcut forcing for model.prediction "x" / "v" (the loss in the model's own space), next-frame regression
    for "next". Both are called the same way: `loss, metrics = obj(model, x, cond, valid, TrainStep(...))`."""
    if model.prediction == "next":
        return NextFrameRegression(objective, model.k_max)
    return ShortcutForcing(objective, model.k_max, model.prediction, model.previous_frame)


__all__ = ["NextFrameRegression", "ShortcutForcing", "TrainStep", "make_objective"]
