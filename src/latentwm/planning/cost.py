"""Goal costs on DINO features and the latent objective every planner minimizes.

`LatentGoalObjective` observes the history ONCE per planning call (one KV cache) and scores any number of candidate
action sequences against it: the cache is broadcast to the candidates (`KVCache.expand`, the history's keys/values
are not copied per candidate) and the sampling noise is shared by all candidates (common random numbers), so cost
differences come from the actions, not from the noise.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from latentwm.conditions import Conditions, FrameConditions
from latentwm.data.proprio import latents_only, split_proprio
from latentwm.planning.proprio import probe_features
from latentwm.rollout import Sampling, frame_hidden, observe, rollout


def latent_cost(pred: torch.Tensor, goal: torch.Tensor, kind: str = "mse", all_frames: bool = False) -> torch.Tensor:
    """pred (P, H, N, D) predicted latents, goal (N, D) or (1, N, D) -> cost (P,).

    Default (DINO-WM): mean squared error over all patch tokens of the last predicted frame. all_frames weights
    every predicted frame, later frames more: weights 2^h for h = 0..H−1, normalized to sum 1 (DINO-WM's objective
    mode "all" with base 2), which rewards getting there early and staying.
    """
    goal = goal.reshape(1, 1, *goal.shape[-2:]).to(pred.dtype)
    if kind == "mse":
        per = (pred - goal).pow(2).mean(dim=(-2, -1))
    elif kind == "l1":
        per = (pred - goal).abs().mean(dim=(-2, -1))
    elif kind == "cosine":
        per = 1 - F.cosine_similarity(pred, goal.expand_as(pred), dim=-1).mean(-1)
    else:
        raise ValueError(f"plan.cost must be mse, l1 or cosine, got {kind!r}")
    if not all_frames:
        return per[:, -1]
    w = 2.0 ** torch.arange(per.shape[1], device=per.device, dtype=per.dtype)
    return (per * w).sum(1) / w.sum()


ONE_STEP = Sampling(steps=1)
"""Planning's default sampling: K = 1 (one pass per frame), clean context."""


@dataclass(frozen=True)
class GoalCost:
    """What a plan's cost is made of. kind: the latent cost ("mse", "l1", "cosine"; `latent_cost`); all_frames:
    weight every predicted frame (2^h) instead of the last alone; visual_weight scales the latent cost (0: left
    out, the cost is the other terms alone); proprio_weight: DINO-WM's term on the model's own predicted proprio
    channels (models with proprio channels only); proprio: a `planning.proprio.ProprioGoal` (a probe on the last
    predicted frame's features); state: a `planning.state_probe.StateGoal` (pose term on the last predicted
    frame's latents)."""

    kind: str = "mse"
    all_frames: bool = False
    visual_weight: float = 1.0
    proprio_weight: float = 1.0
    proprio: Any = None
    state: Any = None

    @classmethod
    def of_plan(cls, cfg, proprio=None, state=None) -> GoalCost:
        """The cost a PlanConfig names (cost, cost_all_frames, visual_weight, proprio_weight) with these terms."""
        return cls(cfg.cost, cfg.cost_all_frames, cfg.visual_weight, cfg.proprio_weight, proprio, state)


