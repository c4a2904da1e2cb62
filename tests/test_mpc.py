"""The MPC loop against the real Push-T env: action conversion, goal protocol, episode runner, evaluation."""

import json

import numpy as np
import pytest
import torch

from latentwm.config import CEMConfig, GenerateConfig, GradientConfig, MPPIConfig, PlanConfig, get_preset
from latentwm.data.clips import ClipOptions, LatentClipDataset
from latentwm.data.episodes import DatasetStats, compute_norm_stats, load_episode
from latentwm.data.sources.pusht import generate_pusht
from latentwm.model.dynamics import DynamicsModel
from latentwm.planning.evaluate import (
    PlanningModels,
    PlanningOptions,
    WorldModelRun,
    evaluate_planning,
    planning_table,
    sample_goals,
)
from latentwm.planning.mpc import (
    ActionCodec,
    EpisodeGoal,
    LatentObserver,
    MPCOptions,
    MPCPolicy,
    ReplayPolicy,
    run_episode,
)

FS = 5
STATS = {"mean": [250.0, 260.0], "std": [100.0, 110.0], "count": 1}


@pytest.fixture(scope="module")
def episodes(tmp_path_factory):
    out = tmp_path_factory.mktemp("pusht")
    generate_pusht(GenerateConfig(out_dir=str(out), num_episodes=3, max_steps=40, seed=3), show_progress=False)
    return out


class StandInEncoder:
    """A fixed random linear "encoder" over a 4×4 grid of 24×24 patches (pooled 6× to 4×4×3 = 48 values each):
    (B, 96, 96, 3) uint8 -> (B, 16, 64), LayerNorm-ed like the real one."""

    def __init__(self, dim: int = 64):
        self.w = torch.randn(48, dim, generator=torch.Generator().manual_seed(0)) / 7

    def encode(self, frames):
        x = torch.as_tensor(np.asarray(frames)).float() / 255  # (B, 96, 96, 3): 96 = 4 patches × 4 cells × 6 px
        x = x.reshape(-1, 4, 4, 6, 4, 4, 6, 3).mean((3, 6))  # (B, gy, cy, gx, cx, 3)
        x = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, 16, 48)
        return torch.nn.functional.layer_norm(x @ self.w, (self.w.shape[1],))


def _model():
    torch.manual_seed(0)
    return DynamicsModel(get_preset("tiny").model).eval().requires_grad_(False)


CFG = PlanConfig(
    horizon=3,
    exec_steps=2,
    goal_offset=10,
    num_goals=2,
    cem=CEMConfig(population=8, elites=2, iterations=2),
    mppi=MPPIConfig(population=8, iterations=2),
    gradient=GradientConfig(steps=2),
)


def test_codec_matches_the_clip_recipe_and_round_trips():
    codec = ActionCodec.from_stats(STATS, FS, 12, repeat=False)
    env = np.random.default_rng(0).uniform(0, 512, (3 * FS, 2))
    model = codec.to_model(env)
    assert model.shape == (3, 12) and torch.all(model[:, 10:] == 0)
    manual = ((env - np.array(STATS["mean"])) / np.array(STATS["std"])).reshape(3, 10)  # clips.py: normalize, concat
    np.testing.assert_allclose(model[:, :10].numpy(), manual, atol=1e-5)
    np.testing.assert_allclose(codec.to_env(model), env, atol=1e-3)
    low, high = codec.bounds()
    assert torch.all(low[10:] == 0) and torch.all(high[10:] == 0) and torch.all(high[:10] > low[:10])
    held = ActionCodec.from_stats(STATS, FS, 12)  # repeat=True: one env action per model step, held
    a = torch.tensor([[0.5, -1.0], [2.0, 0.0]])
    x = held.expand(a)
    assert x.shape == (2, 12) and torch.equal(x[0, :10], torch.tensor([0.5, -1.0] * 5)) and torch.all(x[:, 10:] == 0)
    np.testing.assert_allclose(held.to_env(x)[:5], np.tile(held.to_env(x)[:1], (5, 1)))
    stay = held.to_env(held.expand(held.hold(np.array([100.0, 300.0]), 2)))
    np.testing.assert_allclose(stay, np.tile([100.0, 300.0], (10, 1)), atol=1e-3)


def test_codec_agrees_with_make_clip(episodes, tmp_path):
    """Actions built from env actions are exactly the training clips' actions (normalize, concat, pad)."""
    from latentwm.data.latent_cache import LatentCacheWriter, write_stats

    ep = load_episode(episodes / "episode_000000.npz")
    with LatentCacheWriter(tmp_path / "cache", encoder_label="random:test") as w:
        w.add_episode(ep, "main", np.zeros((len(ep), 16, 64), np.float16))
    write_stats(tmp_path / "cache")
    ds = LatentClipDataset(
        tmp_path / "cache", 4, split="all", options=ClipOptions(frame_skip=FS, action_dim=12, normalize=True)
    )
    stats = DatasetStats("pusht", actions=compute_norm_stats([ep.actions]))
    codec = ActionCodec.from_stats(ds.ds_stats["pusht"].actions, FS, 12, repeat=False)
    np.testing.assert_allclose(ds.ds_stats["pusht"].actions.mean, stats.actions.mean)
    clip = ds.make_clip(0, 7)
    mine = codec.to_model(ep.actions[7 : 7 + 3 * FS])  # padded to the model's width (collate pads clips)
    torch.testing.assert_close(mine[:, :10], clip.actions[:3], atol=1e-5, rtol=0)
    assert torch.all(mine[:, 10:] == 0)


