"""AgiBot World (Alpha) robot episodes, in the native layout or through a LeRobot port.

Native layout (`root`, as released on Hugging Face / OpenDataLab; a task's tar files extracted in place):

    task_info/task_<task_id>.json                       list of episodes: {"episode_id", "task_id", "task_name",
                                                        "init_scene_text", "label_info": {"action_config": [
                                                        {"start_frame", "end_frame", "action_text", "skill"}, ...]}}
    observations/<task_id>/<episode_id>/videos/<camera>.mp4   head_color, hand_left_color, hand_right_color, fisheye
                                                        views, ... (depth/ PNGs are not read)
    proprio_stats/<task_id>/<episode_id>/proprio_stats.h5

HDF5 keys read (per recorded step, 30 Hz, step k ↔ video frame k): `state/end/position` (T, 2, 3) left / right
end-effector xyz (m), `state/end/orientation` (T, 2, 4) their quaternions (x, y, z, w), `state/effector/position`
(T, 2) left / right gripper opening. Joint states (`state/joint/position`) and the recorded commands (`action/...`)
are not used.

Episodes come from the observation folders (an episode missing from task_info still reads, without text):

- frames: every `videos/*.mp4` (or `cameras=`, e.g. `cameras=head_color,hand_left_color,hand_right_color`), camera
  named by the file's stem, decoded lazily;
- actions (T, 14): end-effector deltas from the *measured* states between kept steps, per arm (left then right), as
  DROID's: xyz(t+1) − xyz(t), the extrinsic-xyz Euler angles of R(t+1)·R(t)ᵀ, gripper(t+1) − gripper(t); the last
  step's action is unknown (mask False), and so is any action touching a non-finite state;
- proprio (T, 16): per arm xyz, quaternion (x, y, z, w), gripper;
- text: the task name, then every `action_text`; `extras["narrations"]`: the action texts as `[first, end, text]`
  spans in kept-frame indices (AgiBot's `end_frame` read as exclusive: consecutive actions share the boundary frame);
- fps: native 30 Hz (`native_fps=`); `fps=f` keeps the steps nearest to the grid k/f.

LeRobot port: when `root/meta/info.json` exists the dataset is read by the generic LeRobot reader (`lerobot.py`),
with `action_key` / `state_key` choosing its columns (ports name them differently; the error lists what it has).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from latentwm.data.episodes import Episode, EpisodeError
from latentwm.data.sources.droid import matrix_to_euler, pose_actions
from latentwm.data.sources.lerobot import kept_spans, load_lerobot, sample_steps, texts
from latentwm.data.sources.video_folder import CheckedVideoFrames, pick_cameras, probe_or_error

OPTIONS = (
    "fps=<float|None: native 30> cameras=<comma list: every videos/*.mp4> size=<int|None> "
    "layout=auto|native|lerobot tasks=<task ids> native_fps=30 dataset=agibot "
    "action_key=action state_key=observation.state (LeRobot port only)"
)
POSITION, ORIENTATION, GRIPPER = "state/end/position", "state/end/orientation", "state/effector/position"
AGIBOT_FPS = 30.0

Item = tuple[str, Callable[[], Episode]]


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """(..., 4) quaternions (x, y, z, w; normalized here) → (..., 3, 3) rotation matrices."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    x, y, z, w = np.moveaxis(q, -1, 0)
    R = np.empty(q.shape[:-1] + (3, 3))
    R[..., 0, 0], R[..., 0, 1], R[..., 0, 2] = 1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)
    R[..., 1, 0], R[..., 1, 1], R[..., 1, 2] = 2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)
    R[..., 2, 0], R[..., 2, 1], R[..., 2, 2] = 2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)
    return R