class LatentGoalObjective:
    """cost(actions (P, H, A)) -> (P,) for candidate action sequences after one observed history.

    context: (1, C, N, D) observed latents (normalized); context_actions: (1, C − 1, A) actions taken between them
    (or None); goal: (N, D). Actions are in the model's (normalized, frame-skip-concatenated) action space.
    sampling: how predictions are drawn (K, tau_ctx; grad is set per call). cost: its terms and weights
    (`GoalCost`): the latent cost on the last predicted frame (or all frames) plus, when given, the proprio
    probe's term (on the features of the last predicted frame's clean pass) and the state probe's pose term (on
    its latents). A model with proprio channels (model.proprio_dim = P > 0; frames (N, D + P), data/proprio.py):
    the latent cost is taken on the D encoder channels and DINO-WM's proprio term, proprio_weight · MSE between the
    predicted frame's proprio (its tokens' mean) and the goal's, is added: the model's own prediction of the agent.
    cache: the history already observed into a KV cache of batch 1 (then it is not observed again; `context` only
    gives shapes and the frame count C that positions the actions). seed: the noise shared by every candidate.
    """

    def __init__(
        self,
        model,
        context: torch.Tensor,
        goal: torch.Tensor,
        context_actions: torch.Tensor | None = None,
        sampling: Sampling = ONE_STEP,
        cost: GoalCost = GoalCost(),
        seed: int = 0,
        cache=None,
    ):
        self.model, self.context, self.goal, self.proprio = model, context, goal, cost.proprio
        self.state, self.visual_weight = cost.state, float(cost.visual_weight)
        self.channels = int(getattr(model.cfg, "proprio_dim", 0))
        self.proprio_weight = float(cost.proprio_weight) if self.channels else 0.0
        if self.visual_weight == 0 and self.proprio is None and self.state is None and self.proprio_weight == 0:
            raise ValueError("LatentGoalObjective: visual_weight 0 without a proprio or state term: the cost is empty")
        self.sampling, self.kind, self.all_frames = sampling, cost.kind, cost.all_frames
        self.C = context.shape[1]
        A = model.cfg.action_dim
        self.context_actions = (
            torch.zeros(1, self.C - 1, A, device=context.device)
            if context_actions is None
            else context_actions.reshape(1, self.C - 1, -1)
        )
        ctx_mask = torch.full((1, self.C - 1), context_actions is not None, device=context.device)
        self.ctx_mask = ctx_mask
        self.generator = torch.Generator(device=context.device).manual_seed(seed)
        if cache is None:
            with torch.no_grad():  # once per planning call
                history = Conditions(self.context_actions, ctx_mask)
                cache = observe(model, context, history, sampling.tau_ctx, generator=self.generator)
        elif cache.batch_size != 1:
            raise ValueError(
                f"LatentGoalObjective: the history cache must hold one history, got batch {cache.batch_size}"
            )
        self.cache = cache
        self._noise: torch.Tensor | None = None
        self.evaluations = 0

    def noise(self, horizon: int) -> torch.Tensor:
        """(1, H, N, D) noise shared by every candidate and every iteration of this planning call."""
        if self._noise is None or self._noise.shape[1] < horizon:
            N, D = self.context.shape[-2:]
            self._noise = torch.randn((1, horizon, N, D), generator=self.generator, device=self.context.device)
        return self._noise[:, :horizon]

    def predict(self, actions: torch.Tensor, grad: bool = False, features: bool = False):
        """actions (P, H, A) -> predicted latents (P, H, N, D); with `features` also (P, F) `probe_features` of
        the last predicted frame, from its clean pass (τ = 1: what the frame would write into the cache)."""
        P, H, _ = actions.shape
        full = torch.cat([self.context_actions.expand(P, -1, -1), actions], 1)  # (P, C − 1 + H, A)
        mask = torch.cat([self.ctx_mask.expand(P, -1), torch.ones(P, H, dtype=torch.bool, device=actions.device)], 1)
        self.evaluations += P
        cache = self.cache.expand(P)
        x = rollout(
            self.model,
            self.context,
            H,
            Conditions(full, mask),
            dataclasses.replace(self.sampling, grad=grad),
            noise=self.noise(H),
            generator=self.generator,
            cache=cache,
        )
        if not features:
            return x
        last = self.C + H - 1  # its action is full[:, last − 1]; the cache holds frames 0 .. last − 1
        with torch.set_grad_enabled(grad):
            h = frame_hidden(
                self.model, cache, x[:, -1], FrameConditions(full[:, last - 1], mask[:, last - 1]), commit=False
            )
        return x, probe_features(self.model, h)

    def __call__(self, actions: torch.Tensor, grad: bool = False) -> torch.Tensor:
        if self.proprio is None:
            x = self.predict(actions, grad=grad)
            cost = self._visual(x)
        else:
            x, feats = self.predict(actions, grad=grad, features=True)
            cost = self._visual(x) + self.proprio(feats)
        if self.state is not None:
            cost = cost + self.state(latents_only(x[:, -1], self.channels))
        return cost

    def _visual(self, x: torch.Tensor) -> torch.Tensor:
        """visual_weight · latent cost (P,) of predictions x (P, H, N, D) (+ the proprio-channel term); exactly
        `latent_cost` at weight 1 for a model without proprio channels."""
        lat, prop = split_proprio(x, self.channels)
        goal_lat, goal_prop = split_proprio(self.goal, self.channels)
        c = x.new_zeros(x.shape[0])
        if self.visual_weight:
            v = latent_cost(lat, goal_lat, self.kind, self.all_frames)
            c = v if self.visual_weight == 1 else self.visual_weight * v
        if prop is not None and self.proprio_weight:
            assert goal_prop is not None  # the goal has the frames' proprio channels
            c = c + self.proprio_weight * (prop[:, -1] - goal_prop.reshape(1, -1).to(prop.dtype)).pow(2).mean(-1)
        return c
