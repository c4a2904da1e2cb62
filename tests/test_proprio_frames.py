"""Proprio channels on every token (model.proprio_dim) and actions relative to the agent (data.relative_actions):
the data recipe, the model's frame width, the planner's codec, observer and cost, and a planning episode."""

import dataclasses

import numpy as np
import pytest
import torch

from latentwm.config import CEMConfig, ConfigError, GenerateConfig, PlanConfig, get_preset
from latentwm.data.clip_sets import make_clip_datasets
from latentwm.data.clips import ClipOptions, LatentClipDataset
from latentwm.data.latent_cache import Encoding, encode_to_cache
from latentwm.data.proprio import attach_proprio, latents_only, relative_action_stats, split_proprio
from latentwm.data.sources.pusht import generate_pusht, load_pusht
from latentwm.envs.pusht import PushTEnv, proprio_from_state
from latentwm.model.dynamics import DynamicsModel
from latentwm.planning.cost import GoalCost, LatentGoalObjective, latent_cost
from latentwm.planning.evaluate import sample_goals
from latentwm.planning.mpc import (
    ActionCodec,
    EpisodeGoal,
    LatentObserver,
    MPCOptions,
    MPCPolicy,
    RandomPolicy,
    run_episode,
)
from latentwm.rollout import Sampling

W = torch.randn(48, 64, generator=torch.Generator().manual_seed(0)) / 7


def encode(frames):
    """A fixed random linear stand-in encoder: (B, 96, 96, 3) uint8 -> (B, 16, 64) over a 4×4 grid."""
    x = torch.as_tensor(np.asarray(frames)).float() / 255
    x = x.reshape(-1, 4, 4, 6, 4, 4, 6, 3).mean((3, 6)).permute(0, 1, 3, 2, 4, 5).reshape(-1, 16, 48)
    return torch.nn.functional.layer_norm(x @ W, (64,))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two folders of the same 4 episodes' physics: every env step rendered, and every 5th; a cache of each."""
    root = tmp_path_factory.mktemp("proprio")
    for name, k in (("full", 1), ("sparse", 5)):
        generate_pusht(
            GenerateConfig(out_dir=str(root / name), num_episodes=4, max_steps=60, seed=2, render_every=k, workers=1),
            show_progress=False,
        )
        encode_to_cache(
            load_pusht(root / name),
            Encoding(lambda f: encode(f).numpy(), "stand-in", image_size=96),
            root / f"{name}_cache",
            show_progress=False,
        )
    return root


def _exp(root, name="sparse", **kw):
    return get_preset("tiny").replace(
        data__cache_dir=str(root / f"{name}_cache"), data__eval_fraction=0.25, model__text_dim=0, data__clip_len=4, **kw
    )


def test_attach_and_split_round_trip():
    lat, prop = torch.randn(2, 3, 16, 64), torch.randn(2, 3, 4)
    x = attach_proprio(lat, prop)
    assert x.shape == (2, 3, 16, 68)
    assert torch.equal(x[..., 5, 64:], prop) and torch.equal(latents_only(x, 4), lat)
    back, p = split_proprio(x, 4)
    assert torch.equal(back, lat) and torch.allclose(p, prop)
    assert split_proprio(lat, 0) == (lat, None)


