"""Agents in the real gym-pusht environment: the heads' policy acting from encoded observations vs random actions.

Every method starts from the same seeded env resets. Per model step the policy sees the features of the newest
frame after a clean pass of the dynamics model over the last `context` observed frames and the actions taken between
them; it acts with its mode (deterministic) and the model action is executed as `frame_skip` env actions. Scored:
success (the env's own test: goal-zone coverage > 95 %), the best coverage reached, the return (sum of rewards).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from latentwm.config import PlanConfig, RLConfig
from latentwm.envs.pusht import PushTEnv, proprio_from_state
from latentwm.eval.visualize import save_gif
from latentwm.planning.mpc import ActionCodec, LatentObserver, RandomPolicy, derive_seed
from latentwm.rl.heads import AgentHeads, frame_features


class HeadsPolicy:
    """Acts with `heads`' policy (mode) on features of the observed history."""

    def __init__(self, model, heads: AgentHeads, observer: LatentObserver, codec: ActionCodec, context: int, name: str):
        self.model, self.heads, self.observer, self.codec, self.name = model, heads, observer, codec, name
        self.context = max(1, min(context, model.cfg.context_frames))

    def reset(self, frame: np.ndarray, info: dict, seed: int = 0) -> None:
        self.latents = [self.observer(frame[None], info.get("frame_proprio"))[0]]
        self.actions: list[torch.Tensor] = []

    @torch.no_grad()
    def act(self, frames: list[np.ndarray], info: dict) -> np.ndarray:
        if frames:
            self.latents.extend(self.observer(np.stack(frames), info.get("frame_proprio")))
        C = min(self.context, len(self.latents))
        z = torch.stack(self.latents[-C:])[None]  # (1, C, N, D)
        A = self.model.cfg.action_dim
        acts = torch.zeros(1, C, A, device=z.device)
        if C > 1:
            acts[0, : C - 1] = torch.stack(self.actions[-(C - 1) :])
        mask = torch.zeros(1, C, dtype=torch.bool, device=z.device)
        mask[0, : C - 1] = True
        h = self.model.clean_hidden(z, acts, mask)
        a = self.heads.dist(frame_features(h[:, -1], self.model.layout)).mode()[0]
        self.actions.append(a)
        return self.codec.to_env(a[None])


class _Random:
    """Random model steps from the planners' initial distribution around the agent (see planning.mpc)."""

    def __init__(self, codec: ActionCodec, seed: int):
        held = ActionCodec(
            codec.mean,
            codec.std,
            codec.frame_skip,
            codec.action_dim,
            codec.env_low,
            codec.env_high,
            relative=codec.relative,
        )
        self.codec = held
        self.policy, self.seed, self.name = RandomPolicy(held, PlanConfig(horizon=1, exec_steps=1)), seed, "random"

    def reset(self, frame, info, seed: int = 0):
        self.policy.reset(frame, info, seed=seed)

    def act(self, frames, info):
        return self.policy.act(frames, info)


def run_agent_episode(env, policy, seed: int, max_model_steps: int, frame_skip: int, record: bool = False) -> dict:
    """One episode from a seeded reset: `policy.act(new boundary frames, info with their "frame_proprio")` per
    model step; relative actions (the policy's codec) get the agent's position at the step's first frame added."""
    frame, info = env.reset(seed=seed)
    policy.reset(frame, {**info, "frame_proprio": proprio_from_state(env.state())[None]}, seed=seed)
    frames, boundary, ret, best, success = ([frame] if record else []), [], 0.0, info["coverage"], False
    for _ in range(max_model_steps):
        step_info = {**info, "frame_proprio": proprio_from_state(env.state())[None]}
        anchor = env.state()[:2]
        for i, a in enumerate(policy.act(boundary, step_info)):
            frame, r, term, _, info = env.step(policy.codec.absolute(a, anchor))
            ret += r
            best = max(best, info["coverage"])
            success = success or bool(info["is_success"])
            if record:
                frames.append(frame)
            if (i + 1) % frame_skip == 0:
                boundary = [frame]
        if success:
            break
    return {
        "success": success,
        "max_coverage": float(best),
        "return": float(ret),
        "frames": np.stack(frames) if record else None,
    }


def evaluate_agents(
    model,
    policies: dict[str, AgentHeads],
    observer: LatentObserver,
    codec: ActionCodec,
    cfg: RLConfig,
    *,
    image_size: int = 96,
    random_baseline: bool = True,
    log=print,
) -> dict:
    """{method: {success_rate, max_coverage, return}} for every heads policy (and random) on the same resets.

    From cfg: the policies' history (context), cfg.eval_episodes seeded resets (cfg.seed) of at most
    cfg.eval_max_steps model steps each; the first cfg.videos episodes of every method are saved as GIFs under
    cfg.out_dir/eval/videos."""
    seed, out_dir = cfg.seed, Path(cfg.out_dir) / "eval"
    methods = {name: HeadsPolicy(model, h, observer, codec, cfg.context, name) for name, h in policies.items()}
    if random_baseline:
        methods["random"] = _Random(codec, seed)
    env = PushTEnv(image_size=image_size)
    rows: dict[str, list[dict]] = {m: [] for m in methods}
    try:
        for i in range(cfg.eval_episodes):
            s = derive_seed(seed, i) % (2**31)
            for name, pol in methods.items():
                with torch.random.fork_rng(devices=[]):
                    r = run_agent_episode(env, pol, s, cfg.eval_max_steps, codec.frame_skip, record=i < cfg.videos)
                frames = r.pop("frames")
                if frames is not None:
                    save_gif(out_dir / "videos" / f"episode{i:02d}_{name}.gif", frames, fps=10)
                rows[name].append(r)
            log(
                f"  episode {i:2d}: "
                + " | ".join(
                    f"{n} {'✓' if rows[n][-1]['success'] else '✗'} cov {rows[n][-1]['max_coverage']:.2f}"
                    for n in methods
                )
            )
    finally:
        env.close()
    return {
        n: {k: float(np.mean([r[k] for r in rs])) for k in ("success", "max_coverage", "return")}
        for n, rs in rows.items()
    }
