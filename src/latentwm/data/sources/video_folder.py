"""Any folder of videos (+ optional captions) as action-free episodes: Something-Something V2, Kinetics, Ego4D, ...

`load_video_folder(root)` lists every video under `root` (recursively; .mp4 .m4v .mkv .webm .avi .mov, any case)
as `[(key, loader)]`; a loader returns an `Episode` (dataset `dataset`, default the folder's name; episode id = the
path relative to `root` without its suffix; one camera, `camera`, default "main"; `actions` None) whose frames stay
lazy: a `CheckedVideoFrames` decodes only the frames asked for, so hour-long videos never sit in memory.

Frame rate: `fps=None` keeps every native frame; `fps=f` samples the grid 0, 1/f, 2/f, ... (nearest frame) over the
video. `segment_s` cuts each video into episodes of at most that many seconds (keys `<id>@<k>`), which needs the
durations up front, so the listing probes every video header (no decoding); without it there is one item per video
and a video is probed only when its loader runs.

Captions (optional): `captions=` a CSV or JSON file, else `captions.csv` / `captions.json` in `root` if present.
CSV: a column naming the video (`video`, `path`, `video_id`, `id`, `file` or `filename`; with or without suffix,
relative to root or just the stem) and a text column (`caption`, `text`, `label`, `narration`, `template` or
`description`); several rows per video give several texts. JSON: `{video: text | [texts]}` or a list of objects with
those same keys (Something-Something V2's `{"id", "label", "template"}` files work as they are).

Bad data: a missing, corrupt or truncated video raises `EpisodeError` naming the file (from the loader, or later
when its frames are decoded), which `encode_to_cache` skips and counts.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np

from latentwm.data.episodes import Episode, EpisodeError, VideoFrames
from latentwm.data.video import VideoError, frame_times, probe_video, read_frames

OPTIONS = (
    "fps=<float|None> size=<int|None> segment_s=<float|None> camera=main dataset=<folder name> "
    "captions=<csv|json path> extensions=mp4,mkv,webm,avi,mov,m4v"
)
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mkv", ".webm", ".avi", ".mov")
_ID_COLUMNS = ("video", "path", "video_id", "id", "file", "filename", "video_path")
_TEXT_COLUMNS = ("caption", "text", "label", "narration", "template", "description", "sentence")

Item = tuple[str, Callable[[], Episode]]


class CheckedVideoFrames(VideoFrames):
    """`VideoFrames` whose decode errors (missing/corrupt/truncated file, frame past the end) are `EpisodeError`s
    naming the episode and file, the error `encode_to_cache` skips and counts. tolerance_s: how far the nearest frame
    may be from a requested time (None: 1.5 frame periods; a variable-rate video's grid needs its largest gap)."""

    def __init__(self, path, timestamps, size=None, episode: str = "", tolerance_s: float | None = None):
        super().__init__(path, timestamps, size)
        self.episode, self.tolerance_s = episode, tolerance_s

    def get(self, indices: Sequence[int]) -> np.ndarray:
        try:
            return read_frames(self.path, self.timestamps[np.asarray(indices)], self.size, self.tolerance_s)
        except VideoError as e:
            raise EpisodeError(f"episode {self.episode}: cannot decode {self.path}: {e}") from e


VFR_SPREAD = 0.5
"""A video is variable-rate when its frame intervals spread by more than this fraction of their median."""


@dataclasses.dataclass(frozen=True)
class Timeline:
    """The times (s) an episode reads, its frame rate, and how far a read may be from a frame (None: the default)."""

    timestamps: np.ndarray  # (T,)
    fps: float
    tolerance_s: float | None = None
    variable_rate: bool = False


def timeline(
    times: np.ndarray, fps: float | None, start_s: float = 0.0, end_s: float | None = None, header_fps: float = 0.0
) -> Timeline:
    """What an episode over [start_s, end_s) (seconds from the video's first frame) reads, from the presentation
    times `times` (K,) of every frame of the video (`video.frame_times`: a first frame at 0.5 s is where the video
    starts, not a missing frame).

    fps None, constant rate: the native frames themselves. fps None, variable rate (phone and screen recordings:
    intervals of 10–500 ms): a uniform grid at the average rate, each point read from the nearest frame — one fps
    per episode must mean one spacing — flagged `variable_rate`. fps given: the grid first + start_s + k/fps while it
    lies before end_s and the last frame's display interval. Reads of a variable-rate video accept its largest gap.
    header_fps: the container's rate, the native fps when it agrees with the frames' median interval (millisecond
    timestamps round 30 fps to 33 ms)."""
    times = np.asarray(times, np.float64)
    first = times[0]
    gaps = np.diff(times)
    period = float(np.median(gaps)) if len(gaps) else 1.0 / (fps or 30.0)
    vfr = len(gaps) > 1 and float(np.ptp(gaps)) > VFR_SPREAD * period
    video_end = times[-1] + period
    lo, hi = first + start_s, min(video_end, first + end_s if end_s is not None else math.inf)
    tol = float(gaps.max()) if vfr else None
    if fps is None and not vfr:
        native = header_fps if header_fps > 0 and abs(1.0 / header_fps - period) <= 0.1 * period else 1.0 / period
        return Timeline(times[(times >= lo - 1e-6) & (times < hi - 1e-6)], native)
    if fps is not None:
        rate = float(fps)
    else:  # variable rate: the average over the video (a single frame: its nominal period)
        rate = (len(times) - 1) / float(times[-1] - first) if len(times) > 1 else 1.0 / period
    n = int(math.ceil((hi - lo) * rate - 1e-6))
    return Timeline(lo + np.arange(max(n, 0)) / rate, float(rate), tol, vfr)


def sample_grid(
    num_native: int, native_fps: float, fps: float | None, start_s: float = 0.0, end_s: float | None = None
) -> np.ndarray:
    """Timestamps (s) of the frames an episode keeps from a video of `num_native` frames at `native_fps`.

    fps None: the native frames k/native_fps in [start_s, end_s); else the grid start_s + k/fps while it lies before
    both end_s and the end of the last native frame's display interval (so a 10 s video at 4 fps gives 40 frames).
    """
    if native_fps <= 0 or num_native <= 0:
        return np.zeros(0)
    video_end = num_native / native_fps
    end = video_end if end_s is None else min(end_s, video_end)
    if fps is None:
        k0 = int(math.ceil(start_s * native_fps - 1e-6))
        k1 = int(math.ceil(end * native_fps - 1e-6))
        return np.arange(k0, max(k0, k1)) / native_fps
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    n = int(math.ceil((end - start_s) * fps - 1e-6))
    return start_s + np.arange(max(n, 0)) / fps


def segments(duration_s: float, segment_s: float | None) -> list[tuple[float, float]]:
    """[(start, end)] cutting [0, duration) into pieces of `segment_s` (a last piece shorter than a quarter segment
    joins the one before it); one piece when segment_s is None."""
    if segment_s is None or duration_s <= segment_s:
        return [(0.0, float(duration_s))]
    if segment_s <= 0:
        raise ValueError(f"segment_s must be > 0, got {segment_s}")
    starts = list(np.arange(0.0, duration_s, segment_s))
    if len(starts) > 1 and duration_s - starts[-1] < 0.25 * segment_s:
        starts.pop()
    return [
        (float(s), float(starts[i + 1]) if i + 1 < len(starts) else float(duration_s)) for i, s in enumerate(starts)
    ]


def find_videos(root: str | os.PathLike, extensions: Sequence[str] = VIDEO_EXTENSIONS) -> list[Path]:
    """Video files under `root` (hidden files and folders skipped), following symlinked folders — each real
    folder once, so a link back up the tree cannot loop."""
    exts = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
    root, seen, found = Path(root), set(), []
    for folder, dirs, files in os.walk(root, followlinks=True):
        st = os.stat(folder)
        if (st.st_dev, st.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [
            Path(folder) / f
            for f in files
            if not f.startswith(".") and Path(f).suffix.lower() in exts and (Path(folder) / f).is_file()
        ]
    return sorted(found)


def read_captions(path: str | os.PathLike) -> dict[str, list[str]]:
    """video name (as written in the file, suffix dropped) → texts, from a CSV or JSON captions file."""
    path = Path(path)
    out: dict[str, list[str]] = {}

    def add(vid, text):
        if vid is None or text is None or str(text).strip() == "":
            return
        key = _stem(str(vid))
        for t in text if isinstance(text, list) else [text]:
            if str(t).strip() and str(t) not in out.setdefault(key, []):
                out[key].append(str(t))

    try:
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text())
            if isinstance(data, dict):
                for vid, text in data.items():
                    add(vid, text)
            else:
                for row in data:
                    vid = next((row[c] for c in _ID_COLUMNS if c in row), None)
                    add(vid, next((row[c] for c in _TEXT_COLUMNS if c in row), None))
        else:
            with open(path, newline="") as fh:
                reader = csv.DictReader(fh)
                cols = [c.strip().lower() for c in reader.fieldnames or []]
                id_col = next((c for c in _ID_COLUMNS if c in cols), None)
                text_col = next((c for c in _TEXT_COLUMNS if c in cols), None)
                if id_col is None or text_col is None:
                    raise ValueError(
                        f"needs a video column ({'/'.join(_ID_COLUMNS)}) and a text column "
                        f"({'/'.join(_TEXT_COLUMNS)}); has {cols}"
                    )
                for row in reader:
                    row = {k.strip().lower(): v for k, v in row.items() if k is not None}
                    add(row[id_col], row[text_col])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"captions file {path}: {e}") from e
    return out


