"""The planning ladder: the same goals, the same planner budget, from the ideal down to the model.

    python benchmarks/bench_ladder.py --cache CACHE --episodes EPISODES --checkpoint RUN
                                      [--next-frame RUN2] [--goals 60] [--k 1,4] [--reuse-plan PLAN_DIR]
                                      [--rank-samples 48] [--out runs/ladder] [--quick]

Rungs (planning/ladder.py): simulator + state cost (the planner's ceiling), simulator + latent cost (the encoder's
ceiling), a state model (privileged: an MLP on the true state), the latent model at each K of --k, the next-frame
variant (--next-frame: a run of the same size trained with model.prediction "next"), random actions — CEM with the
run's plan section on --goals held-out goals of the run's split, 25 env steps ahead, the same replanning budget.
Scored per rung: success (ours and DINO-WM's joint test), success on the goals whose block must move, final block
error overall and on those goals; and, before any planner runs, how well each cost orders the same --rank-samples
random plans per goal (the simulator's costs beside the model's own objective). --reuse-plan: a `latentwm plan`
folder of this run on the same goals (same count, seed and plan section; e.g. bench_conditioning's arm), whose CEM
rows are the K = plan.sample_steps rung and whose random rows the random rung. Every rung resumes from its folder
under --out. --quick: 2 goals, a small CEM and a short state-model fit; printed, not recorded. Last line: JSON
{"rungs": {rung: {...}}, "cost_rank": {cost: {...}}, ...}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import report, table  # noqa: E402

from latentwm.config import CEMConfig  # noqa: E402
from latentwm.data.latent_cache import LatentCache  # noqa: E402
from latentwm.planning.evaluate import WorldModelRun  # noqa: E402
from latentwm.planning.ladder import LadderOptions, planning_ladder  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", required=True)
    ap.add_argument("--episodes", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--next-frame", default="")
    ap.add_argument("--goals", type=int, default=60)
    ap.add_argument("--k", default="1,4", help="denoising steps of the latent-model rungs")
    ap.add_argument("--reuse-plan", default="")
    ap.add_argument("--rank-samples", type=int, default=48, help="random plans per goal for the cost ranks (0: none)")
    ap.add_argument("--out", default="runs/ladder")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    run = WorldModelRun.load(args.checkpoint)
    n = 2 if args.quick else args.goals
    plan_cfg = dataclasses.replace(run.exp.plan, num_goals=n)
    if args.quick:
        plan_cfg = dataclasses.replace(plan_cfg, cem=CEMConfig(population=8, elites=2, iterations=2))
    given = None
    if args.reuse_plan:
        rows = json.loads((Path(args.reuse_plan) / "planning_goals.json").read_text())
        given = {
            name: rows[m]
            for name, m in ((f"latent model K={plan_cfg.sample_steps}", "cem"), ("random actions", "random"))
            if m in rows
        }
        if any(len(r) != n for r in given.values()):
            raise SystemExit(f"bench_ladder: {args.reuse_plan} holds other goals than --goals {n}")
    res = planning_ladder(
        run,
        args.episodes,
        args.cache,
        plan_cfg,
        Path(args.out),
        LadderOptions(
            sample_steps=tuple(int(k) for k in args.k.split(",")),
            state_steps=200 if args.quick else 3000,
            next_frame=WorldModelRun.load(args.next_frame) if args.next_frame else None,
            given=given,
            rank_samples=(8 if args.quick else args.rank_samples) or None,
        ),
    )
    flat = [{"rung": k, **v} for k, v in res["rungs"].items()]
    md = table(
        flat,
        [
            "rung",
            "success_rate",
            "success_rate_joint",
            "success_rate_block_moves",
            "block_px",
            "block_px_block_moves",
            "goals",
            "block_moving_goals",
        ],
    )
    if res.get("cost_rank"):
        ranked = [{"cost": k, **v} for k, v in res["cost_rank"].items()]
        md += "\n\n" + table(ranked, ["cost", "rank_corr", "rank_corr_block_moves", "block_rank_corr", "block_goals"])
    st, d = res["settings"], run.exp.data
    notes = (
        f"Model: {args.checkpoint} ({st['proprio_channels']} proprio channels, "
        f"{'relative' if d.relative_actions else 'absolute'} actions); cache {args.cache} "
        f"({len(LatentCache(args.cache).entries)} episodes); CEM {' × '.join(map(str, st['cem']))}, horizon "
        f"{st['horizon']}, ≤ {st['max_replans']} plans of {st['exec_steps']} model steps; {res['goals']} "
        f"held-out goals {st['goal_offset']} env steps ahead, {res['block_moving_goals']} whose block must "
        f"move. The state model reads the true state (privileged)."
        + (
            f" Cost ranks: Spearman correlation with the true state distance over {res['rank_samples']} random plans "
            "per goal from the start, executed in the simulator (state, latent, latent + proprio costs) and rolled "
            "out by the model under its own planning objective (model K=k) and its latent term alone (model K=k "
            "latent); mean over goals and over those whose block must move; block_rank_corr: against the block's "
            "own distance (px + degrees), over the block_goals where a candidate moved the block."
            if res.get("cost_rank")
            else ""
        )
    )
    report(
        "bench_ladder: the planning ladder from the simulator to the model",
        md,
        {**res, "checkpoint": args.checkpoint, "quick": args.quick},
        notes,
        record=not args.quick,
    )


if __name__ == "__main__":
    main()
