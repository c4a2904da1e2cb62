"""The Push-T state probe on encoder latents: training, persistence, pose errors of predicted frames, and its pose
term in the planning cost (objective, MPC policy, evaluation session)."""

import math

import numpy as np
import pytest
import torch

from latentwm.config import CEMConfig, ConfigError, PlanConfig, ProbeConfig, get_preset
from latentwm.data.latent_cache import LatentCacheWriter, StepArrays, write_stats
from latentwm.model.dynamics import DynamicsModel
from latentwm.planning import LatentGoalObjective, latent_cost
from latentwm.planning.cost import GoalCost
from latentwm.planning.state_probe import (
    StateGoal,
    StateProbe,
    pose_errors,
    pose_errors_vs_states,
    pose_gap,
    train_state_probe,
)

N, D = 16, 64  # the tiny preset's latent grid (4 × 4) and width


def _pose_features(states: np.ndarray) -> np.ndarray:
    """(T, 7) -> (T, 6): what the toy latents encode (positions scaled to ~[-1, 1], the angle as cos, sin)."""
    return np.concatenate([states[:, :4] / 256 - 1, np.cos(states[:, 4:5]), np.sin(states[:, 4:5])], 1)


def _write_cache(path, with_states: bool = True, episodes: int = 8, T: int = 40):
    """Episodes whose latents are a fixed random linear map of the pose (+ a little noise); poses uniform per frame
    (the probe reads one frame at a time; uniform poses make held-out frames interpolation, not extrapolation)."""
    rng = np.random.default_rng(0)
    W = rng.normal(size=(6, N * D)) / 2
    with LatentCacheWriter(path, encoder_label="random:test") as w:
        for e in range(episodes):
            states = rng.uniform([50, 50, 50, 50, 0, 0, 0], [450, 450, 450, 450, 2 * math.pi, 0, 0], (T, 7))
            lat = (_pose_features(states) @ W).reshape(T, N, D) + 0.01 * rng.normal(size=(T, N, D))
            w.add(
                f"ep{e}",
                "main",
                lat.astype(np.float32),
                dataset="pusht",
                steps=StepArrays(
                    actions=rng.uniform(0, 512, (T, 2)).astype(np.float32), states=states if with_states else None
                ),
            )
    write_stats(path)
    return path


@pytest.fixture(scope="module")
def toy_cache(tmp_path_factory):
    return _write_cache(tmp_path_factory.mktemp("statecache") / "cache")


def _exp(cache):
    return get_preset("tiny").replace(data__cache_dir=str(cache), data__eval_fraction=0.25)


def _probe(seed: int = 1) -> StateProbe:
    torch.manual_seed(seed)
    return (
        StateProbe(
            N, D, channels=4, hidden=32, pos_mean=[250.0, 260.0, 240.0, 230.0], pos_std=[100.0, 110.0, 90.0, 80.0]
        )
        .eval()
        .requires_grad_(False)
    )


def _model():
    torch.manual_seed(0)
    m = DynamicsModel(get_preset("tiny").model).eval().requires_grad_(False)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return m


def test_probe_learns_a_toy_pose_mapping_deterministically(toy_cache):
    cfg = ProbeConfig(steps=300, clips=24, hidden=64, batch_size=128, lr=3e-3)
    probe, m = train_state_probe(toy_cache, _exp(toy_cache), cfg, seed=0, log=lambda *_: None)
    assert m["heldout_frames"] > 0 and m["train_frames"] > 0
    assert m["agent_rmse_px"] < 0.3 * m["agent_baseline_rmse_px"], m
    assert m["block_rmse_px"] < 0.3 * m["block_baseline_rmse_px"], m
    assert m["angle_err_deg"] < 0.3 * m["angle_baseline_err_deg"], m
    assert probe.metrics is m
    torch.manual_seed(123)  # whatever drew from the global RNG before: the same seed gives the same probe
    again, _ = train_state_probe(toy_cache, _exp(toy_cache), cfg, seed=0, log=lambda *_: None)
    for k, v in probe.state_dict().items():
        torch.testing.assert_close(again.state_dict()[k], v, atol=0, rtol=0)


