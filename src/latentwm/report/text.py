"""The report's answer to "how fast does the model learn to listen?": condition gain of text and of actions against
training steps, the steps each needs to reach half of its final gain, text-conditioned vs unconditioned rollout
error per horizon, and text-goal planning beside image goals.

Condition gain (eval/metrics.py) = held-out rollout error with another clip's future condition − error with the
true one, noise-matched: 0 for a model that ignores the condition. Training logs it at every evaluation
(train.condition_gain) as eval/{text,action}_gain_mean in metrics.jsonl, which is what the curve is read from.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from latentwm.config import LatentwmError
from latentwm.engine.logging import read_metrics
from latentwm.eval.visualize import plot_curves
from latentwm.report.studies import read_study

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


ARMS_FILE = "arms.json"
"""What a training-arms sweep (benchmarks/bench_text_arms.py) leaves in its folder: {trajectories, steps,
eval_every, encoder, rows: [one row per arm]}; its curves are drawn beside it as `text_arms.png`."""


def read_arms(folder: Path) -> dict:
    """A training-arms sweep's arms.json (and its figure's path under "figure", None when not drawn)."""
    expected = "{trajectories, steps, rows: [...]}"
    sweep = read_study(folder, ARMS_FILE, "bench_text_arms.py", expected)
    if "trajectories" not in sweep:
        raise LatentwmError(f"{Path(folder) / ARMS_FILE}: expected {expected} as bench_text_arms.py writes it")
    fig = Path(folder) / "text_arms.png"
    return {**sweep, "figure": str(fig) if fig.is_file() else None}


def arms_metrics(sweep: dict) -> dict:
    """metrics.json's text.arms[N]: per arm, the alone gains with standard errors, their half-gain steps
    ([step, low, high]), the per-horizon gains with the other condition removed, the meaning check, the untrained
    path's floor and the text gain on the training wording; the sweep's wording readout where it has one."""
    keys = ("text_alone_gain", "text_alone_gain_stderr", "action_alone_gain", "action_alone_gain_stderr",
            "text_alone_half_gain", "action_alone_half_gain", "text.half_gain_step", "action.half_gain_step",
            "text_only_gain", "action_only_gain", "direction", "untrained_floor", "wording_gain")  # fmt: skip
    arms = {r["arm"]: {k: r.get(k) for k in keys} for r in sweep["rows"]}
    out = {"steps": sweep["steps"], "arms": arms, "answer": arms_answer(sweep)}
    return out | ({"wording_readout": sweep["wording_readout"]} if sweep.get("wording_readout") else {})


def above_3se_h4_8(only: dict | None) -> tuple[int, int] | None:
    """(horizons 4–8 where the gain is above 3 standard errors, horizons 4–8 measured) of a per-horizon gain."""
    if not only or not only.get("stderr"):
        return None
    pairs = [(g, e) for h, g, e in zip(only["horizons"], only["by_horizon"], only["stderr"]) if 4 <= h <= 8]
    return (sum(1 for g, e in pairs if e is not None and g > 3 * e), len(pairs)) if pairs else None


def _gain(g, se) -> str:
    return "-" if g is None else f"{g:+.4f}" + ("" if se is None else f" ± {se:.4f}")


def _half(h) -> str:
    """[step, low, high] as 'step (low–high)'; high None: the lower edge of the gain has not reached half yet."""
    return "-" if not h else f"{h[0]} ({h[1]}–{'not yet' if h[2] is None else h[2]})"


def arms_answer(sweep: dict) -> str | None:
    """The seed's question at one data size, from a training-arms sweep: how much of the action-only arm's gain the
    text-only arm's sentences give (both measured with the other condition removed), how many steps text needed for
    half of its gain, whether it clears 3 standard errors at horizons 4–8, whether imagined motion follows the
    sentence beyond chance, and what the joint and motion-class arms add. None without a text-only arm."""
    rows = {r["arm"]: r for r in sweep["rows"]}
    t, a = rows.get("text-only"), rows.get("action-only")
    if t is None or t.get("text_alone_gain") is None:
        return None
    g, se = t["text_alone_gain"], t.get("text_alone_gain_stderr")
    out = f"At {sweep['trajectories']:,} trajectories and {sweep['steps']:,} steps, text alone gains {_gain(g, se)}"
    out += _noise(g, se)
    if a is not None and a.get("action_alone_gain") is not None:
        ag, ase = a["action_alone_gain"], a.get("action_alone_gain_stderr")
        share = ag > 2 * (ase or 0.0) and g > 0
        out += (f", {g / ag:.0%} of" if share else "; beside") + f" the action-only arm's {_gain(ag, ase)}"
    floor = t.get("action_alone_gain")  # the text-only arm never trained on actions: what an unused path scores
    if floor is not None:
        floor_se = t.get("action_alone_gain_stderr")
        out += f" (the text-only arm, never trained on actions, scores on them {_gain(floor, floor_se)}"
        redrawn = t.get("untrained_floor")
        if redrawn:
            out += (
                f"; with its action layer redrawn {redrawn['draws']} times, the chance floor: {redrawn['mean']:+.4f} ± "
                f"{redrawn['sd']:.4f} (sd over draws; largest |gain| {redrawn['max_abs']:.4f})"
            )
            if redrawn.get("saved_init_cosine") is not None:  # what the saved layer is: its initial draw, or not
                out += f"; the saved layer's cosine with its initial draw {redrawn['saved_init_cosine']:.3f}"
            if redrawn.get("permuted_gains"):
                out += ", its rows permuted " + " / ".join(f"{g:+.4f}" for g in redrawn["permuted_gains"])
        out += ")"
    half = t.get("text_alone_half_gain")
    out += f"; half of it by step {_half(half)}" if half else "; no half-gain step (the gain is not above 2 s.e.)"
    clear = above_3se_h4_8(t.get("text_only_gain"))
    if clear:
        out += f"; above 3 s.e. at {clear[0]} of {clear[1]} horizons 4–8"
    d = t.get("direction") or {}
    if d.get("accuracy") is not None:
        out += (
            f"; imagined motion goes the sentence's way in {d['accuracy']:.0%} of {d['clips']} held-out clips vs "
            f"{d['chance']:.0%} by chance (×{d['accuracy'] / max(d['chance'], 1e-9):.1f}; ceiling {d['ceiling']:.0%})"
        )
    w = t.get("wording_gain")
    if w:
        seen, held = (_gain(w[k]["mean"], w[k]["stderr"]) for k in ("seen", "heldout"))
        out += (
            f"; on the wording it was trained with, the same clips give text alone {seen} (held-out paraphrases "
            f"{held}, mean over horizons 1–{len(w['seen']['by_horizon'])})"
        )
    ro = (sweep.get("wording_readout") or {}).get("class")
    if ro:
        out += (
            f"; the sentence embedding carries a held-out paraphrase's motion class to a linear readout fitted on the "
            f"training wording {ro['ridge_accuracy']:.0%} of the time (chance {ro['chance']:.0%}, "
            f"{ro['classes']} classes)"
        )
    for name, what in (("joint", "the joint arm (actions dropped half the time)"),
                       ("motion-class", "a one-hot of the true motion class in place of the sentence")):  # fmt: skip
        r = rows.get(name)
        if r is not None and r.get("text_alone_gain") is not None:
            out += f"; {what}: text alone {_gain(r['text_alone_gain'], r.get('text_alone_gain_stderr'))}"
    return out + "."


def data_answer(sweeps: list[dict]) -> str | None:
    """How the answer moves with data, from training-arms sweeps at several sizes (same steps per arm): the text-only
    arm's text alone and the action-only arm's actions alone at each size, and text's share of the actions' gain
    where both are measured. None with fewer than two sizes holding a text-only arm."""
    sweeps = sorted(sweeps, key=lambda s: s["trajectories"])
    parts, shares = [], []
    for sw in sweeps:
        rows = {r["arm"]: r for r in sw["rows"]}
        t, a = rows.get("text-only") or {}, rows.get("action-only") or {}
        if t.get("text_alone_gain") is None:
            continue
        said = f"{sw['trajectories']:,}: text alone {_gain(t['text_alone_gain'], t.get('text_alone_gain_stderr'))}"
        if a.get("action_alone_gain") is not None:
            said += f", actions alone {_gain(a['action_alone_gain'], a.get('action_alone_gain_stderr'))}"
            if a["action_alone_gain"] > 0:
                shares.append(f"{t['text_alone_gain'] / a['action_alone_gain']:.0%}")
        parts.append(f"{said} ({sw['steps']:,} steps)")
    if len(parts) < 2:
        return None
    out = "By data size (trajectories): " + "; ".join(parts)
    return out + (f" — text's share of the actions' gain {' → '.join(shares)}." if len(shares) == len(parts) else ".")


def arms_section(sweeps: list[dict], figure_of: Callable[[dict], str | None] = lambda s: s.get("figure")) -> str:
    """Markdown: the training arms at each data size (smallest first): the answer per size, one table per size and
    its curves (figure_of(sweep): the figure's link, or None)."""
    sweeps = sorted(sweeps, key=lambda s: s["trajectories"])
    said = [x for x in (*map(arms_answer, sweeps), data_answer(sweeps)) if x]
    lines = [
        "### Training arms: text instead of actions",
        "",
        "One model per arm, same data, seed and steps: joint (action dropout 0.5), text-only (actions always null), "
        "action-only (text always null), motion-class (the joint arm with a one-hot of the sentence's motion class "
        "in place of its embedding: does the conditioning path learn without a language encoder?). Gains are held-out "
        "(held-out paraphrases), each condition with the other removed from the whole clip, ± one standard error "
        "over clips; half-gain: the step the gain first reaches half its final value (interval: where gain ± 2 s.e. "
        "reach it).",
        "",
        *([" ".join(said), ""] if said else []),
    ]
    for sw in sweeps:
        lines += [
            f"**{sw['trajectories']:,} trajectories**, {sw['steps']:,} steps per arm:",
            "",
            "| arm | text alone | half-gain step | > 3 s.e. at h 4–8 | actions alone | half-gain step | "
            "direction (chance) |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in sw["rows"]:
            clear, d = above_3se_h4_8(r.get("text_only_gain")), r.get("direction") or {}
            lines.append(
                f"| {r['arm']} | {_gain(r.get('text_alone_gain'), r.get('text_alone_gain_stderr'))} | "
                f"{_half(r.get('text_alone_half_gain'))} | {'-' if not clear else f'{clear[0]} of {clear[1]}'} | "
                f"{_gain(r.get('action_alone_gain'), r.get('action_alone_gain_stderr'))} | "
                f"{_half(r.get('action_alone_half_gain'))} | "
                + ("-" if d.get("accuracy") is None else f"{d['accuracy']:.2f} ({d['chance']:.2f})")
                + " |"
            )
        fig = figure_of(sw)
        lines += ["", *([f"![training arms, {sw['trajectories']} trajectories]({fig})", ""] if fig else [])]
    return "\n".join(lines)


__all__ = [
    "ARMS_FILE",
    "above_3se_h4_8",
    "arms_metrics",
    "arms_answer",
    "arms_section",
    "data_answer",
    "gain_curves",
    "half_gain_interval",
    "half_gain_step",
    "read_arms",
    "text_metrics",
    "text_section",
]
