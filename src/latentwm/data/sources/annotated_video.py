"""Annotated video sets as presets of the video-folder source: each reads its own annotation files into text, with
time spans where the set has them, narrowed to an episode's frames as EPIC-KITCHENS' narrations are.

Every preset lists the videos under `root` (recursively, any of video_folder's containers); a video without an
annotation keeps empty text (e.g. a test split), an annotation without a video is left out (partial downloads are
normal). `annotations=` names the annotation file (or a folder holding it); by default it is looked for in `root`,
`root/annotations`, `root/labels` and `root/v2/annotations`. Episodes carry `extras["narrations"]`: `[first, end,
text]` in the episode's own frame indices (end exclusive; frame j covers [t_j, t_j + 1/fps)), so
`narrations_in(extras, s, e)` gives a clip's texts; `text` is their unique list. Labels of whole clips span all
frames. `segment_s` cuts long videos (default 30 s for howto100m and ego4d, whole clips for the others).

- `ssv2` (Something-Something V2): `<id>.webm` + `something-something-v2-{train,validation}.json` (or the current
  download's `labels/{train,validation}.json`): `[{"id", "label", "template", "placeholders"}]`; text = label
  ("putting a pen into a cup"), `extras["template"]` the template.
- `kinetics` (Kinetics-700): CSVs `{train,validate,test}.csv` with `label, youtube_id, time_start, time_end, split`;
  clips `<youtube_id>_<start:06d>_<end:06d>.mp4` (the kinetics-dataset downloader's naming, any folders) or
  `<youtube_id>.mp4`; text = label (underscores as spaces).
- `openvid` (OpenVid-1M): `OpenVid-1M.csv` (or `OpenVidHD.csv`) with `video, caption, ...`; text = caption.
- `howto100m`: `caption.json` (also raw_caption.json) `{video_id: {"start": [s], "end": [s], "text": [str]}}` ASR
  lines; timed spans.
- `ego4d`: `v2/annotations/narration.json` `{video_uid: {"narration_pass_1": {"narrations": [{"timestamp_sec",
  "narration_text", ...}], ...}, "narration_pass_2": ...}}`; videos `v2/full_scale/<video_uid>.mp4`. A narration
  is a point in time: it spans [t - window_s/2, t + window_s/2) (window_s = 2 by default; the "#C"/"#O" actor tag is
  dropped, "C" stays as the camera wearer). `passes=1` (default) or `1,2` (the second annotator's pass too).

Bad data: a corrupt or truncated video is an `EpisodeError` naming the file (skipped and counted by encode_to_cache);
an unreadable annotation file is a ValueError naming it.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path

import numpy as np

from latentwm.data.episodes import Episode
from latentwm.data.sources.video_folder import VideoEpisodeSpec, find_videos, video_episode, video_items

OPTIONS = (
    "fps=<float|None> size=<int|None> segment_s=<float|None> annotations=<file|dir> camera=main "
    "dataset=<preset name>; ego4d: window_s=2 passes=1|1,2"
)
Item = tuple[str, Callable[[], Episode]]
Timed = dict[str, list[tuple[float, float, str]]]  # video id → [(start_s, end_s, text)]
_ANN_DIRS = ("", "annotations", "labels", "v2/annotations")


def find_annotation(root: Path, annotations, names: Sequence[str], what: str) -> list[Path]:
    """The annotation files `names` (globs) in `annotations` (a file, or a folder) or the default folders."""
    if annotations is not None and Path(annotations).is_file():
        return [Path(annotations)]
    dirs = [Path(annotations)] if annotations is not None else [root / d for d in _ANN_DIRS]
    for d in dirs:
        found = sorted({p for n in names for p in d.glob(n) if p.is_file()})
        if found:
            return found
    raise FileNotFoundError(f"{what}: none of {', '.join(names)} in {', '.join(map(str, dirs))} (give annotations=)")


def frame_spans(ts: np.ndarray, period: float, timed: Iterable[tuple[float, float, str]]) -> list[list]:
    """[[first, end, text]] of the (start_s, end_s, text) spans overlapping frames at `ts` (T,) seconds, each frame
    covering [t, t + period): the same narrowing as EPIC-KITCHENS' narrations."""
    out = []
    for s, e, text in timed:
        if s < ts[-1] + period and e > ts[0]:
            a = int(np.searchsorted(ts + period, s, side="right"))
            b = int(np.searchsorted(ts, e, side="left"))
            out.append([a, max(b, a + 1), text])
    return out


