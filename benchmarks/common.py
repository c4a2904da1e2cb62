"""Shared benchmark helpers: machine description, robust timing, appending to RESULTS.md."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads{gpu}, torch {torch.__version__}"


def median_time(fn, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall seconds of fn() over `repeats` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def matmul_flops(n: int = 2048, repeats: int = 7) -> float:
    """Measured float32 matmul FLOP/s of this machine (the 'peak' that CPU MFU is relative to): the best of
    several large matmuls, so a busy moment does not lower the peak and inflate MFU."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def table(rows: list[dict], columns: list[str]) -> str:
    """A markdown table of rows (dicts) with the given columns; floats get 4 significant digits."""

    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(out)


def report(title: str, table_md: str, summary: dict, notes: str = "", record: bool = True) -> None:
    """Print the table, append a dated section to RESULTS.md (unless not `record`: a --quick smoke run), and print
    the summary JSON as the last line."""
    print(table_md)
    if notes:
        print(notes)
    if not record:
        print(json.dumps(summary))
        return
    if not RESULTS.exists():
        RESULTS.write_text(
            "# Benchmark results\n\nAppended by the scripts in `benchmarks/`; the log is oldest first.\n"
        )
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    with open(RESULTS, "a") as f:
        f.write(f"\n## {title} — {stamp}\n\nMachine: {machine()}\n\n{table_md}\n\n")
        if notes:
            f.write(notes + "\n\n")
        f.write(f"```json\n{json.dumps(summary)}\n```\n")
    print(json.dumps(summary))
