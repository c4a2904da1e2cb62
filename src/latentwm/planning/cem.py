"""Cross-entropy method: sample Gaussian action sequences, keep the elites, refit, repeat (DINO-WM's planner)."""

from __future__ import annotations

import torch

from latentwm.config import CEMConfig
from latentwm.planning.base import PlanResult, initial_mean, initial_std, min_std


@torch.no_grad()
def plan_cem(
    objective,
    horizon: int,
    low: torch.Tensor,
    high: torch.Tensor,
    cfg: CEMConfig,
    init_std: float = 1.0,
    init: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> PlanResult:
    """Per-step diagonal Gaussian over (H, A), starting at the warm start (or the box centre) with std
    `init_std` (normalized action units); samples are clipped to the bounds; each of the `iterations` scores
    `population` samples in ONE batch, refits mean/std to the `elites` best.

    The current mean is always one of the candidates, so the result is never worse than the warm start; the
    returned plan is the best candidate scored (DINO-WM returns the final mean, which is always scored here too
    except after the last refit).
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
        order = torch.argsort(costs)
        elite = samples[order[: cfg.elites]]
        if costs[order[0]] < best_cost:
            best_cost, best = float(costs[order[0]]), samples[order[0]].clone()
        mean = elite.mean(0)
        std = torch.max(elite.std(0, unbiased=False), floor)
        hist.append(best_cost)
    return PlanResult(best, best_cost, hist)
