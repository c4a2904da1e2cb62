"""Resuming with a changed config: model / data / objective / optimizer fields are refused by name; cadence and
length fields (train.steps, ...) may change."""

import pytest

from latentwm.config import ConfigError, get_preset
from latentwm.data.sources.synthetic import MovingBlobClips
from latentwm.train.trainer import Trainer, config_changes


def _cfg(tmp_path, **kw):
    base = dict(
        train__out_dir=str(tmp_path),
        train__steps=2,
        train__ckpt_every=2,
        train__log_every=1,
        data__batch_size=2,
        train__resume=True,
    )
    return get_preset("tiny").replace(**{**base, **kw})


def _fit(cfg):
    m = cfg.model
    return Trainer(
        cfg, MovingBlobClips(grid=m.latent_grid, dim=m.latent_dim, frames=cfg.data.clip_len), None, device="cpu"
    ).fit()


@pytest.mark.parametrize(
    "change,field",
    [
        (dict(model__width=64, model__heads=4), "model.width"),
        (dict(data__frame_skip=3), "data.frame_skip"),
        (dict(train__lr=1e-2), "train.lr"),
        (dict(objective__bootstrap_fraction=0.5), "objective.bootstrap_fraction"),
    ],
)
def test_resume_with_a_changed_field_is_refused_naming_it(tmp_path, change, field):
    _fit(_cfg(tmp_path))
    with pytest.raises(ConfigError, match=rf"{field}: .* -> "):
        _fit(_cfg(tmp_path, train__steps=4, **change))


def test_resume_may_train_longer(tmp_path):
    _fit(_cfg(tmp_path))
    assert _fit(_cfg(tmp_path, train__steps=4, train__log_every=2, rollout__horizon=3))["step"] == 4


def test_config_changes_lists_nested_fields():
    a = {"model": {"width": 32}, "plan": {"cem": {"population": 8}}, "train": {"steps": 1, "lr": 1.0}}
    b = {"model": {"width": 64}, "plan": {"cem": {"population": 9}}, "train": {"steps": 2, "lr": 1.0}}
    assert config_changes(a, b) == ["model.width: 32 -> 64"]


def test_pretrain_encoder_resume_refuses_a_changed_learning_rate(tmp_path, capsys):
    """`latentwm pretrain-encoder --resume` accepted a changed --lr silently (`train --train.resume` refuses such
    changes): now it is refused in one line naming the field, and the run's checkpoints are untouched."""
    from latentwm.cli import main
    from latentwm.config import GenerateConfig
    from latentwm.data.sources.pusht import generate_pusht

    pytest.importorskip("gym_pusht")
    generate_pusht(
        GenerateConfig(out_dir=str(tmp_path / "eps"), num_episodes=3, max_steps=20, workers=1), show_progress=False
    )
    base = ["pretrain-encoder", "--data-dir", str(tmp_path / "eps"), "--out-dir", str(tmp_path / "run"),
            "--hidden-size", "32", "--layers", "1", "--heads", "2", "--image-size", "56", "--batch-size", "8",
            "--frames-per-episode", "4", "--window", "10", "--warmup-steps", "1", "--ckpt-every", "2",
            "--eval-fraction", "0.34"]  # fmt: skip
    assert main([*base, "--steps", "2"]) == 0
    ckpts = tmp_path / "run" / "checkpoints"
    before = {p: p.read_bytes() for p in ckpts.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main([*base, "--steps", "4", "--resume", "--lr", "0.01"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]  # after the frame-loading progress bar
    assert line.startswith("latentwm pretrain-encoder: ") and "lr: 0.001 -> 0.01" in line
    assert {p: p.read_bytes() for p in ckpts.rglob("*") if p.is_file()} == before  # checkpoints untouched
