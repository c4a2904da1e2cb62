"""Imagined goals: the model's own future under a sentence (planning/imagine.py), `latentwm imagine`, MPC toward the
imagined goal (`MPCPolicy` with a text goal) and the text-goal mode of the planning evaluation (same starts as the
image goals, sentences from the Push-T language, scored against the true goal states)."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from latentwm.cli import main
from latentwm.conditions import Conditions
from latentwm.config import (
    CEMConfig,
    ConfigError,
    GenerateConfig,
    GradientConfig,
    ImagineConfig,
    MPPIConfig,
    PlanConfig,
    PlanRunConfig,
    get_preset,
)
from latentwm.data.sources.pusht import generate_pusht
from latentwm.encoders.text import TextEncoder, save_tiny_text_model
from latentwm.envs.pusht_language import (
    HELDOUT_PER_TEMPLATE,
    PARAPHRASES,
    heldout_paraphrases,
    parse_sentence,
    train_paraphrases,
)
from latentwm.model.dynamics import DynamicsModel
from latentwm.planning.evaluate import (
    PlanningModels,
    PlanningOptions,
    WorldModelRun,
    evaluate_planning,
    planning_table,
    sample_goals,
)
from latentwm.planning.imagine import embed_sentences, imagine, load_goal, text_encoder_for
from latentwm.planning.mpc import ActionCodec, EpisodeGoal, LatentObserver, MPCOptions, MPCPolicy, run_episode
from latentwm.planning.results import goal_sentence, text_goal_comparison
from latentwm.rollout import Sampling, rollout

E, FS = 16, 5
STATS = {"mean": [250.0, 260.0], "std": [100.0, 110.0], "count": 1}
CFG = PlanConfig(
    horizon=2,
    exec_steps=2,
    goal_offset=10,
    num_goals=2,
    imagine_steps=2,
    cem=CEMConfig(population=8, elites=2, iterations=2),
    mppi=MPPIConfig(population=8, iterations=2),
    gradient=GradientConfig(steps=2),
)


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    return save_tiny_text_model(tmp_path_factory.mktemp("text") / "tiny", hidden=E)


@pytest.fixture(scope="module")
def encoder(text_model):
    return TextEncoder(text_model)


def _model(text_dim=E, seed=0):
    """The tiny model with a text slot, perturbed away from its zero-initialized output head."""
    torch.manual_seed(seed)
    m = DynamicsModel(get_preset("tiny").replace(model__text_dim=text_dim).model).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m.requires_grad_(False)


def _state(label, text_dim=E, path="ck"):
    cfg = get_preset("tiny").replace(model__text_dim=text_dim).to_dict()
    return {
        "config": cfg,
        "cache_info": {"encoder": "random:test", "text_encoder": label, "text_dim": text_dim},
        "path": path,
    }


def test_imagine_shapes_determinism_sentences_and_guidance_one(encoder):
    m = _model()
    c = m.cfg
    ctx = torch.randn(2, 2, c.num_latent_tokens, c.latent_dim, generator=torch.Generator().manual_seed(0))
    text = embed_sentences(encoder, ["push the T block to the left", "rotate the block clockwise"])
    out = imagine(m, ctx, text, 3, sample_steps=2, generator=torch.Generator().manual_seed(1))
    assert out.shape == (2, 3, c.num_latent_tokens, c.latent_dim) and torch.isfinite(out).all()
    again = imagine(m, ctx, text, 3, sample_steps=2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, again)
    same_ctx = ctx[:1].expand(2, -1, -1, -1)  # one context, two sentences: two goals
    two = imagine(m, same_ctx, text, 3, sample_steps=2, generator=torch.Generator().manual_seed(1))
    assert (two[0, -1] - two[1, -1]).abs().max() > 1e-4
    plain = rollout(m, ctx, 3, Conditions(text=text), Sampling(2), generator=torch.Generator().manual_seed(1))
    one = imagine(m, ctx, text, 3, sample_steps=2, text_guidance=1.0, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(one, plain, rtol=0, atol=0)
    assert not torch.equal(out, plain)  # guidance 3 (the default) is another sample
    shared = imagine(m, ctx, text[:1], 3, sample_steps=2, generator=torch.Generator().manual_seed(1))
    assert shared.shape == out.shape  # one sentence for the whole batch
    with pytest.raises(ValueError, match="text must be"):
        imagine(m, ctx, torch.zeros(2, E + 1), 3)
    with pytest.raises(ConfigError, match="not trained with text"):
        imagine(_model(text_dim=0), ctx, text, 3)


def test_text_encoder_for_rebuilds_and_verifies_the_cache_encoder(encoder, text_model, tmp_path):
    enc = text_encoder_for(_state(encoder.label))
    assert enc.label == encoder.label
    np.testing.assert_array_equal(enc.embed(["push the T block left"]), encoder.embed(["push the T block left"]))
    other = encoder.label.rpartition("#")[0] + "#0123456789ab"
    with pytest.raises(ConfigError, match="other weights") as e:
        text_encoder_for(_state(other))
    assert other in str(e.value) and encoder.label in str(e.value)
    with pytest.raises(ConfigError, match="not trained with text"):
        text_encoder_for(_state(encoder.label, text_dim=0))
    no_text = _state(None)
    with pytest.raises(ConfigError, match="not trained with text"):
        text_encoder_for(no_text)
    moved = save_tiny_text_model(tmp_path / "moved", hidden=E)  # the same weights in another folder
    assert text_encoder_for(_state(encoder.label), name=moved).label.endswith(encoder.label.rpartition("#")[2])
    with pytest.raises(ConfigError, match="model.text_dim"):
        text_encoder_for(_state(encoder.label, text_dim=8))


def test_goal_sentences_are_heldout_paraphrases_of_the_push_t_description():
    s0 = np.array([100.0, 100.0, 300.0, 300.0, 0.0])
    s1 = np.array([100.0, 100.0, 200.0, 300.0, 0.0])  # the block moved left
    text = goal_sentence(s0, s1, seed=0, index=3)
    tid, slots, p = parse_sentence(text)
    assert tid == "block_move" and slots == {"direction": "left"}
    assert p >= len(PARAPHRASES[tid]) - HELDOUT_PER_TEMPLATE
    assert goal_sentence(s0, s1, seed=0, index=3) == text
    # a model trained on the magnitude narration gets its goals in those words: how far, not only where
    tid, slots, p = parse_sentence(goal_sentence(s0, s1, seed=0, index=3, style="magnitude"))
    assert tid == "block_move_by" and slots == {"direction": "left", "distance": "100"}
    assert p >= len(heldout_paraphrases(tid)) + len(train_paraphrases(tid)) - HELDOUT_PER_TEMPLATE


# ---- a tiny trained run with text: generate → encode (with the tiny sentence encoder) → train ------------------
@pytest.fixture(scope="module")
def run(tmp_path_factory, text_model):
    tmp = tmp_path_factory.mktemp("imagine_run")
    generate_pusht(GenerateConfig(out_dir=str(tmp / "eps"), num_episodes=4, max_steps=40, seed=3), show_progress=False)
    assert (
        main(
            [
                "encode",
                "--preset",
                "tiny",
                "--root",
                str(tmp / "eps"),
                "--out-dir",
                str(tmp / "cache"),
                "--text.name",
                text_model,
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "train",
                "--preset",
                "tiny",
                "--data.cache-dir",
                str(tmp / "cache"),
                "--train.out-dir",
                str(tmp / "wm"),
                "--train.steps",
                "2",
                "--train.eval-every",
                "100",
                "--train.ckpt-every",
                "2",
                "--model.text-dim",
                str(E),
                "--data.eval-fraction",
                "0.5",
            ]
        )
        == 0
    )
    return tmp


def test_imagine_command_writes_gif_goal_and_json(run, text_model, capsys):
    out = run / "im"
    capsys.readouterr()
    assert (
        main(
            [
                "imagine",
                "--checkpoint",
                str(run / "wm"),
                "--text",
                "push the T block to the left",
                "--episode",
                "pusht/episode_000001",
                "--start",
                "3",
                "--horizon",
                "3",
                "--sample-steps",
                "2",
                "--out-dir",
                str(out),
            ]
        )
        == 0
    )
    line = capsys.readouterr().out.strip().splitlines()
    assert len(line) == 1 and "push the T block to the left" in line[0]
    assert (out / "imagined.gif").stat().st_size > 0
    goal, meta = load_goal(out / "goal.safetensors")
    assert goal.shape == (16, 64) and torch.isfinite(goal).all()
    with safe_open(str(out / "goal.safetensors"), framework="pt") as f:
        assert f.metadata()["sentence"] == "push the T block to the left"
    res = json.loads((out / "imagine.json").read_text())
    assert meta["text_encoder"] == res["text_encoder"] == TextEncoder(text_model).label
    assert res["episode"] == "pusht/episode_000001" and res["start"] == 3 and res["horizon"] == 3
    assert meta["encoder"] == res["encoder"] and meta["horizon"] == "3" and meta["checkpoint"] == res["checkpoint"]
    assert res["real_frames"] == 3 and len(res["mse_to_real"]) == 3 and res["goal_mse_to_real"] is not None
    assert (
        main(
            [
                "imagine",
                "--checkpoint",
                str(run / "wm"),
                "--text",
                "turn the T clockwise",
                "--episode",
                "0",
                "--horizon",
                "2",
                "--sample-steps",
                "1",
                "--out-dir",
                str(run / "im2"),
            ]
        )
        == 0
    )  # a held-out clip
    assert json.loads((run / "im2" / "imagine.json").read_text())["horizon"] == 2


@pytest.mark.parametrize(
    "args, field",
    [
        (["--episode", "pusht/no_such_episode"], "imagine.episode"),
        (["--episode", "99"], "imagine.episode"),
        (["--episode", "pusht/episode_000001", "--start", "39"], "imagine.start"),
        (["--episode", "pusht/episode_000001", "--camera", "wrist"], "imagine.camera"),
        (["--text", ""], "imagine.text"),
        (["--sample-steps", "3"], "imagine.sample_steps"),
    ],
)
def test_imagine_bad_inputs_are_one_line_errors_naming_the_field(run, capsys, args, field):
    base = ["imagine", "--checkpoint", str(run / "wm"), "--text", "push the block", "--out-dir", str(run / "bad")]
    assert main(base + args) == 2
    assert _error_line(capsys.readouterr().err).startswith(f"latentwm imagine: {field}")


def _error_line(err: str) -> str:
    """The one error line (transformers may draw a progress bar on stderr while loading the sentence encoder)."""
    lines = [ln for ln in err.splitlines() if ln.startswith("latentwm ")]
    assert len(lines) == 1 and err.endswith(lines[0] + "\n"), err
    return lines[0]


def test_imagine_refuses_a_model_trained_without_text(run, tmp_path, capsys):
    assert (
        main(
            [
                "train",
                "--preset",
                "tiny",
                "--data.cache-dir",
                str(run / "cache"),
                "--train.out-dir",
                str(tmp_path / "wm"),
                "--train.steps",
                "1",
                "--train.eval-every",
                "100",
                "--train.ckpt-every",
                "1",
                "--model.text-dim",
                "0",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        main(["imagine", "--checkpoint", str(tmp_path / "wm"), "--text", "push", "--out-dir", str(tmp_path / "im")])
        == 2
    )
    assert "not trained with text" in _error_line(capsys.readouterr().err)
    with pytest.raises(ConfigError, match="imagine.tau_ctx"):
        ImagineConfig(tau_ctx=0.0)


def test_plan_goal_text_runs_the_same_starts_with_text_goals(run, capsys):
    from latentwm.planning.state_probe import StateProbe

    out = run / "plan"
    # a pose probe given at state weight 0 is no cost term, only the reader of the imagined goals' poses
    m = WorldModelRun.load(run / "wm").exp.model
    torch.manual_seed(0)
    probe = StateProbe(m.num_latent_tokens, m.latent_dim, 4, 16, torch.full((4,), 256.0), torch.full((4,), 100.0))
    probe_file = probe.save(run / "pose_probe.safetensors")
    assert (
        main(
            [
                "plan",
                "--preset",
                "tiny",
                "--checkpoint",
                str(run / "wm"),
                "--episodes-dir",
                str(run / "eps"),
                "--out-dir",
                str(out),
                "--planners",
                "cem",
                "--baselines",
                "random",
                "dataset_actions",
                "--proprio-probe",
                "none",
                "--plan.num-goals",
                "2",
                "--plan.goal-offset",
                "10",
                "--plan.horizon",
                "2",
                "--plan.exec-steps",
                "2",
                "--plan.cem.population",
                "8",
                "--plan.cem.elites",
                "2",
                "--plan.cem.iterations",
                "1",
                "--plan.imagine-steps",
                "1",
                "--max-replans",
                "1",
                "--videos",
                "1",
                "--goal-text",
                "auto",
                "--state-probe",
                str(probe_file),
            ]
        )
        == 0
    )
    res = json.loads((out / "planning.json").read_text())
    tg = res["text_goal"]
    assert set(tg["imagined_goal_pose"]["cem"]) == {"agent_px", "block_px", "angle_deg"}
    assert res["settings"]["state_term"] is False  # read, not planned on
    assert list(tg["success_rate"]) == ["cem"] and set(tg["final_distance"]) == {"cem"}
    assert tg["num_goals"] == res["num_goals"] == 2 and tg["sentences"] == "heldout_paraphrase"
    image_rows = json.loads((out / "planning_goals.json").read_text())["cem"]
    text_rows = json.loads((out / "planning_goals_text.json").read_text())["cem"]
    assert [(r["episode"], r["t0"], r["start_distance"]) for r in image_rows] == [
        (r["episode"], r["t0"], r["start_distance"]) for r in text_rows
    ]  # the same starts
    assert [(g["episode"], g["t0"]) for g in tg["goals"]] == [(r["episode"], r["t0"]) for r in image_rows]
    assert all(parse_sentence(g["sentence"]) is not None for g in tg["goals"])
    assert all(r["imagined_goal_mse"] >= 0 and r["imagine_seconds"] > 0 for r in text_rows)
    # the words' test beside the image test, on both runs; replaying the episode's own actions reaches the goal
    # state, and the change that made a sentence always fits it
    assert set(res["sentence_success_rate"]) == {"cem", "random", "dataset_actions"}
    assert res["sentence_success_rate"]["dataset_actions"] == 1.0 and set(tg["sentence_success_rate"]) == {"cem"}
    assert all(isinstance(r["sentence_success"], bool) for r in text_rows + image_rows)
    printed = capsys.readouterr().out
    assert "goal's words fit" in printed and "cem (text goal)" in printed and " words " in printed  # per goal too
    assert any("_text_" in v for v in res["videos"])


# ---- MPC toward an imagined goal, and the evaluation's text-goal mode (stand-in encoder, hand-made run) --------
class StandInEncoder:
    """(B, 96, 96, 3) uint8 -> (B, 16, 64): a fixed random linear map of 4×4 patches, LayerNorm-ed."""

    def __init__(self):
        self.w = torch.randn(48, 64, generator=torch.Generator().manual_seed(0)) / 7

    def encode(self, frames):
        x = torch.as_tensor(np.asarray(frames)).float() / 255
        x = x.reshape(-1, 4, 4, 6, 4, 4, 6, 3).mean((3, 6)).permute(0, 1, 3, 2, 4, 5).reshape(-1, 16, 48)
        return torch.nn.functional.layer_norm(x @ self.w, (64,))


@pytest.fixture(scope="module")
def episodes(tmp_path_factory):
    out = tmp_path_factory.mktemp("pusht_eps")
    generate_pusht(GenerateConfig(out_dir=str(out), num_episodes=3, max_steps=40, seed=3), show_progress=False)
    return out


def test_mpc_policy_plans_toward_its_imagined_goal(episodes, encoder):
    from latentwm.envs.pusht import PushTEnv

    model = _model()
    codec = ActionCodec.from_stats(STATS, FS, model.cfg.action_dim)
    observer = LatentObserver(StandInEncoder().encode, {"mean": [0.0] * 64, "std": [1.0] * 64, "count": 1})
    g = sample_goals(sorted(episodes.glob("*.npz")), 1, 10, seed=0)[0]
    text = embed_sentences(encoder, [goal_sentence(g.start_state, g.goal_state, 0, 0)])[0]
    env = PushTEnv(image_size=96)
    try:
        goals = []
        for _ in range(2):
            policy = MPCPolicy(model, observer, codec, CFG, MPCOptions(planner="cem", context=2))
            r = run_episode(
                env,
                policy,
                EpisodeGoal(g.start_state, g.goal_state, g.goal_frame, text=text),
                2,
                FS,
                seed=0,
                stop_on_success=False,
            )
            assert r["plans"] == 2 and policy.imagined.shape == (CFG.horizon, 16, 64)
            assert torch.equal(policy.goal, policy.imagined[-1]) and policy.imagine_seconds > 0
            goals.append(policy.goal)
        assert torch.equal(goals[0], goals[1])  # seeded by the episode's seed
        image = MPCPolicy(model, observer, codec, CFG, MPCOptions(planner="cem", context=2))
        run_episode(env, image, EpisodeGoal(g.start_state, g.goal_state, g.goal_frame), 1, FS, seed=0)
        assert image.imagined is None and not torch.equal(image.goal, goals[0])
    finally:
        env.close()


def test_text_goal_probes_read_their_goals_from_the_imagination_not_the_goal_state(episodes, encoder):
    """With a text goal the policy knows the sentence only: the proprio and state terms take their goals from the
    imagined goal, never from the true goal state or proprio that run_episode also hands over."""
    from latentwm.envs.pusht import PushTEnv, proprio_from_state
    from latentwm.planning.proprio import ProprioProbe, probe_features
    from latentwm.planning.state_probe import StateGoal, StateProbe

    model = _model()
    feat = probe_features(model, torch.zeros(1, model.layout.tokens_per_frame, model.cfg.width)).shape[-1]
    torch.manual_seed(1)
    probe = ProprioProbe(feat, (0, 1), [250.0, 250.0, 0.0, 0.0], [100.0, 100.0, 1.0, 1.0], hidden=8)
    state_probe = StateProbe(16, 64)
    cfg = dataclasses.replace(CFG, proprio_weight=1.0, state_weight=1.0)
    codec = ActionCodec.from_stats(STATS, FS, model.cfg.action_dim)
    observer = LatentObserver(StandInEncoder().encode, {"mean": [0.0] * 64, "std": [1.0] * 64, "count": 1})
    g = sample_goals(sorted(episodes.glob("*.npz")), 1, 10, seed=0)[0]
    policy = MPCPolicy(
        model, observer, codec, cfg, MPCOptions(planner="cem", context=2), proprio_probe=probe, state_probe=state_probe
    )
    env = PushTEnv(image_size=96)
    try:
        run_episode(
            env,
            policy,
            EpisodeGoal(
                g.start_state,
                g.goal_state,
                g.goal_frame,
                proprio=proprio_from_state(g.goal_state),
                text=embed_sentences(encoder, ["push"])[0],
            ),
            1,
            FS,
            seed=0,
        )
    finally:
        env.close()
    torch.testing.assert_close(policy.state.goal, StateGoal.from_latents(state_probe, policy.imagined[-1]).goal)
    assert not torch.allclose(policy.state.goal, StateGoal.from_state(state_probe, g.goal_state).goal)
    assert policy.proprio.goal.shape == (2,)
    assert not torch.allclose(policy.proprio.goal, probe.normalize(proprio_from_state(g.goal_state)))


def _text_run(tmp_path) -> WorldModelRun:
    """The tiny text model as a planning run on the fixture's episodes (no cache: goals come from the episodes)."""
    exp = get_preset("tiny").replace(
        data__cache_dir=str(tmp_path / "no-cache"), data__eval_fraction=0.5, model__text_dim=E
    )
    stats = {
        "latents": {"mean": [0.0] * 64, "std": [1.0] * 64, "count": 1},
        "datasets": {"pusht": {"dataset": "pusht", "actions": STATS, "proprio": None}},
    }
    return WorldModelRun(_model(), exp, stats, FS)


