"""A Push-T state probe on encoder latents: the pose a frame shows, read from its (N, D) tokens.

Why: a planning failure is either the model's (its predicted frames are wrong) or the cost's (the latent MSE does
not rank reached frames by how close they are to the goal, `planning/cost_quality.py`). `StateProbe` separates
the two. It reads agent x, y, block x, y (arena px) and the block angle from a frame's normalized ENCODER latents
(as the cache stores them and the dynamics model predicts them), not from the model's hidden features, so it applies
equally to true and predicted frames and to any model:

- `pose_errors(probe, pred, truth)`: the state error of predicted frames per horizon (probe(pred) vs
  probe(truth)), beside baselines (copy-last, context average) on the same frames.
- `StateGoal`: a planning cost term on the last predicted frame (`LatentGoalObjective(state=...)`, `MPCPolicy`'s
  `state_probe` with `plan.state_weight`); with `plan.visual_weight = 0` the planner sees the pose cost alone, so
  its success measures the model, not the latent cost.

Architecture: a small per-token MLP (D → `token_hidden` → `channels`, shared over tokens) → flatten (the token
order keeps the position) → MLP → 6 outputs: agent x, y, block x, y standardized with the training frames'
statistics, and the block angle as (cos θ, sin θ) (periodic; the T block has no rotational symmetry, so θ is defined
on [0, 2π)).
On the cpu demo's cache (8 × 8 tokens × 64, 216 training episodes) the nonlinear token map and more frames matter:
held-out agent / block RMSE and angle error 134 px / 60 px / 76° with a linear token map on 6k frames, 73 / 34 / 39
with `STATE_PROBE_CONFIG` (36k frames, 4000 steps; the train-mean pose: 165 / 137 / 94).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from latentwm.config import ProbeConfig
from latentwm.data.clips import ClipOptions, LatentClipDataset
from latentwm.engine.loop import NonFiniteGuard, optimizer_step
from latentwm.model.layers import mlp
from latentwm.planning.proprio import read_probe, save_probe

STATE_PROBE_FILE = "state_probe.safetensors"
STATE_PROBE_CONFIG = ProbeConfig(steps=4000, clips=3072)
"""The default fit: reading frames is cheap (no model pass), so far more of them than the proprio probe's."""
_PARTS = ("agent_px", "block_px", "angle_deg")


