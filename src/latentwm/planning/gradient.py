"""Gradient descent on the action sequence through a differentiable one-step (K = 1) rollout (Adam, projected)."""

from __future__ import annotations

import torch

from latentwm.config import PlanConfig
from latentwm.planning.base import PlanResult, initial_mean


def plan_gradient(objective, horizon: int, low: torch.Tensor, high: torch.Tensor, cfg: PlanConfig,
                  init: torch.Tensor | None = None, generator: torch.Generator | None = None,
                  restarts: int = 4) -> PlanResult:
    """`restarts` sequences (the warm start and random ones) descend in one batch; after every Adam step they are
    projected back into the box. objective must accept grad=True (LatentGoalObjective does, K = 1 recommended)."""
    mean = initial_mean(horizon, low, high, init)
    rand = low + (high - low) * torch.rand((restarts - 1, *mean.shape), generator=generator, device=mean.device)
    x = torch.cat([mean[None], rand]).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=cfg.grad_lr)
    best, best_cost, hist = mean.clone(), float("inf"), []
    for _ in range(cfg.grad_steps):
        costs = objective(x, grad=True)
        i = int(torch.argmin(costs.detach()))
        if float(costs[i]) < best_cost:
            best_cost, best = float(costs[i]), x[i].detach().clone()
        opt.zero_grad(set_to_none=True)
        costs.sum().backward()
        opt.step()
        with torch.no_grad():
            x.copy_(torch.max(torch.min(x, high), low))
        hist.append(best_cost)
    with torch.no_grad():  # the last step's result counts too
        costs = objective(x.detach())
        i = int(torch.argmin(costs))
        if float(costs[i]) < best_cost:
            best_cost, best = float(costs[i]), x[i].detach().clone()
    return PlanResult(best, best_cost, hist)
