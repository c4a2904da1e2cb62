"""The embedded default end to end: `latentwm demo --preset smoke`, then `latentwm eval` on its checkpoint."""

import json
import time

import pytest
import torch

from latentwm.cli import main
from latentwm.data.latent_cache import LatentCache
from latentwm.report.sections import encoder_paragraph
from tests.faults.fault_helpers import SlowClock
from tests.test_report_studies import encoders_study, scaling_study
from tests.test_report_text import _sweep


@pytest.mark.slow
def test_smoke_demo_end_to_end(tmp_path, capsys, monkeypatch):
    out = tmp_path / "demo"
    assert main(["demo", "--preset", "smoke", "--out-dir", str(out), "--rl"]) == 0
    printed = capsys.readouterr().out
    assert str(out / "report" / "report.md") in printed  # the report's location is printed at the end
    m = json.loads((out / "report" / "metrics.json").read_text())
    r = m["rollout"]
    assert r["horizons"] == [1, 2, 3, 4]
    assert len(r["model_error"]) == len(r["copy_last_error"]) == 4
    assert all(e > 0 for e in r["model_error"] + r["copy_last_error"])
    enc = m["encoder"]  # pretrained in the demo on its own training episodes, scored beside the random encoder
    assert enc["weights"].startswith("pretrained:") and enc["name"] == str(out / "encoder_pretrain" / "encoder")
    assert enc["pretrain"]["objective"] == "time-contrastive" and enc["pretrain"]["steps_done"] == 40
    for k in ("cost_quality", "random_encoder_cost_quality"):
        assert -1 <= enc[k]["rank_corr"] <= 1 and 0 <= enc[k]["cem_on_simulator_success"] <= 1, k
    assert enc["random_encoder_cost_quality"]["encoder"].startswith("random:tiny-random")
    assert m["wall_time_s"] > 0 and m["training"]["steps"] == 150
    # baselines a blurring model cannot beat by blurring, mean of 4 samples, swapped actions, K = 1
    for k in (
        "context_average_error",
        "mean_of_samples_error",
        "sample_error",
        "swapped_actions_error",
        "k1_model_error",
    ):
        assert len(r[k]) == 4 and all(e > 0 for e in r[k]), k
    assert isinstance(r["action_sensitivity"], float) and r["num_samples"] == 4
    assert r["beats_context_average"] == [m < c for m, c in zip(r["model_error"], r["context_average_error"])]
    se = r["state_error"]  # the state probe's reading of predicted vs true frames, beside the baselines
    for k in ("model", "copy_last", "context_average"):
        assert set(se[k]) == {"agent_px", "block_px", "angle_deg"} and all(len(v) == 4 for v in se[k].values())
    assert se["probe"]["block_rmse_px"] > 0 and (out / "train" / "state_probe.safetensors").exists()
    # the best held-out weights are evaluated (smoke evaluates once, at the last step: the same step)
    tr = m["training"]
    assert tr["kept_step"] == 150 and (out / "train" / "checkpoints" / "best.pt").exists()
    assert tr["kept_score"] == pytest.approx(sum(r["model_error"]) / 4, rel=1e-6) == tr["last_step_score"]
    report = (out / "report" / "report.md").read_text()
    assert "trained: in this demo by `latentwm pretrain-encoder`" in report and "random weights" not in report
    assert "| context average |" in report and "| mean of 4 samples |" in report and "| model (K = 1) |" in report
    assert "## Pose error of predicted frames (state probe)" in report and "best held-out weights" in report
    for f in ("training_curve.png", "rollout_error.png", "rollouts/rollout_0.gif"):
        assert (out / "report" / f).stat().st_size > 0
    dec = m["decoder"]  # the videos are rendered by the demo's own decoder
    assert dec["psnr"] > dec["mean_image_psnr"] + 3 and "(decoded frames)" in report  # readable, not the mean
    assert (out / "report" / "decoder_reconstructions.png").stat().st_size > 0
    assert set(m["rl"]["methods"]) == {"bc", "pmpo", "random"} and "## Offline RL in the world model" in report
    pl = m["planning"]  # the MPC stage: every planner and both baselines on the same goals
    methods = {"cem", "mppi", "gradient", "random", "dataset_actions"}
    assert set(pl["success_rate"]) == set(pl["final_distance"]) == methods and pl["num_goals"] == 2
    assert set(pl["success_rate_joint"]) == methods  # DINO-WM's joint test beside ours
    assert all(pl["success_rate_joint"][k] <= pl["success_rate"][k] for k in methods)
    assert pl["success_rate"]["dataset_actions"] == 1.0  # replaying the episode reproduces its goal
    assert all(0 <= v <= 1 for v in pl["success_rate"].values()) and pl["seconds_per_plan"]["cem"] > 0
    assert "## Goal-conditioned planning" in report and "| cem |" in report
    assert (out / "report" / "planning" / "planning.json").exists()
    assert (out / "report" / "planning" / "videos").is_dir()
    st = pl["settings"]  # DINO-WM's visual + proprio objective on the proprio the model predicts (no probe)
    assert st["proprio_term"] and st["proprio_weight"] == 1.0 and st["proprio_channels"] == 4
    assert st["relative_actions"] and st["proprio_probe"] is None and "proprio the model predicts" in report
    assert not (out / "train" / "proprio_probe.safetensors").exists()
    lad = pl["ladder"]  # the same goals from the simulator down to the model
    assert list(lad["rungs"]) == [
        "simulator + state cost",
        "simulator + latent cost",
        "simulator + latent + proprio cost",  # the smoke model plans with a proprio term
        "state model (privileged)",
        "latent model K=1",
        "latent model K=4",
        "random actions",
    ]
    assert all(r["goals"] == 2 and 0 <= r["success_rate"] <= 1 for r in lad["rungs"].values())
    assert lad["rungs"]["random actions"]["success_rate"] == pl["success_rate"]["random"]  # the plan stage's rows
    assert "### The planning ladder" in report
    # success split by whether the block must move; CEM on the state-probe cost alone (the diagnosis)
    n_static = round(pl["block_static_goals"] * 2)
    for k, n in (("success_rate_block_moves", 2 - n_static), ("success_rate_block_static", n_static)):
        assert set(pl[k]) == methods and all((v is None) == (n == 0) for v in pl[k].values()), k
    diag = pl["state_probe_cost"]
    assert 0 <= diag["success_rate"] <= 1 and diag["block_pos_diff"] > 0 and diag["cost"]["visual_weight"] == 0
    assert {"success_rate_block_moves", "agent_pos_diff", "angle_diff_deg", "final_distance"} <= set(diag)
    assert "| cem (state-probe cost) |" in report and "**Diagnosis: CEM on the state-probe cost.**" in report
    assert (out / "report" / "planning" / "state_cost" / "planning.json").exists()

    # text: the Push-T language conditions the model; the report answers how fast it learns to listen
    t, a = m["text"], m["action"]
    assert [s for s, _ in t["gain_curve"]] == [s for s, _ in a["gain_curve"]] == [150]
    assert "half_gain_step" in t and "half_gain_step" in a and "final_gain" in t
    bh = t["by_horizon"]
    assert bh["horizons"] == list(range(1, 9)) and len(bh["text_conditioned"]) == len(bh["no_text"]) == 8
    assert isinstance(t["shuffled_minus_true_h8"], float) or bh["shuffled_text"] is None
    for cond, key in (("text", "text_only_gain"), ("action", "action_only_gain")):  # each with the other removed
        only = m[cond].get(key)
        assert only is None or (len(only["by_horizon"]) == 8 and only["horizons"] == list(range(1, 9))), cond
    d = t["direction_accuracy"]  # the meaning check, with its chance level and ceiling
    assert d["uniform_chance"] == 1 / 8 and (d["clips"] == 0 or 0 <= d["accuracy"] <= 1)
    goal = pl["text_goal"]  # CEM toward goals given as sentences, the same starts as the image goals
    assert set(goal["success_rate"]) == {"cem"} and goal["num_goals"] == 2 and goal["sentences"]
    assert t["goal_planning"]["methods"] == ["cem"] and "image" in t["goal_planning"]
    assert "## Does the model listen? Text and actions" in report and "| cem (text goal) |" in report
    for f in ("condition_gain.png", "text_rollout_error.png"):
        assert (out / "report" / f).stat().st_size > 0
    assert LatentCache(out / "latents").text_encoder.startswith("minilm#")

    # the data's scale and policy mix are reported
    d = m["data"]
    assert d["trajectories"] == 24 and d["env_steps_per_episode"] == 100 and 0 < d["env_steps"] <= 2400
    assert d["policy_mix"]["shares"] == {"goal": 0.5, "scripted": 0.3, "random_walk": 0.2}
    assert sum(d["policy_mix"]["episodes"].values()) == 24 and d["stages"]["reused"] == []
    assert d["dino_wm_table5_success"] is None  # 24 trajectories: below its table
    assert "24 simulated Push-T trajectories" in report and "DINO-WM's data-scaling table" in report

    # fixed steps: the same demo on a machine where every clock reading advances a minute runs the same steps in
    # every stage and gives the same held-out errors (no stage stops on a clock)
    clock = SlowClock()
    monkeypatch.setattr(time, "monotonic", clock)
    monkeypatch.setattr(time, "perf_counter", clock)
    assert main(["demo", "--preset", "smoke", "--out-dir", str(tmp_path / "slow"), "--plan-goals", "0"]) == 0
    monkeypatch.undo()
    capsys.readouterr()
    assert json.loads((tmp_path / "slow" / "train" / "stage.json").read_text())["result"] == {"steps": 150}
    ms = json.loads((tmp_path / "slow" / "report" / "metrics.json").read_text())
    assert ms["rollout"]["model_error"] == r["model_error"] and ms["training"]["steps"] == 150
    assert ms["encoder"]["pretrain"]["steps_done"] == 40 and ms["decoder"]["epochs"] == m["decoder"]["epochs"]
    assert ms["decoder"]["psnr"] == pytest.approx(m["decoder"]["psnr"], abs=1e-6)

    # re-running with unchanged settings reuses every stage (planning included) and says so; the benchmark studies
    # given to it (training arms, the encoder table, the data-scaling curve) join the report (report-time only: no
    # stage is redone)
    arms = []
    for n in (240, 1000):
        (tmp_path / f"arms{n}").mkdir()
        (tmp_path / f"arms{n}" / "arms.json").write_text(json.dumps(_sweep(n)))
        (tmp_path / f"arms{n}" / "text_arms.png").write_bytes(b"png")
        arms.append(str(tmp_path / f"arms{n}"))
    studies = tmp_path / "studies"
    studies.mkdir()
    (studies / "encoders.json").write_text(json.dumps(encoders_study()))
    (studies / "scaling.json").write_text(json.dumps(scaling_study()))
    (studies / "data_scaling.png").write_bytes(b"curve")
    flags = ["--encoder-table", str(studies), "--data-scaling", str(studies)]
    assert main(["demo", "--preset", "smoke", "--out-dir", str(out), "--rl", "--text-arms", *arms, *flags]) == 0
    printed = capsys.readouterr().out
    report = (out / "report" / "report.md").read_text()
    assert "### Training arms: text instead of actions" in report and "At 240 trajectories" in report
    assert (out / "report" / "text_arms_1000.png").read_bytes() == b"png"
    m2 = json.loads((out / "report" / "metrics.json").read_text())
    assert set(m2["text"]["arms"]) == {"240", "1000"}
    assert "(the encoder table)" in report and "### Data scaling" in report and "![data scaling]" in report
    assert (
        report.index("(the encoder table)")
        < report.index("## Goal-conditioned planning")
        < report.index("### Data scaling")
    )
    assert (out / "report" / "data_scaling.png").read_bytes() == b"curve"
    assert len(m2["encoder"]["table"]["rows"]) == 2 and len(m2["planning"]["data_scaling"]["rows"]) == 2
    assert m2["planning"]["success_rate"] == m["planning"]["success_rate"]  # the demo's own planning kept
    stages = (
        "episodes",
        "encoder",
        "encoder_quality",
        "latents",
        "decoder",
        "train",
        "state_probe",
        "evaluate",
        "proprio_probe",
        "plan",
        "rl",
    )
    assert all(f"  reused: {s} " in printed for s in stages), printed
    assert "made none" in printed and "resumed" in printed and "  redo:" not in printed
    m2 = json.loads((out / "report" / "metrics.json").read_text())
    assert m2["rollout"]["model_error"] == r["model_error"] and m2["rollout"]["state_error"] == se
    assert m2["planning"]["final_distance"] == m["planning"]["final_distance"]
    assert m2["data"]["stages"]["made"] == []
    # a planning change goes straight to planning: everything before it is reused
    assert main(["demo", "--preset", "smoke", "--out-dir", str(out), "--redo", "plan"]) == 0
    printed = capsys.readouterr().out
    assert "  redo: plan (asked to redo it)" in printed and "made plan" in printed
    assert all(f"  reused: {s} " in printed for s in stages[:-2])

    # the eval command on the demo's kept checkpoint reproduces the demo's own numbers
    best = str(out / "train" / "checkpoints" / "best.pt")
    assert main(["eval", "--checkpoint", best, "--out-dir", str(tmp_path / "ev")]) == 0
    ev = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert ev["model_error"] == r["model_error"] and ev["num_clips"] == r["num_clips"]
    assert ev["context_average_error"] == r["context_average_error"]
    assert ev["mean_of_samples_error"] == r["mean_of_samples_error"]
    assert (tmp_path / "ev" / "rollout_0.gif").exists()

    # the plan command on the demo's kept checkpoint reproduces the demo's planning numbers for the same goals
    assert (
        main(
            [
                "plan",
                "--checkpoint",
                best,
                "--episodes-dir",
                str(out / "episodes"),
                "--cache-dir",
                str(out / "latents"),
                "--out-dir",
                str(tmp_path / "pl"),
                "--plan.num-goals",
                "2",
                "--planners",
                "cem",
                "--baselines",
                "random",
                "--videos",
                "0",
            ]
        )
        == 0
    )
    p2 = json.loads((tmp_path / "pl" / "planning.json").read_text())
    for k in ("cem", "random"):
        assert p2["final_distance"][k] == m["planning"]["final_distance"][k]
    # the diagnosis from the CLI: CEM on the state probe's pose cost alone (the run's saved probe) = the demo's
    assert (
        main(
            [
                "plan",
                "--checkpoint",
                best,
                "--episodes-dir",
                str(out / "episodes"),
                "--cache-dir",
                str(out / "latents"),
                "--out-dir",
                str(tmp_path / "pls"),
                "--plan.num-goals",
                "2",
                "--planners",
                "cem",
                "--baselines",
                "random",
                "--videos",
                "0",
                "--plan.visual-weight",
                "0",
                "--plan.state-weight",
                "1",
                "--plan.proprio-weight",
                "0",
            ]
        )
        == 0
    )
    p3 = json.loads((tmp_path / "pls" / "planning.json").read_text())
    assert p3["final_distance"]["cem"] == m["planning"]["state_probe_cost"]["final_distance"]

    # offline RL on the demo's model and data: every phase runs, the table has BC, PMPO and random side by side
    assert (
        main(
            [
                "rl",
                "--checkpoint",
                str(out / "train"),
                "--out-dir",
                str(tmp_path / "rl"),
                "--heads-steps",
                "30",
                "--imagine-steps",
                "4",
                "--batch-size",
                "8",
                "--horizon",
                "3",
                "--sample-steps",
                "2",
                "--eval-episodes",
                "1",
                "--eval-max-steps",
                "3",
                "--videos",
                "1",
                "--hidden",
                "32",
            ]
        )
        == 0
    )
    rl = json.loads((tmp_path / "rl" / "eval" / "metrics.json").read_text())
    assert set(rl["methods"]) == {"bc", "pmpo", "random"}
    assert all(0 <= r["max_coverage"] <= 1 for r in rl["methods"].values())
    assert (tmp_path / "rl" / "eval" / "videos" / "episode00_pmpo.gif").exists()
    logged = (tmp_path / "rl" / "imagine" / "metrics.jsonl").read_text()
    assert "imagine/return" in logged and "pmpo/positive_fraction" in logged

    # --finetune-world-model trains the dynamics model with the heads (its own loss keeps it a world model); the
    # imagine phase then runs on those weights
    from latentwm.engine import checkpoint as ckpt

    assert (
        main(
            [
                "rl",
                "--checkpoint",
                str(out / "train"),
                "--out-dir",
                str(tmp_path / "rlft"),
                "--phase",
                "heads",
                "--finetune-world-model",
                "--heads-steps",
                "3",
                "--batch-size",
                "4",
                "--hidden",
                "16",
            ]
        )
        == 0
    )
    st = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "rlft" / "heads" / "checkpoints"))
    original = ckpt.load_world_model(out / "train")[0].state_dict()
    assert any(not torch.equal(v, st["world_model"][k]) for k, v in original.items())
    assert "world_model/loss" in (tmp_path / "rlft" / "heads" / "metrics.jsonl").read_text()


