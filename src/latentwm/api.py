"""The Python API: what a notebook does with a trained model, in four calls — encode frames, load a model, roll out a
future, plan toward a goal. The command-line tools are built from the same pieces.

    import latentwm

    wm = latentwm.load("runs/demo/train/checkpoints/best.pt")      # model + its frozen encoder + statistics
    z = wm.encode(frames, proprio)                                  # (T, N, F) in the model's normalized space
    future = wm.rollout(z[-4:], horizon=8, actions=wm.actions(env_actions, proprio[-4:]))   # (8, N, F)
    step = wm.plan(frames[-4:], goal_frame, proprio[-4:], goal_proprio)                     # env actions to execute

F = the encoder's D (+ the model's proprio channels P, when it was trained with them). Everything is deterministic
given `seed`. Planning uses the run's own planner settings (`exp.plan`; pass `plan_cfg` to change them) and the
same observer, action codec and planners as `latentwm plan`.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from latentwm.conditions import Conditions
from latentwm.config import ConfigError, PlanConfig
from latentwm.data.proprio import latents_only
from latentwm.planning.evaluate import WorldModelRun, planning_session
from latentwm.planning.plan import PlanProblem
from latentwm.planning.plan import plan as plan_actions
from latentwm.rollout import Sampling, rollout


class WorldModel:
    """A trained latent world model with the encoder its latents came from (verified against the run's record)."""

    def __init__(self, run: WorldModelRun, encoder=None, plan_cfg: PlanConfig | None = None):
        self.run, self.model = run, run.model
        self.plan_cfg = plan_cfg or run.exp.plan
        self._session = planning_session(run, self.plan_cfg, encoder=encoder)
        self.device = next(self.model.parameters()).device

    @classmethod
    def load(cls, checkpoint: str | os.PathLike, device: str = "cpu", encoder=None) -> WorldModel:
        """A run folder (its latest checkpoint), a step folder, `best.pt` or an exported `.safetensors`: the EMA
        weights. encoder: None builds the run's encoder from its config (a DINO name or a `save_pretrained` folder)
        and refuses one whose weights differ from those the training latents came from; or a callable
        (B, H, W, 3) uint8 -> (B, N, D) LayerNorm-ed tokens."""
        return cls(WorldModelRun.load(checkpoint, device=device), encoder)

    @property
    def proprio_dim(self) -> int:
        return int(self.model.cfg.proprio_dim)

    @property
    def frame_skip(self) -> int:
        """Env steps per model frame."""
        return int(self.run.frame_skip)

    def encode(self, frames: np.ndarray, proprio: np.ndarray | None = None) -> torch.Tensor:
        """(T, H, W, 3) uint8 frames (and their (T, P) raw proprio, for a model with proprio channels) -> (T, N, F)
        latents normalized with the training statistics, on the model's device."""
        if self.proprio_dim and proprio is None:
            raise ConfigError(
                f"encode: the model takes {self.proprio_dim} proprio channels per frame; pass each frame's proprio"
            )
        with torch.no_grad():
            return self._session.observer(np.asarray(frames), None if not self.proprio_dim else np.asarray(proprio))

    def actions(self, env_actions: np.ndarray, proprio: np.ndarray | None = None) -> torch.Tensor:
        """Env actions of k model steps ((k · frame_skip, a), as the episodes store them) -> (k, A) model actions.
        A model trained on relative actions needs the raw proprio (k, P) at each step's first frame: the agent
        position is subtracted as in training."""
        codec = self._session.codec
        acts = np.asarray(env_actions, np.float64).reshape(-1, codec.frame_skip, codec.env_dim)
        if codec.relative:
            if proprio is None or len(proprio) != len(acts):
                raise ConfigError(
                    f"actions: the model was trained on actions relative to the agent; pass the proprio at the "
                    f"first frame of each of the {len(acts)} model steps"
                )
            acts = acts - np.asarray(proprio, np.float64)[:, None, : codec.env_dim]
        return codec.to_model(acts.reshape(-1, codec.env_dim)).to(self.device)

    def rollout(
        self,
        context: torch.Tensor,
        horizon: int,
        actions: torch.Tensor | None = None,
        sample_steps: int | None = None,
        seed: int = 0,
    ) -> torch.Tensor:
        """The `horizon` frames (H, N, F) the model predicts after `context` (C, N, F), under model actions (C − 1
        + H, A) (`actions`: those between the context frames, then one per predicted frame) or none
        (action-free). sample_steps: K denoising steps per frame (default: the run's rollout setting)."""
        if context.dim() != 3:
            raise ConfigError(f"rollout: context must be (C, N, F), got {tuple(context.shape)}")
        want = context.shape[0] - 1 + horizon
        if actions is not None and tuple(actions.shape[:1]) != (want,):
            raise ConfigError(
                f"rollout: actions must be (C − 1 + H = {want}, A) for a context of {context.shape[0]} frames and "
                f"horizon {horizon}, got {tuple(actions.shape)}"
            )
        gen = torch.Generator(device=self.device).manual_seed(seed)
        with torch.no_grad():
            return rollout(
                self.model,
                context[None].to(self.device),
                horizon,
                Conditions(None if actions is None else actions[None].to(self.device)),
                Sampling(steps=sample_steps or self.run.exp.rollout.sample_steps),
                generator=gen,
            )[0]

    def plan(
        self,
        frames: np.ndarray,
        goal_frame: np.ndarray,
        proprio: np.ndarray | None = None,
        goal_proprio: np.ndarray | None = None,
        history_actions: torch.Tensor | None = None,
        seed: int = 0,
    ) -> np.ndarray:
        """One receding-horizon planning call with the run's planner (`plan_cfg.planner`, its budget and cost):
        the observed model-step frames (C, H, W, 3) (oldest first; their raw proprio (C, P) for a proprio model;
        `history_actions` (C − 1, A) the model actions taken between them, None: unknown) toward `goal_frame`
        (H, W, 3) (and its proprio) -> the env actions to execute next ((exec_steps · frame_skip, a): the plan's
        first `plan.exec_steps` model steps). A model trained on relative actions returns offsets from the agent's
        position at each model step's first frame (add it before sending them to the robot, as `latentwm plan`
        does)."""
        s, cfg = self._session, self.plan_cfg
        frames = np.asarray(frames)
        c = min(s.context, len(frames))
        history = self.encode(frames[-c:], None if proprio is None else np.asarray(proprio)[-c:])[None]
        goal = self.encode(
            np.asarray(goal_frame)[None], None if goal_proprio is None else np.asarray(goal_proprio)[None]
        )
        if history_actions is not None:
            history_actions = history_actions[len(history_actions) - (c - 1) :][None].to(self.device) if c > 1 else None
        low, high = s.codec.bounds(self.device)
        # by convention the first proprio channels are the agent's position: start from holding it
        init = (
            None
            if proprio is None
            else s.codec.hold(np.asarray(proprio)[-1, : s.codec.env_dim], cfg.horizon, self.device)
        )
        problem = PlanProblem(
            history, goal[0], low, high, history_actions=history_actions, init=init, expand=s.codec.expand
        )
        res = plan_actions(
            self.model,
            problem,
            cfg,
            generator=torch.Generator(device=self.device).manual_seed(seed),
            seed=seed,
            bf16=s.bf16,
        )
        return s.codec.to_env(s.codec.expand(res.actions[: s.exec_steps]).detach())

    def latents_only(self, x: torch.Tensor) -> torch.Tensor:
        """(…, N, F) -> (…, N, D): the encoder channels without the proprio ones (for decoders and probes)."""
        return latents_only(x, self.proprio_dim)


def load(checkpoint: str | os.PathLike, device: str = "cpu", encoder=None) -> WorldModel:
    """`WorldModel.load`: a trained run with its frozen encoder."""
    return WorldModel.load(checkpoint, device=device, encoder=encoder)


__all__ = ["WorldModel", "load"]
