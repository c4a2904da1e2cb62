"""The markdown sections of the demo's report.md, each from its part of metrics.json (or the stage's result)."""

from __future__ import annotations

from pathlib import Path

from latentwm.config import ExperimentConfig
from latentwm.planning.evaluate import planning_table
from latentwm.rl.runner import rl_table

STATE_COST = "cem (state-probe cost)"
_PROBE_PARTS = (
    ("agent", "agent_rmse_px", "agent_baseline_rmse_px", " px"),
    ("block", "block_rmse_px", "block_baseline_rmse_px", " px"),
    ("angle", "angle_err_deg", "angle_baseline_err_deg", "°"),
)
_PROBE_LIMIT = 40.0
"""A probe part whose held-out error exceeds twice the success tolerance (20 px, 20°) cannot steer a plan into
the tolerance: a failed diagnosis on such a probe is inconclusive."""
_COST_QUALITY = (
    ("rank_corr", "rank correlation of the latent goal cost with the true state distance"),
    ("cem_on_simulator_success", "success of CEM on the simulator with this cost"),
)


def _num(v) -> str:
    return f"{v:.2f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


def encoder_paragraph(enc: dict, label: str) -> str:
    """The random-weights warning (only for an untrained encoder), else the weights, how the encoder was trained
    and its goal-cost quality beside the random encoder's, when the caller gave them (encoder_info)."""
    trained = enc.get("how_trained")
    if enc["weights"] == "random" and not trained:
        return (
            f"**The encoder has random weights** (`{label}`): the latents are features of an untrained DINOv2 "
            "architecture, not pretrained DINO features. Pass a real encoder (e.g. `--encoder.name dinov2-s` with "
            "local weights) for meaningful features."
        )
    text = f"Encoder `{label}`" + (f", trained: {trained}." if trained else f" (weights `{enc['weights']}`).")
    cq, rq = enc.get("cost_quality") or {}, enc.get("random_encoder_cost_quality") or {}
    parts = [
        f"{name} {_num(cq[k])}" + (f" (random encoder: {_num(rq[k])})" if k in rq else "")
        for k, name in _COST_QUALITY
        if k in cq
    ]
    if parts:
        text += " Goal-cost quality (`planning/cost_quality.py`): " + "; ".join(parts) + "."
    return text


def _cells(values, fmt: str = "{:.4f}") -> list[str]:
    return [fmt.format(v) for v in values] if values is not None else None


def rollout_section(exp: ExperimentConfig, ro: dict) -> str:
    """Per horizon: the model at the preset's K and at K = 1, the mean of N samples, the context average, copy-last,
    swapped actions and the re-noised context, with which baselines the model beats; the action sensitivity."""
    H, K, N = ro["horizons"], exp.rollout.sample_steps, ro.get("num_samples", 1)
    cols = [
        (f"model (K = {K})", ro["model_error"]),
        ("model (K = 1)", ro.get("k1_model_error") if K != 1 else None),
        (f"mean of {N} samples", ro.get("mean_of_samples_error") if N > 1 else None),
        ("context average", ro.get("context_average_error")),
        ("copy last", ro["copy_last_error"]),
        ("swapped actions", ro.get("swapped_actions_error")),
        ("model, τ_ctx = 0.9", (ro.get("renoised_context") or {}).get("model_error")),
    ]
    cols = [(name, _cells(v)) for name, v in cols if v is not None]
    flags = [("beats copy last", ro["beats_copy_last"]), ("beats ctx avg", ro.get("beats_context_average"))]
    flags = [(name, ["yes" if b else "no" for b in v]) for name, v in flags if v is not None]
    head = ["horizon"] + [n for n, _ in cols + flags]
    rows = [f"| {h} | " + " | ".join(c[i] for _, c in cols + flags) + " |" for i, h in enumerate(H)]
    table = "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *rows])
    n_ctx, n_k1 = sum(ro.get("beats_context_average") or []), sum(ro.get("k1_beats_context_average") or [])
    verdict = f"The model beats copy-last at {sum(ro['beats_copy_last'])}/{len(H)} horizons"
    if "beats_context_average" in ro:
        verdict += f" and the context average at {n_ctx}/{len(H)}" + (
            f" (K = 1: {n_k1}/{len(H)})" if "k1_beats_context_average" in ro and K != 1 else ""
        )
    sens_text = _sensitivity_text(ro.get("action_sensitivity"), ro.get("action_sensitivity_stderr"))
    return f"""## Rollouts on held-out episodes

{exp.rollout.context} observed frames, then {len(H)} predicted frames from the dataset's actions with
{K}-step sampling (EMA weights of the kept step), against baselines a blurring model cannot beat by blurring:
copying the last observed frame and the average of the observed frames. Error is the mean squared error of
normalized latents ({ro["num_clips"]} clips). The mean of {N} samples per clip is the error of their average (a
sharp stochastic model gains clearly over one sample, a blurry one does not); "swapped actions" rolls out with
another clip's future actions under the same noise.

{table}

{verdict}.{sens_text}

![rollout error](rollout_error.png)
"""


