"""RLDS / Open X-Embodiment episodes (TFDS TFRecord shards) read without TensorFlow: SOAR, Bridge, or any RLDS set.

Layout (`root`, searched recursively): TFDS prepared dataset folders `<name>/<version>/` holding `dataset_info.json`,
`features.json` and shards `<name>-<split>.tfrecord-00000-of-000NN` (SOAR ships `rlds/success/1.0.0/` and
`rlds/failure/1.0.0/`). Each record is one episode: a `tf.train.Example` whose keys flatten the RLDS `steps`
dataset, every step's value concatenated: `steps/observation/image_0` (one encoded JPEG/PNG per step),
`steps/observation/state` (T·P floats), `steps/action` (T·A floats), `steps/language_instruction` (one string per
step), `steps/is_first` / `steps/is_last` / `steps/is_terminal` (T ints), `steps/reward`, `steps/discount`,
`episode_metadata/file_path`, ... (TFDS `Dataset` features are written this way; tfrecord.py reads the framing).

Specs (`spec=`): which features are cameras, actions, proprio and text, and the recording rate.
- `soar` (SOAR, WidowX 250, 5 Hz): camera `image_0` = `steps/observation/image_0` (256² JPEG), action
  `steps/action` (7: Δxyz, Δroll/pitch/yaw, gripper), proprio `steps/observation/state` (7) — the keys and widths
  SOAR's own loader parses (rail-berkeley/soar, jaxrl_m/data/dataset.py: PROTO_TYPE_SPEC, reshape [-1, 7], and it
  too drops the last step's action) — and text `steps/language_instruction` (the Bridge RLDS key its OXE transform
  reads).
- `bridge`: the same keys (Bridge V2's RLDS; image_1..3 are often blank padding, so only image_0 by default).
- `generic`: nothing assumed; give `image_keys=` (comma list; a key without `steps/` gets it), `action_key=`
  (comma list, concatenated; omitted: action-free), `language_key=`, `proprio_key=` and `native_fps=`.
The options override any spec's choice (e.g. `spec=soar image_keys=observation/image_0,observation/image_1`).

Episodes: key `{dataset}/{subset}/{shard-stem}#{record}`; the action at step t is the one recorded at step t (RLDS
and latentwm agree: taken after observing frame t). Steps flagged `is_last` get action_mask False (RLDS leaves the
last step's action undefined, and no frame follows it). `text`: the unique instructions; `extras["narrations"]`:
`[first, end, text]` runs per instruction, as EPIC's spans. `fps=f` (below the native rate) keeps every k-th step
with k = native/f an integer, concatenating the k actions in between (`Episode.with_frame_skip`). `success`: True /
False for SOAR's `success` / `failure` subsets, else None.

Bad data: a record failing its CRC, an unparsable Example, missing keys or an undecodable image raise `EpisodeError`
naming shard, record offset and key, which `encode_to_cache` skips and counts; a corrupt record header makes the
rest of its shard unframeable, which is listed as one failing item naming the shard and offset.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from latentwm.data.episodes import Episode, EpisodeError
from latentwm.data.sources.tfrecord import TFRecordError, parse_example, read_record, scan_records
from latentwm.data.sources.video_folder import _failing

OPTIONS = (
    "spec=soar|bridge|generic fps=<float|None: native> size=<int|None> split=<train,val,...> "
    "image_keys=<k1,k2> action_key=<k1,k2|''> language_key=<key> proprio_key=<key> native_fps=<float> "
    "dataset=<name>"
)
_SHARD = re.compile(r"^(?P<name>.+)-(?P<split>[^-]+)\.tfrecord(-(?P<idx>\d+)-of-\d+)?$")
Item = tuple[str, Callable[[], Episode]]


@dataclass(frozen=True)
class RldsSpec:
    """How one RLDS dataset's flattened features map onto an Episode."""

    name: str
    cameras: tuple[tuple[str, str], ...]  # (feature key, camera name): one encoded image per step
    action_keys: tuple[str, ...]  # float features concatenated per step into the action; () = action-free
    language_key: str | None  # one string per step
    proprio_key: str | None  # float feature, P per step
    fps: float | None  # recording rate (steps per second); None = must be given

    def __post_init__(self):
        if not self.cameras:
            raise ValueError(f"RLDS spec {self.name}: needs at least one image key (image_keys=)")
        if self.fps is not None and self.fps <= 0:
            raise ValueError(f"RLDS spec {self.name}: native_fps must be > 0, got {self.fps}")


_WIDOWX = dict(
    cameras=(("steps/observation/image_0", "image_0"),),
    action_keys=("steps/action",),
    language_key="steps/language_instruction",
    proprio_key="steps/observation/state",
    fps=5.0,
)
SPECS = {"soar": RldsSpec("soar", **_WIDOWX), "bridge": RldsSpec("bridge", **_WIDOWX), "generic": None}


def _key(k: str) -> str:
    k = k.strip()
    return k if k.startswith(("steps/", "episode_metadata/")) else f"steps/{k}"


