"""The Episode record every data source yields, frame skip, and per-dataset normalization statistics.

Conventions (docs/design.md section 3): the action at index t is the one taken *after* observing frame t (it moves the
world from frame t to frame t+1). Frames are uint8 (T, H, W, 3) per camera, held in memory or decoded lazily.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from latentwm.config.base import LatentwmError
from latentwm.data.cache_integrity import CacheError
from latentwm.data.video import read_frames
from latentwm.io.files import atomic_path, read_json


class EpisodeError(LatentwmError, ValueError):
    """An episode's arrays disagree with each other or with the format; the message names episode and field."""


@runtime_checkable
class FrameSource(Protocol):
    """Frames decoded on demand (a video file, an image folder): `len()` frames, `get(indices)` -> (k, H, W, 3)."""

    def __len__(self) -> int: ...

    def get(self, indices: Sequence[int]) -> np.ndarray: ...


class VideoFrames:
    """Lazily decoded frames of one video file at given timestamps (seconds), e.g. one episode inside a long MP4."""

    def __init__(self, path: str | os.PathLike, timestamps: np.ndarray, size: int | tuple[int, int] | None = None):
        self.path = str(path)
        self.timestamps = np.asarray(timestamps, dtype=np.float64)  # (T,)
        self.size = size

    def __len__(self) -> int:
        return len(self.timestamps)

    def get(self, indices: Sequence[int]) -> np.ndarray:
        return read_frames(self.path, self.timestamps[np.asarray(indices)], size=self.size)


def narrations_in(extras: dict, start: int, end: int) -> list[str]:
    """Narrations (unique, in time order) overlapping frames [start, end) of an episode whose `extras["narrations"]`
    lists `[first_frame, end_frame, text]` spans (end exclusive; EPIC-KITCHENS): what a clip of those frames shows."""
    out: list[str] = []
    for s, e, text in extras.get("narrations") or []:
        if s < end and e > start and text not in out:
            out.append(text)
    return out


def frames_at(frames: np.ndarray | FrameSource, indices: Sequence[int]) -> np.ndarray:
    """(k, H, W, 3) uint8 frames at `indices`, whether held in memory or decoded lazily."""
    if isinstance(frames, np.ndarray):
        return frames[np.asarray(indices)]
    return frames.get(indices)


