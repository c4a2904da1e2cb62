"""The planning ladder: the same goals and planner budget from the ideal down to the model, so a failure is located.

Rungs (CEM with the run's plan section, DINO-WM's goal protocol on the run's held-out split, receding horizon with
the same replanning budget, relative or absolute actions as the run was trained):
- "simulator + state cost": the real simulator as the model, the true state distance as the cost (the planner's
  ceiling; planning/cost_quality.py);
- "simulator + latent cost": the simulator as the model, the encoder's latent MSE to the goal frame as the cost (the
  encoder's ceiling);
- "simulator + latent + proprio cost" (runs with proprio channels): the same with DINO-WM's proprio term on the true
  agent state — the cost such a model plans on, so the encoder's ceiling for it;
- "state model (privileged)": an MLP dynamics model of the true state trained on the same clips, state cost
  (planning/state_model.py);
- "latent model K=k": the world model's CEM with k denoising steps per predicted frame (planning/evaluate.py);
- "next-frame variant": a run of the same size trained with model.prediction "next" (DINO-WM's objective), when one
  is given;
- "random actions": the planners' initial distribution, same chunks.
Each rung: success (ours; DINO-WM's joint test), success on the goals whose block must move, final block error (px)
overall and on those goals. Every rung's per-goal rows are kept as JSON under the output folder and reused.

Before any planner runs, the costs themselves (`cost_rank_rows`, `LadderOptions.rank_samples`): on each goal the same
random plans from the start (the planners' initial distribution) are executed in the simulator and rolled out by the
model; each cost's Spearman correlation with the true state distance of the reached states, and with the block's own
distance, says how well it orders the candidates a planner chooses among — the simulator's costs (true dynamics)
beside the model's own objective on its predictions (latent MSE + proprio term, and its latent term alone, K = k):
where the model's ordering falls below the simulator's under the same cost, its predictions are what fails, not the
planner.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from latentwm.data.clip_sets import model_clip_options
from latentwm.data.clips import LatentClipDataset
from latentwm.data.episodes import NormStats
from latentwm.data.proprio import proprio_stats_of
from latentwm.encoders.dino import DinoEncoder
from latentwm.envs.pusht import PushTEnv, proprio_from_state
from latentwm.io.files import read_json, write_json
from latentwm.planning.base import MappedObjective
from latentwm.planning.cost import GoalCost, LatentGoalObjective
from latentwm.planning.cost_quality import (
    PROPRIO_COST,
    CostQualitySettings,
    SimCosts,
    cost_quality,
    random_plans,
    spearman,
)
from latentwm.planning.evaluate import (
    PlanningModels,
    PlanningOptions,
    WorldModelRun,
    block_must_move,
    evaluate_planning,
    held_out_episodes,
    planning_session,
    sample_goals,
)
from latentwm.planning.mpc import EpisodeGoal, LatentObserver, derive_seed, run_episode
from latentwm.planning.state_model import StatePolicy, fit_state_dynamics
from latentwm.rollout import Sampling

SIMULATOR_RUNGS = {
    "state": "simulator + state cost",
    "latent": "simulator + latent cost",
    PROPRIO_COST: "simulator + latent + proprio cost",
}
"""cost_quality's cost -> its rung; the proprio one only for runs with proprio channels (`simulator_costs`)."""


def simulator_costs(run: WorldModelRun) -> tuple[str, ...]:
    """The simulator rungs' costs for `run`: the state and latent costs, and the latent + proprio cost when the run
    plans with a proprio term (proprio channels)."""
    return ("state", "latent", *((PROPRIO_COST,) if run.exp.model.proprio_dim else ()))


def summarize_rung(rows: list[dict], moves: list[bool]) -> dict:
    """Per-goal rows {"goal", "success", "success_joint", "block_pos_diff"} -> the rung's figures."""
    mv = [r for r in rows if moves[r["goal"]]]

    def mean(rs, k):
        return float(np.mean([float(r[k]) for r in rs])) if rs else None

    return {
        "success_rate": mean(rows, "success"),
        "success_rate_joint": mean(rows, "success_joint"),
        "success_rate_block_moves": mean(mv, "success"),
        "block_px": mean(rows, "block_pos_diff"),
        "block_px_block_moves": mean(mv, "block_pos_diff"),
        "goals": len(rows),
        "block_moving_goals": len(mv),
    }