def _stem(name: str) -> str:
    p = name.replace("\\", "/")
    for ext in VIDEO_EXTENSIONS:
        if p.lower().endswith(ext):
            return p[: -len(ext)]
    return p


def probe_or_error(path: Path, episode: str):
    try:
        return probe_video(path)
    except VideoError as e:
        raise EpisodeError(f"episode {episode}: {e}") from e


@dataclasses.dataclass(frozen=True)
class VideoEpisodeSpec:
    """One episode of a video file: [start_s, end_s) (seconds from its first frame; end None: to the end) of `path`,
    named `dataset`/`episode_id`, its frames under `camera`, sampled at `fps` (None: native) and resized to `size`
    (None: native); `text` its sentences, `extras` further facts for `Episode.extras`."""

    path: Path
    dataset: str
    episode_id: str
    camera: str = "main"
    fps: float | None = None
    size: int | tuple[int, int] | None = None
    text: Sequence[str] = ()
    start_s: float = 0.0
    end_s: float | None = None
    extras: dict | None = None

    def segment(self, episode_id: str, start_s: float = 0.0, end_s: float | None = None) -> VideoEpisodeSpec:
        """The same video's episode `episode_id` over [start_s, end_s)."""
        return dataclasses.replace(self, episode_id=episode_id, start_s=start_s, end_s=end_s)