def test_report_encoder_paragraph():
    """The random-weights warning only for an untrained encoder; what the caller says about a trained one (how,
    goal-cost quality beside the random encoder's) otherwise."""
    label = "random:tiny-random:seed0:56px"
    assert "random weights" in encoder_paragraph({"weights": "random"}, label)
    info = {
        "weights": "random",
        "how_trained": "DINO + iBOT on the demo's frames",
        "cost_quality": {"rank_corr": 0.41, "cem_on_simulator_success": 0.3},
        "random_encoder_cost_quality": {"rank_corr": 0.04, "cem_on_simulator_success": 0.0},
    }
    text = encoder_paragraph(info, label)
    assert "random weights" not in text and "DINO + iBOT on the demo's frames" in text
    assert "0.41 (random encoder: 0.04)" in text and "0.30 (random encoder: 0.00)" in text
    assert "random weights" not in encoder_paragraph({"weights": "pretrained:facebook/dinov2-small"}, "x")


def test_demo_encoder_choice(tmp_path):
    """`--encoder pretrain` (default) names the folder the demo pretrains into; any other value is used as is."""
    from latentwm.config import ConfigError, DemoConfig

    cfg = DemoConfig(preset="smoke", out_dir=str(tmp_path))
    assert cfg.experiment().encoder.name == str(tmp_path / "encoder_pretrain" / "encoder")
    assert DemoConfig(preset="smoke", encoder="tiny-random").experiment().encoder.name == "tiny-random"
    with pytest.raises(ConfigError, match="demo.encoder"):
        DemoConfig(encoder="")


