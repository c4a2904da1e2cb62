"""MPPI: a temperature-weighted average of sampled action sequences (softmax of −cost / temperature)."""

from __future__ import annotations

import torch

from latentwm.config import PlanConfig
from latentwm.planning.base import PlanResult, initial_mean


@torch.no_grad()
def plan_mppi(objective, horizon: int, low: torch.Tensor, high: torch.Tensor, cfg: PlanConfig,
              init: torch.Tensor | None = None, generator: torch.Generator | None = None) -> PlanResult:
    """Weights ∝ exp(−(cost − min cost) / temperature) (costs rescaled to [0, 1] per iteration so the temperature
    means the same thing whatever the cost's units); the mean moves to the weighted average, the spread shrinks
    to the weighted standard deviation."""
    mean = initial_mean(horizon, low, high, init)
    span = (high - low).clamp_min(1e-6)
    std = cfg.init_std * span / 2 * torch.ones_like(mean)
    best, best_cost, hist = mean.clone(), float("inf"), []
    for _ in range(cfg.iterations):
        eps = torch.randn((cfg.population, *mean.shape), generator=generator, device=mean.device)
        samples = torch.max(torch.min(mean + std * eps, high), low)
        samples[0] = mean
        costs = objective(samples)
        i = int(torch.argmin(costs))
        if float(costs[i]) < best_cost:
            best_cost, best = float(costs[i]), samples[i].clone()
        c = (costs - costs.min()) / (costs.max() - costs.min()).clamp_min(1e-12)
        w = torch.softmax(-c / cfg.temperature, 0)[:, None, None]
        mean = (w * samples).sum(0)
        std = ((w * (samples - mean) ** 2).sum(0)).sqrt().clamp_min(1e-3 * span)
        hist.append(best_cost)
    return PlanResult(best, best_cost, hist)
