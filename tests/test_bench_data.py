"""benchmarks/bench_data.py --quick: every `--source` but pusht is read from a fixture in its real layout at native
size and at 224², with decoded frames/s and clips/s for each, plus the RLDS TFRecord read rates; the quick run is
printed, not appended to RESULTS.md."""

import json
import os
import subprocess
import sys
from pathlib import Path

from latentwm.config.registry import SOURCES

ROOT = Path(__file__).resolve().parents[1]


def test_quick_run_times_every_source_and_leaves_results_alone():
    results = ROOT / "benchmarks/RESULTS.md"
    before = results.read_bytes()
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/bench_data.py"), "--quick"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["quick"] is True
    wanted = set(SOURCES) - {"pusht"}
    assert wanted <= set(summary["per_source"]), sorted(wanted - set(summary["per_source"]))
    for source in wanted:
        row = summary["per_source"][source]
        for key in ("decode_frames_per_s", "decode_frames_per_s_224", "clips_per_s", "clips_per_s_224"):
            assert row[key] > 0, (source, key, row)
    # the 224² rows really are resized, the native rows keep each set's own frame size
    lines = [line.split("|")[1:-1] for line in out.stdout.splitlines() if line.startswith("| ")]
    rows = [dict(zip([c.strip() for c in lines[0]], [c.strip() for c in r])) for r in lines if len(r) == 8]
    native = {r["reader"]: r["hw"] for r in rows if r["size"] == "native"}
    assert native["egodex"] == "1080×1920" and native["rlds"] == "256×256" and native["agibot"] == "480×640"
    resized = [r["hw"] for r in rows if r["size"] == "224"]
    assert len(resized) == len(native) >= len(wanted) and set(resized) == {"224×224"}
    assert summary["rlds_records"] >= 2 and summary["rlds_mb"] > 1
    assert summary["rlds_read_crc_mb_per_s"] > 0 and summary["rlds_read_crc_parse_mb_per_s"] > 0
    assert results.read_bytes() == before
