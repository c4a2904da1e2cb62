"""DROID readers: LeRobot v3 (multi-episode parquet/MP4 files located by per-episode offsets), LeRobot v2.1 (one file
per episode) and raw DROID (trajectory.h5 + per-camera MP4). Every fixture frame encodes its own number (see
formats.encode_index): camera c, global row r shows 1000·c + r, so tests check which frame of which camera came
back; poses follow formulas so the 7-D actions can be checked by hand."""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from formats import (
    CAMS,
    FPS,
    KEYS,
    LENGTHS,
    encode_fn,
    encode_index,
    indices,
    pose,
    write_lerobot_v3,
    write_lerobot_v21,
)

from latentwm.data.clips import ClipOptions, LatentClipDataset
from latentwm.data.episodes import EpisodeError, frames_at
from latentwm.data.latent_cache import Encoding, LatentCache, encode_to_cache
from latentwm.data.sources.droid import (
    detect_layout,
    euler_to_matrix,
    load_droid,
    matrix_to_euler,
    pose_actions,
)
from latentwm.data.sources.lerobot import sample_steps
from latentwm.data.video import write_video

SERIALS = {"ext1_cam_serial": "24259877", "ext2_cam_serial": "24400334", "wrist_cam_serial": "13062452"}


def write_raw_droid(root: Path, n: int = 12) -> Path:
    """One raw DROID episode: <lab>/success/<date>/<time>/{trajectory.h5, metadata_*.json, recordings/MP4/*.mp4}."""
    ep = root / "AUTOLab" / "success" / "2023-07-07" / "Fri_Jul__7_09:42:23_2023"
    (ep / "recordings" / "MP4").mkdir(parents=True)
    cart, grip = pose(np.arange(n))
    with h5py.File(ep / "trajectory.h5", "w") as f:
        f["observation/robot_state/cartesian_position"] = cart
        f["observation/robot_state/gripper_position"] = grip[:, 0]
        f["observation/robot_state/joint_positions"] = np.zeros((n, 7))
        f["action/cartesian_position"] = np.full((n, 6), 9.0)
    meta = dict(
        uuid="AUTOLab+5d05c5aa+2023-07-07-09h-42m-23s",
        current_task="put the marker in the cup",
        success=True,
        trajectory_length=n,
        **SERIALS,
    )
    (ep / "metadata_AUTOLab+5d05c5aa+2023-07-07-09h-42m-23s.json").write_text(json.dumps(meta))
    for c, field in enumerate(SERIALS):
        write_video(
            ep / "recordings" / "MP4" / f"{SERIALS[field]}.mp4",
            np.stack([encode_index(1000 * c + t) for t in range(n)]),
            FPS,
        )
        write_video(
            ep / "recordings" / "MP4" / f"{SERIALS[field]}-stereo.mp4",  # side-by-side; not read
            np.stack([encode_index(3000) for _ in range(n)]),
            FPS,
        )
    return root


@pytest.fixture(scope="module")
def v3(tmp_path_factory):
    return write_lerobot_v3(tmp_path_factory.mktemp("droid_v3"))


# ----------------------------------------------------------------------------------------------------------------
# action math


def test_euler_roundtrip_and_convention():
    rng = np.random.default_rng(0)
    e = rng.uniform([-np.pi, -1.4, -np.pi], [np.pi, 1.4, np.pi], size=(50, 3))
    np.testing.assert_allclose(matrix_to_euler(euler_to_matrix(e)), e, atol=1e-9)
    # extrinsic x-y-z: R = Rz(γ)·Ry(β)·Rx(α); a pure yaw is a rotation about z
    Rz = euler_to_matrix(np.array([0.0, 0.0, 0.3]))
    np.testing.assert_allclose(
        Rz, [[np.cos(0.3), -np.sin(0.3), 0], [np.sin(0.3), np.cos(0.3), 0], [0, 0, 1]], atol=1e-12
    )
    Rx = euler_to_matrix(np.array([0.2, 0.0, 0.0]))
    np.testing.assert_allclose(
        Rx, [[1, 0, 0], [0, np.cos(0.2), -np.sin(0.2)], [0, np.sin(0.2), np.cos(0.2)]], atol=1e-12
    )
    np.testing.assert_allclose(euler_to_matrix(np.array([0.2, 0.0, 0.3])), Rz @ Rx, atol=1e-12)
    assert np.isfinite(matrix_to_euler(euler_to_matrix(np.array([0.3, np.pi / 2, 0.1])))).all()  # gimbal lock


