"""torch.compile speedups on this machine: the training step and K = 4 KV-cached generation, eager vs compiled.

    python benchmarks/bench_compile.py [--presets cpu] [--backend inductor] [--quick]

Training: one optimizer step as `latentwm train` runs it — shortcut-forcing loss with the bootstrap on (fraction
0.25), backward, the sync-free fused AdamW step with the non-finite guard (`train/loop.optimizer_step`) — eager vs
`--train.compile` (each transformer block compiled in place, `train.compile_scope = "blocks"`). Generation:
`rollout` with K = 4 denoising steps per frame (context 4, horizon 8), eager vs `--rollout.compile`
(`DynamicsModel.compile_sampling`), at batch 1 (interactive generation) and batch 8. Reported: median seconds
after warm-up, the speedup (eager ÷ compiled, both measured in this run) and the first call's seconds (compilation
included). --quick: the tiny preset, few repeats, printed and not recorded (the test suite runs it).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, median_time, report, table  # noqa: E402

from latentwm.conditions import Conditions  # noqa: E402
from latentwm.config import get_preset  # noqa: E402
from latentwm.data.batch import collate  # noqa: E402
from latentwm.data.sources.synthetic import MovingBlobClips  # noqa: E402
from latentwm.engine.loop import NonFiniteGuard, optimizer_step  # noqa: E402
from latentwm.model.dynamics import DynamicsModel  # noqa: E402
from latentwm.objectives.shortcut_forcing import ShortcutForcing, TrainStep  # noqa: E402
from latentwm.rollout import Sampling, rollout  # noqa: E402


def _first_and_median(fn, repeats: int) -> tuple[float, float]:
    t = time.perf_counter()
    fn()  # compiles when compiled
    first = time.perf_counter() - t
    return first, median_time(fn, repeats=repeats, warmup=1)


def train_step_times(name: str, compiled: bool, backend: str, repeats: int) -> dict:
    cfg = get_preset(name)
    m = cfg.model
    torch.manual_seed(0)
    torch._dynamo.reset()
    model = DynamicsModel(m)
    if compiled:
        for blk in model.repeated_blocks():
            blk.compile(backend=backend)
    opt = torch.optim.AdamW(model.param_groups(0.01), lr=1e-4, fused=True)
    guard = NonFiniteGuard("bench", 10**9)
    data = MovingBlobClips(grid=m.latent_grid, dim=m.frame_dim, frames=cfg.data.clip_len)
    B, T = cfg.data.batch_size, cfg.data.clip_len
    batch = collate([data[i] for i in range(B)], m.action_dim)
    obj = ShortcutForcing(cfg.objective.__class__(bootstrap_fraction=0.25, bootstrap_start=0), m.k_max)
    seeds = list(range(B))

    def step():
        loss, _ = obj(model, batch.latents, batch.conditions, batch.valid, TrainStep(1, seeds=seeds))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        optimizer_step(opt, model.parameters(), 1.0, guard, 1)

    first, t = _first_and_median(step, repeats)
    return {
        "what": "train step",
        "preset": name,
        "batch": f"{B}×{T}",
        "first_s": first,
        "s": t,
        "frames_per_s": B * T / t,
    }


def generation_times(name: str, compiled: bool, backend: str, batch: int, repeats: int) -> dict:
    m = get_preset(name).model
    torch.manual_seed(0)
    torch._dynamo.reset()
    model = DynamicsModel(m).eval()
    if compiled:
        model.compile_sampling(backend)
    C, H = 4, 8
    g = torch.Generator().manual_seed(0)
    ctx = torch.randn(batch, C, m.num_latent_tokens, m.frame_dim, generator=g)
    acts = torch.randn(batch, C + H - 1, m.action_dim, generator=g)
    noise = torch.randn(batch, H, m.num_latent_tokens, m.frame_dim, generator=g)

    @torch.no_grad()
    def gen():
        rollout(model, ctx, H, Conditions(acts), Sampling(4), noise=noise)

    first, t = _first_and_median(gen, repeats)
    return {
        "what": f"K=4 generation, batch {batch}",
        "preset": name,
        "batch": f"{batch}×{H}",
        "first_s": first,
        "s": t,
        "frames_per_s": batch * H / t,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="cpu")
    ap.add_argument("--backend", default="inductor")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--quick", action="store_true", help="the tiny preset, 2 repeats; printed, not recorded")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    presets = ["tiny"] if args.quick else args.presets.split(",")
    repeats = 2 if args.quick else args.repeats
    rows, summary = [], {"backend": args.backend}
    for name in presets:
        jobs = [("train", lambda c, n=name: train_step_times(n, c, args.backend, repeats))]
        jobs += [(f"gen_b{b}", lambda c, n=name, b=b: generation_times(n, c, args.backend, b, repeats)) for b in (1, 8)]
        for key, job in jobs:
            eager, comp = job(False), job(True)
            ratio = eager["s"] / comp["s"]
            rows += [{**eager, "mode": "eager", "speedup": 1.0}, {**comp, "mode": "compiled", "speedup": ratio}]
            summary[f"{name}_{key}_speedup"] = ratio
            summary[f"{name}_{key}_compile_first_s"] = comp["first_s"]
            summary[f"{name}_{key}_eager_frames_per_s"] = eager["frames_per_s"]
            summary[f"{name}_{key}_compiled_frames_per_s"] = comp["frames_per_s"]
    cols = ["what", "preset", "mode", "batch", "s", "frames_per_s", "speedup", "first_s"]
    notes = (
        f"Machine: {machine()}; {torch.get_num_threads()} torch threads, backend "
        f"{args.backend}. s: median seconds after warm-up; speedup: eager s ÷ compiled s in this run; first_s: "
        f"the first call (compilation included). Training: bootstrap fraction 0.25, fused AdamW, "
        f"train.compile_scope blocks. Generation: context 4, horizon 8, K = 4."
    )
    report(
        f"bench_compile: torch.compile vs eager, training and K = 4 generation ({args.presets})",
        table(rows, cols),
        summary,
        notes,
        record=not args.quick,
    )


if __name__ == "__main__":
    main()