def _kept(path: Path, settings: dict, make, log=print):
    """Rows kept in `path` with the settings that made them: a rerun with the same settings reuses them; other
    settings (or a file without them) are computed again and replace the file, said in one line — never rows of
    another goal set or budget passed on as this one's."""
    if path.exists():
        kept = read_json(path, "ladder rows", expect=None)
        if isinstance(kept, dict) and kept.get("settings") == settings:
            return kept["rows"]
        log(f"ladder: {path} was made with other settings; computing it again")
    rows = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {"settings": settings, "rows": rows})
    return rows


def _settings(run: WorldModelRun, goals, plan_cfg, replans: int, **more) -> dict:
    """What a rung's rows depend on: the run's encoder and conditioning, the plan section, the goals (episode, start,
    offset), the replanning budget, and any rung-specific value (`more`). JSON-plain, so a reread compares equal."""
    return json.loads(
        json.dumps(
            {
                "encoder": run.encoder_label,
                "proprio_channels": run.exp.model.proprio_dim,
                "relative_actions": run.exp.data.relative_actions,
                "plan": dataclasses.asdict(plan_cfg),
                "goals": [[g.episode, int(g.t0)] for g in goals],
                "max_replans": replans,
                **more,
            },
            default=str,
        )
    )


def simulator_rows(run: WorldModelRun, goals, plan_cfg, replans: int, encoder=None) -> list[dict]:
    """Per-goal rows of CEM on the simulator under each of `simulator_costs(run)` (the run's codec, the cache's
    latent and proprio statistics)."""
    s = planning_session(run, plan_cfg, encoder=lambda f: None)
    encoder = encoder or DinoEncoder.from_config(run.exp.encoder)
    encode = encoder.encode if hasattr(encoder, "encode") else encoder
    stats = NormStats.from_dict(run.data_stats["latents"])
    observer = LatentObserver(encode, stats, proprio_stats=proprio_stats_of(run.data_stats, run.model.cfg))
    res = cost_quality(
        goals,
        s.codec,
        observer,
        plan_cfg,
        costs=simulator_costs(run),
        settings=CostQualitySettings(samples=4, cem=True, max_plans=replans),
    )
    return [{"goal": i, **r} for i, r in enumerate(res["per_goal"])]


def cost_rank_rows(
    run: WorldModelRun, goals, plan_cfg, samples: int, sample_steps=(1,), encoder=None, log=print
) -> list[dict]:
    """Per goal {"goal", "state": {cost: r}, "block": {cost: r or None}}: Spearman correlations of each cost with
    the true state distance and with the block's own distance (px + degrees; None where no candidate moved the
    block) of the reached states. `samples` random plans from the start (`cost_quality.random_plans`) are executed
    in the simulator — scored by the state, latent and (proprio channels) latent + proprio costs — and rolled out by
    the model from the start frame, scored by its own planning objective (`GoalCost.of_plan(plan_cfg)`: latent MSE and
    the proprio term on its predicted proprio; "model K=k") and by its latent term alone ("model K=k latent"), at
    each K of `sample_steps`; the candidates and the model's noise are the same for every cost of a goal. Against
    the block's distance the latent terms say whether the predicted frames resolve the block — what the proprio
    term cannot carry."""
    s = planning_session(run, plan_cfg, encoder=encoder)
    channels = run.exp.model.proprio_dim
    costs = simulator_costs(run)
    sim = SimCosts(s.codec, s.observer, goals[0].goal_frame.shape[0], plan_cfg.proprio_weight)
    full = GoalCost.of_plan(plan_cfg)
    # the latent term alone, where there is another term to leave out
    objectives = {"": full, **({" latent": dataclasses.replace(full, proprio_weight=0.0)} if channels else {})}
    prop = (lambda st: proprio_from_state(st)[None]) if channels else (lambda st: None)  # noqa: E731
    rows = []
    try:
        for i, g in enumerate(goals):
            cands = random_plans(s.codec, g, plan_cfg, samples)  # (P, H, plan_dim)
            got = sim(g.start_state, cands, g.goal_frame, sim.goal_latent(g.goal_frame), g.goal_state, costs)
            scored = {c: got[c] for c in costs if c != "state"}  # the references are "state" and "block"
            history = s.observer(g.start_frame[None], prop(g.start_state))[None]  # (1, 1, N, D + P)
            goal = s.observer(g.goal_frame[None], prop(g.goal_state))[0]  # (N, D + P)
            for k in sample_steps:
                for suffix, cost in objectives.items():
                    obj = LatentGoalObjective(
                        run.model,
                        history,
                        goal,
                        sampling=Sampling(steps=k),
                        cost=cost,
                        seed=derive_seed(s.seed, g.index),
                    )
                    with torch.no_grad():
                        pred = MappedObjective(obj, s.codec.expand)(cands.to(history.device))
                    scored[f"model K={k}{suffix}"] = pred.float().cpu().numpy()
            block_varies = len(np.unique(np.round(got["block"], 6))) > 1
            row: dict = {
                "goal": i,
                "state": {c: spearman(v, got["state"]) for c, v in scored.items()},
                "block": {c: spearman(v, got["block"]) if block_varies else None for c, v in scored.items()},
            }
            rows.append(row)
            log(f"  cost ranks, goal {i}: " + " ".join(f"{c} {v:.2f}" for c, v in row["state"].items()))
    finally:
        sim.close()
    return rows


