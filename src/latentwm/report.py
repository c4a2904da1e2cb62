"""The demo's report folder: report.md, metrics.json, training curves, rollout-error plot and rollout GIFs.

`metrics.json` is the machine-readable contract (later stages add their sections: planning, decoder, rl):
  rollout.horizons, rollout.model_error, rollout.copy_last_error (aligned lists, latent MSE),
  encoder.weights ("random" or "pretrained:<id>"), wall_time_s, ...
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from latentwm.config import ExperimentConfig
from latentwm.train.decoder_trainer import load_decoder
from latentwm.eval.visualize import plot_curves, write_rollout_gifs
from latentwm.planning.evaluate import planning_table
from latentwm.rl.runner import rl_table
from latentwm.train.logging import read_metrics


def weights_field(label: str) -> str:
    """'random:tiny-random' -> 'random'; 'pretrained:facebook/dinov2-small' stays as it is."""
    return "random" if label.startswith("random") else label


def write_report(out: str | Path, exp: ExperimentConfig, results: dict, train_dir: Path, encoder_label: str,
                 wall_time_s: float, data: dict, model_parameters: int | None = None,
                 planning: dict | None = None, decoder: dict | None = None, latent_stats=None,
                 rl: dict | None = None) -> Path:
    """results: {"tau_ctx=1.0": rollout_errors(...), "tau_ctx=0.9": ...}; planning: an `evaluate_planning` result
    whose files were written under out/planning (or None); decoder: a `train-decoder` run's metrics with its folder
    under "path" (videos are then decoded frames, with `latent_stats` undoing the model's normalization; PCA of the
    features otherwise). Returns the report folder."""
    out = Path(out)
    (out / "rollouts").mkdir(parents=True, exist_ok=True)
    main, renoised = results["tau_ctx=1.0"], results.get("tau_ctx=0.9")
    train_curve, has_eval_curve = _plots(out, train_dir, main, renoised)
    gifs = _videos(out, main, decoder, latent_stats)
    metrics = {
        "rollout": _rollout_metrics(exp, main, renoised),
        "encoder": {"weights": weights_field(encoder_label), "label": encoder_label, "name": exp.encoder.name,
                    "image_size": exp.encoder.image_size},
        "training": {"steps": train_curve[-1][0] if train_curve else 0,
                     "final_loss": train_curve[-1][1] if train_curve else None,
                     "preset": exp.preset, "model_parameters": model_parameters},
        "data": data,
        "wall_time_s": wall_time_s,
    }
    if decoder is not None:
        metrics["decoder"] = {k: decoder[k] for k in ("psnr", "ssim", "lpips", "mean_image_psnr", "mean_image_ssim",
                                                     "split", "epochs", "train_seconds", "parameters", "perceptual")
                              if k in decoder}
    if rl is not None:
        metrics["rl"] = rl
    if planning is not None:
        metrics["planning"] = {k: planning[k] for k in ("success_rate", "final_distance", "seconds_per_plan",
                                                         "num_goals", "start_distance", "start_success_rate",
                                                         "success_step", "settings", "convention", "block_pos_diff",
                                                         "agent_pos_diff", "angle_diff_deg", "block_static_goals")
                               if k in planning}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    md = _markdown(exp, main, renoised, metrics, encoder_label, has_eval_curve, gifs, planning, rl, decoder)
    (out / "report.md").write_text(md)
    return out


def _plots(out: Path, train_dir: Path, main: dict, renoised: dict | None) -> tuple[list, bool]:
    """Training curve, held-out curve (when logged) and rollout error per horizon; returns ([(step, loss)], whether
    the held-out curve exists)."""
    H = main["horizons"]
    recs = read_metrics(train_dir / "metrics.jsonl") if (train_dir / "metrics.jsonl").exists() else []
    tr = [(r["step"], r["train/loss"]) for r in recs if "train/loss" in r]
    ev = [(r["step"], r["eval/mean_model"], r["eval/mean_copy_last"]) for r in recs if "eval/mean_model" in r]
    series = {"train loss (shortcut forcing)": ([s for s, _ in tr], [v for _, v in tr])}
    plot_curves(out / "training_curve.png", series, "Training loss", "step", "loss", logy=True)
    if ev:
        plot_curves(out / "eval_curve.png",
                    {"model (EMA)": ([e[0] for e in ev], [e[1] for e in ev]),
                     "copy last frame": ([e[0] for e in ev], [e[2] for e in ev])},
                    "Held-out rollout error (mean over horizons)", "step", "latent MSE")
    err_series = {"model, clean context (τ_ctx=1.0)": (H, main["model_error"]),
                  "copy last frame": (H, main["copy_last_error"])}
    if renoised:
        err_series["model, re-noised context (τ_ctx=0.9)"] = (H, renoised["model_error"])
    plot_curves(out / "rollout_error.png", err_series, "Rollout error per horizon (held-out episodes)",
                "horizon (model steps)", "latent MSE")
    return tr, bool(ev)


def _videos(out: Path, main: dict, decoder: dict | None, latent_stats) -> list[Path]:
    """Rollout GIFs (decoded frames when the demo trained a decoder) and the decoder's reconstruction grid."""
    dec = None
    if decoder is not None:
        dec = load_decoder(decoder["path"])[0]
        grids = sorted((Path(decoder["path"]) / "eval").glob("recon_step*.png"))
        if grids:
            shutil.copyfile(grids[-1], out / "decoder_reconstructions.png")
    return write_rollout_gifs(main.get("examples", []), out / "rollouts", decoder=dec, latent_stats=latent_stats)


