"""report/text.py: gain curves from a run log, the half-gain step, the per-horizon table and the markdown."""

import json

import pytest

from latentwm.config import LatentwmError
from latentwm.report.sections import noise_verdict
from latentwm.report.text import (
    above_3se_h4_8,
    arms_answer,
    arms_metrics,
    arms_section,
    data_answer,
    gain_curves,
    half_gain_interval,
    half_gain_step,
    read_arms,
    text_metrics,
    text_section,
)


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


def _sweep(n: int, text_gain: float = 0.02) -> dict:
    """A training-arms sweep as bench_text_arms writes it (arms.json), with made-up figures."""
    only = {"horizons": list(range(1, 9)), "by_horizon": [text_gain] * 8, "stderr": [0.004] * 4 + [0.01] * 4}
    rows = []
    for arm, t, a in (("joint", 0.01, 0.08), ("text-only", text_gain, 0.0), ("action-only", 0.0, 0.1),
                      ("motion-class", 0.03, 0.07)):  # fmt: skip
        rows.append({
            "arm": arm, "steps": 2000, "text_alone_gain": t, "text_alone_gain_stderr": 0.004,
            "action_alone_gain": a, "action_alone_gain_stderr": 0.005,
            "text_alone_half_gain": [400, 200, 600] if t > 0.008 else None,
            "action_alone_half_gain": [200, 200, None] if a > 0.01 else None,
            "text.half_gain_step": 400, "action.half_gain_step": 200,
            "text_only_gain": only if arm == "text-only" else None, "action_only_gain": None,
            "direction": {"accuracy": 0.5, "chance": 0.2, "ceiling": 0.9, "null_text_accuracy": 0.15, "clips": 300},
        })  # fmt: skip
    return {"trajectories": n, "steps": 2000, "eval_every": 200, "encoder": "e", "rows": rows}


def test_the_arms_answer_reads_text_only_against_action_only():
    said = arms_answer(_sweep(1000))
    assert said.startswith("At 1,000 trajectories and 2,000 steps, text alone gains +0.0200 ± 0.0040")
    assert "20% of the action-only arm's +0.1000 ± 0.0050" in said and "half of it by step 400 (200–600)" in said
    assert "(the text-only arm, never trained on actions, scores on them +0.0000 ± 0.0050)" in said
    sweep = _sweep(1000)  # with the never-trained action layer redrawn: the spread of chance gains beside
    sweep["rows"][1]["untrained_floor"] = {"draws": 6, "mean": -0.001, "sd": 0.006, "max_abs": 0.011}
    assert "scores on them +0.0000 ± 0.0050; with its action layer redrawn 6 times, the chance floor: -0.0010 ± " \
           "0.0060 (sd over draws; largest |gain| 0.0110))" in arms_answer(sweep)  # fmt: skip
    sweep["rows"][1]["untrained_floor"] |= {"saved_init_cosine": 1.0, "permuted_gains": [-0.007, 0.0002]}
    assert "largest |gain| 0.0110); the saved layer's cosine with its initial draw 1.000, its rows permuted " \
           "-0.0070 / +0.0002)" in arms_answer(sweep)  # fmt: skip
    assert "above 3 s.e. at 1 of 5 horizons 4–8" in said  # h4: 0.02 > 3 × 0.004; h5–8: 0.02 < 3 × 0.01
    assert "50% of 300 held-out clips vs 20% by chance (×2.5" in said
    assert "a one-hot of the true motion class in place of the sentence: text alone +0.0300" in said
    # text alone within noise: said so beside its share, and no half-gain step is claimed
    weak = arms_answer(_sweep(240, text_gain=0.005))
    assert "within noise of 0, 5% of" in weak and "no half-gain step" in weak
    assert arms_answer({"trajectories": 5, "steps": 1, "rows": [{"arm": "joint"}]}) is None  # no text-only arm
    # the training wording beside the held-out paraphrases, and what the sentence embedding carries to new wording
    sweep = _sweep(1000)
    sweep["rows"][1]["wording_gain"] = {
        "seen": {"mean": 0.03, "stderr": 0.004, "by_horizon": [0.03] * 8},
        "heldout": {"mean": 0.01, "stderr": 0.003, "by_horizon": [0.01] * 8},
    }
    sweep["wording_readout"] = {"class": {"ridge_accuracy": 0.34, "chance": 0.03, "classes": 35}}
    said = arms_answer(sweep)
    assert "on the wording it was trained with, the same clips give text alone +0.0300 ± 0.0040 (held-out " \
           "paraphrases +0.0100 ± 0.0030, mean over horizons 1–8)" in said  # fmt: skip
    assert "training wording 34% of the time (chance 3%, 35 classes)" in said
    m = arms_metrics(sweep)
    assert (
        m["wording_readout"]["class"]["classes"] == 35
        and m["arms"]["text-only"]["wording_gain"]["seen"]["mean"] == 0.03
    )


def test_arms_section_one_table_per_data_size_smallest_first_and_metrics():
    md = arms_section([_sweep(1000), _sweep(240)], lambda s: f"text_arms_{s['trajectories']}.png")
    assert md.index("**240 trajectories**") < md.index("**1,000 trajectories**")
    assert "| text-only | +0.0200 ± 0.0040 | 400 (200–600) | 1 of 5 | +0.0000 ± 0.0050 | - | 0.50 (0.20) |" in md
    assert "| action-only | +0.0000 ± 0.0040 | - | - | +0.1000 ± 0.0050 | 200 (200–not yet) |" in md
    assert "![training arms, 240 trajectories](text_arms_240.png)" in md
    # how the answer moves with data, smallest first, with text's share of the actions' gain at each size
    assert "By data size (trajectories): 240: text alone +0.0200 ± 0.0040, actions alone +0.1000 ± 0.0050 (2,000 " \
           "steps); 1,000: text alone" in md and "share of the actions' gain 20% → 20%." in md  # fmt: skip
    assert data_answer([_sweep(1000)]) is None and "By data size" not in arms_section([_sweep(1000)])
    m = arms_metrics(_sweep(1000))
    assert m["steps"] == 2000 and set(m["arms"]) == {"joint", "text-only", "action-only", "motion-class"}
    assert m["arms"]["text-only"]["text_only_gain"]["by_horizon"] == [0.02] * 8 and m["answer"].startswith("At 1,000")
    assert above_3se_h4_8(None) is None and above_3se_h4_8({"horizons": [1], "by_horizon": [1], "stderr": [0]}) is None


def test_read_arms_names_the_file_and_what_was_expected(tmp_path):
    with pytest.raises(LatentwmError, match="no arms.json"):
        read_arms(tmp_path)
    (tmp_path / "arms.json").write_text("{not json")
    with pytest.raises(LatentwmError, match="arms.json: not JSON"):
        read_arms(tmp_path)
    (tmp_path / "arms.json").write_text('{"rows": 3}')
    with pytest.raises(LatentwmError, match=r"expected \{trajectories, steps, rows"):
        read_arms(tmp_path)
    (tmp_path / "arms.json").write_text(json.dumps(_sweep(240)))
    assert read_arms(tmp_path)["figure"] is None and read_arms(tmp_path)["trajectories"] == 240
    (tmp_path / "text_arms.png").write_bytes(b"png")
    assert read_arms(tmp_path)["figure"] == str(tmp_path / "text_arms.png")
