"""Video decoding: probe, nearest-timestamp frame reads with seeking, streaming iteration, and a small writer.

Timestamps are presentation times in seconds as stored in the container (``pts * time_base``), the convention
LeRobot/DROID episode indices use; for almost every file the first frame is at 0. A request is answered with the
frame whose presentation time is nearest to it, and must lie within ``tolerance_s`` (default 1.5 frame periods) of
it -- anything else (past the end, a hole in a truncated file) raises :class:`VideoError` instead of returning a
wrong frame.

Backend: PyAV is the default and the tested path. ``LATENTWM_VIDEO_BACKEND=torchcodec`` switches ``read_frames`` to
torchcodec (optional, faster random access); ``auto`` uses it when importable. It is opt-in because it is not
exercised by the CPU test suite.

Resize: swscale (PyAV ``to_ndarray(width=, height=, interpolation="BICUBIC")``) converts YUV→RGB and resizes in one
pass; its bicubic filter is widened by the downscale factor, so it is antialiased like
``F.interpolate(bicubic, antialias=True)`` (tests/test_video.py holds them within a few gray levels) and it is
several times faster than decoding at full size and resizing in torch. The torchcodec path resizes with torch.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F

from latentwm.config.base import LatentwmError

# Decoding forward is cheaper than a seek (which restarts at a keyframe) only for short gaps; beyond this many
# seconds between consecutive requested times we seek again.
RESEEK_GAP_S = 3.0
# Requests are met by the nearest frame; it must lie within this many frame periods unless tolerance_s is given.
DEFAULT_TOLERANCE_PERIODS = 1.5
# A stream whose last decodable frame ends more than this many periods before the header's duration is truncated.
TRUNCATION_SLACK_PERIODS = 3.0

Size = int | tuple[int, int] | None
PathLike = str | os.PathLike


class VideoError(LatentwmError, RuntimeError):
    """A video file is missing, truncated or corrupt, has no video stream, or lacks a requested frame."""


@dataclass(frozen=True)
class VideoInfo:
    path: str
    fps: float
    num_frames: int  # from the container, else estimated as round(duration_s * fps)
    duration_s: float
    width: int
    height: int
    codec: str


def _hw(size: Size) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def _open(path: PathLike, threads: str = "SLICE") -> tuple[av.container.InputContainer, av.VideoStream]:
    p = Path(path)
    if not p.is_file():
        raise VideoError(f"{p}: video file not found")
    try:
        container = av.open(str(p), metadata_errors="replace")
    except (av.FFmpegError, OSError, ValueError) as e:
        raise VideoError(f"{p}: cannot open video (corrupt or truncated?): {e}") from e
    if not container.streams.video:
        container.close()
        raise VideoError(f"{p}: no video stream")
    stream = container.streams.video[0]
    # Random access (read_frames, many DataLoader workers) keeps slice threads only; whole-video streaming
    # (iter_frames) adds frame threads: ~1.5x throughput on 2 cores (640x360 H.264) at the cost of more threads.
    stream.thread_type = threads
    return container, stream


def _fps(stream: av.VideoStream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if rate:
        return float(rate)
    return float(1 / stream.time_base) if stream.time_base else 30.0  # last resort: one frame per tick


def _start_s(stream: av.VideoStream) -> float:
    return float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0


def probe_video(path: PathLike) -> VideoInfo:
    """Read container/stream headers (no decoding)."""
    container, stream = _open(path)
    with container:
        fps = _fps(stream)
        if stream.duration is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = stream.frames / fps if stream.frames else 0.0
        num = stream.frames or int(round(duration * fps))
        cc = stream.codec_context
        # canonical_name is the format ("av1"), cc.name the decoder that reads it ("libdav1d")
        return VideoInfo(str(path), fps, int(num), duration, cc.width, cc.height, cc.codec.canonical_name)


@functools.lru_cache(maxsize=8)
def _frame_times(path: str, mtime_ns: int) -> tuple[float, ...]:
    container, stream = _open(path)
    with container:
        base = stream.time_base  # read while open: a closed container's streams refuse every attribute (PyAV 18.1.1)
        try:
            pts = [p.pts for p in container.demux(stream) if p.pts is not None and p.size]
        except av.FFmpegError as e:
            raise VideoError(f"{path}: cannot read the packet timestamps: {e}") from e
    return tuple(sorted(float(t * base) for t in pts))


def frame_times(path: PathLike) -> np.ndarray:
    """The presentation time (s) of every frame of the video stream, ascending, read from the packets without
    decoding (cached per file: the segments of one long video share one read). Raises VideoError when the file has
    no timestamped frame."""
    path = str(path)
    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError as e:
        raise VideoError(f"{path}: cannot read the video file: {e}") from e
    times = np.asarray(_frame_times(path, mtime), np.float64)
    if not len(times):
        raise VideoError(f"{path}: no timestamped video frames")
    return times


def _to_rgb(frame: av.VideoFrame, hw: tuple[int, int] | None) -> np.ndarray:
    if hw is None:
        return frame.to_ndarray(format="rgb24")
    return frame.to_ndarray(format="rgb24", height=hw[0], width=hw[1], interpolation="BICUBIC")


def _match(container, stream, path, targets: Iterator[float], tol: float, end_tol: float) -> Iterator[tuple]:
    """Yield ``(target, frame_time, av.VideoFrame)`` for ascending targets, frame = nearest decoded frame.

    Seeks to the keyframe before the first target and again whenever the next target is more than RESEEK_GAP_S
    ahead of the decode position. Yields ``(target, last_frame_time, None)`` once and stops when the stream ends
    more than ``end_tol`` before a target. Raises VideoError on decode errors or when the nearest frame is
    farther than ``tol``.
    """
    period = 1.0 / _fps(stream)
    start = _start_s(stream)
    t = next(targets, None)
    fresh = True  # nothing decoded yet: no seek needed to begin at the stream start
    while t is not None:
        # Seek a frame period early so the frame just before t (possibly the nearest) is decoded too; back off
        # further if the demuxer lands past t (seen with some broken indices).
        for backoff in (period, 10.0, math.inf):
            seek_s = max(t - backoff, start)
            if seek_s > start or not fresh:
                _seek(container, stream, path, seek_s)
            fresh = False
            frames = _decode(container, stream, path, period, seek_s)
            first = next(frames, None)
            if first is None or first[0] <= t or seek_s <= start:
                break
        seeked_for = t
        prev: tuple[float, av.VideoFrame] | None = None
        cur = first
        while cur is not None and t is not None:
            p, frame = cur
            while t is not None and p >= t:
                best = prev if prev is not None and t - prev[0] <= p - t else cur
                if abs(best[0] - t) > tol:
                    raise VideoError(f"{path}: no frame within {tol:.4f}s of t={t:.4f}s (nearest {best[0]:.4f}s)")
                yield t, best[0], best[1]
                t = next(targets, None)
            if t is not None and t - p > RESEEK_GAP_S and t != seeked_for:
                break  # far ahead: seek instead of decoding the gap (once per target: a long GOP may not move us)
            prev = cur
            cur = next(frames, None)
        if cur is None and t is not None:  # stream ended before t
            while t is not None and prev is not None and t - prev[0] <= end_tol:
                yield t, prev[0], prev[1]
                t = next(targets, None)
            if t is not None:
                yield t, (prev[0] if prev is not None else math.nan), None
                return


def _seek(container, stream, path, seconds: float) -> None:
    """Seek to the keyframe at or before ``seconds`` (stream time); the decoder is flushed by PyAV."""
    try:
        container.seek(max(int(seconds / stream.time_base), 0), stream=stream, backward=True, any_frame=False)
    except av.FFmpegError as e:
        raise VideoError(f"{path}: cannot seek to t={seconds:.4f}s (past the end or corrupt index?): {e}") from e


def _decode(container, stream, path, period: float, from_s: float) -> Iterator[tuple[float, av.VideoFrame]]:
    """Decode forward from the current position (last seek target ``from_s``), yielding ``(time_s, frame)`` in
    presentation order.

    Frame-threaded decoding swallows the error a truncated last packet causes and simply stops early, so besides
    decoder errors we check the demuxer's corrupt-packet and the decoder's corrupt-frame flags, and on reaching the
    end compare the last frame with the duration the header promises.
    """
    last = -math.inf
    try:
        for packet in container.demux(stream):
            if packet.is_corrupt:
                raise VideoError(f"{path}: corrupt or truncated packet after t={last:.4f}s")
            for frame in packet.decode():
                if frame.is_corrupt:
                    raise VideoError(f"{path}: corrupt frame after t={last:.4f}s")
                if frame.pts is not None:
                    last = float(frame.pts * stream.time_base)
                else:  # rare (raw streams): assume constant rate
                    last = last + period if last > -math.inf else _start_s(stream)
                yield last, frame
    except av.FFmpegError as e:
        raise VideoError(f"{path}: decode error after t={last:.4f}s: {e}") from e
    if stream.duration is not None:
        header_end = _start_s(stream) + float(stream.duration * stream.time_base)
        # from_s: a seek past the end that decodes nothing is "past the end", not truncation
        if max(last, from_s) + period < header_end - TRUNCATION_SLACK_PERIODS * period:
            raise VideoError(
                f"{path}: decodable frames end at t={last:.4f}s but the header says the stream lasts until "
                f"{header_end:.4f}s (truncated file?)"
            )


def read_frames(
    path: PathLike, timestamps: Sequence[float] | np.ndarray, size: Size = None, tolerance_s: float | None = None
) -> np.ndarray:
    """Frames nearest to ``timestamps`` (seconds; any order, duplicates allowed) → uint8 ``(T, H, W, 3)``.

    ``size``: int → square (size, size) resize; (H, W) tuple; None keeps the native size. Raises VideoError when
    a timestamp has no frame within ``tolerance_s`` (default 1.5 frame periods), e.g. past the end of the stream.
    """
    ts = np.asarray(timestamps, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(ts)):
        raise ValueError(f"non-finite timestamps requested from {path}")
    backend = os.environ.get("LATENTWM_VIDEO_BACKEND", "pyav").lower()
    if backend not in ("pyav", "torchcodec", "auto"):
        raise ValueError(f"LATENTWM_VIDEO_BACKEND must be pyav, torchcodec or auto, not {backend!r}")
    if backend != "pyav" and len(ts):
        try:
            import torchcodec  # noqa: F401
        except ImportError as e:
            if backend == "torchcodec":
                raise ImportError("LATENTWM_VIDEO_BACKEND=torchcodec but torchcodec is not installed") from e
        else:
            return _read_frames_torchcodec(path, ts, size, tolerance_s)
    hw = _hw(size)
    container, stream = _open(path)
    with container:
        tol = tolerance_s if tolerance_s is not None else DEFAULT_TOLERANCE_PERIODS / _fps(stream)
        if not len(ts):
            h, w = hw or (stream.codec_context.height, stream.codec_context.width)
            return np.zeros((0, h, w, 3), np.uint8)
        order = np.argsort(ts, kind="stable")
        out: np.ndarray | None = None
        k = 0
        last_key, last_rgb = None, None  # neighbouring requests often share a frame: convert it once
        for t, p, frame in _match(container, stream, path, iter(ts[order].tolist()), tol, tol):
            if frame is None:
                last = f"last frame at {p:.4f}s" if p == p else "nothing decodable there"
                raise VideoError(f"{path}: timestamp {t:.4f}s is past the end of the stream ({last})")
            if p != last_key:
                last_key, last_rgb = p, _to_rgb(frame, hw)
            if out is None:
                out = np.empty((len(ts), *last_rgb.shape), np.uint8)
            out[order[k]] = last_rgb
            k += 1
    assert out is not None and k == len(ts)
    return out


def _read_frames_torchcodec(path, ts: np.ndarray, size: Size, tolerance_s: float | None) -> np.ndarray:
    """torchcodec (>= 0.2) branch: opt-in, untested on CPU CI. ``get_frames_played_at(t)`` returns the frame whose
    [pts, pts + duration) contains t, so asking at t + half a period gives the nearest frame for constant-rate video.
    """
    from torchcodec.decoders import VideoDecoder

    if not Path(path).is_file():
        raise VideoError(f"{path}: video file not found")
    try:
        # approximate: no full-file scan per call (hour-long EPIC files); the pts check below guards the result
        dec = VideoDecoder(str(path), dimension_order="NHWC", seek_mode="approximate")
        md = dec.metadata
        fps = float(md.average_fps)
        query = np.clip(ts + 0.5 / fps, md.begin_stream_seconds, md.end_stream_seconds - 1e-6)
        batch = dec.get_frames_played_at(query.tolist())
    except Exception as e:  # torchcodec raises RuntimeError/ValueError/IndexError from C++
        raise VideoError(f"{path}: torchcodec failed: {e}") from e
    tol = tolerance_s if tolerance_s is not None else DEFAULT_TOLERANCE_PERIODS / fps
    err = np.abs(batch.pts_seconds.double().numpy() - ts)
    if (err > tol).any():
        bad = int(err.argmax())
        raise VideoError(f"{path}: no frame within {tol:.4f}s of timestamp {ts[bad]:.4f}s (past the end?)")
    data = batch.data
    hw = _hw(size)
    if hw is not None and tuple(data.shape[1:3]) != hw:
        x = data.permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=hw, mode="bicubic", antialias=True, align_corners=False)
        data = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return data.contiguous().numpy()


def read_clip(path: PathLike, start_s: float, num_frames: int, fps: float, size: Size = None) -> np.ndarray:
    """``num_frames`` frames at ``start_s + k / fps`` → uint8 ``(num_frames, H, W, 3)``."""
    return read_frames(path, start_s + np.arange(num_frames) / fps, size=size)


def iter_frames(
    path: PathLike, fps: float | None = None, size: Size = None, start_s: float = 0.0, end_s: float | None = None
) -> Iterator[tuple[float, np.ndarray]]:
    """Stream ``(timestamp_s, frame (H, W, 3) uint8)`` over [start_s, end_s] without holding the video in memory.

    ``fps=None`` yields every native frame with its own timestamp; otherwise the grid ``start_s + k / fps``
    (starting no earlier than the first frame) is resampled by nearest frame, stopping at ``end_s`` or when the
    last frame's display interval ends. Raises VideoError if the file turns out truncated or corrupt.
    """
    if fps is not None and not fps > 0:
        raise ValueError(f"iter_frames fps must be positive, got {fps}")
    hw = _hw(size)
    container, stream = _open(path, threads="AUTO")
    with container:
        end = math.inf if end_s is None else end_s
        if fps is None:
            period = 1.0 / _fps(stream)
            from_s = _start_s(stream)
            if start_s > from_s:
                from_s = start_s - period
                _seek(container, stream, path, from_s)
            for p, frame in _decode(container, stream, path, period, from_s):
                if p > end + 1e-9:
                    break
                if p >= start_s - 1e-9:
                    yield p, _to_rgb(frame, hw)
            return
        t0 = max(start_s, _start_s(stream))
        grid = itertools.takewhile(lambda t: t <= end + 1e-9, (t0 + k / fps for k in itertools.count()))
        period = 1.0 / _fps(stream)
        # Past the last frame, keep grid points while it is still on screen (t < last + period, so the count is
        # ceil(duration * fps); 1e-6 absorbs float error in k / fps); holes inside the stream still raise.
        end_tol = period - 1e-6
        last_key, last_rgb = None, None
        for t, p, frame in _match(container, stream, path, grid, DEFAULT_TOLERANCE_PERIODS * period, end_tol):
            if frame is None:
                return  # stream ended: a streaming reader stops rather than raising
            if p != last_key:
                last_key, last_rgb = p, _to_rgb(frame, hw)
            yield t, last_rgb


def _rate(fps: float | Fraction) -> Fraction:
    """Exact frame rate; recognises NTSC rates given as floats (59.94 → 60000/1001)."""
    if isinstance(fps, Fraction):
        return fps
    ntsc = round(fps * 1.001)
    if abs(fps - ntsc / 1.001) < 1e-3 and abs(fps - round(fps)) > 1e-3:
        return Fraction(ntsc * 1000, 1001)
    return Fraction(fps).limit_denominator(1001)


def write_video(
    path: PathLike,
    frames: np.ndarray,
    fps: float | Fraction,
    codec: str | None = None,
    crf: int = 18,
    faststart: bool = False,
) -> None:
    """Write uint8 ``(T, H, W, 3)`` RGB frames to ``path`` (``faststart``: MP4 index first, for web streaming).

    ``.gif`` is written with Pillow (adaptive palette; PyAV's gif encoder only does a fixed 3-3-2 palette).
    Otherwise ``codec`` defaults to libx264 when this FFmpeg build has it, else mpeg4; 4:2:0 needs even sizes, so
    odd heights/widths are padded by one replicated edge row/column.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    path = Path(path)
    if path.suffix.lower() == ".gif" or codec == "gif":
        from PIL import Image

        images = [Image.fromarray(f) for f in frames]
        duration_ms = max(int(round(1000 / float(fps))), 20)  # GIF delays are 10 ms units; browsers clamp < 20 ms
        images[0].save(path, save_all=True, append_images=images[1:], duration=duration_ms, loop=0)
        return
    if codec is None:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    rate = _rate(fps)
    with av.open(str(path), "w", options={"movflags": "faststart"} if faststart else None) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        if codec in ("libx264", "libx265", "libsvtav1"):
            stream.options = {"crf": str(crf)}
        else:
            stream.bit_rate = 8_000_000  # mpeg4 has no CRF; a high rate keeps fixtures near-lossless
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts, vf.time_base = i, 1 / rate
            for packet in stream.encode(vf):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def resize_frames(frames: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (B, 3, H, W) → float (B, 3, size, size) in [-1, 1], bicubic with antialias (the encoder's resize)."""
    x = frames.float()
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False).clamp(0, 255)
    return x / 127.5 - 1.0
