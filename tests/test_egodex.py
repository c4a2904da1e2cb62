"""EgoDex reader: `<task>/<i>.mp4` + `<task>/<i>.hdf5` (transforms/<joint> (N, 4, 4) world poses, the description
attributes) written by the test with a few frames. Frame t encodes its number t; the camera is turned 90° about z, so
the hand actions (world displacements expressed in the camera frame) are checked by hand."""

from pathlib import Path

import numpy as np
import pytest
from formats import RZ90, encode_and_train, encode_fn, encode_index, indices, se3_poses, write_egodex_h5

from latentwm.data.episodes import EpisodeError
from latentwm.data.latent_cache import Encoding, LatentCache, encode_to_cache
from latentwm.data.sources.egodex import hand_actions, load_egodex
from latentwm.data.video import write_video


def write_egodex(root: Path) -> Path:
    """part1/{add_remove_lid/0 (reversible, 2nd description), basic_pick_place/{0, 1 (corrupt hdf5)}}."""
    eps = {"add_remove_lid/0": 10, "basic_pick_place/0": 12, "basic_pick_place/1": 9}
    for eid, n in eps.items():
        mp4 = root / "part1" / f"{eid}.mp4"
        mp4.parent.mkdir(parents=True, exist_ok=True)
        write_video(mp4, np.stack([encode_index(t) for t in range(n)]), 30)
    write_egodex_h5(
        root / "part1/add_remove_lid/0.hdf5",
        10,
        llm_description="Put the lid on the jar.",
        llm_description2="Take the lid off the jar.",
        which_llm_description="2",
        llm_type="reversible",
        task="add_remove_lid",
    )
    write_egodex_h5(
        root / "part1/basic_pick_place/0.hdf5", 12, llm_description="Pick up the cup and place it on the plate."
    )
    (root / "part1/basic_pick_place/1.hdf5").write_bytes(b"not an hdf5 file" * 20)
    return root


def test_hand_actions_in_the_camera_frame():
    cam = se3_poses(RZ90, np.tile([1.0, 0.0, 1.5], (3, 1)))
    joints = np.array([[[0.0, 0, 0]], [[0.01, 0, 0]], [[0.01, 0.03, 0]]])  # (3, 1, 3)
    a, m, p = hand_actions(cam, joints)
    np.testing.assert_allclose(a, [[0, -0.01, 0], [0.03, 0, 0], [0, 0, 0]], atol=1e-12)  # world +x = camera −y
    assert m.tolist() == [True, True, False]
    np.testing.assert_allclose(p[0], RZ90.T @ (np.zeros(3) - [1.0, 0, 1.5]), atol=1e-12)
    joints[1, 0, 0] = np.nan
    assert hand_actions(cam, joints)[1].tolist() == [False, False, False]


def test_episodes_text_and_hand_actions(tmp_path):
    root = write_egodex(tmp_path / "egodex")
    items = load_egodex(root)
    assert [k for k, _ in items] == [
        "egodex/part1/add_remove_lid/0",
        "egodex/part1/basic_pick_place/0",
        "egodex/part1/basic_pick_place/1",
    ]
    lid = items[0][1]()
    assert lid.text == ["Take the lid off the jar.", "add remove lid"]  # the reversible task's 2nd direction
    pick = items[1][1]()
    assert pick.text == ["Pick up the cup and place it on the plate.", "basic pick place"]
    assert pick.cameras == ["ego"] and len(pick) == 12 and pick.fps == 30
    assert indices(pick.frames["ego"].get([0, 7, 11])) == [0, 7, 11]
    assert pick.actions.shape == (12, 6) and pick.mask().tolist() == [True] * 11 + [False]
    np.testing.assert_allclose(pick.actions[:-1], np.tile([0, -0.01, 0, 0, 0, 0.02], (11, 1)), atol=1e-6)
    assert pick.proprio.shape == (12, 6)
    np.testing.assert_allclose(pick.proprio[0, :3], RZ90.T @ ([0.3, 0.2, 1.0] - np.array([1.0, 0, 1.5])), atol=1e-6)
    tips = load_egodex(root, actions="fingertips", fps=10)[1][1]()  # 12 frames at 30 Hz → 0, 3, 6, 9
    assert tips.actions.shape == (4, 36) and tips.fps == 10 and tips.extras["raw_steps"] == [0, 3, 6, 9]
    assert indices(tips.frames["ego"].get(range(4))) == [0, 3, 6, 9]
    np.testing.assert_allclose(tips.actions[0, :6], [0, -0.03, 0, 0, 0, 0.06], atol=1e-6)  # between kept frames
    np.testing.assert_allclose(tips.actions[0, 6:21].reshape(5, 3), np.tile([0, -0.03, 0], (5, 1)), atol=1e-6)
    free = load_egodex(root, actions="none")[1][1]()
    assert free.actions is None and free.proprio is None and free.text == pick.text
    with pytest.raises(EpisodeError, match="1.hdf5"):
        items[2][1]()
    with pytest.raises(ValueError, match="actions must be one of"):
        load_egodex(root, actions="wrists")


def test_corrupt_hdf5_skipped_and_counted(tmp_path):
    root = write_egodex(tmp_path / "egodex")
    res = encode_to_cache(load_egodex(root), Encoding(encode_fn, "mean8"), tmp_path / "cache", show_progress=False)
    assert res["episodes"] == 2 and res["skipped"] == 1
    assert "1.hdf5" in LatentCache(tmp_path / "cache").skipped[0]["error"]


def test_encode_cli_egodex_then_train(tmp_path):
    root = write_egodex(tmp_path / "egodex")
    cache = encode_and_train(tmp_path, "egodex", root, 6)
    assert sorted(e["episode_id"] for e in cache.entries) == ["part1/add_remove_lid/0", "part1/basic_pick_place/0"]
    assert cache.dataset_stats["egodex"].actions.mean.shape == (6,)
