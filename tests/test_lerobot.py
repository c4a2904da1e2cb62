"""Generic LeRobot reader (v3 / v2.1): cameras, action / state columns chosen by key, task strings with per-frame
spans, fps resampling, a corrupt episode skipped, and `latentwm encode --source lerobot` into a cache that trains.
The fixtures are the mini DROID of formats.py (every frame encodes its own number: camera c, global row r shows
1000·c + r) plus the task lists a real dataset has (v3 `meta/tasks.parquet` as pandas writes it, v2.1
`meta/tasks.jsonl`)."""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from formats import (
    CAMS,
    CART,
    FPS,
    LENGTHS,
    encode_and_train,
    encode_fn,
    indices,
    pose,
    write_lerobot_v3,
    write_lerobot_v21,
)

from latentwm.data.episodes import narrations_in
from latentwm.data.latent_cache import Encoding, LatentCache, encode_to_cache
from latentwm.data.sources import load_source
from latentwm.data.sources.lerobot import kept_spans, load_lerobot


def _v3_with_tasks(root: Path) -> Path:
    write_lerobot_v3(root)
    # pandas' to_parquet of DataFrame({"task_index": ...}, index=tasks): the task strings are the index column
    pq.write_table(
        pa.table({"task_index": [0, 1, 2], "__index_level_0__": ["task 0", "task 1", "task 2"]}),
        root / "meta/tasks.parquet",
    )
    return root


@pytest.fixture(scope="module")
def v3(tmp_path_factory):
    return _v3_with_tasks(tmp_path_factory.mktemp("lerobot_v3"))


def test_v3_cameras_actions_state_text(v3):
    with pytest.raises(ValueError, match=r"info.json: no feature 'observation.state' \(state_key\).*action"):
        load_lerobot(v3)  # the fixture (DROID-like) has no observation.state: the error lists what it has
    items = load_lerobot(v3, state_key=CART, dataset="mini")
    assert [k for k, _ in items] == [f"mini/episode_{e:06d}" for e in range(3)]
    starts = np.concatenate([[0], np.cumsum(LENGTHS)])
    for e, (_, load) in enumerate(items):
        ep = load()
        assert ep.cameras == CAMS and len(ep) == LENGTHS[e] and ep.fps == FPS and ep.dataset == "mini"
        for c, cam in enumerate(CAMS):
            want = [1000 * c + r for r in range(starts[e], starts[e + 1])]
            assert indices(ep.frames[cam].get(range(len(ep)))) == want
        assert ep.actions.shape == (LENGTHS[e], 8) and (ep.actions == 9.0).all() and ep.mask().all()
        np.testing.assert_allclose(ep.proprio, pose(np.arange(starts[e], starts[e + 1]))[0], atol=1e-5)
        assert ep.text == [f"task {e}"]  # the episode's task and the per-frame task_index name the same task
        assert ep.extras["narrations"] == [[0, LENGTHS[e], f"task {e}"]]
    # action-free, no proprio, one camera
    ep = load_lerobot(v3, action_key="", state_key=None, cameras="wrist_left", episodes=[2])[0][1]()
    assert ep.actions is None and ep.proprio is None and ep.cameras == ["wrist_left"]
    with pytest.raises(ValueError, match=r"no feature 'act' \(action_key\)"):
        load_lerobot(v3, action_key="act", state_key="")
    with pytest.raises(ValueError, match="no camera"):
        load_lerobot(v3, cameras="top", state_key="")


def test_v3_fps_resampling_keeps_the_recorded_action_of_each_kept_step(tmp_path):
    root = _v3_with_tasks(tmp_path / "v3")
    data = root / "data/chunk-000/file-000.parquet"  # make the action column tell its raw row apart
    t = pq.read_table(data)
    rows = np.asarray(t.column("index").to_numpy(), dtype=np.float32)
    t = t.set_column(
        t.column_names.index("action"),
        "action",
        pa.array(np.repeat(rows[:, None], 8, 1).tolist(), type=pa.list_(pa.float32())),
    )
    pq.write_table(t, data)
    ep = load_lerobot(root, fps=5, state_key=CART, episodes=[1])[0][1]()  # 14 raw steps at 15 Hz → 0, 3, .., 12
    assert ep.fps == 5 and len(ep) == 5 and ep.extras["raw_steps"] == [0, 3, 6, 9, 12]
    kept_rows = 10 + np.array([0, 3, 6, 9, 12])
    assert indices(ep.frames["exterior_2_left"].get(range(5))) == (1000 + kept_rows).tolist()
    np.testing.assert_array_equal(ep.actions[:, 0], kept_rows)  # the kept steps' own actions, none summed
    assert ep.extras["narrations"] == [[0, 5, "task 1"]]
    # through load_source: fps and options as `latentwm encode` passes them
    ((key, load),) = load_source("lerobot", root, fps=5, options=dict(state_key=CART, episodes=1.0))
    assert key == "v3/episode_000001" and len(load()) == 5


def test_kept_spans():
    keep = np.array([0, 3, 6, 9])
    assert kept_spans([(0, 4, "a"), (4, 6, "b"), (6, 20, "c"), (1, 2, "d")], keep) == [[0, 2, "a"], [2, 4, "c"]]


def test_v21_task_spans_and_corrupt_episode_skipped(tmp_path, capsys):
    root = write_lerobot_v21(tmp_path / "v21", lengths=(9, 12, 10), corrupt=2)
    (root / "meta/tasks.jsonl").write_text(
        "\n".join(
            json.dumps(dict(task_index=i, task=t))
            for i, t in enumerate(["task 0", "task 1", "task 2", "wipe the table"])
        )
    )
    p = root / "data/chunk-000/episode_000001.parquet"  # episode 1 switches task at its 7th step
    t = pq.read_table(p)
    pq.write_table(t.set_column(t.column_names.index("task_index"), "task_index", pa.array([1] * 6 + [3] * 6)), p)
    items = load_lerobot(root, state_key=CART)
    ep = items[1][1]()
    assert ep.text == ["task 1", "wipe the table"]
    assert ep.extras["narrations"] == [[0, 6, "task 1"], [6, 12, "wipe the table"]]
    assert narrations_in(ep.extras, 7, 10) == ["wipe the table"]
    assert indices(ep.frames["exterior_2_left"].get([0, 5, 11])) == [1009, 1014, 1020]
    ep5 = load_lerobot(root, fps=5, state_key=CART, episodes=[1])[0][1]()  # kept raw steps 0, 3, 6, 9
    assert ep5.extras["narrations"] == [[0, 2, "task 1"], [2, 4, "wipe the table"]]
    res = encode_to_cache(items, Encoding(encode_fn, "mean8"), tmp_path / "cache", show_progress=False)
    assert res["episodes"] == 2 and res["skipped"] == 1
    assert "episode_000002.mp4" in LatentCache(tmp_path / "cache").skipped[0]["error"]


def test_encode_cli_lerobot_then_train(tmp_path):
    root = write_lerobot_v21(tmp_path / "v21", lengths=(9, 12))
    cache = encode_and_train(tmp_path, "lerobot", root, 8, "--cameras", "wrist_left", "--options", f"state_key={CART}")
    assert sorted(e["episode_id"] for e in cache.entries) == ["episode_000000", "episode_000001"]
    assert {e["camera"] for e in cache.entries} == {"wrist_left"}
    assert cache.dataset_stats["v21"].actions.mean.shape == (8,)