def _rollout_metrics(exp: ExperimentConfig, main: dict, renoised: dict | None) -> dict:
    res = {"horizons": main["horizons"], "model_error": main["model_error"],
           "copy_last_error": main["copy_last_error"],
           "metric": "latent MSE (normalized DINO features), mean over held-out clips",
           "num_clips": main["num_clips"],
           "beats_copy_last": [m < c for m, c in zip(main["model_error"], main["copy_last_error"])],
           "context": exp.rollout.context, "sample_steps": exp.rollout.sample_steps, "by_group": main["by_group"]}
    if renoised:
        res["renoised_context"] = {"tau_ctx": 0.9, "model_error": renoised["model_error"]}
    return res


def _markdown(exp: ExperimentConfig, main: dict, renoised: dict | None, metrics: dict, encoder_label: str,
              has_eval_curve: bool, gifs: list[Path], planning: dict | None, rl: dict | None,
              decoder: dict | None) -> str:
    H, beats, data = main["horizons"], metrics["rollout"]["beats_copy_last"], metrics["data"]
    params, steps = metrics["training"]["model_parameters"] or "?", metrics["training"]["steps"]
    weights = metrics["encoder"]["weights"]
    random_note = ("**The encoder has random weights** (`%s`): the latents are features of an untrained DINOv2 "
                   "architecture, not pretrained DINO features. Pass a real encoder (e.g. `--encoder.name "
                   "dinov2-s` with local weights) for meaningful features." % encoder_label
                   if weights == "random" else f"Encoder weights: `{weights}`.")
    ren = [f"{e:.4f}" for e in renoised["model_error"]] if renoised else [""] * len(H)
    rows = "\n".join(f"| {h} | {m:.4f} | {c:.4f} | {r} | {'yes' if b else 'no'} |"
                     for h, m, c, r, b in zip(H, main["model_error"], main["copy_last_error"], ren, beats))
    return f"""# latentwm demo report — Push-T

{random_note}

- preset `{exp.preset}`: dynamics model of {params} parameters, {steps} steps
- data: {data.get('episodes')} simulated Push-T episodes of {data.get('env_steps_per_episode')} env steps, frame skip
  {exp.data.frame_skip} ({exp.data.frame_skip * 2}-D actions per model step), 10% of episodes held out
- wall time: {metrics['wall_time_s'] / 60:.1f} min

## Rollouts on held-out episodes

{exp.rollout.context} observed frames, then {len(H)} predicted frames from the dataset's actions with
{exp.rollout.sample_steps}-step sampling (EMA weights), against copying the last observed frame. Error is the mean
squared error of normalized latents ({main['num_clips']} clips). The model beats the baseline at
{sum(beats)}/{len(beats)} horizons.

| horizon | model | copy last | model, τ_ctx = 0.9 | model better |
|---|---|---|---|---|
{rows}

![rollout error](rollout_error.png)

{_planning_section(planning) if planning is not None else ""}
{_rl_section(rl) if rl is not None else ""}
## Training

![training loss](training_curve.png)
{"![held-out error during training](eval_curve.png)" if has_eval_curve else ""}

{_videos_section(decoder)}

{chr(10).join(f'![rollout {i}](rollouts/{p.name})' for i, p in enumerate(gifs))}
"""


