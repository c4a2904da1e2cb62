"""Push-T episode generation throughput: episodes/s before and after, and where one env step's time goes.

    python benchmarks/bench_generate.py [--episodes 200] [--steps 200] [--render-every 5] [--quick]

"before" is the former path: gym-pusht's own `step` (the goal zone's polygons rebuilt every step, the 512² frame
copied through pygame's strided 3-channel view) and `np.savez_compressed`, one process. "after" is
`latentwm generate` as it runs now (`PushTEnv.step`: same physics, pixels and rewards, tested equal; fixed-timestamp
zip files) on 1 process and on every core, rendering every frame and every k-th frame (`--render-every k`: one phase
of the frame skip per episode, stored with frame skip k). Every every-frame setting writes the same episodes (byte
for byte), so the model trained on them is the same: that speedup costs no model quality. Whether one phase of more
episodes trains a better model per minute of generation is measured separately (benchmarks/RESULTS.md, "render
every k-th frame"). The second table splits one env step into physics, coverage, drawing at 512² and the copy +
resize to the observation size. --quick: a few short episodes, printed and not recorded (the test suite runs it).
Last line: JSON with `speedup` (the fastest setting that a measured model quality supports: the sparse one when the
latest bench_render_every result in RESULTS.md found its model no worse at equal generation time, else every
frame), `speedup_render_every` (fastest sparse setting / before) and episodes/s per setting.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, median_time, report, table  # noqa: E402

from latentwm.config import GenerateConfig  # noqa: E402
from latentwm.data.sources.pusht import episode_spec, generate_pusht, rollout_episode  # noqa: E402
from latentwm.envs.pusht import PushTEnv  # noqa: E402
from latentwm.envs.pusht_policies import ScriptedPusher  # noqa: E402


class GymStepEnv(PushTEnv):
    """The wrapper as it stepped before: through gym-pusht's own step (and its observation rendering)."""

    def step(self, action, render: bool = True):  # gym-pusht always renders
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(2), 0.0, 512.0)
        obs, reward, terminated, truncated, info = self._env.step(a)
        self._frame = obs["pixels"]
        self._last_info = self._info(float(info["coverage"]))
        return self._frame, float(reward), bool(terminated), bool(truncated), dict(self._last_info)


def before(cfg: GenerateConfig, out: Path) -> float:
    """Seconds to make cfg's episodes the former way (one process, gym-pusht's step, np.savez_compressed)."""
    env = GymStepEnv(image_size=cfg.image_size)
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    for i in range(cfg.num_episodes):
        ep = rollout_episode(env, episode_spec(cfg, i))
        arrays = {
            "frames/main": ep.frames["main"],
            "actions": ep.actions,
            "states": ep.states,
            "proprio": ep.proprio,
            "rewards": ep.rewards,
        }
        with open(out / f"episode_{i:06d}.npz", "wb") as fh:
            np.savez_compressed(fh, **arrays)
    return time.perf_counter() - t


def after(cfg: GenerateConfig) -> float:
    t = time.perf_counter()
    generate_pusht(cfg, show_progress=False)
    return time.perf_counter() - t


def step_profile(image_size: int, steps: int) -> list[dict]:
    """Median ms per env step of each part of `PushTEnv.step`, and of gym-pusht's own step for comparison."""
    import cv2
    import pygame

    env = PushTEnv(image_size=image_size)
    _, info = env.reset(seed=0)
    pol, state = ScriptedPusher(np.random.default_rng(0)), info["state"]
    for _ in range(40):  # into contact with the block
        _, _, _, _, info = env.step(pol(state))
        state = info["state"]
    sim = env.sim
    act = pol(state)
    screen = sim._draw()

    def strided_copy():
        img = np.transpose(np.array(pygame.surfarray.pixels3d(screen)), axes=(1, 0, 2))
        return cv2.resize(img, (image_size, image_size))

    parts = {
        "physics (10 substeps)": lambda: env._simulate(np.asarray(act, dtype=np.float64).reshape(1, 2)),
        "coverage, zone cached": env._coverage,
        "coverage, zone rebuilt (gym-pusht)": sim._get_coverage,
        "draw 512² (pygame)": sim._draw,
        "copy + resize, contiguous (now)": env._observe,
        "copy + resize, strided (gym-pusht)": strided_copy,
        "whole step, now": lambda: env.step(act),
        "whole step, gym-pusht": lambda: env._env.step(np.asarray(act)),
    }
    rows = [{"part": k, "ms_per_step": 1e3 * median_time(f, repeats=steps, warmup=3)} for k, f in parts.items()]
    rows[4]["ms_per_step"] -= rows[3]["ms_per_step"]  # _observe draws too: report the copy + resize alone
    return rows


