"""Does DINO-WM's conditioning make the block controllable? Proprio channels and relative actions, ablated on the
same data, scored by planning in the real Push-T env.

    python benchmarks/bench_conditioning.py --cache CACHE --episodes EPISODES [--out runs/conditioning]
                                            [--steps 600] [--goals 60] [--clip-len 8] [--broadcast] [--encoder E]
                                            [--arms absolute,relative,...] [--quick]

CACHE / EPISODES: a Push-T latent cache and the episode folder it was encoded from (e.g. `latentwm generate
--num-episodes 1000 --render-every 5` then `latentwm encode --text.name ""`). Arms (one model each, same seed, data,
steps and planner):
- absolute: absolute agent targets as actions, latents only (the demo's conditioning so far);
- relative: actions relative to the agent (data.relative_actions);
- proprio: the agent's proprio (x, y, vx, vy) on every token, predicted with the frame, and in the planning cost
  (model.proprio_dim 4);
- proprio+relative: both (DINO-WM's Push-T conditioning);
- proprio-slot+relative: the same, the proprio as one token of its own instead of on every token
  (model.proprio_input slot).
Each trains `latentwm train --preset cpu` with a smaller, faster model (2×2-grouped tokens, batch 16, clips of
--clip-len frames; --broadcast: model.condition_broadcast, the action embedding added to every token as DINO-WM
feeds it to every patch) for --steps steps, then `latentwm plan` runs CEM (the cpu preset's 32 × 6 × 4 budget),
random actions and the dataset's own actions on the same --goals held-out goals (DINO-WM's protocol, 25 env steps
apart). Scored: success (ours and DINO-WM's joint test), success on the goals whose block must move, final block
error in px. Every stage resumes (train --train.resume; an arm's planning is kept in its folder). --quick: a few
steps and goals, printed, not recorded. Last line: JSON {"rows": [...]} with each arm's figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import report, table  # noqa: E402

from latentwm.cli import main as cli  # noqa: E402
from latentwm.planning.evaluate import block_must_move, held_out_episodes, sample_goals  # noqa: E402

ARMS = {
    "absolute": (0, False, "concat"),
    "relative": (0, True, "concat"),
    "proprio": (4, False, "concat"),
    "proprio+relative": (4, True, "concat"),
    "proprio-slot+relative": (4, True, "slot"),
}
"""arm -> (model.proprio_dim, data.relative_actions, model.proprio_input)."""
MODEL = ["--model.patch-group", "2", "--model.text-dim", "0", "--data.batch-size", "16", "--rollout.horizon", "4"]
"""The smaller model of every arm: 16 tokens of 2×2 patches per frame (the cpu preset's 8×8 grid grouped)."""


def train_args(cache: Path, out: Path, steps: int, eval_every: int | None = None) -> list[str]:
    """`latentwm train` of the grouped cpu model (MODEL) for a fixed number of steps, resumed: warm-up over the first
    10 %, the bootstrap from the middle, a checkpoint every quarter, evaluation at the end (or every `eval_every`)."""
    return ["train", "--preset", "cpu", "--data.cache-dir", str(cache), "--train.out-dir", str(out),
            "--train.steps", str(steps), "--train.eval-every", str(eval_every or steps),
            "--train.ckpt-every", str(max(1, steps // 4)), "--train.warmup-steps", str(max(1, steps // 10)),
            "--objective.bootstrap-start", str(steps // 2), "--train.resume", *MODEL]  # fmt: skip


def run(args: list[str]) -> None:
    rc = cli(args)
    if rc != 0:
        raise SystemExit(f"bench_conditioning: `latentwm {' '.join(args)}` exited {rc}")


def block_moves(episodes: Path, cache: Path, goals: int, seed: int) -> list[bool]:
    """Per planning goal (latentwm plan's: held-out split of the cpu preset's data section, 25 env steps): whether
    the block must move (its start pose fails the goal's block test)."""
    gs = sample_goals(held_out_episodes(episodes, cache, 0.1, 0), goals, 25, seed)
    return [block_must_move(g) for g in gs]


def last_eval(metrics: Path) -> dict:
    """The run's last held-out figures: mean rollout error, copy-last's, and the action gain (± its standard error:
    how much the true actions lower the error against shuffled ones)."""
    ev = [r for r in map(json.loads, metrics.read_text().splitlines()) if "eval/action_gain_mean" in r]
    if not ev:
        return {}
    r = ev[-1]
    return {
        "heldout_error": r.get("eval/mean_model"),
        "copy_last_error": r.get("eval/mean_copy_last"),
        "action_gain": r["eval/action_gain_mean"],
        "action_gain_stderr": r.get("eval/action_gain_stderr"),
    }


def arm(
    out: Path, name: str, cache: Path, episodes: Path, steps: int, goals: int, moves: list[bool], extra: list[str]
) -> dict:
    """Train (resumed) and plan one arm; `extra`: the flags every arm shares (clip length, broadcast)."""
    proprio, relative, proprio_input = ARMS[name]
    d = out / name
    train = [
        *train_args(cache, d / "train", steps),
        *extra,
        "--model.proprio-dim",
        str(proprio),
        "--model.proprio-input",
        proprio_input,
        "--data.relative-actions" if relative else "--data.no-relative-actions",
    ]
    run(train)
    if not (d / "plan" / "planning_goals.json").exists():
        run(
            [
                "plan",
                "--checkpoint",
                str(d / "train"),
                "--episodes-dir",
                str(episodes),
                "--cache-dir",
                str(cache),
                "--out-dir",
                str(d / "plan"),
                "--planners",
                "cem",
                "--baselines",
                "random",
                "dataset_actions",
                "--preset",
                "cpu",
                "--plan.num-goals",
                str(goals),
                "--proprio-probe",
                "none",
                "--videos",
                "2",
            ]
        )
    rows = json.loads((d / "plan" / "planning_goals.json").read_text())
    res: dict = {
        "arm": name,
        "proprio_dim": proprio,
        "relative_actions": relative,
        "proprio_input": proprio_input,
        "steps": steps,
        **last_eval(d / "train" / "metrics.jsonl"),
    }
    for method, rs in rows.items():
        mv = [r for r in rs if moves[r["goal"]]]
        res[method] = {
            "success": float(np.mean([r["success"] for r in rs])),
            "success_joint": float(np.mean([r["success_joint"] for r in rs])),
            "success_block_moves": float(np.mean([r["success"] for r in mv])) if mv else None,
            "block_px": float(np.mean([r["block_pos_diff"] for r in rs])),
            "block_px_block_moves": float(np.mean([r["block_pos_diff"] for r in mv])) if mv else None,
        }
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", required=True)
    ap.add_argument("--episodes", required=True)
    ap.add_argument("--out", default="runs/conditioning")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--goals", type=int, default=60)
    ap.add_argument("--clip-len", type=int, default=8)
    ap.add_argument("--broadcast", action="store_true")
    ap.add_argument("--encoder", default="", help="the encoder the cache was encoded with (default: the preset's)")
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    steps, goals = (4, 2) if args.quick else (args.steps, args.goals)
    cache, episodes, out = Path(args.cache), Path(args.episodes), Path(args.out)
    moves = block_moves(episodes, cache, goals, seed=0)
    extra = [
        "--data.clip-len",
        str(args.clip_len),
        *(["--model.condition-broadcast"] if args.broadcast else []),
        *(["--encoder.name", args.encoder] if args.encoder else []),
    ]
    rows = [arm(out, a, cache, episodes, steps, goals, moves, extra) for a in args.arms.split(",")]
    flat = [
        {
            "arm": r["arm"],
            "action_gain": r.get("action_gain"),
            "heldout_error": r.get("heldout_error"),
            **{
                f"{m}_{k}": r[m][k]
                for m in ("cem", "random", "dataset_actions")
                for k in ("success", "success_block_moves", "block_px_block_moves")
            },
        }
        for r in rows
    ]
    md = table(flat, list(flat[0]))
    n_episodes = len(list(episodes.glob("*.npz")))
    notes = (
        f"{n_episodes} trajectories ({cache}); cpu preset with 2×2-grouped tokens, batch 16, clips of "
        f"{args.clip_len}{', condition broadcast' if args.broadcast else ''}, {steps} steps per arm, seed 0; "
        f"CEM 32 × 6 × 4, horizon 5, goals 25 env steps apart; {goals} held-out goals, {sum(moves)} whose "
        f"block must move. success: our test (block 20 px & 20°, agent 20 px); "
        f"block_px: final block position error on the block-moving goals."
    )
    report(
        "bench_conditioning: proprio channels and relative actions on the same data",
        md,
        {
            "rows": rows,
            "trajectories": n_episodes,
            "goals": goals,
            "block_moving_goals": sum(moves),
            "quick": args.quick,
        },
        notes,
        record=not args.quick,
    )


if __name__ == "__main__":
    main()
