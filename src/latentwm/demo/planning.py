"""The demo's planning stage: the proprio probe DINO-WM's objective reads the agent with, the planners and
baselines toward held-out goals in the real Push-T env, the split by whether the block must move, and CEM on the
state probe's pose cost alone (the diagnosis that separates the dynamics model from the encoder's cost)."""

from __future__ import annotations

import dataclasses
import functools
import shutil
from pathlib import Path

import numpy as np

from latentwm.config import DemoConfig, ExperimentConfig, PlanConfig, preset
from latentwm.data.latent_cache import LatentCache
from latentwm.io.files import read_json
from latentwm.planning.evaluate import (
    PlanningModels,
    PlanningOptions,
    WorldModelRun,
    block_must_move,
    evaluate_planning,
    held_out_episodes,
    sample_goals,
)
from latentwm.planning.ladder import LadderOptions, planning_ladder
from latentwm.planning.proprio import PROBE_FILE, ProprioProbe, train_proprio_probe
from latentwm.planning.state_probe import StateProbe
from latentwm.report import STATE_COST
from latentwm.train.trainer import Trainer


def place_beside(path: Path, folder: Path) -> None:
    """Copy a saved probe (its .safetensors and .json) into `folder` (the run's checkpoints folder, where the
    `latentwm plan` command looks for it)."""
    for f in (path, path.with_suffix(".json")):
        shutil.copy2(f, Path(folder) / f.name)


def fit_proprio_probe(cfg: DemoConfig, exp: ExperimentConfig, trainer: Trainer, out: Path, kept: dict | None) -> dict:
    """DINO-WM plans on visual + proprio MSE. A model with proprio channels predicts the agent's proprio itself
    (nothing to fit); otherwise the agent state is read from the model's features (the kept weights) by a probe,
    saved to `<out>/proprio_probe/` and beside the checkpoints (where `latentwm plan` finds it)."""
    step = kept["step"] if kept else trainer.state.step
    if exp.model.proprio_dim:
        return {"model_step": step, "fitted": False, "why": "the model predicts the proprio (model.proprio_dim)"}
    probe, metrics = train_proprio_probe(trainer.ema, out / "latents", exp, preset(cfg.preset).probe, seed=cfg.seed)
    probe.save(out / "proprio_probe" / PROBE_FILE, {**metrics, "model_step": step})
    return {"model_step": step}


def plan_demo(
    cfg: DemoConfig, exp: ExperimentConfig, trainer: Trainer, encoder, out: Path, state_probe: StateProbe | None = None
) -> dict:
    """The planners and baselines on the preset's plan section, toward cfg.goals() held-out goals, with their
    success on the goals where the block must move and where it already passes ("block static"); the
    sizes.text_goal_planners again on the same starts toward goals given as sentences ("text_goal"); with a state
    probe and cfg.state_cost_diagnosis, "state_probe_cost": CEM on the same goals and seeds, planned on the probe's
    pose cost alone."""
    probe = None
    if not exp.model.proprio_dim:
        place_beside(out / "proprio_probe" / PROBE_FILE, Path(exp.train.out_dir))
        probe = ProprioProbe.load(out / "proprio_probe" / PROBE_FILE)
    plan_cfg: PlanConfig = dataclasses.replace(exp.plan, num_goals=cfg.goals())
    run = WorldModelRun.from_cache(trainer.ema, exp, out / "latents")
    plan = functools.partial(evaluate_planning, run, out / "episodes", cache_dir=out / "latents")
    folder = out / "report" / "planning"
    has_text = exp.model.text_dim > 0 and LatentCache(out / "latents").text_encoder is not None
    text_goals = cfg.sizes.text_goal_planners if has_text else ()
    res = plan(
        plan_cfg,
        options=PlanningOptions(
            planners=tuple(cfg.planners),
            seed=cfg.seed,
            goal_text="auto" if text_goals else "",
            text_goal_planners=tuple(text_goals) or None,
        ),
        models=PlanningModels(encoder=encoder, proprio_probe=probe),
        out_dir=folder,
    )
    static = block_static_goals(exp, plan_cfg, out, cfg.seed)
    res.update(goal_subsets(read_json(folder / "planning_goals.json", "planning goals"), static))
    if cfg.state_cost_diagnosis and state_probe is not None:
        dcfg = dataclasses.replace(plan_cfg, visual_weight=0.0, state_weight=1.0, proprio_weight=0.0)
        diag = plan(
            dcfg,
            options=PlanningOptions(planners=("cem",), baselines=(), seed=cfg.seed, num_videos=0),
            models=PlanningModels(encoder=encoder, state_probe=state_probe),
            out_dir=folder / "state_cost",
        )
        sub = goal_subsets(read_json(folder / "state_cost" / "planning_goals.json", "planning goals"), static)
        res["state_probe_cost"] = {
            "method": STATE_COST,
            **{
                k: diag[k]["cem"]
                for k in (
                    "success_rate",
                    "final_distance",
                    "block_pos_diff",
                    "agent_pos_diff",
                    "angle_diff_deg",
                    "seconds_per_plan",
                )
            },
            **{k: sub[k]["cem"] for k in ("success_rate_block_moves", "success_rate_block_static")},
            "by_subset": {
                s: {k: v["cem"] if isinstance(v, dict) else v for k, v in d.items()}
                for s, d in sub["by_subset"].items()
            },
            "cost": {"visual_weight": 0.0, "state_weight": 1.0, "proprio_weight": 0.0},
            "probe": state_probe.metrics,
        }
    return res


