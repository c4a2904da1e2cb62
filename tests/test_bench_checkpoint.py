"""benchmarks/bench_checkpoint.py --quick runs end to end (tiny model, 2 gloo ranks) and reports consistent numbers,
so the benchmark cannot rot before someone runs it at 100M parameters."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_run_reports_full_vs_sharded_saves():
    results_before = (ROOT / "benchmarks/RESULTS.md").read_bytes()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "benchmarks/bench_checkpoint.py", "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])  # the last stdout line: one JSON object
    assert set(res) == {"full", "sharded", "params", "paper"} and res["params"] > 0
    for kind in ("full", "sharded"):
        assert res[kind]["seconds"] > 0 and res[kind]["max_peak_rss_gb"] >= res[kind]["rank0_peak_rss_gb"] >= 0
    # the on-paper scaling: 16 bytes per parameter, all on rank 0 (full) or 1/8 per rank (sharded, W = 8)
    for name, p in (("1B", 1e9), ("7B", 7e9)):
        q = res["paper"][name]
        assert q["full_rank0_bytes"] == 16 * p and q["sharded_per_rank_bytes"] == 2 * p
    table = [line for line in proc.stdout.splitlines() if line.startswith("| full |") or line.startswith("| sharded |")]
    assert len(table) == 4  # one row per format and rank
    # every rank wrote its own shards in the sharded save; only rank 0 wrote the full one
    rows = {(c[1].strip(), c[2].strip()): float(c[5]) for c in (line.split("|") for line in table)}
    assert rows[("sharded", "0")] > 0 and rows[("sharded", "1")] > 0 and rows[("full", "1")] == 0
    assert (ROOT / "benchmarks/RESULTS.md").read_bytes() == results_before  # printed, not recorded