def test_clips_carry_proprio_channels_and_relative_actions(data):
    """Every token's last 4 channels are the frame's normalized proprio; actions are the commanded targets minus
    the agent's position at the model step's first frame, normalized with the statistics of those offsets."""
    ds = LatentClipDataset(
        data / "sparse_cache",
        4,
        split="all",
        options=ClipOptions(frame_skip=5, proprio_frames=True, relative_actions=True),
    )
    plain = LatentClipDataset(data / "sparse_cache", 4, split="all", options=ClipOptions(frame_skip=5))
    raw = LatentClipDataset(data / "sparse_cache", 4, split="all", options=ClipOptions(frame_skip=5, normalize=False))
    e, s = ds.grid[1]
    c, p, r = ds.make_clip(e, s), plain.make_clip(e, s), raw.make_clip(e, s)
    assert c.latents.shape == (4, 16, 68)
    torch.testing.assert_close(c.latents[..., :64], p.latents)
    torch.testing.assert_close(c.latents[..., 64:], p.proprio[:, None].expand(4, 16, 4))
    stats = ds.action_stats["pusht"]
    want = (r.actions.numpy().reshape(4, 5, 2) - r.proprio.numpy()[:, None, :2] - stats.mean) / stats.std
    np.testing.assert_allclose(c.actions.numpy(), want.reshape(4, 10), rtol=1e-4, atol=1e-5)
    assert abs(float(stats.mean[0])) < 30 and 1 < float(stats.std[0]) < 200  # offsets, not absolute targets
    # a cache rendered at every step gives the same relative actions at phase 0 (its statistics: the same recipe)
    full = LatentClipDataset(
        data / "full_cache",
        4,
        split="all",
        options=ClipOptions(frame_skip=5, normalize=False, eval_stride=1, relative_actions=True),
    )
    fe = next(i for i, en in enumerate(full.cache.entries) if en["episode_id"] == raw.cache.entries[e]["episode_id"])
    np.testing.assert_allclose(
        full.make_clip(fe, 5 * s).actions.numpy(), (want * stats.std + stats.mean).reshape(4, 10), rtol=1e-4, atol=1e-3
    )
    fs = relative_action_stats(full.cache, "pusht", stride=5)
    np.testing.assert_allclose(fs.std, stats.std, rtol=0.5)  # same distribution, other phases


def test_training_sets_and_checkpoint_statistics(data):
    exp = _exp(data, model__proprio_dim=4, data__relative_actions=True)
    train, held, extra = make_clip_datasets(exp)
    assert train[0].latents.shape[-1] == 68 and held[0].latents.shape[-1] == 68
    rec = extra["data_stats"]["datasets"]["pusht"]["actions"]
    np.testing.assert_allclose(rec["mean"], train.action_stats["pusht"].mean)  # what the planner's codec reads
    from latentwm.planning.evaluate import WorldModelRun

    mem = WorldModelRun.from_cache(None, exp).data_stats["datasets"]["pusht"]["actions"]  # the demo's path
    np.testing.assert_allclose(mem["std"], rec["std"])
    model = DynamicsModel(exp.model)
    x = torch.stack([train[i].latents for i in range(2)])
    acts = torch.stack([train[i].actions for i in range(2)])
    assert model(x, torch.rand(2, 4), torch.full((2, 4), 0.5), acts).shape == x.shape


def test_bad_proprio_settings_are_refused_with_the_fix(data):
    with pytest.raises(ConfigError, match="--model.proprio-dim 4"):
        make_clip_datasets(_exp(data, model__proprio_dim=3))
    with pytest.raises(ConfigError, match="data.mixture"):
        make_clip_datasets(_exp(data, model__proprio_dim=4, data__mixture=f"a={data / 'sparse_cache'}:1"))
    model = DynamicsModel(_exp(data, model__proprio_dim=4).model)
    with pytest.raises(ValueError, match="proprio_dim 4"):
        model(torch.randn(1, 2, 16, 64), 1.0, 0.5)


def test_relative_codec_round_trips_and_holds_still():
    stats = {"mean": [0.5, -0.5], "std": [50.0, 50.0], "count": 1}
    codec = ActionCodec.from_stats(stats, 5, 10, relative=True)
    np.testing.assert_allclose(codec.to_env(codec.expand(codec.hold(np.array([300.0, 100.0]), 1))), 0.0, atol=1e-4)
    offsets = np.array([[10.0, -20.0]] * 5)
    np.testing.assert_allclose(codec.to_env(codec.to_model(offsets)), offsets, atol=1e-3)
    np.testing.assert_allclose(codec.absolute(offsets, [500.0, 100.0, 3.0, 4.0]), [[510.0, 80.0]] * 5)
    np.testing.assert_allclose(codec.absolute(offsets, [505.0, 10.0]), [[512.0, 0.0]] * 5)  # clipped to the box
    low, high = codec.bounds()
    assert torch.all(low < 0) and torch.all(high > 0)  # offsets either way, around 0
    absolute = ActionCodec.from_stats(stats, 5, 10)
    assert np.array_equal(absolute.absolute(offsets, [500.0, 100.0]), offsets)


