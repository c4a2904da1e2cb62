"""What a planning evaluation reports (planning/evaluate.py runs it): per-method means of the per-goal rows, the
planning.json summary, its markdown table, and the text-goal side: the sentence each goal gets and the `text_goal`
section (the same starts and seeds, goals given as a sentence instead of an image).

Text goals (`PlanningOptions.goal_text`): "auto" describes each (start state, goal state) pair in the Push-T
language (`envs.pusht_language.describe_segment`) with one of its HELD-OUT paraphrases (never in training
narrations), drawn from (seed, goal index); any other text is one sentence for every goal. Planners then plan toward
the goal the model imagines under the sentence (`MPCPolicy`, planning/imagine.py) and are scored against the true
goal state exactly like image goals.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import torch

from latentwm.config import ConfigError
from latentwm.data.latent_cache import LatentCache
from latentwm.data.proprio import latents_only
from latentwm.envs.pusht import goal_metrics, proprio_from_state
from latentwm.envs.pusht_language import (
    HELDOUT_PER_TEMPLATE,
    NARRATION_STYLES,
    describe_segment,
    sentence,
    train_paraphrases,
)
from latentwm.planning.imagine import embed_sentences, text_encoder_for
from latentwm.planning.state_probe import pose_gap

AUTO = "auto"
TEXT_TAG = " (text goal)"
"""Suffix of the text-goal rows in `planning_table`."""


def block_must_move(goal) -> bool:
    """Whether a planning goal's block pose (`evaluate.PlanningGoal`: start_state, goal_state) fails the success test
    at the start with the agent placed at its goal: the block must be pushed, not only the pusher moved."""
    return not goal_metrics(np.r_[goal.goal_state[:2], goal.start_state[2:]], goal.goal_state)["success"]


def goal_sentence(start_state, goal_state, seed: int, index: int, style: str = "direction") -> str:
    """The Push-T language's description of the change from start to goal in narration `style` (the one the model
    was trained on: a magnitude-trained model gets a goal with distances), in a held-out paraphrase drawn from
    default_rng([seed, index, 0x7E47]) (deterministic)."""
    tid, slots = describe_segment(start_state, goal_state, style)
    # the held-out paraphrases follow the training ones
    p = len(train_paraphrases(tid)) + int(np.random.default_rng([seed, index, 0x7E47]).integers(HELDOUT_PER_TEMPLATE))
    return sentence(tid, slots, p)


def goal_sentences(goals, goal_text: str, seed: int, style: str = "direction") -> list[str]:
    """One sentence per goal (`PlanningGoal`s): `goal_sentence` of each (in narration `style`) for "auto", else
    `goal_text` for all."""
    if goal_text.strip() == AUTO:
        return [goal_sentence(g.start_state, g.goal_state, seed, g.index, style) for g in goals]
    return [goal_text.strip()] * len(goals)


def goal_texts(s, goals, text_encoder=None, cache_dir=None) -> tuple[list[str], torch.Tensor, str]:
    """(sentence per goal, their embeddings (G, E) on the model's device, the text encoder's label) for evaluation
    session `s` (evaluate._Session; s.opts.goal_text), resolved before any planning so a model without text fails at
    once. text_encoder None: `text_encoder_for` the run's facts (for a model in memory: its config and the training
    cache's cache.json in `cache_dir`)."""
    facts = s.run.facts
    if facts is None:
        info = (
            LatentCache(cache_dir).info if cache_dir is not None and (Path(cache_dir) / "cache.json").exists() else {}
        )
        facts = {"config": s.run.exp.to_dict(), "cache_info": info, "path": "(in memory)"}
    if text_encoder is None:
        text_encoder = text_encoder_for(facts, where="plan.goal_text")
    elif s.run.model.cfg.text_dim == 0:
        raise ConfigError("plan.goal_text: the model was not trained with text (model.text_dim = 0)")
    style = (facts.get("cache_info") or {}).get("narration", NARRATION_STYLES[0])  # the words it was trained on
    sentences = goal_sentences(goals, s.opts.goal_text, s.seed, style)
    dev = next(s.run.model.parameters()).device
    return sentences, embed_sentences(text_encoder, sentences, dev), getattr(text_encoder, "label", "(given)")


