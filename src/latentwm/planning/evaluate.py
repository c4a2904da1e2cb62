"""Push-T planning evaluation: DINO-WM's goal protocol, the planners and two baselines on the same goals and seeds.

Goals (DINO-WM, `goal_source: dset`): goal i picks a held-out episode (the training run's own split: the cache's
episode keys, `eval_fraction`, `seed`) and a start step t0, both uniformly at random from (seed, i); the goal is
the observation and state `goal_offset` env steps later (25 = 5 model steps with frame skip 5); the environment is
reset exactly to the start state (`PushTEnv.reset(state=...)`, which reproduces the recorded frame).

Methods: every planner in `planners` (receding-horizon MPC on the world model, `mpc.MPCPolicy`), `random` (random
actions from the planners' initial sampling distribution, same chunks and budget) and `dataset_actions` (replay the
episode's own `goal_offset` actions from the start state: the open-loop oracle, it produced the goal). Planners and
`random` get `max_replans` chunks of `exec_steps` model steps (default: a budget of twice the goal distance).

Scoring (DINO-WM's convention, see `mpc.py`): success = the Push-T test (block within 20 px, angle within π/9,
agent within 20 px of the goal state's) passes at the end of any executed chunk (the episode stops there);
final distance = `state_distance` (block px + agent px + angle degrees) of the last state.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from latentwm.config import PlanConfig
from latentwm.data.clips import split_episodes
from latentwm.data.episodes import NormStats, load_episode
from latentwm.planning.base import bf16_is_fast
from latentwm.planning.mpc import (ActionCodec, LatentObserver, MPCPolicy, RandomPolicy, ReplayPolicy, derive_seed,
                                   run_episode)

BASELINES = ("random", "dataset_actions")

# Demo scale: affordable on 2 CPU cores with the `cpu` preset (DINO-WM's full settings stay PlanConfig's defaults:
# population 300, 30 elites, 30 iterations, 100 gradient steps). Planners search one agent target per model step
# (repeat_actions), so 5 steps × 2-D instead of 5 × 10-D.
DEMO_PLAN = dict(population=32, elites=6, iterations=4, horizon=5, exec_steps=5, sample_steps=1, init_std=1.0,
                 temperature=0.5, grad_steps=6, grad_lr=0.3, num_goals=20)


def demo_plan_config(base: PlanConfig | None = None, num_goals: int | None = None) -> PlanConfig:
    """`base` (default PlanConfig()) with the demo-scale settings of DEMO_PLAN."""
    kw = dict(DEMO_PLAN)
    if num_goals is not None:
        kw["num_goals"] = num_goals
    return dataclasses.replace(base or PlanConfig(), **kw)


@dataclass
class PlanningGoal:
    index: int
    episode: str  # dataset/episode_id
    t0: int
    start_state: np.ndarray  # (7,)
    goal_state: np.ndarray  # (7,)
    start_frame: np.ndarray  # (H, W, 3) uint8
    goal_frame: np.ndarray  # (H, W, 3) uint8
    actions: np.ndarray  # (goal_offset, 2) the dataset's env actions from t0


def held_out_episodes(episodes_dir: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                      eval_fraction: float = 0.1, split_seed: int = 0) -> list[Path]:
    """Episode files of the held-out split, as `LatentClipDataset(split="eval")` chooses it (keys
    "dataset/episode_id" from the cache when given, else "pusht/<file stem>" for the files in episodes_dir)."""
    episodes_dir = Path(episodes_dir)
    if cache_dir is not None and (Path(cache_dir) / "cache.json").exists():
        from latentwm.data.latent_cache import LatentCache

        keys = sorted({f"{e['dataset']}/{e['episode_id']}" for e in LatentCache(cache_dir).entries})
    else:
        keys = [f"pusht/{p.stem}" for p in sorted(episodes_dir.glob("episode_*.npz"))]
    held = sorted(split_episodes(keys, eval_fraction, split_seed))
    paths = [episodes_dir / f"{k.split('/', 1)[1]}.npz" for k in held]
    paths = [p for p in paths if p.exists()]
    if not paths:
        raise ValueError(f"no held-out episode file in {episodes_dir} (eval_fraction {eval_fraction}, "
                         f"{len(keys)} episodes)")
    return paths


def sample_goals(episode_paths: list[Path], num_goals: int, goal_offset: int, seed: int = 0) -> list[PlanningGoal]:
    """Goal i: episode and start t0 uniform from (seed, i) among episodes longer than goal_offset (each file is
    read once)."""
    eps = {}
    for p in episode_paths:
        ep = load_episode(p)
        if ep.states is not None and ep.actions is not None and len(ep) > goal_offset:
            eps[p] = ep
    if not eps:
        raise ValueError(f"no held-out episode has states, actions and more than goal_offset = {goal_offset} steps")
    paths = sorted(eps)
    goals = []
    for i in range(num_goals):
        rng = np.random.default_rng([seed, i, 0x60A1])
        ep = eps[paths[int(rng.integers(len(paths)))]]
        t0 = int(rng.integers(0, len(ep) - goal_offset))
        frames = ep.frames[ep.cameras[0]]
        goals.append(PlanningGoal(i, f"{ep.dataset}/{ep.episode_id}", t0, ep.states[t0].copy(),
                                  ep.states[t0 + goal_offset].copy(), np.asarray(frames[t0]),
                                  np.asarray(frames[t0 + goal_offset]),
                                  ep.actions[t0 : t0 + goal_offset].astype(np.float64)))
    return goals


def _video(frames: np.ndarray, goal_frame: np.ndarray, success_step: int | None, scale: int = 2) -> np.ndarray:
    """Executed frames beside the goal image, enlarged; a strip under the episode turns green once successful."""
    from latentwm.eval.visualize import side_by_side

    T = len(frames)
    ok = np.zeros(T, bool) if success_step is None else np.arange(T) >= success_step
    strip = np.where(ok[:, None, None, None], np.array([40, 180, 60], np.uint8), np.array([150, 150, 150], np.uint8))
    ep = np.concatenate([frames, np.broadcast_to(strip, (T, 6, frames.shape[2], 3))], 1)
    goal = np.broadcast_to(goal_frame[None], (T, *goal_frame.shape))
    out = side_by_side(ep, goal)
    return out.repeat(scale, 1).repeat(scale, 2)


def _resolve(model_or_run, config, data_stats, frame_skip, cache_dir, device):
    if isinstance(model_or_run, (str, os.PathLike)):
        from latentwm.train.checkpoint import load_world_model

        model, exp, state = load_world_model(model_or_run, ema=True, device=device)
        return (model, config or exp, data_stats or state.get("data_stats"),
                frame_skip or state.get("frame_skip"), state.get("encoder"))
    if config is None:
        raise ValueError("evaluate_planning: pass config= (the ExperimentConfig) with a model object")
    if data_stats is None:
        from latentwm.data.latent_cache import LatentCache

        cache = LatentCache(cache_dir or config.data.cache_dir)
        data_stats = dict(latents=cache.latent_stats.to_dict(),
                          datasets={k: v.to_dict() for k, v in cache.dataset_stats.items()})
    return model_or_run, config, data_stats, frame_skip or config.data.frame_skip, None


def evaluate_planning(model_or_run, episodes_dir: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                      plan_cfg: PlanConfig | None = None, planners: tuple[str, ...] = ("cem", "mppi", "gradient"),
                      num_goals: int | None = None, out_dir: str | os.PathLike | None = None, seed: int | None = None,
                      *, baselines: tuple[str, ...] = BASELINES, config=None, data_stats: dict | None = None,
                      frame_skip: int | None = None, encoder=None, max_replans: int | None = None,
                      context: int | None = None, repeat_actions: bool = True, num_videos: int = 2,
                      bf16: bool | None = None, proprio_probe=None, device: str = "cpu", log=print) -> dict:
    """Score `planners` and `baselines` on the same `num_goals` Push-T goals; returns the metrics dict.

    model_or_run: a training run / checkpoint directory (model = its EMA weights; statistics, frame skip and
    encoder label from the checkpoint), or a DynamicsModel with `config` (its ExperimentConfig) and the statistics
    from `data_stats` ({"latents": NormStats-dict, "datasets": {"pusht": DatasetStats-dict}}) or the cache.
    cache_dir: the training latent cache (its episode keys define the held-out split; default config.data.cache_dir
    when it exists, else the episode files). plan_cfg: default config.plan (`demo_plan_config()` for demo scale).
    encoder: None (build `DinoEncoder` from config.encoder), a DinoEncoder, or a callable frames -> (B, N, D)
    LayerNorm-ed latents without dataset statistics. max_replans: default ceil(2 · goal_offset / (exec_steps ·
    frame_skip)). context: history frames the planner observes (default config.rollout.context). bf16: candidate
    rollouts under bf16 autocast (None: where it is fast, `bf16_is_fast`; rankings unchanged in a check).
    proprio_probe: a `ProprioProbe` (or its file / folder): planners add DINO-WM's proprio term (weight
    plan_cfg.proprio_weight) on the agent state it reads from the model's features; None: visual cost only.
    out_dir: writes planning.json (the returned dict), planning_goals.json (per goal and method) and GIFs of the
    first `num_videos` goals for every method, and of each planner's first success, under videos/.

    Returns {"success_rate": {method: float}, "final_distance": {method: float}, "seconds_per_plan": {planner:
    float}, "num_goals", "videos": [paths relative to out_dir], "start_success_rate", "success_step",
    "settings", "convention", "wall_time_s"}; methods = planners + baselines.
    """
    t_start = time.time()
    model, exp, data_stats, frame_skip, enc_label = _resolve(model_or_run, config, data_stats, frame_skip,
                                                             cache_dir, device)
    if cache_dir is None and Path(exp.data.cache_dir).is_dir():
        cache_dir = exp.data.cache_dir
    cfg = plan_cfg or exp.plan
    num_goals = num_goals or cfg.num_goals
    seed = cfg.seed if seed is None else seed
    unknown = set(planners) - {"cem", "mppi", "gradient"} | set(baselines) - set(BASELINES)
    if unknown:
        raise ValueError(f"evaluate_planning: unknown methods {sorted(unknown)}")
    datasets = data_stats["datasets"]
    ds = datasets.get("pusht") or next(iter(datasets.values()))
    if ds.get("actions") is None:
        raise ValueError("evaluate_planning: the run's dataset has no action statistics (trained without actions)")
    codec = ActionCodec.from_stats(ds["actions"], int(frame_skip), model.cfg.action_dim, repeat=repeat_actions)
    dev = next(model.parameters()).device
    if encoder is None:
        from latentwm.encoders.dino import DinoEncoder

        encoder = DinoEncoder.from_config(exp.encoder, device=dev)
        if enc_label and encoder.weights_label != enc_label:
            raise ValueError(f"evaluate_planning: the model was trained on latents of {enc_label!r}, the encoder "
                             f"config builds {encoder.weights_label!r}")
    encode = encoder.encode if hasattr(encoder, "encode") else encoder
    observer = LatentObserver(encode, NormStats.from_dict(data_stats["latents"]), device=dev)
    context = context or exp.rollout.context
    if bf16 is None:
        bf16 = bf16_is_fast(dev.type)
    exec_steps = min(cfg.exec_steps, cfg.horizon)
    if max_replans is None:
        max_replans = max(1, math.ceil(2 * cfg.goal_offset / (exec_steps * codec.frame_skip)))

    if isinstance(proprio_probe, (str, os.PathLike)):
        from latentwm.planning.proprio import ProprioProbe

        proprio_probe = ProprioProbe.load(proprio_probe, device=dev)
    use_probe = proprio_probe is not None and cfg.proprio_weight > 0
    paths = held_out_episodes(episodes_dir, cache_dir, exp.data.eval_fraction, exp.data.seed)
    goals = sample_goals(paths, num_goals, cfg.goal_offset, seed)
    from latentwm.envs.pusht import PushTEnv, goal_metrics, proprio_from_state

    env = PushTEnv(image_size=goals[0].goal_frame.shape[0])
    methods = list(planners) + list(baselines)
    rows: dict[str, list[dict]] = {m: [] for m in methods}
    videos: list[str] = []
    shown_success: set[str] = set()  # planners whose first successful episode is already a GIF
    out = Path(out_dir) if out_dir is not None else None
    log(f"planning: {len(goals)} goals {cfg.goal_offset} env steps ahead from {len(paths)} held-out episodes; "
        f"{', '.join(methods)}; ≤ {max_replans} plans × {exec_steps} model steps; population {cfg.population}, "
        f"{cfg.iterations} iterations, horizon {cfg.horizon}, K = {cfg.sample_steps}; cost: visual MSE"
        + (f" + {cfg.proprio_weight:g} × proprio MSE (probe)" if use_probe else ""))
    try:
        for g in goals:
            line = []
            for m in methods:
                if m in planners:
                    policy = MPCPolicy(model, observer, codec, cfg, planner=m, context=context, bf16=bf16,
                                       proprio_probe=proprio_probe if use_probe else None)
                    chunks = max_replans
                elif m == "random":
                    policy, chunks = RandomPolicy(codec, cfg), max_replans
                else:
                    policy, chunks = ReplayPolicy(g.actions), 1
                record = out is not None  # frames are cheap at these sizes; kept only for the GIFs written
                with torch.random.fork_rng(devices=[]):
                    r = run_episode(env, policy, g.start_state, g.goal_state, g.goal_frame, chunks,
                                    codec.frame_skip, seed=derive_seed(seed, g.index), record=record,
                                    goal_proprio=proprio_from_state(g.goal_state))
                frames = r.pop("frames")
                first_success = m in planners and r["success"] and m not in shown_success
                if record and (g.index < num_videos or first_success):
                    from latentwm.eval.visualize import save_gif

                    if first_success:
                        shown_success.add(m)

                    name = f"videos/goal{g.index:02d}_{m}_{'success' if r['success'] else 'failure'}.gif"
                    save_gif(out / name, _video(frames, g.goal_frame, r["success_step"]), fps=10)
                    videos.append(name)
                rows[m].append({"goal": g.index, "episode": g.episode, "t0": g.t0, **r})
                line.append(f"{m} {'✓' if r['success'] else '✗'} {r['final_distance']:.0f}")
            log(f"  goal {g.index:2d} ({g.episode} t0={g.t0}): " + " | ".join(line))
    finally:
        env.close()

    def mean(m, key):
        return float(np.mean([r[key] for r in rows[m]]))

    steps = {m: [r["success_step"] for r in rows[m] if r["success_step"] is not None] for m in methods}
    res = {
        "success_rate": {m: mean(m, "success") for m in methods},
        "final_distance": {m: mean(m, "final_distance") for m in methods},
        "seconds_per_plan": {m: mean(m, "seconds_per_plan") for m in planners},
        "num_goals": len(goals),
        "videos": videos,
        "block_pos_diff": {m: mean(m, "block_pos_diff") for m in methods},
        "agent_pos_diff": {m: mean(m, "agent_pos_diff") for m in methods},
        "angle_diff_deg": {m: math.degrees(mean(m, "angle_diff")) for m in methods},
        # goals whose block pose already passes at the start: only the agent has to get there
        "block_static_goals": float(np.mean([goal_metrics(np.r_[g.goal_state[:2], g.start_state[2:]], g.goal_state)
                                             ["success"] for g in goals])),
        "start_success_rate": float(np.mean([r["start_success"] for r in rows[methods[0]]])),
        "start_distance": float(np.mean([r["start_distance"] for r in rows[methods[0]]])),
        "success_step": {m: float(np.mean(s)) if s else None for m, s in steps.items()},
        "settings": {**{k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("planner", "num_goals")},
                     "max_replans": max_replans, "budget_env_steps": max_replans * exec_steps * codec.frame_skip,
                     "frame_skip": codec.frame_skip, "context": context, "repeat_actions": repeat_actions,
                     "bf16": bf16, "proprio_term": use_probe,
                     "proprio_probe": getattr(proprio_probe, "metrics", None) if use_probe else None,
                     "held_out_episodes": len(paths)},
        "convention": "DINO-WM Push-T success (block < 20 px, angle < π/9, agent < 20 px) at the end of any "
                      "executed chunk; final_distance = block px + agent px + angle degrees of the last state",
        "wall_time_s": time.time() - t_start,
    }
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "planning.json").write_text(json.dumps(res, indent=1))
        (out / "planning_goals.json").write_text(json.dumps(rows, indent=1, default=_json_default))
    return res


def _json_default(o):
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def planning_table(metrics: dict) -> str:
    """Markdown table of an `evaluate_planning` result (one row per method), with a settings line under it."""
    parts = all(k in metrics for k in ("block_pos_diff", "agent_pos_diff", "angle_diff_deg"))
    lines = ["| method | success rate | final state distance | " + ("block px | agent px | angle ° | " if parts else "")
             + "s / plan |", "|---|---|---|" + ("---|---|---|" if parts else "") + "---|"]
    for m, sr in metrics["success_rate"].items():
        sp = metrics.get("seconds_per_plan", {}).get(m)
        extra = (f"{metrics['block_pos_diff'][m]:.1f} | {metrics['agent_pos_diff'][m]:.1f} | "
                 f"{metrics['angle_diff_deg'][m]:.1f} | " if parts else "")
        lines.append(f"| {m} | {sr:.2f} | {metrics['final_distance'][m]:.1f} | {extra}"
                     f"{'–' if sp is None else f'{sp:.2f}'} |")
    s = metrics.get("settings", {})
    if s:
        lines.append("")
        lines.append(f"{metrics['num_goals']} goals {s.get('goal_offset')} env steps ahead (held-out episodes); "
                     f"population {s.get('population')}, elites {s.get('elites')}, {s.get('iterations')} "
                     f"iterations, horizon {s.get('horizon')}, {s.get('exec_steps')} steps executed per plan, "
                     f"≤ {s.get('max_replans')} plans, K = {s.get('sample_steps')}; at the start: distance "
                     f"{metrics.get('start_distance', float('nan')):.1f}, goals already reached "
                     f"{metrics.get('start_success_rate', 0):.2f}"
                     + (f", goals whose block pose already passes (only the agent must get there) "
                        f"{metrics['block_static_goals']:.2f}" if "block_static_goals" in metrics else "")
                     + f". Success: {metrics.get('convention', '')}. Errors (block px, agent px, angle °) are "
                     "means of the last states.")
    return "\n".join(lines)


__all__ = ["BASELINES", "DEMO_PLAN", "PlanningGoal", "demo_plan_config", "evaluate_planning", "held_out_episodes",
           "planning_table", "sample_goals"]
