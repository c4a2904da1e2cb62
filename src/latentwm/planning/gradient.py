"""Gradient descent on the action sequence through a differentiable one-step (K = 1) rollout (Adam, projected)."""

from __future__ import annotations

import torch

from latentwm.config import GradientConfig
from latentwm.planning.base import PlanResult, initial_mean


def plan_gradient(
    objective,
    horizon: int,
    low: torch.Tensor,
    high: torch.Tensor,
    cfg: GradientConfig,
    init: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    restarts: int = 4,
) -> PlanResult:
    """`restarts` sequences (the warm start, and uniform random ones in the box) descend in one batch for
    `cfg.steps` Adam steps of `cfg.lr` (normalized action units); after every step they are projected
    back into the box. The best sequence seen is returned. objective must accept grad=True (LatentGoalObjective
    does; `plan` gives it K = 1)."""
    mean = initial_mean(horizon, low, high, init)
    rand = low + (high - low) * torch.rand((restarts - 1, *mean.shape), generator=generator, device=mean.device)
    x = torch.cat([mean[None], rand]).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=cfg.lr)
    best, best_cost, hist = mean.clone(), float("inf"), []

    def keep_best(costs: torch.Tensor) -> None:
        nonlocal best, best_cost
        i = int(torch.argmin(costs))
        if float(costs[i]) < best_cost:
            best_cost, best = float(costs[i]), x[i].detach().clone()

    for _ in range(cfg.steps):
        costs = objective(x, grad=True)
        keep_best(costs.detach())
        (x.grad,) = torch.autograd.grad(costs.sum(), x)  # gradients for the actions only, never the weights
        opt.step()
        with torch.no_grad():
            x.copy_(torch.max(torch.min(x, high), low))
        hist.append(best_cost)
    with torch.no_grad():  # the last step's result counts too
        keep_best(objective(x.detach()))
    if hist:
        hist[-1] = best_cost
    return PlanResult(best, best_cost, hist)