def state_section(se: dict) -> str:
    """Per horizon agent px / block px / angle ° of the predicted frames, read by the state probe, beside copy-last
    and the context average; the probe's own error on true frames."""
    p = se.get("probe") or {}
    own = ""
    if "agent_rmse_px" in p:
        own = (
            f" On held-out true frames the probe itself errs by agent {p['agent_rmse_px']:.0f} px, block "
            f"{p['block_rmse_px']:.0f} px, angle {p['angle_err_deg']:.0f}° (the train-mean pose: "
            f"{p['agent_baseline_rmse_px']:.0f} / {p['block_baseline_rmse_px']:.0f} / "
            f"{p['angle_baseline_err_deg']:.0f}), {p.get('train_frames')} training frames, {p.get('steps')} steps."
        )
    names = ("model", "copy_last", "context_average")
    rows = []
    for i in range(len(se["model"]["agent_px"])):
        cells = [" / ".join(f"{se[n][part][i]:.0f}" for n in names) for part in ("agent_px", "block_px", "angle_deg")]
        rows.append(f"| {i + 1} | " + " | ".join(cells) + " |")
    return f"""## Pose error of predicted frames (state probe)

A probe reads the Push-T pose (agent x, y, block x, y, block angle) from a frame's encoder latents
(`planning/state_probe.py`, fitted on the training frames).{own} Each cell compares its reading of a frame with its
reading of the true frame: model / copy last / context average ({se.get("num_clips")} held-out clips).

| horizon | agent px | block px | angle ° |
|---|---|---|---|
{chr(10).join(rows)}
"""


def _static_note(planning: dict) -> str:
    if "block_static_goals" not in planning:
        return ""
    ba = planning["block_pos_diff"]
    return (
        f" In {planning['block_static_goals']:.0%} of the goals the block pose already passes at the start (only "
        f"the agent must get there); the block / agent / angle columns show what each method controls (e.g. "
        + ", ".join(f"{m} ends {ba[m]:.0f} px from the goal block" for m in ba if m != "dataset_actions")
        + ")."
    )


def _subsets(planning: dict) -> str:
    """Success per method on the goals whose block must move and on those whose block already passes."""
    if "success_rate_block_moves" not in planning:
        return ""
    out = []
    for name, title in (("block_moves", "the block must move"), ("block_static", "the block already passes")):
        n, sr = planning["by_subset"][name]["num_goals"], dict(planning[f"success_rate_{name}"])
        if "state_probe_cost" in planning:
            sr[STATE_COST] = planning["state_probe_cost"][f"success_rate_{name}"]
        rates = ", ".join(f"{m} {v:.2f}" for m, v in sr.items() if v is not None)
        out.append(f"goals where {title} ({n}): " + (rates or "none"))
    return "Success rate per subset — " + "; ".join(out) + "."


