"""The benchmark studies the report brings in (report/studies.py): the encoder table and the data-scaling curve — read
with one-line errors naming the file, rendered as markdown, kept in metrics.json."""

import json

import pytest

from latentwm.config import LatentwmError
from latentwm.report.studies import (
    data_scaling_metrics,
    data_scaling_section,
    encoder_table_metrics,
    encoder_table_section,
    read_data_scaling,
    read_encoder_table,
)


def encoders_study() -> dict:
    """An encoders.json as bench_encoder_pretrain writes it (two encoders)."""
    row = dict(nearest_block_within_20=0.5, nearest_block_px=17.4, probe_block_px=56.3, cem_on_simulator_success=0.0)
    return {
        "episodes": "eps",
        "steps_per_objective": 2000,
        "goals": 16,
        "samples": 48,
        "quick": False,
        "rows": [
            {"encoder": "random weights (tiny-random)", "objective": "-", **row, "rank_corr": 0.13,
             "rank_corr_block_moves": 0.17, "effective_rank": 3.2},
            {"encoder": "pretrained 112 px", "objective": "time-contrastive", **row, "rank_corr": 0.36,
             "rank_corr_block_moves": 0.34, "effective_rank": 9.5},
        ],
    }  # fmt: skip


def scaling_study() -> dict:
    """A scaling.json as bench_data_scaling writes it (two sizes, out of order)."""

    def row(n, cem, dino):
        same = dict(steps=2000, goals=60, block_moving_goals=47, cem_block_moves=0.02, cem_block_px=114.4)
        same |= dict(random_block_px=90.0, sim_latent_block_moves=0.085, state_model_block_moves=0.15)
        return {"trajectories": n, "cem_success": cem, "dino_wm_table5_success": dino, **same}

    rows = [row(1000, 0.033, 0.48), row(240, 0.017, 0.13)]
    return {"steps": 2000, "goals": 60, "encoder": "enc", "quick": False, "rows": rows}


def test_the_encoder_table_names_the_best_cost_ranking_and_keeps_every_row(tmp_path):
    (tmp_path / "encoders.json").write_text(json.dumps(encoders_study()))
    study = read_encoder_table(tmp_path)
    md = encoder_table_section(study, "runs/enc")
    assert "| random weights (tiny-random) | 0.50 | 17 | 56 | 0.13 | 0.17 | 0.00 | – | 3.2 |" in md
    assert "| pretrained 112 px, time-contrastive |" in md
    assert "**pretrained 112 px, time-contrastive** (0.34); this demo ran with `runs/enc`." in md
    m = encoder_table_metrics(study)
    assert [r["encoder"] for r in m["rows"]] == ["random weights (tiny-random)", "pretrained 112 px, time-contrastive"]
    assert m["rows"][1]["rank_corr_block_moves"] == 0.34 and m["steps_per_objective"] == 2000 and not m["quick"]
    quick = encoder_table_section({**study, "quick": True})
    assert "**Quick run**" in quick and "this demo ran" not in quick
    # scored under the cost a proprio model plans on: the best is named by CEM there, not by the latent ranking
    study["rows"][0]["cem_proprio_block_moves"], study["rows"][1]["cem_proprio_block_moves"] = 0.4, 0.3
    md = encoder_table_section(study)
    assert "| random weights (tiny-random) | 0.50 | 17 | 56 | 0.13 | 0.17 | 0.00 | 0.40 | 3.2 |" in md
    assert "latent + proprio cost where the block must move: **random weights (tiny-random)** (0.40)." in md
    for r in study["rows"]:
        r["block_moving_goals"] = 22  # 0.40 vs 0.30 over 22 goals: inside two standard errors of the difference
    assert "(0.40), within noise of pretrained 112 px, time-contrastive (0.30; ± 0.14 over 22 goals)." in (
        encoder_table_section(study)
    )
    study["rows"][1]["cem_proprio_block_moves"] = 0.0  # far apart: named without a caveat
    assert "within noise" not in encoder_table_section(study)


def test_the_scaling_section_is_smallest_first_with_dino_wm_beside(tmp_path):
    (tmp_path / "scaling.json").write_text(json.dumps(scaling_study()))
    study = read_data_scaling(tmp_path)
    assert study["figure"] is None  # no plot in the folder
    md = data_scaling_section(study, None)
    assert md.index("| 240 |") < md.index("| 1,000 |") and "![data scaling]" not in md
    assert "| 1,000 | 0.03 | 0.02 | 114 | 90 | 0.09 | 0.15 | 0.48 |" in md
    (tmp_path / "data_scaling.png").write_bytes(b"png")
    study = read_data_scaling(tmp_path)
    assert study["figure"] == str(tmp_path / "data_scaling.png")
    assert "![data scaling](data_scaling.png)" in data_scaling_section(study, "data_scaling.png")
    m = data_scaling_metrics(study)
    assert [r["trajectories"] for r in m["rows"]] == [1000, 240] and m["rows"][0]["dino_wm_table5_success"] == 0.48


@pytest.mark.parametrize(
    "reader, name, content, says",
    [
        (read_encoder_table, "encoders.json", None, "no encoders.json (a benchmarks/bench_encoder_pretrain.py"),
        (read_encoder_table, "encoders.json", "{not json", "not JSON"),
        (read_encoder_table, "encoders.json", json.dumps({"rows": []}), "expected {steps_per_objective, rows"),
        (read_encoder_table, "encoders.json", json.dumps({"rows": [{"rank_corr": 1}]}), "needs an 'encoder' name"),
        (read_data_scaling, "scaling.json", None, "no scaling.json (a benchmarks/bench_data_scaling.py"),
        (read_data_scaling, "scaling.json", json.dumps([1, 2]), "expected {steps, rows"),
        (read_data_scaling, "scaling.json", json.dumps({"rows": [{"cem_success": 0}]}), "needs 'trajectories'"),
    ],
)
def test_a_wrong_study_file_is_one_error_naming_it(tmp_path, reader, name, content, says):
    if content is not None:
        (tmp_path / name).write_text(content)
    with pytest.raises(LatentwmError) as e:
        reader(tmp_path)
    assert str(e.value).startswith(f"{tmp_path / name}: ") and says in str(e.value)
