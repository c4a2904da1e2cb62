"""Which self-supervised objective (and which rendering resolution) gives Push-T a latent cost a planner can use?

    python benchmarks/bench_encoder_pretrain.py --episodes runs/demo/episodes [--steps 2000] [--goals 8]
        [--objectives time-contrastive,time-contrastive+pixels,masked-pixels,dino] [--res224 40]
        [--out runs/encoder_pretrain] [--quick]

For each objective, `latentwm pretrain-encoder` trains the demo's ViT (DINOv2 architecture, 64 wide, 2 blocks, 112 px,
patch 14) on the training episodes for the same number of steps (into --out, resumed when run again); then each
encoder is scored on what the planning cost must resolve — the block:
- nearest-latent pose: for held-out frames, the training frame nearest by latent MSE (the cost a planner uses) and
  how far its block is from the held-out frame's (share within 20 px and 20°, median px), agent likewise;
- a pose probe: ridge regression from the flattened latents to agent and block positions (held-out RMSE);
- `planning.cost_quality.encoder_cost_quality` with the real simulator as the model: Spearman rank correlation with
  the true state distance over random plans (all goals, and the goals whose block must move), and CEM-on-simulator
  success (DINO-WM's test), under the latent cost alone and under DINO-WM's objective with the true proprio
  (`*_proprio`: latent + proprio term, the cost a model with proprio channels plans on — the agent is then the
  proprio term's, and what the latent cost must resolve is the block).
The random-weight encoder is the baseline row. `--res224 N` also renders N episodes at 224 px (DINO-WM's
resolution) and N at 96 px with the same seeds, pretrains the chosen objective on each (112 px input vs 224 px
input) and compares cost quality against generation, pretraining and encoding time on this machine. --quick: a
few steps and goals, printed, not recorded.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import report, table  # noqa: E402

from latentwm.config import (  # noqa: E402
    EncoderConfig,
    GenerateConfig,  # noqa: E402
    PretrainEncoderConfig,
    get_preset,
    preset,
)
from latentwm.data.episodes import load_episode  # noqa: E402
from latentwm.data.sources.pusht import generate_pusht  # noqa: E402
from latentwm.encoders.dino import DinoEncoder  # noqa: E402
from latentwm.io.files import write_json  # noqa: E402
from latentwm.planning.cost_quality import PROPRIO_COST, CostQualitySettings, encoder_cost_quality  # noqa: E402
from latentwm.planning.evaluate import block_must_move, held_out_episodes, sample_goals  # noqa: E402
from latentwm.report.studies import ENCODERS_FILE  # noqa: E402
from latentwm.train.encoder_pretrain import run_pretrain_encoder  # noqa: E402


def linear_probe(encoder: DinoEncoder, episodes: Path, frames: int = 3000) -> dict:
    """How much pose the latents keep: ridge regression from the flattened tokens of training-episode frames to the
    agent and block positions (px), RMSE on held-out-episode frames."""
    exp = get_preset("cpu")
    held = set(held_out_episodes(episodes, None, exp.data.eval_fraction, exp.data.seed))
    sets = {"train": [], "held": []}
    for p in sorted(episodes.glob("episode_*.npz")):
        sets["held" if p in held else "train"].append(p)
    xy = {}
    for k, paths in sets.items():
        eps = [load_episode(p) for p in paths]
        stride = max(1, sum(len(e) for e in eps) // (frames if k == "train" else frames // 4))
        f = np.concatenate([np.asarray(e.frames[e.cameras[0]])[::stride] for e in eps])
        y = np.concatenate([e.states[::stride, :4] for e in eps])
        x = torch.cat([encoder.encode(f[i : i + 256]).flatten(1) for i in range(0, len(f), 256)]).double().numpy()
        xy[k] = (x, y)
    (xt, yt), (xh, yh) = xy["train"], xy["held"]
    mu, sd = xt.mean(0), xt.std(0) + 1e-6
    a, b = (xt - mu) / sd, (xh - mu) / sd
    w = np.linalg.solve(a.T @ a + len(a) * np.eye(a.shape[1]), a.T @ (yt - yt.mean(0)))  # ridge λ = n: 4096-D
    err = b @ w + yt.mean(0) - yh
    return {
        "probe_agent_px": float(np.sqrt((err[:, :2] ** 2).sum(1).mean())),
        "probe_block_px": float(np.sqrt((err[:, 2:4] ** 2).sum(1).mean())),
    }


def nearest_pose(encoder: DinoEncoder, episodes: Path, frames: int = 2000) -> dict:
    """For held-out frames, the training frame whose latents are nearest (MSE over normalized tokens, the planning
    cost) and the pose error between the two: share with the block within 20 px and 20°, median block / agent px."""
    exp = get_preset("cpu")
    held = set(held_out_episodes(episodes, None, exp.data.eval_fraction, exp.data.seed))
    sets = {"train": [p for p in sorted(episodes.glob("episode_*.npz")) if p not in held], "held": sorted(held)}
    lat, st = {}, {}
    for k, paths in sets.items():
        eps = [load_episode(p) for p in paths]
        stride = max(1, sum(len(e) for e in eps) // (frames if k == "train" else frames // 8))
        f = np.concatenate([np.asarray(e.frames[e.cameras[0]])[::stride] for e in eps])
        st[k] = np.concatenate([e.states[::stride] for e in eps])
        lat[k] = torch.cat([encoder.encode(f[i : i + 256]).flatten(1).float() for i in range(0, len(f), 256)])
    mu, sd = lat["train"].mean(0), lat["train"].std(0) + 1e-6
    a, b = (lat["train"] - mu) / sd, (lat["held"] - mu) / sd
    nearest = torch.cdist(b, a).argmin(1).numpy()  # the same order as MSE
    pooled = lat["held"].view(len(b), -1, encoder.dim).mean(1).double()  # (frames, D)
    ev = torch.linalg.eigvalsh(torch.cov(pooled.T)).clamp_min(0)
    m = st["train"][nearest]
    block = np.linalg.norm(m[:, 2:4] - st["held"][:, 2:4], axis=1)
    agent = np.linalg.norm(m[:, :2] - st["held"][:, :2], axis=1)
    ang = np.degrees(np.abs((m[:, 4] - st["held"][:, 4] + np.pi) % (2 * np.pi) - np.pi))
    return {
        "nearest_block_within_20": float(np.mean((block < 20) & (ang < 20))),
        "nearest_block_px": float(np.median(block)),
        "nearest_agent_px": float(np.median(agent)),
        # participation ratio of the pooled latents' covariance: ≈ 1 when the encoder has collapsed, D at most
        "effective_rank": float(ev.sum() ** 2 / (ev**2).sum().clamp_min(1e-30)),
    }


def score(encoder: DinoEncoder, episodes: Path, goals: int, samples: int) -> dict:
    exp = get_preset("cpu")
    res = encoder_cost_quality(
        encoder.encode,
        episodes,
        exp,
        num_goals=goals,
        settings=CostQualitySettings(samples=samples),
        costs=("latent", PROPRIO_COST),
        log=lambda *a: None,
    )
    gs = sample_goals(
        held_out_episodes(episodes, None, exp.data.eval_fraction, exp.data.seed),
        goals,
        exp.plan.goal_offset,
        exp.plan.seed,
    )  # encoder_cost_quality's goals
    moves = [block_must_move(g) for g in gs]
    moving = [r for r, mv in zip(res["per_goal"], moves) if mv]

    def on_moves(key: str) -> float | None:
        return float(np.mean([float(r[key]) for r in moving])) if moving else None

    frames = np.zeros((256, 96, 96, 3), np.uint8)
    t = time.perf_counter()
    encoder.encode(frames)
    lat, prop = res["per_cost"]["latent"], res["per_cost"][PROPRIO_COST]
    return {
        "rank_corr": lat["rank_corr"],
        "rank_corr_block_moves": on_moves("latent_rank_corr"),
        "cem_on_simulator_success": lat["cem_on_simulator_success"],
        "cem_block_moves": on_moves("latent_cem_success"),
        "cem_final_distance": lat["cem_on_simulator_final_distance"],
        "rank_corr_proprio": prop["rank_corr"],
        "rank_corr_proprio_block_moves": on_moves(f"{PROPRIO_COST}_rank_corr"),
        "cem_proprio_success": prop["cem_on_simulator_success"],
        "cem_proprio_block_moves": on_moves(f"{PROPRIO_COST}_cem_success"),
        "cem_proprio_block_px": on_moves(f"{PROPRIO_COST}_cem_block_px"),
        "block_moving_goals": len(moving),
        "encode_frames_per_s": 256 / (time.perf_counter() - t),
        **linear_probe(encoder, episodes),
        **nearest_pose(encoder, episodes),
    }


def pretrain(episodes: Path, out: Path, objective: str, steps: int, image_size: int) -> tuple[DinoEncoder, dict]:
    """objective: a --objective name, or "time-contrastive+pixels" (with the masked-pixel term, pixel_weight 1);
    time-contrastive runs with the cpu preset's window and sigma. `steps` fixed (resumed in `out`)."""
    base = preset("cpu").pretrain
    kw = dict(window=base.window, sigma=base.sigma)
    if objective == "time-contrastive+pixels":
        objective, kw["pixel_weight"] = "time-contrastive", 1.0
    cfg = PretrainEncoderConfig(
        data_dir=str(episodes),
        out_dir=str(out),
        objective=objective,
        steps=steps,
        image_size=image_size,
        device="cpu",
        resume=True,
        **kw,
    )
    t = time.perf_counter()
    folder = run_pretrain_encoder(cfg)
    secs = time.perf_counter() - t
    info = json.loads((folder / "pretrain.json").read_text())
    enc = DinoEncoder.from_config(EncoderConfig(name=str(folder), image_size=image_size, batch_size=64))
    facts = {"pretrain_s": secs, "pretrain_steps": info["steps_done"]}
    if info.get("final_teacher_entropy") is not None:
        facts["teacher_entropy"] = info["final_teacher_entropy"]
    return enc, facts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", default="runs/demo/episodes")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--out", default="runs/encoder_pretrain")
    ap.add_argument("--goals", type=int, default=8)
    ap.add_argument("--samples", type=int, default=48)
    ap.add_argument("--objectives", default="time-contrastive,time-contrastive+pixels,masked-pixels,dino")
    ap.add_argument("--res224", type=int, default=0, help="episodes per resolution for the 96 vs 224 px comparison")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    if args.quick:
        args.steps, args.goals, args.samples = 4, 2, 8
    episodes = Path(args.episodes)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        tmp = scratch if args.quick else args.out
        base = DinoEncoder.from_config(get_preset("cpu").encoder)
        rows.append(
            {
                "encoder": "random weights (tiny-random)",
                "objective": "-",
                "pretrain_s": 0.0,
                **score(base, episodes, args.goals, args.samples),
            }
        )
        for obj in args.objectives.split(","):
            enc, facts = pretrain(episodes, Path(tmp) / obj, obj, args.steps, 112)
            rows.append(
                {
                    "encoder": "pretrained 112 px",
                    "objective": obj,
                    **facts,
                    **score(enc, episodes, args.goals, args.samples),
                }
            )
            print(rows[-1], flush=True)
        if args.res224:
            rows += resolution_rows(Path(tmp), args)
    summary = {
        "episodes": str(episodes),
        "steps_per_objective": args.steps,
        "goals": args.goals,
        "samples": args.samples,
        "rows": rows,
        "quick": args.quick,
    }
    # what `latentwm demo --encoder-table <out>` shows (a quick run's under <out>/quick, apart from a real table)
    write_json(Path(args.out) / ("quick" if args.quick else "") / ENCODERS_FILE, summary)  # makes the folder
    report(
        "bench_encoder_pretrain: latent cost quality of pretrained encoders (simulator as the model)",
        table(
            rows,
            [
                "encoder",
                "objective",
                "pretrain_steps",
                "nearest_block_within_20",
                "nearest_block_px",
                "nearest_agent_px",
                "effective_rank",
                "teacher_entropy",
                "probe_block_px",
                "probe_agent_px",
                "rank_corr",
                "rank_corr_block_moves",
                "cem_on_simulator_success",
                "cem_block_moves",
                "rank_corr_proprio_block_moves",
                "cem_proprio_success",
                "cem_proprio_block_moves",
                "cem_proprio_block_px",
                "cem_final_distance",
                "pretrain_s",
                "generate_s",
            ],
        ),
        summary,
        f"Episodes {episodes}; each objective pretrained {args.steps} steps on the training episodes (demo "
        f"architecture: DINOv2 64 wide, 2 blocks, patch 14); cost quality over {args.goals} held-out goals "
        f"(25 env steps ahead), rank correlation over {args.samples} random 5-step plans per goal; CEM 32 × 6 "
        "elites × 4 iterations, 2 plans, candidates executed in the simulator; *_proprio: the same under the "
        "latent cost + 1.0 × the normalized proprio MSE of the true agent state (DINO-WM's objective, what a proprio "
        "model plans on); *_block_moves: on the goals whose block must move. probe_*_px: held-out RMSE of a ridge "
        "regression from the flattened latents to agent / block position (how much pose the latents keep). "
        "nearest_*: pose error of the training frame nearest by latent MSE to each held-out frame "
        "(nearest_block_within_20: block within 20 px and 20°). effective_rank: participation ratio of the "
        "covariance of held-out frames' token-mean latents (≈ 1: collapsed; at most the width, 64); "
        "teacher_entropy (dino): the teacher's output entropy over the last logged steps as a share of its maximum "
        "(→ 0: one dimension dominates, → 1: uniform; either is collapse).",
        record=not args.quick,
    )


def resolution_rows(tmp: Path, args) -> list[dict]:
    """The same N episodes rendered at 96 px and at 224 px; the first objective pretrained on each."""
    obj, rows = args.objectives.split(",")[0], []
    for px, image_size in ((96, 112), (224, 224)):
        eps = Path(tmp) / f"eps{px}"
        t = time.perf_counter()
        generate_pusht(
            GenerateConfig(out_dir=str(eps), num_episodes=args.res224, max_steps=200, seed=0, image_size=px),
            show_progress=False,
        )
        gen_s = time.perf_counter() - t
        enc, facts = pretrain(eps, tmp / f"res{px}", obj, args.steps, image_size)
        rows.append(
            {
                "encoder": f"{px} px frames, {image_size} px input ({args.res224} episodes)",
                "objective": obj,
                "generate_s": gen_s,
                **facts,
                **score(enc, eps, args.goals, args.samples),
            }
        )
        print(rows[-1], flush=True)
    return rows


if __name__ == "__main__":
    main()