def test_a_cache_without_states_is_refused_with_its_path(tmp_path):
    cache = _write_cache(tmp_path / "nostates", with_states=False, episodes=4)
    with pytest.raises(ValueError, match="no simulator states") as e:
        train_state_probe(cache, _exp(cache), ProbeConfig(steps=1, clips=2), log=lambda *_: None)
    assert str(cache) in str(e.value)


def test_save_load_round_trip(tmp_path):
    probe = _probe()
    path = probe.save(tmp_path / "run" / "state_probe.safetensors", {"agent_rmse_px": 7.0})
    back = StateProbe.load(tmp_path / "run")  # the folder finds the file
    x = torch.randn(3, 2, N, D)
    torch.testing.assert_close(back(x), probe(x), atol=0, rtol=0)
    torch.testing.assert_close(back.predict_pose(x), probe.predict_pose(x), atol=0, rtol=0)
    assert back.metrics == {"agent_rmse_px": 7.0} and (back.channels, back.hidden, back.token_hidden) == (4, 32, 64)
    assert StateProbe.load(path).num_tokens == N
    with pytest.raises(FileNotFoundError, match="state probe"):
        StateProbe.load(tmp_path / "missing")
    with pytest.raises(ValueError, match="latents"):
        probe(torch.randn(2, N, D + 1))


def test_pose_errors_shapes_zero_on_truth_and_baselines():
    probe = _probe()
    truth = torch.randn(3, 4, N, D)
    e = pose_errors(probe, truth.clone(), truth)
    assert set(e) == {"agent_px", "block_px", "angle_deg"} and all(len(v) == 4 for v in e.values())
    assert all(x == pytest.approx(0.0, abs=1e-6) for v in e.values() for x in v)
    pred = truth + 0.5 * torch.randn_like(truth)
    copy_last = truth[:, :1]  # (B, 1, N, D), broadcast over the horizon
    e = pose_errors(probe, pred, truth, baselines={"copy_last": copy_last, "truth": truth})
    assert all(x > 0 for v in ("agent_px", "block_px", "angle_deg") for x in e[v])
    assert e["baselines"]["copy_last"]["agent_px"][0] == pytest.approx(0.0, abs=1e-6)  # h = 0 is the copied frame
    assert max(e["baselines"]["truth"]["block_px"]) == pytest.approx(0.0, abs=1e-6)
    valid = torch.ones(3, 4, dtype=torch.bool)
    valid[0] = False  # sample 0 left out
    masked = pose_errors(probe, pred, truth, valid=valid)
    assert masked["agent_px"] == pytest.approx(pose_errors(probe, pred[1:], truth[1:])["agent_px"])
    with pytest.raises(ValueError, match="B, H, N, D"):
        pose_errors(probe, truth[0], truth[0])


def test_angle_periodicity():
    probe = _probe()
    state = np.array([300.0, 200.0, 250.0, 260.0, 0.3, 1.0, -1.0])
    torch.testing.assert_close(probe.encode_state(state), probe.encode_state(state + [0, 0, 0, 0, 2 * math.pi, 0, 0]))
    lat = torch.randn(2, 3, N, D)
    pose = probe.predict_pose(lat).double()
    assert bool(((pose[..., 4] >= 0) & (pose[..., 4] < 2 * math.pi)).all())
    shifted = pose.clone()
    shifted[..., 4] += 2 * math.pi
    for s in (pose, shifted, pose - torch.tensor([0, 0, 0, 0, 4 * math.pi], dtype=torch.float64)):
        e = pose_errors_vs_states(probe, lat, s)
        assert max(max(v) for v in e.values()) == pytest.approx(0.0, abs=1e-3)
    a = torch.tensor([0, 0, 0, 0, 0.01], dtype=torch.float64)
    b = torch.tensor([3, 4, 0, 0, 2 * math.pi - 0.01], dtype=torch.float64)
    torch.testing.assert_close(pose_gap(a, b), torch.tensor([5.0, 0.0, math.degrees(0.02)], dtype=torch.float64))