def test_evaluation_text_goal_mode_scores_the_same_starts(episodes, encoder, tmp_path):
    wm = _text_run(tmp_path)
    opts = PlanningOptions(
        planners=("cem", "mppi"), baselines=("random",), max_replans=2, num_videos=0, goal_text="auto"
    )
    res = evaluate_planning(
        wm,
        episodes,
        CFG,
        options=opts,
        models=PlanningModels(encoder=StandInEncoder(), text_encoder=encoder),
        log=lambda *_: None,
        out_dir=tmp_path / "out",
    )
    tg = res["text_goal"]
    for k in (
        "success_rate",
        "final_distance",
        "block_pos_diff",
        "agent_pos_diff",
        "angle_diff_deg",
        "seconds_per_plan",
        "imagined_goal_mse",
    ):
        assert list(tg[k]) == ["cem", "mppi"], k
    assert list(res["success_rate"]) == ["cem", "mppi", "random"] and tg["num_goals"] == res["num_goals"] == 2
    assert tg["text_encoder"] == encoder.label and tg["text_guidance"] == CFG.text_guidance
    rows = json.loads((tmp_path / "out" / "planning_goals.json").read_text())
    assert [g["t0"] for g in tg["goals"]] == [r["t0"] for r in rows["cem"]]
    both = text_goal_comparison(res)
    assert both["methods"] == ["cem", "mppi"] and both["text"]["success_rate"] == tg["success_rate"]
    assert both["image"]["final_distance"] == {m: res["final_distance"][m] for m in ("cem", "mppi")}
    assert text_goal_comparison({"success_rate": {}}) is None
    assert "imagined_goal_pose" not in tg  # no state probe: no pose claimed
    table = planning_table(res)
    assert "| cem (text goal) |" in table and "| mppi (text goal) |" in table and "| random |" in table
    fixed = evaluate_planning(
        wm,
        episodes,
        CFG,
        options=PlanningOptions(
            planners=("cem",), baselines=(), max_replans=1, num_videos=0, goal_text="push the T block to the left"
        ),
        models=PlanningModels(encoder=StandInEncoder(), text_encoder=encoder),
        log=lambda *_: None,
    )
    assert {g["sentence"] for g in fixed["text_goal"]["goals"]} == {"push the T block to the left"}
    assert fixed["text_goal"]["sentences"] == "given"
    with pytest.raises(ValueError, match="goal_text needs at least one planner"):
        PlanningOptions(planners=(), goal_text="auto")
    with pytest.raises(ConfigError, match="plan.goal_text"):
        PlanRunConfig(planners=(), goal_text="auto")
    no_text = WorldModelRun(_model(text_dim=0), wm.exp.replace(model__text_dim=0), wm.data_stats, FS)
    with pytest.raises(ConfigError, match="not trained with text"):
        evaluate_planning(
            no_text,
            episodes,
            CFG,
            options=opts,
            models=PlanningModels(encoder=StandInEncoder(), text_encoder=encoder),
            log=lambda *_: None,
        )