@dataclass
class Episode:
    """One recorded episode of one or more cameras.

    frames:      camera name -> (T, H, W, 3) uint8 array or a FrameSource
    actions:     (T, A) float32 or None (action-free video)
    action_mask: (T,) bool or None (None with actions: all known)
    proprio:     (T, P) float32 or None
    rewards:     (T,) float32 or None
    states:      (T, S) float64 or None — the simulator's full state, to reset it and to score goals
    """

    dataset: str
    episode_id: str
    fps: float
    frames: dict[str, np.ndarray | FrameSource]
    actions: np.ndarray | None = None
    action_mask: np.ndarray | None = None
    proprio: np.ndarray | None = None
    rewards: np.ndarray | None = None
    states: np.ndarray | None = None
    text: list[str] = field(default_factory=list)
    success: bool | None = None
    frame_skip: int = 1  # environment steps per stored step (already applied)
    extras: dict = field(default_factory=dict)  # JSON-serializable facts (seed, policy name, ...)

    def __post_init__(self):
        self.validate()

    @property
    def cameras(self) -> list[str]:
        return list(self.frames)

    def __len__(self) -> int:
        return len(next(iter(self.frames.values())))

    def _err(self, what: str) -> EpisodeError:
        return EpisodeError(f"episode {self.dataset}/{self.episode_id}: {what}")

    def validate(self) -> None:
        if not self.frames:
            raise self._err("has no camera in `frames`")
        if not self.fps or self.fps <= 0:
            raise self._err(f"fps must be > 0, got {self.fps!r}")
        lengths = {cam: len(f) for cam, f in self.frames.items()}
        if len(set(lengths.values())) != 1:
            raise self._err(f"cameras have different frame counts {lengths}")
        T = next(iter(lengths.values()))
        if T == 0:
            raise self._err("has no frames")
        for cam, f in self.frames.items():
            if isinstance(f, np.ndarray):
                if f.dtype != np.uint8 or f.ndim != 4 or f.shape[-1] != 3:
                    raise self._err(f"frames[{cam!r}] must be uint8 (T, H, W, 3), got {f.dtype} {f.shape}")
            elif not isinstance(f, FrameSource):
                raise self._err(f"frames[{cam!r}] must be an array or FrameSource, got {type(f).__name__}")
        for name, ndim in (("actions", 2), ("action_mask", 1), ("proprio", 2), ("rewards", 1), ("states", 2)):
            a = getattr(self, name)
            if a is None:
                continue
            if not isinstance(a, np.ndarray) or a.ndim != ndim or a.shape[0] != T:
                shape = getattr(a, "shape", type(a).__name__)
                want = "(T,)" if ndim == 1 else "(T, k)"
                raise self._err(f"`{name}` must be {want} with T = {T} frames, got {shape}")
        if self.action_mask is not None and self.actions is None:
            raise self._err("`action_mask` given without `actions`")
        if self.actions is not None and not np.isfinite(self.actions[self.mask()]).all():
            raise self._err("`actions` has non-finite values where the action is marked known")

    def mask(self) -> np.ndarray:
        """(T,) bool: which actions are known (all False for action-free episodes)."""
        if self.actions is None:
            return np.zeros(len(self), dtype=bool)
        if self.action_mask is None:
            return np.ones(len(self), dtype=bool)
        return self.action_mask.astype(bool)

    def with_frame_skip(self, k: int) -> Episode:
        """Keep every k-th frame; the kept frame's action concatenates the k actions taken until the next kept one.

        The last kept frame's action is known only if all k following actions were recorded. (T, A) -> (T', k·A).
        """
        if k < 1:
            raise self._err(f"frame_skip must be >= 1, got {k}")
        if k == 1:
            return self
        T = len(self)
        keep = np.arange(0, T, k)
        frames = {}
        for cam, f in self.frames.items():
            frames[cam] = f[keep] if isinstance(f, np.ndarray) else _SubsampledFrames(f, keep)
        actions = mask = None
        if self.actions is not None:
            A = self.actions.shape[1]
            src_mask = self.mask()
            actions = np.zeros((len(keep), k * A), dtype=np.float32)
            mask = np.zeros(len(keep), dtype=bool)
            for j, t in enumerate(keep):
                chunk = self.actions[t : t + k]
                if len(chunk) == k and src_mask[t : t + k].all():
                    actions[j] = chunk.reshape(-1)
                    mask[j] = True
        rewards = None
        if self.rewards is not None:  # reward collected over the skipped steps
            rewards = np.add.reduceat(self.rewards.astype(np.float32), keep)
        return replace(
            self,
            frames=frames,
            actions=actions,
            action_mask=mask,
            proprio=None if self.proprio is None else self.proprio[keep],
            rewards=rewards,
            states=None if self.states is None else self.states[keep],
            fps=self.fps / k,
            frame_skip=self.frame_skip * k,
        )


class _SubsampledFrames:
    def __init__(self, src: FrameSource, keep: np.ndarray):
        self.src, self.keep = src, keep

    def __len__(self) -> int:
        return len(self.keep)

    def get(self, indices: Sequence[int]) -> np.ndarray:
        return self.src.get(self.keep[np.asarray(indices)])


# ----------------------------------------------------------------------------------------------------------------
# On-disk format for simulated/small episodes: one compressed .npz per episode, written atomically.

_ARRAYS = ("actions", "action_mask", "proprio", "rewards", "states")


def save_episode(ep: Episode, path: str | os.PathLike) -> Path:
    """Write `ep` (in-memory frames only) to `path` (.npz) atomically: a crash never leaves a half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for cam, f in ep.frames.items():
        arrays[f"frames/{cam}"] = f if isinstance(f, np.ndarray) else f.get(range(len(f)))
    for name in _ARRAYS:
        if getattr(ep, name) is not None:
            arrays[name] = getattr(ep, name)
    meta = dict(
        dataset=ep.dataset,
        episode_id=ep.episode_id,
        fps=ep.fps,
        text=ep.text,
        success=ep.success,
        frame_skip=ep.frame_skip,
        extras=ep.extras,
        cameras=ep.cameras,
    )
    arrays["meta_json"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        _write_npz(fh, arrays)
    return path


def _write_npz(fh, arrays: dict[str, np.ndarray]) -> None:
    """`np.savez_compressed` with fixed zip timestamps: the same episode gives the same bytes whenever and wherever
    it is written (np.savez stamps each member with the current time)."""
    with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue())


def load_episode(path: str | os.PathLike) -> Episode:
    """Read an episode written by `save_episode`; a corrupt file raises EpisodeError naming it."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta_json"]).decode())
            frames = {cam: z[f"frames/{cam}"] for cam in meta["cameras"]}
            arrays = {n: z[n] for n in _ARRAYS if n in z.files}
    except Exception as e:  # zipfile/npz errors are many types; name the file
        raise EpisodeError(f"cannot read episode file {path}: {type(e).__name__}: {e}") from e
    return Episode(
        dataset=meta["dataset"],
        episode_id=meta["episode_id"],
        fps=meta["fps"],
        frames=frames,
        text=meta["text"],
        success=meta["success"],
        frame_skip=meta["frame_skip"],
        extras=meta["extras"],
        **arrays,
    )