def test_pose_actions_by_hand():
    # t=0: roll 0.3; t=1: yaw 0.5  →  R1·R0ᵀ = Rz(0.5)·Rx(−0.3)  →  euler (−0.3, 0, 0.5)
    cart = np.array([[0.1, 0.2, 0.3, 0.3, 0, 0], [0.15, 0.1, 0.3, 0, 0, 0.5], [0.15, 0.1, 0.3, 0, 0, 0.5]])
    grip = np.array([[0.0], [0.25], [1.0]])
    a, m = pose_actions(cart, grip)
    np.testing.assert_allclose(a[0], [0.05, -0.1, 0, -0.3, 0, 0.5, 0.25], atol=1e-6)
    np.testing.assert_allclose(a[1], [0, 0, 0, 0, 0, 0, 0.75], atol=1e-6)
    assert m.tolist() == [True, True, False] and (a[2] == 0).all()
    # the rotation difference is R(t+1)·R(t)ᵀ, not the difference of Euler angles: across ±π it stays small
    a, _ = pose_actions(np.array([[0, 0, 0, 0, 0, 3.1], [0, 0, 0, 0, 0, -3.1]]), np.zeros((2, 1)))
    np.testing.assert_allclose(a[0, 3:6], [0, 0, 2 * np.pi - 6.2], atol=1e-9)


def test_sample_steps():
    assert sample_steps(10, 15, None).tolist() == list(range(10))
    assert sample_steps(15, 15, 5).tolist() == [0, 3, 6, 9, 12]
    assert sample_steps(16, 15, 4).tolist() == [0, 4, 8, 11, 15]  # nearest to k·3.75


# ----------------------------------------------------------------------------------------------------------------
# LeRobot v3


def test_v3_frames_cameras_text_success(v3):
    assert detect_layout(v3) == "v3"
    items = load_droid(v3)
    assert [k for k, _ in items] == [f"droid/episode_{e:06d}" for e in range(3)]
    starts = np.concatenate([[0], np.cumsum(LENGTHS)])
    for e, (_, load) in enumerate(items):
        ep = load()
        assert ep.cameras == CAMS and len(ep) == LENGTHS[e] and ep.fps == FPS
        for c, cam in enumerate(CAMS):  # every frame of every camera, located inside the multi-episode files
            assert indices(frames_at(ep.frames[cam], range(len(ep)))) == [
                1000 * c + r for r in range(starts[e], starts[e + 1])
            ]
        assert ep.text == [f"task {e}", f"task {e} again"]
        assert ep.success is (e != 1)
        assert ep.actions.shape == (LENGTHS[e], 7) and ep.proprio.shape == (LENGTHS[e], 7)
        np.testing.assert_allclose(
            ep.actions[:-1], np.tile([0.01, 0.02, 0, 0, 0, 0.1, 0.05], (LENGTHS[e] - 1, 1)), atol=1e-5
        )
        assert ep.mask().tolist() == [True] * (LENGTHS[e] - 1) + [False]
        cart, grip = pose(np.arange(starts[e], starts[e + 1]))
        np.testing.assert_allclose(ep.proprio, np.concatenate([cart, grip], 1), atol=1e-5)


def test_v3_sampled_rate_and_camera_subset(v3):
    ep = load_droid(v3, fps=5, cameras="wrist_left,exterior_1_left", episodes=[1])[0][1]()
    assert ep.cameras == ["exterior_1_left", "wrist_left"] and ep.fps == 5 and len(ep) == 5  # 14 steps → 0,3,..,12
    rows = 10 + np.array([0, 3, 6, 9, 12])
    assert indices(ep.frames["wrist_left"].get(range(5))) == (2000 + rows).tolist()
    np.testing.assert_allclose(ep.actions[:-1], np.tile([0.03, 0.06, 0, 0, 0, 0.3, 0.15], (4, 1)), atol=1e-5)
    assert ep.extras["raw_steps"] == [0, 3, 6, 9, 12]
    with pytest.raises(ValueError, match="no camera"):
        load_droid(v3, cameras=["top"])