def test_imagined_goals_are_scored_by_pose_with_a_state_probe(episodes, encoder, tmp_path):
    """With a state probe, each imagined goal's pose (probe reading) is compared with the true goal state, beside
    the exact start-to-goal gap and the probe's reading of the true goal frame (its own floor)."""
    from latentwm.planning.state_probe import StateProbe, pose_gap

    wm = _text_run(tmp_path)
    m = wm.exp.model
    torch.manual_seed(0)
    probe = StateProbe(m.num_latent_tokens, m.latent_dim, 4, 16, torch.full((4,), 256.0), torch.full((4,), 100.0))
    opts = PlanningOptions(planners=("cem",), baselines=(), max_replans=1, num_videos=0, goal_text="auto")
    res = evaluate_planning(
        wm,
        episodes,
        CFG,
        options=opts,
        models=PlanningModels(encoder=StandInEncoder(), text_encoder=encoder, state_probe=probe),
        log=lambda *_: None,
        out_dir=tmp_path / "out",
    )
    tg = res["text_goal"]
    for k in ("imagined_goal_pose", "probe_goal_pose", "start_goal_pose"):
        assert set(tg[k]["cem"]) == {"agent_px", "block_px", "angle_deg"} and tg[k]["cem"]["block_px"] >= 0, k
    rows = json.loads((tmp_path / "out" / "planning_goals.json").read_text())["cem"]
    goals = {g["goal"]: g for g in tg["goals"]}
    exact = (
        [pose_gap(torch.tensor(r["start_state"][:5]), torch.tensor(r["goal_state"][:5])).tolist() for r in rows]
        if "start_state" in rows[0]
        else None
    )
    if exact is not None:  # the start's gap is the simulator's, not a probe reading
        assert tg["start_goal_pose"]["cem"]["block_px"] == pytest.approx(np.mean([e[1] for e in exact]))
    assert len(goals) == tg["num_goals"]
    both = text_goal_comparison(res)
    assert both["imagined_goal_pose"] == tg["imagined_goal_pose"]
    assert "Pose of the imagined goal (state probe) to the true goal: block" in planning_table(res)