def annotated_items(
    dataset: str,
    videos: Sequence[tuple[Path, str]],
    timed: Timed,
    *,
    fps,
    size,
    segment_s: float | None,
    camera: str,
    extras: dict | None = None,
) -> list[Item]:
    """`[(key, loader)]` of `videos` [(path, video id)] with texts from `timed` (ids as in the annotations)."""
    items: list[Item] = []
    for path, vid in videos:
        spans = sorted(timed.get(vid, []), key=lambda x: (x[0], x[1]))
        ex = dict((extras or {}).get(vid, {}), video_id=vid)
        spec = VideoEpisodeSpec(path, dataset, vid, camera, fps, size, extras=ex)
        items += video_items(path, dataset, vid, segment_s, partial(_loader, spec, spans))
    return items


def _loader(video: VideoEpisodeSpec, spans, episode_id: str, start_s=0.0, end_s=None) -> Callable[[], Episode]:
    """The loader of `video`'s episode `episode_id` over [start_s, end_s), its text the timed `spans` it overlaps."""
    spec = video.segment(episode_id, start_s, end_s)

    def load() -> Episode:
        ep = video_episode(spec)
        narr = frame_spans(ep.frames[spec.camera].timestamps, 1.0 / ep.fps, spans)
        ep.text = list(dict.fromkeys(t for _, _, t in narr))
        ep.extras["narrations"] = narr
        return ep

    return load


def _videos_by_stem(root: Path) -> dict[str, Path]:
    return {p.stem: p for p in find_videos(root)}


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"annotation file {path}: {e}") from e


def _rows(path: Path) -> list[dict]:
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, csv.Error, UnicodeDecodeError) as e:
        raise ValueError(f"annotation file {path}: {e}") from e
    return [
        {(k or "").strip().lower(): (v or "").strip() for k, v in row.items() if isinstance(v, str) or v is None}
        for row in rows
    ]


def _root(root) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"video root {root} does not exist")
    return root


def load_ssv2(
    root: str | os.PathLike,
    *,
    fps: float | None = None,
    size=None,
    segment_s: float | None = None,
    annotations: str | os.PathLike | None = None,
    camera: str = "main",
    dataset: str = "ssv2",
) -> list[Item]:
    """Something-Something V2 (see the module docstring)."""
    root = _root(root)
    files = find_annotation(
        root,
        annotations,
        (
            "something-something-v2-train.json",
            "something-something-v2-validation.json",
            "train.json",
            "validation.json",
        ),
        "ssv2 labels",
    )
    timed: Timed = {}
    extras: dict = {}
    for f in files:
        split = "validation" if "validation" in f.name else "train"
        for row in _read_json(f):
            try:
                vid, label = str(row["id"]), str(row["label"]).strip()
            except (KeyError, TypeError) as e:
                raise ValueError(f"annotation file {f}: entry {row!r} lacks id/label") from e
            timed[vid] = [(-math.inf, math.inf, label)]
            extras[vid] = dict(template=str(row.get("template", "")), split=split)
    videos = sorted((p, s) for s, p in _videos_by_stem(root).items())
    return annotated_items(
        dataset, videos, timed, fps=fps, size=size, segment_s=segment_s, camera=camera, extras=extras
    )


_KINETICS_CLIP = re.compile(r"^(?P<yt>.{11})_(?P<s>\d{6})_(?P<e>\d{6})$")


def load_kinetics(
    root: str | os.PathLike,
    *,
    fps: float | None = None,
    size=None,
    segment_s: float | None = None,
    annotations: str | os.PathLike | None = None,
    camera: str = "main",
    dataset: str = "kinetics",
) -> list[Item]:
    """Kinetics-700 (see the module docstring)."""
    root = _root(root)
    files = find_annotation(
        root, annotations, ("train.csv", "validate.csv", "val.csv", "test.csv", "kinetics*.csv"), "kinetics CSV"
    )
    label: dict[tuple[str, int], tuple[str, str]] = {}
    for f in files:
        for row in _rows(f):
            if "youtube_id" not in row or "time_start" not in row:
                raise ValueError(f"annotation file {f}: needs youtube_id, time_start, time_end (and label) columns")
            try:
                key = (row["youtube_id"], int(float(row["time_start"])))
            except ValueError as e:
                raise ValueError(f"annotation file {f}: bad time_start in {row}") from e
            label[key] = (row.get("label", "").replace("_", " "), row.get("split", f.stem))
    whole = {yt: (yt, s) for yt, s in label}  # a clip saved as <youtube_id>.mp4
    timed: Timed = {}
    extras: dict = {}
    videos = []
    for stem, p in sorted(_videos_by_stem(root).items()):
        m = _KINETICS_CLIP.match(stem)
        key = (m["yt"], int(m["s"])) if m else whole.get(stem)
        videos.append((p, stem))
        if key in label and label[key][0]:
            timed[stem] = [(-math.inf, math.inf, label[key][0])]
        if key in label:
            extras[stem] = dict(youtube_id=key[0], time_start=key[1], split=label[key][1])
    return annotated_items(
        dataset, videos, timed, fps=fps, size=size, segment_s=segment_s, camera=camera, extras=extras
    )


