"""Push-T env wrapper and episode generation: determinism, resume, exact reset to saved states, the success test."""

import math
import os

import numpy as np
import pytest

pytest.importorskip("gym_pusht")

from latentwm.data.episodes import load_episode  # noqa: E402
from latentwm.data.sources.pusht import POLICIES, generate_pusht, rollout_episode  # noqa: E402
from latentwm.envs.pusht import PushTEnv, goal_metrics, goal_reached, state_distance  # noqa: E402


def _arrays(path):
    ep = load_episode(path)
    return ep, dict(frames=ep.frames["main"], actions=ep.actions, proprio=ep.proprio, rewards=ep.rewards,
                    states=ep.states)


def test_generation_is_deterministic_and_well_formed(tmp_path):
    a = generate_pusht(tmp_path / "a", 2, max_steps=12, seed=0, scripted_fraction=0.5, show_progress=False)
    b = generate_pusht(tmp_path / "b", 2, max_steps=12, seed=0, scripted_fraction=0.5, show_progress=False)
    c = generate_pusht(tmp_path / "c", 2, max_steps=12, seed=1, scripted_fraction=0.5, show_progress=False)
    assert [p.name for p in a] == ["episode_000000.npz", "episode_000001.npz"]
    for pa, pb, pc in zip(a, b, c):
        ea, xa = _arrays(pa)
        _, xb = _arrays(pb)
        _, xc = _arrays(pc)
        for k in xa:
            np.testing.assert_array_equal(xa[k], xb[k], err_msg=k)
        assert not np.array_equal(xa["states"], xc["states"])
        assert ea.dataset == "pusht" and ea.cameras == ["main"] and ea.fps == 10.0
        assert xa["frames"].shape == (12, 96, 96, 3) and xa["frames"].dtype == np.uint8
        assert xa["actions"].shape == (12, 2) and xa["actions"].dtype == np.float32
        assert ((xa["actions"] >= 0) & (xa["actions"] <= 512)).all()
        assert xa["states"].shape == (12, 7) and xa["proprio"].shape == (12, 4) and xa["rewards"].shape == (12,)
        np.testing.assert_allclose(xa["proprio"][:, :2], xa["states"][:, :2], rtol=1e-6)
        assert ea.extras["policy"] in POLICIES and isinstance(ea.success, bool)


def test_generation_resumes_and_regenerates_corrupt_files(tmp_path):
    paths = generate_pusht(tmp_path, 3, max_steps=8, seed=3, show_progress=False)
    ref = [_arrays(p)[1] for p in paths]
    past = 1_000_000_000
    os.utime(paths[0], (past, past))
    paths[1].write_bytes(paths[1].read_bytes()[:200])  # a partial write
    paths[2].unlink()
    (tmp_path / ".episode_000002.npz.abc.tmp").write_bytes(b"junk")  # left by a crash
    generate_pusht(tmp_path, 3, max_steps=8, seed=3, show_progress=False)
    assert paths[0].stat().st_mtime == past  # untouched
    assert not list(tmp_path.glob("*.tmp"))
    for p, r in zip(paths, ref):
        x = _arrays(p)[1]
        for k in r:
            np.testing.assert_array_equal(x[k], r[k])


def test_reset_to_saved_state_reproduces_the_frame():
    env = PushTEnv()
    ep = rollout_episode(env, 0, 0, "scripted", 40)
    moving = np.linalg.norm(np.diff(ep.states[:, 2:4], axis=0), axis=1) > 0.5
    assert moving.any(), "the scripted policy should push the block within 40 steps"
    check = sorted({0, 5, 17, 39, *np.flatnonzero(moving)[:4].tolist()})  # incl. states in contact
    other = PushTEnv()
    for t in check:
        frame, info = other.reset(state=ep.states[t])
        np.testing.assert_array_equal(frame, ep.frames["main"][t], err_msg=f"frame {t}")
        np.testing.assert_allclose(other.state(), ep.states[t], atol=1e-9)
        np.testing.assert_allclose(info["state"], ep.states[t], atol=1e-9)
    # 5-D states work too; the env's own signals are in info
    frame, info = other.reset(state=ep.states[5][:5])
    np.testing.assert_array_equal(frame, ep.frames["main"][5])
    assert set(info) >= {"coverage", "is_success", "state"}
    frame, reward, terminated, truncated, info = other.step(np.array([600.0, -5.0]))  # clipped to the arena
    assert frame.shape == (96, 96, 3) and 0.0 <= reward <= 1.0 and not truncated


def test_goal_reached_and_state_distance():
    g = np.array([100.0, 100.0, 256.0, 256.0, math.pi / 4, 0.0, 0.0])

    def s(agent=(0, 0), block=(0, 0), angle=0.0):
        out = g.copy()
        out[:2] += agent
        out[2:4] += block
        out[4] = (out[4] + angle) % (2 * math.pi)
        return out

    assert goal_reached(g, g) and state_distance(g, g) == 0.0
    assert goal_reached(s(block=(19, 0)), g) and not goal_reached(s(block=(15, 15)), g)  # 21.2 px
    assert goal_reached(s(agent=(0, -19.9)), g) and not goal_reached(s(agent=(0, 20.5)), g)
    assert goal_reached(s(angle=0.3), g) and not goal_reached(s(angle=0.36), g)  # π/9 ≈ 0.349
    assert goal_reached(s(angle=-0.3), g)  # wraps through 0 / 2π
    wrap_a, wrap_b = g.copy(), g.copy()
    wrap_a[4], wrap_b[4] = 0.1, 2 * math.pi - 0.1
    assert goal_reached(wrap_a, wrap_b) and goal_metrics(wrap_a, wrap_b)["angle_diff"] == pytest.approx(0.2)
    assert state_distance(s(block=(3, 4)), g) == pytest.approx(5.0)
    assert state_distance(s(agent=(6, 8), angle=math.radians(10)), g) == pytest.approx(20.0)
    assert state_distance(s(block=(3, 4)), g) == pytest.approx(state_distance(g, s(block=(3, 4))))
    assert PushTEnv.goal_reached(g, g)


def test_advance_equals_stepping_one_action_at_a_time():
    """`advance` (render only the last frame) runs the same physics as `step` per action: same state and frame."""
    from latentwm.envs.pusht import PushTEnv

    rng = np.random.default_rng(0)
    a, b = PushTEnv(image_size=96), PushTEnv(image_size=96)
    start, _ = a.reset(seed=3)
    s0 = a.state()
    b.reset(state=s0)
    a.reset(state=s0)
    actions = np.r_[rng.uniform(-50, 560, (12, 2)), np.repeat(s0[2:4][None], 6, 0)]  # off-arena + a push
    for act in actions:
        f_step, *_ = a.step(act)
    f_adv = b.advance(actions)
    assert np.array_equal(a.state(), b.state()) and np.array_equal(f_step, f_adv)
    assert b.frame() is f_adv
    a.close()
    b.close()
