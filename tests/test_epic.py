"""EPIC-KITCHENS-100 reader: a mini tree with two frame rates (50 and 59.94 fps), extracted rgb_frames for a third
video, both narration CSVs and the video-info CSV; fixture frame k of a video shows the number k."""

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_video import encode_index, indices

from latentwm.data.episodes import frames_at, narrations_in
from latentwm.data.sources.epic_kitchens import load_epic_kitchens, parse_timestamp
from latentwm.data.video import write_video

NARR_COLS = [
    "narration_id",
    "participant_id",
    "video_id",
    "narration_timestamp",
    "start_timestamp",
    "stop_timestamp",
    "start_frame",
    "stop_frame",
    "narration",
    "verb",
    "verb_class",
    "noun",
    "noun_class",
    "all_nouns",
    "all_noun_classes",
]


def _ts(s: float) -> str:
    return f"{int(s // 3600):02d}:{int(s % 3600 // 60):02d}:{s % 60:05.2f}"


def _narr(vid, k, start, stop, text, fps):
    return [
        f"{vid}_{k}",
        vid.split("_")[0],
        vid,
        _ts(start),
        _ts(start),
        _ts(stop),
        int(start * fps) + 1,
        int(stop * fps) + 1,
        text,
        text.split()[0],
        0,
        text.split()[-1],
        0,
        f"['{text.split()[-1]}']",
        "[0]",
    ]


def write_epic(root: Path) -> Path:
    """P01_01: 120 frames at 50 fps (2.4 s); P01_02: 100 frames at 59.94 fps; P02_03: 30 JPEG frames at 25 fps;
    P03_01 is listed in the info file but not downloaded."""
    (root / "P01" / "videos").mkdir(parents=True)
    write_video(root / "P01/videos/P01_01.MP4", np.stack([encode_index(k) for k in range(120)]), 50)
    write_video(root / "P01/videos/P01_02.MP4", np.stack([encode_index(k) for k in range(100)]), 59.94)
    (frames := root / "P02" / "rgb_frames" / "P02_03").mkdir(parents=True)
    for k in range(30):
        Image.fromarray(encode_index(k)).save(frames / f"frame_{k + 1:010d}.jpg", quality=95)
    with open(root / "EPIC_100_video_info.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["video_id", "duration", "fps", "resolution"])
        w.writerows(
            [
                ["P01_01", 2.4, 50.0, "96x64"],
                ["P01_02", 1.67, 59.94005994005994, "96x64"],
                ["P02_03", 1.2, 25.0, "96x64"],
                ["P03_01", 100.0, 50.0, "1920x1080"],
            ]
        )
    for name, rows in (
        (
            "EPIC_100_train.csv",
            [
                _narr("P01_01", 0, 0.5, 1.2, "open drawer", 50),
                _narr("P01_01", 1, 2.1, 2.3, "take knife", 50),
                _narr("P02_03", 0, 0.0, 0.3, "wash cup", 25),
            ],
        ),
        ("EPIC_100_validation.csv", [_narr("P01_02", 0, 0.2, 0.4, "close tap", 59.94)]),
    ):
        with open(root / name, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(NARR_COLS)
            w.writerows(rows)
    return root


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
