"""The planning ladder: the same goals, the same planner budget, from the ideal down to the model.

    python benchmarks/bench_ladder.py --cache CACHE --episodes EPISODES --checkpoint RUN
                                      [--next-frame RUN2] [--goals 60] [--out runs/ladder] [--quick]

Rungs (CEM with the plan section of the run, DINO-WM's goal protocol on the run's held-out split, 25 env steps
ahead, receding horizon with the same replanning budget; relative or absolute actions as the run was trained):
1. simulator + state cost: the real simulator as the model, the true state distance as the cost (the planner's
   ceiling; planning/cost_quality.py);
2. simulator + latent cost: the simulator as the model, the encoder's latent MSE to the goal frame as the cost (the
   encoder's ceiling);
3. state model (privileged): an MLP dynamics model of the true state trained on the same clips, state cost
   (planning/state_model.py);
4. latent model, K = 1 and K = 4 denoising steps per predicted frame (`latentwm plan`'s CEM);
5. next-frame variant (--next-frame: a run of the same size trained with model.prediction "next", DINO-WM's
   objective), when given;
6. random actions (the planners' initial distribution, same chunks).
Scored per rung: success (ours: block 20 px & 20°, agent 20 px; and DINO-WM's joint test), success on the goals
whose block must move, final block error (px) overall and on those goals. Rungs resume from their folder.
--quick: 2 goals, a short state-model fit; printed, not recorded. Last line: JSON {"rungs": {rung: {...}}}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import report, table  # noqa: E402

from latentwm.config import CEMConfig  # noqa: E402
from latentwm.data.clip_sets import model_clip_kwargs  # noqa: E402
from latentwm.data.clips import LatentClipDataset  # noqa: E402
from latentwm.data.episodes import NormStats  # noqa: E402
from latentwm.data.latent_cache import LatentCache  # noqa: E402
from latentwm.encoders.dino import DinoEncoder  # noqa: E402
from latentwm.envs.pusht import PushTEnv, goal_metrics  # noqa: E402
from latentwm.planning.cost_quality import CostQualitySettings, cost_quality  # noqa: E402
from latentwm.planning.evaluate import (PlanningOptions, WorldModelRun, _session, evaluate_planning,  # noqa: E402
                                        held_out_episodes, sample_goals)
from latentwm.planning.mpc import LatentObserver, derive_seed, run_episode  # noqa: E402
from latentwm.planning.state_model import StatePolicy, fit_state_dynamics  # noqa: E402


def summarize(rows: list[dict], moves: list[bool]) -> dict:
    """rows: per goal {"goal", "success", "success_joint", "block_pos_diff"} -> the rung's figures."""
    mv = [r for r in rows if moves[r["goal"]]]
    mean = lambda rs, k: float(np.mean([float(r[k]) for r in rs])) if rs else None  # noqa: E731
    return {"success_rate": mean(rows, "success"), "success_rate_joint": mean(rows, "success_joint"),
            "success_rate_block_moves": mean(mv, "success"), "block_px": mean(rows, "block_pos_diff"),
            "block_px_block_moves": mean(mv, "block_pos_diff"), "goals": len(rows), "block_moving_goals": len(mv)}


def cached(path: Path, make) -> list[dict]:
    """A rung's per-goal rows, kept in `path` (a rerun reuses them)."""
    if path.exists():
        return json.loads(path.read_text())
    rows = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, default=float))
    return rows


def simulator_rungs(run: WorldModelRun, goals, plan_cfg, replans: int) -> list[dict]:
    s = _session(run, plan_cfg, PlanningOptions(planners=("cem",), baselines=()), None, None)
    encoder = DinoEncoder.from_config(run.exp.encoder)
    observer = LatentObserver(encoder.encode, NormStats.from_dict(run.data_stats["latents"]))
    res = cost_quality(goals, s.codec, observer, plan_cfg, costs=("state", "latent"),
                       settings=CostQualitySettings(samples=4, cem=True, max_plans=replans))
    return [{"goal": i, **r} for i, r in enumerate(res["per_goal"])]


def state_model_rung(run: WorldModelRun, cache: Path, goals, plan_cfg, replans: int, steps: int) -> list[dict]:
    clips = LatentClipDataset(cache, 2, split="train", **model_clip_kwargs(run.exp, text=False))
    model, _ = fit_state_dynamics(clips, steps=steps)
    s = _session(run, plan_cfg, PlanningOptions(planners=("cem",), baselines=()), lambda f: None, None)
    env, rows = PushTEnv(image_size=goals[0].goal_frame.shape[0]), []
    try:
        for i, g in enumerate(goals):
            r = run_episode(env, StatePolicy(model, s.codec, plan_cfg), g.start_state, g.goal_state, g.goal_frame,
                            replans, s.codec.frame_skip, seed=derive_seed(s.seed, g.index))
            r.pop("frames")
            rows.append({"goal": i, **r})
            print(f"  state model goal {i}: {'✓' if r['success'] else '✗'} block {r['block_pos_diff']:.0f} px")
    finally:
        env.close()
    return rows


