"""PMPO (Dreamer 4's policy objective): sign-split advantage-weighted likelihood plus a KL to the behaviour prior.

L = α/|D−| Σ_{D−} log π(a|s) − (1 − α)/|D+| Σ_{D+} log π(a|s) + β · mean KL(π(·|s) ‖ π_prior(·|s))

D+ / D− are the samples with positive / negative advantage; only the sign is used (robust to the return scale), and
each set gets a fixed share of the weight (α = 1/2: equal), so a batch dominated by one sign still moves both ways.
The KL is between the pre-squash Gaussians: a tanh squash applied to both policies leaves the KL unchanged.
"""

from __future__ import annotations

import torch

from latentwm.rl.heads import TanhGaussian


def gaussian_kl(p: TanhGaussian, q: TanhGaussian) -> torch.Tensor:
    """KL(p ‖ q) over the free dimensions -> (…,)."""
    var_p, var_q = (2 * p.log_std).exp(), (2 * q.log_std).exp()
    kl = q.log_std - p.log_std + (var_p + (p.mean - q.mean) ** 2) / (2 * var_q) - 0.5
    return (kl * p.free).sum(-1)


def pmpo_loss(
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    kl: torch.Tensor | None = None,
    alpha: float = 0.5,
    beta: float = 0.3,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict]:
    """log_prob (N,) of the taken actions under the current policy, advantages (N,) (detached), kl (N,) to the prior,
    mask (N,) bool of the samples that count -> (loss, stats)."""
    adv = advantages.detach()
    m = torch.ones_like(adv, dtype=torch.bool) if mask is None else mask
    pos, neg = m & (adv > 0), m & (adv < 0)
    zero = log_prob.sum() * 0
    loss_pos = -(log_prob * pos).sum() / pos.sum() if pos.any() else zero
    loss_neg = (log_prob * neg).sum() / neg.sum() if neg.any() else zero
    loss = (1 - alpha) * loss_pos + alpha * loss_neg
    kl_mean = zero
    if kl is not None:
        kl_mean = (kl * m).sum() / m.sum().clamp_min(1)
        loss = loss + beta * kl_mean
    stats = {
        "pmpo/positive_fraction": float(pos.sum() / m.sum().clamp_min(1)),  # detached floats for logging
        "pmpo/loss_positive": float(loss_pos.detach()),
        "pmpo/loss_negative": float(loss_neg.detach()),
        "pmpo/kl_to_prior": float(kl_mean.detach()),
    }
    return loss, stats
