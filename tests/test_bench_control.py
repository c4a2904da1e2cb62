"""The control benchmarks end to end at tiny sizes: the data-scaling sweep (sweeps/data-scaling-pusht.sh: an encoder,
then bench_data_scaling.py --quick: generate, encode, train, plan per size), bench_ladder.py and
bench_conditioning.py --quick on the data it made; all print their JSON and record nothing."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from latentwm.report.studies import read_data_scaling, read_encoder_table

pytest.importorskip("gym_pusht")
ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str]) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_data_scaling_and_ladder_quick_runs(tmp_path):
    """The sweep script (sweeps/data-scaling-pusht.sh: the encoder's episodes, the encoder, then bench_data_scaling
    on it) at tiny sizes, then the ladder and the conditioning arms on the data it made."""
    before = (ROOT / "benchmarks/RESULTS.md").read_bytes()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable, "OUT": str(tmp_path)}
    env |= {"ENC_EPISODES": "6", "PRETRAIN_STEPS": "4"}
    proc = subprocess.run(
        ["bash", "sweeps/data-scaling-pusht.sh", "--quick"], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [r["trajectories"] for r in res["rows"]] == [6, 12] and res["quick"]
    encoder = tmp_path / "encoder/encoder"
    assert json.loads((encoder / "pretrain.json").read_text())["steps_done"] == 4
    assert str(encoder) in (tmp_path / "n6/latents/cache.json").read_text()  # encoded with the encoder it trained
    for r in res["rows"]:
        assert r["goals"] == 2 and 0 <= r["cem_success"] <= 1 and 0 <= r["random_success"] <= 1
        assert all(0 <= r[f"{rung}_success"] <= 1 for rung in ("sim_state", "sim_latent", "state_model"))
        assert r["dino_wm_table5_success"] is None  # below DINO-WM's smallest size: not extrapolated
    study = read_data_scaling(tmp_path / "quick")  # what `latentwm demo --data-scaling` reads
    assert study["rows"] == res["rows"] and study["quick"] and study["figure"].endswith("data_scaling.png")
    run = tmp_path / "n12"
    ladder = _run(
        [
            "benchmarks/bench_ladder.py",
            "--quick",
            "--cache",
            str(run / "latents"),
            "--episodes",
            str(run / "episodes"),
            "--checkpoint",
            str(run / "train"),
            "--out",
            str(tmp_path / "ladder"),
        ]
    )
    rungs = ladder["rungs"]
    assert set(rungs) == {
        "simulator + state cost",
        "simulator + latent cost",
        "simulator + latent + proprio cost",
        "state model (privileged)",
        "latent model K=1",
        "latent model K=4",
        "random actions",
    }
    assert all(r["goals"] == 2 and 0 <= r["success_rate"] <= 1 for r in rungs.values())
    ranks = ladder["cost_rank"]  # the costs' ordering of the same random plans, the model's own beside
    assert set(ranks) == {"latent", "latent+proprio", "model K=1", "model K=1 latent", "model K=4", "model K=4 latent"}
    assert all(-1 <= v["rank_corr"] <= 1 for v in ranks.values()) and ladder["rank_samples"] == 8
    again = _run(
        [
            "benchmarks/bench_ladder.py",
            "--quick",
            "--cache",
            str(run / "latents"),
            "--episodes",
            str(run / "episodes"),
            "--checkpoint",
            str(run / "train"),
            "--out",
            str(tmp_path / "ladder"),
        ]
    )
    assert again["rungs"] == rungs  # every rung reused from its folder
    # the proprio on every token vs in its own slot, on the same cache (bench_conditioning)
    cond = _run(
        ["benchmarks/bench_conditioning.py", "--quick", "--cache", str(run / "latents"), "--episodes",
         str(run / "episodes"), "--encoder", str(encoder), "--arms", "proprio+relative,proprio-slot+relative",
         "--out", str(tmp_path / "conditioning")]
    )  # fmt: skip
    assert [(r["arm"], r["proprio_input"]) for r in cond["rows"]] == [
        ("proprio+relative", "concat"),
        ("proprio-slot+relative", "slot"),
    ]
    assert all(0 <= r["cem"]["success"] <= 1 for r in cond["rows"])
    from latentwm.engine.checkpoint import load_world_model

    model, exp, _ = load_world_model(tmp_path / "conditioning/proprio-slot+relative/train")
    assert exp.model.proprio_input == "slot" and "proprio" in model.layout.conditions
    assert (ROOT / "benchmarks/RESULTS.md").read_bytes() == before


@pytest.mark.slow
def test_encoder_table_quick_run(tmp_path):
    """bench_encoder_pretrain.py --quick: each encoder scored on what the cost must resolve (nearest-latent pose,
    the pose probe, rank correlation, CEM on the simulator), printed and not recorded."""
    from latentwm.config import GenerateConfig
    from latentwm.data.sources.pusht import generate_pusht

    before = (ROOT / "benchmarks/RESULTS.md").read_bytes()
    generate_pusht(
        GenerateConfig(out_dir=str(tmp_path / "eps"), num_episodes=12, max_steps=60, workers=1), show_progress=False
    )
    res = _run(
        [
            "benchmarks/bench_encoder_pretrain.py",
            "--quick",
            "--episodes",
            str(tmp_path / "eps"),
            "--objectives",
            "time-contrastive,dino",
            "--out",
            str(tmp_path / "table"),
        ]
    )
    assert [r["objective"] for r in res["rows"]] == ["-", "time-contrastive", "dino"] and res["quick"]
    for r in res["rows"]:
        assert 0 <= r["nearest_block_within_20"] <= 1 and r["nearest_block_px"] >= 0 and r["probe_block_px"] > 0
        assert -1 <= r["rank_corr"] <= 1 and 0 <= r["cem_on_simulator_success"] <= 1
        assert 1 <= r["effective_rank"] <= 64  # the demo encoder's width
    assert 0 < res["rows"][2]["teacher_entropy"] <= 1 and "teacher_entropy" not in res["rows"][1]
    assert read_encoder_table(tmp_path / "table" / "quick")["rows"] == res["rows"]  # what demo --encoder-table reads
    assert (ROOT / "benchmarks/RESULTS.md").read_bytes() == before


@pytest.mark.slow
def test_text_arms_quick_run(tmp_path):
    """bench_text_arms.py --quick: the four arms on a tiny Push-T folder, each condition's gain with the other present
    and alone logged at every evaluation; printed, not recorded."""
    before = (ROOT / "benchmarks/RESULTS.md").read_bytes()
    res = _run(["benchmarks/bench_text_arms.py", "--quick", "--out", str(tmp_path)])
    rows = {r["arm"]: r for r in res["rows"]}
    assert set(rows) == {"joint", "text-only", "action-only", "motion-class"} and res["quick"]
    for r in rows.values():
        assert [s for s, _ in r["text_alone_curve"]] == [2, 4]  # logged at every evaluation
        assert r["text_alone_gain"] is not None and r["text_gain"] is not None
        d = r["direction"]  # the meaning check of the arm's final model, with its references
        assert d["clips"] > 0 and 0 <= d["accuracy"] <= 1 and 0 <= d["chance"] <= 1 and d["uniform_chance"] == 1 / 8
        metrics = json.loads((tmp_path / r["arm"] / "metrics.json").read_text())  # the demo's sections, per arm
        for cond in ("text", "action"):
            assert r[f"{cond}.half_gain_step"] == metrics[cond]["alone"]["half_gain_step"]
            assert [s for s, _ in metrics[cond]["alone"]["gain_curve"]] == [2, 4]
        only = metrics["text"]["text_only_gain"]  # the final model's per-horizon gains, the other condition removed
        assert only["horizons"] == list(range(1, 9)) and len(only["by_horizon"]) == len(only["stderr"]) == 8
        assert r["text_only_gain"] == only and r["action_only_gain"] == metrics["action"]["action_only_gain"]
    assert rows["motion-class"]["text"] == "pusht-motion-class"
    for name, cond in (("text-only", "action"), ("action-only", "text")):  # the never-trained path, redrawn
        floor = rows[name]["untrained_floor"]
        assert floor["condition"] == cond and floor["draws"] == 2 and len(floor["redrawn_gains"]) == 2
        assert floor["redrawn_gains"][0] != floor["redrawn_gains"][1]  # each draw its own chance correlation
        saved = rows[name][f"{cond}_only_gain"]["by_horizon"]  # the final evaluation's own gain
        assert floor["final_eval_gain"] == pytest.approx(sum(saved) / len(saved))
        # the saved layer scored in the redraws' loop: the same number (one evaluation path for both)
        assert floor["saved_layer_gain"] == pytest.approx(floor["final_eval_gain"], abs=1e-6)
        assert floor["saved_init_cosine"] == pytest.approx(1.0, abs=1e-5)  # never moved by a gradient
        assert 0.9 < floor["saved_init_norm_ratio"] <= 1.0  # only weight decay's shrink
        assert len(floor["permuted_gains"]) == 2
    assert "untrained_floor" not in rows["joint"] and "untrained_floor" not in rows["motion-class"]
    for name in ("joint", "text-only"):  # the arms that learn sentences: scored on the wording they saw, too
        w = rows[name]["wording_gain"]
        assert len(w["seen"]["by_horizon"]) == len(w["heldout"]["by_horizon"]) == 8
        assert w["heldout"]["by_horizon"] == rows[name]["text_only_gain"]["by_horizon"]  # the same final evaluation
    assert "wording_gain" not in rows["motion-class"] and "wording_gain" not in rows["action-only"]
    assert set(res["wording_readout"]) == {"direction", "template", "class"}  # MiniLM's carry to new wording
    assert (tmp_path / "text_arms.png").stat().st_size > 0  # the curves, drawn
    sweep = json.loads((tmp_path / "arms.json").read_text())  # what the demo's --text-arms reads
    assert sweep["rows"] == res["rows"] and sweep["trajectories"] == 8 and sweep["steps"] == 4
    assert "### Training arms" in (tmp_path / "report.md").read_text()
    # the sentences that say how far: the same episodes re-read in the magnitude style, apart from the first sweep
    args = ["--episodes", str(tmp_path / "episodes"), "--narration", "magnitude", "--arms", "text-only,motion-class"]
    res = _run(["benchmarks/bench_text_arms.py", "--quick", "--out", str(tmp_path), *args])
    rows = {r["arm"]: r for r in res["rows"]}
    assert rows["motion-class"]["text"] == "pusht-motion-class-magnitude" and rows["text-only"]["text"] == "minilm"
    mag = tmp_path / "magnitude"
    assert json.loads((mag / "arms.json").read_text())["narration"] == "magnitude"
    assert (mag / "text-only" / "metrics.json").exists() and (mag / "text_arms.png").stat().st_size > 0
    assert json.loads((mag / "latents_minilm" / "cache.json").read_text())["narration"] == "magnitude"
    assert (ROOT / "benchmarks/RESULTS.md").read_bytes() == before


@pytest.mark.slow
def test_objective_gap_quick_run(tmp_path):
    """bench_objective_gap.py --quick: two objectives on one tiny cache, each scored on held-out rollouts (one
    sample, the mean of samples and its extrapolation) and by the block cost rank at its own K; printed, not
    recorded."""
    before = (ROOT / "benchmarks/RESULTS.md").read_bytes()
    variants = "shortcut,next,no-bootstrap,teacher-forcing,previous-frame,pure-noise-previous"
    res = _run(["benchmarks/bench_objective_gap.py", "--quick", "--variants", variants, "--out", str(tmp_path),
                "--episodes", str(tmp_path / "episodes"), "--extra", "--objective.text-dropout 1.0"])  # fmt: skip
    rows = {r["variant"]: r for r in res["rows"]}
    assert set(rows) == {"shortcut", "next", "no-bootstrap", "teacher-forcing", "previous-frame", "pure-noise-previous"}
    assert res["quick"] and rows["pure-noise-previous"]["sample_steps"] == 1  # one level, one step: τ = 0, d = 1
    assert rows["no-bootstrap"]["sample_steps"] == 4  # flow targets at the one step size its sampler uses
    for r in rows.values():  # the cost rank ran at the checkpoint's own K, on the quick run's two goals
        assert r["rank_k"] == r["sample_steps"] and r["rank_goals"] == 2
        fit = r["one_pass_error"]  # the network's own fit of frames 4..7, on held-out and training clips
        assert len(fit["heldout"]) == len(fit["train"]) == 4 and all(v > 0 for v in fit["heldout"] + fit["train"])
        rank = json.loads((tmp_path / f"eval_{r['variant']}" / "cost_rank.json").read_text())
        assert rank["model"]["block_rank_corr"] == r["block_rank"]
    from latentwm.planning.evaluate import WorldModelRun

    # --extra reached the trained variants; the teacher-forced one trains at half the batch (equal compute)
    assert WorldModelRun.load(tmp_path / "next").exp.objective.text_dropout == 1.0
    tf = WorldModelRun.load(tmp_path / "teacher-forcing").exp
    assert tf.objective.teacher_forcing and tf.data.batch_size == 8
    assert WorldModelRun.load(tmp_path / "previous-frame").exp.model.previous_frame  # planned with (cost rank above)
    assert rows["next"]["num_samples"] == 2 or rows["next"]["mean_of_samples_error"] == rows["next"]["heldout_error"]
    for r in rows.values():
        assert len(r["heldout_error"]) == 4 and r["step"] == 4 and r["num_clips"] > 0
    again = _run(  # reusing a run: scored, not trained again
        ["benchmarks/bench_objective_gap.py", "--quick", "--variants", "next", "--reuse", f"next={tmp_path / 'next'}",
         "--out", str(tmp_path)]
    )  # fmt: skip
    assert again["rows"][0]["heldout_error"] == rows["next"]["heldout_error"]
    assert (ROOT / "benchmarks/RESULTS.md").read_bytes() == before