def test_relative_actions_are_anchored_at_each_model_step(data):
    """A random policy with a relative codec: each model step's commanded targets are its offsets plus the agent's
    position observed at that step's first frame (the env sees absolute targets)."""
    codec = ActionCodec.from_stats({"mean": [0.0, 0.0], "std": [20.0, 20.0], "count": 1}, 5, 10, relative=True)
    cfg = PlanConfig(horizon=2, exec_steps=2, init_std=1.0)
    goal = sample_goals(sorted((data / "full").glob("*.npz")), 1, 10, seed=0)[0]

    class Spy(PushTEnv):
        sent: list = []

        def step(self, action, render=True):
            self.sent.append((np.asarray(action, float).copy(), self.state()[:2].copy()))
            return super().step(action, render)

    env, policy = Spy(image_size=96), RandomPolicy(codec, cfg)
    try:
        run_episode(
            env,
            policy,
            EpisodeGoal(goal.start_state, goal.goal_state, goal.goal_frame),
            1,
            5,
            seed=3,
            stop_on_success=False,
        )
    finally:
        env.close()
    assert len(Spy.sent) == 10
    for step in range(2):
        sent = np.stack([a for a, _ in Spy.sent[5 * step : 5 * step + 5]])
        anchor = Spy.sent[5 * step][1]
        offsets = sent - anchor
        assert np.allclose(offsets, offsets[0])  # one held offset per model step, from the step's first position
        assert np.abs(offsets[0]).max() < 200


