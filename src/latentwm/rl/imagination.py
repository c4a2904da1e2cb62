"""Phase 2 (`latentwm rl --phase imagine`): roll the policy out inside the frozen world model and improve it with
PMPO; the value head regresses λ-returns. Only the policy and value heads train; the world model and the reward head
stay fixed (their weights never change here).

One imagination batch: observe C dataset frames into a KV cache (clean, with the dataset's actions); then for
h = 0..H−1: the policy samples a_h from the features of the newest frame, the model generates the next frame with
K-step sampling, the frame is committed (its features come from that same commit pass), the reward head reads the
reward of arriving there. λ-returns over the H steps bootstrap from the value of the last frame.
A next-frame world model (model.prediction "next") runs the same loop through rollout's helpers: its frame features
come from a pass with the frame's own (after-)action unknown, so the policy never reads the action it chooses.
"""

from __future__ import annotations

import torch

from latentwm.conditions import FrameConditions
from latentwm.config import RLConfig
from latentwm.rl.heads import AgentHeads, frame_features
from latentwm.rl.pmpo import gaussian_kl, pmpo_loss
from latentwm.rl.returns import lambda_returns
from latentwm.rollout import frame_hidden, sample_frame


@torch.no_grad()
def imagine(
    model,
    heads: AgentHeads,
    context: torch.Tensor,
    context_actions: torch.Tensor | None,
    context_mask: torch.Tensor | None,
    cfg: RLConfig,
    generator: torch.Generator | None = None,
    goal: torch.Tensor | None = None,
) -> dict:
    """context (B, C, N, D) clean latents, context_actions (B, C − 1, A) / context_mask (B, C − 1) -> dict of
    feats (B, H + 1, F) (frame C−1 and the H imagined frames), actions (B, H, A) sampled, rewards (B, H) predicted,
    latents (B, H, N, D) imagined; H = cfg.horizon, each frame sampled with K = cfg.sample_steps."""
    B, C = context.shape[:2]
    cache = model.init_cache(B, device=context.device)
    h = None
    for t in range(C):
        pa = None if t == 0 or context_actions is None else context_actions[:, t - 1]
        pm = None if pa is None or context_mask is None else context_mask[:, t - 1]
        h = frame_hidden(
            model, cache, context[:, t], FrameConditions(pa, pm)
        )  # committed clean; features from that pass
    feats = [frame_features(h, model.layout)]
    actions, latents = [], []
    N, D = context.shape[2:]
    known = torch.ones(B, dtype=torch.bool, device=context.device)
    for _ in range(cfg.horizon):
        a = heads.dist(feats[-1], goal).sample(generator)
        noise = torch.randn((B, N, D), generator=generator, device=context.device)
        x = sample_frame(model, cache, cfg.sample_steps, noise, FrameConditions(a, known))
        h = frame_hidden(model, cache, x, FrameConditions(a, known))
        feats.append(frame_features(h, model.layout))
        actions.append(a)
        latents.append(x)
    feats_t = torch.stack(feats, 1)
    return {
        "feats": feats_t,
        "actions": torch.stack(actions, 1),
        "latents": torch.stack(latents, 1),
        "rewards": heads.predict_reward(feats_t[:, 1:], goal),
    }


def imagination_loss(
    heads: AgentHeads,
    prior: AgentHeads,
    traj: dict,
    cfg: RLConfig,
    goal: torch.Tensor | None = None,
    policy_weight: float = 1.0,
) -> tuple[torch.Tensor, dict]:
    """PMPO policy loss (× policy_weight: 0 during the value warm-up) + value regression on one imagined batch
    (`imagine`'s output; features detached). cfg: the λ-return's gamma and lam, PMPO's alpha and beta."""
    feats = traj["feats"].detach()  # (B, H + 1, F)
    B, H1 = feats.shape[:2]
    H = H1 - 1
    v_logits = heads.value_logits(feats, goal)  # (B, H + 1, bins)
    with torch.no_grad():
        values = heads.twohot.decode(v_logits)
        returns = lambda_returns(traj["rewards"], values, torch.ones(B, H, device=feats.device), cfg.gamma, cfg.lam)
        adv = returns - values[:, :H]
    dist = heads.dist(feats[:, :H], goal)
    with torch.no_grad():
        prior_dist = prior.dist(feats[:, :H], goal)
    logp = dist.log_prob(traj["actions"])
    kl = gaussian_kl(dist, prior_dist)
    p_loss, stats = pmpo_loss(logp.flatten(), adv.flatten(), kl.flatten(), cfg.alpha, cfg.beta)
    v_loss = heads.twohot.loss(v_logits[:, :H], returns).mean()
    stats.update(
        {
            "imagine/return": float(returns[:, 0].mean()),
            "imagine/reward": float(traj["rewards"].mean()),
            "imagine/advantage_mean": float(adv.mean()),
            "imagine/advantage_std": float(adv.std()),
            "imagine/entropy": float(dist.entropy().mean().detach()),
            "imagine/value_loss": float(v_loss.detach()),
        }
    )
    return policy_weight * p_loss + v_loss, stats


def trainable_parameters(heads: AgentHeads) -> list[torch.nn.Parameter]:
    """Phase 2 trains the policy and value heads only (the reward head is the phase-1 model of the data)."""
    return list(heads.policy.parameters()) + list(heads.value.parameters())
