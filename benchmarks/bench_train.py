"""Training throughput on this machine: frames/s, tokens/s, MFU against measured matmul FLOP/s, bootstrap cost.

    python benchmarks/bench_train.py [--steps 8]

For the `tiny` and `cpu` presets: one optimizer step (shortcut-forcing loss, backward, AdamW) on a batch of
moving-blob clips of the preset's clip length and batch size, with bootstrap fraction 0, 0.25 and 1 (after the warm-up).
MFU-on-CPU = model FLOP/s (3 × analytic forward FLOPs, flow-only step) ÷ float32 matmul FLOP/s measured in the same
run. Peak memory is the process's max RSS (CPU) or CUDA max allocated.
"""

from __future__ import annotations

import argparse
import resource
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import matmul_flops, median_time, report, table  # noqa: E402

from latentwm.config import get_preset  # noqa: E402
from latentwm.data.batch import collate  # noqa: E402
from latentwm.data.sources.synthetic import MovingBlobClips  # noqa: E402
from latentwm.model.dynamics import DynamicsModel  # noqa: E402
from latentwm.objectives.shortcut_forcing import ShortcutForcing, TrainStep  # noqa: E402


def peak_mem_mb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_preset(name: str, steps: int, device: torch.device) -> list[dict]:
    cfg = get_preset(name)
    m = cfg.model
    torch.manual_seed(0)
    model = DynamicsModel(m).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    data = MovingBlobClips(grid=m.latent_grid, dim=m.frame_dim, frames=cfg.data.clip_len)
    B, T = cfg.data.batch_size, cfg.data.clip_len
    batch = collate([data[i] for i in range(B)], m.action_dim).to(device)
    fwd_flops = sum(model.flops_per_frame(t) for t in range(T)) * B
    tokens = B * T * (model.tokens_per_frame)
    amp = dict(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    rows = []
    base = None
    for frac in (0.0, 0.25, 1.0):
        obj = ShortcutForcing(cfg.objective.__class__(bootstrap_fraction=frac, bootstrap_start=0), m.k_max)
        seeds = list(range(B))  # fixed draws: every timing sees the same bootstrap subset

        def step(obj=obj, seeds=seeds):
            with torch.autocast(**amp):
                loss, _ = obj(model, batch.latents, batch.conditions, batch.valid, TrainStep(1, seeds=seeds))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize()

        t = median_time(step, repeats=steps, warmup=2)
        base = base or t
        rows.append(
            {
                "preset": name,
                "params": model.num_parameters(),
                "bootstrap_frac": frac,
                "step_s": t,
                "frames_per_s": B * T / t,
                "tokens_per_s": tokens / t,
                "model_flops_per_s": 3 * fwd_flops / t,
                "cost_vs_flow": t / base,
                "peak_mem_mb": peak_mem_mb(device),
            }
        )
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--presets", default="tiny,cpu")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    peak = matmul_flops() if device.type == "cpu" else None
    rows = []
    for name in args.presets.split(","):
        rows += bench_preset(name, args.steps, device)
    for r in rows:
        r["mfu"] = r["model_flops_per_s"] / peak if peak else float("nan")
    cols = [
        "preset",
        "params",
        "bootstrap_frac",
        "step_s",
        "frames_per_s",
        "tokens_per_s",
        "model_flops_per_s",
        "mfu",
        "cost_vs_flow",
        "peak_mem_mb",
    ]
    main_rows = [r for r in rows if r["preset"] == args.presets.split(",")[-1]]
    flow = main_rows[0]
    summary = {
        "device": device.type,
        "matmul_flops_per_s": peak,
        "mfu_cpu": flow["mfu"],
        "frames_per_s": flow["frames_per_s"],
        "tokens_per_s": flow["tokens_per_s"],
        "bootstrap_cost_ratio_f025": main_rows[1]["cost_vs_flow"],
        "bootstrap_cost_ratio_f1": main_rows[2]["cost_vs_flow"],
        "peak_mem_mb": max(r["peak_mem_mb"] for r in rows),
        "per_preset": {
            r["preset"] + f"@{r['bootstrap_frac']}": {"frames_per_s": r["frames_per_s"], "mfu": r["mfu"]} for r in rows
        },
    }
    notes = (
        f"Measured float32 matmul peak: {peak / 1e9:.1f} GFLOP/s. MFU counts 3× the analytic forward FLOPs "
        "of the flow-only step."
        if peak
        else ""
    )
    report("bench_train: training throughput", table(rows, cols), summary, notes)


if __name__ == "__main__":
    main()
