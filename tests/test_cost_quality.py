"""Goal-cost quality with the simulator as the model (planning/cost_quality.py): the measurement behind the demo's
`encoder.cost_quality` and benchmarks/bench_plan_cost.py."""

import dataclasses

import numpy as np
import pytest

from latentwm.config import CEMConfig, GenerateConfig, get_preset
from latentwm.data.sources.pusht import generate_pusht
from latentwm.encoders.dino import DinoEncoder
from latentwm.planning.cost_quality import CostQualitySettings, encoder_cost_quality, spearman


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