def imagined_goal_facts(observer, policy, goal, probe=None) -> dict:
    """After a text-goal episode: latent MSE of the goal the policy imagined (`policy.goal`) to the true goal
    frame's latents, beside the start frame's (how far the goal was to begin with), and the imagination's seconds.
    probe (a `StateProbe`): the imagined goal's pose too — block px, agent px and angle degrees between the probe's
    reading of it and the true goal state (`imagined_goal_pose`), beside the true start state's gap to the goal
    (`start_goal_pose`, exact) and the probe's reading of the true goal frame (`probe_goal_pose`: its own error,
    the floor under the imagined one)."""
    prop = (
        None
        if observer.proprio_stats is None  # frames with proprio channels: the states' proprio
        else np.stack([proprio_from_state(goal.goal_state), proprio_from_state(goal.start_state)])
    )
    with torch.no_grad():
        true = observer(np.stack([goal.goal_frame, goal.start_frame]), prop)
        imagined = policy.goal.to(true.device, true.dtype)
        out: dict = {
            "imagined_goal_mse": float((imagined - true[0]).pow(2).mean()),
            "start_goal_mse": float((true[1] - true[0]).pow(2).mean()),
            "imagine_seconds": float(policy.imagine_seconds),
        }
        if probe is not None:
            p_dim = 0 if observer.proprio_stats is None else len(observer.proprio_stats.mean)
            goal_pose = torch.as_tensor(np.asarray(goal.goal_state, dtype=np.float64)[:5])
            start_pose = torch.as_tensor(np.asarray(goal.start_state, dtype=np.float64)[:5])
            read = probe.predict_pose(latents_only(torch.stack([imagined, true[0]]), p_dim).float()).cpu()
            gaps = pose_gap(torch.stack([read[0].double(), read[1].double(), start_pose]), goal_pose)
            for name, g in zip(("imagined_goal_pose", "probe_goal_pose", "start_goal_pose"), gaps.tolist()):
                out[name] = dict(zip(("agent_px", "block_px", "angle_deg"), g))
        return out


def method_means(rows: dict[str, list[dict]], methods) -> dict:
    """Means over goals per method: success_rate (ours) and success_rate_joint (DINO-WM's joint test),
    final_distance, block/agent_pos_diff, angle_diff_deg, success_step (over successful goals; None without one);
    sentence_success_rate for the methods whose every goal had words (`EpisodeGoal.sentence`) to fit."""

    def mean(m, key):
        return float(np.mean([r[key] for r in rows[m]]))

    steps = {m: [r["success_step"] for r in rows[m] if r["success_step"] is not None] for m in methods}
    said = {m for m in methods if all(r.get("sentence_success") is not None for r in rows[m])}
    return {
        **({"sentence_success_rate": {m: mean(m, "sentence_success") for m in methods if m in said}} if said else {}),
        "success_rate": {m: mean(m, "success") for m in methods},
        "success_rate_joint": {m: mean(m, "success_joint") for m in methods},
        "final_distance": {m: mean(m, "final_distance") for m in methods},
        "block_pos_diff": {m: mean(m, "block_pos_diff") for m in methods},
        "agent_pos_diff": {m: mean(m, "agent_pos_diff") for m in methods},
        "angle_diff_deg": {m: math.degrees(mean(m, "angle_diff")) for m in methods},
        "success_step": {m: float(np.mean(v)) if v else None for m, v in steps.items()},
    }


def summarize(s, goals, rows: dict[str, list[dict]], methods: list[str], held_out: int) -> dict:
    """planning.json's image-goal part from the per-goal rows of evaluation session `s` (evaluate._Session)."""
    cfg, channels = s.cfg, s.run.model.cfg.proprio_dim
    means = method_means(rows, methods)
    return {
        "success_rate": means["success_rate"],
        "final_distance": means["final_distance"],
        # DINO-WM's joint test (‖Δ(agent, block position)‖ < 20 px, angle < π/9) beside ours (each within 20 px)
        "success_rate_joint": means["success_rate_joint"],
        # with goal sentences: did the change from the start do what the goal's words say (`sentence_fits`)?
        **{k: means[k] for k in ("sentence_success_rate",) if k in means},
        "seconds_per_plan": {m: float(np.mean([r["seconds_per_plan"] for r in rows[m]])) for m in s.opts.planners},
        "num_goals": len(goals),
        **{k: means[k] for k in ("block_pos_diff", "agent_pos_diff", "angle_diff_deg")},
        # goals whose block pose already passes at the start: only the agent has to get there
        "block_static_goals": float(np.mean([not block_must_move(g) for g in goals])),
        "start_success_rate": float(np.mean([r["start_success"] for r in rows[methods[0]]])),
        "start_distance": float(np.mean([r["start_distance"] for r in rows[methods[0]]])),
        "success_step": means["success_step"],
        "settings": {
            **{k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("planner", "num_goals")},
            "max_replans": s.max_replans,
            "budget_env_steps": s.max_replans * s.exec_steps * s.codec.frame_skip,
            "frame_skip": s.codec.frame_skip,
            "context": s.context,
            "repeat_actions": s.opts.repeat_actions,
            "bf16": s.bf16,
            "proprio_term": s.probe is not None or bool(channels and cfg.proprio_weight > 0),
            "proprio_channels": channels,
            "relative_actions": s.codec.relative,
            "proprio_probe": getattr(s.probe, "metrics", None) if s.probe is not None else None,
            "state_term": s.state_probe is not None,
            "state_probe": getattr(s.state_probe, "metrics", None) if s.state_probe is not None else None,
            "held_out_episodes": held_out,
        },
        "convention": "DINO-WM Push-T success (block < 20 px, angle < π/9, agent < 20 px) at the end of any "
        "executed chunk; final_distance = block px + agent px + angle degrees of the last state",
    }


