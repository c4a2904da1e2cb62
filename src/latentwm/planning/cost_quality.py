"""Can a goal cost drive Push-T planning at all? A cost measured with the real simulator as a perfect world model.

Two figures per cost (`benchmarks/bench_plan_cost.py`, the demo report's `encoder.cost_quality`):

- rank correlation: `samples` random plans of `horizon` model steps from each goal's start (the planners' initial
  distribution: the agent holding its position plus `init_std` noise in normalized action space) are executed in
  the simulator; Spearman correlation, per goal, between the cost of the reached frame and the true state distance
  to the goal (block px + agent px + angle degrees), averaged over goals. A cost a planner can use correlates.
- CEM on the simulator: the plan section's CEM settings, up to 2 plans of `horizon` model steps per goal, candidates
  scored by executing them in the simulator and applying the cost; DINO-WM's success test on the reached state.
  When this fails, no world model trained on those latents can plan well: the encoder is the bottleneck.

Costs: `latent` (MSE of the normalized encoder tokens of the last frame: what planning uses), `latent_raw` (the
LayerNorm-ed tokens before per-channel statistics, as DINO-WM compares them), `pixel` (MSE of raw frames) and
`state` (the true state distance: the planner's ceiling); `latent+proprio` (PROPRIO_COST, asked for by name):
DINO-WM's objective, the latent cost plus the proprio term, with the agent's true proprio where a model with
proprio channels plans on its predicted one (the encoder's ceiling under the cost such a model actually uses).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from latentwm.config import ExperimentConfig, PlanConfig
from latentwm.data.episodes import NormStats, load_episode
from latentwm.envs.pusht import PushTEnv, goal_metrics, proprio_from_state
from latentwm.planning.cem import plan_cem
from latentwm.planning.evaluate import held_out_episodes, sample_goals
from latentwm.planning.mpc import ActionCodec, LatentObserver

COSTS = ("latent", "latent_raw", "pixel", "state")
PROPRIO_COST = "latent+proprio"
"""The latent cost + plan.proprio_weight × the mean squared difference of the agent's normalized proprio (x, y, vx,
vy) from the goal's (`planning/cost.py`'s term for a model with proprio channels, on the true state); needs the
observer's proprio statistics (`LatentObserver(..., proprio_stats=...)`)."""


def _ranks(x) -> np.ndarray:
    """Ranks 0..n-1 with ties given their average rank (a constant sequence has constant ranks)."""
    x = np.asarray(x, dtype=np.float64)
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return (first + (counts - 1) / 2)[inv]


def spearman(a, b) -> float:
    """Spearman rank correlation of two 1-D sequences, ties averaged (0 when either is constant)."""
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def advance_plan(sim: PushTEnv, codec: ActionCodec, plan: torch.Tensor) -> np.ndarray:
    """Execute a (H, plan_dim) planning-space plan in `sim` (relative actions anchored at the agent's position at
    each model step's first frame, as `mpc.run_episode` executes them); returns the last frame."""
    env = codec.to_env(codec.expand(plan))
    if not codec.relative:
        last = sim.advance(env)
        assert last is not None  # rendered: advance's default
        return last
    chunks = env.reshape(-1, codec.frame_skip, env.shape[-1])
    for i, chunk in enumerate(chunks):
        sim.advance(codec.absolute(chunk, sim.state()[:2]), render=i == len(chunks) - 1)
    return sim.frame()


