"""Data pipeline throughput: decoded frames/s and random clips/s per reader — every `--source` but pusht (DROID as
LeRobot v3 and raw, EPIC, video folder, generic LeRobot, RLDS/SOAR, AgiBot, EgoDex, SSv2, Kinetics, OpenVid,
HowTo100M, Ego4D) — on fixtures written in the real layouts; RLDS TFRecord read MB/s (read + CRC-32C, and read + CRC
+ tf.train.Example parse); and latent-shard read throughput vs plain file reads of the same bytes (the I/O ceiling).

Fixtures (temp dir): textured moving patterns at each set's usual frame size, a few episodes or clips each: DROID
180×320 15 fps × 3 cameras (LeRobot v3: 4 episodes × 60 steps in multi-episode MP4s; raw: 2 × 60); EPIC 256×456
50 fps (2 × 8 s); a folder of 4 × 4 s 240×320; generic LeRobot v3, 2 cameras 180×320 15 fps, action / state /
task_index (4 × 60); RLDS in SOAR's layout, 256² JPEG per step at 5 Hz, 40-step episodes until the shards hold ~20 MB;
AgiBot native, 3 cameras 480×640 30 fps + proprio_stats.h5 + task_info (2 × 90); EgoDex 1080×1920 + per-frame HDF5
(2 × 60); SSv2 240×426 VP8 .webm + labels JSON; Kinetics-700, OpenVid-1M, HowTo100M, Ego4D one or two short MP4s
each with its annotation file (sizes in NOTES).
Frames are decoded at native size and at 224×224 (the encoder's input) through `load_source`, as `latentwm encode`
reads them. Shards: every DROID v3 episode/camera encoded by a stand-in encoder to ViT-S-sized fp16 latents (256 × 384)
and read back through `LatentCache` (no LRU) vs plain reads of the shard files.
--quick: a few frames per reader, one timing repeat, printed and not recorded (tests/test_bench_data.py runs it).
Otherwise the tables are appended to benchmarks/RESULTS.md.

Usage: python benchmarks/bench_data.py [--quick]
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import shutil
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from common import median_time, report, table  # noqa: E402
from formats import agibot_states, write_egodex_h5  # noqa: E402  (tests/formats.py: tiny files in the real formats)

from latentwm.data.cache_integrity import file_checksum  # noqa: E402
from latentwm.data.episodes import frames_at  # noqa: E402
from latentwm.data.latent_cache import Encoding, LatentCache, encode_to_cache  # noqa: E402
from latentwm.data.sources import load_source  # noqa: E402
from latentwm.data.sources import tfrecord as tfr  # noqa: E402
from latentwm.data.video import write_video  # noqa: E402

# benchmark row → (`--source` name, reader options): the rows of the table, in order
READERS = {
    "droid_v3": ("droid", {}),
    "droid_raw": ("droid", {}),
    "epic": ("epic", dict(segment_s=0)),
    "folder": ("video-folder", {}),
    "lerobot": ("lerobot", {}),
    "rlds": ("rlds", {}),
    "agibot": ("agibot", {}),
    "egodex": ("egodex", {}),
    "ssv2": ("ssv2", {}),
    "kinetics": ("kinetics", {}),
    "openvid": ("openvid", {}),
    "howto100m": ("howto100m", {}),
    "ego4d": ("ego4d", {}),
}


def _frames(n: int, h: int, w: int, seed: int) -> np.ndarray:
    """A moving textured pattern (compresses like video, not like flat fixtures)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=(h // 8 + 2, w // 8 + 2, 3), dtype=np.uint8)
    big = np.repeat(np.repeat(base, 8, 0), 8, 1)
    return np.stack([np.roll(big, (k, 2 * k), (0, 1))[:h, :w] for k in range(n)])


def _video(path: Path, n: int, hw: tuple[int, int], fps: float, seed: int, codec: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, _frames(n, *hw, seed), fps, codec=codec)
    return path


def _floats(a: np.ndarray):
    return pa.array(a.astype(np.float32).tolist(), type=pa.list_(pa.float32()))


def _lerobot_v3(
    root: Path, keys: list[str], columns: dict, feats: dict, steps: int, n_eps: int, tasks: list[str], seed: int
) -> Path:
    """A LeRobot v3.0 dataset at 15 fps: all episodes in one data file (`columns`: n_eps·steps rows each, plus
    episode_index / timestamp) and one 180×320 MP4 per camera key; `feats`: info.json's non-video features."""
    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    (root / "data/chunk-000").mkdir(parents=True)
    r = np.arange(steps * n_eps)
    pq.write_table(
        pa.table({"episode_index": r // steps, "timestamp": pa.array((r % steps / 15).astype(np.float32)), **columns}),
        root / "data/chunk-000/file-000.parquet",
    )
    for c, key in enumerate(keys):
        _video(root / f"videos/{key}/chunk-000/file-000.mp4", len(r), (180, 320), 15, seed + c)
    rows = [
        {
            "episode_index": e,
            "tasks": tasks,
            "length": steps,
            "data/chunk_index": 0,
            "data/file_index": 0,
            **{
                f"videos/{k}/{f}": v
                for k in keys
                for f, v in (
                    ("chunk_index", 0),
                    ("file_index", 0),
                    ("from_timestamp", e * steps / 15),
                    ("to_timestamp", (e + 1) * steps / 15),
                )
            },
        }
        for e in range(n_eps)
    ]
    pq.write_table(pa.Table.from_pylist(rows), root / "meta/episodes/chunk-000/file-000.parquet")
    (root / "meta/info.json").write_text(
        json.dumps(dict(codebase_version="v3.0", fps=15, features={**{k: dict(dtype="video") for k in keys}, **feats}))
    )
    return root


def write_droid(root: Path, quick: bool) -> dict[str, Path]:
    """DROID as LeRobot v3 (3 cameras, n_eps episodes in multi-episode MP4s) and raw (2 episodes, h5 + MP4s)."""
    steps, n_eps = (20, 2) if quick else (60, 4)
    keys = [f"observation.images.{c}" for c in ("exterior_1_left", "exterior_2_left", "wrist_left")]
    r = np.arange(steps * n_eps)
    cart = np.stack([0.01 * r, 0 * r, 0 * r, 0 * r, 0 * r, 0.05 * r], 1)
    cols = {
        "observation.state.cartesian_position": _floats(cart),
        "observation.state.gripper_position": _floats(r[:, None] * 0.01),
        "language_instruction": ["pick"] * len(r),
        "is_episode_successful": [True] * len(r),
    }
    feats = {
        k: dict(dtype="float32") for k in ("observation.state.cartesian_position", "observation.state.gripper_position")
    }
    feats.update(language_instruction=dict(dtype="string"), is_episode_successful=dict(dtype="bool"))
    v3 = _lerobot_v3(root / "droid_v3", keys, cols, feats, steps, n_eps, ["pick"], 0)
    raw = root / "droid_raw"
    for e in range(2):
        ep = raw / f"lab/success/ep{e}"
        (ep / "recordings/MP4").mkdir(parents=True)
        with h5py.File(ep / "trajectory.h5", "w") as f:
            f["observation/robot_state/cartesian_position"] = cart[:steps]
            f["observation/robot_state/gripper_position"] = np.zeros(steps)
        serials = {"ext1_cam_serial": "1", "ext2_cam_serial": "2", "wrist_cam_serial": "3"}
        (ep / "metadata_x.json").write_text(json.dumps(dict(current_task="pick", success=True, **serials)))
        for c, s in enumerate(serials.values()):
            _video(ep / f"recordings/MP4/{s}.mp4", steps, (180, 320), 15, 10 + c)
    return dict(droid_v3=v3, droid_raw=raw)


def write_epic_and_folder(root: Path, quick: bool) -> dict[str, Path]:
    epic, secs = root / "epic", (2 if quick else 8)
    lines = ["video_id,duration,fps,resolution"]
    for i in range(2):
        _video(epic / f"P01/videos/P01_0{i + 1}.MP4", secs * 50, (256, 456), 50.0, 20 + i)
        lines.append(f"P01_0{i + 1},{secs},50.0,456x256")
    (epic / "EPIC_100_video_info.csv").write_text("\n".join(lines) + "\n")
    folder = root / "folder"
    for i in range(2 if quick else 4):
        _video(folder / f"v{i}.mp4", 30 if quick else 120, (240, 320), 30, 30 + i)
    return dict(epic=epic, folder=folder)


def write_lerobot(root: Path, quick: bool) -> dict[str, Path]:
    """A generic LeRobot v3 dataset: 2 cameras, 7-D `action`, 8-D `observation.state`, per-row `task_index` (two
    tasks per episode) with `meta/tasks.parquet` as pandas writes it."""
    steps, n_eps = (20, 2) if quick else (60, 4)
    r = np.arange(steps * n_eps)
    keys = ["observation.images.top", "observation.images.wrist"]
    cols = {
        "action": _floats(np.sin(0.1 * r[:, None] + np.arange(7))),
        "observation.state": _floats(np.cos(0.1 * r[:, None] + np.arange(8))),
        "task_index": (r % steps >= steps // 2).astype(np.int64),
    }
    feats = {
        "action": dict(dtype="float32", shape=[7]),
        "observation.state": dict(dtype="float32", shape=[8]),
        "task_index": dict(dtype="int64", shape=[1]),
    }
    out = _lerobot_v3(root / "lerobot", keys, cols, feats, steps, n_eps, ["grasp the cube", "place it in the box"], 40)
    pq.write_table(
        pa.table({"task_index": [0, 1], "__index_level_0__": ["grasp the cube", "place it in the box"]}),
        out / "meta/tasks.parquet",
    )
    return dict(lerobot=out)


def _jpeg(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def write_rlds(root: Path, quick: bool) -> dict[str, Path]:
    """SOAR's RLDS layout: `rlds/{success,failure}/1.0.0/` with dataset_info.json and TFDS shards of one-episode
    Examples (256² JPEG per step, 7-D state and action, instruction per step), episodes of T steps written until the
    shards hold `target` bytes."""
    T, target, per_shard = (20, 2 << 20, 2) if quick else (40, 20 << 20, 2)
    recs: dict[str, list[bytes]] = {"success": [], "failure": []}
    e = total = 0
    while total < target:  # every 4th episode a failure, as SOAR keeps both
        rec = tfr.encode_example(
            {
                "steps/observation/image_0": [_jpeg(f) for f in _frames(T, 256, 256, 50 + e)],
                "steps/observation/state": np.cos(0.1 * np.arange(T * 7, dtype=np.float32)),
                "steps/action": np.sin(0.1 * np.arange(T * 7, dtype=np.float32)),
                "steps/language_instruction": ["put the spoon in the pot"] * T,
                "steps/is_first": np.arange(T) == 0,
                "steps/is_last": np.arange(T) == T - 1,
                "steps/is_terminal": np.arange(T) == T - 1,
                "steps/reward": np.zeros(T, np.float32),
                "steps/discount": np.ones(T, np.float32),
                "episode_metadata/file_path": [f"/raw/traj{e}.pkl"],
            }
        )
        recs["failure" if e % 4 == 3 else "success"].append(rec)
        total, e = total + len(rec) + 16, e + 1
    out = root / "rlds_soar"
    for subset, rs in recs.items():
        d = out / "rlds" / subset / "1.0.0"
        d.mkdir(parents=True)
        (d / "dataset_info.json").write_text(json.dumps({"name": "soar_dataset", "version": "1.0.0"}))
        n = -(-len(rs) // per_shard)
        for s in range(n):
            tfr.write_records(
                d / f"soar_dataset-train.tfrecord-{s:05d}-of-{n:05d}", rs[s * per_shard : (s + 1) * per_shard]
            )
    return dict(rlds=out)


def write_agibot(root: Path, quick: bool) -> dict[str, Path]:
    """AgiBot World's native layout: 3 cameras 480×640 at 30 fps, proprio_stats.h5 (formats.agibot_states), one
    task_info JSON with two action texts per episode."""
    n, eps = (12, ["648642"]) if quick else (90, ["648642", "648649"])
    out = root / "agibot"
    for k, ep in enumerate(eps):
        for c, cam in enumerate(("hand_left_color", "hand_right_color", "head_color")):
            _video(out / "observations/327" / ep / "videos" / f"{cam}.mp4", n, (480, 640), 30, 60 + 3 * k + c)
        (h5 := out / "proprio_stats/327" / ep / "proprio_stats.h5").parent.mkdir(parents=True)
        pos, quat, grip = agibot_states(n)
        with h5py.File(h5, "w") as f:
            f["state/end/position"], f["state/end/orientation"], f["state/effector/position"] = pos, quat, grip
            f["state/joint/position"] = np.zeros((n, 14))
            f["timestamp"] = np.arange(n) * 33_333_333
    (out / "task_info").mkdir()
    (out / "task_info/task_327.json").write_text(
        json.dumps(
            [
                dict(
                    episode_id=int(ep),
                    task_id=327,
                    task_name="Pickup items in the supermarket",
                    label_info=dict(
                        action_config=[
                            dict(start_frame=0, end_frame=n // 2, action_text="Grasp the bag."),
                            dict(start_frame=n // 2, end_frame=n, action_text="Place it in the cart."),
                        ]
                    ),
                )
                for ep in eps
            ]
        )
    )
    return dict(agibot=out)


def write_egodex(root: Path, quick: bool) -> dict[str, Path]:
    """EgoDex: `<task>/<i>.mp4` at 1080×1920 30 fps beside per-frame joint transforms (formats.write_egodex_h5)."""
    n, k = (10, 1) if quick else (60, 2)
    out = root / "egodex"
    for i in range(k):
        _video(out / f"part1/basic_pick_place/{i}.mp4", n, (1080, 1920), 30, 70 + i)
        write_egodex_h5(
            out / f"part1/basic_pick_place/{i}.hdf5", n, llm_description="Pick up the cup and place it on the plate."
        )
    return dict(egodex=out)


def write_annotated(root: Path, quick: bool) -> dict[str, Path]:
    """SSv2 (.webm + labels JSON), Kinetics-700 (clip MP4s + CSV), OpenVid-1M (+ CSV), HowTo100M (+ caption.json),
    Ego4D (v2/full_scale + v2/annotations/narration.json), each in its own layout and usual frame size."""
    q = quick
    ssv2 = root / "ssv2"
    for i in range(2 if q else 4):
        _video(
            ssv2 / f"20bn-something-something-v2/{101 + i}.webm",
            12 if q else 48,
            (240, 426),
            12,
            80 + i,
            codec="libvpx",
        )
    (ssv2 / "something-something-v2-train.json").write_text(
        json.dumps(
            [
                dict(
                    id=str(101 + i),
                    label="putting a pen into a cup",
                    template="Putting [something] into [something]",
                    placeholders=["a pen", "a cup"],
                )
                for i in range(4)
            ]
        )
    )
    kin = root / "kinetics"
    for i in range(1 if q else 2):
        _video(
            kin / f"train/abseiling/{'abcdefghij' + str(i)}_000010_000020.mp4", 15 if q else 300, (360, 640), 30, 90 + i
        )
    (kin / "annotations").mkdir()
    (kin / "annotations/train.csv").write_text(
        "label,youtube_id,time_start,time_end,split\n"
        + "".join(f"abseiling,abcdefghij{i},10,20,train\n" for i in range(2))
    )
    ov = root / "openvid"
    for i in range(1 if q else 2):
        _video(ov / f"video/panda_{i}.mp4", 10 if q else 60, (720, 1280), 30, 100 + i)
    (ov / "OpenVid-1M.csv").write_text(
        "video,caption,aesthetic score,motion score,seconds\n"
        + "".join(f'panda_{i}.mp4,"A dog runs across a field, then stops.",5.1,2.0,2.0\n' for i in range(2))
    )
    how = root / "howto100m"
    for i in range(1 if q else 2):
        _video(how / f"videos/vid{i}.mp4", 15 if q else 150, (360, 640), 30, 110 + i)
    (how / "caption.json").write_text(
        json.dumps(
            {
                f"vid{i}": dict(start=[0.0, 2.5], end=[2.5, 5.0], text=["first cut the onion", "then fry it"])
                for i in range(2)
            }
        )
    )
    ego = root / "ego4d"
    uids = [f"0a1b2c3d-1111-2222-3333-44445555666{i}" for i in range(2)]
    for i, uid in enumerate(uids[: 1 if q else 2]):
        _video(ego / f"v2/full_scale/{uid}.mp4", 15 if q else 150, (540, 960), 30, 120 + i)
    (ego / "v2/annotations").mkdir(parents=True)
    (ego / "v2/annotations/narration.json").write_text(
        json.dumps(
            {
                uid: {
                    "narration_pass_1": {
                        "narrations": [
                            dict(timestamp_sec=t, narration_text=s)
                            for t, s in ((0.4, "#C C opens the drawer"), (2.0, "#C C takes a cup"))
                        ]
                    }
                }
                for uid in uids
            }
        )
    )
    return dict(ssv2=ssv2, kinetics=kin, openvid=ov, howto100m=how, ego4d=ego)


def write_fixtures(root: Path, quick: bool) -> dict[str, Path]:
    """Every reader's fixture under `root`: {benchmark row: dataset root}."""
    paths = {}
    for writer in (
        write_droid,
        write_epic_and_folder,
        write_lerobot,
        write_rlds,
        write_agibot,
        write_egodex,
        write_annotated,
    ):
        paths.update(writer(root, quick))
    assert set(paths) == set(READERS), sorted(set(paths) ^ set(READERS))
    return paths


def bench_reader(make, clip_len: int = 8, n_clips: int = 12, repeats: int = 2) -> dict:
    """Decoded frames/s over every frame of every episode/camera, and random `clip_len`-frame clips/s (a seek
    each); `hw`: the decoded frame size."""
    items = make()
    eps = [load() for _, load in items]
    n_frames = sum(len(e) * len(e.cameras) for e in eps)
    first = frames_at(eps[0].frames[eps[0].cameras[0]], [0])  # (1, H, W, 3)

    def decode_all():
        for e in eps:
            for cam in e.cameras:
                frames_at(e.frames[cam], range(len(e)))

    t = median_time(decode_all, repeats=repeats, warmup=0)
    rng = np.random.default_rng(0)
    picks = []
    for _ in range(n_clips):
        e = eps[int(rng.integers(len(eps)))]
        cam = e.cameras[int(rng.integers(len(e.cameras)))]
        s = int(rng.integers(len(e) - clip_len + 1))
        picks.append((e, cam, s))

    def clips():
        for e, cam, s in picks:
            frames_at(e.frames[cam], range(s, s + clip_len))

    tc = median_time(clips, repeats=repeats, warmup=0)
    return dict(
        hw=f"{first.shape[1]}×{first.shape[2]}",
        episodes=len(eps),
        frames=n_frames,
        decode_frames_per_s=n_frames / t,
        clips_per_s=n_clips / tc,
    )


def read_files(paths: list[Path]) -> None:
    """Plain 1 MiB reads of every file: the I/O ceiling the parsed reads are compared with."""
    for p in paths:
        with open(p, "rb") as fh:
            while fh.read(1 << 20):
                pass


def bench_tfrecord(root: Path, repeats: int) -> dict:
    """MB/s of the RLDS shards under `root`: plain reads, TFRecord framing + both CRC-32Cs per record, and that plus
    the tf.train.Example parse (what `load_rlds` does before decoding any image)."""
    shards = sorted(p for p in root.rglob("*.tfrecord-*") if p.is_file())
    mb = sum(p.stat().st_size for p in shards) / 2**20

    def read_crc():
        return sum(1 for p in shards for _ in tfr.iter_records(p))

    def read_parse():
        for p in shards:
            for rec in tfr.iter_records(p):
                tfr.parse_example(rec)

    records = read_crc()  # page cache warm for all three
    t_raw = median_time(partial(read_files, shards), repeats)
    return dict(
        rlds_mb=mb,
        rlds_records=records,
        rlds_raw_read_mb_per_s=mb / t_raw,
        rlds_read_crc_mb_per_s=mb / median_time(read_crc, repeats),
        rlds_read_crc_parse_mb_per_s=mb / median_time(read_parse, repeats),
        crc32c_impl="google_crc32c" if importlib.util.find_spec("google_crc32c") else "numpy",
    )


def bench_shards(v3: Path, out: Path, repeats: int) -> dict:
    N, D = 256, 384

    def encode(frames):  # stand-in for DINOv2-S: deterministic, not compressible to nothing
        g = frames[:, ::12, ::20, :].astype(np.float32).reshape(len(frames), -1)[:, :N]
        return (g[:, :, None] / 255.0 + np.linspace(0, 1, D, dtype=np.float32)).astype(np.float32)

    encode_to_cache(
        load_source("droid", v3, size=224),
        Encoding(encode, "stand-in-vits"),
        out,
        episodes_per_shard=2,
        show_progress=False,
    )
    shards = sorted(out.glob("shard-*.tar"))
    total = sum(p.stat().st_size for p in shards)

    def read_cache():
        c = LatentCache(out, memory_mb=0)
        for i in range(len(c)):
            c.raw(i)  # every stored array parsed (latents stay fp16, as a loader would read them)

    read_raw = partial(read_files, shards)
    read_raw()  # page cache warm for both
    t_cache = median_time(read_cache, repeats=repeats)  # includes each shard's checksum check on first open
    t_raw = median_time(read_raw, repeats=repeats)
    t_check = median_time(lambda: [file_checksum(p) for p in shards], repeats=repeats)
    return dict(
        shard_mb=total / 2**20,
        shard_read_mb_per_s=total / 2**20 / t_cache,
        raw_read_mb_per_s=total / 2**20 / t_raw,
        shard_vs_raw_read_ratio=t_raw / t_cache,
        shard_check_share_of_read=t_check / t_cache,
    )


def bench_readers(paths: dict[str, Path], quick: bool) -> list[dict]:
    """One row per reader and size (native, 224²), read through `load_source` as `latentwm encode` does."""
    rows = []
    for size in (None, 224):
        for name, (source, opts) in READERS.items():
            make = partial(load_source, source, paths[name], size=size, **opts)
            r = bench_reader(make, n_clips=4 if quick else 12, repeats=1 if quick else 2)
            rows.append(dict(reader=name, source=source, size="native" if size is None else size, **r))
    return rows


def summarize(rows: list[dict], sh: dict, rl: dict, quick: bool) -> dict:
    """The JSON line: medians over readers and sizes (as before the new readers), every reader's and every source's
    rates (a source's row: its first reader, DROID's LeRobot v3), the RLDS and shard read rates."""
    per = {
        f"{r['reader']}@{r['size']}": dict(decode_frames_per_s=r["decode_frames_per_s"], clips_per_s=r["clips_per_s"])
        for r in rows
    }
    per_source: dict[str, dict] = {}
    for r in rows:
        d = per_source.setdefault(r["source"], dict(reader=r["reader"]))
        if d["reader"] == r["reader"]:
            tag = "" if r["size"] == "native" else "_224"
            d.update({f"decode_frames_per_s{tag}": r["decode_frames_per_s"], f"clips_per_s{tag}": r["clips_per_s"]})
    return dict(
        decode_frames_per_s=float(np.median([r["decode_frames_per_s"] for r in rows])),
        decode_frames_per_s_224=float(np.median([r["decode_frames_per_s"] for r in rows if r["size"] == 224])),
        clips_per_s=float(np.median([r["clips_per_s"] for r in rows])),
        shard_vs_raw_read_ratio=sh["shard_vs_raw_read_ratio"],
        shard_read_mb_per_s=sh["shard_read_mb_per_s"],
        shard_check_share_of_read=sh["shard_check_share_of_read"],
        raw_read_mb_per_s=sh["raw_read_mb_per_s"],
        **rl,
        per_reader=per,
        per_source=per_source,
        quick=quick,
    )


NOTES = (
    "Fixtures: textured moving patterns (DROID / LeRobot 180×320 15 fps, EPIC 256×456 50 fps, folder 240×320, "
    "RLDS/SOAR 256² JPEG q95 5 Hz, AgiBot 3 × 480×640, EgoDex 1080×1920, SSv2 240×426 VP8 webm 12 fps, Kinetics / "
    "HowTo100M 360×640, OpenVid 720×1280, Ego4D 540×960, others 30 fps; H.264 libx264 default GOP but SSv2). "
    "decode = every frame of every episode/camera; clips = random 8-frame clips (a seek each). RLDS: the shards "
    "read whole (plain; TFRecord framing + CRC-32C per record; + tf.train.Example parse). Shards: LatentCache "
    "(no LRU) vs plain reads of the same files. Page cache warm. decode_frames_per_s: the median over readers "
    "and sizes (13 readers since issue 19, 4 before); per_source: each --source's own rates."
)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a few frames per reader, one repeat; printed, not recorded")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench_data_"))
    try:
        t0 = time.perf_counter()
        paths = write_fixtures(root, args.quick)
        print(f"fixtures written in {time.perf_counter() - t0:.1f} s")
        rows = bench_readers(paths, args.quick)
        rl = bench_tfrecord(paths["rlds"], repeats=1 if args.quick else 5)
        sh = bench_shards(paths["droid_v3"], root / "cache", repeats=1 if args.quick else 5)
        md = table(rows, ["reader", "source", "size", "hw", "episodes", "frames", "decode_frames_per_s", "clips_per_s"])
        md += "\n\n" + table(
            [rl],
            [
                "rlds_mb",
                "rlds_records",
                "crc32c_impl",
                "rlds_raw_read_mb_per_s",
                "rlds_read_crc_mb_per_s",
                "rlds_read_crc_parse_mb_per_s",
            ],
        )
        md += "\n\n" + table([sh], ["shard_mb", "shard_read_mb_per_s", "raw_read_mb_per_s", "shard_vs_raw_read_ratio"])
        summary = summarize(rows, sh, rl, args.quick)
        if args.quick:  # the suite's smoke run: printed, not recorded
            print(md, NOTES, json.dumps(summary), sep="\n")
            return
        report("bench_data: decode, RLDS and shard read throughput", md, summary, NOTES)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