def summarize_text_goals(s, goals, rows: dict[str, list[dict]], sentences: list[str], text_encoder: str) -> dict:
    """planning.json's `text_goal` section: the planners' means (as the image-goal ones, same starts and seeds),
    seconds per plan and per imagination, the imagined goal's latent MSE to the true goal (beside the start's), the
    sentence of every goal and the settings that made them."""
    planners = list(rows)
    means = method_means(rows, planners)
    per: dict[str, dict] = {
        k: {m: float(np.mean([r[k] for r in rows[m]])) for m in planners}
        for k in ("seconds_per_plan", "imagine_seconds", "imagined_goal_mse")
    }
    for k in ("imagined_goal_pose", "probe_goal_pose", "start_goal_pose"):  # with a state probe
        if all(k in r for m in planners for r in rows[m]):
            parts = ("agent_px", "block_px", "angle_deg")
            per[k] = {m: {p: float(np.mean([r[k][p] for r in rows[m]])) for p in parts} for m in planners}
    return {
        **means,
        **per,
        "start_goal_mse": float(np.mean([r["start_goal_mse"] for r in rows[planners[0]]])),
        "num_goals": len(goals),
        "goals": [{"goal": g.index, "episode": g.episode, "t0": g.t0, "sentence": t} for g, t in zip(goals, sentences)],
        "sentences": "heldout_paraphrase" if s.opts.goal_text.strip() == AUTO else "given",
        "text_guidance": s.cfg.text_guidance,
        "imagine_steps": s.cfg.imagine_steps,
        "imagine_horizon": s.cfg.horizon,
        "text_encoder": text_encoder,
        "convention": "goals are sentences: the model imagines plan.horizon frames from the start observation "
        "under the sentence (text guidance plan.text_guidance) and plans toward the last one; "
        "success and distances against the true goal state, as image goals",
    }


def text_goal_comparison(metrics: dict) -> dict | None:
    """Image-goal vs text-goal MPC per planner on the same starts, from an `evaluate_planning` result, in the shape
    report/text.py's `text_metrics(..., text_goal=...)` takes: {"methods": planners, "image": {key: {planner: v}},
    "text": {key: {planner: v}}, "imagined_goal_mse", "start_goal_mse", "sentences", "text_guidance"}; None when
    the result has no text goals."""
    text = metrics.get("text_goal")
    if not text:
        return None
    methods = list(text["success_rate"])
    keys = ("success_rate", "final_distance", "block_pos_diff", "agent_pos_diff", "angle_diff_deg")
    said = ("sentence_success_rate",) if "sentence_success_rate" in text else ()
    return {
        "methods": methods,
        "image": {k: {m: metrics[k][m] for m in methods if m in metrics.get(k, {})} for k in (*keys, *said)},
        "text": {k: dict(text[k]) for k in (*keys, *said)},
        # what the words' test gives without a planner: random actions (chance) and the episode's own actions
        "sentence_baselines": (
            {m: v for m, v in metrics.get("sentence_success_rate", {}).items() if m not in methods} if said else {}
        ),
        **{
            k: text.get(k)
            for k in (
                "imagined_goal_mse",
                "start_goal_mse",
                "imagined_goal_pose",
                "probe_goal_pose",
                "start_goal_pose",
                "sentences",
                "text_guidance",
                "num_goals",
            )
        },
    }


