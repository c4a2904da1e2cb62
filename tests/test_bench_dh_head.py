"""benchmarks/bench_dh_head.py --quick runs end to end (tiny preset) and reports consistent numbers, so the benchmark
cannot rot before someone runs it at the cpu / base presets."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_run_reports_the_heads_cost():
    results_before = (ROOT / "benchmarks/RESULTS.md").read_bytes()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "benchmarks/bench_dh_head.py", "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])  # the last stdout line: one JSON object
    assert list(res) == ["tiny"]
    r = res["tiny"]
    # tiny: W 32, D 64, patch_group 1 -> the default head is max(2·32, 64) = 64 wide
    assert r["dh_width"] == 64 and r["dh_heads"] == 4 and r["prediction"] == "x"
    assert r["param_ratio"] == r["params_dh"] / r["params"] > 1
    assert r["flop_ratio"] == r["flops_per_frame_dh"] / r["flops_per_frame"] > 1 and r["clip_flop_ratio"] > 1
    assert r["step_s"] > 0 and r["step_s_dh"] > 0 and r["step_time_ratio"] > 0
    assert "| tiny |" in proc.stdout
    assert (ROOT / "benchmarks/RESULTS.md").read_bytes() == results_before  # printed, not recorded