def test_state_cost_diagnosis_verdict_depends_on_the_probe():
    """A failed state-cost diagnosis blames the dynamics model only when the probe can read the pose within twice
    the success tolerance; with a coarse probe (the cpu demo's time-contrastive latents: agent 105 px) it says the
    diagnosis is inconclusive."""
    from latentwm.report.sections import _diagnosis

    def planning(agent_px):
        probe = {
            "agent_rmse_px": agent_px,
            "agent_baseline_rmse_px": 165.0,
            "block_rmse_px": 30.0,
            "block_baseline_rmse_px": 136.0,
            "angle_err_deg": 30.0,
            "angle_baseline_err_deg": 95.0,
        }
        return {
            "state_probe_cost": {
                "success_rate": 0.0,
                "success_rate_block_moves": 0.0,
                "block_pos_diff": 107.0,
                "probe": probe,
            },
            "by_subset": {"block_moves": {"num_goals": 11}},
            "success_rate_block_moves": {"cem": 0.09},
            "block_pos_diff": {"cem": 68.0},
        }

    assert "**the dynamics model" in _diagnosis(planning(25.0)) and "inconclusive" not in _diagnosis(planning(25.0))
    coarse = _diagnosis(planning(105.0))
    assert "inconclusive" in coarse and "Taken at face value" in coarse and "agent" in coarse


@pytest.mark.parametrize(
    "flag, name, bench",
    [
        ("--text-arms", "arms.json", "bench_text_arms.py"),
        ("--encoder-table", "encoders.json", "bench_encoder_pretrain.py"),
        ("--data-scaling", "scaling.json", "bench_data_scaling.py"),
    ],
)
def test_demo_study_folder_without_its_file_fails_before_any_stage(tmp_path, capsys, flag, name, bench):
    out = tmp_path / "demo"
    assert main(["demo", "--preset", "smoke", "--out-dir", str(out), flag, str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"latentwm demo: {tmp_path / name}: no {name} (a benchmarks/{bench} output folder has one)"]
    assert not (out / "episodes").exists()  # nothing was made
