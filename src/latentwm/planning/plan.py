"""`plan(model, PlanProblem(history, goal, low, high, ...), cfg)`: the one planning entry point — builds the latent
goal objective over one shared KV-cached history and runs the configured planner (PLANNERS: CEM, MPPI, gradient)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from latentwm.config import PlanConfig
from latentwm.planning.base import MappedObjective, PlanResult
from latentwm.planning.cem import plan_cem
from latentwm.planning.cost import GoalCost, LatentGoalObjective
from latentwm.planning.gradient import plan_gradient
from latentwm.planning.mppi import plan_mppi
from latentwm.rollout import Sampling

PLANNERS: dict[str, Callable[..., PlanResult]] = {"cem": plan_cem, "mppi": plan_mppi, "gradient": plan_gradient}


@dataclass
class PlanProblem:
    """What one planning call is asked: from an observed history toward a goal, within bounds.

    history: (1, C, N, D) normalized latents of the observed frames (oldest first); history_actions (1, C − 1, A)
    the model-space actions taken between them (None: unknown). cache: the same history already observed (batch 1),
    e.g. kept between calls by the caller; otherwise it is observed once per call. goal: (N, D). low / high: (k,)
    bounds of one planned step; init: (H, k) a warm start (None: the box centre). expand: an optional
    differentiable map from the planning space (H, k) to model actions (H, A) (bounds, init and the result are then
    in the planning space). proprio: a `ProprioGoal` term added to the cost (DINO-WM's visual + proprio objective);
    state: a `StateGoal` pose term on the last predicted frame (planning/state_probe.py)."""

    history: torch.Tensor
    goal: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor
    history_actions: torch.Tensor | None = None
    init: torch.Tensor | None = None
    expand: Callable[[torch.Tensor], torch.Tensor] | None = None
    proprio: Any = None
    state: Any = None
    cache: Any = None


def plan(
    model,
    problem: PlanProblem,
    cfg: PlanConfig,
    *,
    planner: str | None = None,
    generator: torch.Generator | None = None,
    seed: int = 0,
    tau_ctx: float = 1.0,
    bf16: bool = False,
) -> PlanResult:
    """Plan cfg.horizon model-step actions for `problem` with the planner `planner` (default cfg.planner), its
    section of cfg (cfg.cem / cfg.mppi / cfg.gradient), cfg.init_std, the cost settings (cost, cost_all_frames,
    visual_weight, proprio_weight) and K = cfg.sample_steps (the gradient planner always rolls out with K = 1: one
    differentiable denoising step per frame). seed: the candidates' common noise. bf16: run the candidate rollouts
    under bf16 autocast (plans and costs stay float32; on the `cpu` preset with AMX 1.6× faster per batch of 300,
    the top-30 candidates unchanged in a check on a trained model). Returns a PlanResult whose actions lie within
    [low, high]."""
    pb = problem
    name = planner or cfg.planner
    if name not in PLANNERS:
        raise ValueError(f"plan.planner must be one of {sorted(PLANNERS)}, got {name!r}")
    t0 = time.perf_counter()
    k = 1 if name == "gradient" else cfg.sample_steps
    dev = pb.history.device.type
    amp = torch.autocast(device_type=dev, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with amp:
        obj = LatentGoalObjective(
            model,
            pb.history,
            pb.goal,
            pb.history_actions,
            Sampling(steps=k, tau_ctx=tau_ctx),
            GoalCost.of_plan(cfg, pb.proprio, pb.state),
            seed=seed,
            cache=pb.cache,
        )
        sampling = {} if name == "gradient" else {"init_std": cfg.init_std}
        res = PLANNERS[name](
            _Float32(obj if pb.expand is None else MappedObjective(obj, pb.expand)),
            cfg.horizon,
            pb.low,
            pb.high,
            cfg.planner_config(name),
            init=pb.init,
            generator=generator,
            **sampling,
        )
    res.seconds, res.evaluations = time.perf_counter() - t0, obj.evaluations
    return res


class _Float32:
    """Costs as float32 whatever precision the rollouts ran in."""

    def __init__(self, objective):
        self.objective = objective

    def __call__(self, actions: torch.Tensor, grad: bool = False) -> torch.Tensor:
        return self.objective(actions, grad=grad).float()


__all__ = ["PLANNERS", "PlanProblem", "plan"]
