"""The embedded default end to end: `latentwm demo --preset smoke`, then `latentwm eval` on its checkpoint."""

import json

import pytest
import torch

from latentwm.cli import main


@pytest.mark.slow
def test_smoke_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--preset", "smoke", "--out-dir", str(out), "--rl"]) == 0
    printed = capsys.readouterr().out
    assert str(out / "report" / "report.md") in printed  # the report's location is printed at the end
    m = json.loads((out / "report" / "metrics.json").read_text())
    r = m["rollout"]
    assert r["horizons"] == [1, 2, 3, 4]
    assert len(r["model_error"]) == len(r["copy_last_error"]) == 4
    assert all(e > 0 for e in r["model_error"] + r["copy_last_error"])
    assert m["encoder"]["weights"] == "random"
    assert m["wall_time_s"] > 0 and m["training"]["steps"] == 150
    report = (out / "report" / "report.md").read_text()
    assert "random weights" in report
    for f in ("training_curve.png", "rollout_error.png", "rollouts/rollout_0.gif"):
        assert (out / "report" / f).stat().st_size > 0
    dec = m["decoder"]  # the videos are rendered by the demo's own decoder
    assert dec["psnr"] > dec["mean_image_psnr"] + 3 and "(decoded frames)" in report  # readable, not the mean
    assert (out / "report" / "decoder_reconstructions.png").stat().st_size > 0
    assert set(m["rl"]["methods"]) == {"bc", "pmpo", "random"} and "## Offline RL in the world model" in report
    pl = m["planning"]  # the MPC stage: every planner and both baselines on the same goals
    methods = {"cem", "mppi", "gradient", "random", "dataset_actions"}
    assert set(pl["success_rate"]) == set(pl["final_distance"]) == methods and pl["num_goals"] == 2
    assert pl["success_rate"]["dataset_actions"] == 1.0  # replaying the episode reproduces its goal
    assert all(0 <= v <= 1 for v in pl["success_rate"].values()) and pl["seconds_per_plan"]["cem"] > 0
    assert "## Goal-conditioned planning" in report and "| cem |" in report
    assert (out / "report" / "planning" / "planning.json").exists()
    assert (out / "report" / "planning" / "videos").is_dir()
    st = pl["settings"]  # DINO-WM's visual + proprio objective, the agent read out by the demo's probe
    assert st["proprio_term"] and st["proprio_weight"] == 1.0 and st["proprio_probe"]["heldout_rmse"] > 0
    assert (out / "train" / "proprio_probe.safetensors").exists() and "proprio MSE" in report

    # re-running resumes every stage instead of redoing it
    assert main(["demo", "--preset", "smoke", "--out-dir", str(out)]) == 0
    assert json.loads((out / "report" / "metrics.json").read_text())["rollout"]["model_error"] == r["model_error"]

    # the eval command on the demo's checkpoint reproduces the demo's own numbers
    assert main(["eval", "--checkpoint", str(out / "train"), "--out-dir", str(tmp_path / "ev")]) == 0
    ev = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert ev["model_error"] == r["model_error"] and ev["num_clips"] == r["num_clips"]
    assert (tmp_path / "ev" / "rollout_0.gif").exists()

    # the plan command on the demo's checkpoint reproduces the demo's planning numbers for the same goals
    assert main(["plan", "--checkpoint", str(out / "train"), "--episodes-dir", str(out / "episodes"),
                 "--cache-dir", str(out / "latents"), "--out-dir", str(tmp_path / "pl"), "--plan.num-goals", "2",
                 "--planners", "cem", "--baselines", "random", "--videos", "0"]) == 0
    p2 = json.loads((tmp_path / "pl" / "planning.json").read_text())
    for k in ("cem", "random"):
        assert p2["final_distance"][k] == m["planning"]["final_distance"][k]

    # offline RL on the demo's model and data: every phase runs, the table has BC, PMPO and random side by side
    assert main(["rl", "--checkpoint", str(out / "train"), "--out-dir", str(tmp_path / "rl"), "--heads-steps", "30",
                 "--imagine-steps", "4", "--batch-size", "8", "--horizon", "3", "--sample-steps", "2",
                 "--eval-episodes", "1", "--eval-max-steps", "3", "--videos", "1", "--hidden", "32"]) == 0
    rl = json.loads((tmp_path / "rl" / "eval" / "metrics.json").read_text())
    assert set(rl["methods"]) == {"bc", "pmpo", "random"}
    assert all(0 <= r["max_coverage"] <= 1 for r in rl["methods"].values())
    assert (tmp_path / "rl" / "eval" / "videos" / "episode00_pmpo.gif").exists()
    logged = (tmp_path / "rl" / "imagine" / "metrics.jsonl").read_text()
    assert "imagine/return" in logged and "pmpo/positive_fraction" in logged

    # --finetune-world-model trains the dynamics model with the heads (its own loss keeps it a world model); the
    # imagine phase then runs on those weights
    from latentwm.train import checkpoint as ckpt

    assert main(["rl", "--checkpoint", str(out / "train"), "--out-dir", str(tmp_path / "rlft"), "--phase", "heads",
                 "--finetune-world-model", "--heads-steps", "3", "--batch-size", "4", "--hidden", "16"]) == 0
    st = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "rlft" / "heads" / "checkpoints"))
    original = ckpt.load_world_model(out / "train")[0].state_dict()
    assert any(not torch.equal(v, st["world_model"][k]) for k, v in original.items())
    assert "world_model/loss" in (tmp_path / "rlft" / "heads" / "metrics.jsonl").read_text()