class StateProbe(nn.Module):
    """(…, N, D) normalized latents -> (…, 6) [agent x, y, block x, y (standardized), cos θ, sin θ].

    `pos_mean` / `pos_std` (4,) are the training frames' statistics of [agent x, y, block x, y] (buffers, saved).
    """

    pos_mean: torch.Tensor
    pos_std: torch.Tensor
    metrics: dict  # set by save / load / train_state_probe

    def __init__(
        self,
        num_tokens: int,
        latent_dim: int,
        channels: int = 8,
        hidden: int = 256,
        pos_mean=None,
        pos_std=None,
        token_hidden: int = 64,
    ):
        super().__init__()
        self.num_tokens, self.latent_dim = int(num_tokens), int(latent_dim)
        self.channels, self.hidden, self.token_hidden = int(channels), int(hidden), int(token_hidden)
        self.proj = nn.Sequential(
            nn.Linear(self.latent_dim, self.token_hidden), nn.SiLU(), nn.Linear(self.token_hidden, self.channels)
        )
        self.net = mlp(self.num_tokens * self.channels, self.hidden, 6)
        self.register_buffer("pos_mean", torch.zeros(4) if pos_mean is None else torch.as_tensor(pos_mean).float())
        self.register_buffer("pos_std", torch.ones(4) if pos_std is None else torch.as_tensor(pos_std).float())

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        if tuple(latents.shape[-2:]) != (self.num_tokens, self.latent_dim):
            raise ValueError(
                f"state probe: latents (…, {self.num_tokens}, {self.latent_dim}) expected, got {tuple(latents.shape)}"
            )
        return self.net(self.proj(latents.float()).flatten(-2))

    @staticmethod
    def unit(out: torch.Tensor) -> torch.Tensor:
        """Outputs with the angle part scaled to a unit vector (then |Δ(cos, sin)|² = 2 − 2 cos Δθ)."""
        return torch.cat([out[..., :4], F.normalize(out[..., 4:6], dim=-1, eps=1e-6)], -1)

    def encode_state(self, states) -> torch.Tensor:
        """(…, ≥ 5) Push-T states (px, radians) -> (…, 6) targets in the probe's output space."""
        s = torch.as_tensor(states, dtype=torch.float64, device=self.pos_mean.device)
        pos = (s[..., :4] - self.pos_mean.double()) / self.pos_std.double()
        return torch.cat([pos, torch.cos(s[..., 4:5]), torch.sin(s[..., 4:5])], -1).float()

    def to_pose(self, out: torch.Tensor) -> torch.Tensor:
        """(…, 6) outputs -> (…, 5) [agent x, y, block x, y (px), θ ∈ [0, 2π)]."""
        pos = out[..., :4] * self.pos_std + self.pos_mean
        theta = torch.remainder(torch.atan2(out[..., 5], out[..., 4]), 2 * math.pi)
        return torch.cat([pos, theta[..., None]], -1)

    def predict_pose(self, latents: torch.Tensor) -> torch.Tensor:
        """(…, N, D) latents -> (…, 5) [agent x, y, block x, y (px), block angle θ (radians, [0, 2π))]."""
        return self.to_pose(self(latents))

    # ---- persistence -------------------------------------------------------------------------------------------
    def meta(self) -> dict:
        return dict(
            kind="state_probe",
            num_tokens=self.num_tokens,
            latent_dim=self.latent_dim,
            channels=self.channels,
            hidden=self.hidden,
            token_hidden=self.token_hidden,
        )

    def save(self, path: str | os.PathLike, metrics: dict | None = None) -> Path:
        """Atomic write of `path` (.safetensors) and its .json (meta + metrics; they become `self.metrics`)."""
        return save_probe(self, path, metrics)

    @classmethod
    def load(cls, path: str | os.PathLike, device="cpu") -> StateProbe:
        """A probe saved by `save` (a file, or the folder holding state_probe.safetensors)."""
        meta, state = read_probe(path, STATE_PROBE_FILE, "state probe")
        probe = cls(
            meta["num_tokens"],
            meta["latent_dim"],
            channels=meta["channels"],
            hidden=meta["hidden"],
            token_hidden=meta["token_hidden"],
        )
        probe.load_state_dict(state)
        probe.metrics = meta.get("metrics", {})
        return probe.to(device).eval().requires_grad_(False)


@dataclass
class StateGoal:
    """The pose term of a planning cost: weight · mean over the 6 outputs of (unit(probe(latents)) − goal)²
    (standardized positions; the angle as a unit (cos, sin), i.e. 2 − 2 cos Δθ over its two entries)."""

    probe: StateProbe
    goal: torch.Tensor  # (6,) in the probe's output space
    weight: float = 1.0

    @classmethod
    def from_state(cls, probe: StateProbe, goal_state, weight: float = 1.0) -> StateGoal:
        """The goal from a Push-T state (7,) (the episode's true goal pose)."""
        return cls(probe, probe.encode_state(goal_state), weight)

    @classmethod
    def from_latents(cls, probe: StateProbe, goal_latents: torch.Tensor, weight: float = 1.0) -> StateGoal:
        """The goal read by the probe from the goal frame's latents (N, D)."""
        with torch.no_grad():
            return cls(probe, probe.unit(probe(goal_latents)).float(), weight)

    def __call__(self, latents: torch.Tensor) -> torch.Tensor:
        """latents (P, N, D) of each candidate's last predicted frame -> (P,)."""
        out = self.probe.unit(self.probe(latents))
        return self.weight * (out - self.goal.to(out.device, out.dtype)).pow(2).mean(-1)


