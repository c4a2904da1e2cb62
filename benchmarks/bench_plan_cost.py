"""Can a goal cost drive Push-T planning at all? The encoder's latent cost against pixels and the true state, with the
real simulator standing in for the world model.

    python benchmarks/bench_plan_cost.py --run runs/demo [--goals 8] [--samples 96] [--quick]

`--run` is a demo folder (train/, episodes/, latents/): goals come from its held-out episodes by DINO-WM's protocol
(`planning.evaluate.sample_goals`), the encoder and latent statistics from its checkpoint. Two measurements per cost:

- rank correlation: `--samples` random 5-step plans from each start (the planners' initial distribution) are executed
  in the simulator; Spearman correlation between each cost of the reached frame and the true state distance to the
  goal (block px + agent px + angle degrees). A cost a planner can use correlates strongly.
- CEM on the simulator: the demo's CEM settings, two plans of 5 model steps per goal, candidates scored by executing
  them in the real simulator (a perfect world model) and applying the cost; DINO-WM's success test.

Costs: `latent` (MSE of the run's normalized encoder features of the last frame: what planning uses), `latent_raw`
(the same features before the per-channel dataset statistics, as DINO-WM compares them), `pixel` (MSE of raw
frames) and `state` (the true state distance: the planner's ceiling). When CEM with a perfect model fails on the
latent cost, no world model trained on those latents can plan well: the encoder is the bottleneck, not the dynamics.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import report, table  # noqa: E402

from latentwm.data.episodes import NormStats  # noqa: E402
from latentwm.encoders.dino import DinoEncoder  # noqa: E402
from latentwm.envs.pusht import PushTEnv, goal_metrics  # noqa: E402
from latentwm.planning.cem import plan_cem  # noqa: E402
from latentwm.config import get_preset  # noqa: E402
from latentwm.planning.evaluate import held_out_episodes, sample_goals  # noqa: E402
from latentwm.planning.mpc import ActionCodec, LatentObserver  # noqa: E402
from latentwm.train.checkpoint import load_world_model  # noqa: E402

COSTS = ("latent", "latent_raw", "pixel", "state")


def spearman(a, b) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


class SimCosts:
    """Executes (P, H, k) planning-space candidates from a state in a private simulator; returns every cost."""

    def __init__(self, codec: ActionCodec, observer: LatentObserver, image_size: int):
        self.codec, self.observer, self.sim = codec, observer, PushTEnv(image_size=image_size)

    def __call__(self, start_state, candidates: torch.Tensor, goal_frame, goal_latent, goal_state) -> dict:
        frames, dists = [], []
        for c in candidates:
            f, _ = self.sim.reset(state=start_state)
            for a in self.codec.to_env(self.codec.expand(c)):
                f, *_ = self.sim.step(a)
            frames.append(f)
            dists.append(goal_metrics(self.sim.state(), goal_state)["state_dist"])
        frames = np.stack(frames)
        lat = self.observer(frames)  # (P, N, D)
        raw = self.observer.encode(frames).float()  # LayerNorm-ed features before the dataset statistics
        goal_raw = goal_latent * self.observer.std + self.observer.mean
        return {"latent": ((lat - goal_latent) ** 2).mean((1, 2)).numpy(),
                "latent_raw": ((raw - goal_raw) ** 2).mean((1, 2)).numpy(),
                "pixel": ((frames.astype(np.float32) - goal_frame.astype(np.float32)) ** 2).mean((1, 2, 3)),
                "state": np.asarray(dists)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="runs/demo")
    ap.add_argument("--goals", type=int, default=8)
    ap.add_argument("--samples", type=int, default=96)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.quick:
        args.goals, args.samples = 2, 16
    run = Path(args.run)
    model, exp, state = load_world_model(run / "train")
    stats = state["data_stats"]
    codec = ActionCodec.from_stats(stats["datasets"]["pusht"]["actions"], state.get("frame_skip") or
                                   exp.data.frame_skip, model.cfg.action_dim)
    encoder = DinoEncoder.from_config(exp.encoder)
    observer = LatentObserver(encoder.encode, NormStats.from_dict(stats["latents"]))
    cfg = get_preset("cpu").plan  # demo scale
    goals = sample_goals(held_out_episodes(run / "episodes", run / "latents", exp.data.eval_fraction, exp.data.seed),
                         args.goals, cfg.goal_offset, cfg.seed)
    sim_costs = SimCosts(codec, observer, goals[0].goal_frame.shape[0])
    env = PushTEnv(image_size=goals[0].goal_frame.shape[0])
    low, high = codec.bounds()
    corr = {c: [] for c in COSTS}
    cem = {c: {"success": [], "final_distance": []} for c in COSTS}
    for g in goals:
        goal_latent = observer(g.goal_frame[None])[0]
        gen = torch.Generator().manual_seed(g.index)
        mean = codec.hold(g.start_state[:2], cfg.horizon)
        cands = torch.max(torch.min(mean + cfg.init_std * torch.randn((args.samples, *mean.shape), generator=gen),
                                    high), low)
        costs = sim_costs(g.start_state, cands, g.goal_frame, goal_latent, g.goal_state)
        for c in COSTS:
            corr[c].append(spearman(costs[c], costs["state"]))
        for c in COSTS:  # CEM with the simulator as the model, `max_replans` = 2 plans of 5 model steps
            env.reset(state=g.start_state)
            ok = False
            for rep in range(2):
                s0 = env.state().copy()

                def objective(x, grad=False, s0=s0, c=c, g=g, goal_latent=goal_latent):
                    return torch.as_tensor(sim_costs(s0, x, g.goal_frame, goal_latent, g.goal_state)[c])

                res = plan_cem(objective, cfg.horizon, low, high, cfg.cem, init_std=cfg.init_std,
                               init=codec.hold(s0[:2], cfg.horizon),
                               generator=torch.Generator().manual_seed(1000 * g.index + rep))
                for a in codec.to_env(codec.expand(res.actions)):
                    env.step(a)
                m = goal_metrics(env.state(), g.goal_state)
                if m["success"]:
                    ok = True
                    break
            cem[c]["success"].append(ok)
            cem[c]["final_distance"].append(m["state_dist"])
        print(f"goal {g.index}: rank corr " + " ".join(f"{c} {corr[c][-1]:.2f}" for c in COSTS) + " | CEM-on-sim "
              + " ".join(f"{c} {'✓' if cem[c]['success'][-1] else '✗'} {cem[c]['final_distance'][-1]:.0f}"
                         for c in COSTS), flush=True)
    env.close()
    rows = [{"cost": c, "rank_corr_with_state_distance": float(np.mean(corr[c])),
             "cem_on_simulator_success": float(np.mean(cem[c]["success"])),
             "cem_on_simulator_final_distance": float(np.mean(cem[c]["final_distance"]))} for c in COSTS]
    summary = {"encoder": encoder.weights_label, "goals": len(goals), "samples": args.samples,
               "start_distance": float(np.mean([goal_metrics(g.start_state, g.goal_state)["state_dist"]
                                                for g in goals])),
               **{f"{r['cost']}_{k}": r[k] for r in rows for k in ("rank_corr_with_state_distance",
                                                                    "cem_on_simulator_success",
                                                                    "cem_on_simulator_final_distance")},
               "quick": args.quick}
    report("bench_plan_cost: goal costs with the real simulator as the model",
           table(rows, ["cost", "rank_corr_with_state_distance", "cem_on_simulator_success",
                        "cem_on_simulator_final_distance"]), summary,
           f"Run {run} (encoder {encoder.weights_label}); {len(goals)} held-out goals {cfg.goal_offset} env steps "
           f"ahead (mean start distance {summary['start_distance']:.1f}); rank correlation over {args.samples} random "
           f"5-step plans per goal; CEM population {cfg.cem.population}, {cfg.cem.elites} elites, {cfg.cem.iterations} "
           "iterations, 2 plans × 5 model steps, candidates executed in the simulator. A planner on a learned model "
           "cannot beat CEM on the simulator with the same cost.")


if __name__ == "__main__":
    main()
