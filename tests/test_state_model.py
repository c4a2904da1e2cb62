"""The planning ladder's privileged rung (a dynamics model of the true Push-T state) and the simulator rungs'
execution of relative actions."""

import numpy as np
import pytest
import torch

from latentwm.config import CEMConfig, GenerateConfig, PlanConfig
from latentwm.data.clips import ClipOptions, LatentClipDataset
from latentwm.data.latent_cache import Encoding, encode_to_cache
from latentwm.data.sources.pusht import generate_pusht, load_pusht
from latentwm.envs.pusht import PushTEnv, goal_metrics
from latentwm.planning.cost_quality import advance_plan
from latentwm.planning.evaluate import sample_goals
from latentwm.planning.mpc import ActionCodec, EpisodeGoal, run_episode
from latentwm.planning.state_model import StatePolicy, fit_state_dynamics, state_distance_of, state_features

STATS = {"mean": [0.0, 0.0], "std": [20.0, 20.0], "count": 1}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("state_model")
    generate_pusht(
        GenerateConfig(out_dir=str(root / "eps"), num_episodes=6, max_steps=60, seed=5, render_every=5, workers=1),
        show_progress=False,
    )
    encode_to_cache(
        load_pusht(root / "eps"),
        Encoding(lambda f: np.zeros((len(f), 4, 8), np.float32), "zeros", image_size=96),
        root / "cache",
        show_progress=False,
    )
    return root


def test_state_distance_matches_the_env_metric():
    rng = np.random.default_rng(0)
    for _ in range(5):
        s, g = rng.uniform(0, 512, 7), rng.uniform(0, 512, 7)
        s[4], g[4] = rng.uniform(0, 2 * np.pi, 2)
        got = float(state_distance_of(state_features(torch.as_tensor(s)), torch.as_tensor(g)))
        assert got == pytest.approx(goal_metrics(s, g)["state_dist"], rel=1e-4)


def test_state_model_learns_one_step_dynamics(data):
    clips = LatentClipDataset(
        data / "cache", 2, split="train", options=ClipOptions(frame_skip=5, eval_fraction=0.2, relative_actions=True)
    )
    _, early = fit_state_dynamics(clips, steps=5, pairs=300, log=lambda *_: None)
    model, late = fit_state_dynamics(clips, steps=400, pairs=300, log=lambda *_: None)
    assert late["train_mse"] < 0.5 * early["train_mse"]
    assert late["pairs"] > 100 and not any(p.requires_grad for p in model.parameters())


def test_state_policy_plans_and_reads_the_true_state(data):
    clips = LatentClipDataset(
        data / "cache", 2, split="train", options=ClipOptions(frame_skip=5, eval_fraction=0.2, relative_actions=True)
    )
    model, _ = fit_state_dynamics(clips, steps=50, pairs=200, log=lambda *_: None)
    codec = ActionCodec.from_stats(STATS, 5, 10, relative=True)
    cfg = PlanConfig(horizon=2, exec_steps=1, cem=CEMConfig(population=8, elites=2, iterations=2))
    g = sample_goals(sorted((data / "eps").glob("*.npz")), 1, 10, seed=0)[0]
    env = PushTEnv(image_size=96)
    try:
        pol = StatePolicy(model, codec, cfg)
        r = run_episode(env, pol, EpisodeGoal(g.start_state, g.goal_state, g.goal_frame), 2, 5, stop_on_success=False)
        assert r["plans"] == 2 and r["env_steps"] == 10 and r["seconds_per_plan"] > 0
        with pytest.raises(KeyError):
            pol.act([], {})  # no true state: the privileged policy cannot act
    finally:
        env.close()


def test_simulator_executes_relative_plans_as_the_env_loop_does(data):
    """advance_plan (the simulator rungs) reaches the same state as run_episode's step-by-step execution."""
    codec = ActionCodec.from_stats(STATS, 5, 10, relative=True)
    g = sample_goals(sorted((data / "eps").glob("*.npz")), 1, 10, seed=1)[0]
    plan = torch.tensor([[1.0, -0.5], [-1.5, 2.0], [0.5, 0.5]])
    a, b = PushTEnv(image_size=96), PushTEnv(image_size=96)
    try:
        a.reset(state=g.start_state)
        frame = advance_plan(a, codec, plan)
        b.reset(state=g.start_state)
        for step in codec.to_env(codec.expand(plan)).reshape(3, 5, 2):
            anchor = b.state()[:2]
            for act in step:
                b.step(codec.absolute(act, anchor))
        np.testing.assert_allclose(a.state(), b.state(), atol=1e-6)
        np.testing.assert_array_equal(frame, b.frame())
    finally:
        a.close()
        b.close()


def test_ladder_rows_are_reused_only_with_the_settings_that_made_them(tmp_path):
    """A rung's rows are kept with their settings: the same settings reuse them, other settings (or a file from
    before settings were kept) compute them again and say so — never another goal set's rows passed on."""
    from latentwm.planning.ladder import _kept

    calls, said = [], []

    def make(v):
        return lambda: calls.append(v) or [{"goal": 0, "success": v}]

    f = tmp_path / "rung.json"
    assert _kept(f, {"goals": [["a", 1]]}, make(True), said.append) == [{"goal": 0, "success": True}]
    assert _kept(f, {"goals": [["a", 1]]}, make(False), said.append)[0]["success"] is True and calls == [True]
    assert _kept(f, {"goals": [["b", 2]]}, make(False), said.append)[0]["success"] is False  # other goals: again
    assert calls == [True, False] and "other settings" in said[-1]
    f.write_text('[{"goal": 0, "success": true}]')  # rows without their settings
    assert _kept(f, {"goals": [["b", 2]]}, make(False), said.append)[0]["success"] is False and len(calls) == 3