def model_rows(run: WorldModelRun, episodes: Path, cache: Path, plan_cfg, out: Path, baselines=()) -> dict:
    """Per-goal rows {method: [...]} of `latentwm plan`'s CEM (and baselines), kept under `out`."""
    if not (out / "planning_goals.json").exists():
        evaluate_planning(run, episodes, plan_cfg, cache_dir=cache, out_dir=out,
                          options=PlanningOptions(planners=("cem",), baselines=tuple(baselines), num_videos=1))
    return json.loads((out / "planning_goals.json").read_text())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", required=True)
    ap.add_argument("--episodes", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--next-frame", default="")
    ap.add_argument("--goals", type=int, default=60)
    ap.add_argument("--out", default="runs/ladder")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    cache, episodes, out = Path(args.cache), Path(args.episodes), Path(args.out)
    run = WorldModelRun.load(args.checkpoint)
    d = run.exp.data
    n = 2 if args.quick else args.goals
    plan_cfg = dataclasses.replace(run.exp.plan, num_goals=n)
    if args.quick:
        plan_cfg = dataclasses.replace(plan_cfg, cem=CEMConfig(population=8, elites=2, iterations=2))
    goals = sample_goals(held_out_episodes(episodes, cache, d.eval_fraction, d.seed), n, plan_cfg.goal_offset,
                         plan_cfg.seed)
    moves = [not goal_metrics(np.r_[g.goal_state[:2], g.start_state[2:]], g.goal_state)["success"] for g in goals]
    replans = _session(run, plan_cfg, PlanningOptions(planners=("cem",), baselines=()), lambda f: None,
                       None).max_replans
    sim = cached(out / "simulator.json", lambda: simulator_rungs(run, goals, plan_cfg, replans))
    rungs = {}
    for cost, name in (("state", "simulator + state cost"), ("latent", "simulator + latent cost")):
        rungs[name] = summarize([{"goal": r["goal"], "success": r[f"{cost}_cem_success"],
                                  "success_joint": r[f"{cost}_cem_joint"],
                                  "block_pos_diff": r[f"{cost}_cem_block_px"]} for r in sim], moves)
    rungs["state model (privileged)"] = summarize(cached(out / "state_model.json", lambda: state_model_rung(
        run, cache, goals, plan_cfg, replans, 200 if args.quick else 3000)), moves)
    k1 = model_rows(run, episodes, cache, dataclasses.replace(plan_cfg, sample_steps=1), out / "latent_k1",
                    baselines=("random",))
    rungs["latent model K=1"] = summarize(k1["cem"], moves)
    k4 = model_rows(run, episodes, cache, dataclasses.replace(plan_cfg, sample_steps=4), out / "latent_k4")
    rungs["latent model K=4"] = summarize(k4["cem"], moves)
    if args.next_frame:
        nf = model_rows(WorldModelRun.load(args.next_frame), episodes, cache, plan_cfg, out / "next_frame")
        rungs["next-frame variant"] = summarize(nf["cem"], moves)
    rungs["random actions"] = summarize(k1["random"], moves)
    flat = [{"rung": k, **v} for k, v in rungs.items()]
    md = table(flat, ["rung", "success_rate", "success_rate_joint", "success_rate_block_moves", "block_px",
                      "block_px_block_moves", "goals", "block_moving_goals"])
    c = plan_cfg.cem
    notes = (f"Model: {args.checkpoint} ({run.exp.model.proprio_dim} proprio channels, "
             f"{'relative' if d.relative_actions else 'absolute'} actions); cache {cache} "
             f"({len(LatentCache(cache).entries)} episodes); CEM {c.population} × {c.elites} × {c.iterations}, "
             f"horizon {plan_cfg.horizon}, ≤ {replans} plans of {plan_cfg.exec_steps} model steps; {n} held-out goals "
             f"{plan_cfg.goal_offset} env steps ahead, {sum(moves)} whose block must move.")
    report("bench_ladder: the planning ladder from the simulator to the model", md,
           {"rungs": rungs, "checkpoint": args.checkpoint, "quick": args.quick}, notes, record=not args.quick)


if __name__ == "__main__":
    main()