def summarize_ranks(rows: list[dict], moves: list[bool]) -> dict:
    """Per cost of `cost_rank_rows`: the mean rank correlation with the state distance over all goals and over
    those whose block must move, and with the block's distance over the goals where a candidate moved the block
    (`block_goals` of them)."""
    names = list(rows[0]["state"])
    mv = [r for r in rows if moves[r["goal"]]]

    def mean(xs):
        xs = [x for x in xs if x is not None]
        return float(np.mean(xs)) if xs else None

    return {
        c: {
            "rank_corr": mean([r["state"][c] for r in rows]),
            "rank_corr_block_moves": mean([r["state"][c] for r in mv]),
            "block_rank_corr": mean([r["block"][c] for r in rows]),
            "block_goals": sum(r["block"][c] is not None for r in rows),
        }
        for c in names
    }


def state_model_rows(run: WorldModelRun, cache, goals, plan_cfg, replans: int, steps: int, log=print) -> list[dict]:
    """Per-goal rows of CEM on the privileged state model fitted on the cache's training clips."""
    clips = LatentClipDataset(cache, 2, "train", model_clip_options(run.exp, text=False))
    model, _ = fit_state_dynamics(clips, steps=steps, log=log)
    s = planning_session(run, plan_cfg, encoder=lambda f: None)
    env, rows = PushTEnv(image_size=goals[0].goal_frame.shape[0]), []
    try:
        for i, g in enumerate(goals):
            r = run_episode(
                env,
                StatePolicy(model, s.codec, plan_cfg),
                EpisodeGoal(g.start_state, g.goal_state, g.goal_frame),
                replans,
                s.codec.frame_skip,
                seed=derive_seed(s.seed, g.index),
            )
            r.pop("frames")
            rows.append({"goal": i, **r})
            log(f"  state model, goal {i}: {'✓' if r['success'] else '✗'} block {r['block_pos_diff']:.0f} px")
    finally:
        env.close()
    return rows


def model_rows(run: WorldModelRun, episodes, cache, plan_cfg, out: Path, baselines=(), encoder=None) -> dict:
    """Per-goal rows {method: [...]} of the world model's CEM (and `baselines`), kept under `out`."""
    if not (out / "planning_goals.json").exists():
        evaluate_planning(
            run,
            episodes,
            plan_cfg,
            cache_dir=cache,
            out_dir=out,
            options=PlanningOptions(planners=("cem",), baselines=tuple(baselines), num_videos=1),
            models=PlanningModels(encoder=encoder),
        )
    return json.loads((out / "planning_goals.json").read_text())


@dataclass(frozen=True)
class LadderOptions:
    """Which rungs the ladder climbs beside the simulator's, and what is already made."""

    sample_steps: tuple[int, ...] = (1, 4)
    """K of the latent-model rungs, one rung each ("latent model K=k")."""
    state_steps: int = 3000
    """Training steps of the privileged state model's rung."""
    next_frame: WorldModelRun | None = None
    """A run of the same size trained with model.prediction "next": adds the "next-frame variant" rung."""
    given: dict[str, list[dict]] | None = None
    """Per-goal rows already made on these goals ({"latent model K=1": rows, "random actions": rows}, e.g. the
    demo's plan stage), not run again."""
    rank_samples: int | None = 48
    """Random plans per goal for the costs' rank correlations (`cost_rank_rows`, at each K of sample_steps); None:
    not measured."""