def make_spec(
    spec: str = "soar",
    *,
    image_keys: str | None = None,
    action_key: str | None = None,
    language_key: str | None = None,
    proprio_key: str | None = None,
    native_fps: float | None = None,
) -> RldsSpec:
    """A named spec with any of its choices overridden (`generic` starts from nothing)."""
    if spec not in SPECS:
        raise ValueError(f"rlds: unknown spec {spec!r}; choose one of {', '.join(SPECS)}")
    base = SPECS[spec] or RldsSpec("generic", (("", ""),), (), None, None, None)
    cams = base.cameras
    if image_keys is not None:
        cams = tuple((_key(k), _key(k).rsplit("/", 1)[-1]) for k in str(image_keys).split(",") if k.strip())
    elif spec == "generic":
        raise ValueError("rlds spec generic needs image_keys=<comma list of step image features>")
    acts = base.action_keys if action_key is None else tuple(_key(k) for k in str(action_key).split(",") if k.strip())
    fps = float(native_fps) if native_fps is not None else base.fps
    if fps is None:
        raise ValueError("rlds spec generic needs native_fps=<steps per second>")
    return RldsSpec(
        spec,
        cams,
        acts,
        _key(language_key) if language_key else base.language_key,
        _key(proprio_key) if proprio_key else base.proprio_key,
        fps,
    )


class EncodedImages:
    """Lazily decoded per-step images (encoded JPEG/PNG bytes) of one camera, resized bicubic to `size`."""

    def __init__(self, blobs: list[bytes], size=None, where: str = ""):
        self.blobs, self.size, self.where = blobs, size, where

    def __len__(self) -> int:
        return len(self.blobs)

    def get(self, indices: Sequence[int]) -> np.ndarray:  # -> (k, H, W, 3) uint8
        from PIL import Image

        out = []
        for i in np.asarray(indices, dtype=np.int64).reshape(-1):
            try:
                with Image.open(io.BytesIO(self.blobs[int(i)])) as im:
                    im = im.convert("RGB")
                    if self.size is not None:
                        h, w = (self.size, self.size) if isinstance(self.size, int) else self.size
                        im = im.resize((int(w), int(h)), Image.Resampling.BICUBIC)
                    out.append(np.asarray(im, dtype=np.uint8))
            except (OSError, ValueError, SyntaxError) as e:
                raise EpisodeError(f"{self.where}: cannot decode the image of step {int(i)}: {e}") from e
        return np.stack(out)


def find_shards(root: Path, splits: Sequence[str] | None) -> list[tuple[Path, str, str]]:
    """[(shard, dataset name, split)] under `root`, sorted; names from dataset_info.json when present."""
    out = []
    for p in sorted(root.rglob("*.tfrecord*")):
        m = _SHARD.match(p.name)
        if not p.is_file() or m is None or (splits and m["split"] not in splits):
            continue
        name = m["name"]
        info = p.parent / "dataset_info.json"
        if info.is_file():
            try:
                name = json.loads(info.read_text()).get("name") or name
            except (OSError, ValueError):
                pass  # the shard name is as good a name; the shards themselves are what is read
        out.append((p, name, m["split"]))
    return out


# Many parameters: each keyword is one reader option of OPTIONS, which load_source checks
# --data.source-options against by reading this signature; grouping them would hide them from it
def load_rlds(
    root: str | os.PathLike,
    *,
    fps: float | None = None,
    size=None,
    spec: str = "soar",
    split: str | None = None,
    image_keys: str | None = None,
    action_key: str | None = None,
    language_key: str | None = None,
    proprio_key: str | None = None,
    native_fps: float | None = None,
    dataset: str | None = None,
) -> list[Item]:
    """`[(key, loader)]`, one per episode record of every shard under `root` (see the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"rlds root {root} does not exist")
    sp = make_spec(
        spec,
        image_keys=image_keys,
        action_key=action_key,
        language_key=language_key,
        proprio_key=proprio_key,
        native_fps=native_fps,
    )
    skip = 1
    if fps is not None:
        skip = int(round(sp.fps / float(fps)))
        if skip < 1 or abs(sp.fps / float(fps) - skip) > 1e-6:
            raise ValueError(
                f"rlds: fps={fps} must divide the native {sp.fps} steps/s (steps are kept, not interpolated)"
            )
    shards = find_shards(root, [s for s in str(split).split(",") if s] if split else None)
    if not shards:
        raise FileNotFoundError(f"no TFRecord shards (<name>-<split>.tfrecord-NNNNN-of-NNNNN) under {root}")
    items: list[Item] = []
    for path, name, sname in shards:
        ds = dataset or name
        subset = _subset(path, root, sname)
        stem = path.name.split(".tfrecord")[0] + (f"-{m}" if (m := _SHARD.match(path.name)["idx"]) else "")
        offsets, err = scan_records(path)
        for r, (off, _) in enumerate(offsets):
            eid = f"{subset}/{stem}#{r:05d}"
            items.append((f"{ds}/{eid}", _loader(_Record(path, off, r, ds, eid, subset), sp, size, skip)))
        if err is not None:  # listed, so the encode summary names the unreadable rest of the shard
            items.append(
                (
                    f"{ds}/{subset}/{stem}#{len(offsets):05d}+",
                    _failing(EpisodeError(f"shard {path}: records from {len(offsets)} on are unreadable: {err}")),
                )
            )
    return items


def _subset(path: Path, root: Path, split: str) -> str:
    """The nearest folder above a shard that is not a TFDS version folder (SOAR: success / failure); the split when
    the shards lie directly in root."""
    for d in path.relative_to(root).parts[-2::-1]:
        if not re.fullmatch(r"\d+(\.\d+)*", d):
            return d
    return split


@dataclass(frozen=True)
class _Record:
    """Where one episode is: record number `index` of shard `path`, starting at byte `offset`; it becomes episode
    `episode_id` of `dataset`, from the shard's `subset` folder (SOAR: success / failure)."""

    path: Path
    offset: int
    index: int
    dataset: str
    episode_id: str
    subset: str


