"""Push-T env wrapper and episode generation: determinism, resume, exact reset to saved states, the success test."""

import json
import math
import os

import numpy as np
import pytest

pytest.importorskip("gym_pusht")

from latentwm.config import ConfigError, GenerateConfig, PolicyMix  # noqa: E402
from latentwm.data.episodes import load_episode  # noqa: E402
from latentwm.data.sources.pusht import (
    EpisodeSpec,
    episode_spec,
    generate_pusht,
    policy_counts,  # noqa: E402
    rollout_episode,
)
from latentwm.envs.pusht import PushTEnv, goal_metrics, goal_reached, state_distance  # noqa: E402
from latentwm.envs.pusht_policies import GOAL_POSE, POLICIES, GoalPusher, ScriptedPusher, keypoints  # noqa: E402


def _arrays(path):
    ep = load_episode(path)
    return ep, dict(
        frames=ep.frames["main"], actions=ep.actions, proprio=ep.proprio, rewards=ep.rewards, states=ep.states
    )


def _gen(out, n, **kw):
    return generate_pusht(GenerateConfig(out_dir=str(out), num_episodes=n, **kw), show_progress=False)


def test_generation_is_deterministic_and_well_formed(tmp_path):
    a = _gen(tmp_path / "a", 2, max_steps=12, seed=0)
    b = _gen(tmp_path / "b", 2, max_steps=12, seed=0)
    c = _gen(tmp_path / "c", 2, max_steps=12, seed=1)
    assert [p.name for p in a] == ["episode_000000.npz", "episode_000001.npz"]
    for pa, pb, pc in zip(a, b, c):
        assert pa.read_bytes() == pb.read_bytes()  # byte for byte: fixed zip timestamps
        ea, xa = _arrays(pa)
        _, xc = _arrays(pc)
        assert not np.array_equal(xa["states"], xc["states"])
        assert ea.dataset == "pusht" and ea.cameras == ["main"] and ea.fps == 10.0
        assert xa["frames"].shape == (12, 96, 96, 3) and xa["frames"].dtype == np.uint8
        assert xa["actions"].shape == (12, 2) and xa["actions"].dtype == np.float32
        assert ((xa["actions"] >= 0) & (xa["actions"] <= 512)).all()
        assert xa["states"].shape == (12, 7) and xa["proprio"].shape == (12, 4) and xa["rewards"].shape == (12,)
        np.testing.assert_allclose(xa["proprio"][:, :2], xa["states"][:, :2], rtol=1e-6)
        assert ea.extras["policy"] in POLICIES and isinstance(ea.success, bool)


@pytest.mark.slow
def test_worker_processes_write_the_same_bytes_and_a_killed_run_resumes(tmp_path):
    """Two processes give the files one process gives; a run killed mid-way (SIGKILL) is finished by the next."""
    import signal
    import subprocess
    import sys
    import time

    one = _gen(tmp_path / "one", 9, max_steps=10, seed=4, workers=1)
    two = _gen(tmp_path / "two", 9, max_steps=10, seed=4, workers=2)
    assert [p.read_bytes() for p in one] == [p.read_bytes() for p in two]
    out = tmp_path / "killed"
    code = (
        "from latentwm.config import GenerateConfig; from latentwm.data.sources.pusht import generate_pusht; "
        f"generate_pusht(GenerateConfig(out_dir={str(out)!r}, num_episodes=40, max_steps=60, seed=4, workers=2))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(list(out.glob("episode_*.npz"))) < 3 and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list(out.glob("episode_*.npz")))
    assert 3 <= done < 40, done
    paths = _gen(out, 40, max_steps=60, seed=4, workers=2)
    assert not list(out.glob(".*.tmp"))
    ref = _gen(tmp_path / "ref", 40, max_steps=60, seed=4, workers=2)
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in ref]


def test_generation_resumes_and_regenerates_corrupt_files(tmp_path):
    paths = _gen(tmp_path, 3, max_steps=8, seed=3)
    ref = [p.read_bytes() for p in paths]
    past = 1_000_000_000
    os.utime(paths[0], (past, past))
    paths[1].write_bytes(paths[1].read_bytes()[:200])  # a truncated file
    paths[2].unlink()
    (tmp_path / ".episode_000002.npz.abc.tmp").write_bytes(b"junk")  # left by a crash
    _gen(tmp_path, 3, max_steps=8, seed=3)
    assert paths[0].stat().st_mtime == past  # untouched
    assert not list(tmp_path.glob("*.tmp"))
    assert [p.read_bytes() for p in paths] == ref


