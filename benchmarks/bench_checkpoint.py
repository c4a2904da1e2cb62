"""Checkpoint cost under FSDP2 (issue 18): full-state gather on rank 0 vs sharded DCP, save time and peak memory
per rank.

    python benchmarks/bench_checkpoint.py [--width 768 --depth 16 --heads 12] [--ranks 2] [--quick]

Launches `--ranks` gloo processes on this CPU (this script again, with RANK / WORLD_SIZE set); each builds the
dynamics model (default: 100M parameters), its EMA and AdamW with one step taken (so the Adam moments exist), shards
model and EMA with FSDP2 `fully_shard`, then saves one checkpoint each way through latentwm's own
`save_checkpoint` — what `train.checkpoint_format` full / sharded write:
- full: `get_model_state_dict` / `get_optimizer_state_dict` with full_state_dict + cpu_offload (every parameter,
  EMA weight and Adam moment gathered into rank 0's memory), rank 0 writes one state.pt;
- sharded: every rank writes its own shards with torch.distributed.checkpoint, no gather.
Both include the manifest's SHA-256 of every file (each rank hashes its own shards in the sharded case). Per rank:
the save's wall time (barrier to barrier) and its peak RSS above the RSS before it (sampled every 2 ms). The
sharded save runs first so the full gather's freed pages cannot hide its peak.
--quick: the tiny model (a few seconds; what the test runs), printed, not recorded. Otherwise the table is
appended to benchmarks/RESULTS.md. The last stdout line is one JSON object {"full": {...}, "sharded": {...},
"params": P, "paper": {...}}.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from common import machine, report, table  # noqa: E402

BYTES_PER_PARAM = {"params": 4, "ema": 4, "adam": 8}  # fp32 weights, fp32 EMA, two fp32 Adam moments


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Peak resident memory of this process while the block runs, above its RSS at entry (a 2 ms sampler)."""

    def __enter__(self):
        self.base = self.peak = _rss()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _rss())
        self.delta = self.peak - self.base


