"""The report's answer to "how fast does the model learn to listen?": condition gain of text and of actions against
training steps, the steps each needs to reach half of its final gain, text-conditioned vs unconditioned rollout
error per horizon, and text-goal planning beside image goals.

Condition gain (eval/metrics.py) = held-out rollout error with another clip's future condition − error with the
true one, noise-matched: 0 for a model that ignores the condition. Training logs it at every evaluation
(train.condition_gain) as eval/{text,action}_gain_mean in metrics.jsonl, which is what the curve is read from.
"""

from __future__ import annotations

from pathlib import Path

from latentwm.engine.logging import read_metrics
from latentwm.eval.visualize import plot_curves

CONDITIONS = ("text", "action")
CURVES = (*CONDITIONS, *(f"{c}_alone" for c in CONDITIONS))
"""Each condition with the other present and alone (the other removed from the whole clip: eval/metrics.py)."""


def gain_curves(train_dir: Path, key: str = "gain_mean") -> dict[str, list[tuple[int, float]]]:
    """{cond: [(step, value)]} of eval/{cond}_{key} (the mean gain over horizons, or "gain_stderr" its standard
    error over clips) from a training run's metrics.jsonl (a step logged twice, as after a resume: its last row)."""
    path = Path(train_dir) / "metrics.jsonl"
    recs = read_metrics(path) if path.exists() else []
    out = {}
    for cond in CURVES:
        rows = {r["step"]: float(r[f"eval/{cond}_{key}"]) for r in recs if f"eval/{cond}_{key}" in r}
        if rows:
            out[cond] = sorted(rows.items())
    return out


def half_gain_step(curve: list[tuple[int, float]]) -> int | None:
    """The first evaluated step whose gain reaches half of the final (last evaluated) gain; None when the final
    gain is not positive (the model never learned to listen) or there is no curve."""
    if not curve or curve[-1][1] <= 0:
        return None
    half = curve[-1][1] / 2
    return next(step for step, g in curve if g >= half)


def text_metrics(
    out: Path, train_dir: Path, horizon_eval: dict | None, text_goal: dict | None, meaning: dict | None = None
) -> dict:
    """metrics.json's `text` and `action` sections; writes `condition_gain.png` (both gains against steps) and,
    with horizon_eval (rollout_errors with condition_gain at long horizons), `text_rollout_error.png`.
    text_goal: the planning evaluation's text-goal results (beside the image-goal ones), or None. meaning: the
    meaning check (planning/text_meaning.py `direction_accuracy`), or None.
    With horizon_eval's alone gains: `text.text_only_gain` / `action.action_only_gain` = {by_horizon, stderr} (the
    condition's gain per horizon with the other removed from the whole clip, and its standard errors)."""
    curves = gain_curves(train_dir)
    if curves:
        plot_curves(
            Path(out) / "condition_gain.png",
            {f"{c} gain": ([s for s, _ in v], [g for _, g in v]) for c, v in curves.items()},
            "Condition gain: error(other clip's) − error(true)",
            "training step",
            "latent MSE gain",
        )
    res: dict = {}
    errs = gain_curves(train_dir, "gain_stderr")
    for cond in CONDITIONS:
        res[cond] = _curve_summary(curves.get(cond, []), dict(errs.get(cond, [])))
        if curves.get(f"{cond}_alone"):
            res[cond]["alone"] = _curve_summary(curves[f"{cond}_alone"], dict(errs.get(f"{cond}_alone", [])))
    if horizon_eval is not None and "text" in (horizon_eval.get("condition_gain") or {}):
        t, H = horizon_eval["condition_gain"]["text"], horizon_eval["horizons"]
        res["text"]["by_horizon"] = {
            "horizons": H,
            "text_conditioned": t["true"],
            "no_text": t["null"],
            "shuffled_text": t["shuffled"],
            "num_clips": t["num_clips"],
            "gain_mean": None if t.get("gain") is None else sum(t["gain"]) / len(H),
            "gain_stderr": t.get("gain_stderr"),
        }
        series = {"true text": (H, t["true"]), "no text (null)": (H, t["null"])}
        if t["shuffled"] is not None:
            series["another clip's text"] = (H, t["shuffled"])
        plot_curves(
            Path(out) / "text_rollout_error.png", series, "Rollout error with and without text", "horizon", "latent MSE"
        )
        if t["shuffled"] is not None and len(H) >= 8:
            res["text"]["shuffled_minus_true_h8"] = t["shuffled"][7] - t["true"][7]
    gains = (horizon_eval or {}).get("condition_gain") or {}
    for cond in CONDITIONS:
        g = gains.get(f"{cond}_alone")
        if g is not None and g.get("gain") is not None:
            res[cond][f"{cond}_only_gain"] = {
                "horizons": horizon_eval["horizons"],  # type: ignore[index]
                "by_horizon": g["gain"],
                "stderr": g.get("gain_stderr_by_horizon"),
                "num_clips": g["num_clips"],
            }
    if meaning is not None:
        res["text"]["direction_accuracy"] = meaning
    if text_goal is not None:
        res["text"]["goal_planning"] = text_goal
    return res


