import dataclasses
import json
import re

import pytest

from latentwm.config import (
    PRESETS,
    CEMConfig,
    ConfigError,
    DataConfig,
    DemoConfig,
    EncodeConfig,
    EncoderConfig,
    EvalConfig,
    ExperimentConfig,
    ImagineConfig,
    ModelConfig,
    PlanRunConfig,
    TrainConfig,
    get_preset,
    preset,
)


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_are_valid_and_consistent(name):
    cfg = get_preset(name)
    assert cfg.preset == name
    assert cfg.model.latent_dim == cfg.encoder.preset.hidden_size
    assert cfg.model.latent_grid == cfg.encoder.grid
    assert cfg.data.action_dim <= cfg.model.action_dim
    # round trip through a plain dict (checkpoints store configs this way)
    assert ExperimentConfig.from_dict(cfg.to_dict()) == cfg


def test_unknown_preset_names_the_field():
    with pytest.raises(ConfigError, match="preset.*'nope'.*tiny"):
        get_preset("nope")


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: ModelConfig(width=-3), "model.width"),
        (lambda: ModelConfig(depth=0), "model.depth"),
        (lambda: ModelConfig(width=30, heads=4), "model.width"),
        (lambda: ModelConfig(heads=8, kv_heads=3), "model.heads"),
        (lambda: ModelConfig(k_max=48), "model.k_max"),
        (lambda: ModelConfig(depth=2, time_every=4), "model.depth"),
        (lambda: ModelConfig(patch_group=3), "model.patch_group"),
        (lambda: DataConfig(clip_len=-1), "data.clip_len"),
        (lambda: DataConfig(eval_fraction=1.5), "data.eval_fraction"),
        (lambda: TrainConfig(lr=0), "train.lr"),
        (lambda: CEMConfig(population=10, elites=20), "plan.cem.elites"),
        (lambda: EncoderConfig(name="dinov9-xxl"), "encoder.name"),
        (lambda: EncoderConfig(name="dinov2-s", image_size=200), "encoder.image_size"),
    ],
)
def test_bad_values_are_rejected_with_the_field_named(make, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        make()


def test_cross_field_checks():
    cfg = get_preset("tiny")
    with pytest.raises(ConfigError, match="model.action_dim"):
        cfg.replace(data__env_action_dim=7)  # 7 × frame_skip 5 = 35 > 10
    with pytest.raises(ConfigError, match="model.latent_dim"):
        cfg.replace(model__latent_dim=128)
    with pytest.raises(ConfigError, match="model.latent_grid"):
        cfg.replace(encoder__image_size=112)
    with pytest.raises(ConfigError, match="data.clip_len"):
        cfg.replace(data__clip_len=64)


def test_configs_are_frozen():
    cfg = get_preset("tiny")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model.width = 3


def test_local_encoder_path_skips_shape_checks():
    cfg = get_preset("tiny").replace(encoder__name="/models/my-dino")
    assert cfg.encoder.preset is None and cfg.encoder.grid is None


@pytest.mark.parametrize(
    "make, field, flag",
    [
        (lambda: EvalConfig(context=0), "eval.context", "--context"),
        (lambda: EvalConfig(sample_steps=0), "eval.sample_steps", "--sample-steps"),
        (lambda: EvalConfig(max_clips=0), "eval.max_clips", "--max-clips"),
        (lambda: EvalConfig(cache_dir=""), "eval.cache_dir", "--cache-dir"),
        (lambda: ImagineConfig(horizon=0), "imagine.horizon", "--horizon"),
        (lambda: ImagineConfig(start=-1), "imagine.start", "--start"),
        (lambda: PlanRunConfig(context=0), "plan.context", "--context"),
        (lambda: PlanRunConfig(max_replans=0), "plan.max_replans", "--max-replans"),
        (lambda: DemoConfig(episodes=0), "demo.episodes", "--episodes"),
        (lambda: DemoConfig(train_steps=0), "demo.train_steps", "--train-steps"),
        (lambda: DemoConfig(plan_goals=-1), "demo.plan_goals", "--plan-goals"),
        (lambda: EncodeConfig(fps=0.0), "encode.fps", "--fps"),
        (lambda: EncodeConfig(segment_s=-1.0), "encode.segment_s", "--segment-s"),
    ],
)
def test_a_value_that_once_meant_the_default_is_refused_naming_the_field_and_flag(make, field, flag):
    """The old sentinels (0 / -1 / empty: "use the default") are refused; None (the flag left out) is the default."""
    with pytest.raises(ConfigError, match=re.escape(field) + ".*leave " + flag + " out"):
        make()


def test_leaving_a_default_flag_out_gives_the_default(capsys):
    from latentwm.cli import main
    from latentwm.train.evaluate import clip_subset

    assert main(["eval", "--context", "0", "--print-config"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("latentwm eval: eval.context must be >= 1") and "leave --context out" in err
    assert main(["eval", "--print-config"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["context"] is None and cfg["horizon"] is None and cfg["sample_steps"] is None
    assert main(["eval", "--context", "4", "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["context"] == 4
    assert clip_subset(list(range(5)), None) == list(range(5))  # max_clips left out: every clip

    smoke = preset("smoke")
    demo = DemoConfig(preset="smoke")
    assert demo.goals() == smoke.demo.goals > 0
    assert demo.data_size() == (smoke.demo.episodes, smoke.demo.env_steps)
    assert demo.experiment().train.steps == smoke.experiment.train.steps
    given = DemoConfig(preset="smoke", plan_goals=0, episodes=3, max_steps=9, train_steps=7)
    assert given.goals() == 0 and given.data_size() == (3, 9) and given.experiment().train.steps == 7  # 0: no planning
    assert EncodeConfig(segment_s=0.0).segment_s == 0.0  # 0: whole videos, a real setting, still accepted