def test_goal_protocol_resets_the_env_to_the_saved_frame(episodes):
    from latentwm.envs.pusht import PushTEnv

    goals = sample_goals(sorted(episodes.glob("*.npz")), 3, 10, seed=1)
    env = PushTEnv(image_size=96)
    try:
        for g in goals:
            frame, _ = env.reset(state=g.start_state)
            np.testing.assert_array_equal(frame, g.start_frame)
            r = run_episode(env, ReplayPolicy(g.actions), EpisodeGoal(g.start_state, g.goal_state, g.goal_frame), 3, FS)
            assert r["env_steps"] == 10 and r["plans"] == 0  # the replay runs once, then stops
            assert r["final_distance"] < 5.0 and r["success"]  # the dataset's own actions reproduce the goal
    finally:
        env.close()
    assert [(g.episode, g.t0) for g in goals] == [
        (g.episode, g.t0) for g in sample_goals(sorted(episodes.glob("*.npz")), 3, 10, seed=1)
    ]


def test_mpc_loop_runs_end_to_end(episodes):
    from latentwm.envs.pusht import PushTEnv

    model = _model()
    codec = ActionCodec.from_stats(STATS, FS, model.cfg.action_dim)
    observer = LatentObserver(StandInEncoder().encode, {"mean": [0.0] * 64, "std": [1.0] * 64, "count": 1})
    g = sample_goals(sorted(episodes.glob("*.npz")), 1, 10, seed=0)[0]
    env = PushTEnv(image_size=96)
    try:
        for planner in ("cem", "mppi", "gradient"):
            policy = MPCPolicy(model, observer, codec, CFG, MPCOptions(planner=planner, context=2))
            r = run_episode(
                env,
                policy,
                EpisodeGoal(g.start_state, g.goal_state, g.goal_frame),
                2,
                FS,
                seed=0,
                record=True,
                stop_on_success=False,
            )
            assert r["plans"] == 2 and r["env_steps"] == 2 * CFG.exec_steps * FS
            assert r["frames"].shape == (r["env_steps"] + 1, 96, 96, 3)
            assert set(r) >= {"success", "final_distance", "seconds_per_plan", "success_step", "start_distance"}
            assert r["seconds_per_plan"] > 0 and np.isfinite(r["final_distance"])
            assert len(policy.latents) == 1 + CFG.exec_steps and len(policy.actions) == 2 * CFG.exec_steps
            for res in policy.results:  # plans stay inside the bounds
                assert torch.all(res.actions >= policy.low - 1e-6) and torch.all(res.actions <= policy.high + 1e-6)
    finally:
        env.close()


def test_evaluate_planning_is_deterministic_and_complete(episodes, tmp_path):
    model = _model()
    exp = get_preset("tiny").replace(data__cache_dir=str(tmp_path / "no-cache"), data__eval_fraction=0.5)
    stats = {
        "latents": {"mean": [0.0] * 64, "std": [1.0] * 64, "count": 1},
        "datasets": {"pusht": {"dataset": "pusht", "actions": STATS, "proprio": None}},
    }
    run = WorldModelRun(model, exp, stats, FS)
    opts = PlanningOptions(planners=("cem", "gradient"), max_replans=2, num_videos=1)
    kw = dict(models=PlanningModels(encoder=StandInEncoder()), log=lambda *_: None)
    a = evaluate_planning(run, episodes, CFG, out_dir=tmp_path / "a", options=opts, **kw)
    b = evaluate_planning(
        run,
        episodes,
        CFG,
        out_dir=tmp_path / "b",
        options=PlanningOptions(planners=("cem", "gradient"), max_replans=2, num_videos=0),
        **kw,
    )
    methods = ["cem", "gradient", "random", "dataset_actions"]
    assert list(a["success_rate"]) == methods and list(a["final_distance"]) == methods
    assert list(a["seconds_per_plan"]) == ["cem", "gradient"] and a["num_goals"] == 2
    assert a["final_distance"] == b["final_distance"] and a["success_rate"] == b["success_rate"]
    assert a["success_rate"]["dataset_actions"] == 1.0
    assert a["agent_pos_diff"]["dataset_actions"] < 1 and a["block_pos_diff"]["dataset_actions"] < 1
    assert 0 <= a["block_static_goals"] <= 1 and set(a["angle_diff_deg"]) == set(methods)
    first = [v for v in a["videos"] if v.startswith("videos/goal00_")]  # every method on the first goal; beyond
    assert len(first) == 4 and all(v.endswith("_success.gif") for v in set(a["videos"]) - set(first))  # successes
    assert all((tmp_path / "a" / v).stat().st_size > 0 for v in a["videos"])
    assert json.loads((tmp_path / "a" / "planning.json").read_text())["num_goals"] == 2
    table = planning_table(a)
    assert "| cem |" in table and "dataset_actions" in table and "agent px" in table
    with pytest.raises(ValueError, match="unknown methods"):
        evaluate_planning(run, episodes, CFG, options=PlanningOptions(planners=("beam",)), **kw)