def planning_ladder(
    run: WorldModelRun,
    episodes,
    cache,
    plan_cfg,
    out: Path,
    options: LadderOptions = LadderOptions(),
    *,
    encoder=None,
    log=print,
) -> dict:
    """Every rung of `options` on plan_cfg.num_goals goals of the run's held-out split (seed plan_cfg.seed).
    Returns {"rungs": {rung: summary}, "goals", "block_moving_goals", "settings"} and, with options.rank_samples,
    "cost_rank" ({cost: {rank_corr, rank_corr_block_moves}}, `summarize_ranks`) and "rank_samples"."""
    sample_steps, next_frame, state_steps = options.sample_steps, options.next_frame, options.state_steps
    d = run.exp.data
    goals = sample_goals(
        held_out_episodes(episodes, cache, d.eval_fraction, d.seed),
        plan_cfg.num_goals,
        plan_cfg.goal_offset,
        plan_cfg.seed,
    )
    moves = [block_must_move(g) for g in goals]
    replans = planning_session(run, plan_cfg, encoder=lambda f: None).max_replans
    given: dict = dict(options.given or {})  # gains the rows made here
    out = Path(out)
    key = _settings(run, goals, plan_cfg, replans)
    costs = simulator_costs(run)
    sim = _kept(
        out / "simulator.json",
        {**key, "costs": list(costs)},
        lambda: simulator_rows(run, goals, plan_cfg, replans, encoder),
        log,
    )
    rungs = {
        name: summarize_rung(
            [
                {
                    "goal": r["goal"],
                    "success": r[f"{c}_cem_success"],
                    "success_joint": r[f"{c}_cem_joint"],
                    "block_pos_diff": r[f"{c}_cem_block_px"],
                }
                for r in sim
            ],
            moves,
        )
        for c, name in SIMULATOR_RUNGS.items()
        if c in costs
    }
    rungs["state model (privileged)"] = summarize_rung(
        _kept(
            out / "state_model.json",
            {**key, "state_steps": state_steps, "cache": str(cache)},
            lambda: state_model_rows(run, cache, goals, plan_cfg, replans, state_steps, log),
            log,
        ),
        moves,
    )
    for k in sample_steps:
        name = f"latent model K={k}"
        if name not in given:
            rows = model_rows(
                run,
                episodes,
                cache,
                dataclasses.replace(plan_cfg, sample_steps=k),
                out / f"latent_k{k}",
                baselines=() if "random actions" in given else ("random",),
                encoder=encoder,
            )
            given[name] = rows["cem"]
            given.setdefault("random actions", rows.get("random"))
        rungs[name] = summarize_rung(given[name], moves)
    if next_frame is not None:
        rungs["next-frame variant"] = summarize_rung(
            model_rows(next_frame, episodes, cache, plan_cfg, out / "next_frame", encoder=encoder)["cem"], moves
        )
    if given.get("random actions") is not None:
        rungs["random actions"] = summarize_rung(given["random actions"], moves)
    ranks = None
    if options.rank_samples:
        ranks = summarize_ranks(
            _kept(
                out / "cost_rank.json",
                {
                    **key,
                    "costs": list(costs),
                    "samples": options.rank_samples,
                    "sample_steps": list(sample_steps),
                    "v": 2,
                },
                lambda: cost_rank_rows(run, goals, plan_cfg, options.rank_samples, sample_steps, encoder, log),
                log,
            ),
            moves,
        )
    c = plan_cfg.cem
    return {
        "rungs": rungs,
        **({"cost_rank": ranks, "rank_samples": options.rank_samples} if ranks else {}),
        "goals": len(goals),
        "block_moving_goals": int(sum(moves)),
        "settings": {
            "cem": [c.population, c.elites, c.iterations],
            "horizon": plan_cfg.horizon,
            "exec_steps": plan_cfg.exec_steps,
            "max_replans": replans,
            "goal_offset": plan_cfg.goal_offset,
            "relative_actions": d.relative_actions,
            "proprio_channels": run.exp.model.proprio_dim,
        },
    }


__all__ = [
    "SIMULATOR_RUNGS",
    "LadderOptions",
    "cost_rank_rows",
    "simulator_costs",
    "summarize_ranks",
    "planning_ladder",
    "summarize_rung",
]