def video_episode(spec: VideoEpisodeSpec) -> Episode:
    """The lazy episode `spec` describes, read at the frames' own presentation times (`timeline`); a variable-rate
    video is resampled to one rate and says so (a warning and extras["variable_rate"])."""
    path, fps, start_s, end_s = spec.path, spec.fps, spec.start_s, spec.end_s
    name = f"{spec.dataset}/{spec.episode_id}"
    try:
        line = timeline(frame_times(path), fps, start_s, end_s, header_fps=probe_video(path).fps)
    except VideoError as e:
        raise EpisodeError(f"episode {name}: {e}") from e
    if not len(line.timestamps):
        raise EpisodeError(f"episode {name}: no frames in [{start_s}, {end_s}) of {path}")
    if line.variable_rate and fps is None:
        warnings.warn(
            f"{path}: variable frame rate; episode {name} is resampled to its average {line.fps:.3f} fps (nearest "
            "frame); pass fps= to choose the rate",
            stacklevel=2,
        )
    frames = CheckedVideoFrames(path, line.timestamps, spec.size, episode=name, tolerance_s=line.tolerance_s)
    return Episode(
        dataset=spec.dataset,
        episode_id=spec.episode_id,
        fps=line.fps,
        frames={spec.camera: frames},
        text=list(spec.text),
        extras=dict(
            spec.extras or {},
            path=str(path),
            start_s=float(line.timestamps[0]),
            native_fps=line.fps,
            variable_rate=line.variable_rate,
        ),
    )


