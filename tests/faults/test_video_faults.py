"""Video folders as users have them. Frames not on the grid 0, 1/fps, 2/fps, ...: a first frame at 0.5 s was skipped
whole; a variable-frame-rate file read at its "native" rate was stored with one average fps while its frames were
10–500 ms apart, with no warning — both are now read at the frames' own presentation times. A symlinked subfolder
was silently not followed."""

from fractions import Fraction

import av
import numpy as np
import pytest

from latentwm.data.sources.video_folder import load_video_folder, timeline


def _write(path, times_ms: list[int]) -> np.ndarray:
    """A video whose frame k is shown at times_ms[k] (a millisecond time base); frame k is gray level 10 k."""
    frames = np.stack([np.full((32, 32, 3), 10 * k, np.uint8) for k in range(len(times_ms))])
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=1000)  # a millisecond clock: any spacing is a whole number of ticks
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = 8_000_000
        stream.time_base = Fraction(1, 1000)
        for f, t in zip(frames, times_ms):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts, vf.time_base = t, Fraction(1, 1000)
            for packet in stream.encode(vf):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return frames


def _episode(root, **kw):
    items = load_video_folder(root, **kw)
    assert len(items) == 1
    return items[0][1]()


def test_a_video_starting_at_half_a_second_is_read_from_its_first_frame(tmp_path):
    (tmp_path / "v").mkdir()
    frames = _write(tmp_path / "v" / "late.mkv", [500 + 100 * k for k in range(12)])
    ep = _episode(tmp_path / "v")
    src = ep.frames["main"]
    assert len(src) == 12 and abs(ep.fps - 10) < 1e-6 and not ep.extras["variable_rate"]
    assert abs(src.timestamps[0] - 0.5) < 1e-6
    got = src.get(range(12))
    assert np.abs(got.mean((1, 2, 3)) - frames.mean((1, 2, 3))).max() < 3  # each frame read as itself
    ep5 = _episode(tmp_path / "v", fps=5.0)  # a chosen rate starts at the first frame too
    assert len(ep5.frames["main"]) == 6 and np.abs(ep5.frames["main"].get([1])[0].mean() - 20) < 3


def test_a_variable_rate_video_is_resampled_to_one_rate_with_a_warning(tmp_path):
    (tmp_path / "v").mkdir()
    times = [0, 10, 20, 520, 530, 1030, 1040, 1050, 1500, 1510]  # 10–500 ms apart
    _write(tmp_path / "v" / "phone.mkv", times)
    with pytest.warns(UserWarning, match="variable frame rate.*average"):
        ep = _episode(tmp_path / "v")
    src = ep.frames["main"]
    assert ep.extras["variable_rate"] and abs(ep.fps - 9 / 1.51) < 1e-3
    np.testing.assert_allclose(np.diff(src.timestamps), 1 / ep.fps)  # one spacing for the one fps it records
    got = src.get(range(len(src))).mean((1, 2, 3))
    # each grid point shows the frame nearest to it in time (no VideoError in the 500 ms gaps)
    want = [10 * int(np.argmin(np.abs(np.array(times) / 1000 - t))) for t in src.timestamps]
    assert np.abs(got - np.array(want)).max() < 3


def test_timeline_keeps_constant_rate_frames_as_they_are():
    times = np.arange(20) / 30.0
    line = timeline(times, None, header_fps=30.0)
    np.testing.assert_array_equal(line.timestamps, times)
    assert line.fps == 30.0 and line.tolerance_s is None and not line.variable_rate
    assert len(timeline(times, None, start_s=0.2, end_s=0.4, header_fps=30.0).timestamps) == 6
    one = timeline(np.array([0.5]), 4.0)  # a single frame at a chosen rate: that rate, from the frame
    assert one.fps == 4.0 and one.timestamps.tolist() == [0.5]


def test_symlinked_subfolders_are_followed_once_and_loops_end(tmp_path):
    """A symlinked subfolder was silently not followed; now it is, each real folder once (a link back up the tree
    does not loop), and hidden files and folders stay out."""
    from latentwm.data.sources.video_folder import find_videos

    real = tmp_path / "elsewhere" / "clips"
    real.mkdir(parents=True)
    (real / "a.mp4").write_bytes(b"x")
    root = tmp_path / "root"
    (root / ".hidden").mkdir(parents=True)
    (root / ".hidden" / "h.mp4").write_bytes(b"x")
    (root / "b.mp4").write_bytes(b"x")
    (root / "linked").symlink_to(real, target_is_directory=True)
    (real / "loop").symlink_to(root, target_is_directory=True)
    names = [p.name for p in find_videos(root)]
    assert sorted(names) == ["a.mp4", "b.mp4"]
