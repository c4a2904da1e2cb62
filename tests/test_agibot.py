"""AgiBot World Alpha reader: the native layout (task_info JSON, observations/<task>/<episode>/videos/*.mp4,
proprio_stats/<task>/<episode>/proprio_stats.h5) written by the test with a few frames, and the LeRobot port. Every
frame encodes its own number (camera c, step t shows 1000·c + t); the states follow formulas, so the 14-D
end-effector actions are checked by hand."""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from formats import CART, agibot_states, encode_and_train, encode_fn, encode_index, indices, write_lerobot_v21

from latentwm.data.episodes import EpisodeError, narrations_in
from latentwm.data.latent_cache import Encoding, LatentCache, encode_to_cache
from latentwm.data.sources.agibot import arm_actions, load_agibot, quat_to_matrix
from latentwm.data.sources.droid import euler_to_matrix
from latentwm.data.video import write_video

CAMS = ["hand_left_color", "head_color"]  # sorted file stems
EPISODES = {("327", "648642"): 12, ("327", "648649"): 9, ("352", "700001"): 10}  # 352 is not in task_info


def write_agibot(root: Path, corrupt: tuple[str, str] | None = None) -> Path:
    (root / "task_info").mkdir(parents=True)
    for (task, ep), n in EPISODES.items():
        vdir = root / "observations" / task / ep / "videos"
        vdir.mkdir(parents=True)
        (root / "observations" / task / ep / "depth").mkdir()  # depth PNG folder: not read
        for c, cam in enumerate(CAMS):
            write_video(vdir / f"{cam}.mp4", np.stack([encode_index(1000 * c + t) for t in range(n)]), 30)
        (h5 := root / "proprio_stats" / task / ep / "proprio_stats.h5").parent.mkdir(parents=True)
        if (task, ep) == corrupt:
            h5.write_bytes(b"\x89HDF\r\n garbage" * 10)
            continue
        pos, quat, grip = agibot_states(n)
        with h5py.File(h5, "w") as f:
            f["state/end/position"], f["state/end/orientation"], f["state/effector/position"] = pos, quat, grip
            f["state/joint/position"] = np.zeros((n, 14))
            f["action/end/position"] = np.full((n, 2, 3), 9.0)  # the commands: not used
            f["timestamp"] = np.arange(n) * 33_333_333
    info = [
        dict(
            episode_id=int(ep),
            task_id=327,
            task_name="Pickup items in the supermarket",
            init_scene_text="The robot is in front of the shelf.",
            label_info=dict(
                action_config=[
                    dict(start_frame=0, end_frame=5, action_text="Grasp the bag with the left arm.", skill="Pick"),
                    dict(start_frame=5, end_frame=n, action_text="Place the bag in the cart.", skill="Place"),
                ]
            ),
        )
        for (task, ep), n in EPISODES.items()
        if task == "327"
    ]
    (root / "task_info" / "task_327.json").write_text(json.dumps(info))
    return root


def test_quaternions_and_arm_actions_by_hand():
    q = np.array([0.0, 0.0, np.sin(0.15), np.cos(0.15)])
    np.testing.assert_allclose(quat_to_matrix(q), euler_to_matrix(np.array([0, 0, 0.3])), atol=1e-12)
    pos, quat, grip = agibot_states(4)
    a, m = arm_actions(pos, quat, grip)
    np.testing.assert_allclose(
        a[:3], np.tile([0.01, 0, 0, 0, 0, 0.1, 0.05, 0, -0.02, 0, 0, 0, 0, 0], (3, 1)), atol=1e-9
    )
    assert m.tolist() == [True, True, True, False]
    pos[2, 1, 0] = np.nan  # a lost state: the actions into and out of it are unknown
    a, m = arm_actions(pos, quat, grip)
    assert m.tolist() == [True, False, False, False] and np.isfinite(a).all()