def _static_note(planning: dict) -> str:
    if "block_static_goals" not in planning:
        return ""
    ba = planning["block_pos_diff"]
    return (f" In {planning['block_static_goals']:.0%} of the goals the block pose already passes at the start (only "
            f"the agent must get there); the block / agent / angle columns show what each method controls (e.g. "
            + ", ".join(f"{m} ends {ba[m]:.0f} px from the goal block" for m in ba if m != "dataset_actions")
            + ").")


def _planning_section(planning: dict) -> str:
    sr, fd = planning["success_rate"], planning["final_distance"]
    verdict = []
    for m in (k for k in sr if k not in ("random", "dataset_actions")):
        if "random" in sr:
            verdict.append(f"{m}: success {sr[m]:.2f} vs random {sr['random']:.2f} "
                           f"({'higher' if sr[m] > sr['random'] else 'not higher'}), final distance "
                           f"{fd[m]:.1f} vs {fd['random']:.1f} ({'lower' if fd[m] < fd['random'] else 'not lower'})")
    videos = "\n".join(f"![{Path(v).stem}](planning/{v})" for v in planning.get("videos", []))
    st = planning["settings"]
    cost = "latent MSE to the goal's features"
    if st.get("proprio_term"):
        pm = st.get("proprio_probe") or {}
        cost += (f" + {st.get('proprio_weight', 1.0):g} × proprio MSE, as DINO-WM's objective; the agent position is "
                 "read from the model's features of the last predicted frame by a probe trained on the training "
                 "clips (`planning/proprio.py`)")
        if "heldout_rmse" in pm:
            cost += (f", held-out RMSE {pm['heldout_rmse']:.1f} px vs {pm['baseline_rmse']:.1f} px for the mean "
                     f"position")
    return f"""## Goal-conditioned planning in the real Push-T environment

DINO-WM's protocol: each goal is the frame a held-out episode reaches {st.get('goal_offset')}
env steps after a random start; the environment is reset to the start state; the planners run receding-horizon MPC
on the world model ({cost}), the baselines execute random actions or replay the
episode's own actions (the oracle that produced the goal). Same goals and seeds for every method.

{planning_table(planning)}

{"; ".join(verdict)}.{_static_note(planning)}

Executed episodes (left) beside the goal image (right); the strip turns green once the goal test passes.

{videos}
"""


def _videos_section(decoder: dict | None) -> str:
    if decoder is None:
        return """## Real vs predicted (PCA of features)

Left: real; right: predicted (red border) after the same context. Colours are the 3 leading principal components of
the real clip's features, shared by both sides.
"""
    return f"""## Real vs predicted (decoded frames)

Left: real; right: predicted (red border) after the same context. Both sides are latents rendered by the RAE-style
decoder (`{decoder['path']}`): held-out PSNR {decoder['psnr']:.2f} dB, SSIM {decoder['ssim']:.3f} (the mean image:
{decoder['mean_image_psnr']:.2f} dB, {decoder['mean_image_ssim']:.3f}). Decoder originals (top) vs reconstructions
(bottom) on held-out frames:

![decoder reconstructions](decoder_reconstructions.png)
"""


def _rl_section(rl: dict) -> str:
    m = rl["methods"]
    verdict = ""
    if "pmpo" in m and "bc" in m:
        d_s, d_c = m["pmpo"]["success"] - m["bc"]["success"], m["pmpo"]["max_coverage"] - m["bc"]["max_coverage"]
        verdict = (f"Imagination training {'helped' if d_c > 0 or d_s > 0 else 'did not help'}: PMPO − BC = "
                   f"{d_s:+.2f} success rate, {d_c:+.3f} best coverage.")
    return f"""## Offline RL in the world model

Agent heads on the frozen model's register features: behaviour cloning + a multi-token reward model on the dataset
(BC), then PMPO on policy rollouts imagined by the model (λ-returns from the value head, KL to the BC prior). Scored
in the real gym-pusht environment on {rl['episodes']} seeded resets, {rl['max_model_steps']} model steps each
({rl['convention']}).

{rl_table(rl)}

{verdict} Videos: `rl/eval/videos/`.
"""