def _with_diagnosis(planning: dict) -> dict:
    """The planning result with the state-cost diagnosis as one more method row (for the table)."""
    d = planning.get("state_probe_cost")
    if d is None:
        return planning
    res = dict(planning)
    for k in (
        "success_rate",
        "final_distance",
        "block_pos_diff",
        "agent_pos_diff",
        "angle_diff_deg",
        "seconds_per_plan",
    ):
        res[k] = {**planning[k], STATE_COST: d[k]}
    return res


def _diagnosis(planning: dict) -> str:
    d = planning.get("state_probe_cost")
    if d is None:
        return ""
    moves, n_moves = d["success_rate_block_moves"], planning["by_subset"]["block_moves"]["num_goals"]
    latent = planning["success_rate_block_moves"].get("cem")
    text = (
        f"**Diagnosis: CEM on the state-probe cost.** Same goals and seeds, CEM planned on the pose the state "
        f"probe reads from the last predicted frame, toward the goal's true pose (visual weight 0, proprio weight "
        f"0, state weight 1) instead of the latent MSE: success {d['success_rate']:.2f}, "
        + (f"{moves:.2f} on the {n_moves} goals whose block must move" if n_moves else "no goal needs the block moved")
        + f"; the block ends {d['block_pos_diff']:.0f} px from its goal pose"
        + (f" (latent-cost CEM: {planning['block_pos_diff']['cem']:.0f} px)." if latent is not None else ".")
    )
    if not n_moves:
        return text + " No goal here requires moving the block, so the diagnosis says nothing about it."
    if not moves:
        verdict = (
            "Planning on the state-probe cost cannot move the block either: **the dynamics model (its "
            "predicted frames under candidate actions), not the encoder's latent cost, is the bottleneck**."
        )
    elif latent is None:
        verdict = f"With the pose cost the planner moves the block to {moves:.0%} of those goals."
    elif moves > latent:
        verdict = (
            "With the pose cost the planner moves the block where the latent cost does not: the model predicts "
            "the block's motion well enough, **the encoder's latent cost is the bottleneck**."
        )
    else:
        verdict = f"The pose cost does no better than the latent cost on those goals ({moves:.2f} vs {latent:.2f})."
    # a success is scored in the simulator whatever the probe reads; a failure may be the probe's
    caveat, weak = _probe_caveat(d.get("probe") or {}, failed=not moves or (latent is not None and moves <= latent))
    if weak:
        verdict = "Taken at face value, " + verdict[0].lower() + verdict[1:].replace("**", "")
    return f"{text} {verdict}{caveat}"


def _probe_caveat(p: dict, failed: bool) -> tuple[str, bool]:
    """How far the verdict rests on the probe: its held-out errors beside the train-mean pose's, and whether a failed
    diagnosis is inconclusive (the probe reads some part no better than that mean, or with an error over twice the
    success tolerance: the pose cost was unreliable)."""
    parts = [(n, p[k], p[b], u) for n, k, b, u in _PROBE_PARTS if p.get(k) is not None and p.get(b) is not None]
    if not parts:
        return "", False
    errs = ", ".join(f"{n} {e:.0f}{u} (mean pose {b:.0f}{u})" for n, e, b, u in parts)
    weak = [n for n, e, b, _ in parts if e >= b or e > _PROBE_LIMIT]
    if weak and failed:
        return (
            f" But the probe reads the {' and '.join(weak)} no better than the train-mean pose or with more than "
            f"twice the success tolerance (held-out {errs}): the pose cost is unreliable too, so this diagnosis "
            "is inconclusive.",
            True,
        )
    return f" The probe's held-out error: {errs}.", False


