"""benchmarks/bench_generate.py --quick: before/after episodes/s and the env step's parts, printed, not recorded;
the worker processes write the same bytes as one process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("gym_pusht")
ROOT = Path(__file__).resolve().parents[1]


def test_quick_run_reports_speedup_and_identical_files():
    before = (ROOT / "benchmarks/RESULTS.md").read_bytes()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "benchmarks/bench_generate.py", "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["speedup"] > 0 and res["speedup_render_every"] > 0 and res["identical_across_workers"] is True
    assert all(v > 0 for v in res["episodes_per_s"].values()) and len(res["episodes_per_s"]) >= 3
    ms = res["ms_per_step"]
    assert ms["copy + resize, contiguous (now)"] < ms["copy + resize, strided (gym-pusht)"]
    assert (ROOT / "benchmarks/RESULTS.md").read_bytes() == before


@pytest.mark.slow
def test_render_every_experiment_quick_run(tmp_path):
    """bench_render_every.py --quick: both arms generate, encode, train and are scored on the shared test set."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "benchmarks/bench_render_every.py", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    full, sparse = res["rows"]
    assert full["render_every"] == 1 and sparse["render_every"] == 5 and sparse["trajectories"] == 12
    assert full["test_clips"] == sparse["test_clips"] > 0 and res["better"] in (full["arm"], sparse["arm"])
    assert all(r["mean_error"] > 0 and r["copy_last_error"] > 0 for r in res["rows"])