def test_v3_missing_video_is_episode_error(v3, tmp_path):
    import shutil

    root = shutil.copytree(v3, tmp_path / "copy")
    (root / f"videos/{KEYS[1]}/chunk-000/file-001.mp4").unlink()
    items = load_droid(root)
    items[0][1]()
    with pytest.raises(EpisodeError, match="file-001.mp4"):
        items[2][1]()


# ----------------------------------------------------------------------------------------------------------------
# LeRobot v2.1 and raw DROID


def test_v21_layout(tmp_path):
    root = write_lerobot_v21(tmp_path / "v21")
    assert detect_layout(root) == "v2.1"
    items = load_droid(root)
    ep = items[1][1]()
    assert ep.cameras == CAMS and len(ep) == 12 and ep.text == ["task 1", "task 1 again"] and ep.success is False
    assert indices(ep.frames["exterior_2_left"].get([0, 5, 11])) == [1009, 1014, 1020]


def test_raw_droid(tmp_path):
    root = write_raw_droid(tmp_path / "raw")
    assert detect_layout(root) == "raw"
    ((key, load),) = load_droid(root)
    assert key == "droid/AUTOLab/success/2023-07-07/Fri_Jul__7_09:42:23_2023"
    ep = load()
    assert ep.cameras == CAMS and len(ep) == 12 and ep.success is True
    assert ep.text == ["put the marker in the cup"]
    for c, cam in enumerate(CAMS):
        assert indices(ep.frames[cam].get([0, 7, 11])) == [1000 * c, 1000 * c + 7, 1000 * c + 11]
    np.testing.assert_allclose(ep.actions[0], [0.01, 0.02, 0, 0, 0, 0.1, 0.05], atol=1e-6)
    ep4 = load_droid(root, fps=4, cameras=["wrist_left"])[0][1]()
    assert ep4.cameras == ["wrist_left"] and ep4.extras["raw_steps"] == [0, 4, 8, 11]
    assert indices(ep4.frames["wrist_left"].get(range(4))) == [2000, 2004, 2008, 2011]
    np.testing.assert_allclose(ep4.actions[2], [0.03, 0.06, 0, 0, 0, 0.3, 0.15], atol=1e-6)  # 8 → 11


# ----------------------------------------------------------------------------------------------------------------
# through the latent cache: corrupt video skipped, cameras kept, clips split by camera


def test_encode_skips_corrupt_video_and_keeps_cameras(tmp_path, capsys):
    root = write_lerobot_v21(tmp_path / "v21", lengths=(9, 12, 10), corrupt=1)
    out = tmp_path / "cache"
    res = encode_to_cache(
        load_droid(root), Encoding(encode_fn, "mean8"), out, episodes_per_shard=2, show_progress=False
    )
    assert res["episodes"] == 2 and res["skipped"] == 1 and res["complete"]
    assert "episode_000001.mp4" in capsys.readouterr().out
    cache = LatentCache(out)
    assert len(cache.skipped) == 1 and "episode_000001.mp4" in cache.skipped[0]["error"]
    assert sorted({(e["episode_id"], e["camera"]) for e in cache.entries}) == [
        (f"episode_00000{e}", c) for e in (0, 2) for c in CAMS
    ]
    st = cache.dataset_stats["droid"]
    assert st.actions.mean.shape == (7,) and st.proprio.mean.shape == (7,)
    # resumable: a second run keeps the finished shard and retries only the one holding the skipped (still corrupt)
    # episode, so a repaired file would get in
    again = encode_to_cache(
        load_droid(root), Encoding(encode_fn, "mean8"), out, episodes_per_shard=2, show_progress=False
    )
    assert again["shards_written"] == ["shard-000000.tar"] and again["skipped"] == 1 and again["complete"]
    # training clips: a random camera per sample; evaluation: every camera, camera in the metadata
    train = LatentClipDataset(cache, clip_len=4, split="train", options=ClipOptions(eval_fraction=0.0, seed=0))
    cams = {train[k].meta.camera for k in range(60)}
    assert cams == set(CAMS)
    ev = LatentClipDataset(cache, clip_len=4, split="all")
    per_cam = {}
    for i in range(len(ev)):
        m = ev[i].meta
        per_cam.setdefault(m.camera, set()).add(m.episode_id)
        assert m.dataset == "droid" and m.fps == FPS
    assert per_cam == {c: {"episode_000000", "episode_000002"} for c in CAMS}