def sparse_supported() -> bool:
    """Whether the latest bench_render_every result in RESULTS.md found the sparse data's model no worse at equal
    generation time (then the sparse setting's speed counts as `speedup`); False without such a result."""
    if not RESULTS.exists():
        return False
    text = RESULTS.read_text()
    at = text.rfind("## bench_render_every")
    if at < 0:
        return False
    for line in text[at:].splitlines():
        if line.startswith("{") and '"better"' in line:
            res = json.loads(line)
            full = [r["mean_error"] for r in res["rows"] if r["render_every"] == 1]
            sparse = [r["mean_error"] for r in res["rows"] if r["render_every"] > 1]
            return bool(full and sparse and not res.get("quick") and min(sparse) <= full[0])
    return False


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=200, help="enough that starting the processes (≈ 3 s) is amortized")
    ap.add_argument("--steps", type=int, default=200, help="env steps per episode")
    ap.add_argument("--image-size", type=int, default=96)
    ap.add_argument("--render-every", type=int, default=5, help="the sparse setting: render every k-th step")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    n, steps = (6, 30) if args.quick else (args.episodes, args.steps)
    cores = os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = GenerateConfig(num_episodes=n, max_steps=steps, image_size=args.image_size, seed=0)
        t0 = before(base, Path(tmp) / "before")
        rows.append({"setting": "before: gym-pusht step, 1 process", "seconds": t0})
        for k in (1, args.render_every):
            for w in sorted({1, cores}):
                cfg = GenerateConfig(
                    out_dir=str(Path(tmp) / f"after{w}_{k}"),
                    num_episodes=n,
                    max_steps=steps,
                    image_size=args.image_size,
                    seed=0,
                    workers=w,
                    render_every=k,
                )
                every = "every frame" if k == 1 else f"every {k}th frame"
                rows.append(
                    {
                        "setting": f"after: {w} process{'es' if w > 1 else ''}, {every}",
                        "render_every": k,
                        "seconds": after(cfg),
                    }
                )
        same = all(
            (Path(tmp) / "after1_1" / p.name).read_bytes() == p.read_bytes()
            for p in (Path(tmp) / f"after{cores}_1").glob("episode_*.npz")
        )
    for r in rows:
        r["episodes_per_s"] = n / r["seconds"]
        r["env_steps_per_s"] = n * steps / r["seconds"]
        r["speedup"] = t0 / r["seconds"]
    prof = step_profile(args.image_size, 20 if args.quick else 200)
    full = [r for r in rows[1:] if r["render_every"] == 1]
    sparse = max(r["speedup"] for r in rows[1:] if r["render_every"] > 1)
    supported = sparse_supported()
    speedup = max(max(r["speedup"] for r in full), sparse if supported else 0.0)
    md = (
        table(rows, ["setting", "seconds", "episodes_per_s", "env_steps_per_s", "speedup"])
        + "\n\nOne env step, median ms (in contact with the block):\n\n"
        + table(prof, ["part", "ms_per_step"])
    )
    notes = (
        f"{n} episodes × ≤ {steps} env steps at {args.image_size} px, default policy mix, {cores} cores; the "
        f"episodes of 1 and {cores} processes byte-identical: {same}. Episodes that reach the goal zone end "
        f"early, so env steps/s is an upper bound per episode."
    )
    summary = {
        "speedup": round(speedup, 3),
        "speedup_render_every": round(sparse, 3),
        "render_every_supported_by_model_quality": supported,
        "render_every": args.render_every,
        "identical_across_workers": same,
        "episodes_per_s": {r["setting"]: round(r["episodes_per_s"], 3) for r in rows},
        "ms_per_step": {r["part"]: round(r["ms_per_step"], 4) for r in prof},
    }
    report("bench_generate: Push-T episodes/s", md, summary, notes, record=not args.quick)


if __name__ == "__main__":
    main()
