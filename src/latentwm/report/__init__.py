"""The demo's report folder: report.md, metrics.json, training curves, rollout-error plot and rollout GIFs.

`metrics.json` is the machine-readable contract (later stages add their sections: planning, decoder, rl):
  rollout.horizons, rollout.model_error, rollout.copy_last_error (aligned lists, latent MSE),
  rollout.context_average_error, mean_of_samples_error, sample_error, swapped_actions_error (the same),
  rollout.action_sensitivity, rollout.beats_copy_last / beats_context_average (per horizon), rollout.k1_model_error,
  rollout.state_error {model, copy_last, context_average: {agent_px, block_px, angle_deg: per horizon}, probe},
  training.kept_step / kept_score / last_step_score (the weights evaluated are the best held-out ones),
  planning.success_rate_block_moves / success_rate_block_static {method: rate}, planning.state_probe_cost,
  planning.ladder {rungs: {rung: {success_rate, success_rate_joint, success_rate_block_moves, block_px, ...}}},
  encoder.weights ("random" or "pretrained:<id>") and what the caller adds (encoder_info), wall_time_s,
  text.gain_curve [[step, gain]], text.half_gain_step, text.final_gain (± final_gain_stderr,
  final_gain_above_noise: > 2 standard errors), text.by_horizon {horizons,
  text_conditioned, no_text, shuffled_text}, text.shuffled_minus_true_h8, text.goal_planning, and action.gain_curve /
  half_gain_step / final_gain (report/text.py), text.arms[N] (training arms), encoder.table and
  planning.data_scaling (benchmark studies, report/studies.py), ...
The markdown sections live in `report.sections`.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latentwm.config import ExperimentConfig
from latentwm.engine.checkpoint import load_decoder
from latentwm.engine.logging import read_metrics
from latentwm.eval.visualize import plot_curves, write_rollout_gifs
from latentwm.report.sections import (
    STATE_COST,
    encoder_paragraph,
    planning_section,
    rl_section,
    rollout_section,
    state_section,
    training_section,
    videos_section,
)
from latentwm.report.studies import (
    SCALING_FIGURE,
    data_scaling_metrics,
    data_scaling_section,
    encoder_table_metrics,
    encoder_table_section,
)
from latentwm.report.text import arms_metrics, arms_section, text_metrics, text_section

_PLANNING_KEYS = (
    "success_rate",
    "success_rate_joint",
    "final_distance",
    "seconds_per_plan",
    "num_goals",
    "start_distance",
    "start_success_rate",
    "success_step",
    "settings",
    "convention",
    "block_pos_diff",
    "agent_pos_diff",
    "angle_diff_deg",
    "block_static_goals",
    "success_rate_block_moves",
    "success_rate_block_static",
    "by_subset",
    "state_probe_cost",
    "text_goal",
    "ladder",
)
_ROLLOUT_EXTRA = (
    "context_average_error",
    "mean_of_samples_error",
    "sample_error",
    "sample_spread",
    "swapped_actions_error",
    "action_sensitivity",
    "num_samples",
    "swap_skipped_clips",
)


def weights_field(label: str) -> str:
    """'random:tiny-random' -> 'random'; 'pretrained:facebook/dinov2-small' stays as it is."""
    return "random" if label.startswith("random") else label


@dataclass(frozen=True)
class ReportRun:
    """What every report shows: the trained model's evaluation and the run's facts."""

    results: dict
    """{"tau_ctx=1.0": rollout_errors(...), "tau_ctx=0.9": ..., optional "k=1": the same at K = 1, optional
    "state_error": the demo's state-probe errors}."""
    train_dir: Path
    """The training run's folder (its metrics.jsonl gives the curves)."""
    encoder_label: str
    wall_time_s: float
    data: dict
    """Facts about the data (trajectories, env_steps, policy_mix, ...), kept in metrics["data"]."""
    model_parameters: int | None = None
    best: dict | None = None
    """The kept weights' record {"step", "score", ...} (`Trainer.load_best`; None: the last step's weights were
    evaluated)."""
    encoder_info: dict | None = None
    """Facts about the encoder from the caller (e.g. "how_trained", "cost_quality", "random_encoder_cost_quality"),
    merged into metrics["encoder"]."""


@dataclass(frozen=True)
class StageResults:
    """The optional stages' results; None: the stage did not run (its section is left out)."""

    planning: dict | None = None
    """An `evaluate_planning` result whose files were written under out/planning."""
    decoder: dict | None = None
    """A `train-decoder` run's metrics with its folder under "path": videos are then decoded frames (PCA of the
    features otherwise)."""
    latent_stats: Any = None
    """The model's latent normalization, undone before decoding (used with `decoder` only)."""
    rl: dict | None = None
    text_eval: dict | None = None
    """rollout_errors with condition_gain at long horizons (text vs no text; report/text.py)."""
    text_goal: dict | None = None
    """Text-goal vs image-goal planning (report/text.py)."""
    text_arms: tuple[dict, ...] = ()
    """Training-arms sweeps (report/text.py `read_arms`, one per data size): their answer, tables and curves join
    the "Does the model listen?" section; metrics.json's text.arms holds their figures."""
    encoder_table: dict | None = None
    """The encoder table (report/studies.py `read_encoder_table`): shown under the encoder paragraph; metrics.json's
    encoder.table."""
    data_scaling: dict | None = None
    """The data-scaling curve (report/studies.py `read_data_scaling`): shown after planning with its plot;
    metrics.json's planning.data_scaling."""


def write_report(out: str | Path, exp: ExperimentConfig, run: ReportRun, stages: StageResults = StageResults()) -> Path:
    """Write report.md, metrics.json and the plots of `run` and the `stages` that ran under `out`; returns the
    report folder."""
    out = Path(out)
    (out / "rollouts").mkdir(parents=True, exist_ok=True)
    results, best = run.results, run.best
    main = results["tau_ctx=1.0"]
    train_curve, ev = _plots(out, run.train_dir, results, best)
    gifs = _videos(out, main, stages.decoder, stages.latent_stats)
    metrics = {
        "rollout": _rollout_metrics(exp, results),
        "encoder": {
            "weights": weights_field(run.encoder_label),
            "label": run.encoder_label,
            "name": exp.encoder.name,
            "image_size": exp.encoder.image_size,
            **(run.encoder_info or {}),
        },
        "training": _training_metrics(exp, train_curve, ev, best, run.model_parameters),
        "data": {
            **run.data,
            "dino_wm_table5_success": dino_wm_success_at(int(run.data["trajectories"]))
            if run.data.get("trajectories")
            else None,
        },
        "wall_time_s": run.wall_time_s,
    }
    meaning = (stages.text_eval or {}).get("meaning")
    cond = text_metrics(out, run.train_dir, stages.text_eval, stages.text_goal, meaning)
    if cond["text"]["gain_curve"] or cond["action"]["gain_curve"] or stages.text_eval is not None:
        metrics.update(cond)
    if stages.text_arms:
        metrics.setdefault("text", {})["arms"] = {str(sw["trajectories"]): arms_metrics(sw) for sw in stages.text_arms}
        for sw in stages.text_arms:
            if sw.get("figure"):
                shutil.copyfile(sw["figure"], out / f"text_arms_{sw['trajectories']}.png")
    if stages.encoder_table is not None:
        metrics["encoder"]["table"] = encoder_table_metrics(stages.encoder_table)
    if stages.decoder is not None:
        metrics["decoder"] = {
            k: stages.decoder[k]
            for k in (
                "psnr",
                "ssim",
                "lpips",
                "mean_image_psnr",
                "mean_image_ssim",
                "split",
                "epochs",
                "train_seconds",
                "parameters",
                "perceptual",
            )
            if k in stages.decoder
        }
    if stages.rl is not None:
        metrics["rl"] = stages.rl
    if stages.planning is not None:
        metrics["planning"] = {k: stages.planning[k] for k in _PLANNING_KEYS if k in stages.planning}
    if stages.data_scaling is not None:
        metrics.setdefault("planning", {})["data_scaling"] = data_scaling_metrics(stages.data_scaling)
        if stages.data_scaling.get("figure"):
            shutil.copyfile(stages.data_scaling["figure"], out / SCALING_FIGURE)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    (out / "report.md").write_text(_markdown(exp, metrics, run.encoder_label, bool(ev), gifs, stages))
    return out


def _plots(out: Path, train_dir: Path, results: dict, best: dict | None) -> tuple[list, list]:
    """Training curve, held-out curve (when logged; the kept step marked) and rollout error per horizon; returns
    ([(step, loss)], [(step, held-out score, copy-last)])."""
    main, renoised, k1 = results["tau_ctx=1.0"], results.get("tau_ctx=0.9"), results.get("k=1")
    H = main["horizons"]
    recs = read_metrics(train_dir / "metrics.jsonl") if (train_dir / "metrics.jsonl").exists() else []
    tr = [(r["step"], r["train/loss"]) for r in recs if "train/loss" in r]
    ev = sorted(
        {
            r["step"]: (r["step"], r["eval/mean_model"], r["eval/mean_copy_last"])
            for r in recs
            if "eval/mean_model" in r
        }.values()
    )  # a step logged twice (resumed): its last row
    series = {"train loss (shortcut forcing)": ([s for s, _ in tr], [v for _, v in tr])}
    plot_curves(out / "training_curve.png", series, "Training loss", "step", "loss", logy=True)
    if ev:
        curves = {
            "model (EMA)": ([e[0] for e in ev], [e[1] for e in ev]),
            "copy last frame": ([e[0] for e in ev], [e[2] for e in ev]),
        }
        if best is not None:
            curves[f"kept (best): step {best['step']}"] = ([best["step"]], [best["score"]])
        plot_curves(out / "eval_curve.png", curves, "Held-out rollout error (mean over horizons)", "step", "latent MSE")
    err_series = {
        "model, clean context (τ_ctx=1.0)": (H, main["model_error"]),
        "copy last frame": (H, main["copy_last_error"]),
    }
    if main.get("context_average_error") is not None:
        err_series["context average"] = (H, main["context_average_error"])
    if main.get("mean_of_samples_error") is not None:
        err_series[f"mean of {main['num_samples']} samples"] = (H, main["mean_of_samples_error"])
    if main.get("swapped_actions_error") is not None:
        err_series["swapped actions"] = (H, main["swapped_actions_error"])
    if k1 is not None:
        err_series["model, K = 1"] = (H, k1["model_error"])
    if renoised:
        err_series["model, re-noised context (τ_ctx=0.9)"] = (H, renoised["model_error"])
    plot_curves(
        out / "rollout_error.png",
        err_series,
        "Rollout error per horizon (held-out episodes)",
        "horizon (model steps)",
        "latent MSE",
    )
    return tr, ev


def _videos(out: Path, main: dict, decoder: dict | None, latent_stats) -> list[Path]:
    """Rollout GIFs (decoded frames when the demo trained a decoder) and the decoder's reconstruction grid."""
    dec = None
    if decoder is not None:
        dec = load_decoder(decoder["path"])[0]
        grids = sorted((Path(decoder["path"]) / "eval").glob("recon_step*.png"))
        if grids:
            shutil.copyfile(grids[-1], out / "decoder_reconstructions.png")
    return write_rollout_gifs(main.get("examples", []), out / "rollouts", decoder=dec, latent_stats=latent_stats)


def _rollout_metrics(exp: ExperimentConfig, results: dict) -> dict:
    main, renoised, k1 = results["tau_ctx=1.0"], results.get("tau_ctx=0.9"), results.get("k=1")
    model = main["model_error"]
    res = {
        "horizons": main["horizons"],
        "model_error": model,
        "copy_last_error": main["copy_last_error"],
        "metric": "latent MSE (normalized DINO features), mean over held-out clips",
        "num_clips": main["num_clips"],
        "beats_copy_last": [m < c for m, c in zip(model, main["copy_last_error"])],
        "context": exp.rollout.context,
        "sample_steps": exp.rollout.sample_steps,
        "by_group": main["by_group"],
    }
    res.update({k: main[k] for k in _ROLLOUT_EXTRA if k in main})
    ctx_avg = main.get("context_average_error")
    if ctx_avg is not None:
        res["beats_context_average"] = [m < c for m, c in zip(model, ctx_avg)]
    k1_error = k1["model_error"] if k1 is not None else model if exp.rollout.sample_steps == 1 else None
    if k1_error is not None:
        res["k1_model_error"] = k1_error
        if ctx_avg is not None:
            res["k1_beats_context_average"] = [m < c for m, c in zip(k1_error, ctx_avg)]
    if renoised:
        res["renoised_context"] = {"tau_ctx": 0.9, "model_error": renoised["model_error"]}
    if results.get("state_error") is not None:
        res["state_error"] = results["state_error"]
    return res


def _training_metrics(
    exp: ExperimentConfig, train_curve: list, ev: list, best: dict | None, model_parameters: int | None
) -> dict:
    """Steps, final loss, and which weights were evaluated: the kept (best held-out) step and its score beside the
    last evaluated step's (held-out score = mean over horizons of the rollout latent MSE at training's
    evaluations)."""
    steps = train_curve[-1][0] if train_curve else 0
    last = ev[-1] if ev else None
    return {
        "steps": steps,
        "final_loss": train_curve[-1][1] if train_curve else None,
        "preset": exp.preset,
        "model_parameters": model_parameters,
        "weights": "best" if best is not None else "last",
        "kept_step": best["step"] if best is not None else steps,
        "kept_score": best["score"] if best is not None else (last[1] if last and last[0] == steps else None),
        "last_step_score": last[1] if last else None,
        "last_eval_step": last[0] if last else None,
    }


def _markdown(
    exp: ExperimentConfig,
    metrics: dict,
    encoder_label: str,
    has_eval_curve: bool,
    gifs: list[Path],
    stages: StageResults,
) -> str:
    planning, rl = stages.planning, stages.rl
    data = metrics["data"]
    params, steps = metrics["training"]["model_parameters"] or "?", metrics["training"]["steps"]
    state = metrics["rollout"].get("state_error")
    return f"""# latentwm demo report — Push-T

{encoder_paragraph(metrics["encoder"], encoder_label)}
{_encoder_table(stages.encoder_table, encoder_label)}

- preset `{exp.preset}`: dynamics model of {params} parameters, {steps} steps
{data_lines(data, exp)}
- wall time: {metrics["wall_time_s"] / 60:.1f} min

{rollout_section(exp, metrics["rollout"])}
{text_section(metrics["text"], metrics.get("action", {})) if "text" in metrics else ""}
{_arms(stages.text_arms)}
{state_section(state) if state is not None else ""}
{planning_section(planning) if planning is not None else ""}
{_scaling(stages.data_scaling)}
{rl_section(rl) if rl is not None else ""}
{training_section(metrics["training"], has_eval_curve)}

{videos_section(stages.decoder)}

{chr(10).join(f"![rollout {i}](rollouts/{p.name})" for i, p in enumerate(gifs))}
"""


def _encoder_table(study: dict | None, encoder_label: str) -> str:
    return "" if study is None else encoder_table_section(study, encoder_label) + "\n"


def _scaling(study: dict | None) -> str:
    if study is None:
        return ""
    return data_scaling_section(study, SCALING_FIGURE if study.get("figure") else None)


def _arms(sweeps: tuple[dict, ...]) -> str:
    if not sweeps:
        return ""
    return arms_section(list(sweeps), lambda s: f"text_arms_{s['trajectories']}.png" if s.get("figure") else None)


DINO_WM_SCALING = ((200, 0.08), (1000, 0.48), (5000, 0.72), (10000, 0.88), (18500, 0.92))
"""DINO-WM's Push-T success rate by number of training trajectories (arXiv 2411.04983, Table 5: pretrained DINOv2
features, noisy replays of expert pushes, its CEM planner)."""


def dino_wm_success_at(trajectories: int) -> float | None:
    """DINO-WM's Push-T success at this many trajectories, interpolated in log(trajectories) between its table's
    rows; None outside the table (below 200 or above 18,500 trajectories)."""
    pts = DINO_WM_SCALING
    if not pts[0][0] <= trajectories <= pts[-1][0]:
        return None
    for (n0, s0), (n1, s1) in zip(pts, pts[1:]):
        if n0 <= trajectories <= n1:
            return s0 + (s1 - s0) * math.log(trajectories / n0) / math.log(n1 / n0)
    return None


def data_lines(data: dict, exp: ExperimentConfig) -> str:
    """The report's lines on the data: scale, rendering, policy mix, and what DINO-WM's data-scaling table gives at
    this scale."""
    n = data.get("trajectories")
    mix = data.get("policy_mix") or {}
    counts, shares = mix.get("episodes") or {}, mix.get("shares") or {}
    names = {"goal": "goal-directed", "scripted": "random-target", "random_walk": "random walk"}
    mix_text = ", ".join(f"{names.get(k, k)} {counts.get(k, 0)} ({shares.get(k, 0):g})" for k in shares)
    ref = dino_wm_success_at(int(n)) if n else None
    ref_text = (
        f"≈ {ref:.2f} success at {n} trajectories"
        if ref is not None
        else f"no row at {n} trajectories (its table spans 200 → 0.08 to 18,500 → 0.92)"
    )
    return (
        f"- data: {n} simulated Push-T trajectories ({data.get('env_steps')} env steps, at most "
        f"{data.get('env_steps_per_episode')} per trajectory), frame skip {exp.data.frame_skip} "
        f"({exp.data.frame_skip * exp.data.env_action_dim}-D actions per model step), "
        f"{exp.data.eval_fraction:.0%} of trajectories held out\n"
        f"- policy mix: {mix_text or 'not recorded'}; command noise {mix.get('noise_px', '?')} px\n"
        f"- DINO-WM's data-scaling table on Push-T (pretrained DINOv2, noisy expert replays, Table 5 of "
        f"arXiv 2411.04983) gives {ref_text}: another encoder and other data, a reference for the scale, not a "
        f"target"
    )


__all__ = [
    "DINO_WM_SCALING",
    "STATE_COST",
    "ReportRun",
    "StageResults",
    "data_lines",
    "dino_wm_success_at",
    "weights_field",
    "write_report",
]
