"""Agent heads on the dynamics transformer's per-frame outputs: policy, reward (multi-token), value.

Features of frame t are the final-normed outputs of its R register tokens, flattened: (B, T, R·W). They have seen
the frame, every earlier frame and the action that led into it (block-causal), never the future — so the policy at
t chooses a_t (the action leading to frame t+1), the reward head at t predicts the rewards received on arriving at
t, t+1, ..., t+L−1 (multi-token prediction; the first is what imagination uses, the others shape the features), and
the value head at t estimates the return from t on.

Policy: a Gaussian in pre-squash space, tanh-squashed to the action box [low, high] (per dimension; dimensions with
low == high, e.g. the model's zero padding, are fixed at that value and carry no likelihood). Optional goal
conditioning: a goal vector (e.g. the pooled latents of a goal image) concatenated to the features.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from latentwm.model.layers import mlp
from latentwm.rl.returns import TwoHot

LOG_STD_MIN, LOG_STD_MAX = -5.0, 1.0


def frame_features(hidden: torch.Tensor, layout) -> torch.Tensor:
    """hidden (..., S, W) token outputs of the dynamics model, layout its TokenLayout -> (..., R·W) the register
    tokens' outputs."""
    return hidden[..., layout.register_slice, :].flatten(-2).float()


class TanhGaussian:
    """u ~ N(mean, std) (…, A); action = center + half · tanh(u). Dimensions with half == 0 are fixed."""

    def __init__(self, mean: torch.Tensor, log_std: torch.Tensor, low: torch.Tensor, high: torch.Tensor):
        self.mean, self.log_std = mean, log_std
        self.center, self.half = (high + low) / 2, (high - low) / 2
        self.free = self.half > 0

    def _u(self, action: torch.Tensor) -> torch.Tensor:
        y = ((action - self.center) / self.half.clamp_min(1e-8)).clamp(-1 + 1e-4, 1 - 1e-4)
        return torch.atanh(y)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        eps = torch.randn(self.mean.shape, generator=generator, device=self.mean.device)
        return self.squash(self.mean + self.log_std.exp() * eps)

    def squash(self, u: torch.Tensor) -> torch.Tensor:
        return torch.where(self.free, self.center + self.half * torch.tanh(u), self.center)

    def mode(self) -> torch.Tensor:
        return self.squash(self.mean)

    def log_prob(self, action: torch.Tensor) -> torch.Tensor:
        """(…, A) actions in the box -> (…,) log-density (change of variables through tanh, free dims only)."""
        u = self._u(action)
        z = (u - self.mean) / self.log_std.exp()
        logp = -0.5 * z**2 - self.log_std - 0.5 * math.log(2 * math.pi)
        logp = logp - torch.log(self.half.clamp_min(1e-8) * (1 - torch.tanh(u) ** 2) + 1e-6)
        return (logp * self.free).sum(-1)

    def entropy(self) -> torch.Tensor:
        """(…,) entropy of the pre-squash Gaussian over the free dimensions (the tanh term has no closed form)."""
        return ((0.5 + 0.5 * math.log(2 * math.pi) + self.log_std) * self.free).sum(-1)


class AgentHeads(nn.Module):
    """Policy, reward (L steps) and value heads over (…, F) frame features (+ an optional goal vector)."""

    def __init__(
        self,
        feature_dim: int,
        action_dim: int,
        low: torch.Tensor,
        high: torch.Tensor,
        hidden: int = 256,
        reward_steps: int = 4,
        num_bins: int = 255,
        goal_dim: int = 0,
    ):
        super().__init__()
        if low.shape != (action_dim,) or high.shape != (action_dim,) or bool((high < low).any()):
            raise ValueError(f"AgentHeads: low/high must be ({action_dim},) with low <= high")
        self.feature_dim, self.action_dim, self.goal_dim = feature_dim, action_dim, goal_dim
        self.reward_steps = reward_steps
        self.register_buffer("low", low.float().clone())
        self.register_buffer("high", high.float().clone())
        self.twohot = TwoHot(num_bins)
        # per-dimension standardization of the frozen features (set from data before training, saved with the
        # heads): the transformer's outputs mix dimensions of very different scales, and without it the BC policy
        # learned nothing on the cpu demo model (its mode explained none of the action variance)
        self.register_buffer("feat_mean", torch.zeros(feature_dim))
        self.register_buffer("feat_std", torch.ones(feature_dim))
        inp = feature_dim + goal_dim
        self.policy = mlp(inp, hidden, 2 * action_dim)
        self.reward = mlp(inp, hidden, reward_steps * num_bins)
        self.value = mlp(inp, hidden, num_bins)
        for head in (self.reward, self.value):  # start predicting 0 (uniform logits would decode to ~0 too)
            nn.init.zeros_(head[-1].weight)
            nn.init.zeros_(head[-1].bias)

    @torch.no_grad()
    def set_feature_stats(self, feats: torch.Tensor) -> None:
        """Per-dimension mean/std from a sample of features (…, F)."""
        f = feats.detach().reshape(-1, self.feature_dim).float()
        self.feat_mean.copy_(f.mean(0))
        self.feat_std.copy_(f.std(0).clamp_min(1e-4))

    def _in(self, feats: torch.Tensor, goal: torch.Tensor | None) -> torch.Tensor:
        feats = (feats.float() - self.feat_mean) / self.feat_std
        if self.goal_dim:
            if goal is None:
                raise ValueError("AgentHeads: built with goal_dim > 0, pass goal (…, goal_dim)")
            feats = torch.cat([feats, goal.expand(*feats.shape[:-1], self.goal_dim)], -1)
        return feats

    def dist(self, feats: torch.Tensor, goal: torch.Tensor | None = None) -> TanhGaussian:
        mean, log_std = self.policy(self._in(feats, goal)).chunk(2, -1)
        log_std = LOG_STD_MIN + (LOG_STD_MAX - LOG_STD_MIN) * torch.sigmoid(log_std)
        return TanhGaussian(mean, log_std, self.low, self.high)

    def reward_logits(self, feats: torch.Tensor, goal: torch.Tensor | None = None) -> torch.Tensor:
        """(…, F) -> (…, L, bins): rewards received on arriving at this frame and the L − 1 after it."""
        return self.reward(self._in(feats, goal)).unflatten(-1, (self.reward_steps, self.twohot.num_bins))

    def value_logits(self, feats: torch.Tensor, goal: torch.Tensor | None = None) -> torch.Tensor:
        return self.value(self._in(feats, goal))

    def predict_reward(self, feats, goal=None) -> torch.Tensor:
        """(…, F) -> (…,) expected reward received on arriving at this frame."""
        return self.twohot.decode(self.reward_logits(feats, goal)[..., 0, :])

    def predict_value(self, feats, goal=None) -> torch.Tensor:
        return self.twohot.decode(self.value_logits(feats, goal))
