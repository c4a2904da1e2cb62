"""Data scaling on Push-T: planning success against the number of training trajectories, beside DINO-WM's Table 5.

    python benchmarks/bench_data_scaling.py [--sizes 240,1000,3000] [--steps 3000] [--goals 60]
                                            [--encoder E] [--out runs/data_scaling] [--quick]

For each size N (smallest first; every stage resumes, so a stopped run picks up where it stopped when started
again): `latentwm generate` N trajectories of 200 env steps (the demo's policy mix, seed 0, every 5th frame
rendered) → `latentwm encode` (--encoder, a frozen encoder shared by every size; default the cpu preset's
random-weight encoder; 112 px) → `latentwm train` (the cpu
preset with the Push-T conditioning, 2×2-grouped tokens, batch 16, clips of 8; the SAME --steps at every size, so
the curve varies the data alone) → `latentwm plan` (CEM 32 × 6 × 4 and random actions on --goals held-out goals of
that size's own split, 25 env steps ahead) → the planning ladder's other rungs on the same goals and budget
(planning/ladder.py: simulator + state cost, simulator + latent cost, the privileged state model trained on that
size's clips). Scored per rung: success (ours and DINO-WM's joint test), success on the goals whose block must move,
final block error on them. DINO-WM's Table 5 (success of its model with pretrained DINOv2 on its
Push-T data: 200 → 0.08, 1,000 → 0.48, 5,000 → 0.72, 10,000 → 0.88, 18,500 → 0.92) is printed beside, marked as
another encoder and other data. The RESULTS.md section is titled "Data scaling" and ends with the JSON line
{"rows": [{"trajectories": N, "cem_block_moves": r, ...}, ...]}. --quick: tiny sizes, printed, not recorded.
A single H100/H200 runs the largest point with `benchmarks/gpu_data_scaling.sh`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_conditioning import block_moves, run, train_args  # noqa: E402
from common import report, table  # noqa: E402

from latentwm.config import CEMConfig  # noqa: E402
from latentwm.io.files import write_json  # noqa: E402
from latentwm.planning.evaluate import WorldModelRun  # noqa: E402
from latentwm.planning.ladder import LadderOptions, planning_ladder  # noqa: E402
from latentwm.report import DINO_WM_SCALING, dino_wm_success_at  # noqa: E402
from latentwm.report.studies import SCALING_FIGURE, SCALING_FILE  # noqa: E402

CLIP = ["--data.clip-len", "8"]
"""bench_conditioning's clip length: the curve's points are comparable with its arms."""


RUNGS = {
    "simulator + state cost": "sim_state",
    "simulator + latent cost": "sim_latent",
    "simulator + latent + proprio cost": "sim_latent_proprio",
    "state model (privileged)": "state_model",
}
"""The ladder's rungs beside the model's own CEM and random rows, by their short column prefix."""


def point(out: Path, n: int, steps: int, goals: int, encoder: str, quick: bool) -> dict:
    d = out / f"n{n}"
    env_steps, image = (40, 112) if quick else (200, 112)
    if not (d / "episodes" / "generate.json").exists() or len(list((d / "episodes").glob("*.npz"))) < n:
        run(
            [
                "generate",
                "--out-dir",
                str(d / "episodes"),
                "--num-episodes",
                str(n),
                "--max-steps",
                str(env_steps),
                "--render-every",
                "5",
                "--seed",
                "0",
            ]
        )
    run(
        [
            "encode",
            "--root",
            str(d / "episodes"),
            "--out-dir",
            str(d / "latents"),
            "--encoder.name",
            encoder,
            "--encoder.image-size",
            str(image),
            "--text.name",
            "",
        ]
    )
    run([*train_args(d / "latents", d / "train", steps), *CLIP, "--encoder.name", encoder])
    if not (d / "plan" / "planning_goals.json").exists():
        run(
            [
                "plan",
                "--checkpoint",
                str(d / "train"),
                "--episodes-dir",
                str(d / "episodes"),
                "--cache-dir",
                str(d / "latents"),
                "--out-dir",
                str(d / "plan"),
                "--planners",
                "cem",
                "--baselines",
                "random",
                "--preset",
                "cpu",
                "--plan.num-goals",
                str(goals),
                "--videos",
                "2",
            ]
        )
    rows = json.loads((d / "plan" / "planning_goals.json").read_text())
    moves = block_moves(d / "episodes", d / "latents", goals, seed=0)
    res: dict = {
        "trajectories": n,
        "steps": steps,
        "goals": goals,
        "block_moving_goals": sum(moves),
        "dino_wm_table5_success": dino_wm_success_at(n),
    }
    for m, rs in rows.items():
        mv = [r for r in rs if moves[r["goal"]]]
        res[f"{m}_success"] = float(np.mean([r["success"] for r in rs]))
        res[f"{m}_success_joint"] = float(np.mean([r["success_joint"] for r in rs]))
        res[f"{m}_block_moves"] = float(np.mean([r["success"] for r in mv])) if mv else None
        res[f"{m}_block_px"] = float(np.mean([r["block_pos_diff"] for r in mv])) if mv else None
    run_ = WorldModelRun.load(d / "train")
    plan_cfg = dataclasses.replace(run_.exp.plan, num_goals=goals)
    if quick:
        plan_cfg = dataclasses.replace(plan_cfg, cem=CEMConfig(population=8, elites=2, iterations=2))
    k = f"latent model K={plan_cfg.sample_steps}"
    ladder = planning_ladder(
        run_,
        d / "episodes",
        d / "latents",
        plan_cfg,
        d / "ladder",
        LadderOptions(
            sample_steps=(plan_cfg.sample_steps,),
            state_steps=200 if quick else 3000,
            given={k: rows["cem"], "random actions": rows["random"]},
        ),
    )
    for rung, short in RUNGS.items():
        r = ladder["rungs"][rung]
        res[f"{short}_success"] = r["success_rate"]
        res[f"{short}_block_moves"] = r["success_rate_block_moves"]
        res[f"{short}_block_px"] = r["block_px_block_moves"]
    return res


FIGURE = Path(__file__).resolve().parent / "figures" / "data_scaling.png"
"""Where a recorded run draws its curve (the RESULTS.md entry links it)."""


def plot(rows: list[dict], path: Path) -> Path:
    """Success against trajectories (log scale): the latent model overall and on block-moving goals, the ladder's
    rungs on block-moving goals, beside DINO-WM's Table 5 (marked: another encoder, other data, its budget)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(rows, key=lambda r: r["trajectories"])
    n = [r["trajectories"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    series = {
        "latent model CEM, all goals": "cem_success",
        "latent model CEM, block-moving goals": "cem_block_moves",
        "simulator + state cost (planner's ceiling)": "sim_state_block_moves",
        "simulator + latent cost (encoder's ceiling)": "sim_latent_block_moves",
        "simulator + latent + proprio cost": "sim_latent_proprio_block_moves",
        "state model, privileged": "state_model_block_moves",
    }
    for label, key in series.items():
        ax.plot(n, [r.get(key) for r in rows], marker="o", label=label)
    dn, ds = zip(*DINO_WM_SCALING)
    ax.plot(dn, ds, "k--", marker="s", label="DINO-WM Table 5 (DINOv2, its data and budget)")
    ax.set(xscale="log", xlabel="training trajectories", ylabel="success rate", ylim=(-0.02, 1.0))
    ax.set_title("Push-T planning success against data (2,000 steps at every size)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="240,1000,3000")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--goals", type=int, default=60)
    ap.add_argument("--encoder", default="tiny-random", help="the frozen encoder of every size (name or folder)")
    ap.add_argument("--out", default="runs/data_scaling")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    sizes = [6, 12] if args.quick else [int(s) for s in args.sizes.split(",")]
    steps, goals = (4, 2) if args.quick else (args.steps, args.goals)
    rows = [point(Path(args.out), n, steps, goals, args.encoder, args.quick) for n in sizes]
    cols = [
        "trajectories",
        "cem_success",
        "cem_success_joint",
        "cem_block_moves",
        "cem_block_px",
        "random_block_moves",
        "random_block_px",
        *[f"{s}_{m}" for s in RUNGS.values() for m in ("block_moves", "block_px")],
        "block_moving_goals",
        "dino_wm_table5_success",
    ]
    notes = (
        f"cpu preset with the Push-T conditioning (proprio channels, relative actions), 2×2-grouped tokens, "
        f"{steps} training steps at every size (the data alone varies), encoder {args.encoder} (frozen, 112 px); "
        f"CEM 32 × 6 × 4 on {goals} held-out goals per size (25 env steps ahead); sim_state / sim_latent / "
        f"sim_latent_proprio: the simulator as the model with the true-state / latent / latent + proprio (DINO-WM's "
        f"objective on the true agent state) cost; state_model: the privileged MLP on the true "
        f"state (the ladder's rungs, same goals and budget); *_block_moves / *_block_px: success and final block "
        f"error on the goals whose block must move. dino_wm_table5_success: DINO-WM's own "
        f"curve (pretrained DINOv2, its Push-T data, its budget), interpolated — another encoder and other data."
    )
    # what `latentwm demo --data-scaling <out>` shows (a quick run's under <out>/quick, apart from a real curve)
    here = Path(args.out) / ("quick" if args.quick else "")
    plot(rows, here / SCALING_FIGURE)
    write_json(
        here / SCALING_FILE,
        {"steps": steps, "goals": goals, "encoder": args.encoder, "rows": rows, "quick": args.quick},
    )
    fig = here / SCALING_FIGURE if args.quick else Path(shutil.copy(here / SCALING_FIGURE, FIGURE))
    notes += f" Plot: {fig.relative_to(FIGURE.parents[1]) if not args.quick else fig}."
    report("Data scaling", table(rows, cols), {"rows": rows, "quick": args.quick}, notes, record=not args.quick)


if __name__ == "__main__":
    main()
