"""Annotated video presets (ssv2, kinetics, openvid, howto100m, ego4d) on fixtures in each set's own layout: videos
whose frame k shows the number k (formats.encode_index) beside the set's annotation files; texts, time spans
narrowed to episode frames, a corrupt video skipped and counted, and `latentwm encode --source ssv2` that trains."""

import json
from pathlib import Path

import numpy as np
import pytest
from formats import encode_fn, encode_index, indices

from latentwm.cli import main
from latentwm.config import get_preset
from latentwm.data.clip_sets import make_clip_datasets
from latentwm.data.episodes import EpisodeError, narrations_in
from latentwm.data.latent_cache import Encoding, LatentCache, encode_to_cache
from latentwm.data.sources import load_source
from latentwm.data.sources.annotated_video import frame_spans, load_ego4d, load_howto100m, load_kinetics, load_ssv2
from latentwm.data.video import write_video
from latentwm.train.trainer import Trainer


def _video(path: Path, n: int, fps: float, first: int = 0, codec=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, np.stack([encode_index(first + k) for k in range(n)]), fps, codec=codec)
    return path


def _corrupt(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, np.uint8).tobytes())
    return path


def write_ssv2(root: Path) -> Path:
    vids = root / "20bn-something-something-v2"
    for vid, n, first in (("101", 12, 0), ("202", 10, 100), ("404", 8, 200)):
        _video(vids / f"{vid}.webm", n, 12, first, codec="libvpx")
    _corrupt(vids / "505.webm")
    row = lambda i, lab, tpl: dict(id=i, label=lab, template=tpl, placeholders=["x"])  # noqa: E731
    (root / "something-something-v2-train.json").write_text(
        json.dumps(
            [
                row("101", "putting a pen into a cup", "Putting [something] into [something]"),
                row("303", "not downloaded", "Tearing [something]"),
                row("505", "broken clip", "Moving [something]"),
            ]
        )
    )
    (root / "something-something-v2-validation.json").write_text(
        json.dumps([row("202", "pushing a box from left to right", "Pushing [something] from left to right")])
    )
    return root


@pytest.fixture(scope="module")
def ssv2(tmp_path_factory):
    return write_ssv2(tmp_path_factory.mktemp("ssv2"))


def test_frame_spans_narrow_seconds_to_frames():
    ts = np.arange(20) / 10  # frame j covers [j/10, j/10 + 0.1)
    assert frame_spans(
        ts, 0.1, [(0.55, 1.25, "a"), (1.95, 9.0, "b"), (2.5, 3.0, "gone"), (-np.inf, np.inf, "all")]
    ) == [[5, 13, "a"], [19, 20, "b"], [0, 20, "all"]]


def test_ssv2_labels_templates_and_a_corrupt_clip(ssv2, tmp_path, capsys):
    items = dict(load_ssv2(ssv2))
    assert sorted(items) == ["ssv2/101", "ssv2/202", "ssv2/404", "ssv2/505"]  # 303 is annotated, not on disk
    a = items["ssv2/101"]()
    assert (a.cameras, len(a), a.fps, a.actions) == (["main"], 12, 12.0, None)
    assert a.text == ["putting a pen into a cup"] and a.extras["narrations"] == [[0, 12, "putting a pen into a cup"]]
    assert a.extras["template"] == "Putting [something] into [something]" and a.extras["split"] == "train"
    assert indices(a.frames["main"].get([0, 11])) == [0, 11]
    b = items["ssv2/202"]()
    assert b.text == ["pushing a box from left to right"] and b.extras["split"] == "validation"
    assert items["ssv2/404"]().text == []  # a clip without a label (the test split) keeps empty text
    with pytest.raises(EpisodeError, match="505.webm"):
        items["ssv2/505"]()
    res = encode_to_cache(load_ssv2(ssv2), Encoding(encode_fn, "mean8"), tmp_path / "c", show_progress=False)
    assert (res["episodes"], res["skipped"]) == (3, 1) and "505.webm" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="something-something-v2-train.json.*annotations="):
        load_ssv2(ssv2 / "20bn-something-something-v2")


def test_kinetics_csv_and_clip_names(tmp_path):
    root = tmp_path / "k700"
    _video(root / "train" / "abseiling" / "aaaaaaaaaaa_000010_000020.mp4", 8, 8, 0)
    _video(root / "test" / "bbbbbbbbbbb.mp4", 8, 8, 50)  # saved by youtube id alone
    _corrupt(root / "train" / "abseiling" / "ccccccccccc_000001_000011.mp4")
    (root / "annotations").mkdir()
    (root / "annotations" / "train.csv").write_text(
        "label,youtube_id,time_start,time_end,split\nabseiling,aaaaaaaaaaa,10,20,train\n"
        "arm_wrestling,ccccccccccc,1,11,train\narm_wrestling,zzzzzzzzzzz,3,13,train\n"
    )
    (root / "annotations" / "test.csv").write_text("youtube_id,time_start,time_end,split\nbbbbbbbbbbb,0,10,test\n")
    items = dict(load_kinetics(root))
    assert sorted(items) == [
        "kinetics/aaaaaaaaaaa_000010_000020",
        "kinetics/bbbbbbbbbbb",
        "kinetics/ccccccccccc_000001_000011",
    ]
    a = items["kinetics/aaaaaaaaaaa_000010_000020"]()
    assert a.text == ["abseiling"] and a.extras["youtube_id"] == "aaaaaaaaaaa" and a.extras["time_start"] == 10
    b = items["kinetics/bbbbbbbbbbb"]()
    assert b.text == [] and b.extras["split"] == "test" and indices(b.frames["main"].get([0])) == [50]
    with pytest.raises(EpisodeError, match="ccccccccccc_000001_000011.mp4"):
        items["kinetics/ccccccccccc_000001_000011"]()
    with pytest.raises(ValueError, match="needs youtube_id"):
        (root / "annotations" / "val.csv").write_text("id,label\nx,y\n")
        load_kinetics(root)