def _model_cfg(args):
    from latentwm.config import get_preset

    if args.quick:
        return get_preset("tiny")
    return get_preset("tiny").replace(
        model__width=args.width,
        model__depth=args.depth,
        model__heads=args.heads,
        model__kv_heads=max(1, args.heads // 4),
    )


def _timed_save(kind, trainer_like, root, dist):
    """(seconds, peak RSS delta) of one save of `kind` on this rank, barrier to barrier."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    from latentwm.engine import checkpoint as ckpt
    from latentwm.engine.sharded import sharded_state

    model, ema, opt = trainer_like
    dist.barrier()
    t0 = time.perf_counter()
    with PeakRSS() as mem:
        if kind == "sharded":
            sd = sharded_state({"model": model, "ema": ema}, opt)
            state = {"step": 1, "dcp": ["model", "ema", "optimizer"]} if dist.is_main else {}
            ckpt.save_checkpoint(
                root, 1, state, rank=dist.rank, world_size=dist.world_size, barrier=dist.barrier, sharded_state=sd
            )
        else:
            full = StateDictOptions(full_state_dict=True, cpu_offload=True)
            state = {
                "model": get_model_state_dict(model, options=full),
                "ema": get_model_state_dict(ema, options=full),
                "optimizer": get_optimizer_state_dict(model, opt, options=full),
                "step": 1,
            }
            ckpt.save_checkpoint(
                root, 1, state if dist.is_main else {}, rank=dist.rank, world_size=dist.world_size, barrier=dist.barrier
            )
            del state
        dist.barrier()
    return time.perf_counter() - t0, mem.delta


def worker(args) -> None:
    """One rank: build, shard, take one step, save both ways; rank 0 prints the per-rank results as JSON."""
    import copy

    import torch.distributed as tdist

    from latentwm.distributed import init_distributed, shutdown, wrap_model
    from latentwm.model.dynamics import DynamicsModel

    torch.set_num_threads(1)
    dist = init_distributed("cpu")
    torch.manual_seed(0)
    model = DynamicsModel(_model_cfg(args).model)
    params = model.num_parameters()
    ema = copy.deepcopy(model).requires_grad_(False)
    wrap_model(ema, "fsdp", dist)
    wrap_model(model, "fsdp", dist)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for p in model.parameters():  # one step with made-up gradients: the Adam moments now exist, as in training
        p.grad = torch.ones_like(p) * 1e-3
    opt.step()
    opt.zero_grad(set_to_none=True)
    out = {}
    for kind in ("sharded", "full"):
        root = Path(args.out) / kind
        seconds, rss = _timed_save(kind, (model, ema, opt), root, dist)
        step = root / "step_00000001"
        mine = sum(
            p.stat().st_size
            for p in step.rglob("*")
            if p.is_file()
            and (p.name == "state.pt" if kind == "full" and dist.is_main else f"__{dist.rank}_" in p.name)
        )
        out[kind] = {"seconds": seconds, "peak_rss_bytes": rss, "bytes_written": mine}
    parts = [None] * dist.world_size
    tdist.all_gather_object(parts, out)
    if dist.is_main:
        print("RESULT " + json.dumps({"params": params, "ranks": parts}))
    shutdown(dist)


def paper(params: int, ranks: int) -> dict:
    """Bytes one rank holds for a checkpoint: full = everything on rank 0; sharded = 1/ranks of it on each."""
    total = params * sum(BYTES_PER_PARAM.values())
    return {
        "params": params,
        "ranks": ranks,
        "state_bytes": total,
        "full_rank0_bytes": total,
        "sharded_per_rank_bytes": total / ranks,
    }


def _notes(res: dict, ranks: int) -> str:
    lines = [
        "save_s: the save's wall time, barrier to barrier (manifest hashes included); extra_peak_rss_gb: the "
        "rank's peak resident memory during the save above its RSS before it (the sharded model, EMA and Adam "
        "state already resident are not counted); written_gb: the bytes of the files that rank wrote.",
        "On paper (16 bytes per parameter: fp32 weights 4 + EMA 4 + Adam moments 8; bf16 activations and "
        "gradients are not checkpointed): a full-state save gathers all of it into rank 0's CPU memory and "
        "one process serializes and hashes it; a sharded save holds and writes 1/W of it per rank, in parallel.",
    ]
    for p in (1e9, 7e9):
        for w in (8, 64):
            q = paper(int(p), w)
            lines.append(
                f"- {p / 1e9:.0f}B params, W = {w}: full = {q['full_rank0_bytes'] / 1e9:.0f} GB on rank 0 "
                f"(+ its own shard and the model in training), written by one process; sharded = "
                f"{q['sharded_per_rank_bytes'] / 1e9:.2f} GB per rank. At a 2 GB/s per-process write (and "
                f"hash) rate: full ≈ {q['full_rank0_bytes'] / 2e9:.0f} s, sharded ≈ "
                f"{q['sharded_per_rank_bytes'] / 2e9:.1f} s if the filesystem scales with writers."
            )
    m = res["measured"]
    lines.append(
        f"Measured here ({res['params'] / 1e6:.1f}M params, {ranks} gloo ranks on one CPU, one local disk "
        f"shared by both writers): full = {m['full']['seconds']:.2f} s with "
        f"{m['full']['rank0_peak_rss_gb']:.3f} GB extra on rank 0 (the gathered state), sharded = "
        f"{m['sharded']['seconds']:.2f} s with at most {m['sharded']['max_peak_rss_gb']:.3f} GB extra on any "
        f"rank (DCP writes the resident shards as they are); save time full/sharded = "
        f"{m['full']['seconds'] / m['sharded']['seconds']:.2f}×."
    )
    return "\n".join(lines)


def launch(args) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env_base = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "WORLD_SIZE": str(args.ranks),
    }
    me = [
        sys.executable,
        __file__,
        "--worker",
        "--out",
        args.out,
        "--width",
        str(args.width),
        "--depth",
        str(args.depth),
        "--heads",
        str(args.heads),
    ] + (["--quick"] if args.quick else [])
    procs = [
        subprocess.Popen(
            me,
            env={**env_base, "RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(args.ranks)
    ]
    outs = [p.communicate(timeout=1800) for p in procs]
    for p, (o, e) in zip(procs, outs):
        if p.returncode != 0:
            raise SystemExit(f"a rank failed (exit {p.returncode}):\n{o[-2000:]}\n{e[-3000:]}")
    line = next(x for x in outs[0][0].splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=768)
    ap.add_argument("--depth", type=int, default=16)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="the tiny model; printed, not recorded")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)
    with tempfile.TemporaryDirectory(prefix="bench_checkpoint_") as tmp:
        args.out = tmp
        raw = launch(args)
    rows, measured = [], {}
    for kind in ("full", "sharded"):
        for r, part in enumerate(raw["ranks"]):
            x = part[kind]
            rows.append(
                {
                    "format": kind,
                    "rank": r,
                    "save_s": x["seconds"],
                    "extra_peak_rss_gb": x["peak_rss_bytes"] / 1e9,
                    "written_gb": x["bytes_written"] / 1e9,
                }
            )
        measured[kind] = {
            "seconds": max(p[kind]["seconds"] for p in raw["ranks"]),
            "rank0_peak_rss_gb": raw["ranks"][0][kind]["peak_rss_bytes"] / 1e9,
            "max_peak_rss_gb": max(p[kind]["peak_rss_bytes"] for p in raw["ranks"]) / 1e9,
        }
    res = {
        "params": raw["params"],
        "ranks": args.ranks,
        "measured": measured,
        "paper": {f"{int(p / 1e9)}B": paper(int(p), 8) for p in (1e9, 7e9)},
    }
    notes = _notes(res, args.ranks)
    summary = {"full": measured["full"], "sharded": measured["sharded"], "params": raw["params"], "paper": res["paper"]}
    cols = ["format", "rank", "save_s", "extra_peak_rss_gb", "written_gb"]
    if args.quick:
        print(table(rows, cols))
        print(f"\nMachine: {machine()}.\n{notes}")
        print(json.dumps(summary))
    else:
        report(
            f"bench_checkpoint: FSDP2 checkpoint save, full-state gather vs sharded DCP "
            f"({raw['params'] / 1e6:.0f}M params, {args.ranks} ranks)",
            table(rows, cols),
            summary,
            notes,
        )


if __name__ == "__main__":
    main()
