"""Which Push-T data trains the better model per minute of generation: every frame of N trajectories, or every k-th
frame (one phase of the frame skip) of more trajectories?

    python benchmarks/bench_render_every.py [--out runs/render_every] [--episodes 240] [--ratio 2.0] [--k 5]
                                            [--steps 800] [--quick]

Arms (the demo's policy mix and 200-step episodes, seed 0):
- "every frame": --episodes trajectories rendered at every env step;
- "every k-th frame": round(episodes × ratio) trajectories rendered every k-th step, where `ratio` is the measured
  ratio of episodes/s of the two settings on the same machine (bench_generate.py; pass the measured value), so both
  arms cost the same generation time. Generation time of both arms is measured here too and reported.
Both are encoded with the `cpu` preset's fixed random-weight encoder (`tiny-random`, 112 px: the same latent space
for both arms, so their errors compare), and the `cpu` preset's model trains --steps steps on each (same seeds,
frame skip 5: one model step = 5 env steps in both arms; evaluated once, at the end). Both are scored on one
shared test set: 48 trajectories of another seed rendered at every step, every clip (`latentwm eval --split all`,
8-step rollouts, K = 4, mean of 4 samples beside one, swapped actions). Every stage resumes (generate, encode, train
--train.resume). --quick: tiny sizes (smoke preset, a few episodes), printed and not recorded.
Last line: JSON with each arm's trajectories, generation seconds and mean rollout error, and the winner.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import report, table  # noqa: E402

from latentwm.cli import main as cli  # noqa: E402
from latentwm.config import GenerateConfig  # noqa: E402
from latentwm.data.sources.pusht import generate_pusht  # noqa: E402


def run(args: list[str]) -> None:
    rc = cli(args)
    if rc != 0:
        raise SystemExit(f"bench_render_every: `latentwm {' '.join(args)}` exited {rc}")


def arm(
    out: Path, name: str, episodes: int, k: int, seed: int, preset: str, steps: int, env_steps: int, image: int
) -> dict:
    d = out / name
    timing = d / "generate_seconds.json"  # measured when the episodes were made (a resumed run keeps it)
    if not timing.exists():
        t = time.perf_counter()
        generate_pusht(
            GenerateConfig(
                out_dir=str(d / "episodes"), num_episodes=episodes, max_steps=env_steps, seed=seed, render_every=k
            ),
            show_progress=False,
        )
        timing.write_text(json.dumps({"seconds": time.perf_counter() - t}))
    gen_s = json.loads(timing.read_text())["seconds"]
    run(
        [
            "encode",
            "--root",
            str(d / "episodes"),
            "--out-dir",
            str(d / "latents"),
            "--encoder.name",
            "tiny-random",
            "--encoder.image-size",
            str(image),
        ]
    )
    if steps:
        run(
            [
                "train",
                "--preset",
                preset,
                "--data.cache-dir",
                str(d / "latents"),
                "--train.out-dir",
                str(d / "train"),
                "--train.steps",
                str(steps),
                "--train.eval-every",
                str(steps),
                "--train.resume",
            ]
        )
    return {"arm": name, "trajectories": episodes, "render_every": k, "generate_s": gen_s}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/render_every")
    ap.add_argument("--episodes", type=int, default=240)
    ap.add_argument("--ratio", type=float, default=2.0, help="episodes/s of render-every-k over every frame")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    preset, env_steps, image, test_n = ("smoke", 40, 56, 6) if args.quick else ("cpu", 200, 112, 48)
    n_full = 6 if args.quick else args.episodes
    steps = 20 if args.quick else args.steps
    out = Path(args.out)
    rows = [
        arm(out, "every frame", n_full, 1, 0, preset, steps, env_steps, image),
        arm(out, f"every {args.k}th frame", round(n_full * args.ratio), args.k, 0, preset, steps, env_steps, image),
    ]
    arm(out, "test", test_n, 1, 1000, preset, 0, env_steps, image)
    for r in rows:
        ev = out / r["arm"] / "eval"
        run(
            [
                "eval",
                "--checkpoint",
                str(out / r["arm"] / "train"),
                "--cache-dir",
                str(out / "test" / "latents"),
                "--split",
                "all",
                "--out-dir",
                str(ev),
                "--videos",
                "0",
            ]
        )
        m = json.loads((ev / "metrics.json").read_text())
        r["mean_error"] = sum(m["model_error"]) / len(m["model_error"])
        r["error_h1"], r["error_h8"] = m["model_error"][0], m["model_error"][-1]
        r["mean_of_samples_error"] = sum(m["mean_of_samples_error"]) / len(m["mean_of_samples_error"])
        r["copy_last_error"] = sum(m["copy_last_error"]) / len(m["copy_last_error"])
        r["action_sensitivity"] = m.get("action_sensitivity")
        r["test_clips"] = m["num_clips"]
    best = min(rows, key=lambda r: r["mean_error"])
    md = table(
        rows,
        [
            "arm",
            "trajectories",
            "render_every",
            "generate_s",
            "mean_error",
            "error_h1",
            "error_h8",
            "mean_of_samples_error",
            "copy_last_error",
            "action_sensitivity",
            "test_clips",
        ],
    )
    notes = (
        f"{preset} preset, {steps} training steps per arm, tiny-random encoder at {image} px; the sparse arm has "
        f"round({n_full} × {args.ratio}) trajectories (the measured episodes/s ratio); errors: normalized latent "
        f"MSE on the shared {test_n}-trajectory test set (seed 1000, every frame), mean over horizons 1–8. "
        f"Lower is better; copy-last is the do-nothing baseline."
    )
    report(
        "bench_render_every: every frame vs every k-th frame at equal generation time",
        md,
        {"rows": rows, "better": best["arm"], "quick": args.quick},
        notes,
        record=not args.quick,
    )


if __name__ == "__main__":
    main()
