"""Receding-horizon MPC against a real environment: observe → encode → plan → execute the first actions → repeat.

Pieces:
- `ActionCodec`: the model's action space ⇄ environment actions. A model step's action is `frame_skip` env actions,
  each normalized with the dataset's per-env-step statistics, concatenated, zero-padded to the model's action_dim
  (exactly `data/clips.py`'s recipe). Bounds map the env's action box into that space (padding pinned to 0). With
  `repeat=True` planners search one env action per model step, held for its `frame_skip` env steps (Push-T: an
  agent target held for 0.5 s): a 2-D instead of a 10-D search per step, which small CPU populations need.
  `relative` (a run trained with data.relative_actions): env actions are offsets from the agent's position at
  the model step's first frame (data/proprio.py); `absolute` adds the observed position back and clips to the box,
  which `run_episode` does at every model-step boundary.
- `LatentObserver`: frames → encoder → latents normalized with the training cache's latent statistics; for a model
  with proprio channels (model.proprio_dim), the frames' normalized proprio attached to every token.
- Policies, all with `reset(goal_frame, info)` and `act(new_frames, info) -> env actions (n, a)` (n = 0: done):
  `MPCPolicy` (a planner on the world model), `RandomPolicy`, `ReplayPolicy` (fixed actions, e.g. the dataset's).
- `run_episode`: resets the env to an `EpisodeGoal`'s start state and alternates `act` and execution, up to
  `max_replans` chunks.

Success (DINO-WM's convention, `dino_wm/planning/mpc.py`): the Push-T test (block within 20 px, block angle within
π/9, agent within 20 px of the goal state's) is evaluated on the state reached at the end of every executed chunk
(every replanning point); an episode succeeds when any of them passes, and it stops there (DINO-WM masks the actions
of finished episodes). The final distance is `state_distance` of the last state (px + px + degrees).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from latentwm.config import PlanConfig
from latentwm.data.episodes import NormStats
from latentwm.data.proprio import attach_proprio, latents_only
from latentwm.envs.pusht import goal_metrics, proprio_from_state
from latentwm.envs.pusht_language import parse_sentence, sentence_fits
from latentwm.planning.base import PlanResult, initial_std, shift_plan
from latentwm.planning.imagine import imagine
from latentwm.planning.plan import PlanProblem, plan
from latentwm.planning.proprio import ProprioGoal, probe_features
from latentwm.planning.state_probe import StateGoal


def _norm_stats(s) -> NormStats:
    return s if isinstance(s, NormStats) else NormStats.from_dict(s)


def derive_seed(*parts: int) -> int:
    """A 62-bit seed that depends on every part (e.g. base seed, goal index, replanning step)."""
    return int(np.random.default_rng([int(p) & 0xFFFFFFFF for p in parts]).integers(2**62))


@dataclass(frozen=True)
class ActionCodec:
    """Model actions (…, A) ⇄ env actions; see the module docstring. `repeat`: planners search (H, a) instead of
    (H, A) (one env action per model step, held for `frame_skip` env steps)."""

    mean: np.ndarray  # (a,) per env step
    std: np.ndarray  # (a,)
    frame_skip: int
    action_dim: int  # the model's A ≥ frame_skip · a
    env_low: np.ndarray  # (a,)
    env_high: np.ndarray  # (a,)
    repeat: bool = True
    relative: bool = False

    @classmethod
    def from_stats(
        cls,
        action_stats,
        frame_skip: int,
        action_dim: int,
        env_low=0.0,
        env_high=512.0,
        repeat: bool = True,
        relative: bool = False,
    ) -> ActionCodec:
        s = _norm_stats(action_stats)
        a = len(s.mean)
        if a * frame_skip > action_dim:
            raise ValueError(
                f"ActionCodec: {a}-D env actions × frame_skip {frame_skip} exceed the model's action_dim {action_dim}"
            )
        lo, hi = (
            np.broadcast_to(np.asarray(env_low, np.float64), (a,)),
            np.broadcast_to(np.asarray(env_high, np.float64), (a,)),
        )
        return cls(
            np.asarray(s.mean, np.float64),
            np.asarray(s.std, np.float64),
            int(frame_skip),
            int(action_dim),
            lo.copy(),
            hi.copy(),
            repeat,
            relative,
        )

    @property
    def env_dim(self) -> int:
        return len(self.mean)

    @property
    def plan_dim(self) -> int:
        """Width of one planned step: a with `repeat`, else the model's A."""
        return self.env_dim if self.repeat else self.action_dim

    # ---- model space ⇄ env space ---------------------------------------------------------------------------
    def normalize(self, env_actions: np.ndarray) -> np.ndarray:
        return ((np.asarray(env_actions, np.float64) - self.mean) / self.std).astype(np.float32)

    def to_model(self, env_actions: np.ndarray) -> torch.Tensor:
        """(k·frame_skip, a) env actions -> (k, A) model actions (as `make_clip` builds them)."""
        n = self.normalize(env_actions).reshape(-1, self.frame_skip * self.env_dim)
        out = np.zeros((len(n), self.action_dim), np.float32)
        out[:, : n.shape[1]] = n
        return torch.from_numpy(out)

    def to_env(self, model_actions) -> np.ndarray:
        """(k, A) model actions -> (k·frame_skip, a) env actions, denormalized and clipped to the env's box
        (relative: offsets from the agent, clipped to the box's extent; `absolute` makes them env actions)."""
        a = torch.as_tensor(model_actions).detach().cpu().double().numpy()[:, : self.frame_skip * self.env_dim]
        env = a.reshape(-1, self.env_dim) * self.std + self.mean
        return np.clip(env, *self._box())

    def absolute(self, env_actions: np.ndarray, agent_pos) -> np.ndarray:
        """(n, a) actions of one model step -> commanded env actions: relative ones plus the agent's position at
        the step's first frame (`agent_pos`, the first `a` proprio channels), clipped to the box; absolute ones
        unchanged."""
        if not self.relative:
            return env_actions
        return np.clip(env_actions + np.asarray(agent_pos, np.float64)[: self.env_dim], self.env_low, self.env_high)

    def _box(self) -> tuple[np.ndarray, np.ndarray]:
        """The action box in env units: the env's, or (relative) every offset that stays inside it."""
        if self.relative:
            return self.env_low - self.env_high, self.env_high - self.env_low
        return self.env_low, self.env_high

    # ---- planning space -------------------------------------------------------------------------------------
    def expand(self, plan_actions: torch.Tensor) -> torch.Tensor:
        """(…, H, plan_dim) -> (…, H, A) (differentiable): tile the held action `frame_skip` times, zero-pad."""
        if not self.repeat:
            return plan_actions
        x = plan_actions.repeat(*([1] * (plan_actions.dim() - 1)), self.frame_skip)  # [a, a, …] per step
        pad = self.action_dim - x.shape[-1]
        return torch.nn.functional.pad(x, (0, pad)) if pad else x

    def bounds(self, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(plan_dim,) low/high in the planning space (normalized env box; model padding pinned to 0)."""
        low, high = self._box()
        lo = ((low - self.mean) / self.std).astype(np.float32)
        hi = ((high - self.mean) / self.std).astype(np.float32)
        if not self.repeat:
            k = self.frame_skip * self.env_dim
            lo = np.concatenate([np.tile(lo, self.frame_skip), np.zeros(self.action_dim - k, np.float32)])
            hi = np.concatenate([np.tile(hi, self.frame_skip), np.zeros(self.action_dim - k, np.float32)])
        return torch.from_numpy(lo).to(device), torch.from_numpy(hi).to(device)

    def hold(self, agent_pos: np.ndarray, horizon: int, device=None) -> torch.Tensor:
        """(H, plan_dim): stay at every step: command the agent's own position `agent_pos` (relative: offset 0)."""
        a = np.zeros((1, self.env_dim)) if self.relative else np.asarray(agent_pos, np.float64).reshape(1, -1)
        step = self.normalize(a)[0] if self.repeat else self.to_model(np.repeat(a, self.frame_skip, 0))[0]
        return torch.as_tensor(np.asarray(step, np.float32), device=device).expand(horizon, -1).clone()


class LatentObserver:
    """uint8 frames (B, H, W, 3) -> (B, N, D) latents on `device`, normalized (x − mean) / std with the latent
    statistics the model was trained with. `encode` must return the encoder's LayerNorm-ed tokens WITHOUT dataset
    statistics (`DinoEncoder.encode` before `set_stats`), or pass stats=None when it already applies them.
    proprio_stats (the training data's proprio NormStats; a model with proprio channels): each frame's proprio
    (B, P) raw, which every call must then give, is normalized and attached to every token -> (B, N, D + P)."""

    def __init__(
        self, encode: Callable[[np.ndarray], torch.Tensor], latent_stats=None, device=None, proprio_stats=None
    ):
        self.encode, self.device = encode, torch.device(device or "cpu")
        self.mean = self.std = None
        if latent_stats is not None:
            s = _norm_stats(latent_stats)
            self.mean = torch.as_tensor(s.mean, dtype=torch.float32, device=self.device)
            self.std = torch.as_tensor(s.std, dtype=torch.float32, device=self.device)
        self.proprio_stats = None if proprio_stats is None else _norm_stats(proprio_stats)

    def __call__(self, frames: np.ndarray, proprio: np.ndarray | None = None) -> torch.Tensor:
        x = torch.as_tensor(self.encode(np.ascontiguousarray(frames))).to(self.device, torch.float32)
        x = x if self.mean is None or self.std is None else (x - self.mean) / self.std  # set together
        if self.proprio_stats is None:
            return x
        if proprio is None or len(proprio) != len(x):
            raise ValueError(
                f"LatentObserver: the model takes proprio channels; give the proprio of each of the "
                f"{len(x)} frames (got {None if proprio is None else len(proprio)})"
            )
        p = torch.from_numpy(self.proprio_stats.normalize(np.asarray(proprio, np.float64))).to(self.device)
        return attach_proprio(x, p)


class Policy(Protocol):
    name: str

    def reset(self, goal_frame: np.ndarray, info: dict, seed: int = 0) -> None: ...

    def act(self, new_frames: list[np.ndarray], info: dict) -> np.ndarray: ...


@dataclass(frozen=True)
class MPCOptions:
    """How an `MPCPolicy` plans, beside the planner settings (PlanConfig)."""

    planner: str | None = None
    """The planner to run (None: cfg.planner); also the policy's name."""
    context: int = 4
    """Observed frames per planning call (at most the model's context_frames − 1)."""
    tau_ctx: float = 1.0
    """Noise level of the observed history (1: clean)."""
    init: str = "hold"
    """The first plan's start: "hold" (command the agent's current position) or "center" (the action box's)."""
    bf16: bool = False
    """Candidate rollouts under bf16 autocast (see `plan`)."""

    def __post_init__(self):
        if self.init not in ("hold", "center"):
            raise ValueError(f"MPCPolicy: init must be 'hold' or 'center', got {self.init!r}")


class MPCPolicy:
    """Plan with the world model at every call; return the first `exec_steps` planned model steps as env actions.

    History: the latents of the frames at model-step boundaries (the start frame, then every `frame_skip`-th env
    frame) and the model actions executed between them; the last `context` of them are observed once per planning
    call into one KV cache shared by all candidates. options (`MPCOptions`): the planner, context, tau_ctx, init and
    bf16. init "hold": the first plan starts from commanding the agent's current position (`info["agent_pos"]`,
    part of gym-pusht's observation), the analogue of DINO-WM's zero mean for its relative actions; "center": the
    middle of the action box. Later plans warm-start from the previous plan shifted by the executed steps
    (cfg.warm_start). bf16: candidate rollouts under bf16 autocast (see `plan`).
    proprio_probe: a `ProprioProbe`; with cfg.proprio_weight > 0 and the goal's proprio (`info["goal_proprio"]` at
    reset, raw units) the cost gains DINO-WM's proprio term. state_probe: a `StateProbe`; with cfg.state_weight > 0
    the cost gains its pose term on the last predicted frame, toward the goal state (`info["goal_state"]` at reset,
    7-D; without it, the probe's reading of the goal frame). cfg.visual_weight scales the latent cost.

    Text goals: with `info["goal_text"]` at reset (a sentence embedding (E,), `imagine.embed_sentences`), the goal
    image is not used. At the first call the model imagines `horizon` frames from the observation under the sentence
    (`imagine`, K = cfg.imagine_steps, guidance cfg.text_guidance, seeded by the episode's seed) and the last one
    becomes the goal latent (`imagined`: the frames, `imagine_seconds`); the rest of MPC is unchanged. The goal
    state and proprio in `info` are then ignored (the sentence is all the policy knows): the state probe's term
    reads its goal from the imagined goal latents, the proprio probe's from the model's features of the imagined
    goal frame (the clean pass over the observation and the imagined frames, without actions).
    """

    imagined: torch.Tensor | None  # the text goal's imagined frames (set by reset, then by imagine_goal)

    def __init__(
        self,
        model,
        observer: LatentObserver,
        codec: ActionCodec,
        cfg: PlanConfig,
        options: MPCOptions = MPCOptions(),
        proprio_probe=None,
        state_probe=None,
    ):
        self.model, self.observer, self.codec, self.cfg = model, observer, codec, cfg
        self.name = options.planner or cfg.planner
        self.context = max(1, min(options.context, model.cfg.context_frames - 1))
        self.tau_ctx, self.init, self.bf16 = options.tau_ctx, options.init, options.bf16
        self.horizon = cfg.horizon
        self.exec_steps = cfg.executed_steps
        self.device = next(model.parameters()).device
        self.channels = model.cfg.proprio_dim  # proprio in the frames: the cost reads the model's own prediction
        use = proprio_probe is not None and cfg.proprio_weight > 0 and not self.channels
        self.probe = proprio_probe.to(self.device) if use else None
        use = state_probe is not None and cfg.state_weight > 0
        self.state_probe = state_probe.to(self.device) if use else None
        if cfg.visual_weight == 0 and self.state_probe is None:
            raise ValueError(
                "MPCPolicy: plan.visual_weight is 0 but no state probe is given (plan.state_weight > 0 "
                "and state_probe=...): the cost would have no goal for the block"
            )
        self.low, self.high = codec.bounds(self.device)
        self.plan_seconds: list[float] = []
        self.results: list[PlanResult] = []

    def reset(self, goal_frame: np.ndarray, info: dict, seed: int = 0) -> None:
        self.seed, self.calls = seed, 0
        self.goal_text = info.get("goal_text")
        self.imagined, self.imagine_seconds = None, 0.0
        self.latents: list[torch.Tensor] = []
        self.actions: list[torch.Tensor] = []  # model actions executed between consecutive latents
        self.prev: torch.Tensor | None = None
        self.plan_seconds, self.results = [], []
        self.proprio = self.state = None
        if self.goal_text is not None:  # the goal is imagined at the first call
            self.goal = None
            return
        if self.channels and "goal_proprio" not in info:
            raise ValueError(
                "MPCPolicy: the model takes proprio channels; the goal's proprio is needed "
                "(info['goal_proprio'] at reset)"
            )
        self.goal = self.observer(goal_frame[None], np.asarray(info["goal_proprio"])[None] if self.channels else None)[
            0
        ]
        if self.probe is not None:
            if "goal_proprio" not in info:
                raise ValueError("MPCPolicy: a proprio probe needs the goal's proprio (info['goal_proprio'] at reset)")
            self.proprio = ProprioGoal(self.probe, self.probe.normalize(info["goal_proprio"]), self.cfg.proprio_weight)
        if self.state_probe is not None:
            w = self.cfg.state_weight
            self.state = (
                StateGoal.from_state(self.state_probe, info["goal_state"], w)
                if "goal_state" in info
                else StateGoal.from_latents(self.state_probe, latents_only(self.goal, self.channels), w)
            )

    def imagine_goal(self, history: torch.Tensor) -> None:
        """The text goal: `horizon` frames imagined from `history` (1, C, N, D) under the sentence; the last is the
        goal latent, and the probes' goals are read from it (see the class docstring)."""
        t0 = time.perf_counter()
        gen = torch.Generator(device=self.device).manual_seed(derive_seed(self.seed, 0x1A61E))
        text = torch.as_tensor(self.goal_text, dtype=torch.float32, device=self.device).reshape(1, -1)
        with torch.no_grad():
            self.imagined = imagine(
                self.model,
                history,
                text,
                self.horizon,
                self.cfg.imagine_steps,
                self.cfg.text_guidance,
                self.tau_ctx,
                gen,
            )[0]
            self.goal = self.imagined[-1]
            if self.probe is not None:
                h = self.model.clean_hidden(torch.cat([history, self.imagined[None]], 1))[:, -1]
                self.proprio = ProprioGoal(
                    self.probe, self.probe(probe_features(self.model, h))[0], self.cfg.proprio_weight
                )
        if self.state_probe is not None:
            self.state = StateGoal.from_latents(
                self.state_probe, latents_only(self.goal, self.channels), self.cfg.state_weight
            )
        self.imagine_seconds = time.perf_counter() - t0

    def act(self, new_frames: list[np.ndarray], info: dict) -> np.ndarray:
        if new_frames:
            self.latents.extend(self.observer(np.stack(new_frames), info.get("frame_proprio")))
        C = min(self.context, len(self.latents))
        history = torch.stack(self.latents[-C:])[None]
        if self.goal is None:
            self.imagine_goal(history)
        assert self.goal is not None  # set by reset, or by imagine_goal for a text goal
        hist_actions = torch.stack(self.actions[len(self.actions) - (C - 1) :])[None] if C > 1 else None
        if self.prev is not None and self.cfg.warm_start:
            init = shift_plan(self.prev, self.exec_steps)
        elif self.init == "hold" and "agent_pos" in info:
            init = self.codec.hold(info["agent_pos"], self.horizon, self.device)
        else:
            init = None
        s = derive_seed(self.seed, self.calls)
        gen = torch.Generator(device=self.device).manual_seed(s)
        problem = PlanProblem(
            history,
            self.goal,
            self.low,
            self.high,
            history_actions=hist_actions,
            init=init,
            expand=self.codec.expand,
            proprio=self.proprio,
            state=self.state,
        )
        res = plan(
            self.model,
            problem,
            self.cfg,
            planner=self.name,
            generator=gen,
            seed=s,
            tau_ctx=self.tau_ctx,
            bf16=self.bf16,
        )
        self.calls += 1
        self.plan_seconds.append(res.seconds)
        self.results.append(res)
        self.prev = res.actions
        chosen = self.codec.expand(res.actions[: self.exec_steps]).detach()
        self.actions.extend(chosen.to(self.device))
        return self.codec.to_env(chosen)


class RandomPolicy:
    """Random actions on the same budget: each call draws `exec_steps` model steps from the planners' initial
    sampling distribution (Gaussian of std cfg.init_std around holding the agent's position, clipped to the
    bounds, in the same planning space), i.e. what a planner does without a model."""

    name = "random"

    def __init__(self, codec: ActionCodec, cfg: PlanConfig):
        self.codec, self.cfg = codec, cfg
        self.exec_steps = cfg.executed_steps
        self.low, self.high = codec.bounds()

    def reset(self, goal_frame: np.ndarray, info: dict, seed: int = 0) -> None:
        self.gen = torch.Generator().manual_seed(derive_seed(seed, 0x7A4D))

    def act(self, new_frames: list[np.ndarray], info: dict) -> np.ndarray:
        if "agent_pos" in info:
            mean = self.codec.hold(info["agent_pos"], self.exec_steps)
        else:
            mean = ((self.low + self.high) / 2).expand(self.exec_steps, -1)
        std = initial_std(mean, self.low, self.high, self.cfg.init_std)
        a = mean + std * torch.randn(mean.shape, generator=self.gen)
        a = torch.max(torch.min(a, self.high), self.low)
        return self.codec.to_env(self.codec.expand(a))


class ReplayPolicy:
    """Executes fixed env actions once (e.g. the dataset's own actions from the start state: the open-loop oracle
    that produced the goal), then stops."""

    def __init__(self, env_actions: np.ndarray, name: str = "dataset_actions"):
        self.env_actions, self.name = np.asarray(env_actions, np.float64), name

    def reset(self, goal_frame: np.ndarray, info: dict, seed: int = 0) -> None:
        self.done = False

    def act(self, new_frames: list[np.ndarray], info: dict) -> np.ndarray:
        if self.done:
            return np.zeros((0, self.env_actions.shape[-1]))
        self.done = True
        return self.env_actions


@dataclass(frozen=True)
class EpisodeGoal:
    """One goal-reaching task: where the episode starts and what it is scored against, with what the policy is
    told about the goal at reset."""

    start_state: np.ndarray  # (7,) the env is reset to it exactly
    goal_state: np.ndarray  # (7,) scored against; handed to the policy as info["goal_state"] (a state probe's term)
    goal_frame: np.ndarray  # (H, W, 3) uint8, the goal image
    proprio: np.ndarray | None = None
    """The goal state's proprio (raw units), handed to the policy as info["goal_proprio"]."""
    text: np.ndarray | torch.Tensor | None = None
    """A sentence embedding (E,), handed over as info["goal_text"]: an `MPCPolicy` then plans toward its imagined
    goal instead of `goal_frame` (the episode is still scored against `goal_state`)."""
    sentence: str | None = None
    """The goal in words (a Push-T language sentence), scored beside the image test: `sentence_success` = the change
    from `start_state` fits it (`pusht_language.sentence_fits`) at the end of any executed chunk. Not told to the
    policy (`text` is its embedding)."""


def run_episode(
    env,
    policy,
    goal: EpisodeGoal,
    max_replans: int,
    frame_skip: int,
    seed: int = 0,
    stop_on_success: bool = True,
    record: bool = False,
) -> dict:
    """One goal-reaching episode from `goal.start_state` (the env is reset to it exactly), toward `goal`.

    Each of at most `max_replans` chunks: policy.act(frames at model-step boundaries since the last call, info with
    "frame_proprio": those frames' proprio) -> env actions, executed (a policy whose `codec` is relative gets the
    agent's position at each model step's first frame added, `ActionCodec.absolute`); then DINO-WM's Push-T test
    on the state reached (see the module docstring).
    Returns success, success_step (env steps when first successful, or None), final_distance, final
    block_pos_diff / angle_diff / agent_pos_diff, start_distance and start_success (the goal test already passed
    at the start), seconds_per_plan (mean planning wall time per call, 0 for policies that do not plan), plans,
    env_steps, sentence_success (with `goal.sentence`: the words fit the change at a chunk's end; None for a
    sentence the Push-T language cannot read, or without one) and `frames` (T, H, W, 3) of the executed episode
    when `record`.
    """
    goal_state = goal.goal_state
    frame, info = env.reset(state=goal.start_state)
    told: dict[str, Any] = {"goal_state": np.asarray(goal_state, np.float64)}  # what the policy is told at reset
    if goal.proprio is not None:
        told["goal_proprio"] = goal.proprio
    if goal.text is not None:
        told["goal_text"] = goal.text
    policy.reset(goal.goal_frame, {**info, **told}, seed=seed)
    m0 = goal_metrics(env.state(), goal_state)
    start_success = bool(m0["success"])
    boundary, proprio, frames, steps = [frame], [proprio_from_state(env.state())], [frame] if record else [], 0
    success, success_step, joint = False, None, False
    words = goal.sentence if goal.sentence is not None and parse_sentence(goal.sentence) is not None else None
    said: bool | None = None if words is None else False  # the words fit the change at some chunk's end
    codec = getattr(policy, "codec", None)
    for _ in range(max_replans):
        env_actions = policy.act(boundary, {**info, "frame_proprio": np.stack(proprio)})
        boundary, proprio = [], []
        if len(env_actions) == 0:
            break
        for i, a in enumerate(env_actions):
            if codec is not None and i % frame_skip == 0:
                anchor = env.state()[:2]  # the agent's position at the model step's first frame
            frame, _, _, _, info = env.step(a if codec is None else codec.absolute(a, anchor))
            steps += 1
            if record:
                frames.append(frame)
            if (i + 1) % frame_skip == 0:
                boundary.append(frame)
                proprio.append(proprio_from_state(env.state()))
        now = goal_metrics(env.state(), goal_state)
        joint = joint or now["success_joint"]
        if words is not None:
            said = said or bool(sentence_fits(words, goal.start_state, env.state()))
        if now["success"]:
            success, success_step = True, steps
            if stop_on_success:
                break
    m = goal_metrics(env.state(), goal_state)
    secs = getattr(policy, "plan_seconds", [])
    return {
        "success": success,
        "success_joint": bool(joint),
        "success_step": success_step,
        "final_distance": float(m["state_dist"]),
        "block_pos_diff": m["block_pos_diff"],
        "angle_diff": m["angle_diff"],
        "agent_pos_diff": m["agent_pos_diff"],
        "start_distance": float(m0["state_dist"]),
        "start_success": start_success,
        "seconds_per_plan": float(np.mean(secs)) if secs else 0.0,
        "plans": len(secs),
        "env_steps": steps,
        "sentence_success": said,
        "frames": np.stack(frames) if record else None,
    }
