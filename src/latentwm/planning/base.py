"""The planner interface: every planner maps a cost over action sequences to the best sequence it finds.

`plan(objective, horizon, low, high, cfg, init=None, generator=None) -> PlanResult`, where objective(actions
(P, H, A)) -> costs (P,) (e.g. a `LatentGoalObjective`), low/high (A,) are the action bounds (in the model's
normalized action space), and init (H, A) warm-starts the search (the previous plan shifted by one step).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class PlanResult:
    actions: torch.Tensor  # (H, A) the plan, within bounds
    cost: float  # its cost
    history: list[float] = field(default_factory=list)  # best cost after each iteration


def initial_mean(horizon: int, low: torch.Tensor, high: torch.Tensor, init: torch.Tensor | None) -> torch.Tensor:
    """(H, A): the warm start when given (clipped to bounds), else the middle of the box."""
    if init is not None:
        return torch.max(torch.min(init.clone(), high), low)
    return ((low + high) / 2).expand(horizon, -1).clone()


def shift_plan(actions: torch.Tensor, steps: int) -> torch.Tensor:
    """Warm start for the next call after executing `steps` actions: drop them, repeat the last one."""
    if steps >= actions.shape[0]:
        return actions[-1:].expand_as(actions).clone()
    return torch.cat([actions[steps:], actions[-1:].expand(steps, -1)], 0)
