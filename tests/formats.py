"""Tiny files in the real dataset formats, written by the reader tests and by benchmarks/bench_data.py (which puts
tests/ on sys.path to import this module: that is what it is for). One place for every writer or generator that more
than one test file (or the benchmark) uses; a writer only one test file uses stays in that file.

- Frames that show their own number: `encode_index(i)` draws i as 12 black/white vertical stripes (binary), which
  survives H.264 compression and resizing; `indices(frames)` reads the numbers back, so a test checks *which* frame
  came back.
- DROID in the LeRobot layouts: `write_lerobot_v3` (multi-episode parquet/MP4 files located by per-episode offsets)
  and `write_lerobot_v21` (one file per episode); camera c, global row r shows 1000·c + r, and `pose` gives the
  states at those rows, so the 7-D actions can be checked by hand.
- EPIC-KITCHENS-100: `write_epic`, a mini tree (two frame rates, extracted rgb_frames, the narration and video-info
  CSVs).
- AgiBot World: `agibot_states`, end-effector states that follow formulas (proprio_stats.h5's layout).
- EgoDex: `write_egodex_h5`, a per-episode HDF5 of joint transforms (`se3_poses`) with the description attributes.
- Through the pipeline: `encode_fn`, the trivial stand-in encoder, and `encode_and_train` (`latentwm encode` then
  two training steps).

Not a test module (no test_ prefix, no test functions): pytest does not collect it.
"""

import csv
import json
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from latentwm.cli import main
from latentwm.config import get_preset
from latentwm.data.clip_sets import make_clip_datasets
from latentwm.data.latent_cache import LatentCache
from latentwm.data.sources.egodex import TIPS
from latentwm.data.video import write_video
from latentwm.train.trainer import Trainer

# ---- frames that show their own number -------------------------------------------------------------------------------

BITS = 12
H, W = 64, 96


def encode_index(i: int) -> np.ndarray:
    f = np.zeros((H, W, 3), np.uint8)
    sw = W // BITS
    for b in range(BITS):
        if (i >> b) & 1:
            f[:, b * sw : (b + 1) * sw] = 255
    return f


def decode_index(frame: np.ndarray) -> int:
    w = frame.shape[1]
    return sum(1 << b for b in range(BITS) if frame[:, int((b + 0.5) * w / BITS)].mean() > 127)


def indices(frames) -> list[int]:
    return [decode_index(f) for f in frames]


# ---- DROID in the LeRobot layouts (v3, v2.1) -------------------------------------------------------------------------

FPS = 15
CAMS = ["exterior_1_left", "exterior_2_left", "wrist_left"]
KEYS = [f"observation.images.{c}" for c in CAMS]
LENGTHS = [10, 14, 8]  # episodes 0, 1 share data/video file 0; episode 2 is in file 1
LEAD = {2: 5}  # the wrist camera's file-000 starts with 5 frames of another episode: offsets differ per camera


