"""EPIC-KITCHENS-100 reader: a mini tree with two frame rates (50 and 59.94 fps), extracted rgb_frames for a third
video, both narration CSVs and the video-info CSV; fixture frame k of a video shows the number k."""

import numpy as np
import pytest
from formats import encode_index, indices, write_epic

from latentwm.data.episodes import frames_at, narrations_in
from latentwm.data.sources.epic_kitchens import load_epic_kitchens, parse_timestamp
from latentwm.data.video import write_video


@pytest.fixture(scope="module")
def epic(tmp_path_factory):
    return write_epic(tmp_path_factory.mktemp("epic"))


def test_parse_timestamp():
    assert parse_timestamp("00:01:02.50") == pytest.approx(62.5)
    assert parse_timestamp("01:00:00.00") == 3600.0


def test_native_rates_whole_videos(epic):
    items = dict(load_epic_kitchens(epic, segment_s=None))
    assert sorted(items) == ["epic_kitchens/P01_01@0000", "epic_kitchens/P01_02@0000", "epic_kitchens/P02_03@0000"]
    ep = items["epic_kitchens/P01_01@0000"]()
    assert len(ep) == 120 and ep.fps == 50 and ep.cameras == ["head"]
    assert ep.actions is None and not ep.mask().any()
    assert indices(frames_at(ep.frames["head"], range(120))) == list(range(120))
    ep = items["epic_kitchens/P01_02@0000"]()
    assert len(ep) == 100 and ep.fps == pytest.approx(59.94, abs=1e-3)
    assert indices(frames_at(ep.frames["head"], range(100))) == list(range(100))
    assert ep.text == ["close tap"] and ep.extras["split"] == "validation"
    ep = items["epic_kitchens/P02_03@0000"]()  # rgb_frames
    assert len(ep) == 30 and indices(ep.frames["head"].get([0, 17, 29])) == [0, 17, 29]
    assert ep.text == ["wash cup"]


def test_target_fps_segments_and_narrations(epic):
    items = dict(load_epic_kitchens(epic, fps=10, segment_s=1.0, participants="P01"))
    assert sorted(items) == [f"epic_kitchens/P01_01@000{k}" for k in range(3)] + [
        f"epic_kitchens/P01_02@000{k}" for k in range(2)
    ]
    segs = [items[f"epic_kitchens/P01_01@000{k}"]() for k in range(3)]
    assert [len(s) for s in segs] == [10, 10, 4] and all(s.fps == 10 for s in segs)
    assert indices(segs[1].frames["head"].get(range(10))) == list(range(50, 100, 5))  # 50 fps, every 5th
    assert indices(segs[2].frames["head"].get(range(4))) == [100, 105, 110, 115]
    ntsc = [items[f"epic_kitchens/P01_02@000{k}"]() for k in range(2)]  # 59.94 fps → nearest frames to k/10 s
    assert [len(s) for s in ntsc] == [10, 7]
    got = indices(ntsc[0].frames["head"].get(range(10))) + indices(ntsc[1].frames["head"].get(range(7)))
    assert got == [round(k * 5.994) for k in range(17)]
    # "open drawer" 0.5–1.2 s spans segments 0 and 1; "take knife" 2.1–2.3 s lies in segment 2
    assert [s.text for s in segs] == [["open drawer"], ["open drawer"], ["take knife"]]
    assert segs[0].extras["narrations"] == [[5, 10, "open drawer"]]
    assert segs[1].extras["narrations"] == [[0, 2, "open drawer"]]
    assert narrations_in(segs[0].extras, 0, 5) == [] and narrations_in(segs[0].extras, 3, 6) == ["open drawer"]
    assert narrations_in(segs[1].extras, 2, 10) == []


def test_filters_and_errors(epic, tmp_path):
    assert [k for k, _ in load_epic_kitchens(epic, splits="validation")] == ["epic_kitchens/P01_02@0000"]
    assert [k for k, _ in load_epic_kitchens(epic, frames="rgb_frames")] == ["epic_kitchens/P02_03@0000"]
    with pytest.raises(FileNotFoundError, match="EPIC_100_video_info.csv"):
        load_epic_kitchens(tmp_path)
    import shutil

    root = shutil.copytree(epic, tmp_path / "e2")
    write_video(root / "P01/videos/P01_09.MP4", np.stack([encode_index(0)] * 2), 50)
    with pytest.raises(ValueError, match="P01_09"):
        load_epic_kitchens(root)