def planning_section(planning: dict) -> str:
    sr, fd = planning["success_rate"], planning["final_distance"]
    verdict = []
    for m in (k for k in sr if k not in ("random", "dataset_actions")):
        if "random" in sr:
            verdict.append(
                f"{m}: success {sr[m]:.2f} vs random {sr['random']:.2f} "
                f"({'higher' if sr[m] > sr['random'] else 'not higher'}), final distance "
                f"{fd[m]:.1f} vs {fd['random']:.1f} ({'lower' if fd[m] < fd['random'] else 'not lower'})"
            )
    videos = "\n".join(f"![{Path(v).stem}](planning/{v})" for v in planning.get("videos", []))
    st = planning["settings"]
    cost = "latent MSE to the goal's features"
    if st.get("proprio_term") and st.get("proprio_channels"):
        cost += (
            f" + {st.get('proprio_weight', 1.0):g} × proprio MSE, as DINO-WM's objective, on the proprio the "
            "model predicts with the frame (the agent's x, y, vx, vy on every token, `data/proprio.py`)"
        )
    elif st.get("proprio_term"):
        pm = st.get("proprio_probe") or {}
        cost += (
            f" + {st.get('proprio_weight', 1.0):g} × proprio MSE, as DINO-WM's objective; the agent position is "
            "read from the model's features of the last predicted frame by a probe trained on the training "
            "clips (`planning/proprio.py`)"
        )
        if "heldout_rmse" in pm:
            cost += f", held-out RMSE {pm['heldout_rmse']:.1f} px vs {pm['baseline_rmse']:.1f} px for the mean position"
    return f"""## Goal-conditioned planning in the real Push-T environment

DINO-WM's protocol: each goal is the frame a held-out episode reaches {st.get("goal_offset")}
env steps after a random start; the environment is reset to the start state; the planners run receding-horizon MPC
on the world model ({cost}), the baselines execute random actions or replay the
episode's own actions (the oracle that produced the goal). Same goals and seeds for every method.

{planning_table(_with_diagnosis(planning))}

{"; ".join(verdict)}.{_static_note(planning)}

{_subsets(planning)}

{_diagnosis(planning)}

{_ladder(planning.get("ladder"))}

Executed episodes (left) beside the goal image (right); the strip turns green once the goal test passes.

{videos}
"""


def rate_or_px(v: float | None, px: bool = False) -> str:
    """A table cell: a rate to 2 decimals, pixels (px) to whole ones, "–" for a value not measured."""
    return "–" if v is None else (f"{v:.0f}" if px else f"{v:.2f}")


def _ladder(lad: dict | None) -> str:
    """The planning ladder's table (planning/ladder.py), or nothing."""
    if not lad:
        return ""
    f = rate_or_px
    rows = "\n".join(
        f"| {name} | {f(r['success_rate'])} | {f(r['success_rate_joint'])} | "
        f"{f(r['success_rate_block_moves'])} | {f(r['block_px'], True)} | "
        f"{f(r['block_px_block_moves'], True)} |"
        for name, r in lad["rungs"].items()
    )
    return f"""### The planning ladder

The same {lad["goals"]} goals ({lad["block_moving_goals"]} whose block must move) and the same CEM budget on every
rung, from the simulator down to the model (`planning/ladder.py`): where success drops between two rungs, the
ingredient that changed (planner, encoder, dynamics on the true state, dynamics in latents) is the bottleneck. The
state model reads the true state (privileged).

| rung | success | DINO-WM joint test | success, block must move | block px | block px, block must move |
|---|---|---|---|---|---|
{rows}
{_cost_ranks(lad)}"""


def _cost_ranks(lad: dict) -> str:
    """The ladder's cost ranks as two sentences (empty when not measured)."""
    ranks = lad.get("cost_rank")
    if not ranks:
        return ""
    f = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
    state = ", ".join(f"{c} {f(v['rank_corr'])}" for c, v in ranks.items())
    block = ", ".join(f"{c} {f(v.get('block_rank_corr'))}" for c, v in ranks.items())
    return (
        f"\nHow each cost orders the same {lad.get('rank_samples', '?')} random plans per goal before any planner runs "
        f"(Spearman correlation with the true state distance): {state}; with the block's own distance (px + degrees, "
        f"goals where a candidate moved it): {block}. The simulator's costs use the true dynamics; `model K=k` is "
        "the model's own planning objective on its predictions, `latent` its latent term alone — below the "
        "simulator's under the same cost, the model's predictions are what fails.\n"
    )


