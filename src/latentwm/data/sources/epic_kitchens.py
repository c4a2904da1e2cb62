"""EPIC-KITCHENS-100: egocentric kitchen video without actions, narrations attached as text.

Layout (`root`): `PXX/videos/PXX_YY.MP4` (also accepted: `videos/PXX/PXX_YY.MP4` and lower-case `.mp4`) or extracted
frames `PXX/rgb_frames/PXX_YY/frame_0000000001.jpg` (1-based, at the video's native rate; a `.tar` of them is not
read: extract it first). Annotations (in `annotations=`, default `root` then `root/annotations`):
`EPIC_100_video_info.csv` (video_id, duration, fps, resolution) — required, because the frame rate varies per video
(59.94 or 50 fps, also 60, 48, 25, 30 for a few) — and `EPIC_100_train.csv` / `EPIC_100_validation.csv` (optional;
narration, start_timestamp, stop_timestamp as HH:MM:SS.ff).

Episodes: each video is cut into segments of `segment_s` seconds (default 30; None keeps whole videos, up to an
hour: the frames are decoded lazily by the reader either way, but `encode_to_cache` decodes one episode at a time),
episode id `PXX_YY@SSSS` (segment index), sampled at `fps` (None: native). `actions` None (EPIC has none: the action
mask is all False). `text`: the narrations overlapping the segment in time order (unique); `extras["narrations"]`:
`[[first_frame, end_frame, narration], ...]` in the episode's own frame indices (end exclusive), so a clip cut from
frames [s, e) gets exactly the narrations it overlaps with `narrations_in(extras, s, e)`. `extras["split"]`: train /
validation / unannotated (test videos have no public narrations).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from latentwm.data.episodes import Episode, EpisodeError
from latentwm.data.sources.video_folder import CheckedVideoFrames, sample_grid, segments

OPTIONS = (
    "fps=<float|None: native> size=<int|None> segment_s=30 annotations=<dir: root> "
    "splits=train,validation,unannotated participants=<P01,...> frames=videos|rgb_frames|auto"
)
VIDEO_INFO, NARRATION_FILES = (
    "EPIC_100_video_info.csv",
    {"train": "EPIC_100_train.csv", "validation": "EPIC_100_validation.csv"},
)
DATASET, CAMERA = "epic_kitchens", "head"

Item = tuple[str, Callable[[], Episode]]


def parse_timestamp(s: str) -> float:
    """'HH:MM:SS.ff' (or MM:SS.ff, or seconds) → seconds."""
    parts = str(s).strip().split(":")
    try:
        return float(sum(float(p) * 60**i for i, p in enumerate(reversed(parts))))
    except ValueError as e:
        raise ValueError(f"bad EPIC timestamp {s!r}") from e


def read_video_info(path: str | os.PathLike) -> dict[str, dict]:
    """video_id → {duration (s), fps, resolution} from EPIC_100_video_info.csv."""
    out = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                out[row["video_id"]] = dict(
                    duration=float(row["duration"]), fps=float(row["fps"]), resolution=row.get("resolution", "")
                )
            except (KeyError, ValueError) as e:
                raise ValueError(f"{path}: bad row {row}: {e}") from e
    return out


def read_narrations(path: str | os.PathLike) -> dict[str, list[tuple[float, float, str]]]:
    """video_id → [(start_s, stop_s, narration)] sorted by start, from EPIC_100_{train,validation}.csv."""
    out: dict[str, list[tuple[float, float, str]]] = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                out.setdefault(row["video_id"], []).append(
                    (
                        parse_timestamp(row["start_timestamp"]),
                        parse_timestamp(row["stop_timestamp"]),
                        row["narration"].strip(),
                    )
                )
            except (KeyError, ValueError) as e:
                raise ValueError(f"{path}: bad row {row}: {e}") from e
    return {k: sorted(v) for k, v in out.items()}


class RgbFrames:
    """Lazily read JPEG frames `frame_{n:010d}.jpg` (n = 1-based native frame number), resized bicubic."""

    def __init__(self, folder: str | os.PathLike, numbers: np.ndarray, size=None, episode: str = ""):
        self.folder, self.numbers, self.size, self.episode = Path(folder), np.asarray(numbers, np.int64), size, episode

    def __len__(self) -> int:
        return len(self.numbers)

    def get(self, indices: Sequence[int]) -> np.ndarray:
        from PIL import Image

        out = []
        for n in self.numbers[np.asarray(indices, dtype=np.int64)]:
            p = self.folder / f"frame_{int(n):010d}.jpg"
            try:
                with Image.open(p) as im:
                    im = im.convert("RGB")
                    if self.size is not None:
                        h, w = (self.size, self.size) if isinstance(self.size, int) else self.size
                        im = im.resize((int(w), int(h)), Image.Resampling.BICUBIC)
                    out.append(np.asarray(im, dtype=np.uint8))
            except OSError as e:
                raise EpisodeError(f"episode {self.episode}: cannot read frame {p}: {e}") from e
        return np.stack(out)


def _find_video(root: Path, vid: str) -> Path | None:
    pid = vid.split("_")[0]
    for p in (root / pid / "videos", root / "videos" / pid, root / pid, root / "videos"):
        for ext in (".MP4", ".mp4"):
            if (f := p / f"{vid}{ext}").is_file():
                return f
    return None


def _find_frames(root: Path, vid: str) -> Path | None:
    pid = vid.split("_")[0]
    for p in (root / pid / "rgb_frames" / vid, root / "rgb_frames" / pid / vid):
        if p.is_dir():
            return p
    return None


# Many parameters: each keyword is one reader option of OPTIONS, which load_source checks
# --data.source-options against by reading this signature; grouping them would hide them from it
def load_epic_kitchens(
    root: str | os.PathLike,
    *,
    fps: float | None = None,
    size=None,
    segment_s: float | None = 30.0,
    annotations: str | os.PathLike | None = None,
    splits: Sequence[str] | str = ("train", "validation", "unannotated"),
    participants: Sequence[str] | str | None = None,
    frames: str = "auto",
    dataset: str = DATASET,
) -> list[Item]:
    """`[(key, loader)]` of EPIC-KITCHENS-100 segments found under `root` (see the module docstring).

    Videos listed in the video info file but absent on disk are left out (a partial download is normal); a video on
    disk without a video-info row is an error (its frame rate would be a guess).
    """
    root = Path(root)
    if isinstance(splits, str):
        splits = [s for s in splits.split(",") if s]
    if isinstance(participants, str):
        participants = [p for p in participants.split(",") if p]
    if frames not in ("auto", "videos", "rgb_frames"):
        raise ValueError(f"load_epic_kitchens: frames must be auto, videos or rgb_frames, got {frames!r}")
    ann_dirs = [Path(annotations)] if annotations is not None else [root, root / "annotations"]
    ann = next((d for d in ann_dirs if (d / VIDEO_INFO).is_file()), None)
    if ann is None:
        raise FileNotFoundError(
            f"{VIDEO_INFO} not found in {', '.join(map(str, ann_dirs))} (it gives each video's "
            "frame rate; get it from github.com/epic-kitchens/epic-kitchens-100-annotations)"
        )
    info = read_video_info(ann / VIDEO_INFO)
    narr: dict[str, list] = {}
    split_of: dict[str, str] = {}
    for split, fname in NARRATION_FILES.items():
        if (ann / fname).is_file():
            for vid, rows in read_narrations(ann / fname).items():
                narr.setdefault(vid, []).extend(rows)
                split_of[vid] = split
    on_disk = {p.stem for p in root.glob("**/*.[mM][pP]4")} | {
        p.name for p in root.glob("**/rgb_frames/*/") if p.is_dir()
    }
    unknown = sorted(v for v in on_disk if v not in info and v.split("_")[0].startswith("P"))
    if unknown:
        raise ValueError(f"videos {unknown[:5]} are under {root} but not in {ann / VIDEO_INFO}")
    items: list[Item] = []
    for vid in sorted(info):
        if participants and vid.split("_")[0] not in participants:
            continue
        if split_of.get(vid, "unannotated") not in splits:
            continue
        video = _find_video(root, vid) if frames in ("auto", "videos") else None
        folder = _find_frames(root, vid) if frames in ("auto", "rgb_frames") and video is None else None
        if video is None and folder is None:
            continue
        meta = info[vid]
        for k, (s, e) in enumerate(segments(meta["duration"], segment_s)):
            eid = f"{vid}@{k:04d}"
            seg = _Segment(
                dataset, eid, vid, video, folder, meta, s, e, narr.get(vid, []), split_of.get(vid, "unannotated")
            )
            items.append((f"{dataset}/{eid}", _loader(seg, fps, size)))
    return items


@dataclass(frozen=True)
class _Segment:
    """One episode of EPIC-KITCHENS: [start_s, end_s) of video `video_id`, read from its `video` file or else its
    extracted frames `folder`; `info` its video-info row (duration (s), native fps); `narrations` the video's
    [(start_s, stop_s, narration)]; `split` train / validation / unannotated."""

    dataset: str
    episode_id: str
    video_id: str
    video: Path | None
    folder: Path | None
    info: dict
    start_s: float
    end_s: float
    narrations: list
    split: str


def _loader(seg: _Segment, fps: float | None, size) -> Callable[[], Episode]:
    def load() -> Episode:
        name = f"{seg.dataset}/{seg.episode_id}"
        native = seg.info["fps"]
        ts = sample_grid(int(math.floor(seg.info["duration"] * native + 1e-6)), native, fps, seg.start_s, seg.end_s)
        if not len(ts):
            raise EpisodeError(f"episode {name}: no frames in [{seg.start_s}, {seg.end_s})")
        if seg.video is not None:
            if not seg.video.is_file():
                raise EpisodeError(f"episode {name}: video file {seg.video} not found")
            src = CheckedVideoFrames(seg.video, ts, size, episode=name)
        else:
            src = RgbFrames(seg.folder, np.round(ts * native).astype(np.int64) + 1, size, episode=name)
        period = 1.0 / (fps or native)
        spans = []
        for s, e, text in seg.narrations:  # frame j covers [ts[j], ts[j] + period)
            if s < ts[-1] + period and e > ts[0]:
                a = int(np.searchsorted(ts + period, s, side="right"))
                b = int(np.searchsorted(ts, e, side="left"))
                spans.append([a, max(b, a + 1), text])
        return Episode(
            dataset=seg.dataset,
            episode_id=seg.episode_id,
            fps=float(fps or native),
            frames={CAMERA: src},
            text=list(dict.fromkeys(t for _, _, t in spans)),
            extras=dict(
                video_id=seg.video_id,
                participant=seg.video_id.split("_")[0],
                start_s=float(ts[0]),
                native_fps=native,
                split=seg.split,
                narrations=spans,
                source=str(seg.video if seg.video is not None else seg.folder),
            ),
        )

    return load
