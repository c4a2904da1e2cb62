"""Cost of the DH head (issue 17, RAE's DiT-DH): parameters, analytic FLOPs and measured training-step time, with
and without the default head (model.dh_blocks = 2 at width max(2·W, latent_dim·patch_group²)).

    python benchmarks/bench_dh_head.py [--presets cpu,base] [--predictions x] [--repeats 3] [--quick]

For each preset: the dynamics model with its plain Linear head and with the DH head, same seed (so the same
backbone init) and the same batch of moving-blob clips. Analytic numbers come from `flops_per_frame` (one frame at
the full attention window) and `num_parameters` of models built on the meta device. The measured number is the
median wall time of one training step — forward + backward of the shortcut-forcing loss, flow-only (bootstrap
fraction 0: the bootstrap's two extra no-grad forwards cost the head the same share as the forward does), no
optimizer update — after one warm-up step each; the two variants alternate step by step so load drift hits both
alike. `cpu` uses its preset batch and clip; `base` (272M parameters) runs at batch 1 and a 4-frame clip on a CPU
(--base-batch / --base-clip), which the FLOP ratio of that clip is reported beside. bf16 autocast on CUDA only.
--predictions x,v crosses the head with model.prediction (the v conversion is elementwise: no analytic FLOPs).
--quick: the tiny preset, 2 repeats (a few seconds; what the test runs). The full run took 3.3 minutes at 7.6 GB peak
RSS on 1 thread of a 2-core EPYC.

Prints a markdown table and, as the last stdout line, one JSON object {preset: {param_ratio, flop_ratio,
clip_flop_ratio, step_time_ratio, ...}} (keys "preset/v" for v-prediction rows), and appends the table to
benchmarks/RESULTS.md (not with --quick).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, report, table  # noqa: E402

from latentwm.config import ObjectiveConfig, get_preset  # noqa: E402
from latentwm.data.batch import collate  # noqa: E402
from latentwm.data.sources.synthetic import MovingBlobClips  # noqa: E402
from latentwm.model.dh_head import DHShape  # noqa: E402
from latentwm.model.dynamics import DynamicsModel  # noqa: E402
from latentwm.objectives.shortcut_forcing import ShortcutForcing, TrainStep  # noqa: E402

DH_BLOCKS = 2
"""The issue's default head depth."""


def analytic(m, clip: int) -> dict:
    """Parameters and analytic forward FLOPs of the model config `m` (built on the meta device: no memory)."""
    with torch.device("meta"):
        model = DynamicsModel(m)
    return {
        "params": model.num_parameters(),
        "flops_per_frame": model.flops_per_frame(m.context_frames - 1),
        "clip_flops": sum(model.flops_per_frame(t) for t in range(clip)),
    }


