"""MPPI: a temperature-weighted average of sampled action sequences (softmax of −cost / temperature)."""

from __future__ import annotations

import torch

from latentwm.config import MPPIConfig
from latentwm.planning.base import PlanResult, initial_mean, initial_std, min_std


@torch.no_grad()
def plan_mppi(
    objective,
    horizon: int,
    low: torch.Tensor,
    high: torch.Tensor,
    cfg: MPPIConfig,
    init_std: float = 1.0,
    init: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> PlanResult:
    """Sampling as CEM; the update is the exponentially weighted average of all samples.

    Weights ∝ exp(−(cost − min cost) / (temperature · σ_cost)), σ_cost the standard deviation of this iteration's
    costs: the temperature is in units of the population's cost spread, so it means the same whatever the cost's
    scale (latent MSE of a good model is ~1e-2, of a bad one ~1). The mean moves to the weighted average, the
    spread shrinks to the weighted standard deviation. The best candidate scored is returned.
    """
    mean = initial_mean(horizon, low, high, init)
    std = initial_std(mean, low, high, init_std)
    floor = min_std(low, high)
    best, best_cost, hist = mean.clone(), float("inf"), []
    for _ in range(cfg.iterations):
        eps = torch.randn((cfg.population, *mean.shape), generator=generator, device=mean.device)
        samples = torch.max(torch.min(mean + std * eps, high), low)
        samples[0] = mean
        costs = objective(samples)
        i = int(torch.argmin(costs))
        if float(costs[i]) < best_cost:
            best_cost, best = float(costs[i]), samples[i].clone()
        c = (costs - costs[i]) / costs.std().clamp_min(1e-12)
        w = torch.softmax(-c / cfg.temperature, 0)[:, None, None]
        mean = (w * samples).sum(0)
        std = torch.max(((w * (samples - mean) ** 2).sum(0)).sqrt(), floor)
        hist.append(best_cost)
    return PlanResult(best, best_cost, hist)
