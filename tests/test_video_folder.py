"""Video-folder source: nested videos of several rates and containers, captions CSV/JSON, segments, a corrupt file
skipped by encode_to_cache while the rest encodes. Fixture frame k shows the number k (formats.encode_index)."""

import json
from pathlib import Path

import numpy as np
import pytest
from formats import encode_fn, encode_index, indices

from latentwm.data.clips import LatentClipDataset
from latentwm.data.episodes import EpisodeError
from latentwm.data.latent_cache import Encoding, LatentCache, encode_to_cache
from latentwm.data.sources.video_folder import load_video_folder, read_captions, sample_grid, segments
from latentwm.data.video import write_video


def write_folder(root: Path, corrupt: bool = False) -> Path:
    (root / "kitchen").mkdir(parents=True)
    write_video(root / "kitchen" / "a.mp4", np.stack([encode_index(k) for k in range(24)]), 12)
    write_video(root / "kitchen" / "b.MKV", np.stack([encode_index(100 + k) for k in range(30)]), 30)
    write_video(root / "c.mov", np.stack([encode_index(200 + k) for k in range(16)]), 8)
    (root / "notes.txt").write_text("not a video")
    if corrupt:
        (root / "broken.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, np.uint8).tobytes())
    (root / "captions.csv").write_text(
        'video,caption\nkitchen/a.mp4,"stir the pot"\nkitchen/a,"a second one"\nc,"close the door"\n'
    )
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("vf") / "myvids")


def test_grid_and_segments():
    assert sample_grid(24, 12.0, None).tolist() == pytest.approx(np.arange(24) / 12)
    assert len(sample_grid(24, 12.0, 4.0)) == 8 and len(sample_grid(25, 12.0, 4.0)) == 9
    assert sample_grid(24, 12.0, None, 1.0, 1.5).tolist() == pytest.approx(np.arange(12, 18) / 12)
    assert segments(10.0, None) == [(0.0, 10.0)]
    assert segments(10.0, 4.0) == [(0.0, 4.0), (4.0, 8.0), (8.0, 10.0)]
    assert segments(8.5, 4.0) == [(0.0, 4.0), (4.0, 8.5)]  # a short tail joins the last piece


def test_listing_frames_captions(folder):
    items = dict(load_video_folder(folder))
    assert sorted(items) == ["myvids/c", "myvids/kitchen/a", "myvids/kitchen/b"]
    a = items["myvids/kitchen/a"]()
    assert a.dataset == "myvids" and a.cameras == ["main"] and a.fps == 12 and len(a) == 24 and a.actions is None
    assert a.text == ["stir the pot", "a second one"]
    assert indices(a.frames["main"].get(range(24))) == list(range(24))
    b = items["myvids/kitchen/b"]()
    assert b.fps == 30 and len(b) == 30 and b.text == []
    assert indices(b.frames["main"].get([0, 29])) == [100, 129]
    assert items["myvids/c"]().text == ["close the door"]


def test_target_fps_and_segments(folder):
    items = dict(load_video_folder(folder, fps=6, segment_s=1.0, camera="ego", dataset="vids"))
    assert sorted(items) == [
        "vids/c@0000",
        "vids/c@0001",
        "vids/kitchen/a@0000",
        "vids/kitchen/a@0001",
        "vids/kitchen/b@0000",
    ]
    a1 = items["vids/kitchen/a@0001"]()
    assert a1.cameras == ["ego"] and a1.fps == 6 and len(a1) == 6
    assert indices(a1.frames["ego"].get(range(6))) == list(range(12, 24, 2))
    b = items["vids/kitchen/b@0000"]()
    assert indices(b.frames["ego"].get(range(len(b)))) == [100 + 5 * k for k in range(6)]


def test_json_captions(tmp_path, folder):
    ss = tmp_path / "ssv2.json"
    ss.write_text(json.dumps([{"id": "a", "label": "pushing something", "template": "Pushing [something]"}]))
    assert read_captions(ss) == {"a": ["pushing something"]}
    d = tmp_path / "d.json"
    d.write_text(json.dumps({"kitchen/b.MKV": ["x", "y"]}))
    items = dict(load_video_folder(folder, captions=d))
    assert items["myvids/kitchen/b"]().text == ["x", "y"] and items["myvids/kitchen/a"]().text == []
    bad = tmp_path / "bad.csv"
    bad.write_text("foo,bar\n1,2\n")
    with pytest.raises(ValueError, match="bad.csv"):
        read_captions(bad)


def test_corrupt_video_skipped_and_reported(tmp_path, capsys):
    root = write_folder(tmp_path / "vids", corrupt=True)
    items = load_video_folder(root)
    with pytest.raises(EpisodeError, match="broken.mp4"):
        dict(items)["vids/broken"]()
    out = tmp_path / "cache"
    res = encode_to_cache(items, Encoding(encode_fn, "mean8"), out, episodes_per_shard=2, show_progress=False)
    assert res == dict(
        shards_written=["shard-000000.tar", "shard-000001.tar"], episodes=3, skipped=1, complete=True, num_shards=2
    )
    assert "broken.mp4" in capsys.readouterr().out
    cache = LatentCache(out)
    assert [s["item"] for s in cache.skipped] == ["vids/broken"] and "broken.mp4" in cache.skipped[0]["error"]
    assert sorted(e["episode_id"] for e in cache.entries) == ["c", "kitchen/a", "kitchen/b"]
    ds = LatentClipDataset(cache, clip_len=4, split="all")
    s = ds[0]
    assert s.actions is None and s.meta.camera == "main" and s.meta.dataset == "vids"