def half_gain_interval(curve: list[tuple[int, float]], stderr: dict[int, float]) -> list[int | None] | None:
    """[step, low, high]: the first evaluated step whose gain reaches half of the final gain, and the first steps
    where gain + 2 s.e. (the earliest it may have) and gain − 2 s.e. (the latest; None: not yet) reach it. None when
    the final gain is not above two standard errors (there is no gain to reach half of)."""
    if not curve:
        return None
    final, e = curve[-1][1], stderr.get(curve[-1][0])
    if final <= 0 or (e is not None and final <= 2 * e):
        return None
    half = final / 2

    def first(shift: float) -> int | None:
        return next((s for s, g in curve if g + shift * stderr.get(s, 0.0) >= half), None)

    return [first(0.0), first(2.0), first(-2.0)]


def _curve_summary(curve: list[tuple[int, float]], se: dict[int, float]) -> dict:
    out = {
        "gain_curve": [[s, g] for s, g in curve],
        "half_gain_step": half_gain_step(curve),
        "half_gain_interval": half_gain_interval(curve, se),
        "final_gain": curve[-1][1] if curve else None,
        "final_gain_stderr": se.get(curve[-1][0]) if curve else None,
    }
    g, e = out["final_gain"], out["final_gain_stderr"]
    out["final_gain_above_noise"] = None if g is None or e is None else bool(g > 2 * e)
    return out


def _pm(se) -> str:
    return "" if se is None else f" ± {se:.4f} (standard error over clips)"


def _noise(gain, se) -> str:
    """Whether a gain is distinguishable from 0 at about two standard errors."""
    if gain is None or se is None:
        return ""
    return ": within noise of 0" if abs(gain) < 2 * se else ": clearly above 0" if gain > 0 else ": clearly below 0"


def _fmt(v, spec=".4f") -> str:
    return "-" if v is None else format(v, spec)


def answer(text: dict, action: dict) -> str | None:
    """One paragraph answering the seed's question from the measured figures: how far text alone gets toward the
    gain of actions alone, at which step half of it was reached, whether the text-only gain clears 3 standard
    errors at horizons 4–8, and whether imagined motion follows the sentence's direction beyond chance. None
    without the alone measurements."""
    t, a = text.get("alone") or {}, action.get("alone") or {}
    if t.get("final_gain") is None:
        return None
    gain = (
        f"{t['final_gain']:+.4f}{_pm(t.get('final_gain_stderr'))}{_noise(t['final_gain'], t.get('final_gain_stderr'))}"
    )
    parts = [f"Text alone (no actions): held-out gain {gain}"]
    if a.get("final_gain") is not None:
        a_gain, a_se = a["final_gain"], a.get("final_gain_stderr")
        if a_gain > 2 * (a_se or 0.0) and t["final_gain"] > 0:  # a share of a real gain, or no share at all
            parts[0] += f", {t['final_gain'] / a_gain:.0%} of what actions alone give ({a_gain:+.4f})"
        else:
            parts[0] += f"; actions alone {a_gain:+.4f}{_pm(a_se)}{_noise(a_gain, a_se)}, so no share is claimed"
    half = t.get("half_gain_interval")
    if half:
        hi = "not yet" if half[2] is None else f"{half[2]}"
        parts.append(f"half of its final gain was reached at step {half[0]} (interval {half[1]}–{hi})")
    else:
        parts.append("its final gain is not above 2 standard errors, so there is no half-gain step yet")
    only = text.get("text_only_gain")
    if only and only.get("stderr"):
        hs, g, e = only["horizons"], only["by_horizon"], only["stderr"]
        clear = [h for h, gi, ei in zip(hs, g, e) if 4 <= h <= 8 and ei and gi > 3 * ei]
        want = [h for h in hs if 4 <= h <= 8]
        if want:
            parts.append(
                f"beyond 3 standard errors at {len(clear)} of horizons {want[0]}–{want[-1]}"
                + (f" ({', '.join(map(str, clear))})" if clear else "")
            )
    d = text.get("direction_accuracy")
    if d and d.get("accuracy") is not None:
        parts.append(
            f"imagined motion goes the sentence's way in {d['accuracy']:.0%} of {d['clips']} held-out clips against "
            f"{d['chance']:.0%} by chance (shuffled sentences; ×{d['accuracy'] / max(d['chance'], 1e-9):.1f}), "
            f"{d['null_text_accuracy']:.0%} without text, {d['ceiling']:.0%} for the true future read the same way"
        )
    goal = text.get("goal_planning") or {}
    fit = (goal.get("text") or {}).get("sentence_success_rate") or {}
    if fit:
        m, base = next(iter(fit)), goal.get("sentence_baselines") or {}
        parts.append(
            f"planning toward its own imagined goal, {m} does what the goal's sentence says on {fit[m]:.0%} of "
            f"{goal.get('num_goals')} goals"
            + (f" (random actions {base['random']:.0%})" if "random" in base else "")
            + f", reaching the goal state itself on {goal['text']['success_rate'][m]:.0%}"
        )
    return "**The answer.** " + "; ".join(parts) + "."