def demo_ladder(cfg: DemoConfig, exp: ExperimentConfig, trainer: Trainer, encoder, out: Path) -> dict:
    """The planning ladder (planning/ladder.py) on the plan stage's goals and seeds; its CEM and random rows are
    the plan stage's own (K = plan.sample_steps), the rest is made under `<out>/ladder`."""
    plan_cfg = dataclasses.replace(exp.plan, num_goals=cfg.goals(), seed=cfg.seed)
    rows = read_json(out / "report" / "planning" / "planning_goals.json", "planning goals")
    given = {
        name: rows[m]
        for name, m in ((f"latent model K={plan_cfg.sample_steps}", "cem"), ("random actions", "random"))
        if m in rows
    }
    return planning_ladder(
        WorldModelRun.from_cache(trainer.ema, exp, out / "latents"),
        out / "episodes",
        out / "latents",
        plan_cfg,
        out / "ladder",
        LadderOptions(
            sample_steps=tuple(sorted({plan_cfg.sample_steps, 4})),
            state_steps=cfg.sizes.ladder_state_steps,
            given=given,
        ),
        encoder=encoder,
    )


def block_static_goals(exp: ExperimentConfig, plan_cfg: PlanConfig, out: Path, seed: int) -> list[bool]:
    """Per planning goal (evaluate_planning's goals: same held-out split, count, offset and seed): whether the
    block pose already passes the success test at the start (only the agent has to get there)."""
    d = exp.data
    goals = sample_goals(
        held_out_episodes(out / "episodes", out / "latents", d.eval_fraction, d.seed),
        plan_cfg.num_goals,
        plan_cfg.goal_offset,
        seed,
    )
    return [not block_must_move(g) for g in goals]


def goal_subsets(rows: dict[str, list[dict]], static: list[bool]) -> dict:
    """Per-goal planning rows ({method: [row]}, planning_goals.json) split into goals whose block must move and
    goals whose block pose already passes: {"success_rate_block_moves": {method: rate}, "success_rate_block_static":
    {...}, "by_subset": {subset: {"num_goals", "block_pos_diff", "agent_pos_diff", "angle_diff_deg": {method:
    mean}}}}; None where a subset has no goal."""

    def mean(sel: dict, key: str, scale: float = 1.0) -> dict:
        return {m: float(np.mean([r[key] for r in rs])) * scale if rs else None for m, rs in sel.items()}

    out: dict = {"by_subset": {}}
    for name, want in (("block_moves", False), ("block_static", True)):
        sel = {m: [r for r in rs if static[r["goal"]] == want] for m, rs in rows.items()}
        out[f"success_rate_{name}"] = mean(sel, "success")
        out["by_subset"][name] = {
            "num_goals": sum(s == want for s in static),
            "block_pos_diff": mean(sel, "block_pos_diff"),
            "agent_pos_diff": mean(sel, "agent_pos_diff"),
            "angle_diff_deg": mean(sel, "angle_diff", 180 / np.pi),
        }
    return out


__all__ = ["block_static_goals", "demo_ladder", "fit_proprio_probe", "goal_subsets", "place_beside", "plan_demo"]
