"""Video reader: fixtures are MP4s whose frames encode their own index as 12 black/white vertical stripes (binary,
formats.encode_index), which survives H.264 compression and resizing, so every test can check *which* frame came
back."""

import importlib.util
import math
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from formats import H, W, decode_index, encode_index, indices

from latentwm.data import video
from latentwm.data.video import VideoError, iter_frames, probe_video, read_clip, read_frames, write_video

NTSC = Fraction(60000, 1001)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    # 60 s at 10 fps: x264's default GOP (250 frames) gives keyframes at 0, 25, 50 s, so reads late in the file and
    # jumps > RESEEK_GAP_S exercise seeking.
    v10 = d / "v10.mp4"
    write_video(v10, np.stack([encode_index(i) for i in range(600)]), 10)
    v5994 = d / "v5994.mp4"
    write_video(v5994, np.stack([encode_index(i) for i in range(120)]), 59.94)  # recognised as 60000/1001
    return {"v10": v10, "v5994": v5994}


def test_probe(videos):
    info = probe_video(videos["v10"])
    assert (info.fps, info.num_frames, info.width, info.height, info.codec) == (10.0, 600, W, H, "h264")
    assert info.duration_s == pytest.approx(60.0)
    assert info.path == str(videos["v10"])
    info = probe_video(videos["v5994"])
    assert info.fps == pytest.approx(float(NTSC)) and info.num_frames == 120
    assert info.duration_s == pytest.approx(120 / float(NTSC))


def test_frame_times_from_the_packets(videos):
    # read from the packets without decoding; the stream's time base is read while the container is open (a closed
    # container's streams refuse every attribute from PyAV 18.1.1 on)
    t = video.frame_times(videos["v10"])
    assert t.shape == (600,) and np.allclose(t, np.arange(600) / 10.0)
    t = video.frame_times(videos["v5994"])
    assert t.shape == (120,) and np.allclose(t, np.arange(120) / float(NTSC), atol=1e-6)


def test_read_frames_nearest_unordered_duplicates(videos):
    # jitter within half a period must still pick the frame; far jumps (> RESEEK_GAP_S) force re-seeks
    ts = [57.04, 0.0, 0.0, 12.96, 59.9, 3.3, 12.96, 0.049, 26.01]
    assert indices(read_frames(videos["v10"], ts)) == [570, 0, 0, 130, 599, 33, 130, 0, 260]
    assert indices(read_frames(videos["v10"], np.array([30.0]))) == [300]
    out = read_frames(videos["v10"], [1.0, 2.0])
    assert out.dtype == np.uint8 and out.shape == (2, H, W, 3)


def test_seeking_decodes_little(videos, monkeypatch):
    # Late frames and far jumps are reached by seeking to the keyframe before them (x264: at most 25 s apart), not by
    # decoding the whole file.
    decoded = []
    real = video._decode

    def counting(*args):
        for item in real(*args):
            decoded.append(item[0])
            yield item

    monkeypatch.setattr(video, "_decode", counting)
    assert indices(read_frames(videos["v10"], [57.0, 57.5])) == [570, 575]
    assert len(decoded) <= 80 and min(decoded) >= 50.0  # not the 575 frames before 57.5 s
    decoded.clear()
    assert indices(read_frames(videos["v10"], [1.0, 27.0])) == [10, 270]  # 26 s gap: re-seek to the 25 s keyframe
    assert len(decoded) <= 50


def test_read_frames_ntsc(videos):
    idx = np.array([119, 0, 45, 45, 7, 100])
    ts = idx * 1001 / 60000 + np.array([0.0, 0.004, -0.005, 0.007, 0.0, -0.008])  # < half a period (8.3 ms)
    assert indices(read_frames(videos["v5994"], ts)) == idx.tolist()


def test_resize(videos):
    out = read_frames(videos["v10"], [4.0, 0.7], size=48)
    assert out.shape == (2, 48, 48, 3) and indices(out) == [40, 7]
    out = read_frames(videos["v10"], [4.0, 0.7], size=(32, 72))
    assert out.shape == (2, 32, 72, 3) and indices(out) == [40, 7]
    assert read_frames(videos["v10"], [], size=(32, 72)).shape == (0, 32, 72, 3)