# ----------------------------------------------------------------------------------------------------------------
# Normalization statistics (per dataset): actions and proprio are standardized before the model sees them.


@dataclass(frozen=True)
class NormStats:
    """Per-channel mean/std of one quantity of one dataset; `std` is floored so constant channels stay finite."""

    mean: np.ndarray  # (C,)
    std: np.ndarray  # (C,)
    count: int

    def normalize(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)

    def denormalize(self, x: np.ndarray) -> np.ndarray:
        return (x * self.std + self.mean).astype(np.float32)

    def to_dict(self) -> dict:
        return dict(mean=self.mean.tolist(), std=self.std.tolist(), count=self.count)

    @classmethod
    def from_dict(cls, d: dict) -> NormStats:
        return cls(np.asarray(d["mean"], np.float64), np.asarray(d["std"], np.float64), int(d["count"]))


def compute_norm_stats(
    arrays: Sequence[np.ndarray], masks: Sequence[np.ndarray] | None = None, min_std: float = 1e-3
) -> NormStats:
    """Mean/std over rows of (T_i, C) arrays (rows where mask is False are ignored), in float64."""
    total = sq = None
    n = 0
    for i, a in enumerate(arrays):
        a = np.asarray(a, dtype=np.float64)
        if masks is not None:
            a = a[np.asarray(masks[i], dtype=bool)]
        if total is None:
            total, sq = np.zeros(a.shape[1]), np.zeros(a.shape[1])
        total += a.sum(0)
        sq += (a * a).sum(0)
        n += len(a)
    if n == 0:
        raise ValueError("compute_norm_stats: no rows to compute statistics from (all masked or empty)")
    mean = total / n
    std = np.sqrt(np.maximum(sq / n - mean * mean, 0.0))
    return NormStats(mean, np.maximum(std, min_std), n)


class ChannelSums:
    """count / sum / sum of squares per channel (float64): statistics that merge across shards and ranks."""

    def __init__(self, d: dict | None = None):
        d = d or {}
        self.n = int(d.get("count", 0))
        self.s, self.q = (
            (None, None) if not self.n else (np.asarray(d["sum"], np.float64), np.asarray(d["sumsq"], np.float64))
        )

    def add(self, o: ChannelSums | np.ndarray) -> ChannelSums:
        """Merge other sums, or rows (..., C) of values."""
        if isinstance(o, np.ndarray):
            x = o.astype(np.float64).reshape(-1, o.shape[-1])
            o = ChannelSums(dict(count=len(x), sum=x.sum(0), sumsq=(x * x).sum(0)))
        if o.n:
            self.s, self.q = (o.s, o.q) if self.s is None else (self.s + o.s, self.q + o.q)
            self.n += o.n
        return self

    def to_dict(self) -> dict:
        return dict(
            count=self.n, sum=None if not self.n else self.s.tolist(), sumsq=None if not self.n else self.q.tolist()
        )

    def stats(self, min_std: float = 1e-3) -> NormStats | None:
        if not self.n:  # same estimator and std floor as `compute_norm_stats`
            return None
        mean = self.s / self.n
        return NormStats(mean, np.maximum(np.sqrt(np.maximum(self.q / self.n - mean * mean, 0.0)), min_std), self.n)


@dataclass
class DatasetStats:
    """Normalization statistics of one dataset, saved beside its latent cache and inside checkpoints."""

    dataset: str
    actions: NormStats | None = None
    proprio: NormStats | None = None

    @classmethod
    def from_episodes(cls, dataset: str, episodes: Sequence[Episode]) -> DatasetStats:
        acts = [e for e in episodes if e.actions is not None and e.mask().any()]
        prop = [e for e in episodes if e.proprio is not None]
        return cls(
            dataset,
            actions=compute_norm_stats([e.actions for e in acts], [e.mask() for e in acts]) if acts else None,
            proprio=compute_norm_stats([e.proprio for e in prop]) if prop else None,
        )

    def to_dict(self) -> dict:
        return dict(
            dataset=self.dataset,
            actions=None if self.actions is None else self.actions.to_dict(),
            proprio=None if self.proprio is None else self.proprio.to_dict(),
        )

    @classmethod
    def from_dict(cls, d: dict) -> DatasetStats:
        return cls(
            d["dataset"],
            actions=None if d.get("actions") is None else NormStats.from_dict(d["actions"]),
            proprio=None if d.get("proprio") is None else NormStats.from_dict(d["proprio"]),
        )

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | os.PathLike) -> DatasetStats:
        return cls.from_dict(read_json(path, "dataset statistics", CacheError))
