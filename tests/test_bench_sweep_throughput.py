"""benchmarks/bench_sweep_throughput.py --quick measures every trained variant of the CPU sweep file in one
process (eval-only variants left out) and reports frames/s relative to the base, without touching RESULTS.md."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_run_measures_each_trained_variant():
    before = (ROOT / "benchmarks/RESULTS.md").read_bytes()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "benchmarks/bench_sweep_throughput.py", "sweeps/ablation-pusht.toml", "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    fps, params = res["frames_per_s"], res["params"]
    assert res["vs_base"]["base"] == 1.0 and all(v > 0 for v in fps.values())
    for name, p in params.items():
        assert p > 0, name
    assert (ROOT / "benchmarks/RESULTS.md").read_bytes() == before