def test_resize_is_antialiased_like_torch_bicubic(tmp_path):
    # A fine checkerboard aliases badly without antialiasing; swscale's bicubic must stay close to
    # F.interpolate(bicubic, antialias=True) on the full-size decode.
    y, x = np.mgrid[0:240, 0:320]
    img = 127 + 80 * np.sin(x / 17.0) * np.cos(y / 11.0) + 40 * ((x // 2 + y // 2) % 2)
    img = np.repeat(np.clip(img, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)
    p = tmp_path / "tex.mp4"
    write_video(p, np.stack([img, img]), 10, crf=0)  # lossless: keep the fine pattern
    full = torch.from_numpy(read_frames(p, [0.0])).permute(0, 3, 1, 2).float()
    small = read_frames(p, [0.0], size=56).astype(np.float64)  # non-integer factors: aliasing shows
    for antialias, bound in ((True, lambda d: d < 3.0), (False, lambda d: d > 8.0)):
        ref = F.interpolate(full, size=(56, 56), mode="bicubic", antialias=antialias).clamp(0, 255)
        diff = np.abs(small - ref.permute(0, 2, 3, 1).numpy()).mean()
        assert bound(diff), (antialias, diff)


def test_read_clip(videos):
    assert indices(read_clip(videos["v10"], 50.0, 5, fps=5.0)) == [500, 502, 504, 506, 508]
    assert indices(read_clip(videos["v5994"], 0.5, 3, fps=float(NTSC) / 2)) == [30, 32, 34]


def test_iter_frames_native_and_resampled(videos):
    got = list(iter_frames(videos["v5994"]))
    assert len(got) == 120
    assert [t for t, _ in got] == pytest.approx([i * 1001 / 60000 for i in range(120)])
    assert indices(f for _, f in got) == list(range(120))

    got = list(iter_frames(videos["v5994"], fps=10.0, size=32))
    duration = 120 * 1001 / 60000
    assert len(got) == math.ceil(duration * 10)  # 0, 0.1, ..., 2.0: grid points while the last frame is on screen
    assert [t for t, _ in got] == pytest.approx([k / 10 for k in range(len(got))])
    assert indices(f for _, f in got) == [min(round(k / 10 * 60000 / 1001), 119) for k in range(len(got))]
    assert got[0][1].shape == (32, 32, 3)

    got = list(iter_frames(videos["v10"], fps=2.0, start_s=40.0, end_s=45.0))
    assert [t for t, _ in got] == pytest.approx([40.0 + k / 2 for k in range(11)])
    assert indices(f for _, f in got) == list(range(400, 451, 5))
    got = list(iter_frames(videos["v10"], start_s=58.0, end_s=58.5))
    assert indices(f for _, f in got) == [580, 581, 582, 583, 584, 585]


def test_past_end_and_tolerance(videos):
    p = videos["v10"]
    with pytest.raises(VideoError, match=rf"{p.name}.*60\.5"):
        read_frames(p, [1.0, 60.5])
    assert indices(read_frames(p, [60.0])) == [599]  # 1 period after the last frame: within the default 1.5
    with pytest.raises(VideoError, match=str(p.name)):
        read_frames(p, [60.0], tolerance_s=0.05)
    with pytest.raises(VideoError, match=str(p.name)):
        read_frames(p, [-1.0])


def test_missing_and_garbage(tmp_path):
    missing = tmp_path / "nope.mp4"
    for fn in (probe_video, lambda q: read_frames(q, [0.0]), lambda q: list(iter_frames(q))):
        with pytest.raises(VideoError, match="nope.mp4"):
            fn(missing)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    with pytest.raises(VideoError, match="garbage.mp4"):
        probe_video(garbage)
    with pytest.raises(VideoError, match="garbage.mp4"):
        read_frames(garbage, [0.0])
    audio_only = tmp_path / "audio.wav"
    with av.open(str(audio_only), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    with pytest.raises(VideoError, match="no video stream"):
        probe_video(audio_only)


def _noisy_video(path, n=100, faststart=False):
    # noise makes every frame cost bytes, so cutting the file in half cuts the frames roughly in half
    rng = np.random.default_rng(0)
    frames = np.stack([encode_index(i) for i in range(n)]).astype(np.int16)
    frames = np.clip(frames + rng.integers(-20, 20, frames.shape), 0, 255).astype(np.uint8)
    write_video(path, frames, 10, faststart=faststart)


def test_truncated_index_at_end(tmp_path):
    full = tmp_path / "full.mp4"
    _noisy_video(full)  # moov (index) is written last, so half the bytes means no index at all
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(VideoError, match="cut.mp4"):
        read_frames(cut, [0.0])


def test_truncated_index_first_decodes_partially_then_raises(tmp_path):
    full = tmp_path / "full.mp4"
    _noisy_video(full, faststart=True)
    data = full.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    assert probe_video(cut).num_frames == 100  # the header still promises everything
    assert indices(read_frames(cut, [0.0, 1.0])) == [0, 10]  # what is there is right
    for ts in ([0.0, 9.0], [9.5]):
        with pytest.raises(VideoError, match="cut.mp4"):
            read_frames(cut, ts)
    with pytest.raises(VideoError, match="cut.mp4"):
        list(iter_frames(cut))
    with pytest.raises(VideoError, match="cut.mp4"):
        list(iter_frames(cut, fps=2.0))

    # cut exactly at a packet boundary: no corrupt packet, only the header's duration tells
    with av.open(str(full)) as c:
        pos = next(pk.pos for pk in c.demux(video=0) if pk.pts is not None and pk.pts * pk.time_base >= 6.0)
    cut.write_bytes(data[:pos])
    with pytest.raises(VideoError, match="cut.mp4.*truncated"):
        list(iter_frames(cut))
    with pytest.raises(VideoError, match="cut.mp4"):
        read_frames(cut, [8.0])


def test_write_video_roundtrip(tmp_path):
    frames = np.stack([encode_index(i) for i in range(12)])
    for codec in ("libx264", "mpeg4"):
        if codec not in av.codecs_available:
            continue
        p = tmp_path / f"{codec}.mp4"
        write_video(p, frames, 8, codec=codec)
        assert indices(read_frames(p, np.arange(12) / 8)) == list(range(12))
    odd = np.full((5, 33, 47, 3), 200, np.uint8)  # 4:2:0 needs even sizes: padded by edge replication
    write_video(tmp_path / "odd.mp4", odd, 5)
    back = read_frames(tmp_path / "odd.mp4", [0.0])
    assert back.shape == (1, 34, 48, 3) and abs(back.astype(int) - 200).max() <= 3
    gif = tmp_path / "clip.gif"
    write_video(gif, frames, 10)
    from PIL import Image

    with Image.open(gif) as im:
        assert (im.n_frames, im.size, im.info["duration"]) == (12, (W, H), 100)
        im.seek(5)
        assert decode_index(np.asarray(im.convert("RGB"))) == 5
    with pytest.raises(ValueError):
        write_video(tmp_path / "bad.mp4", frames.astype(np.float32), 10)


@pytest.mark.skipif(importlib.util.find_spec("torchcodec") is not None, reason="torchcodec installed")
def test_torchcodec_backend_requested_but_missing(videos, monkeypatch):
    monkeypatch.setenv("LATENTWM_VIDEO_BACKEND", "torchcodec")
    with pytest.raises(ImportError, match="torchcodec"):
        read_frames(videos["v10"], [0.0])
    monkeypatch.setenv("LATENTWM_VIDEO_BACKEND", "auto")  # falls back to PyAV
    assert indices(read_frames(videos["v10"], [0.0])) == [0]


def test_torchcodec_branch_with_a_fake_decoder(videos, monkeypatch):
    # torchcodec is not installed here; a stand-in with its documented semantics (get_frames_played_at: the frame
    # whose [pts, pts + duration) holds t; NHWC uint8 FrameBatch) checks our glue: nearest shift, tolerance, resize.
    import sys
    import types
    from dataclasses import dataclass

    @dataclass
    class FrameBatch:
        data: torch.Tensor
        pts_seconds: torch.Tensor
        duration_seconds: torch.Tensor

    class VideoDecoder:
        def __init__(self, source, dimension_order="NCHW", seek_mode="exact"):
            assert dimension_order == "NHWC"
            with av.open(source) as c:
                self._frames = [(f.time, f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
            fps = 10.0
            self.metadata = types.SimpleNamespace(
                average_fps=fps, begin_stream_seconds=0.0, end_stream_seconds=self._frames[-1][0] + 1 / fps
            )

        def get_frames_played_at(self, seconds):
            idx = []
            for t in seconds:
                if not self.metadata.begin_stream_seconds <= t < self.metadata.end_stream_seconds:
                    raise IndexError(f"{t} out of range")
                idx.append(max(i for i, (p, _) in enumerate(self._frames) if p <= t + 1e-9))
            data = torch.from_numpy(np.stack([self._frames[i][1] for i in idx]))
            pts = torch.tensor([self._frames[i][0] for i in idx], dtype=torch.float64)
            return FrameBatch(data, pts, torch.full_like(pts, 0.1))

    fake = types.ModuleType("torchcodec")
    fake.decoders = types.SimpleNamespace(VideoDecoder=VideoDecoder)
    monkeypatch.setitem(sys.modules, "torchcodec", fake)
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", fake.decoders)
    monkeypatch.setenv("LATENTWM_VIDEO_BACKEND", "torchcodec")
    ts = [3.04, 0.0, 0.96, 3.04, 59.9, 60.0]
    assert indices(read_frames(videos["v10"], ts)) == [30, 0, 10, 30, 599, 599]
    out = read_frames(videos["v10"], [1.0, 2.0], size=(32, 48))
    assert out.shape == (2, 32, 48, 3) and out.dtype == np.uint8 and indices(out) == [10, 20]
    with pytest.raises(VideoError, match=r"v10.mp4.*60\.5"):
        read_frames(videos["v10"], [1.0, 60.5])
    with pytest.raises(VideoError, match="nope.mp4"):
        read_frames(videos["v10"].with_name("nope.mp4"), [0.0])
