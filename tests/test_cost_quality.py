"""Goal-cost quality with the simulator as the model (planning/cost_quality.py): the measurement behind the demo's
`encoder.cost_quality` and benchmarks/bench_plan_cost.py."""

import dataclasses

import numpy as np
import pytest
import torch

from latentwm.config import CEMConfig, GenerateConfig, get_preset
from latentwm.data.sources.pusht import generate_pusht
from latentwm.encoders.dino import DinoEncoder
from latentwm.planning.cost_quality import (
    PROPRIO_COST,
    CostQualitySettings,
    SimCosts,
    encoder_cost_quality,
    spearman,
)


def test_spearman_is_rank_based_and_handles_constants():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [1, 4, 9, 16]) == pytest.approx(1.0)  # monotone, not linear
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [5, 5, 5]) == 0.0


@pytest.fixture(scope="module")
def episodes(tmp_path_factory):
    out = tmp_path_factory.mktemp("cq") / "episodes"
    generate_pusht(GenerateConfig(out_dir=str(out), num_episodes=6, max_steps=40, seed=0), show_progress=False)
    return out


def test_encoder_cost_quality_scores_latent_and_state(episodes):
    exp = get_preset("tiny")
    small = dataclasses.replace(exp.plan, cem=CEMConfig(population=4, elites=2, iterations=1), goal_offset=10)
    exp = exp.replace(plan=small, data__eval_fraction=0.34)
    enc = DinoEncoder.from_config(exp.encoder)
    res = encoder_cost_quality(
        enc.encode,
        episodes,
        exp,
        num_goals=2,
        settings=CostQualitySettings(samples=6),
        stat_frames=64,
        log=lambda *a: None,
    )
    lat, state = res["per_cost"]["latent"], res["per_cost"]["state"]
    assert state["rank_corr"] == pytest.approx(1.0)  # the reference correlates with itself
    assert -1 <= lat["rank_corr"] <= 1 and 0 <= lat["cem_on_simulator_success"] <= 1
    assert lat["cem_on_simulator_final_distance"] > 0
    assert "cem_on_simulator_success" not in state  # CEM runs only on the costs asked for
    assert res["goals"] == 2 and res["samples"] == 6 and len(res["per_goal"]) == 2
    assert np.isfinite(res["start_distance"])


def test_the_latent_plus_proprio_cost_is_the_latent_cost_plus_the_weighted_proprio_term(episodes):
    """DINO-WM's objective with the simulator as the model: the latent cost plus plan.proprio_weight × the agent's
    normalized proprio error; at weight 0 it ranks exactly as the latent cost, and it needs proprio statistics."""
    exp = get_preset("tiny")
    exp = exp.replace(plan=dataclasses.replace(exp.plan, goal_offset=10), data__eval_fraction=0.34)
    enc = DinoEncoder.from_config(exp.encoder)
    quiet = dict(settings=CostQualitySettings(samples=6, cem=False), stat_frames=64, log=lambda *a: None)
    res = encoder_cost_quality(enc.encode, episodes, exp, num_goals=2, costs=("latent", PROPRIO_COST), **quiet)
    assert -1 <= res["per_cost"][PROPRIO_COST]["rank_corr"] <= 1
    off = exp.replace(plan=dataclasses.replace(exp.plan, proprio_weight=0.0))
    res0 = encoder_cost_quality(enc.encode, episodes, off, num_goals=2, costs=("latent", PROPRIO_COST), **quiet)
    for row in res0["per_goal"]:
        assert row[f"{PROPRIO_COST}_rank_corr"] == pytest.approx(row["latent_rank_corr"])
    # the term itself: the same candidates, weight 1 against weight 0, differ by the normalized proprio MSE
    from latentwm.data.episodes import NormStats, load_episode
    from latentwm.envs.pusht import proprio_from_state
    from latentwm.planning.mpc import ActionCodec, LatentObserver

    ep = load_episode(sorted(episodes.glob("episode_*.npz"))[0])
    acts = ep.actions.reshape(-1, ep.actions.shape[-1]).astype(np.float64)
    codec = ActionCodec.from_stats(NormStats(acts.mean(0), acts.std(0) + 1e-6, len(acts)), ep.frame_skip, 10)
    p = proprio_from_state(ep.states).astype(np.float64)
    pstats = NormStats(p.mean(0), p.std(0) + 1e-6, len(p))
    lat = np.asarray(enc.encode(np.asarray(ep.frames[ep.cameras[0]])[:8]), np.float64).reshape(-1, enc.dim)
    observer = LatentObserver(enc.encode, NormStats(lat.mean(0), lat.std(0) + 1e-6, len(lat)), proprio_stats=pstats)
    start, goal = ep.states[0], ep.states[-1]
    goal_frame = np.asarray(ep.frames[ep.cameras[0]])[-1]
    hold = codec.hold(start[:2], 2)  # (2, plan_dim): two model steps holding the agent's position
    cands = hold[None].repeat(3, 1, 1) + 0.3 * torch.randn(3, *hold.shape, generator=torch.Generator().manual_seed(0))
    got = {}
    for w in (0.0, 1.0):
        sim = SimCosts(codec, observer, goal_frame.shape[0], proprio_weight=w)
        try:
            got[w] = sim(start, cands, goal_frame, sim.goal_latent(goal_frame), goal, ("latent", PROPRIO_COST))
        finally:
            sim.close()
    assert np.allclose(got[0.0][PROPRIO_COST], got[0.0]["latent"])
    extra = got[1.0][PROPRIO_COST] - got[1.0]["latent"]
    assert np.all(extra >= 0) and extra.max() > 0
    no_proprio = LatentObserver(enc.encode, NormStats(lat.mean(0), lat.std(0) + 1e-6, len(lat)))
    plain = SimCosts(codec, no_proprio, goal_frame.shape[0])
    try:
        with pytest.raises(ValueError, match="proprio statistics"):
            plain(start, cands, goal_frame, plain.goal_latent(goal_frame), goal, (PROPRIO_COST,))
    finally:
        plain.close()
