"""benchmarks/gpu_check.sh --quick: the prepared GPU check runs end to end at tiny sizes on the CPU, so it cannot rot
before the next GPU machine runs it for real."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402


def _numbers(obj):
    """Every int/float (not bool) inside obj, with its key."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, (dict, list)):
                yield from _numbers(v)
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                yield k, v
    elif isinstance(obj, list):
        for v in obj:
            yield from _numbers(v)


def test_quick_check_runs_every_section(tmp_path):
    out = tmp_path / "out"
    results_before = gpu_check.ROOT.joinpath("benchmarks/RESULTS.md").read_bytes()
    env = {
        **os.environ,
        "OUT": str(out),
        "PYTHON": sys.executable,
        "GPU_CHECK_SKIP_INSTALL": "1",
        "GPU_CHECK_SKIP_TESTS": "1",
    }
    proc = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--quick", "--device", "cpu"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])  # the last stdout line: one JSON object
    assert res["quick"] and res["device"] == "cpu"
    assert list(res["sections"]) == gpu_check.ORDER
    assert res["sections"]["tests"]["skipped"]
    assert not res["errors"], res["errors"]
    for name in gpu_check.ORDER[1:]:
        sec = res["sections"][name]
        assert sec["rows"], name
        bad = [(k, v) for k, v in _numbers(sec["rows"]) if not v > 0]
        assert not bad, (name, bad)
    h = res["headline"]
    for key in (
        "peak_bf16_tflops",
        "train_small_eager_frames_per_s",
        "train_small_compile_frames_per_s",
        "train_base_eager_tokens_per_s",
        "train_base_compile_mfu",
        "train_base_eager_peak_mem_gb",
        "attn_space_eager_ms",
        "attn_space_flex_ms",
        "attn_time_sdpa_ms",
        "gen_fps_k1_ctx16",
        "gen_fps_k4_ctx32",
        "cem_seconds_per_call_fp32",
        "encoder_vit-s14_images_per_s",
        "encoder_vit-b14_images_per_s",
    ):
        assert h[key] > 0, key
    # the compiled generation rows come last in their section: timed, or skipped with the reason when the section's
    # budget ran out first (a busy machine)
    gen = res["sections"]["generation"]
    assert "gen_fps_k4_ctx32_compiled" in h or any(k.startswith("skipped_compiled") for k in gen), gen
    assert json.loads((out / "gpu_check.json").read_text())["headline"] == h
    assert [v["target"] for v in res["verdicts"]] == [t[1] for t in gpu_check.TARGETS]
    assert all(v["measured"] > 0 and v["met"] is None and "quick run" in v["reason"] for v in res["verdicts"])
    assert "**Targets**" in (out / "gpu_check.md").read_text()
    assert "training step (base)" in (out / "gpu_check.md").read_text()
    assert (out / "gpu_check.log").stat().st_size > 0
    assert gpu_check.ROOT.joinpath("benchmarks/RESULTS.md").read_bytes() == results_before  # --quick: not recorded


def test_child_process_killed_at_its_budget_keeps_its_figures(tmp_path, monkeypatch):
    # on a GPU each section runs in a child process killed at its budget; what it recorded before must survive
    monkeypatch.setenv("GPU_CHECK_HANG", "peak")  # the child hangs after measuring
    args = gpu_check.build_parser().parse_args(
        ["--quick", "--out", str(tmp_path), "--device", "cpu", "--compile-backend", "aot_eager"]
    )
    lines = []
    data = gpu_check._run_child("peak", args, budget=25.0, tmp=tmp_path, emit=lines.append)
    assert "timed out" in data["error"]
    assert data["rows"] and data["bf16_matmul_tflops"] > 0
    assert any("tflops=" in ln for ln in lines)  # the child's output was streamed


@pytest.mark.parametrize("argv", [["--only", "nope"]])
def test_bad_section_name_is_rejected(argv, tmp_path):
    with pytest.raises(SystemExit):
        gpu_check.main([*argv, "--quick", "--out", str(tmp_path)])


def test_verdicts_read_the_best_row_and_say_what_is_missing():
    sections = {
        "train_base": {"rows": [{"mode": "eager", "mfu": 0.13}, {"mode": "compile", "mfu": 0.36}]},
        "generation": {
            "rows": [
                {"mode": "eager", "context": 16, "K": 4, "frames_per_s": 7.8},
                {"mode": "compiled", "context": 16, "K": 4, "frames_per_s": 12.0},
                {"mode": "compiled", "context": 16, "K": 1, "frames_per_s": 40.0},  # another K: not the target
                {"mode": "compiled", "context": 32, "K": 4, "frames_per_s": 25.0},  # another context: neither
            ]
        },
        "planning": {"rows": [], "error": "timed out after 40 s (its budget)"},
    }
    base, gen, cem = gpu_check.verdicts(sections, quick=False)
    assert base["met"] is True and base["measured"] == 0.36 and base["row"] == {"mode": "compile"}
    assert gen["met"] is False and gen["measured"] == 12.0 and gen["row"]["mode"] == "compiled"
    assert cem["met"] is None and cem["measured"] is None and "timed out" in cem["reason"]
    text = gpu_check.verdict_lines([base, gen, cem])
    assert "met: 0.36 >= 0.35" in text and "NOT met: 12 >= 20" in text and "not measured (timed out" in text
    no_peak = gpu_check.verdicts({"train_base": {"rows": [{"mode": "eager", "frames_per_s": 900.0}]}}, False)[0]
    assert no_peak["measured"] is None and "no row of train_base has mfu" in no_peak["reason"]
    cem_ok = gpu_check.verdicts({"planning": {"rows": [{"precision": "bf16", "seconds_per_call": 2.5}]}}, False)[2]
    assert cem_ok["met"] is True and cem_ok["measured"] == 2.5