def test_state_goal_prefers_the_candidate_that_matches_the_goal():
    probe = _probe()
    lat = torch.randn(5, N, D)
    cost = StateGoal.from_latents(probe, lat[2], weight=2.0)(lat)
    assert int(cost.argmin()) == 2 and float(cost[2]) == pytest.approx(0.0, abs=1e-10)
    pose = probe.predict_pose(lat[3]).double().numpy()
    goal_state = np.r_[pose, 0.0, 0.0]  # a 7-D state with the pose the probe reads from candidate 3
    cost = StateGoal.from_state(probe, goal_state)(lat)
    assert int(cost.argmin()) == 3 and float(cost[3]) == pytest.approx(0.0, abs=1e-8)
    wrapped = StateGoal.from_state(probe, goal_state + [0, 0, 0, 0, 2 * math.pi, 0, 0])(lat)
    torch.testing.assert_close(wrapped, cost)


def test_objective_state_term_and_visual_weight():
    m = _model()
    c = m.cfg
    ctx = torch.randn(1, 3, c.num_latent_tokens, c.latent_dim)
    ctx_actions = torch.randn(1, 2, c.action_dim)
    goal = torch.randn(c.num_latent_tokens, c.latent_dim)
    cands = torch.randn(6, 3, c.action_dim)
    probe = _probe()
    plain = LatentGoalObjective(m, ctx, goal, ctx_actions, seed=3)
    default = plain(cands)
    pred = plain.predict(cands)
    explicit = LatentGoalObjective(m, ctx, goal, ctx_actions, cost=GoalCost(visual_weight=1.0, state=None), seed=3)(
        cands
    )
    assert torch.equal(default, explicit)  # the new arguments at their defaults change nothing
    torch.testing.assert_close(default, latent_cost(pred, goal), atol=0, rtol=0)
    term = StateGoal.from_latents(probe, pred[4, -1])  # the pose of candidate 4's last predicted frame
    only = LatentGoalObjective(m, ctx, goal, ctx_actions, cost=GoalCost(visual_weight=0.0, state=term), seed=3)(cands)
    torch.testing.assert_close(only, term(pred[:, -1]))  # ranks by the pose term alone
    assert int(only.argmin()) == 4
    both = LatentGoalObjective(m, ctx, goal, ctx_actions, cost=GoalCost(visual_weight=0.5, state=term), seed=3)(cands)
    torch.testing.assert_close(both, 0.5 * latent_cost(pred, goal) + term(pred[:, -1]))
    a = torch.zeros(1, 2, c.action_dim, requires_grad=True)  # the gradient planner can descend the pose term
    LatentGoalObjective(m, ctx, goal, ctx_actions, cost=GoalCost(visual_weight=0.0, state=term), seed=3)(
        a, grad=True
    ).sum().backward()
    assert a.grad is not None and a.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="visual_weight"):
        LatentGoalObjective(m, ctx, goal, ctx_actions, cost=GoalCost(visual_weight=0.0))


def test_config_fields_are_validated():
    assert PlanConfig().visual_weight == 1.0 and PlanConfig().state_weight == 0.0
    PlanConfig(visual_weight=0.0, state_weight=1.0, proprio_weight=0.0)  # the diagnosis: the pose cost alone
    with pytest.raises(ConfigError, match="visual_weight and plan.state_weight"):
        PlanConfig(visual_weight=0.0)
    with pytest.raises(ConfigError, match="plan.state_weight"):
        PlanConfig(state_weight=-1.0)
    with pytest.raises(ConfigError, match="plan.visual_weight"):
        PlanConfig(visual_weight=float("nan"))