def step_fn(model, obj, batch, device):
    """One forward + backward of the flow-only shortcut-forcing loss (gradients cleared first)."""
    amp = dict(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    seeds = list(range(batch.latents.shape[0]))  # fixed per-sample draws: both variants see the same τ, d, ε

    def step():
        model.zero_grad(set_to_none=True)
        with torch.autocast(**amp):
            loss, _ = obj(model, batch.latents, batch.conditions, batch.valid, TrainStep(0, seeds=seeds))
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return step


def measure(steps: dict, repeats: int) -> dict:
    """Median seconds per call of each fn in `steps`, alternating them, after one warm-up call each."""
    times = {k: [] for k in steps}
    for i in range(repeats + 1):
        for k, fn in steps.items():
            t = time.perf_counter()
            fn()
            if i:
                times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_preset(name: str, prediction: str, batch_size: int | None, clip: int | None, repeats: int, device) -> dict:
    cfg = get_preset(name)
    plain = dataclasses.replace(cfg.model, prediction=prediction)
    dh = dataclasses.replace(plain, dh_blocks=DH_BLOCKS)
    B, T = batch_size or cfg.data.batch_size, clip or cfg.data.clip_len
    data = MovingBlobClips(grid=plain.latent_grid, dim=plain.frame_dim, frames=T)
    batch = collate([data[i] for i in range(B)], plain.action_dim).to(device)
    obj = ShortcutForcing(ObjectiveConfig(bootstrap_fraction=0.0, bootstrap_start=0), plain.k_max)
    steps, a = {}, {}
    for key, m in (("plain", plain), ("dh", dh)):
        a[key] = analytic(m, T)
        torch.manual_seed(0)
        steps[key] = step_fn(DynamicsModel(m).to(device), obj, batch, device)
    t = measure(steps, repeats)
    shape = DHShape.from_config(dh)
    return {
        "preset": name,
        "prediction": prediction,
        "batch": B,
        "clip_len": T,
        "dh_width": shape.width,
        "dh_heads": shape.heads,
        "params": a["plain"]["params"],
        "params_dh": a["dh"]["params"],
        "param_ratio": a["dh"]["params"] / a["plain"]["params"],
        "flops_per_frame": a["plain"]["flops_per_frame"],
        "flops_per_frame_dh": a["dh"]["flops_per_frame"],
        "flop_ratio": a["dh"]["flops_per_frame"] / a["plain"]["flops_per_frame"],
        "clip_flop_ratio": a["dh"]["clip_flops"] / a["plain"]["clip_flops"],
        "step_s": t["plain"],
        "step_s_dh": t["dh"],
        "step_time_ratio": t["dh"] / t["plain"],
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="cpu,base")
    ap.add_argument("--predictions", default="x", help="model.prediction values to cross with the head (x,v)")
    ap.add_argument("--repeats", type=int, default=3, help="timed steps per variant (after one warm-up)")
    ap.add_argument("--base-batch", type=int, default=1, help="batch of the base preset on a CPU")
    ap.add_argument("--base-clip", type=int, default=4, help="clip length of the base preset on a CPU")
    ap.add_argument("--quick", action="store_true", help="the tiny preset only, 2 repeats")
    args = ap.parse_args(argv)
    if not set(args.predictions.split(",")) <= {"x", "v"}:  # "next" trains with another objective
        ap.error(f"--predictions: x and/or v, got {args.predictions!r}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    presets, repeats = (["tiny"], 2) if args.quick else (args.presets.split(","), args.repeats)
    rows = []
    for name in presets:
        small_cpu = name == "base" and device.type == "cpu"
        for pred in args.predictions.split(","):
            rows.append(
                bench_preset(
                    name,
                    pred,
                    args.base_batch if small_cpu else None,
                    args.base_clip if small_cpu else None,
                    repeats,
                    device,
                )
            )
    cols = [
        "preset",
        "prediction",
        "batch",
        "clip_len",
        "dh_width",
        "params",
        "params_dh",
        "param_ratio",
        "flops_per_frame",
        "flops_per_frame_dh",
        "flop_ratio",
        "clip_flop_ratio",
        "step_s",
        "step_s_dh",
        "step_time_ratio",
    ]
    notes = (
        f"Training step = forward + backward of the flow-only shortcut-forcing loss (median of {repeats} after a "
        f"warm-up, variants alternating); flop_ratio: one frame at the full window; clip_flop_ratio: the timed "
        f"clip. DH head: {DH_BLOCKS} blocks at the default width."
    )
    key = lambda r: r["preset"] if r["prediction"] == "x" else f"{r['preset']}/{r['prediction']}"  # noqa: E731
    summary = {key(r): {k: v for k, v in r.items() if k != "preset"} for r in rows}
    if args.quick:  # the suite's smoke run: printed, not recorded
        print(table(rows, cols))
        print(f"\nMachine: {machine()}. {notes}")
        print(json.dumps(summary))
    else:
        report("bench_dh_head: the DH head's cost per training step", table(rows, cols), summary, notes)


if __name__ == "__main__":
    main()
