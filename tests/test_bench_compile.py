"""benchmarks/bench_compile.py --quick runs end to end (tiny preset; aot_eager, so no kernels are generated) and
reports a speedup and the first call's time for training and both generation batches, without touching
RESULTS.md."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_run_reports_compiled_vs_eager():
    results_before = (ROOT / "benchmarks/RESULTS.md").read_bytes()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "benchmarks/bench_compile.py", "--quick", "--backend", "aot_eager"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["backend"] == "aot_eager"
    for key in ("train", "gen_b1", "gen_b8"):
        assert res[f"tiny_{key}_speedup"] > 0
        assert res[f"tiny_{key}_compiled_frames_per_s"] > 0 and res[f"tiny_{key}_eager_frames_per_s"] > 0
        assert res[f"tiny_{key}_compile_first_s"] > 0
    rows = [
        line
        for line in proc.stdout.splitlines()
        if line.startswith("| train step |") or line.startswith("| K=4 generation")
    ]
    assert len(rows) == 6  # eager and compiled for each of the three
    assert (ROOT / "benchmarks/RESULTS.md").read_bytes() == results_before