def pose(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cartesian (n, 6), gripper (n, 1) at global rows r: xyz linear, yaw +0.1 rad per step, gripper +0.05."""
    r = np.asarray(r, dtype=np.float64)
    cart = np.stack([0.01 * r, 0.02 * r, 0.5 + 0 * r, 0 * r, 0 * r, 0.1 * r - 1.0], 1)
    return cart, (0.05 * r)[:, None]


def _features():
    f = {k: dict(dtype="video", shape=[64, 96, 3], names=["height", "width", "channels"]) for k in KEYS}
    f.update(
        {
            "observation.state.cartesian_position": dict(dtype="float32", shape=[6]),
            "observation.state.gripper_position": dict(dtype="float32", shape=[1]),
            "observation.state.joint_position": dict(dtype="float32", shape=[7]),
            "action": dict(dtype="float32", shape=[8]),
            "language_instruction": dict(dtype="string", shape=[1]),
            "language_instruction_2": dict(dtype="string", shape=[1]),
            "language_instruction_3": dict(dtype="string", shape=[1]),
            "is_episode_successful": dict(dtype="bool", shape=[1]),
            "timestamp": dict(dtype="float32", shape=[1]),
            "frame_index": dict(dtype="int64", shape=[1]),
            "episode_index": dict(dtype="int64", shape=[1]),
            "index": dict(dtype="int64", shape=[1]),
            "task_index": dict(dtype="int64", shape=[1]),
        }
    )
    return f


def _rows(ep: int, start: int, n: int) -> pa.Table:
    r = np.arange(start, start + n)
    cart, grip = pose(r)
    fl = lambda a: pa.array(a.astype(np.float32).tolist(), type=pa.list_(pa.float32()))  # noqa: E731
    return pa.table(
        {
            "observation.state.cartesian_position": fl(cart),
            "observation.state.gripper_position": fl(grip),
            "observation.state.joint_position": fl(np.zeros((n, 7))),
            "action": fl(np.full((n, 8), 9.0)),
            "language_instruction": [f"task {ep}"] * n,
            "language_instruction_2": [f"task {ep} again"] * n,
            "language_instruction_3": [""] * n,
            "is_episode_successful": [ep != 1] * n,
            "timestamp": pa.array((np.arange(n) / FPS).astype(np.float32)),
            "frame_index": np.arange(n),
            "episode_index": [ep] * n,
            "index": r,
            "task_index": [ep] * n,
        }
    )


def write_lerobot_v3(root: Path, corrupt_episode: int | None = None) -> Path:
    """Mini DROID in the LeRobot v3 layout; the rows of all episodes are numbered globally (dataset index)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "meta").mkdir(exist_ok=True)
    files = {0: [0, 1], 1: [2]}  # file index → episodes
    starts = np.concatenate([[0], np.cumsum(LENGTHS)])
    meta_rows = []
    for fi, eps in files.items():
        data = pa.concat_tables([_rows(e, int(starts[e]), LENGTHS[e]) for e in eps])
        (p := root / f"data/chunk-000/file-{fi:03d}.parquet").parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(data, p, row_group_size=8)
        for c, key in enumerate(KEYS):
            lead = LEAD.get(c, 0) if fi == 0 else 0
            frames = [encode_index(4000 - 1 - k) for k in range(lead)]  # someone else's frames first
            frames += [encode_index(1000 * c + r) for e in eps for r in range(starts[e], starts[e] + LENGTHS[e])]
            (v := root / f"videos/{key}/chunk-000/file-{fi:03d}.mp4").parent.mkdir(parents=True, exist_ok=True)
            write_video(v, np.stack(frames), FPS)
        off = {c: LEAD.get(c, 0) if fi == 0 else 0 for c in range(3)}
        for e in eps:
            row = {
                "episode_index": e,
                "tasks": [f"task {e}"],
                "length": LENGTHS[e],
                "data/chunk_index": 0,
                "data/file_index": fi,
                "dataset_from_index": int(starts[e]),
                "dataset_to_index": int(starts[e + 1]),
                "stats/action/mean": [0.0] * 8,
            }
            for c, key in enumerate(KEYS):
                t0 = (off[c] + sum(LENGTHS[x] for x in eps if x < e)) / FPS
                row.update(
                    {
                        f"videos/{key}/chunk_index": 0,
                        f"videos/{key}/file_index": fi,
                        f"videos/{key}/from_timestamp": t0,
                        f"videos/{key}/to_timestamp": t0 + LENGTHS[e] / FPS,
                    }
                )
            meta_rows.append(row)
    (p := root / "meta/episodes/chunk-000/file-000.parquet").parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(meta_rows), p)
    pq.write_table(pa.table({"task_index": [0, 1, 2]}), root / "meta/tasks.parquet")
    info = dict(
        codebase_version="v3.0",
        robot_type="franka",
        fps=FPS,
        total_episodes=3,
        total_frames=sum(LENGTHS),
        chunks_size=1000,
        data_path="data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        video_path="videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
        features=_features(),
    )
    (root / "meta/info.json").write_text(json.dumps(info))
    return root


