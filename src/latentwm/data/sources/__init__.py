"""One reader per dataset; `load_source` picks one by name for `latentwm encode --source` and online training."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable

from latentwm.data.episodes import Episode
from latentwm.data.sources import agibot, annotated_video, droid, egodex, epic_kitchens, lerobot, rlds, video_folder
from latentwm.data.sources.pusht import OPTIONS as PUSHT_OPTIONS
from latentwm.data.sources.pusht import load_pusht
from latentwm.envs.pusht_language import NARRATION_STYLES

SOURCES = (
    "pusht",
    "droid",
    "epic",
    "video-folder",
    "lerobot",
    "agibot",
    "egodex",
    "rlds",
    "ssv2",
    "kinetics",
    "openvid",
    "howto100m",
    "ego4d",
)
Item = tuple[str, Callable[[], Episode]]
MULTI_CAMERA = ("droid", "lerobot", "agibot")  # readers that take cameras=
EPISODIC = ("droid", "lerobot", "agibot", "egodex", "rlds")  # recorded episodes, never cut into segments


def parse_options(text: str) -> dict:
    """'k=v k2=v2' → {k: v}: numbers become floats, '' / None / none become None, anything else stays a string."""
    out = {}
    for kv in text.split():
        k, sep, v = kv.partition("=")
        if not sep or not k:
            raise ValueError(f"reader options: expected k=v pairs, got {kv!r}")
        out[k] = None if v in ("", "None", "none") else (float(v) if v.replace(".", "", 1).isdigit() else v)
    return out


def source_facts(source: str, options: dict | None = None) -> dict:
    """What a cache of `source` read with reader `options` records of the reader (cache.json, beside the encoder's
    facts) so that episodes read two ways are never mixed: for pusht, the narration style of its sentences
    ({"narration": "direction" | "magnitude"}, the reader's default when not given); nothing for other sources."""
    if source != "pusht":
        return {}
    return {"narration": (options or {}).get("narration") or NARRATION_STYLES[0]}


def load_source(
    source: str,
    root: str | os.PathLike,
    *,
    size: int | None = None,
    fps: float | None = None,
    segment_s: float | None = None,
    cameras: str | None = None,
    options: dict | None = None,
) -> list[Item]:
    """`[(key, loader)]` of the episodes of `source` under `root`, video frames decoded at `size`² (None: native).

    fps: sampling rate of video sources (None: native). segment_s: cut long videos into episodes of this many seconds
    (None: the reader's default, 0: whole videos; not the EPISODIC sources). cameras: comma-separated (MULTI_CAMERA
    sources; None: all). options: further keyword arguments of the reader (its OPTIONS)."""
    options = dict(options or {})
    if source == "pusht":
        if cameras or fps:
            raise ValueError(
                "the pusht source takes no cameras or fps (its episodes are stored at the simulator's rate)"
            )
        if unknown := sorted(set(options) - set(PUSHT_OPTIONS)):
            raise ValueError(
                f"the pusht reader takes no option {', '.join(unknown)}; its options: {', '.join(PUSHT_OPTIONS)}"
            )
        return load_pusht(root, **options)
    loaders = {
        "droid": droid.load_droid,
        "epic": epic_kitchens.load_epic_kitchens,
        "video-folder": video_folder.load_video_folder,
        "lerobot": lerobot.load_lerobot,
        "agibot": agibot.load_agibot,
        "egodex": egodex.load_egodex,
        "rlds": rlds.load_rlds,
        "ssv2": annotated_video.load_ssv2,
        "kinetics": annotated_video.load_kinetics,
        "openvid": annotated_video.load_openvid,
        "howto100m": annotated_video.load_howto100m,
        "ego4d": annotated_video.load_ego4d,
    }
    if source not in loaders:
        raise ValueError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    kw = dict(fps=fps or None, size=size)
    if cameras:
        if source not in MULTI_CAMERA:
            raise ValueError(f"cameras apply to the {', '.join(MULTI_CAMERA)} sources only, not {source!r}")
        kw["cameras"] = cameras
    if segment_s is not None and segment_s < 0:
        raise ValueError(f"segment_s must be >= 0 (0: whole videos; None: the reader's default), got {segment_s}")
    if segment_s is not None and source not in EPISODIC:
        kw["segment_s"] = segment_s or None
    for name in set(options) & set(kw):  # e.g. --data.source-options "fps=4": the same setting, given as an option
        if kw[name] is not None and kw[name] != options[name]:
            raise ValueError(f"the {source} reader got {name} twice: {kw[name]!r} and option {name}={options[name]!r}")
        kw[name] = options.pop(name)
    accepted = [
        n
        for n, p in inspect.signature(loaders[source]).parameters.items()
        if p.kind is p.KEYWORD_ONLY or (p.default is not p.empty and n not in kw)
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"the {source} reader takes no option {', '.join(unknown)}; its options: "
            f"{', '.join(sorted(set(accepted) - set(kw)))}"
        )
    return loaders[source](root, **kw, **options)