def planning_table(metrics: dict) -> str:
    """Markdown table of an `evaluate_planning` result (one row per method, then one per planner with text goals
    when the result has a `text_goal` section), with a settings line under it."""
    parts = all(k in metrics for k in ("block_pos_diff", "agent_pos_diff", "angle_diff_deg"))
    joint = "success_rate_joint" in metrics
    text = metrics.get("text_goal") or {}
    said = "sentence_success_rate" in metrics or "sentence_success_rate" in text
    lines = [
        "| method | success rate | "
        + ("DINO-WM joint test | " if joint else "")
        + ("goal's words fit | " if said else "")
        + "final state distance | "
        + ("block px | agent px | angle ° | " if parts else "")
        + "s / plan |",
        "|---|---|---|"
        + ("---|" if joint else "")
        + ("---|" if said else "")
        + ("---|---|---|" if parts else "")
        + "---|",
    ]
    sections = [(metrics, ""), *([(text, TEXT_TAG)] if text else [])]
    for sec, tag in sections:
        for m, sr in sec["success_rate"].items():
            wr = sec.get("sentence_success_rate", {}).get(m)
            wcol = ("–" if wr is None else f"{wr:.2f}") + " | " if said else ""
            sp = sec.get("seconds_per_plan", {}).get(m)
            extra = (
                f"{sec['block_pos_diff'][m]:.1f} | {sec['agent_pos_diff'][m]:.1f} | {sec['angle_diff_deg'][m]:.1f} | "
                if parts
                else ""
            )
            jr = sec.get("success_rate_joint", {}).get(m)
            jcol = ("–" if jr is None else f"{jr:.2f}") + " | " if joint else ""
            lines.append(
                f"| {m}{tag} | {sr:.2f} | {jcol}{wcol}{sec['final_distance'][m]:.1f} | {extra}"
                f"{'–' if sp is None else f'{sp:.2f}'} |"
            )
    s = metrics.get("settings", {})
    if s:
        lines.append("")
        lines.append(
            f"{metrics['num_goals']} goals {s.get('goal_offset')} env steps ahead (held-out episodes); "
            f"{_search_text(s)}, horizon {s.get('horizon')}, {s.get('exec_steps')} steps executed per plan, "
            f"≤ {s.get('max_replans')} plans, K = {s.get('sample_steps')}; at the start: distance "
            f"{metrics.get('start_distance', float('nan')):.1f}, goals already reached "
            f"{metrics.get('start_success_rate', 0):.2f}"
            + (
                f", goals whose block pose already passes (only the agent must get there) "
                f"{metrics['block_static_goals']:.2f}"
                if "block_static_goals" in metrics
                else ""
            )
            + f". Success: {metrics.get('convention', '')}. Errors (block px, agent px, angle °) are "
            "means of the last states."
            + (
                " The goal's words fit: the change from the start does what the goal's sentence says (direction, "
                "sense, distance and angle within one bin, side; `pusht_language.sentence_fits`) at the end of "
                "any executed chunk."
                if said
                else ""
            )
            + (_text_note(text) if text else "")
        )
    return "\n".join(lines)


def _text_note(text: dict) -> str:
    what = (
        "a held-out paraphrase of its Push-T description"
        if text.get("sentences") == "heldout_paraphrase"
        else "the sentence given"
    )
    mse = ", ".join(f"{m} {v:.3f}" for m, v in text.get("imagined_goal_mse", {}).items())
    note = (
        f" Rows{TEXT_TAG}: the same starts and seeds with each goal given as {what} (text guidance "
        f"{text.get('text_guidance')}): the planners plan toward the goal the model imagines; latent MSE of the "
        f"imagined goal to the true one {mse} (start to goal {text.get('start_goal_mse', float('nan')):.3f})."
    )
    pose, start, floor = (text.get(k) for k in ("imagined_goal_pose", "start_goal_pose", "probe_goal_pose"))
    if pose and start:
        m = next(iter(pose))
        note += (
            f" Pose of the imagined goal (state probe) to the true goal: block {pose[m]['block_px']:.0f} px, "
            f"{pose[m]['angle_deg']:.0f}°, agent {pose[m]['agent_px']:.0f} px; the start's: block "
            f"{start[m]['block_px']:.0f} px, {start[m]['angle_deg']:.0f}°, agent {start[m]['agent_px']:.0f} px"
            + (f"; the probe on the true goal frame: block {floor[m]['block_px']:.0f} px." if floor else ".")
        )
    return note


def _search_text(settings: dict) -> str:
    """The sampling planners' sizes, from planning.json settings (per-planner sections, or the older flat keys)."""
    cem = settings.get("cem") or settings
    return f"population {cem.get('population')}, elites {cem.get('elites')}, {cem.get('iterations')} iterations"


__all__ = [
    "block_must_move",
    "AUTO",
    "TEXT_TAG",
    "goal_sentence",
    "goal_sentences",
    "goal_texts",
    "imagined_goal_facts",
    "method_means",
    "planning_table",
    "summarize",
    "summarize_text_goals",
    "text_goal_comparison",
]
