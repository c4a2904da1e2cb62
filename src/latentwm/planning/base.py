"""The planner interface: every planner maps a cost over action sequences to the best sequence it finds.

Low level (what CEM / MPPI / gradient implement):
`planner(objective, horizon, low, high, cfg, init=None, generator=None) -> PlanResult`, where objective(actions
(P, H, A)) -> costs (P,) (a `LatentGoalObjective`, or any differentiable toy), low/high (A,) are the action bounds in
the model's normalized action space, and init (H, A) warm-starts the search (the previous plan, shifted).

High level (what MPC calls): `plan(model, PlanProblem(history, goal, low, high, ...), cfg) -> PlanResult`: builds the
latent objective (observing the history ONCE, or reusing a given history cache), then runs the configured planner.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch


@dataclass
class PlanResult:
    actions: torch.Tensor  # (H, A) the plan, within bounds
    cost: float  # its cost
    history: list[float] = field(default_factory=list)  # best cost after each iteration
    seconds: float = 0.0  # wall time of the planning call (set by `plan`)
    evaluations: int = 0  # candidate rollouts scored


def initial_mean(horizon: int, low: torch.Tensor, high: torch.Tensor, init: torch.Tensor | None) -> torch.Tensor:
    """(H, A): the warm start when given (clipped to bounds), else the middle of the box."""
    if init is not None:
        if init.shape[0] != horizon:
            raise ValueError(f"planner: init has {init.shape[0]} steps, the horizon is {horizon}")
        return torch.max(torch.min(init.to(low.device, low.dtype).clone(), high), low)
    return ((low + high) / 2).expand(horizon, -1).clone()


def initial_std(mean: torch.Tensor, low: torch.Tensor, high: torch.Tensor, init_std: float) -> torch.Tensor:
    """(H, A): `init_std` in normalized action units, 0 on dimensions pinned by the bounds (low == high)."""
    return torch.where(high > low, torch.full_like(high, float(init_std)), torch.zeros_like(high)).expand_as(mean)


def min_std(low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """A floor on the sampling std (keep exploring a little): 0.1 % of the box."""
    return 1e-3 * (high - low)


def shift_plan(actions: torch.Tensor, steps: int) -> torch.Tensor:
    """Warm start for the next call after executing `steps` actions: drop them, repeat the last one."""
    if steps >= actions.shape[0]:
        return actions[-1:].expand_as(actions).clone()
    return torch.cat([actions[steps:], actions[-1:].expand(steps, -1)], 0)


@functools.cache
def bf16_is_fast(device_type: str = "cpu") -> bool:
    """Whether bf16 autocast speeds candidate rollouts up here: CUDA, or a CPU with AMX / AVX-512 bf16 units
    (elsewhere CPU bf16 is emulated and slower)."""
    if device_type == "cuda":
        return True
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


class MappedObjective:
    """objective ∘ expand: planners search a lower-dimensional space (e.g. one env action per model step, held),
    `expand` (differentiable) maps (P, H, k) candidates to the model's (P, H, A) actions."""

    def __init__(self, objective, expand):
        self.objective, self.expand = objective, expand

    @property
    def evaluations(self) -> int:
        return self.objective.evaluations

    def __call__(self, actions: torch.Tensor, grad: bool = False) -> torch.Tensor:
        return self.objective(self.expand(actions), grad=grad)
