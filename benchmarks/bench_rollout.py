"""KV-cached frame generation vs recomputing the whole context with the full forward.

    python benchmarks/bench_rollout.py [--presets tiny cpu] [--batch 1] [--repeats 30] [--threads 1]

Three timings per context length ctx (frames already generated), taken round-robin so they share background load:
- step:      one cached denoising step (commit=False) over the new frame's S tokens, attending to ctx cached frames;
- frame K=1: step + the commit pass (commit=True): everything one frame costs with one denoising step;
- recompute: one full forward over the ctx + 1 frames (what every denoising step costs without a cache).
Speedups: per denoising step = recompute / step (like for like: with K steps per frame the cache costs K steps + 1
commit, recomputing costs K forwards); per frame at K = 1 = recompute / (step + commit), the cache's worst case.
The headline `kv_speedup_ctx16` is the per-step one; `kv_speedup_ctx16_frame_k1` is reported beside it.
`kv_flatness_32_vs_8` uses the frame (step + commit) time, which includes the commit's O(window) copy.

The presets' time window (8 / 16 frames) is raised to 33 for this benchmark so that contexts up to 32 frames are
really attended (32 cached + the new one). Weights are random (timing does not depend on them), float32,
torch.inference_mode, medians over repeats, one torch thread by default: on a shared 2-core machine two threads
oversubscribe as soon as anything else runs and the timings become noise (10-100x swings measured). Prints tables,
appends them to benchmarks/RESULTS.md, and ends with one JSON line (headline keys from the `cpu` preset).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

import torch

from latentwm.config import get_preset
from latentwm.model import DynamicsModel

CONTEXTS = (4, 8, 16, 32)
WINDOW = 33


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def round_robin_medians(fns, repeats: int, warmup: int = 3) -> list[float]:
    """Median seconds of each fn, timed in turn so all see the same background load."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return [statistics.median(ts) for ts in times]


def cached_step(model, cache, z, prev_action, prev_mask) -> None:
    """One cached denoising step for the new frame (from τ = 0, d = 1); the cache is not touched."""
    B = z.shape[0]
    model.step(z, torch.zeros(B), torch.ones(B), prev_action, prev_mask, cache=cache)


def cached_frame(model, cache, z, prev_action, prev_mask, k_max: int) -> None:
    """One frame with the cache at K = 1: the denoising step, then the commit pass (τ = 1) on a clone."""
    B = z.shape[0]
    c = cache.clone()  # O(1): commits never write into the shared tensors
    model.step(z, torch.zeros(B), torch.ones(B), prev_action, prev_mask, cache=c)
    model.step(z, torch.ones(B), torch.full((B,), 1 / k_max), prev_action, prev_mask, cache=c, commit=True)


def generate_recompute(model, z, actions, known, k_max: int) -> None:
    """One frame without a cache: the full forward over context (τ = 1) + the new frame (τ = 0, d = 1)."""
    B, T = z.shape[:2]
    tau, d = torch.ones(B, T), torch.full((B, T), 1 / k_max)
    tau[:, -1], d[:, -1] = 0.0, 1.0
    model(z, tau, d, actions, known)


@torch.inference_mode()
def bench_preset(name: str, batch: int, repeats: int) -> dict:
    cfg = dataclasses.replace(get_preset(name).model, context_frames=WINDOW)
    torch.manual_seed(0)
    model = DynamicsModel(cfg).eval()
    for p in model.parameters():  # leave the zero init (identical cost, but keep the math representative)
        p.add_(torch.randn_like(p) * 0.02)
    N, D = cfg.num_latent_tokens, cfg.frame_dim
    g = torch.Generator().manual_seed(0)
    frames = torch.randn(batch, max(CONTEXTS) + 1, N, D, generator=g)
    actions = torch.randn(batch, max(CONTEXTS) + 1, cfg.action_dim, generator=g)
    known = torch.ones(batch, max(CONTEXTS) + 1, dtype=torch.bool)
    ones, d_min = torch.ones(batch), torch.full((batch,), 1 / cfg.k_max)

    cache = model.init_cache(batch)
    rows = {}
    for ctx in CONTEXTS:
        while cache.length < ctx:  # grow the shared history to ctx frames
            t = cache.time_index
            model.step(
                frames[:, t],
                ones,
                d_min,
                actions[:, t - 1] if t else None,
                known[:, t - 1] if t else None,
                cache=cache,
                commit=True,
            )
        args = (model, cache, frames[:, ctx], actions[:, ctx - 1], known[:, ctx - 1])
        fns = [
            functools.partial(cached_step, *args),
            functools.partial(cached_frame, *args, cfg.k_max),
            functools.partial(
                generate_recompute, model, frames[:, : ctx + 1], actions[:, : ctx + 1], known[:, : ctx + 1], cfg.k_max
            ),
        ]
        ts, tf, tr = round_robin_medians(fns, repeats)
        rows[ctx] = dict(
            step_ms=ts * 1e3,
            frame_ms=tf * 1e3,
            recompute_ms=tr * 1e3,
            speedup_step=tr / ts,
            speedup_frame_k1=tr / tf,
            gflop_per_frame=model.flops_per_frame(ctx) / 1e9,
        )
    return dict(
        params=model.num_parameters(),
        tokens_per_frame=model.tokens_per_frame,
        window=WINDOW,
        preset_window=get_preset(name).model.context_frames,
        attention=cfg.attention,
        rows=rows,
        kv_speedup_ctx16=rows[16]["speedup_step"],
        kv_speedup_ctx16_frame_k1=rows[16]["speedup_frame_k1"],
        kv_flatness_32_vs_8=rows[32]["frame_ms"] / rows[8]["frame_ms"],
    )