def text_section(text: dict, action: dict) -> str:
    """Markdown: the answer, the gain curves' summary, the per-horizon table and text-goal planning."""
    said = answer(text, action)
    lines = [
        "## Does the model listen? Text and actions",
        "",
        *([said, ""] if said else []),
        "Condition gain = held-out rollout error with another clip's future condition − with the true one "
        "(same noise); 0 means the condition is ignored. Each is measured with the other condition present and "
        "alone (the other removed from the whole clip): with the true actions present a sentence can add almost "
        "nothing, so the text's own gain is the alone one. ![condition gain](condition_gain.png)",
        "",
    ]
    rows = [("text, actions present", text), ("text alone (no actions)", text.get("alone") or {})]
    rows += [("actions, text present", action), ("actions alone (no text)", action.get("alone") or {})]
    for name, sec in rows:
        if sec.get("gain_curve"):
            half, g, se = sec["half_gain_step"], sec["final_gain"], sec.get("final_gain_stderr")
            lines.append(
                f"- {name}: final gain {_fmt(g)}{_pm(se)} at step {sec['gain_curve'][-1][0]}"
                + _noise(g, se)
                + "; "
                + (
                    f"half of it reached at step {half}"
                    if half is not None
                    else "never positive: the model did not learn to use it"
                )
            )
    by_h = text.get("by_horizon")
    if by_h:
        lines += [
            "",
            f"Text-conditioned vs unconditioned rollout error ({by_h['num_clips']} held-out clips, held-out "
            "paraphrases): ![text rollouts](text_rollout_error.png)",
            "",
            "| horizon | true text | no text | another clip's text |",
            "|---|---|---|---|",
        ]
        for i, h in enumerate(by_h["horizons"]):
            sh = by_h["shuffled_text"][i] if by_h["shuffled_text"] is not None else None
            lines.append(f"| {h} | {_fmt(by_h['text_conditioned'][i])} | {_fmt(by_h['no_text'][i])} | {_fmt(sh)} |")
        if by_h.get("gain_mean") is not None:
            lines.append(
                f"\nText gain over horizons 1–{by_h['horizons'][-1]}: {by_h['gain_mean']:+.4f}"
                f"{_pm(by_h.get('gain_stderr'))}{_noise(by_h['gain_mean'], by_h.get('gain_stderr'))}."
            )
        if text.get("shuffled_minus_true_h8") is not None:
            m = text["shuffled_minus_true_h8"]
            lines.append(
                f"\nAt horizon 8 the true text is {'better' if m > 0 else 'not better'} than another clip's "
                f"by {m:+.4f} latent MSE."
            )
    goal = text.get("goal_planning")
    if goal:
        lines += ["", _goal_table(goal)]
    return "\n".join(lines) + "\n"


def _goal_table(goal: dict) -> str:
    img, txt = goal.get("image", {}), goal.get("text", {})
    said = "sentence_success_rate" in txt
    rows = [
        "Goals from words: MPC toward the model's own imagined goal (a held-out paraphrase describing the "
        "start → goal change) vs toward the goal image, same starts"
        + (
            "; beside the image test (the goal state reached), the words' test: the change from the start does what "
            "the sentence says (direction, sense, distance and angle within one bin)"
            if said
            else ""
        )
        + ":",
        "",
        "| method | image-goal success | text-goal success | "
        + ("image goal, words fit | text goal, words fit | " if said else "")
        + "image-goal final distance | text-goal final distance |",
        "|---|---|---|" + ("---|---|" if said else "") + "---|---|",
    ]
    for m in goal.get("methods", []):
        words = (
            f"{_fmt(img.get('sentence_success_rate', {}).get(m), '.2f')} | "
            f"{_fmt(txt.get('sentence_success_rate', {}).get(m), '.2f')} | "
            if said
            else ""
        )
        rows.append(
            f"| {m} | {_fmt(img.get('success_rate', {}).get(m), '.2f')} | "
            f"{_fmt(txt.get('success_rate', {}).get(m), '.2f')} | {words}"
            f"{_fmt(img.get('final_distance', {}).get(m), '.1f')} | "
            f"{_fmt(txt.get('final_distance', {}).get(m), '.1f')} |"
        )
    for m, v in (goal.get("sentence_baselines") or {}).items() if said else ():
        rows.append(f"| {m} (no planner) | – | – | {v:.2f} | – | – | – |")
    return "\n".join(rows)


__all__ = ["gain_curves", "half_gain_interval", "half_gain_step", "text_metrics", "text_section"]
