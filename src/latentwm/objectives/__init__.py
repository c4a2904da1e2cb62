"""Training objectives of the dynamics model; `make_objective` picks the one its prediction mode trains with."""

from __future__ import annotations

from latentwm.config import ModelConfig, ObjectiveConfig
from latentwm.objectives.next_frame import NextFrameRegression
from latentwm.objectives.shortcut_forcing import ShortcutForcing


def make_objective(objective: ObjectiveConfig, model: ModelConfig) -> ShortcutForcing | NextFrameRegression:
    """Shortcut forcing for model.prediction "x" / "v" (the loss in the model's own space), next-frame regression
    for "next". Both are called the same way: `loss, metrics = obj(model, x, actions, action_mask, valid, ...)`."""
    if model.prediction == "next":
        return NextFrameRegression(objective, model.k_max)
    return ShortcutForcing(objective, model.k_max, prediction=model.prediction)


__all__ = ["NextFrameRegression", "ShortcutForcing", "make_objective"]