def table(name: str, r: dict) -> str:
    lines = [
        f"**{name}** — {r['params']:,} params, S = {r['tokens_per_frame']} tokens/frame, attention "
        f"'{r['attention']}', window raised {r['preset_window']} → {r['window']} frames for this benchmark",
        "",
        "| context frames | cached step ms | cached frame K=1 ms (step + commit) | recompute ms (full "
        "forward) | speedup per step | speedup per frame K=1 | analytic GFLOP/frame |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for ctx, w in r["rows"].items():
        lines.append(
            f"| {ctx} | {w['step_ms']:.2f} | {w['frame_ms']:.2f} | {w['recompute_ms']:.2f} "
            f"| {w['speedup_step']:.1f}× | {w['speedup_frame_k1']:.1f}× | {w['gflop_per_frame']:.4f} |"
        )
    lines.append(
        f"\nspeedup at 16: {r['kv_speedup_ctx16']:.1f}× per step, {r['kv_speedup_ctx16_frame_k1']:.1f}× "
        f"per K=1 frame (target ≥ 5×); cached frame time 32 vs 8: {r['kv_flatness_32_vs_8']:.2f}× "
        "(target ≤ 1.5×)"
    )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["tiny", "cpu"])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    ap.add_argument("--results", default=str(Path(__file__).with_name("RESULTS.md")))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="attention='fused'")  # CPU resolves fused+softcap to eager; noted
    results = {name: bench_preset(name, args.batch, args.repeats) for name in args.presets}

    machine = (
        f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, torch threads: {torch.get_num_threads()}"
    )
    date = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    body = "\n\n".join(table(n, r) for n, r in results.items())
    section = (
        f"\n## bench_rollout — KV-cached generation vs full recompute ({date})\n\n"
        f"Machine: {machine}. Batch {args.batch}, float32, inference_mode, median of {args.repeats}. "
        "Step = one cached denoising step over the new frame's tokens; frame K=1 = step + commit pass; "
        "recompute = one full forward over context + new frame (the cost of every denoising step without a "
        "cache). On CPU attention='fused' with a soft cap runs the eager math (flex_attention has no CPU "
        "backward and is unfused without torch.compile).\n\n" + body + "\n"
    )
    print(section)
    path = Path(args.results)
    if not path.exists():
        path.write_text("# Benchmark results\n\nMeasured tables appended by the scripts in benchmarks/.\n")
    with path.open("a") as f:
        f.write(section)
    head = results.get("cpu") or next(iter(results.values()))
    summary = dict(
        kv_speedup_ctx16=round(head["kv_speedup_ctx16"], 2),
        kv_speedup_ctx16_frame_k1=round(head["kv_speedup_ctx16_frame_k1"], 2),
        kv_flatness_32_vs_8=round(head["kv_flatness_32_vs_8"], 3),
        headline_preset="cpu" if "cpu" in results else next(iter(results)),
        batch=args.batch,
        threads=torch.get_num_threads(),
        machine=machine,
        presets={
            n: dict(
                params=r["params"],
                window=r["window"],
                kv_speedup_ctx16=round(r["kv_speedup_ctx16"], 2),
                kv_speedup_ctx16_frame_k1=round(r["kv_speedup_ctx16_frame_k1"], 2),
                kv_flatness_32_vs_8=round(r["kv_flatness_32_vs_8"], 3),
                rows={str(c): {k: round(v, 4) for k, v in row.items()} for c, row in r["rows"].items()},
            )
            for n, r in results.items()
        },
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
