"""The report's data lines: scale, policy mix, and DINO-WM's data-scaling table read at the run's scale."""

import pytest

from latentwm.config import get_preset
from latentwm.report import DINO_WM_SCALING, data_lines, dino_wm_success_at


def test_dino_wm_table_is_read_at_its_rows_and_between_them():
    for n, s in DINO_WM_SCALING:
        assert dino_wm_success_at(n) == pytest.approx(s)
    assert 0.48 < dino_wm_success_at(3000) < 0.72 and dino_wm_success_at(240) == pytest.approx(0.1253, abs=1e-3)
    assert dino_wm_success_at(100) is None and dino_wm_success_at(20_000) is None


def test_data_lines_state_scale_mix_and_reference():
    data = {
        "trajectories": 1000,
        "env_steps": 180_000,
        "env_steps_per_episode": 200,
        "policy_mix": {
            "shares": {"goal": 0.5, "scripted": 0.3, "random_walk": 0.2},
            "noise_px": [4.0, 12.0],
            "episodes": {"goal": 501, "scripted": 296, "random_walk": 203},
        },
    }
    text = data_lines(data, get_preset("cpu"))
    assert "1000 simulated Push-T trajectories (180000 env steps" in text and "10-D actions" in text
    assert "goal-directed 501 (0.5), random-target 296 (0.3), random walk 203 (0.2)" in text
    assert "≈ 0.48 success at 1000 trajectories" in text
    assert "no row at 24 trajectories" in data_lines({**data, "trajectories": 24}, get_preset("cpu"))