# ---- errors ----------------------------------------------------------------------------------------------------
def pose_gap(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(…, 5) poses -> (…, 3): agent distance (px), block distance (px), wrapped angle difference (degrees)."""
    a, b = a.double(), b.double()
    d = torch.remainder(a[..., 4] - b[..., 4], 2 * math.pi)
    ang = torch.rad2deg(torch.minimum(d, 2 * math.pi - d))
    return torch.stack([(a[..., :2] - b[..., :2]).norm(dim=-1), (a[..., 2:4] - b[..., 2:4]).norm(dim=-1), ang], -1)


def _per_horizon(gap: torch.Tensor, valid: torch.Tensor | None) -> dict:
    """gap (B, H, 3) -> {part: [H] means over the batch (valid entries only)}."""
    w = torch.ones(gap.shape[:2], dtype=gap.dtype, device=gap.device) if valid is None else valid.to(gap)
    m = (gap * w[..., None]).sum(0) / w.sum(0).clamp_min(1)[:, None]  # (H, 3)
    return {p: [float(v) for v in m[:, i]] for i, p in enumerate(_PARTS)}


def _check4(name: str, x: torch.Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"pose errors: {name} must be (B, H, N, D) latents, got {tuple(x.shape)}")


@torch.no_grad()
def pose_errors(
    probe: StateProbe,
    pred: torch.Tensor,
    truth: torch.Tensor,
    baselines: dict[str, torch.Tensor] | None = None,
    valid: torch.Tensor | None = None,
) -> dict:
    """The state error of predicted frames: mean distance per horizon between probe(pred) and probe(truth).

    pred, truth (B, H, N, D) normalized latents; baselines {name: latents broadcastable to truth} (e.g. copy-last
    (B, 1, N, D), a context average) scored the same way; valid (B, H) bool (None: all). Returns {"agent_px": [H],
    "block_px": [H], "angle_deg": [H]} and, with baselines, "baselines": {name: the same}. The probe was fitted on
    true frames: a blurred or otherwise off-distribution prediction is read as something (often near the mean pose),
    so compare with the baselines and with `pose_errors_vs_states` on the true frames (the probe's own error).
    """
    _check4("pred", pred)
    _check4("truth", truth)
    ref = probe.predict_pose(truth)
    out = _per_horizon(pose_gap(probe.predict_pose(pred), ref), valid)
    if baselines:
        out["baselines"] = {
            k: _per_horizon(pose_gap(probe.predict_pose(v.expand_as(truth)), ref), valid) for k, v in baselines.items()
        }
    return out


@torch.no_grad()
def pose_errors_vs_states(
    probe: StateProbe, latents: torch.Tensor, states: torch.Tensor, valid: torch.Tensor | None = None
) -> dict:
    """The probe's reading of latents (B, H, N, D) against simulator states (B, H, ≥ 5): per-horizon mean agent
    px, block px, angle degrees (on true frames: the probe's own error, the floor under `pose_errors`)."""
    _check4("latents", latents)
    return _per_horizon(pose_gap(probe.predict_pose(latents), torch.as_tensor(states).to(latents.device)), valid)


# ---- training --------------------------------------------------------------------------------------------------
def _frames(data: LatentClipDataset, n_clips: int, seed: int, cache_dir) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, N, D) fp16 latents and (M, 7) states of the frames of up to n_clips clips drawn with `seed`: training clips
    are random (n_clips of them, the train split draws any number; epoch `seed` of its stream), evaluation clips
    a seeded subset of the fixed grid."""
    if data.split == "train":
        idx = [(seed, i) for i in range(n_clips)]
    else:
        idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n_clips].tolist()
    lats, states = [], []
    for j in idx:
        c = data[j]
        if c.states is None or c.latents is None:
            continue
        if c.states.shape[-1] < 5:
            raise ValueError(
                f"state probe: the cache {cache_dir} has {c.states.shape[-1]}-D states, a Push-T pose "
                "needs [agent x, y, block x, y, angle, ...]"
            )
        lats.append(c.latents.half())  # as the cache stores them: half the memory (the probe computes in fp32)
        states.append(c.states)
    if not lats:
        raise ValueError(f"state probe: the cache {cache_dir} records no simulator states (Push-T episodes have them)")
    return torch.cat(lats), torch.cat(states)


def train_state_probe(
    cache_dir: str | os.PathLike,
    exp,
    cfg: ProbeConfig = STATE_PROBE_CONFIG,
    seed: int = 0,
    clip_len: int | None = None,
    channels: int = 8,
    device="cpu",
    log=print,
) -> tuple[StateProbe, dict]:
    """Fit a `StateProbe` on the latents of the cache's training frames; score held-out frames.

    exp: an ExperimentConfig (its data section gives the clip split: frame_skip, eval_fraction, seed). The frames of
    `cfg.clips` clips per split are read once, then the probe trains `cfg.steps` Adam steps on minibatches of
    frames. Deterministic by `seed`. Returns (probe, metrics): held-out RMSE of agent and block positions (px) and
    mean block angle error (degrees), each beside the train-mean baseline's.
    """
    d = exp.data
    opts = ClipOptions(
        frame_skip=d.frame_skip, action_dim=exp.model.action_dim, eval_fraction=d.eval_fraction, seed=d.seed, text=False
    )  # encoder latents only
    # the ignores: LatentClipDataset takes an os.PathLike too, but its annotation says `LatentCache | str`
    train = LatentClipDataset(cache_dir, clip_len or d.clip_len, "train", opts)  # type: ignore[arg-type]
    held = LatentClipDataset(cache_dir, clip_len or d.clip_len, "eval", opts)  # type: ignore[arg-type]
    dev = torch.device(device)
    x, s = (t.to(dev) for t in _frames(train, cfg.clips, seed, cache_dir))
    pos = s[:, :4].float()
    with torch.random.fork_rng(devices=[]):  # the same probe for the same seed, whatever ran before
        torch.manual_seed(seed)
        probe = StateProbe(x.shape[1], x.shape[2], channels, cfg.hidden, pos.mean(0), pos.std(0).clamp_min(1e-3))
    probe = probe.to(dev)
    train_mse = _fit(probe, x, probe.encode_state(s), cfg, seed)
    metrics = {"train_frames": int(len(x)), "steps": cfg.steps, "train_mse": train_mse}
    if len(held):
        xe, se = (t.to(dev) for t in _frames(held, cfg.clips, seed, cache_dir))
        metrics.update(_heldout_metrics(probe, xe, se, probe.to_pose(probe.encode_state(s).mean(0))))
        log(
            f"state probe: held-out agent RMSE {metrics['agent_rmse_px']:.1f} px (mean: "
            f"{metrics['agent_baseline_rmse_px']:.1f}), block {metrics['block_rmse_px']:.1f} px "
            f"({metrics['block_baseline_rmse_px']:.1f}), angle {metrics['angle_err_deg']:.1f}° "
            f"({metrics['angle_baseline_err_deg']:.1f}°); {len(x)} train / {len(xe)} held-out frames"
        )
    probe.metrics = metrics
    return probe, metrics


def _fit(probe: StateProbe, x: torch.Tensor, y: torch.Tensor, cfg: ProbeConfig, seed: int) -> float:
    """cfg.steps Adam steps (cosine schedule) on random minibatches of frames x (M, N, D) → targets y (M, 6), under
    the loop core's non-finite policy; returns the last minibatch's MSE."""
    params = list(probe.parameters())
    opt = torch.optim.Adam(params, lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps)
    guard = NonFiniteGuard("state probe", cfg.max_nonfinite, field="probe.max_nonfinite")
    g = torch.Generator(device="cpu").manual_seed(seed + 1)
    probe.train()
    loss = torch.zeros(())
    for step in range(cfg.steps):
        i = torch.randint(len(x), (min(cfg.batch_size, len(x)),), generator=g).to(x.device)
        loss = (probe(x[i]) - y[i]).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        optimizer_step(opt, params, None, guard, step, sched=sched)
    probe.eval().requires_grad_(False)  # frozen from here on (planning differentiates through it, not into it)
    return float(loss.detach())


@torch.no_grad()
def _heldout_metrics(probe: StateProbe, x: torch.Tensor, states: torch.Tensor, mean_pose: torch.Tensor) -> dict:
    """Held-out agent / block RMSE (px) and mean angle error (°), and those of the constant train-mean pose."""
    pose = torch.cat([probe.predict_pose(x[i : i + 1024]) for i in range(0, len(x), 1024)])  # bounded memory
    gap = pose_gap(pose, states)
    base = pose_gap(mean_pose.expand(len(states), -1), states)

    def summary(g):
        return (float(g[:, 0].pow(2).mean().sqrt()), float(g[:, 1].pow(2).mean().sqrt()), float(g[:, 2].mean()))

    (a, b, t), (a0, b0, t0) = summary(gap), summary(base)
    return dict(
        heldout_frames=int(len(x)),
        agent_rmse_px=a,
        agent_baseline_rmse_px=a0,
        block_rmse_px=b,
        block_baseline_rmse_px=b0,
        angle_err_deg=t,
        angle_baseline_err_deg=t0,
    )


__all__ = [
    "STATE_PROBE_CONFIG",
    "STATE_PROBE_FILE",
    "StateGoal",
    "StateProbe",
    "pose_errors",
    "pose_errors_vs_states",
    "pose_gap",
    "train_state_probe",
]