def test_openvid_captions(tmp_path):
    root = tmp_path / "openvid"
    _video(root / "video" / "celebv_abc_2.mp4", 6, 6)
    _video(root / "video" / "panda_x.mp4", 6, 6, 30)
    (root / "OpenVid-1M.csv").write_text(
        "video,caption,aesthetic score,motion score,seconds\n"
        'celebv_abc_2.mp4,"A woman smiles, then turns.",5.1,2.0,1.0\n'
    )
    items = dict(load_source("openvid", root, size=32))
    assert sorted(items) == ["openvid/celebv_abc_2", "openvid/panda_x"]
    a = items["openvid/celebv_abc_2"]()
    assert a.text == ["A woman smiles, then turns."] and a.frames["main"].get([0]).shape == (1, 32, 32, 3)
    assert items["openvid/panda_x"]().text == []


def test_howto100m_timed_captions_cut_into_segments(tmp_path):
    root = tmp_path / "howto"
    _video(root / "videos" / "vid123.mp4", 40, 10)  # 4 s
    (root / "caption.json").write_text(
        json.dumps(
            {
                "vid123": {
                    "start": [0.55, 1.55, 3.55],
                    "end": [1.25, 3.05, 3.95],
                    "text": ["first", "second", "third"],
                },
                "absent": {"start": [0], "end": [1], "text": ["x"]},
            }
        )
    )
    items = dict(load_howto100m(root, segment_s=2.0))
    assert sorted(items) == ["howto100m/vid123@0000", "howto100m/vid123@0001"]
    s0, s1 = items["howto100m/vid123@0000"](), items["howto100m/vid123@0001"]()
    assert s0.extras["narrations"] == [[5, 13, "first"], [15, 20, "second"]] and s0.text == ["first", "second"]
    assert s1.extras["narrations"] == [[0, 11, "second"], [15, 20, "third"]]
    assert indices(s1.frames["main"].get([0])) == [20] and narrations_in(s1.extras, 12, 14) == []
    half = dict(load_howto100m(root, segment_s=None, fps=5))["howto100m/vid123"]()
    assert len(half) == 20 and half.extras["narrations"] == [[2, 7, "first"], [7, 16, "second"], [17, 20, "third"]]


def test_ego4d_narrations_passes_and_window(tmp_path):
    root = tmp_path / "ego4d_data"
    uid = "0a1b2c3d-1111-2222-3333-444455556666"
    _video(root / "v2" / "full_scale" / f"{uid}.mp4", 40, 10)
    n = lambda t, s: dict(timestamp_sec=t, timestamp_frame=int(t * 30), narration_text=s, annotation_uid="u")  # noqa
    (root / "v2" / "annotations").mkdir(parents=True)
    (root / "v2" / "annotations" / "narration.json").write_text(
        json.dumps(
            {
                uid: {
                    "narration_pass_1": {
                        "narrations": [n(1.05, "#C C opens the drawer"), n(3.05, "#O a man walks past")],
                        "summaries": [],
                    },
                    "narration_pass_2": {"narrations": [n(2.05, "#C C pulls a drawer")], "summaries": []},
                    "status": "complete",
                }
            }
        )
    )
    ep = dict(load_source("ego4d", root, segment_s=0))[f"ego4d/{uid}"]()
    assert ep.text == ["C opens the drawer", "a man walks past"]
    assert ep.extras["narrations"] == [[0, 21, "C opens the drawer"], [20, 40, "a man walks past"]]
    both = dict(load_ego4d(root, segment_s=None, passes="1,2", window_s=1.0))[f"ego4d/{uid}"]()
    assert both.extras["narrations"] == [
        [5, 16, "C opens the drawer"],
        [15, 26, "C pulls a drawer"],
        [25, 36, "a man walks past"],
    ]
    assert [k for k, _ in load_ego4d(root)] == [f"ego4d/{uid}@0000"]  # 4 s < the default 30 s segments


def test_latentwm_encode_source_ssv2_then_train(ssv2, tmp_path, capsys):
    out = tmp_path / "lat"
    assert (
        main(
            [
                "encode",
                "--preset",
                "tiny",
                "--source",
                "ssv2",
                "--root",
                str(ssv2),
                "--out-dir",
                str(out),
                "--text.name",
                "",
            ]
        )
        == 0
    )
    assert "1 skipped" in capsys.readouterr().out
    cache = LatentCache(out)
    assert cache.complete and len(cache.entries) == 3
    cfg = get_preset("tiny").replace(
        data__cache_dir=str(out),
        data__env_action_dim=0,
        data__frame_skip=1,
        data__eval_fraction=0.0,
        train__out_dir=str(tmp_path / "run"),
        train__steps=2,
        train__log_every=1,
    )
    train_set, _, extra = make_clip_datasets(cfg)
    assert Trainer(cfg, train_set, None, extra_state=extra, device="cpu").fit()["step"] == 2