def _loader(rec: _Record, sp: RldsSpec, size, skip: int) -> Callable[[], Episode]:
    """The episode of `rec` (features mapped by `sp`, frames resized to `size`), keeping every `skip`-th step."""

    def load() -> Episode:
        where = f"shard {rec.path} record {rec.index} (byte {rec.offset})"
        try:
            ex = parse_example(read_record(rec.path, rec.offset))
        except (TFRecordError, UnicodeDecodeError) as e:
            raise EpisodeError(f"{where}: {e}") from e
        ep = episode_from_example(ex, sp, dataset=rec.dataset, episode_id=rec.episode_id, size=size, where=where)
        ep.extras.update(shard=str(rec.path), record=rec.index, offset=rec.offset, subset=rec.subset)
        if rec.subset in ("success", "failure"):
            ep.success = rec.subset == "success"
        if skip > 1:  # spans in kept-frame indices: kept frame j is native step j·skip
            ep.extras["narrations"] = [
                [a // skip, max(-(-b // skip), a // skip + 1), w] for a, b, w in ep.extras["narrations"]
            ]
        return ep.with_frame_skip(skip)

    return load


def _floats(ex: dict, key: str, T: int, where: str) -> np.ndarray:
    """(T, k) float32 of a float/int feature holding T·k values."""
    if key not in ex:
        raise EpisodeError(f"{where}: no feature {key!r} (has {', '.join(sorted(ex))})")
    v = np.asarray(ex[key], dtype=np.float32)
    if isinstance(ex[key], list) or T == 0 or v.size % T:
        raise EpisodeError(f"{where}: feature {key!r} has {v.size} numbers, not a multiple of the {T} steps")
    return v.reshape(T, -1)


def episode_from_example(
    ex: dict, sp: RldsSpec, *, dataset: str, episode_id: str, size=None, where: str = ""
) -> Episode:
    """An Episode (native rate) from one decoded RLDS Example `ex` {key: list[bytes] | array}."""
    frames = {}
    for key, cam in sp.cameras:
        blobs = ex.get(key)
        if not isinstance(blobs, list) or not blobs:
            raise EpisodeError(f"{where}: no encoded images under {key!r} (has {', '.join(sorted(ex))})")
        frames[cam] = EncodedImages(blobs, size, f"{where} camera {cam}")
    T = len(next(iter(frames.values())))
    actions = mask = None
    if sp.action_keys:
        actions = np.concatenate([_floats(ex, k, T, where) for k in sp.action_keys], axis=1)
        last = np.asarray(ex.get("steps/is_last", np.zeros(T)), dtype=bool).reshape(-1)
        mask = ~last if len(last) == T else np.ones(T, bool)
        if not np.isfinite(actions[mask]).all():
            raise EpisodeError(f"{where}: non-finite actions")
    proprio = _floats(ex, sp.proprio_key, T, where) if sp.proprio_key and sp.proprio_key in ex else None
    spans: list[list] = []
    if sp.language_key and isinstance(ex.get(sp.language_key), list):
        words = [b.decode("utf-8", "replace").strip() for b in ex[sp.language_key]]
        if len(words) not in (1, T):
            raise EpisodeError(f"{where}: {len(words)} strings under {sp.language_key!r} for {T} steps")
        words = words * T if len(words) == 1 else words
        for t, w in enumerate(words):  # runs of one instruction → [first, end, text]
            if spans and spans[-1][2] == w and spans[-1][1] == t:
                spans[-1][1] = t + 1
            elif w:
                spans.append([t, t + 1, w])
    extras = dict(spec=sp.name, narrations=spans)
    fp = ex.get("episode_metadata/file_path")
    if isinstance(fp, list) and fp:
        extras["file_path"] = fp[0].decode("utf-8", "replace")
    return Episode(
        dataset=dataset,
        episode_id=episode_id,
        fps=float(sp.fps),
        frames=frames,
        actions=actions,
        action_mask=mask,
        proprio=proprio,
        text=list(dict.fromkeys(s[2] for s in spans)),
        extras=extras,
    )
