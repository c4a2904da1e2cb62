"""The planning ladder's cost ranks (planning/ladder.py `cost_rank_rows`): the same random plans scored by the
simulator's costs and by the model's own planning objective, each against the true state distance."""

import dataclasses

import numpy as np
import pytest

from latentwm.cli import main
from latentwm.config import GenerateConfig
from latentwm.data.sources.pusht import generate_pusht
from latentwm.planning.evaluate import WorldModelRun, block_must_move, held_out_episodes, sample_goals
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
    rows = cost_rank_rows(wm, goals, plan_cfg, samples=8, sample_steps=(1, 2), log=lambda *_: None)
    assert [r["goal"] for r in rows] == [0, 1]
    costs = {"latent", "latent+proprio", "model K=1", "model K=1 latent", "model K=2", "model K=2 latent"}
    for r in rows:
        assert set(r["state"]) == set(r["block"]) == costs
        assert all(-1 <= v <= 1 for v in r["state"].values())
        assert all(v is None or -1 <= v <= 1 for v in r["block"].values())
    # the candidates and the model's noise are seeded per goal: the measurement repeats exactly
    assert cost_rank_rows(wm, goals, plan_cfg, samples=8, sample_steps=(1, 2), log=lambda *_: None) == rows
    moves = [block_must_move(g) for g in goals]
    ranks = summarize_ranks(rows, moves)
    assert ranks["model K=1"]["rank_corr"] == pytest.approx(np.mean([r["state"]["model K=1"] for r in rows]))
    mv = [r["state"]["latent"] for r, m in zip(rows, moves) if m]
    assert ranks["latent"]["rank_corr_block_moves"] == (pytest.approx(np.mean(mv)) if mv else None)
    varied = [r["block"]["latent"] for r in rows if r["block"]["latent"] is not None]
    assert ranks["latent"]["block_goals"] == len(varied)
    assert ranks["latent"]["block_rank_corr"] == (pytest.approx(np.mean(varied)) if varied else None)


def test_the_block_reference_is_the_block_pose_distance_alone():
    """Rank correlations against the block's distance skip goals where no candidate moved the block (all ties)."""
    rows = [
        {"goal": 0, "state": {"latent": 0.5}, "block": {"latent": None}},
        {"goal": 1, "state": {"latent": 0.1}, "block": {"latent": 0.3}},
    ]
    r = summarize_ranks(rows, [True, False])["latent"]
    assert r == {"rank_corr": pytest.approx(0.3), "rank_corr_block_moves": 0.5, "block_rank_corr": 0.3,
                 "block_goals": 1}  # fmt: skip


def test_the_report_says_how_each_cost_orders_the_plans():
    from latentwm.report.sections import _ladder

    rung = dict(success_rate=0.5, success_rate_joint=0.4, success_rate_block_moves=0.3, block_px=40.0)
    rung |= dict(block_px_block_moves=50.0, goals=2, block_moving_goals=1)
    lad = {"goals": 2, "block_moving_goals": 1, "rungs": {"simulator + state cost": rung}, "rank_samples": 48}
    assert "orders the same" not in _ladder(lad)  # not measured: nothing said
    lad["cost_rank"] = {
        "latent+proprio": {"rank_corr": 0.9, "rank_corr_block_moves": 0.89, "block_rank_corr": 0.6, "block_goals": 2},
        "model K=1 latent": {"rank_corr": 0.3, "rank_corr_block_moves": 0.3, "block_rank_corr": None, "block_goals": 0},
    }
    md = _ladder(lad)
    assert "the same 48 random plans per goal" in md and "latent+proprio 0.90, model K=1 latent 0.30;" in md
    assert "(px + degrees, goals where a candidate moved it): latent+proprio 0.60, model K=1 latent –." in md
