"""benchmarks/bench_plan.py: the CEM call's analytic FLOP lower bound counts what a planning iteration computes, and
`--quick` reports `cem_vs_bound` (measured seconds per call / the bound at the measured matmul peak) without
touching RESULTS.md."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from latentwm.conditions import Conditions
from latentwm.config import get_preset
from latentwm.model import DynamicsModel
from latentwm.planning import LatentGoalObjective
from latentwm.rollout import Sampling, observe

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_plan import cem_call_flops  # noqa: E402


def test_cem_call_flops_match_the_counted_matmuls(one_thread):
    exp = get_preset("tiny")
    torch.manual_seed(0)
    model = DynamicsModel(dataclasses.replace(exp.model, attention="eager")).eval()
    mc = model.cfg
    C, P, H = 2, 6, 3
    ctx = torch.randn(1, C, mc.num_latent_tokens, mc.latent_dim)
    ctx_actions = torch.randn(1, C - 1, mc.action_dim)
    goal = torch.randn(mc.num_latent_tokens, mc.latent_dim)
    cands = torch.randn(P, H, mc.action_dim)
    with torch.inference_mode():
        with FlopCounterMode(display=False) as obs:
            observe(model, ctx, Conditions(ctx_actions))
        obj = LatentGoalObjective(model, ctx, goal, ctx_actions, Sampling(1), seed=0)
        with FlopCounterMode(display=False) as it:
            obj(cands)
    counted = obs.get_total_flops() + it.get_total_flops()
    analytic = cem_call_flops(model, C, P, 1, H, sample_steps=1)
    # the analytic count leaves out the goal cost and elementwise work, and counts every layer's attention at the
    # frame's full context: equal within a few percent
    assert abs(analytic - counted) / counted < 0.1, (analytic, counted)


def test_quick_run_reports_the_bound_ratio():
    before = (ROOT / "benchmarks/RESULTS.md").read_bytes()
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks/bench_plan.py"),
            "--preset",
            "tiny",
            "--quick",
            "--compile-backend",
            "aot_eager",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["cem_vs_bound"] > 0.5 and summary["cem_bound_seconds"] > 0
    assert summary["cem_vs_bound_compiled"] > 0.5 and summary["compile_first_iteration_s"] > 0
    assert abs(summary["cem_bound_seconds"] * summary["matmul_flops_per_s"] - summary["cem_flops_per_call"]) < 1e3
    assert (ROOT / "benchmarks/RESULTS.md").read_bytes() == before
