"""`plan(model, history, goal, horizon, cfg, low, high, ...)`: the one planning entry point — builds the latent goal
objective over one shared KV-cached history and runs the configured planner (PLANNERS: CEM, MPPI, gradient)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import torch

from latentwm.planning.base import MappedObjective, PlanResult
from latentwm.planning.cem import plan_cem
from latentwm.planning.cost import LatentGoalObjective
from latentwm.planning.gradient import plan_gradient
from latentwm.planning.mppi import plan_mppi

PLANNERS: dict[str, Callable[..., PlanResult]] = {"cem": plan_cem, "mppi": plan_mppi, "gradient": plan_gradient}


def plan(
    model,
    history: torch.Tensor,
    goal: torch.Tensor,
    horizon: int,
    cfg,
    low: torch.Tensor,
    high: torch.Tensor,
    *,
    history_actions: torch.Tensor | None = None,
    cache=None,
    init: torch.Tensor | None = None,
    planner: str | None = None,
    generator: torch.Generator | None = None,
    seed: int = 0,
    tau_ctx: float = 1.0,
    expand=None,
    bf16: bool = False,
    proprio=None,
    state=None,
) -> PlanResult:
    """Plan `horizon` model-step actions from an observed history toward a goal image's latents.

    history: (1, C, N, D) normalized latents of the observed frames (oldest first); history_actions (1, C − 1, A)
    the model-space actions taken between them (None: unknown). cache: the same history already observed (batch
    1), e.g. kept between calls by the caller; otherwise it is observed here, once. goal: (N, D). cfg: PlanConfig
    (planner, its section cfg.cem / cfg.mppi / cfg.gradient, init_std, cost, cost_all_frames, sample_steps). The
    gradient planner always rolls out with K = 1 (one differentiable denoising step per frame).
    expand: optional differentiable map from the planning space (H, k) to model actions (H, A) (low/high/init
    are then in the planning space, and so is the result). bf16: run the candidate rollouts under bf16 autocast
    (plans and costs stay float32; on the `cpu` preset with AMX 1.6× faster per batch of 300, the top-30 candidates
    unchanged in a check on a trained model). proprio: a `ProprioGoal` term added to the cost (DINO-WM's visual +
    proprio objective). state: a `StateGoal` pose term on the last predicted frame (planning/state_probe.py);
    cfg.visual_weight scales the latent cost (0: the other terms alone). Returns a PlanResult whose actions lie
    within [low, high].
    """
    name = planner or cfg.planner
    if name not in PLANNERS:
        raise ValueError(f"plan.planner must be one of {sorted(PLANNERS)}, got {name!r}")
    t0 = time.perf_counter()
    k = 1 if name == "gradient" else cfg.sample_steps
    amp = torch.autocast(device_type=history.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with amp:
        obj = LatentGoalObjective(
            model,
            history,
            goal,
            history_actions,
            sample_steps=k,
            tau_ctx=tau_ctx,
            cost=cfg.cost,
            all_frames=cfg.cost_all_frames,
            seed=seed,
            cache=cache,
            proprio=proprio,
            state=state,
            visual_weight=cfg.visual_weight,
            proprio_weight=cfg.proprio_weight,
        )
        sampling = {} if name == "gradient" else {"init_std": cfg.init_std}
        res = PLANNERS[name](
            _Float32(obj if expand is None else MappedObjective(obj, expand)),
            horizon,
            low,
            high,
            cfg.planner_config(name),
            init=init,
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


__all__ = ["PLANNERS", "plan"]