class SimCosts:
    """Executes (P, H, k) planning-space candidates from a state in a private simulator; returns every cost asked
    for, the true state distance ("state") and the block's alone ("block": px + degrees) of the reached states.
    proprio_weight: the weight of PROPRIO_COST's proprio term (plan.proprio_weight)."""

    def __init__(self, codec: ActionCodec, observer: LatentObserver, image_size: int, proprio_weight: float = 1.0):
        self.codec, self.observer, self.sim = codec, observer, PushTEnv(image_size=image_size)
        self.proprio_weight = float(proprio_weight)

    def goal_latent(self, frame: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 goal frame -> (N, D) normalized latents (the encoder channels alone: the proprio term
        reads the goal state, not channels attached to the latents)."""
        raw = torch.as_tensor(self.observer.encode(frame[None])).float()
        assert self.observer.mean is not None and self.observer.std is not None  # cost_quality's observer has them
        return ((raw - self.observer.mean) / self.observer.std)[0]

    def __call__(self, start_state, candidates: torch.Tensor, goal_frame, goal_latent, goal_state, costs=COSTS) -> dict:
        reached, metrics, states = [], [], []
        for c in candidates:
            self.sim.reset(state=start_state)
            reached.append(advance_plan(self.sim, self.codec, c))
            states.append(self.sim.state().copy())
            metrics.append(goal_metrics(states[-1], goal_state))
        frames = np.stack(reached)  # (P, H, W, 3)
        out = {"state": np.asarray([m["state_dist"] for m in metrics])}
        # the block's own distance (px + degrees): a reference like "state", without the agent
        out["block"] = np.asarray([m["block_pos_diff"] + math.degrees(m["angle_diff"]) for m in metrics])
        if "latent" in costs or "latent_raw" in costs or PROPRIO_COST in costs:
            raw = self.observer.encode(frames).float()  # (P, N, D) LayerNorm-ed tokens, before dataset statistics
            # cost_quality's observer carries the latent statistics
            assert self.observer.mean is not None and self.observer.std is not None
            lat = (raw - self.observer.mean) / self.observer.std
            goal_raw = goal_latent * self.observer.std + self.observer.mean
            out["latent"] = ((lat - goal_latent) ** 2).mean((1, 2)).cpu().numpy()  # the observer may be on CUDA
            out["latent_raw"] = ((raw - goal_raw) ** 2).mean((1, 2)).cpu().numpy()
        if "pixel" in costs:
            out["pixel"] = ((frames.astype(np.float32) - goal_frame.astype(np.float32)) ** 2).mean((1, 2, 3))
        if PROPRIO_COST in costs:
            stats = self.observer.proprio_stats
            if stats is None:
                raise ValueError(f"cost_quality: the {PROPRIO_COST!r} cost needs the observer's proprio statistics")
            reached_p = stats.normalize(proprio_from_state(np.stack(states)).astype(np.float64))  # (P, 4)
            goal_p = stats.normalize(proprio_from_state(np.asarray(goal_state)[None]).astype(np.float64))  # (1, 4)
            out[PROPRIO_COST] = out["latent"] + self.proprio_weight * ((reached_p - goal_p) ** 2).mean(1)
        return out

    def close(self) -> None:
        self.sim.close()


@dataclass(frozen=True)
class CostQualitySettings:
    samples: int = 96
    """Random plans per goal for the rank correlation."""
    cem: bool = True
    """Also run CEM on the simulator (the slower half)."""
    max_plans: int = 2
    """CEM plans of plan.horizon model steps per goal (DINO-WM's replanning, stopped at success)."""


def cost_quality(
    goals: list,
    codec: ActionCodec,
    observer: LatentObserver,
    plan_cfg: PlanConfig,
    costs=COSTS,
    settings: CostQualitySettings = CostQualitySettings(),
    log=print,
) -> dict:
    """Rank correlation and CEM-on-simulator success of each cost over `goals` (`planning.evaluate.sample_goals`).

    observer: the encoder with the latent statistics the costs are normalized with (its `mean`/`std` must be set).
    Returns {"per_cost": {cost: {rank_corr, cem_on_simulator_success, cem_on_simulator_final_distance}},
    "goals", "samples", "start_distance", "per_goal": [...]}.
    """
    planned = tuple(costs)  # CEM runs on these; "state" is always scored, as the reference of the correlation
    costs = planned if "state" in planned else (*planned, "state")
    sim = SimCosts(codec, observer, goals[0].goal_frame.shape[0], plan_cfg.proprio_weight)
    env = PushTEnv(image_size=goals[0].goal_frame.shape[0])
    corr: dict[str, list[float]] = {c: [] for c in costs}
    cem: dict[str, dict[str, list[float]]] = {c: {"success": [], "final_distance": []} for c in costs}
    per_goal = []
    try:
        for g in goals:
            goal_latent = sim.goal_latent(g.goal_frame)
            cands = random_plans(codec, g, plan_cfg, settings.samples)
            got = sim(g.start_state, cands, g.goal_frame, goal_latent, g.goal_state, costs)
            for c in costs:
                corr[c].append(spearman(got[c], got["state"]))
            row = {"goal": g.index, **{f"{c}_rank_corr": corr[c][-1] for c in costs}}
            if settings.cem:
                for c in planned:
                    ok, m = _cem_on_sim(sim, env, codec, g, goal_latent, plan_cfg, c, settings.max_plans)
                    cem[c]["success"].append(ok)
                    cem[c]["final_distance"].append(m["state_dist"])
                    row.update(
                        {
                            f"{c}_cem_success": ok,
                            f"{c}_cem_final_distance": m["state_dist"],
                            f"{c}_cem_block_px": m["block_pos_diff"],
                            f"{c}_cem_joint": m["success_joint"],
                        }
                    )
            per_goal.append(row)
            log(
                "goal {}: rank corr {}".format(g.index, " ".join(f"{c} {corr[c][-1]:.2f}" for c in costs))
                + (
                    " | CEM-on-sim "
                    + " ".join(
                        f"{c} {'✓' if cem[c]['success'][-1] else '✗'} {cem[c]['final_distance'][-1]:.0f}"
                        for c in planned
                    )
                    if settings.cem
                    else ""
                )
            )
    finally:
        sim.close()
        env.close()
    per_cost = {c: {"rank_corr": float(np.mean(corr[c]))} for c in costs}
    if settings.cem:
        for c in planned:
            per_cost[c].update(
                cem_on_simulator_success=float(np.mean(cem[c]["success"])),
                cem_on_simulator_final_distance=float(np.mean(cem[c]["final_distance"])),
            )
    return {
        "per_cost": per_cost,
        "goals": len(goals),
        "samples": settings.samples,
        "start_distance": float(np.mean([goal_metrics(g.start_state, g.goal_state)["state_dist"] for g in goals])),
        "per_goal": per_goal,
    }


def random_plans(codec: ActionCodec, g, cfg: PlanConfig, n: int) -> torch.Tensor:
    """(n, H, plan_dim) candidates from the planners' initial distribution around holding the agent's position
    (seeded by the goal's index: every cost scored on a goal sees the same candidates)."""
    low, high = codec.bounds()
    gen = torch.Generator().manual_seed(g.index)
    mean = codec.hold(g.start_state[:2], cfg.horizon)
    noise = cfg.init_std * torch.randn((n, *mean.shape), generator=gen)
    return torch.max(torch.min(mean + noise, high), low)


def _cem_on_sim(
    sim: SimCosts, env: PushTEnv, codec: ActionCodec, g, goal_latent, cfg: PlanConfig, cost: str, max_plans: int
) -> tuple[bool, dict]:
    """CEM with the simulator as the model under `cost`; (success at any replanning point, `goal_metrics` of the
    last state)."""
    low, high = codec.bounds()
    env.reset(state=g.start_state)
    m = goal_metrics(env.state(), g.goal_state)
    for rep in range(max_plans):
        s0 = env.state().copy()

        def objective(x, grad=False, s0=s0):
            return torch.as_tensor(sim(s0, x, g.goal_frame, goal_latent, g.goal_state, (cost,))[cost])

        res = plan_cem(
            objective,
            cfg.horizon,
            low,
            high,
            cfg.cem,
            init_std=cfg.init_std,
            init=codec.hold(s0[:2], cfg.horizon),
            generator=torch.Generator().manual_seed(1000 * g.index + rep),
        )
        advance_plan(env, codec, res.actions)
        m = goal_metrics(env.state(), g.goal_state)
        if m["success"]:
            return True, m
    return False, m


def encoder_cost_quality(
    encode,
    episodes_dir,
    exp: ExperimentConfig,
    num_goals: int = 8,
    settings: CostQualitySettings = CostQualitySettings(),
    costs=("latent",),
    stat_frames: int = 2000,
    log=print,
) -> dict:
    """`cost_quality` of an encoder on a folder of Push-T episodes, before any latent cache exists (the demo scores
    its encoder right after pretraining it, and the random one beside it).

    encode: uint8 frames (B, H, W, 3) -> (B, N, D) LayerNorm-ed tokens (`DinoEncoder.encode` without stats).
    Latent statistics come from `stat_frames` frames evenly strided over the training episodes, action statistics
    from their actions (proprio statistics from their states, for PROPRIO_COST); goals are `exp.plan`'s protocol on
    the held-out episodes (`exp.data` split).
    """
    d = exp.data
    held = held_out_episodes(episodes_dir, None, d.eval_fraction, d.seed)
    train = sorted(set(Path(episodes_dir).glob("episode_*.npz")) - set(held))
    eps = [load_episode(p) for p in train]
    frames = [np.asarray(e.frames[e.cameras[0]]) for e in eps]
    total = sum(len(f) for f in frames)
    stride = max(1, total // stat_frames)
    sample = np.concatenate([f[::stride] for f in frames])
    lat = torch.cat([torch.as_tensor(encode(sample[i : i + 256])).float().cpu() for i in range(0, len(sample), 256)])
    lat = lat.reshape(-1, lat.shape[-1]).double()
    stats = NormStats(mean=lat.mean(0).numpy(), std=lat.std(0).numpy(), count=len(lat))
    acts = np.concatenate(
        [
            e.actions.reshape(len(e.actions) * e.frame_skip, -1)  # per env step
            for e in eps
            if e.actions is not None
        ]
    ).astype(np.float64)
    codec = ActionCodec.from_stats(
        NormStats(mean=acts.mean(0), std=acts.std(0), count=len(acts)), d.frame_skip, exp.model.action_dim
    )
    proprio = None
    if PROPRIO_COST in costs:
        p = proprio_from_state(np.concatenate([e.states for e in eps])).astype(np.float64)
        proprio = NormStats(mean=p.mean(0), std=p.std(0), count=len(p))
    goals = sample_goals(held, num_goals, exp.plan.goal_offset, exp.plan.seed)
    observer = LatentObserver(encode, stats, proprio_stats=proprio)
    return cost_quality(goals, codec, observer, exp.plan, costs, settings, log=log)


__all__ = [
    "COSTS",
    "PROPRIO_COST",
    "CostQualitySettings",
    "SimCosts",
    "cost_quality",
    "encoder_cost_quality",
    "random_plans",
    "spearman",
]
