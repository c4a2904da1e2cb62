"""Phase 1 (`latentwm rl --phase heads`): behaviour cloning and the reward model on the offline dataset, world model
frozen. Also where frame features come from (a teacher-forced, clean pass of the dynamics model).

Alignment (clips.py / DynamicsModel): actions[:, t] is taken after frame t; rewards[:, t] is what executing it
returns (summed over the frame skip), i.e. the reward received on arriving at frame t + 1. Features of frame t have
seen a_{t−1} but not a_t, so the policy at t is trained on a_t and the reward head at t on rewards[t − 1 + l],
l = 0..L−1 (t ≥ 1).
"""

from __future__ import annotations

import torch

from latentwm.conditions import Conditions
from latentwm.data.batch import WorldBatch
from latentwm.rl.heads import AgentHeads, frame_features
from latentwm.rollout import clip_hidden


def dataset_features(model, batch: WorldBatch, grad: bool = False) -> torch.Tensor:
    """Frame features (B, T, R·W) of a batch of clean latent clips (τ = 1, the dataset's actions; frame t's have
    seen a_{t−1}, never a_t — `rollout.clip_hidden`, also for next-frame models); grad=True keeps the graph into
    the model (fine-tuning it with the heads)."""
    with torch.set_grad_enabled(grad):
        h = clip_hidden(model, batch.latents, Conditions(batch.actions, batch.action_mask))
    return frame_features(h, model.layout)


def heads_loss(
    heads: AgentHeads,
    feats: torch.Tensor,
    batch: WorldBatch,
    reward_weight: float = 1.0,
    goal: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict]:
    """BC negative log-likelihood of the dataset's known actions + two-hot reward cross-entropy (L steps ahead).

    feats (B, T, F) frame features; batch supplies actions (B, T, A), action_mask (B, T), valid (B, T), rewards
    (B, T) (optional: without rewards only the policy trains)."""
    B, T = feats.shape[:2]
    valid = batch.valid
    act_ok = valid & batch.action_mask if batch.action_mask is not None else torch.zeros_like(valid)
    act_ok = act_ok & torch.cat([valid[:, 1:], torch.zeros_like(valid[:, :1])], 1)  # the next frame exists
    stats: dict = {}
    loss = feats.sum() * 0
    if act_ok.any():
        a = batch.actions[..., : heads.action_dim]
        dist = heads.dist(feats, goal)
        nll = -dist.log_prob(a)
        bc = (nll * act_ok).sum() / act_ok.sum()
        loss = loss + bc
        stats["bc/nll"] = float(bc.detach())
        with torch.no_grad():  # how much of the actions' variance the policy's mode explains
            err = ((dist.mode() - a) ** 2).mean(-1)
            var = ((a - a[act_ok].mean(0)) ** 2).mean(-1)
            stats["bc/mode_mse_over_var"] = float((err * act_ok).sum() / (var * act_ok).sum().clamp_min(1e-8))
    if batch.rewards is not None and reward_weight > 0 and T > 1:
        L = heads.reward_steps
        logits = heads.reward_logits(feats[:, 1:], goal)  # frames 1..T−1: (B, T − 1, L, bins)
        rew = batch.rewards.float()
        ok_r = valid & torch.cat([valid[:, 1:], torch.zeros_like(valid[:, :1])], 1)  # reward of t → t + 1 known
        tgt = torch.zeros(B, T - 1, L, device=feats.device)
        msk = torch.zeros(B, T - 1, L, dtype=torch.bool, device=feats.device)
        for lag in range(L):  # frame t (1..T−1) predicts rewards[t − 1 + lag]
            n = T - 1 - lag
            tgt[:, :n, lag] = rew[:, lag : lag + n]
            msk[:, :n, lag] = ok_r[:, lag : lag + n]
        ce = heads.twohot.loss(logits, tgt)
        r_loss = (ce * msk).sum() / msk.sum().clamp_min(1)
        loss = loss + reward_weight * r_loss
        stats["reward/ce"] = float(r_loss.detach())
        with torch.no_grad():
            pred = heads.twohot.decode(logits[..., 0, :])
            m0 = msk[..., 0]
            stats["reward/abs_error"] = float(((pred - tgt[..., 0]).abs() * m0).sum() / m0.sum().clamp_min(1))
    return loss, stats
