"""DROID robot episodes: the LeRobot v3 / v2.1 layouts (a preset of the generic reader, `lerobot.py`) and raw DROID
(`trajectory.h5` + per-camera MP4, via h5py).

`load_droid(root)` detects the layout and returns `[(key, loader)]`; a loader returns an `Episode` with

- frames: every camera (or `cameras=`), named as in the LeRobot port: `exterior_1_left`, `exterior_2_left`,
  `wrist_left` (`observation.images.` dropped), decoded lazily (`CheckedVideoFrames`, at the episode's timestamps
  inside the possibly multi-episode MP4);
- actions (T, 7): end-effector deltas from the *measured* poses at the sampled rate (docs/design.md section 3; V-JEPA
  2-AC's recipe): xyz(t+1) − xyz(t), the extrinsic-xyz Euler angles of R(t+1)·R(t)ᵀ, gripper(t+1) − gripper(t);
  the last frame's action is unknown (`action_mask` False). DROID's own `action` field is not used.
- proprio (T, 7): measured cartesian pose (xyz + Euler xyz, as stored) and gripper position;
- text: the episode's tasks / language instructions (up to three in DROID), deduplicated;
- success: `is_episode_successful` (LeRobot) or the metadata's `success` / a `success`/`failure` folder (raw);
- extras: layout, source episode index/path, native fps, sampled raw indices.

`fps=None` keeps the native 15 Hz; `fps=f` keeps the raw steps nearest to the grid k/f (V-JEPA 2-AC uses 4), and
the actions are computed between the kept steps. Frame accuracy: LeRobot frames are located at
`from_timestamp + timestamp` of their row (v3) or `timestamp` (v2.1); raw DROID frame k is at k / video fps.

LeRobot v3: `meta/info.json` (fps, features, `data_path`/`video_path` templates), `meta/episodes/chunk-*/file-*.parquet`
(per episode: `episode_index`, `length`, `tasks`, `data/chunk_index`, `data/file_index`,
`videos/<key>/{chunk_index,file_index,from_timestamp,to_timestamp}`), `data/chunk-*/file-*.parquet` (rows of many
episodes), `videos/<key>/chunk-*/file-*.mp4`. v2.1: `meta/episodes.jsonl` and one parquet / MP4 per episode.
Raw: `<episode dir>/trajectory.h5` (`observation/robot_state/{cartesian_position (T, 6), gripper_position (T,)}`),
`metadata_*.json` (`{ext1,ext2,wrist}_cam_serial`, `current_task`, `success`), `recordings/MP4/<serial>.mp4`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from latentwm.data.episodes import Episode, EpisodeError
from latentwm.data.sources.lerobot import LeRobotReader, sample_steps
from latentwm.data.sources.lerobot import texts as _texts
from latentwm.data.sources.video_folder import CheckedVideoFrames, pick_cameras, probe_or_error

OPTIONS = (
    "fps=<float|None: native 15> cameras=<comma list: all> size=<int|None> layout=auto|v3|v2.1|raw "
    "success_only=False episodes=<indices> dataset=droid"
)
POSE_KEY, GRIPPER_KEY = "observation.state.cartesian_position", "observation.state.gripper_position"
LANGUAGE_KEYS = ("language_instruction", "language_instruction_2", "language_instruction_3")
SUCCESS_KEY = "is_episode_successful"
RAW_CAMERAS = {
    "ext1_cam_serial": "exterior_1_left",
    "ext2_cam_serial": "exterior_2_left",
    "wrist_cam_serial": "wrist_left",
}
DROID_FPS = 15.0

Item = tuple[str, Callable[[], Episode]]


# ---------------------------------------------------------------------------------------------------------------
# Action math


def euler_to_matrix(euler: np.ndarray) -> np.ndarray:
    """(..., 3) extrinsic x-y-z Euler angles (rad; scipy's "xyz") → (..., 3, 3) R = Rz(γ)·Ry(β)·Rx(α)."""
    a, b, g = np.moveaxis(np.asarray(euler, dtype=np.float64), -1, 0)
    ca, sa, cb, sb, cg, sg = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(g), np.sin(g)
    R = np.empty(a.shape + (3, 3))
    R[..., 0, 0], R[..., 0, 1], R[..., 0, 2] = cg * cb, cg * sb * sa - sg * ca, cg * sb * ca + sg * sa
    R[..., 1, 0], R[..., 1, 1], R[..., 1, 2] = sg * cb, sg * sb * sa + cg * ca, sg * sb * ca - cg * sa
    R[..., 2, 0], R[..., 2, 1], R[..., 2, 2] = -sb, cb * sa, cb * ca
    return R


def matrix_to_euler(R: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices → (..., 3) extrinsic x-y-z Euler angles, β in [−π/2, π/2] (gimbal lock: α = 0)."""
    R = np.asarray(R, dtype=np.float64)
    sb = np.clip(-R[..., 2, 0], -1.0, 1.0)
    b = np.arcsin(sb)
    lock = np.abs(sb) > 1 - 1e-9
    a = np.where(lock, 0.0, np.arctan2(R[..., 2, 1], R[..., 2, 2]))
    g = np.where(lock, np.arctan2(-R[..., 0, 1], R[..., 1, 1]), np.arctan2(R[..., 1, 0], R[..., 0, 0]))
    return np.stack([a, b, g], -1)


def pose_actions(cartesian: np.ndarray, gripper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """7-D end-effector deltas between consecutive kept steps: (actions (T, 7) float32, mask (T,) bool).

    actions[t] = [xyz(t+1) − xyz(t), euler(R(t+1)·R(t)ᵀ), g(t+1) − g(t)]; the last row is 0 with mask False.
    """
    cart = np.asarray(cartesian, dtype=np.float64).reshape(len(cartesian), -1)
    grip = np.asarray(gripper, dtype=np.float64).reshape(len(gripper), -1)[:, :1]
    if cart.shape[1] != 6 or len(grip) != len(cart):
        raise ValueError(f"need cartesian (T, 6) and gripper (T, 1), got {cart.shape} and {grip.shape}")
    T = len(cart)
    actions = np.zeros((T, 7), dtype=np.float64)
    if T > 1:
        R = euler_to_matrix(cart[:, 3:6])
        actions[:-1, :3] = cart[1:, :3] - cart[:-1, :3]
        actions[:-1, 3:6] = matrix_to_euler(R[1:] @ np.swapaxes(R[:-1], -1, -2))
        actions[:-1, 6] = grip[1:, 0] - grip[:-1, 0]
    mask = np.arange(T) < T - 1
    return actions.astype(np.float32), mask


@dataclass(frozen=True)
class _Recording:
    """What a DROID reader found of one episode besides its poses: its name, the recording rate `native_fps` and the
    requested `fps` (None: native), the kept steps' `frames` {camera: FrameSource}, `text`, `success` (None:
    unknown) and `extras`."""

    dataset: str
    episode_id: str
    native_fps: float
    fps: float | None
    frames: dict
    text: list[str]
    success: bool | None  # as recorded (raw DROID: a JSON value), stored as bool
    extras: dict


def _episode(rec: _Recording, cart, grip) -> Episode:
    """The Episode of `rec` with DROID's pose actions and proprio from the kept steps' poses: cart (T, 6) xyz + Euler
    angles, grip (T, ≥1) gripper position (first column)."""
    cart = np.asarray(cart, dtype=np.float64).reshape(len(cart), -1)
    grip = np.asarray(grip, dtype=np.float64).reshape(len(grip), -1)[:, :1]
    try:
        actions, mask = pose_actions(cart, grip)
    except ValueError as e:
        raise EpisodeError(f"episode {rec.dataset}/{rec.episode_id}: {e}") from e
    if not np.isfinite(cart).all() or not np.isfinite(grip).all():
        bad = ~(np.isfinite(cart).all(1) & np.isfinite(grip).all(1))
        mask = mask & ~bad & ~np.roll(bad, -1)  # an action is known only if both of its poses are
        actions[~mask] = 0.0
    proprio = np.concatenate([cart, grip], 1).astype(np.float32)
    fps, native_fps = rec.fps, rec.native_fps
    return Episode(
        dataset=rec.dataset,
        episode_id=rec.episode_id,
        fps=float(fps if fps and fps < native_fps else native_fps),
        frames=rec.frames,
        actions=actions,
        action_mask=mask,
        proprio=np.nan_to_num(proprio),
        text=rec.text,
        success=None if rec.success is None else bool(rec.success),
        extras=rec.extras,
    )


# ---------------------------------------------------------------------------------------------------------------
# LeRobot (v3 and v2.1): a preset of the generic reader (lerobot.py) with DROID's pose actions


class LeRobotDroid(LeRobotReader):
    """DROID in the LeRobot format: cameras, rows and tasks from `LeRobotReader`; actions from the measured poses."""

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        fps: float | None = None,
        cameras: Sequence[str] | None = None,
        size=None,
        dataset: str = "droid",
        success_only: bool = False,
        episodes: Sequence[int] | None = None,
    ):
        super().__init__(
            root, fps=fps, cameras=cameras, size=size, dataset=dataset, episodes=episodes, default_fps=DROID_FPS
        )
        for k in (POSE_KEY, GRIPPER_KEY):
            if k not in self.features:
                raise ValueError(
                    f"{self.root}: feature {k!r} (needed for pose actions) missing; has {sorted(self.features)}"
                )
        self.lang_keys = [k for k in LANGUAGE_KEYS if k in self.features]
        self.success_key = SUCCESS_KEY if SUCCESS_KEY in self.features else None
        self.columns = [POSE_KEY, GRIPPER_KEY, *self.lang_keys] + ([self.success_key] if self.success_key else [])
        self.success_only = success_only

    def load(self, ep: dict) -> Episode:
        eid, name = self.name(ep)
        ts, cols = self.rows(ep, self.columns)
        cart, grip = cols[POSE_KEY], cols[GRIPPER_KEY]
        lang = [x for k in self.lang_keys for x in cols[k].tolist()]
        success = bool(cols[self.success_key].reshape(-1)[0]) if self.success_key else None
        if self.success_only and success is False:
            raise EpisodeError(f"episode {name}: not successful (success_only=True)")
        keep = sample_steps(len(ts), self.native_fps, self.fps)
        frames = self.frames(ep, ts[keep])
        text = _texts(ep.get("tasks"), *lang)
        extras = dict(
            layout=f"lerobot-{self.version}",
            episode_index=int(ep["episode_index"]),
            native_fps=self.native_fps,
            raw_steps=keep.tolist() if len(keep) != len(ts) else None,
        )
        rec = _Recording(self.dataset, eid, self.native_fps, self.fps, frames, text, success, extras)
        return _episode(rec, cart[keep], grip[keep])


# ---------------------------------------------------------------------------------------------------------------
# Raw DROID


def raw_episode(
    ep_dir: str | os.PathLike,
    *,
    fps: float | None = None,
    cameras: Sequence[str] | None = None,
    size=None,
    dataset: str = "droid",
    episode_id: str | None = None,
    success_only: bool = False,
) -> Episode:
    """One raw DROID episode directory (trajectory.h5, metadata_*.json, recordings/MP4/<serial>.mp4)."""
    import h5py

    ep_dir = Path(ep_dir)
    eid = episode_id or ep_dir.name
    name = f"{dataset}/{eid}"
    h5 = ep_dir / "trajectory.h5"
    try:
        with h5py.File(h5, "r") as f:
            rs = f["observation/robot_state"]
            cart = np.asarray(rs["cartesian_position"], dtype=np.float64)
            grip = np.asarray(rs["gripper_position"], dtype=np.float64).reshape(len(cart), -1)
    except Exception as e:  # OSError, KeyError from h5py
        raise EpisodeError(f"episode {name}: cannot read {h5}: {type(e).__name__}: {e}") from e
    meta: dict = {}
    meta_files = sorted(ep_dir.glob("metadata*.json"))
    if meta_files:
        try:
            meta = json.loads(meta_files[0].read_text())
        except (OSError, ValueError) as e:
            raise EpisodeError(f"episode {name}: cannot read {meta_files[0]}: {e}") from e
    mp4_dir = ep_dir / "recordings" / "MP4"
    cams: dict[str, Path] = {}
    for field, cam in RAW_CAMERAS.items():
        if meta.get(field):
            cams[cam] = mp4_dir / f"{meta[field]}.mp4"
    if not cams:  # no metadata: every non-stereo MP4, named by its file
        cams = {p.stem: p for p in sorted(mp4_dir.glob("*.mp4")) if not p.stem.endswith("-stereo")}
    cams = pick_cameras(cams, cameras, name, mp4_dir)
    success = meta.get("success")
    if success is None:
        parts = {p.lower() for p in ep_dir.parts}
        success = True if "success" in parts else False if "failure" in parts else None
    if success_only and success is False:
        raise EpisodeError(f"episode {name}: not successful (success_only=True)")
    frames = {}
    native = DROID_FPS
    keep = sample_steps(len(cart), native, fps)
    for cam, path in cams.items():
        info = probe_or_error(path, name)  # missing/garbage file → EpisodeError naming it
        frames[cam] = CheckedVideoFrames(path, keep / info.fps, size, episode=name)
    text = _texts(meta.get("current_task"), *(meta.get(k) for k in LANGUAGE_KEYS))
    extras = dict(
        layout="droid-raw",
        path=str(ep_dir),
        native_fps=native,
        raw_steps=keep.tolist() if len(keep) != len(cart) else None,
    )
    return _episode(_Recording(dataset, eid, native, fps, frames, text, success, extras), cart[keep], grip[keep])


def find_raw_episodes(root: str | os.PathLike) -> list[Path]:
    return sorted(p.parent for p in Path(root).rglob("trajectory.h5"))


# ---------------------------------------------------------------------------------------------------------------


def detect_layout(root: str | os.PathLike) -> str:
    """ "v3" / "v2.1" (LeRobot, from meta/info.json) or "raw" (trajectory.h5 files below root)."""
    root = Path(root)
    info = root / "meta" / "info.json"
    if info.is_file():
        try:
            v = str(json.loads(info.read_text()).get("codebase_version", "v3.0"))
        except ValueError as e:
            raise ValueError(f"{info}: not JSON: {e}") from e
        return "v2.1" if v.startswith("v2") else "v3"
    if next(iter(Path(root).rglob("trajectory.h5")), None) is not None:
        return "raw"
    raise FileNotFoundError(f"{root}: neither a LeRobot dataset (meta/info.json) nor raw DROID (trajectory.h5)")


def load_droid(
    root: str | os.PathLike,
    *,
    fps: float | None = None,
    cameras: Sequence[str] | str | None = None,
    size=None,
    layout: str = "auto",
    success_only: bool = False,
    episodes: Sequence[int] | None = None,
    dataset: str = "droid",
) -> list[Item]:
    """`[(key, loader)]` of the DROID episodes under `root` (LeRobot v3 / v2.1 or raw; see the module docstring)."""
    if isinstance(cameras, str):
        cameras = [c for c in cameras.split(",") if c]
    layout = detect_layout(root) if layout == "auto" else layout
    if layout in ("v3", "v2.1", "v2", "lerobot"):
        return LeRobotDroid(
            root, fps=fps, cameras=cameras, size=size, dataset=dataset, success_only=success_only, episodes=episodes
        ).items()
    if layout != "raw":
        raise ValueError(f"load_droid: layout must be auto, v3, v2.1 or raw, got {layout!r}")
    root = Path(root)
    dirs = find_raw_episodes(root)
    if episodes is not None:
        dirs = [dirs[i] for i in episodes]
    items = []
    for d in dirs:
        eid = d.relative_to(root).as_posix() if d != root else d.name
        items.append(
            (
                f"{dataset}/{eid}",
                lambda d=d, eid=eid: raw_episode(
                    d, fps=fps, cameras=cameras, size=size, dataset=dataset, episode_id=eid, success_only=success_only
                ),
            )
        )
    return items