def test_policy_mix_is_drawn_per_episode_and_recorded(tmp_path):
    cfg = GenerateConfig(out_dir=str(tmp_path), num_episodes=400, seed=0)
    counts = policy_counts(cfg)
    assert sum(counts.values()) == 400 and abs(counts["goal"] - 200) < 35 and abs(counts["random_walk"] - 80) < 25
    only_goal = GenerateConfig(num_episodes=10, mix=PolicyMix(goal=1.0, scripted=0.0, random_walk=0.0, noise=(7.0,)))
    assert {episode_spec(only_goal, i).policy for i in range(10)} == {"goal"}
    assert {episode_spec(only_goal, i).noise for i in range(10)} == {7.0}
    # a spec depends on (seed, i) only, not on how many episodes are asked for
    assert episode_spec(cfg, 7) == episode_spec(GenerateConfig(num_episodes=8, seed=0), 7)
    _gen(tmp_path / "mix", 2, max_steps=6, mix=PolicyMix(goal=0.0, scripted=1.0, random_walk=0.0, noise=(3.0,)))
    recorded = json.loads((tmp_path / "mix" / "generate.json").read_text())
    assert recorded["mix"] == {"goal": 0.0, "scripted": 1.0, "random_walk": 0.0, "noise": [3.0]}
    ep = load_episode(tmp_path / "mix" / "episode_000001.npz")
    assert ep.extras["policy"] == "scripted" and ep.extras["noise"] == 3.0
    with pytest.raises(ConfigError, match="sum to 1"):
        PolicyMix(goal=0.5, scripted=0.3, random_walk=0.3)
    with pytest.raises(ConfigError, match="workers"):
        GenerateConfig(workers=0)


def test_goal_policy_brings_the_block_toward_the_green_zone():
    """Over the same starts, the goal-directed pusher ends with the T's keypoints much nearer the zone's than the
    random-target pusher does (the data then holds pushes that reach the task's goal)."""
    env = PushTEnv(image_size=32)
    goal_pts = keypoints(GOAL_POSE, GoalPusher.KEYPOINTS)
    err = {}
    for name, make in (("goal", lambda r: GoalPusher(r, noise=4.0)), ("scripted", lambda r: ScriptedPusher(r))):
        errs = []
        for i in range(3):
            _, info = env.reset(seed=100 + i)
            pol, state = make(np.random.default_rng(i)), info["state"]
            for _ in range(200):
                _, _, done, _, info = env.step(pol(state))
                state = info["state"]
                if done:
                    break
            errs.append(np.linalg.norm(keypoints(state[2:5], GoalPusher.KEYPOINTS) - goal_pts, axis=1).mean())
        err[name] = float(np.mean(errs))
    assert err["goal"] < 0.75 * err["scripted"], err  # 69 vs 110 px


def test_fast_step_equals_gym_pushts_own_step():
    """PushTEnv.step replaces gym-pusht's step (cached goal geometry, contiguous frame copy): same frames, states,
    rewards and termination, through contacts, as the env it wraps."""
    ours, theirs = PushTEnv(image_size=96), PushTEnv(image_size=96)
    for seed in range(2):
        fa, info = ours.reset(seed=seed)
        fb, _ = theirs.reset(seed=seed)
        assert np.array_equal(fa, fb)
        pol = ScriptedPusher(np.random.default_rng(seed))
        for t in range(60):
            act = pol(info["state"])
            fa, ra, ta, _, info = ours.step(act)
            obs, rb, tb, _, tinfo = theirs._env.step(np.clip(act, 0.0, 512.0))
            assert np.array_equal(fa, obs["pixels"]), (seed, t)
            assert ra == pytest.approx(rb, abs=1e-12) and ta == tb
            assert info["coverage"] == pytest.approx(tinfo["coverage"], abs=1e-12)
            np.testing.assert_array_equal(info["state"], theirs.state())


def test_reset_to_saved_state_reproduces_the_frame():
    env = PushTEnv()
    ep = rollout_episode(env, EpisodeSpec(0, 0, "scripted", 6.0, 40))
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
    # DINO-WM's joint form: the four position coordinates together within 20 px (stricter than each within 20)
    m = goal_metrics(s(agent=(14, 0), block=(0, 15)), g)
    assert m["success"] and not m["success_joint"]  # 14 px and 15 px each, 20.5 px together
    assert goal_metrics(s(agent=(10, 0), block=(0, 10)), g)["success_joint"]
    assert not goal_metrics(s(angle=0.36), g)["success_joint"]


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


