"""Cross-entropy method: sample Gaussian action sequences, keep the elites, refit, repeat (DINO-WM's planner)."""

from __future__ import annotations

import torch

from latentwm.config import PlanConfig
from latentwm.planning.base import PlanResult, initial_mean


@torch.no_grad()
def plan_cem(objective, horizon: int, low: torch.Tensor, high: torch.Tensor, cfg: PlanConfig,
             init: torch.Tensor | None = None, generator: torch.Generator | None = None) -> PlanResult:
    """Per-step diagonal Gaussian over (H, A); each iteration scores `population` samples in ONE batch.

    The current mean is always one of the candidates, so the result never gets worse than the warm start.
    """
    mean = initial_mean(horizon, low, high, init)
    span = (high - low).clamp_min(1e-6)
    std = cfg.init_std * span / 2 * torch.ones_like(mean)
    best, best_cost, hist = mean.clone(), float("inf"), []
    for _ in range(cfg.iterations):
        eps = torch.randn((cfg.population, *mean.shape), generator=generator, device=mean.device)
        samples = torch.max(torch.min(mean + std * eps, high), low)
        samples[0] = mean
        costs = objective(samples)
        order = torch.argsort(costs)
        elite = samples[order[: cfg.elites]]
        if costs[order[0]] < best_cost:
            best_cost, best = float(costs[order[0]]), samples[order[0]].clone()
        mean = elite.mean(0)
        std = elite.std(0, unbiased=False).clamp_min(1e-3 * span)  # keep exploring a little
        hist.append(best_cost)
    return PlanResult(best, best_cost, hist)