def test_observer_attaches_normalized_proprio():
    stats = {"mean": [100.0, 200.0, 0.0, 0.0], "std": [10.0, 20.0, 1.0, 1.0], "count": 1}
    obs = LatentObserver(encode, None, proprio_stats=stats)
    frames = np.zeros((2, 96, 96, 3), np.uint8)
    x = obs(frames, np.array([[110.0, 200.0, 1.0, 0.0]] * 2))
    assert x.shape == (2, 16, 68)
    torch.testing.assert_close(x[0, 3, 64:], torch.tensor([1.0, 0.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match="proprio of each of the 2 frames"):
        obs(frames)


def _proprio_model():
    torch.manual_seed(0)
    m = DynamicsModel(dataclasses.replace(get_preset("tiny").model, proprio_dim=4, text_dim=0))
    with torch.no_grad():  # leave the zero init: predictions must depend on the frames and actions
        for p in m.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return m.eval().requires_grad_(False)


def test_cost_reads_the_predicted_proprio():
    """Cost = latent cost on the encoder channels + proprio_weight · MSE(mean of the predicted tokens' proprio
    channels, the goal's proprio); the term moves the choice toward the candidate whose predicted proprio matches."""
    m = _proprio_model()
    ctx = torch.randn(1, 2, 16, 68)
    goal = torch.randn(16, 68)
    cands = torch.randn(5, 3, 10)
    obj = LatentGoalObjective(m, ctx, goal, sampling=Sampling(1), cost=GoalCost(proprio_weight=2.0), seed=3)
    pred = obj.predict(cands)
    want = latent_cost(pred[..., :64], goal[..., :64]) + 2.0 * (
        pred[:, -1, :, 64:].mean(-2) - goal[:, 64:].mean(0)
    ).pow(2).mean(-1)
    torch.testing.assert_close(obj(cands), want)
    target = pred[3, -1, :, 64:].mean(0)
    pulled = LatentGoalObjective(
        m,
        ctx,
        torch.cat([goal[:, :64], target.expand(16, 4)], -1),
        sampling=Sampling(1),
        cost=GoalCost(proprio_weight=1e4),
        seed=3,
    )
    assert int(pulled(cands).argmin()) == 3
    alone = LatentGoalObjective(
        m, ctx, goal, sampling=Sampling(1), cost=GoalCost(visual_weight=0.0, proprio_weight=1.0), seed=3
    )
    torch.testing.assert_close(alone(cands), (pred[:, -1, :, 64:].mean(-2) - goal[:, 64:].mean(0)).pow(2).mean(-1))


def test_mpc_with_proprio_channels_and_relative_actions_runs(data):
    m = _proprio_model()
    codec = ActionCodec.from_stats({"mean": [0.0, 0.0], "std": [20.0, 20.0], "count": 1}, 5, 10, relative=True)
    stats = {"mean": [250.0, 250.0, 0.0, 0.0], "std": [100.0, 100.0, 50.0, 50.0], "count": 1}
    observer = LatentObserver(encode, None, proprio_stats=stats)
    cfg = PlanConfig(horizon=2, exec_steps=1, goal_offset=10, cem=CEMConfig(population=6, elites=2, iterations=2))
    g = sample_goals(sorted((data / "full").glob("*.npz")), 1, 10, seed=0)[0]
    env = PushTEnv(image_size=96)
    try:
        policy = MPCPolicy(m, observer, codec, cfg, MPCOptions(planner="cem", context=2))
        r = run_episode(
            env,
            policy,
            EpisodeGoal(g.start_state, g.goal_state, g.goal_frame, proprio=proprio_from_state(g.goal_state)),
            2,
            5,
            seed=0,
            stop_on_success=False,
        )
        assert r["plans"] == 2 and np.isfinite(r["final_distance"])
        assert policy.goal.shape == (16, 68) and all(z.shape == (16, 68) for z in policy.latents)
        want = torch.from_numpy(
            ((proprio_from_state(g.goal_state) - np.array(stats["mean"])) / np.array(stats["std"])).astype(np.float32)
        )
        torch.testing.assert_close(policy.goal[0, 64:], want)
        with pytest.raises(ValueError, match="goal's proprio"):
            run_episode(
                env,
                MPCPolicy(m, observer, codec, cfg, MPCOptions(planner="cem")),
                EpisodeGoal(g.start_state, g.goal_state, g.goal_frame),
                1,
                5,
            )
    finally:
        env.close()


def test_rl_agents_act_on_proprio_frames_with_relative_actions():
    """The RL evaluation loop hands each frame's proprio to the observer and anchors relative actions at the
    agent's position, as the planner's loop does."""
    from latentwm.rl.evaluate import HeadsPolicy, _Random, run_agent_episode
    from latentwm.rl.heads import AgentHeads

    m = _proprio_model()
    codec = ActionCodec.from_stats(
        {"mean": [0.0, 0.0], "std": [20.0, 20.0], "count": 1}, 5, 10, relative=True, repeat=False
    )
    low, high = codec.bounds()
    heads = AgentHeads(m.layout.registers * m.cfg.width, 10, low, high, hidden=16)
    stats = {"mean": [250.0, 250.0, 0.0, 0.0], "std": [100.0, 100.0, 50.0, 50.0], "count": 1}
    observer = LatentObserver(encode, None, proprio_stats=stats)
    env = PushTEnv(image_size=96)
    try:
        agent = HeadsPolicy(m, heads, observer, codec, context=2, name="bc")
        for pol in (agent, _Random(codec, seed=0)):
            r = run_agent_episode(env, pol, seed=3, max_model_steps=2, frame_skip=5)
            assert np.isfinite(r["return"]) and 0 <= r["max_coverage"] <= 1
        assert len(agent.latents) == 2 and all(z.shape == (16, 68) for z in agent.latents)  # reset + 1 boundary
    finally:
        env.close()
