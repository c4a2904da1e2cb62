"""Data pipeline throughput: decoded frames/s and random clips/s per reader (DROID LeRobot v3, raw DROID, EPIC, video
folder) on fixtures written in the real layouts, and latent-shard read throughput vs plain file reads of the same
bytes (the I/O ceiling), in one run.

Fixtures (temp dir): DROID-like 180×320 frames at 15 fps, 3 cameras (LeRobot v3: 4 episodes × 60 steps packed in
multi-episode MP4s; raw: 2 episodes × 60), EPIC-like 256×456 at 50 fps (2 videos × 8 s), a folder of 4 × 4 s
videos at 30 fps. Frames are decoded at native size (size=None) and at 224×224 (the encoder's input).
Shards: every DROID v3 episode/camera encoded by a stand-in encoder to ViT-S-sized latents (256 × 384, fp16:
196 KB/frame as DINOv2-S at 224 px) and read back through `LatentCache` (no LRU) vs `open().read()` of the shard files.

Usage: python benchmarks/bench_data.py [--quick]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from common import median_time, report, table  # noqa: E402

from latentwm.data.episodes import frames_at  # noqa: E402
from latentwm.data.latent_cache import LatentCache, encode_to_cache  # noqa: E402
from latentwm.data.sources.droid import load_droid  # noqa: E402
from latentwm.data.sources.epic_kitchens import load_epic_kitchens  # noqa: E402
from latentwm.data.sources.video_folder import load_video_folder  # noqa: E402
from latentwm.data.video import write_video  # noqa: E402


def _frames(n: int, h: int, w: int, seed: int) -> np.ndarray:
    """A moving textured pattern (compresses like video, not like flat fixtures)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=(h // 8 + 2, w // 8 + 2, 3), dtype=np.uint8)
    big = np.repeat(np.repeat(base, 8, 0), 8, 1)
    return np.stack([np.roll(big, (k, 2 * k), (0, 1))[:h, :w] for k in range(n)])


def write_fixtures(root: Path, quick: bool) -> dict[str, Path]:
    import json

    import h5py
    import pyarrow as pa
    import pyarrow.parquet as pq

    steps, n_eps = (30, 2) if quick else (60, 4)
    cams = ["exterior_1_left", "exterior_2_left", "wrist_left"]
    keys = [f"observation.images.{c}" for c in cams]
    # LeRobot v3: all episodes in one data file and one MP4 per camera
    v3 = root / "droid_v3"
    (v3 / "meta/episodes/chunk-000").mkdir(parents=True)
    (v3 / "data/chunk-000").mkdir(parents=True)
    r = np.arange(steps * n_eps)
    fl = lambda a: pa.array(a.astype(np.float32).tolist(), type=pa.list_(pa.float32()))  # noqa: E731
    cart = np.stack([0.01 * r, 0 * r, 0 * r, 0 * r, 0 * r, 0.05 * r], 1)
    pq.write_table(pa.table({"episode_index": r // steps, "timestamp": pa.array((r % steps / 15).astype(np.float32)),
                             "observation.state.cartesian_position": fl(cart),
                             "observation.state.gripper_position": fl(r[:, None] * 0.01),
                             "language_instruction": ["pick"] * len(r), "is_episode_successful": [True] * len(r)}),
                   v3 / "data/chunk-000/file-000.parquet")
    for c, key in enumerate(keys):
        (v := v3 / f"videos/{key}/chunk-000/file-000.mp4").parent.mkdir(parents=True)
        write_video(v, _frames(len(r), 180, 320, c), 15)
    rows = [{"episode_index": e, "tasks": ["pick"], "length": steps, "data/chunk_index": 0, "data/file_index": 0,
             **{f"videos/{k}/{f}": v for k in keys for f, v in (("chunk_index", 0), ("file_index", 0),
                                                                  ("from_timestamp", e * steps / 15),
                                                                  ("to_timestamp", (e + 1) * steps / 15))}}
            for e in range(n_eps)]
    pq.write_table(pa.Table.from_pylist(rows), v3 / "meta/episodes/chunk-000/file-000.parquet")
    feats = {k: dict(dtype="video") for k in keys}
    feats.update({k: dict(dtype="float32") for k in ("observation.state.cartesian_position",
                                                     "observation.state.gripper_position")})
    feats.update(language_instruction=dict(dtype="string"), is_episode_successful=dict(dtype="bool"))
    (v3 / "meta/info.json").write_text(json.dumps(dict(codebase_version="v3.0", fps=15, features=feats)))
    # raw DROID
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
            write_video(ep / f"recordings/MP4/{s}.mp4", _frames(steps, 180, 320, 10 + c), 15)
    # EPIC
    epic = root / "epic"
    secs = 4 if quick else 8
    (epic / "P01/videos").mkdir(parents=True)
    lines = ["video_id,duration,fps,resolution"]
    for i, fps in enumerate((50.0, 50.0)):
        write_video(epic / f"P01/videos/P01_0{i + 1}.MP4", _frames(int(secs * fps), 256, 456, 20 + i), fps)
        lines.append(f"P01_0{i + 1},{secs},{fps},456x256")
    (epic / "EPIC_100_video_info.csv").write_text("\n".join(lines) + "\n")
    # video folder
    vf = root / "folder"
    vf.mkdir()
    for i in range(2 if quick else 4):
        write_video(vf / f"v{i}.mp4", _frames(120, 240, 320, 30 + i), 30)
    return dict(droid_v3=v3, droid_raw=raw, epic=epic, folder=vf)


def readers(paths: dict[str, Path], size):
    return {"droid_v3": lambda: load_droid(paths["droid_v3"], size=size),
            "droid_raw": lambda: load_droid(paths["droid_raw"], size=size),
            "epic": lambda: load_epic_kitchens(paths["epic"], size=size, segment_s=None),
            "folder": lambda: load_video_folder(paths["folder"], size=size)}


def bench_reader(make, clip_len: int = 8, n_clips: int = 12) -> dict:
    items = make()
    eps = [load() for _, load in items]
    n_frames = sum(len(e) * len(e.cameras) for e in eps)

    def decode_all():
        for e in eps:
            for cam in e.cameras:
                frames_at(e.frames[cam], range(len(e)))

    t = median_time(decode_all, repeats=2, warmup=0)
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

    tc = median_time(clips, repeats=2, warmup=0)
    return dict(frames=n_frames, decode_frames_per_s=n_frames / t, clips_per_s=n_clips / tc)


def bench_shards(v3: Path, out: Path) -> dict:
    N, D = 256, 384

    def encode(frames):  # stand-in for DINOv2-S: deterministic, not compressible to nothing
        g = frames[:, ::12, ::20, :].astype(np.float32).reshape(len(frames), -1)[:, :N]
        return (g[:, :, None] / 255.0 + np.linspace(0, 1, D, dtype=np.float32)).astype(np.float32)

    encode_to_cache(load_droid(v3, size=224), encode, out, encoder_label="stand-in-vits", episodes_per_shard=2,
                    show_progress=False)
    shards = sorted(out.glob("shard-*.tar"))
    total = sum(p.stat().st_size for p in shards)

    def read_cache():
        c = LatentCache(out, memory_mb=0)
        for i in range(len(c)):
            c.raw(i)  # every stored array parsed (latents stay fp16, as a loader would read them)

    def read_raw():
        for p in shards:
            with open(p, "rb") as fh:
                while fh.read(1 << 20):
                    pass

    read_raw()  # page cache warm for both
    t_cache = median_time(read_cache, repeats=5)
    t_raw = median_time(read_raw, repeats=5)
    return dict(shard_mb=total / 2**20, shard_read_mb_per_s=total / 2**20 / t_cache,
                raw_read_mb_per_s=total / 2**20 / t_raw, shard_vs_raw_read_ratio=t_raw / t_cache)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller fixtures (smoke test)")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench_data_"))
    try:
        t0 = time.perf_counter()
        paths = write_fixtures(root, args.quick)
        print(f"fixtures written in {time.perf_counter() - t0:.1f} s")
        rows, per = [], {}
        for size in (None, 224):
            for name, make in readers(paths, size).items():
                r = bench_reader(make)
                label = f"{name}@{'native' if size is None else size}"
                per[label] = r
                rows.append(dict(reader=name, size="native" if size is None else size, **r))
        sh = bench_shards(paths["droid_v3"], root / "cache")
        md = table(rows, ["reader", "size", "frames", "decode_frames_per_s", "clips_per_s"])
        md += "\n\n" + table([sh], ["shard_mb", "shard_read_mb_per_s", "raw_read_mb_per_s", "shard_vs_raw_read_ratio"])
        all_fps = [r["decode_frames_per_s"] for r in rows]
        summary = dict(decode_frames_per_s=float(np.median(all_fps)),
                       decode_frames_per_s_224=float(np.median([r["decode_frames_per_s"] for r in rows
                                                                if r["size"] == 224])),
                       clips_per_s=float(np.median([r["clips_per_s"] for r in rows])),
                       shard_vs_raw_read_ratio=sh["shard_vs_raw_read_ratio"],
                       shard_read_mb_per_s=sh["shard_read_mb_per_s"], raw_read_mb_per_s=sh["raw_read_mb_per_s"],
                       per_reader={k: dict(decode_frames_per_s=v["decode_frames_per_s"], clips_per_s=v["clips_per_s"])
                                   for k, v in per.items()}, quick=args.quick)
        notes = ("Fixtures: H.264 (libx264, default GOP) textured moving patterns; DROID 180×320 15 fps × 3 cameras, "
                 "EPIC 256×456 50 fps, folder 240×320 30 fps. decode = every frame of every episode/camera; "
                 "clips = 12 random 8-frame clips (a seek each). Shards: stand-in ViT-S-sized fp16 latents "
                 "(256×384) read through LatentCache (no LRU) vs plain reads of the same files, page cache warm. "
                 "decode_frames_per_s in the JSON is the median over readers and sizes.")
        report("bench_data: decode and shard read throughput" + (" (quick)" if args.quick else ""), md, summary,
               notes)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
