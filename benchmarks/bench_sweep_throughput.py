"""Training throughput of every trained variant of a sweep file, all measured in one process, one after another.

    python benchmarks/bench_sweep_throughput.py [sweeps/ablation-pusht.toml] [--steps 6] [--quick]

A sweep's runs log frames/s while they train, but the runs of a local sweep share the machine with whatever else
ran at the time, so their figures are not comparable. This measures each variant's training step as `latentwm
train` runs it (its objective — shortcut forcing, diffusion forcing or next-frame — with the bootstrap active when
the variant has one, backward, the fused AdamW step), on synthetic clips of the variant's grid, clip length and
batch size (throughput does not depend on the values), median of --steps after a warm-up step: frames/s,
parameters and the ratio to the base variant. Evaluation-only variants (`from = ...`) train nothing and are left
out. --quick: 2 steps at batch 2, printed and not recorded (the test suite runs it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, median_time, report, table  # noqa: E402

from latentwm.config.sweep import SweepConfig  # noqa: E402
from latentwm.data.batch import collate  # noqa: E402
from latentwm.data.sources.synthetic import MovingBlobClips  # noqa: E402
from latentwm.engine.loop import NonFiniteGuard, optimizer_step  # noqa: E402
from latentwm.model.dynamics import DynamicsModel  # noqa: E402
from latentwm.objectives import TrainStep, make_objective  # noqa: E402
from latentwm.sweep.spec import build_runs, spec_from_config  # noqa: E402


def step_time(cfg, steps: int, batch: int | None = None) -> dict:
    m, tc = cfg.model, cfg.train
    torch.manual_seed(0)
    model = DynamicsModel(m)
    opt = torch.optim.AdamW(model.param_groups(tc.weight_decay), lr=tc.lr, fused=True)
    guard = NonFiniteGuard("bench", 10**9)
    objective = make_objective(cfg.objective, m)
    B, T = batch or cfg.data.batch_size, cfg.data.clip_len
    data = MovingBlobClips(grid=m.latent_grid, dim=m.frame_dim, frames=T)
    b = collate([data[i] for i in range(B)], m.action_dim)
    at = max(cfg.objective.bootstrap_start, 1)  # past the flow-only warm-up: the bootstrap costs what it costs

    def step():
        loss, _ = objective(model, b.latents, b.conditions, b.valid, TrainStep(at, model, list(range(B))))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        optimizer_step(opt, model.parameters(), tc.grad_clip, guard, at)

    t = median_time(step, repeats=steps, warmup=1)
    return {"params": model.num_parameters(), "step_s": t, "frames_per_s": B * T / t}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file", nargs="?", default="sweeps/ablation-pusht.toml")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--quick", action="store_true", help="2 steps at batch 2; printed, not recorded")
    args = ap.parse_args(argv)
    spec = spec_from_config(SweepConfig(file=args.file))
    runs = [r for r in build_runs(spec) if r.seed == spec.seeds[0] and r.trained_by is None]
    rows = []
    for run in runs:
        res = step_time(run.config, 2 if args.quick else args.steps, batch=2 if args.quick else None)
        rows.append({"variant": run.variant, **res})
        print(f"{run.variant}: {res['frames_per_s']:.1f} frames/s", flush=True)
    base = next((r for r in rows if r["variant"] == "base"), rows[0])
    for r in rows:
        r["vs_base"] = r["frames_per_s"] / base["frames_per_s"]
    cfg0 = runs[0].config
    summary = {
        "sweep": spec.name,
        "frames_per_s": {r["variant"]: r["frames_per_s"] for r in rows},
        "vs_base": {r["variant"]: r["vs_base"] for r in rows},
        "params": {r["variant"]: r["params"] for r in rows},
    }
    cols = ["variant", "params", "step_s", "frames_per_s", "vs_base"]
    notes = (
        f"Machine: {machine()}; {torch.get_num_threads()} torch threads. Sweep {args.file} ({spec.preset} "
        f"preset + [base]): batch {2 if args.quick else cfg0.data.batch_size} × {cfg0.data.clip_len} frames, "
        f"median of {2 if args.quick else args.steps} steps after a warm-up, bootstrap active where the variant "
        f"has one; every variant measured in this one process, back to back."
    )
    report(
        f"bench_sweep_throughput: training frames/s per variant of {spec.name}",
        table(rows, cols),
        summary,
        notes,
        record=not args.quick,
    )


if __name__ == "__main__":
    main()
