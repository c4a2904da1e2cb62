"""The planning ladder's cost ranks (planning/ladder.py `cost_rank_rows`): the same random plans scored by the
simulator's costs and by the model's own planning objective, each against the true state distance."""

import dataclasses

import numpy as np
import pytest

from latentwm.cli import main
from latentwm.config import GenerateConfig
from latentwm.data.sources.pusht import generate_pusht
from latentwm.envs.pusht import goal_metrics
from latentwm.planning.evaluate import WorldModelRun, held_out_episodes, sample_goals
from latentwm.planning.ladder import cost_rank_rows, summarize_ranks


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A smoke-preset run (proprio channels, relative actions) trained two steps on four tiny episodes."""
    tmp = tmp_path_factory.mktemp("ladder")
    generate_pusht(GenerateConfig(out_dir=str(tmp / "eps"), num_episodes=4, max_steps=40, seed=3), show_progress=False)
    assert main(["encode", "--preset", "smoke", "--root", str(tmp / "eps"), "--out-dir", str(tmp / "cache")]) == 0
    args = ["--data.cache-dir", str(tmp / "cache"), "--train.out-dir", str(tmp / "wm"), "--train.steps", "2"]
    args += ["--train.eval-every", "100", "--train.ckpt-every", "2", "--data.eval-fraction", "0.5"]
    assert main(["train", "--preset", "smoke", *args]) == 0
    return tmp


def test_cost_ranks_order_the_same_plans_by_every_cost_and_the_model(run):
    wm = WorldModelRun.load(run / "wm")
    plan_cfg = dataclasses.replace(wm.exp.plan, num_goals=2, goal_offset=10)
    d = wm.exp.data
    goals = sample_goals(held_out_episodes(run / "eps", run / "cache", d.eval_fraction, d.seed), 2, 10, 0)
    rows = cost_rank_rows(wm, goals, plan_cfg, samples=8, sample_steps=(1, 2))
    assert [r["goal"] for r in rows] == [0, 1]
    for r in rows:
        assert set(r) == {"goal", "state", "latent", "latent+proprio", "model K=1", "model K=2"}
        assert r["state"] == pytest.approx(1.0)  # the reference orders itself exactly
        assert all(-1 <= r[c] <= 1 for c in r if c != "goal")
    # the candidates and the model's noise are seeded per goal: the measurement repeats exactly
    assert cost_rank_rows(wm, goals, plan_cfg, samples=8, sample_steps=(1, 2)) == rows
    moves = [not goal_metrics(np.r_[g.goal_state[:2], g.start_state[2:]], g.goal_state)["success"] for g in goals]
    ranks = summarize_ranks(rows, moves)
    assert ranks["model K=1"]["rank_corr"] == pytest.approx(np.mean([r["model K=1"] for r in rows]))
    mv = [r["latent"] for r, m in zip(rows, moves) if m]
    assert ranks["latent"]["rank_corr_block_moves"] == (pytest.approx(np.mean(mv)) if mv else None)
