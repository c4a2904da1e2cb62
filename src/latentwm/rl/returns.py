"""Return math for imagination training: symlog, two-hot classification over symlog-spaced bins, λ-returns.

Rewards and values are predicted as two-hot distributions over bins evenly spaced in symlog space (Dreamer 3/4):
the loss is a cross-entropy whatever the reward scale, and the prediction is the distribution's mean mapped back with
symexp.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def symlog(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.expm1(x.abs())


class TwoHot:
    """`num_bins` bins evenly spaced in symlog space on [low, high] (symlog units)."""

    def __init__(self, num_bins: int = 255, low: float = -20.0, high: float = 20.0):
        if num_bins < 2 or not low < high:
            raise ValueError(f"TwoHot: need num_bins >= 2 and low < high, got {num_bins}, {low}, {high}")
        self.bins = torch.linspace(low, high, num_bins)

    @property
    def num_bins(self) -> int:
        return len(self.bins)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x (...) real values -> (..., num_bins) two-hot targets: the weight of symlog(x) split between its two
        neighbouring bins in proportion to closeness (values beyond the range go to the edge bin)."""
        bins = self.bins.to(x.device)
        y = symlog(x.float()).clamp(bins[0], bins[-1])
        hi = torch.searchsorted(bins, y.contiguous(), right=False).clamp(1, len(bins) - 1)
        lo = hi - 1
        w_hi = (y - bins[lo]) / (bins[hi] - bins[lo])
        out = torch.zeros(*y.shape, len(bins), device=x.device)
        out.scatter_(-1, lo[..., None], (1 - w_hi)[..., None])
        out.scatter_add_(-1, hi[..., None], w_hi[..., None])
        return out

    def decode(self, logits: torch.Tensor) -> torch.Tensor:
        """(..., num_bins) logits -> (...) expected value, back in real units."""
        return symexp((logits.float().softmax(-1) * self.bins.to(logits.device)).sum(-1))

    def loss(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of logits (..., num_bins) against the two-hot encoding of x (...) -> (...)."""
        return -(self.encode(x) * F.log_softmax(logits.float(), -1)).sum(-1)


def lambda_returns(
    rewards: torch.Tensor, values: torch.Tensor, continues: torch.Tensor, gamma: float = 0.997, lam: float = 0.95
) -> torch.Tensor:
    """TD(λ) returns of an imagined trajectory.

    rewards (B, H): reward received on arriving at steps 1..H; values (B, H + 1): value estimates at steps 0..H
    (the last one bootstraps); continues (B, H): 0 where the episode ended on arriving at that step.
    R_t = r_{t+1} + γ c_{t+1} ((1 − λ) V(s_{t+1}) + λ R_{t+1}), R_H = V(s_H) -> (B, H) returns for steps 0..H−1.
    """
    B, H = rewards.shape
    if values.shape != (B, H + 1) or continues.shape != (B, H):
        raise ValueError(
            f"lambda_returns: rewards (B, H) = {tuple(rewards.shape)} needs values (B, H + 1) and "
            f"continues (B, H); got {tuple(values.shape)} and {tuple(continues.shape)}"
        )
    out = torch.empty_like(rewards)
    nxt = values[:, H]
    for t in reversed(range(H)):
        nxt = rewards[:, t] + gamma * continues[:, t] * ((1 - lam) * values[:, t + 1] + lam * nxt)
        out[:, t] = nxt
    return out