def arm_actions(pos: np.ndarray, quat: np.ndarray, grip: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-arm end-effector deltas: pos (T, 2, 3), quat (T, 2, 4) xyzw, grip (T, 2) → (actions (T, 14), mask (T,)).

    Per arm the 7-D DROID action (`droid.pose_actions`); an action is known when both of its states are finite."""
    T = len(pos)
    finite = (
        np.isfinite(pos).reshape(T, -1).all(1)
        & np.isfinite(quat).reshape(T, -1).all(1)
        & np.isfinite(grip).reshape(T, -1).all(1)
    )
    pos, quat, grip = (np.where(finite.reshape((T,) + (1,) * (a.ndim - 1)), a, 0.0) for a in (pos, quat, grip))
    quat = np.where(np.linalg.norm(quat, axis=-1, keepdims=True) > 0, quat, [0.0, 0.0, 0.0, 1.0])
    parts, mask = [], None
    for arm in range(2):
        euler = matrix_to_euler(quat_to_matrix(quat[:, arm]))
        a, mask = pose_actions(np.concatenate([pos[:, arm], euler], 1), grip[:, arm : arm + 1])
        parts.append(a)
    mask = mask & finite & np.roll(finite, -1)
    actions = np.concatenate(parts, 1)
    actions[~mask] = 0.0
    return actions, mask


def read_task_info(root: Path) -> dict[tuple[str, str], dict]:
    """(task_id, episode_id) → that episode's task_info entry, from every `task_info/task_*.json`."""
    out = {}
    for path in sorted((root / "task_info").glob("task_*.json")):
        try:
            rows = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: cannot read AgiBot task_info: {e}") from e
        for row in rows if isinstance(rows, list) else [rows]:
            task = str(row.get("task_id", path.stem.removeprefix("task_")))
            out[(task, str(row.get("episode_id")))] = row
    return out


@dataclass(frozen=True)
class NativeRead:
    """How `native_episode` reads an episode (`load_agibot`'s options): sampled at `fps` (None: native), frames
    resized to `size` (None: native), the `cameras` asked for (None: every video), recorded at `native_fps`, named
    under `dataset`."""

    fps: float | None = None
    size: int | tuple[int, int] | None = None
    cameras: Sequence[str] | None = None
    native_fps: float = AGIBOT_FPS
    dataset: str = "agibot"


def native_episode(root: Path, task: str, episode: str, info: dict | None, read: NativeRead) -> Episode:
    """One AgiBot episode of the native layout (see the module docstring)."""
    import h5py

    eid = f"{task}/{episode}"
    name = f"{read.dataset}/{eid}"
    h5 = root / "proprio_stats" / task / episode / "proprio_stats.h5"
    try:
        with h5py.File(h5, "r") as f:
            pos = np.asarray(f[POSITION], dtype=np.float64).reshape(-1, 2, 3)
            quat = np.asarray(f[ORIENTATION], dtype=np.float64).reshape(-1, 2, 4)
            grip = np.asarray(f[GRIPPER], dtype=np.float64).reshape(-1, 2)
    except Exception as e:  # OSError, KeyError, ValueError from h5py / reshape
        raise EpisodeError(f"episode {name}: cannot read {h5}: {type(e).__name__}: {e}") from e
    if not len(pos) == len(quat) == len(grip):
        raise EpisodeError(
            f"episode {name}: {h5} has {len(pos)} positions, {len(quat)} orientations, {len(grip)} gripper states"
        )
    vdir = root / "observations" / task / episode / "videos"
    cams = pick_cameras({p.stem: p for p in sorted(vdir.glob("*.mp4"))}, read.cameras, name, vdir)
    keep = sample_steps(len(pos), read.native_fps, read.fps)
    frames = {
        cam: CheckedVideoFrames(p, keep / probe_or_error(p, name).fps, read.size, episode=name)
        for cam, p in cams.items()
    }
    actions, mask = arm_actions(pos[keep], quat[keep], grip[keep])
    proprio = np.concatenate([pos[keep], quat[keep], grip[keep][..., None]], 2).reshape(len(keep), 16)
    info = info or {}
    steps = ((info.get("label_info") or {}).get("action_config")) or []
    spans = [(int(s["start_frame"]), int(s["end_frame"]), s.get("action_text", "")) for s in steps]
    narr = kept_spans(spans, keep)
    return Episode(
        dataset=read.dataset,
        episode_id=eid,
        fps=float(read.fps if read.fps and read.fps < read.native_fps else read.native_fps),
        frames=frames,
        actions=actions,
        action_mask=mask,
        proprio=np.nan_to_num(proprio).astype(np.float32),
        text=texts(info.get("task_name"), [t for _, _, t in narr]),
        extras=dict(
            layout="agibot-native",
            task_id=task,
            episode_id=episode,
            native_fps=read.native_fps,
            narrations=narr,
            init_scene=str(info.get("init_scene_text") or ""),
            raw_steps=keep.tolist() if len(keep) != len(pos) else None,
        ),
    )


# Many parameters: each keyword is one reader option of OPTIONS, which load_source checks
# --data.source-options against by reading this signature; grouping them would hide them from it
def load_agibot(
    root: str | os.PathLike,
    *,
    fps: float | None = None,
    size: int | tuple[int, int] | None = None,
    cameras: Sequence[str] | str = "",
    layout: str = "auto",
    tasks: Sequence[str] | str | None = None,
    native_fps: float = AGIBOT_FPS,
    dataset: str = "agibot",
    action_key: str | None = "action",
    state_key: str | None = "observation.state",
) -> list[Item]:
    """`[(key, loader)]` of the AgiBot World episodes under `root` (native or LeRobot port; module docstring); keys
    are `{dataset}/{task_id}/{episode_id}` (native) or `{dataset}/episode_XXXXXX` (port)."""
    root = Path(root)
    if isinstance(cameras, str):
        cameras = [c for c in cameras.split(",") if c]
    if layout == "auto":
        layout = "lerobot" if (root / "meta" / "info.json").is_file() else "native"
    if layout == "lerobot":
        return load_lerobot(
            root, fps=fps, size=size, cameras=cameras, action_key=action_key, state_key=state_key, dataset=dataset
        )
    if layout != "native":
        raise ValueError(f"load_agibot: layout must be auto, native or lerobot, got {layout!r}")
    if not (root / "observations").is_dir():
        raise FileNotFoundError(
            f"{root}: no observations/ folder (AgiBot World native layout) and no meta/info.json (LeRobot port)"
        )
    if tasks is not None:
        tasks = {
            str(int(float(t)))
            for t in (str(tasks).split(",") if isinstance(tasks, (str, float, int)) else tasks)
            if str(t)
        }
    info = read_task_info(root)
    read = NativeRead(fps, size, cameras or None, native_fps, dataset)
    items = []
    for ep_dir in sorted(p for p in (root / "observations").glob("*/*") if p.is_dir()):
        task, episode = ep_dir.parent.name, ep_dir.name
        if tasks is not None and task not in tasks:
            continue
        items.append(
            (
                f"{dataset}/{task}/{episode}",
                lambda t=task, e=episode: native_episode(root, t, e, info.get((t, e)), read),
            )
        )
    return items
