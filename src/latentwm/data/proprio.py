"""The agent's own state as DINO-WM feeds it: proprio channels on every latent token, and actions relative to the
agent.

Proprio frames (model.proprio_dim = P > 0): a frame the model sees is the encoder's latents (N, D) with the frame's
normalized proprio (P,) concatenated to every token -> (N, D + P). DINO-WM embeds the proprio and concatenates the
embedding to each patch; here the model's input Linear (per token) is that embedding, so the raw normalized values
are tiled. The same tensor is the prediction target, so the model predicts the proprio with the frame, and a
predicted frame's proprio is read back as the mean of its tokens' proprio channels (`split_proprio`).

Relative actions (data.relative_actions): each commanded env action of a model step minus the agent's position
(the first `a` proprio channels) at the frame the model step starts from. DINO-WM's Push-T env takes `agent
position + relative action` at every env step; here all frame_skip env actions of a model step are relative to
the position observed at its first frame, the one position every cache stores (an episode rendered every k-th env
step keeps no other), and the one the planner observes before executing the step (`mpc.run_episode` adds it back).
At frame skip 1 the two conventions coincide. The offsets are normalized per env step with statistics computed once
from the cache's actions and proprio (`relative_action_stats`).
"""

from __future__ import annotations

import numpy as np
import torch

from latentwm.data.episodes import NormStats, compute_norm_stats


def attach_proprio(latents: torch.Tensor, proprio: torch.Tensor) -> torch.Tensor:
    """latents (…, N, D), proprio (…, P) normalized -> (…, N, D + P): the proprio on every token."""
    p = proprio.to(latents.dtype).unsqueeze(-2).expand(*latents.shape[:-1], proprio.shape[-1])
    return torch.cat([latents, p], -1)


def split_proprio(frames: torch.Tensor, proprio_dim: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """frames (…, N, D + P) -> (latents (…, N, D), proprio (…, P) = the mean of the tokens' proprio channels);
    proprio_dim 0: (frames, None)."""
    if proprio_dim == 0:
        return frames, None
    return frames[..., :-proprio_dim], frames[..., -proprio_dim:].mean(-2)


def latents_only(frames: torch.Tensor, proprio_dim: int) -> torch.Tensor:
    """frames (…, N, D + P) -> the encoder latents (…, N, D) (what probes and the decoder read)."""
    return frames[..., :-proprio_dim] if proprio_dim else frames


def proprio_stats_of(data_stats: dict, model_cfg) -> NormStats | None:
    """The proprio statistics a model with proprio channels was trained with (its first dataset with proprio, as a
    checkpoint's data_stats hold them); None for a model without them."""
    if not model_cfg.proprio_dim:
        return None
    for d in data_stats["datasets"].values():
        if d.get("proprio") is not None:
            return NormStats.from_dict(d["proprio"])
    raise ValueError("the model takes proprio channels (model.proprio_dim > 0) but its data statistics hold no proprio")


def relative_to_agent(actions: np.ndarray, anchor: np.ndarray) -> np.ndarray:
    """actions (L, k, a) commanded env actions of L model steps, anchor (L, ≥ a) the proprio of each model step's
    first frame -> (L, k, a) offsets from the agent's position (its first `a` channels)."""
    a = actions.shape[-1]
    return actions - anchor[:, None, :a]


def relative_action_stats(cache, dataset: str, stride: int = 1) -> NormStats:
    """Per-env-step mean/std of the relative actions of every episode of `dataset` in `cache`, formed as clips form
    them: every stored frame t starts a model step of `stride` stored frames, whose env actions are taken minus the
    agent position at t (reads only the actions, action masks and proprio). A cache stored every k-th env step
    (stride 1) and one stored at every step (stride k) give the same distribution."""
    rows, masks = [], []
    for i, e in enumerate(cache.entries):
        if e["dataset"] != dataset or e.get("action_dim") is None:
            continue
        m = cache.members(i, ("actions", "action_mask", "proprio"))
        if m.get("proprio") is None:
            raise ValueError(
                f"cache {cache.path}: episode {e['episode_id']} of {dataset!r} has actions but no "
                f"proprio; relative actions (data.relative_actions) need the agent's position"
            )
        acts, known = np.asarray(m["actions"], np.float64), np.asarray(m["action_mask"], bool)
        n = len(acts) - stride + 1  # model steps that fit
        if n < 1:
            continue
        steps = np.arange(n)[:, None] + np.arange(stride)  # (n, stride) stored frames of each model step
        a = acts[steps].reshape(n, -1, int(e["action_dim"]) // int(e.get("frame_skip") or 1))
        if m["proprio"].shape[-1] < a.shape[-1]:
            raise ValueError(
                f"cache {cache.path}: {dataset!r} stores {m['proprio'].shape[-1]} proprio channels, "
                f"fewer than its {a.shape[-1]}-D actions: relative actions cannot be formed"
            )
        rel = relative_to_agent(a, np.asarray(m["proprio"], np.float64)[:n])
        rows.append(rel.reshape(-1, rel.shape[-1]))
        masks.append(np.repeat(known[steps].all(1), rel.shape[1]))
    if not rows:
        raise ValueError(f"cache {cache.path}: dataset {dataset!r} has no episode with actions")
    return compute_norm_stats(rows, masks)


__all__ = [
    "attach_proprio",
    "latents_only",
    "proprio_stats_of",
    "relative_action_stats",
    "relative_to_agent",
    "split_proprio",
]
