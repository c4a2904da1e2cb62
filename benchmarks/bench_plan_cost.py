"""Can a goal cost drive Push-T planning at all? The encoder's latent cost against pixels and the true state, with the
real simulator standing in for the world model.

    python benchmarks/bench_plan_cost.py --run runs/demo [--goals 8] [--samples 96] [--quick]

`--run` is a demo folder (train/, episodes/, latents/): goals come from its held-out episodes by DINO-WM's protocol
(`planning.evaluate.sample_goals`), the encoder and latent statistics from its checkpoint. The measurement itself is
`latentwm.planning.cost_quality` (also what the demo report shows as `encoder.cost_quality`). Per cost:

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

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import report, table  # noqa: E402

from latentwm.config import get_preset  # noqa: E402
from latentwm.data.episodes import NormStats  # noqa: E402
from latentwm.encoders.dino import DinoEncoder  # noqa: E402
from latentwm.engine.checkpoint import load_world_model  # noqa: E402
from latentwm.planning.cost_quality import COSTS, CostQualitySettings, cost_quality  # noqa: E402
from latentwm.planning.evaluate import held_out_episodes, sample_goals  # noqa: E402
from latentwm.planning.mpc import ActionCodec, LatentObserver  # noqa: E402


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
    codec = ActionCodec.from_stats(
        stats["datasets"]["pusht"]["actions"], state.get("frame_skip") or exp.data.frame_skip, model.cfg.action_dim
    )
    encoder = DinoEncoder.from_config(exp.encoder)
    observer = LatentObserver(encoder.encode, NormStats.from_dict(stats["latents"]))
    cfg = get_preset("cpu").plan  # demo scale
    goals = sample_goals(
        held_out_episodes(run / "episodes", run / "latents", exp.data.eval_fraction, exp.data.seed),
        args.goals,
        cfg.goal_offset,
        cfg.seed,
    )
    res = cost_quality(goals, codec, observer, cfg, COSTS, CostQualitySettings(samples=args.samples))
    rows = [
        {
            "cost": c,
            "rank_corr_with_state_distance": r["rank_corr"],
            "cem_on_simulator_success": r["cem_on_simulator_success"],
            "cem_on_simulator_final_distance": r["cem_on_simulator_final_distance"],
        }
        for c, r in res["per_cost"].items()
    ]
    summary = {
        "encoder": encoder.weights_label,
        "goals": len(goals),
        "samples": args.samples,
        "start_distance": res["start_distance"],
        **{
            f"{r['cost']}_{k}": r[k]
            for r in rows
            for k in ("rank_corr_with_state_distance", "cem_on_simulator_success", "cem_on_simulator_final_distance")
        },
        "quick": args.quick,
    }
    report(
        "bench_plan_cost: goal costs with the real simulator as the model",
        table(
            rows,
            ["cost", "rank_corr_with_state_distance", "cem_on_simulator_success", "cem_on_simulator_final_distance"],
        ),
        summary,
        f"Run {run} (encoder {encoder.weights_label}); {len(goals)} held-out goals {cfg.goal_offset} env steps "
        f"ahead (mean start distance {summary['start_distance']:.1f}); rank correlation over {args.samples} random "
        f"5-step plans per goal; CEM population {cfg.cem.population}, {cfg.cem.elites} elites, {cfg.cem.iterations} "
        "iterations, 2 plans × 5 model steps, candidates executed in the simulator. A planner on a learned model "
        "cannot beat CEM on the simulator with the same cost.",
    )


if __name__ == "__main__":
    main()