def load_openvid(
    root: str | os.PathLike,
    *,
    fps: float | None = None,
    size=None,
    segment_s: float | None = None,
    annotations: str | os.PathLike | None = None,
    camera: str = "main",
    dataset: str = "openvid",
) -> list[Item]:
    """OpenVid-1M (see the module docstring)."""
    root = _root(root)
    files = find_annotation(
        root, annotations, ("OpenVid-1M.csv", "OpenVidHD.csv", "data/train/OpenVid*.csv"), "openvid CSV"
    )
    timed: Timed = {}
    for f in files:
        for row in _rows(f):
            if "video" not in row or "caption" not in row:
                raise ValueError(f"annotation file {f}: needs video and caption columns, has {sorted(row)}")
            if row["caption"]:
                timed[Path(row["video"]).stem] = [(-math.inf, math.inf, row["caption"])]
    videos = sorted((p, s) for s, p in _videos_by_stem(root).items())
    return annotated_items(dataset, videos, timed, fps=fps, size=size, segment_s=segment_s, camera=camera)


def load_howto100m(
    root: str | os.PathLike,
    *,
    fps: float | None = None,
    size=None,
    segment_s: float | None = 30.0,
    annotations: str | os.PathLike | None = None,
    camera: str = "main",
    dataset: str = "howto100m",
) -> list[Item]:
    """HowTo100M (see the module docstring)."""
    root = _root(root)
    files = find_annotation(root, annotations, ("caption.json", "raw_caption.json"), "howto100m captions")
    timed: Timed = {}
    for vid, c in _read_json(files[0]).items():
        try:
            timed[vid] = [
                (float(s), float(e), str(t).strip())
                for s, e, t in zip(c["start"], c["end"], c["text"])
                if str(t).strip()
            ]
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"annotation file {files[0]}: video {vid}: expected start/end/text lists ({e})") from e
    videos = sorted((p, s) for s, p in _videos_by_stem(root).items())
    return annotated_items(dataset, videos, timed, fps=fps, size=size, segment_s=segment_s, camera=camera)


def _ego4d_text(text: str) -> str:
    return re.sub(r"^\s*#[CO]\s+", "", str(text)).strip()


# Many parameters: each keyword is one reader option of OPTIONS, which load_source checks
# --data.source-options against by reading this signature; grouping them would hide them from it
def load_ego4d(
    root: str | os.PathLike,
    *,
    fps: float | None = None,
    size=None,
    segment_s: float | None = 30.0,
    annotations: str | os.PathLike | None = None,
    camera: str = "main",
    dataset: str = "ego4d",
    window_s: float = 2.0,
    passes: str | float = "1",
) -> list[Item]:
    """Ego4D narrations (see the module docstring)."""
    root = _root(root)
    if window_s <= 0:
        raise ValueError(f"ego4d: window_s must be > 0, got {window_s}")
    keys = [f"narration_pass_{int(float(p))}" for p in str(passes).split(",") if p.strip()]
    f = find_annotation(root, annotations, ("narration.json",), "ego4d narrations")[0]
    timed: Timed = {}
    for uid, v in _read_json(f).items():
        rows = []
        for k in keys:
            for n in (v.get(k) or {}).get("narrations", []) if isinstance(v, dict) else []:
                try:
                    t = float(n["timestamp_sec"])
                except (KeyError, TypeError, ValueError) as e:
                    raise ValueError(f"annotation file {f}: video {uid}: narration without timestamp_sec") from e
                if text := _ego4d_text(n.get("narration_text", "")):
                    rows.append((t - window_s / 2, t + window_s / 2, text))
        timed[uid] = rows
    videos = sorted((p, s) for s, p in _videos_by_stem(root).items())
    return annotated_items(dataset, videos, timed, fps=fps, size=size, segment_s=segment_s, camera=camera)
