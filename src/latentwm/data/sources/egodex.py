"""EgoDex (Apple; egocentric dexterous manipulation): MP4 + same-named HDF5 of hand / finger poses per episode.

Layout (`root`: one extracted part, e.g. `part1/`, `test/`, or a folder holding several): `<task>/<i>.mp4` and
`<task>/<i>.hdf5`, 30 Hz, frame k of the video ↔ row k of the HDF5. HDF5 keys read:

- `transforms/<joint>` (N, 4, 4): SE(3) pose of each joint in the world (ARKit) frame; read: `camera` (the camera's
  pose: extrinsics), `leftHand` / `rightHand` (wrists) and, with `actions=fingertips`, `{left,right}{Thumb,
  IndexFinger,MiddleFinger,RingFinger,LittleFinger}Tip`;
- attributes: `llm_description`, and for reversible tasks (`llm_type` = "reversible") `llm_description2` with
  `which_llm_description` ("1" / "2") saying which one this episode performs; `task` (the folder's name when
  absent). `confidences/<joint>` and `camera/intrinsic` are not used.

Episodes: key `{dataset}/{relative path without suffix}`, one camera `camera` ("ego"), frames decoded lazily;
`text`: the episode's description (then the task name, underscores as spaces).

Actions (`actions=`), documented choice: the hands as the action space. With `hands` (default; 6-D) the action at
kept frame t is the displacement of the left and right wrist between kept frames t and t+1, expressed in the camera
frame at t: R_cam(t)ᵀ·(p(t+1) − p(t)). The wearer's head motion is left out (it moves the image but is not something
the hands do); the camera frame makes "left / up / forward" mean the same on screen in every episode. `fingertips`
(36-D) appends the ten fingertips' displacements the same way. The last frame's action is unknown (mask False), as is
any action touching a non-finite pose. `none`: action-free episodes. proprio: the same joints' positions in the camera
frame at each frame (6-D / 36-D), or none with `actions=none`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from latentwm.data.episodes import Episode, EpisodeError
from latentwm.data.sources.lerobot import sample_steps, texts
from latentwm.data.sources.video_folder import CheckedVideoFrames, probe_or_error

OPTIONS = "fps=<float|None: native 30> size=<int|None> actions=hands|fingertips|none camera=ego dataset=egodex"
WRISTS = ("leftHand", "rightHand")
TIPS = tuple(
    f"{side}{finger}Tip"
    for side in ("left", "right")
    for finger in ("Thumb", "IndexFinger", "MiddleFinger", "RingFinger", "LittleFinger")
)
ACTIONS = ("hands", "fingertips", "none")
EGODEX_FPS = 30.0

Item = tuple[str, Callable[[], Episode]]


def _attr(attrs, key: str) -> str:
    v = attrs.get(key)
    if v is None:
        return ""
    if isinstance(v, (bytes, np.bytes_)):
        return v.decode("utf-8", errors="replace")
    return str(v.item() if isinstance(v, np.ndarray) and v.size == 1 else v)


def description(attrs) -> str:
    """The episode's task description: `llm_description2` when a reversible task says it performs the second one."""
    which = _attr(attrs, "which_llm_description").strip()
    if which in ("2", "2.0") and _attr(attrs, "llm_description2"):
        return _attr(attrs, "llm_description2")
    return _attr(attrs, "llm_description")