def test_render_every_k_stores_one_phase_with_the_same_physics(tmp_path):
    """--render-every 5: the same simulation (rendering does not touch the physics), stored every 5th env step:
    frames and states of steps 0, 5, 10, …, the 5 actions of each stored step concatenated, rewards summed."""
    full = load_episode(_gen(tmp_path / "full", 2, max_steps=23, seed=2)[1])
    sparse = load_episode(_gen(tmp_path / "sparse", 2, max_steps=23, seed=2, render_every=5)[1])
    n = 5  # ceil(23 / 5)
    assert len(sparse) == n and sparse.frame_skip == 5 and sparse.fps == 2.0
    np.testing.assert_array_equal(sparse.frames["main"], full.frames["main"][::5])
    np.testing.assert_array_equal(sparse.states, full.states[::5])
    np.testing.assert_array_equal(sparse.actions[:4].reshape(20, 2), full.actions[:20])
    assert sparse.actions.shape == (n, 10) and sparse.mask().tolist() == [True] * 4 + [False]  # 3 of 5 taken
    np.testing.assert_allclose(sparse.rewards[:4], full.rewards[:20].reshape(4, 5).sum(1), rtol=1e-6)
    spans = sparse.extras["narrations"]  # in stored frames (4 per 2-second span; a short tail joins the last)
    assert spans[0][0] == 0 and spans[-1][1] == n
    with pytest.raises(ConfigError, match="render_every"):
        GenerateConfig(max_steps=3, render_every=5)


def test_clips_of_a_sparse_cache_are_the_phase_zero_clips_of_a_full_one(tmp_path):
    """Encoded, an episode rendered every 5th step gives exactly the clips (latents, actions, rewards, states) that
    the fully rendered episode gives at the starts of phase 0 with frame_skip 5; a frame skip it does not divide is
    refused with the fix named."""
    from latentwm.data.clips import ClipOptions, LatentClipDataset
    from latentwm.data.latent_cache import Encoding, encode_to_cache
    from latentwm.data.sources.pusht import load_pusht

    def encode(x):  # a deterministic stand-in encoder: per-patch means of the frame
        x = np.asarray(x, np.float32) / 255.0
        B, H = x.shape[0], x.shape[1]
        return x.reshape(B, 4, H // 4, 4, H // 4, 3).mean((2, 4)).reshape(B, 16, 3)

    caches = {}
    for name, k in (("full", 1), ("sparse", 5)):
        _gen(tmp_path / name, 3, max_steps=40, seed=1, image_size=32, render_every=k)
        encode_to_cache(
            load_pusht(tmp_path / name),
            Encoding(encode, "means", image_size=32),
            tmp_path / f"{name}_cache",
            show_progress=False,
        )
        caches[name] = LatentClipDataset(
            tmp_path / f"{name}_cache",
            4,
            split="all",
            options=ClipOptions(frame_skip=5, normalize=False, eval_stride=1),
        )
    full, sparse = caches["full"], caches["sparse"]
    assert sparse.stride == 1 and full.stride == 5 and sparse.action_dim == full.action_dim == 10
    by_start = {(full.cache.entries[e]["episode_id"], s): (e, s) for e, s in full.grid}
    assert len(sparse) == 3 * 5  # 8 stored frames per episode, 4-frame clips: 5 starts
    for e, s in sparse.grid:
        a = sparse.make_clip(e, s)
        b = full.make_clip(*by_start[(sparse.cache.entries[e]["episode_id"], 5 * s)])
        for f in ("latents", "actions", "action_mask", "rewards", "states", "proprio"):
            np.testing.assert_allclose(getattr(a, f).numpy(), getattr(b, f).numpy(), rtol=1e-6, err_msg=f)
    with pytest.raises(ConfigError, match="--data.frame-skip 5"):
        LatentClipDataset(tmp_path / "sparse_cache", 4, split="all", options=ClipOptions(frame_skip=3))
    # action statistics are per env step in both caches
    assert full.cache.dataset_stats["pusht"].actions.mean.shape == (2,)
    assert sparse.cache.dataset_stats["pusht"].actions.mean.shape == (2,)
