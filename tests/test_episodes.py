import numpy as np
import pytest

from latentwm.data.episodes import (
    DatasetStats,
    Episode,
    EpisodeError,
    NormStats,
    compute_norm_stats,
    load_episode,
    save_episode,
)


def _episode(T=11, A=2, ep="7"):
    rng = np.random.default_rng(0)
    return Episode(
        dataset="pusht",
        episode_id=ep,
        fps=10.0,
        frames={"main": rng.integers(0, 255, (T, 8, 8, 3), dtype=np.uint8)},
        actions=rng.normal(size=(T, A)).astype(np.float32),
        proprio=rng.normal(size=(T, 2)).astype(np.float32),
        rewards=np.ones(T, np.float32),
        states=rng.normal(size=(T, 7)),
        text=["push the T"],
        success=True,
        extras={"seed": 3},
    )


def test_frame_skip_concatenates_actions():
    ep = _episode(T=11)
    sk = ep.with_frame_skip(5)
    assert len(sk) == 3 and sk.fps == 2.0 and sk.frame_skip == 5
    np.testing.assert_array_equal(sk.frames["main"], ep.frames["main"][[0, 5, 10]])
    np.testing.assert_array_equal(sk.actions[0], ep.actions[0:5].reshape(-1))
    np.testing.assert_array_equal(sk.actions[1], ep.actions[5:10].reshape(-1))
    assert sk.action_mask.tolist() == [True, True, False]  # only 1 of the 5 actions after frame 10 exists
    np.testing.assert_allclose(sk.rewards, [5, 5, 1])


def test_save_load_round_trip(tmp_path):
    ep = _episode()
    path = save_episode(ep, tmp_path / "ep.npz")
    back = load_episode(path)
    for name in ("actions", "proprio", "rewards", "states"):
        np.testing.assert_array_equal(getattr(back, name), getattr(ep, name))
    np.testing.assert_array_equal(back.frames["main"], ep.frames["main"])
    assert (back.text, back.success, back.extras, back.fps) == (ep.text, ep.success, ep.extras, ep.fps)
    assert not list(tmp_path.glob("*.tmp"))


def test_corrupt_episode_file_names_the_file(tmp_path):
    p = tmp_path / "bad.npz"
    p.write_bytes(b"not an npz")
    with pytest.raises(EpisodeError, match="bad.npz"):
        load_episode(p)


def test_validation_names_episode_and_field():
    with pytest.raises(EpisodeError, match="pusht/x.*actions"):
        Episode("pusht", "x", 10.0, {"main": np.zeros((4, 8, 8, 3), np.uint8)}, actions=np.zeros((3, 2)))
    with pytest.raises(EpisodeError, match="uint8"):
        Episode("pusht", "x", 10.0, {"main": np.zeros((4, 8, 8, 3), np.float32)})
    with pytest.raises(EpisodeError, match="different frame counts"):
        Episode("d", "x", 10.0, {"a": np.zeros((4, 8, 8, 3), np.uint8), "b": np.zeros((5, 8, 8, 3), np.uint8)})


def test_norm_stats_ignore_unknown_actions(tmp_path):
    a = np.array([[1.0, 10.0], [3.0, 10.0], [1000.0, -1000.0]])
    st = compute_norm_stats([a], [np.array([True, True, False])])
    np.testing.assert_allclose(st.mean, [2.0, 10.0])
    assert st.std[1] > 0  # constant channel floored, stays finite
    np.testing.assert_allclose(st.denormalize(st.normalize(a[:2])), a[:2], rtol=1e-5)
    ds = DatasetStats.from_episodes("pusht", [_episode(), _episode(ep="8")])
    ds.save(tmp_path / "stats.json")
    back = DatasetStats.load(tmp_path / "stats.json")
    np.testing.assert_allclose(back.actions.mean, ds.actions.mean)
    assert isinstance(back.proprio, NormStats) and back.actions.count == 22