def hand_actions(camera: np.ndarray, joints: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """camera (T, 4, 4) world poses, joints (T, J, 3) world positions → (actions (T, 3J), mask (T,), proprio (T, 3J)).

    actions[t] = R_cam(t)ᵀ·(p(t+1) − p(t)) per joint (last row 0, mask False); proprio[t] = the joints in the camera
    frame at t, R_cam(t)ᵀ·(p(t) − c(t))."""
    T, J = joints.shape[:2]
    R, c = camera[:, :3, :3], camera[:, :3, 3]  # (T, 3, 3), (T, 3)
    finite = np.isfinite(camera).reshape(T, -1).all(1) & np.isfinite(joints).reshape(T, -1).all(1)
    Rt = np.swapaxes(R, -1, -2)
    proprio = np.einsum("tij,tkj->tki", Rt, joints - c[:, None]).reshape(T, 3 * J)
    actions = np.zeros((T, 3 * J))
    if T > 1:
        actions[:-1] = np.einsum("tij,tkj->tki", Rt[:-1], joints[1:] - joints[:-1]).reshape(T - 1, 3 * J)
    mask = (np.arange(T) < T - 1) & finite & np.roll(finite, -1)
    actions[~mask] = 0.0
    return actions.astype(np.float32), mask, np.nan_to_num(proprio).astype(np.float32)


def egodex_episode(
    mp4: Path,
    h5: Path,
    *,
    episode_id: str,
    fps: float | None,
    size,
    actions: str = "hands",
    camera: str = "ego",
    dataset: str = "egodex",
) -> Episode:
    """One EgoDex episode (see the module docstring)."""
    import h5py

    name = f"{dataset}/{episode_id}"
    joints = WRISTS + (TIPS if actions == "fingertips" else ())
    try:
        with h5py.File(h5, "r") as f:
            text = texts(description(f.attrs), (_attr(f.attrs, "task") or mp4.parent.name).replace("_", " "))
            n = len(f["transforms/camera"])
            cam = pos = None
            if actions != "none":
                cam = np.asarray(f["transforms/camera"], dtype=np.float64)  # (N, 4, 4)
                pos = np.stack([np.asarray(f[f"transforms/{j}"], dtype=np.float64)[:, :3, 3] for j in joints], 1)
    except Exception as e:  # OSError, KeyError from h5py
        raise EpisodeError(f"episode {name}: cannot read {h5}: {type(e).__name__}: {e}") from e
    info = probe_or_error(mp4, name)
    T = min(n, info.num_frames) if info.num_frames > 0 else n  # a few trailing poses without frames are dropped
    keep = sample_steps(T, info.fps or EGODEX_FPS, fps)
    act = mask = proprio = None
    if actions != "none":
        act, mask, proprio = hand_actions(cam[keep], pos[keep])
    native = info.fps or EGODEX_FPS
    return Episode(
        dataset=dataset,
        episode_id=episode_id,
        fps=float(fps if fps and fps < native else native),
        frames={camera: CheckedVideoFrames(mp4, keep / native, size, episode=name)},
        actions=act,
        action_mask=mask,
        proprio=proprio,
        text=text,
        extras=dict(
            layout="egodex",
            path=str(mp4),
            native_fps=native,
            action_joints=list(joints if actions != "none" else ()),
            raw_steps=keep.tolist() if len(keep) != T else None,
        ),
    )


def load_egodex(
    root: str | os.PathLike,
    *,
    fps: float | None = None,
    size: int | tuple[int, int] | None = None,
    actions: str = "hands",
    camera: str = "ego",
    dataset: str = "egodex",
) -> list[Item]:
    """`[(key, loader)]` of every `<i>.mp4` with a same-named `.hdf5` under `root` (module docstring). An MP4 without
    its HDF5 is listed too, so the encode summary names it as skipped."""
    root = Path(root)
    if actions not in ACTIONS:
        raise ValueError(f"load_egodex: actions must be one of {', '.join(ACTIONS)}, got {actions!r}")
    if not root.is_dir():
        raise FileNotFoundError(f"EgoDex folder {root} does not exist")
    items = []
    for mp4 in sorted(p for p in root.rglob("*.mp4") if p.is_file()):
        eid = mp4.relative_to(root).with_suffix("").as_posix()
        items.append(
            (
                f"{dataset}/{eid}",
                lambda m=mp4, e=eid: egodex_episode(
                    m,
                    m.with_suffix(".hdf5"),
                    episode_id=e,
                    fps=fps,
                    size=size,
                    actions=actions,
                    camera=camera,
                    dataset=dataset,
                ),
            )
        )
    return items