def test_mpc_policy_takes_the_goal_state_and_plans_on_it():
    from latentwm.planning.mpc import ActionCodec, EpisodeGoal, LatentObserver, MPCPolicy, run_episode

    m = _model()
    codec = ActionCodec.from_stats({"mean": [250.0, 260.0], "std": [100.0, 110.0], "count": 1}, 5, m.cfg.action_dim)
    observer = LatentObserver(lambda f: torch.randn(len(f), N, D, generator=torch.Generator().manual_seed(len(f))))
    cfg = PlanConfig(
        horizon=2,
        exec_steps=1,
        visual_weight=0.0,
        state_weight=1.0,
        proprio_weight=0.0,
        cem=CEMConfig(population=4, elites=2, iterations=1),
    )
    probe = _probe()
    frame = np.zeros((96, 96, 3), np.uint8)
    goal_state = np.array([300.0, 200.0, 250.0, 260.0, 0.3, 0.0, 0.0])
    policy = MPCPolicy(m, observer, codec, cfg, state_probe=probe)
    policy.reset(frame, {"goal_state": goal_state})
    torch.testing.assert_close(policy.state.goal, probe.encode_state(goal_state))
    acts = policy.act([frame], {"agent_pos": np.array([250.0, 250.0])})
    assert acts.shape == (5, 2) and np.isfinite(acts).all() and len(policy.results) == 1
    policy.reset(frame, {})  # no goal state: the probe's reading of the goal frame
    torch.testing.assert_close(policy.state.goal, probe.unit(probe(policy.goal)))
    plain = MPCPolicy(m, observer, codec, PlanConfig(horizon=2, exec_steps=1), state_probe=probe)
    plain.reset(frame, {})
    assert plain.state_probe is None and plain.state is None  # state_weight 0 (the default): no term
    with pytest.raises(ValueError, match="visual_weight"):
        MPCPolicy(m, observer, codec, cfg)

    class Env:  # the episode runner hands the goal state to the policy at reset
        def reset(self, state):
            return frame, {}

        def state(self):
            return np.zeros(7)

    class Recorder:
        def reset(self, goal_frame, info, seed=0):
            self.info = info

        def act(self, new_frames, info):
            return np.zeros((0, 2))

    rec = Recorder()
    run_episode(Env(), rec, EpisodeGoal(np.zeros(7), goal_state, frame), 1, 5)
    np.testing.assert_array_equal(rec.info["goal_state"], goal_state)


def test_evaluation_session_hands_the_probe_to_the_planners(tmp_path):
    from latentwm.planning.evaluate import PlanningModels, PlanningOptions, WorldModelRun, _session

    m = _model()
    stats = {
        "latents": {"mean": [0.0] * D, "std": [1.0] * D, "count": 1},
        "datasets": {
            "pusht": {
                "dataset": "pusht",
                "actions": {"mean": [250.0, 260.0], "std": [100.0, 110.0], "count": 1},
                "proprio": None,
            }
        },
    }
    run = WorldModelRun(m, get_preset("tiny"), stats, 5)
    probe = _probe()
    path = probe.save(tmp_path / "state_probe.safetensors")
    cfg = PlanConfig(visual_weight=0.0, state_weight=1.0)
    opts = PlanningOptions(planners=("cem",))
    encoder = lambda f: torch.zeros(len(f), N, D)  # noqa: E731
    s = _session(run, cfg, opts, PlanningModels(encoder=encoder, state_probe=path))  # a file is loaded
    policy, _ = s.policy("cem", None)
    assert isinstance(policy.state_probe, StateProbe)
    assert (
        _session(run, PlanConfig(), opts, PlanningModels(encoder=encoder, state_probe=probe)).state_probe is None
    )  # state_weight 0: unused
    with pytest.raises(ValueError, match="state probe"):
        _session(run, cfg, opts, PlanningModels(encoder=encoder))