def load_video_folder(
    root: str | os.PathLike,
    *,
    fps: float | None = None,
    size: int | tuple[int, int] | None = None,
    segment_s: float | None = None,
    camera: str = "main",
    dataset: str | None = None,
    captions: str | os.PathLike | None = None,
    extensions: Sequence[str] = VIDEO_EXTENSIONS,
) -> list[Item]:
    """`[(key, loader)]` for every video under `root` (see the module docstring); keys are `{dataset}/{id}`."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"video folder {root} does not exist")
    dataset = dataset or root.resolve().name
    if captions is None:
        captions = next((root / n for n in ("captions.csv", "captions.json") if (root / n).is_file()), None)
    texts = read_captions(captions) if captions is not None else {}
    items: list[Item] = []
    for path in find_videos(root, extensions):
        vid = path.relative_to(root).with_suffix("").as_posix()
        text = texts.get(vid) or texts.get(path.stem) or []
        spec = VideoEpisodeSpec(path, dataset, vid, camera, fps, size, text)
        items += video_items(path, dataset, vid, segment_s, partial(_loader, spec))
    return items


def pick_cameras(found: dict[str, Path], cameras: Sequence[str] | None, episode: str, where) -> dict[str, Path]:
    """The `cameras` asked for (all when empty) of an episode's `found` {camera: video file}; a missing one, or no
    camera at all, is an EpisodeError naming the episode and `where` it looked."""
    if cameras:
        if missing := [c for c in cameras if c not in found]:
            raise EpisodeError(f"episode {episode}: no camera {missing} in {where} (has {sorted(found)})")
        found = {c: found[c] for c in cameras}
    if not found:
        raise EpisodeError(f"episode {episode}: no camera video in {where}")
    return found


def video_items(
    path: Path, dataset: str, vid: str, segment_s: float | None, make: Callable[..., Callable[[], Episode]]
) -> list[Item]:
    """The items of one video `{dataset}/{vid}`: the whole video, `make(vid)`, or with segment_s one per segment
    `{vid}@k`, `make("{vid}@k", start_s=, end_s=)` (durations from the video's header).
    A video whose header cannot be read is listed anyway, with a loader that raises, so the encode summary names
    it."""
    key = f"{dataset}/{vid}"
    if segment_s is None:
        return [(key, make(vid))]
    try:
        info = probe_or_error(path, key)
    except EpisodeError as e:
        return [(key, _failing(e))]
    return [
        (f"{key}@{k:04d}", make(f"{vid}@{k:04d}", start_s=s, end_s=e))
        for k, (s, e) in enumerate(segments(info.num_frames / info.fps, segment_s))
    ]


def _loader(video: VideoEpisodeSpec, episode_id: str, start_s=0.0, end_s=None) -> Callable[[], Episode]:
    """The loader of `video`'s episode `episode_id` over [start_s, end_s) (`video_items`' `make`)."""
    spec = video.segment(episode_id, start_s, end_s)

    def load() -> Episode:
        return video_episode(spec)

    return load


def _failing(err: EpisodeError) -> Callable[[], Episode]:
    def load() -> Episode:
        raise err

    return load