def training_section(tr: dict, has_eval_curve: bool) -> str:
    """The curves, and which weights the report evaluates: the kept (best held-out) step beside the last."""
    if tr.get("weights") == "best":
        last = (
            ""
            if tr.get("last_step_score") is None
            else f"; the last evaluation, step {tr['last_eval_step']}: {tr['last_step_score']:.4f}"
        )
        kept = (
            f"Evaluation, planning and RL use the best held-out weights (`checkpoints/best.pt`): step "
            f"{tr['kept_step']} of {tr['steps']}, held-out score {tr['kept_score']:.4f} (mean rollout latent MSE "
            f"over horizons){last}."
        )
    else:
        kept = "No best checkpoint was kept: evaluation, planning and RL use the last step's weights."
    return f"""## Training

{kept}

![training loss](training_curve.png)
{"![held-out error during training (the kept step marked)](eval_curve.png)" if has_eval_curve else ""}"""


def videos_section(decoder: dict | None) -> str:
    if decoder is None:
        return """## Real vs predicted (PCA of features)

Left: real; right: predicted (red border) after the same context. Colours are the 3 leading principal components of
the real clip's features, shared by both sides.
"""
    return f"""## Real vs predicted (decoded frames)

Left: real; right: predicted (red border) after the same context. Both sides are latents rendered by the RAE-style
decoder (`{decoder["path"]}`): held-out PSNR {decoder["psnr"]:.2f} dB, SSIM {decoder["ssim"]:.3f} (the mean image:
{decoder["mean_image_psnr"]:.2f} dB, {decoder["mean_image_ssim"]:.3f}). Decoder originals (top) vs reconstructions
(bottom) on held-out frames:

![decoder reconstructions](decoder_reconstructions.png)
"""


def rl_section(rl: dict) -> str:
    m = rl["methods"]
    verdict = ""
    if "pmpo" in m and "bc" in m:
        d_s, d_c = m["pmpo"]["success"] - m["bc"]["success"], m["pmpo"]["max_coverage"] - m["bc"]["max_coverage"]
        verdict = (
            f"Imagination training {'helped' if d_c > 0 or d_s > 0 else 'did not help'}: PMPO − BC = "
            f"{d_s:+.2f} success rate, {d_c:+.3f} best coverage."
        )
    return f"""## Offline RL in the world model

Agent heads on the frozen model's register features: behaviour cloning + a multi-token reward model on the dataset
(BC), then PMPO on policy rollouts imagined by the model (λ-returns from the value head, KL to the BC prior). Scored
in the real gym-pusht environment on {rl["episodes"]} seeded resets, {rl["max_model_steps"]} model steps each
({rl["convention"]}).

{rl_table(rl)}

{verdict} Videos: `rl/eval/videos/`.
"""


__all__ = [
    "STATE_COST",
    "encoder_paragraph",
    "rate_or_px",
    "planning_section",
    "rl_section",
    "rollout_section",
    "state_section",
    "training_section",
    "videos_section",
]


def noise_verdict(value: float, stderr: float | None, what: str) -> str:
    """A sentence on whether `value` (a difference measured over clips) is distinguishable from 0: only a value
    beyond two standard errors is called an effect; without a standard error nothing is claimed."""
    if stderr is None:
        return f"no standard error was measured, so whether {what} is not claimed."
    if abs(value) <= 2 * stderr:
        return f"within noise (±2 s.e. = ±{2 * stderr:.4f}): this does not show that {what}."
    return f"beyond 2 s.e. ({stderr:.4f}): {what}." if value > 0 else f"negative beyond 2 s.e. ({stderr:.4f})."


def _sensitivity_text(sens: float | None, stderr: float | None) -> str:
    if sens is None:
        return ""
    return (
        f" Action sensitivity (swapped − model error, mean over horizons, same noise): {sens:+.4f}, "
        + noise_verdict(sens, stderr, "the predictions depend on the actions")
    )