def test_native_layout_episodes_cameras_text_actions(tmp_path):
    root = write_agibot(tmp_path / "agibot")
    items = load_agibot(root)
    assert [k for k, _ in items] == ["agibot/327/648642", "agibot/327/648649", "agibot/352/700001"]
    ep = items[0][1]()
    assert ep.cameras == CAMS and len(ep) == 12 and ep.fps == 30
    for c, cam in enumerate(CAMS):
        assert indices(ep.frames[cam].get([0, 6, 11])) == [1000 * c, 1000 * c + 6, 1000 * c + 11]
    assert ep.text == [
        "Pickup items in the supermarket",
        "Grasp the bag with the left arm.",
        "Place the bag in the cart.",
    ]
    assert ep.extras["narrations"] == [
        [0, 5, "Grasp the bag with the left arm."],
        [5, 12, "Place the bag in the cart."],
    ]
    assert narrations_in(ep.extras, 3, 7) == ["Grasp the bag with the left arm.", "Place the bag in the cart."]
    assert ep.actions.shape == (12, 14) and ep.mask().tolist() == [True] * 11 + [False]
    np.testing.assert_allclose(ep.actions[4], [0.01, 0, 0, 0, 0, 0.1, 0.05, 0, -0.02, 0, 0, 0, 0, 0], atol=1e-6)
    assert ep.proprio.shape == (12, 16)
    np.testing.assert_allclose(ep.proprio[3, :8], [0.03, 0, 0.8, 0, 0, np.sin(0.15), np.cos(0.15), 0.15], atol=1e-6)
    assert ep.extras["init_scene"] == "The robot is in front of the shelf."
    assert items[2][1]().text == []  # an episode missing from task_info still reads


def test_native_fps_cameras_and_task_filter(tmp_path):
    root = write_agibot(tmp_path / "agibot")
    items = load_agibot(root, fps=10, cameras="head_color", tasks="327")
    assert len(items) == 2
    key, load = items[0]
    ep = load()  # 12 steps at 30 Hz → 0, 3, 6, 9
    assert key == "agibot/327/648642" and ep.cameras == ["head_color"] and ep.fps == 10
    assert ep.extras["raw_steps"] == [0, 3, 6, 9] and indices(ep.frames["head_color"].get(range(4))) == [
        1000,
        1003,
        1006,
        1009,
    ]
    np.testing.assert_allclose(ep.actions[0, :7], [0.03, 0, 0, 0, 0, 0.3, 0.15], atol=1e-6)  # between kept steps
    assert ep.extras["narrations"] == [[0, 2, "Grasp the bag with the left arm."], [2, 4, "Place the bag in the cart."]]
    assert len(load_agibot(root, tasks=[352])) == 1
    with pytest.raises(EpisodeError, match="no camera"):
        load_agibot(root, cameras="top_color")[0][1]()


def test_corrupt_proprio_skipped_and_counted(tmp_path):
    root = write_agibot(tmp_path / "agibot", corrupt=("327", "648649"))
    res = encode_to_cache(load_agibot(root), Encoding(encode_fn, "mean8"), tmp_path / "cache", show_progress=False)
    assert res["episodes"] == 2 and res["skipped"] == 1
    assert "proprio_stats.h5" in LatentCache(tmp_path / "cache").skipped[0]["error"]


def test_lerobot_port_is_read_by_the_generic_reader(tmp_path):
    root = write_lerobot_v21(tmp_path / "port", lengths=(9, 12))
    items = load_agibot(root, state_key=CART)
    assert [k for k, _ in items] == ["agibot/episode_000000", "agibot/episode_000001"]
    ep = items[1][1]()
    assert ep.extras["layout"] == "lerobot-v2.1" and ep.actions.shape == (12, 8)


def test_encode_cli_agibot_then_train(tmp_path):
    root = write_agibot(tmp_path / "agibot")
    cache = encode_and_train(tmp_path, "agibot", root, 14, "--cameras", "head_color")
    assert sorted(e["episode_id"] for e in cache.entries) == ["327/648642", "327/648649", "352/700001"]
    assert cache.dataset_stats["agibot"].actions.mean.shape == (14,)
