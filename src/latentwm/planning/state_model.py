"""The privileged rung of the planning ladder: a dynamics model of the simulator's true state instead of pixels.

Between "the simulator itself as the model" (planning/cost_quality.py) and "our latent model" sits a learned model
that sees what no pixel model sees: the exact Push-T state. If it plans well and the latent model does not, the
latent model (or its encoder) is the bottleneck; if it fails too, the data or the planner budget is.

- `StateDynamics`: an MLP per model step, f(s_t, a_t) -> s_{t+1} as a residual on state features [agent x, y,
  block x, y, sin θ, cos θ, agent vx, vy] (normalized), with the model-space actions a world model of the same run
  gets (the frame-skip-concatenated, normalized, absolute or relative actions of `LatentClipDataset`).
- `fit_state_dynamics`: trains it on the stored states and actions of the cache's training clips.
- `StatePolicy`: receding-horizon CEM with the same PlanConfig budget as `MPCPolicy`, the MLP rolled out over the
  horizon, cost = block px + agent px + angle in degrees of the last predicted state to the goal state
  (`envs.pusht.state_distance`, the cost of the simulator's own state rung). It reads the env's true state at
  every call: privileged, and labelled so wherever it is reported.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn as nn

from latentwm.config import PlanConfig
from latentwm.data.clips import LatentClipDataset
from latentwm.planning.base import shift_plan
from latentwm.planning.cem import plan_cem
from latentwm.planning.mpc import ActionCodec, derive_seed

SCALE = torch.tensor([256.0, 256.0, 256.0, 256.0, 1.0, 1.0, 200.0, 200.0])
"""Feature scales: arena pixels, unit circle, px/s."""


def state_features(state: torch.Tensor) -> torch.Tensor:
    """(…, 7) Push-T states -> (…, 8) normalized features [ax, ay, bx, by, sin θ, cos θ, vx, vy]."""
    s = state.float()
    f = torch.stack(
        [
            s[..., 0] - 256,
            s[..., 1] - 256,
            s[..., 2] - 256,
            s[..., 3] - 256,
            torch.sin(s[..., 4]),
            torch.cos(s[..., 4]),
            s[..., 5],
            s[..., 6],
        ],
        -1,
    )
    return f / SCALE.to(f.device)


def state_distance_of(features: torch.Tensor, goal_state: torch.Tensor) -> torch.Tensor:
    """(…, 8) features vs a (7,) goal state -> (…,) block px + agent px + wrapped angle degrees."""
    f = features * SCALE.to(features.device)
    g = goal_state.to(features)
    agent = (f[..., :2] + 256 - g[:2]).norm(dim=-1)
    block = (f[..., 2:4] + 256 - g[2:4]).norm(dim=-1)
    d = torch.remainder(torch.atan2(f[..., 4], f[..., 5]) - g[4], 2 * math.pi)
    return block + agent + torch.rad2deg(torch.minimum(d, 2 * math.pi - d))


class StateDynamics(nn.Module):
    """f(features (B, 8), actions (B, A)) -> next features (B, 8), a residual MLP."""

    def __init__(self, action_dim: int, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(8 + action_dim, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, 8),
        )

    def forward(self, features: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return features + self.net(torch.cat([features, actions.to(features)], -1))

    def rollout(self, features: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """features (P, 8), actions (P, H, A) -> the last predicted features (P, 8)."""
        for h in range(actions.shape[1]):
            features = self(features, actions[:, h])
        return features


def _pairs(clips: LatentClipDataset, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(features (M, 8), actions (M, A), next features (M, 8)) of `n` random training clips of 2 frames."""
    gen = np.random.default_rng(seed)
    f, a, nxt = [], [], []
    for i in gen.integers(0, 1 << 30, n):
        c = clips[int(i)]
        if c.states is None:
            raise ValueError(f"state model: the cache {clips.cache.path} stores no simulator states")
        if c.action_mask is not None and bool(c.action_mask[0]):
            assert c.actions is not None  # a clip has an action mask only with its actions
            s = torch.as_tensor(c.states)
            f.append(state_features(s[0]))
            nxt.append(state_features(s[1]))
            a.append(c.actions[0])
    return torch.stack(f), torch.stack(a), torch.stack(nxt)


def fit_state_dynamics(
    clips: LatentClipDataset, steps: int = 3000, pairs: int = 20000, batch: int = 512, seed: int = 0, log=print
) -> tuple[StateDynamics, dict]:
    """Train on `pairs` (state, action, next state) of the training clips (clip_len 2: one model step); returns
    (model, {"train_mse", "pairs", "steps"}) with the last 100 steps' mean feature MSE."""
    x, a, y = _pairs(clips, pairs, seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = StateDynamics(a.shape[-1])
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        gen, losses = torch.Generator().manual_seed(seed), []
        for _ in range(steps):
            idx = torch.randint(len(x), (batch,), generator=gen)
            loss = (model(x[idx], a[idx]) - y[idx]).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
    log(f"state model: {len(x)} pairs, {steps} steps, feature MSE {np.mean(losses[-100:]):.5f}")
    return model.eval().requires_grad_(False), {
        "train_mse": float(np.mean(losses[-100:])),
        "pairs": len(x),
        "steps": steps,
    }


class StatePolicy:
    """CEM on `StateDynamics` toward the goal state; `act` reads the env's true state (`info["state"]`)."""

    name = "state_model"
    prev: torch.Tensor | None  # the last plan (set by reset, then by act)
    plan_seconds: list[float]

    def __init__(self, model: StateDynamics, codec: ActionCodec, cfg: PlanConfig):
        self.model, self.codec, self.cfg = model, codec, cfg
        self.exec_steps = cfg.executed_steps
        self.low, self.high = codec.bounds()

    def reset(self, goal_frame: np.ndarray, info: dict, seed: int = 0) -> None:
        self.goal = torch.as_tensor(np.asarray(info["goal_state"], np.float64))
        self.seed, self.calls, self.prev, self.plan_seconds = seed, 0, None, []

    def act(self, new_frames: list[np.ndarray], info: dict) -> np.ndarray:
        f0 = state_features(torch.as_tensor(np.asarray(info["state"], np.float64)))[None]

        def cost(x: torch.Tensor, grad: bool = False) -> torch.Tensor:
            return state_distance_of(self.model.rollout(f0.expand(len(x), -1), self.codec.expand(x)), self.goal)

        init = (
            shift_plan(self.prev, self.exec_steps)
            if self.prev is not None
            else self.codec.hold(info["state"][:2], self.cfg.horizon)
        )
        gen = torch.Generator().manual_seed(derive_seed(self.seed, self.calls))
        t0 = time.perf_counter()
        res = plan_cem(
            cost,
            self.cfg.horizon,
            self.low,
            self.high,
            self.cfg.cem,
            init_std=self.cfg.init_std,
            init=init,
            generator=gen,
        )
        self.plan_seconds.append(time.perf_counter() - t0)
        self.calls += 1
        self.prev = res.actions
        return self.codec.to_env(self.codec.expand(res.actions[: self.exec_steps]))


__all__ = ["StateDynamics", "StatePolicy", "fit_state_dynamics", "state_distance_of", "state_features"]