def write_lerobot_v21(root: Path, lengths=(9, 12, 7), corrupt: int | None = None) -> Path:
    """Mini DROID in the LeRobot v2.1 layout (one parquet and one MP4 per camera per episode); `corrupt`: that
    episode's wrist MP4 is cut in half."""
    (root / "meta").mkdir(parents=True, exist_ok=True)
    start = 0
    for e, n in enumerate(lengths):
        (p := root / f"data/chunk-000/episode_{e:06d}.parquet").parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(_rows(e, start, n), p)
        for c, key in enumerate(KEYS):
            v = root / f"videos/chunk-000/{key}/episode_{e:06d}.mp4"
            v.parent.mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng(e)  # noise: bytes spread over frames, so a cut file loses frames
            frames = np.stack([encode_index(1000 * c + start + t) for t in range(n)]).astype(np.int16)
            frames = np.clip(frames + rng.integers(-20, 20, frames.shape), 0, 255).astype(np.uint8)
            write_video(v, frames, FPS)
            if e == corrupt and c == 2:
                v.write_bytes(v.read_bytes()[: v.stat().st_size // 2])
        start += n
    (root / "meta/episodes.jsonl").write_text(
        "\n".join(json.dumps(dict(episode_index=e, tasks=[f"task {e}"], length=n)) for e, n in enumerate(lengths))
    )
    info = dict(
        codebase_version="v2.1",
        fps=FPS,
        chunks_size=1000,
        total_episodes=len(lengths),
        data_path="data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        video_path="videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
        features=_features(),
    )
    (root / "meta/info.json").write_text(json.dumps(info))
    return root


CART = "observation.state.cartesian_position"
"""The mini DROID's cartesian-state column (a `state_key` for the generic LeRobot reader)."""


# ---- EPIC-KITCHENS-100 -----------------------------------------------------------------------------------------------

NARR_COLS = [
    "narration_id",
    "participant_id",
    "video_id",
    "narration_timestamp",
    "start_timestamp",
    "stop_timestamp",
    "start_frame",
    "stop_frame",
    "narration",
    "verb",
    "verb_class",
    "noun",
    "noun_class",
    "all_nouns",
    "all_noun_classes",
]


def _ts(s: float) -> str:
    return f"{int(s // 3600):02d}:{int(s % 3600 // 60):02d}:{s % 60:05.2f}"


def _narr(vid, k, start, stop, text, fps):
    return [
        f"{vid}_{k}",
        vid.split("_")[0],
        vid,
        _ts(start),
        _ts(start),
        _ts(stop),
        int(start * fps) + 1,
        int(stop * fps) + 1,
        text,
        text.split()[0],
        0,
        text.split()[-1],
        0,
        f"['{text.split()[-1]}']",
        "[0]",
    ]


def write_epic(root: Path) -> Path:
    """P01_01: 120 frames at 50 fps (2.4 s); P01_02: 100 frames at 59.94 fps; P02_03: 30 JPEG frames at 25 fps;
    P03_01 is listed in the info file but not downloaded."""
    (root / "P01" / "videos").mkdir(parents=True)
    write_video(root / "P01/videos/P01_01.MP4", np.stack([encode_index(k) for k in range(120)]), 50)
    write_video(root / "P01/videos/P01_02.MP4", np.stack([encode_index(k) for k in range(100)]), 59.94)
    (frames := root / "P02" / "rgb_frames" / "P02_03").mkdir(parents=True)
    for k in range(30):
        Image.fromarray(encode_index(k)).save(frames / f"frame_{k + 1:010d}.jpg", quality=95)
    with open(root / "EPIC_100_video_info.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["video_id", "duration", "fps", "resolution"])
        w.writerows(
            [
                ["P01_01", 2.4, 50.0, "96x64"],
                ["P01_02", 1.67, 59.94005994005994, "96x64"],
                ["P02_03", 1.2, 25.0, "96x64"],
                ["P03_01", 100.0, 50.0, "1920x1080"],
            ]
        )
    for name, rows in (
        (
            "EPIC_100_train.csv",
            [
                _narr("P01_01", 0, 0.5, 1.2, "open drawer", 50),
                _narr("P01_01", 1, 2.1, 2.3, "take knife", 50),
                _narr("P02_03", 0, 0.0, 0.3, "wash cup", 25),
            ],
        ),
        ("EPIC_100_validation.csv", [_narr("P01_02", 0, 0.2, 0.4, "close tap", 59.94)]),
    ):
        with open(root / name, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(NARR_COLS)
            w.writerows(rows)
    return root


# ---- AgiBot World ----------------------------------------------------------------------------------------------------


def agibot_states(n: int):
    """pos (n, 2, 3), quat (n, 2, 4) xyzw, grip (n, 2): left arm +1 cm x and +0.1 rad yaw per step, right arm
    −2 cm y per step and still; left gripper +0.05 per step."""
    t = np.arange(n, dtype=np.float64)
    pos = np.zeros((n, 2, 3))
    pos[:, 0, 0], pos[:, 1, 1], pos[:, :, 2] = 0.01 * t, -0.02 * t, 0.8
    quat = np.zeros((n, 2, 4))
    quat[:, 0, 2], quat[:, 0, 3] = np.sin(0.05 * t), np.cos(0.05 * t)  # rotation 0.1·t about z
    quat[:, 1, 3] = 1.0
    return pos, quat, np.stack([0.05 * t, 0 * t], 1)


# ---- EgoDex ----------------------------------------------------------------------------------------------------------

RZ90 = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])  # camera pose rotation: its x axis is the world's y


def se3_poses(R: np.ndarray, p: np.ndarray) -> np.ndarray:
    """(n, 4, 4) SE(3) poses of rotation R (3, 3) at positions p (n, 3)."""
    out = np.tile(np.eye(4), (len(p), 1, 1))
    out[:, :3, :3], out[:, :3, 3] = R, p
    return out


def write_egodex_h5(path: Path, n: int, **attrs) -> None:
    """left wrist +1 cm world x per step, right wrist +2 cm world z per step, fingertips rigidly on their wrist."""
    t = np.arange(n, dtype=np.float64)[:, None]
    left, right = np.array([0.3, 0.2, 1.0]) + 0.01 * t * [1, 0, 0], np.array([0.5, -0.2, 1.0]) + 0.02 * t * [0, 0, 1]
    with h5py.File(path, "w") as f:
        f["camera/intrinsic"] = np.eye(3)
        f["transforms/camera"] = se3_poses(RZ90, np.tile([1.0, 0.0, 1.5], (n, 1)))
        f["transforms/leftHand"], f["transforms/rightHand"] = se3_poses(np.eye(3), left), se3_poses(np.eye(3), right)
        for k, tip in enumerate(TIPS):
            base = left if tip.startswith("left") else right
            f[f"transforms/{tip}"] = se3_poses(np.eye(3), base + 0.01 * k)
        f["transforms/leftForearm"] = se3_poses(np.eye(3), left - 0.2)  # other joints: not read
        f["confidences/leftHand"] = np.ones(n)
        for k, v in attrs.items():
            f.attrs[k] = v


# ---- through the pipeline: a stand-in encoder, encode then train -----------------------------------------------------


def encode_fn(frames):
    """Trivial stand-in encoder: mean-pooled 8×8 patches of the gray image → (T, N, 1)."""
    g = frames.astype(np.float32).mean(-1)
    T, H, W = g.shape
    return g[:, : H // 8 * 8, : W // 8 * 8].reshape(T, H // 8, 8, W // 8, 8).mean((2, 4)).reshape(T, -1, 1) / 255


def encode_and_train(tmp_path: Path, source: str, root: Path, action_dim: int, *extra: str) -> LatentCache:
    """`latentwm encode --source <source>` (tiny encoder, no text model) then 2 training steps on the cache (one
    recorded step per model step, so the model's action width is the data's)."""
    out = tmp_path / f"lat_{source}"
    assert (
        main(
            [
                "encode",
                "--preset",
                "tiny",
                "--source",
                source,
                "--root",
                str(root),
                "--out-dir",
                str(out),
                "--text.name",
                "",
                *extra,
            ]
        )
        == 0
    )
    cache = LatentCache(out)
    assert cache.complete
    cfg = get_preset("tiny").replace(
        data__cache_dir=str(out),
        data__env_action_dim=action_dim,
        data__frame_skip=1,
        model__action_dim=action_dim,
        data__eval_fraction=0.0,
        train__out_dir=str(tmp_path / f"run_{source}"),
        train__steps=2,
        train__log_every=1,
    )
    train_set, _, extra_state = make_clip_datasets(cfg)
    assert Trainer(cfg, train_set, None, extra_state=extra_state, device="cpu").fit()["step"] == 2
    return cache
