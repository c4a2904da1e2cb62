"""report/text.py: gain curves from a run log, the half-gain step, the per-horizon table and the markdown."""

import json

from latentwm.report.sections import noise_verdict
from latentwm.report.text import gain_curves, half_gain_interval, half_gain_step, text_metrics, text_section


def _log(tmp_path, rows):
    with open(tmp_path / "metrics.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
        f.write('{"step": 9')  # a torn last line (crash) is ignored


def test_half_gain_step():
    assert half_gain_step([(100, 0.01), (200, 0.05), (300, 0.08), (400, 0.1)]) == 200
    assert half_gain_step([(100, 0.2), (200, 0.1)]) == 100  # already above half of the final at the first eval
    assert half_gain_step([(100, 0.02), (200, -0.01)]) is None  # final gain not positive: never learned to listen
    assert half_gain_step([]) is None


def test_half_gain_interval_brackets_the_step_by_two_standard_errors():
    curve = [(100, 0.01), (200, 0.04), (300, 0.07), (400, 0.1)]
    se = {100: 0.01, 200: 0.01, 300: 0.01, 400: 0.01}
    # half = 0.05: reached at 300; gain + 2 s.e. reaches it at 200; gain − 2 s.e. at 300
    assert half_gain_interval(curve, se) == [300, 200, 300]
    assert half_gain_interval(curve, {**se, 300: 0.02}) == [300, 200, 400]
    assert half_gain_interval(curve, {**se, 400: 0.06}) is None  # final gain within 2 s.e. of 0: no claim
    assert half_gain_interval([], {}) is None


def test_noise_verdict_claims_an_effect_only_beyond_two_standard_errors():
    assert "within noise" in noise_verdict(0.0015, 0.0059, "x") and "does not show" in noise_verdict(0.01, 0.006, "x")
    assert noise_verdict(0.05, 0.01, "the predictions depend on the actions").endswith("depend on the actions.")
    assert "not claimed" in noise_verdict(0.05, None, "x")


def test_text_metrics_from_a_run_log(tmp_path):
    _log(
        tmp_path,
        [
            {"step": 100, "eval/text_gain_mean": 0.0, "eval/action_gain_mean": 0.02},
            {"step": 100, "train/loss": 0.5},
            {"step": 200, "eval/text_gain_mean": 0.01, "eval/action_gain_mean": 0.03},
            {"step": 200, "eval/text_gain_mean": 0.02, "eval/action_gain_mean": 0.04},  # resumed: last row
            {"step": 300, "eval/text_gain_mean": 0.04, "eval/action_gain_mean": 0.04, "eval/text_gain_stderr": 0.03},
            {"step": 300, "eval/text_alone_gain_mean": 0.09, "eval/text_alone_gain_stderr": 0.01},
        ],
    )
    curves = gain_curves(tmp_path)
    assert curves["text"] == [(100, 0.0), (200, 0.02), (300, 0.04)]
    H = list(range(1, 9))
    ev = {
        "horizons": H,
        "condition_gain": {
            "text": {
                "true": [0.5] * 8,
                "null": [0.6] * 8,
                "shuffled": [0.55] * 8,
                "gain": [0.05] * 8,
                "gain_stderr": 0.01,
                "num_clips": 5,
            }
        },
    }
    res = text_metrics(tmp_path, tmp_path, ev, None)
    assert res["text"]["half_gain_step"] == 200 and res["action"]["half_gain_step"] == 100
    assert abs(res["text"]["shuffled_minus_true_h8"] - 0.05) < 1e-12
    assert (tmp_path / "condition_gain.png").exists() and (tmp_path / "text_rollout_error.png").exists()
    md = text_section(res["text"], res["action"])
    assert "half of it reached at step 200" in md and res["text"]["final_gain_stderr"] == 0.03
    assert res["text"]["final_gain_above_noise"] is False and res["action"]["final_gain_above_noise"] is None
    assert "final gain 0.0400 ± 0.0300 (standard error over clips) at step 300: within noise of 0" in md
    assert "| 8 | 0.5000 | 0.6000 | 0.5500 |" in md
    assert "better than another clip's by +0.0500" in md
    assert "Text gain over horizons 1–8: +0.0500 ± 0.0100 (standard error over clips): clearly above 0" in md
    # the text's own gain, measured without actions, beside the joint one
    assert res["text"]["alone"]["final_gain"] == 0.09 and res["text"]["alone"]["final_gain_above_noise"] is True
    assert "- text alone (no actions): final gain 0.0900 ± 0.0100" in md


def test_the_answer_states_text_only_gain_per_horizon_and_the_meaning_check(tmp_path):
    _log(
        tmp_path,
        [
            {
                "step": s,
                "eval/text_alone_gain_mean": g,
                "eval/text_alone_gain_stderr": 0.005,
                "eval/action_alone_gain_mean": 2 * g,
                "eval/action_alone_gain_stderr": 0.005,
            }  # fmt: skip
            for s, g in ((100, 0.01), (200, 0.03), (300, 0.04))
        ],
    )
    H = list(range(1, 9))
    alone = lambda g: {"true": [0.5] * 8, "null": [0.6] * 8, "shuffled": [0.5 + g] * 8, "gain": [g] * 8}  # noqa: E731
    ev = {
        "horizons": H,
        "condition_gain": {
            "text_alone": {
                **alone(0.02),
                "gain_stderr": 0.004,
                "num_clips": 300,
                "gain_stderr_by_horizon": [0.01] * 3 + [0.005] * 5,
            },  # fmt: skip
            "action_alone": {**alone(0.05), "gain_stderr": 0.004, "num_clips": 300, "gain_stderr_by_horizon": None},
        },
    }
    meaning = {"accuracy": 0.5, "chance": 0.2, "ceiling": 0.8, "null_text_accuracy": 0.25, "clips": 300}
    res = text_metrics(tmp_path, tmp_path, ev, None, meaning)
    only = res["text"]["text_only_gain"]
    assert only["by_horizon"] == [0.02] * 8 and only["stderr"][3] == 0.005 and only["num_clips"] == 300
    assert res["action"]["action_only_gain"]["stderr"] is None  # no per-horizon errors: not invented
    assert res["text"]["direction_accuracy"] == meaning
    md = text_section(res["text"], res["action"])
    assert "**The answer.** Text alone (no actions): held-out gain +0.0400 ± 0.0050" in md and "clearly above 0" in md
    assert "50% of what actions alone give (+0.0800)" in md and "half of its final gain was reached at step 200" in md
    assert "beyond 3 standard errors at 5 of horizons 4–8 (4, 5, 6, 7, 8)" in md  # 0.02 > 3 × 0.005
    assert "50% of 300 held-out clips against 20% by chance" in md and "×2.5" in md and "80% for the true future" in md
    assert text_section({"gain_curve": []}, {}).count("The answer") == 0  # nothing measured alone: no answer
    noisy = {"alone": {"final_gain": -0.0007, "final_gain_stderr": 0.003}}  # negative, within noise: no share
    md = text_section({"alone": {"final_gain": -0.0001, "final_gain_stderr": 0.0007}}, noisy)
    assert "no share is claimed" in md and "% of what actions" not in md


def test_goals_from_words_show_the_words_test_beside_the_image_test(tmp_path):
    """Text-goal planning: the words' test (did the change do what the sentence says) beside the image test, for the
    image and the text goals, with random actions' score as the chance level; the answer paragraph quotes them."""
    rate = lambda c, r=None: {"cem": c, **({"random": r} if r is not None else {})}  # noqa: E731
    goal = {
        "methods": ["cem"],
        "num_goals": 40,
        "image": {"success_rate": rate(0.3), "final_distance": rate(50.0), "sentence_success_rate": rate(0.6)},
        "text": {"success_rate": rate(0.05), "final_distance": rate(90.0), "sentence_success_rate": rate(0.35)},
        "sentence_baselines": {"random": 0.1, "dataset_actions": 1.0},
    }
    text = {"alone": {"final_gain": 0.01, "final_gain_stderr": 0.002}, "goal_planning": goal}
    md = text_section(text, {})
    assert "| cem | 0.30 | 0.05 | 0.60 | 0.35 | 50.0 | 90.0 |" in md
    assert "| random (no planner) | – | – | 0.10 |" in md and "| dataset_actions (no planner) | – | – | 1.00 |" in md
    assert "cem does what the goal's sentence says on 35% of 40 goals (random actions 10%)" in md
    assert "reaching the goal state itself on 5%" in md
    del goal["text"]["sentence_success_rate"]  # an older planning result: the table as it was, no words' columns
    md = text_section(text, {})
    assert "| cem | 0.30 | 0.05 | 50.0 | 90.0 |" in md and "words fit" not in md and "sentence says" not in md
